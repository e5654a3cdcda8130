"""The tracking view as a page draws it: the judge panel (no server, a fake one), the JSON export, the W&B options."""
from __future__ import annotations

import json
import sys

import pytest
import streamlit.testing.v1.app_test as app_test
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from shown import unescape
from test_tracking import ROWS, _closed_port, fake_ollama  # noqa: F401  (a fixture)


class _Storage(MemoryMediaFileStorage):
    """The media store of AppTest's last run, kept so a test can read what a download button offers."""

    last: "_Storage | None" = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        type(self).last = self


@pytest.fixture
def downloads(monkeypatch):
    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", _Storage)

    def read(button, what: str = "content"):
        return getattr(_Storage.last.get_file(button.proto.url.rsplit("/", 1)[1]), what)
    return read


def _panel(rows, lang):
    import streamlit as st

    from explorer.views.tracking import judge_panel

    st.session_state["app.lang"] = lang
    judge_panel(rows, "finetune", "job-7")


def _options(lang):
    import streamlit as st

    from explorer.views.tracking import tracking_options

    st.session_state["app.lang"] = lang
    st.session_state["out"] = tracking_options("finetune")


def _run(script, *args) -> AppTest:
    at = AppTest.from_function(script, args=args, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_judge_panel_without_server_says_so_in_french(monkeypatch, downloads):
    port = _closed_port()
    monkeypatch.setenv("LLM_EXPLORER_OLLAMA_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LLM_EXPLORER_OLLAMA_MODEL", "llama3")
    at = _run(_panel, ROWS, "fr")
    assert [b.label for b in at.button] == ["Faire noter par le juge (Ollama)"]
    assert f"servi par Ollama sur 127.0.0.1:{port}" in unescape(at.caption[0].value)
    assert not at.error
    button = at.get("download_button")[0]
    assert button.proto.label == "Télécharger les réponses (JSON)"
    assert json.loads(downloads(button)) == [
        {"instruction": r["instruction"], "input": r["input"], "output": r["expected"], "model_response": r["after"],
         "model_response_before": r["before"]} for r in ROWS]
    assert downloads(button, "filename") == "finetune-job-7-instruction-data-with-response.json"

    at.button[0].click().run()
    assert [unescape(e.value) for e in at.error] == [
        f"Aucun serveur Ollama ne répond sur 127.0.0.1:{port} : installez Ollama, lancez « ollama serve » puis "
        "« ollama pull llama3 »."]
    assert at.session_state["finetune.judge.job-7"]["error"].code == "evaluate.ollama_down"
    at.run()  # the result stays for this run
    assert len(at.error) == 1 and not at.get("arrow_data_frame")


def test_judge_panel_with_a_fake_server_shows_the_scores(monkeypatch, downloads, fake_ollama):
    monkeypatch.setenv("LLM_EXPLORER_OLLAMA_URL", fake_ollama)
    at = _run(_panel, ROWS, "fr")
    at.button[0].click().run()
    assert not at.error
    table = at.dataframe[0].value
    assert table.columns.tolist() == ["#", "Instruction", "Note après", "Note avant"]
    assert table.values.tolist() == [["1", "Traduis en anglais.", "90", "10"],
                                     ["2", "Convertis 3 heures en minutes.", "75", "–"]]
    assert [(m.label, m.value) for m in at.metric] == [("Note moyenne après l'entraînement", "82,5"),
                                                      ("Note moyenne avant l'entraînement", "10,0")]
    exported = json.loads(downloads(at.get("download_button")[0]))
    assert [(e["judge_score"], e["judge_score_before"]) for e in exported] == [(90, 10), (75, None)]


def test_tracking_options_cleans_the_project_name():
    at = _run(_options, "fr")
    assert [c.label for c in at.checkbox][0] == "Suivre cet entraînement avec Weights & Biases"
    assert at.session_state["out"] == {"wandb": False, "project": "llm-explorer", "online": False}
    at.checkbox[0].check().run()
    at.text_input[0].input("mon projet <b>x</b>").run()
    assert at.session_state["out"] == {"wandb": True, "project": "mon-projet-b-x-b", "online": False}
    assert [unescape(w.value) for w in at.warning] == [
        "Un nom de projet ne garde que des lettres, des chiffres, - et _ (64 au plus) : "
        "le projet « mon-projet-b-x-b » sera utilisé."]


def test_tracking_options_without_wandb(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    at = _run(_options, "en")
    assert [i.value for i in at.info] == [
        "The wandb package is not installed on this server (pip install wandb): Weights & Biases tracking is "
        "unavailable."]
    assert at.checkbox[0].disabled
    assert at.session_state["out"]["wandb"] is False
