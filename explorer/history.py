"""The app's side of the run history: start-up cleaning, the size cap, and the jobs' recorder.

The records themselves (``history.sqlite`` and ``checkpoints/<run_id>/`` in :func:`explorer.settings.runs_dir`)
are :mod:`gpt_core.runlog`'s, shared with the command line (``python -m gpt_core.train``); its names are
re-exported here. At start-up :func:`startup` removes half-written checkpoint folders and applies the size
cap (:func:`explorer.settings.runs_max_bytes`), oldest checkpoints first; the :class:`Recorder` of a job
applies it after each record. :mod:`explorer.history_models` loads checkpoints back. Nothing is worded
here: refusals are Message codes ``history.*`` (locale keys ``core.history.*``).
"""
from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from gpt_core import runlog
from gpt_core.errors import GPTCoreError
from gpt_core.runlog import (  # noqa: F401  (re-exported: the app's modules and tests read them from here)
    CHECKPOINTS, DB_NAME, HISTORY_KEYS, KINDS, LANGUAGE_TASKS, MARKER_FILES, SCHEMA_VERSION, STATUSES, TASKS,
    WEIGHT_FILES, RunRecord, RunStore, checkpoint_dir, final_metrics, folder_bytes, history_of, is_complete,
    relative_checkpoint,
)
from gpt_core.runlog import _RUN_ID

from explorer import settings

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-\d+-[0-9a-f]{8}$")   # gpt_core.hub.atomic_dir's siblings


def cleanup_incomplete(runs_dir: str | Path | None = None, active_ids: Iterable[str] = (),
                       store: RunStore | None = None) -> list[str]:
    """Repair killed saves, then delete half-written folders under ``<runs_dir>/checkpoints``; returns the names
    removed. Each run folder not of ``active_ids`` first goes through :func:`gpt_core.hub.settle` (a committed save
    is finished, an uncommitted one leaves the previous checkpoint); then temporary siblings, folders no record
    points at and incomplete ones go. A record whose folder is gone is marked so. The database is never touched.
    """
    from gpt_core.hub import settle

    root = Path(runs_dir or settings.runs_dir())
    store = store or RunStore(root / DB_NAME)
    active = set(active_ids)
    known = {rec.checkpoint: rec for rec in store.list(limit=1_000_000) if rec.checkpoint}
    removed = []
    base = root / CHECKPOINTS
    journal = re.compile(r"^\.(?P<name>.+)\.commit(?:\.part)?$")   # atomic_dir's journal beside a folder
    found = [_TEMP.match(e.name) or journal.match(e.name) or e.name for e in (base.iterdir() if base.is_dir() else [])]
    for name in sorted({f if isinstance(f, str) else f["name"] for f in found}):
        if name not in active and _RUN_ID.match(name):
            settle(base / name, tidy=True)   # recover first, so that nothing committed is deleted below
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if not entry.is_dir() or entry.is_symlink():
            continue
        temp = _TEMP.match(entry.name)
        if temp is not None:
            doomed = temp["name"] not in active
        else:
            rec = known.get(f"{CHECKPOINTS}/{entry.name}")
            doomed = entry.name not in active and not entry.name.startswith(".") and (
                rec is None or not is_complete(entry))
        if doomed:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    for rec in known.values():
        if rec.run_id not in active and store.checkpoint_path(rec) is None:
            store.mark_checkpoint_gone(rec.run_id)
    return removed


def enforce_cap(store: RunStore, max_bytes: int | None = None, active_ids: Iterable[str] = ()) -> list[str]:
    """Delete the oldest runs' checkpoints until the runs folder holds at most ``max_bytes``.

    The records stay (marked without checkpoint); the newest run with a checkpoint and the runs of
    ``active_ids`` are never touched. Returns the run ids whose checkpoints were deleted, oldest first.
    """
    cap = settings.runs_max_bytes() if max_bytes is None else int(max_bytes)
    total = folder_bytes(store.root)
    if total <= cap:
        return []
    with_ckpt = [r for r in store.list(limit=1_000_000) if store.checkpoint_path(r) is not None]
    with_ckpt.sort(key=lambda r: (r.finished_at, r.created_at))
    active = set(active_ids)
    deleted = []
    for rec in with_ckpt[:-1]:  # never the newest
        if total <= cap:
            break
        if rec.run_id in active:
            continue
        folder = store.checkpoint_path(rec)
        size = folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        store.mark_checkpoint_gone(rec.run_id)
        total -= size
        deleted.append(rec.run_id)
    return deleted


_started: set[str] = set()
_started_lock = threading.Lock()


def active_run_ids() -> set[str]:
    """The run ids of the jobs queued or running in this server (their folders are being written)."""
    from explorer.jobs import get_manager

    return {str(s.params.get("run_id")) for s in get_manager().jobs() if s.active and s.params.get("run_id")}


def startup_quietly() -> None:
    """:func:`startup` for the entry point: an unwritable runs folder must not stop the pages."""
    try:
        startup()
    except (OSError, sqlite3.Error, GPTCoreError):
        logging.getLogger(__name__).exception("the runs folder could not be prepared")


def startup(store: RunStore | None = None, active_ids: Iterable[str] | None = None) -> dict | None:
    """Once per process and database: clean half-written folders, then apply the size cap (the names, then None)."""
    store = store or RunStore()
    key = str(store.path.resolve())
    with _started_lock:
        if key in _started:
            return None
        _started.add(key)
        active = set(active_run_ids() if active_ids is None else active_ids)
        removed = cleanup_incomplete(store.root, active, store)
        return {"removed": removed, "capped": enforce_cap(store, None, active)}


class Recorder(runlog.Recorder):
    """:class:`gpt_core.runlog.Recorder` that applies the runs folder's size cap after each record (the running
    jobs' folders spared)."""

    def __init__(self, plan: Any, store: RunStore | None = None):
        super().__init__(plan, store, lambda saved: enforce_cap(saved, None, active_run_ids()))
