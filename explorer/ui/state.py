"""Widget values that survive page switches: the ONE helper every page uses.

Streamlit forgets a widget's value when the user visits another page. Here
each value lives in a plain session key (``"decoding.max_new"``) and the
widget (key ``"_w.decoding.max_new"``) is seeded from it on every run, never
through ``value=``/``index=``, so a callback may change both with
:func:`set_value` and the widget shows it.

    max_new = persisted(st.slider, "Tokens", "decoding.max_new", 40, min_value=1, max_value=200)
    model = persisted(st.sidebar.selectbox, "Model", "app.model", "smollm2", options=list(choices))
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import streamlit as st

from explorer.ui.i18n import current_lang

WIDGET_PREFIX = "_w."


def widget_key(name: str, per_lang: bool = False) -> str:
    """The widget's own key; ``per_lang`` gives a fresh widget (new labels) after a language switch."""
    return f"{WIDGET_PREFIX}{name}.{current_lang()}" if per_lang else f"{WIDGET_PREFIX}{name}"


def get(name: str, default: Any = None) -> Any:
    return st.session_state.get(name, default)


def set_value(name: str, value: Any, per_lang: bool = False) -> None:
    """Change a persisted value before its widget is drawn (in a callback, or above the widget)."""
    st.session_state[name] = value
    st.session_state[widget_key(name, per_lang)] = value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fits(value: Any, options: Sequence | None, bounds: dict) -> bool:
    """Would the widget accept ``value`` as it is drawn now?"""
    if options is not None:
        if isinstance(value, (list, tuple)):          # multiselect
            return all(v in options for v in value)
        return value in options
    if "min_value" in bounds or "max_value" in bounds:
        if not _number(value):
            return False
        return bounds.get("min_value", value) <= value <= bounds.get("max_value", value)
    return True


def _fallback(value: Any, default: Any, options: Sequence | None, bounds: dict) -> Any:
    """A value the widget accepts: ``value`` clamped into range, else ``default``, else the first option."""
    if options is None and _number(value) and ("min_value" in bounds or "max_value" in bounds):
        value = max(bounds.get("min_value", value), min(bounds.get("max_value", value), value))
        return type(bounds.get("min_value", value))(value) if isinstance(default, int) else value
    if _fits(default, options, bounds):
        return default
    if isinstance(default, (list, tuple)):  # multiselect: keep the options that still exist
        return [v for v in default if options and v in options]
    return options[0] if options else default


def persisted(widget: Callable, label: str, name: str, default: Any, *, options: Sequence | None = None,
              per_lang: bool = False, on_change: Callable | None = None, **kwargs) -> Any:
    """Draw ``widget`` (``st.slider``, ``col.selectbox``, ...) with its value kept in ``name``.

    A stored value the widget can no longer show (an option that vanished, a
    number out of a new range) falls back to ``default``, clamped into range.
    """
    ss = st.session_state
    wkey = widget_key(name, per_lang)
    options = list(options) if options is not None else None
    if wkey not in ss or not _fits(ss[wkey], options, kwargs):
        value = ss.get(name, default)
        ss[wkey] = value if _fits(value, options, kwargs) else _fallback(value, default, options, kwargs)

    def keep() -> None:
        ss[name] = ss[wkey]
        if on_change is not None:
            on_change()

    args = (label, options) if options is not None else (label,)
    value = widget(*args, key=wkey, on_change=keep, **kwargs)
    ss[name] = value
    return value
