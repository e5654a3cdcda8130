"""AppTest of the guided lessons: the Lessons page, each step's link applied to its page, the step's banner."""
from __future__ import annotations

import math
import re

import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, piece, shown

from explorer import lessons as L
from explorer.ui.i18n import lookup
from gpt_core.registry import default_model

HOME = "../explorer/Home.py"
LESSONS = "../pages/11_Lessons.py"
WIDGET_KINDS = ("number_input", "slider", "select_slider", "selectbox", "radio", "multiselect", "text_area",
                "text_input", "toggle", "checkbox")
OWN_PARAMS = {"layer": "attention.layer", "head": "attention.head"}  # the Attention page's own URL names
URL_KEYS = ("url.invalid", "url.clamped", "url.markup", "url.too_long", "url.dropped_unknown",
            "url.dropped_too_long", "url.dropped_markup", "url.lesson_unknown", "url.step_clamped")


def session(lang: str, model: str | None = "tiny-random") -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=300)
    if model:
        at.session_state["app.model"] = model
    at.query_params["lang"] = lang
    return at


def run(at: AppTest, page: str | None = None) -> AppTest:
    if page:
        at.switch_page(L.page_path(page))
    at.run()
    assert not at.exception, at.exception
    return at


def shown_inputs(at: AppTest) -> dict[str, object]:
    """Every persisted widget's value, by persisted name."""
    return {re.sub(r"\.(fr|en)$", "", w.key[3:]): w.value  # a widget drawn per language: _w.<name>.<lang>
            for kind in WIDGET_KINDS for w in at.get(kind) if (w.key or "").startswith("_w.")}


def same(shown, expected) -> bool:
    if isinstance(expected, float) and isinstance(shown, (int, float)):
        return math.isclose(shown, expected, rel_tol=1e-9)
    return shown == (list(expected) if isinstance(expected, tuple) else expected)


def url_notices(at: AppTest, lang: str) -> list[str]:
    said = shown(at, ("info", "warning", "error"))
    return [key for key in URL_KEYS if piece(key, lang) in said]


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("lesson_id", list(L.lessons()))
def test_each_step_sets_its_page(lesson_id, lang):
    """In one session, as a teacher clicks through: each step's link changes the page's inputs to the step's values,
    every value accepted by its widget (no notice about the URL). The attention lesson runs on the model its links
    name (its heads are chosen for each language's default model); the others on the tiny model."""
    lesson = L.lessons()[lesson_id]
    own_model = lesson_id == "attention"
    at = session(lang, None if own_model else "tiny-random")
    page = None
    for number, step in enumerate(lesson.steps, 1):
        if step.page != page:                       # the page as it is before the link
            page = step.page
            run(at, page)
        before = shown_inputs(at)
        params = L.step_params(lesson, number, lang, lookup, model=default_model(lang) if own_model else None)
        at.query_params.update(params)
        run(at)
        assert url_notices(at, lang) == [], (lesson_id, number)
        assert "(URL)" not in shown(at, ("warning",)), (lesson_id, number)   # nor the page's own (attention)
        now = shown_inputs(at)
        for name, value in L.step_values(step, lang, lookup).items():
            name = OWN_PARAMS.get(name, name)
            assert same(now[name], value), (lesson_id, number, name, now[name], value)
        changed = [n for n in now if n in before and now[n] != before[n]]
        assert changed, f"{lesson_id} step {number} changed nothing on {page}"
        if own_model:
            assert at.sidebar.selectbox(key="_w.app.model").value == default_model(lang)


def test_the_french_prompt_works_on_the_french_default_model():
    """'Le chat dort sur le' -> ' lit' first on Gemma 3, as the lesson's text says."""
    lesson = L.lessons()["next"]
    at = session("fr", None)
    at.query_params.update(L.step_params(lesson, 1, "fr", lookup, model=default_model("fr")))
    run(at, "6_Next_token")
    table = at.dataframe[0].value
    assert table.iloc[0]["Jeton"].startswith("“ lit”"), table.head(3)
    assert table.iloc[1]["Jeton"].startswith("“ sol”"), table.head(3)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_lessons_page(lang):
    at = run(session(lang), "11_Lessons")
    assert at.title[0].value == lookup("lessons.title", lang)
    lesson_pick = at.radio(key="_w.lessons.lesson")
    assert lesson_pick.options == [lookup(f"lessons.{k}.title", lang) for k in L.lessons()]
    assert at.query_params["lesson"] == "tokens" and at.query_params["step"] == "1"
    lesson_pick.set_value("next").run()
    at.button(key="lessons.next").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="_w.lessons.step").value == 2
    assert (at.query_params["lesson"], at.query_params["step"], at.query_params["lang"]) == ("next", "2", lang)
    assert at.subheader[0].value == lookup("lessons.step_header", lang).format(
        i=2, n=5, title=lookup("lessons.next.2.title", lang))
    link = at.get("page_link")[0].proto
    assert link.page == "Next_token" and link.label == lookup("lessons.open", lang).format(
        page=lookup("nav.6_Next_token", lang))
    for params in (dict(re.findall(r"([^&=]+)=([^&]*)", link.query_string)),
                   dict(re.findall(r"([^&=?]+)=([^&]*)", at.code[0].value.split("?", 1)[1]))):
        assert params["lang"] == lang and params["lesson"] == "next" and params["step"] == "2"
        assert params["next_token.temperature"] == "0.5" and params["model"] == default_model(lang)
    assert at.code[0].value.startswith("/Next_token?")             # st.context.url is the server's in a browser
    assert lookup("lessons.banner", lang)[:12] not in " ".join(m.value for m in at.markdown)  # not on the Lessons page
    at.radio(key="_w.lessons.lesson").set_value("beam").run()
    assert at.radio(key="_w.lessons.step").value == 1               # another lesson starts at its first step


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_a_step_link_says_what_to_look_at_on_its_page(lang):
    lesson = L.lessons()["beam"]
    at = session(lang)
    at.query_params.update(L.step_params(lesson, 3, lang, lookup))
    run(at, "7_Decoding")
    banner = " ".join(m.value for m in [*at.main.caption, *at.main.markdown])   # above the page's title
    assert lookup("lessons.beam.3.title", lang) in banner and lookup("lessons.beam.3.body", lang) in banner
    assert lookup("lessons.banner", lang).format(lesson=lookup("lessons.beam.title", lang), i=3, n=4) in banner
    back = at.main.get("page_link")[0].proto
    assert back.page == "Lessons" and "lesson=beam" in back.query_string and "step=3" in back.query_string
    assert at.number_input(key="_w.decoding.no_repeat_ngram").value == 3


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_a_lessons_url_out_of_range_is_clamped_on_the_lessons_page(lang):
    at = session(lang)
    at.query_params.update({"lesson": "attention", "step": "12"})
    run(at, "11_Lessons")
    assert_said(shown(at, ("warning",)), "url.step_clamped", lang)
    assert at.radio(key="_w.lessons.lesson").value == "attention" and at.radio(key="_w.lessons.step").value == 4
    at = session(lang)
    at.query_params.update({"lesson": "[x](https://evil.example/)", "step": "2"})
    run(at, "11_Lessons")
    assert_said(shown(at, ("warning",)), "url.dropped_markup", lang)
    assert at.radio(key="_w.lessons.lesson").value == "tokens" and at.radio(key="_w.lessons.step").value == 1
