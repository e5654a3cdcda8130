"""Logit lens: an ecco-style table of the top-1 token at every layer and position."""
import streamlit as st

from explorer.views import logit_lens as lv
from explorer.ui.i18n import t
from explorer.ui.model_store import current_model, label_of
from explorer.ui.text_input import text_area_checked

lm = current_model()
st.title(t("logit_lens.title"))
st.caption(t("logit_lens.intro"))
st.caption(label_of(lm.source))

checked = text_area_checked(st, "logit_lens", t("logit_lens.text_label"), t("logit_lens.default_text"), height=80)
if not checked.ok:
    st.stop()
data = lv.analyse_or_explain(lm, checked.text)
if data is None:
    st.stop()
lv.render_table(data)
lv.render_tracked(data, lm.tokenizer)
