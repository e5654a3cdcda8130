"""Classroom load: N students on one ``streamlit run`` server, through Streamlit's own websocket protocol.

    python bench/load_classroom.py                      # N = 10 and 30
    python bench/load_classroom.py --n 30 --with-training
    python bench/load_classroom.py --quick              # 2 sessions, Home + Attention: a smoke run
    python bench/load_classroom.py --url http://127.0.0.1:8501 --pid 1234   # a server already running

Browsers spend their CPU on the students' machines, not on the server's, so
each student here is an asyncio websocket client that speaks the protocol a
browser speaks: it connects to ``/_stcore/stream``, sends a ``BackMsg`` with
``rerun_script`` (the page's script hash and a query string) and reads
``ForwardMsg`` until ``script_finished``, as the Streamlit frontend does. Like
the frontend, a session lists the large elements it still holds (from its last
2 runs) in ``cached_message_hashes``, so the server sends those as references.

Scenario ("the teacher says: now open X"): the script starts its own server
(``HF_HUB_OFFLINE=1``, a temporary ``LLM_EXPLORER_RUNS``), warms it up with one
session per page (model load, first-call costs; reported apart), then for each
N connects N sessions and, for each page of ``--pages`` in turn, makes all N
start that page at the same moment, each with its own text in the URL (the
pages read ``home.text``, ``attention.text``, ``next_token.prompt``,
``decoding.prompt`` from it). A text is checked to have reached the page's text
box (the ``text_area`` element's value): a page that silently fell back to its
default text would be served from cache and flatter the figures.

Latency = the ``rerun_script`` sent -> ``script_finished`` received. Errors:
an exception element, an ``st.error`` box, a compile error or a page not found,
a text that did not reach the page, a disconnect, a run longer than
``--timeout``. Percentiles are nearest-rank (p95 of 10 runs is the slowest).
Every figure comes with the 1-minute load average and ``other_cpu_s``: the CPU
seconds that processes other than this server and this client used during the
phase (the machine may be shared). ``server_cpu_s``/``cpu_per_run``: the
server process's own CPU time during the phase.

``--env KEY=VALUE`` and ``--opt KEY=VALUE`` start the server with more
environment or Streamlit options, to measure a change without editing the app
(``--env OMP_NUM_THREADS=1 --opt runner.postScriptGC=false``).

``--with-training`` adds a teacher session that opens Pretrain with a long run
(``pretrain.steps``), clicks "start" through the protocol, keeps its progress
fragment polling as a browser does (``auto_rerun``) and starts a new run when
one ends; the same scenario then runs during training, and the training steps
done per second before and during each phase are reported.

Memory: the server's RSS plus, for each child process (a training job runs in
a forkserver child), its PSS, so that pages a child shares with the forkserver
count once (``peak_mem_mb``, sampled every 0.2 s, children every 1 s); the plain
sum of RSS over the tree is reported too (``peak_rss_sum_mb``). CPU: the server
process (``server_cpu_s``, script runs) apart from its children
(``children_cpu_s``, training).

Output: one JSON line per (N, page[, training]), one ``summary`` line with the
peak memory and the targets of issue 12, then a table. Targets (2-core CPU,
default embedded model): 0 errors; p95 <= 3 s for Attention and Next token at
N = 30; peak memory <= 2.5 GB.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

ROOT = Path(__file__).resolve().parents[1]
# page -> (url path of its st.Page, the query parameter that carries its text)
PAGES = {"Home": ("", "home.text"), "Attention": ("Attention", "attention.text"),
         "Next_token": ("Next_token", "next_token.prompt"), "Decoding": ("Decoding", "decoding.prompt")}
PRETRAIN = "Pretrain"
TARGET_P95_S = {"Attention": 3.0, "Next_token": 3.0}   # at N = TARGET_N
TARGET_N = 30
TARGET_RSS_GB = 2.5
MAX_SESSIONS = 200
FINISHED = ForwardMsg.ScriptFinishedStatus
ERROR_ALERT = 1    # Alert.Format.ERROR

# ------------------------------------------------------------ texts
# Each student types a different, ordinary French sentence (no markup: the URL guard would drop it).
SUBJECTS = ("Le chat", "Ma voisine", "Le professeur", "Notre équipe", "Un petit robot", "La boulangère",
            "Mon grand frère", "Le capitaine")
VERBS = ("regarde", "prépare", "cherche", "répare", "dessine", "raconte", "transporte", "découvre")
OBJECTS = ("une vieille carte du monde", "le gâteau du dimanche", "un vélo rouge", "la lettre oubliée",
           "un bateau en papier", "la chanson du matin", "un trésor caché", "le jardin de l'école")
PLACES = ("près de la fenêtre", "dans la cuisine", "au bord du lac", "sous la pluie", "avant la nuit",
          "au fond de la classe", "derrière la gare", "pendant les vacances")


def student_text(page: str, i: int, round_no: int = 0) -> str:
    """The ``i``-th student's own text for ``page`` (distinct for i < 512 within a page and round)."""
    k = i + 97 * round_no
    s, v, o = SUBJECTS[k % 8], VERBS[(k // 8) % 8], OBJECTS[(k // 64) % 8]
    if page == "Attention":   # two sentences, as the page's default text
        return f"{s} {v} {o} {PLACES[(k + round_no) % 8]}. Il est content et il sourit."
    if page == "Decoding":
        return f"{s} {v} {o} parce que"
    return f"{s} {v} {o} et"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# ------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pairs(items: list[str], what: str) -> dict[str, str]:
    """``["A=1", "b.c=x"]`` -> ``{"A": "1", "b.c": "x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} wants KEY=VALUE, not {item!r}")
        out[key] = value
    return out


@contextlib.contextmanager
def started_server(env_extra: dict | None = None, options: dict | None = None, timeout: float = 90.0):
    """``streamlit run explorer/Home.py`` on a free local port -> (base URL, pid); stopped afterwards.

    ``env_extra``: more environment (``OMP_NUM_THREADS``...); ``options``: Streamlit options
    (``runner.postScriptGC`` -> ``--runner.postScriptGC false``), to measure a change without editing the app.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llm-explorer-load-") as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1", LLM_EXPLORER_RUNS=str(Path(tmp) / "runs"),
                   TOKENIZERS_PARALLELISM="false", **(env_extra or {}))
        flags = [part for key, value in (options or {}).items() for part in (f"--{key}", value)]
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "explorer/Home.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true", *flags],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, timeout, log_path)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.3)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{log_path.read_text()[-2000:]}")


class Sampler:
    """Samples the server's memory and CPU time in a thread: the process and its children (a training
    job may run in a forkserver child, whose pages are shared with the forkserver).

    ``peak``: the largest memory of the tree: the server's RSS plus each child's PSS (shared pages
    counted once); ``peak_rss``: the plain sum of RSS, which counts a child's shared pages again.
    """

    def __init__(self, pid: int | None, every: float = 0.2, children_every: float = 1.0):
        self.proc = psutil.Process(pid) if pid else None
        self.every, self.children_every = every, children_every
        self.peak = self.phase_peak = self.peak_rss = 0
        self._children = (0, 0, -math.inf)       # (PSS sum, RSS sum, when read): smaps is slow to read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def memory(self) -> tuple[int, int]:
        """(server RSS + children's PSS, server RSS + children's RSS), in bytes."""
        if self.proc is None:
            return 0, 0
        main = self.proc.memory_info().rss
        pss, rss, when = self._children
        if time.monotonic() - when >= self.children_every:
            pss = rss = 0
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    full = child.memory_full_info()
                    pss, rss = pss + full.pss, rss + full.rss
            self._children = (pss, rss, time.monotonic())
        return main + pss, main + rss

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of (the server process, its children alive or ended)."""
        if self.proc is None:
            return 0.0, 0.0
        c = self.proc.cpu_times()
        children = c.children_user + c.children_system
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cc = child.cpu_times()
                children += cc.user + cc.system
        return c.user + c.system, children

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(psutil.Error):
                mem, rss = self.memory()
                self.peak, self.phase_peak = max(self.peak, mem), max(self.phase_peak, mem)
                self.peak_rss = max(self.peak_rss, rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)


def busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all cores)."""
    c = psutil.cpu_times()
    return sum(c) - c.idle - getattr(c, "iowait", 0.0)


# ------------------------------------------------------------ one browser tab
@dataclass
class Run:
    """What one script run sent back."""

    latency: float = 0.0
    first_s: float | None = None             # the first element drawn
    n_msgs: int = 0
    n_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    texts: dict = field(default_factory=dict)      # text_area id -> value
    buttons: dict = field(default_factory=dict)    # button id -> disabled
    progress: list[tuple[int, str]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # st.info/warning/success texts (st.error is an error)
    auto_rerun: tuple[float, str] | None = None
    stop_auto_rerun: bool = False


class Session:
    """One browser tab: a websocket to ``/_stcore/stream`` and the session Streamlit keeps for it."""

    page_hashes: dict[str, str] = {}          # url path -> page script hash (shared: one app)
    CACHE_RUNS = 2                             # the frontend keeps a large element for 2 runs (maxCachedMessageAge)

    def __init__(self, base_url: str):
        self.ws_url = base_url.replace("http", "ws", 1) + "/_stcore/stream"
        self.ws = None
        self.page_hash = ""
        self.n_runs = 0
        self.cached: dict[str, int] = {}          # hash of a large element this tab holds -> the run it came in

    async def connect(self, timeout: float) -> None:
        # no client pings: a browser sends none, and a busy server answering late is not a disconnect
        self.ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"], max_size=None,
                                           ping_interval=None, open_timeout=timeout, close_timeout=2)
        self.cached.clear()                       # a new connection is a new session: it holds nothing

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.ws = None

    async def run(self, page: str, query: dict, timeout: float, widgets=(), fragment_id: str = "") -> Run:
        """Open ``page`` (its url path) with ``query``: the run's latency, elements and errors."""
        msg = BackMsg()
        rerun = msg.rerun_script
        rerun.query_string = urlencode(query)
        page_hash = self.page_hashes.get(page)
        if page_hash:
            rerun.page_script_hash = page_hash
        else:
            rerun.page_name = page
        rerun.widget_states.widgets.extend(widgets)
        # as a browser does: the large elements it already holds come back as references (ref_hash)
        self.n_runs += 1
        self.cached = {h: n for h, n in self.cached.items() if self.n_runs - n <= self.CACHE_RUNS}
        rerun.cached_message_hashes.extend(sorted(self.cached))
        if fragment_id:
            rerun.fragment_id, rerun.is_auto_rerun = fragment_id, True
        out = Run()
        start = time.perf_counter()
        try:
            await self.ws.send(msg.SerializeToString())
            await asyncio.wait_for(self._read(out, start), timeout)
        except asyncio.TimeoutError:
            out.errors.append("timeout")
            await self.close()
        except (websockets.ConnectionClosed, OSError) as exc:
            out.errors.append(f"disconnect: {type(exc).__name__}")
            await self.close()
        out.latency = time.perf_counter() - start
        return out

    async def _read(self, out: Run, start: float) -> None:
        while True:
            data = await self.ws.recv()
            out.n_msgs, out.n_bytes = out.n_msgs + 1, out.n_bytes + len(data)
            fm = ForwardMsg()
            fm.ParseFromString(data)
            kind = fm.WhichOneof("type")
            if fm.metadata.cacheable or kind == "ref_hash":
                self.cached[fm.hash or fm.ref_hash] = self.n_runs
            if kind == "delta":
                if out.first_s is None:
                    out.first_s = time.perf_counter() - start
                self._element(fm.delta, out)
            elif kind == "navigation":
                self.page_hashes.update({p.url_pathname: p.page_script_hash for p in fm.navigation.app_pages})
                self.page_hash = fm.navigation.page_script_hash
            elif kind == "auto_rerun":
                out.auto_rerun = (fm.auto_rerun.interval, fm.auto_rerun.fragment_id)
            elif kind == "stop_auto_rerun":
                out.stop_auto_rerun = True
            elif kind == "page_not_found":
                out.errors.append("page_not_found")
            elif kind == "session_event" and fm.session_event.WhichOneof("type") == "script_compilation_exception":
                out.errors.append("compile_error")
            elif kind == "script_finished" and fm.script_finished != FINISHED.FINISHED_EARLY_FOR_RERUN:
                if fm.script_finished == FINISHED.FINISHED_WITH_COMPILE_ERROR:
                    out.errors.append("compile_error")
                return

    @staticmethod
    def _element(delta, out: Run) -> None:
        if delta.WhichOneof("type") != "new_element":
            return
        el = delta.new_element
        kind = el.WhichOneof("type")
        if kind == "exception":
            out.errors.append(f"exception: {el.exception.type} {el.exception.message[:120]}")
        elif kind == "alert" and el.alert.format == ERROR_ALERT:
            out.errors.append(f"st.error: {el.alert.body[:120]}")
        elif kind == "alert":
            out.alerts.append(el.alert.body[:200])
        elif kind == "text_area":
            out.texts[el.text_area.id] = el.text_area.value
        elif kind == "button":
            out.buttons[el.button.id] = el.button.disabled
        elif kind == "progress":
            out.progress.append((el.progress.value, el.progress.text))


def text_errors(run: Run, param: str, text: str) -> list[str]:
    """The page must show the session's own text in its text box (else it silently used its default)."""
    shown = [v for k, v in run.texts.items() if k.endswith(f"_w.{param}") or f"_w.{param}." in k]
    if run.errors or text in shown:
        return []
    return ["text_not_applied"]


# ------------------------------------------------------------ a phase: everyone opens one page
async def phase(sessions: list[Session], page: str, texts: list[str] | None, timeout: float) -> list[Run]:
    """All ``sessions`` start ``page`` at the same moment; each its own text (``texts``) or the default."""
    path, param = PAGES[page]
    gate = asyncio.Event()

    async def one(i: int, s: Session) -> Run:
        await gate.wait()
        if s.ws is None:
            try:
                await s.connect(timeout)
            except Exception as exc:  # noqa: BLE001 - reported as an error of this run
                return Run(errors=[f"connect: {type(exc).__name__}"])
        query = {param: texts[i]} if texts else {}
        run = await s.run(path, query, timeout)
        if texts:
            run.errors += text_errors(run, param, texts[i])
        return run

    tasks = [asyncio.create_task(one(i, s)) for i, s in enumerate(sessions)]
    await asyncio.sleep(0)
    gate.set()
    return list(await asyncio.gather(*tasks))


def phase_record(page: str, n: int, runs: list[Run], meters: dict) -> dict:
    lat = [r.latency for r in runs]
    errors = [e for r in runs for e in r.errors]
    rec = {"bench": "load_classroom", "page": page, "n": n, "training": meters.get("training", False),
           "p50_s": round(percentile(lat, 50), 3), "p95_s": round(percentile(lat, 95), 3),
           "max_s": round(max(lat), 3), "first_p50_s": _p50([r.first_s for r in runs if r.first_s is not None]),
           "errors": len(errors), "error_kinds": sorted(set(e.split(":")[0] for e in errors)),
           "error_samples": errors[:3], "kb_per_run": round(sum(r.n_bytes for r in runs) / len(runs) / 1024, 1)}
    rec.update(meters.get("figures", {}))
    rec["cpu_per_run_s"] = round(rec.get("server_cpu_s", 0.0) / max(n, 1), 3)
    return rec


def _p50(values: list[float]) -> float | None:
    return round(percentile(values, 50), 3) if values else None


class Meter:
    """Wall time, server CPU, the rest of the machine's CPU, load and memory around a phase."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def __enter__(self):
        with contextlib.suppress(psutil.Error):
            self.sampler.phase_peak = self.sampler.memory()[0]
        self.t0, self.load0 = time.perf_counter(), os.getloadavg()[0]
        self.cpu0, self.busy0, self.own0 = self.sampler.cpu(), busy_cpu(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        (main, children), own = self.sampler.cpu(), time.process_time() - self.own0
        server, jobs = main - self.cpu0[0], children - self.cpu0[1]
        self.figures = {"wall_s": round(wall, 2), "server_cpu_s": round(server, 2), "children_cpu_s": round(jobs, 2),
                        "client_cpu_s": round(own, 2),
                        "other_cpu_s": round(max(0.0, busy_cpu() - self.busy0 - server - jobs - own), 2),
                        "load1_before": round(self.load0, 2), "load1_after": round(os.getloadavg()[0], 2),
                        "peak_mem_mb": round(self.sampler.phase_peak / 2**20)}


# ------------------------------------------------------------ the teacher's training job
class Teacher:
    """A Pretrain tab: starts a long run by clicking the button, polls its progress fragment like a browser,
    and starts another run when one ends, so that training runs through every phase."""

    def __init__(self, base_url: str, steps: int, timeout: float):
        self.session, self.steps, self.timeout = Session(base_url), steps, timeout
        self.query = {"pretrain.steps": str(steps)}
        self.steps_done, self.jobs, self.errors, self.latencies = 0, 0, [], []
        self._last_step, self._task, self._lock = 0, None, asyncio.Lock()

    async def start(self) -> None:
        await self.session.connect(self.timeout)
        await self._submit()
        self._task = asyncio.create_task(self._poll())

    async def _submit(self) -> Run:
        page = await self.session.run(PRETRAIN, self.query, self.timeout)
        button = next((b for b in page.buttons if b.endswith("pretrain.start")), None)
        if page.errors or button is None or page.buttons[button]:
            raise RuntimeError(f"the Pretrain page offers no start button: {page.errors or page.buttons}")
        run = await self.session.run(PRETRAIN, self.query, self.timeout,
                                     widgets=[WidgetState(id=button, trigger_value=True)])
        if run.errors or run.auto_rerun is None:   # running (a progress bar) or queued (a notice): polled
            raise RuntimeError(f"the training job did not start: {run.errors or run.alerts or 'no progress shown'}")
        self.jobs, self._last_step, self.fragment = self.jobs + 1, 0, run.auto_rerun
        return run

    async def _poll(self) -> None:
        while True:
            interval, fragment_id = self.fragment
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    await self._poll_once(fragment_id)
            except Exception as exc:  # noqa: BLE001 - counted, and the teacher carries on
                self.errors.append(f"teacher: {type(exc).__name__}: {str(exc)[:120]}")
                await self.session.close()
                await asyncio.sleep(1.0)

    async def _poll_once(self, fragment_id: str) -> None:
        if self.session.ws is None:
            await self.session.connect(self.timeout)
        run = await self.session.run(PRETRAIN, self.query, self.timeout, fragment_id=fragment_id)
        self.latencies.append(run.latency)
        self.errors += run.errors
        step = self._step_of(run)
        if step is not None:
            self.steps_done += max(0, step - self._last_step)
            self._last_step = step
        ended = run.stop_auto_rerun or (step or 0) >= self.steps or not (run.progress or run.alerts)
        if self.session.ws is None or ended:   # (a queued job shows a notice, not a progress bar)
            if self.session.ws is None:
                await self.session.connect(self.timeout)
            await self._submit()

    async def sample(self) -> tuple[float, int]:
        """(now, training steps done so far), read by a progress run made at once."""
        async with self._lock:
            with contextlib.suppress(Exception):    # a failure is counted by the next poll
                await self._poll_once(self.fragment[1])
            return time.perf_counter(), self.steps_done

    async def pace(self, since: tuple[float, int]) -> float:
        """Training steps per second from ``since`` (a :meth:`sample`) to now."""
        now, steps = await self.sample()
        return round((steps - since[1]) / max(now - since[0], 1e-9), 2)

    @staticmethod
    def _step_of(run: Run) -> int | None:
        for _, text in run.progress:
            if m := re.search(r"(\d[\d\s\u202f,.]*)\s*/\s*\d", text):
                return int(re.sub(r"\D", "", m.group(1)))
        return None

    async def stop(self) -> dict:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.session.close()
        lat = self.latencies or [0.0]
        return {"bench": "load_classroom", "page": "Pretrain(progress fragment)", "training": True,
                "jobs_started": self.jobs, "fragment_runs": len(self.latencies),
                "p50_s": round(percentile(lat, 50), 3), "max_s": round(max(lat), 3), "errors": len(self.errors),
                "error_samples": self.errors[:3]}


# ------------------------------------------------------------ the scenario
async def warm_up(url: str, pages: list[str], timeout: float, with_training: bool) -> list[dict]:
    """One session opens each page once with its default text: model load and first-call costs, apart."""
    session, out = Session(url), []
    await session.connect(timeout)
    for page in ["Home", *[p for p in pages if p != "Home"]] + ([PRETRAIN] if with_training else []):
        path = PAGES[page][0] if page in PAGES else PRETRAIN
        run = await session.run(path, {}, timeout)
        out.append({"bench": "load_classroom", "warm_up": page, "s": round(run.latency, 3),
                    "errors": len(run.errors), "error_samples": run.errors[:3]})
        if session.ws is None:
            await session.connect(timeout)
    await session.close()
    return out


async def scenario(url: str, args, sampler: Sampler, emit) -> None:
    deadline = time.monotonic() + args.budget
    for rec in await warm_up(url, args.pages, args.timeout, args.with_training):
        emit(rec)
    teacher = Teacher(url, args.train_steps, args.timeout) if args.with_training else None
    if teacher is not None:
        await teacher.start()
        since = await teacher.sample()
        with Meter(sampler) as m:   # the training's pace with no student, to compare
            await asyncio.sleep(args.train_alone_s)
        emit({"bench": "load_classroom", "page": "(training alone)", "n": 0, "training": True, **m.figures,
              "train_steps_per_s": await teacher.pace(since)})
    try:
        for round_no, n in enumerate(args.n):
            sessions = [Session(url) for _ in range(n)]
            for page in args.pages:
                if time.monotonic() > deadline:
                    emit({"bench": "load_classroom", "stopped": f"budget of {args.budget:.0f} s spent", "n": n,
                          "page": page})
                    return
                texts = None if args.same_text else [student_text(page, i, round_no) for i in range(n)]
                since = await teacher.sample() if teacher else None
                with Meter(sampler) as m:
                    runs = await phase(sessions, page, texts, args.timeout)
                rec = phase_record(page, n, runs, {"training": teacher is not None, "figures": m.figures})
                if teacher is not None:
                    rec["train_steps_per_s"] = await teacher.pace(since)
                emit(rec)
                await asyncio.sleep(args.pause)
            for s in sessions:
                await s.close()
    finally:
        if teacher is not None:
            emit(await teacher.stop())


def summary(records: list[dict], sampler: Sampler) -> dict:
    phases = [r for r in records if "p95_s" in r and "n" in r]
    at_target = [r for r in phases if r["n"] == TARGET_N and r["page"] in TARGET_P95_S]
    out = {"bench": "load_classroom", "summary": True, "peak_mem_mb": round(sampler.peak / 2**20),
           "peak_rss_sum_mb": round(sampler.peak_rss / 2**20),
           "errors": sum(r["errors"] for r in records if "errors" in r and "warm_up" not in r),
           "cpu_count": os.cpu_count(), "load1_end": round(os.getloadavg()[0], 2)}
    checks = {"errors == 0": out["errors"] == 0}
    if sampler.proc is not None:
        checks[f"peak memory <= {TARGET_RSS_GB} GB"] = sampler.peak <= TARGET_RSS_GB * 1e9
    for r in at_target:
        name = f"p95 {r['page']} N={TARGET_N}{' +training' if r['training'] else ''} <= {TARGET_P95_S[r['page']]} s"
        checks[name] = r["p95_s"] <= TARGET_P95_S[r["page"]]
    out["targets"] = {k: "pass" if v else "FAIL" for k, v in checks.items()}
    return out


def table(records: list[dict]) -> str:
    head = f"{'N':>3} {'train':>5} {'page':<11} {'p50 s':>6} {'p95 s':>6} {'max s':>6} {'err':>4} " \
           f"{'cpu/run':>7} {'mem MB':>6} {'other cpu':>9} {'load1':>5} {'steps/s':>7}"
    lines = [head, "-" * len(head)]
    for r in records:
        steps = f"{r['train_steps_per_s']:>7.1f}" if "train_steps_per_s" in r else f"{'':>7}"
        if "p95_s" in r and "n" in r:
            lines.append(f"{r['n']:>3} {'yes' if r['training'] else 'no':>5} {r['page']:<11} {r['p50_s']:>6.2f} "
                         f"{r['p95_s']:>6.2f} {r['max_s']:>6.2f} {r['errors']:>4} {r['cpu_per_run_s']:>7.2f} "
                         f"{r['peak_mem_mb']:>6} {r['other_cpu_s']:>9.1f} {r['load1_before']:>5.2f} {steps}")
        elif r.get("page") == "(training alone)":
            lines.append(f"{0:>3} {'yes':>5} {'(alone)':<11} {'':>6} {'':>6} {'':>6} {'':>4} {'':>7} "
                         f"{r['peak_mem_mb']:>6} {r['other_cpu_s']:>9.1f} {r['load1_before']:>5.2f} {steps}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 30], help="class sizes, in turn")
    ap.add_argument("--pages", nargs="+", default=list(PAGES), choices=list(PAGES))
    ap.add_argument("--quick", action="store_true", help="a smoke run: N = 2 on Home and Attention")
    ap.add_argument("--with-training", action="store_true", help="the same, while a Pretrain job runs")
    ap.add_argument("--same-text", action="store_true", help="every student keeps the page's default text")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one page run may take (an error beyond)")
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds the whole scenario may take")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between two phases")
    ap.add_argument("--train-steps", type=int, default=5000, help="steps of the teacher's Pretrain run")
    ap.add_argument("--train-alone-s", type=float, default=10.0, help="seconds the training is timed alone")
    ap.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more environment for the server, e.g. OMP_NUM_THREADS=1")
    ap.add_argument("--opt", nargs="*", default=[], metavar="KEY=VALUE",
                    help="Streamlit options for the server, e.g. runner.postScriptGC=false")
    ap.add_argument("--url", help="bench a server already running (then --pid for its RSS)")
    ap.add_argument("--pid", type=int, help="the pid of the --url server")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.pages = [2], ["Home", "Attention"]
    if not all(1 <= n <= MAX_SESSIONS for n in args.n):
        ap.error(f"--n must be between 1 and {MAX_SESSIONS}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    records: list[dict] = []

    def emit(rec: dict) -> None:
        records.append(rec)
        print(json.dumps(rec, ensure_ascii=False), flush=True)

    emit({"bench": "load_classroom", "start": True, "n": args.n, "pages": args.pages,
          "with_training": args.with_training, "same_text": args.same_text, "env": args.env, "opt": args.opt,
          "cpu_count": os.cpu_count(), "load1": round(os.getloadavg()[0], 2)})
    server = (contextlib.nullcontext((args.url, args.pid)) if args.url
              else started_server(pairs(args.env, "--env"), pairs(args.opt, "--opt")))
    with server as (url, pid), Sampler(pid) as sampler:
        asyncio.run(asyncio.wait_for(scenario(url, args, sampler, emit), args.budget + 300))
        records.append(summary(records, sampler))
    print(json.dumps(records[-1], ensure_ascii=False))
    print(table(records))
    return records


if __name__ == "__main__":
    main()
