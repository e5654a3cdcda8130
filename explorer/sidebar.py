"""The sidebar, written once: language, model picker with source and status, device."""
from __future__ import annotations

import streamlit as st

from gpt_core.registry import DEFAULT_MODEL

from .i18n import LANG_KEY, LANGS, current_lang, t
from .models import DEVICE_KEY, LOCAL_KEY, MODEL_KEY, label_of, available_devices, current_model, model_choices


def _copy(widget_key: str, state_key: str):
    def callback():
        st.session_state[state_key] = st.session_state[widget_key]
    return callback


def _select(label: str, options: list, state_key: str, default, fmt=str, radio=False):
    """A widget whose value lives in a plain session key, so it survives page switches."""
    value = st.session_state.get(state_key, default)
    if value not in options:
        value = default if default in options else options[0]
    st.session_state[state_key] = value
    kwargs = dict(index=options.index(value), format_func=fmt, key=f"_w.{state_key}",
                  on_change=_copy(f"_w.{state_key}", state_key))
    if radio:
        st.sidebar.radio(label, options, horizontal=True, **kwargs)
    else:
        st.sidebar.selectbox(label, options, **kwargs)


def render_sidebar():
    """Draw the shared sidebar and return the loaded model."""
    _select(t("sidebar.lang"), list(LANGS), LANG_KEY, current_lang(), fmt=LANGS.get, radio=True)
    choices = model_choices()
    choices["local"] = t("sidebar.local_option")
    _select(t("sidebar.model"), list(choices), MODEL_KEY, DEFAULT_MODEL, fmt=lambda k: choices.get(k, k))
    if st.session_state[MODEL_KEY] == "local":
        st.sidebar.text_input(t("sidebar.local_dir"), key=f"_w.{LOCAL_KEY}",
                              value=st.session_state.get(LOCAL_KEY, ""),
                              on_change=_copy(f"_w.{LOCAL_KEY}", LOCAL_KEY))
    _select(t("sidebar.device"), available_devices(), DEVICE_KEY, "cpu")
    with st.sidebar:
        lm = current_model()
        st.caption(t("sidebar.loaded", label=label_of(lm.source), seconds=lm.load_seconds))
        if lm.note:
            st.warning(t("sidebar.fallback", reason=lm.note), icon="⚠️")
    return lm
