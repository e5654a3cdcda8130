"""Attention: one head as a heatmap, every head at a glance, scores, bertviz offline."""
import streamlit as st

from explorer.views import attention as av
from explorer.ui.i18n import t
from explorer.ui.model_store import current_model, label_of
from explorer.ui.text_input import text_area_checked

lm = current_model()
st.title(t("attention.title"))
st.caption(t("attention.intro"))
st.caption(label_of(lm.source))

checked = text_area_checked(st, "attention", t("attention.text_label"), t("attention.default_text"), height=80)
if not checked.ok:
    st.stop()
data = av.analyse_or_explain(lm, checked.text)
if data is None:
    st.stop()

layer, head = av.pick_layer_head(data)
av.render_head(data, layer, head)
av.render_summary(data, layer, head)
window = av.render_grid(data, layer, head)
av.render_bertviz(data, lm.source.key, layer, window)
