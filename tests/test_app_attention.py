"""AppTest of the Attention, Logit lens and Architecture pages on the offline backends, and of the
Attention and Logit lens pages in French and English on each language's default model."""
import base64
import inspect
import json

import numpy as np

import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, shown

import gpt_core.model as model_module
from explorer.ui.i18n import lookup
from explorer.ui.messages import number
from gpt_core.architecture import MODULE_NAMES
from gpt_core.logit_lens import native_bf16
from gpt_core.registry import default_model

ATTENTION = "../pages/3_Attention.py"
LENS = "../pages/4_Logit_lens.py"
ARCH = "../pages/5_Architecture.py"
BACKENDS = ["smollm2-embedded", "tiny-random"]
SHAPE = {"smollm2-embedded": (30, 9), "tiny-random": (2, 4), "gemma3-embedded": (18, 4)}  # layers, query heads


def run(page, model, text=None, query=None, session=None, lang=None):
    at = AppTest.from_file(page, default_timeout=180)
    if model is not None:  # None: the sidebar's default for the language
        at.session_state["app.model"] = model
    if lang:
        at.session_state["app.lang"] = lang
    for key, value in (session or {}).items():
        at.session_state[key] = value
    for key, value in (query or {}).items():
        at.query_params[key] = value
    if text is not None:
        area = page.split("_", 1)[1].removesuffix(".py").lower()
        at.session_state[{"attention": "attention.text", "logit_lens": "logit_lens.text",
                          "architecture": "architecture.text"}[area]] = text
    at.run()
    assert not at.exception, at.exception
    return at


def messages(at, kinds=("info", "warning", "error")):
    return shown(at, kinds)


def figures(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def arr(value) -> np.ndarray:
    """A plotly array: a plain list, or plotly 6's typed-array encoding {dtype, bdata, shape}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = [int(x) for x in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.array(value, dtype=float if not value or not isinstance(value[0], list) or
                    not isinstance(value[0][0], str) else object)


# ------------------------------------------------------------------- attention
@pytest.mark.parametrize("model", BACKENDS)
def test_attention_page(model):
    at = run(ATTENTION, model)
    n_layers, n_heads = SHAPE[model]
    head, summary, grid = figures(at)
    z = arr(head["data"][0]["z"])
    T = len(z)
    assert z.shape == (T, T) and T > 5
    assert np.isnan(z[np.triu_indices(T, 1)]).all()                # causal mask: masked cells
    np.testing.assert_allclose(np.nansum(z, axis=1), np.ones(T), atol=1e-4)
    assert head["data"][1]["fill"] == "toself"                      # the hatched mask is drawn
    assert arr(summary["data"][0]["z"]).shape == (n_layers, n_heads)
    shown = min(n_layers, 48 // n_heads)                              # tiny: every layer
    panels = grid["layout"]["meta"]["panels"]
    assert panels == [[l, h] for l in range(shown) for h in range(n_heads)]
    tiled = arr(grid["data"][0]["z"])                                  # panels tiled with gaps
    gap = max(1, T // 8)
    assert tiled.shape == (shown * (T + gap) - gap, n_heads * (T + gap) - gap)
    np.testing.assert_allclose(np.nan_to_num(tiled[:T, :T]), np.nan_to_num(z), atol=1e-6)  # panel L0 H0
    assert len(at.dataframe[0].value) == n_heads
    scores = at.dataframe[0].value.iloc[:, 2:].to_numpy().ravel()
    assert all("," in v and "." not in v for v in scores if v != "nan"), scores  # French decimals
    frame = frame_html(at)
    assert "<svg" not in frame and "d3" in frame and "https://cdnjs" not in frame
    if model == "smollm2-embedded":
        assert "groupes de 3" in messages(at) and "(K/V 2)" in at.selectbox[1].options[-1]


def test_attention_hostile_url_is_clamped_with_a_message():
    at = run(ATTENTION, "tiny-random", query={"layer": "99", "head": "abc"})
    text = messages(at, ("warning",))
    assert "couche 99 dans l'adresse (URL) n'existe pas (de 0 à 1)" in text
    assert "« abc » dans l'adresse (URL) n'est pas un nombre entier" in text
    assert at.selectbox[0].value == 1 and at.selectbox[1].value == 0
    assert at.query_params["layer"] == "1" and at.query_params["head"] == "0"  # the URL is corrected
    assert figures(at)[0]["layout"]["title"]["text"].startswith("Couche 1, tête 0")


def test_attention_stale_session_head_and_long_text():
    # a head kept from SmolLM2 (9 heads) on the tiny model (4), and more tokens than the window
    at = run(ATTENTION, "tiny-random", text="mot " * 400, session={"attention.head": 8})
    text = messages(at)
    assert "tête 8 gardée en mémoire" in text
    assert "dépassent la fenêtre de contexte de 128" in text and "n'en dessine que 96" in text
    assert arr(figures(at)[0]["data"][0]["z"]).shape == (96, 96)


def test_attention_empty_and_one_token():
    at = run(ATTENTION, "tiny-random", text="")
    assert "Écrivez du texte" in messages(at) and not at.get("plotly_chart")
    at = run(ATTENTION, "tiny-random", text="a")
    assert "1 × 1" in messages(at)
    assert arr(figures(at)[0]["data"][0]["z"]).tolist() == [[pytest.approx(1.0)]]


# ------------------------------------------------------------------ logit lens
@pytest.mark.parametrize("model", BACKENDS)
def test_logit_lens_page(model):
    at = run(LENS, model)
    n_layers = SHAPE[model][0]
    table, ranks = figures(at)
    cells = table["data"][0]
    assert arr(cells["z"]).shape[0] == n_layers + 1
    assert all(text.startswith("✓") for text in cells["text"][-1])  # last row = the model's prediction
    assert arr(ranks["data"][0]["y"])[-1] == 1
    assert len(at.dataframe[0].value) == n_layers + 1


def test_logit_lens_hostile_text_and_english():
    at = run(LENS, "tiny-random", text="   ")
    assert "que des espaces" in messages(at) and not at.get("plotly_chart")
    at = run(LENS, "tiny-random", text="Hi", lang="en")
    assert at.title[0].value.startswith("Logit lens: the prediction")
    assert "A single token" in messages(at)
    assert len(arr(figures(at)[0]["data"][0]["x"])) == 1


# ---------------------------------------------------------------- architecture
# (the pages of Llama-style and Gemma models are tested in tests/test_architecture_page.py)
def test_architecture_page_of_our_gpt():
    at = run(ARCH, "tiny-random")
    codes = [c.value for c in at.code]  # st.code drops the final newline
    assert codes == [inspect.getsource(getattr(model_module, n)).rstrip("\n") for n in MODULE_NAMES]
    badge = " ".join(m.value for m in at.markdown if "badge" in m.value)
    assert "Parité : max |Δ logit|" in badge
    diff = float(badge.split("= ")[1].split(" ")[0])
    assert diff < 1e-4
    shapes = at.dataframe[0].value
    assert shapes.iloc[0, 0] == "tok_emb" and shapes.iloc[-1, 0] == "out_head"
    assert "(1, 6, 50257)" == shapes.iloc[-1, 3]  # "Le chat dort sur le" = 6 GPT-2 tokens, GPT-2 vocabulary
    assert "GPT minuscule" in messages(at, ("info",))
    assert "exécutant exactement les mêmes poids" in " ".join(c.value for c in at.caption)


def test_architecture_too_long_text_is_cut():
    at = run(ARCH, "tiny-random", text="mot " * 400)
    assert "dépassent la fenêtre de contexte de 128" in messages(at, ("warning",))
    assert at.dataframe[0].value.iloc[-1, 3] == "(1, 128, 50257)"


# ------------------------------------------------------- hostile input, in the UI language
@pytest.mark.parametrize("lang", ["fr", "en"])
def test_attention_hostile_input_is_answered_in_the_ui_language(lang):
    at = run(ATTENTION, "tiny-random", query={"layer": "99", "head": "abc"}, lang=lang)
    warnings = messages(at, ("warning",))
    assert_said(warnings, "attention.bad_out_of_range", lang)
    assert_said(warnings, "attention.bad_not_a_number", lang)
    assert_said(warnings, "attention.from_url", lang)
    at = run(ATTENTION, "tiny-random", text="mot " * 400, session={"attention.head": 8}, lang=lang)
    for key in ("attention.from_session", "input.truncated_tokens", "attention.too_many"):
        assert_said(messages(at), key, lang)
    at = run(ATTENTION, "tiny-random", text="", lang=lang)
    assert_said(messages(at), "input.empty", lang)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_lens_and_architecture_hostile_text_in_the_ui_language(lang):
    for page, text, key in ((LENS, " \n ", "input.blank"), (LENS, "Hi", "logit_lens.one_token"),
                            (LENS, "mot " * 400, "input.truncated_tokens"),
                            (ARCH, "", "input.empty"), (ARCH, "mot " * 400, "input.truncated_tokens")):
        at = run(page, "tiny-random", text=text, lang=lang)
        assert_said(messages(at), key, lang)


# ------------------------------------------- French and English, on each language's default model
LANGS = ["fr", "en"]
NEXT_WORD = {"fr": " cinq", "en": " Paris"}   # what the default lens text ends on, with Gemma 3 and SmolLM2


def said(key: str, lang: str, **fmt) -> str:
    return lookup(key, lang).format(**fmt)


def ticks(fig: dict, axis: str = "xaxis") -> list[str]:
    return list(fig["layout"][axis]["ticktext"])


@pytest.mark.parametrize("lang", LANGS)
def test_attention_page_in_the_languages_default_model(lang):
    model = default_model(lang)
    at = run(ATTENTION, None, lang=lang)
    n_layers, n_heads = SHAPE[model]
    assert at.title[0].value == said("attention.title", lang)
    assert at.text_area[0].value == said("attention.default_text", lang)
    head, summary, _grid = figures(at)
    assert arr(summary["data"][0]["z"]).shape == (n_layers, n_heads)
    z = arr(head["data"][0]["z"])
    np.testing.assert_allclose(np.nansum(z, axis=1), np.ones(len(z)), atol=1e-4)
    frame = frame_html(at)
    assert said("attention.bvl_layer_select", lang) + " <select" in frame
    if lang == "fr":
        assert "Layer: <select" not in frame
    if model != "gemma3-embedded":
        return
    # Gemma 3: <bos> first, one shared K/V head, five sliding-window layers then one global
    assert ticks(head)[0] == "0·&lt;bos&gt;"                           # shown as "<bos>", never read as markup
    layers, heads = at.selectbox[0].options, at.selectbox[1].options
    assert layers[0] == said("attention.layer_sliding", lang, l=0, w=number(512, lang))
    assert [i for i, o in enumerate(layers) if o == said("attention.layer_global", lang, l=i)] == [5, 11, 17]
    assert heads == [said("attention.head_mqa", lang, h=h) for h in range(4)]
    text = messages(at)
    for key in ("attention.mqa", "attention.windows", "attention.window_covers"):
        assert_said(text, key, lang)
    captions = " ".join(c.value for c in at.caption)
    for key in ("attention.bos_sink", "attention.window_covers_caption", "attention.first_is_bos"):
        assert_said(captions, key, lang)
    assert ticks(summary, "yaxis")[5] == f"5 · {said('attention.short_global', lang)}"


@pytest.mark.parametrize("lang", LANGS)
def test_attention_hide_bos_rescales_the_rest(lang):
    if default_model(lang) != "gemma3-embedded":
        pytest.skip("the default model has no <bos>")
    at = run(ATTENTION, None, lang=lang, query={"layer": "7", "head": "0"})
    full = arr(figures(at)[0]["data"][0]["z"])
    at.toggle[0].set_value(True).run()
    assert not at.exception
    head = figures(at)[0]
    z = arr(head["data"][0]["z"])
    T = len(full)
    assert z.shape == (T - 1, T - 1) and ticks(head)[0].startswith("1·")
    np.testing.assert_allclose(z, full[1:, 1:], atol=1e-6)          # same weights, the <bos> row and column gone
    top = float(np.nanmax(z))
    assert head["data"][0]["zmax"] == pytest.approx(top, abs=1e-6)  # colours rescaled to what is left
    subtitle = head["layout"]["title"]["subtitle"]["text"]
    assert said("attention.rescaled", lang, top="@").split("@")[0].replace("<", "&lt;").replace(">", "&gt;") in subtitle
    assert said("attention.sub_sliding", lang, w="512") in subtitle


@pytest.mark.parametrize("lang", LANGS)
def test_logit_lens_page_in_the_languages_default_model(lang):
    model = default_model(lang)
    at = run(LENS, None, lang=lang)
    n_layers = SHAPE[model][0]
    assert at.title[0].value == said("logit_lens.title", lang)
    assert at.text_area[0].value == said("logit_lens.default_text", lang)
    table, ranks = figures(at)
    cells = table["data"][0]
    assert arr(cells["z"]).shape[0] == n_layers + 1
    assert cells["text"][-1][-1] == "✓ " + NEXT_WORD[lang]            # the model's own next word
    assert all(text.startswith("✓") for text in cells["text"][-1])
    assert arr(ranks["data"][0]["y"])[-1] == 1
    hover = cells["customdata"][-1][-1]
    assert NEXT_WORD[lang] in hover and ("," if lang == "fr" else ".") in hover.split("%")[0][-5:]
    captions = " ".join(c.value for c in at.caption)
    assert_said(captions, "logit_lens.applied", lang)
    assert_said(captions, "logit_lens.no_softcap", lang)
    if native_bf16():
        assert_said(captions, "logit_lens.precision", lang)
    if model == "gemma3-embedded":
        assert "Gemma3RMSNorm" in captions


def test_token_labels_are_never_read_as_markup():
    text = "<b>gras</b> <a href='https://x.test'>lien</a> <br> fin"
    at = run(ATTENTION, "tiny-random", text=text)
    labels = " ".join(ticks(figures(at)[0]))
    assert "&lt;" in labels and "&gt;" in labels and "<" not in labels and ">" not in labels
    at = run(LENS, "tiny-random", text=text)
    table = figures(at)[0]
    shown_text = " ".join(ticks(table)) + " ".join(" ".join(row) for row in table["data"][0]["text"])
    assert "<" not in shown_text and ">" not in shown_text


def frame_html(at) -> str:
    """The bertviz page: a data: URL, so the frame has an opaque origin and cannot reach the app's page."""
    import base64

    src = at.get("iframe")[0].proto.src
    prefix = "data:text/html;base64,"
    assert src.startswith(prefix) and not at.get("iframe")[0].proto.srcdoc
    return base64.b64decode(src[len(prefix):]).decode("utf-8")

