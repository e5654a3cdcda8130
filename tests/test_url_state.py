"""Shareable URL state: every persisted value round-trips through the query parameters, and a hostile URL is
clamped or ignored with a one-line notice, never rendered (explorer.ui.state, the sidebar)."""
from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from shown import assert_said, shown, unescape

from explorer.ui.i18n import lookup
from explorer.ui.state import (MAX_URL_TEXT, MAX_URL_VALUE, NOT_IN_URL, UrlSpec, _NOTHING, known_param,
                               parse_url_value, spec_of, url_name, url_text)

HOME = "../explorer/Home.py"
PAGES = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "pages").glob("*.py"))
EVIL = "evil.example"
LINK, IMAGE = "[x](https://evil.example/)", "![x](https://evil.example/a.png)"
SCRIPT = "<script>alert('evil.example')</script>"
RENDERED = ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader", "toast",
            "exception")


# ------------------------------------------------------------------ the parsers (no Streamlit run)
def test_spec_follows_the_widget():
    assert spec_of(st.number_input, 0.8, None, {"step": 0.1}) == UrlSpec("float", 0.8)
    assert spec_of(st.number_input, None, None, {"step": 1}).kind == "int"           # top-k: empty means off
    assert spec_of(st.number_input, None, None, {"step": 1}).nullable
    assert spec_of(st.number_input, 50, None, {"step": 1, "placeholder": "off"}).nullable
    assert not spec_of(st.number_input, 0, None, {"min_value": 0, "step": 1}).nullable
    assert spec_of(st.slider, 10, None, {"min_value": 3, "max_value": 30}) == UrlSpec("int", 10, low=3, high=30)
    assert spec_of(st.toggle, False, None, {}).kind == "bool"
    assert spec_of(st.radio, "a", ["a", "b"], {}).kind == "option"
    assert spec_of(st.multiselect, ["a"], ["a", "b"], {"max_selections": 4}).max_items == 4
    assert spec_of(st.text_input, "", None, {"max_chars": 60}) == UrlSpec("text", "", max_chars=60, one_line=True)
    assert spec_of(st.date_input, object(), None, {}).kind == ""                     # not in the URL


@pytest.mark.parametrize("raw, kind, bounds, expected", [
    ("0.5", "float", {}, (0.5, None)),
    ("0,5", "float", {}, (0.5, None)),                 # a French decimal comma
    ("1e3", "float", {"high": 2.0}, (2.0, "clamped")),
    ("-4", "int", {"low": 1, "high": 30}, (1, "clamped")),
    ("99", "int", {"low": 1, "high": 30}, (30, "clamped")),
    ("7", "int", {"low": 1, "high": 30}, (7, None)),
    ("2.5", "int", {}, (_NOTHING, "invalid")),
    ("nan", "float", {}, (_NOTHING, "invalid")),
    ("inf", "float", {}, (_NOTHING, "invalid")),
    ("1e999", "float", {}, (_NOTHING, "invalid")),
    ("0x10", "int", {}, (_NOTHING, "invalid")),
    ("", "int", {}, (_NOTHING, "invalid")),
    ("9" * 30, "int", {}, (2**53 - 1, "clamped")),     # a browser could not hold it
])
def test_numbers_are_parsed_then_clamped(raw, kind, bounds, expected):
    spec = UrlSpec(kind, 1 if kind == "int" else 1.0, **bounds)
    value, problem = parse_url_value(spec, raw)
    assert (value, problem) == expected
    if value is not _NOTHING:
        assert type(value) is (int if kind == "int" else float)


def test_empty_number_is_off_only_where_the_widget_allows_it():
    assert parse_url_value(UrlSpec("int", None, nullable=True), "") == (None, None)
    assert parse_url_value(UrlSpec("int", 0), "")[1] == "invalid"


def test_options_bools_and_lists():
    radio = UrlSpec("option", "text", ("text", "id"))
    assert parse_url_value(radio, "id") == ("id", None)
    assert parse_url_value(radio, LINK) == (_NOTHING, "invalid")
    scale = UrlSpec("option", 128, (8, 16, 32, 64, 128, 256))
    assert parse_url_value(scale, "64") == (64, None)
    assert parse_url_value(scale, "100") == (128, "clamped")       # the nearest step of a numeric scale
    assert parse_url_value(scale, "99999") == (256, "clamped")
    assert parse_url_value(UrlSpec("bool", False), "oui") == (True, None)
    assert parse_url_value(UrlSpec("bool", False), "peut-être") == (_NOTHING, "invalid")
    many = UrlSpec("options", ["a"], ("a", "b", "c", "d", "e"), max_items=2)
    assert parse_url_value(many, "b,a") == (["b", "a"], None)
    assert parse_url_value(many, "a,zz") == (["a"], "invalid")      # the known ones are kept, said
    assert parse_url_value(many, "zz") == (_NOTHING, "invalid")
    assert parse_url_value(many, "a,b,c") == (["a", "b"], "clamped")


@pytest.mark.parametrize("raw", [LINK, IMAGE, SCRIPT, "<img src=x onerror=alert(1)>", "&#60;b&#62;", "javascript:x"])
def test_texts_with_web_markup_are_ignored(raw):
    assert parse_url_value(UrlSpec("text", ""), raw) == (_NOTHING, "markup")


def test_texts_keep_what_is_not_markup():
    spec = UrlSpec("text", "")
    for raw in ["Le chat dort sur le", "a < b et 3 > 2", "<|endoftext|>", "[1, 2] (voir)", "x" * MAX_URL_VALUE]:
        assert parse_url_value(spec, raw) == (raw, None)
    assert parse_url_value(spec, "x" * (MAX_URL_VALUE + 1)) == (_NOTHING, "too_long")
    assert parse_url_value(UrlSpec("text", "", max_chars=60), "x" * 61) == (_NOTHING, "too_long")
    assert parse_url_value(UrlSpec("text", "", one_line=True), "a\nb") == ("a b", None)


@pytest.mark.parametrize("spec, value", [
    (UrlSpec("float", 1.0), 0.1 + 0.2), (UrlSpec("float", 1.0), 1e-7), (UrlSpec("int", 0), 2**31 - 1),
    (UrlSpec("int", None, nullable=True), None), (UrlSpec("bool", True), False),
    (UrlSpec("option", 2, (2, 3)), 3), (UrlSpec("options", [], ("gpt2", "gemma3")), ["gemma3", "gpt2"]),
    (UrlSpec("text", ""), "Le chat dort sur le"),
])
def test_values_round_trip_through_the_url(spec, value):
    back, problem = parse_url_value(spec, url_text(spec, value))
    assert problem is None
    assert back == value or (isinstance(value, float) and math.isclose(back, value, rel_tol=1e-9))


def test_long_texts_stay_out_of_the_url():
    assert url_text(UrlSpec("text", ""), "x" * MAX_URL_TEXT) == "x" * MAX_URL_TEXT
    assert url_text(UrlSpec("text", ""), "x" * (MAX_URL_TEXT + 1)) is None


def test_param_names():
    assert url_name("app.lang") == "lang" and url_name("lessons.step") == "step"
    assert url_name("decoding.max_new") == "decoding.max_new"
    assert known_param("decoding.max_new") and known_param("layer") and known_param("lesson")
    assert not known_param("utm_source") and not known_param("evil.x") and not known_param("decoding")
    assert not known_param("Decoding.max_new") and not known_param("decoding.<b>")
    assert not known_param("app.local_dir") and not known_param("app.device")   # a server folder: never from a link


# ------------------------------------------------------------------ the app, through its entry script
def app(lang=None, query=None, model="tiny-random"):
    at = AppTest.from_file(HOME, default_timeout=300)
    if model:
        at.session_state["app.model"] = model
    for key, value in (query or {}).items():
        at.query_params[key] = value
    if lang:
        at.query_params["lang"] = lang
    at.run()
    assert not at.exception, at.exception
    return at


def rendered(at) -> str:
    """Everything drawn as Markdown (or HTML) on the page and in the sidebar."""
    parts = [str(getattr(e, "value", "")) for kind in RENDERED for e in at.get(kind)]
    parts += [str(e.proto) for e in at.get("html")]
    return "\n".join(parts)


def notices(at) -> str:
    return shown(at, ("info", "warning", "error"))


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_language_comes_from_the_url_and_stays_there(lang):
    at = app(lang)
    assert at.sidebar.radio(key="_w.app.lang").value == lang
    assert at.query_params["lang"] == lang
    assert at.title[0].value == "LLM Explorer"
    assert {"fr": "Couches", "en": "Layers"}[lang] in [m.label for m in at.metric]
    at.switch_page("../pages/6_Next_token.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == lookup("next_token.title", lang)
    assert at.query_params["lang"] == lang                          # written again on the next page


@pytest.mark.parametrize("raw", ["de", LINK, "x" * 10_000])
def test_an_unknown_language_is_ignored_with_a_notice(raw):
    at = app(query={"lang": raw})
    assert at.sidebar.radio(key="_w.app.lang").value == "fr"
    assert at.query_params["lang"] == "fr"
    assert "(URL)" in notices(at) and EVIL not in rendered(at)


def test_settings_round_trip_and_a_link_seeds_only_once():
    at = app("fr")
    at.query_params.update({"next_token.temperature": "0.5", "next_token.top_k": "7", "next_token.top_n": "99"})
    at.switch_page("../pages/6_Next_token.py").run()
    assert not at.exception, at.exception
    assert at.number_input(key="_w.next_token.temperature").value == 0.5
    assert at.number_input(key="_w.next_token.top_k").value == 7
    assert at.slider(key="_w.next_token.top_n").value == 30                  # clamped into the slider's range
    assert_said(notices(at), "url.clamped", "fr")
    assert at.query_params["next_token.top_n"] == "30"                       # the URL says what is shown
    at.number_input(key="_w.next_token.temperature").set_value(1.2).run()    # the user wins afterwards
    assert at.number_input(key="_w.next_token.temperature").value == 1.2
    assert at.query_params["next_token.temperature"] == "1.2"
    at.number_input(key="_w.next_token.temperature").set_value(0.8).run()    # the default leaves the URL
    assert "next_token.temperature" not in at.query_params
    at.query_params["next_token.temperature"] = "0.3"                        # a new link: seeds again
    at.run()
    assert at.number_input(key="_w.next_token.temperature").value == 0.3


def test_a_short_text_travels_in_the_url_a_long_one_does_not():
    at = app("fr")
    at.switch_page("../pages/3_Attention.py").run()
    at.text_area(key="_w.attention.text").input("Le chien mange.").run()
    assert at.query_params["attention.text"] == "Le chien mange."
    at.text_area(key="_w.attention.text").input("mot " * 200).run()
    assert "attention.text" not in at.query_params


def test_hub_models_out_of_reach_are_not_offered():
    at = app("fr", model=None)
    options = at.sidebar.selectbox(key="_w.app.model").options
    assert not any("GPT-2 small" in o for o in options)            # HF_HUB_OFFLINE=1 in the tests, nothing cached
    captions = unescape(" ".join(c.value for c in at.sidebar.caption))
    assert "Indisponibles hors ligne" in captions and "GPT-2 small (124M)" in captions
    at = app("fr", query={"model": "gpt2"}, model=None)
    assert_said(notices(at), "url.invalid", "fr")
    assert at.sidebar.selectbox(key="_w.app.model").value not in ("gpt2",)


def test_the_model_follows_the_language_until_one_is_chosen():
    from gpt_core.registry import default_model

    at = app("fr", model=None)
    assert at.sidebar.selectbox(key="_w.app.model").value == default_model("fr")
    at.sidebar.radio(key="_w.app.lang").set_value("en").run()
    assert at.sidebar.selectbox(key="_w.app.model").value == default_model("en")
    at.sidebar.selectbox(key="_w.app.model").set_value("tiny-random").run()
    at.sidebar.radio(key="_w.app.lang").set_value("fr").run()
    assert at.sidebar.selectbox(key="_w.app.model").value == "tiny-random"   # chosen: it stays


# ------------------------------------------------------------------ hostile URLs on every page
def open_page(page: str, lang: str, query: dict | None = None):
    """A fresh session opening ``page`` with ``query`` in its URL (the tiny model: fast)."""
    at = AppTest.from_file(HOME, default_timeout=300)
    at.session_state["app.model"] = "tiny-random"
    at.query_params.update(query or {})
    at.query_params["lang"] = query.get("lang", lang) if query else lang
    at.switch_page(f"../pages/{page}").run()
    assert not at.exception, at.exception
    return at


@functools.lru_cache(maxsize=None)
def page_params(page: str) -> tuple[str, ...]:
    """The query parameters of the widgets ``page`` draws (persisted ones: key ``_w.<name>[.<lang>]``)."""
    at = open_page(page, "fr")
    names = {url_name(key[3:].removesuffix(".fr").removesuffix(".en")) for key in list(at.session_state)
             if key.startswith("_w.") and key[3:].removesuffix(".fr").removesuffix(".en") not in NOT_IN_URL}
    return tuple(sorted(names | {"lesson", "step", "layer", "head", "model", "lang"}))


def url_values(at) -> list[str]:
    return [v for value in dict(at.query_params).values() for v in ([value] if isinstance(value, str) else value)]


def assert_not_rendered(at):
    text = rendered(at)
    assert EVIL not in text, [line for line in text.splitlines() if EVIL in line][:3]
    for kind in ("text_area", "text_input"):
        assert not any(EVIL in str(w.value) for w in at.get(kind))


@pytest.mark.parametrize("page, lang", [(page, ("fr", "en")[i % 2]) for i, page in enumerate(PAGES)])
def test_hostile_url_on_every_page(page, lang):
    """Markdown links, images and script tags, then a 10 kB value, in every parameter the page reads
    (each page in one language, the two languages in turn: the suite stays short)."""
    params = page_params(page)
    assert {"lang", "model", "lesson", "step"} <= set(params)
    # a new area must join state.URL_AREAS (names made of the user's text, "tok.bpe_k.0. Sherbrooke", stay out)
    assert [n for n in params if re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+", n) and not known_param(n)] == []
    for hostile, key in [(LINK + IMAGE + SCRIPT, "url.dropped_markup"), ("x" * 10_000, "url.dropped_too_long")]:
        # every parameter but the language (test_an_unknown_language_is_ignored_with_a_notice), plus an unknown one
        at = open_page(page, lang, {name: hostile for name in params if name != "lang"} | {"utm_source": LINK})
        assert_not_rendered(at)
        said = notices(at)
        assert_said(said, key, lang)
        assert_said(said, "url.dropped_unknown", lang)
        assert at.query_params["lang"] == lang
        assert not any(EVIL in v or len(v) > MAX_URL_VALUE for v in url_values(at))
        assert [key for key in at.query_params if not known_param(key)] == []   # the app writes only what it reads


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_unknown_lesson_and_steps_out_of_range(lang):
    at = app(lang, query={"lesson": "nope", "step": "2"})
    assert_said(notices(at), "url.lesson_unknown", lang)
    assert "lesson" not in at.query_params and "step" not in at.query_params
    for raw, key in [("99", "url.step_clamped"), ("-3", "url.step_clamped"), ("1.5", "url.step_invalid"),
                     ("9" * 40, "url.step_invalid")]:
        at.query_params.update({"lesson": "next", "step": raw})
        at.run()
        assert not at.exception, at.exception
        assert_said(notices(at), key, lang)
        assert at.query_params["step"] in ("1", "5")
