"""Small helpers around the Hugging Face hub and our own cache directory.

* :func:`hub_reachable` answers "can we download from the hub right now?" in
  at most ``timeout`` seconds, so the app never hangs on a dead network.
* :func:`cache_dir` is where converted models (and other derived files) live.
* :func:`atomic_dir` writes a directory so that readers see either the old
  complete version or the new complete version, never a half-written one.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place on success.

    ``with atomic_dir(target) as tmp: write files into tmp``. If the block
    raises, the temporary directory is removed and ``target`` is untouched. If
    ``target`` already exists it is moved aside first and deleted only once the
    new directory is in place (it is restored if the final rename fails).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = final.parent / f".{final.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        try:
            os.replace(tmp, final)  # works when final is absent (or an empty dir on POSIX)
        except OSError:
            if not final.exists():
                raise
            old = final.parent / f".{final.name}.old-{tag}"
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except OSError:
                if not final.exists():
                    os.replace(old, final)  # put the previous version back
                    old = None
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
