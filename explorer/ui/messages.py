"""gpt_core's errors and notes, said in the user's language.

gpt_core raises :class:`~gpt_core.errors.GPTCoreError` and returns
:class:`~gpt_core.errors.Message` notes: a stable code plus parameters. This
module turns them into a sentence through the locale files (key
``core.<code>``, in ``assets/locales/<lang>/core_*.json``), with numbers
written the way the language writes them. Pages never show ``str(exc)``.
"""
from __future__ import annotations

import math

from typing import Any

from gpt_core.errors import GPTCoreError, Message

from explorer.ui.i18n import current_lang, lookup, t

# parameters whose value is itself a word to translate (``core.field.batch_size`` -> "la taille de batch")
TRANSLATED_PARAMS = ("field", "split")
_MARKDOWN = set("\\`*_{}[]()<>#+-.!|~$:")


def render(message: Message | GPTCoreError, lang: str) -> str:
    """The sentence for a gpt_core error or note in ``lang`` (the English fallback when no locale knows it)."""
    if not isinstance(message, Message):  # an error carries its Message
        message = message.message
    template = lookup(f"core.{message.code}", lang)
    if template is None:
        return str(message)
    try:
        return template.format(**{k: _param(k, v, lang) for k, v in message.params.items()})
    except (KeyError, IndexError, ValueError):
        return template


def say(message: Message | GPTCoreError) -> str:
    """The sentence for a gpt_core error or note, in the current language."""
    return render(message, current_lang())


def number(value: float | int, lang: str) -> str:
    """``1234567`` -> "1 234 567" (fr) / "1,234,567" (en); floats to 4 significant digits, decimal comma in French."""
    if isinstance(value, int):
        text = f"{value:,}"
        return text.replace(",", "\u202f") if lang == "fr" else text
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    text = f"{value:.4g}"
    return text.replace(".", ",") if lang == "fr" else text


def decimal(x: float, digits: int = 3, lang: str | None = None) -> str:
    """A fixed-point number as the UI language writes it (decimal comma in French)."""
    text = f"{x:.{digits}f}"
    return text.replace(".", ",") if (lang or current_lang()) == "fr" else text


def percent(p: float, digits: int = 1, lang: str | None = None) -> str:
    """A probability as a percentage: "6,53 %" (fr, narrow no-break space) / "6.53%" (en)."""
    lang = lang or current_lang()
    text = f"{100 * p:.{digits}f}"
    return f"{text.replace('.', ',')}\u202f%" if lang == "fr" else f"{text}%"


def _param(key: str, value: Any, lang: str) -> Any:
    if key in TRANSLATED_PARAMS and isinstance(value, str):
        return lookup(f"core.{key}.{value}", lang) or value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value, lang)
    return value


def show(where: Any, message: Message | GPTCoreError, level: str = "error") -> None:
    """Draw the sentence in ``where`` (``st``, a column, the sidebar) as plain text, never as Markdown."""
    getattr(where, level)(plain(say(message)))


def attempt(where: Any, fn, *args, wrap: str | None = None, **kwargs) -> Any:
    """``fn(*args, **kwargs)``, or None after saying why in ``where`` in the user's language.

    A gpt_core error is said through its code (inside the locale sentence ``wrap``
    when given, as ``{msg}``); any other ValueError is named by its kind only, so
    no English library sentence reaches a French page, and never a traceback.
    """
    try:
        return fn(*args, **kwargs)
    except GPTCoreError as exc:
        text = plain(say(exc))
        where.error(t(wrap, msg=text) if wrap else text)
    except ValueError as exc:
        where.error(t("common.unexpected", kind=type(exc).__name__))
    return None


def plain(text: str) -> str:
    """``text`` escaped so that Markdown shows it literally (no links, images, emphasis or HTML)."""
    return "".join("\\" + c if c in _MARKDOWN else c for c in text)


def duration_text(seconds: float) -> str:
    """Seconds as "4,2 s", "75 s", "3,5 min" or "1,6 h" (decimal comma in French); "?" when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{decimal(max(seconds, 0.1), 1)} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{decimal(seconds / 60, 1)} min"
    return f"{decimal(seconds / 3600, 1)} h"
