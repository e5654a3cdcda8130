"""Tokenizer lab: 2 to 4 tokenizers side by side, BPE step by step, train your own, ids -> text."""
import streamlit as st

from explorer.views import tokenizer as V
from explorer.ui.i18n import current_lang, t
from explorer.ui.model_store import current_model, tokenizer_label
from explorer.ui.state import persisted

lm = current_model()
st.title(t("tokenizer.title"))
st.caption(t("tokenizer.intro"))
st.caption(t("tokenizer.model_uses", tok=tokenizer_label(lm.tokenizer)))

keys = V.choose_tokenizers()
text = V.text_input(current_lang())
left, right = st.columns(2)
allow_special = persisted(left.toggle, t("tokenizer.allow_special"), "tok.special", True,
                          help=t("tokenizer.allow_special_help"))
show_ids = persisted(right.toggle, t("tokenizer.show_ids"), "tok.show_ids", False)
tokenizers = V.load_selected(keys)
if len(keys) < 2:
    st.info(t("tokenizer.pick_two"))

comp = V.compare(tokenizers, text, allow_special)
if comp is not None:
    st.subheader(t("tokenizer.stats"))
    st.dataframe(V.stats_frame(comp), hide_index=True, width="stretch")
    st.caption(t("tokenizer.stats_help"))
    if comp.words:
        st.plotly_chart(V.word_chart(comp), width="stretch")
    st.subheader(t("tokenizer.side_by_side"))
    st.caption(t("tokenizer.chips_help"))
    V.render_comparison(comp, tokenizers, show_ids)
    with st.expander(t("tokenizer.bytes_title")):
        st.markdown(t("tokenizer.bytes_text"))

st.subheader(t("tokenizer.bpe_title"))
V.render_bpe()

st.subheader(t("tokenizer.train_title"))
V.render_training(text)

if comp is not None:
    st.subheader(t("tokenizer.rt_title"))
    V.render_round_trip(comp, tokenizers)
    st.subheader(t("tokenizer.export_title"))
    V.render_export(comp)
