"""The logit lens: what would the model predict if it stopped after layer l?

Each residual stream of a :class:`gpt_core.trace.Trace` (the embeddings, then
the output of every block) is passed through what the model does after its
last block (:meth:`gpt_core.backend.Backend.unembed`): the final norm, the
output head and, for models that have one (Gemma 2), the logit soft-cap
``cap * tanh(logits / cap)``. Row ``n_layers`` is therefore exactly the
model's own prediction. Works for our GPT and for Hugging Face causal LMs.

Only what is shown is computed: the chosen positions of every row, projected
a batch of cells at a time; only the top-k, the log-partition and the rank
of the final prediction are kept (Gemma 3 has a 262,144-token vocabulary and
19 rows: the whole T x rows x vocab cube would be 1.3 GB for 64 tokens).
:func:`lean_trace` records a trace whose head ran on the last position only
(the Attention and Logit lens pages need no other logits from the forward pass).

Precision: the last row is the backend's own ``unembed``, so it is exactly
the model's output (checked in tests/test_logit_lens.py and
tests/test_attention_gemma.py). On a CPU with native bfloat16 dot products
(``avx512_bf16`` / ``amx_bf16``) the intermediate rows are computed from a bfloat16 cast of
the output head, cast a slice at a time (five times faster there: Gemma's
head is 640 x 262,144); ``LogitLens.precision`` says which was used.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backend import backend_of, unwrap
from .errors import InvalidInput
from .trace import Trace

BATCH_LOGITS = 1 << 24   # logits per call when the backend's unembed must be used (64 MB of float32)
CHUNK_LOGITS = 1 << 21   # logits per vocabulary slice when the head is scanned directly (8 MB of float32)
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass
class LogitLens:
    positions: list[int]        # query positions shown (indices into the text)
    layer_names: list[str]      # "embed", "1", ..., str(n_layers): row r = after r blocks
    top_ids: np.ndarray         # (rows, P, k) most likely ids at each layer and position
    top_probs: np.ndarray       # (rows, P, k) their probabilities
    target_ids: np.ndarray      # (P,) the model's final top-1 prediction at each position
    target_rank: np.ndarray     # (rows, P) rank (1 = top) of target_ids[p] at each layer
    target_prob: np.ndarray     # (rows, P) its probability at each layer
    final_logits: torch.Tensor  # (P, vocab) last row's logits: the model's own output
    precision: str = "float32"  # of the intermediate rows: "float32" or "bfloat16" (the last row is float32)
    softcap: float | None = None  # the logit soft-cap applied to every row (None: the model has none)
    norm: str = ""              # class name of the final norm applied to every row ("Gemma3RMSNorm", ...)

    @property
    def n_rows(self) -> int:
        return len(self.layer_names)

    def first_layer_reaching_top1(self, column: int) -> int | None:
        """First row where the final prediction is already top-1 at ``column`` (None if never before the end)."""
        hits = np.nonzero(self.target_rank[:, column] == 1)[0]
        return int(hits[0]) if len(hits) else None


def check_positions(positions, n_tokens: int) -> list[int]:
    """Validate query positions (negative ones count from the end, as in Python)."""
    if n_tokens <= 0:
        raise InvalidInput("logit_lens.no_tokens", "The logit lens needs at least one token.")
    if positions is None:
        return list(range(n_tokens))
    out = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
            raise InvalidInput("logit_lens.position_not_whole", "A position must be a whole number (got '{value}').",
                               value=repr(p)[:40])
        q = int(p) + n_tokens if p < 0 else int(p)
        if not 0 <= q < n_tokens:
            raise InvalidInput("logit_lens.position_outside", "Position {position} is outside the text "
                               "({n_tokens} tokens).", position=int(p), n_tokens=n_tokens)
        out.append(q)
    if not out:
        raise InvalidInput("logit_lens.no_position", "Choose at least one position for the logit lens.")
    return out


def _head_module(model: nn.Module) -> nn.Module | None:
    """The vocabulary head (a Hugging Face model's output embeddings, our GPT's ``out_head``)."""
    base = unwrap(model)
    getter = getattr(base, "get_output_embeddings", None)
    head = getter() if callable(getter) else getattr(base, "out_head", None)
    return head if isinstance(head, nn.Module) else None


@torch.no_grad()
def lean_trace(model: nn.Module, ids) -> Trace:
    """A :class:`Trace` whose vocabulary head ran on the last position only (``trace.logits`` is (1, vocab)):
    the attentions and residual streams the Attention and Logit lens pages read, without the cost of the
    head at every other position."""
    _, trace = backend_of(model).run_with_cache(ids, all_logits=False)
    return trace


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Does this machine's CPU multiply bfloat16 natively (Linux ``/proc/cpuinfo`` flags)?"""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return any(flag in flags for flag in _BF16_FLAGS)


def _linear_head(head: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight (V, d), bias or None) of a head that computes ``x @ weight.T (+ bias)``: a linear layer, or a
    module declaring matching ``in_features``/``out_features`` (the float16 tied head of the embedded Gemma).
    None for anything else (an adapter-wrapped head, say): the backend's ``unembed`` is used then."""
    weight = getattr(head, "weight", None)
    if head is None or not torch.is_tensor(weight) or weight.dim() != 2 or hasattr(head, "lora_A"):
        return None
    linear = isinstance(head, nn.Linear) or (getattr(head, "out_features", None), getattr(head, "in_features", None)) \
        == tuple(weight.shape)
    bias = getattr(head, "bias", None)
    return (weight.detach(), bias.detach().float() if torch.is_tensor(bias) else None) if linear else None


def _capped(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    return cap * torch.tanh(logits / cap) if cap else logits


def _chunk_size(n_cells: int, vocab: int, d: int) -> int:
    """Vocabulary slice scanned at once: at most CHUNK_LOGITS logits and CHUNK_LOGITS weights, so that the
    slice, its casts and its logits stay in the CPU's cache."""
    size = min(CHUNK_LOGITS // max(1, n_cells), CHUNK_LOGITS // max(1, d)) // 256 * 256
    return min(vocab, max(256, size))


class _Slices:
    """The head's weight read a vocabulary slice at a time, cast to ``dtype`` into reused buffers.

    Reusing the buffers matters on CPU: a fresh 10 MB tensor per slice costs more in page faults than
    the cast itself. float16 goes to bfloat16 through float32 (PyTorch's direct cast is 3x slower).
    """

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, step: int):
        self.weight, self.dtype, self.step = weight, dtype, step
        d, dev = weight.shape[1], weight.device
        self.buf = None if weight.dtype == dtype else torch.empty(step, d, dtype=dtype, device=dev)
        two_step = weight.dtype not in (dtype, torch.float32) and dtype != torch.float32
        self.tmp = torch.empty(step, d, dtype=torch.float32, device=dev) if two_step else None

    def __iter__(self):
        V = self.weight.shape[0]
        for start in range(0, V, self.step):
            w = self.weight[start:start + self.step]
            if self.buf is not None:
                size = w.shape[0]
                if self.tmp is not None:
                    w = self.buf[:size].copy_(self.tmp[:size].copy_(w))
                else:
                    w = self.buf[:size].copy_(w)
            yield start, w


def _refine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cap: float | None,
            ids: torch.Tensor) -> torch.Tensor:
    """Exact float32 logits of the tokens ``ids`` (n, m) for the rows of ``x`` (n, d)."""
    logits = torch.einsum("nd,nmd->nm", x.float(), weight[ids].float())
    if bias is not None:
        logits = logits + bias[ids]
    return _capped(logits, cap)


def _rows(mask: torch.Tensor) -> torch.Tensor | slice | None:
    """The rows a step must visit: all (a slice, no copy) when most do, their indices when few, None if none."""
    count = int(mask.sum())
    if count == 0:
        return None
    return slice(None) if count * 2 > mask.numel() else mask.nonzero()[:, 0]


def _merge_top(logits: torch.Tensor, row_max: torch.Tensor, start: int, best_v: torch.Tensor,
               best_i: torch.Tensor) -> None:
    """Merge a slice's top-k into the running top-k, in place; rows whose slice maximum cannot enter skip it."""
    rows = _rows(row_max > best_v[:, -1])
    if rows is None:
        return
    k = best_v.shape[1]
    v, i = torch.topk(logits[rows], min(k, logits.shape[1]), dim=-1)
    merged, order = torch.topk(torch.cat([best_v[rows], v], 1), k, dim=-1)
    best_i[rows] = torch.cat([best_i[rows], i + start], 1).gather(1, order)
    best_v[rows] = merged


def _count_above(logits: torch.Tensor, row_max: torch.Tensor, tgt: torch.Tensor, above: torch.Tensor) -> None:
    """Add, per row, the number of logits above the target's; rows whose maximum is below it skip the count."""
    rows = _rows(row_max > tgt)
    if rows is not None:
        above[rows] += (logits[rows] > tgt[rows, None]).sum(-1)


def _scan_vocab(normed: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cap: float | None,
                targets: torch.Tensor, k: int, dtype: torch.dtype):
    """Top-k, log-partition and rank of ``targets`` for the logits ``normed @ weight.T (+ bias)``, soft-capped.

    The vocabulary is read in slices cast to ``dtype``: no (cells, vocab) matrix and no copy of the head
    is kept. With bfloat16, the top-k and target logits are recomputed exactly in float32 at the end and
    the log-partition corrected with them (its error then comes from the tail only).
    Returns top ids (n, k), top probabilities (n, k), rank (n,), p(target) (n,).
    """
    n, V = normed.shape[0], weight.shape[0]
    dev = normed.device
    x = normed.to(dtype)
    tgt = _refine(normed, weight, bias, cap, targets[:, None])[:, 0]     # (n,) exact logit of the target
    lse = torch.full((n,), -torch.inf, device=dev)
    best_v = torch.full((n, k), -torch.inf, device=dev)
    best_i = torch.zeros((n, k), dtype=torch.long, device=dev)
    above = torch.zeros(n, dtype=torch.long, device=dev)
    step = _chunk_size(n, V, weight.shape[1])
    out = torch.empty((n, step), dtype=dtype, device=dev)
    as_float = out if dtype == torch.float32 else torch.empty((n, step), device=dev)
    for start, w in _Slices(weight, dtype, step):
        size = w.shape[0]
        if size == step:
            logits = torch.mm(x, w.T, out=out)
            logits = logits if dtype == torch.float32 else as_float.copy_(logits)
        else:  # the last, shorter slice
            logits = (x @ w.T).float()
        if bias is not None:
            logits += bias[start:start + size]
        logits = _capped(logits, cap)
        top = logits.amax(-1, keepdim=True)                                # (n, 1)
        lse = torch.logaddexp(lse, (logits - top).exp_().sum(-1).log_() + top[:, 0])
        _merge_top(logits, top[:, 0], start, best_v, best_i)
        inside = (targets >= start) & (targets < start + size)           # the target never outranks itself
        logits[inside.nonzero()[:, 0], targets[inside] - start] = -torch.inf
        _count_above(logits, top[:, 0], tgt, above)
    if dtype != torch.float32:   # exact top-k values, in exact order, and the log-partition corrected with them
        exact = _refine(normed, weight, bias, cap, best_i)
        lse = torch.log((torch.exp(lse[:, None] - best_v[:, :1]) - torch.exp(best_v - best_v[:, :1]).sum(-1, True)
                         + torch.exp(exact - best_v[:, :1]).sum(-1, True)).clamp_min(1e-30))[:, 0] + best_v[:, 0]
        best_v, order = torch.sort(exact, dim=-1, descending=True)
        best_i = best_i.gather(1, order)
    return best_i, torch.exp(best_v - lse[:, None]), 1 + above, torch.exp(tgt - lse)


def _final_row(backend, trace: Trace, resid: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """The model's own logits (P, V) at ``positions``: the backend's ``unembed`` of the last residual stream,
    reusing the trace's logits for the last position when the forward pass computed them."""
    T, have = len(trace.ids), trace.logits.shape[0] if trace.logits.dim() == 2 else 0
    if positions[-1] != T - 1 or have == 0:
        return backend.unembed(resid).float()
    last = trace.logits[-1:].float().to(resid.device)                    # the head's output at position T - 1
    return torch.cat([backend.unembed(resid[:-1]).float(), last]) if len(positions) > 1 else last


def _read_cells(logits: torch.Tensor, target: torch.Tensor, k: int):
    """Top-k ids and probabilities, rank and probability of ``target``, for logits (n, V)."""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)                    # (n, 1)
    top = torch.topk(logits, k, dim=-1)
    tgt_logit = logits.gather(-1, target[:, None])                         # (n, 1)
    rank = 1 + (logits > tgt_logit).sum(-1)
    return top.indices, torch.exp(top.values - lse), rank, torch.exp(tgt_logit - lse)[:, 0]


@torch.no_grad()
def logit_lens(model: nn.Module, trace: Trace, k: int = 5, positions=None, precision: str = "auto") -> LogitLens:
    """Project every residual stream of ``trace`` to the vocabulary, at the chosen positions only.

    ``positions`` (default: all) selects the query positions, ``k`` the number
    of candidates kept per cell. ``precision`` of the intermediate rows:
    "float32", "bfloat16", or "auto" (bfloat16 where the CPU has it natively,
    float32 elsewhere). The last row is always the backend's ``unembed``: the model's own logits.
    """
    if precision not in ("auto", "float32", "bfloat16"):
        raise InvalidInput("logit_lens.bad_precision", "Unknown precision '{value}': choose auto, float32 or "
                           "bfloat16.", value=str(precision)[:40])
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise InvalidInput("logit_lens.bad_k", "The number of candidates k must be a whole number between 1 "
                           "and 100 (got '{value}').", value=repr(k)[:40])
    backend = backend_of(model)
    T = len(trace.ids)
    pos = check_positions(positions, T)
    index = torch.tensor(pos, dtype=torch.long)
    rows, P = len(trace.resid), len(pos)
    picked = torch.stack([r[index.to(r.device)] for r in trace.resid])   # (rows, P, d)
    cap = backend.info().final_logit_softcap
    half = precision == "bfloat16" or (precision == "auto" and backend.device.type == "cpu" and native_bf16())
    dtype = torch.bfloat16 if half else torch.float32
    head = _linear_head(_head_module(model))
    norm = backend.final_norm()
    final = _final_row(backend, trace, picked[-1], pos)                   # (P, V): the model's own logits
    k = min(k, final.shape[-1])
    target = torch.topk(final, k, dim=-1).indices[:, 0]   # (P,) top-1, ties ordered as the last row shows them
    # cells (row, position) in row-major order; the last row is `final`, already projected
    cells = picked[:-1].reshape((rows - 1) * P, -1)
    targets = target.repeat(rows - 1).to(cells.device)
    if head is not None:
        results = [_scan_vocab(norm(cells), *head, cap, targets, k, dtype)]
    else:  # an unusual head: the backend's own unembed, a batch of cells at a time
        dtype, batch = torch.float32, max(1, BATCH_LOGITS // final.shape[-1])
        results = [_read_cells(backend.unembed(cells[s:s + batch]).float(), targets[s:s + batch], k)
                   for s in range(0, cells.shape[0], batch)]
    results.append(_read_cells(final, target, k))
    ids_, probs_, rank_, prob_t_ = (torch.cat([r[i] for r in results]).cpu() for i in range(4))
    names = ["embed"] + [str(i) for i in range(1, rows)]
    return LogitLens(pos, names, ids_.reshape(rows, P, k).numpy(), probs_.reshape(rows, P, k).float().numpy(),
                     target.cpu().numpy(), rank_.reshape(rows, P).numpy(), prob_t_.reshape(rows, P).float().numpy(),
                     final.cpu(), str(dtype).removeprefix("torch."), cap, type(norm).__name__)
