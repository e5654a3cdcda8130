"""``python -m gpt_core.train``: the app's training runs from a terminal, recorded where the app reads them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from streamlit.testing.v1 import AppTest

from shown import unescape

from explorer.ui.i18n import lookup
from gpt_core import runlog
from gpt_core.train import TRAINING_STATE, load_trained
from gpt_core.train.cli import main
from gpt_core.train.plans import ARCH_PRESETS, PRETRAIN_HYPER

ROOT = Path(__file__).resolve().parents[1]
HOME = "../explorer/Home.py"
HISTORY = "../pages/13_History.py"
NANO = ["pretrain", "--preset", "nano", "--device", "cpu", "--no-progress"]


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    return tmp_path


def _only_record() -> runlog.RunRecord:
    records = runlog.RunStore().list()
    assert len(records) == 1, [r.run_id for r in records]
    return records[0]


def test_pretrain_writes_the_apps_checkpoint_and_record_with_the_pages_defaults(runs, capsys):
    assert main([*NANO, "--steps", "30", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds.count("step") == 30 and kinds[-1] == "done" and "result" in kinds and "sample" in kinds
    assert events[-1]["message"]["code"] == "train.finished_val"
    rec = _only_record()
    assert (rec.kind, rec.task, rec.status, rec.owner) == ("pretrain", "lm", "done", "")
    assert rec.name.startswith("nano-bpe-fr ")  # preset and tokenizer: a name in no language
    cfg = rec.config
    # what was not given is the Pretraining page's default
    assert (cfg["batch_size"], cfg["lr"], cfg["warmup"], cfg["grad_accum"], cfg["schedule"]) == (
        PRETRAIN_HYPER.batch_size, PRETRAIN_HYPER.lr, PRETRAIN_HYPER.warmup, 1, "cosine")
    assert cfg["architecture"] == ARCH_PRESETS["nano"] and cfg["tokenizer"] == "bpe-fr"
    assert cfg["launched"] == "command line" and cfg["processes"] == 1 and cfg["steps"] == 30
    assert rec.history["train_steps"] == list(range(1, 31)) and rec.history["val_loss"]
    assert rec.history["train_loss"][-1] < rec.history["train_loss"][0]
    folder = runlog.RunStore().checkpoint_path(rec)
    assert folder == runs / "checkpoints" / rec.run_id
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    model = load_trained(folder)
    assert model.cfg.d_model == ARCH_PRESETS["nano"]["d_model"] and model.cfg.vocab_size == cfg["vocab_size"]


def test_classify_defaults_to_the_probe_and_records_its_test_accuracy(runs, capsys):
    assert main(["classify", "--model", "tiny-random", "--device", "cpu", "--no-progress"]) == 0
    rec = _only_record()
    assert (rec.kind, rec.task, rec.status, rec.base_model) == ("finetune", "classify", "done", "tiny-random")
    assert rec.name.startswith("tiny-random-probe ")
    assert rec.config["method"] == "probe" and rec.config["steps"] == 100 and rec.config["batch_size"] == 32
    assert 0 <= rec.metrics["accuracy"] <= 1 and rec.metrics["majority_baseline"] > 0
    assert (runlog.RunStore().checkpoint_path(rec) / "probe.json").is_file()
    assert f"Run {rec.run_id} (done)" in capsys.readouterr().err


def test_instruct_with_lora_on_a_registry_model_saves_the_adapter(runs):
    assert main(["instruct", "--model", "tiny-random", "--method", "lora", "--steps", "3", "--device", "cpu",
                 "--no-progress"]) == 0
    rec = _only_record()
    assert (rec.task, rec.status, rec.config["method"], rec.config["lora_r"]) == ("instruct", "done", "lora", 8)
    assert rec.config["warmup"] == 0  # the default warm-up (5 steps) would be longer than the 3 steps asked
    files = {p.name for p in runlog.RunStore().checkpoint_path(rec).iterdir()}
    assert "adapter_config.json" in files and "model.safetensors" not in files


@pytest.mark.parametrize("argv, said", [
    ([*NANO, "--data", "nowhere.txt"], "No file 'nowhere.txt'"),
    ([*NANO, "--lr", "5"], "The learning rate must be a finite number above 0 and at most 1 (got 5.0)"),
    ([*NANO, "--resume", "abc123"], "Run 'abc123' has no saved training state"),
    ([*NANO, "--resume", "../x"], "A run id is 1 to 64 letters"),
    (["instruct", "--model", "no-such-model", "--no-progress"], "no-such-model"),
])
def test_refusals_say_why_and_record_nothing(runs, capsys, argv, said):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err, err
    assert runlog.RunStore().list() == []


def _cli(*argv: str, runs: Path) -> subprocess.Popen:
    env = {**os.environ, "LLM_EXPLORER_RUNS": str(runs), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpt_core.train", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _weights(runs: Path, run_id: str) -> dict:
    return load_file(str(runs / "checkpoints" / run_id / "model.safetensors"))


def test_a_killed_run_resumes_from_its_last_save_and_ends_as_the_uninterrupted_one(tmp_path):
    """SIGKILL once the periodic save exists, then ``--resume``: same final weights as a run never stopped."""
    argv = [*NANO, "--steps", "400", "--checkpoint-every", "40", "--batch-size", "4"]
    killed = _cli(*argv, runs=tmp_path / "a")
    deadline = time.monotonic() + 120
    states = tmp_path / "a" / "checkpoints"
    while not list(states.glob(f"[!.]*/{TRAINING_STATE}")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    (state,) = states.glob(f"[!.]*/{TRAINING_STATE}")
    run_id = state.parent.name
    assert runlog.RunStore(tmp_path / "a" / runlog.DB_NAME).list() == []  # killed: nothing recorded yet
    resumed = _cli(*argv, "--resume", run_id, runs=tmp_path / "a")
    straight = _cli(*argv, runs=tmp_path / "b")
    assert resumed.wait(240) == 0, resumed.stderr.read()
    assert straight.wait(240) == 0, straight.stderr.read()
    rec = runlog.RunStore(tmp_path / "a" / runlog.DB_NAME).get(run_id)
    assert rec.status == "done" and rec.history["train_steps"] == list(range(1, 401))  # the curve is whole
    (other,) = runlog.RunStore(tmp_path / "b" / runlog.DB_NAME).list()
    a, b = _weights(tmp_path / "a", run_id), _weights(tmp_path / "b", other.run_id)
    assert a.keys() == b.keys()
    for key in a:  # the same data, order and RNG: on one CPU thread the arithmetic is the same
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert rec.history["train_loss"] == pytest.approx(other.history["train_loss"], abs=1e-5)


def test_a_command_line_run_is_listed_for_a_student_and_loads_as_a_model(runs):
    assert main([*NANO, "--steps", "6", "--name", "cli-nano"]) == 0
    rec = _only_record()
    at = AppTest.from_file(HOME, default_timeout=300)
    at.session_state["app.lang"] = "fr"
    at.session_state["app.owner"] = "some-student"
    at.session_state["app.model"] = "tiny-random"
    at.switch_page(HISTORY).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    row = table[table[lookup("history.col.name", "fr")] == rec.name]
    assert list(row[lookup("history.col.yours", "fr")]) == [lookup("history.cli_mark", "fr")]
    at.selectbox(key="history.run").set_value(rec.run_id).run()
    assert not [b for b in at.button if b.key == "history.delete"]  # a student cannot delete it
    at.button(key="history.load").click().run()
    assert not at.exception, at.exception
    assert any(rec.name in unescape(s.value) for s in at.success)
    label = lookup("sidebar.finetuned", "fr").format(name=rec.name)
    assert label in at.sidebar.selectbox[0].options


def _run(cmd: list[str], runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLM_EXPLORER_RUNS": str(runs), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_with_two_processes_trains_as_one_and_writes_one_checkpoint_and_one_record(tmp_path):
    """gloo on the CPU: 2 processes x 1 micro-batch of 8 rows = 1 process x 2 micro-batches of 8 rows per step."""
    argv = [*NANO, "--steps", "8", "--batch-size", "8", "--grad-accum", "2", "--warmup", "2", "--json"]
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "gpt_core.train", *argv], tmp_path / "ddp")
    one = _run([sys.executable, "-m", "gpt_core.train", *argv], tmp_path / "one")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    events = [json.loads(line) for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert [e["type"] for e in events].count("done") == 1  # only the first process speaks
    (rec,) = runlog.RunStore(tmp_path / "ddp" / runlog.DB_NAME).list()
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()] == [rec.run_id]
    assert rec.config["processes"] == 2 and (rec.config["batch_size"], rec.config["grad_accum"]) == (8, 2)
    assert (rec.config["batch_per_process"], rec.config["grad_accum_per_process"]) == (8, 1)
    (solo,) = runlog.RunStore(tmp_path / "one" / runlog.DB_NAME).list()
    assert rec.history["train_loss"][-1] < rec.history["train_loss"][0]
    # The same rows per step, only summed in another order: measured here, the losses differ by 2.4e-7 and the
    # weights not at all. 1e-5 leaves room for other CPUs' rounding and stays 300x below one Adam update
    # (about lr = 3e-3 per weight), so one step trained differently would fail.
    assert rec.history["train_loss"] == pytest.approx(solo.history["train_loss"], abs=1e-5)
    a, b = _weights(tmp_path / "ddp", rec.run_id), _weights(tmp_path / "one", solo.run_id)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)


def test_classify_reads_a_csv_given_with_data(runs):
    rows = ["text,label"] + [f"la facture numéro {i} est fausse,facturation" for i in range(15)] + \
        [f"le wifi du bureau {i} ne marche plus,réseau" for i in range(15)]
    data = runs / "tickets.csv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["classify", "--model", "tiny-random", "--data", str(data), "--steps", "20", "--device", "cpu",
                 "--no-progress"]) == 0
    rec = _only_record()
    assert rec.config["examples"] == 30 and rec.metrics["accuracy"] == 1.0  # two classes a probe tells apart
