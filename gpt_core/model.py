"""A GPT written from scratch, numerically identical to Hugging Face GPT-2.

Module names follow what the app shows: token embedding + position embedding ->
N x TransformerBlock (LayerNorm -> MultiHeadAttention -> residual, LayerNorm ->
FeedForward -> residual) -> final LayerNorm -> output head (tied to the token
embedding). Identity ``HookPoint`` modules mark the sites that ``gpt_core.trace``
reads, in the spirit of TransformerLens.

There is one forward pass, in two shapes: :meth:`GPT.forward` reads T tokens
(with an optional KV cache), and :meth:`GPT.decode_step` reads one token with
static shapes (for CUDA graphs). Both go through the same sub-steps of each
block (query/key/value split, output projection, residual additions).
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig
from .errors import InvalidInput


class HookPoint(nn.Identity):
    """A named no-op; forward hooks registered here see the tensor that flows through."""

    def has_hooks(self) -> bool:
        return bool(self._forward_hooks)


class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + shift, over the last dimension."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(d_model))
        self.shift = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fused kernel of the formula above (biased variance, as in GPT-2)
        return F.layer_norm(x, (x.size(-1),), self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Expand to 4 x d_model, GELU, project back."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.act = GELU()
        self.fc_out = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class KVCache:
    """Pre-allocated keys and values of every layer, for incremental decoding.

    ``length`` counts the positions already stored; the model advances it after
    each forward pass. ``reorder`` follows beams in beam search.
    """

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device=None, dtype=None):
        shape = (cfg.n_layers, batch, cfg.n_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, past: int):
        """Store k, v (B, nh, T, hs) after ``past`` positions; return every position so far."""
        end = past + k.size(2)
        self.k[layer, :, :, past:end] = k
        self.v[layer, :, :, past:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def write_at(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, span: int):
        """Static-shape update: store k, v (B, nh, 1, hs) at ``pos`` (a (1,) tensor); return the first ``span``."""
        self.k[layer].index_copy_(2, pos, k)  # self.k[layer]: (B, nh, max_len, hs)
        self.v[layer].index_copy_(2, pos, v)
        return self.k[layer][:, :, :span], self.v[layer][:, :, :span]  # (B, nh, span, hs)

    def reorder(self, index: torch.Tensor) -> None:
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)

    def crop(self, length: int) -> None:
        self.length = min(self.length, length)


class MultiHeadAttention(nn.Module):
    """Causal self-attention with two paths.

    * explicit: scores = q k^T / sqrt(hs) -> causal mask -> softmax -> @ v; the
      weights pass through ``hook_pattern`` so they can be captured;
    * fused: ``scaled_dot_product_attention`` (flash / memory-efficient kernels),
      used when nothing listens on ``hook_pattern`` and ``explicit`` is False.
    """

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        self.layer_idx = layer_idx
        self.explicit = False
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.qkv_bias)  # W_query|W_key|W_value
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.drop_rate
        self.attn_drop = nn.Dropout(cfg.drop_rate)
        self.hook_pattern = HookPoint()
        ctx = cfg.context_length
        mask = torch.triu(torch.ones(ctx, ctx, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)  # True above the diagonal = future

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (B, T, C) to queries, keys and values, each split into heads (B, nh, T, hs)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        return q, k, v

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        """Put the heads (B, nh, T, hs) side by side again and apply the output projection."""
        B, _, T, _ = out.shape
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, C)
        return self.out_proj(out)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, past: int = 0) -> torch.Tensor:
        T = x.size(1)
        q, k, v = self._heads(x)  # 3 x (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, past)  # (B, nh, past+T, hs)
        S = k.size(2)
        if self.explicit or self.hook_pattern.has_hooks():
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, S)
            scores = scores.masked_fill(self.mask[past:past + T, :S], float("-inf"))
            weights = torch.softmax(scores, dim=-1)  # (B, nh, T, S), rows sum to 1
            weights = self.hook_pattern(weights)
            out = self.attn_drop(weights) @ v  # (B, nh, T, hs)
        else:
            drop = self.dropout if self.training else 0.0
            if past == 0:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=T > 1)
            elif T == 1:  # one new query sees every cached position
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
            else:
                allowed = ~self.mask[past:past + T, :S]
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        return self._merge(out)

    def decode_step(self, x: torch.Tensor, cache: KVCache, pos: torch.Tensor, span: int,
                    bias: torch.Tensor, attention: str = "sdpa") -> torch.Tensor:
        """One new position x (B, 1, C) at ``pos``, with static shapes (no Python-side lengths).

        Its key and value go into ``cache`` at ``pos``; the query attends over the
        first ``span`` cache entries, ``bias`` (1, 1, 1, span: 0 or -inf) hiding
        those after ``pos``. ``attention`` is "sdpa" (fused kernel) or "matmul"
        (scale * q k^T + bias, softmax, @ v). Eval mode only: no dropout, no pattern hook.
        """
        q, k, v = self._heads(x)  # 3 x (B, nh, 1, hs)
        keys, values = cache.write_at(self.layer_idx, k, v, pos, span)  # (B, nh, span, hs)
        if attention == "sdpa":
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)  # (B, nh, 1, hs)
        else:
            B = x.size(0)
            scores = torch.baddbmm(bias[0], q.flatten(0, 1), keys.flatten(0, 1).transpose(1, 2),
                                   alpha=1 / math.sqrt(self.head_dim))  # (B*nh, 1, span)
            out = (scores.softmax(dim=-1) @ values.flatten(0, 1)).view(B, self.n_heads, 1, self.head_dim)
        return self._merge(out)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + ff(norm2(x))."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.norm1 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.att = MultiHeadAttention(cfg, layer_idx)
        self.norm2 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.ff = FeedForward(cfg)
        self.drop_resid = nn.Dropout(cfg.drop_rate)
        self.hook_resid_pre = HookPoint()

    def _add_branches(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """The two residual additions: x + attention output, then + ff(norm2(x))."""
        x = x + self.drop_resid(attn_out)
        return x + self.drop_resid(self.ff(self.norm2(x)))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, past: int = 0) -> torch.Tensor:
        x = self.hook_resid_pre(x)  # (B, T, C)
        return self._add_branches(x, self.att(self.norm1(x), cache, past))

    def decode_step(self, x: torch.Tensor, cache: KVCache, pos: torch.Tensor, span: int,
                    bias: torch.Tensor, attention: str = "sdpa") -> torch.Tensor:
        """:meth:`forward` for one token with static shapes (see ``MultiHeadAttention.decode_step``)."""
        x = self.hook_resid_pre(x)  # (B, 1, C)
        return self._add_branches(x, self.att.decode_step(self.norm1(x), cache, pos, span, bias, attention))


def _store_transposed(linear: nn.Linear) -> None:
    """Keep the (out, in) weight as a view of an (in, out) buffer, GPT-2's own layout.

    ``F.linear`` then multiplies by a contiguous (in, out) matrix, which on CPU
    makes one-token decoding about 8 % faster; values, shapes and state dicts
    are unchanged (``load_state_dict`` copies into this layout).
    """
    linear.weight = nn.Parameter(linear.weight.detach().t().contiguous().t())


class GPT(nn.Module):
    """GPT-2 architecture: embeddings, blocks, final norm, tied output head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.out_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.out_head.weight = self.tok_emb.weight  # weight tying, as in GPT-2
        self.hook_tok_emb = HookPoint()
        self.hook_pos_emb = HookPoint()
        self.hook_final_norm = HookPoint()
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections
            if name.endswith(("out_proj.weight", "fc_out.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        for block in self.blocks:
            for linear in (block.att.qkv, block.att.out_proj, block.ff.fc_in, block.ff.fc_out):
                _store_transposed(linear)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(self.cfg, batch, max_len or self.cfg.context_length, p.device, p.dtype)

    def set_explicit_attention(self, on: bool = True) -> None:
        for block in self.blocks:
            block.att.explicit = on

    def _embed(self, idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Token embedding + position embedding: idx (B, T), pos (T,) -> (B, T, C)."""
        x = self.hook_tok_emb(self.tok_emb(idx)) + self.hook_pos_emb(self.pos_emb(pos))  # (B, T, C)
        return self.drop_emb(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm then output head: (B, T, C) -> (B, T, vocab)."""
        return self.out_head(self.hook_final_norm(self.final_norm(x)))

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab) (or (B, 1, vocab) with last_only)."""
        T = idx.size(1)
        past = cache.length if cache is not None else 0
        limit = min(self.cfg.context_length, cache.max_len if cache is not None else 10**12)
        if past + T > limit:
            raise InvalidInput("model.context_overflow",
                               "{n} positions exceed the context window of {limit} tokens.",
                               n=past + T, limit=limit)
        x = self._embed(idx, torch.arange(past, past + T, device=idx.device))
        for block in self.blocks:
            x = block(x, cache, past)
        if cache is not None:
            cache.length = past + T
        if last_only:
            x = x[:, -1:, :]  # only the last position predicts the next token: skip the others' head
        return self._logits(x)  # (B, T, vocab)

    def decode_step(self, tok: torch.Tensor, pos: torch.Tensor, cache: KVCache, span: int,
                    attention: str = "sdpa") -> torch.Tensor:
        """One decode step with static shapes, so that it can be captured in a CUDA graph.

        ``tok`` (B, 1) sits at position ``pos``, a (1,) tensor on the device with
        ``pos < span <= cache.max_len``. Each block writes its key and value into
        ``cache`` at ``pos`` and attends over the first ``span`` entries, those
        after ``pos`` hidden by an additive mask. Same arithmetic as :meth:`forward`
        in eval mode, without Python-side lengths (``cache.length`` is not used).
        Returns logits (B, 1, vocab).
        """
        where = torch.arange(span, device=tok.device)
        bias = torch.zeros(1, 1, 1, span, device=tok.device, dtype=self.tok_emb.weight.dtype)
        bias = bias.masked_fill(where > pos, float("-inf"))  # (1, 1, 1, span): the future is hidden
        x = self._embed(tok, pos)  # (B, 1, C)
        for block in self.blocks:
            x = block.decode_step(x, cache, pos, span, bias, attention)
        return self._logits(x)

    def num_parameters(self, count_tied_once: bool = True) -> int:
        params = {id(p): p for p in self.parameters()} if count_tied_once else None
        seq = params.values() if params is not None else self.parameters()
        return sum(p.numel() for p in seq)

    # ---------------------------------------------------------------- Hugging Face
    @classmethod
    def from_hf(cls, model_or_state_dict, n_heads: int | None = None) -> "GPT":
        """Build a GPT from a Hugging Face GPT2LMHeadModel or its state dict.

        HF's GPT-2 uses ``Conv1D`` layers whose weights are stored (in, out):
        they are transposed into ``nn.Linear``'s (out, in) layout.
        """
        if isinstance(model_or_state_dict, nn.Module):
            hf_cfg = model_or_state_dict.config
            sd = model_or_state_dict.state_dict()
            n_heads = hf_cfg.n_head
            eps = hf_cfg.layer_norm_epsilon
        else:
            sd, eps = dict(model_or_state_dict), 1e-5
        sd = {re.sub(r"^transformer\.", "", k): v for k, v in sd.items()}
        vocab, d_model = sd["wte.weight"].shape
        ctx = sd["wpe.weight"].shape[0]
        n_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"h\.(\d+)\.", k)))
        cfg = GPTConfig(
            vocab_size=vocab, context_length=ctx, d_model=d_model,
            n_heads=n_heads or d_model // 64, n_layers=n_layers, ln_eps=eps,
            qkv_bias="h.0.attn.c_attn.bias" in sd,
        )
        model = cls(cfg)
        ours: dict[str, torch.Tensor] = {"tok_emb.weight": sd["wte.weight"], "pos_emb.weight": sd["wpe.weight"],
                                         "final_norm.scale": sd["ln_f.weight"], "final_norm.shift": sd["ln_f.bias"]}
        names = {"ln_1": "norm1", "ln_2": "norm2", "attn.c_attn": "att.qkv", "attn.c_proj": "att.out_proj",
                 "mlp.c_fc": "ff.fc_in", "mlp.c_proj": "ff.fc_out"}
        for i in range(n_layers):
            for hf_name, our_name in names.items():
                w, b = sd[f"h.{i}.{hf_name}.weight"], sd.get(f"h.{i}.{hf_name}.bias")
                if our_name.startswith("norm"):
                    ours[f"blocks.{i}.{our_name}.scale"], ours[f"blocks.{i}.{our_name}.shift"] = w, b
                    continue
                ours[f"blocks.{i}.{our_name}.weight"] = w.t()  # Conv1D (in, out) -> Linear (out, in)
                if b is not None:
                    ours[f"blocks.{i}.{our_name}.bias"] = b
        with torch.no_grad():
            missing, unexpected = model.load_state_dict(ours, strict=False)
        missing = [m for m in missing if m != "out_head.weight"]
        if missing or unexpected:
            raise InvalidInput("model.weights_mismatch",
                               "These GPT-2 weights do not fit: missing {missing}, unexpected {unexpected}.",
                               missing=_names(missing), unexpected=_names(unexpected))
        return model.eval()


def _names(keys: list[str], shown: int = 5) -> str:
    """A short list of state-dict keys for a message: the first few, then how many more."""
    more = f" (+{len(keys) - shown})" if len(keys) > shown else ""
    return (", ".join(keys[:shown]) or "none") + more


# -------------------------------------------------------------------- checkpoints
def save_checkpoint(model: GPT, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``path``, atomically.

    Both files are replaced as one step (:func:`gpt_core.hub.atomic_files`): a process killed at any
    point of the save leaves, once :func:`load_checkpoint` has run :func:`gpt_core.hub.settle`, the
    previous checkpoint or the new one, never new weights with an old config. Other files of ``path``
    are kept.
    """
    from safetensors.torch import save_file

    from .hub import atomic_files

    path = Path(path)
    tied = model.out_head.weight is model.tok_emb.weight  # a tied head is rebuilt on load, not stored twice
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "out_head.weight")}
    meta = {"gpt_core": 1, "config": model.cfg.to_dict(), **(extra or {})}
    with atomic_files(path, ("model.safetensors", "config.json")) as new:
        save_file(state, str(new["model.safetensors"]))
        new["config.json"].write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> GPT:
    """Load a checkpoint written by :func:`save_checkpoint` (safetensors only), first finishing a save
    that was killed after its commit point (:func:`gpt_core.hub.settle`)."""
    from safetensors.torch import load_file

    from .hub import settle

    path = Path(path)
    settle(path)
    meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if "gpt_core" not in meta:
        raise InvalidInput("model.not_a_checkpoint",
                           "{path} is not a gpt_core checkpoint (config.json lacks the 'gpt_core' key).",
                           path=str(path))
    model = GPT(GPTConfig.from_dict(meta["config"]))
    state = load_file(str(path / "model.safetensors"), device=map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [m for m in missing if m != "out_head.weight"] or unexpected:
        raise InvalidInput("model.checkpoint_mismatch", "The checkpoint {path} does not match its config.",
                           path=str(path))
    return model.eval()
