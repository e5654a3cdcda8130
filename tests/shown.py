"""What an AppTest page shows, as plain text, and checks that it is in the UI's language.

Sentences drawn with :func:`explorer.ui.messages.show` are Markdown-escaped
(``UTF\\-8``); :func:`shown` removes the escapes so tests read what a user reads.
:func:`assert_said` checks a locale sentence appears in one language and never
in the other: the longest literal piece of each language's template (the text
between ``{placeholders}``) is looked for.
"""
from __future__ import annotations

import re

from explorer.ui.i18n import lookup

LANGS = ("fr", "en")
KINDS = ("info", "warning", "error", "success")


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def shown(at, kinds=KINDS) -> str:
    """Every info / warning / error / success element's text, joined, Markdown escapes removed."""
    return " ".join(unescape(str(e.value)) for kind in kinds for e in at.get(kind))


def other(lang: str) -> str:
    return "en" if lang == "fr" else "fr"


def piece(key: str, lang: str) -> str:
    """The longest literal piece of the ``lang`` template of ``key`` (its placeholders cut out)."""
    template = lookup(key, lang)
    assert template is not None, f"no locale has {key!r}"
    assert lookup(key, other(lang)) != template, f"{key!r} is not translated: {template!r}"
    return max((p.strip(" .:…«»“”") for p in re.split(r"\{[^}]*\}", template)), key=len)


def assert_said(text: str, key: str, lang: str) -> None:
    """``text`` holds the ``lang`` sentence of ``key`` and not the other language's."""
    mine, theirs = piece(key, lang), piece(key, other(lang))
    assert mine != theirs, f"{key!r} reads the same in both languages: {mine!r}"
    assert mine in text, f"{lang}: {mine!r} not in {text[:400]!r}"
    assert theirs not in text, f"{lang}: the {other(lang)} sentence {theirs!r} is shown: {text[:400]!r}"


def core_key(exc) -> str:
    """The locale key of a gpt_core error (``core.<code>``)."""
    return f"core.{exc.code}"
