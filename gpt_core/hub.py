"""Small helpers around the Hugging Face hub and our own cache directory.

* :func:`hub_reachable` answers "can we download from the hub right now?" in
  at most ``timeout`` seconds, so the app never hangs on a dead network.
* :func:`cache_dir` is where converted models (and other derived files) live.
* :func:`atomic_dir` (a whole folder) and :func:`atomic_files` (several files
  of one folder) replace saved data so that a kill at any instant leaves the
  old complete version or the new complete version, never a mix or nothing;
  :func:`settle` is what readers call first to finish or undo a killed save.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TTL_S = 60.0  # how long a probe result is trusted

_TRUE = {"1", "true", "yes", "on"}
_probe_lock = threading.Lock()
_probe: dict[str, tuple[float, bool]] = {}  # endpoint -> (monotonic time, reachable)


def offline_by_env() -> str | None:
    """Name of the environment variable that forces offline mode, if one is set."""
    for name in ("LLM_EXPLORER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def hub_endpoint() -> str:
    """The hub address; ``HF_ENDPOINT`` lets users point at a mirror."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _probe_once(url: str, timeout: float) -> bool:
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "llm-explorer"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as err:  # the server answered: the network works
        return err.code < 500
    except Exception:  # DNS failure, refused connection, timeout, TLS error, ...
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers a HEAD request within ``timeout`` s.

    Returns False at once when ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` or
    ``LLM_EXPLORER_OFFLINE`` is set. The answer is cached for a minute and the
    function is safe to call from several threads. The probe runs in a daemon
    thread, so even a DNS lookup that ignores socket timeouts cannot make the
    caller wait longer than ``timeout``.
    """
    if offline_by_env():
        return False
    url = hub_endpoint()
    deadline = time.monotonic() + timeout
    # One probe at a time; the others wait for its answer, but never past their own timeout.
    if not _probe_lock.acquire(timeout=max(timeout, 0.0)):
        cached = _probe.get(url)
        return bool(cached and cached[1])
    try:
        cached = _probe.get(url)
        if cached is not None and time.monotonic() - cached[0] < PROBE_TTL_S:
            return cached[1]
        result: list[bool] = []
        worker = threading.Thread(
            target=lambda: result.append(_probe_once(url, timeout)), name="hub-probe", daemon=True
        )
        worker.start()
        worker.join(max(deadline - time.monotonic(), 0.0))
        reachable = bool(result and result[0])
        _probe[url] = (time.monotonic(), reachable)
        return reachable
    finally:
        _probe_lock.release()


def forget_hub_probe() -> None:
    """Drop the cached probe result (for tests, or a "retry" button)."""
    with _probe_lock:
        _probe.clear()


def cache_dir() -> Path:
    """Our cache directory: ``$LLM_EXPLORER_CACHE`` or ``~/.cache/llm_explorer``."""
    root = os.environ.get("LLM_EXPLORER_CACHE")
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        path = Path(base).expanduser() / "llm_explorer"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ atomic replacement
# How a save replaces what is on disk, so that a process killed at any instant leaves a usable version:
#
# * atomic_dir(final): the new folder is built beside it, in ``.<name>.tmp-<tag>``. If ``final`` does not
#   exist, one rename puts it in place. Otherwise a journal ``.<name>.commit`` holding ``<tag>`` is created
#   first: that is the commit point. Then ``final`` -> ``.<name>.old-<tag>``, the new folder -> ``final``,
#   the journal is removed and the old folder deleted.
# * atomic_files(folder, names): each file is written as ``.<name>.new`` in the folder, then the journal
#   ``<folder>/.commit`` (the JSON list of names) is created, then every file is renamed over its old
#   version and the journal removed. The other files of the folder are left alone.
#
# A journal is written to ``<journal>.part``, fsynced, and renamed: it is either absent or whole. settle()
# makes a path consistent: with a journal, it rolls the committed version forward (or, when the new folder
# has vanished, puts the old one back); without one, new files are not committed and are ignored. Loaders
# call it before reading; the run history calls it at start-up before deleting leftovers.
# The commit steps and settle's repairs run under an flock on the folder whose entries change. The kernel
# drops it when its process dies, so a reader never rolls forward a commit that a live writer is still making.
# Writers of one target are assumed to take turns (each run writes its own folder). On Windows there is no
# lock and no directory fsync: the journals still let a later settle() repair a killed save.
_log = logging.getLogger(__name__)
_TAG = re.compile(r"^\d+-[0-9a-f]{8}$")   # <pid>-<8 hex>: names one save's temporary folders
FILES_JOURNAL = ".commit"                 # atomic_files' journal, inside the folder


def _sibling(final: Path, kind: str, tag: str = "") -> Path:
    """``.<name>.tmp-<tag>`` / ``.<name>.old-<tag>`` / ``.<name>.commit`` beside ``final``."""
    return final.parent / (f".{final.name}.{kind}" + (f"-{tag}" if tag else ""))


def _new_file(folder: Path, name: str) -> Path:
    return folder / f".{name}.new"


def _fsync_path(path: Path) -> None:
    """Flush a file or a folder's entries to the disk (best effort: Windows cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDWR)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on a folder (flock on its descriptor); a no-op where there is none."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without locks: carry on, as on Windows
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the lock


def _write_journal(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` in one rename: afterwards it exists whole, before it does not exist."""
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)  # the commit point
    _fsync_path(path.parent)


def _read_journal(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _settle_dir(final: Path) -> None:
    """Finish or undo a killed :func:`atomic_dir` commit of ``final`` (the caller holds the parent's lock)."""
    journal = _sibling(final, "commit")
    tag = (_read_journal(journal) or "").strip()
    if journal.exists():
        tmp, old = _sibling(final, "tmp", tag), _sibling(final, "old", tag)
        if _TAG.match(tag) and tmp.is_dir():       # committed: roll forward
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
        elif _TAG.match(tag) and old.is_dir() and not final.exists():
            os.replace(old, final)                 # the new folder is gone: the old one comes back
        _fsync_path(final.parent)
        os.unlink(journal)
        _fsync_path(final.parent)
        if _TAG.match(tag):
            shutil.rmtree(old, ignore_errors=True)
    elif not final.exists():
        # the atomic_dir of earlier versions could be killed with only .<name>.old-<tag> on disk
        olds = [e for e in os.scandir(final.parent) if e.name.startswith(f".{final.name}.old-")
                and _TAG.match(e.name[len(final.name) + 6:]) and e.is_dir(follow_symlinks=False)]
        if olds:
            os.replace(max(olds, key=lambda e: e.stat().st_mtime).path, final)
            _fsync_path(final.parent)


def _settle_files(folder: Path, tidy: bool) -> None:
    """Finish a killed :func:`atomic_files` commit in ``folder`` (the caller holds the folder's lock)."""
    journal = folder / FILES_JOURNAL
    try:
        names = json.loads(_read_journal(journal) or "null")
    except ValueError:
        names = None
    if isinstance(names, list):
        for name in names:
            if isinstance(name, str) and name == Path(name).name and name not in ("", ".", ".."):
                if _new_file(folder, name).is_file():
                    os.replace(_new_file(folder, name), folder / name)
        _fsync_path(folder)
    if journal.exists():
        os.unlink(journal)
        _fsync_path(folder)
    if tidy:  # no writer is at work here: what was written but not committed goes
        for leftover in [*folder.glob(".*.new"), folder / (FILES_JOURNAL + ".part")]:
            if leftover.is_file():
                leftover.unlink()


def settle(path: str | os.PathLike, tidy: bool = False) -> None:
    """Leave ``path`` (a folder saved by :func:`atomic_dir` and/or :func:`atomic_files`) in a usable state.

    A save killed after its commit point is finished; one killed before it leaves the old version, and its
    new files are ignored. Costs two ``stat`` calls when there is nothing to repair, so every loader calls it
    first. ``tidy=True`` (for a start-up cleanup, when nothing writes ``path``) also deletes the new files
    and journal parts that a killed save left inside ``path`` or beside it; the ``.tmp-``/``.old-`` sibling
    folders are left to the caller. Never raises OSError (a read-only folder, say): it logs it, and the
    loader then reads what is there.
    """
    path = Path(path)
    try:
        if not path.parent.is_dir():
            return
        journal = _sibling(path, "commit")
        if tidy or journal.exists() or not path.exists():
            with _lock(path.parent):
                _settle_dir(path)
                if tidy and Path(f"{journal}.part").is_file():
                    Path(f"{journal}.part").unlink()
        if path.is_dir() and (tidy or (path / FILES_JOURNAL).exists()):
            with _lock(path):
                _settle_files(path, tidy)
    except OSError as exc:
        _log.warning("could not repair %s after an interrupted save: %s", path, exc)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and put it in place of ``final`` on success.

    ``with atomic_dir(target) as tmp: write files into tmp``. If the block raises, the temporary
    directory is removed and ``target`` is untouched. Otherwise the files are flushed to disk and
    swapped in as the notes above say: a process killed at any point leaves, after :func:`settle`,
    either the previous ``target`` or the new one, whole.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = _sibling(final, "tmp", tag)
    tmp.mkdir()
    old = None
    try:
        yield tmp
        for sub in [*tmp.rglob("*"), tmp]:
            if not sub.is_symlink():
                _fsync_path(sub)
        with _lock(final.parent):
            _settle_dir(final)  # a swap killed earlier is finished before this one starts
            old = _swap_in(tmp, final, tag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _swap_in(tmp: Path, final: Path, tag: str) -> Path | None:
    """Put ``tmp`` in place of ``final``; returns the old folder to delete (the caller holds the lock)."""
    if not final.exists():
        os.replace(tmp, final)
        _fsync_path(final.parent)
        return None
    journal, old = _sibling(final, "commit"), _sibling(final, "old", tag)
    _write_journal(journal, tag)
    try:
        os.replace(final, old)
        os.replace(tmp, final)
    except OSError:  # a rename refused (Windows, a file in use): keep the previous version
        if old.is_dir() and not final.exists():
            os.replace(old, final)
        os.unlink(journal)
        raise
    _fsync_path(final.parent)
    os.unlink(journal)
    _fsync_path(final.parent)
    return old


@contextmanager
def atomic_files(folder: str | os.PathLike, names: Iterable[str]) -> Iterator[dict[str, Path]]:
    """Replace several files of ``folder`` together: ``with atomic_files(f, ["a", "b"]) as new:`` write
    ``new["a"]`` and ``new["b"]``; on success both replace ``f/a`` and ``f/b`` as one step (see the notes
    above); if the block raises, the old files stay and the new ones are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(names)
    settle(folder)  # a commit killed earlier is finished before its new files are overwritten
    new = {name: _new_file(folder, name) for name in names}
    journal = folder / FILES_JOURNAL
    try:
        yield new
        for path in new.values():
            _fsync_path(path)
        with _lock(folder):
            _write_journal(journal, json.dumps(names))
            for name, path in new.items():
                os.replace(path, folder / name)
            _fsync_path(folder)
            os.unlink(journal)
            _fsync_path(folder)
    except BaseException:
        if not journal.exists():  # not committed: the new files go (a committed save is finished by settle)
            for path in [*new.values(), journal.with_name(journal.name + ".part")]:
                path.unlink(missing_ok=True)
        raise
