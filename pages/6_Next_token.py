"""Next token: raw scores, softmax, each processor's effect; then choose (greedy or a seeded draw) and repeat."""
import streamlit as st

from explorer.views import next_token as nv
from explorer.ui.i18n import t
from explorer.ui.model_store import current_model, label_of

lm = current_model()
st.title(t("next_token.title"))
st.caption(t("next_token.intro"))
st.caption(label_of(lm.source))

settings = nv.settings_form()
step = nv.current_step(lm, settings)   # every value checked; what is refused is said, never raised
if step is None:
    st.stop()
hidden = nv.render_guess(lm.tokenizer, step, settings.top_n, settings.guess_mode)
if not hidden:
    nv.render_distribution(lm.tokenizer, step.d, settings.top_n)
nv.render_choose(lm, step, hidden)
nv.render_history(lm.tokenizer, step.hist)
