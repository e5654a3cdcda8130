"""The from-scratch GPT explained module by module, and any other model next to it.

* :func:`module_source` returns the real code of each module of
  :mod:`gpt_core.model`, read with :func:`inspect.getsource` (never pasted);
* :func:`live_shapes` runs the model once with forward hooks and reports the
  shape of every tensor from ``tok_emb`` + ``pos_emb`` through the blocks to
  ``out_head``;
* :func:`param_rows` counts parameters module by module;
* :func:`parity_random` / :func:`parity_same_weights` compare our logits with
  Hugging Face's ``GPT2LMHeadModel`` on the same weights and input;
* :func:`last_position_walk` shows that only the last position's logits choose
  the next token.

For any model the app runs (our GPT, Llama-style models such as SmolLM2,
Gemma 3, ...), :func:`anatomy` records what its blocks are made of (norms,
positions, grouped-query attention, gated MLP, sliding-window layers) and the
live shape of every stage with forward hooks on a real forward pass;
:func:`next_token_walk` and :func:`model_param_rows` do the same walks as
above for any model.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import torch

from . import model as model_module
from .config import GPTConfig
from .errors import InvalidInput
from .backend import backend_of, own_gpt, this_thread_only
from .model import GPT

MODULE_NAMES = ("GPT", "TransformerBlock", "MultiHeadAttention", "LayerNorm", "FeedForward", "GELU")


def module_source(name: str) -> str:
    """Source code of one module class of :mod:`gpt_core.model`."""
    if name not in MODULE_NAMES:
        raise InvalidInput("architecture.unknown_module", "'{name}' is not a module of the from-scratch GPT; "
                           "choose one of {choices}.", name=str(name), choices=", ".join(MODULE_NAMES))
    return inspect.getsource(getattr(model_module, name))


def source_file() -> str:
    return inspect.getsourcefile(model_module) or ""


def _ours(model) -> GPT:
    """``model`` itself when it is our from-scratch GPT (these walk-throughs read its modules)."""
    gpt = own_gpt(model)
    if gpt is None or gpt is not model:
        raise InvalidInput("architecture.needs_gpt", "This walk-through needs gpt_core's from-scratch GPT.")
    return gpt


def _as_ids(model: GPT, ids) -> torch.Tensor:
    model = _ours(model)
    t = torch.as_tensor(ids, dtype=torch.long)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.size(1) == 0:
        raise InvalidInput("architecture.no_ids", "Give at least one token id (one sequence).")
    if t.size(1) > model.cfg.context_length:
        raise InvalidInput("architecture.too_long", "{n} tokens exceed the context window of {context} tokens.",
                           n=t.size(1), context=model.cfg.context_length)
    if int(t.min()) < 0 or int(t.max()) >= model.cfg.vocab_size:
        raise InvalidInput("architecture.bad_id", "Token ids must be between 0 and {top}.", top=model.cfg.vocab_size - 1)
    return t.to(model.tok_emb.weight.device)


# ----------------------------------------------------------------------- shapes
@dataclass
class ShapeStep:
    path: str                   # module path inside GPT ("blocks.0.att.qkv")
    module: str                 # class name ("Linear", "MultiHeadAttention")
    shape: tuple[int, ...]      # output shape for the current input
    params: int                 # parameters of this module, sub-modules included (0 for the tied head)
    role: str = ""              # what the stage does, the same name in every family ("q_proj", "act", ...)
    layer: int | None = None    # the block it belongs to
    note: str = ""              # e.g. the layer kind a rotary table is for ("sliding_attention")


def _own_params(module: torch.nn.Module, seen: set[int]) -> int:
    n = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


# the shape of each stage in symbols (B batch, T tokens, d d_model, nh heads, V vocabulary)
SYMBOLIC = {
    "tok_emb": "(B, T, d)", "pos_emb": "(T, d)", "drop_emb": "(B, T, d)", "norm1": "(B, T, d)",
    "qkv": "(B, T, 3d)", "hook_pattern": "(B, nh, T, T)", "out_proj": "(B, T, d)", "att": "(B, T, d)",
    "norm2": "(B, T, d)", "fc_in": "(B, T, 4d)", "act": "(B, T, 4d)", "fc_out": "(B, T, d)",
    "block": "(B, T, d)", "final_norm": "(B, T, d)", "out_head": "(B, T, V)",
}


def symbolic_shape(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    return SYMBOLIC["block"] if last.isdigit() else SYMBOLIC.get(last, "")


@torch.no_grad()
def live_shapes(model: GPT, ids, detail_block: int = 0) -> list[ShapeStep]:
    """Output shape of every stage for ``ids``, in the order the forward pass runs.

    Block ``detail_block`` is shown module by module (norm1, qkv, attention
    weights, out_proj, norm2, fc_in, GELU, fc_out); the other blocks as a whole.
    """
    ids = _as_ids(model, ids)
    n = len(model.blocks)
    if isinstance(detail_block, bool) or not isinstance(detail_block, int) or not 0 <= detail_block < n:
        raise InvalidInput("architecture.bad_block", "The block must be between 0 and {top}.", top=n - 1)
    sites = ["tok_emb", "pos_emb", "drop_emb"]
    inner = ["norm1", "att.qkv", "att.hook_pattern", "att.out_proj", "att", "norm2",
             "ff.fc_in", "ff.act", "ff.fc_out"]
    for i in range(n):
        if i == detail_block:
            sites += [f"blocks.{i}.{s}" for s in inner]
        sites.append(f"blocks.{i}")
    sites += ["final_norm", "out_head"]
    modules = dict(model.named_modules())
    steps: list[ShapeStep] = []
    handles = []
    tied = model.out_head.weight is model.tok_emb.weight

    def record(path):
        def hook(module, _inputs, output):
            if path == "out_head" and tied:
                params = 0  # the same matrix as tok_emb
            else:
                params = sum(p.numel() for p in module.parameters())
            steps.append(ShapeStep(path, type(module).__name__, tuple(output.shape), params))
        return this_thread_only(hook)

    try:
        for path in sites:
            handles.append(modules[path].register_forward_hook(record(path)))
        model(ids)
    finally:
        for h in handles:
            h.remove()
    for s in steps:
        if s.path.endswith("hook_pattern"):
            s.module = "softmax(QKᵀ/√d)"
        parts = s.path.split(".")
        if parts[0] == "blocks":
            s.layer = int(parts[1])
            s.role = "block" if len(parts) == 2 else GPT_ROLES.get(".".join(parts[2:]), "")
        else:
            s.role = GPT_ROLES.get(s.path, "")
    return steps


# the role of each stage of our GPT, named as in :data:`ROLE_NAMES`
GPT_ROLES = {"tok_emb": "embed", "pos_emb": "pos_emb", "drop_emb": "embed_sum", "norm1": "attn_norm",
             "att.qkv": "qkv", "att.hook_pattern": "scores", "att.out_proj": "o_proj", "att": "attention",
             "norm2": "ffn_norm", "ff.fc_in": "up_proj", "ff.act": "act", "ff.fc_out": "down_proj",
             "ff": "mlp", "final_norm": "final_norm", "out_head": "head"}


# ------------------------------------------------------------------- parameters
@dataclass
class ParamRow:
    path: str
    module: str
    params: int
    shared_with: str | None = None   # the tied output head shares tok_emb's matrix


def param_rows(model: GPT, detail_block: int | None = 0) -> list[ParamRow]:
    """Parameters per top-level module, with one block broken down.

    Shared tensors are counted once (the output head is tied to ``tok_emb``),
    so the top-level rows add up to ``model.num_parameters()``.
    """
    model = _ours(model)
    seen: set[int] = set()
    rows = [ParamRow("tok_emb", "Embedding", _own_params(model.tok_emb, seen)),
            ParamRow("pos_emb", "Embedding", _own_params(model.pos_emb, seen))]
    for i, block in enumerate(model.blocks):
        rows.append(ParamRow(f"blocks.{i}", "TransformerBlock", _own_params(block, seen)))
    rows.append(ParamRow("final_norm", "LayerNorm", _own_params(model.final_norm, seen)))
    head = _own_params(model.out_head, seen)
    tied = model.out_head.weight is model.tok_emb.weight
    rows.append(ParamRow("out_head", "Linear", head, "tok_emb" if tied else None))
    return rows


def block_rows(model: GPT, block: int = 0) -> list[ParamRow]:
    """Parameters of the sub-modules of one block (they add up to the block's row)."""
    model = _ours(model)
    if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < len(model.blocks):
        raise InvalidInput("architecture.bad_block", "The block must be between 0 and {top}.", top=len(model.blocks) - 1)
    b = model.blocks[block]
    seen: set[int] = set()
    return [ParamRow(f"blocks.{block}.{name}", type(m).__name__, _own_params(m, seen))
            for name, m in (("norm1", b.norm1), ("att.qkv", b.att.qkv), ("att.out_proj", b.att.out_proj),
                            ("norm2", b.norm2), ("ff.fc_in", b.ff.fc_in), ("ff.fc_out", b.ff.fc_out))]


# ----------------------------------------------------------------------- parity
# Sizes of the random GPT-2-shaped model used when no real GPT-2 is at hand.
# "gpt2" is the real GPT-2 small configuration (124M, slow to build on a CPU);
# "gpt2-reduced" keeps GPT-2's vocabulary, context and head size but fewer,
# narrower layers, and is labelled as such.
PARITY_SIZES = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12),
    "gpt2-reduced": dict(n_embd=256, n_layer=4, n_head=4),
}


@dataclass
class ParityResult:
    max_abs_diff: float          # max |our logits - HF logits|
    max_abs_logit: float         # scale of the logits, for context
    n_tokens: int
    config: dict                 # vocab_size, context_length, d_model, n_layers, n_heads
    weights: str                 # "random" (seeded) or "given"
    size: str                    # a PARITY_SIZES key, or "model"
    seconds: float
    tolerance: float = 1e-4
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def random_hf_gpt2(size: str = "gpt2-reduced", seed: int = 0):
    """A Hugging Face ``GPT2LMHeadModel`` with random weights (seeded), eager attention."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if size not in PARITY_SIZES:
        raise InvalidInput("architecture.unknown_size", "Unknown size '{size}': choose one of {choices}.",
                           size=str(size), choices=", ".join(PARITY_SIZES))
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, attn_implementation="eager", **PARITY_SIZES[size])
    return GPT2LMHeadModel(cfg).eval()


def to_hf_gpt2(model: GPT):
    """The inverse of :meth:`GPT.from_hf`: a ``GPT2LMHeadModel`` holding our weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.cfg
    if not c.qkv_bias:
        raise InvalidInput("architecture.no_qkv_bias", "Hugging Face's GPT-2 always has query/key/value biases; "
                           "this model has none.")
    try:  # every weight is overwritten below: skip the (slow) random initialisation
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from contextlib import nullcontext as no_init_weights
    with no_init_weights():
        hf = GPT2LMHeadModel(GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.d_model, n_layer=c.n_layers,
            n_head=c.n_heads, layer_norm_epsilon=c.ln_eps, attn_implementation="eager",
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        ))
    sd = {"transformer.wte.weight": model.tok_emb.weight, "transformer.wpe.weight": model.pos_emb.weight,
          "transformer.ln_f.weight": model.final_norm.scale, "transformer.ln_f.bias": model.final_norm.shift}
    pairs = {"norm1": "ln_1", "norm2": "ln_2", "att.qkv": "attn.c_attn", "att.out_proj": "attn.c_proj",
             "ff.fc_in": "mlp.c_fc", "ff.fc_out": "mlp.c_proj"}
    for i, block in enumerate(model.blocks):
        mods = dict(block.named_modules())
        for ours, theirs in pairs.items():
            m = mods[ours]
            if ours.startswith("norm"):
                sd[f"transformer.h.{i}.{theirs}.weight"], sd[f"transformer.h.{i}.{theirs}.bias"] = m.scale, m.shift
            else:  # Linear (out, in) -> Conv1D (in, out)
                sd[f"transformer.h.{i}.{theirs}.weight"] = m.weight.t()
                sd[f"transformer.h.{i}.{theirs}.bias"] = m.bias
    with torch.no_grad():
        missing, unexpected = hf.load_state_dict({k: v.detach() for k, v in sd.items()}, strict=False)
    missing = [m for m in missing if m != "lm_head.weight" and not m.endswith(".attn.bias")
               and not m.endswith(".attn.masked_bias")]
    if missing or unexpected:
        raise ValueError(f"conversion to GPT2LMHeadModel failed: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    if hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr():
        with torch.no_grad():
            hf.lm_head.weight = hf.transformer.wte.weight
    return hf.eval().to(model.tok_emb.weight.device)


@torch.no_grad()
def max_logit_diff(ours: GPT, hf, ids) -> tuple[float, float]:
    ids = _as_ids(ours, ids)
    a = ours(ids).float()
    b = hf(ids.to(next(hf.parameters()).device), use_cache=False).logits.float().to(a.device)
    return float((a - b).abs().max()), float(b.abs().max())


def _config_dict(cfg: GPTConfig) -> dict:
    return {"vocab_size": cfg.vocab_size, "context_length": cfg.context_length, "d_model": cfg.d_model,
            "n_layers": cfg.n_layers, "n_heads": cfg.n_heads}


def parity_pair(size: str = "gpt2-reduced", seed: int = 0):
    """(HF random GPT-2-shaped model, our GPT converted from it with ``GPT.from_hf``)."""
    hf = random_hf_gpt2(size, seed)
    return hf, GPT.from_hf(hf)


def parity_random(size: str = "gpt2-reduced", seed: int = 0, ids=None, n_tokens: int = 16,
                  pair=None) -> ParityResult:
    """Build a random HF GPT-2 (seeded), convert it to our GPT, compare logits on ``ids``
    (default: ``n_tokens`` random ids). ``pair`` reuses an already built :func:`parity_pair`."""
    start = time.perf_counter()
    hf, ours = pair if pair is not None else parity_pair(size, seed)
    if ids is None:
        ids = torch.randint(0, ours.cfg.vocab_size, (n_tokens,), generator=torch.Generator().manual_seed(seed))
    ids = _as_ids(ours, ids)
    diff, scale = max_logit_diff(ours, hf, ids)
    return ParityResult(diff, scale, ids.size(1), _config_dict(ours.cfg), "random", size,
                        time.perf_counter() - start)


def parity_same_weights(model: GPT, ids) -> ParityResult:
    """Compare our GPT with Hugging Face's GPT-2 code running the very same weights."""
    start = time.perf_counter()
    hf = to_hf_gpt2(model)
    diff, scale = max_logit_diff(model, hf, ids)
    n = _as_ids(model, ids).size(1)
    return ParityResult(diff, scale, n, _config_dict(model.cfg), "given", "model", time.perf_counter() - start)


# ------------------------------------------------------- next-token selection
@dataclass
class NextTokenWalk:
    logits_shape: tuple[int, ...]       # (1, T, vocab): one score vector per position
    last_shape: tuple[int, ...]         # (1, vocab): logits[:, -1, :]
    per_position: list[dict]            # position, input id, argmax id (what l_i predicts), actual next id
    top: list[dict]                     # rank, id, prob, logit of the last position
    greedy_id: int
    last_only_diff: float               # |model(ids)[:, -1] - model(ids, last_only=True)[:, -1]|


@torch.no_grad()
def last_position_walk(model: GPT, ids, k: int = 5) -> NextTokenWalk:
    """Next-token selection: every position gets logits, only the last one is used."""
    ids = _as_ids(model, ids)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput("architecture.bad_k", "k must be a positive whole number.")
    logits = model(ids).float()                        # (1, T, V)
    last = logits[:, -1, :]                            # (1, V)
    fast = model(ids, last_only=True).float()[:, -1, :]
    probs = torch.softmax(last, dim=-1)
    top = torch.topk(probs[0], min(k, probs.size(-1)))
    row = ids[0].tolist()
    argmax = logits[0].argmax(-1).tolist()
    per_position = [{"position": i, "input_id": row[i], "predicted_id": argmax[i],
                     "actual_next_id": row[i + 1] if i + 1 < len(row) else None} for i in range(len(row))]
    return NextTokenWalk(
        tuple(logits.shape), tuple(last.shape), per_position,
        [{"rank": r + 1, "id": int(i), "prob": float(p), "logit": float(last[0, i])}
         for r, (p, i) in enumerate(zip(top.values, top.indices))],
        int(argmax[-1]), float((last - fast).abs().max()),
    )


# =========================================================== any model: anatomy
# What each stage does, the same names for every family. Hugging Face module
# names (Llama, Gemma, Mistral, Qwen, ...) -> role; the post-attention norm is a
# pre-MLP norm in Llama but a real post-attention norm in Gemma (see _role).
HF_ROLES = {
    "embed_tokens": "embed", "wte": "embed", "wpe": "pos_emb", "rotary_emb": "rope",
    "input_layernorm": "attn_norm", "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffn_norm",
    "self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
    "self_attn.q_norm": "q_norm", "self_attn.k_norm": "k_norm", "self_attn.o_proj": "o_proj",
    "self_attn": "attention", "mlp.gate_proj": "gate_proj", "mlp.up_proj": "up_proj",
    "mlp.act_fn": "act", "mlp.down_proj": "down_proj", "mlp": "mlp",
}
NORM_ROLES = ("attn_norm", "q_norm", "k_norm", "post_attn_norm", "ffn_norm", "post_ffn_norm", "final_norm")
# a model's full logits (T x vocab floats) are only materialised up to this size; beyond it only the
# last position goes through the head (``logits_to_keep=1``), as generation does
FULL_LOGITS_LIMIT = 32_000_000


@dataclass
class Anatomy:
    """What a model's blocks are made of, and the live shapes of one forward pass."""

    family: str                  # "gpt_core" or the Hugging Face model_type ("llama", "gemma3_text", ...)
    model_class: str
    n_layers: int
    n_heads: int                 # query heads
    n_kv_heads: int              # key/value heads (fewer under grouped-query attention)
    head_dim: int
    d_model: int
    d_ff: int                    # width inside the MLP
    vocab_size: int
    context_length: int
    norm: str                    # "layernorm" | "rmsnorm"
    norm_eps: float
    norm_unit_offset: bool       # the norm multiplies by (1 + w), w starting at 0 (Gemma)
    qk_norm: bool                # RMSNorm on each query and key head before the scores (Gemma 3)
    sandwich_norm: bool          # norms after attention and after the MLP too (Gemma)
    position: str                # "learned" (a table) | "rotary" (RoPE, no table)
    rope_theta: dict[str, float]  # "full" / "sliding" -> RoPE base
    mlp: str                     # "gelu" (d -> 4d -> d) | "swiglu" | "geglu" | "gated"
    activation: str              # the activation's configuration name ("silu", "gelu_pytorch_tanh", ...)
    embed_scale: float | None    # embeddings multiplied by this (Gemma: sqrt(d)), None when not scaled
    tied_head: bool              # the output head is the embedding matrix
    biases: bool                 # the attention projections have biases
    attn_scale: float            # scores = Q K^T * attn_scale
    windows: list[int | None]    # per layer: sliding window size, None = full causal attention
    logit_softcap: float | None
    n_params: int
    steps: list[ShapeStep] = field(default_factory=list)
    detail_block: int = 0
    # layer -> how many positions the last token attends to (weights > 0), measured on the forward pass
    spans: dict[int, int] = field(default_factory=dict)
    embed_dtype: str | None = None   # the token table's dtype when it differs from the blocks' ("float16")

    @property
    def kv_group(self) -> int:
        """Query heads that share one key/value head."""
        return self.n_heads // max(1, self.n_kv_heads)

    @property
    def layer_kinds(self) -> list[str]:
        return ["full" if w is None else "sliding" for w in self.windows]


def _check_ids(model, ids) -> torch.Tensor:
    """One sequence of valid token ids for any model, on its device."""
    backend = backend_of(model)
    t = torch.as_tensor(ids, dtype=torch.long)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.size(0) != 1 or t.size(1) == 0:
        raise InvalidInput("architecture.no_ids", "Give at least one token id (one sequence).")
    if t.size(1) > backend.context_length:
        raise InvalidInput("architecture.too_long", "{n} tokens exceed the context window of {context} tokens.",
                           n=t.size(1), context=backend.context_length)
    if int(t.min()) < 0 or int(t.max()) >= backend.vocab_size:
        raise InvalidInput("architecture.bad_id", "Token ids must be between 0 and {top}.", top=backend.vocab_size - 1)
    return t.to(backend.device)


def _attr(obj, *names, default=None):
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _rope_thetas(cfg) -> dict[str, float]:
    """RoPE bases per layer kind: {"full": ...} (one for every layer) or {"sliding": ..., "full": ...}."""
    params = getattr(cfg, "rope_parameters", None) or {}
    if "rope_theta" in params:
        return {"full": float(params["rope_theta"])}
    out = {("sliding" if kind.startswith("sliding") else "full"): float(p["rope_theta"])
           for kind, p in params.items() if isinstance(p, dict) and "rope_theta" in p}
    if not out and getattr(cfg, "rope_theta", None) is not None:
        out["full"] = float(cfg.rope_theta)
        if getattr(cfg, "rope_local_base_freq", None) is not None:
            out["sliding"] = float(cfg.rope_local_base_freq)
    return out


def _windows(backend, cfg, n_layers: int) -> list[int | None]:
    known = getattr(backend.info(), "attention_windows", None)
    if known and len(known) == n_layers:
        return list(known)
    types, window = getattr(cfg, "layer_types", None), getattr(cfg, "sliding_window", None)
    if types and window:
        return [int(window) if kind == "sliding_attention" else None for kind in types]
    return [None] * n_layers


def _gpt_anatomy(gpt: GPT) -> Anatomy:
    c = gpt.cfg
    return Anatomy(
        "gpt_core", type(gpt).__name__, c.n_layers, c.n_heads, c.n_heads, c.head_dim, c.d_model, 4 * c.d_model,
        c.vocab_size, c.context_length, "layernorm", c.ln_eps, False, False, False, "learned", {}, "gelu",
        "gelu_tanh", None, gpt.out_head.weight is gpt.tok_emb.weight, c.qkv_bias, c.head_dim ** -0.5,
        [None] * c.n_layers, None, gpt.num_parameters())


def model_facts(model) -> Anatomy:
    """What ``model``'s blocks are made of, read from its configuration and modules (no forward pass)."""
    gpt = own_gpt(model)
    if gpt is not None:
        return _gpt_anatomy(gpt)
    backend = backend_of(model)
    base, cfg, info = backend.base, backend.config, backend.info()
    block = backend.blocks()[0]
    attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    norm = _attr(block, "input_layernorm", "ln_1")
    gated = mlp is not None and hasattr(mlp, "gate_proj")
    act = str(_attr(cfg, "hidden_activation", "hidden_act", "activation_function", default=""))
    mlp_kind = ("swiglu" if act == "silu" else "geglu" if act.startswith("gelu") else "gated") if gated else "gelu"
    emb = base.get_input_embeddings()
    scale = _attr(emb, "scalar_embed_scale", "embed_scale")
    scale = float(scale) if scale is not None and abs(float(scale) - 1.0) > 1e-6 else None
    block_dtype = next(block.parameters()).dtype
    head = base.get_output_embeddings()
    head_dim = int(_attr(cfg, "head_dim", default=info.d_model // info.n_heads))
    up = getattr(mlp, "up_proj", None) or getattr(mlp, "c_fc", None)
    d_ff = int(_attr(cfg, "intermediate_size", "n_inner", default=0) or
               (getattr(up, "out_features", None) or 4 * info.d_model))
    q = getattr(attn, "q_proj", None)
    return Anatomy(
        info.family, type(base).__name__, info.n_layers, info.n_heads, info.n_kv_heads, head_dim, info.d_model,
        d_ff, info.vocab_size, info.context_length,
        "rmsnorm" if "rms" in type(norm).__name__.lower() else "layernorm",
        float(_attr(norm, "eps", "variance_epsilon", default=_attr(cfg, "rms_norm_eps", default=0.0))),
        type(norm).__name__.startswith("Gemma"), hasattr(attn, "q_norm"), hasattr(block, "pre_feedforward_layernorm"),
        info.position_kind, _rope_thetas(cfg) if info.position_kind == "rotary" else {}, mlp_kind, act, scale,
        head is not None and head.weight is emb.weight, getattr(q, "bias", None) is not None,
        float(_attr(attn, "scaling", default=head_dim ** -0.5)), _windows(backend, cfg, info.n_layers),
        getattr(info, "final_logit_softcap", None) or getattr(cfg, "final_logit_softcapping", None), info.n_params,
        embed_dtype=str(emb.weight.dtype).removeprefix("torch.") if emb.weight.dtype != block_dtype else None)


def _role(rel: str, facts: Anatomy) -> str:
    if rel == "post_attention_layernorm":  # Llama: the norm before the MLP; Gemma: after attention
        return "post_attn_norm" if facts.sandwich_norm else "ffn_norm"
    return HF_ROLES.get(rel, "")


def _first_tensor(output):
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    return getattr(output, "last_hidden_state", None)


@torch.no_grad()
def anatomy(model, ids, detail_block: int = 0) -> Anatomy:
    """:func:`model_facts` plus the output shape of every stage for ``ids``, in the order the forward runs.

    Block ``detail_block`` is shown module by module (norms, q/k/v projections,
    q/k norms, attention weights, output projection, MLP projections and
    activation); every block also appears as a whole, with its layer kind.
    """
    return explain(model, ids, k=None, detail_block=detail_block)[0]


@torch.no_grad()
def explain(model, ids, k: int | None = 10, detail_block: int = 0) -> tuple[Anatomy, NextTokenWalk | None]:
    """:func:`anatomy` and :func:`next_token_walk` (``k`` most likely next tokens) from ONE forward pass."""
    facts = model_facts(model)
    if isinstance(detail_block, bool) or not isinstance(detail_block, int) or not 0 <= detail_block < facts.n_layers:
        raise InvalidInput("architecture.bad_block", "The block must be between 0 and {top}.", top=facts.n_layers - 1)
    if k is not None:
        _check_k(k)
    facts.detail_block = detail_block
    gpt = own_gpt(model)
    if gpt is not None:
        facts.steps = live_shapes(gpt, ids, detail_block)
        return facts, None if k is None else last_position_walk(gpt, ids, k)
    ids = _check_ids(model, ids)
    steps, kept = _hooked_forward(model, ids, facts)
    facts.steps = _ordered(steps, facts)
    return facts, None if k is None else _walk_from(model, ids, kept["logits"], kept["hidden"], k)


def _sites(model, facts: Anatomy) -> list[tuple[torch.nn.Module, str, str, int | None]]:
    """(module, role, path inside its block, layer) of every stage to record."""
    backend = backend_of(model)
    base, blocks = backend.base, backend.blocks()
    sites = [(base.get_input_embeddings(), "embed", "", None), (backend.final_norm(), "final_norm", "", None),
             (base.get_output_embeddings(), "head", "", None)]
    inside = {id(x) for x in blocks.modules()}
    rotary = next((m for n, m in base.named_modules() if n.endswith("rotary_emb") and id(m) not in inside), None)
    if rotary is not None:
        sites.append((rotary, "rope", "", None))
    for i, block in enumerate(blocks):
        sites.append((block, "block", "", i))
        if i == facts.detail_block:
            sites += [(m, _role(rel, facts), rel, i) for rel, m in block.named_modules() if rel]
        elif getattr(block, "self_attn", None) is not None:
            sites.append((block.self_attn, "attention", "self_attn", i))  # its attention weights only
    return sites


def _hooked_forward(model, ids: torch.Tensor, facts: Anatomy) -> tuple[list[ShapeStep], dict]:
    """One forward pass with a hook on every site; also keeps the final-norm output and the logits."""
    backend = backend_of(model)
    names = {id(m): n for n, m in backend.base.named_modules()}
    steps: list[ShapeStep] = []
    kept: dict[str, torch.Tensor] = {}

    def record(module, role, rel, layer):
        path = names.get(id(module), rel)
        params = 0 if role == "head" and facts.tied_head else sum(p.numel() for p in module.parameters())

        def hook(_module, inputs, output):
            weights = output[1] if role == "attention" and isinstance(output, tuple) and len(output) > 1 else None
            if torch.is_tensor(weights):  # (B, nh, T, T): how far back the last position reaches
                facts.spans[layer] = int((weights[0, :, -1, :] > 0).any(0).sum())
            if role == "attention" and layer != facts.detail_block:
                return
            out = _first_tensor(output)
            if out is None:
                return
            if role == "final_norm":
                kept["hidden"] = out
            note = inputs[2] if role == "rope" and len(inputs) > 2 and isinstance(inputs[2], str) else ""
            steps.append(ShapeStep(path, type(module).__name__, tuple(out.shape), params, role, layer, note))
            if torch.is_tensor(weights):
                steps.append(ShapeStep(f"{path}.weights", "softmax(QKᵀ·s)", tuple(weights.shape), 0, "scores",
                                       layer))
        return this_thread_only(hook)

    kwargs = {"use_cache": False}
    if ids.size(1) * facts.vocab_size > FULL_LOGITS_LIMIT and _takes(backend.base, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    handles = []
    try:
        for module, role, rel, layer in _sites(model, facts):
            handles.append(module.register_forward_hook(record(module, role, rel, layer)))
        kept["logits"] = backend.model(ids, **kwargs).logits
    finally:
        for h in handles:
            h.remove()
    return steps, kept


def _takes(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _ordered(steps: list[ShapeStep], facts: Anatomy) -> list[ShapeStep]:
    """Steps as the forward runs, the attention weights of the detailed block right before o_proj."""
    out = [s for s in steps if not (s.role == "scores" and s.layer == facts.detail_block)]
    scores = [s for s in steps if s.role == "scores" and s.layer == facts.detail_block]
    if scores:
        at = next((i for i, s in enumerate(out) if s.role == "o_proj" and s.layer == facts.detail_block), len(out))
        out[at:at] = scores
    return out


SYMBOLS = {
    "embed": "(B, T, d)", "pos_emb": "(T, d)", "embed_sum": "(B, T, d)", "rope": "(B, T, hd)",
    "attn_norm": "(B, T, d)", "qkv": "(B, T, 3d)", "q_proj": "(B, T, nh·hd)", "k_proj": "(B, T, kv·hd)",
    "v_proj": "(B, T, kv·hd)", "q_norm": "(B, nh, T, hd)", "k_norm": "(B, kv, T, hd)", "scores": "(B, nh, T, T)",
    "o_proj": "(B, T, d)", "attention": "(B, T, d)", "post_attn_norm": "(B, T, d)", "ffn_norm": "(B, T, d)",
    "gate_proj": "(B, T, f)", "up_proj": "(B, T, f)", "act": "(B, T, f)", "down_proj": "(B, T, d)",
    "mlp": "(B, T, d)", "post_ffn_norm": "(B, T, d)", "block": "(B, T, d)", "final_norm": "(B, T, d)",
    "head": "(B, T, V)",
}


def symbol(step: ShapeStep, facts: Anatomy | None = None) -> str:
    """The shape of a step in symbols (B batch, T tokens, d width, nh/kv heads, hd head size, f MLP width)."""
    if facts is not None and facts.family == "gpt_core":
        return symbolic_shape(step.path)
    if step.role == "head" and len(step.shape) == 3 and step.shape[1] == 1:
        return "(B, 1, V)"  # logits_to_keep=1: only the last position reached the head
    return SYMBOLS.get(step.role, "")


def counterpart(model, name: str):
    """The class of ``model`` that plays the part of our module ``name`` (None when there is none to show)."""
    if name not in MODULE_NAMES:
        raise InvalidInput("architecture.unknown_module", "'{name}' is not a module of the from-scratch GPT; "
                           "choose one of {choices}.", name=str(name), choices=", ".join(MODULE_NAMES))
    if own_gpt(model) is not None:
        return None
    block = backend_of(model).blocks()[0]
    mlp = getattr(block, "mlp", None)
    found = {"GPT": None, "TransformerBlock": block, "MultiHeadAttention": getattr(block, "self_attn", None),
             "LayerNorm": _attr(block, "input_layernorm", "ln_1"), "FeedForward": mlp,
             "GELU": _attr(mlp, "act_fn", "act")}[name]
    return type(found) if isinstance(found, torch.nn.Module) else None


def class_source(cls) -> tuple[str, str] | None:
    """(source code, file from the package root) of a class, read with inspect; None when it has none."""
    try:
        source, path = inspect.getsource(cls), inspect.getsourcefile(cls) or ""
    except (OSError, TypeError):
        return None
    parts = path.replace("\\", "/").split("/")
    for root in ("transformers", "torch", "peft"):
        if root in parts:
            path = "/".join(parts[len(parts) - 1 - parts[::-1].index(root):])
            break
    return source, path


# ------------------------------------------------------------ any model: params
def model_param_rows(model) -> list[ParamRow]:
    """Parameters per top-level part of any model (embedding, each block, final norm, head, the rest).

    Shared tensors are counted once, so the rows add up to the model's parameter count.
    """
    if own_gpt(model) is not None:
        return param_rows(own_gpt(model))
    backend = backend_of(model)
    base = backend.base
    names = {id(m): n for n, m in base.named_modules()}
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    seen: set[int] = set()
    rows = [ParamRow(names.get(id(emb), "embed"), type(emb).__name__, _own_params(emb, seen))]
    pos = backend.position_matrix()
    if pos is not None:
        rows.append(ParamRow("wpe", "Embedding", pos.numel()))
        seen.add(id(pos))
    for block in backend.blocks():
        rows.append(ParamRow(names.get(id(block), "block"), type(block).__name__, _own_params(block, seen)))
    final = backend.final_norm()
    rows.append(ParamRow(names.get(id(final), "norm"), type(final).__name__, _own_params(final, seen)))
    if head is not None:
        tied = head.weight is emb.weight
        rows.append(ParamRow(names.get(id(head), "lm_head"), type(head).__name__, _own_params(head, seen),
                             rows[0].path if tied else None))
    rest = _own_params(backend.model, seen)
    if rest:
        rows.append(ParamRow("…", "", rest))
    return rows


def model_block_rows(model, block: int = 0) -> list[ParamRow]:
    """Parameters of the leaf modules of one block of any model (they add up to the block's row)."""
    if own_gpt(model) is not None:
        return block_rows(own_gpt(model), block)
    blocks = backend_of(model).blocks()
    if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < len(blocks):
        raise InvalidInput("architecture.bad_block", "The block must be between 0 and {top}.", top=len(blocks) - 1)
    seen: set[int] = set()
    rows = []
    for rel, m in blocks[block].named_modules():
        n = sum(p.numel() for p in m.parameters(recurse=False) if id(p) not in seen)
        seen.update(id(p) for p in m.parameters(recurse=False))
        if n:
            rows.append(ParamRow(f"{block}.{rel}", type(m).__name__, n))
    return rows


# ----------------------------------------------------- any model: next token
@torch.no_grad()
def next_token_walk(model, ids, k: int = 10, chunk: int = 64) -> NextTokenWalk:
    """:func:`last_position_walk` for any model.

    Hugging Face models run once with only the last position through the head
    (``logits_to_keep=1``); the other positions' predictions come from their
    final-norm outputs through the head ``chunk`` positions at a time, so a long
    text never holds T x vocab logits at once. ``last_only_diff`` compares the
    last row computed both ways.
    """
    if own_gpt(model) is not None:
        return last_position_walk(own_gpt(model), ids, k)
    _check_k(k)
    ids = _check_ids(model, ids)
    backend = backend_of(model)
    kept: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        kept["hidden"] = _first_tensor(output)

    handle = backend.final_norm().register_forward_hook(this_thread_only(keep))
    try:
        extra = {"logits_to_keep": 1} if _takes(backend.base, "logits_to_keep") else {}
        logits = backend.model(ids, use_cache=False, **extra).logits
    finally:
        handle.remove()
    return _walk_from(model, ids, logits, kept["hidden"], k, chunk)


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput("architecture.bad_k", "k must be a positive whole number.")


def _walk_from(model, ids: torch.Tensor, logits: torch.Tensor, hidden: torch.Tensor, k: int,
               chunk: int = 64) -> NextTokenWalk:
    """The walk from a forward pass's logits (every position, or the last one only) and final-norm output.

    With only the last position's logits, the other positions go through the head
    ``chunk`` at a time and the last row is compared with the forward's. With every
    position's logits, the last final-norm vector alone is projected on the ``k``
    chosen tokens' rows of the head (a whole second pass through a 262k-token head
    would double the page's time) and compared on those ``k`` logits.
    """
    head, cap = backend_of(model).base.get_output_embeddings(), model_facts(model).logit_softcap

    def capped(out):
        return cap * torch.tanh(out / cap) if cap else out

    logits = logits.float()
    last = logits[:, -1, :]                                               # (1, V)
    probs = torch.softmax(last, dim=-1)
    top = torch.topk(probs[0], min(k, probs.size(-1)))
    if logits.size(1) == ids.size(1):
        argmax, bias = logits[0].argmax(-1).tolist(), getattr(head, "bias", None)
        rows = head.weight[top.indices].float()                           # (k, d)
        alone = capped(hidden[:, -1, :].float() @ rows.T + (bias[top.indices] if bias is not None else 0))
        diff = float((alone - last[:, top.indices]).abs().max())
    else:
        argmax, row = [], None
        for start in range(0, hidden.size(1), chunk):
            part = capped(head(hidden[:, start:start + chunk]).float())  # (1, chunk, V)
            argmax += part[0].argmax(-1).tolist()
            row = part[:, -1, :]
        diff = float((row - last).abs().max())
    seq = ids[0].tolist()
    per_position = [{"position": i, "input_id": seq[i], "predicted_id": argmax[i],
                     "actual_next_id": seq[i + 1] if i + 1 < len(seq) else None} for i in range(len(seq))]
    return NextTokenWalk(
        (1, len(seq), last.size(-1)), tuple(last.shape), per_position,
        [{"rank": r + 1, "id": int(i), "prob": float(p), "logit": float(last[0, i])}
         for r, (p, i) in enumerate(zip(top.values, top.indices))],
        int(top.indices[0]), diff,
    )
