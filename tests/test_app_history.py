"""AppTest of the History page: runs recorded in a temporary LLM_EXPLORER_RUNS are listed, overlaid, reloaded, deleted."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from shown import unescape

from explorer import history as H
from explorer.ui.i18n import lookup
from gpt_core.config import GPTConfig
from gpt_core.errors import note
from gpt_core.model import GPT
from gpt_core.train import save_trained

PAGE = "../pages/13_History.py"
HOME = "../explorer/Home.py"
LOCALES = Path(__file__).resolve().parents[1] / "assets" / "locales"
ME, OTHER = "session-me", "session-other"
PRE_NAME, INSTRUCT_NAME = "pré-entraîné 14:02:11", "*gras* <b>instruit</b>"   # the second is not Markdown


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    store = H.RunStore()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, context_length=16, d_model=16, n_heads=2, n_layers=1)).eval()
    folder = H.checkpoint_dir("pre1", tmp_path)
    save_trained(model, folder, {"task": "lm"})
    store.record(H.RunRecord("pre1", "pretrain", "lm", "done", name=PRE_NAME, owner=ME, created_at=1_700_000_000.0,
                             finished_at=1_700_000_075.0, seconds=75.0, config={"tokenizer": "gpt2", "steps": 3},
                             history={"train_steps": [1, 2, 3], "train_loss": [10.5, 9.25, 8.0], "val_steps": [3],
                                      "val_loss": [8.5]},
                             metrics={"val_loss": 8.5, "sample": "Pour préparer une"},
                             checkpoint=H.relative_checkpoint(folder, tmp_path), message=note("train.finished", "Training finished: {steps} steps, training loss {train_loss}.", steps=3, train_loss=8.0)))
    store.record(H.RunRecord("inst1", "finetune", "instruct", "failed", name=INSTRUCT_NAME, base_model="tiny-random",
                             owner=OTHER, created_at=1_700_000_100.0, finished_at=1_700_000_200.0, seconds=100.0,
                             config={"tokenizer": "gpt2"}, history={"train_steps": [1, 2], "train_loss": [6.0, 5.5]},
                             message=note("jobs.failed", "The job failed ({kind}: {detail}).", kind="RuntimeError",
                                          detail="boom")))
    return tmp_path


TEACHER_PASSWORD = "craie-verte-42"


@pytest.fixture
def teacher(monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_TEACHER_PASSWORD", TEACHER_PASSWORD)


def page(lang: str = "fr", path: str = PAGE, teacher: bool = False) -> AppTest:
    at = AppTest.from_file(path, default_timeout=120)
    at.session_state["app.lang"] = lang
    at.session_state["app.owner"] = ME
    if teacher:
        at.session_state["app.teacher"] = True
    at.session_state["app.model"] = "tiny-random"
    at.run()
    assert not at.exception, at.exception
    return at


def figure(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def test_a_student_sees_only_their_own_runs(runs):
    at = page("en")
    assert list(at.dataframe[0].value["Model name"]) == [PRE_NAME]
    assert at.selectbox(key="history.run").options == [lookup("history.option", "en").format(
        name=PRE_NAME, date=time.strftime(lookup("history.date_format", "en"), time.localtime(1_700_000_075.0)))]
    assert INSTRUCT_NAME not in json.dumps(figure(at))


def test_a_stranger_sees_none(runs):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["app.lang"] = "en"
    at.session_state["app.owner"] = "f" * 32
    at.run()
    assert not at.exception, at.exception
    assert not at.dataframe and not at.get("plotly_chart")
    assert [i.value for i in at.info][0].startswith("No run recorded yet")


def _log_in(at: AppTest, password: str) -> None:
    next(w for w in at.text_input if w.label == "Teacher password").input(password)
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception


def test_teacher_mode_opens_with_the_password_only(runs, teacher):
    at = page("en")
    assert at.expander[-1].label == "Teacher mode"
    _log_in(at, "wrong")
    assert "Wrong password." in [e.value for e in at.error]
    assert list(at.dataframe[0].value["Model name"]) == [PRE_NAME]
    _log_in(at, TEACHER_PASSWORD)
    assert at.session_state["app.teacher"] is True
    assert list(at.dataframe[0].value["Model name"]) == [INSTRUCT_NAME, PRE_NAME]
    at.button(key="teacher.logout").click().run()
    assert list(at.dataframe[0].value["Model name"]) == [PRE_NAME]


def test_teacher_mode_is_off_without_a_password(runs, monkeypatch):
    monkeypatch.delenv("LLM_EXPLORER_TEACHER_PASSWORD", raising=False)
    at = page("en")
    at.session_state["app.teacher"] = True  # even a forged session flag opens nothing
    at.run()
    assert list(at.dataframe[0].value["Model name"]) == [PRE_NAME]
    assert not at.text_input
    assert any("Teacher mode is not enabled on this server" in c.value for c in at.caption)


def test_wrong_passwords_are_rate_limited_for_the_whole_server(runs, teacher, monkeypatch):
    from explorer.ui import identity

    monkeypatch.setattr(identity, "_failures", [])
    at = page("en")
    for _ in range(identity.MAX_FAILURES):
        _log_in(at, "guess")
    _log_in(at, TEACHER_PASSWORD)  # even the right one waits now
    assert at.error[0].value.startswith("Too many wrong passwords on this server")
    assert "app.teacher" not in at.session_state


def test_the_teacher_table_lists_every_run_in_french(runs, teacher):
    at = page("fr", teacher=True)
    table = at.dataframe[0].value
    assert list(table.columns) == ["À vous", "Terminé le", "Entraînement", "Nom du modèle", "État", "Durée",
                                   "Résultat final", "Checkpoint"]
    fmt = "%d/%m/%Y %H:%M"
    assert table.to_dict("records") == [
        {"À vous": "", "Terminé le": time.strftime(fmt, time.localtime(1_700_000_200.0)), "Entraînement": "fine-tuning (instructions)",
         "Nom du modèle": INSTRUCT_NAME, "État": "échoué", "Durée": "1,7 min",
         "Résultat final": "perte d'entraînement 5,500", "Checkpoint": "aucun"},
        {"À vous": "à vous", "Terminé le": time.strftime(fmt, time.localtime(1_700_000_075.0)),
         "Entraînement": "pré-entraînement", "Nom du modèle": PRE_NAME, "État": "terminé",
         "Durée": "75 s", "Résultat final": "perte de validation 8,500",
         "Checkpoint": f"{H.folder_bytes(runs / 'checkpoints' / 'pre1') / 1e6:.2f} Mo".replace(".", ",")},
    ]


def test_the_overlay_draws_one_trace_per_run_and_split(runs, teacher):
    at = page("fr", teacher=True)
    traces = figure(at)["data"]
    assert [t["name"] for t in traces] == [
        "*gras* &lt;b&gt;instruit&lt;/b&gt; · entraînement",       # a name is plain text in the legend
        f"{PRE_NAME} · entraînement", f"{PRE_NAME} · validation"]
    assert [t["line"]["dash"] for t in traces] == ["solid", "solid", "dash"]
    assert traces[1]["line"]["color"] == traces[2]["line"]["color"] != traces[0]["line"]["color"]
    assert traces[2]["x"] == [3] and traces[2]["y"] == [8.5] and traces[1]["y"] == [10.5, 9.25, 8.0]
    at.multiselect(key="history.compare").set_value(["pre1"]).run()
    assert [t["name"] for t in figure(at)["data"]] == [f"{PRE_NAME} · entraînement", f"{PRE_NAME} · validation"]
    at.multiselect(key="history.compare").set_value([]).run()
    assert not at.get("plotly_chart")


def test_load_as_model_offers_it_in_every_sidebar(runs, teacher):
    at = AppTest.from_file(HOME, default_timeout=300)
    at.session_state["app.lang"] = "en"
    at.session_state["app.owner"] = ME
    at.session_state["app.teacher"] = True  # sees the other student's run without a checkpoint
    at.session_state["app.model"] = "tiny-random"
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert PRE_NAME not in at.sidebar.selectbox[0].options
    at.selectbox(key="history.run").set_value("pre1").run()
    at.button(key="history.load").click().run()
    assert not at.exception, at.exception
    assert f"“{PRE_NAME}” is now in the sidebar's model list, on every page." in [unescape(s.value) for s in at.success]
    assert lookup("sidebar.finetuned", "en").format(name=PRE_NAME) in at.sidebar.selectbox[0].options
    at.button(key="history.load").click().run()
    assert f"“{PRE_NAME}” is already in the sidebar's model list." in [unescape(i.value) for i in at.info]
    # a classifier-free failed run has no checkpoint: no button, the reason instead
    at.selectbox(key="history.run").set_value("inst1").run()
    assert not [b for b in at.button if b.key == "history.load"]
    assert any("This run has no checkpoint" in c.value for c in at.caption)


def test_the_owner_deletes(runs):
    at = page("en")
    at.selectbox(key="history.run").set_value("pre1").run()
    at.button(key="history.delete").click().run()
    assert not at.exception, at.exception
    assert [unescape(s.value) for s in at.success] == [f"Run “{PRE_NAME}” deleted."]
    assert [r.run_id for r in H.RunStore().list()] == ["inst1"]
    assert not (runs / "checkpoints" / "pre1").exists()
    assert not at.dataframe  # nothing of this browser's is left


def test_an_empty_history_says_where_runs_come_from(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    at = page("fr")
    assert [i.value for i in at.info] == [
        "Aucun run enregistré pour l'instant : lancez-en un depuis la page Pré-entraînement ou Fine-tuning."]
    assert (tmp_path / H.DB_NAME).is_file()


def _english_pieces() -> set[str]:
    """The literal pieces of our English strings that differ from the French ones."""
    en, fr = ({} for _ in range(2))
    for lang, into in (("en", en), ("fr", fr)):
        for name in ("history.json", "core_history.json"):
            into.update(json.loads((LOCALES / lang / name).read_text(encoding="utf-8")))
    assert en.keys() == fr.keys()
    pieces = set()
    for key, text in en.items():
        if text != fr[key] and key != "history.date_format":
            pieces |= {p.strip(" .:…“”'()") for p in re.split(r"\{[^}]*\}", text)}
    return {p for p in pieces if len(p) >= 4 and p not in fr.values()}


def test_the_french_page_has_no_english_string_of_ours(runs, teacher):
    at = page("fr", teacher=True)
    at.selectbox(key="history.run").set_value("inst1").run()
    seen = [e.value for kind in ("title", "caption", "markdown", "subheader", "info", "success", "error", "text")
            for e in at.get(kind)]
    seen += [w.label for kind in ("button", "multiselect", "selectbox", "expander") for w in at.get(kind)]
    seen += [*at.multiselect[0].options, *at.selectbox(key="history.run").options]
    table = at.dataframe[0].value
    seen += [*table.columns, *(str(v) for v in table.to_numpy().ravel())]
    fig = figure(at)
    seen += [fig["layout"]["title"]["text"], fig["layout"]["xaxis"]["title"]["text"],
             fig["layout"]["yaxis"]["title"]["text"], *(t["name"] for t in fig["data"])]
    text = "\n".join(unescape(str(x)) for x in seen)
    assert "**Fin du run :** Le travail a échoué (RuntimeError : boom)." in text
    assert "Fine-tuné à partir de : GPT minuscule (preset « tiny ») — poids aléatoires" in text  # its name, not its key
    leaks = sorted(p for p in _english_pieces() if p in text)
    assert leaks == [], leaks
    assert "Réglages du run" in text and "Perte des runs choisis" in text
