"""Logit processors: reshape the model's scores before a token is chosen.

Each processor is a callable ``(ids (B, t), logits (B, V)) -> new logits (B, V)``
that validates its setting in ``__init__`` and never modifies its inputs. They
match Hugging Face's ``transformers.generation.logits_process`` token for token.
:func:`build_processors` turns the UI's settings into a chain, and
:func:`explain_processors` shows what each link did to one distribution.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InvalidInput, Message, note
from .stats import entropy

__all__ = [
    "LogitsProcessor", "Temperature", "TopK", "TopP", "MinP", "RepetitionPenalty", "NoRepeatNGram",
    "build_processors", "explain_processors", "StepView",
]


# ============================================================== validation helpers
def _shown(value, limit: int = 40) -> str:
    """A short printable form of a rejected value, for a message parameter."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def as_number(field: str, value, *, integer: bool = False) -> float | int:
    """Return ``value`` as a Python number, or raise InvalidInput naming ``field`` (an argument name)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if integer:
            raise InvalidInput("decoding.not_whole", "{field} must be a whole number, not {value}.",
                               field=field, value=_shown(value))
        raise InvalidInput("decoding.not_a_number", "{field} must be a number, not {value}.",
                           field=field, value=_shown(value))
    if integer:
        if isinstance(value, numbers.Integral):
            return int(value)
        if math.isfinite(float(value)) and float(value).is_integer():
            return int(value)
        raise InvalidInput("decoding.not_whole", "{field} must be a whole number, not {value}.",
                           field=field, value=_shown(value))
    value = float(value)
    if math.isnan(value):
        raise InvalidInput("decoding.not_a_number", "{field} must be a number, not {value}.",
                           field=field, value="NaN")
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


MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 100.0


class Temperature(LogitsProcessor):
    """Divide the logits by t: t < 1 sharpens the distribution, t > 1 flattens it."""

    name = "temperature"

    def __init__(self, temperature: float):
        t = as_number("temperature", temperature)
        if not math.isfinite(t) or t <= 0:
            raise InvalidInput("decoding.bad_temperature",
                               "The temperature must be a finite number greater than 0 (got {value}); "
                               "a temperature of 0 means greedy decoding.", value=t)
        if not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE:  # 1e-300 would overflow the logits, 1e308 is uniform
            raise InvalidInput("decoding.temperature_out_of_range", "The temperature must be between {low} and "
                               "{high} (got {value}); 0 means greedy decoding.", low=MIN_TEMPERATURE,
                               high=MAX_TEMPERATURE, value=t)
        self.temperature = t

    def __call__(self, ids, logits):
        return logits / self.temperature

    def label(self) -> str:
        return f"T={self.temperature:g}"


class TopK(LogitsProcessor):
    """Keep the k highest logits (every token tied with the k-th one is kept too)."""

    name = "top-k"

    def __init__(self, k: int, vocab_size: int | None = None):
        k = as_number("top_k", k, integer=True)
        if k < 1:
            raise InvalidInput("decoding.top_k_too_small", "top-k must keep at least 1 token (got {k}).", k=k)
        if vocab_size is not None and k > vocab_size:
            raise InvalidInput("decoding.top_k_above_vocab",
                               "top-k = {k} is larger than the vocabulary ({vocab} tokens): "
                               "choose a value between 1 and {vocab}.", k=k, vocab=vocab_size)
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
        p = as_number("top_p", p)
        if not 0.0 < p <= 1.0:
            raise InvalidInput("decoding.bad_top_p", "top-p must be greater than 0 and at most 1 (got {p}).", p=p)
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
        p = as_number("min_p", p)
        if not 0.0 <= p <= 1.0:
            raise InvalidInput("decoding.bad_min_p", "min-p must be between 0 and 1 (got {p}).", p=p)
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


MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 100.0


class RepetitionPenalty(LogitsProcessor):
    """Make tokens already present less likely: positive logits / penalty, negative ones x penalty."""

    name = "repetition penalty"

    def __init__(self, penalty: float):
        penalty = as_number("repetition_penalty", penalty)
        if not math.isfinite(penalty) or penalty <= 0:
            raise InvalidInput("decoding.bad_repetition_penalty",
                               "The repetition penalty must be a number greater than 0 (got {value}); "
                               "1 means no penalty.", value=penalty)
        if not MIN_REPETITION_PENALTY <= penalty <= MAX_REPETITION_PENALTY:  # 1e-300 would overflow the logits
            raise InvalidInput("decoding.repetition_penalty_out_of_range", "The repetition penalty must be between "
                               "{low} and {high} (got {value}); 1 means no penalty.", low=MIN_REPETITION_PENALTY,
                               high=MAX_REPETITION_PENALTY, value=penalty)
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
        n = as_number("no_repeat_ngram", n, integer=True)
        if n < 1:
            raise InvalidInput("decoding.bad_ngram_size",
                               "The no-repeat n-gram size must be at least 1 (got {n}).", n=n)
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


def as_processors(processors) -> list:
    """The processors as a list, each checked to be callable."""
    processors = list(processors or ())
    for p in processors:
        if not callable(p):
            raise InvalidInput("decoding.not_a_processor",
                               "{value} is not a logits processor (it cannot be called).", value=_shown(p))
    return processors


def apply(processors, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Run the chain: each processor gets the previous one's output."""
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
) -> tuple[list[LogitsProcessor], list[Message], bool]:
    """Turn the UI's settings into ``(processors, notes, greedy)``.

    ``None`` switches a setting off (as do top-p 1, min-p 0, penalty 1,
    no_repeat_ngram 0). Temperature 0 means greedy decoding: ``greedy`` comes
    back True with a note. The order is Hugging Face's: repetition penalty,
    no-repeat n-gram, then temperature, top-k, top-p, min-p.
    """
    notes: list[Message] = []
    procs: list[LogitsProcessor] = []
    greedy_mode = False
    if repetition_penalty is not None:
        rp = RepetitionPenalty(repetition_penalty)
        if rp.penalty != 1.0:
            procs.append(rp)
    if no_repeat_ngram:
        procs.append(NoRepeatNGram(no_repeat_ngram))
    if temperature is not None:
        t = as_number("temperature", temperature)
        if t == 0:
            greedy_mode = True
            notes.append(note("decoding.temperature_zero_greedy", "Temperature 0 means always taking the most "
                              "probable token: greedy decoding is used."))
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
        notes.append(note("decoding.greedy_ignores_filters", "Under greedy decoding top-k, top-p and min-p "
                          "change nothing: the best token always survives them."))
    return procs, notes, greedy_mode


# ==================================================================== explanation
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


def explain_processors(logits_1d: torch.Tensor, processors, ids: Sequence[int] | torch.Tensor = ()) -> list[StepView]:
    """Apply ``processors`` one by one to a single distribution and describe each step."""
    processors = as_processors(processors)
    logits = torch.as_tensor(logits_1d).detach().float().cpu()
    if logits.dim() != 1 or logits.numel() == 0:
        raise InvalidInput("decoding.explain_needs_vector",
                           "explain_processors expects one vector of scores (one per vocabulary token).")
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
            entropy_before=float(entropy(before_p)), entropy_after=float(entropy(after_p)),
        ))
        current = after
    return views
