"""How long a training job will take here: its work counted, priced with speeds measured now.

A job is more than its optimizer steps: the model is copied, measured before
training, evaluated, sampled, measured again and saved. :class:`Work` counts
each part; :func:`job_seconds` prices it with two speeds measured on the
job's own model and device, once per shape (a fraction of a second; cached):

* the time of one forward pass of a batch (no gradient), from which a training
  step is a fixed multiple (backward costs about twice the forward of the
  layers it goes through; LoRA skips the weight gradients); for a throwaway
  model of a planned shape (pretraining), a real step is timed instead;
* the time of one generated token (greedy decoding with the KV cache).

A job runs on half of the process's threads (:func:`use_job_threads`) and its
speeds are measured on as many, so the pages keep a core and the pace does not
collapse when something else wants the CPU. The multiples were calibrated on a
2-core CPU against whole jobs of the app's defaults (``bench/bench_lessons.py``
prints estimate and measure side by side).
"""
from __future__ import annotations

import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .backend import backend_of

__all__ = ["Work", "job_seconds", "forward_seconds", "token_seconds", "STEP_FACTOR", "use_job_threads",
           "job_threads", "job_thread_count", "use_page_threads"]

# a training step costs this many forward passes of the same batch
STEP_FACTOR = {"full": 3.2, "lora": 2.0, "none": 0.0}
PROBE_STEP_S = 0.004        # one step of a linear probe on cached features
COPY_BYTES_PER_S = 1.2e9    # deep copy of a model in memory (and its float32 conversion)
SAVE_BYTES_PER_S = 0.4e9    # safetensors write of a checkpoint
FIXED_S = 0.5               # data loaders, thread start, bookkeeping

_cache: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_measuring = threading.Lock()


# ------------------------------------------------------------------ threads
PROCESS_THREADS = torch.get_num_threads()  # the process's own count, before any thread changed its share


def job_thread_count() -> int:
    """Threads a training job uses: half of the process's, so the pages keep the other half.

    On a 2-core server that is one. Measured on such a server: a tiny GPT's step takes 45 ms on one
    thread and 21 ms on two when the machine is idle, but 339 ms on two (39 ms on one) when
    another process takes a core, as a browser or a second student does.
    """
    return max(1, PROCESS_THREADS // 2)


def use_job_threads(n: int | None = None) -> None:
    """Run this thread's tensor work on ``n`` threads (default :func:`job_thread_count`), without
    changing the number the threads started later get (the pages' script runs).

    ``torch.set_num_threads`` sets the calling thread's own count and the default of threads started
    afterwards; a short-lived helper thread puts that default back.
    """
    n = job_thread_count() if n is None else n
    previous = torch.get_num_threads()
    if n == previous:
        return
    torch.set_num_threads(n)
    helper = threading.Thread(target=torch.set_num_threads, args=(previous,), name="threads-default")
    helper.start()
    helper.join()


def use_page_threads(n: int) -> None:
    """Run this thread's tensor work (a page's script run) on ``n`` threads, the default of later threads kept.

    With thirty students on a 2-core server, a script run on two threads spins against the others: one
    next-token forward measured 0.76-1.25 s of CPU on two threads and 0.09 s on one."""
    use_job_threads(max(1, int(n)))


@contextmanager
def job_threads(n: int | None = None):
    """Measure as a job runs: :func:`use_job_threads` inside the block, this thread's count restored after."""
    previous = torch.get_num_threads()
    use_job_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@dataclass
class Work:
    """What a job will do, counted (every field defaults to nothing)."""
    train_steps: int = 0
    step_rows: int = 0          # rows per optimizer step (batch x accumulation)
    row_tokens: int = 0         # tokens per training row
    backward: str = "full"      # "full", "lora", "none" (probe on cached features), or "blocks:<k>/<n>"
    eval_rows: int = 0          # rows forwarded by all evaluations together (token models)
    eval_tokens: int = 0        # tokens per evaluation row
    generated: int = 0          # tokens generated (samples and before/after answers)
    feature_rows: int = 0       # texts read once by a probe
    feature_tokens: int = 0     # tokens per such text (padded length of a batch)
    copy_bytes: int = 0         # model copied before training
    save_bytes: int = 0         # checkpoint written


def _timed(fn, repeats: int = 5, budget_s: float = 1.0) -> float:
    """The best of a few timings of ``fn`` after a warm-up call (the first call of a process pays for
    lazily read weights and kernel set-up). Fast calls are repeated (``repeats`` at most, while under
    ``budget_s``) to smooth the noise; a slow one is timed once, so measuring a big model stays cheap."""
    fn()
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return best


def _measured(model: nn.Module, key: tuple, fn) -> float:
    with _lock:
        found = _cache.setdefault(model, {}).get(key)
    if found is None:
        with _measuring:  # one at a time: a visitor stepping through every value takes one thread, not the server
            with _lock:
                found = _cache.setdefault(model, {}).get(key)  # measured while this one waited
            if found is None:
                found = fn()
                with _lock:
                    _cache.setdefault(model, {})[key] = found
    return found


@torch.no_grad()
def forward_seconds(model: nn.Module, rows: int, tokens: int, head: bool = True) -> float:
    """Seconds of one no-gradient forward pass of ``rows`` x ``tokens`` token ids.

    Measured on at most 4 rows and scaled; ``head=False`` stops at the last hidden states
    (what a probe reads), skipping the vocabulary projection.
    """
    backend = backend_of(model)
    tokens = max(1, min(tokens, backend.context_length))
    probe_rows = max(1, min(rows, 4))
    ids = torch.randint(0, backend.vocab_size, (probe_rows, tokens),
                        generator=torch.Generator().manual_seed(0)).to(backend.device)
    run = backend.logits if head else backend.hidden
    was_training = model.training
    model.eval()
    try:
        seconds = _measured(model, ("fwd", head, probe_rows, tokens), lambda: _timed(lambda: run(ids)))
    finally:
        model.train(was_training)
    return seconds * rows / probe_rows


def step_seconds(model: nn.Module, rows: int, tokens: int) -> float:
    """Seconds of one real training step (forward, backward, clipping, AdamW) of ``rows`` x ``tokens``.

    It changes the model's weights: only for a throwaway model (a fresh one of a planned shape).
    """
    import torch.nn.functional as F

    backend = backend_of(model)
    tokens = max(1, min(tokens, backend.context_length))
    ids = torch.randint(0, backend.vocab_size, (rows, tokens + 1),
                        generator=torch.Generator().manual_seed(0)).to(backend.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        logits = backend.logits(ids[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    return _measured(model, ("step", rows, tokens), lambda: _timed(step))


def token_seconds(model: nn.Module, prompt_tokens: int = 16) -> float:
    """Seconds per generated token (greedy, KV cache) after a prompt of ``prompt_tokens`` tokens."""
    from .train import continuation_ids

    backend = backend_of(model)
    prompt = [int(i) % backend.vocab_size for i in range(1, max(2, prompt_tokens) + 1)]
    n = 8

    def run():
        continuation_ids(model, prompt, n)

    was_training = model.training
    model.eval()
    try:
        seconds = _measured(model, ("gen", len(prompt)), lambda: _timed(run, repeats=2))
    finally:
        model.train(was_training)
    return seconds / n


def _step_factor(backward: str) -> float:
    if backward.startswith("blocks:"):
        k, n = (int(x) for x in backward.split(":", 1)[1].split("/"))
        return 1.0 + (STEP_FACTOR["full"] - 1.0) * k / max(n, 1)
    return STEP_FACTOR[backward]


MAX_MEASURED_STEP_S = 1.0    # above this forward time, a step is priced as a multiple of the forward


def job_seconds(model: nn.Module, work: Work, prompt_tokens: int = 16, throwaway: bool = False) -> dict:
    """``{"seconds", "parts": {phase: seconds}, "assumes": {...}}`` for ``work`` done with ``model``.

    ``model`` is the model the job trains or reads: speeds are measured on it, so the estimate
    follows the machine. With ``throwaway=True`` (a fresh model of a planned shape, for
    pretraining) a real training step is timed when it is cheap: small models are bound by
    per-operation overheads that a multiple of the forward pass does not capture.
    """
    with job_threads():  # speeds measured on the threads the job will have
        return _job_seconds(model, work, prompt_tokens, throwaway)


def _job_seconds(model: nn.Module, work: Work, prompt_tokens: int, throwaway: bool) -> dict:
    parts = {"copy": work.copy_bytes / COPY_BYTES_PER_S, "save": work.save_bytes / SAVE_BYTES_PER_S,
             "fixed": FIXED_S}
    step_fwd = 0.0
    if work.train_steps and work.backward == "none":
        parts["train"] = work.train_steps * PROBE_STEP_S
    elif work.train_steps:
        step_fwd = forward_seconds(model, work.step_rows, work.row_tokens)
        if throwaway and step_fwd < MAX_MEASURED_STEP_S:
            parts["train"] = work.train_steps * step_seconds(model, work.step_rows, work.row_tokens)
        else:
            parts["train"] = work.train_steps * step_fwd * _step_factor(work.backward)
    if work.feature_rows:
        batch = min(work.feature_rows, 16)
        parts["features"] = forward_seconds(model, batch, work.feature_tokens, head=False) * work.feature_rows / batch
    if work.eval_rows:
        parts["eval"] = forward_seconds(model, min(work.eval_rows, 8), work.eval_tokens) * work.eval_rows \
            / min(work.eval_rows, 8)
    per_token = token_seconds(model, prompt_tokens) if work.generated else 0.0
    parts["generate"] = work.generated * per_token
    step = parts.get("train", 0.0) / work.train_steps if work.train_steps else 0.0
    return {"seconds": sum(parts.values()), "parts": parts,
            "assumes": {"step_s": step, "step_forward_s": step_fwd, "token_s": per_token, **asdict(work)}}
