"""explorer.worker: training jobs run in a process of their own, and what they saved comes back to the server.

Real processes (multiprocessing's fork server), nano GPTs on the CPU, fixed seeds. The runs folder is set
after the fork server started, so every test also checks that a job's process follows the server's settings.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from said import en, fr

from explorer import corpus as C
from explorer import history as H
from explorer import history_models as HM
from explorer import run_job as J
from explorer import runs as R
from explorer import worker as W
from explorer.jobs import JobManager
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT
from gpt_core.registry import load_model

NANO = dict(R.ARCH_PRESETS["nano"])
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    from gpt_core.tokenizers import load_tokenizer

    return load_tokenizer("gpt2")


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    return tmp_path


class FakeStore:
    """What explorer.ui.model_store.store() offers a job: register(name, LoadedModel) and .custom."""

    def __init__(self):
        self.custom = {}

    def register(self, name, lm, owner=None):
        self.custom[name] = lm


def pretrain(tok, steps: int, text: str | None = None, tokenizer_name: str = "gpt2", **hyper) -> R.RunPlan:
    hyper = {"batch_size": 4, "lr": 1e-2, "warmup": 0, **hyper}
    return R.plan_pretrain(tok, text or C.load_corpus("corpus_fr").text, NANO, R.Hyper(steps=steps, **hyper), "cpu",
                           "Pour préparer une", R.RunNames("pré-entraîné", "GPT pré-entraîné ici"),
                           tokenizer_name=tokenizer_name)


def start(plan: R.RunPlan, store=None, manager: JobManager | None = None) -> tuple[JobManager, str]:
    manager = manager or JobManager()
    job = manager.submit(plan.kind, W.job_for(plan, store), {**plan.params, "run_id": plan.run_id}, owner="alice")
    return manager, job


def wait_for(predicate, timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running_process(manager: JobManager, job: str, step: int = 1) -> int:
    """The pid of the job's process, once it has trained ``step`` steps."""
    assert wait_for(lambda: manager.snapshot(job).step >= step), manager.snapshot(job)
    pids = W.worker_pids()
    assert len(pids) == 1 and pids[0] != os.getpid()
    return pids[0]


def ids(tokenizer, text: str = "Il était une fois un chat.") -> torch.Tensor:
    return torch.tensor([tokenizer.encode(text)])


# ------------------------------------------------------------------ pretraining
def test_a_pretraining_run_comes_back_from_its_process_to_the_sidebar_and_the_comparison(runs):
    pasted = C.load_corpus("corpus_fr").text[:5000]
    tok, name = R.pretrain_tokenizer("bpe", "paste", pasted)  # a BPE learnt here: its rules travel to the process
    plan = pretrain(tok, 6, pasted, tokenizer_name=name)
    assert plan.recipe.kind == "pretrain" and set(plan.recipe.tokenizer) == {"json", "name", "label"}
    store = FakeStore()
    manager, job = start(plan, store)
    snap = manager.wait(job, timeout=300)
    assert snap.status == "done", (snap.message, snap.error_detail)
    assert snap.train_steps == [1, 2, 3, 4, 5, 6] and snap.val_steps[0] == 0
    record = H.RunStore().get(plan.run_id)  # written by the process, in the runs folder set after it started
    name = snap.result["model_name"]
    assert record.status == "done" and record.name == name and name.startswith("pré-entraîné ")
    assert snap.result["checkpoint"] == str(runs / "checkpoints" / plan.run_id)
    assert list(store.custom) == [name]
    lm = store.custom[name]
    assert isinstance(lm.model, GPT) and not lm.model.training and lm.tokenizer is tok and lm.load_seconds == 0.0
    assert lm.source.label == "GPT pré-entraîné ici (" + name.split(" ")[-1] + ")"
    x = ids(tok)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(x), HM.load_checkpoint_model(record).model(x), rtol=0, atol=0)
        run = J.get_run(plan.run_id)
        assert run.after is lm.model and run.name == name
        # "before" is the untrained model, rebuilt from the seed in the server
        torch.testing.assert_close(run.before(x), plan.make_model()(x), rtol=0, atol=0)
        assert not torch.allclose(run.before(x), run.after(x))
    out = J.compare_prompt(run, "Le chat")
    assert set(out) == {"before_text", "after_text", "dist"}
    row = snap.result["comparison"]["rows"][0]
    assert row["prompt"] == "Pour préparer une" and row["before"] != row["after"]
    assert HM.checkpoint_origin(lm.model) == plan.run_id  # so a fine-tuning of it can run in a process too
    assert W.worker_pids() == []


def test_cancelling_ends_the_process_and_the_server_keeps_its_own_threads(tok):
    threads = torch.get_num_threads()
    plan = pretrain(tok, 5000)
    manager, job = start(plan)
    pid = running_process(manager, job, step=2)
    assert torch.get_num_threads() == threads  # the job's threads are its process's, not the server's
    manager.cancel(job)
    snap = manager.wait(job, timeout=120)
    assert snap.status == "cancelled" and "annulé à l'étape" in fr(snap.message)
    record = H.RunStore().get(plan.run_id)
    assert record.status == "cancelled" and record.checkpoint == "" and record.history["train_steps"][:2] == [1, 2]
    assert wait_for(lambda: not alive(pid), 30) and W.worker_pids() == []


def test_a_process_that_ignores_the_cancel_is_killed_and_the_run_recorded_as_cancelled(tok, monkeypatch):
    monkeypatch.setattr(W, "KILL_AFTER_S", 0.5)
    plan = pretrain(tok, 5000)
    manager, job = start(plan)
    pid = running_process(manager, job)

    class Deaf:
        def set(self):  # the process never hears of the cancel
            pass

    next(iter(W._links)).stop = Deaf()
    manager.cancel(job)
    snap = manager.wait(job, timeout=120)
    assert snap.status == "cancelled" and "annulé à l'étape" in fr(snap.message)
    assert wait_for(lambda: not alive(pid), 30)
    record = H.RunStore().get(plan.run_id)  # the process could not write it: the server did
    assert record.status == "cancelled" and record.history["train_steps"][0] == 1
    assert fr(record.message).startswith("Travail annulé à l'étape")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSEGV])
def test_a_process_that_dies_fails_its_job_with_a_message_and_the_next_job_runs(tok, how):
    plan = pretrain(tok, 5000)
    manager, job = start(plan)
    os.kill(running_process(manager, job), how)  # the system's out-of-memory killer, or a crash in native code
    snap = manager.wait(job, timeout=120)
    assert snap.status == "failed" and snap.message.code == "worker.crashed"
    assert fr(snap.message).startswith("Le processus d'entraînement s'est arrêté brutalement")
    assert en(snap.message).endswith("the server carries on. Try a smaller batch, context or model.")
    record = H.RunStore().get(plan.run_id)
    assert record.status == "failed" and record.message.code == "worker.crashed" and record.history["train_steps"]
    again = pretrain(tok, 2)
    _, second = start(again, manager=manager)
    assert manager.wait(second, timeout=300).status == "done"


# ------------------------------------------------------------------ fine-tuning
def test_lora_on_a_registry_model_runs_apart_and_the_shared_base_stays_the_comparisons_before(runs):
    base = load_model("tiny-random")
    weights = {k: v.clone() for k, v in base.model.state_dict().items()}
    opts = R.FinetuneOptions("instruct", "lora", lora_r=4, mask_prompt=True, max_length=64)
    plan = R.plan_finetune(base.model, base.tokenizer, C.instruction_records(), opts,
                           R.Hyper(steps=3, batch_size=4, warmup=0), "cpu", R.RunNames("instruct", "tiny (instruct)"),
                           base_key="tiny-random", tokenizer_name="gpt2")
    assert plan.recipe.model == {"key": "tiny-random"}  # the weights never travel: the process loads them
    store = FakeStore()
    manager, job = start(plan, store)
    snap = manager.wait(job, timeout=300)
    assert snap.status == "done", (snap.message, snap.error_detail)
    run = J.get_run(plan.run_id)
    assert run.before is base.model and store.custom[snap.result["model_name"]].model is run.after
    folder = H.RunStore().checkpoint_path(H.RunStore().get(plan.run_id))
    assert "adapter_config.json" in {p.name for p in folder.iterdir()}
    x = ids(base.tokenizer)
    with torch.no_grad():
        assert not torch.allclose(run.after(x), base.model(x))
    assert all(torch.equal(v, weights[k]) for k, v in base.model.state_dict().items())
    assert len(snap.result["comparison"]["rows"]) == 3 and "after_text" in J.compare_prompt(run, "Dis bonjour.")


def test_a_model_trained_here_is_fine_tuned_apart_from_its_checkpoint_one_held_only_in_memory_in_the_thread(tok):
    store = FakeStore()
    manager, job = start(pretrain(tok, 2), store)
    snap = manager.wait(job, timeout=300)
    trained = store.custom[snap.result["model_name"]]
    opts = R.FinetuneOptions("instruct", "full", mask_prompt=False, max_length=32)
    plan = R.plan_finetune(trained.model, trained.tokenizer, C.instruction_records(), opts,
                           R.Hyper(steps=2, batch_size=4, warmup=0), "cpu", base_key=trained.source.key,
                           tokenizer_name="gpt2")
    assert plan.recipe.model == {"run_id": snap.result["run_id"]}
    _, second = start(plan, store, manager)
    done = manager.wait(second, timeout=300)
    assert done.status == "done", (done.message, done.error_detail)
    assert H.RunStore().get(plan.run_id).base_model == trained.source.key
    in_memory = GPT(trained.model.cfg)  # no registry key, no checkpoint: only this server has it
    assert R.plan_finetune(in_memory, tok, C.instruction_records(), opts, R.Hyper(steps=2, batch_size=4, warmup=0),
                           "cpu", base_key="GPT 12:00:00", tokenizer_name="gpt2").recipe is None


def test_a_probe_trained_apart_reads_the_servers_shared_model(runs):
    base = load_model("tiny-random")
    opts = R.FinetuneOptions("classify", "probe", max_length=48)
    plan = R.plan_finetune(base.model, base.tokenizer, C.classification_records(), opts,
                           R.Hyper(steps=20, batch_size=32, lr=1e-2, warmup=2), "cpu", base_key="tiny-random",
                           tokenizer_name="gpt2")
    store = FakeStore()
    manager, job = start(plan, store)
    snap = manager.wait(job, timeout=300)
    assert snap.status == "done", (snap.message, snap.error_detail)
    assert snap.result["model_name"] is None and store.custom == {}  # a classifier is not offered to the pages
    run = J.get_run(plan.run_id)
    assert run.after.body is base.model and run.before is None  # no second copy of the model in the server
    report = snap.result["comparison"]["report"]
    assert report["n"] == 60 and report["labels"] == ["compte_acces", "impression", "logiciel", "materiel", "reseau"]
    out = J.compare_prompt(run, "L'imprimante du 2e étage n'imprime plus.")
    assert out["labels"] == report["labels"] and sum(out["after"]) == pytest.approx(1.0)


def test_a_hugging_face_classifier_trained_apart_loads_back_on_a_copy_of_its_base(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    pasted = C.load_corpus("corpus_fr").text[:5000]
    bpe, _ = R.pretrain_tokenizer("bpe", "paste", pasted)
    folder = tmp_path / "tiny-llama"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=bpe.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                 tie_word_embeddings=False)).save_pretrained(folder)
    bpe._tok.save_pretrained(str(folder))
    base = load_model(str(folder))
    opts = R.FinetuneOptions("classify", "blocks", max_length=32, n_last=1)
    plan = R.plan_finetune(base.model, base.tokenizer, C.classification_records(), opts,
                           R.Hyper(steps=4, batch_size=8, warmup=0), "cpu", base_key=str(folder))
    assert plan.recipe.model == {"key": str(folder)}
    manager, job = start(plan)
    snap = manager.wait(job, timeout=300)
    assert snap.status == "done", (snap.message, snap.error_detail)
    run = J.get_run(plan.run_id)
    again = HM.load_classifier(H.RunStore().get(plan.run_id), body=base.model)
    x = ids(base.tokenizer, "Le wifi ne marche plus.")
    with torch.no_grad():
        torch.testing.assert_close(run.after(x).logits, again(x).logits, rtol=0, atol=0)
    assert run.after.gpt_core_labels == snap.result["comparison"]["report"]["labels"]
    assert sum(J.compare_prompt(run, "Le wifi ne marche plus.")["after"]) == pytest.approx(1.0)


# ------------------------------------------------------------------ the process's side, and where none can start
def test_the_process_refuses_a_plan_that_differs_from_the_pages_and_a_base_that_is_gone(tok):
    plan = pretrain(tok, 2)
    order = W.Order(plan.recipe, plan.run_id, "alice", {}, plan.estimate, dict(plan.params), {})
    rebuilt = W.rebuild(order)
    assert rebuilt.run_id == plan.run_id and rebuilt.estimate is plan.estimate and rebuilt.params == plan.params
    order.params["steps"] = 3
    with pytest.raises(InvalidInput) as err:
        W.rebuild(order)
    assert err.value.code == "worker.plan_differs" and fr(err.value).startswith("Le processus d'entraînement n'a pas "
                                                                                "préparé le même run que la page")
    gone = R.Recipe("finetune", {"device": "cpu"}, model={"run_id": "no-such-run"})
    with pytest.raises(InvalidInput) as err:
        W.rebuild(W.Order(gone, "x", None, {}, {}, {}, {}))
    assert err.value.code == "worker.base_gone" and "n'est plus dans l'historique" in fr(err.value)


def test_a_page_run_as_main_is_not_run_again_by_the_process(tok, tmp_path, monkeypatch):
    """Streamlit runs each page as a fake ``__main__`` module; a new process must not run that page again."""
    import types

    marker = tmp_path / "page-ran"
    page = tmp_path / "9_Page.py"
    page.write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    fake = types.ModuleType("__main__")
    fake.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", fake)
    manager, job = start(pretrain(tok, 2))
    assert manager.wait(job, timeout=300).status == "done"
    assert not marker.exists() and sys.modules["__main__"] is fake


def test_where_no_process_can_start_the_job_runs_in_the_thread(tok, monkeypatch):
    class NoProcesses:
        def __init__(self, ctx):
            pass

        def start(self, initializer=None):
            raise OSError("no semaphores here")

    monkeypatch.setattr(W, "SyncManager", NoProcesses)
    plan = pretrain(tok, 2)
    manager, job = start(plan, FakeStore())
    snap = manager.wait(job, timeout=300)
    assert snap.status == "done" and snap.result["model_name"] and W.worker_pids() == []
    assert H.RunStore().get(plan.run_id).status == "done"


SERVER = """
import os, sys, time
sys.path.insert(0, {root!r})
from explorer import corpus as C, runs as R, worker as W
from explorer.jobs import JobManager
from gpt_core.tokenizers import load_tokenizer

if __name__ == "__main__":
    plan = R.plan_pretrain(load_tokenizer("gpt2"), C.load_corpus("corpus_fr").text, R.ARCH_PRESETS["nano"],
                           R.Hyper(steps=100000, batch_size=4, warmup=0), "cpu", "Le", tokenizer_name="gpt2")
    manager = JobManager()
    job = manager.submit("pretrain", W.job_for(plan), {{}})
    while manager.snapshot(job).step < 1:
        time.sleep(0.05)
    print(plan.run_id, W.worker_pids()[0], flush=True)
    if {stop!r} == "exit":
        sys.exit(0)  # the job has thousands of steps to go
    time.sleep(600)
"""


@pytest.mark.parametrize("stop", ["exit", "killed"])
def test_a_server_that_stops_or_is_killed_leaves_no_process_behind(runs, stop):
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT), stop=stop)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "LLM_EXPLORER_RUNS": str(runs)})
    try:
        run_id, pid = server.stdout.readline().split()
        if stop == "killed":
            server.kill()  # no exit hook runs: the process sees its server gone
        assert server.wait(timeout=120) in (0, -signal.SIGKILL), server.stderr.read()[-2000:]
    finally:
        server.kill()
    assert wait_for(lambda: not alive(int(pid)), 60)
    record = H.RunStore().get(run_id)  # the process ended the job itself
    assert record.status == "cancelled" and record.history["train_steps"][0] == 1
