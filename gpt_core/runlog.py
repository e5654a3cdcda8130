"""The run log: every training run's record, in SQLite, beside its checkpoint folder.

One file, ``history.sqlite``, in :func:`runs_dir` (``$LLM_EXPLORER_RUNS``, else ``<cache>/runs``), beside the
checkpoints (``checkpoints/<run_id>/``, see :func:`checkpoint_dir`). The app (its History page, its training
jobs) and the command line (``python -m gpt_core.train``) write the same records, so a run made either way
is listed and loaded by the other. Every call opens its own connection (WAL mode, a lock around writes):
safe for several threads and processes. Schema version: ``PRAGMA user_version``. A training job feeds a
:class:`Recorder`. Refusals are Message codes ``history.*``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import GPTCoreError, InvalidInput, Message, note
from .hub import cache_dir

DB_NAME = "history.sqlite"
CHECKPOINTS = "checkpoints"          # the folder of run checkpoints, inside runs_dir()
SCHEMA_VERSION = 1
KINDS = ("pretrain", "finetune")
TASKS = ("lm", "instruct", "classify")
STATUSES = ("done", "failed", "cancelled", "diverged")
LANGUAGE_TASKS = ("lm", "instruct")
HISTORY_KEYS = ("train_steps", "train_loss", "val_steps", "val_loss", "val_accuracy")
MARKER_FILES = ("config.json", "probe.json", "adapter_config.json")  # full saves, probes, LoRA adapters
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

_SCHEMA = """CREATE TABLE runs (run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, task TEXT NOT NULL, status TEXT NOT NULL,
    name TEXT NOT NULL, base_model TEXT NOT NULL, owner TEXT NOT NULL, created_at REAL NOT NULL,
    finished_at REAL NOT NULL, seconds REAL NOT NULL, config TEXT NOT NULL, history TEXT NOT NULL,
    metrics TEXT NOT NULL, checkpoint TEXT NOT NULL, checkpoint_bytes INTEGER NOT NULL, message TEXT NOT NULL);
CREATE INDEX runs_finished ON runs (finished_at);
CREATE INDEX runs_owner ON runs (owner);"""
_COLUMNS = ("run_id", "kind", "task", "status", "name", "base_model", "owner", "created_at", "finished_at",
            "seconds", "config", "history", "metrics", "checkpoint", "checkpoint_bytes", "message")
_JSON = ("config", "history", "metrics")


@dataclass
class RunRecord:
    """One finished run (done, failed, cancelled or diverged)."""

    run_id: str                 # letters, digits, '-' or '_' (it names the checkpoint folder)
    kind: str                   # "pretrain" | "finetune"
    task: str                   # "lm" | "instruct" | "classify"
    status: str                 # "done" | "failed" | "cancelled" | "diverged"
    name: str = ""              # the model's name in the sidebar
    base_model: str = ""        # the model key it was fine-tuned from ("" for pretraining)
    owner: str = ""             # the session that started it
    created_at: float = 0.0     # time.time() stamps; 0 means "now" when recorded
    finished_at: float = 0.0
    seconds: float = 0.0        # how long the run took
    config: dict = field(default_factory=dict)   # the run's params; "tokenizer" says how to rebuild it
    history: dict = field(default_factory=dict)  # HISTORY_KEYS -> lists (see history_of)
    metrics: dict = field(default_factory=dict)  # final numbers: accuracy, majority_baseline, val_loss, sample...
    checkpoint: str = ""        # folder relative to runs_dir ("" when none was written, or deleted since)
    checkpoint_bytes: int = 0
    message: Message | str = ""  # how the run ended

    @property
    def language_model(self) -> bool:
        return self.task in LANGUAGE_TASKS


def _check(rec: RunRecord) -> None:
    if not isinstance(rec.run_id, str) or not _RUN_ID.match(rec.run_id):
        raise InvalidInput("history.bad_run_id", "A run id is 1 to 64 letters, digits, '-' or '_' (got '{run_id}').",
                           run_id=str(rec.run_id)[:80])
    for name, allowed in (("kind", KINDS), ("task", TASKS), ("status", STATUSES)):
        if getattr(rec, name) not in allowed:
            raise InvalidInput("history.bad_value", "The run's {name} must be one of {allowed} (got '{value}').",
                               name=name, allowed=", ".join(allowed), value=str(getattr(rec, name))[:80])


def jsonable(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become None, tuples lists, unknown objects their text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):  # a numpy or torch scalar
        return jsonable(value.item())
    return str(value)


def _message_json(message: Message | str) -> str:
    if isinstance(message, Message):
        return json.dumps({"code": message.code, "text": message.text, "params": jsonable(message.params)})
    return json.dumps({"text": str(message or "")})


def _message_from(raw: str) -> Message | str:
    data = json.loads(raw or "{}")
    return Message(data["code"], data.get("text", ""), data.get("params") or {}) if data.get("code") \
        else data.get("text", "")


def history_of(source: Any) -> dict:
    """The loss curves of a job snapshot (or a dict with the same names) as JSON-ready lists."""
    get = source.get if isinstance(source, dict) else lambda k, d=None: getattr(source, k, d)
    return {key: jsonable(list(get(key, None) or [])) for key in HISTORY_KEYS}


class RunStore:
    """Finished runs in ``history.sqlite``: safe for several threads (a connection per call, WAL, a write lock)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else runs_dir() / DB_NAME
        self.root = self.path.parent
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._lock, self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise GPTCoreError("history.newer_schema", "The run history '{path}' was written by a newer version "
                                   "of the app (schema {found}, this one reads {known}).", path=self.path.name,
                                   found=version, known=SCHEMA_VERSION)
            if version == 0:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise
        finally:
            db.close()

    def record(self, rec: RunRecord) -> RunRecord:
        """Insert (or replace) a run; the checkpoint's size is measured when not given. Returns what was stored."""
        _check(rec)
        now = time.time()
        rec = replace(rec, created_at=rec.created_at or now, finished_at=rec.finished_at or now,
                      config=jsonable(rec.config), history=jsonable(rec.history), metrics=jsonable(rec.metrics))
        folder = self.checkpoint_path(rec)
        if folder is None:
            rec = replace(rec, checkpoint="", checkpoint_bytes=0)
        elif not rec.checkpoint_bytes:
            rec = replace(rec, checkpoint_bytes=folder_bytes(folder))
        row = {c: getattr(rec, c) for c in _COLUMNS}
        row.update({c: json.dumps(row[c], ensure_ascii=False) for c in _JSON})
        row["message"] = _message_json(rec.message)
        with self._lock, self._db() as db:
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES "
                       f"({', '.join(':' + c for c in _COLUMNS)})", row)
        return rec

    @staticmethod
    def _from_row(row: sqlite3.Row) -> RunRecord:
        values = {c: json.loads(row[c] or "{}") if c in _JSON else row[c] for c in _COLUMNS}
        return RunRecord(**{**values, "message": _message_from(values["message"])})

    def get(self, run_id: str) -> RunRecord | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return self._from_row(row) if row else None

    def list(self, owner: str | None = None, limit: int = 200, shared: bool = False) -> list[RunRecord]:
        """The runs, newest first (only ``owner``'s when given; with ``shared``, also the runs of no owner: those
        started from the command line)."""
        where, args = ("WHERE owner = ?" + (" OR owner = ''" if shared else ""), [owner]) if owner is not None \
            else ("", [])
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM runs {where} ORDER BY finished_at DESC, created_at DESC LIMIT ?",
                              [*args, int(limit)]).fetchall()
        return [self._from_row(r) for r in rows]

    def delete(self, run_id: str) -> bool:
        """Forget a run and delete its checkpoint folder; False when no such run."""
        rec = self.get(run_id)
        if rec is None:
            return False
        folder = self.checkpoint_path(rec)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        with self._lock, self._db() as db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return True

    def adopt(self, old: str, new: str) -> int:
        """The runs of owner ``old`` become ``new``'s (a browser's kept identity found late); returns how many."""
        if not old or not new or old == new:
            return 0
        with self._lock, self._db() as db:
            return db.execute("UPDATE runs SET owner = ? WHERE owner = ?", (new, old)).rowcount

    def mark_checkpoint_gone(self, run_id: str) -> None:
        """The run stays in the history, without its checkpoint."""
        with self._lock, self._db() as db:
            db.execute("UPDATE runs SET checkpoint = '', checkpoint_bytes = 0 WHERE run_id = ?", (run_id,))

    def checkpoint_path(self, rec: RunRecord) -> Path | None:
        """The run's checkpoint folder when it exists (and lies inside the runs folder), else None."""
        if not rec.checkpoint:
            return None
        root = self.root.resolve()
        folder = (root / rec.checkpoint).resolve()
        inside = folder != root and root in folder.parents
        return folder if inside and folder.is_dir() and folder.name != DB_NAME else None


# ================================================================== files
def checkpoint_dir(run_id: str, root: str | Path | None = None) -> Path:
    """Where a run's checkpoint is written: ``<runs_dir>/checkpoints/<run_id>`` (give it to save_trained)."""
    _check(RunRecord(run_id, KINDS[0], TASKS[0], STATUSES[0]))
    return Path(root or runs_dir()) / CHECKPOINTS / run_id


def relative_checkpoint(folder: str | Path, root: str | Path | None = None) -> str:
    """The checkpoint path a record holds: relative to the runs folder, with '/' separators."""
    return Path(folder).resolve().relative_to(Path(root or runs_dir()).resolve()).as_posix()


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (0 when it does not exist)."""
    path = Path(path)
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and not f.is_symlink()]
    return sum(f.stat().st_size for f in files if f.exists())


def is_complete(folder: str | Path) -> bool:
    """A finished save: config.json (or a probe's probe.json) and weights (safetensors, or a Hugging Face save)."""
    folder = Path(folder)
    return any((folder / name).is_file() for name in MARKER_FILES) and (
        any((folder / name).is_file() for name in WEIGHT_FILES) or any(folder.glob("*.safetensors")))


def runs_dir() -> Path:
    """Where trained checkpoints and ``history.sqlite`` live: ``$LLM_EXPLORER_RUNS``, else ``<cache>/runs``."""
    root = os.environ.get("LLM_EXPLORER_RUNS", "").strip()
    return Path(root).expanduser() if root else cache_dir() / "runs"


def failure(exc: BaseException) -> Message:
    """Why a job failed: a gpt_core error's own message, else out of memory, else the exception's kind."""
    own = getattr(exc, "message", None)  # a gpt_core error carries its code and parameters
    if isinstance(own, Message):
        return own
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return note("jobs.out_of_memory", "Not enough memory for this job: lower the batch size, the context "
                    "or the model.")
    return note("jobs.failed", "The job failed ({kind}: {detail}).", kind=type(exc).__name__,
                detail=str(exc)[:300] or "-")


def cancelled_at(step: int) -> Message:
    return note("jobs.cancelled", "Job cancelled at step {step}.", step=step)


# ================================================================ the job
def final_metrics(event: dict, result: dict | None = None, sample: str = "") -> dict:
    """The numbers a run ends with: last losses, test accuracy and majority baseline, an answer after training."""
    hist, report, rows = event.get("history") or {}, (result or {}).get("report") or {}, (result or {}).get("rows")
    out = {"steps": event.get("step"), "train_loss": _last(hist.get("train_loss")),
           "val_loss": _last(hist.get("val_loss"))}
    out.update({k: report[k] for k in ("accuracy", "majority_baseline", "majority_label") if k in report})
    if (result or {}).get("accuracy_before") is not None:
        out["accuracy_before"] = result["accuracy_before"]
    after = rows[0].get("after") if rows and isinstance(rows[0], dict) else None
    out["sample"] = after if isinstance(after, str) and "report" not in (result or {}) else sample
    return jsonable(out)


def _last(values) -> Any:
    return values[-1] if values else None


class Recorder:
    """What a training job tells the history: :meth:`see` each event, then :meth:`end` or :meth:`failed` (once).

    ``plan`` gives run_id, kind, task, names.name, base_key, owner, tokenizer_name, method and params.
    Recording never makes a job fail: a database error is logged and the run goes on. ``recorded(store)`` is
    called after each record (the app applies its size cap there)."""

    def __init__(self, plan: Any, store: RunStore | None = None, recorded: Callable[[RunStore], Any] | None = None):
        self.plan, self.store, self.started, self.recorded, self.sample = plan, store, time.time(), False, ""
        self.after = recorded
        self.curves: dict[str, list] = {key: [] for key in HISTORY_KEYS}

    def see(self, event: dict) -> None:
        kind, c = event.get("type"), self.curves
        if kind in ("step", "eval"):
            split = "train" if kind == "step" else "val"
            c[f"{split}_steps"].append(event.get("step"))
            c[f"{split}_loss"].append(event.get(f"{split}_loss"))
            if kind == "eval" and event.get("accuracy") is not None:
                c["val_accuracy"].append(event["accuracy"])
        elif kind == "sample":
            self.sample = str(event.get("text", ""))

    def end(self, event: dict, result: dict | None = None, path: str | Path | None = None,
            name: str | None = None) -> dict:
        """Record the run as its final event says (done / cancelled / diverged); returns the event unchanged.

        The final event's own history wins when it holds more steps than the events seen (a resumed run)."""
        hist = event.get("history") or {}
        if len(hist.get("step") or []) > len(self.curves["train_steps"]):
            self.curves = {"train_steps": list(hist["step"]), "train_loss": list(hist.get("train_loss") or []),
                           "val_steps": list(hist.get("eval_step") or []), "val_loss": list(hist.get("val_loss") or []),
                           "val_accuracy": list(hist.get("val_accuracy") or [])}
        self._record(event.get("type", "failed"), event.get("message", ""), final_metrics(event, result, self.sample),
                     path, name)
        return event

    def failed(self, exc: BaseException) -> None:
        steps = self.curves["train_steps"]
        if isinstance(exc, GeneratorExit):  # the manager closed a cancelled job
            return self._record("cancelled", cancelled_at(steps[-1] if steps else 0))
        self._record("failed", failure(exc))

    def _record(self, status: str, message: Message | str, metrics: dict | None = None,
                path: str | Path | None = None, name: str | None = None) -> None:
        if self.recorded:
            return
        self.recorded, p = True, self.plan
        try:
            store = self.store or RunStore()
            store.record(RunRecord(
                p.run_id, p.kind, p.task, status if status in STATUSES else "failed",
                name=name or getattr(p.names, "name", ""), base_model=p.base_key or "", owner=p.owner or "",
                created_at=self.started, seconds=time.time() - self.started, history=self.curves,
                config={**p.params, "tokenizer": p.tokenizer_name, "method": p.method}, metrics=metrics or {},
                checkpoint=relative_checkpoint(path, store.root) if path else "", message=message))
            if self.after is not None:
                self.after(store)
        except (sqlite3.Error, OSError, ValueError, GPTCoreError):
            logging.getLogger(__name__).exception("the run %s could not be recorded", p.run_id)
