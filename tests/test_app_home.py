"""AppTest of the entry script and the Home page, including hostile input."""
import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, shown

HOME = "../explorer/Home.py"


@pytest.fixture()
def app():
    at = AppTest.from_file(HOME, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at):
    return shown(at, ("info", "warning", "error"))


def test_home_shows_model_card_and_top10(app):
    labels = [m.label for m in app.metric]
    assert "Paramètres" in labels and "Couches" in labels
    assert dict((m.label, m.value) for m in app.metric)["Couches"] == "18"  # Gemma 3 270M, the French default
    assert dict((m.label, m.value) for m in app.metric)["Mémoire (poids)"].endswith(" Mo")  # French units
    assert app.text_area[0].value == "Le chat dort sur le"
    charts = app.get("plotly_chart")
    assert charts, "the top-10 chart is missing"
    import json

    fig = json.loads(charts[0].proto.spec)
    assert len(fig["data"][0]["x"]) == 10
    assert abs(sum(fig["data"][0]["x"]) - 1) < 1  # probabilities
    table = app.dataframe[0].value
    assert len(table) == 10
    assert table.iloc[0, 1].startswith("“ lit”") and table.iloc[0, 2] == "22,99\u202f%"  # French percent


def test_home_names_the_gemma_licence(app):
    shown_text = " ".join(x.value for x in app.get("text"))
    assert "Gemma 3 270M — Gemma Terms of Use" in shown_text and "GEMMA_TERMS.html" in shown_text
    assert "SmolLM2-135M-Instruct — Apache-2.0" in shown_text


def test_language_switch_to_english(app):
    app.sidebar.radio[0].set_value("en").run()
    assert not app.exception
    assert "Parameters" in [m.label for m in app.metric]
    assert dict((m.label, m.value) for m in app.metric)["Memory (weights)"].endswith(" MB")
    captions = " ".join(c.value for c in app.caption)
    assert "Gemma 3 270M base, multilingual — embedded (offline" in captions  # source label in English too


@pytest.mark.parametrize("text, expected", [
    ("", "Écrivez du texte"),
    ("   \n\t ", "que des espaces"),
    ("a" * 20_000, "tronqué aux 5,000 premiers caractères"),
    ("bonjour\x00\x07 le\x1b monde", "caractère(s) de contrôle"),
])
def test_hostile_text_gives_a_message(app, text, expected):
    app.text_area[0].input(text).run()
    assert not app.exception, app.exception
    assert expected in texts(app)


@pytest.mark.parametrize("text", ["👩‍👩‍👧‍👦 famille 🇫🇷", "مرحبا بالعالم שלום עולם", "é" * 3000])
def test_unusual_text_renders(app, text):
    app.text_area[0].input(text).run()
    assert not app.exception, app.exception
    assert app.get("plotly_chart")


def test_more_tokens_than_context_truncates_with_notice(monkeypatch):
    # a tiny model has a 128-token window: a long text must be cut, with a notice
    at = AppTest.from_file(HOME, default_timeout=120)
    at.session_state["app.model"] = "tiny-random"
    at.run()
    at.text_area[0].input("mot " * 400).run()
    assert not at.exception, at.exception
    assert "dépassent la fenêtre de contexte de 128" in texts(at)


def test_check_text_replaces_lone_surrogates():
    # a browser cannot send these, but an upload decoded with surrogateescape can
    from explorer.ui.text_input import check_text

    checked = check_text("x\ud800y")
    assert checked.text == "x\ufffdy"
    assert any("surrogates" in m or "substituts" in m for _, m in checked.messages)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_hostile_text_is_answered_in_the_ui_language(lang):
    """Every message a hostile text can trigger on Home is the locale's sentence, never the other language's."""
    at = AppTest.from_file(HOME, default_timeout=120)
    at.session_state["app.model"] = "tiny-random"   # a 128-token window: a long text is cut
    at.session_state["app.lang"] = lang
    at.run()
    cases = [("", "input.empty"), ("   \n\t ", "input.blank"), ("a" * 20_000, "input.truncated_chars"),
             ("bonjour\x00\x07 le\x1b monde", "input.control"), ("mot " * 400, "input.truncated_tokens")]
    for text, key in cases:
        at.text_area[0].input(text).run()
        assert not at.exception, at.exception
        assert_said(texts(at), key, lang)


def test_the_local_box_loads_from_this_disk_only_and_stays_open_after_a_refusal(tmp_path):
    """A hub id is a (missing) folder; missing, file and config-less folders get one sentence (no disk probing)."""
    at = AppTest.from_file(HOME, default_timeout=180)
    at.session_state["app.lang"] = "fr"
    at.run()
    at.sidebar.selectbox(key="_w.app.model").set_value("local").run()
    file = tmp_path / "a-file.txt"
    file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    said = []
    for typed in ("bigscience/bloom", str(tmp_path / "missing"), str(file), str(empty), "~nobody-here/x", "a\x00b"):
        at.sidebar.text_input(key="_w.app.local_dir").input(typed).run()
        assert not at.exception, at.exception
        errors = [str(e.value) for e in at.error if "Impossible de charger ce modèle" in str(e.value)]
        assert len(errors) == 1, (typed, [str(e.value) for e in at.error])
        said.append(errors[0])
        assert at.session_state["app.model"] == "local"  # the box stays: the next folder typed is tried
    assert len(set(said)) == 1 and "aucun modèle utilisable à cet emplacement de ce serveur" in said[0]
