"""Tracking and judging: Weights & Biases offline runs, the Ollama judge of before/after answers, the JSON export."""
from __future__ import annotations

import http.server
import json
import socket
import struct
import sys
import time
import types

import pytest
from local_server import serving

from gpt_core.errors import InvalidInput
from gpt_core.evaluate import (
    OllamaUnavailable, WandbLogger, answers_json, judge_comparison, judge_items, wandb_logger,
)
from said import en, fr

STEP_EVENTS = [
    {"type": "step", "step": 1, "train_loss": 2.5, "lr": 1e-3, "tokens_seen": 64, "elapsed": 0.1, "epoch": 0},
    {"type": "sample", "step": 1, "text": "Pour préparer une *crêpe*"},
    {"type": "step", "step": 2, "train_loss": 2.0, "lr": 5e-4, "tokens_seen": 128, "elapsed": 0.2, "epoch": 0},
    {"type": "eval", "step": 2, "val_loss": 2.25, "perplexity": 9.5, "train_loss": 2.25, "elapsed": 0.3},
    {"type": "sample", "step": 2, "text": "Pour préparer une pâte"},
    {"type": "done", "step": 2, "history": {}, "message": None, "checkpoint": None, "elapsed": 0.4},
]


# ------------------------------------------------------------------ wandb
def _quiet_offline_wandb(monkeypatch, tmp_path):
    """wandb quiet, offline, and writing nothing outside tmp_path (for this test only)."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_default"))
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _wandb_records(path):
    """The records of a ``run-*.wandb`` file (a LevelDB-style log of protobuf records, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    block, header = 32768, 7
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, parts = header, b""  # the file header takes the first 7 bytes
    while pos + header <= len(data):
        if block - pos % block < header:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        if (kind == 0 and length == 0) or pos + header + length > len(data):  # the end, or a record being written
            break
        parts += data[pos + header:pos + header + length]
        pos += header + length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE/LAST
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def _written_records(path, patience: float = 20.0) -> list:
    """The records once wandb's service has written them all (it flushes the file just after ``finish``)."""
    deadline = time.monotonic() + patience
    while True:
        records = list(_wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_writes_run_directory(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    _quiet_offline_wandb(monkeypatch, tmp_path)
    logger, said = wandb_logger("llm-explorer", {"lr": 0.001, "steps": 2}, dir=tmp_path / "runs" / "wandb")
    assert isinstance(logger, WandbLogger) and logger.offline
    run_dir = logger.run_dir
    assert run_dir.parent == tmp_path / "runs" / "wandb" / "wandb" and run_dir.name.startswith("offline-run-")
    assert said.code == "evaluate.wandb_offline"
    assert fr(said) == (f"Weights & Biases fonctionne hors ligne : le suivi est écrit dans {run_dir} ; "
                        f"envoyez-le plus tard avec « wandb sync {run_dir} ».")
    assert en(said) == (f"Weights & Biases runs offline: the run is written in {run_dir}; "
                        f"upload it later with 'wandb sync {run_dir}'.")
    for event in STEP_EVENTS:
        logger.log(event)
    assert logger.finish() == run_dir
    assert logger.finish() == run_dir  # a second finish is harmless

    files = sorted(run_dir.glob("run-*.wandb"))
    assert [f.name for f in files] == [f"run-{run_dir.name.rsplit('-', 1)[1]}.wandb"]
    records = _written_records(files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "llm-explorer"
    assert {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"} == {"lr": 0.001, "steps": 2}
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            history[row["_step"]] = {k: v for k, v in row.items() if k.startswith(("train/", "val/"))}
    assert history == {
        1: {"train/loss": 2.5, "train/lr": 1e-3, "train/tokens_seen": 64, "train/epoch": 0, "train/elapsed_s": 0.1},
        2: {"train/loss": 2.0, "train/lr": 5e-4, "train/tokens_seen": 128, "train/epoch": 0, "train/elapsed_s": 0.2,
            "val/loss": 2.25, "val/perplexity": 9.5},
    }
    summary = {_key(u): json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for u in r.summary.update}
    assert (summary["status"], summary["final_step"], summary["val/loss"]) == ("done", 2, 2.25)
    assert any(r.WhichOneof("record_type") == "exit" and r.exit.exit_code == 0 for r in records)
    # the samples, as text: the last table holds both
    tables = sorted((run_dir / "files" / "media" / "table").glob("samples_*.table.json"))
    assert len(tables) == 2
    last = json.loads(max(tables, key=lambda p: int(p.name.split("_")[1])).read_text(encoding="utf-8"))
    assert last["columns"] == ["step", "text"]
    assert last["data"] == [[1, "Pour préparer une *crêpe*"], [2, "Pour préparer une pâte"]]
    assert not (tmp_path / "wandb_default").exists()  # the dir given wins over WANDB_DIR


def test_wandb_not_installed_is_said(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails
    logger, said = wandb_logger("llm-explorer", dir=tmp_path)
    assert logger is None
    assert fr(said) == ("Le paquet wandb n'est pas installé (pip install wandb) : suivi Weights & Biases "
                        "désactivé.")
    assert en(said) == "The wandb package is not installed (pip install wandb): Weights & Biases tracking is off."


class _FakeRun:
    def __init__(self, mode, root):
        self.logged, self.summary, self.exit_code = [], {}, None
        self.settings = types.SimpleNamespace(sync_dir=str(root / f"{mode}-run-x"))
        self.url = "https://wandb.ai/me/llm-explorer/runs/x" if mode == "online" else None

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def _fake_wandb(monkeypatch, tmp_path, online_error=None):
    calls = []

    def init(project, config, dir, mode, reinit, settings):
        calls.append((project, mode, reinit))
        if mode == "online" and online_error:
            raise online_error
        return _FakeRun(mode, tmp_path)

    fake = types.SimpleNamespace(init=init, Settings=lambda **kw: kw, Table=None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return calls


def test_wandb_online_only_with_credentials_and_when_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    calls = _fake_wandb(monkeypatch, tmp_path)
    logger, said = wandb_logger("llm-explorer", online=True)  # asked, but no account: offline
    assert logger.offline and said.code == "evaluate.wandb_no_login"
    assert fr(said).startswith("Weights & Biases n'est pas configuré (« wandb login » ou WANDB_API_KEY) : le suivi "
                               f"est écrit hors ligne dans {tmp_path / 'offline-run-x'} ;")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    logger, said = wandb_logger("llm-explorer")  # an account, but not asked: offline
    assert logger.offline and said.code == "evaluate.wandb_offline"
    logger, said = wandb_logger("llm-explorer", online=True)
    assert not logger.offline and en(said) == "Weights & Biases logs this run online: https://wandb.ai/me/llm-explorer/runs/x"
    assert calls == [("llm-explorer", "offline", "create_new")] * 2 + [("llm-explorer", "online", "create_new")]


def test_wandb_falls_back_offline_when_the_server_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    calls = _fake_wandb(monkeypatch, tmp_path, online_error=ConnectionError("network unreachable"))
    logger, said = wandb_logger("llm-explorer", online=True)
    assert [mode for _, mode, _ in calls] == ["online", "offline"] and logger.offline
    path = tmp_path / "offline-run-x"
    assert fr(said) == (f"Weights & Biases n'a pas pu joindre son serveur (network unreachable) : le suivi est écrit "
                        f"hors ligne dans {path} ; envoyez-le plus tard avec « wandb sync {path} ».")
    for event in STEP_EVENTS[:2] + [{"type": "diverged", "step": 3, "elapsed": 1.0}]:
        logger.log(event)
    run = logger.run
    assert run.logged == [(1, {"train/loss": 2.5, "train/lr": 1e-3, "train/tokens_seen": 64, "train/epoch": 0,
                               "train/elapsed_s": 0.1}),
                          (1, {"sample": "Pour préparer une *crêpe*"})]  # no wandb.Table: the text itself
    assert logger.finish() == path and run.exit_code == 1  # a diverged run is marked failed
    assert run.summary == {"status": "diverged", "final_step": 3, "elapsed_s": 1.0}


@pytest.mark.parametrize("project, code", [("", "evaluate.wandb_no_project"), ("mon projet", "evaluate.wandb_bad_project"),
                                           ("x" * 65, "evaluate.wandb_bad_project"),
                                           ("../../etc", "evaluate.wandb_bad_project")])
def test_wandb_refuses_bad_project_names(monkeypatch, tmp_path, project, code):
    calls = _fake_wandb(monkeypatch, tmp_path)
    logger, said = wandb_logger(project)
    assert logger is None and said.code == code and calls == []
    if code == "evaluate.wandb_bad_project":
        assert fr(said) == "Un nom de projet Weights & Biases contient de 1 à 64 lettres, chiffres, « - » ou « _ »."


# ------------------------------------------------------------------ judge
ROWS = [
    {"instruction": "Traduis en anglais.", "input": "le soleil", "expected": "the sun",
     "before": "soleil soleil soleil", "after": "the sun"},
    {"instruction": "Convertis 3 heures en minutes.", "input": "", "expected": "180 minutes.",
     "before": "", "after": "180 minutes"},
]


def test_judge_items_pick_the_answers():
    assert judge_items(ROWS) == [
        {"instruction": "Traduis en anglais.", "input": "le soleil", "expected": "the sun", "generated": "the sun"},
        {"instruction": "Convertis 3 heures en minutes.", "input": "", "expected": "180 minutes.",
         "generated": "180 minutes"}]
    assert [i["generated"] for i in judge_items(ROWS, "before")] == ["soleil soleil soleil", ""]
    with pytest.raises(InvalidInput) as err:
        judge_items(ROWS, "during")
    assert fr(err.value) == "Choisissez les réponses à noter : « after » (après) ou « before » (avant), pas 'during'."


def _closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_judge_without_server():
    port = _closed_port()
    with pytest.raises(OllamaUnavailable) as err:
        judge_comparison(ROWS, model="llama3", url=f"http://127.0.0.1:{port}", timeout=1)
    assert fr(err.value) == (f"Aucun serveur Ollama ne répond sur 127.0.0.1:{port} : installez Ollama, lancez "
                             "« ollama serve » puis « ollama pull llama3 ».")
    assert en(err.value) == (f"No Ollama server answers on 127.0.0.1:{port}: install Ollama, run 'ollama serve' "
                             "then 'ollama pull llama3' ([Errno 111] Connection refused).")
    with pytest.raises(InvalidInput) as err:
        judge_comparison([], url=f"http://127.0.0.1:{port}")
    assert fr(err.value) == "Il n'y a aucune réponse à noter."


REPLIES = {"the sun": "90", "180 minutes": "Score : 75/100", "soleil soleil soleil": "10", "": "je ne sais pas"}


class _FakeOllama(http.server.BaseHTTPRequestHandler):
    prompts: list = []

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _send(self, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self._send({"models": [{"name": "llama3:latest"}]} if self.path == "/api/tags" else {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).prompts.append(body["prompt"])
        graded = body["prompt"].split("Answer to grade:\n", 1)[1].split("\n\n", 1)[0]
        self._send({"model": body["model"], "response": REPLIES[graded], "done": True})


@pytest.fixture
def fake_ollama():
    _FakeOllama.prompts = []
    with serving(_FakeOllama) as url:
        yield url


def test_judge_with_a_fake_server(fake_ollama):
    result = judge_comparison(ROWS, model="llama3", url=fake_ollama)
    assert result["after"]["scores"] == [90, 75] and result["after"]["mean"] == 82.5
    assert result["before"]["scores"] == [10, None] and result["before"]["mean"] == 10
    assert len(_FakeOllama.prompts) == 4 and "Reference answer:\nthe sun" in _FakeOllama.prompts[0]
    no_before = [{**row, "before": None} for row in ROWS]
    assert judge_comparison(no_before, url=fake_ollama)["before"] is None


# ------------------------------------------------------------------ export
def test_answers_json_as_in_the_course():
    assert json.loads(answers_json(ROWS)) == [
        {"instruction": "Traduis en anglais.", "input": "le soleil", "output": "the sun",
         "model_response": "the sun", "model_response_before": "soleil soleil soleil"},
        {"instruction": "Convertis 3 heures en minutes.", "input": "", "output": "180 minutes.",
         "model_response": "180 minutes", "model_response_before": ""},
    ]
    judged = {"after": {"scores": [90, 75], "mean": 82.5}, "before": {"scores": [10, None], "mean": 10.0}}
    text = answers_json(ROWS, judged)
    assert text == """[
    {
        "instruction": "Traduis en anglais.",
        "input": "le soleil",
        "output": "the sun",
        "model_response": "the sun",
        "model_response_before": "soleil soleil soleil",
        "judge_score": 90,
        "judge_score_before": 10
    },
    {
        "instruction": "Convertis 3 heures en minutes.",
        "input": "",
        "output": "180 minutes.",
        "model_response": "180 minutes",
        "model_response_before": "",
        "judge_score": 75,
        "judge_score_before": null
    }
]"""
