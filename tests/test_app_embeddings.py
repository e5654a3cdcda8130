"""AppTest of the embeddings page with the embedded SmolLM2 (RoPE) and our tiny GPT (learned positions)."""
import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, core_key, shown

PAGE = "../pages/2_Embeddings.py"


def messages(at, kinds=("info", "warning", "error")):
    return shown(at, kinds)


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def arr(value):
    """A plotly array from a figure spec (numpy arrays travel as base64 'bdata')."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(x) for x in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value)


def titled(at, words):
    return [f for f in charts(at) if words in (f["layout"].get("title") or {}).get("text", "")]


def run(model, lang="fr"):
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["app.model"] = model
    at.session_state["app.lang"] = lang
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def smol():
    return run("smollm2-embedded")


def test_smollm2_explains_rope_instead_of_an_empty_table(smol):
    assert "n'a pas de table des positions : il utilise RoPE" in messages(smol, ("info",))
    tok = titled(smol, "Embedding des jetons")[0]
    assert tok["data"][0]["type"] == "heatmap" and arr(tok["data"][0]["z"]).shape == (11, 576)  # d_model on the x axis
    assert tok["data"][0]["y"][:2] == ["0: Le", "1: ␣ro"]
    assert not titled(smol, "Table des positions")
    turns = titled(smol, "de combien chaque paire a tourné")[0]
    assert arr(turns["data"][0]["z"]).shape == (128, 32)  # 64 / 2 pairs


def test_smollm2_pca_and_neighbours(smol):
    pca = titled(smol, "ACP")[0]
    words = next(tr for tr in pca["data"] if tr.get("name") == "mots choisis")
    assert words["text"] == ["roi", "reine", "homme", "femme", "Paris", "France", "Berlin", "Allemagne", "chat", "chien"]
    assert len(arr(words["x"])) == 10
    smol.text_input(key="_w.emb.nn_query.text").input("Paris").run()
    table = smol.dataframe[0].value
    cos = [float(c.replace(",", ".")) for c in table["Cosinus"]]  # written with a decimal comma
    assert cos == sorted(cos, reverse=True) and len(cos) == 10
    assert table["Jeton"].tolist()[:3] == ["␣London", "␣France", "␣Berlin"]  # whole words only, by default
    smol.toggle(key="_w.emb.nn_whole").set_value(False).run()
    assert smol.dataframe[0].value["Jeton"].tolist()[0] == "Paris"  # every token: "Paris" without its space
    smol.radio(key="_w.emb.dims").set_value(3).run()
    assert not smol.exception, smol.exception
    pca = titled(smol, "ACP")[0]
    words = next(tr for tr in pca["data"] if tr.get("name") == "mots choisis")
    assert words["type"] == "scatter3d" and len(arr(words["z"])) == 10


def test_tiny_gpt_shows_learned_positions_and_their_sum():
    at = run("tiny-random")
    tabs = [t.label for t in at.tabs]
    assert "Jetons + positions = entrée du bloc 1" in tabs
    assert any("La somme EST l'entrée du bloc" in c.value for c in at.caption)
    table = titled(at, "Table des positions")[0]
    assert arr(table["data"][0]["z"]).shape == (128, 64)
    cos = arr(titled(at, "Cosinus entre positions")[0]["data"][0]["z"])
    assert cos.shape == (128, 128) and abs(cos[5, 5] - 1) < 1e-3 and np.allclose(cos, cos.T, atol=1e-3)
    at.slider(key="_w.emb.n_positions").set_value(16).run()
    assert arr(titled(at, "Cosinus entre positions")[0]["data"][0]["z"]).shape == (16, 16)


def test_hostile_inputs_give_messages():
    at = run("tiny-random")
    at.text_area(key="_w.emb.text").input("").run()
    assert "Écrivez du texte" in messages(at)
    at.text_area(key="_w.emb.text").input("👩‍👩‍👧‍👦\x00 مرحبا " * 50).run()
    assert not at.exception, at.exception
    assert "Seuls les 64 premiers jetons" in messages(at, ("warning",))
    at.text_input(key="_w.emb.words").input(", ".join(f"mot{i}" for i in range(13))).run()
    assert "Trop de mots (13)" in messages(at, ("error",))
    at.radio(key="_w.emb.nn_mode").set_value("id").run()
    at.text_input(key="_w.emb.nn_query.id").input("99999999").run()
    assert "hors du vocabulaire" in messages(at, ("error",))
    at.text_input(key="_w.emb.nn_query.id").input("-4").run()
    assert "n'est pas un id de jeton" in messages(at, ("error",))
    assert not at.exception, at.exception


def test_english_page():
    at = run("tiny-random", "en")
    assert at.title[0].value == "Embeddings"
    assert titled(at, "Token embeddings")


def test_switch_model_from_the_sidebar_under_navigation():
    at = AppTest.from_file("../explorer/Home.py", default_timeout=180)
    at.run()
    at.switch_page("../pages/2_Embeddings.py").run()
    assert not at.exception, at.exception
    assert "RoPE" in messages(at, ("info",))  # the embedded SmolLM2 by default
    at.sidebar.selectbox(key="_w.app.model").set_value("tiny-random").run()
    assert not at.exception, at.exception
    assert "RoPE" not in messages(at, ("info",))
    assert titled(at, "Table des positions")
    at.switch_page("../pages/1_Tokenizer.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Labo des tokenizers"


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_hostile_inputs_are_answered_in_the_ui_language(lang):
    from gpt_core import embeddings as E
    from gpt_core.errors import GPTCoreError
    from gpt_core.registry import load_model

    tiny = load_model("tiny-random")
    unit = E.unit_embeddings(tiny.model)

    def key_of(call, *args):
        with pytest.raises(GPTCoreError) as info:
            call(*args)
        return core_key(info.value)

    at = run("tiny-random", lang)
    at.text_area(key="_w.emb.text").input("").run()
    assert_said(messages(at), "input.empty", lang)
    at.text_area(key="_w.emb.text").input("👩‍👩‍👧‍👦\x00 مرحبا " * 50).run()
    assert_said(messages(at, ("warning",)), "embeddings.truncated", lang)
    words = ", ".join(f"mot{i}" for i in range(13))
    at.text_input(key="_w.emb.words").input(words).run()
    assert_said(messages(at, ("error",)), key_of(E.parse_words, words), lang)
    at.text_input(key="_w.emb.nn_query.text").input("   ").run()     # a neighbour of nothing
    assert_said(messages(at, ("error",)), key_of(E.neighbours_of_word, unit, tiny.tokenizer, "   ", 10), lang)
    at.radio(key="_w.emb.nn_mode").set_value("id").run()
    at.text_input(key="_w.emb.nn_query.id").input("99999999").run()  # beyond the vocabulary
    assert_said(messages(at, ("error",)), key_of(E.neighbours_of_id, unit, tiny.tokenizer, 99999999, 10), lang)
    at.text_input(key="_w.emb.nn_query.id").input("-4").run()        # not a token id at all
    assert_said(messages(at, ("error",)), "embeddings.nn_bad_id", lang)
    assert not at.exception, at.exception
