"""What the Next-token and Decoding-lab pages check before running: settings, lengths, beams, the prompt.

Every value a user typed goes through ``gpt_core.decoding`` (``build_processors``,
``validate_request``, ``prepare_prompt``); what it refuses comes back here as a
``(level, sentence)`` pair in the user's language, never as a traceback.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from gpt_core import decoding as dec
from gpt_core.backend import backend_of
from gpt_core.errors import InvalidInput

import streamlit as st

from explorer.ui.i18n import LANGS, current_lang, lookup, t
from explorer.ui.messages import plain, say
from explorer.ui.state import set_value
from explorer.ui.text_input import check_text
from explorer.ui.token_chips import visible

MAX_NEW_UI = 200        # the page must answer within seconds on a CPU
FIELDS = ("repetition_penalty", "no_repeat_ngram", "temperature", "top_k", "top_p", "min_p")

# the sentence for a refusal (by its gpt_core code) where ``decoding.bad_<field>`` does not say why
BAD_KEYS = {"decoding.repetition_penalty_out_of_range": "hostile.repetition_penalty_out_of_range"}

Said = tuple[str, str]  # (level: info | warning | error, sentence in the user's language)


@dataclass
class Checked:
    """The processors to use, whether decoding is greedy, and what to tell the user."""

    processors: list
    greedy: bool
    spec: tuple                   # hashable settings, to rebuild the processors inside cached functions
    messages: list[Said] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(level == "error" for level, _ in self.messages)


def fmt(value) -> str:
    """A number as the user typed it (``1.5``, ``-1``, ``NaN``, ``inf``), with a decimal comma in French."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if not isinstance(value, (int, float)):
        return repr(value)
    text = f"{value:g}"
    return text.replace(".", ",") if current_lang() == "fr" else text


def vocab_of(model) -> int:
    return backend_of(model).vocab_size


def context_of(model) -> int:
    return backend_of(model).context_length


def _culprit(settings: dict, vocab_size: int) -> tuple[str, str] | None:
    """The first setting that build_processors refuses on its own, with the refusal's code."""
    for name in FIELDS:
        value = settings.get(name)
        if value is None:
            continue
        try:
            dec.build_processors(**{"temperature": None, name: value}, vocab_size=vocab_size)
        except InvalidInput as exc:
            return name, exc.code
    return None


def _greedy_notes(procs: list, notes: list) -> list[Said]:
    """Temperature 0 explained in the page's words; any further note from gpt_core said as it is."""
    said: list[Said] = [("info", t("decoding.temp0"))]
    if any(isinstance(p, (dec.TopK, dec.TopP, dec.MinP)) for p in procs):
        said.append(("info", t("decoding.greedy_filters")))
    return said + [("info", plain(say(n))) for n in notes[len(said):]]


def check_settings(vocab_size: int, temperature=1.0, top_k=None, top_p=None, min_p=None,
                   repetition_penalty=None, no_repeat_ngram=0) -> Checked:
    """Route the page's settings through ``build_processors`` and explain its verdict."""
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                    repetition_penalty=repetition_penalty, no_repeat_ngram=no_repeat_ngram)
    spec = tuple(settings[name] for name in FIELDS)
    try:
        procs, notes, greedy = dec.build_processors(**settings, vocab_size=vocab_size)
    except InvalidInput as exc:
        culprit = _culprit(settings, vocab_size)
        if culprit is None:
            return Checked([], False, spec, [("error", plain(say(exc)))])
        name, code = culprit
        text = t(BAD_KEYS.get(code, f"decoding.bad_{name}"), value=fmt(settings[name]), vocab=vocab_size)
        return Checked([], False, spec, [("error", text)])
    messages = _greedy_notes(procs, notes) if greedy else [("info", plain(say(n))) for n in notes]
    return Checked(procs, greedy, spec, messages)


def processors_from_spec(spec: tuple, vocab_size: int) -> tuple[list, bool]:
    procs, _, greedy = dec.build_processors(**dict(zip(FIELDS, spec)), vocab_size=vocab_size)
    return procs, greedy


def check_length(max_new, context_length: int, cap: int = MAX_NEW_UI) -> tuple[int, list[Said]]:
    """``(n, messages)``: n = 0 when the request is refused; above ``cap`` it is lowered, with a warning."""
    try:
        dec.validate_request(1, max_new, context_length)
    except InvalidInput:
        if isinstance(max_new, (int, float)) and not isinstance(max_new, bool) and max_new > context_length:
            return 0, [("error", t("decoding.bad_max_new_ctx", n=fmt(max_new), ctx=context_length))]
        return 0, [("error", t("decoding.bad_max_new", n=fmt(max_new)))]
    n = int(max_new)
    if n > cap:
        return cap, [("warning", t("decoding.max_new_capped", n=n, cap=cap))]
    return n, []


def check_beams(num_beams, vocab_size: int) -> list[Said]:
    if (isinstance(num_beams, bool) or not isinstance(num_beams, (int, float)) or not math.isfinite(num_beams)
            or num_beams != int(num_beams)):
        return [("error", t("decoding.bad_beams", k=fmt(num_beams)))]
    k = int(num_beams)
    if k < 1:
        return [("error", t("decoding.bad_beams", k=k))]
    if k > dec.MAX_BEAMS:
        return [("error", t("decoding.too_many_beams", k=k, max=dec.MAX_BEAMS))]
    if k > vocab_size:
        return [("error", t("decoding.beams_vocab", k=k, vocab=vocab_size))]
    return []


@dataclass
class Prompt:
    ids: list[int]
    text: str                     # the text actually used ("" when starting from a special token)
    messages: list[Said] = field(default_factory=list)


def prepare(tokenizer, raw: str | None, context_length: int, reserve: int = 1) -> Prompt:
    """Check and encode a prompt as the model reads it (Gemma: its BOS first): empty -> start token,
    too long -> last tokens kept (each said)."""
    raw = raw or ""
    messages: list[Said] = []
    text = ""
    if raw.strip():
        checked = check_text(raw)
        messages += checked.messages
        text = checked.text
    reserve = max(1, min(int(reserve), context_length - 1))
    ids, notes = dec.prepare_prompt(tokenizer, text, context_length, reserve)  # its notes are said our way
    for n in notes:
        if n.code == "decoding.started_from_special":
            messages.append(("info", t("decoding.empty_prompt", token=visible(tokenizer.decode(ids[:1])), id=ids[0])))
            text = ""
        elif n.code == "decoding.prompt_cut":
            messages.append(("warning", t("decoding.prompt_cut", total=n.params["n"], ctx=context_length,
                                          keep=len(ids))))
            text = tokenizer.decode(ids[len(getattr(tokenizer, "model_prefix", ())):])
    return Prompt(ids, text, messages)


# ============================================== defaults that follow the UI language
def follow_language(name: str, defaults: dict, per_lang: bool = False):
    """The default of the persisted value ``name`` in the UI language (``defaults``: lang -> value).

    A value still equal to another language's default (the user never edited it)
    follows the language: French example in the French UI, English in the English
    one. An edited value stays as the user left it.
    """
    mine = defaults.get(current_lang())
    value = st.session_state.get(name, mine)
    if value != mine and value in defaults.values():
        set_value(name, mine, per_lang)
    return mine


def localized(name: str, key: str, per_lang: bool = False) -> str:
    """:func:`follow_language` for a default written in the locale files (``key``)."""
    return follow_language(name, {lang: lookup(key, lang) for lang in LANGS}, per_lang)


def show(st_module, messages: list[Said]) -> None:
    for level, text in messages:
        getattr(st_module, level)(text)
