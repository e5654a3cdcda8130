"""The one place that knows what a model looks like inside.

gpt_core runs three kinds of model: its own from-scratch :class:`~gpt_core.model.GPT`,
Hugging Face causal LMs (GPT-2 family, Llama-style such as SmolLM2, ...) and
peft wrappers around either. Everything else asks :func:`backend_of` and never
tests a model's class:

    >>> b = backend_of(model)
    >>> b.context_length, b.vocab_size, b.info().n_layers
    >>> b.next_token_logits(ids)          # (vocab,)
    >>> b.run_with_cache(ids)             # (logits, Trace)

Adding a model family means changing this module (and its tests) only.
"""
from __future__ import annotations

import inspect
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .errors import InvalidInput
from .model import GPT

__all__ = ["ModelInfo", "Trace", "Backend", "backend_of", "unwrap", "own_gpt", "this_thread_only",
           "GPT_LORA_TARGETS"]

# the linear layers LoRA adapts in our GPT (peft finds its own defaults for Hugging Face models)
GPT_LORA_TARGETS = ("att.qkv", "att.out_proj", "ff.fc_in", "ff.fc_out")


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
    # one entry per layer: None for full (global) causal attention, else the sliding window in tokens
    attention_windows: list = field(default_factory=list)
    final_logit_softcap: float | None = None   # logits = cap * tanh(logits / cap) when set (Gemma 2)


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


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel and/or peft wrapper (or the model itself)."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def own_gpt(model: nn.Module) -> GPT | None:
    """Our from-scratch GPT under ``model`` (peft wrapper removed), or None for any other model."""
    base = unwrap(model)
    return base if isinstance(base, GPT) else None


def this_thread_only(hook):
    """A forward hook that ignores calls from other threads.

    Models are shared by every session of the app: while one session records a
    trace, another may run the same modules (decoding, say). Only the forward
    pass of the thread that registered the hook is recorded.
    """
    owner = threading.get_ident()

    def guarded(module, inputs, output):
        if threading.get_ident() == owner:
            hook(module, inputs, output)
    return guarded


def backend_of(model: nn.Module) -> "Backend":
    """The adapter that answers questions about ``model`` (which may be a peft wrapper)."""
    if not isinstance(model, nn.Module):
        raise InvalidInput("backend.not_a_module", "Expected a PyTorch model, got {kind}.", kind=type(model).__name__)
    return GPTBackend(model) if own_gpt(model) is not None else HFBackend(model)


def _as_ids(model: nn.Module, ids) -> torch.Tensor:
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.size(0) != 1:
        raise InvalidInput("backend.one_sequence", "run_with_cache takes one sequence of token ids.")
    if ids.size(1) == 0:
        raise InvalidInput("backend.no_tokens", "At least one token is needed.")
    return ids


class Backend:
    """What every page and loop needs from a model, whatever its family."""

    kind = "?"

    def __init__(self, model: nn.Module):
        self.model = model          # as given (a peft wrapper stays a wrapper: LoRA stays active)
        self.base = unwrap(model)   # the model under any wrapper

    # ------------------------------------------------------------ description
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def n_params(self) -> int:
        return sum({id(p): p.numel() for p in self.model.parameters()}.values())

    def info(self) -> ModelInfo:
        raise NotImplementedError

    @property
    def context_length(self) -> int:
        return self.info().context_length

    @property
    def vocab_size(self) -> int:
        return self.info().vocab_size

    @property
    def d_model(self) -> int:
        return self.info().d_model

    # ------------------------------------------------------------ parts
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def embedding_matrix(self) -> torch.Tensor:
        """The token embedding table (vocab, d)."""
        raise NotImplementedError

    def position_matrix(self) -> torch.Tensor | None:
        """The learned position table (context, d), or None for rotary models."""
        raise NotImplementedError

    @torch.no_grad()
    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Final norm then output head: the logit lens of a residual stream (.., d) -> (.., vocab)."""
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: matrices decay, vectors (biases, norms) do not; shared tensors counted once."""
        decay, no_decay, seen = [], [], set()
        for p in self.model.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (decay if p.dim() >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def lora_targets(self) -> list[str] | None:
        """Module names LoRA should adapt (None: let peft choose)."""
        return None

    # ------------------------------------------------------------ running
    def logits(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) of a batch (a padding mask is used where the family understands one)."""
        raise NotImplementedError

    def hidden(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The last layer's normalised hidden states (B, T, d): the body without the vocabulary head."""
        raise NotImplementedError

    @torch.no_grad()
    def next_token_logits(self, ids) -> torch.Tensor:
        """Logits (vocab,) of the token after ``ids``: only the last position is projected."""
        raise NotImplementedError

    @torch.no_grad()
    def run_with_cache(self, ids, all_logits: bool = True) -> tuple[torch.Tensor, Trace]:
        """One forward pass that keeps everything (:class:`Trace`).

        ``all_logits=False`` projects only the last position through the head
        (logits of shape (1, V)): pages that read attention or the residual stream
        save the head's cost at every other position (large with a 262k vocabulary).
        """
        raise NotImplementedError

    def stepper(self, max_len: int) -> "Stepper":
        """Incremental decoding: ``prefill(ids)``, ``step(tokens)``, ``reorder(index)``."""
        raise NotImplementedError

    # ------------------------------------------------------------ changing
    def replace_head(self, head: nn.Module) -> None:
        """Put ``head`` where the vocabulary head was (unties it from the embedding)."""
        raise NotImplementedError

    def write_weights(self, folder: Path, extra: dict) -> None:
        """Write the model (weights + config, and ``extra`` metadata) into an existing empty ``folder``."""
        raise NotImplementedError


class Stepper:
    """Logits come back as float32 of shape (B, V) for the last position."""

    def __init__(self, model: nn.Module, max_len: int):
        self.model, self.max_len, self.cache = model, max_len, None


# ============================================================== our GPT
class GPTBackend(Backend):
    kind = "gpt_core"

    def info(self) -> ModelInfo:
        c = self.base.cfg
        return ModelInfo("gpt_core", self.n_params(), c.n_layers, c.n_heads, c.n_heads, c.d_model,
                         c.vocab_size, c.context_length, "learned", [None] * c.n_layers)

    @property
    def context_length(self) -> int:
        return self.base.cfg.context_length

    @property
    def vocab_size(self) -> int:
        return self.base.cfg.vocab_size

    @property
    def d_model(self) -> int:
        return self.base.cfg.d_model

    def blocks(self) -> nn.ModuleList:
        return self.base.blocks

    def final_norm(self) -> nn.Module:
        return self.base.final_norm

    def embedding_matrix(self) -> torch.Tensor:
        return self.base.tok_emb.weight

    def position_matrix(self) -> torch.Tensor | None:
        return self.base.pos_emb.weight

    @torch.no_grad()
    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        return self.base.out_head(self.base.final_norm(resid))

    def lora_targets(self) -> list[str] | None:
        return list(GPT_LORA_TARGETS)

    def logits(self, inputs, attention_mask=None) -> torch.Tensor:
        # causal attention: right padding never changes the real positions, so no mask is needed
        return self.model(inputs)

    def hidden(self, inputs, attention_mask=None) -> torch.Tensor:
        gpt = self.base
        x = gpt._embed(inputs, torch.arange(inputs.size(1), device=inputs.device))
        for block in gpt.blocks:
            x = block(x)
        return gpt.final_norm(x)

    @torch.no_grad()
    def next_token_logits(self, ids) -> torch.Tensor:
        return self.base(_as_ids(self.base, ids), last_only=True)[0, -1]

    @torch.no_grad()
    def run_with_cache(self, ids, all_logits: bool = True) -> tuple[torch.Tensor, Trace]:
        model, ids = self.base, _as_ids(self.base, ids)
        store: dict[str, torch.Tensor] = {}
        handles = []

        def keep(name):
            def hook(_module, _inputs, output):
                out = output.detach()
                store[name] = out if out.dim() == 2 else out[0]  # drop the batch axis
            return this_thread_only(hook)

        try:
            handles.append(model.hook_tok_emb.register_forward_hook(keep("tok")))
            handles.append(model.hook_pos_emb.register_forward_hook(keep("pos")))
            handles.append(model.hook_final_norm.register_forward_hook(keep("final")))
            for i, block in enumerate(model.blocks):
                handles.append(block.hook_resid_pre.register_forward_hook(keep(f"resid{i}")))
                handles.append(block.att.hook_pattern.register_forward_hook(keep(f"attn{i}")))
                handles.append(block.register_forward_hook(keep(f"resid{i + 1}")))
            logits = model(ids, last_only=not all_logits)[0]  # (T, V), or (1, V)
        finally:
            for h in handles:
                h.remove()
        n = len(model.blocks)
        trace = Trace(
            ids=ids[0].tolist(), tok_emb=store["tok"], pos_emb=store["pos"], position_kind="learned",
            attentions=[store[f"attn{i}"] for i in range(n)],
            resid=[store[f"resid{i}"] for i in range(n + 1)],
            final_norm=store["final"], logits=logits, info=self.info(),
        )
        return logits, trace

    def stepper(self, max_len: int) -> Stepper:
        return _GPTStepper(self.base, max_len)

    def replace_head(self, head: nn.Module) -> None:
        self.base.out_head = head  # unties the vocabulary head from the token embedding

    def write_weights(self, folder: Path, extra: dict) -> None:
        from .model import save_checkpoint

        save_checkpoint(self.base, folder, extra)


class _GPTStepper(Stepper):
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        self.cache = self.model.new_cache(batch=ids.size(0), max_len=self.max_len)
        return self.model(ids, cache=self.cache, last_only=True)[:, -1, :].float()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.reshape(-1, 1)  # (B, 1)
        return self.model(tokens, cache=self.cache, last_only=True)[:, -1, :].float()

    def reorder(self, index: torch.Tensor) -> None:
        """Row i of the cache becomes old row ``index[i]`` (also grows a batch of 1 into beams)."""
        self.cache.reorder(index)


# ============================================================== Hugging Face
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
    raise InvalidInput("backend.part_missing", "Cannot find the {what} of {kind}.", what=what,
                       kind=type(model).__name__)


class HFBackend(Backend):
    kind = "hf"

    @property
    def config(self):
        cfg = self.base.config
        return getattr(cfg, "get_text_config", lambda: cfg)()

    def _context(self) -> int:
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(self.config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    def info(self) -> ModelInfo:
        cfg = self.config
        n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
        n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer")
        return ModelInfo(
            cfg.model_type, self.n_params(), n_layers,
            n_heads, getattr(cfg, "num_key_value_heads", None) or n_heads,
            self.d_model, self.vocab_size, self._context(),
            "learned" if self.position_matrix() is not None else "rotary",
            self._windows(n_layers), self._softcap(),
        )

    def _windows(self, n_layers: int) -> list:
        """Per layer: None (global attention) or the sliding window, from the config's layer types."""
        cfg = self.config
        window = getattr(cfg, "sliding_window", None)
        kinds = getattr(cfg, "layer_types", None)
        if not isinstance(window, int) or window <= 0:
            return [None] * n_layers
        if isinstance(kinds, (list, tuple)) and len(kinds) == n_layers:
            return [window if kind == "sliding_attention" else None for kind in kinds]
        if cfg.model_type == "mistral":  # every layer slides
            return [window] * n_layers
        return [None] * n_layers

    def _softcap(self) -> float | None:
        cap = getattr(self.config, "final_logit_softcapping", None)
        return float(cap) if isinstance(cap, (int, float)) and cap > 0 else None

    @property
    def context_length(self) -> int:
        return self._context()

    @property
    def vocab_size(self) -> int:
        head = self.base.get_output_embeddings() if hasattr(self.base, "get_output_embeddings") else None
        if head is not None and getattr(head, "weight", None) is not None:
            return head.weight.shape[0]
        return self.config.vocab_size

    @property
    def d_model(self) -> int:
        return getattr(self.config, "hidden_size", None) or getattr(self.config, "n_embd")

    def blocks(self) -> nn.ModuleList:
        return _find(self.base, ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers"),
                     "transformer blocks")

    def final_norm(self) -> nn.Module:
        return _find(self.base, ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm",
                                 "model.decoder.final_layer_norm"), "final norm")

    def embedding_matrix(self) -> torch.Tensor:
        return self.base.get_input_embeddings().weight

    def position_matrix(self) -> torch.Tensor | None:
        wpe = getattr(getattr(self.base, "transformer", None), "wpe", None)
        return wpe.weight if wpe is not None else None

    @torch.no_grad()
    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        logits = self.base.get_output_embeddings()(self.final_norm()(resid))
        cap = self._softcap()
        return cap * torch.tanh(logits / cap) if cap is not None else logits

    def logits(self, inputs, attention_mask=None) -> torch.Tensor:
        if attention_mask is None:
            out = self.model(inputs)
        else:
            out = self.model(input_ids=inputs, attention_mask=attention_mask)
        return out if torch.is_tensor(out) else out.logits  # plain modules answer a tensor

    def hidden(self, inputs, attention_mask=None) -> torch.Tensor:
        body = getattr(self.base, "base_model", None)
        if body is None or body is self.base:
            raise InvalidInput("backend.no_body", "This model ({kind}) does not expose its hidden states.",
                               kind=type(self.base).__name__)
        return body(input_ids=inputs, attention_mask=attention_mask, use_cache=False).last_hidden_state

    @torch.no_grad()
    def next_token_logits(self, ids) -> torch.Tensor:
        # only the last position goes through the head (a 262k-token head costs more than the body)
        return self.model(_as_ids(self.base, ids), use_cache=False, **_last_only(self.model)).logits[0, -1]

    @torch.no_grad()
    def run_with_cache(self, ids, all_logits: bool = True) -> tuple[torch.Tensor, Trace]:
        model, ids = self.base, _as_ids(self.base, ids)
        info, last = self.info(), {}

        def keep_last(_module, _inputs, output):
            last["resid"] = (output[0] if isinstance(output, tuple) else output)[0].detach()

        handle = self.blocks()[-1].register_forward_hook(this_thread_only(keep_last))
        try:
            out = model(ids, output_attentions=True, output_hidden_states=True, use_cache=False,
                        **({} if all_logits else _last_only(model)))
        finally:
            handle.remove()
        if not out.attentions or out.attentions[0] is None:
            raise InvalidInput("backend.no_attentions", "The model returned no attention weights: "
                               "load it with attn_implementation='eager'.")
        hidden = [h[0] for h in out.hidden_states]
        logits = out.logits[0] if all_logits else out.logits[0, -1:]
        wpe = self.position_matrix()
        trace = Trace(
            ids=ids[0].tolist(), tok_emb=model.get_input_embeddings()(ids)[0].detach(),
            pos_emb=wpe[:ids.size(1)].detach() if wpe is not None else None, position_kind=info.position_kind,
            attentions=[a[0] for a in out.attentions],
            resid=hidden[:-1] + [last["resid"]],
            final_norm=hidden[-1], logits=logits, info=info,
        )
        return logits, trace

    def stepper(self, max_len: int) -> Stepper:
        return _HFStepper(self.model, max_len)

    def replace_head(self, head: nn.Module) -> None:
        if not hasattr(self.base, "set_output_embeddings"):
            raise InvalidInput("backend.no_head", "This model ({kind}) cannot take a classification head.",
                               kind=type(self.base).__name__)
        self.base.config.tie_word_embeddings = False
        self.config.tie_word_embeddings = False
        self.base.set_output_embeddings(head)

    def write_weights(self, folder: Path, extra: dict) -> None:
        if not hasattr(self.base, "save_pretrained"):
            raise InvalidInput("backend.cannot_save", "A model of type {kind} cannot be saved.",
                               kind=type(self.base).__name__)
        self.base.save_pretrained(str(folder), safe_serialization=True)
        (Path(folder) / "gpt_core_train.json").write_text(json.dumps(extra, indent=2, default=str), encoding="utf-8")


def _last_only(model: nn.Module) -> dict:
    """The keyword that makes a Hugging Face model project only the last position, when it has one."""
    base = unwrap(model)
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}


class _HFStepper(Stepper):
    def __init__(self, model: nn.Module, max_len: int):
        super().__init__(model, max_len)
        self._extra = _last_only(model)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, use_cache=True, **self._extra)
        self.cache = out.past_key_values
        return out.logits[:, -1, :].float()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tokens.reshape(-1, 1), past_key_values=self.cache, use_cache=True, **self._extra)
        self.cache = out.past_key_values
        return out.logits[:, -1, :].float()

    def reorder(self, index: torch.Tensor) -> None:
        if hasattr(self.cache, "reorder_cache"):
            self.cache.reorder_cache(index)
        else:  # legacy tuple of (key, value) per layer
            self.cache = tuple(tuple(t.index_select(0, index) for t in layer) for layer in self.cache)
