"""The from-scratch GPT explained module by module.

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
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import torch

from . import model as model_module
from .config import GPTConfig
from .errors import InvalidInput
from .backend import own_gpt, this_thread_only
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
    return steps


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
