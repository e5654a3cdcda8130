"""The run history: SQLite records that survive a restart, checkpoints reloaded as models, start-up cleanup, size cap."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from explorer import history as H
from explorer import history_models as HM
from explorer.jobs import JobSnapshot
from gpt_core.config import GPTConfig
from gpt_core.errors import GPTCoreError, InvalidInput, note
from gpt_core.hub import atomic_dir
from gpt_core.model import GPT
from gpt_core.train import prepare_classifier, save_trained

ROOT = Path(__file__).resolve().parents[1]
IDS = [[464, 3290, 318, 257, 1332, 13, 50256, 0]]   # fixed GPT-2 ids
HISTORY = {"train_steps": [1, 2, 3], "train_loss": [10.5, 9.25, 8.0], "val_steps": [3], "val_loss": [8.5],
           "val_accuracy": []}


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50257, context_length=16, d_model=16, n_heads=2, n_layers=1)).eval()


def finished_run(root: Path, run_id: str = "pre1", model=None, **extra) -> H.RunRecord:
    folder = H.checkpoint_dir(run_id, root)
    save_trained(model if model is not None else tiny_gpt(), folder, {"task": "lm"})
    values = dict(name="pretrained 14:02:11", owner="alice", created_at=1_700_000_000.0,
                  finished_at=1_700_000_060.0, seconds=60.0, config={"tokenizer": "gpt2", "steps": 3, "lr": 1e-3},
                  history=HISTORY, metrics={"val_loss": 8.5, "sample": "Pour préparer une"},
                  checkpoint=H.relative_checkpoint(folder, root), message=note("train.finished", "Training finished: {steps} steps, training loss {train_loss}.", steps=3, train_loss=8.0))
    values.update(extra)
    return H.RunRecord(run_id, "pretrain", "lm", "done", **values)


def failed_run(run_id: str = "fail1") -> H.RunRecord:
    return H.RunRecord(run_id, "finetune", "instruct", "failed", name="instruct run", base_model="tiny-random",
                       owner="bob", created_at=1_700_000_100.0, finished_at=1_700_000_130.0, seconds=30.0,
                       config={"tokenizer": "gpt2", "method": "lora"},
                       history={"train_steps": [1], "train_loss": [float("nan")]},
                       message=note("jobs.failed", "The job failed ({kind}: {detail}).", kind="RuntimeError",
                                    detail="boom"))


# ------------------------------------------------------------------ restart
RESTART = textwrap.dedent("""
    import json, sys, torch
    from explorer import history as H
    from explorer import history_models as HM
    store = H.RunStore(sys.argv[1])
    runs = store.list()
    lm = HM.load_checkpoint_model(store.get("pre1"), store=store)
    ids = torch.tensor(json.loads(sys.argv[2]))
    with torch.no_grad():
        logits = lm.model(ids)
    print(json.dumps({"ids": [r.run_id for r in runs], "configs": [r.config for r in runs],
                      "history": runs[1].history, "failed": [runs[0].status, runs[0].message.code,
                      runs[0].message.params], "checkpoint": runs[1].checkpoint, "bytes": runs[1].checkpoint_bytes,
                      "tokenizer": lm.tokenizer.name, "name": lm.source.key, "logits": logits.tolist()}))
""")


def test_runs_survive_a_restart_and_their_checkpoint_loads(tmp_path):
    model = tiny_gpt(3)
    store = H.RunStore(tmp_path / H.DB_NAME)
    store.record(finished_run(tmp_path, model=model))
    store.record(failed_run())
    del store
    # a new server process opens the same file
    out = subprocess.run([sys.executable, "-c", RESTART, str(tmp_path / H.DB_NAME), json.dumps(IDS)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["ids"] == ["fail1", "pre1"]                       # newest first
    assert seen["configs"] == [{"tokenizer": "gpt2", "method": "lora"}, {"tokenizer": "gpt2", "steps": 3, "lr": 1e-3}]
    assert seen["history"] == HISTORY
    assert seen["failed"] == ["failed", "jobs.failed", {"kind": "RuntimeError", "detail": "boom"}]
    assert seen["checkpoint"] == "checkpoints/pre1"
    assert seen["bytes"] == H.folder_bytes(tmp_path / "checkpoints" / "pre1") > 0
    assert (seen["tokenizer"], seen["name"]) == ("gpt2", "pretrained 14:02:11")
    with torch.no_grad():
        expected = model(torch.tensor(IDS))
    assert torch.equal(torch.tensor(seen["logits"]), expected)


def test_a_new_store_in_the_same_process_reads_the_same_records(tmp_path):
    H.RunStore(tmp_path / H.DB_NAME).record(failed_run())
    again = H.RunStore(tmp_path / H.DB_NAME).get("fail1")
    assert again.history == {"train_steps": [1], "train_loss": [None]}   # NaN is stored as null
    assert (again.base_model, again.owner, again.seconds, again.checkpoint) == ("tiny-random", "bob", 30.0, "")
    with sqlite3.connect(tmp_path / H.DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == H.SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_history_from_a_newer_app_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / H.DB_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(GPTCoreError) as err:
        H.RunStore(tmp_path / H.DB_NAME)
    assert err.value.code == "history.newer_schema"
    assert err.value.params == {"path": H.DB_NAME, "found": 99, "known": 1}


def test_a_hugging_face_save_reloads_with_its_tokenizer(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=50257, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                      attn_implementation="eager")).eval()  # as the app loads it
    store = H.RunStore(tmp_path / H.DB_NAME)
    rec = store.record(finished_run(tmp_path, "hf1", hf, config={"tokenizer": "smollm2-embedded"}))
    assert store.checkpoint_path(rec) == (tmp_path / "checkpoints" / "hf1").resolve()
    assert (tmp_path / "checkpoints" / "hf1" / "gpt_core_train.json").is_file()   # the save_pretrained layout
    rec = H.RunRecord(**{**rec.__dict__, "config": {"tokenizer": "gpt2"}})  # smollm2 is not installed everywhere
    lm = HM.load_checkpoint_model(rec, store=store)
    assert lm.source.family == "hf-causal" and lm.tokenizer.name == "gpt2"
    with torch.no_grad():
        assert torch.equal(lm.model(torch.tensor(IDS)).logits, hf(torch.tensor(IDS)).logits)


def test_the_tokenizer_key_names_what_to_rebuild():
    rec = H.RunRecord("x", "pretrain", "lm", "done")
    assert HM.rebuild_tokenizer(rec).name == "gpt2"                                  # nothing said: GPT-2's
    assert HM.rebuild_tokenizer(H.RunRecord("x", "pretrain", "lm", "done", config={"tokenizer": "bpe-fr"})).name \
        == "bpe-fr"
    assert HM.rebuild_tokenizer(H.RunRecord("x", "finetune", "lm", "done", base_model="tiny-random")).name == "gpt2"
    from gpt_core import registry
    assert {registry.SMOLLM2_MODEL, registry.GEMMA_MODEL, registry.TINY_MODEL} <= set(HM.MODEL_TOKENIZERS)


def test_a_classifier_is_not_offered_as_a_language_model(tmp_path):
    clf = prepare_classifier(tiny_gpt(), 3, labels=["réseau", "imprimante", "compte"]).eval()
    store = H.RunStore(tmp_path / H.DB_NAME)
    rec = store.record(H.RunRecord(**{**finished_run(tmp_path, "clf1", clf).__dict__, "task": "classify",
                                      "kind": "finetune", "metrics": {"accuracy": 0.9, "majority_baseline": 0.3}}))
    with pytest.raises(InvalidInput) as err:
        HM.load_checkpoint_model(rec, store=store)
    assert (err.value.code, err.value.params) == ("history.not_a_language_model", {"name": "pretrained 14:02:11"})
    loaded = HM.load_classifier(rec, store=store)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        assert torch.equal(loaded(ids), clf(ids))


def test_delete_removes_the_checkpoint_and_a_deleted_checkpoint_is_said(tmp_path):
    store = H.RunStore(tmp_path / H.DB_NAME)
    rec = store.record(finished_run(tmp_path))
    store.mark_checkpoint_gone("pre1")
    with pytest.raises(InvalidInput) as err:
        HM.load_checkpoint_model(store.get("pre1"), store=store)
    assert err.value.code == "history.checkpoint_gone"
    store.record(rec)
    assert store.delete("pre1") is True and store.get("pre1") is None
    assert not (tmp_path / "checkpoints" / "pre1").exists() and (tmp_path / H.DB_NAME).exists()
    assert store.delete("pre1") is False


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 65])
def test_a_run_id_cannot_escape_its_folder(tmp_path, bad):
    store = H.RunStore(tmp_path / H.DB_NAME)
    with pytest.raises(InvalidInput) as err:
        store.record(H.RunRecord(bad, "pretrain", "lm", "done"))
    assert err.value.code == "history.bad_run_id"
    rec = H.RunRecord("ok", "pretrain", "lm", "done", checkpoint="../../etc")
    assert store.record(rec).checkpoint == ""      # a path outside the runs folder is not kept


def test_history_of_a_job_snapshot():
    snap = JobSnapshot("j", "pretrain", train_steps=[1, 2], train_loss=[3.5, float("inf")], val_steps=[2],
                       val_loss=[3.25], val_accuracy=[0.5])
    assert H.history_of(snap) == {"train_steps": [1, 2], "train_loss": [3.5, None], "val_steps": [2],
                                  "val_loss": [3.25], "val_accuracy": [0.5]}


# ------------------------------------------------------------------ cleanup
def _complete(folder: Path, weights: int = 10) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w" * weights)


def test_cleanup_removes_exactly_the_half_written_folders(tmp_path):
    store = H.RunStore(tmp_path / H.DB_NAME)
    store.record(finished_run(tmp_path, "good"))                       # complete and recorded: kept
    killed = atomic_dir(H.checkpoint_dir("killed", tmp_path))         # a save killed in the middle
    half = killed.__enter__()
    (half / "config.json").write_text("{}")
    no_weights = H.checkpoint_dir("noweights", tmp_path)
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    store.record(H.RunRecord("noweights", "pretrain", "lm", "done", checkpoint="checkpoints/noweights"))
    _complete(H.checkpoint_dir("orphan", tmp_path))                    # no record points at it
    H.checkpoint_dir("running", tmp_path).mkdir()                      # a job is writing it now
    writing = atomic_dir(H.checkpoint_dir("running2", tmp_path))
    writing.__enter__()
    (tmp_path / "wandb").mkdir()                                       # not ours: never touched
    assert half.name.startswith(".killed.tmp-")

    removed = H.cleanup_incomplete(tmp_path, active_ids={"running", "running2"}, store=store)

    assert removed == sorted([half.name, "noweights", "orphan"])
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == sorted(["good", "running", [p.name for p in (tmp_path / "checkpoints").iterdir()
                                               if p.name.startswith(".running2.tmp-")][0]])
    assert (tmp_path / "wandb").is_dir() and (tmp_path / H.DB_NAME).is_file()
    assert store.get("noweights").checkpoint == "" and store.get("good").checkpoint == "checkpoints/good"
    assert H.cleanup_incomplete(tmp_path, active_ids={"running", "running2"}, store=store) == []


def test_startup_runs_once_per_process(tmp_path):
    store = H.RunStore(tmp_path / H.DB_NAME)
    _complete(H.checkpoint_dir("orphan", tmp_path))
    assert H.startup(store, active_ids=()) == {"removed": ["orphan"], "capped": []}
    _complete(H.checkpoint_dir("orphan2", tmp_path))
    assert H.startup(H.RunStore(tmp_path / H.DB_NAME), active_ids=()) is None
    assert (tmp_path / "checkpoints" / "orphan2").is_dir()


# ------------------------------------------------------------------ size cap
def _sized_runs(tmp_path) -> H.RunStore:
    store = H.RunStore(tmp_path / H.DB_NAME)
    for i, (run_id, size) in enumerate((("old", 1000), ("mid", 2000), ("new", 4000))):
        folder = H.checkpoint_dir(run_id, tmp_path)
        _complete(folder, size - 2)  # + the 2 bytes of config.json
        store.record(H.RunRecord(run_id, "pretrain", "lm", "done", created_at=1000.0 + i, finished_at=2000.0 + i,
                                 checkpoint=H.relative_checkpoint(folder, tmp_path)))
    return store


@pytest.mark.parametrize("room, deleted", [(7000, []), (6000, ["old"]), (5999, ["old", "mid"]),
                                          (4000, ["old", "mid"]), (-10**9, ["old", "mid"])])
def test_the_size_cap_deletes_the_oldest_checkpoints_first(tmp_path, room, deleted):
    store = _sized_runs(tmp_path)
    assert [r.checkpoint_bytes for r in store.list()] == [4000, 2000, 1000]
    database = H.folder_bytes(tmp_path) - 7000
    assert H.enforce_cap(store, database + room) == deleted
    for rec in store.list():
        gone = rec.run_id in deleted
        assert (rec.checkpoint == "") is gone and (rec.checkpoint_bytes == 0) is gone
        assert (tmp_path / "checkpoints" / rec.run_id).exists() is not gone
    assert len(store.list()) == 3                                   # the records stay


def test_the_size_cap_spares_active_runs(tmp_path):
    store = _sized_runs(tmp_path)
    assert H.enforce_cap(store, 0, active_ids={"old"}) == ["mid"]


# ------------------------------------------------------------------ threads
def test_two_threads_record_at_once(tmp_path):
    shared = H.RunStore(tmp_path / H.DB_NAME)
    errors = []

    def write(prefix: str, own_store: bool) -> None:
        store = H.RunStore(tmp_path / H.DB_NAME) if own_store else shared
        try:
            for i in range(40):
                store.record(H.RunRecord(f"{prefix}{i}", "pretrain", "lm", "done", finished_at=1.0 + i,
                                         history={"train_loss": [float(i)]}))
                store.list(limit=5)
        except Exception as exc:  # noqa: BLE001 (the test reports it)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p, own)) for p, own in (("a", False), ("b", False), ("c", True))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    runs = shared.list(limit=1000)
    assert len(runs) == 120 and {r.run_id for r in runs} == {f"{p}{i}" for p in "abc" for i in range(40)}
    assert shared.get("b39").history == {"train_loss": [39.0]}


# ------------------------------------------------------------------ the job's recorder
def plan(run_id: str = "job1", task: str = "lm") -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, kind="pretrain" if task == "lm" else "finetune", task=task,
                           names=SimpleNamespace(name="pretrained"), base_key="" if task == "lm" else "tiny-random",
                           owner="alice", tokenizer_name="bpe-fr", method="full", params={"steps": 2, "lr": 0.003})


EVENTS = [{"type": "status", "message": "…"}, {"type": "step", "step": 1, "train_loss": 9.5, "lr": 0.001},
          {"type": "step", "step": 2, "train_loss": 8.75, "lr": 0.001},
          {"type": "eval", "step": 2, "val_loss": 9.0, "accuracy": None},
          {"type": "sample", "step": 2, "text": "Pour préparer"}]


def test_the_recorder_keeps_what_the_job_saw(tmp_path):
    store = H.RunStore(tmp_path / H.DB_NAME)
    folder = H.checkpoint_dir("job1", tmp_path)
    save_trained(tiny_gpt(), folder, {"task": "lm"})
    rec = H.Recorder(plan(), store)
    for event in EVENTS:
        rec.see(event)
    done = {"type": "done", "step": 2, "message": note("train.finished", "Training finished: {steps} steps, "
                                                       "training loss {train_loss}.", steps=2, train_loss=8.75),
            "history": {"train_loss": [9.5, 8.75], "val_loss": [9.0]}}
    result = {"rows": [{"prompt": "Pour", "before": "x", "after": " préparer une pâte"}], "dist": None}
    assert rec.end(done, result, folder, "pretrained 14:02:11") is done
    rec.failed(RuntimeError("after the end"))                     # recorded once: the end stays
    got = store.get("job1")
    assert (got.status, got.name, got.owner, got.kind, got.task) == ("done", "pretrained 14:02:11", "alice",
                                                                     "pretrain", "lm")
    assert got.history == {"train_steps": [1, 2], "train_loss": [9.5, 8.75], "val_steps": [2], "val_loss": [9.0],
                           "val_accuracy": []}
    assert got.metrics == {"steps": 2, "train_loss": 8.75, "val_loss": 9.0, "sample": " préparer une pâte"}
    assert got.config == {"steps": 2, "lr": 0.003, "tokenizer": "bpe-fr", "method": "full"}
    assert got.checkpoint == "checkpoints/job1" and got.checkpoint_bytes == H.folder_bytes(folder)
    assert got.message.code == "train.finished"
    assert HM.load_checkpoint_model(got, store=store).tokenizer.name == "bpe-fr"


def test_the_recorder_records_failures_and_closed_jobs(tmp_path):
    store = H.RunStore(tmp_path / H.DB_NAME)
    failed = H.Recorder(plan("job2", "classify"), store)
    failed.see(EVENTS[1])
    failed.failed(MemoryError())
    closed = H.Recorder(plan("job3", "instruct"), store)
    closed.see(EVENTS[2])
    closed.failed(GeneratorExit())
    clf = H.Recorder(plan("job4", "classify"), store)
    clf.end({"type": "done", "step": 2, "message": "", "history": {"train_loss": [0.5], "val_loss": []}},
            {"rows": [{"text": "écran noir", "label": "matériel", "before": "réseau", "after": "matériel"}],
             "accuracy_before": 0.25, "report": {"accuracy": 0.875, "majority_baseline": 0.375,
                                                 "majority_label": "réseau", "confusion_matrix": [[1]]}})
    got = {r.run_id: r for r in store.list()}
    assert (got["job2"].status, got["job2"].message.code, got["job2"].checkpoint) == ("failed",
                                                                                      "jobs.out_of_memory", "")
    assert (got["job3"].status, got["job3"].message.code, got["job3"].message.params) == ("cancelled",
                                                                                          "jobs.cancelled", {"step": 2})
    assert got["job4"].metrics == {"steps": 2, "train_loss": 0.5, "val_loss": None, "accuracy": 0.875,
                                   "majority_baseline": 0.375, "majority_label": "réseau", "accuracy_before": 0.25,
                                   "sample": ""}


def test_a_probe_save_is_complete_and_a_half_one_is_not(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe.json").write_text("{}")
    assert not H.is_complete(probe)
    (probe / "probe.safetensors").write_bytes(b"w")
    assert H.is_complete(probe)


def test_a_tokenizer_saved_with_the_checkpoint_comes_first(tmp_path):
    from gpt_core.tokenlab import train_bpe

    tok = train_bpe("le chat mange la souris " * 50, 300, name="mine", label="mine")
    (tmp_path / "tokenizer").mkdir()
    tok._tok.save_pretrained(str(tmp_path / "tokenizer"))
    rebuilt = HM.rebuild_tokenizer(H.RunRecord("x", "pretrain", "lm", "done", config={"tokenizer": "trained:mine"}),
                                   tmp_path)
    assert rebuilt.encode("le chat mange") == tok.encode("le chat mange")


def test_an_unwritable_runs_folder_never_stops_the_pages(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(blocker / "runs"))
    H.startup_quietly()  # logged, not raised
    assert "the runs folder could not be prepared" in caplog.text
