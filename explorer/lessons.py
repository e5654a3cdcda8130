"""Guided lessons: short sequences of steps across the app's pages (pure data, no Streamlit).

A lesson lives in ``assets/lessons/lessons.json``; its words (title, each step's
title and two or three sentences, and the prompts it types) in
``assets/locales/<lang>/lessons.json`` under ``lessons.<id>...``. A step names
a page (the file stem under ``pages/``) and the query parameters that set its
inputs: the names the page's widgets persist (``next_token.temperature``), or
the Attention page's own ``layer``/``head``. A value written ``"t:<key>"`` is a
locale string (a French prompt in the French UI, an English one in English);
``{"fr": ..., "en": ...}`` gives each language its own value (its own default
model: the head worth showing is not at the same place).

    lesson = lessons()["next"]
    params = step_params(lesson.steps[0], "fr", lookup, model="gemma3-embedded")
    # {'next_token.prompt': 'Le chat dort sur le', ..., 'lang': 'fr', 'model': 'gemma3-embedded',
    #  'lesson': 'next', 'step': '1'}
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
LESSONS_FILE = ROOT / "assets" / "lessons" / "lessons.json"
PAGES_DIR = ROOT / "pages"
LESSONS_PAGE = "11_Lessons"
LOCALE_REF = "t:"

Lookup = Callable[[str, str], "str | None"]  # (key, lang) -> the locale string, or None


@dataclass(frozen=True)
class Step:
    page: str                                   # a page's file stem: "6_Next_token"
    state: dict[str, Any] = field(default_factory=dict)  # query parameter -> value ("t:<key>": a locale string)


@dataclass(frozen=True)
class Lesson:
    id: str
    steps: tuple[Step, ...]

    def key(self, *parts: Any) -> str:
        """The locale key ``lessons.<id>.<parts...>`` (``lesson.key(2, "body")``)."""
        return ".".join(["lessons", self.id, *map(str, parts)])


@lru_cache(maxsize=1)
def lessons() -> dict[str, Lesson]:
    """Every lesson, by id, in the file's order."""
    raw = json.loads(LESSONS_FILE.read_text(encoding="utf-8"))
    return {item["id"]: Lesson(item["id"], tuple(Step(s["page"], dict(s.get("state", {}))) for s in item["steps"]))
            for item in raw["lessons"]}


def page_path(page: str) -> str:
    """The page's path as ``st.switch_page``/``st.page_link`` want it (relative to ``explorer/Home.py``)."""
    return f"../pages/{page}.py"


def url_path(page: str) -> str:
    """The page's address under the app's root, as Streamlit derives it: ``"6_Next_token"`` -> ``"Next_token"``."""
    return re.sub(r"^\d+_", "", page)


def to_url(value: Any) -> str:
    """How a step's value is written in a URL (the same grammar :mod:`explorer.ui.state` parses)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(to_url, value))
    return str(value)


def resolve(value: Any, lang: str, lookup: Lookup) -> Any:
    """A step's value in ``lang``: ``{"fr": ..., "en": ...}`` picks the language's (each language has its own
    default model: a head worth showing sits elsewhere), ``"t:<key>"`` becomes the locale string."""
    if isinstance(value, dict):
        value = value[lang]
    if isinstance(value, str) and value.startswith(LOCALE_REF):
        text = lookup(value[len(LOCALE_REF):], lang)
        if text is None:
            raise KeyError(value)
        return text
    return value


def step_values(step: Step, lang: str, lookup: Lookup) -> dict[str, Any]:
    """The step's inputs as the page's widgets hold them (not yet written as URL text)."""
    return {name: resolve(value, lang, lookup) for name, value in step.state.items()}


def step_params(lesson: Lesson, number: int, lang: str, lookup: Lookup, model: str | None = None) -> dict[str, str]:
    """The query parameters that open step ``number`` (1-based): its inputs, the language, the model, and where
    it sits in its lesson (so the page can show what to look at)."""
    step = lesson.steps[number - 1]
    params = {name: to_url(value) for name, value in step_values(step, lang, lookup).items()}
    params["lang"] = lang
    if model:
        params["model"] = model
    params.update(lesson=lesson.id, step=str(number))
    return params


def check_position(lesson_id: str | None, step: str | None) -> tuple[str | None, int | None, list[tuple[str, dict]]]:
    """``(lesson id, step number, problems)`` for what a URL asks: an unknown lesson is dropped, a step out of
    range is clamped into ``1..n``, a step that is not a whole number is dropped. Problems are
    ``(code, params)`` the UI says; the URL's own text is never part of them."""
    problems: list[tuple[str, dict]] = []
    if lesson_id is None:
        return None, None, problems
    found = lessons().get(lesson_id)
    if found is None:
        return None, None, [("lesson_unknown", {})]
    if step is None:
        return lesson_id, None, problems
    n = len(found.steps)
    if not re.fullmatch(r"[+-]?\d{1,9}", step.strip()):
        return lesson_id, 1, [("step_invalid", {"n": n})]
    asked = int(step)
    used = max(1, min(n, asked))
    if used != asked:
        problems.append(("step_clamped", {"asked": asked, "n": n, "used": used}))
    return lesson_id, used, problems


def validate(lookup: Lookup, langs: tuple[str, ...] = ("fr", "en")) -> list[str]:
    """Everything wrong with the lessons' data (empty when all is well): pages, locale keys, values."""
    problems = []
    for lesson in lessons().values():
        if not 2 <= len(lesson.steps) <= 6:
            problems.append(f"{lesson.id}: {len(lesson.steps)} steps (2 to 6 make a short lesson)")
        needed = [lesson.key("title"), lesson.key("intro")]
        for i, step in enumerate(lesson.steps, 1):
            needed += [lesson.key(i, "title"), lesson.key(i, "body")]
            per_lang = [v for v in step.state.values() if isinstance(v, dict)]
            if any(set(v) != set(langs) for v in per_lang):
                problems.append(f"{lesson.id} step {i}: a value per language needs exactly {langs}")
            values = [v.get(lang) for v in per_lang for lang in langs]
            values += [v for v in step.state.values() if not isinstance(v, dict)]
            needed += [v[len(LOCALE_REF):] for v in values if isinstance(v, str) and v.startswith(LOCALE_REF)]
            if not (PAGES_DIR / f"{step.page}.py").is_file():
                problems.append(f"{lesson.id} step {i}: no page {step.page!r}")
            if not step.state:
                problems.append(f"{lesson.id} step {i}: sets nothing")
            for name in step.state:
                if name in ("lang", "model", "lesson", "step"):
                    problems.append(f"{lesson.id} step {i}: {name!r} is set by the link itself")
        problems += [f"{lesson.id}: no {key!r} in {lang}" for key in needed for lang in langs if not lookup(key, lang)]
    return problems
