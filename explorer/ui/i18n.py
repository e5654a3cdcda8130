"""UI strings in French and English.

Strings live in ``assets/locales/<lang>/*.json`` (one file per page or area, so
pages never edit each other's strings). Keys are namespaced: ``"home.title"``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import streamlit as st

LOCALES = Path(__file__).resolve().parents[2] / "assets" / "locales"
LANGS = {"fr": "Français", "en": "English"}
DEFAULT_LANG = "fr"
LANG_KEY = "app.lang"
URL_PARAM = "lang"  # ?lang=fr|en keeps the language across a reload (explorer.ui.state writes it)


@lru_cache(maxsize=None)
def _strings(lang: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted((LOCALES / lang).glob("*.json")):
        merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def lookup(key: str, lang: str) -> str | None:
    """The raw string for ``key`` in ``lang`` (French as fallback), or None when no locale has it."""
    return _strings(lang).get(key) or _strings(DEFAULT_LANG).get(key)


def current_lang() -> str:
    """The UI language: the session's choice; before the sidebar has drawn it, a valid ``?lang=`` of the URL."""
    lang = st.session_state.get(LANG_KEY)
    if lang is None:
        lang = st.query_params.get(URL_PARAM)
    return lang if lang in LANGS else DEFAULT_LANG


def t(key: str, /, **fmt) -> str:
    """The string for ``key`` in the current language (falls back to French, then the key)."""
    lang = current_lang()
    text = _strings(lang).get(key) or _strings(DEFAULT_LANG).get(key) or key
    if fmt:
        try:
            return text.format(**fmt)
        except (KeyError, IndexError, ValueError):
            return text
    return text
