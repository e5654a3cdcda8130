"""A training plan run as a job of the app: :func:`gpt_core.train.job.run_plan`, plus the sidebar and memory.

:func:`submit` queues the job on :mod:`explorer.jobs`: :func:`job_fn` runs in a worker process
(:mod:`explorer.worker`, which relays its events and then loads what it saved), or in the manager's
thread for a base model that exists only in this server's memory. The job is gpt_core's (prepare,
measure, train, measure again, save, record in the history, failed and cancelled runs included); the app
adds its recorder (which applies the runs folder's size cap), offers a language model to its owner's
sidebar and keeps the run for the custom-prompt comparison. Nothing is worded here: status lines are
Message codes (``runs.*``).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from gpt_core import data as D
from gpt_core.backend import own_gpt
from gpt_core.errors import InvalidInput
from gpt_core.evaluate import class_probabilities, next_token_probs
from gpt_core.timing import job_threads
from gpt_core.train.job import answer, dist_compare, run_plan
from gpt_core.train.plans import MAX_PROMPT_CHARS, RunPlan

from explorer import history as H
from explorer import settings
from explorer.jobs import get_manager
from explorer.ui.token_chips import token_label

MAX_KEPT_RUNS = 3               # finished runs kept in memory for the custom-prompt comparison


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




def _keep(plan: RunPlan, reader: nn.Module, initial, path: Path, store) -> str | None:
    """After the save: a language model joins its owner's sidebar, and the run is kept in memory."""
    name = _register(plan, reader, store)
    base = initial if plan.kind == "pretrain" else (plan.base if plan.task == "instruct" else None)
    remember(TrainedRun(plan.run_id, plan.task, plan.tokenizer, base, reader, plan.labels, plan.max_length,
                        plan.style, name, str(path)), store)
    return name


def job_fn(plan: RunPlan, store=None) -> Callable[[threading.Event], Any]:
    """The job: gpt_core's :func:`~gpt_core.train.job.run_plan` on half the cores, kept in the app afterwards."""
    def run(cancel: threading.Event):
        with job_threads():  # half the cores: the pages stay responsive and the pace stays predictable
            yield from run_plan(plan, cancel, H.Recorder(plan),
                                lambda p, reader, initial, path: _keep(p, reader, initial, path, store), token_label)
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
    out = {"after_text": answer(run.after, tok, prompt, run.task)}
    if run.before is not None:
        out["before_text"] = answer(run.before, tok, prompt, run.task)
        out["dist"] = dist_compare(next_token_probs(run.before, tok, prompt),
                                   next_token_probs(run.after, tok, prompt), tok, label=token_label)
    return out
