"""What a page sees of a training job: a :class:`JobSnapshot`, folded from the job's events.

:class:`explorer.jobs.JobManager` keeps one per job and hands out copies. Nothing is worded here:
messages are :class:`gpt_core.errors.Message` codes (locale keys ``core.jobs.*``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpt_core.errors import Message, note
from gpt_core.runlog import cancelled_at, failure  # noqa: F401  (re-exported through explorer.jobs)

STATUSES = ("queued", "running", "done", "cancelled", "failed", "diverged")
FINISHED = frozenset({"done", "cancelled", "failed", "diverged"})
TERMINAL_EVENTS = ("done", "cancelled", "diverged", "failed")
MAX_SAMPLES = 5  # latest generated samples kept per job


@dataclass
class JobSnapshot:
    """Everything a page needs to draw a job; :meth:`JobManager.snapshot` returns copies."""

    job_id: str
    kind: str
    owner: str | None = None
    params: dict = field(default_factory=dict)
    status: str = "queued"
    progress: float = 0.0                       # 0..1
    step: int = 0
    total_steps: int | None = None
    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    tokens_seen: int = 0
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)  # latest {"step", "text"}
    message: Message | str = ""                 # the latest status, or how the job ended
    result: dict = field(default_factory=dict)  # checkpoint path, final history, ...
    error_detail: str | None = None             # traceback of a failure (for developers)
    submitted_at: float = 0.0                   # time.time() stamps
    started_at: float | None = None
    finished_at: float | None = None
    elapsed: float = 0.0                        # seconds reported by the job
    queue_position: int | None = None           # 1 = next to run; None when not queued
    n_events: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def fold(self, event: dict) -> str | None:
        """Fold one event of the job into this snapshot; returns the terminal status it carries, if any."""
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        self.n_events += 1
        if isinstance(event.get("elapsed"), (int, float)):
            self.elapsed = float(event["elapsed"])
        if isinstance(event.get("step"), int):
            self.step = max(self.step, event["step"])
        if kind == "step":
            self.train_steps.append(event["step"])
            self.train_loss.append(float(event["train_loss"]))
            if "lr" in event:
                self.lr.append(float(event["lr"]))
            self.tokens_seen = int(event.get("tokens_seen", self.tokens_seen))
        elif kind == "eval":
            self.val_steps.append(event["step"])
            self.val_loss.append(float(event["val_loss"]))
            if event.get("accuracy") is not None:
                self.val_accuracy.append(float(event["accuracy"]))
        elif kind == "sample":
            self.samples.append({"step": event.get("step"), "text": event.get("text", "")})
            del self.samples[:-MAX_SAMPLES]
        elif kind == "checkpoint":
            self.result["checkpoint"] = event.get("path")
        elif kind == "status":
            self.message = _message(event.get("message"))
        elif kind == "result":
            self.result.update({k: v for k, v in event.items() if k != "type"})
        if "total_steps" in event and isinstance(event["total_steps"], int):
            self.total_steps = event["total_steps"]
        if isinstance(event.get("progress"), (int, float)):
            self.progress = min(max(float(event["progress"]), 0.0), 1.0)
        elif self.total_steps:
            self.progress = min(self.step / self.total_steps, 1.0)
        if kind in TERMINAL_EVENTS:
            self.message = _message(event.get("message", self.message))
            for key, value in event.items():
                if key not in ("type", "message", "step", "elapsed"):
                    self.result[key] = value
            return kind
        return None


CANCEL_REQUESTED = note("jobs.cancel_requested", "Cancelling…")


def _message(value) -> Message | str:
    """A job's message as it is (a Message, or text the job worded itself)."""
    return value if isinstance(value, Message) else str(value if value is not None else "")
