"""AppTest of the Architecture page on the embedded models, in French and in English.

Gemma 3 270M, each UI language's default (its BOS first, sliding-window and global
layers, GeGLU, QK-norm), and SmolLM2-135M (Llama-style: RMSNorm, RoPE, grouped-query
attention, SwiGLU).
The page must show the chosen model's own blocks (never LayerNorm or a position
table for them) and the top-10 chart in real percentages in the UI's number format.
"""
import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, shown, unescape

from gpt_core.registry import GEMMA_MODEL, SMOLLM2_MODEL, default_model
from explorer.ui.i18n import lookup

PAGE = "../pages/5_Architecture.py"
SENTENCE = {"fr": "Le chat dort sur le", "en": "The cat sleeps on the"}


def run(lang, model=None, text=None):
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["app.lang"] = lang
    at.session_state["app.model"] = model or default_model(lang)
    if text is not None:
        at.session_state["architecture.text"] = text
    at.run()
    assert not at.exception, at.exception
    return at


def arr(value) -> np.ndarray:
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.array(value)


def flow(at):
    return at.dataframe[0].value


def shape_of(frame, path):
    return frame.loc[frame.iloc[:, 0] == path].iloc[0, 3]


def top_chart(at):
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(f for f in figs if f["layout"]["yaxis"].get("type") == "category")


@pytest.fixture(scope="module")
def french():
    return run("fr")


@pytest.fixture(scope="module")
def english():
    return run("en")


@pytest.fixture(scope="module")
def llama():
    return run("en", SMOLLM2_MODEL)


def test_the_defaults_are_gemma():
    assert default_model("fr") == default_model("en") == GEMMA_MODEL


def test_french_default_shows_gemma_s_own_blocks(french):
    at = french
    assert at.session_state["architecture.text"] == SENTENCE["fr"]
    frame = flow(at)
    steps, modules = list(frame.iloc[:, 0]), set(frame.iloc[:, 1])
    T = 6                                        # <bos> + 5 tokens of "Le chat dort sur le"
    attn = "model.layers.0.self_attn"
    assert shape_of(frame, f"{attn}.q_proj") == f"(1, {T}, 1024)"      # 4 query heads x 256
    assert shape_of(frame, f"{attn}.k_proj") == f"(1, {T}, 256)"       # 1 key/value head x 256
    assert shape_of(frame, f"{attn}.q_norm") == f"(1, 4, {T}, 256)"
    assert shape_of(frame, "model.layers.0.mlp.up_proj") == f"(1, {T}, 2048)"
    assert shape_of(frame, "lm_head") == f"(1, {T}, 262144)"
    assert "Gemma3RMSNorm" in modules and "LayerNorm" not in modules
    assert "model.layers.0 (locale, 512)" in steps and "model.layers.5 (globale)" in steps
    assert {"model.rotary_emb (sliding_attention)", "model.rotary_emb (full_attention)"} <= set(steps)
    assert not any("pos_emb" in s or "wpe" in s for s in steps)
    captions = unescape(" ".join(c.value for c in at.caption))
    assert "6 jetons" in captions and "“<bos>”" in captions
    table = at.table[0].value
    differences = unescape(" ".join(str(v) for v in table.to_numpy().ravel()))
    for words in ("RMSNorm", "q_norm et k_norm", "RoPE, sans table : base θ = 10\u202f000",
                  "1\u202f000\u202f000 dans les couches globales", "4 têtes de requête pour 1 tête(s) clé/valeur",
                  "15 couches locales (fenêtre glissante : seuls les 512 derniers jetons) et 3 couches globales",
                  "GeGLU", "multiplié par √d = 25,3"):
        assert words in differences, words
    codes = [c.value for c in at.code]
    assert any(c.startswith("class MultiHeadAttention(") for c in codes)       # our GPT-2, the reference
    assert any("class Gemma3Attention(" in c for c in codes)                     # next to Gemma's own code
    badge = " ".join(m.value for m in at.markdown if "badge" in m.value)
    assert "Parité : max |Δ logit|" in badge and float(badge.split("= ")[1].split(" ")[0]) < 1e-4


def test_french_top_10_in_real_percent(french):
    fig = top_chart(french)
    bar = fig["data"][0]
    x = arr(bar["x"]).astype(float)
    assert len(x) == 10 and 15 < x[0] < 35 and x.sum() <= 100         # percentages, not fractions
    assert list(x) == sorted(x, reverse=True)
    assert bar["y"][0] == "␣lit"                                       # the leading space shows
    assert bar["text"][0] == f"{x[0]:.1f}".replace(".", ",") + "\u202f%"
    assert fig["layout"]["separators"] == ", " and fig["layout"]["xaxis"]["ticksuffix"] == "\u202f%"
    assert "Choix glouton : “ lit”" in unescape(shown(french, ("success",)))


def test_smollm2_shows_its_llama_blocks(llama):
    at = llama
    assert at.session_state["architecture.text"] == SENTENCE["en"]
    frame = flow(at)
    steps, modules = list(frame.iloc[:, 0]), set(frame.iloc[:, 1])
    attn = "model.layers.0.self_attn"
    T = int(shape_of(frame, "model.embed_tokens").split(", ")[1])
    assert shape_of(frame, f"{attn}.q_proj") == f"(1, {T}, 576)"       # 9 query heads x 64
    assert shape_of(frame, f"{attn}.k_proj") == f"(1, {T}, 192)"       # 3 key/value heads x 64
    assert shape_of(frame, f"{attn}.weights") == f"(1, 9, {T}, {T})"
    assert shape_of(frame, "model.layers.0.mlp.gate_proj") == f"(1, {T}, 1536)"
    assert "LlamaRMSNorm" in modules and "SiLUActivation" in modules and "LayerNorm" not in modules
    assert not any("pos_emb" in s for s in steps) and "model.layers.29" in steps
    differences = unescape(" ".join(str(v) for v in at.table[0].value.to_numpy().ravel()))
    for words in ("RMSNorm", "grouped-query attention (GQA): 9 query heads for 3 key/value head(s)",
                  "SwiGLU", "base θ = 100,000", "every layer sees the whole past"):
        assert words in differences, words
    assert "sliding" not in differences
    assert not any("(local" in s or "(global" in s for s in steps)     # every layer attends to the whole past
    bar = top_chart(at)["data"][0]
    assert all(label.startswith("␣") for label in bar["y"][:3])        # " floor", " bed", ...


def test_english_gemma_page(english):
    at = english
    assert at.session_state["architecture.text"] == SENTENCE["en"]
    steps = list(flow(at).iloc[:, 0])
    assert "model.layers.0 (local, 512)" in steps and "model.layers.17 (global)" in steps
    assert "grouped-query attention (GQA): 4 query heads for 1 key/value head(s)" in unescape(
        " ".join(str(v) for v in at.table[0].value.to_numpy().ravel()))
    fig = top_chart(at)
    bar = fig["data"][0]
    x = arr(bar["x"]).astype(float)
    assert len(x) == 10 and x.sum() <= 100 and x[0] > 5                # percentages, not fractions
    assert bar["text"][0] == f"{x[0]:.1f}%" and fig["layout"]["separators"] == ".,"
    assert bar["y"][0].startswith("␣")


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_no_sentence_of_the_other_language(lang, french, english):
    at = french if lang == "fr" else english
    text = " ".join([*(c.value for c in at.caption), *(m.value for m in at.markdown), shown(at)])
    for key in ("architecture.intro", "architecture.next_help", "architecture.top_sum", "architecture.parity_why"):
        assert_said(unescape(text), key, lang)


def test_the_example_follows_the_language():
    # an untouched English example becomes the French one when the UI is French
    at = run("fr", text=SENTENCE["en"])
    assert at.session_state["architecture.text"] == SENTENCE["fr"]
    # a sentence the user typed stays
    at = run("fr", text="Il pleut sur la")
    assert at.session_state["architecture.text"] == "Il pleut sur la"
    assert lookup("architecture.default_text", "fr") == SENTENCE["fr"]


def test_hostile_text_is_never_markup():
    text = "**gras** [lien](http://x.test) <script>alert(1)</script> Le"
    at = run("fr", "tiny-random", text=text)
    rendered = " ".join([*(m.value for m in at.markdown), *(c.value for c in at.caption), shown(at)])
    assert "](http://x.test)" not in rendered and "<script>" not in rendered
    positions = at.dataframe[-1].value                      # the per-position table shows the tokens as text
    assert any("<" in v for v in positions.iloc[:, 1]) and any("[" in v for v in positions.iloc[:, 1])
