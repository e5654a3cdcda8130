"""Deployment settings, read from environment variables at each call (so tests can change them).

=============================  ==========================================  =====================
variable                       meaning                                     default
=============================  ==========================================  =====================
``LLM_EXPLORER_RUNS``          folder of trained checkpoints and the       ``<cache>/runs``
                               run history database
``LLM_EXPLORER_RUNS_MAX_GB``   size cap of that folder; the oldest runs    ``5``
                               are deleted first
``LLM_EXPLORER_JOBS_EACH``     training jobs one session may have queued   ``1``
                               or running at once
``LLM_EXPLORER_JOBS_TOTAL``    training jobs queued or running on the      ``5``
                               server at once
``LLM_EXPLORER_JOB_MAX_MIN``   the longest estimated job accepted, in      ``30``
                               minutes
``LLM_EXPLORER_ORPHAN_MIN``    a job whose owner has shown no sign of      ``10``
                               life for this long is cancelled
``LLM_EXPLORER_TEACHER_PASSWORD``  the password of teacher mode (sees and   unset: no teacher mode
                               cancels every job); or the Streamlit
                               secret ``teacher_password``
``LLM_EXPLORER_MODELS``        class mode: the only model keys that may    unset: all
                               be loaded (comma-separated)
``LLM_EXPLORER_MODELS_MAX_GB`` memory budget of the loaded models; the    ``1.5``
                               least recently used are dropped first
``LLM_EXPLORER_PAGE_THREADS`` CPU threads of one page's script run      a quarter of the
                                                                          cores (at least 1)
``LLM_EXPLORER_OLLAMA_URL``    the Ollama server the answer judge calls    ``http://127.0.0.1:11434``
``LLM_EXPLORER_OLLAMA_MODEL``  the judge model served by Ollama            ``llama3``
=============================  ==========================================  =====================

The Ollama address is a deployment setting, never typed by a visitor: a public
server must not be made to call addresses of a visitor's choosing.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from gpt_core import runlog
from gpt_core.hub import cache_dir

DEFAULT_RUNS_MAX_GB = 5.0
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OLLAMA_MODEL = "llama3"


def runs_dir() -> Path:
    """Where trained checkpoints and ``history.sqlite`` live (survives server restarts): ``$LLM_EXPLORER_RUNS``,
    else ``<cache>/runs`` (:func:`gpt_core.runlog.runs_dir`, shared with the command line)."""
    return runlog.runs_dir()


def runs_max_bytes() -> int:
    """The size cap of :func:`runs_dir` in bytes (an unreadable or negative value gives the default)."""
    raw = os.environ.get("LLM_EXPLORER_RUNS_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_RUNS_MAX_GB
    except ValueError:
        gb = DEFAULT_RUNS_MAX_GB
    if not math.isfinite(gb) or gb <= 0:
        gb = DEFAULT_RUNS_MAX_GB
    return int(gb * 1e9)


def ollama_url() -> str:
    return (os.environ.get("LLM_EXPLORER_OLLAMA_URL", "").strip() or DEFAULT_OLLAMA_URL).rstrip("/")


def ollama_model() -> str:
    return os.environ.get("LLM_EXPLORER_OLLAMA_MODEL", "").strip() or DEFAULT_OLLAMA_MODEL


def _number(name: str, default: float) -> float:
    """A positive number from the environment (the default when unset, unreadable or not positive)."""
    try:
        value = float(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


def jobs_each() -> int:
    return int(_number("LLM_EXPLORER_JOBS_EACH", 1))


def jobs_total() -> int:
    return int(_number("LLM_EXPLORER_JOBS_TOTAL", 5))


def job_max_seconds() -> float:
    return 60 * _number("LLM_EXPLORER_JOB_MAX_MIN", 30)



def orphan_seconds() -> float:
    """How long a job may go without any sign of life from its owner before it is cancelled."""
    return 60 * _number("LLM_EXPLORER_ORPHAN_MIN", 10)


def teacher_password() -> str:
    """Teacher mode's password from the environment ("" when unset; the app also reads a Streamlit secret)."""
    return os.environ.get("LLM_EXPLORER_TEACHER_PASSWORD", "").strip()


def allowed_models() -> frozenset[str] | None:
    """Class mode: the model keys that may be loaded (None: every model)."""
    raw = os.environ.get("LLM_EXPLORER_MODELS", "").strip()
    keys = frozenset(k.strip() for k in raw.split(",") if k.strip())
    return keys or None


def models_max_bytes() -> int:
    """The memory budget of the loaded models, in bytes of weights."""
    return int(_number("LLM_EXPLORER_MODELS_MAX_GB", 1.5) * 1e9)


def page_threads() -> int:
    """Threads a page's script run computes on: few, so that many students' runs share the cores well."""
    return int(_number("LLM_EXPLORER_PAGE_THREADS", max(1, (os.cpu_count() or 2) // 4)))
