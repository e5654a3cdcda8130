"""Decoding lab: greedy, sampling and beam search side by side; the beam tree step by step; classic failure cases."""
import streamlit as st

from explorer.views import decoding as dv
from explorer.ui.i18n import t
from explorer.ui.model_store import current_model, label_of

lm = current_model()
st.title(t("decoding.title"))
st.caption(t("decoding.intro"))
st.caption(label_of(lm.source))

dv.render_presets(lm)      # greedy loops and repeating beams, with their cures, one click each
settings = dv.settings_form()
plan = dv.plan_lab(lm, settings)   # every value checked; what is refused is said, never raised
if plan is None:
    st.stop()
lab = dv.run_plan(lm, settings, plan)
dv.render_lanes(lab, settings, plan)
dv.render_tree(lab.beam, lm.tokenizer)
