"""The logit lens: what would the model predict if it stopped after layer l?

Each residual stream of a :class:`gpt_core.trace.Trace` (the embeddings, then
the output of every block) is passed through the model's final norm and output
head (:func:`gpt_core.trace.unembed`). Row ``n_layers`` is therefore exactly
the model's own prediction. Works for our GPT and for Hugging Face causal LMs.

Memory stays small: one layer is projected at a time and only the top-k and
the rank of the tracked token are kept (SmolLM2 has a 49,152-token vocabulary
and 31 rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .errors import InvalidInput
from .trace import Trace, unembed


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


@torch.no_grad()
def logit_lens(model: nn.Module, trace: Trace, k: int = 5, positions=None) -> LogitLens:
    """Project every residual stream of ``trace`` to the vocabulary.

    ``positions`` (default: all) selects the query positions, ``k`` the number
    of candidates kept per cell.
    """
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise InvalidInput("logit_lens.bad_k", "The number of candidates k must be a whole number between 1 "
                           "and 100 (got '{value}').", value=repr(k)[:40])
    T = len(trace.ids)
    pos = check_positions(positions, T)
    index = torch.tensor(pos, dtype=torch.long)
    rows = len(trace.resid)
    final = unembed(model, trace.resid[-1][index.to(trace.resid[-1].device)]).float()  # (P, V)
    k = min(k, final.shape[-1])
    target = final.argmax(-1)                                             # (P,)
    top_ids = np.zeros((rows, len(pos), k), dtype=np.int64)
    top_probs = np.zeros((rows, len(pos), k), dtype=np.float32)
    ranks = np.zeros((rows, len(pos)), dtype=np.int64)
    probs_t = np.zeros((rows, len(pos)), dtype=np.float32)
    for r, resid in enumerate(trace.resid):
        logits = final if r == rows - 1 else unembed(model, resid[index.to(resid.device)]).float()
        probs = torch.softmax(logits, dim=-1)
        top = torch.topk(probs, k, dim=-1)
        top_ids[r], top_probs[r] = top.indices.cpu().numpy(), top.values.cpu().numpy()
        tgt_logit = logits.gather(-1, target[:, None])                   # (P, 1)
        ranks[r] = (1 + (logits > tgt_logit).sum(-1)).cpu().numpy()
        probs_t[r] = probs.gather(-1, target[:, None])[:, 0].cpu().numpy()
    names = ["embed"] + [str(i) for i in range(1, rows)]
    return LogitLens(pos, names, top_ids, top_probs, target.cpu().numpy(), ranks, probs_t, final.cpu())
