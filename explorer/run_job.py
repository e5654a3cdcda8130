"""A training plan run as a job: measure, train, measure again, save, remember.

:func:`submit` queues the job on :mod:`explorer.jobs`: :func:`job_fn` runs in a worker process
(:mod:`explorer.worker`, which relays its events and then loads what it saved), or in the manager's
thread for a base model that exists only in this server's memory. The job
prepares what it trains (a copy of the model; for a probe, the frozen model's features of
every text), measures it, trains it, measures it again, saves it, offers a language model
to the sidebar, and records the run in the history (:mod:`explorer.history`), failed and
cancelled runs included. Each phase is timed (``result["phases"]``) so the estimate can be checked.
Nothing is worded here: status lines are Message codes (``runs.*``).
"""
from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from gpt_core import data as D
from gpt_core.backend import backend_of, own_gpt
from gpt_core.errors import InvalidInput, note
from gpt_core.evaluate import (
    class_probabilities, classification_report, continue_text, next_token_probs, top_token_union, wandb_logger,
)
from gpt_core.probe import LinearProbe, ProbeClassifier, feature_loader, pooled_features, save_probe
from gpt_core.timing import job_threads
from gpt_core.train import merge_lora, save_lora_adapter, save_trained, train

from explorer import history as H
from explorer import settings
from explorer.jobs import get_manager
from explorer.runs import (
    ANSWER_END, COMPARE_TOKENS, FEATURE_BATCH, MAX_PROMPT_CHARS, SAMPLE_TOKENS, RunPlan, registry_model,
)
from explorer.ui.token_chips import token_label

MAX_KEPT_RUNS = 3               # finished runs kept in memory for the custom-prompt comparison
STATUS = {"preparing": "Copying the model…", "features": "Reading the texts with the frozen model: {done}/{total}…",
          "before": "Measuring before training…", "training": "Training…",
          "after": "Comparing before and after…", "saving": "Saving the checkpoint…"}


def _status(step: str, **params) -> dict:
    return {"type": "status", "message": note(f"runs.{step}", STATUS[step], **params)}


@dataclass
class Trainee:
    """What the job trains and reads: ``model`` learns on ``train``; ``full(model)`` reads token ids."""
    model: nn.Module
    train: Any
    val: Any
    test: Any
    full: Callable[[nn.Module], nn.Module]


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


def measure(plan: RunPlan, work: Trainee, model: nn.Module) -> dict:
    """What the before/after comparison needs, measured on ``model`` (which is not changed)."""
    tok = plan.tokenizer
    if plan.task == "classify":
        reader = work.full(model)
        return {"report": classification_report(model, work.test, plan.labels),
                "probs": [class_probabilities(reader, tok, p, plan.max_length) for p in plan.prompts]}
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
    """Keep the run in memory; beyond MAX_KEPT_RUNS the oldest is forgotten and leaves the sidebar.

    Its checkpoint stays on disk: the run history can load it again.
    """
    with _RUNS_LOCK:
        _RUNS[run.run_id] = run
        while len(_RUNS) > MAX_KEPT_RUNS:
            _, old = _RUNS.popitem(last=False)
            if old.name and store is not None:
                getattr(store, "custom", {}).pop(old.name, None)
                getattr(store, "custom_owner", {}).pop(old.name, None)


def _register(plan: RunPlan, model: nn.Module, store, stamp: str | None = None) -> str | None:
    """Offer a trained language model to the sidebar of its owner's browser (classifiers are not language models).

    Its name is the plan's and ``stamp`` (the time the run ended; now, when not given)."""
    if store is None or plan.task == "classify":
        return None
    from gpt_core.registry import LoadedModel, ModelSource

    stamp = stamp or time.strftime("%H:%M:%S")
    name = f"{plan.names.name} {stamp}"
    params = list({id(p): p for p in model.parameters()}.values())
    source = ModelSource(name, f"{plan.names.label} ({stamp})", "local",
                         "gpt" if own_gpt(model) is not None else "hf-causal", True)
    store.register(name, LoadedModel(model, plan.tokenizer, source, 0.0,
                                     sum(p.numel() * p.element_size() for p in params), None,
                                     sum(p.numel() for p in params)), plan.owner)
    return name


# ========================================================================== job
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
                        dir=settings.runs_dir(), online=bool(plan.tracking.get("online")))


def _save(plan: RunPlan, work: Trainee, model: nn.Module, initial, store) -> tuple[str, str | None]:
    """Write the checkpoint, offer a language model to the sidebar, keep the run: (path, model name)."""
    path = H.checkpoint_dir(plan.run_id)
    if plan.method == "probe" and plan.task == "classify":
        save_probe(model, path, {"labels": plan.labels, "base": plan.base_key, "skip": work.full(model).skip,
                                 "task": plan.task, "params": plan.params})
        reader = work.full(model).eval()
    else:
        reader = merge_lora(model).eval()
        extra = {"task": plan.task, "params": plan.params, "tokenizer": plan.tokenizer_name, "base": plan.base_key}
        if plan.method == "lora" and registry_model(plan.base_key):  # the base loads again: the adapter is enough
            save_lora_adapter(model, path, extra)
        else:
            save_trained(reader, path, extra)
        if not plan.tokenizer_name:
            _save_tokenizer(plan.tokenizer, path)
    name = _register(plan, reader, store)
    base = initial if plan.kind == "pretrain" else (plan.base if plan.task == "instruct" else None)
    remember(TrainedRun(plan.run_id, plan.task, plan.tokenizer, base, reader, plan.labels, plan.max_length,
                        plan.style, name, str(path)), store)
    return str(path), name


def _save_tokenizer(tokenizer, folder: Path) -> None:
    """A tokenizer without a name to rebuild it (one trained on a pasted corpus) travels with its checkpoint."""
    inner = getattr(tokenizer, "_tok", None)
    if hasattr(inner, "save_pretrained"):
        inner.save_pretrained(str(folder))


def _train(plan: RunPlan, work: Trainee, record, cancel: threading.Event):
    """Forward the training events (logged to W&B when asked); returns (final event, W&B run folder)."""
    logger, said = _tracker(plan)
    yield _status("training") if said is None else {"type": "status", "message": said}
    final = None
    try:
        for event in train(work.model, work.train, work.val, plan.cfg, plan.task, sample_fn=plan.sample_fn,
                           cancel=cancel):
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


def job_fn(plan: RunPlan, store=None) -> Callable[[threading.Event], Any]:
    """The job: prepare, measure, train (events forwarded), measure again, save, register, record."""
    def run(cancel: threading.Event):
        with job_threads():  # half the cores: the pages stay responsive and the pace stays predictable
            yield from _run(cancel)

    def _run(cancel: threading.Event):
        started, phases = time.perf_counter(), _Phases()
        record = H.Recorder(plan)
        try:
            with phases("prepare"):
                work = yield from _prepare(plan, cancel)
            if work is None:
                yield record.end({"type": "cancelled", "step": 0, "message": note("jobs.cancelled", "Job cancelled "
                                  "at step {step}.", step=0)})
                return
            yield _status("before")
            with phases("before"):
                before = measure(plan, work, work.model)
                initial = copy.deepcopy(work.model) if plan.kind == "pretrain" else None
            with phases("train"):
                final, tracked = yield from _train(plan, work, record, cancel)
            if final is None or final["type"] != "done":
                if final is not None:
                    yield record.end(final)
                return
            yield _status("after")
            with phases("after"):
                result = comparison(plan, before, measure(plan, work, work.model))
            yield _status("saving")
            with phases("save"):
                path, name = _save(plan, work, work.model, initial, store)
            total = time.perf_counter() - started
            yield {"type": "result", "run_id": plan.run_id, "model_name": name, "comparison": result,
                   "task": plan.task, "total_seconds": total, "phases": phases.seconds, "wandb_dir": tracked}
            stamped = name or f"{plan.names.name} {time.strftime('%H:%M:%S')}"  # a classifier's name in the history
            yield record.end({**final, "checkpoint": path, "elapsed": total}, result, path, stamped)
        except BaseException as exc:  # recorded as failed (or cancelled: the manager closed the job)
            record.failed(exc)
            raise
    return run


def adopt(plan: RunPlan, store) -> str | None:
    """After a run in a worker process (:mod:`explorer.worker`), what :func:`_save` does in the thread: the
    language model in the sidebar (under the history's name) and the run kept for the custom-prompt comparison
    (before: the shared base, or the untrained model rebuilt from its seed), loaded from the checkpoint.
    Returns the registered name."""
    from explorer import history_models as HM

    runs = H.RunStore()
    rec = runs.get(plan.run_id)
    if rec is None:  # the process recorded it before its "done": a database that cannot be written
        raise KeyError(plan.run_id)
    device = str(plan.params.get("device") or "cpu")
    name, before = None, None
    if plan.task == "classify":
        after = HM.load_classifier(rec, device, runs, body=plan.base)
    else:
        after = HM.load_checkpoint_model(rec, device, runs, base=plan.base).model
        stamp = rec.name[len(plan.names.name):].strip() if rec.name.startswith(plan.names.name) else None
        name = _register(plan, after, store, stamp)  # the history's name: "<name> <time the run ended>"
        before = plan.make_model().eval() if plan.kind == "pretrain" else plan.base
    folder = runs.checkpoint_path(rec)
    remember(TrainedRun(plan.run_id, plan.task, plan.tokenizer, before, after, plan.labels, plan.max_length,
                        plan.style, name, str(folder) if folder else None), store)
    return name


def too_long(estimate: dict) -> InvalidInput | None:
    """The refusal of a run estimated longer than this server accepts (None when it may run)."""
    seconds, limit = estimate.get("seconds_estimate") or 0, settings.job_max_seconds()
    if seconds <= limit:
        return None
    return InvalidInput("runs.too_long", "This run would take about {minutes} minutes: this server accepts runs "
                        "of at most {limit} minutes. Lower the steps, the batch or the model.",
                        minutes=int(seconds // 60), limit=int(limit // 60))


def admit(plan: RunPlan, owner: str | None) -> None:
    """Refuse, with a reason, a job the shared server should not take: too long by its own estimate, a second
    one from the same session, or a full queue (limits from :mod:`explorer.settings`)."""
    long = too_long(plan.estimate)
    if long is not None:
        raise long
    active = [j for j in get_manager().jobs() if j.active]
    if owner is not None and sum(j.owner == owner for j in active) >= settings.jobs_each():
        raise InvalidInput("runs.one_job_each", "You already have a run queued or running: wait for it to end, "
                           "or cancel it, before starting another.")
    if len(active) >= settings.jobs_total():
        raise InvalidInput("runs.queue_full", "{n} runs are already queued or running on this server: try again "
                           "when one has ended.", n=len(active))


def submit(plan: RunPlan, store=None, owner: str | None = None) -> str:
    """Queue the plan's job on the server's manager; returns the job id.

    The job runs in a worker process (:mod:`explorer.worker`) when the plan can be built again there (it has
    a recipe); otherwise (a base model that lives only in this server's memory) in the manager's thread."""
    from explorer import worker

    plan.owner = owner if owner is not None else plan.owner
    admit(plan, owner)
    params = {**plan.params, "run_id": plan.run_id, "estimate_s": plan.estimate.get("seconds_estimate")}
    return get_manager().submit(plan.kind, worker.job_for(plan, store), params, owner=plan.owner)


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
