"""One view of a model's insides, whatever runs it.

``run_with_cache(model, ids)`` works for gpt_core's own :class:`~gpt_core.model.GPT`
and for Hugging Face causal LMs (GPT-2 family, Llama-style models such as
SmolLM2 with grouped-query attention). Pages draw a :class:`Trace` and never
need to know which backend produced it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .model import GPT


@dataclass
class ModelInfo:
    family: str             # "gpt_core" or the Hugging Face model_type ("gpt2", "llama", ...)
    n_params: int
    n_layers: int
    n_heads: int            # query heads per layer
    n_kv_heads: int         # key/value heads (fewer than n_heads under grouped-query attention)
    d_model: int
    vocab_size: int
    context_length: int
    position_kind: str      # "learned" (a position table) or "rotary" (RoPE, no table)


@dataclass
class Trace:
    """Everything one forward pass reveals, for a single sequence of T tokens."""

    ids: list[int]
    tok_emb: torch.Tensor                   # (T, d) token embeddings
    pos_emb: torch.Tensor | None            # (T, d) learned position embeddings, None for rotary
    position_kind: str                      # "learned" | "rotary"
    attentions: list[torch.Tensor]          # n_layers x (n_heads, T, T), rows sum to 1
    resid: list[torch.Tensor]               # n_layers + 1 x (T, d): input of each block, then the last output
    final_norm: torch.Tensor                # (T, d) after the final norm
    logits: torch.Tensor                    # (T, vocab)
    info: ModelInfo
    extras: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.attentions)

    @property
    def n_heads(self) -> int:
        return self.attentions[0].shape[0] if self.attentions else 0


def is_gpt_core(model: nn.Module) -> bool:
    return isinstance(model, GPT)


def _hf_config(model):
    cfg = model.config
    return getattr(cfg, "get_text_config", lambda: cfg)()


def describe(model: nn.Module) -> ModelInfo:
    n_params = sum({id(p): p.numel() for p in model.parameters()}.values())
    if is_gpt_core(model):
        c = model.cfg
        return ModelInfo("gpt_core", n_params, c.n_layers, c.n_heads, c.n_heads, c.d_model,
                         c.vocab_size, c.context_length, "learned")
    cfg = _hf_config(model)
    n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 1024)
    learned = position_matrix(model) is not None
    return ModelInfo(
        cfg.model_type, n_params,
        getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer"),
        n_heads, n_kv,
        getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd"),
        cfg.vocab_size, ctx, "learned" if learned else "rotary",
    )


def embedding_matrix(model: nn.Module) -> torch.Tensor:
    """The token embedding table (vocab, d)."""
    if is_gpt_core(model):
        return model.tok_emb.weight
    return model.get_input_embeddings().weight


def position_matrix(model: nn.Module) -> torch.Tensor | None:
    """The learned position table (context, d), or None for rotary models."""
    if is_gpt_core(model):
        return model.pos_emb.weight
    base = getattr(model, "transformer", None)
    wpe = getattr(base, "wpe", None)
    return wpe.weight if wpe is not None else None


def _find(model, paths: tuple[str, ...], what: str) -> nn.Module:
    """The first of several dotted attribute paths that exists on a Hugging Face model."""
    for path in paths:
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise ValueError(f"cannot find the {what} of {type(model).__name__}")


def _hf_blocks(model) -> nn.ModuleList:
    return _find(model, ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers"),
                 "transformer blocks")


def _hf_final_norm(model) -> nn.Module:
    return _find(model, ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm",
                         "model.decoder.final_layer_norm"), "final norm")


@torch.no_grad()
def unembed(model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
    """Final norm then output head: the logit lens of a residual stream (.., d) -> (.., vocab)."""
    if is_gpt_core(model):
        return model.out_head(model.final_norm(resid))
    return model.get_output_embeddings()(_hf_final_norm(model)(resid))


def _as_ids(model: nn.Module, ids) -> torch.Tensor:
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.size(0) != 1:
        raise ValueError("run_with_cache takes one sequence of token ids")
    if ids.size(1) == 0:
        raise ValueError("run_with_cache needs at least one token")
    return ids


@torch.no_grad()
def run_with_cache(model: nn.Module, ids) -> tuple[torch.Tensor, Trace]:
    """Forward pass that records embeddings, attention patterns and the residual stream.

    Returns ``(logits (T, vocab), trace)``. Hooks are always removed, even on error.
    """
    ids = _as_ids(model, ids)
    if is_gpt_core(model):
        return _run_gpt_core(model, ids)
    return _run_hf(model, ids)


def _run_gpt_core(model: GPT, ids: torch.Tensor):
    store: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name):
        def hook(_module, _inputs, output):
            out = output.detach()
            store[name] = out if out.dim() == 2 else out[0]  # drop the batch axis
        return hook

    try:
        handles.append(model.hook_tok_emb.register_forward_hook(keep("tok")))
        handles.append(model.hook_pos_emb.register_forward_hook(keep("pos")))
        handles.append(model.hook_final_norm.register_forward_hook(keep("final")))
        for i, block in enumerate(model.blocks):
            handles.append(block.hook_resid_pre.register_forward_hook(keep(f"resid{i}")))
            handles.append(block.att.hook_pattern.register_forward_hook(keep(f"attn{i}")))
            handles.append(block.register_forward_hook(keep(f"resid{i + 1}")))
        logits = model(ids)[0]
    finally:
        for h in handles:
            h.remove()
    n = len(model.blocks)
    trace = Trace(
        ids=ids[0].tolist(), tok_emb=store["tok"], pos_emb=store["pos"], position_kind="learned",
        attentions=[store[f"attn{i}"] for i in range(n)],
        resid=[store[f"resid{i}"] for i in range(n + 1)],
        final_norm=store["final"], logits=logits, info=describe(model),
    )
    return logits, trace


def _run_hf(model, ids: torch.Tensor):
    info = describe(model)
    last: dict[str, torch.Tensor] = {}
    blocks = _hf_blocks(model)

    def keep_last(_module, _inputs, output):
        last["resid"] = (output[0] if isinstance(output, tuple) else output)[0].detach()

    handle = blocks[-1].register_forward_hook(keep_last)
    try:
        out = model(ids, output_attentions=True, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    if not out.attentions or out.attentions[0] is None:
        raise RuntimeError("the model returned no attention weights: load it with attn_implementation='eager'")
    hidden = [h[0] for h in out.hidden_states]
    T = ids.size(1)
    tok = model.get_input_embeddings()(ids)[0].detach()
    wpe = position_matrix(model)
    pos = wpe[:T].detach() if wpe is not None else None
    logits = out.logits[0]
    trace = Trace(
        ids=ids[0].tolist(), tok_emb=tok, pos_emb=pos, position_kind=info.position_kind,
        attentions=[a[0] for a in out.attentions],
        resid=hidden[:-1] + [last["resid"]],
        final_norm=hidden[-1], logits=logits, info=info,
    )
    return logits, trace


@torch.no_grad()
def next_token_logits(model: nn.Module, ids) -> torch.Tensor:
    """Logits (vocab,) of the token after ``ids``: only the last position is projected."""
    ids = _as_ids(model, ids)
    if is_gpt_core(model):
        return model(ids, last_only=True)[0, -1]
    return model(ids, use_cache=False).logits[0, -1]


def top_next_tokens(logits: torch.Tensor, k: int = 10) -> list[dict]:
    """Seed 003's table: the k most likely next tokens with probability and logit."""
    probs = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, min(k, probs.numel()))
    return [
        {"rank": r + 1, "id": int(i), "prob": float(p), "logit": float(logits[i])}
        for r, (p, i) in enumerate(zip(top.values, top.indices))
    ]
