"""Training jobs in a worker process, so that a run never holds the server's interpreter.

:func:`job_for` gives :mod:`explorer.jobs` a *relay*: a generator that runs in the manager's thread,
starts the job in a fresh process of a ``concurrent.futures.ProcessPoolExecutor`` and yields the
events the process sends, as :func:`explorer.run_job.job_fn` would have yielded them in the thread.

* Processes come from multiprocessing's ``forkserver`` (``spawn`` where there is none; never a plain
  fork of the multi-threaded server), which imports torch and gpt_core once. One pool, hence one
  process, per job: its memory goes back to the system when the job ends. Streamlit runs each page as a
  fake ``__main__``, which a new process would run again: processes start while it is a bare module.
* Closures, loaders and the shared model cannot cross: the process builds the plan again from its
  :class:`explorer.runs.Recipe` (the base model by its registry key or the checkpoint it was loaded
  from), keeps the page's estimate, checks that it planned the same ``params``, then prepares, trains,
  saves and records the run in the history (with the server's environment) as the thread would.
* Events come back through a ``multiprocessing.Manager`` queue; cancelling sets a Manager event. A
  cancelled process still running after ``KILL_AFTER_S`` is killed; a process that dies (killed, out of
  memory) makes a failed job (``worker.crashed``), recorded in the history; the server carries on.
* After "done", the relay loads what the process saved (:mod:`explorer.history_models`): the language
  model joins the sidebar under the history's name, and the run is kept for the custom-prompt comparison.

A plan without a recipe (a base model that exists only in this server's memory) runs in the thread as
before, and so does every job where no process can start. Nothing here imports streamlit.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
import traceback
import types
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Iterator

from tokenizers import Tokenizer as RawTokenizer

from gpt_core.errors import GPTCoreError, InvalidInput, Message, note
from gpt_core.registry import load_model
from gpt_core.tokenizers import HFTokenizer, load_tokenizer
from gpt_core.tokenlab import language_bpe

from explorer import history as H
from explorer import run_job as J
from explorer import runs as R
from explorer.history_models import checkpoint_origin, load_checkpoint_model
from explorer.jobs import failure

# imported once by the fork server, shared copy-on-write by every job's process (torch._dynamo: 1.8 s here)
PRELOAD = ["torch", "torch._dynamo", "safetensors.torch", "tiktoken", "transformers.modeling_utils",
           "transformers.tokenization_utils_fast", "peft", "gpt_core.train", "gpt_core.probe", "gpt_core.evaluate",
           "gpt_core.registry", "gpt_core.tokenizers", "gpt_core.tokenlab", "explorer.worker"]
POLL_S = 0.1            # how often the relay and the process look at the cancel flags
KILL_AFTER_S = 5.0      # a cancelled process still running after this long is killed
FINAL = ("done", "cancelled", "diverged")
CRASHED = ("worker.crashed", "The training process stopped abruptly (killed by the system, perhaps for lack "
           "of memory): the run is lost, the server carries on. Try a smaller batch, context or model.")
_log = logging.getLogger(__name__)


class WorkerFailed(Exception):
    """A job that failed in its process: ``message`` for the page (explorer.jobs.failure), its traceback there."""
    def __init__(self, message: Message, detail: str = ""):
        super().__init__(detail or str(message))
        self.message = message


@dataclass
class Order:
    """What the process receives: the recipe, and what the server set on the plan after it was made."""
    recipe: R.Recipe
    run_id: str
    owner: str | None
    tracking: dict
    estimate: dict
    params: dict            # what the page planned: the rebuilt plan must say the same
    env: dict               # the server's environment when the job was submitted (settings, caches)


# ================================================================== processes
_context = None
_context_lock = threading.Lock()
_links: "set[_Link]" = set()
_main_lock = threading.Lock()
_warm = threading.Event()


def context():
    """The multiprocessing context of the workers: forkserver (preloading torch and gpt_core), else spawn."""
    global _context
    with _context_lock:
        if _context is None:
            if "forkserver" in mp.get_all_start_methods():
                _context = mp.get_context("forkserver")
                _context.set_forkserver_preload(PRELOAD)
            else:
                _context = mp.get_context("spawn")
        return _context


def warm_up() -> None:
    """Start the fork server in the background (its imports take seconds), so that the first job starts at once."""
    if context().get_start_method() == "forkserver" and not _warm.is_set():
        from multiprocessing import forkserver

        _warm.set()
        threading.Thread(target=forkserver.ensure_running, name="llm-explorer-forkserver", daemon=True).start()


@contextmanager
def bare_main():
    """While processes start, ``__main__`` is a bare module: multiprocessing prepares a new process by running the
    parent's main script again, and under Streamlit that is the page being run (it would load models)."""
    with _main_lock:
        current, bare = sys.modules.get("__main__"), types.ModuleType("__main__")
        sys.modules["__main__"] = bare
        try:
            yield
        finally:
            if sys.modules.get("__main__") is bare:  # unless a page run has installed its own meanwhile
                sys.modules["__main__"] = current


def worker_pids() -> list[int]:
    """The processes that run jobs now (a job's process is known from its first event)."""
    return sorted(link.pid for link in list(_links) if link.pid is not None)


def _stop_all() -> None:
    """At interpreter exit: end the running processes (the pool would otherwise wait for their jobs)."""
    for link in list(_links):
        link.abandon()


if hasattr(threading, "_register_atexit"):  # runs before concurrent.futures' own exit hook, which would wait
    threading._register_atexit(_stop_all)


# ================================================================ the process
def tokenizer_ref(tokenizer, name: str) -> dict | None:
    """How a worker gets the same tokenizer: by name, or the rules of a BPE learnt here (None: it cannot)."""
    lang = {"bpe-fr": "fr", "bpe-en": "en"}.get(name)
    if lang or name:
        return {"bpe": lang} if lang else {"name": name}
    backend = getattr(getattr(tokenizer, "_tok", None), "backend_tokenizer", None)
    if backend is None:
        return None
    return {"json": backend.to_str(), "name": tokenizer.name, "label": tokenizer.label}


def model_ref(base, key: str) -> dict | None:
    """How a worker loads the same base model: the checkpoint it was loaded from (while it is on disk), else its
    registry key or folder (None: a model that lives only in this server's memory)."""
    run_id = checkpoint_origin(base)
    if run_id:
        try:
            runs = H.RunStore()
            rec = runs.get(run_id)
            return {"run_id": run_id} if rec is not None and runs.checkpoint_path(rec) is not None else None
        except (OSError, sqlite3.Error, GPTCoreError):  # an unreadable history: the thread trains it
            return None
    if R.registry_model(key) or (key and Path(key).is_absolute() and Path(key).is_dir()):
        return {"key": key}
    return None


def job_for(plan: R.RunPlan, store=None):
    """The job to submit: the relay to a worker process when the plan has a recipe, else the thread's job."""
    if plan.recipe is None:
        return J.job_fn(plan, store)
    order = Order(plan.recipe, plan.run_id, plan.owner, dict(plan.tracking), dict(plan.estimate), dict(plan.params),
                  dict(os.environ))

    def run(cancel: threading.Event):
        return _relay(plan, order, store, cancel)
    return run


def child(order: Order, events, stop) -> None:
    """The process's side (called by the pool): rebuild the plan, run the job, send every event."""
    events.put({"type": "_started", "pid": os.getpid()})
    for key in set(os.environ) - set(order.env):
        del os.environ[key]
    os.environ.update(order.env)
    cancel = threading.Event()
    threading.Thread(target=_watch, args=(stop, cancel), daemon=True).start()
    try:
        for event in J.job_fn(rebuild(order))(cancel):
            events.put(event)
    except BaseException as exc:  # noqa: BLE001 - the relay says it; exceptions may not pickle
        events.put({"type": "_failed", "message": failure(exc), "detail": traceback.format_exc()})


def _watch(stop, cancel: threading.Event) -> None:
    """Turn the server's cancel (a Manager event) into the job's own event. A server gone (killed) cancels too,
    then ends this process, which nothing would ever call again."""
    server = mp.parent_process()  # the process that started this one (not the fork server)
    while server is None or server.is_alive():
        try:
            if stop.wait(POLL_S):
                cancel.set()
                return
        except Exception:  # noqa: BLE001 - the server's manager is gone
            break
    cancel.set()
    time.sleep(KILL_AFTER_S)  # time for the job to end and record itself as cancelled
    os._exit(1)


def _end_with_server() -> None:
    """In the Manager's process: end it when the server is gone (killed, it could not shut it down)."""
    server = mp.parent_process()
    if server is not None:
        threading.Thread(target=lambda: (wait([server.sentinel]), os._exit(0)), daemon=True).start()


def rebuild(order: Order) -> R.RunPlan:
    """The plan again, from its recipe, with the page's estimate (nothing is measured twice)."""
    recipe = order.recipe
    if recipe.kind == "pretrain":
        plan = R.plan_pretrain(_tokenizer(recipe.tokenizer), **recipe.args, estimate=order.estimate)
    else:
        base = _model(recipe.model, recipe.args["device"])
        plan = R.plan_finetune(base.model, base.tokenizer, **recipe.args, estimate=order.estimate)
    if plan.params != order.params:
        raise InvalidInput("worker.plan_differs", "The training process did not prepare the same run as the page "
                           "(the model or the data changed meanwhile): start it again.")
    plan.run_id, plan.owner, plan.tracking = order.run_id, order.owner, order.tracking
    return plan


def _tokenizer(ref: dict):
    if ref.get("bpe"):
        return language_bpe(ref["bpe"], R.CORPUS_BPE_VOCAB).tokenizer
    if ref.get("json"):
        return HFTokenizer.from_tokenizers_object(RawTokenizer.from_str(ref["json"]), name=ref["name"],
                                                  label=ref["label"])
    return load_tokenizer(ref["name"])


def _model(ref: dict, device: str):
    if ref.get("run_id"):
        rec = H.RunStore().get(ref["run_id"])
        if rec is None:
            raise InvalidInput("worker.base_gone", "The model this run starts from is no longer in the run "
                               "history: load it again, or choose another model.")
        return load_checkpoint_model(rec, device)
    return load_model(ref["key"], device=device)


# ================================================================ the relay
def _relay(plan: R.RunPlan, order: Order, store, cancel: threading.Event) -> Iterator[dict]:
    try:
        with bare_main():
            manager = SyncManager(ctx=context())
            manager.start(_end_with_server)
    except (OSError, EOFError, RuntimeError) as exc:  # no processes here (a sandbox): the thread runs the job
        _log.warning("training in the server's process: no worker process could start (%s)", exc)
        yield from J.job_fn(plan, store)(cancel)
        return
    link = _Link(plan, order, store, cancel, manager)
    try:
        yield from link.run()
    finally:
        link.close()


class _Link:
    """One job's process seen from the server: its pool, its queue, its cancel flag, its pid."""

    def __init__(self, plan: R.RunPlan, order: Order, store, cancel: threading.Event, manager):
        self.plan, self.order, self.store, self.cancel, self.manager = plan, order, store, cancel, manager
        self.record = H.Recorder(plan)      # the history's line when the process cannot write it
        self.events, self.stop = manager.Queue(), manager.Event()
        self.pool = self.future = self.pid = self.cancel_at = None
        self.step, self.ended = 0, False

    def run(self) -> Iterator[dict]:
        # a pool per job, so its one process ends with the job (max_tasks_per_child=1 would start a spare one)
        self.pool = ProcessPoolExecutor(1, mp_context=context())
        _links.add(self)
        with bare_main():  # the pool starts its process here
            self.future = self.pool.submit(child, self.order, self.events, self.stop)
        result = None
        while True:
            event = self._next()
            if event is None:  # the process is gone without its last word
                yield from self._lost()
                return
            kind = event.get("type")
            if kind == "_failed":
                self.ended = True
                raise WorkerFailed(event["message"], event.get("detail", ""))
            self.record.see(event)
            if isinstance(event.get("step"), int):
                self.step = max(self.step, event["step"])
            if kind == "result":
                result = event  # said once the trained model is loaded here (after "done")
                continue
            if kind == "done" and result is not None:
                yield {**result, "model_name": self._adopt()}
            yield event
            if kind in FINAL:
                self.ended = True
                return

    def _next(self) -> dict | None:
        """The process's next event; None once it has ended (or died) and sent everything."""
        while True:
            self._follow_cancel()
            try:
                event = self.events.get(timeout=POLL_S)
            except queue.Empty:
                if not self.future.done():
                    continue
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    return None
            except (EOFError, OSError):  # the manager's process is gone: so is the job
                self._kill()
                return None
            if event.get("type") != "_started":
                return event
            self.pid = event["pid"]

    def _follow_cancel(self) -> None:
        if not self.cancel.is_set():
            return
        if self.cancel_at is None:
            self.cancel_at = time.monotonic()
            self._ask_stop()
        elif time.monotonic() - self.cancel_at > KILL_AFTER_S:
            self._kill()

    def _lost(self) -> Iterator[dict]:
        """The process ended without a final event: killed after a cancel, or crashed."""
        self.ended = True
        self._wait(KILL_AFTER_S)
        if self.cancel_at is not None:
            self._record_lost(GeneratorExit())
            yield {"type": "cancelled", "step": self.step, "message": note("jobs.cancelled", "Job cancelled at "
                                                                             "step {step}.", step=self.step)}
            return
        error = self.future.exception() if self.future.done() else None
        if error is None or isinstance(error, BrokenProcessPool):  # else: the job could not even be sent
            error = WorkerFailed(note(*CRASHED), f"the worker process {self.pid} ended abruptly")
        self._record_lost(error)
        raise error

    def _adopt(self) -> str | None:
        """Load what the process saved into this server; the sidebar name (None when nothing was registered)."""
        try:
            return J.adopt(self.plan, self.store)
        except (GPTCoreError, OSError, RuntimeError, ValueError, KeyError):
            _log.exception("the run %s is saved but could not be loaded in the server", self.plan.run_id)
            return None

    def _record_lost(self, exc: BaseException) -> None:
        """The history's line for a run whose process could not write it (killed before the end)."""
        try:
            if H.RunStore().get(self.plan.run_id) is None:
                self.record.failed(exc)
        except Exception:  # noqa: BLE001 - recording never makes things worse
            _log.exception("the run %s could not be recorded", self.plan.run_id)

    def _kill(self) -> None:
        """Kill the process (known by its first event, "_started", which the relay reads before any other)."""
        if self.pid is not None and self.future is not None and not self.future.done():
            try:
                os.kill(self.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
            except (ProcessLookupError, PermissionError):
                pass

    def _wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.future is not None and not self.future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.future is None or self.future.done()

    def _ask_stop(self) -> None:
        try:
            self.stop.set()
        except Exception:  # noqa: BLE001 - the manager is gone: a kill ends the process
            pass

    def abandon(self) -> None:
        """The server is stopping: ask the process to stop (it records the run as cancelled), else kill it."""
        self._ask_stop()
        if not self._wait(KILL_AFTER_S):
            self._kill()

    def close(self) -> None:
        """Never leave a process behind: a job closed early (cancelled) ends its process, killed if it must."""
        try:
            if self.future is not None and not self.future.done():
                self._ask_stop()
                if not self._wait(KILL_AFTER_S):
                    self._kill()
                    self._wait(10.0)
            if not self.ended and self.future is not None:
                self._record_lost(GeneratorExit())
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            _links.discard(self)
            try:
                self.manager.shutdown()
            except Exception:  # noqa: BLE001
                pass
