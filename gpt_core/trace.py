"""One view of a model's insides, whatever runs it.

``run_with_cache(model, ids)`` works for gpt_core's own :class:`~gpt_core.model.GPT`
and for Hugging Face causal LMs (GPT-2 family, Llama-style models such as
SmolLM2 with grouped-query attention). Pages draw a :class:`Trace` and never
need to know which backend produced it: :mod:`gpt_core.backend` does.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .backend import ModelInfo, Trace, backend_of

__all__ = ["ModelInfo", "Trace", "describe", "embedding_matrix", "position_matrix", "unembed",
           "run_with_cache", "next_token_logits", "top_next_tokens"]


def describe(model: nn.Module) -> ModelInfo:
    return backend_of(model).info()


def embedding_matrix(model: nn.Module) -> torch.Tensor:
    """The token embedding table (vocab, d)."""
    return backend_of(model).embedding_matrix()


def position_matrix(model: nn.Module) -> torch.Tensor | None:
    """The learned position table (context, d), or None for rotary models."""
    return backend_of(model).position_matrix()


def unembed(model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
    """Final norm then output head: the logit lens of a residual stream (.., d) -> (.., vocab)."""
    return backend_of(model).unembed(resid)


def run_with_cache(model: nn.Module, ids) -> tuple[torch.Tensor, Trace]:
    """Forward pass that records embeddings, attention patterns and the residual stream.

    Returns ``(logits (T, vocab), trace)``. Hooks are always removed, even on error.
    """
    return backend_of(model).run_with_cache(ids)


def next_token_logits(model: nn.Module, ids) -> torch.Tensor:
    """Logits (vocab,) of the token after ``ids``: only the last position is projected."""
    return backend_of(model).next_token_logits(ids)


def top_next_tokens(logits: torch.Tensor, k: int = 10) -> list[dict]:
    """The next-token table: the k most likely next tokens with probability and logit."""
    probs = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, min(k, probs.numel()))
    return [
        {"rank": r + 1, "id": int(i), "prob": float(p), "logit": float(logits[i])}
        for r, (p, i) in enumerate(zip(top.values, top.indices))
    ]
