"""Logic of the Pretrain and Fine-tune pages: page choices -> a validated plan -> a background job.

A page collects its widgets' values and calls :func:`plan_pretrain` or
:func:`plan_finetune`. They check everything in the script thread (so a bad
upload or a learning rate of 0 gives a message at once) and return a
:class:`RunPlan`: data loaders from :mod:`gpt_core.data`, a
:class:`gpt_core.train.TrainConfig`, a function that makes the trainable copy
of the model, and the cost estimate. :func:`submit` hands the plan to the
server's :mod:`explorer.jobs` manager; the job (:func:`job_fn`) runs in a
worker thread that never touches Streamlit:

1. it copies the model (``prepare_*``: the shared model is never trained),
2. measures it *before* (greedy answers, next-token probabilities, or the
   classifier's accuracy),
3. forwards :func:`gpt_core.train.train`'s events (the page draws them live),
4. measures it *after*, saves the checkpoint, registers a language model in
   :func:`explorer.models.store` so every page's sidebar offers it, and
   sends a ``result`` event with the before/after comparison.

The Streamlit helpers at the end draw the widgets, the estimate, the live
panel (a ``st.fragment`` that polls the job's snapshot) and the results.
"""
from __future__ import annotations

import copy
import functools
import io
import json
import math
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import streamlit as st
import torch
import torch.nn as nn

from gpt_core import data as D
from gpt_core.config import GPTConfig
from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core.train import (
    TrainConfig, estimate_run, merge_lora, model_logits, prepare_classifier,
    prepare_instruction_finetune, prepare_pretraining, save_trained, train,
)

from . import fig_training as F
from .data_view import instruction_records  # noqa: F401  (re-exported for the fine-tune page)
from .i18n import t
from .jobs import get_manager
from .tokens_view import token_label

ARCH_PRESETS: dict[str, dict[str, int]] = {
    "nano": {"n_layers": 1, "n_heads": 2, "d_model": 32, "context": 32},
    "tiny": {"n_layers": 2, "n_heads": 4, "d_model": 64, "context": 64},
    "small": {"n_layers": 4, "n_heads": 4, "d_model": 128, "context": 128},
}
CORPUS_SOURCES = ("corpus_fr", "corpus_en", "pydoc", "paste", "upload")
SAMPLE_PROMPTS = {"corpus_fr": "Pour préparer une", "corpus_en": "To make a", "pydoc": "The"}
TEXT_TYPES = ["txt", "json", "jsonl", "csv"]
RECORD_TYPES = ["json", "jsonl", "csv"]
TEXT_COLUMNS = ("text", "content", "document", "body")
MAX_CORPUS_CHARS = 600_000      # a longer corpus is cut (tokenizing and training stay interactive)
MAX_PROMPT_CHARS = 2_000
SAMPLE_TOKENS = 24              # tokens of the live samples and the before/after answers
COMPARE_TOKENS = 32
LARGE_MODEL = 50_000_000        # above this many parameters, defaults favour LoRA and few steps
MAX_KEPT_RUNS = 3               # finished runs whose models and checkpoints are kept
RUNS_DIR = Path(tempfile.gettempdir()) / "llm-explorer-runs"


# =============================================================== hyperparameters
@dataclass
class Hyper:
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: int = 5
    grad_accum: int = 1
    seed: int = 0


def parse_lr(raw: Any) -> float:
    """A learning rate typed as text ("3e-4", "0,001") -> float, or InvalidInput with a sentence."""
    text = str(raw if raw is not None else "").strip().replace(",", ".")
    if not text:
        raise InvalidInput(t("training.err.lr_empty"))
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(t("training.err.lr_number", value=str(raw)[:40])) from None
    if not math.isfinite(value):
        raise InvalidInput(t("training.err.lr_finite", value=text))
    if value <= 0:
        raise InvalidInput(t("training.err.lr_positive", value=text))
    if value > 1:
        raise InvalidInput(t("training.err.lr_big", value=text))
    return value


def train_config(h: Hyper, device: str, eval_every: int | None = None, eval_batches: int = 5,
                 sample_every: int = 0) -> TrainConfig:
    """The TrainConfig of a run; evaluations ~10 times per run unless told otherwise."""
    if eval_every is None:
        eval_every = max(1, h.steps // 10)
    return TrainConfig(lr=h.lr, batch_size=h.batch_size, steps=h.steps, grad_accum=h.grad_accum,
                       warmup=h.warmup, schedule=h.schedule, eval_every=eval_every,
                       eval_batches=eval_batches, sample_every=sample_every, seed=h.seed, device=device)


# ======================================================================= sources
@dataclass
class Corpus:
    text: str
    origin: str
    cut: bool = False            # cut to MAX_CORPUS_CHARS characters


def _records_text(records: Sequence[dict], filename: str) -> str:
    first = records[0]
    if "instruction" in first and "output" in first:
        D.require_columns(records, ["instruction", "output"], filename)
        return "\n\n".join("".join(D.format_alpaca(r)) for r in records)
    for col in TEXT_COLUMNS:
        if col in first:
            D.require_columns(records, [col], filename)
            return "\n\n".join(str(r[col]) for r in records if r[col] is not None)
    D.require_columns(records, ["text"], filename)  # raises, naming the columns found
    return ""


def corpus_text(source: str, pasted: str = "", upload: tuple[bytes, str] | None = None) -> Corpus:
    """The pretraining text of a source: bundled corpus, pydoc, pasted text or an uploaded file."""
    if source in ("corpus_fr", "corpus_en"):
        text, origin = D.load_bundled(source), D.BUNDLED[source]["file"]
    elif source == "pydoc":
        text, origin = D.pydoc_corpus(), "pydoc_data.topics"
    elif source == "paste":
        text, origin = (pasted or ""), t("training.src.paste")
    elif source == "upload":
        if upload is None:
            raise InvalidInput(t("training.err.no_file"))
        data, name = upload
        if Path(str(name)).suffix.lower() == ".txt":
            text = D.read_text_upload(data, name)
        else:
            text = _records_text(D.read_records(data, name), name)
        origin = name
    else:
        raise InvalidInput(t("training.err.source", source=source))
    text = text.replace("\x00", "")
    if not text.strip():
        raise InvalidInput(t("training.err.empty_text"))
    cut = len(text) > MAX_CORPUS_CHARS
    return Corpus(text[:MAX_CORPUS_CHARS], origin, cut)


def classification_records(upload: tuple[bytes, str] | None = None) -> list[dict]:
    """Bundled French IT tickets, or an uploaded file with ``text`` and ``label`` columns."""
    if upload is None:
        records, name = D.load_bundled("tickets_fr"), None
    else:
        records, name = D.read_records(*upload), upload[1]
    D.require_columns(records, ["text", "label"], name)
    D.label_vocab([r["label"] for r in records])  # at least two classes
    return list(records)


# ========================================================================= plans
@dataclass
class FinetuneOptions:
    task: str = "instruct"          # "instruct" or "classify"
    method: str = "lora"            # instruct: "full" or "lora"
    lora_r: int = 8
    mask_prompt: bool = True        # instruct: the loss ignores the prompt tokens
    style: str = "alpaca"           # prompt template (gpt_core.data.ALPACA_STYLES)
    max_length: int = 128           # tokens per row (longer rows are cut)
    n_last: int | None = None       # classify: train only the last N blocks (None: all)


@dataclass
class RunPlan:
    """Everything a training job needs, validated in the script thread."""
    kind: str                                   # "pretrain" | "finetune" (the job manager's kind)
    task: str                                   # "lm" | "instruct" | "classify"
    cfg: TrainConfig
    make_model: Callable[[], nn.Module]         # builds the trainable copy (called in the worker)
    tokenizer: Any
    train_batches: Any
    val_batches: Any
    estimate: dict
    params: dict                                # what the user chose, for the UI and the metrics JSON
    texts: dict                                 # status lines, already in the user's language
    base: nn.Module | None = None               # the shared base model (read only), fine-tuning only
    prompts: list[str] = field(default_factory=list)    # before/after prompts (already formatted)
    shown: list[dict] = field(default_factory=list)     # what the UI shows for each prompt
    test_batches: Any = None                    # classification: held-out tickets
    labels: list[str] | None = None
    max_length: int = 128
    style: str = "alpaca"
    sample_prompt: str | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])


def model_config(n_layers: int, n_heads: int, d_model: int, context: int, vocab_size: int) -> GPTConfig:
    """A GPTConfig from the sliders, with a sentence when the shape is impossible."""
    if d_model % n_heads:
        raise InvalidInput(t("training.err.heads", d=d_model, h=n_heads))
    try:
        return GPTConfig(vocab_size=vocab_size, context_length=context, d_model=d_model, n_heads=n_heads,
                         n_layers=n_layers)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _status_texts(task: str, label: str) -> dict:
    """Lines the worker thread shows (it cannot read the session's language itself)."""
    out = {k: t(f"training.status.{k}") for k in ("preparing", "before", "training", "after", "saving")}
    out.update({f"name_{task}": t(f"training.name.{task}"), "label": label})
    return out


def plan_pretrain(tokenizer, corpus: Corpus, arch: dict, hyper: Hyper, device: str,
                  prompt: str, val_fraction: float = 0.1) -> RunPlan:
    """A from-scratch GPT on a corpus: windows of ``context`` tokens, stride = context."""
    cfg_model = model_config(arch["n_layers"], arch["n_heads"], arch["d_model"], arch["context"],
                             tokenizer.vocab_size)
    ctx = cfg_model.context_length
    train_text, val_text = D.split_text(corpus.text, val_fraction)
    try:
        train_ds = D.GPTWindowDataset.from_text(train_text, tokenizer, ctx, ctx)
        val_ds = D.GPTWindowDataset.from_text(val_text, tokenizer, ctx, ctx)
    except InvalidInput:
        n = len(tokenizer.encode(corpus.text))
        raise InvalidInput(t("training.err.corpus_short", n=n, ctx=ctx, need=int((ctx + 1) / val_fraction))) from None
    train_loader = D.make_loader(train_ds, batch_size=hyper.batch_size, shuffle=True,
                                 drop_last=len(train_ds) >= hyper.batch_size, seed=hyper.seed)
    val_loader = D.make_loader(val_ds, batch_size=hyper.batch_size, shuffle=False, drop_last=False)
    prompt = (prompt or "").strip()[:MAX_PROMPT_CHARS]
    if not prompt:
        raise InvalidInput(t("training.err.prompt"))
    cfg = train_config(hyper, device, eval_every=max(1, min(hyper.steps // 10, 50)),
                       sample_every=max(1, min(hyper.steps // 6, 25)))
    estimate = estimate_run(cfg_model, hyper.batch_size, ctx, hyper.steps, device, "auto", hyper.grad_accum)
    params = {"task": "lm", "source": corpus.origin, "architecture": dict(arch), "vocab_size": tokenizer.vocab_size,
              "train_windows": len(train_ds), "val_windows": len(val_ds), **asdict(hyper), "device": device,
              "steps": hyper.steps}
    return RunPlan("pretrain", "lm", cfg, lambda: prepare_pretraining(cfg_model, seed=hyper.seed), tokenizer,
                   train_loader, val_loader, estimate, params,
                   _status_texts("lm", t("training.label.pre", layers=cfg_model.n_layers, d=cfg_model.d_model,
                                         source=corpus.origin)), prompts=[prompt],
                   shown=[{"prompt": prompt}], max_length=ctx, sample_prompt=prompt)


def _context_of(model: nn.Module) -> int:
    from gpt_core.decoding import context_length_of
    from gpt_core.train import _unwrap

    return int(context_length_of(_unwrap(model)))  # a peft wrapper answers for its model


def plan_finetune(base: nn.Module, tokenizer, records: Sequence[dict], opts: FinetuneOptions, hyper: Hyper,
                  device: str, base_label: str = "", n_compare: int | None = None) -> RunPlan:
    """Instruction (full or LoRA) or classification fine-tuning of a copy of ``base``."""
    if opts.task not in ("instruct", "classify"):
        raise InvalidInput(t("training.err.task", task=opts.task))
    ctx = _context_of(base)
    if opts.max_length > ctx:
        raise InvalidInput(t("training.err.max_length", n=opts.max_length, ctx=ctx))
    records = list(records)
    if n_compare is None:
        n_compare = 2 if sum(p.numel() for p in _unique_params(base)) > LARGE_MODEL else 3
    if opts.task == "instruct":
        D.require_columns(records, ["instruction", "output"])
        train_r, val_r, test_r = D.split_records(records, (0.8, 0.1, 0.1), seed=hyper.seed)
        datasets = [D.InstructionDataset(r, tokenizer, opts.style) for r in (train_r, val_r)]
        if opts.mask_prompt and all(len(p) >= opts.max_length for p, _ in datasets[0].items):
            raise InvalidInput(t("training.err.prompt_fills", n=opts.max_length))
        train_loader, val_loader = (
            D.make_instruction_loader(ds, tokenizer, batch_size=hyper.batch_size, shuffle=i == 0, seed=hyper.seed,
                                      mask_prompt=opts.mask_prompt, max_length=opts.max_length)
            for i, ds in enumerate(datasets))
        lora = opts.method == "lora"
        make = lambda: prepare_instruction_finetune(base, lora=lora, lora_r=opts.lora_r)  # noqa: E731
        shown = [{"instruction": r["instruction"], "input": r.get("input") or "", "expected": r.get("output") or ""}
                 for r in test_r[:n_compare]]
        prompts = [D.format_alpaca(r, opts.style)[0] for r in test_r[:n_compare]]
        sample_prompt, labels, test_loader = D.format_alpaca(val_r[0], opts.style)[0], None, None
        n_classes = None
    else:
        D.require_columns(records, ["text", "label"])
        vocab = D.label_vocab([r["label"] for r in records])
        parts = D.split_records(records, (0.7, 0.1, 0.2), seed=hyper.seed)
        sets = [D.ClassificationDataset([r["text"] for r in p], [r["label"] for r in p], tokenizer,
                                        max_length=opts.max_length, vocab=vocab) for p in parts]
        train_loader, val_loader, test_loader = (
            D.make_loader(ds, batch_size=hyper.batch_size if i == 0 else 64, shuffle=i == 0, drop_last=False,
                          seed=hyper.seed) for i, ds in enumerate(sets))
        labels = sets[0].label_names
        n_classes = len(labels)
        make = lambda: prepare_classifier(base, n_classes, freeze_until_last=opts.n_last, labels=labels)  # noqa: E731
        shown = [{"text": r["text"], "label": str(r["label"]).strip()} for r in parts[2][:n_compare]]
        prompts, sample_prompt = [r["text"] for r in parts[2][:n_compare]], None
    # a big model on a CPU: each forward pass counts, so evaluate on one batch and sample twice
    large = sum(p.numel() for p in _unique_params(base)) > LARGE_MODEL
    eval_batches = 1 if large else (4 if opts.task == "instruct" else 0)
    cfg = train_config(hyper, device, eval_every=max(1, hyper.steps // (3 if large else 8)), eval_batches=eval_batches,
                       sample_every=max(1, hyper.steps // (2 if large else 4)) if opts.task == "instruct" else 0)
    estimate = finetune_estimate(base, opts, hyper, device, n_classes)
    params = {"task": opts.task, **asdict(opts), **asdict(hyper), "device": device, "examples": len(records),
              "steps": hyper.steps}
    return RunPlan("finetune", opts.task, cfg, make, tokenizer, train_loader, val_loader, estimate, params,
                   _status_texts(opts.task, t("training.label.ft", base=base_label, task=opts.task)),
                   base=base, prompts=prompts, shown=shown, test_batches=test_loader, labels=labels,
                   max_length=opts.max_length, style=opts.style, sample_prompt=sample_prompt)


# ===================================================================== estimates
def _unique_params(model: nn.Module) -> list[torch.Tensor]:
    return list({id(p): p for p in model.parameters()}.values())


def _blocks(model: nn.Module):
    from gpt_core.model import GPT

    if isinstance(model, GPT):
        return model.blocks, model.final_norm, model.cfg.d_model
    from gpt_core.trace import _hf_blocks, _hf_final_norm, describe

    return _hf_blocks(model), _hf_final_norm(model), describe(model).d_model


def trainable_params(base: nn.Module, opts: FinetuneOptions, n_classes: int | None = None) -> int:
    """How many weights the prepared copy will train (counted on the base, without copying it)."""
    total = sum(p.numel() for p in _unique_params(base))
    blocks, norm, d_model = _blocks(base)
    if opts.task == "classify":
        head = d_model * (n_classes or 2) + (n_classes or 2)
        if opts.n_last is None:
            return total + head
        kept = list(blocks[len(blocks) - opts.n_last:]) if opts.n_last else []
        kept_params = sum(p.numel() for m in kept for p in m.parameters())
        return kept_params + sum(p.numel() for p in norm.parameters()) + head
    if opts.method != "lora":
        return total
    from gpt_core.model import GPT
    from gpt_core.train import GPT_LORA_TARGETS

    if isinstance(base, GPT):
        targets = set(GPT_LORA_TARGETS)
    else:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as targets_of

        targets = set(targets_of.get(getattr(base.config, "model_type", ""), ()))
    count = 0
    for name, module in base.named_modules():
        if any(name == tgt or name.endswith("." + tgt) for tgt in targets):
            weight = getattr(module, "weight", None)
            if weight is not None and weight.dim() == 2:
                count += opts.lora_r * (weight.shape[0] + weight.shape[1])
    return count or total // 100


def finetune_estimate(base: nn.Module, opts: FinetuneOptions, hyper: Hyper, device: str,
                      n_classes: int | None = None) -> dict:
    """:func:`gpt_core.train.estimate_run` on the base, corrected for LoRA, frozen blocks and a class head.

    AdamW keeps 12 bytes per *trained* weight (gradient + two moments), so LoRA
    or frozen blocks shrink that part; a backward pass that stops early costs
    less time (LoRA: no weight gradients, about 4 instead of 6 FLOPs per weight
    and token; frozen blocks: the forward pass plus the trained part only).
    """
    est = estimate_run(base, hyper.batch_size, opts.max_length, hyper.steps, device, "auto", hyper.grad_accum)
    n, trainable = est["params"], trainable_params(base, opts, n_classes)
    parts = dict(est["memory_breakdown"])
    parts["grads_and_adamw"] = 12 * trainable
    if opts.task == "classify":
        from gpt_core.trace import describe

        act_bytes = 2 if est["precision"] == "bf16" else 4
        vocab = describe(base).vocab_size
        tokens = hyper.batch_size * opts.max_length
        parts["activations"] = max(0, parts["activations"] - tokens * (vocab - (n_classes or 2)) * (act_bytes + 8))
    memory = int(sum(parts.values()))
    if opts.task == "classify":  # no vocabulary projection: the embedding is a lookup, not a matmul
        from gpt_core.trace import describe

        info = describe(base)
        n_compute = max(n - info.vocab_size * info.d_model, 1)
        frac = min(trainable / n_compute, 1.0) if opts.n_last is not None else 1.0
        factor = (n_compute / max(n, 1)) * (2 + 4 * frac) / 6
    elif opts.task == "instruct" and opts.method == "lora":
        factor = 4 / 6
    else:
        factor = 1.0
    est.update(memory_bytes=memory, memory_breakdown=parts, trainable_params=trainable,
               seconds_estimate=est["seconds_estimate"] * factor)
    free = est["available_bytes"]
    est["fits"] = free is None or memory <= 0.9 * free
    return est


def refusal(est: dict) -> str | None:
    """The reason a run cannot start (in the user's language), or None."""
    if est.get("fits", True):
        return None
    return t("training.err.memory", need=_gb(est["memory_bytes"]), free=_gb(est["available_bytes"] or 0),
             device=est["device"])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} Go" if n >= 1e8 else f"{n / 1e6:.0f} Mo"


# ================================================================ before / after
def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


class _evaluating:
    """Eval mode and no gradients inside the block; the previous mode is restored after."""

    def __init__(self, model: nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()
        self.grad = torch.inference_mode()
        self.grad.__enter__()
        return self.model

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        self.model.train(self.was)
        return False


def _prompt_ids(tokenizer, prompt: str, room: int, ctx: int) -> list[int]:
    ids = list(tokenizer.encode(prompt))
    if not ids:
        raise InvalidInput(t("training.err.prompt"))
    return ids[-max(1, ctx - room):]


def next_probs(model: nn.Module, ids: Sequence[int]) -> torch.Tensor:
    """Softmax of the last position's logits (a (V,) float32 CPU tensor); the model is not changed."""
    with _evaluating(model):
        x = torch.tensor([list(ids)], device=_device_of(model))
        return model_logits(model, x)[0, -1].float().softmax(-1).cpu()


def continuation(model: nn.Module, tokenizer, prompt: str, n_new: int, cut_at: str | None = None) -> str:
    """The greedy continuation of ``prompt`` (without it); cut at ``cut_at`` when given."""
    from gpt_core.decoding import greedy
    from gpt_core.train import _unwrap

    base = _unwrap(model)
    ctx = _context_of(base)
    n_new = max(1, min(n_new, ctx - 1))
    ids = _prompt_ids(tokenizer, prompt, n_new, ctx)
    with _evaluating(model):
        new = list(greedy(base, ids, n_new, eos_id=getattr(tokenizer, "eos_id", None), trace=False).new_ids)
    eos = getattr(tokenizer, "eos_id", None)
    if new and eos is not None and new[-1] == eos:
        new = new[:-1]
    text = tokenizer.decode(new)
    if cut_at:
        text = text.split(cut_at)[0]
    return text.strip() if cut_at else text


def class_probs(model: nn.Module, tokenizer, text: str, max_length: int) -> list[float]:
    """A classifier's class probabilities for one text (read at its last token)."""
    ids = list(tokenizer.encode(text))[:max_length]
    if not ids:
        raise InvalidInput(t("training.err.prompt"))
    return next_probs(model, ids).tolist()


def dist_compare(before: torch.Tensor, after: torch.Tensor, tokenizer, k: int = 8) -> dict:
    """The union of both models' top-``k`` next tokens, with each model's probability (≤ 12 rows)."""
    order: list[int] = [int(i) for i in torch.topk(after, min(k, after.numel())).indices]
    for i in torch.topk(before, min(k, before.numel())).indices.tolist():
        if len(order) >= max(k, 12):
            break
        if int(i) not in order:
            order.append(int(i))
    return {"ids": order, "labels": [token_label(tokenizer, i) for i in order],
            "before": [float(before[i]) for i in order], "after": [float(after[i]) for i in order]}


def measure(plan: RunPlan, model: nn.Module) -> dict:
    """What the before/after comparison needs, measured on ``model`` (which is not changed)."""
    tok = plan.tokenizer
    if plan.task == "classify":
        from gpt_core.evaluate import classification_report

        with _evaluating(model):
            report = classification_report(model, plan.test_batches, plan.labels)
        probs = [class_probs(model, tok, p, plan.max_length) for p in plan.prompts]
        return {"report": report, "probs": probs}
    cut = "###" if plan.task == "instruct" else None
    n_new = COMPARE_TOKENS if plan.task == "instruct" else SAMPLE_TOKENS
    answers = [continuation(model, tok, p, n_new, cut) for p in plan.prompts]
    ctx = _context_of(model)
    first = next_probs(model, _prompt_ids(tok, plan.prompts[0], 1, ctx)) if plan.prompts else None
    return {"answers": answers, "first_probs": first}


def comparison(plan: RunPlan, before: dict, after: dict) -> dict:
    """JSON-ready before/after data for the page (plain lists and numbers only)."""
    if plan.task == "classify":
        rb, ra = before["report"], after["report"]
        rows = [{**shown, "before": plan.labels[max(range(len(pb)), key=pb.__getitem__)],
                 "after": plan.labels[max(range(len(pa)), key=pa.__getitem__)]}
                for shown, pb, pa in zip(plan.shown, before["probs"], after["probs"])]
        first = {"labels": list(plan.labels), "before": before["probs"][0], "after": after["probs"][0]} \
            if before["probs"] else None
        return {"rows": rows, "dist": first, "report": {k: v for k, v in ra.items() if k != "predictions"},
                "accuracy_before": rb["accuracy"]}
    rows = [{**shown, "before": b, "after": a} for shown, b, a in zip(plan.shown, before["answers"], after["answers"])]
    dist = None
    if before.get("first_probs") is not None:
        dist = dist_compare(before["first_probs"], after["first_probs"], plan.tokenizer)
        dist["prompt"] = plan.prompts[0]
    return {"rows": rows, "dist": dist}


# ========================================================================= runs
@dataclass
class TrainedRun:
    """A finished run kept in memory for the custom-prompt comparison."""
    run_id: str
    task: str
    tokenizer: Any
    before: nn.Module | None
    after: nn.Module
    labels: list[str] | None
    max_length: int
    style: str
    name: str | None
    checkpoint: str | None


_RUNS: "OrderedDict[str, TrainedRun]" = OrderedDict()
_RUNS_LOCK = threading.Lock()


def get_run(run_id: str | None) -> TrainedRun | None:
    with _RUNS_LOCK:
        return _RUNS.get(run_id) if run_id else None


def _remember(run: TrainedRun, store_obj=None) -> None:
    """Keep the run; forget the oldest beyond MAX_KEPT_RUNS (model, checkpoint and sidebar entry)."""
    with _RUNS_LOCK:
        _RUNS[run.run_id] = run
        while len(_RUNS) > MAX_KEPT_RUNS:
            _, old = _RUNS.popitem(last=False)
            if old.checkpoint:
                shutil.rmtree(old.checkpoint, ignore_errors=True)
            if old.name and store_obj is not None:
                getattr(store_obj, "custom", {}).pop(old.name, None)


def _register(plan: RunPlan, model: nn.Module, store_obj, seconds: float) -> str | None:
    """Offer a trained language model to every page's sidebar (classifiers are not language models)."""
    if store_obj is None or plan.task == "classify":
        return None
    from gpt_core.model import GPT
    from gpt_core.registry import LoadedModel, ModelSource

    stamp = time.strftime("%H:%M:%S")
    name = f"{plan.texts.get('name_' + plan.task, plan.task)} {stamp}"
    params = _unique_params(model)
    source = ModelSource(name, plan.texts.get("label", name) + f" ({stamp})", "local",
                         "gpt" if isinstance(model, GPT) else "hf-causal", True)
    lm = LoadedModel(model, plan.tokenizer, source, seconds,
                     sum(p.numel() * p.element_size() for p in params), None, sum(p.numel() for p in params))
    store_obj.register(name, lm)
    return name


def _sampler(plan: RunPlan) -> Callable[[nn.Module], str]:
    """The live sample: the prompt's greedy continuation (an instruction's answer alone)."""
    cut = "###" if plan.task == "instruct" else None
    prompt = plan.sample_prompt

    def sample(model: nn.Module) -> str:
        text = continuation(model, plan.tokenizer, prompt, SAMPLE_TOKENS, cut)
        return text if plan.task == "instruct" else prompt + text
    return sample


def job_fn(plan: RunPlan, store_obj=None) -> Callable[[threading.Event], Any]:
    """The job: copy, measure, train (events forwarded), measure again, save, register."""
    def run(cancel: threading.Event):
        started = time.perf_counter()
        yield {"type": "status", "message": plan.texts["preparing"]}
        model = plan.make_model()
        yield {"type": "status", "message": plan.texts["before"]}
        before = measure(plan, model)
        initial = copy.deepcopy(model) if plan.kind == "pretrain" else None
        sample_fn = _sampler(plan) if plan.sample_prompt else None
        yield {"type": "status", "message": plan.texts["training"]}
        final = None
        for event in train(model, plan.train_batches, plan.val_batches, plan.cfg, plan.task,
                           sample_fn=sample_fn, cancel=cancel):
            if event.get("type") in ("done", "cancelled", "diverged"):
                final = event
                break
            yield event
        if final is None or final["type"] != "done":
            if final is not None:
                yield final
            return
        yield {"type": "status", "message": plan.texts["after"]}
        after = measure(plan, model)
        result = comparison(plan, before, after)
        yield {"type": "status", "message": plan.texts["saving"]}
        plain = merge_lora(model).eval()
        path = RUNS_DIR / plan.run_id
        save_trained(plain, path, {"task": plan.task, "params": plan.params})
        name = _register(plan, plain, store_obj, time.perf_counter() - started)
        base = initial if plan.kind == "pretrain" else (plan.base if plan.task == "instruct" else None)
        _remember(TrainedRun(plan.run_id, plan.task, plan.tokenizer, base, plain, plan.labels, plan.max_length,
                             plan.style, name, str(path)), store_obj)
        yield {"type": "result", "run_id": plan.run_id, "model_name": name, "comparison": result,
               "task": plan.task, "total_seconds": time.perf_counter() - started}
        yield {**final, "checkpoint": str(path)}
    return run


def submit(plan: RunPlan, store_obj=None, owner: str | None = None) -> str:
    """Queue the plan's job on the server's manager; returns the job id."""
    params = {**plan.params, "run_id": plan.run_id, "estimate_s": plan.estimate.get("seconds_estimate")}
    return get_manager().submit(plan.kind, job_fn(plan, store_obj), params, owner=owner)


def compare_prompt(run: TrainedRun, text: str) -> dict:
    """A prompt typed after the run, answered by the model before and after training."""
    text = (text or "").strip()[:MAX_PROMPT_CHARS]
    if not text:
        raise InvalidInput(t("training.err.prompt"))
    tok = run.tokenizer
    if run.task == "classify":
        probs = class_probs(run.after, tok, text, run.max_length)
        return {"labels": list(run.labels or []), "after": probs}
    prompt = D.format_alpaca({"instruction": text, "input": ""}, run.style)[0] if run.task == "instruct" else text
    cut = "###" if run.task == "instruct" else None
    n_new = COMPARE_TOKENS if run.task == "instruct" else SAMPLE_TOKENS
    out = {"after_text": continuation(run.after, tok, prompt, n_new, cut)}
    if run.before is not None:
        out["before_text"] = continuation(run.before, tok, prompt, n_new, cut)
        ids = _prompt_ids(tok, prompt, 1, _context_of(run.after))
        out["dist"] = dist_compare(next_probs(run.before, ids), next_probs(run.after, ids), tok)
    return out


# ====================================================================== outputs
def checkpoint_zip(path: str | Path) -> bytes:
    """The checkpoint directory (config.json + model.safetensors, ...) as a zip archive."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidInput(t("training.err.no_checkpoint"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                zf.write(file, f"{path.name}/{file.relative_to(path)}")
    return buf.getvalue()


def metrics_json(snap) -> str:
    """A job's parameters, status, loss history and before/after results as indented JSON."""
    result = dict(snap.result or {})
    payload = {
        "kind": snap.kind, "status": snap.status, "message": snap.message, "params": snap.params,
        "elapsed_s": snap.elapsed, "tokens_seen": snap.tokens_seen, "steps_done": snap.step,
        "history": result.get("history") or {"step": snap.train_steps, "train_loss": snap.train_loss,
                                             "eval_step": snap.val_steps, "val_loss": snap.val_loss},
        "comparison": result.get("comparison"), "model_name": result.get("model_name"),
    }
    return json.dumps(payload, indent=2, ensure_ascii=False, default=str)


def finetune_defaults(large: bool, task: str, n_layers: int) -> tuple[Hyper, FinetuneOptions]:
    """Sensible starting values: a big model on a CPU gets LoRA, short rows and few steps."""
    if task == "classify":
        n_last = min(2, n_layers)
        if large:
            return Hyper(steps=20, batch_size=8, lr=1e-3, warmup=2), FinetuneOptions("classify", max_length=64, n_last=n_last)
        return Hyper(steps=150, batch_size=16, lr=3e-3, warmup=10), FinetuneOptions("classify", max_length=64, n_last=n_last)
    if large:
        return Hyper(steps=10, batch_size=4, lr=1e-3, warmup=1), FinetuneOptions("instruct", "lora", max_length=96)
    return Hyper(steps=80, batch_size=8, lr=3e-3, warmup=5), FinetuneOptions("instruct", "full", max_length=96)


def count_text(n: int | float) -> str:
    """3_320_640 -> '3.32 M'."""
    n = float(n)
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"


def duration_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{max(seconds, 0.1):.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ============================================================ Streamlit helpers


def kept(area: str, where: Any, widget: str, label: str, name: str, default: Any, options: Sequence | None = None, **kw):
    """A widget whose value lives in the plain session key ``<area>.<name>`` (survives page switches).

    The widget's own key is ``_w.<area>.<name>``; while Streamlit still holds it
    (same page, or set by a callback such as :func:`apply_preset`) no default is
    passed, so the widget shows exactly that value.
    """
    key, wkey = f"{area}.{name}", f"_w.{area}.{name}"
    value = st.session_state.get(key, default)
    fn = getattr(where, widget)
    held = wkey in st.session_state
    if options is not None:
        options = list(options)
        value = value if value in options else default
        if held and st.session_state[wkey] not in options:
            del st.session_state[wkey]
            held = False
        if held:
            out = fn(label, options, key=wkey, **kw)
        elif widget == "select_slider":
            out = fn(label, options, value=value, key=wkey, **kw)
        else:
            out = fn(label, options, index=options.index(value), key=wkey, **kw)
    else:
        def clamp(v):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = max(v, kw.get("min_value", v))
                v = min(v, kw.get("max_value", v))
            return v

        value = clamp(value)
        if held and clamp(st.session_state[wkey]) != st.session_state[wkey]:
            st.session_state[wkey] = clamp(st.session_state[wkey])
        out = fn(label, key=wkey, **kw) if held else fn(label, value=value, key=wkey, **kw)
    st.session_state[key] = out
    return out


def set_kept(area: str, name: str, value: Any) -> None:
    """Change a kept widget's value before it is drawn (in a callback, or above the widget)."""
    st.session_state[f"{area}.{name}"] = value
    st.session_state[f"_w.{area}.{name}"] = value


def apply_preset(area: str, names: Sequence[str] = ("n_layers", "n_heads", "d_model", "context")) -> None:
    """on_change of the preset box: copy the preset into the sliders."""
    preset = ARCH_PRESETS.get(st.session_state.get(f"_w.{area}.preset"))
    if preset is None:
        return
    for name in names:
        set_kept(area, name, preset[name])


def upload_of(file: Any) -> tuple[bytes, str] | None:
    return None if file is None else (file.getvalue(), file.name)


@st.cache_resource(show_spinner=False)
def gpt2_tokenizer():
    from gpt_core.tokenizers import load_tokenizer

    return load_tokenizer("gpt2")


@st.cache_data(show_spinner=False, max_entries=8)
def cached_corpus(source: str, pasted: str = "", upload: tuple[bytes, str] | None = None,
                  lang: str = "fr") -> Corpus:
    return corpus_text(source, pasted, upload)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_records(task: str, upload: tuple[bytes, str] | None = None, lang: str = "fr") -> list[dict]:
    return classification_records(upload) if task == "classify" else instruction_records(upload)


def hyper_widgets(area: str, d: Hyper) -> tuple[Hyper | None, str | None]:
    """Steps, batch, learning rate (typed), schedule, warm-up, accumulation -> (Hyper, None) or (None, message)."""
    c = st.columns(6)
    steps = kept(area, c[0], "number_input", t("training.steps"), "steps", d.steps, min_value=1, max_value=20_000, step=10)
    batch = kept(area, c[1], "number_input", t("training.batch"), "batch", d.batch_size, min_value=1, max_value=512)
    lr_text = kept(area, c[2], "text_input", t("training.lr"), "lr", f"{d.lr:g}", help=t("training.lr_help"))
    schedule = kept(area, c[3], "selectbox", t("training.schedule"), "schedule", d.schedule, ["cosine", "constant"],
                    format_func=lambda k: t(f"training.schedule.{k}"))
    warmup = kept(area, c[4], "number_input", t("training.warmup"), "warmup", d.warmup, min_value=0, max_value=20_000)
    accum = kept(area, c[5], "number_input", t("training.accum"), "accum", d.grad_accum, min_value=1, max_value=64,
                 help=t("training.accum_help"))
    try:
        lr = parse_lr(lr_text)
    except InvalidInput as exc:
        return None, str(exc)
    if warmup and warmup >= steps:
        return None, t("training.err.warmup", warmup=warmup, steps=steps)
    return Hyper(int(steps), int(batch), lr, schedule, int(warmup), int(accum)), None


def show_estimate(est: dict) -> bool:
    """Four metrics (trained weights, memory, time, tokens) and the refusal when it cannot fit."""
    m = st.columns(4)
    m[0].metric(t("training.m.params"), count_text(est["trainable_params"]),
                help=t("training.m.params_help", total=count_text(est["params"])))
    parts = est["memory_breakdown"]
    m[1].metric(t("training.m.memory"), _gb(est["memory_bytes"]), help=t(
        "training.m.memory_help", w=_gb(parts["weights"]), o=_gb(parts["grads_and_adamw"]), a=_gb(parts["activations"])))
    m[2].metric(t("training.m.time"), "≈ " + duration_text(est["seconds_estimate"]), help=t("training.m.time_help"))
    m[3].metric(t("training.m.tokens"), count_text(est["tokens"]))
    free = est.get("available_bytes")
    st.caption(t("training.estimate_note", device=est["device"], precision=est["precision"],
                 free=_gb(free) if free else "?"))
    reason = refusal(est)
    if reason:
        st.error(reason)
    return reason is None


def start_button(area: str, plan: RunPlan | None, store_obj) -> None:
    """The start button (disabled without a valid plan); a busy server means a queue, said first."""
    running = get_manager().running_job()
    if running is not None:
        st.info(t("training.busy", kind=t(f"training.kind.{running.kind}"), step=running.step,
                  total=running.total_steps or "?"))
    if st.button(t("training.start"), type="primary", disabled=plan is None, key=f"{area}.start"):
        st.session_state[f"{area}.job"] = submit(plan, store_obj)


def _one_line(text: str) -> str:
    """Generated text for display: newlines shown as ↵ (a run of them would make a tall empty box)."""
    if not text or not text.strip():
        return t("training.empty") if not text else text.replace("\n", "↵")
    return text.replace("\r", "").replace("\n", "↵ ")


def _loss_figure(snap) -> Any:
    return F.loss_curve(snap.train_steps, snap.train_loss, snap.val_steps, snap.val_loss,
                        (t("training.curve.train"), t("training.curve.val")), t("training.curve.title"),
                        t("training.curve.x"), t("training.curve.y"))


def _progress(snap, live: bool) -> None:
    mgr = get_manager()
    if snap.status == "queued":
        st.info(t("training.queued", pos=snap.queue_position or "?"))
    else:
        total = snap.total_steps or "?"
        st.progress(min(max(snap.progress, 0.0), 1.0), text=t("training.progress", step=snap.step, total=total,
                                                                elapsed=duration_text(snap.elapsed)))
        if live and snap.message:
            st.caption(snap.message)
    if snap.status == "queued" or not (snap.train_loss or snap.val_loss):
        if live and st.button(t("training.cancel"), key=f"cancel.{snap.job_id}"):
            mgr.cancel(snap.job_id)
            st.toast(t("training.cancelling"))
        return
    m = st.columns(4)
    m[0].metric(t("training.m.train_loss"), f"{snap.train_loss[-1]:.3f}" if snap.train_loss else "–")
    m[1].metric(t("training.m.val_loss"), f"{snap.val_loss[-1]:.3f}" if snap.val_loss else "–")
    m[2].metric(t("training.m.lr"), f"{snap.lr[-1]:.2e}" if snap.lr else "–")
    speed = snap.tokens_seen / snap.elapsed if snap.elapsed else 0
    m[3].metric(t("training.m.speed"), f"{count_text(speed)}/s" if speed else "–")
    st.plotly_chart(_loss_figure(snap), width="stretch", key=f"loss.{snap.job_id}.{'live' if live else 'final'}")
    if snap.samples:
        last = snap.samples[-1]
        st.markdown(t("training.sample", step=last["step"]))
        st.code(_one_line(last["text"]), language=None, wrap_lines=True)
        if len(snap.samples) > 1:
            with st.expander(t("training.samples_before")):
                for s in reversed(snap.samples[:-1]):
                    st.caption(t("training.sample", step=s["step"]))
                    st.code(_one_line(s["text"]), language=None, wrap_lines=True)
    if live and mgr is not None and st.button(t("training.cancel"), key=f"cancel.{snap.job_id}"):
        mgr.cancel(snap.job_id)
        st.toast(t("training.cancelling"))


@st.fragment(run_every=1.0)
def _live(job_id: str) -> None:
    snap = get_manager().snapshot(job_id)
    if snap is None:
        return
    if snap.finished:
        st.rerun()  # the whole page draws the final view, without a timer
    _progress(snap, live=True)


def job_panel(kind: str, area: str):
    """Re-attach to this session's job, else to the latest job of this kind (a reload, another tab).

    An active job is drawn live (a fragment polling its snapshot each second);
    a finished one is returned for :func:`results`.
    """
    mgr = get_manager()
    job_id = st.session_state.get(f"{area}.job")
    snap = mgr.snapshot(job_id) if job_id else None
    if snap is None or snap.kind != kind:
        snap = mgr.latest_job(kind=kind)
    if snap is None:
        return None
    st.session_state[f"{area}.job"] = snap.job_id
    st.subheader(t("training.job_title"))
    if snap.active:
        _live(snap.job_id)
        return None
    return snap


def _status_line(snap) -> None:
    if snap.status == "done":
        train_loss = snap.train_loss[-1] if snap.train_loss else float("nan")
        val = f"{snap.val_loss[-1]:.3f}" if snap.val_loss else "–"
        st.success(t("training.done", steps=snap.step, loss=f"{train_loss:.3f}", val=val,
                     seconds=duration_text(snap.elapsed)))
    elif snap.status == "cancelled":
        st.warning(t("training.cancelled", step=snap.step))
    elif snap.status == "diverged":
        st.error(t("training.diverged", msg=snap.message))
    else:
        st.error(t("training.failed", msg=snap.message))


def _answers(cmp: dict, task: str) -> None:
    names = (t("training.before"), t("training.after"))
    for i, row in enumerate(cmp["rows"], 1):
        with st.container(border=True):
            if task == "instruct":
                st.markdown(f"**{i}. {row['instruction']}**" + (f"  \n_{row['input']}_" if row.get("input") else ""))
                cols = st.columns(3)
                cols[0].caption(t("training.expected"))
                cols[0].code(row.get("expected") or "–", language=None, wrap_lines=True)
            else:
                st.markdown(f"**{t('training.prompt')}** `{row['prompt']}`")
                cols = st.columns(2)
            for col, name, key in zip(cols[-2:], names, ("before", "after")):
                col.caption(name)
                col.code(_one_line(row[key]), language=None, wrap_lines=True)
    dist = cmp.get("dist")
    if dist:
        st.plotly_chart(F.compare_bars(dist["labels"], dist["before"], dist["after"], names,
                                       t("training.dist_title")), width="stretch")


def _classify(cmp: dict) -> None:
    rep = cmp["report"]
    m = st.columns(3)
    m[0].metric(t("training.acc_before"), f"{cmp['accuracy_before']:.0%}")
    m[1].metric(t("training.acc_after"), f"{rep['accuracy']:.0%}",
                delta=f"{(rep['accuracy'] - rep['majority_baseline']) * 100:+.0f} pts vs {t('training.majority')}")
    m[2].metric(t("training.majority_metric"), f"{rep['majority_baseline']:.0%}",
                help=t("training.majority_help", label=rep["majority_label"]))
    left, right = st.columns(2)
    left.plotly_chart(F.confusion_heatmap(rep["confusion_matrix"], rep["labels"], t("training.confusion", n=rep["n"]),
                                          t("training.predicted"), t("training.true"), t("training.count")),
                      width="stretch")
    right.dataframe([{t("training.class"): k, "precision": round(v["precision"], 2), "recall": round(v["recall"], 2),
                      "F1": round(v["f1"], 2), "support": v["support"]} for k, v in rep["per_class"].items()],
                    hide_index=True, width="stretch")
    right.dataframe([{t("training.true"): r["label"], t("training.before"): r["before"], t("training.after"): r["after"],
                      t("training.text"): r["text"]} for r in cmp["rows"]], hide_index=True, width="stretch")
    if cmp.get("dist"):
        d = cmp["dist"]
        st.plotly_chart(F.compare_bars(d["labels"], d["before"], d["after"], (t("training.before"), t("training.after")),
                                       t("training.class_dist")), width="stretch")


def _try_prompt(run: TrainedRun, area: str) -> None:
    with st.form(f"{area}.try_form"):
        text = st.text_area(t(f"training.try.{run.task}"), value=st.session_state.get(f"{area}.try_text", ""), height=80)
        go = st.form_submit_button(t("training.try.go"))
    if go:
        st.session_state[f"{area}.try_text"] = text
        try:
            st.session_state[f"{area}.try_out"] = (run.run_id, compare_prompt(run, text))
        except GPTCoreError as exc:
            st.error(str(exc))
    saved = st.session_state.get(f"{area}.try_out")
    if not saved or saved[0] != run.run_id:
        return
    out = saved[1]
    if run.task == "classify":
        st.plotly_chart(F.compare_bars(out["labels"], [0.0] * len(out["labels"]), out["after"],
                                       ("", t("training.after")), t("training.class_dist")), width="stretch")
        return
    cols = st.columns(2)
    for col, key, name in zip(cols, ("before_text", "after_text"), (t("training.before"), t("training.after"))):
        if key in out:
            col.caption(name)
            col.code(_one_line(out[key]), language=None, wrap_lines=True)
    if out.get("dist"):
        st.plotly_chart(F.compare_bars(out["dist"]["labels"], out["dist"]["before"], out["dist"]["after"],
                                       (t("training.before"), t("training.after")), t("training.dist_title")),
                        width="stretch")


def results(snap, area: str) -> None:
    """The final view of a job: status, loss curve, before/after, the registered model, downloads."""
    _status_line(snap)
    _progress(snap, live=False)
    res = snap.result or {}
    cmp = res.get("comparison")
    if snap.status == "done" and cmp:
        st.subheader(t("training.before_after"))
        if res.get("task") == "classify":
            _classify(cmp)
            st.caption(t("training.not_registered"))
        else:
            _answers(cmp, res.get("task"))
            if res.get("model_name"):
                st.info(t("training.registered", name=res["model_name"]))
        run = get_run(res.get("run_id"))
        if run is not None:
            st.markdown(f"**{t('training.try.title')}**")
            _try_prompt(run, area)
    cols = iter(st.columns(2))
    ckpt = res.get("checkpoint")
    if snap.status == "done" and ckpt and Path(ckpt).is_dir():
        next(cols).download_button(t("training.dl_ckpt"), data=functools.partial(checkpoint_zip, ckpt),
                                   file_name=f"{area}-{snap.job_id}.zip", mime="application/zip", on_click="ignore",
                                   key=f"{area}.dl_ckpt")
    next(cols).download_button(t("training.dl_metrics"), data=metrics_json(snap), on_click="ignore",
                               file_name=f"{area}-{snap.job_id}-metrics.json", mime="application/json",
                               key=f"{area}.dl_metrics")
