"""Home: the model card and a quick look (coloured tokens + top-10 next tokens)."""
import streamlit as st

from explorer.figures.bars import prob_bars
from explorer.figures.tokens import chips_html
from explorer.views.home import licences, model_card_rows, quick_look
from explorer.ui.i18n import current_lang, t
from explorer.ui.model_store import current_model, label_of
from explorer.ui.text_input import text_area_checked

lm = current_model()
st.title(t("app.title"))
st.caption(t("app.tagline"))

st.subheader(t("home.card"))
st.caption(label_of(lm.source))
cols = st.columns(4)
for i, (label, value) in enumerate(model_card_rows(lm)):
    cols[i % 4].metric(label, value)

st.subheader(t("home.quick_look"))
checked = text_area_checked(st, "home", t("home.prompt"), t("home.default_text"), height=90)
if checked.ok:
    look = quick_look(lm, checked.text)
    if look.notice:
        st.warning(look.notice)
    st.html(chips_html(look.pieces, look.text))
    st.caption(t("home.n_tokens", n=len(look.pieces)))
    left, right = st.columns([3, 2])
    left.plotly_chart(prob_bars(look.labels, look.probs, t("home.next_title"), lang=current_lang()), width="stretch")
    right.dataframe(look.table, hide_index=True, width="stretch")

with st.expander(t("home.licences")):
    st.caption(t("home.licences_help"))
    for model, licence, where in licences():
        st.text(f"{model} — {licence} ({where})")
