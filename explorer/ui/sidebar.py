"""The sidebar, written once: language, model picker with source and status, device; then, above the page,
the lesson step a link opened.

Before any widget, the URL is checked (:func:`explorer.ui.state.guard_url`):
the language and every persisted value can come from a shared link.
"""
from __future__ import annotations

import streamlit as st

from explorer.ui.i18n import DEFAULT_LANG, LANG_KEY, LANGS, t
from explorer.ui.messages import decimal, plain, say
from explorer.ui.model_store import (DEVICE_KEY, LOCAL_KEY, MODEL_KEY, available_devices, class_models,
                                     current_model, default_model, label_of, local_refusal, model_choices,
                                     unavailable_models)
from explorer.ui.state import from_link, guard_url, persisted, set_value
from explorer.views.lessons import lesson_banner

CHOSEN_KEY = "app.model_chosen"   # the user (or a link) picked a model: it no longer follows the language
LANG_SEEN_KEY = "app.lang_seen"   # the language of the previous run, to notice a switch


def _choose() -> None:
    st.session_state[CHOSEN_KEY] = True


def _language(bar) -> str:
    """The language radio (``?lang=fr|en`` seeds it); a switch moves an unchosen model to the new default."""
    lang = persisted(bar.radio, t("sidebar.lang"), LANG_KEY, DEFAULT_LANG, options=list(LANGS),
                     format_func=LANGS.get, horizontal=True)
    ss = st.session_state
    previous = ss.get(LANG_SEEN_KEY)
    ss[LANG_SEEN_KEY] = lang
    if previous is not None and previous != lang and not ss.get(CHOSEN_KEY):
        set_value(MODEL_KEY, default_model(lang))
    return lang


def _model_picker(bar, lang: str) -> str:
    """Models that can load now; the hub-only ones out of reach are named in a caption, never offered.

    In class mode, only the class's models: no local folder, and a link to another model opens the first one."""
    choices = model_choices()
    class_mode = class_models() is not None
    if not class_mode:
        choices["local"] = t("sidebar.local_option")
    model = persisted(bar.selectbox, t("sidebar.model"), MODEL_KEY, default_model(lang), options=list(choices),
                      format_func=lambda k: choices.get(k, k), on_change=_choose)
    if from_link(MODEL_KEY):
        st.session_state[CHOSEN_KEY] = True
    missing = unavailable_models()
    if missing:
        bar.caption(t("sidebar.unavailable", names=plain(", ".join(missing.values()))))
    if class_mode:
        bar.caption(t("model_limits.class_mode"))
    return model


def render_sidebar():
    """Draw the shared sidebar and return the loaded model."""
    bar = st.sidebar
    lang = _language(bar)
    guard_url()
    model = _model_picker(bar, lang)
    if model == "local":
        persisted(bar.text_input, t("sidebar.local_dir"), LOCAL_KEY, "")
    persisted(bar.selectbox, t("sidebar.device"), DEVICE_KEY, "cpu", options=available_devices())
    with bar:
        lm = current_model()
        refusal = local_refusal()
        if refusal:
            st.error(refusal)
        if lm.load_seconds:
            st.caption(t("sidebar.loaded", label=plain(label_of(lm.source)), seconds=decimal(lm.load_seconds, 1)))
        else:  # a model trained here was not loaded: its training time is not a load time
            st.caption(t("sidebar.trained", label=plain(label_of(lm.source))))
        if lm.note:
            st.warning(t("sidebar.fallback", reason=plain(say(lm.note))), icon=":material/warning:")
    lesson_banner(st)  # above the page: the step of a lesson a link opened, what to look at
    return lm
