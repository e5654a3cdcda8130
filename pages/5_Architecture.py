"""Architecture: the chosen model's own blocks next to GPT-2 written by hand; live shapes, parameters, parity."""
import streamlit as st

from explorer.views import architecture as av
from explorer.ui.i18n import t
from explorer.ui.model_store import current_model
from explorer.ui.text_input import text_area_checked

lm = current_model()
av.render_header(lm)
checked = text_area_checked(st, "architecture", t("architecture.text_label"), av.default_text(), height=68)
if not checked.ok:
    st.stop()
run = av.run_or_explain(lm, checked.text)
if run is None:
    st.stop()
av.render_flow(run)
av.render_differences(run)
av.render_modules(run)
av.render_params(run)
av.render_parity(run)
av.render_last_position(run)
