"""AppTest of the Data page: both offline backends, interactions and hostile input."""
import json
import time

import pytest
from streamlit.testing.v1 import AppTest

PAGE = "../pages/8_Data.py"


def run_page(model=None, lang=None, **state):
    at = AppTest.from_file(PAGE, default_timeout=180)
    if model:
        at.session_state["app.model"] = model
    if lang:
        at.session_state["app.lang"] = lang
    for key, value in state.items():
        at.session_state[f"data.{key}"] = value
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at):
    return [(m.label, m.value) for m in at.metric]


def metric(at, label):
    return dict(metrics(at))[label]


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def messages(at):
    return " ".join(str(e.value) for kind in ("info", "warning", "error") for e in at.get(kind))


def test_default_model_draws_every_part():
    at = run_page()
    figs = charts(at)
    titles = [f["layout"]["title"]["text"] for f in figs]
    assert titles[0].startswith("Concaténation EOT") and titles[1].startswith("Padding")
    assert titles[3].startswith("Fenêtres") and titles[4].startswith("Batch après collate")
    eot, pad = figs[0]["data"][0], figs[1]["data"][0]
    # the French default, Gemma 3, separates documents with <eos> (id 1): EOT cells exist and say so on hover
    assert any(1 in row for row in eot["z"])
    assert any("<eos>" in cell for row in eot["customdata"] for cell in row)
    assert len(eot["z"][0]) == 128 and len(pad["z"]) == 6                  # context 128, 6 documents
    wastes = [v for label, v in metrics(at) if label == "Calcul gaspillé"]
    assert len(wastes) == 2 and all("," in w for w in wastes)                  # French decimal comma
    assert float(wastes[1].split()[0].replace(",", ".")) > float(wastes[0].split()[0].replace(",", "."))
    assert "fin de texte = 1 · padding = 0" in " ".join(c.value for c in at.caption)
    assert figs[0]["layout"]["separators"] == ", "                                # French number marks
    collate = figs[4]["data"][0]
    assert collate["colorbar"]["ticktext"][4:] == ["-100 (padding)", "-100 (prompt)"]
    assert any(4 in row for row in collate["z"]) and not any(5 in row for row in collate["z"])


def test_tiny_random_stride_mask_prompt_and_gpt2_tokenizer():
    at = run_page("tiny-random")
    assert metric(at, "Recouvrement (tokens)") == "4"                      # max_length 8, stride 4
    n4 = int(metric(at, "Échantillons"))
    at.slider(key="_w.data.stride.fr").set_value(8).run()
    assert not at.exception, at.exception
    assert metric(at, "Recouvrement (tokens)") == "0"
    assert int(metric(at, "Échantillons")) == pytest.approx(n4 / 2, abs=1)
    shift = at.dataframe[0].value
    assert list(shift.index) == ["x : token", "x : id", "y : token", "y : id"]
    assert list(shift.iloc[1])[1:] == list(shift.iloc[3])[:-1]             # targets = inputs shifted by one
    assert metric(at, "-100 sur le prompt") == "0"
    at.checkbox(key="_w.data.mask_prompt.fr").check().run()
    assert not at.exception, at.exception
    assert int(metric(at, "-100 sur le prompt")) > 50
    assert any(5 in row for row in charts(at)[4]["data"][0]["z"])
    at.radio(key="_w.data.tok.fr").set_value("gpt2").run()
    assert not at.exception, at.exception
    assert "fin de texte = 50256" in " ".join(c.value for c in at.caption)


def test_pasted_text_short_and_blank():
    at = run_page("tiny-random", source="paste")
    assert not messages(at)
    rows = [v for label, v in metrics(at) if label == "Lignes × contexte"]
    assert rows == ["1 × 128", "3 × 128"]          # 3 short documents: one EOT row, one padded row each
    at.text_area(key="_w.data.text.fr").input("Bonjour").run()
    assert not at.exception, at.exception
    text = messages(at)
    assert "trop court" in text and "fenêtre glissante valide" in text      # windows and batches explain
    at.text_area(key="_w.data.text.fr").input("   \n  ").run()
    assert not at.exception, at.exception
    assert "que des espaces" in messages(at)


def test_batches_arithmetic_and_drop_last_refusal():
    at = run_page("tiny-random", source="paste", bs=32, window=10_000, context="oops")
    n = int(metric(at, "Échantillons"))
    assert at.slider(key="_w.data.window.fr").value == n - 1               # stale values are clamped
    assert at.select_slider(key="_w.data.context.fr").value == 128
    text = messages(at) + " ".join(m.value for m in at.markdown)
    assert "aucun batch complet" in text and "drop_last" in text
    assert metric(at, "Batchs par epoch") == "0"


def test_hugging_face_offline_gives_one_line_quickly():
    at = run_page("tiny-random", source="hf")
    assert "Cliquez sur le bouton" in messages(at)
    start = time.perf_counter()
    at.button(key="data.hf_button").click().run()
    assert not at.exception, at.exception
    assert time.perf_counter() - start < 20
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "injoignable" in errors[0] and "Traceback" not in errors[0]
    assert at.get("plotly_chart")                                          # the Alpaca tab still works


def test_language_switch_keeps_choices_and_pydoc_source():
    at = run_page("tiny-random", source="pydoc", tok="gpt2", stride=3)
    at.session_state["app.lang"] = "en"
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="_w.data.tok.en").value == "gpt2"                # a fresh English widget, same choice
    assert at.slider(key="_w.data.stride.en").value == 3
    assert at.selectbox(key="_w.data.source.en").value == "pydoc"
    labels = [label for label, _ in metrics(at)]
    assert "Wasted compute" in labels and "Samples" in labels
    assert "pydoc_data.topics" in " ".join(c.value for c in at.caption).replace("\\", "")  # Markdown-escaped
    assert charts(at)[0]["layout"]["title"]["text"].startswith("EOT concatenation")


# ------------------------------------------------- hostile input, in the UI language
FRENCH_MARKS = ("«", "»", "é", "è", "à", "ç", "ê", " le ", " la ", " les ", " est ", " une ", " des ", " du ", " : ")
ENGLISH_MARKS = (" the ", " is ", " must ", " cannot ", " holds ", " not ", " of ", " and ", " with ", " file ")


def other_language(text: str, lang: str) -> list[str]:
    """Marks of the other language found in ``text`` (Markdown escapes removed): empty when all is well."""
    probe = " " + text.replace("\\", "").lower() + " "
    return [m for m in (FRENCH_MARKS if lang == "en" else ENGLISH_MARKS) if m in probe]


def shown(at, kinds=("error", "warning", "info")) -> list[str]:
    return [str(e.value) for kind in kinds for e in at.get(kind)]


def expect_said(at, lang: str, expected: str | None = None, kinds=("error", "warning", "info")) -> None:
    """Something is shown, all of it in ``lang``, and ``expected`` (a locale sentence) among it."""
    from explorer.ui.messages import plain

    assert not at.exception, at.exception
    texts = shown(at, kinds)
    assert texts, "nothing shown"
    for text in texts:
        assert not other_language(text, lang), (lang, text)
    if expected is not None:
        assert any(plain(expected) in text or expected in text for text in texts), (expected, texts)


def speak(monkeypatch, lang: str) -> None:
    """AppTest draws option labels in the test's thread, where the session's language is unknown: tell it."""
    import explorer.ui.i18n as i18n
    import explorer.ui.messages as messages

    for module in (i18n, messages):
        monkeypatch.setattr(module, "current_lang", lambda: lang)


def refusal(fn, *args, lang: str, **kw) -> str:
    """What a ``lang`` reader is told when ``fn(*args, **kw)`` refuses its input."""
    from gpt_core.errors import GPTCoreError

    from said import en, fr

    with pytest.raises(GPTCoreError) as err:
        fn(*args, **kw)
    return (fr if lang == "fr" else en)(err.value)


HOSTILE_UPLOADS = [
    (b"caf\xe9 au lait", "latin1.txt"),                       # not UTF-8
    (b'[{"text": "a"},', "broken.json"),                      # bad JSON
    (b"label,score\nbug,1\n", "nocol.csv"),                   # no usable text column
    (b"", "empty.txt"),                                       # empty file
    (b'[{"text": "  "}]', "blank.json"),                      # only blank texts
    (b"[" * 100_000 + b"]" * 100_000, "deep.json"),           # nested too deeply for the parser
    (b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deep.jsonl"),
]


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_hostile_input_is_refused_in_the_ui_language(lang, monkeypatch):
    from explorer import corpus as C
    from explorer.ui.i18n import lookup
    from explorer.views import data as V

    files: dict = {}
    monkeypatch.setattr(V, "uploaded", lambda where, label, types, key: files.get(key))
    speak(monkeypatch, lang)
    at = run_page("tiny-random", lang=lang, source="paste")
    at.text_area(key=f"_w.data.text.{lang}").input("   \n  ").run()              # blank text
    expect_said(at, lang, lookup("input.blank", lang))
    at.text_area(key=f"_w.data.text.{lang}").input("Bonjour").run()              # too short for a window
    expect_said(at, lang, lookup("data.need_windows", lang))
    at.text_area(key=f"_w.data.text.{lang}").input(lookup("data.paste_default", lang)).run()
    at.slider(key=f"_w.data.bs.{lang}").set_value(32).run()                       # absurd batch size
    expect_said(at, lang)
    assert not other_language(" ".join(m.value for m in at.markdown if "drop_last" in m.value), lang)
    at.selectbox(key=f"_w.data.source.{lang}").set_value("upload").run()
    for data, name in HOSTILE_UPLOADS:
        files["_w.data.file"] = (data, name)
        at.run()
        expect_said(at, lang, refusal(C.load_corpus, "upload", upload=(data, name), lang=lang), ("error",))
    files["_w.data.inst_file"] = (b"instruction,input\nDis bonjour,\n", "inst.csv")  # no output column
    at.radio(key=f"_w.data.inst_src.{lang}").set_value("upload").run()
    expect_said(at, lang, refusal(C.instruction_records, files["_w.data.inst_file"], lang=lang), ("error",))


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_offline_hugging_face_is_said_in_the_ui_language(lang, monkeypatch):
    speak(monkeypatch, lang)
    at = run_page("tiny-random", lang=lang, source="hf")
    at.button(key="data.hf_button").click().run()
    expect_said(at, lang, kinds=("error",))


def test_a_csv_with_a_review_column_works_on_the_data_page(monkeypatch):
    from explorer.views import data as V

    upload = ('review,stars\n"Un film superbe, drôle et bien joué.",5\nBof.,2\n'.encode(), "avis.csv")
    monkeypatch.setattr(V, "uploaded", lambda where, label, types, key: upload if key == "_w.data.file" else None)
    at = run_page("tiny-random", source="upload")
    assert not [e.value for e in at.error]
    assert "avis.csv : 2 document(s)" in " ".join(c.value for c in at.caption).replace("\\", "")
    assert charts(at)[0]["layout"]["title"]["text"].startswith("Concaténation EOT")
