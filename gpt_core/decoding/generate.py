"""Greedy decoding and sampling: one forward pass per new token on the model's KV cache.

Both strategies share one loop (:func:`_run`); they differ only in how the next
token is chosen from the processed scores. Each generated token comes with a
trace (:class:`Step`): the ten best candidates, the chosen token's probability
and rank, and the entropy of the distribution it was drawn from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..backend import backend_of, own_gpt
from ..errors import InvalidInput, Message, note
from .cuda_graph import graph_ok, greedy_on_graph
from .processors import NoRepeatNGram, apply, as_number, as_processors
from .prompt import eos_of, prompt_tensor, stop_strings_of, validate_request
from .stats import step_stats

__all__ = ["Step", "GenerationResult", "greedy", "sample", "TOP_N"]

TOP_N = 10          # candidates kept in each step's trace


@dataclass
class Step:
    """One generated token and the distribution (after processors) it came from."""

    chosen_id: int
    chosen_prob: float
    chosen_rank: int                        # 1 = the most probable token
    entropy: float                          # nats
    top: list[tuple[int, float]]            # the TOP_N most probable (id, prob), best first
    logprob: float                          # log of chosen_prob (natural log)


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    new_ids: list[int]
    steps: list[Step]
    stop_reason: str                        # 'eos' | 'max_new_tokens' | 'stop_string' | 'context'
    strategy: str = "greedy"
    notes: list[Message] = field(default_factory=list)
    stop_string: str | None = None          # the stop string that ended generation, if any
    text: str | None = None                 # decoded new tokens, when a tokenizer was given

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.new_ids

    @property
    def total_logprob(self) -> float:
        return float(sum(s.logprob for s in self.steps))

    def decode(self, tokenizer) -> str:
        return tokenizer.decode(self.new_ids)


class _StopCheck:
    """EOS and stop strings, on the host (one sync per token, only when one of them is asked for)."""

    def __init__(self, eos_id, stops, tokenizer):
        self.eos_id, self.stops, self.tokenizer = eos_id, stops, tokenizer
        self.active = eos_id is not None or bool(stops)
        self.chosen: list[int] = []
        self.hit: str | None = None

    def __call__(self, tok: torch.Tensor) -> str | None:
        t = int(tok)  # the one host sync per token
        self.chosen.append(t)
        if t == self.eos_id:
            return "eos"
        if self.stops:
            text = self.tokenizer.decode(self.chosen)
            self.hit = next((s for s in self.stops if s in text), None)
            if self.hit is not None:
                return "stop_string"
        return None


def _decode_loop(stepper, ids: torch.Tensor, budget: int, processors, choose: Callable, stop: _StopCheck,
                 n_top: int, trace: bool) -> tuple[list[int], list, list, str | None]:
    """Up to ``budget`` tokens after ``ids``: ``(new_ids, trace ints, trace floats, stop reason or None)``."""
    P = ids.size(1)
    seq = torch.empty(1, P + budget, dtype=torch.long, device=ids.device)  # prompt, then new tokens
    seq[:, :P] = ids
    int_rows, float_rows = [], []
    can_ban_all = any(isinstance(p, NoRepeatNGram) for p in processors)  # the others always keep a token
    stop_reason, n_new = None, 0
    with torch.inference_mode():
        logits, tok = stepper.prefill(ids), None
        for i in range(budget):
            if i:
                logits = stepper.step(tok)
            cur = P + i
            scores = apply(processors, seq[:, :cur], logits) if processors else logits
            if can_ban_all and bool(torch.isneginf(scores).all()):
                raise InvalidInput("decoding.ngram_bans_all",
                                   "At step {step} every token would repeat an n-gram, so none is left to choose: "
                                   "lower the no-repeat n-gram size or turn it off.", step=i + 1)
            tok = choose(scores)  # (1,)
            seq[:, cur] = tok
            n_new = i + 1
            if trace:
                rows = step_stats(scores, tok, n_top)
                int_rows.append(rows[0])
                float_rows.append(rows[1])
            if stop.active and (stop_reason := stop(tok)):
                break
    new_ids = seq[0, P:P + n_new].tolist()
    ints, floats = (torch.stack(int_rows).tolist(), torch.stack(float_rows).tolist()) if int_rows else ([], [])
    return new_ids, ints, floats, stop_reason


def _run(model, prompt_ids, max_new_tokens, processors, choose: Callable, strategy: str,
         eos_id, stop_strings, tokenizer, trace: bool, cuda_graph: bool = False) -> GenerationResult:
    """Shared loop of greedy and sample: check the request, decode, then gather the trace."""
    processors = as_processors(processors)
    backend = backend_of(model)
    vocab = backend.vocab_size
    ids = prompt_tensor(prompt_ids, vocab, backend.device)
    ctx = backend.context_length
    P = ids.size(1)
    validate_request(P, max_new_tokens, ctx)
    stop = _StopCheck(eos_of(eos_id, vocab), stop_strings_of(stop_strings, tokenizer), tokenizer)
    budget = min(int(max_new_tokens), ctx - P)  # the window holds prompt + new tokens
    n_top = min(TOP_N, vocab)

    gpt = own_gpt(model) if cuda_graph else None
    if gpt is not None and graph_ok(gpt, processors, strategy):
        new_ids, ints, floats, stop_reason = greedy_on_graph(gpt, ids, budget, stop, n_top, trace)
    else:
        new_ids, ints, floats, stop_reason = _decode_loop(backend.stepper(P + budget), ids, budget, processors,
                                                          choose, stop, n_top, trace)

    if stop_reason is None:
        stop_reason = "context" if budget < max_new_tokens else "max_new_tokens"
    steps = [Step(chosen_id=iv[0], chosen_prob=fv[0], chosen_rank=iv[1], entropy=fv[1],
                  top=list(zip(iv[2:], fv[3:])), logprob=fv[2]) for iv, fv in zip(ints, floats)]
    notes = []
    if stop_reason == "context":
        notes.append(note("decoding.context_full",
                          "Generation stopped after {n} tokens: the context window ({ctx} tokens) is full.",
                          n=len(new_ids), ctx=ctx))
    result = GenerationResult(prompt_ids=ids[0].tolist(), new_ids=new_ids, steps=steps, stop_reason=stop_reason,
                              strategy=strategy, notes=notes, stop_string=stop.hit)
    if tokenizer is not None:
        result.text = tokenizer.decode(new_ids)
    return result


def greedy(model, prompt_ids, max_new_tokens: int, eos_id: int | None = None, stop_strings=(),
           tokenizer=None, processors=(), trace: bool = True, cuda_graph: bool = False) -> GenerationResult:
    """Always take the most probable token (after ``processors``, e.g. a repetition penalty).

    ``trace=False`` skips the per-step statistics (``steps`` is then empty).
    ``cuda_graph=True`` (our GPT on CUDA, eval mode, no processors) replays each
    decode step, with its trace, as one captured CUDA graph; otherwise it is ignored.
    """
    def choose(scores):
        return scores.argmax(dim=-1)

    return _run(model, prompt_ids, max_new_tokens, processors, choose, "greedy",
                eos_id, stop_strings, tokenizer, trace, cuda_graph)


def sample(model, prompt_ids, max_new_tokens: int, processors, seed: int, eos_id: int | None = None,
           stop_strings=(), tokenizer=None, trace: bool = True) -> GenerationResult:
    """Draw each token from the softmax of the processed logits.

    A private ``torch.Generator`` seeded with ``seed`` makes it reproducible
    (the global random state is left alone). On the CPU, with the same seed,
    the draws equal Hugging Face's ``generate(do_sample=True)`` after
    ``torch.manual_seed(seed)``.
    """
    seed = as_number("seed", seed, integer=True)
    if not 0 <= seed < 2**63:
        raise InvalidInput("decoding.bad_seed",
                           "The seed must be a whole number between 0 and 2^63 - 1 (got {seed}).", seed=seed)
    gen = torch.Generator(device=backend_of(model).device).manual_seed(seed)

    def choose(scores):
        return torch.multinomial(scores.softmax(dim=-1), 1, generator=gen)[:, 0]

    return _run(model, prompt_ids, max_new_tokens, processors, choose, "sample",
                eos_id, stop_strings, tokenizer, trace)
