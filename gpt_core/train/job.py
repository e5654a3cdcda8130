"""A training plan, run: prepare, measure, train, measure again, save, record.

:func:`run_plan` is one job for the app and the command line alike: it prepares what the plan trains (a
copy of the model; for a probe, the frozen model's features of every text), measures it, trains it
(:func:`gpt_core.train.train`, on one process or under torchrun with a :class:`~gpt_core.train.distributed.Dist`),
measures it again, saves the checkpoint in ``<runs>/checkpoints/<run_id>`` (:func:`save_run`) and records the
run (:class:`gpt_core.runlog.Recorder`), failed and cancelled runs included. Each phase is timed
(``result["phases"]``). The app adds its sidebar and memory of runs through ``keep``. Status lines are
Message codes (``runs.*``).
"""
from __future__ import annotations

import copy
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .. import runlog
from ..backend import backend_of
from ..errors import note
from ..evaluate import (
    class_probabilities, classification_report, continue_text, next_token_probs, top_token_union, wandb_logger,
)
from ..probe import LinearProbe, ProbeClassifier, feature_loader, pooled_features, save_probe
from . import merge_lora, save_lora_adapter, save_trained, train
from .plans import ANSWER_END, COMPARE_TOKENS, FEATURE_BATCH, SAMPLE_TOKENS, RunPlan, registry_model

def _status(step: str, **params) -> dict:
    """A "status" event: what the job is doing now."""
    said = {
        "preparing": lambda: note("runs.preparing", "Copying the model…"),
        "features": lambda: note("runs.features", "Reading the texts with the frozen model: {done}/{total}…",
                                 **params),
        "before": lambda: note("runs.before", "Measuring before training…"),
        "training": lambda: note("runs.training", "Training…"),
        "after": lambda: note("runs.after", "Comparing before and after…"),
        "saving": lambda: note("runs.saving", "Saving the checkpoint…"),
    }
    return {"type": "status", "message": said[step]()}


@dataclass
class Trainee:
    """What the job trains and reads: ``model`` learns on ``train``; ``full(model)`` reads token ids."""
    model: nn.Module
    train: Any
    val: Any
    test: Any
    full: Callable[[nn.Module], nn.Module]



def answer(model: nn.Module, tokenizer, prompt: str, task: str) -> str:
    if task == "instruct":
        return continue_text(model, tokenizer, prompt, COMPARE_TOKENS, ANSWER_END)
    return continue_text(model, tokenizer, prompt, SAMPLE_TOKENS)


def token_text(tokenizer, token_id: int) -> str:
    """A plain label for one token id: its text (quoted as Python would) and the id."""
    return f"{tokenizer.decode([token_id])!r} · {token_id}"


def dist_compare(before, after, tokenizer, k: int = 8, label: Callable = token_text) -> dict:
    """The union of both models' top-``k`` next tokens, with each model's probability (≤ 12 rows)."""
    order = top_token_union(before, after, k)
    return {"ids": order, "labels": [label(tokenizer, i) for i in order],
            "before": [float(before[i]) for i in order], "after": [float(after[i]) for i in order]}


def measure(plan: RunPlan, work: Trainee, model: nn.Module) -> dict:
    """What the before/after comparison needs, measured on ``model`` (which is not changed)."""
    tok = plan.tokenizer
    if plan.task == "classify":
        reader = work.full(model)
        return {"report": classification_report(model, work.test, plan.labels),
                "probs": [class_probabilities(reader, tok, p, plan.max_length) for p in plan.prompts]}
    answers = [answer(model, tok, p, plan.task) for p in plan.prompts]
    first = next_token_probs(model, tok, plan.prompts[0]) if plan.prompts else None
    return {"answers": answers, "first_probs": first}


def _best(labels: list[str], probs: list[float]) -> str:
    return labels[max(range(len(probs)), key=probs.__getitem__)]


def comparison(plan: RunPlan, before: dict, after: dict, label: Callable = token_text) -> dict:
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
        dist = dist_compare(before["first_probs"], after["first_probs"], plan.tokenizer, label=label)
        dist["prompt"] = plan.prompts[0]
    return {"rows": rows, "dist": dist}


class _Phases:
    """Seconds spent in each phase of the job (compared with the estimate's parts)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _split_features(plan: RunPlan, dataset, skip: int, cancel: threading.Event, counter: list[int], total: int):
    """Features of one split, texts batched by length (little padding); events say the progress."""
    order = torch.argsort(dataset.lengths, stable=True)
    features = torch.zeros(len(order), backend_of(plan.base).d_model)
    for start in range(0, len(order), FEATURE_BATCH):
        rows = order[start:start + FEATURE_BATCH]
        batch = {"inputs": dataset.inputs[rows], "targets": dataset.targets[rows], "lengths": dataset.lengths[rows]}
        features[rows] = pooled_features(plan.base, [batch], skip, cancel)[0]
        counter[0] += len(rows)
        yield {**_status("features", done=counter[0], total=total), "progress": counter[0] / total}
        if cancel.is_set():
            return None
    return features, dataset.targets.clone()


def _features(plan: RunPlan, cancel: threading.Event):
    """Events while the frozen model reads every text once; returns the probe's :class:`Trainee`."""
    sets = [loader.dataset for loader in (plan.train_batches, plan.val_batches, plan.test_batches)]
    skip = len(getattr(plan.tokenizer, "model_prefix", ()))
    counter, total, parts = [0], sum(len(ds) for ds in sets), []
    for dataset in sets:
        found = yield from _split_features(plan, dataset, skip, cancel, counter, total)
        if found is None:
            return None
        parts.append(found)
    (x_train, y_train), val, test = parts
    probe = LinearProbe.for_features(x_train, len(plan.labels), seed=plan.cfg.seed)
    return Trainee(probe, feature_loader(x_train, y_train, plan.cfg.batch_size, True, plan.cfg.seed),
                feature_loader(*val, 256, False), feature_loader(*test, 256, False),
                lambda p: ProbeClassifier(plan.base, p, skip, plan.labels))


def _prepare(plan: RunPlan, cancel: threading.Event):
    if plan.method == "probe" and plan.task == "classify":
        return (yield from _features(plan, cancel))
    yield _status("preparing")
    return Trainee(plan.make_model(), plan.train_batches, plan.val_batches, plan.test_batches, lambda m: m)


def _tracker(plan: RunPlan):
    """A Weights & Biases logger when the page asked for one (its message goes to the job's status)."""
    if not plan.tracking.get("wandb"):
        return None, None
    return wandb_logger(plan.tracking.get("project") or "llm-explorer", {**plan.params, "run_id": plan.run_id},
                        dir=runlog.runs_dir(), online=bool(plan.tracking.get("online")))


def save_run(plan: RunPlan, work: Trainee, model: nn.Module) -> tuple[Path, nn.Module]:
    """Write the run's checkpoint in ``<runs>/checkpoints/<run_id>``: (folder, the model that reads token ids).

    A probe saves its head (the base model is named); LoRA on a registry model saves the adapter alone
    (the base loads again); anything else its full weights. A tokenizer without a name travels along."""
    path = runlog.checkpoint_dir(plan.run_id)
    if plan.method == "probe" and plan.task == "classify":
        save_probe(model, path, {"labels": plan.labels, "base": plan.base_key, "skip": work.full(model).skip,
                                 "task": plan.task, "params": plan.params})
        return path, work.full(model).eval()
    reader = merge_lora(model).eval()
    extra = {"task": plan.task, "params": plan.params, "tokenizer": plan.tokenizer_name, "base": plan.base_key}
    if plan.method == "lora" and registry_model(plan.base_key):  # the base loads again: the adapter is enough
        save_lora_adapter(model, path, extra)
    else:
        save_trained(reader, path, extra)
    if not plan.tokenizer_name:
        _save_tokenizer(plan.tokenizer, path)
    return path, reader

def _save_tokenizer(tokenizer, folder: Path) -> None:
    """A tokenizer without a name to rebuild it (one trained on a pasted corpus) travels with its checkpoint."""
    inner = getattr(tokenizer, "_tok", None)
    if hasattr(inner, "save_pretrained"):
        inner.save_pretrained(str(folder))


def _train(plan: RunPlan, work: Trainee, record, cancel: threading.Event, dist=None, resume=None):
    """Forward the training events (logged to W&B when asked); returns (final event, W&B run folder)."""
    logger, said = _tracker(plan)
    yield _status("training") if said is None else {"type": "status", "message": said}
    final = None
    try:
        for event in train(work.model, work.train, work.val, plan.cfg, plan.task, sample_fn=plan.sample_fn,
                           cancel=cancel, **_spread(dist, resume)):
            record.see(event)
            if logger is not None:
                logger.log(event)
            if event.get("type") in ("done", "cancelled", "diverged"):
                final = event
                break
            yield event
    finally:  # the W&B run is closed whatever happens
        folder = str(logger.finish()) if logger is not None else None
    return final, folder


def _spread(dist, resume) -> dict:
    """train()'s distributed and resumption arguments, only when given (a single-process run passes none)."""
    return {k: v for k, v in (("dist", dist), ("resume", resume)) if v is not None}


Keep = Callable[[RunPlan, nn.Module, Any, Path], "str | None"]


def run_plan(plan: RunPlan, cancel: threading.Event, record: runlog.Recorder, keep: Keep | None = None,
             label: Callable = token_text, dist=None, resume=None):
    """The job's events: prepare, measure, train (events forwarded), measure again, save, record.

    ``keep(plan, model, untrained copy, folder) -> name | None`` runs after the save (the app offers the model
    in its sidebar there); the run's name in the history is that name, else the plan's with the time. Under
    torchrun (``dist``) every rank trains; only the main one saves and records (the others record nothing)."""
    started, phases = time.perf_counter(), _Phases()
    main = dist is None or dist.is_main
    try:
        with phases("prepare"):
            work = yield from _prepare(plan, cancel)
        if work is None:
            yield record.end({"type": "cancelled", "step": 0, "message": runlog.cancelled_at(0)})
            return
        yield _status("before")
        with phases("before"):
            before = measure(plan, work, work.model)
            initial = copy.deepcopy(work.model) if plan.kind == "pretrain" and keep is not None else None
        with phases("train"):
            final, tracked = yield from _train(plan, work, record, cancel, dist, resume)
        if final is None or final["type"] != "done":
            if final is not None:
                yield record.end(final)
            return
        yield _status("after")
        with phases("after"):
            result = comparison(plan, before, measure(plan, work, work.model), label)
        path, name = None, None
        if main:
            yield _status("saving")
            with phases("save"):
                path, reader = save_run(plan, work, work.model)
                name = keep(plan, reader, initial, path) if keep is not None else None
        total = time.perf_counter() - started
        yield {"type": "result", "run_id": plan.run_id, "model_name": name, "comparison": result,
               "task": plan.task, "total_seconds": total, "phases": phases.seconds, "wandb_dir": tracked,
               "checkpoint": str(path) if path else None}
        stamped = name or f"{plan.names.name} {time.strftime('%H:%M:%S')}"  # a classifier's name in the history
        yield record.end({**final, "checkpoint": str(path) if path else None, "elapsed": total}, result, path,
                         stamped)
    except BaseException as exc:  # recorded as failed (or cancelled: the manager closed the job)
        record.failed(exc)
        raise
