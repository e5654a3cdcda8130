"""Jobs belong to their browser: a stranger cannot see, cancel or download them; the teacher can cancel any;
a job whose owner left is cancelled; an identity kept by the browser is adopted with what it did."""
from __future__ import annotations

import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from explorer import jobs as J
from explorer.jobs import JobManager

ALICE, BOB = "a" * 32, "b" * 32
HOME = "../explorer/Home.py"
PRETRAIN = "../pages/9_Pretrain.py"
HISTORY = "../pages/13_History.py"
PARAMS = {"architecture": {"n_layers": 1, "d_model": 16, "context": 16}, "steps": 50, "batch_size": 2}


def waiting(release: threading.Event):
    """A job that reports a step, then waits until released or cancelled."""
    def fn(cancel: threading.Event):
        yield {"type": "step", "step": 1, "train_loss": 5.0, "lr": 1e-3, "tokens_seen": 32, "elapsed": 0.1}
        while not (cancel.is_set() or release.is_set()):
            time.sleep(0.01)
        if cancel.is_set():
            yield {"type": "cancelled", "step": 1}
    return fn


@pytest.fixture
def manager(monkeypatch):
    """A fresh process-wide manager for the app (and the test), released at the end."""
    fresh = JobManager(orphan_after=3600)
    monkeypatch.setattr(J, "_manager", fresh)
    release = threading.Event()
    yield fresh, release
    release.set()
    for job in fresh.jobs():
        fresh.cancel(job.job_id)


def test_a_stranger_cannot_cancel_or_list_anothers_job(manager):
    mgr, release = manager
    job = mgr.submit("pretrain", waiting(release), PARAMS, owner=ALICE)
    assert mgr.cancel(job, owner=BOB) is False
    assert mgr.snapshot(job).active and not mgr.snapshot(job).finished
    assert mgr.jobs(owner=BOB) == [] and mgr.latest_job(owner=BOB, kind="pretrain") is None
    assert mgr.latest_job(owner=ALICE, kind="pretrain").job_id == job
    assert mgr.cancel(job, owner=ALICE) is True
    assert mgr.wait(job, timeout=10).status == "cancelled"


def test_the_teacher_cancels_any_job_with_a_reason(manager):
    mgr, release = manager
    job = mgr.submit("pretrain", waiting(release), PARAMS, owner=ALICE)
    queued = mgr.submit("pretrain", waiting(release), PARAMS, owner=BOB)
    reason = J.note("jobs.cancelled_by_teacher", "Cancelled by the teacher.")
    assert mgr.cancel(queued, reason=reason) and mgr.snapshot(queued).message == reason
    assert mgr.cancel(job, reason=reason)
    done = mgr.wait(job, timeout=10)
    assert (done.status, done.message) == ("cancelled", reason)


def test_an_orphaned_job_is_cancelled_when_its_owner_stays_away():
    mgr = JobManager(orphan_after=0.2)
    release = threading.Event()
    job = mgr.submit("pretrain", waiting(release), PARAMS, owner=ALICE)
    waiting_job = mgr.submit("pretrain", waiting(release), PARAMS, owner=BOB)
    time.sleep(0.1)
    mgr.seen(BOB)  # Bob is still there, Alice is not seen again
    assert mgr.orphans() == []
    time.sleep(0.15)
    mgr.seen(BOB)
    ended = mgr.wait(job, timeout=10)
    assert ended.status == "cancelled"
    assert ended.message.code == "jobs.orphaned"
    assert mgr.snapshot(waiting_job).active  # Bob's job runs next
    release.set()
    assert mgr.wait(waiting_job, timeout=10).status == "done"


def test_a_kept_identity_adopts_the_provisional_ones_jobs(manager):
    mgr, release = manager
    job = mgr.submit("pretrain", waiting(release), PARAMS, owner="c" * 32)
    assert mgr.adopt("c" * 32, ALICE) == 1
    assert mgr.snapshot(job).owner == ALICE and mgr.cancel(job, owner="c" * 32) is False


def _pretrain(owner: str) -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=300)
    at.session_state["app.lang"] = "fr"  # AppTest formats option labels in French
    at.session_state["app.owner"] = owner
    at.session_state["app.model"] = "tiny-random"
    at.switch_page(PRETRAIN).run()
    assert not at.exception, at.exception
    return at


def test_the_pretrain_page_shows_a_job_to_its_owner_only(manager):
    mgr, release = manager
    job = mgr.submit("pretrain", waiting(release), PARAMS, owner=ALICE)
    stranger = _pretrain(BOB)
    assert "Entraînement" not in [h.value for h in stranger.subheader]
    assert not [b for b in stranger.button if b.key == f"cancel.{job}"]
    stranger.session_state["pretrain.job"] = job  # even the job's id, if a stranger got it, shows nothing
    stranger.run()
    assert not [b for b in stranger.button if b.key == f"cancel.{job}"]
    assert "Entraînement" not in [h.value for h in stranger.subheader]
    owner = _pretrain(ALICE)
    assert "Entraînement" in [h.value for h in owner.subheader]
    release.set()
    assert mgr.wait(job, timeout=10).status == "done"
    finished = _pretrain(BOB)  # finished: its results and downloads are still Alice's alone
    assert not finished.get("download_button") and "Entraînement" not in [h.value for h in finished.subheader]


def test_the_teacher_table_lists_and_cancels_every_job(manager, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    monkeypatch.setenv("LLM_EXPLORER_TEACHER_PASSWORD", "craie")
    mgr, release = manager
    job = mgr.submit("pretrain", waiting(release), PARAMS, owner=ALICE)
    at = AppTest.from_file(HISTORY, default_timeout=120)
    at.session_state["app.lang"] = "fr"
    at.session_state["app.owner"] = BOB
    at.session_state["app.teacher"] = True
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["Élève", "Travail", "État", "Étape", "Lancé à"]
    row = table.to_dict("records")[0]
    assert row["Élève"] != ALICE[:6] and len(row["Élève"]) == 6  # a stable short name, not the token
    assert (row["Travail"], row["État"], row["Étape"]) == ("pré-entraînement", "en cours", "1/50")
    at.button(key=f"teacher.cancel.{job}").click().run()
    done = mgr.wait(job, timeout=10)
    assert (done.status, done.message.code) == ("cancelled", "jobs.cancelled_by_teacher")
