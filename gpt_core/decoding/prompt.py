"""Checks on a generation request: the prompt, its length against the context window, EOS and stop strings.

Every check raises :class:`~gpt_core.errors.InvalidInput` with a code the app
translates; :func:`prepare_prompt` also returns notes (Message objects) for
what it changed on its own (an empty prompt, a prompt cut to fit).
"""
from __future__ import annotations

import torch

from ..errors import InvalidInput, Message, note
from .processors import as_number

__all__ = ["validate_request", "prepare_prompt"]


def validate_request(prompt_len: int, max_new_tokens: int, context_length: int) -> None:
    """Check a generation request; raise InvalidInput with a code if it cannot be served.

    ``max_new_tokens`` above the context window is an error (not a silent clamp).
    A request that merely runs into the window (prompt + new > context) is
    accepted: generation then stops early with ``stop_reason == 'context'``.
    """
    max_new_tokens = as_number("max_new_tokens", max_new_tokens, integer=True)
    if max_new_tokens < 1:
        raise InvalidInput("decoding.max_new_too_small",
                           "The number of tokens to generate must be at least 1 (got {n}).", n=max_new_tokens)
    if max_new_tokens > context_length:
        raise InvalidInput("decoding.max_new_above_context",
                           "Cannot generate {n} tokens: the model's context window holds only {ctx} tokens, "
                           "prompt included.", n=max_new_tokens, ctx=context_length)
    if prompt_len < 1:
        raise InvalidInput("decoding.empty_prompt",
                           "The prompt is empty: give at least one token (prepare_prompt starts from <|endoftext|>).")
    if prompt_len >= context_length:
        raise InvalidInput("decoding.prompt_fills_context",
                           "The prompt has {n} tokens and fills the model's context window ({ctx} tokens), "
                           "so there is no room left to generate; keep at most {keep} tokens "
                           "(prepare_prompt keeps the last ones).",
                           n=prompt_len, ctx=context_length, keep=context_length - 1)


def prepare_prompt(tokenizer, text: str, context_length: int, reserve: int = 1) -> tuple[list[int], list[Message]]:
    """Encode ``text`` into ids ready for generation, with notes for the user.

    * the ids start with what the model expects before any input (``tokenizer.model_prefix``,
      Gemma's BOS): :meth:`encode_for_model`;
    * empty text -> the tokenizer's start token (that prefix, else BOS, else EOS such as
      GPT-2's <|endoftext|>);
    * too long -> keep the last ``context_length - reserve`` tokens (the prefix stays first),
      so that at least ``reserve`` new tokens fit in the window.
    """
    if not isinstance(text, str):
        raise InvalidInput("decoding.prompt_not_text", "The prompt must be text, not {kind}.",
                           kind=type(text).__name__)
    reserve = as_number("reserve", reserve, integer=True)
    if not 1 <= reserve < context_length:
        raise InvalidInput("decoding.bad_reserve", "reserve must be between 1 and {max} tokens (got {value}).",
                           max=context_length - 1, value=reserve)
    notes: list[Message] = []
    prefix = list(getattr(tokenizer, "model_prefix", ()))  # Gemma: its BOS, before every input
    ids = list(tokenizer.encode_for_model(text)) if text else list(prefix)
    if len(ids) == len(prefix):  # no token of text
        start = prefix[0] if prefix else _special_id(tokenizer, "bos")
        if start is None:
            start = _special_id(tokenizer, "eos")
        if start is None:
            raise InvalidInput("decoding.no_start_token",
                               "The prompt is empty and this tokenizer has no start or end-of-text token "
                               "to begin with: type a few words.")
        ids = list(prefix) or [start]
        notes.append(note("decoding.started_from_special",
                          "Empty prompt: generation starts from the special token {token} (id {id}).",
                          token=tokenizer.decode([start]), id=start))
    keep = context_length - reserve
    if len(ids) > keep:
        notes.append(note("decoding.prompt_cut",
                          "The prompt has {n} tokens but the context window holds {ctx}: "
                          "only its last {keep} tokens are kept.", n=len(ids), ctx=context_length, keep=keep))
        ids = prefix + ids[len(prefix):][len(ids) - keep:] if len(prefix) < keep else ids[-keep:]
    return ids, notes


def _special_id(tokenizer, which: str) -> int | None:
    for attr in (f"{which}_id", f"{which}_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return None


def prompt_tensor(prompt_ids, vocab: int, device: torch.device) -> torch.Tensor:
    """Any of list[int], (T,) or (1, T) tensor -> (1, T) long tensor on ``device``."""
    if torch.is_tensor(prompt_ids):
        ids = prompt_ids.detach()
        if ids.dim() == 2 and ids.size(0) == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise InvalidInput("decoding.prompt_one_row", "The prompt must be one sequence of token ids (a single row).")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise InvalidInput("decoding.ids_not_whole", "Token ids must be whole numbers.")
        ids = ids.cpu().tolist()
    else:
        try:
            ids = [int(as_number("token_id", t, integer=True)) for t in prompt_ids]
        except TypeError:
            raise InvalidInput("decoding.prompt_not_ids", "The prompt must be a list of token ids.") from None
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise InvalidInput("decoding.unknown_token_id",
                           "Token id {id} does not exist in this model's vocabulary (0 to {max}).",
                           id=bad[0], max=vocab - 1)
    return torch.tensor([ids], dtype=torch.long, device=device)


def stop_strings_of(stop_strings, tokenizer) -> tuple[str, ...]:
    """The non-empty stop strings, checked (they need a tokenizer to be recognised)."""
    if isinstance(stop_strings, str):
        stop_strings = (stop_strings,)
    stops = tuple(s for s in (stop_strings or ()) if s != "")
    if any(not isinstance(s, str) for s in stops):
        raise InvalidInput("decoding.stop_not_text", "Stop strings must be text.")
    if stops and tokenizer is None:
        raise InvalidInput("decoding.stop_needs_tokenizer",
                           "Stop strings need the tokenizer, to turn the generated tokens back into text.")
    return stops


def eos_of(eos_id, vocab: int) -> int | None:
    """The end-of-text token id, checked against the vocabulary (None: no EOS)."""
    if eos_id is None:
        return None
    eos_id = as_number("eos_id", eos_id, integer=True)
    if not 0 <= eos_id < vocab:
        raise InvalidInput("decoding.eos_outside_vocab",
                           "The end-of-text token id {id} is outside the vocabulary (0 to {max}).",
                           id=eos_id, max=vocab - 1)
    return eos_id
