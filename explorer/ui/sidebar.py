"""The sidebar, written once: language, model picker with source and status, device."""
from __future__ import annotations

import streamlit as st

from gpt_core.registry import DEFAULT_MODEL

from explorer.ui.i18n import DEFAULT_LANG, LANG_KEY, LANGS, t
from explorer.ui.messages import plain, say
from explorer.ui.model_store import (DEVICE_KEY, LOCAL_KEY, MODEL_KEY, available_devices, current_model, label_of,
                                     model_choices)
from explorer.ui.state import persisted


def render_sidebar():
    """Draw the shared sidebar and return the loaded model."""
    bar = st.sidebar
    persisted(bar.radio, t("sidebar.lang"), LANG_KEY, DEFAULT_LANG, options=list(LANGS), format_func=LANGS.get,
              horizontal=True)
    choices = model_choices()
    choices["local"] = t("sidebar.local_option")
    model = persisted(bar.selectbox, t("sidebar.model"), MODEL_KEY, DEFAULT_MODEL, options=list(choices),
                      format_func=lambda k: choices.get(k, k))
    if model == "local":
        persisted(bar.text_input, t("sidebar.local_dir"), LOCAL_KEY, "")
    persisted(bar.selectbox, t("sidebar.device"), DEVICE_KEY, "cpu", options=available_devices())
    with bar:
        lm = current_model()
        st.caption(t("sidebar.loaded", label=label_of(lm.source), seconds=lm.load_seconds))
        if lm.note:
            st.warning(t("sidebar.fallback", reason=plain(say(lm.note))), icon="⚠️")
    return lm
