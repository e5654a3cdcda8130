"""The guided lessons' data (explorer.lessons): pages, locale strings, links, and what a URL may ask."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.source_util import page_icon_and_name

from explorer import lessons as L
from explorer.ui.i18n import lookup

FRENCH_TITLES = {
    "tokens": "De quoi est fait un texte pour un GPT ?",
    "next": "Comment le modèle choisit le mot suivant",
    "beam": "Pourquoi la recherche en faisceau se répète",
    "attention": "Qui regarde qui : l'attention",
}
FRENCH_MARKERS = re.compile(r"[éèàçêôù«»]|\b(le|la|les|est|et|en|une|un|des|du|qui|l)\b| : ")


def test_the_data_is_valid():
    assert L.validate(lookup) == []


def test_the_four_lessons_of_the_issue():
    assert list(L.lessons()) == list(FRENCH_TITLES)
    for lesson_id, title in FRENCH_TITLES.items():
        assert lookup(f"lessons.{lesson_id}.title", "fr") == title
    assert lookup("lessons.attention.title", "en") == "Who looks at whom: attention"


def test_each_lesson_visits_the_pages_it_is_about():
    pages = {lesson_id: {s.page for s in lesson.steps} for lesson_id, lesson in L.lessons().items()}
    assert pages == {"tokens": {"1_Tokenizer", "2_Embeddings"}, "next": {"6_Next_token"},
                     "beam": {"7_Decoding"}, "attention": {"3_Attention"}}


def test_words_are_in_the_language_of_the_ui():
    for lesson in L.lessons().values():
        keys = [lesson.key("title"), lesson.key("intro")]
        keys += [lesson.key(i, part) for i in range(1, len(lesson.steps) + 1) for part in ("title", "body")]
        for key in keys:
            fr, en = lookup(key, "fr"), lookup(key, "en")
            assert fr != en, key
            assert FRENCH_MARKERS.search(fr), f"{key} does not read as French: {fr!r}"
            assert not re.search(r"[éèàçêôù«»]", en), f"{key} has French in English: {en!r}"


def test_a_link_carries_the_inputs_the_language_and_the_place_in_the_lesson():
    lesson = L.lessons()["next"]
    fr = L.step_params(lesson, 2, "fr", lookup, model="gemma3-embedded")
    assert fr == {"next_token.prompt": "Le chat dort sur le", "next_token.temperature": "0.5",
                  "next_token.top_k": "", "next_token.top_p": "1", "next_token.min_p": "0",
                  "lang": "fr", "model": "gemma3-embedded", "lesson": "next", "step": "2"}
    en = L.step_params(lesson, 2, "en", lookup)
    assert en["next_token.prompt"] == "The cat is sleeping on the" and "model" not in en
    tokens = L.step_params(L.lessons()["tokens"], 2, "fr", lookup)
    assert tokens["tok.selected"] == "gpt2,gemma3" and tokens["tok.show_ids"] == "1"
    attention = L.step_params(L.lessons()["attention"], 3, "en", lookup)
    assert attention["layer"] == "5" and attention["head"] == "1" and attention["attention.metric"] == "first"


def test_a_value_may_differ_per_language():
    step = L.Step("3_Attention", {"layer": {"fr": 2, "en": 16}, "attention.text": "t:lessons.attention.text"})
    assert L.step_values(step, "fr", lookup) == {"layer": 2, "attention.text": lookup("lessons.attention.text", "fr")}
    assert L.step_values(step, "en", lookup)["layer"] == 16


def test_prompts_are_short_enough_to_travel_in_a_url():
    from explorer.ui.state import MAX_URL_TEXT

    for lesson in L.lessons().values():
        for i in range(1, len(lesson.steps) + 1):
            for lang in ("fr", "en"):
                for value in L.step_params(lesson, i, lang, lookup).values():
                    assert len(value) <= MAX_URL_TEXT


def test_page_addresses_match_streamlit():
    for path in sorted(L.PAGES_DIR.glob("*.py")):
        assert L.url_path(path.stem) == page_icon_and_name(Path(path))[1]
    assert L.page_path("3_Attention") == "../pages/3_Attention.py"


@pytest.mark.parametrize("lesson, step, expected", [
    (None, None, (None, None, [])),
    ("next", None, ("next", None, [])),
    ("next", "3", ("next", 3, [])),
    ("next", " 3 ", ("next", 3, [])),
    ("nope", "2", (None, None, [("lesson_unknown", {})])),
    ("[x](https://evil.example/)", "1", (None, None, [("lesson_unknown", {})])),
    ("next", "99", ("next", 5, [("step_clamped", {"asked": 99, "n": 5, "used": 5})])),
    ("next", "0", ("next", 1, [("step_clamped", {"asked": 0, "n": 5, "used": 1})])),
    ("next", "-3", ("next", 1, [("step_clamped", {"asked": -3, "n": 5, "used": 1})])),
    ("next", "1.5", ("next", 1, [("step_invalid", {"n": 5})])),
    ("next", "9" * 40, ("next", 1, [("step_invalid", {"n": 5})])),
    ("next", "<script>", ("next", 1, [("step_invalid", {"n": 5})])),
])
def test_what_a_url_asks_is_checked(lesson, step, expected):
    assert L.check_position(lesson, step) == expected


def test_values_are_written_as_the_url_parser_reads_them():
    assert [L.to_url(v) for v in (True, False, None, 0.5, 1.0, 3, "a b", ["gpt2", "gemma3"])] == [
        "1", "0", "", "0.5", "1", "3", "a b", "gpt2,gemma3"]
