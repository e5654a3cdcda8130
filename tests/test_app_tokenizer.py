"""AppTest of the tokenizer lab page: comparison, switching tokenizers, training, hostile input."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, core_key, shown

PAGE = "../pages/1_Tokenizer.py"


def barthez_available() -> bool:
    """BARThez comes from the hub (or its local cache): offline, the page must say it is missing."""
    from gpt_core.errors import HubUnavailable
    from gpt_core.tokenizers import load_tokenizer

    try:
        load_tokenizer("barthez")
    except HubUnavailable:
        return False
    return True


def messages(at, kinds=("info", "warning", "error", "success")):
    return shown(at, kinds)


@pytest.fixture()
def app():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def chart(at, i=0):
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def test_default_pair_gpt2_vs_barthez_falls_back_offline(app):
    fig = chart(app)
    stats = app.dataframe[0].value
    if barthez_available():  # a machine with the hub or a cached BARThez
        assert "BARThez" not in messages(app, ("warning",))
        assert fig["data"][1]["name"] == "BARThez (SentencePiece français, hub)"
    else:
        warning = messages(app, ("warning",))
        assert "BARThez est inaccessible" in warning and "Mistral SentencePiece" in warning
        assert stats["Jetons"].tolist() == [15, 14]
        assert fig["data"][1]["name"] == "Mistral SentencePiece (32 000)"
    assert len(stats) == 2 and fig["data"][0]["name"] == "GPT-2 (BPE d'octets, 50 257)"
    assert fig["data"][0]["y"] == [1, 2, 1, 1, 1, 5, 1, 3]  # l'Université -> 5 GPT-2 tokens
    assert fig["layout"]["xaxis"]["ticktext"][5] == "l'Université"
    chips = [h.value for h in app.get("html")]
    assert sum("40932" in h for h in chips) == 1  # the GPT-2 chip of "Je" carries its id in its title
    assert "[6528, 7957, 2088]" in messages(app, ("success",))  # BPE step-through == encode


def test_switch_tokenizers_and_examples(app):
    app.multiselect[0].set_value(["gpt2", "smollm2", "mistral-sp"]).run()
    assert not app.exception, app.exception
    assert len(app.dataframe[0].value) == 3 and len(chart(app)["data"]) == 3
    assert "BARThez" not in messages(app, ("warning",))
    app.selectbox(key="_w.tok.example").set_value("eot").run()
    assert not app.exception, app.exception
    stats = app.dataframe[0].value
    assert stats["Spéciaux"].tolist() == [1, 1, 0]  # SentencePiece reads <|endoftext|> as text
    app.toggle(key="_w.tok.special").set_value(False).run()
    assert app.dataframe[0].value["Spéciaux"].tolist() == [0, 0, 0]


def test_hostile_texts_never_crash(app):
    cases = [
        ("", "Écrivez du texte"),
        ("   \n ", "que des espaces"),
        ("é" * 100_000, "tronqué aux 10,000 premiers caractères"),
        ("famille 👩‍👩‍👧‍👦 🇫🇷 et مرحبا بالعالم שלום", None),
        ("nul\x00 bell\x07 esc\x1b fin", "caractère(s) de contrôle"),
    ]
    for text, expected in cases:
        app.text_area(key="_w.tok.text").input(text).run()
        assert not app.exception, (text[:20], app.exception)
        if expected:
            assert expected in messages(app), (text[:20], messages(app))
        else:
            assert app.dataframe[0].value["Repli sur octets"].tolist()[0] > 0


def test_train_and_add_to_comparison(app):
    app.radio(key="_w.tok.train_source").set_value("text").run()
    app.button(key="_w.tok.train_go").click().run()
    assert not app.exception, app.exception
    assert "plus petit que le vocabulaire" in messages(app, ("error",))
    app.radio(key="_w.tok.train_source").set_value("corpus_fr").run()
    app.button(key="_w.tok.train_go").click().run()
    assert not app.exception, app.exception
    assert "bpe-1000" in messages(app, ("success",)) and "aller-retour du corpus ✓" in messages(app, ("success",))
    assert app.multiselect[0].value[-1] == "trained:bpe-1000"
    assert app.dataframe[0].value["Tokenizer"].tolist()[-1] == "bpe-1000"


def test_uploads_invalid_utf8_and_large_file(app):
    app.radio(key="_w.tok.train_source").set_value("upload").run()
    app.file_uploader[0].set_value(("latin1.txt", "café crème".encode("latin-1"), "text/plain")).run()
    assert not app.exception, app.exception
    assert "pas du texte UTF-8 valide" in messages(app, ("error",))
    app.file_uploader[0].set_value(("big.txt", ("Le chat dort sur le tapis. " * 4000).encode(), "text/plain")).run()
    assert not app.exception, app.exception
    assert "Corpus : 108000 caractères." in [c.value for c in app.caption]


def test_round_trip_with_hostile_ids(app):
    box = app.text_area(key="_w.tok.rt_ids.0")
    assert box.value.split()[:3] == ["40932", "424", "271"]
    box.input("8001 811 x").run()
    assert not app.exception, app.exception
    assert "« x » (élément n° 3)" in messages(app, ("error",))
    app.text_area(key="_w.tok.rt_ids.0").input("tensor([[8001, 811, 34, 498, 493, 36, 15516, 38, 594]])").run()
    assert "ArtificCial intElliGence" in [c.value for c in app.code]


def test_english():
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["app.lang"] = "en"
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Tokenizer lab"
    assert at.dataframe[0].value.columns.tolist()[:3] == ["Tokenizer", "Vocabulary", "Tokens"]
    if not barthez_available():
        assert "BARThez cannot be reached" in messages(at, ("warning",))


def core_error(call, *args):
    """The locale key of the gpt_core error ``call(*args)`` raises (what the page must say)."""
    from gpt_core.errors import GPTCoreError

    with pytest.raises(GPTCoreError) as info:
        call(*args)
    return core_key(info.value)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_hostile_inputs_are_answered_in_the_ui_language(lang):
    from gpt_core import tokenlab
    from gpt_core.tokenizers import load_tokenizer

    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["app.lang"] = lang
    at.run()
    assert not at.exception, at.exception
    if not barthez_available():
        assert_said(messages(at, ("warning",)), "tokenizer.barthez_missing", lang)
    gpt2 = load_tokenizer("gpt2")
    for ids in ("8001 811 x", "8001 -5", "99999999"):          # ids -> text round trip
        at.text_area(key="_w.tok.rt_ids.0").input(ids).run()
        assert not at.exception, at.exception
        assert_said(messages(at, ("error",)), core_error(tokenlab.round_trip, gpt2, ids), lang)
    at.text_input(key="_w.tok.bpe_word").input("   ").run()  # BPE step-through of nothing
    assert_said(messages(at, ("info",)), "tokenizer.bpe_empty", lang)
    text = at.text_area(key="_w.tok.text").value                # training on a corpus far too small
    at.radio(key="_w.tok.train_source").set_value("text").run()
    at.button(key="_w.tok.train_go").click().run()
    assert not at.exception, at.exception
    assert_said(messages(at, ("error",)), core_error(tokenlab.train_bpe, text, 1000), lang)
    latin1 = "café crème".encode("latin-1")                    # an upload that is not UTF-8
    at.radio(key="_w.tok.train_source").set_value("upload").run()
    at.file_uploader[0].set_value(("latin1.txt", latin1, "text/plain")).run()
    assert_said(messages(at, ("error",)), core_error(tokenlab.read_upload, latin1, tokenlab.MAX_TRAIN_CHARS), lang)
    for text, key in (("", "input.empty"), ("  \n ", "input.blank")):
        at.text_area(key="_w.tok.text").input(text).run()
        assert not at.exception, at.exception
        assert_said(messages(at), key, lang)
