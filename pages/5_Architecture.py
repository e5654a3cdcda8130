"""Architecture: the from-scratch GPT module by module, live shapes, parameters, parity, last position."""
import streamlit as st

from explorer.views import architecture as av
from explorer.ui.i18n import t
from explorer.ui.model_store import current_model
from explorer.ui.state import persisted
from explorer.ui.text_input import text_area_checked

lm = current_model()
st.title(t("architecture.title"))
st.caption(t("architecture.intro"))

full = False
if not av.is_own_gpt(lm):
    full = persisted(st.toggle, t("architecture.full_size"), "architecture.full_size", False)
with st.spinner():
    subj = av.subject(lm, full)
st.info(t("architecture.subject", label=subj.label))

checked = text_area_checked(st, "architecture", t("architecture.text_label"), t("architecture.default_text"), height=68)
if not checked.ok:
    st.stop()
ids, notice = av.encode(subj, checked.text)
if notice:
    st.warning(notice)
steps = av.live_shapes_or_explain(subj, lm.source.key, ids)
if steps is None:
    st.stop()
cfg = subj.model.cfg
st.caption(t("architecture.n_tokens", n=len(ids), d=cfg.d_model, nh=cfg.n_heads, v=cfg.vocab_size))
if av.is_random(lm, subj):
    st.caption(t("architecture.random_note"))

# ---- the whole journey
st.subheader(t("architecture.flow_header"))
st.caption(t("architecture.flow_help"))
st.dataframe(av.shapes_table(steps), hide_index=True, width="stretch", height=av.table_height(len(steps)))

av.render_modules(steps)
av.render_params(subj)
av.render_parity(subj, lm.source.key, ids)
av.render_last_position(subj, lm.source.key, ids)
