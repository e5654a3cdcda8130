"""explorer.jobs: background jobs in worker threads, one at a time, FIFO queue."""
from __future__ import annotations

import threading
import time

import pytest

from said import en, fr

from explorer.jobs import JobManager, get_manager
from gpt_core.errors import InvalidInput, Message


def ticking(n_steps: int, delay: float = 0.01, started: threading.Event | None = None):
    """A job that yields one step event every ``delay`` seconds and honours cancellation."""

    def fn(cancel: threading.Event):
        if started is not None:
            started.set()
        for step in range(1, n_steps + 1):
            if cancel.is_set():
                yield {"type": "cancelled", "step": step - 1, "message": f"arrêté à {step - 1}"}
                return
            time.sleep(delay)
            yield {"type": "step", "step": step, "train_loss": 1.0 / step, "lr": 1e-3, "tokens_seen": 8 * step}
            if step % 5 == 0:
                yield {"type": "eval", "step": step, "val_loss": 2.0 / step}
        yield {"type": "done", "step": n_steps, "message": "fini", "checkpoint": "/tmp/ckpt"}

    return fn


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_job_runs_and_records_events():
    manager = JobManager()
    job = manager.submit("pretrain", ticking(10, 0.001), {"steps": 10}, owner="alice")
    snap = manager.wait(job, timeout=10)
    assert snap.status == "done"
    assert snap.message == "fini"
    assert snap.progress == 1.0
    assert snap.train_steps == list(range(1, 11))
    assert snap.train_loss[-1] == pytest.approx(0.1)
    assert snap.val_steps == [5, 10]
    assert snap.val_loss == pytest.approx([0.4, 0.2])
    assert snap.tokens_seen == 80
    assert snap.result["checkpoint"] == "/tmp/ckpt"
    assert snap.started_at is not None and snap.finished_at >= snap.started_at


def test_cancel_running_job_stops_within_a_second():
    manager = JobManager()
    started = threading.Event()
    job = manager.submit("pretrain", ticking(100_000, 0.01, started), {"steps": 100_000})
    assert started.wait(5)
    assert wait_for(lambda: manager.snapshot(job).step >= 3)
    t0 = time.monotonic()
    assert manager.cancel(job) is True
    snap = manager.wait(job, timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert snap.status == "cancelled"
    assert 3 <= snap.step < 100_000
    assert 0 < snap.progress < 1
    assert manager.cancel(job) is False  # already finished


def test_cancel_stops_a_job_that_ignores_the_event():
    """The worker closes the generator itself after the next event."""
    manager = JobManager()

    def stubborn(cancel):
        step = 0
        while True:
            step += 1
            time.sleep(0.005)
            yield {"type": "step", "step": step, "train_loss": 1.0}

    job = manager.submit("x", stubborn)
    assert wait_for(lambda: manager.snapshot(job).step >= 2)
    manager.cancel(job)
    snap = manager.wait(job, timeout=2)
    assert snap.status == "cancelled"
    assert snap.message.code == "jobs.cancelled" and snap.message.params == {"step": snap.step}
    assert fr(snap.message) == f"Travail annulé à l'étape {snap.step}."
    assert en(snap.message) == f"Job cancelled at step {snap.step}."


def test_second_job_waits_in_queue_then_runs():
    manager = JobManager()
    gate = threading.Event()

    def blocker(cancel):
        yield {"type": "step", "step": 1, "train_loss": 1.0}
        gate.wait(5)
        yield {"type": "done", "message": "premier fini"}

    first = manager.submit("pretrain", blocker, {"steps": 1})
    assert wait_for(lambda: manager.snapshot(first).status == "running")
    second = manager.submit("finetune", ticking(3, 0.001), {"steps": 3})
    third = manager.submit("finetune", ticking(3, 0.001), {"steps": 3})
    assert manager.queue_position(first) is None
    assert manager.queue_position(second) == 1
    assert manager.queue_position(third) == 2
    assert manager.snapshot(second).status == "queued"
    assert manager.running_job().job_id == first
    gate.set()
    snap2 = manager.wait(second, timeout=5)
    snap3 = manager.wait(third, timeout=5)
    assert snap2.status == snap3.status == "done"
    # FIFO: the second started after the first finished, and before the third
    assert manager.snapshot(first).finished_at <= snap2.started_at <= snap3.started_at


def test_cancel_queued_job_removes_it_from_queue():
    manager = JobManager()
    gate = threading.Event()

    def blocker(cancel):
        gate.wait(5)
        yield {"type": "done", "message": "ok"}

    first = manager.submit("a", blocker)
    assert wait_for(lambda: manager.snapshot(first).status == "running")
    second = manager.submit("b", ticking(2, 0.001))
    third = manager.submit("c", ticking(2, 0.001))
    assert manager.cancel(second) is True
    assert manager.snapshot(second).status == "cancelled"
    assert manager.snapshot(second).message.code == "jobs.cancelled_before_start"
    assert manager.queue_position(third) == 1
    gate.set()
    assert manager.wait(third, timeout=5).status == "done"
    assert manager.snapshot(second).started_at is None  # never ran


def test_reattach_finds_running_job_by_kind_and_owner():
    manager = JobManager()
    gate = threading.Event()

    def blocker(cancel):
        yield {"type": "step", "step": 1, "train_loss": 3.0}
        gate.wait(5)

    old = manager.submit("classify", ticking(1, 0.001), owner="bob")
    manager.wait(old, timeout=5)
    job = manager.submit("pretrain", blocker, {"steps": 4}, owner="alice")
    assert wait_for(lambda: manager.snapshot(job).step == 1)
    found = manager.latest_job(kind="pretrain")
    assert found.job_id == job and found.status == "running"
    assert found.progress == pytest.approx(0.25)
    assert manager.latest_job(owner="alice").job_id == job
    assert manager.latest_job(owner="bob").job_id == old
    assert manager.latest_job(kind="classify", active_only=True) is None
    assert manager.latest_job(kind="nothing") is None
    assert [s.job_id for s in manager.jobs()] == [job, old]
    gate.set()
    assert manager.wait(job, timeout=5).status == "done"


def test_snapshot_is_a_copy():
    manager = JobManager()
    job = manager.submit("pretrain", ticking(5, 0.001), {"steps": 5})
    snap = manager.wait(job, timeout=5)
    snap.train_loss.append(123.0)
    snap.status = "bidon"
    fresh = manager.snapshot(job)
    assert fresh.status == "done" and 123.0 not in fresh.train_loss
    assert manager.snapshot("unknown") is None


def test_failure_is_captured_as_a_message_in_both_languages():
    manager = JobManager()

    def broken(cancel):
        yield {"type": "step", "step": 1, "train_loss": 2.0}
        raise RuntimeError("boom")

    refusal = InvalidInput("train.bad_whole", "{field} must be a whole number of at least {minimum} (got {value}).",
                           field="batch_size", minimum=1, value="0")

    def refused(cancel):
        raise refusal

    def out_of_memory(cancel):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield  # a generator

    job = manager.submit("pretrain", broken, {"steps": 10})
    snap = manager.wait(job, timeout=5)
    assert snap.status == "failed"
    assert snap.message.code == "jobs.failed" and snap.message.params == {"kind": "RuntimeError", "detail": "boom"}
    assert fr(snap.message) == "Le travail a échoué (RuntimeError : boom)."
    assert en(snap.message) == "The job failed (RuntimeError: boom)."
    assert "RuntimeError: boom" in snap.error_detail
    assert snap.train_loss == [2.0]  # events before the failure are kept
    job2 = manager.submit("pretrain", refused)
    snap2 = manager.wait(job2, timeout=5)
    assert snap2.status == "failed"
    assert snap2.message == refusal.message  # the gpt_core error's own code and parameters
    assert fr(snap2.message) == "La taille de batch doit être un entier ≥ 1 (reçu : 0)."
    snap_oom = manager.wait(manager.submit("pretrain", out_of_memory), timeout=5)
    assert snap_oom.message.code == "jobs.out_of_memory" and "mémoire est insuffisante" in fr(snap_oom.message)
    # the worker survives failures: a later job still runs
    job3 = manager.submit("pretrain", ticking(2, 0.001))
    assert manager.wait(job3, timeout=5).status == "done"


def test_diverged_event_sets_status():
    manager = JobManager()

    def diverging(cancel):
        yield {"type": "step", "step": 1, "train_loss": 5.0}
        yield {"type": "diverged", "step": 1, "message": "la perte vaut nan"}
        yield {"type": "step", "step": 2, "train_loss": 1.0}  # never recorded

    job = manager.submit("pretrain", diverging)
    snap = manager.wait(job, timeout=5)
    assert snap.status == "diverged"
    assert snap.message == "la perte vaut nan"
    assert snap.train_steps == [1]


def test_get_manager_is_a_singleton():
    assert get_manager() is get_manager()
    results = []
    threads = [threading.Thread(target=lambda: results.append(get_manager())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m is results[0] for m in results)


def test_real_training_job_reports_progress_and_cancels():
    import torch

    from gpt_core.config import GPTConfig
    from gpt_core.train import TrainConfig, prepare_pretraining, train

    model = prepare_pretraining(GPTConfig.preset("tiny").with_(vocab_size=97, context_length=16), seed=0)
    g = torch.Generator().manual_seed(0)
    batches = [(x[:, :-1], x[:, 1:]) for x in (torch.randint(0, 97, (4, 17), generator=g) for _ in range(3))]
    cfg = TrainConfig(lr=1e-3, steps=100_000, eval_every=5, device="cpu")
    manager = JobManager()
    job = manager.submit("pretrain", lambda cancel: train(model, batches, batches, cfg, cancel=cancel),
                         {"steps": cfg.steps})
    try:
        assert wait_for(lambda: manager.snapshot(job).step >= 10, timeout=30)
        snap = manager.snapshot(job)
        assert snap.status == "running"
        assert snap.val_steps[:2] == [0, 5]
        assert all(s % 5 == 0 for s in snap.val_steps)
        assert snap.progress == pytest.approx(snap.step / 100_000)
    finally:
        manager.cancel(job)
    done = manager.wait(job, timeout=5)
    assert done.status == "cancelled"
    assert isinstance(done.message, Message) and done.message.code == "train.cancelled"
    assert fr(done.message).startswith("Entraînement annulé à l'étape")
    assert len(done.result["history"]["train_loss"]) == done.step
