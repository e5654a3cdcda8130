"""Background jobs (training runs) for the app: a queue and one relay thread.

Streamlit reruns the page script on every click, which would kill a training
loop running inside it. So a job's event generator is consumed by a thread that
never touches ``st`` and records each event into a :class:`JobSnapshot`. For a
training run that generator is a relay (:mod:`explorer.worker`): the work itself
happens in a separate process, so it never holds the server's interpreter. A
``@st.fragment(run_every=...)`` on the page calls :meth:`JobManager.snapshot`
(a copy, safe to read) to draw progress and the live loss, and a page reload
re-attaches with :meth:`JobManager.latest_job`.

Cancelling sets the job's ``threading.Event``; a job that checks it ends
with its own "cancelled" event, and one that does not is closed by the worker
at most ``CANCEL_GRACE_S`` after its next event. Exceptions become status
"failed" with the reason as a :class:`gpt_core.errors.Message`.

The worker never words anything: a snapshot's ``message`` is a Message (or
the text a job sent as it is), and the page says it in the reader's language
with :func:`explorer.ui.messages.say` (locale keys ``core.jobs.*``).

One job runs at a time per server (a classroom shares one machine); later
submissions wait in a visible FIFO queue. This module never imports
streamlit, so it is tested like any other code.

Jobs belong to their owner (a browser's token, see :mod:`explorer.ui.identity`):
:meth:`JobManager.cancel` refuses another owner's job unless called as the
teacher (``owner=None``). Pages call :meth:`JobManager.seen` on each run; a
job whose owner has not been seen for ``orphan_after`` seconds (a closed
laptop, a lost tab) is cancelled, queued or running, so nobody's work waits
behind it.

    manager = get_manager()
    job_id = manager.submit("pretrain", lambda cancel: train(..., cancel=cancel),
                            {"steps": 200}, owner="session-abc")
    manager.snapshot(job_id).progress
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
import uuid
from collections import deque
from typing import Callable, Iterator

from gpt_core.errors import Message, note

from explorer.job_snapshot import (  # noqa: F401  (re-exported: pages and tests read them from here)
    CANCEL_REQUESTED, FINISHED, STATUSES, JobSnapshot, cancelled_at, failure,
)

__all__ = ["JobSnapshot", "JobManager", "get_manager", "STATUSES", "FINISHED"]

MAX_FINISHED = 50  # finished jobs remembered per manager
CANCEL_GRACE_S = 0.5  # after a cancel, events a job may still send before it is closed

JobFn = Callable[[threading.Event], Iterator[dict]]


class _Job:
    def __init__(self, snapshot: JobSnapshot, fn: JobFn):
        self.snap = snapshot
        self.fn = fn
        self.cancel = threading.Event()


class JobManager:
    """Thread-safe registry and FIFO runner of jobs: one job runs at a time."""

    def __init__(self, max_finished: int = MAX_FINISHED, orphan_after: float | Callable[[], float] | None = None):
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # owner -> time.monotonic() of its latest page run
        self._orphan_after = orphan_after
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, _Job] = {}
        self._order: list[str] = []  # submission order
        self._queue: deque[str] = deque()
        self._running: str | None = None
        self._worker: threading.Thread | None = None
        self._max_finished = max_finished

    # --------------------------------------------------------------- submit
    def submit(self, kind: str, fn: JobFn, params: dict | None = None, owner: str | None = None) -> str:
        """Queue ``fn(cancel_event)`` (a generator of event dicts) and return the job id."""
        if not callable(fn):
            raise TypeError("fn must be callable: fn(cancel_event) -> iterator of event dicts")
        params = dict(params or {})
        total = params.get("steps", params.get("total_steps"))
        snap = JobSnapshot(job_id=uuid.uuid4().hex[:12], kind=str(kind), owner=owner, params=params,
                           total_steps=total if isinstance(total, int) and total > 0 else None,
                           submitted_at=time.time())
        job = _Job(snap, fn)
        with self._lock:
            if owner is not None:
                self._seen[owner] = time.monotonic()
            self._jobs[snap.job_id] = job
            self._order.append(snap.job_id)
            self._queue.append(snap.job_id)
            self._renumber()
            self._forget_old()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="llm-explorer-jobs", daemon=True)
                self._worker.start()
            self._changed.notify_all()
        return snap.job_id

    # ----------------------------------------------------------------- read
    def snapshot(self, job_id: str) -> JobSnapshot | None:
        """A deep copy of the job's state (None for an unknown id)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return copy.deepcopy(job.snap) if job is not None else None

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run, 2 after it, ...; None when the job is not waiting."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.snap.queue_position if job is not None else None

    def jobs(self, kind: str | None = None, owner: str | None = None) -> list[JobSnapshot]:
        """Copies of the known jobs, newest first, optionally filtered."""
        with self._lock:
            found = [self._jobs[j].snap for j in reversed(self._order)
                     if (kind is None or self._jobs[j].snap.kind == kind)
                     and (owner is None or self._jobs[j].snap.owner == owner)]
            return copy.deepcopy(found)

    def latest_job(self, owner: str | None = None, kind: str | None = None,
                   active_only: bool = False) -> JobSnapshot | None:
        """The most recent job of this owner and/or kind (to re-attach after a reload)."""
        with self._lock:
            for job_id in reversed(self._order):
                snap = self._jobs[job_id].snap
                if kind is not None and snap.kind != kind:
                    continue
                if owner is not None and snap.owner != owner:
                    continue
                if active_only and not snap.active:
                    continue
                return copy.deepcopy(snap)
        return None

    def running_job(self) -> JobSnapshot | None:
        with self._lock:
            return copy.deepcopy(self._jobs[self._running].snap) if self._running else None

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot | None:
        """Block until the job has finished (or ``timeout`` s passed); returns its snapshot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                job = self._jobs.get(job_id)
                if job is None or job.snap.finished:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
            return copy.deepcopy(job.snap) if job is not None else None

    # ------------------------------------------------------------- owners
    def seen(self, owner: str | None) -> None:
        """The owner is still there (a page of theirs ran); their jobs are not orphans."""
        if owner:
            with self._lock:
                self._seen[owner] = time.monotonic()
            self.cancel_orphans()

    def adopt(self, old: str, new: str) -> int:
        """Jobs of owner ``old`` become ``new``'s (a browser's kept identity, found late); returns how many."""
        if not old or not new or old == new:
            return 0
        with self._lock:
            moved = [job for job in self._jobs.values() if job.snap.owner == old]
            for job in moved:
                job.snap.owner = new
            self._seen[new] = max(self._seen.pop(old, 0.0), self._seen.get(new, 0.0))
            return len(moved)

    def _orphan_limit(self) -> float | None:
        limit = self._orphan_after() if callable(self._orphan_after) else self._orphan_after
        return float(limit) if limit else None

    def orphans(self) -> list[str]:
        """Ids of the active jobs whose owner has not been seen for longer than the orphan limit."""
        limit = self._orphan_limit()
        if limit is None:
            return []
        now = time.monotonic()
        with self._lock:
            return [j for j in self._order if self._jobs[j].snap.active and self._jobs[j].snap.owner
                    and now - self._seen.get(self._jobs[j].snap.owner, now) > limit]

    def cancel_orphans(self) -> list[str]:
        """Cancel every orphaned job (said in its message); returns their ids."""
        found = self.orphans()
        for job_id in found:
            self.cancel(job_id, reason=note("jobs.orphaned", "Cancelled: its owner left the app for more than "
                                            "{minutes} minutes.", minutes=round(self._orphan_limit() / 60)))
        return found

    # --------------------------------------------------------------- cancel
    def cancel(self, job_id: str, owner: str | None = None, reason: Message | None = None) -> bool:
        """Cancel a queued job at once, or ask a running one to stop; False if already finished, unknown, or
        not ``owner``'s (``owner=None``: the teacher, or the server itself, may cancel any job)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.snap.finished or (owner is not None and job.snap.owner != owner):
                return False
            job.cancel.set()
            if job.snap.status == "queued":
                try:
                    self._queue.remove(job_id)
                except ValueError:
                    pass
                self._finish(job, "cancelled", reason or note("jobs.cancelled_before_start",
                                                              "Job cancelled before it started."))
                self._renumber()
            else:
                job.snap.message = reason or CANCEL_REQUESTED
                if reason is not None:  # said when the job ends, whatever its own last words
                    job.snap.result["cancel_reason"] = reason
            self._changed.notify_all()
            return True

    # ------------------------------------------------------------- internals
    def _renumber(self) -> None:
        for position, job_id in enumerate(self._queue, start=1):
            self._jobs[job_id].snap.queue_position = position

    def _forget_old(self) -> None:
        finished = [j for j in self._order if self._jobs[j].snap.finished]
        for job_id in finished[: max(len(finished) - self._max_finished, 0)]:
            self._order.remove(job_id)
            del self._jobs[job_id]

    def _finish(self, job: _Job, status: str, message: Message | str | None = None) -> None:
        snap = job.snap
        snap.status = status
        if message is not None:
            snap.message = message
        snap.finished_at = time.time()
        snap.queue_position = None
        if status == "done":
            snap.progress = 1.0

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._worker = None
                    self._running = None
                    self._changed.notify_all()
                    return
                job_id = self._queue.popleft()
                job = self._jobs[job_id]
                self._running = job_id
                job.snap.status = "running"
                job.snap.started_at = time.time()
                job.snap.queue_position = None
                self._renumber()
                self._changed.notify_all()
            self.cancel_orphans()  # an owner gone while their job waited: it ends before it starts
            self._run(job)
            with self._lock:
                self._running = None
                self._changed.notify_all()

    def _run(self, job: _Job) -> None:
        terminal = None
        iterator = None
        try:
            iterator = iter(job.fn(job.cancel))
            cancel_seen = None
            for event in iterator:
                terminal = self._record(job, event) or terminal
                if terminal:
                    break
                if job.cancel.is_set():
                    # let the job end itself (with its history) but never for long
                    cancel_seen = cancel_seen or time.monotonic()
                    if time.monotonic() - cancel_seen > CANCEL_GRACE_S:
                        break
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the UI
            with self._lock:
                job.snap.error_detail = traceback.format_exc()
                self._finish(job, "failed", failure(exc))
                self._changed.notify_all()
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
        with self._lock:
            if terminal is not None:
                status = terminal
            elif job.cancel.is_set():
                status = "cancelled"
            else:
                status = "done"
            message = job.snap.message
            if status == "cancelled" and job.snap.result.get("cancel_reason") is not None:
                message = job.snap.result.pop("cancel_reason")
            elif status == "cancelled" and (not message or message == CANCEL_REQUESTED):
                message = cancelled_at(job.snap.step)
            elif status == "done" and not message:
                message = note("jobs.done", "Job finished.")
            self._finish(job, status, message)
            self._changed.notify_all()

    def _record(self, job: _Job, event: dict) -> str | None:
        """Fold one event into the job's snapshot; returns the terminal status it carries, if any."""
        with self._lock:
            terminal = job.snap.fold(event)
            self._changed.notify_all()
        return terminal


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> JobManager:
    """The process-wide manager (shared by every browser session of the server)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            from explorer import settings

            _manager = JobManager(orphan_after=settings.orphan_seconds)
        return _manager
