"""Widget values that survive page switches and travel in the URL: the ONE helper every page uses.

Streamlit forgets a widget's value when the user visits another page. Here
each value lives in a plain session key (``"decoding.max_new"``) and the
widget (key ``"_w.decoding.max_new"``) is seeded from it on every run, never
through ``value=``/``index=``, so a callback may change both with
:func:`set_value` and the widget shows it.

    max_new = persisted(st.slider, "Tokens", "decoding.max_new", 40, min_value=1, max_value=200)
    model = persisted(st.sidebar.selectbox, "Model", "app.model", "smollm2", options=list(choices))

**Shareable URL.** Every persisted value is also a query parameter named
after it (``?decoding.max_new=60``; a few have a short alias: ``lang``,
``model``, ``lesson``, ``step``), so a link shows another browser the same
view. A value the URL brings is *new* when it differs from what this session
last wrote there (a link opened, a lesson step, the back button): it then
seeds the widget, once; after that the widget writes its value back, and
removes it when it equals the default (a short URL). A value from the URL is
hostile until parsed by the widget's own type: numbers are clamped into the
widget's range, unknown options and texts with web markup are ignored, each
with a one-line notice that never echoes what the URL said.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import streamlit as st

from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import number, plain

WIDGET_PREFIX = "_w."
URL_ALIASES = {"app.lang": "lang", "app.model": "model", "lessons.lesson": "lesson", "lessons.step": "step"}
# never in a URL: the machine's device, a folder on the server; the Attention page keeps ?layer=&head= itself
NOT_IN_URL = {"app.device", "app.local_dir", "attention.layer", "attention.head"}
ALWAYS_IN_URL = {"app.lang", "lessons.lesson", "lessons.step"}  # even at their default: a reload keeps them
MAX_URL_VALUE = 2_000                  # a longer value in a link is ignored (see guard_url)
MAX_URL_TEXT = 300                     # longer texts are not written into the URL (it stays short)
MAX_URL_NUMBER = 2**53 - 1             # beyond this a browser cannot hold the number exactly
SEEN_KEY = "_url.seen"                 # url name -> the value this session last wrote or read there
SEEDED_KEY = "_url.seeded"             # persisted names a link has set in this session
# a link, an image, an HTML tag or entity: refused in any text a URL brings (pages never render it, but still)
MARKUP = re.compile(r"\]\(|!\[|<[A-Za-z/!?]|&#?\w+;|javascript\s*:", re.IGNORECASE)
_TRUE, _FALSE = {"1", "true", "on", "yes", "oui", "vrai"}, {"0", "false", "off", "no", "non", "faux"}
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_NOTHING = object()
URL_ICON = ":material/link:"            # notices about the URL (a Material Symbol: no emoji font needed)


def widget_key(name: str, per_lang: bool = False) -> str:
    """The widget's own key; ``per_lang`` gives a fresh widget (new labels) after a language switch."""
    return f"{WIDGET_PREFIX}{name}.{current_lang()}" if per_lang else f"{WIDGET_PREFIX}{name}"


def get(name: str, default: Any = None) -> Any:
    return st.session_state.get(name, default)


def set_value(name: str, value: Any, per_lang: bool = False) -> None:
    """Change a persisted value before its widget is drawn (in a callback, or above the widget)."""
    st.session_state[name] = value
    st.session_state[widget_key(name, per_lang)] = value


def url_name(name: str) -> str:
    """The query parameter that carries the persisted value ``name``."""
    return URL_ALIASES.get(name, name)


def from_link(name: str) -> bool:
    """True once a link (URL) has set the persisted value ``name`` in this session."""
    return name in st.session_state.get(SEEDED_KEY, ())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fits(value: Any, options: Sequence | None, bounds: dict) -> bool:
    """Would the widget accept ``value`` as it is drawn now?"""
    if options is not None:
        if isinstance(value, (list, tuple)):          # multiselect: known options, each once, not too many
            most = bounds.get("max_selections")
            return (all(v in options and v not in value[:i] for i, v in enumerate(value))
                    and (most is None or len(value) <= most))
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
    if isinstance(value, (list, tuple)) and options is not None:  # multiselect: the known options, each once,
        kept = [v for v in value if v in options]                   # at most max_selections of them
        kept = [v for i, v in enumerate(kept) if v not in kept[:i]][:bounds.get("max_selections") or len(kept)]
        if kept:
            return kept
    if _fits(default, options, bounds):
        return default
    if isinstance(default, (list, tuple)):  # multiselect: keep the options that still exist
        return [v for v in default if options and v in options]
    return options[0] if options else default


# ------------------------------------------------------------------ URL values
@dataclass(frozen=True)
class UrlSpec:
    """How a widget's value is written in a URL, and what the widget accepts."""

    kind: str                      # "option" | "options" | "bool" | "int" | "float" | "text" | "" (not in URL)
    default: Any
    options: tuple = ()
    low: float | None = None
    high: float | None = None
    nullable: bool = False         # an empty number means "off" (None)
    max_chars: int = MAX_URL_VALUE
    max_items: int | None = None
    one_line: bool = False


def spec_of(widget: Callable, default: Any, options: Sequence | None, kwargs: dict) -> UrlSpec:
    """The URL spec of a persisted widget, from its default, options and keyword arguments."""
    kind_name = getattr(widget, "__name__", "")
    if options is not None:
        multi = isinstance(default, (list, tuple))
        return UrlSpec("options" if multi else "option", default, tuple(options),
                       max_items=kwargs.get("max_selections"))
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if isinstance(default, bool):
        return UrlSpec("bool", default)
    if _number(default) or (default is None and kind_name == "number_input"):
        probe = default if default is not None else kwargs.get("step", low if low is not None else 0)
        kind = "int" if isinstance(probe, int) and not isinstance(probe, bool) else "float"
        nullable = default is None or "placeholder" in kwargs
        return UrlSpec(kind, default, low=low, high=high, nullable=nullable)
    if isinstance(default, str):
        cap = min(MAX_URL_VALUE, int(kwargs.get("max_chars") or MAX_URL_VALUE))
        return UrlSpec("text", default, max_chars=cap, one_line=kind_name == "text_input")
    return UrlSpec("", default)


def _parse_number(spec: UrlSpec, raw: str) -> tuple[Any, str | None]:
    text = raw.strip().replace(",", ".")
    if text == "" or text.lower() in ("none", "off"):
        return (None, None) if spec.nullable else (_NOTHING, "invalid")
    if len(text) > 40 or not _NUMBER.match(text):
        return _NOTHING, "invalid"
    value = float(text)
    if not math.isfinite(value):
        return _NOTHING, "invalid"
    if spec.kind == "int":
        if not value.is_integer():
            return _NOTHING, "invalid"
        value = int(value)
    low = spec.low if spec.low is not None else -MAX_URL_NUMBER
    high = spec.high if spec.high is not None else MAX_URL_NUMBER
    if value < low or value > high:
        value = type(value)(max(low, min(high, value)))
        return value, "clamped"
    return value, None


def _parse_option(spec: UrlSpec, raw: str) -> tuple[Any, str | None]:
    by_text = {str(o): o for o in spec.options}
    if raw in by_text:
        return by_text[raw], None
    numbers = [o for o in spec.options if _number(o)]
    if numbers and len(numbers) == len(spec.options):       # an ordered scale: clamp to the nearest step
        value, problem = _parse_number(UrlSpec("float", None), raw)
        if problem is None and value is not None:
            return min(numbers, key=lambda o: (abs(o - value), o)), "clamped"
    return _NOTHING, "invalid"


def parse_url_value(spec: UrlSpec, raw: str) -> tuple[Any, str | None]:
    """``(value, problem)``: the widget's value for ``raw``, or ``_NOTHING`` when it must be ignored.

    ``problem`` is None, ``"clamped"`` (the value was brought into range: use it),
    ``"invalid"``, ``"markup"`` or ``"too_long"`` (ignored).
    """
    if not isinstance(raw, str):
        return _NOTHING, "invalid"
    if len(raw) > (spec.max_chars if spec.kind == "text" else MAX_URL_VALUE):
        return _NOTHING, "too_long"
    if spec.kind == "bool":
        word = raw.strip().lower()
        return (True, None) if word in _TRUE else (False, None) if word in _FALSE else (_NOTHING, "invalid")
    if spec.kind in ("int", "float"):
        return _parse_number(spec, raw)
    if spec.kind == "option":
        return _parse_option(spec, raw)
    if spec.kind == "options":
        wanted = [part for part in raw.split(",") if part] if raw else []
        by_text = {str(o): o for o in spec.options}
        chosen = list(dict.fromkeys(by_text[p] for p in wanted if p in by_text))
        problem = None if len(chosen) == len(wanted) else "invalid"
        if spec.max_items and len(chosen) > spec.max_items:
            chosen, problem = chosen[:spec.max_items], "clamped"
        if problem == "invalid" and not chosen:
            return _NOTHING, problem
        return chosen, problem
    if spec.kind == "text":
        if MARKUP.search(raw):
            return _NOTHING, "markup"
        return (" ".join(raw.splitlines()) if spec.one_line else raw), None
    return _NOTHING, "invalid"


def url_text(spec: UrlSpec, value: Any) -> str | None:
    """How ``value`` is written in the URL; None when it stays out of it (a long text, an odd option)."""
    if spec.kind == "bool":
        return "1" if value else "0"
    if spec.kind in ("int", "float"):
        if value is None:
            return "" if spec.nullable else None
        return str(int(value)) if spec.kind == "int" else f"{float(value):.10g}"
    if spec.kind == "option":
        return str(value)
    if spec.kind == "options":
        parts = [str(v) for v in value or []]
        return None if any("," in p for p in parts) else ",".join(parts)
    if spec.kind == "text" and isinstance(value, str) and len(value) <= MAX_URL_TEXT:
        return value
    return None


def _say_problem(problem: str, label: str, value: Any) -> None:
    """One line, in the UI language; the URL's own text is never echoed (only a parsed, safe value)."""
    label = plain(label)
    if problem == "clamped":
        shown = ", ".join(map(str, value)) if isinstance(value, list) else (
            number(value, current_lang()) if _number(value) else str(value))
        st.warning(t("url.clamped", label=label, used=plain(shown)), icon=URL_ICON)
    else:
        st.warning(t(f"url.{problem}", label=label), icon=URL_ICON)


def _seed_from_url(name: str, label: str, spec: UrlSpec, per_lang: bool) -> None:
    """A value the URL brings and this session did not write: parsed, checked, then set (once)."""
    key = url_name(name)
    raw = st.query_params.get(key)
    seen = st.session_state.setdefault(SEEN_KEY, {})
    if raw is None or seen.get(key) == raw:
        return
    seen[key] = raw
    value, problem = parse_url_value(spec, raw)
    if problem is not None:
        _say_problem(problem, label, value)
    if value is not _NOTHING:
        set_value(name, value, per_lang)
        st.session_state.setdefault(SEEDED_KEY, set()).add(name)


def _write_to_url(name: str, spec: UrlSpec, value: Any) -> None:
    """The widget's value back into the URL; left out when it is the default (a short URL) or too long."""
    key = url_name(name)
    text = url_text(spec, value)
    seen = st.session_state.setdefault(SEEN_KEY, {})
    if text is None or (value == spec.default and name not in ALWAYS_IN_URL):
        if key in st.query_params:
            del st.query_params[key]
        seen.pop(key, None)
        return
    if st.query_params.get(key) != text:
        st.query_params[key] = text
    seen[key] = text


def _total(format_func: Callable[[Any], Any]) -> Callable[[Any], str]:
    """``format_func`` made total: Streamlit also formats the values a client sends, which may be no option
    at all (a hostile websocket); a label function that fails or returns None there must not crash the page."""
    def label(value: Any) -> str:
        try:
            text = format_func(value)
        except Exception:  # noqa: BLE001  (a value the page never offered: no label of its own)
            text = None
        return str(value) if text is None else str(text)

    return label


def persisted(widget: Callable, label: str, name: str, default: Any, *, options: Sequence | None = None,
              per_lang: bool = False, on_change: Callable | None = None, **kwargs) -> Any:
    """Draw ``widget`` (``st.slider``, ``col.selectbox``, ...) with its value kept in ``name`` and in the URL.

    A stored value the widget can no longer show (an option that vanished, a
    number out of a new range) falls back to ``default``, clamped into range.
    """
    ss = st.session_state
    wkey = widget_key(name, per_lang)
    options = list(options) if options is not None else None
    in_url = name not in NOT_IN_URL and known_param(url_name(name))  # e.g. not a name made of the user's text
    spec = spec_of(widget, default, options, kwargs) if in_url else UrlSpec("", default)
    if spec.kind:
        _seed_from_url(name, label, spec, per_lang)
    if wkey not in ss or not _fits(ss[wkey], options, kwargs):
        value = ss.get(name, default)
        ss[wkey] = value if _fits(value, options, kwargs) else _fallback(value, default, options, kwargs)

    def keep() -> None:
        ss[name] = ss[wkey]
        if on_change is not None:
            on_change()

    if "format_func" in kwargs:
        kwargs["format_func"] = _total(kwargs["format_func"])
    args = (label, options) if options is not None else (label,)
    value = widget(*args, key=wkey, on_change=keep, **kwargs)
    ss[name] = value
    if spec.kind:
        _write_to_url(name, spec, value)
    return value


# ------------------------------------------------------------ the URL's guard
# Query parameters the app reads: the aliases, the Attention page's own ``layer``/``head``, and persisted names
# (``<area>.<name>``) of these areas. Anything else in a URL is ignored, with a notice.
URL_AREAS = {"app", "home", "tok", "emb", "attention", "logit_lens", "architecture", "next_token", "decoding", "data",
             "corpus", "pretrain", "finetune", "lessons", "seq2seq", "history"}
SHORT_PARAMS = set(URL_ALIASES.values()) | {"layer", "head"}
ECHOED = {"layer", "head"}                  # a page repeats these in its own messages: letters and digits only
MAX_URL_PARAMS = 64
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,4}$")
_SAFE_ECHO = re.compile(r"^[A-Za-z0-9+-]{0,12}$")


def known_param(key: str) -> bool:
    """Could ``key`` be one of the app's query parameters? (its value is checked where it is used)"""
    if key in SHORT_PARAMS:
        return True
    if key in NOT_IN_URL:                   # a server folder, the device: never taken from a link
        return False
    return len(key) <= 64 and bool(_PARAM_NAME.match(key)) and key.split(".", 1)[0] in URL_AREAS and "." in key


def guard_url() -> None:
    """Drop what no widget may see: unknown parameters, over-long values, web markup; say it in one line each.

    Idempotent (a second call in the same run finds nothing to drop); the sidebar
    calls it before any widget, and :func:`explorer.ui.model_store.current_model`
    too, so a page run on its own (tests) is guarded as well.
    """
    qp = st.query_params
    dropped = {"unknown": 0, "too_long": 0, "markup": 0, "invalid": 0}
    for i, key in enumerate(list(qp)):
        values = qp.get_all(key)
        reason = None
        if i >= MAX_URL_PARAMS or not known_param(key):
            reason = "unknown"
        elif any(len(v) > MAX_URL_VALUE for v in values):
            reason = "too_long"
        elif any(MARKUP.search(v) for v in values):
            reason = "markup"
        elif key in ECHOED and not _SAFE_ECHO.match(values[-1]):  # e.g. ?layer=<400 digits>: no markup, but odd
            reason = "invalid"
        if reason is not None:
            del qp[key]
            dropped[reason] += 1
        elif len(values) > 1:            # a repeated parameter: the last one counts, as in a browser form
            qp[key] = values[-1]
    for reason, n in dropped.items():
        if n:
            st.warning(t(f"url.dropped_{reason}", n=n, max=number(MAX_URL_VALUE, current_lang())), icon=URL_ICON)
