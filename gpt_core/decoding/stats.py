"""Summaries of one distribution over the vocabulary, shared by every decoding path."""
from __future__ import annotations

import torch


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last axis (entr(0) = 0, so removed tokens count for nothing)."""
    return torch.special.entr(probs).sum(dim=-1)


def step_stats(scores: torch.Tensor, tok: torch.Tensor, n_top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace of one generated token, kept on the device (no host sync).

    ``scores`` (1, V) are the logits it was chosen from, ``tok`` (1,) the choice.
    Returns ints ``[id, rank, top ids...]`` and floats ``[prob, entropy, logprob, top probs...]``.
    """
    logp = scores.log_softmax(dim=-1)[0]  # (V,)
    probs = logp.exp()
    p_tok = probs.gather(0, tok)
    top_p, top_i = probs.topk(n_top)
    rank = (probs > p_tok).sum(dim=0, keepdim=True) + 1
    return (torch.cat([tok, rank, top_i]),
            torch.cat([p_tok, entropy(probs).reshape(1), logp.gather(0, tok), top_p]))
