"""From scores to text (seed 003): logit processors, greedy, sampling and beam search.

The model gives one score (logit) per token of the vocabulary. A chain of
*processors* reshapes those scores (temperature, top-k, top-p, min-p,
repetition penalty, no-repeat n-gram); a *strategy* then picks the next token:

* :func:`greedy` always takes the most probable token;
* :func:`sample` draws it from the softmax, reproducibly under a seed;
* :func:`beam_search` keeps the ``num_beams`` best partial sequences.

Every function returns a trace the app can draw: for each generated token the
ten best candidates, the chosen token's probability, rank and the entropy
(in nats) of the distribution it was drawn from; for beam search, every
candidate considered at each step, kept or pruned.

Both gpt_core's :class:`~gpt_core.model.GPT` (pre-allocated KV cache) and
Hugging Face causal LMs (``past_key_values``) are supported. Processors match
Hugging Face's ``transformers.generation.logits_process`` token for token, and
``beam_search`` matches ``generate(num_beams=k, do_sample=False)``.
"""
from __future__ import annotations

import inspect
import math
import numbers
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import InvalidInput
from .model import GPT

__all__ = [
    "LogitsProcessor", "Temperature", "TopK", "TopP", "MinP", "RepetitionPenalty", "NoRepeatNGram",
    "build_processors", "explain_processors", "StepView",
    "Step", "GenerationResult", "Hypothesis", "BeamCandidate", "BeamStep", "BeamResult",
    "greedy", "sample", "beam_search", "validate_request", "prepare_prompt", "context_length_of",
    "MAX_BEAMS", "TOP_N",
]

MAX_BEAMS = 16      # more beams than this is slow and teaches nothing more
TOP_N = 10          # candidates kept in each step's trace
_NEG = -1.0e9       # "impossible" score used by beam search bookkeeping (as Hugging Face does)


# ============================================================== validation helpers
def _number(name: str, value, *, integer: bool = False) -> float | int:
    """Return ``value`` as a Python number, or raise a readable InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "a whole number" if integer else "a number"
        raise InvalidInput(f"{name} must be {kind}, not {value!r}.")
    if integer:
        if isinstance(value, numbers.Integral):
            return int(value)
        if math.isfinite(float(value)) and float(value).is_integer():
            return int(value)
        raise InvalidInput(f"{name} must be a whole number, not {value!r}.")
    value = float(value)
    if math.isnan(value):
        raise InvalidInput(f"{name} must be a number, not NaN.")
    return value


# ======================================================================= processors
class LogitsProcessor:
    """``proc(ids (B, t), logits (B, V)) -> new logits (B, V)``; never modifies its inputs."""

    name = "processor"

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def label(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label()})"


class Temperature(LogitsProcessor):
    """Divide the logits by t: t < 1 sharpens the distribution, t > 1 flattens it."""

    name = "temperature"

    def __init__(self, temperature: float):
        t = _number("The temperature", temperature)
        if not math.isfinite(t) or t <= 0:
            raise InvalidInput(
                f"The temperature must be a finite number greater than 0 (got {temperature!r}); "
                "a temperature of 0 means greedy decoding."
            )
        self.temperature = t

    def __call__(self, ids, logits):
        return logits / self.temperature

    def label(self) -> str:
        return f"T={self.temperature:g}"


class TopK(LogitsProcessor):
    """Keep the k highest logits (every token tied with the k-th one is kept too)."""

    name = "top-k"

    def __init__(self, k: int, vocab_size: int | None = None):
        k = _number("top-k", k, integer=True)
        if k < 1:
            raise InvalidInput(f"top-k must keep at least 1 token (got {k}).")
        if vocab_size is not None and k > vocab_size:
            raise InvalidInput(
                f"top-k = {k} is larger than the vocabulary ({vocab_size} tokens): "
                f"choose a value between 1 and {vocab_size}."
            )
        self.k = k

    def __call__(self, ids, logits):
        k = min(self.k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1): the k-th largest logit
        return logits.masked_fill(logits < kth, float("-inf"))

    def label(self) -> str:
        return f"k={self.k}"


class TopP(LogitsProcessor):
    """Nucleus: keep the smallest set of most probable tokens whose mass reaches p."""

    name = "top-p"

    def __init__(self, p: float):
        p = _number("top-p", p)
        if not 0.0 < p <= 1.0:
            raise InvalidInput(f"top-p must be greater than 0 and at most 1 (got {p:g}).")
        self.p = p

    def __call__(self, ids, logits):
        # walk from the least probable token upwards; the tail whose total mass stays
        # within 1 - p is dropped, and the most probable token always survives
        ascending, order = torch.sort(logits, dim=-1, descending=False)
        tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = tail_mass <= (1 - self.p)
        drop_sorted[..., -1] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))

    def label(self) -> str:
        return f"p={self.p:g}"


class MinP(LogitsProcessor):
    """Keep the tokens whose probability is at least p x (probability of the best token)."""

    name = "min-p"

    def __init__(self, p: float):
        p = _number("min-p", p)
        if not 0.0 <= p <= 1.0:
            raise InvalidInput(f"min-p must be between 0 and 1 (got {p:g}).")
        self.p = p

    def __call__(self, ids, logits):
        probs = logits.softmax(dim=-1)
        threshold = self.p * probs.amax(dim=-1, keepdim=True)
        drop = probs < threshold
        best = probs.argmax(dim=-1, keepdim=True)
        drop = drop.scatter(-1, best, False)  # the best token always survives
        return logits.masked_fill(drop, float("-inf"))

    def label(self) -> str:
        return f"p={self.p:g}"


class RepetitionPenalty(LogitsProcessor):
    """Make tokens already present less likely: positive logits / penalty, negative ones x penalty."""

    name = "repetition penalty"

    def __init__(self, penalty: float):
        penalty = _number("The repetition penalty", penalty)
        if not math.isfinite(penalty) or penalty <= 0:
            raise InvalidInput(
                f"The repetition penalty must be a number greater than 0 (got {penalty:g}); "
                "1 means no penalty."
            )
        self.penalty = penalty

    def __call__(self, ids, logits):
        V = logits.size(-1)
        seen = torch.zeros(logits.size(0), V + 1, dtype=torch.bool, device=logits.device)
        seen.scatter_(1, ids.clamp(max=V), True)  # ids the head cannot produce land in the spare column
        penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(seen[:, :V], penalised, logits)

    def label(self) -> str:
        return f"{self.penalty:g}"


class NoRepeatNGram(LogitsProcessor):
    """Forbid any token that would complete an n-gram already present in the sequence."""

    name = "no-repeat n-gram"

    def __init__(self, n: int):
        n = _number("The no-repeat n-gram size", n, integer=True)
        if n < 1:
            raise InvalidInput(f"The no-repeat n-gram size must be at least 1 (got {n}).")
        self.n = n

    def banned(self, seq: list[int]) -> set[int]:
        """Tokens that would repeat an n-gram of ``seq`` if they came next."""
        n, t = self.n, len(seq)
        if t < n:
            return set()
        suffix = seq[t - n + 1:] if n > 1 else []
        return {seq[i + n - 1] for i in range(t - n + 1) if seq[i:i + n - 1] == suffix}

    def __call__(self, ids, logits):
        V = logits.size(-1)
        drop = torch.zeros_like(logits, dtype=torch.bool)
        for row, seq in enumerate(ids.tolist()):
            banned = [tok for tok in self.banned(seq) if 0 <= tok < V]
            if banned:
                drop[row, banned] = True
        return logits.masked_fill(drop, float("-inf"))

    def label(self) -> str:
        return f"n={self.n}"


def _as_processors(processors) -> list:
    processors = list(processors or ())
    for p in processors:
        if not callable(p):
            raise InvalidInput(f"{p!r} is not a logits processor (it cannot be called).")
    return processors


def _apply(processors, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    for proc in processors:
        logits = proc(ids, logits)
    return logits


def build_processors(
    temperature: float | None = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram: int | None = 0,
    vocab_size: int | None = None,
) -> tuple[list[LogitsProcessor], list[str], bool]:
    """Turn the UI's settings into ``(processors, notes, greedy)``.

    ``None`` switches a setting off (as do top-p 1, min-p 0, penalty 1,
    no_repeat_ngram 0). Temperature 0 means greedy decoding: ``greedy`` comes
    back True with a note. The order is Hugging Face's: repetition penalty,
    no-repeat n-gram, then temperature, top-k, top-p, min-p.
    """
    notes: list[str] = []
    procs: list[LogitsProcessor] = []
    greedy_mode = False
    if repetition_penalty is not None:
        rp = RepetitionPenalty(repetition_penalty)
        if rp.penalty != 1.0:
            procs.append(rp)
    if no_repeat_ngram:
        procs.append(NoRepeatNGram(no_repeat_ngram))
    if temperature is not None:
        t = _number("The temperature", temperature)
        if t == 0:
            greedy_mode = True
            notes.append("Temperature 0 means always taking the most probable token: greedy decoding is used.")
        else:
            temp = Temperature(t)  # validates: negative, infinite
            if temp.temperature != 1.0:
                procs.append(temp)
    if top_k is not None:
        procs.append(TopK(top_k, vocab_size))
    if top_p is not None:
        tp = TopP(top_p)
        if tp.p < 1.0:
            procs.append(tp)
    if min_p is not None:
        mp = MinP(min_p)
        if mp.p > 0.0:
            procs.append(mp)
    if greedy_mode and any(isinstance(p, (TopK, TopP, MinP)) for p in procs):
        notes.append("Under greedy decoding top-k, top-p and min-p change nothing: the best token always survives them.")
    return procs, notes, greedy_mode


@dataclass
class StepView:
    """What one processor did to a distribution (tensors of shape (V,), on the CPU)."""

    name: str
    label: str
    probs_before: torch.Tensor
    probs_after: torch.Tensor
    kept: torch.Tensor            # bool: still possible after this processor
    n_kept: int
    removed_mass: float           # probability mass (before) of the tokens it removed
    entropy_before: float         # nats
    entropy_after: float          # nats


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return torch.special.entr(probs).sum(dim=-1)  # entr(0) = 0, so removed tokens count for nothing


def explain_processors(logits_1d: torch.Tensor, processors, ids: Sequence[int] | torch.Tensor = ()) -> list[StepView]:
    """Apply ``processors`` one by one to a single distribution and describe each step."""
    processors = _as_processors(processors)
    logits = torch.as_tensor(logits_1d).detach().float().cpu()
    if logits.dim() != 1 or logits.numel() == 0:
        raise InvalidInput("explain_processors expects one vector of scores (one per vocabulary token).")
    ids_t = torch.as_tensor(list(ids) if not torch.is_tensor(ids) else ids, dtype=torch.long).reshape(1, -1).cpu()
    views = []
    current = logits.unsqueeze(0)
    for proc in processors:
        after = proc(ids_t, current)
        before_p, after_p = current.softmax(-1)[0], after.softmax(-1)[0]
        kept = after[0] > float("-inf")  # NaN counts as removed
        views.append(StepView(
            name=getattr(proc, "name", type(proc).__name__),
            label=proc.label() if hasattr(proc, "label") else "",
            probs_before=before_p, probs_after=after_p, kept=kept, n_kept=int(kept.sum()),
            removed_mass=float(before_p[~kept].sum()),
            entropy_before=float(_entropy(before_p)), entropy_after=float(_entropy(after_p)),
        ))
        current = after
    return views


# ================================================================== model adapters
def context_length_of(model) -> int:
    """How many tokens the model can read (its context window)."""
    if isinstance(model, GPT):
        return model.cfg.context_length
    cfg = model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _vocab_size_of(model) -> int:
    if isinstance(model, GPT):
        return model.cfg.vocab_size
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return head.weight.shape[0]
    cfg = model.config
    return getattr(getattr(cfg, "get_text_config", lambda: cfg)(), "vocab_size")


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


class _Stepper:
    """One interface over both backends: ``prefill(ids) -> logits``, ``step(tokens) -> logits``, ``reorder``.

    Logits come back as float32 of shape (B, V) for the last position.
    """

    def __init__(self, model, max_len: int):
        self.model = model
        self.ours = isinstance(model, GPT)
        self.max_len = max_len
        self.cache = None
        if not self.ours:
            params = inspect.signature(model.forward).parameters
            self._extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        if self.ours:
            self.cache = self.model.new_cache(batch=ids.size(0), max_len=self.max_len)
            return self.model(ids, cache=self.cache, last_only=True)[:, -1, :].float()
        out = self.model(input_ids=ids, use_cache=True, **self._extra)
        self.cache = out.past_key_values
        return out.logits[:, -1, :].float()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.reshape(-1, 1)  # (B, 1)
        if self.ours:
            return self.model(tokens, cache=self.cache, last_only=True)[:, -1, :].float()
        out = self.model(input_ids=tokens, past_key_values=self.cache, use_cache=True, **self._extra)
        self.cache = out.past_key_values
        return out.logits[:, -1, :].float()

    def reorder(self, index: torch.Tensor) -> None:
        """Row i of the cache becomes old row ``index[i]`` (also grows a batch of 1 into beams)."""
        if self.ours or hasattr(self.cache, "reorder_cache"):
            (self.cache.reorder if self.ours else self.cache.reorder_cache)(index)
        else:  # legacy tuple of (key, value) per layer
            self.cache = tuple(tuple(t.index_select(0, index) for t in layer) for layer in self.cache)


# ==================================================================== requests
def validate_request(prompt_len: int, max_new_tokens: int, context_length: int) -> None:
    """Check a generation request; raise InvalidInput with a sentence if it cannot be served.

    ``max_new_tokens`` above the context window is an error (not a silent clamp).
    A request that merely runs into the window (prompt + new > context) is
    accepted: generation then stops early with ``stop_reason == 'context'``.
    """
    max_new_tokens = _number("max_new_tokens", max_new_tokens, integer=True)
    if max_new_tokens < 1:
        raise InvalidInput(f"The number of tokens to generate must be at least 1 (got {max_new_tokens}).")
    if max_new_tokens > context_length:
        raise InvalidInput(
            f"Cannot generate {max_new_tokens} tokens: the model's context window holds only "
            f"{context_length} tokens, prompt included."
        )
    if prompt_len < 1:
        raise InvalidInput("The prompt is empty: give at least one token (prepare_prompt starts from <|endoftext|>).")
    if prompt_len >= context_length:
        raise InvalidInput(
            f"The prompt has {prompt_len} tokens and fills the model's context window ({context_length} tokens), "
            f"so there is no room left to generate; keep at most {context_length - 1} tokens "
            "(prepare_prompt keeps the last ones)."
        )


def prepare_prompt(tokenizer, text: str, context_length: int, reserve: int = 1) -> tuple[list[int], list[str]]:
    """Encode ``text`` into ids ready for generation, with notes for the user.

    * empty text -> the tokenizer's start token (BOS, else EOS such as GPT-2's <|endoftext|>);
    * too long -> keep the last ``context_length - reserve`` tokens, so that at
      least ``reserve`` new tokens fit in the window.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"The prompt must be text, not {type(text).__name__}.")
    reserve = _number("reserve", reserve, integer=True)
    if not 1 <= reserve < context_length:
        raise InvalidInput(f"reserve must be between 1 and {context_length - 1} tokens (got {reserve}).")
    notes: list[str] = []
    ids = list(tokenizer.encode(text)) if text else []
    if not ids:
        start = _special_id(tokenizer, "bos")
        if start is None:
            start = _special_id(tokenizer, "eos")
        if start is None:
            raise InvalidInput(
                "The prompt is empty and this tokenizer has no start or end-of-text token to begin with: "
                "type a few words."
            )
        ids = [start]
        notes.append(f"Empty prompt: generation starts from the special token {tokenizer.decode([start])!r} (id {start}).")
    keep = context_length - reserve
    if len(ids) > keep:
        notes.append(
            f"The prompt has {len(ids)} tokens but the context window holds {context_length}: "
            f"only its last {keep} tokens are kept."
        )
        ids = ids[-keep:]
    return ids, notes


def _special_id(tokenizer, which: str) -> int | None:
    for attr in (f"{which}_id", f"{which}_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return None


def _prompt_tensor(model, prompt_ids, vocab: int) -> torch.Tensor:
    """Any of list[int], (T,) or (1, T) tensor -> (1, T) long tensor on the model's device."""
    if torch.is_tensor(prompt_ids):
        ids = prompt_ids.detach()
        if ids.dim() == 2 and ids.size(0) == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise InvalidInput("The prompt must be one sequence of token ids (a single row).")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise InvalidInput("Token ids must be whole numbers.")
        ids = ids.cpu().tolist()
    else:
        try:
            ids = [int(_number("A token id", t, integer=True)) for t in prompt_ids]
        except TypeError:
            raise InvalidInput("The prompt must be a list of token ids.") from None
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise InvalidInput(f"Token id {bad[0]} does not exist in this model's vocabulary (0 to {vocab - 1}).")
    return torch.tensor([ids], dtype=torch.long, device=_device_of(model))


def _stop_strings(stop_strings, tokenizer) -> tuple[str, ...]:
    if isinstance(stop_strings, str):
        stop_strings = (stop_strings,)
    stops = tuple(s for s in (stop_strings or ()) if s != "")
    if any(not isinstance(s, str) for s in stops):
        raise InvalidInput("Stop strings must be text.")
    if stops and tokenizer is None:
        raise InvalidInput("Stop strings need the tokenizer, to turn the generated tokens back into text.")
    return stops


def _eos(eos_id, vocab: int) -> int | None:
    if eos_id is None:
        return None
    eos_id = _number("The end-of-text token id", eos_id, integer=True)
    if not 0 <= eos_id < vocab:
        raise InvalidInput(f"The end-of-text token id {eos_id} is outside the vocabulary (0 to {vocab - 1}).")
    return eos_id


# =========================================================== greedy and sampling
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
    notes: list[str] = field(default_factory=list)
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


def _step_stats(scores: torch.Tensor, tok: torch.Tensor, n_top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace of one step, kept on the device: ints [id, rank, top ids...], floats [prob, entropy, logprob, top probs...]."""
    logp = scores.log_softmax(dim=-1)[0]  # (V,)
    probs = logp.exp()
    p_tok = probs.gather(0, tok)
    top_p, top_i = probs.topk(n_top)
    rank = (probs > p_tok).sum(dim=0, keepdim=True) + 1
    return (torch.cat([tok, rank, top_i]),
            torch.cat([p_tok, _entropy(probs).reshape(1), logp.gather(0, tok), top_p]))


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


def _run(model, prompt_ids, max_new_tokens, processors, choose: Callable, strategy: str,
         eos_id, stop_strings, tokenizer, trace: bool, cuda_graph: bool = False) -> GenerationResult:
    """Shared loop of greedy and sample: one forward pass per new token on the KV cache."""
    processors = _as_processors(processors)
    vocab = _vocab_size_of(model)
    ids = _prompt_tensor(model, prompt_ids, vocab)
    ctx = context_length_of(model)
    P = ids.size(1)
    validate_request(P, max_new_tokens, ctx)
    stop = _StopCheck(_eos(eos_id, vocab), _stop_strings(stop_strings, tokenizer), tokenizer)
    budget = min(int(max_new_tokens), ctx - P)  # the window holds prompt + new tokens
    n_top = min(TOP_N, vocab)
    stop_reason, n_new = None, 0

    if cuda_graph and _graph_ok(model, processors, strategy):
        runner = _graph_runner(model, n_top, _graph_attention(model))
        with runner.lock, torch.inference_mode():
            runner.start(ids)
            for i in range(budget):
                if i:
                    runner.replay()
                n_new = i + 1
                if stop.active and (stop_reason := stop(runner.tokens[i])):
                    break
            new_ids = runner.tokens[:n_new].tolist()
            ints, floats = (runner.ints[:n_new].tolist(), runner.floats[:n_new].tolist()) if trace else ([], [])
    else:
        device = ids.device
        seq = torch.empty(1, P + budget, dtype=torch.long, device=device)  # prompt, then new tokens
        seq[:, :P] = ids
        int_rows, float_rows = [], []
        can_ban_all = any(isinstance(p, NoRepeatNGram) for p in processors)  # the others always keep a token
        stepper = _Stepper(model, P + budget)
        with torch.inference_mode():
            logits, tok = stepper.prefill(ids), None
            for i in range(budget):
                if i:
                    logits = stepper.step(tok)
                cur = P + i
                scores = _apply(processors, seq[:, :cur], logits) if processors else logits
                if can_ban_all and bool(torch.isneginf(scores).all()):
                    raise InvalidInput(
                        f"At step {i + 1} every token would repeat an n-gram, so none is left to choose: "
                        "lower the no-repeat n-gram size or turn it off."
                    )
                tok = choose(scores)  # (1,)
                seq[:, cur] = tok
                n_new = i + 1
                if trace:
                    rows = _step_stats(scores, tok, n_top)
                    int_rows.append(rows[0])
                    float_rows.append(rows[1])
                if stop.active and (stop_reason := stop(tok)):
                    break
        new_ids = seq[0, P:P + n_new].tolist()
        ints, floats = (torch.stack(int_rows).tolist(), torch.stack(float_rows).tolist()) if int_rows else ([], [])

    if stop_reason is None:
        stop_reason = "context" if budget < max_new_tokens else "max_new_tokens"
    steps = [Step(chosen_id=iv[0], chosen_prob=fv[0], chosen_rank=iv[1], entropy=fv[1],
                  top=list(zip(iv[2:], fv[3:])), logprob=fv[2]) for iv, fv in zip(ints, floats)]
    notes = []
    if stop_reason == "context":
        notes.append(f"Generation stopped after {n_new} tokens: the context window ({ctx} tokens) is full.")
    result = GenerationResult(prompt_ids=ids[0].tolist(), new_ids=new_ids, steps=steps, stop_reason=stop_reason,
                              strategy=strategy, notes=notes, stop_string=stop.hit)
    if tokenizer is not None:
        result.text = tokenizer.decode(new_ids)
    return result


# ------------------------------------------------------------ CUDA-graph greedy
def _graph_ok(model, processors, strategy) -> bool:
    return (strategy == "greedy" and not processors and isinstance(model, GPT) and not model.training
            and _device_of(model).type == "cuda")


def _span_for(position: int, context: int) -> int:
    """Cache length a decode step at ``position`` attends over: 128, 256, 512... (at most the context)."""
    span = 128
    while span <= position:
        span *= 2
    return min(span, context)


def _static_decode(model: GPT, cache, tok: torch.Tensor, pos: torch.Tensor, span: int,
                   attention: str = "sdpa") -> torch.Tensor:
    """One decode step of our GPT with static shapes, so that it can be captured in a CUDA graph.

    ``tok`` (1, 1) sits at position ``pos`` (a (1,) device tensor, ``pos < span``).
    Its key and value are written into the pre-allocated cache at ``pos``;
    attention reads the first ``span`` cache entries with an additive mask
    hiding those after ``pos``: the same arithmetic as ``GPT.forward`` (eval
    mode, no hooks), without Python-side lengths. Returns float32 logits (1, V).
    """
    C, nh, hs = model.cfg.d_model, model.cfg.n_heads, model.cfg.head_dim
    dtype = model.tok_emb.weight.dtype
    where = torch.arange(span, device=tok.device)
    bias = torch.zeros(1, 1, 1, span, device=tok.device, dtype=dtype).masked_fill(where > pos, float("-inf"))
    x = model.tok_emb(tok) + model.pos_emb(pos)  # (1, 1, C)
    for i, block in enumerate(model.blocks):
        att = block.att
        q, k, v = att.qkv(block.norm1(x)).split(C, dim=2)  # 3 x (1, 1, C)
        q = q.view(1, 1, nh, hs).transpose(1, 2)  # (1, nh, 1, hs)
        cache.k[i].index_copy_(2, pos, k.view(1, 1, nh, hs).transpose(1, 2))  # cache.k[i]: (1, nh, max_len, hs)
        cache.v[i].index_copy_(2, pos, v.view(1, 1, nh, hs).transpose(1, 2))
        keys, values = cache.k[i][:, :, :span], cache.v[i][:, :, :span]  # (1, nh, span, hs)
        if attention == "sdpa":
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)  # (1, nh, 1, hs)
        else:  # scores = scale * q k^T + mask, softmax, @ v
            scores = torch.baddbmm(bias[0], q.reshape(nh, 1, hs), keys[0].transpose(1, 2), alpha=1 / math.sqrt(hs))
            out = (scores.softmax(dim=-1) @ values[0]).view(1, nh, 1, hs)
        x = x + att.out_proj(out.transpose(1, 2).reshape(1, 1, C))
        x = x + block.ff(block.norm2(x))
    return model.out_head(model.final_norm(x))[:, -1, :].float()


class _GraphRunner:
    """Greedy decoding of our GPT on CUDA: forward + argmax + step trace replayed as one CUDA graph.

    Buffers (cache of the full context, step counter, position, token, trace
    rows) are allocated once per model and reused; one graph is captured per
    attention span (128, 256, ... tokens) the first time it is needed, and a
    lock serialises users of a shared model. Off CUDA the same steps run eagerly.
    """

    def __init__(self, model: GPT, n_top: int, attention: str = "sdpa"):
        self._model = weakref.ref(model)  # a strong reference would keep the model alive in _GRAPH_RUNNERS
        self.n_top, self.attention, self.lock = n_top, attention, threading.Lock()
        dev, ctx = _device_of(model), model.cfg.context_length
        self.context = ctx
        self.cache = model.new_cache(1, ctx)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)        # position of tok_buf
        self.idx = torch.zeros(1, dtype=torch.long, device=dev)        # index of the next new token
        self.tok_buf = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.tokens = torch.zeros(ctx, dtype=torch.long, device=dev)
        self.ints = torch.zeros(ctx, 2 + n_top, dtype=torch.long, device=dev)
        self.floats = torch.zeros(ctx, 3 + n_top, dtype=torch.float32, device=dev)
        self.graphs: dict[int, "torch.cuda.CUDAGraph"] = {}
        self.use_graphs = dev.type == "cuda"
        self.position = 0                                                # host copy of pos

    @property
    def model(self) -> GPT:
        return self._model()

    def _record(self, logits: torch.Tensor) -> None:
        tok = logits.argmax(dim=-1)  # (1,)
        int_row, float_row = _step_stats(logits, tok, self.n_top)
        self.ints.index_copy_(0, self.idx, int_row[None])
        self.floats.index_copy_(0, self.idx, float_row[None])
        self.tokens.index_copy_(0, self.idx, tok)
        self.tok_buf.copy_(tok.view(1, 1))
        self.idx.add_(1)

    def _body(self, span: int) -> None:
        logits = _static_decode(self.model, self.cache, self.tok_buf, self.pos, span, self.attention)
        self.pos.add_(1)
        self._record(logits)

    def start(self, ids: torch.Tensor) -> None:
        """Prefill the prompt (eagerly) and record the first new token."""
        P = ids.size(1)
        self.cache.crop(0)
        logits = self.model(ids, cache=self.cache, last_only=True)[:, -1, :].float()
        self.pos.fill_(P)
        self.idx.zero_()
        self._record(logits)
        self.position = P

    def _capture(self, span: int) -> None:
        saved = [t.clone() for t in (self.tok_buf, self.pos, self.idx)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph, as CUDA graphs require
            self._body(span)
        torch.cuda.current_stream().wait_stream(stream)
        for buf, value in zip((self.tok_buf, self.pos, self.idx), saved):
            buf.copy_(value)  # undo the warm-up step: the replay computes it again
        graph = torch.cuda.CUDAGraph()
        pool = next(iter(self.graphs.values())).pool() if self.graphs else None
        with torch.cuda.graph(graph, pool=pool):
            self._body(span)
        self.graphs[span] = graph

    def replay(self) -> None:
        """Decode the next token."""
        span = _span_for(self.position, self.context)
        if not self.use_graphs:
            self._body(span)
        else:
            if span not in self.graphs:
                self._capture(span)
            self.graphs[span].replay()
        self.position += 1


_GRAPH_ATTENTION: str | None = None  # force "sdpa" or "matmul" in the captured decode step (benchmarks)


def _graph_attention(model: GPT) -> str:
    # measured on an H100: with one query, fused SDPA in float32 falls back to a slow kernel,
    # while in bf16/fp16 it beats the explicit matrix products
    if _GRAPH_ATTENTION:
        return _GRAPH_ATTENTION
    return "matmul" if model.tok_emb.weight.dtype == torch.float32 else "sdpa"


_GRAPH_RUNNERS: "weakref.WeakKeyDictionary[GPT, _GraphRunner]" = weakref.WeakKeyDictionary()


def _graph_runner(model: GPT, n_top: int, attention: str = "sdpa") -> _GraphRunner:
    key = (model.tok_emb.weight.data_ptr(), model.tok_emb.weight.dtype, n_top, attention)
    runner = _GRAPH_RUNNERS.get(model)
    if runner is None or runner.key != key:  # weights moved or re-cast: capture again
        runner = _GraphRunner(model, n_top, attention)
        runner.key = key
        _GRAPH_RUNNERS[model] = runner
    return runner


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
    seed = _number("The seed", seed, integer=True)
    if not 0 <= seed < 2**63:
        raise InvalidInput(f"The seed must be a whole number between 0 and 2^63 - 1 (got {seed}).")
    gen = torch.Generator(device=_device_of(model)).manual_seed(seed)

    def choose(scores):
        return torch.multinomial(scores.softmax(dim=-1), 1, generator=gen)[:, 0]

    return _run(model, prompt_ids, max_new_tokens, processors, choose, "sample",
                eos_id, stop_strings, tokenizer, trace)


# ====================================================================== beam search
@dataclass
class BeamCandidate:
    """One continuation considered at a beam-search step."""

    beam_id: int                 # its beam slot at the next step if kept, else -1
    parent_beam_id: int          # the beam slot it extends
    token_id: int
    token_logprob: float         # log-prob of this token (after processors)
    cumulative_logprob: float    # parent's running log-prob + token_logprob
    score: float                 # cumulative_logprob / new_length ** length_penalty
    kept: bool                   # continues as a running beam
    finished: bool               # ended here (EOS or last step) and entered the list of finished hypotheses


@dataclass
class BeamStep:
    step: int                    # 0 = first generated token
    candidates: list[BeamCandidate]


@dataclass
class Hypothesis:
    new_ids: list[int]
    token_logprobs: list[float]
    sum_logprob: float
    score: float                 # sum_logprob / len(new_ids) ** length_penalty
    finished_by: str             # 'eos' | 'max_new_tokens' | 'context'


@dataclass
class BeamResult:
    prompt_ids: list[int]
    sequences: list[Hypothesis]  # best first
    tree: list[BeamStep]
    num_beams: int
    length_penalty: float
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Hypothesis:
        return self.sequences[0]


def beam_search(model, prompt_ids, num_beams: int, max_new_tokens: int, length_penalty: float = 1.0,
                eos_id: int | None = None, processors=(), early_stopping: bool | str = True) -> BeamResult:
    """Keep the ``num_beams`` best partial sequences; return finished hypotheses and the search tree.

    Follows Hugging Face's beam search step for step: the log-softmax of each
    beam (then ``processors``) is added to the beam's running log-prob, the
    2 x num_beams best continuations over all beams x vocabulary are taken, the
    best num_beams that did not end continue, and those that ended (EOS or the
    last step) compete for the finished list with score sum / length ** length_penalty.
    """
    processors = _as_processors(processors)
    vocab = _vocab_size_of(model)
    k = _number("The number of beams", num_beams, integer=True)
    if k < 1:
        raise InvalidInput(f"Beam search needs at least 1 beam (got {k}).")
    if k > MAX_BEAMS:
        raise InvalidInput(f"At most {MAX_BEAMS} beams are allowed (got {k}).")
    if k > vocab:
        raise InvalidInput(f"{k} beams cannot be more than the vocabulary size ({vocab} tokens).")
    lp = _number("The length penalty", length_penalty)
    if not math.isfinite(lp):
        raise InvalidInput("The length penalty must be a finite number.")
    if early_stopping not in (True, False, "never"):
        raise InvalidInput("early_stopping must be True, False or 'never'.")
    ids = _prompt_tensor(model, prompt_ids, vocab)
    ctx = context_length_of(model)
    P = ids.size(1)
    validate_request(P, max_new_tokens, ctx)
    eos_id = _eos(eos_id, vocab)
    budget = min(int(max_new_tokens), ctx - P)
    max_length = P + budget
    device = ids.device
    n_cand = 2 * k                                   # enough to leave k live beams even if k end on EOS
    in_top_k = torch.arange(n_cand, device=device) < k

    run_seq = torch.zeros(k, max_length, dtype=torch.long, device=device)
    run_seq[:, :P] = ids
    run_lp = torch.zeros(k, max(budget, 1), device=device)            # per-token log-probs
    run_scores = torch.full((k,), _NEG, device=device)
    run_scores[0] = 0.0                              # all beams start identical: only beam 0 counts
    fin_seq, fin_lp = run_seq.clone(), run_lp.clone()
    fin_scores = torch.full((k,), _NEG, device=device)
    fin_flag = torch.zeros(k, dtype=torch.bool, device=device)
    fin_len = torch.zeros(k, dtype=torch.long, device=device)
    improvable = torch.ones((), dtype=torch.bool, device=device)
    tree_rows = []

    stepper = _Stepper(model, max_length)
    with torch.inference_mode():
        logits = stepper.prefill(ids)                      # (1, V): the prompt is read once
        stepper.reorder(torch.zeros(k, dtype=torch.long, device=device))
        logits = logits.expand(k, -1)
        cur = P
        while True:
            logp = logits.log_softmax(dim=-1)
            logp = _apply(processors, run_seq[:, :cur], logp) if processors else logp
            total = (logp + run_scores[:, None]).reshape(1, -1)     # (1, k*V)
            cand_scores, flat = torch.topk(total, n_cand)
            cand_scores, flat = cand_scores[0], flat[0]                # (2k,)
            parent, token = flat // vocab, flat % vocab
            ended = torch.full((n_cand,), cur + 1 >= max_length, device=device)
            if eos_id is not None:
                ended = ended | (token == eos_id)
            gen_len = cur + 1 - P

            # the best k that did not end carry on
            live = torch.topk(cand_scores + ended.float() * _NEG, k).indices
            # those that ended (among the top k) compete with the finished hypotheses
            ended_top = ended & in_top_k
            final_scores = cand_scores / (gen_len ** lp)
            final_scores = final_scores + (fin_flag.all() & (early_stopping is True)).float() * _NEG
            final_scores = final_scores + (~improvable).float() * _NEG
            final_scores = final_scores + (~ended_top).float() * _NEG
            merged = torch.topk(torch.cat([fin_scores, final_scores]), k).indices
            from_cand = merged >= k
            cidx = (merged - k).clamp(min=0)

            cand_seq = run_seq[parent]
            cand_seq[:, cur] = token
            cand_lp = run_lp[parent]
            tok_lp = logp[parent, token]
            cand_lp[:, gen_len - 1] = tok_lp
            fin_seq = torch.where(from_cand[:, None], cand_seq[cidx], fin_seq[merged.clamp(max=k - 1)])
            fin_lp = torch.where(from_cand[:, None], cand_lp[cidx], fin_lp[merged.clamp(max=k - 1)])
            fin_len = torch.where(from_cand, gen_len, fin_len[merged.clamp(max=k - 1)])
            fin_flag = torch.where(from_cand, ended_top[cidx], fin_flag[merged.clamp(max=k - 1)])
            fin_scores = torch.cat([fin_scores, final_scores])[merged]

            # trace: one row per candidate, moved to the host at the end
            slot = torch.full((n_cand,), -1, dtype=torch.long, device=device)
            slot[live] = torch.arange(k, device=device)
            slot = slot.masked_fill(ended, -1)             # an ended candidate does not continue
            entered = torch.zeros(n_cand, dtype=torch.bool, device=device)
            entered[cidx[from_cand]] = True
            tree_rows.append((torch.stack([slot, parent, token, (entered & ended_top).long()]),
                              torch.stack([tok_lp, cand_scores, cand_scores / (gen_len ** lp)])))

            run_seq, run_lp = cand_seq[live], cand_lp[live]
            run_scores = (cand_scores + ended.float() * _NEG)[live]

            cur += 1
            if early_stopping == "never" and lp > 0.0:
                best_len = max_length - P
            else:
                best_len = cur - P
            best_running = run_scores[0] / (best_len ** lp)
            worst_finished = torch.where(fin_flag, fin_scores.min(), torch.full_like(fin_scores, _NEG))
            improvable = improvable & (best_running > worst_finished).any()
            go_on = improvable & ~(fin_flag.all() & (early_stopping is True)) & ~ended.all()
            if not bool(go_on):
                break
            stepper.reorder(parent[live])
            logits = stepper.step(token[live])

    tree = []
    for t, (ints, floats) in enumerate(tree_rows):
        ints, floats = ints.tolist(), floats.tolist()
        tree.append(BeamStep(step=t, candidates=[
            BeamCandidate(beam_id=ints[0][j], parent_beam_id=ints[1][j], token_id=ints[2][j],
                          token_logprob=floats[0][j], cumulative_logprob=floats[1][j], score=floats[2][j],
                          kept=ints[0][j] >= 0, finished=bool(ints[3][j]))
            for j in range(n_cand)
        ]))
    sequences = []
    flags, lens, scores = fin_flag.tolist(), fin_len.tolist(), fin_scores.tolist()
    seqs, lps = fin_seq.tolist(), fin_lp.tolist()
    for i in range(k):
        if not flags[i]:
            continue
        n = lens[i]
        new = seqs[i][P:P + n]
        tok_lps = lps[i][:n]
        reason = "eos" if eos_id is not None and new and new[-1] == eos_id else (
            "context" if budget < max_new_tokens else "max_new_tokens")
        sequences.append(Hypothesis(new_ids=new, token_logprobs=tok_lps, sum_logprob=float(sum(tok_lps)),
                                    score=scores[i], finished_by=reason))
    notes = []
    if budget < max_new_tokens:
        notes.append(f"Only {budget} tokens could be generated: the context window ({ctx} tokens) is full.")
    return BeamResult(prompt_ids=ids[0].tolist(), sequences=sequences, tree=tree, num_beams=k,
                      length_penalty=lp, notes=notes)
