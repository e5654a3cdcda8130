"""Tokenizer lab: 2 to 4 tokenizers side by side, BPE step by step, train your own, ids -> text."""
import streamlit as st

from explorer import tokenlab_view as V
from explorer.i18n import current_lang, t
from explorer.models import current_model
from gpt_core import tokenlab
from gpt_core.errors import GPTCoreError

lm = current_model()
st.title(t("tokenizer.title"))
st.caption(t("tokenizer.intro"))
st.caption(t("tokenizer.model_uses", tok=lm.tokenizer.name))

keys = V.choose_tokenizers()
text = V.text_input(current_lang())
left, right = st.columns(2)
allow_special = left.toggle(t("tokenizer.allow_special"), value=True, key="_w.tok.special",
                            help=t("tokenizer.allow_special_help"))
show_ids = right.toggle(t("tokenizer.show_ids"), value=False, key="_w.tok.show_ids")
tokenizers = V.load_selected(keys)
if len(keys) < 2:
    st.info(t("tokenizer.pick_two"))

comp = None
if text and tokenizers:
    try:
        comp = tokenlab.compare_tokenizers(tokenizers, text, allow_special=allow_special)
    except GPTCoreError as exc:
        st.error(str(exc))

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
