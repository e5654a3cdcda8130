"""AppTest of the tokenizer lab page: comparison, French/English contrast, switching tokenizers, training,
ids -> text, hostile input, in both UI languages."""
import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, core_key, shown

PAGE = "../pages/1_Tokenizer.py"
SHERBROOKE = {"fr": "Je suis au campus de l'Université de Sherbrooke",
              "en": "I am on the campus of the University of Sherbrooke"}
LANG_TITLE = {"fr": "Texte français", "en": "French text"}


def barthez_available() -> bool:
    """BARThez comes from the hub (or its local cache): offline, the page must say it is missing."""
    from gpt_core.errors import HubUnavailable
    from gpt_core.tokenizers import load_tokenizer

    try:
        load_tokenizer("barthez")
    except HubUnavailable:
        return False
    return True


@pytest.fixture(scope="module")
def offline():
    return not barthez_available()


def messages(at, kinds=("info", "warning", "error", "success")):
    return shown(at, kinds)


def start(lang="fr"):
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["app.lang"] = lang
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture()
def app():
    return start("fr")


def figures(at):
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def language_chart(at):
    """The tokens-per-word chart on the reference texts (its traces are the two languages)."""
    found = [f for f in figures(at) if f["data"][0]["name"] in LANG_TITLE.values()]
    assert len(found) == 1, [f["data"][0]["name"] for f in figures(at)]
    return found[0]


def word_chart(at):
    found = [f for f in figures(at) if f["data"][0]["name"] not in LANG_TITLE.values()]
    assert len(found) == 1
    return found[0]


def stats(at):
    return at.dataframe[0].value


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_offline_the_lab_compares_gpt2_with_gemma_and_two_bpes(lang, offline):
    at = start(lang)
    table = stats(at)
    names = table.columns[0]
    if not offline:  # a machine with the hub or a cached BARThez: the course's pair
        assert table[names].tolist()[1].startswith("BARThez")
        return
    assert_said(messages(at, ("warning",)), "tokenizer.offline_stand_ins", lang)
    assert len(at.get("warning")) == 1  # one clear line
    if lang == "fr":
        assert messages(at, ("warning",)) == (
            "BARThez (SentencePiece français, hub) est inaccessible hors ligne (hub Hugging Face injoignable) : à sa "
            "place, la comparaison montre Gemma 3 (multilingue, 262\u202f144), BPE français appris ici (1\u202f600) et "
            "BPE anglais appris ici (1\u202f600).")
        assert table[names].tolist() == ["GPT-2 (BPE d'octets, 50 257)", "Gemma 3 (multilingue, 262\u202f144)",
                                         "BPE français appris ici (1\u202f600)", "BPE anglais appris ici (1\u202f600)"]
        assert table["Jetons"].tolist() == [15, 11, 24, 30]
        assert table["Jetons / mot"].tolist() == ["1,88", "1,38", "3,00", "3,75"]
        assert table["Vocabulaire"].tolist() == ["50\u202f257", "262\u202f144", "1\u202f600", "1\u202f600"]
    else:
        assert table[names].tolist() == ["GPT-2 (byte-level BPE, 50,257)", "Gemma 3 (multilingual, 262,144)",
                                         "French BPE learnt here (1,600)", "English BPE learnt here (1,600)"]
        assert table["Tokens"].tolist() == [12, 11, 30, 25]
        assert table["Tokens / word"].tolist() == ["1.20", "1.10", "3.00", "2.50"]


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_tokens_per_word_chart_on_the_reference_texts(lang, offline):
    at = start(lang)
    fig = language_chart(at)
    assert fig["layout"]["separators"] == (", " if lang == "fr" else ".,")
    assert fig["layout"]["barmode"] == "group"
    assert [d["name"] for d in fig["data"]] == (["Texte français", "Texte anglais"] if lang == "fr"
                                                else ["French text", "English text"])
    assert all(d["texttemplate"] == "%{y:.2f}" for d in fig["data"])
    french, english = ({x: y for x, y in zip(d["x"], d["y"])} for d in fig["data"])
    gpt2 = next(x for x in french if x.startswith("GPT-2"))
    assert french[gpt2] == pytest.approx(115 / 57) and english[gpt2] == pytest.approx(68 / 57)
    if offline:
        gemma, bpe_fr, bpe_en = list(french)[1:]
        assert gemma.startswith("Gemma 3<br>(")  # the details on a second line, the label whole
        assert french[gemma] == pytest.approx(77 / 57) and french[gemma] < french[gpt2]
        assert french[bpe_fr] == pytest.approx(98 / 57) and french[bpe_fr] < french[gpt2]
        assert french[bpe_fr] < english[bpe_fr] and english[bpe_en] < french[bpe_en]  # cheap on its own language
        hover = fig["data"][0]["customdata"][1]
        assert hover == ("Gemma 3 (multilingue, 262\u202f144) : 77 jetons pour 57 mots" if lang == "fr"
                         else "Gemma 3 (multilingual, 262,144): 77 tokens for 57 words")
        note = " ".join(c.value for c in at.caption)
        assert_said(note, "tokenizer.lang_bpe_note", lang)
    assert_said(" ".join(h.value for h in at.subheader), "tokenizer.lang_title", lang)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_default_example_is_in_the_ui_language_and_follows_a_switch(lang):
    at = start(lang)
    assert at.text_area(key="_w.tok.text").value == SHERBROOKE[lang]
    other = "en" if lang == "fr" else "fr"
    at.session_state["app.lang"] = other
    at.run()
    assert not at.exception, at.exception
    assert at.text_area(key="_w.tok.text").value == SHERBROOKE[other]  # untouched text follows the language
    gpt2 = {"fr": "GPT-2 (BPE d'octets, 50 257)", "en": "GPT-2 (byte-level BPE, 50,257)"}
    assert at.multiselect[0].options[0] == gpt2[other]  # the chosen tokenizers are named in the new language
    assert at.multiselect[0].value == ["gpt2", "barthez"]
    at.text_area(key="_w.tok.text").input("Mon propre texte").run()
    at.session_state["app.lang"] = lang
    at.run()
    assert at.text_area(key="_w.tok.text").value == "Mon propre texte"  # the user's own text stays


def test_course_pair_on_the_seed_sentence(app):
    fig = word_chart(app)
    assert fig["data"][0]["name"] == "GPT-2 (BPE d'octets, 50 257)"
    assert fig["data"][0]["y"] == [1, 2, 1, 1, 1, 5, 1, 3]  # l'Université -> 5 GPT-2 tokens
    assert fig["layout"]["xaxis"]["ticktext"][5] == "l'Université"
    chips = [h.value for h in app.get("html")]
    assert sum("40932" in h for h in chips) == 1  # the GPT-2 chip of "Je" carries its id in its title
    assert "[6528, 7957, 2088]" in messages(app, ("success",))  # BPE step-through == encode


def test_chips_never_break_inside_a_token(app):
    gpt2 = next(h.value for h in app.get("html") if "40932" in h.value)
    chips = gpt2.split("<wbr>")  # the only places a line may break
    assert len(chips) == 15
    assert all("white-space:pre;" in c for c in chips)
    assert any("'> de</span>" in c for c in chips)  # " de": the space and its word in one chip


def test_long_words_are_whole_under_their_bars(app):
    app.selectbox(key="_w.tok.example.fr").set_value("long_words").run()
    assert not app.exception, app.exception
    axis = word_chart(app)["layout"]["xaxis"]
    assert axis["ticktext"] == ["anticonstitutionnellement", "hippopotomonstrosesquippedaliophobie",
                                "électroencéphalographie", "intergouvernementalisation"]
    assert axis["automargin"] is True and axis["tickangle"] == -45


def test_switch_tokenizers_and_examples(app):
    app.multiselect[0].set_value(["gpt2", "smollm2", "mistral-sp"]).run()
    assert not app.exception, app.exception
    assert len(stats(app)) == 3 and len(word_chart(app)["data"]) == 3
    assert len(language_chart(app)["data"][0]["x"]) == 3
    assert not app.get("warning")
    app.selectbox(key="_w.tok.example.fr").set_value("eot").run()
    assert not app.exception, app.exception
    assert stats(app)["Spéciaux"].tolist() == [1, 1, 0]  # SentencePiece reads <|endoftext|> as text
    app.toggle(key="_w.tok.special").set_value(False).run()
    assert stats(app)["Spéciaux"].tolist() == [0, 0, 0]


def test_ids_to_text_follows_the_current_text(app, offline):
    from gpt_core.tokenizers import load_tokenizer

    box = app.text_area(key="_w.tok.rt_ids.0")
    assert box.value.split()[:3] == ["40932", "424", "271"]
    app.text_area(key="_w.tok.text").input("Bonjour à tous").run()
    assert not app.exception, app.exception
    ids = load_tokenizer("gpt2").encode("Bonjour à tous")
    assert app.text_area(key="_w.tok.rt_ids.0").value == " ".join(map(str, ids))
    assert "Bonjour à tous" in [c.value for c in app.code]
    app.text_area(key="_w.tok.rt_ids.0").input("8001 811").run()  # ids typed by hand stay...
    app.toggle(key="_w.tok.show_ids").set_value(True).run()
    assert app.text_area(key="_w.tok.rt_ids.0").value == "8001 811"
    app.text_area(key="_w.tok.text").input("Au revoir").run()  # ...until the text changes
    assert app.text_area(key="_w.tok.rt_ids.0").value == " ".join(map(str, load_tokenizer("gpt2").encode("Au revoir")))
    app.selectbox(key="_w.tok.rt_tok.fr").set_value(1).run()  # another tokenizer: its own ids of the same text
    assert not app.exception, app.exception
    second = load_tokenizer("gemma3" if offline else "barthez")
    assert app.text_area(key="_w.tok.rt_ids.1").value == " ".join(map(str, second.encode("Au revoir")))


def test_hostile_texts_never_crash(app):
    cases = [
        ("", "input.empty"),
        ("   \n ", "input.blank"),
        ("é" * 100_000, "input.truncated_chars"),
        ("famille 👩‍👩‍👧‍👦 🇫🇷 et مرحبا بالعالم שלום", None),
        ("nul\x00 bell\x07 esc\x1b fin", "input.control"),
    ]
    for text, key in cases:
        app.text_area(key="_w.tok.text").input(text).run()
        assert not app.exception, (text[:20], app.exception)
        if key:
            assert_said(messages(app), key, "fr")
        else:
            assert stats(app)["Repli sur octets"].tolist()[0] > 0
        assert language_chart(app)  # the reference chart does not depend on the typed text


def test_train_and_add_to_comparison(app):
    app.radio(key="_w.tok.train_source.fr").set_value("text").run()
    app.button(key="_w.tok.train_go").click().run()
    assert not app.exception, app.exception
    assert "plus petit que le vocabulaire" in messages(app, ("error",))
    app.radio(key="_w.tok.train_source.fr").set_value("corpus_fr").run()
    app.button(key="_w.tok.train_go").click().run()
    assert not app.exception, app.exception
    assert "bpe-1000" in messages(app, ("success",)) and "aller-retour du corpus ✓" in messages(app, ("success",))
    assert re.search("« bpe-1000 » : 1\u202f000 jetons appris \\(demandés : 1\u202f000\\) en \\d+,\\d\\d s ;",
                     messages(app, ("success",)))
    assert app.multiselect[0].value[-1] == "trained:bpe-1000"
    assert stats(app)["Tokenizer"].tolist()[-1] == "bpe-1000"


def test_uploads_invalid_utf8_and_large_file(app):
    app.radio(key="_w.tok.train_source.fr").set_value("upload").run()
    app.file_uploader[0].set_value(("latin1.txt", "café crème".encode("latin-1"), "text/plain")).run()
    assert not app.exception, app.exception
    assert "pas du texte UTF-8 valide" in messages(app, ("error",))
    app.file_uploader[0].set_value(("big.txt", ("Le chat dort sur le tapis. " * 4000).encode(), "text/plain")).run()
    assert not app.exception, app.exception
    assert "Corpus : 108\u202f000 caractères." in [c.value for c in app.caption]


def test_round_trip_with_hostile_ids(app):
    box = app.text_area(key="_w.tok.rt_ids.0")
    assert box.value.split()[:3] == ["40932", "424", "271"]
    box.input("8001 811 x").run()
    assert not app.exception, app.exception
    assert "« x » (élément n° 3)" in messages(app, ("error",))
    app.text_area(key="_w.tok.rt_ids.0").input("tensor([[8001, 811, 34, 498, 493, 36, 15516, 38, 594]])").run()
    assert "ArtificCial intElliGence" in [c.value for c in app.code]


def test_english(offline):
    at = start("en")
    assert at.title[0].value == "Tokenizer lab"
    assert stats(at).columns.tolist()[:3] == ["Tokenizer", "Vocabulary", "Tokens"]
    if offline:
        assert "BARThez (French SentencePiece, hub) cannot be reached offline" in messages(at, ("warning",))


def core_error(call, *args):
    """The locale key of the gpt_core error ``call(*args)`` raises (what the page must say)."""
    from gpt_core.errors import GPTCoreError

    with pytest.raises(GPTCoreError) as info:
        call(*args)
    return core_key(info.value)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_hostile_inputs_are_answered_in_the_ui_language(lang, offline):
    from gpt_core import tokenlab
    from gpt_core.tokenizers import load_tokenizer

    at = start(lang)
    if offline:
        assert_said(messages(at, ("warning",)), "tokenizer.offline_stand_ins", lang)
    gpt2 = load_tokenizer("gpt2")
    for ids in ("8001 811 x", "8001 -5", "99999999"):          # ids -> text round trip
        at.text_area(key="_w.tok.rt_ids.0").input(ids).run()
        assert not at.exception, at.exception
        assert_said(messages(at, ("error",)), core_error(tokenlab.round_trip, gpt2, ids), lang)
    at.text_input(key="_w.tok.bpe_word").input("   ").run()  # BPE step-through of nothing
    assert_said(messages(at, ("info",)), "tokenizer.bpe_empty", lang)
    text = at.text_area(key="_w.tok.text").value                # training on a corpus far too small
    at.radio(key=f"_w.tok.train_source.{lang}").set_value("text").run()
    at.button(key="_w.tok.train_go").click().run()
    assert not at.exception, at.exception
    assert_said(messages(at, ("error",)), core_error(tokenlab.train_bpe, text, 1000), lang)
    latin1 = "café crème".encode("latin-1")                    # an upload that is not UTF-8
    at.radio(key=f"_w.tok.train_source.{lang}").set_value("upload").run()
    at.file_uploader[0].set_value(("latin1.txt", latin1, "text/plain")).run()
    assert_said(messages(at, ("error",)), core_error(tokenlab.read_upload, latin1, tokenlab.MAX_TRAIN_CHARS), lang)
    for text, key in (("", "input.empty"), ("  \n ", "input.blank"), ("é" * 50_000, "input.truncated_chars"),
                      ("a\x00b\x1b[31m", "input.control")):
        at.text_area(key="_w.tok.text").input(text).run()
        assert not at.exception, at.exception
        assert_said(messages(at), key, lang)
