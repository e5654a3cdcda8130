"""Training runs without Streamlit: plans, the job, the finished-run registry.

:func:`plan_pretrain` / :func:`plan_finetune` check a page's choices at once and return a
:class:`RunPlan` (loaders, TrainConfig, how to copy the model, cost estimate). :func:`submit`
queues :func:`job_fn` on :mod:`explorer.jobs`: in a worker thread it copies the model (the shared
one is never trained), measures it, trains it, measures it again, saves it and offers it to the
sidebar. Nothing is worded here: status lines and refusals are Message codes (``runs.*``, locale
keys ``core.runs.*``) the page says in the user's language; a model's names come from the page.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch.nn as nn

from gpt_core import data as D
from gpt_core.backend import backend_of, own_gpt
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput, note
from gpt_core.evaluate import (
    class_probabilities, classification_report, continue_text, next_token_probs, top_token_union,
)
from gpt_core.train import (
    TrainConfig, estimate_finetune, estimate_run, make_sample_fn, merge_lora,
    prepare_classifier, prepare_instruction_finetune, prepare_pretraining, save_trained, train,
)

from explorer.jobs import get_manager
from explorer.ui.token_chips import token_label

ARCH_PRESETS: dict[str, dict[str, int]] = {
    "nano": {"n_layers": 1, "n_heads": 2, "d_model": 32, "context": 32},
    "tiny": {"n_layers": 2, "n_heads": 4, "d_model": 64, "context": 64},
    "small": {"n_layers": 4, "n_heads": 4, "d_model": 128, "context": 128},
}
SAMPLE_PROMPTS = {"corpus_fr": "Pour préparer une", "corpus_en": "To make a", "pydoc": "The"}
MAX_CORPUS_CHARS = 600_000      # a longer corpus is cut (tokenizing and training stay interactive)
MAX_PROMPT_CHARS = 2_000
SAMPLE_TOKENS = 24              # tokens of the live samples and the before/after answers
COMPARE_TOKENS = 32
ANSWER_END = "###"              # an instruction's answer stops where the next template section starts
LARGE_MODEL = 50_000_000        # above this many parameters, defaults favour LoRA and few steps
MAX_KEPT_RUNS = 3               # finished runs whose models and checkpoints are kept
RUNS_DIR = Path(tempfile.gettempdir()) / "llm-explorer-runs"
# the job's status lines (codes runs.<step>), with their English fallback
STATUS = {"preparing": "Copying the model…", "before": "Measuring before training…", "training": "Training…",
          "after": "Comparing before and after…", "saving": "Saving the checkpoint…"}


def _status(step: str) -> dict:
    return {"type": "status", "message": note(f"runs.{step}", STATUS[step])}


# ===================================================================== choices
@dataclass
class Hyper:
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: int = 5
    grad_accum: int = 1
    seed: int = 0


def train_config(h: Hyper, device: str, eval_every: int | None = None, eval_batches: int = 5,
                 sample_every: int = 0) -> TrainConfig:
    """The TrainConfig of a run (refused with a reason when a value is impossible); ~10 evaluations per run."""
    if eval_every is None:
        eval_every = max(1, h.steps // 10)
    return TrainConfig(lr=h.lr, batch_size=h.batch_size, steps=h.steps, grad_accum=h.grad_accum,
                       warmup=h.warmup, schedule=h.schedule, eval_every=eval_every,
                       eval_batches=eval_batches, sample_every=sample_every, seed=h.seed, device=device)


@dataclass
class FinetuneOptions:
    task: str = "instruct"          # "instruct" or "classify"
    method: str = "lora"            # instruct: "full" or "lora"
    lora_r: int = 8
    mask_prompt: bool = True        # instruct: the loss ignores the prompt tokens
    style: str = "alpaca"           # prompt template (gpt_core.data.ALPACA_STYLES)
    max_length: int = 128           # tokens per row (longer rows are cut)
    n_last: int | None = None       # classify: train only the last N blocks (None: all)


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


@dataclass
class RunNames:
    """How a finished language model appears in every page's sidebar (chosen by the page, in its language)."""
    name: str = "run"               # short name; the job adds the time ("pretrained 14:02:11")
    label: str = "model trained here"


# ======================================================================== plans
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
    names: RunNames = field(default_factory=RunNames)
    base: nn.Module | None = None               # the shared base model (read only), fine-tuning only
    prompts: list[str] = field(default_factory=list)    # before/after prompts (already formatted)
    shown: list[dict] = field(default_factory=list)     # what the UI shows for each prompt
    test_batches: Any = None                    # classification: held-out tickets
    labels: list[str] | None = None
    max_length: int = 128
    style: str = "alpaca"
    sample_fn: Callable[[nn.Module], str] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])


def plan_pretrain(tokenizer, text: str, arch: dict, hyper: Hyper, device: str, prompt: str,
                  names: RunNames | None = None, source: str = "", val_fraction: float = 0.1) -> RunPlan:
    """A from-scratch GPT on ``text``: windows of ``context`` tokens, stride = context."""
    cfg_model = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=arch["context"], d_model=arch["d_model"],
                          n_heads=arch["n_heads"], n_layers=arch["n_layers"])
    ctx = cfg_model.context_length
    train_text, val_text = D.split_text(text, val_fraction)
    try:
        train_ds = D.GPTWindowDataset.from_text(train_text, tokenizer, ctx, ctx)
        val_ds = D.GPTWindowDataset.from_text(val_text, tokenizer, ctx, ctx)
    except InvalidInput:
        raise InvalidInput("runs.corpus_too_short", "The corpus ({n} tokens) is too short for a context of {ctx} "
                           "tokens: the validation part (10 % of the text) needs at least one window of {ctx} + 1 "
                           "tokens, about {need} tokens in all. Add text or lower the context.",
                           n=len(tokenizer.encode(text)), ctx=ctx, need=int((ctx + 1) / val_fraction)) from None
    prompt = (prompt or "").strip()[:MAX_PROMPT_CHARS]
    sample_fn = make_sample_fn(tokenizer, prompt, SAMPLE_TOKENS)  # refuses an empty prompt
    train_loader = D.make_loader(train_ds, batch_size=hyper.batch_size, shuffle=True,
                                 drop_last=len(train_ds) >= hyper.batch_size, seed=hyper.seed)
    val_loader = D.make_loader(val_ds, batch_size=hyper.batch_size, shuffle=False, drop_last=False)
    cfg = train_config(hyper, device, eval_every=max(1, min(hyper.steps // 10, 50)),
                       sample_every=max(1, min(hyper.steps // 6, 25)))
    estimate = estimate_run(cfg_model, hyper.batch_size, ctx, hyper.steps, device, "auto", hyper.grad_accum)
    params = {"task": "lm", "source": source, "architecture": dict(arch), "vocab_size": tokenizer.vocab_size,
              "train_windows": len(train_ds), "val_windows": len(val_ds), **asdict(hyper), "device": device}
    return RunPlan("pretrain", "lm", cfg, lambda: prepare_pretraining(cfg_model, seed=hyper.seed), tokenizer,
                   train_loader, val_loader, estimate, params, names or RunNames(), prompts=[prompt],
                   shown=[{"prompt": prompt}], max_length=ctx, sample_fn=sample_fn)


@dataclass
class _TaskData:
    train: Any
    val: Any
    make: Callable[[], nn.Module]
    prompts: list[str]
    shown: list[dict]
    test: Any = None
    labels: list[str] | None = None
    sample_fn: Callable[[nn.Module], str] | None = None


def _instruction_data(base, tokenizer, records, opts: FinetuneOptions, hyper: Hyper, n_compare: int) -> _TaskData:
    D.require_columns(records, ["instruction", "output"])
    train_r, val_r, test_r = D.split_records(records, (0.8, 0.1, 0.1), seed=hyper.seed)
    datasets = [D.InstructionDataset(r, tokenizer, opts.style) for r in (train_r, val_r)]
    if opts.mask_prompt and all(len(p) >= opts.max_length for p, _ in datasets[0].items):
        raise InvalidInput("runs.prompts_fill_rows", "With {n} tokens per example and the prompt masked, the prompts "
                           "fill every row: no answer would count in the loss. Raise the length or stop masking.",
                           n=opts.max_length)
    train_loader, val_loader = (
        D.make_instruction_loader(ds, tokenizer, batch_size=hyper.batch_size, shuffle=i == 0, seed=hyper.seed,
                                  mask_prompt=opts.mask_prompt, max_length=opts.max_length)
        for i, ds in enumerate(datasets))
    lora = opts.method == "lora"
    shown = [{"instruction": r["instruction"], "input": r.get("input") or "", "expected": r.get("output") or ""}
             for r in test_r[:n_compare]]
    sample_prompt = D.format_alpaca(val_r[0], opts.style)[0]  # the live sample: an answer alone
    return _TaskData(train_loader, val_loader,
                     lambda: prepare_instruction_finetune(base, lora=lora, lora_r=opts.lora_r),
                     [D.format_alpaca(r, opts.style)[0] for r in test_r[:n_compare]], shown,
                     sample_fn=lambda model: continue_text(model, tokenizer, sample_prompt, SAMPLE_TOKENS, ANSWER_END))


def _classification_data(base, tokenizer, records, opts: FinetuneOptions, hyper: Hyper, n_compare: int) -> _TaskData:
    D.require_columns(records, ["text", "label"])
    vocab = D.label_vocab([r["label"] for r in records])
    parts = D.split_records(records, (0.7, 0.1, 0.2), seed=hyper.seed)
    sets = [D.ClassificationDataset([r["text"] for r in p], [r["label"] for r in p], tokenizer,
                                    max_length=opts.max_length, vocab=vocab) for p in parts]
    train_loader, val_loader, test_loader = (
        D.make_loader(ds, batch_size=hyper.batch_size if i == 0 else 64, shuffle=i == 0, drop_last=False,
                      seed=hyper.seed) for i, ds in enumerate(sets))
    labels = sets[0].label_names
    make = lambda: prepare_classifier(base, len(labels), freeze_until_last=opts.n_last, labels=labels)  # noqa: E731
    shown = [{"text": r["text"], "label": str(r["label"]).strip()} for r in parts[2][:n_compare]]
    return _TaskData(train_loader, val_loader, make, [r["text"] for r in parts[2][:n_compare]], shown,
                     test_loader, labels)


def plan_finetune(base: nn.Module, tokenizer, records: Sequence[dict], opts: FinetuneOptions, hyper: Hyper,
                  device: str, names: RunNames | None = None, n_compare: int | None = None) -> RunPlan:
    """Instruction (full or LoRA) or classification fine-tuning of a copy of ``base``."""
    records = list(records)
    large = backend_of(base).n_params() > LARGE_MODEL
    n_compare = n_compare if n_compare is not None else (2 if large else 3)
    build = _classification_data if opts.task == "classify" else _instruction_data
    data = build(base, tokenizer, records, opts, hyper, n_compare)
    estimate = estimate_finetune(base, opts.task, hyper.batch_size, opts.max_length, hyper.steps, device,
                                 hyper.grad_accum, opts.method, opts.lora_r, opts.n_last,
                                 len(data.labels) if data.labels else None)
    # a big model on a CPU: each forward pass counts, so evaluate on one batch and sample twice
    eval_batches = 1 if large else (4 if opts.task == "instruct" else 0)
    cfg = train_config(hyper, device, eval_every=max(1, hyper.steps // (3 if large else 8)), eval_batches=eval_batches,
                       sample_every=max(1, hyper.steps // (2 if large else 4)) if opts.task == "instruct" else 0)
    params = {"task": opts.task, **asdict(opts), **asdict(hyper), "device": device, "examples": len(records)}
    return RunPlan("finetune", opts.task, cfg, data.make, tokenizer, data.train, data.val, estimate, params,
                   names or RunNames(), base=base, prompts=data.prompts, shown=data.shown, test_batches=data.test,
                   labels=data.labels, max_length=opts.max_length, style=opts.style, sample_fn=data.sample_fn)


# ============================================================== before / after
def _answer(model: nn.Module, tokenizer, prompt: str, task: str) -> str:
    if task == "instruct":
        return continue_text(model, tokenizer, prompt, COMPARE_TOKENS, ANSWER_END)
    return continue_text(model, tokenizer, prompt, SAMPLE_TOKENS)


def dist_compare(before, after, tokenizer, k: int = 8) -> dict:
    """The union of both models' top-``k`` next tokens, with each model's probability (≤ 12 rows)."""
    order = top_token_union(before, after, k)
    return {"ids": order, "labels": [token_label(tokenizer, i) for i in order],
            "before": [float(before[i]) for i in order], "after": [float(after[i]) for i in order]}


def measure(plan: RunPlan, model: nn.Module) -> dict:
    """What the before/after comparison needs, measured on ``model`` (which is not changed)."""
    tok = plan.tokenizer
    if plan.task == "classify":
        return {"report": classification_report(model, plan.test_batches, plan.labels),
                "probs": [class_probabilities(model, tok, p, plan.max_length) for p in plan.prompts]}
    answers = [_answer(model, tok, p, plan.task) for p in plan.prompts]
    first = next_token_probs(model, tok, plan.prompts[0]) if plan.prompts else None
    return {"answers": answers, "first_probs": first}


def _best(labels: list[str], probs: list[float]) -> str:
    return labels[max(range(len(probs)), key=probs.__getitem__)]


def comparison(plan: RunPlan, before: dict, after: dict) -> dict:
    """JSON-ready before/after data for the page (plain lists and numbers only)."""
    if plan.task == "classify":
        rows = [{**shown, "before": _best(plan.labels, pb), "after": _best(plan.labels, pa)}
                for shown, pb, pa in zip(plan.shown, before["probs"], after["probs"])]
        first = {"labels": list(plan.labels), "before": before["probs"][0], "after": after["probs"][0]} \
            if before["probs"] else None
        return {"rows": rows, "dist": first, "accuracy_before": before["report"]["accuracy"],
                "report": {k: v for k, v in after["report"].items() if k != "predictions"}}
    rows = [{**shown, "before": b, "after": a} for shown, b, a in zip(plan.shown, before["answers"], after["answers"])]
    dist = None
    if before.get("first_probs") is not None:
        dist = dist_compare(before["first_probs"], after["first_probs"], plan.tokenizer)
        dist["prompt"] = plan.prompts[0]
    return {"rows": rows, "dist": dist}


# ===================================================================== registry
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


def remember(run: TrainedRun, store=None) -> None:
    """Keep the run; forget the oldest beyond MAX_KEPT_RUNS (model, checkpoint and sidebar entry)."""
    with _RUNS_LOCK:
        _RUNS[run.run_id] = run
        while len(_RUNS) > MAX_KEPT_RUNS:
            _, old = _RUNS.popitem(last=False)
            if old.checkpoint:
                shutil.rmtree(old.checkpoint, ignore_errors=True)
            if old.name and store is not None:
                getattr(store, "custom", {}).pop(old.name, None)


def _register(plan: RunPlan, model: nn.Module, store, seconds: float) -> str | None:
    """Offer a trained language model to every page's sidebar (classifiers are not language models)."""
    if store is None or plan.task == "classify":
        return None
    from gpt_core.registry import LoadedModel, ModelSource

    stamp = time.strftime("%H:%M:%S")
    name = f"{plan.names.name} {stamp}"
    params = list({id(p): p for p in model.parameters()}.values())
    source = ModelSource(name, f"{plan.names.label} ({stamp})", "local",
                         "gpt" if own_gpt(model) is not None else "hf-causal", True)
    store.register(name, LoadedModel(model, plan.tokenizer, source, seconds,
                                     sum(p.numel() * p.element_size() for p in params), None,
                                     sum(p.numel() for p in params)))
    return name


# ========================================================================== job
def _train_events(plan: RunPlan, model: nn.Module, cancel: threading.Event):
    """Forward the training events; returns the final event (done, cancelled or diverged)."""
    for event in train(model, plan.train_batches, plan.val_batches, plan.cfg, plan.task,
                       sample_fn=plan.sample_fn, cancel=cancel):
        if event.get("type") in ("done", "cancelled", "diverged"):
            return event
        yield event
    return None


def _finish(plan: RunPlan, model: nn.Module, initial: nn.Module | None, store, started: float) -> tuple[str, str | None]:
    """Save the trained model, offer it to the sidebar, keep the run: (checkpoint path, model name)."""
    plain = merge_lora(model).eval()
    path = RUNS_DIR / plan.run_id
    save_trained(plain, path, {"task": plan.task, "params": plan.params})
    name = _register(plan, plain, store, time.perf_counter() - started)
    base = initial if plan.kind == "pretrain" else (plan.base if plan.task == "instruct" else None)
    remember(TrainedRun(plan.run_id, plan.task, plan.tokenizer, base, plain, plan.labels, plan.max_length,
                        plan.style, name, str(path)), store)
    return str(path), name


def job_fn(plan: RunPlan, store=None) -> Callable[[threading.Event], Any]:
    """The job: copy, measure, train (events forwarded), measure again, save, register."""
    def run(cancel: threading.Event):
        started = time.perf_counter()
        yield _status("preparing")
        model = plan.make_model()
        yield _status("before")
        before = measure(plan, model)
        initial = copy.deepcopy(model) if plan.kind == "pretrain" else None
        yield _status("training")
        final = yield from _train_events(plan, model, cancel)
        if final is None or final["type"] != "done":
            if final is not None:
                yield final
            return
        yield _status("after")
        result = comparison(plan, before, measure(plan, model))
        yield _status("saving")
        path, name = _finish(plan, model, initial, store, started)
        yield {"type": "result", "run_id": plan.run_id, "model_name": name, "comparison": result,
               "task": plan.task, "total_seconds": time.perf_counter() - started}
        yield {**final, "checkpoint": path}
    return run


def submit(plan: RunPlan, store=None, owner: str | None = None) -> str:
    """Queue the plan's job on the server's manager; returns the job id."""
    params = {**plan.params, "run_id": plan.run_id, "estimate_s": plan.estimate.get("seconds_estimate")}
    return get_manager().submit(plan.kind, job_fn(plan, store), params, owner=owner)


def compare_prompt(run: TrainedRun, text: str) -> dict:
    """A prompt typed after the run, answered by the model before and after training."""
    text = (text or "").strip()[:MAX_PROMPT_CHARS]
    tok = run.tokenizer
    if run.task == "classify":
        return {"labels": list(run.labels or []), "after": class_probabilities(run.after, tok, text, run.max_length)}
    prompt = D.format_alpaca({"instruction": text, "input": ""}, run.style)[0] \
        if run.task == "instruct" and text else text
    out = {"after_text": _answer(run.after, tok, prompt, run.task)}
    if run.before is not None:
        out["before_text"] = _answer(run.before, tok, prompt, run.task)
        out["dist"] = dist_compare(next_token_probs(run.before, tok, prompt),
                                   next_token_probs(run.after, tok, prompt), tok)
    return out
