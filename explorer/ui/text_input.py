"""Checks every page applies to text a user typed or uploaded.

The text is hostile until checked: empty or blank text, huge pastes, control
characters and lone surrogates all get a clear message instead of a traceback.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from explorer.ui.i18n import t
from explorer.ui.state import persisted

MAX_CHARS = 5_000


@dataclass
class CheckedText:
    text: str                                   # what the page should use ("" means stop)
    messages: list[tuple[str, str]] = field(default_factory=list)  # (level, message): info / warning

    @property
    def ok(self) -> bool:
        return bool(self.text)


def check_text(raw: str | None, max_chars: int = MAX_CHARS) -> CheckedText:
    raw = raw or ""
    if not raw:
        return CheckedText("", [("info", t("input.empty"))])
    if not raw.strip():
        return CheckedText("", [("info", t("input.blank"))])
    out = CheckedText(raw)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in raw):
        out.text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in raw)
        out.messages.append(("warning", t("input.surrogate")))
    if len(out.text) > max_chars:
        out.messages.append(("warning", t("input.truncated_chars", n=f"{max_chars:,}", total=f"{len(out.text):,}")))
        out.text = out.text[:max_chars]
    n_control = sum(1 for c in out.text if unicodedata.category(c) == "Cc" and c not in "\n\r\t")
    if n_control:
        out.messages.append(("info", t("input.control", n=n_control)))
    return out


def fit_context(ids: list[int], limit: int) -> tuple[list[int], str | None]:
    """Keep the last ``limit`` ids, with the notice to show when something was cut."""
    if len(ids) <= limit:
        return ids, None
    return ids[-limit:], t("input.truncated_tokens", total=f"{len(ids):,}", limit=f"{limit:,}")


def show_messages(st_module, checked: CheckedText) -> None:
    for level, message in checked.messages:
        getattr(st_module, level)(message)


def text_area_checked(st_module, area: str, label: str, default: str, height: int = 80) -> CheckedText:
    """A text area whose value survives page switches (kept in ``"<area>.text"``), checked,
    with its messages shown. Pages call ``st.stop()`` when the result is not ``ok``."""
    raw = persisted(st_module.text_area, label, f"{area}.text", default, height=height)
    checked = check_text(raw)
    show_messages(st_module, checked)
    return checked
