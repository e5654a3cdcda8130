"""Reading attention patterns: per-head scores, head types and grid data.

Everything here takes the attention list of a :class:`gpt_core.trace.Trace`
(``n_layers`` tensors of shape ``(n_heads, T, T)``, rows summing to 1, zero
above the diagonal) and returns plain numbers or numpy arrays, so any backend
(our GPT, GPT-2, SmolLM2 with grouped-query attention, Gemma 3 with one
key/value head and sliding-window layers) is read the same way.

Sliding-window layers (``ModelInfo.attention_windows[l] = W``): query ``i``
sees the keys ``i - W < j <= i`` only (W keys, itself included), so weights
on keys ``j <= i - W`` are exactly 0 (:func:`window_mask`). When the text has
no more than ``W`` tokens the window covers it all and the layer behaves like
a global one (:func:`window_applies`).

Scores of one head, averaged over query positions:

* ``prev``  weight a token puts on the token just before it;
* ``first`` weight on the first token of the text (an "attention sink");
* ``self``  weight on itself;
* ``entropy`` spread of each row, in bits; ``norm_entropy`` divides it by its
  maximum ``log2(n)`` where query ``i`` sees ``n = i + 1`` keys (``min(i + 1, W)``
  on a sliding-window layer), so 1 means "uniform over what it can see".

Query 0 can only look at itself and query 1's previous token *is* the first
token, so when the text has 3 tokens or more the three scores use queries
``i >= 2``; with 2 tokens they use query 1; with 1 token they are undefined
(NaN) and the head type is ``"undetermined"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from .trace import ModelInfo

HEAD_KINDS = ("previous", "first", "self", "broad", "mixed", "undetermined")
SCORE_THRESHOLD = 0.5     # a head is "previous" / "first" / "self" when that score reaches this
BROAD_THRESHOLD = 0.8     # ... and "broad" when its normalised entropy reaches this


@dataclass
class HeadScores:
    """Scores of every head of one layer, arrays of shape (n_heads,)."""

    entropy: np.ndarray
    norm_entropy: np.ndarray
    prev: np.ndarray
    first: np.ndarray
    self_: np.ndarray


@dataclass
class HeadGrid:
    """Scores of all layers x heads, arrays of shape (n_layers, n_heads)."""

    entropy: np.ndarray
    norm_entropy: np.ndarray
    prev: np.ndarray
    first: np.ndarray
    self_: np.ndarray
    kinds: list[list[str]]
    n_tokens: int

    @property
    def n_layers(self) -> int:
        return self.entropy.shape[0]

    @property
    def n_heads(self) -> int:
        return self.entropy.shape[1]

    def metric(self, name: str) -> np.ndarray:
        if name not in METRICS:
            raise InvalidInput("attention.unknown_metric", "Unknown head score '{name}': choose one of {choices}.",
                               name=str(name)[:40], choices=", ".join(METRICS))
        return getattr(self, "self_" if name == "self" else name)

    def kind_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(HEAD_KINDS, 0)
        for row in self.kinds:
            for kind in row:
                counts[kind] += 1
        return counts


METRICS = ("prev", "first", "self", "norm_entropy", "entropy")


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def _check_pattern(attn: torch.Tensor) -> torch.Tensor:
    attn = torch.as_tensor(attn)
    if attn.dim() != 3 or attn.shape[-1] != attn.shape[-2] or attn.shape[-1] == 0:
        raise InvalidInput("attention.bad_pattern_shape",
                           "An attention pattern must have the shape (heads, T, T) with T >= 1 (got {shape}).",
                           shape=str(tuple(attn.shape)))
    return attn.detach().to(torch.float32, copy=True).cpu()


def _score_rows(T: int) -> slice:
    return slice(2, T) if T >= 3 else slice(1, T)


def _keys_seen(T: int, windows: list[int | None] | None, n_rows: int) -> torch.Tensor:
    """(n_rows, T - 1): how many keys query i >= 1 sees, per pattern row (``windows`` one per row, or None)."""
    seen = torch.arange(2, T + 1, dtype=torch.float32).expand(n_rows, T - 1)
    if windows is None:
        return seen
    caps = torch.tensor([float(w) if w else math.inf for w in windows], dtype=torch.float32)
    return torch.minimum(seen, caps[:, None])


def head_scores(attn: torch.Tensor, windows: list[int | None] | None = None) -> HeadScores:
    """Scores of every head of one layer; ``attn`` is (n_heads, T, T).

    ``windows`` (one per head, None = global) only changes ``norm_entropy``:
    a query on a sliding-window layer is compared with a uniform row over its window."""
    a = _check_pattern(attn)
    H, T, _ = a.shape
    if windows is not None and len(windows) != H:
        raise InvalidInput("attention.bad_windows", "{n} sliding windows for {heads} attention patterns.",
                           n=len(windows), heads=H)
    ent_rows = -torch.special.xlogy(a, a).sum(-1) / math.log(2)        # (H, T) bits; 0 log 0 = 0
    entropy = ent_rows.mean(-1)
    if T >= 2:
        max_ent = torch.log2(_keys_seen(T, windows, H))                  # (H, T - 1)
        norm = torch.where(max_ent > 0, ent_rows[:, 1:] / max_ent.clamp_min(1e-12), torch.nan)
        norm_entropy = norm.nanmean(-1)
    else:
        norm_entropy = torch.full((H,), float("nan"))
    rows = torch.arange(T)[_score_rows(T)]
    if len(rows):
        prev = a[:, rows, rows - 1].mean(-1)
        first = a[:, rows, 0].mean(-1)
        self_ = a[:, rows, rows].mean(-1)
    else:
        prev = first = self_ = torch.full((H,), float("nan"))
    return HeadScores(entropy.numpy(), norm_entropy.numpy(), prev.numpy(), first.numpy(), self_.numpy())


def classify(prev: float, first: float, self_: float, norm_entropy: float) -> str:
    """One word for a head: the strongest of previous/first/self when it reaches 0.5,
    else "broad" (spread over the past) or "mixed"."""
    if any(math.isnan(x) for x in (prev, first, self_)):
        return "undetermined"
    best, name = max((prev, "previous"), (first, "first"), (self_, "self"))
    if best >= SCORE_THRESHOLD:
        return name
    if not math.isnan(norm_entropy) and norm_entropy >= BROAD_THRESHOLD:
        return "broad"
    return "mixed"


def head_grid(attentions: list[torch.Tensor], windows: list[int | None] | None = None) -> HeadGrid:
    """Scores and types of every head of every layer (all layers scored in one pass).

    ``windows``: one per layer (None = global), as ``ModelInfo.attention_windows``."""
    if not attentions:
        raise InvalidInput("attention.no_pattern", "The model returned no attention pattern.")
    L = len(attentions)
    H = int(attentions[0].shape[0])
    if windows is not None and len(windows) != L:
        raise InvalidInput("attention.bad_windows", "{n} sliding windows for {heads} attention patterns.",
                           n=len(windows), heads=L)
    stacked = torch.cat([torch.as_tensor(a) for a in attentions])      # (L * H, T, T)
    s = head_scores(stacked, None if windows is None else [w for w in windows for _ in range(H)])
    stack = {f: getattr(s, f).reshape(L, H) for f in ("entropy", "norm_entropy", "prev", "first", "self_")}
    kinds = [
        [classify(stack["prev"][l, h], stack["first"][l, h], stack["self_"][l, h], stack["norm_entropy"][l, h])
         for h in range(H)]
        for l in range(L)
    ]
    return HeadGrid(**stack, kinds=kinds, n_tokens=int(attentions[0].shape[-1]))


def head_matrix(attentions: list, layer: int, head: int) -> np.ndarray:
    """The (T, T) pattern of one head as float32 numpy (query rows, key columns).

    ``attentions`` may hold torch tensors or numpy arrays (as for :func:`grid_panels`)."""
    layer = validate_index(layer, len(attentions), "layer")
    head = validate_index(head, attentions[layer].shape[0], "head")
    return _as_numpy(attentions[layer][head])


def causal_mask(T: int) -> np.ndarray:
    """True where a query may NOT look (keys in its future): above the diagonal."""
    return np.triu(np.ones((T, T), dtype=bool), k=1)


def layer_windows(info, n_layers: int | None = None) -> list[int | None]:
    """One entry per layer: None for global attention, else the sliding window (from ``ModelInfo``)."""
    n = int(info.n_layers if n_layers is None else n_layers)
    windows = list(getattr(info, "attention_windows", None) or [])
    if len(windows) != n:
        return [None] * n
    return [int(w) if w else None for w in windows]


def window_mask(T: int, window: int | None) -> np.ndarray:
    """True where a query may not look because the key left its sliding window (``j <= i - window``)."""
    if not window:
        return np.zeros((T, T), dtype=bool)
    return np.tril(np.ones((T, T), dtype=bool), k=-int(window))


def window_applies(T: int, window: int | None) -> bool:
    """Does the window hide anything in a text of ``T`` tokens? (No when the text fits in the window.)"""
    return bool(window) and T > int(window)


def grid_panels(attentions: list[torch.Tensor], layers: list[int] | range) -> list[tuple[int, int, np.ndarray]]:
    """Small multiples: ``(layer, head, (T, T) pattern)`` for every head of the given layers."""
    panels = []
    for layer in layers:
        layer = validate_index(layer, len(attentions), "layer")
        pattern = _as_numpy(attentions[layer])
        panels.extend((layer, h, pattern[h]) for h in range(pattern.shape[0]))
    return panels


def layer_window(n_layers: int, n_heads: int, start: int, max_panels: int = 48) -> range:
    """The layers shown as small multiples: from ``start``, at most ``max_panels`` panels."""
    per_view = max(1, max_panels // max(1, n_heads))
    start, _ = clamp_index(start, n_layers)
    start = min(start, max(0, n_layers - per_view))
    return range(start, min(n_layers, start + per_view))


def kv_group(head: int, n_heads: int, n_kv_heads: int) -> int:
    """Index of the key/value head that query ``head`` reads (grouped-query attention)."""
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise InvalidInput("attention.bad_kv_heads", "{n_heads} query heads cannot be shared among {n_kv_heads} "
                           "key/value heads.", n_heads=int(n_heads), n_kv_heads=int(n_kv_heads))
    head = validate_index(head, n_heads, "head")
    return head // (n_heads // n_kv_heads)


# ------------------------------------------------------------------ indices from users
def validate_index(value, n: int, what: str = "index") -> int:
    """``value`` as an int in ``[0, n)``, else :class:`InvalidInput` with a readable sentence.

    ``what`` names the thing in the message: ``"layer"``, ``"head"`` or ``"index"``
    (the app translates it through ``core.field.<what>``).
    """
    if n <= 0:
        raise InvalidInput("attention.nothing_to_choose", "There is nothing to choose: the list is empty.")
    if isinstance(value, bool):
        raise InvalidInput("attention.not_an_index", "{field} must be a whole number between 0 and {last} "
                           "(got '{value}').", field=what, last=n - 1, value=str(value))
    try:
        as_int = int(str(value).strip()) if isinstance(value, str) else int(value)
        if not isinstance(value, (int, np.integer, str)) and as_int != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput("attention.not_an_index", "{field} must be a whole number between 0 and {last} "
                           "(got '{value}').", field=what, last=n - 1, value=str(value)[:40]) from None
    if not 0 <= as_int < n:
        raise InvalidInput("attention.index_out_of_range", "{field} must be between 0 and {last} "
                           "({value} is out of range).", field=what, last=n - 1, value=as_int)
    return as_int


def clamp_index(value, n: int) -> tuple[int, str | None]:
    """Forgiving version for URL parameters and stale session values.

    Returns ``(index, problem)``: ``problem`` is None when ``value`` is valid,
    ``"not_a_number"`` (index 0 is used) or ``"out_of_range"`` (the nearest
    valid index is used). The UI turns the code into a sentence in its language.
    """
    if n <= 0:
        return 0, "out_of_range"
    try:
        return validate_index(value, n), None
    except InvalidInput:
        pass
    try:
        if isinstance(value, bool):
            raise TypeError
        as_int = int(str(value).strip()) if isinstance(value, str) else int(value)
        if not isinstance(value, (int, np.integer, str)) and as_int != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        return 0, "not_a_number"
    return min(max(as_int, 0), n - 1), "out_of_range"


@torch.no_grad()
def analyse_attention(model, ids) -> tuple[list[np.ndarray], HeadGrid, "ModelInfo"]:
    """Everything the Attention page computes: patterns of every head (float32 numpy,
    n_layers x (n_heads, T, T)), their scores and types, and the model's description
    (``info.attention_windows`` says which layers slide).

    The vocabulary head runs on the last position only (:func:`gpt_core.logit_lens.lean_trace`): no
    logits are drawn here, and for Gemma's 262k tokens all of them would cost more than all the blocks."""
    from .logit_lens import lean_trace

    trace = lean_trace(model, ids)
    attn = [a.float().cpu() for a in trace.attentions]
    return [a.numpy() for a in attn], head_grid(attn, layer_windows(trace.info, len(attn))), trace.info
