"""Embeddings: token rows, positions (learned table or RoPE), block input, PCA, neighbours."""
import streamlit as st

from explorer.views import embeddings as V
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import number
from explorer.ui.model_store import current_model, label_of

lm = current_model()
info = V.model_info(lm)
st.title(t("embeddings.title"))
st.caption(t("embeddings.intro"))
st.caption(t("embeddings.model_line", label=label_of(lm.source), vocab=number(info.vocab_size, current_lang()), d=info.d_model,
             kind=t(f"embeddings.kind_{info.position_kind}")))

st.subheader(t("embeddings.input_title"))
st.markdown(t("embeddings.input_help"))
V.render_input(lm)

st.subheader(t("embeddings.positions_title"))
V.render_positions(lm, info.context_length)

st.subheader(t("embeddings.pca_section"))
st.markdown(t("embeddings.pca_intro"))
V.render_projection(lm)

st.subheader(t("embeddings.nn_title"))
st.caption(t("embeddings.nn_help"))
V.render_neighbours(lm)
