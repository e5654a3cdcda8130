"""Next token: raw scores, softmax, each processor's effect; then choose (greedy or a seeded draw) and repeat."""
import streamlit as st

from explorer import decoding_view as dv
from explorer import next_token_view as nv
from explorer.fig_decoding import history_chart, stage_bars
from explorer.figures import prob_bars
from explorer.i18n import t
from explorer.models import current_model, label_of
from explorer.textinput import fit_context
from explorer.tokens_view import token_label

lm = current_model()
tok = lm.tokenizer
st.title(t("next_token.title"))
st.caption(t("next_token.intro"))
st.caption(label_of(lm.source))
remember = dv.remembered

raw = st.text_area(t("next_token.prompt"), height=80,
                   **remember("next_token.prompt", t("next_token.default_prompt")))
c = st.columns(6)
temperature = c[0].number_input(t("decoding.temperature"), step=0.1, format="%.2f",
                                help=t("decoding.temperature_help"), **remember("next_token.temperature", 0.8))
top_k = c[1].number_input(t("decoding.top_k"), step=1, placeholder=t("decoding.off"),
                          help=t("decoding.top_k_help"), **remember("next_token.top_k", None))
top_p = c[2].number_input(t("decoding.top_p"), step=0.05, format="%.2f", help=t("decoding.top_p_help"),
                          **remember("next_token.top_p", 0.9))
min_p = c[3].number_input(t("decoding.min_p"), step=0.05, format="%.2f", help=t("decoding.min_p_help"),
                          **remember("next_token.min_p", 0.0))
penalty = c[4].number_input(t("decoding.rep_penalty"), step=0.1, format="%.2f",
                            help=t("decoding.rep_penalty_help"), **remember("next_token.rep_penalty", 1.0))
top_n = c[5].slider(t("next_token.top_n"), 3, 30, **remember("next_token.top_n", 10))
guess_mode = st.toggle(t("next_token.guess_mode"), help=t("next_token.guess_help"),
                       **remember("next_token.guess_mode", False))

ctx = dv.context_of(lm.model)
prompt = dv.prepare(tok, raw, ctx)
dv.show(st, prompt.messages)
if nv.sync_base(lm.source.key, prompt.ids):
    st.info(t("next_token.history_dropped"))
checked = dv.check_settings(dv.vocab_of(lm.model), temperature, top_k, top_p, min_p, penalty)
dv.show(st, checked.messages)
if not checked.ok:
    st.stop()

hist = nv.history()
ids, notice = fit_context(prompt.ids + [h["id"] for h in hist], ctx)
if notice:
    st.warning(notice)
d = nv.distribution(lm, ids, checked)
texts, probs = nv.sequence_parts(tok, hist)
st.markdown(f"**{t('next_token.sequence', n=len(ids))}**")
st.html(dv.tokens_html(prompt.text, texts, probs))
if hist and hist[-1]["id"] == tok.eos_id:
    st.info(t("next_token.eos_chosen", token=token_label(tok, tok.eos_id)))

# ---- guess mode: the distribution stays hidden until the student commits to a guess
hidden = False
if guess_mode and nv.revealed(ids) is None:
    st.subheader(t("next_token.guess_header"))
    cands = nv.candidates(d, top_n)
    picked = st.radio(t("next_token.pick"), [None, *cands], horizontal=True, key=f"_w.next_token.pick.{len(ids)}",
                      format_func=lambda i: t("next_token.pick_none") if i is None else token_label(tok, i))
    g1, g2 = st.columns([3, 1], vertical_alignment="bottom")
    typed = g1.text_input(t("next_token.type_guess"), key=f"_w.next_token.typed.{len(ids)}",
                          help=t("next_token.type_help"))
    if g2.button(t("next_token.reveal"), type="primary", width="stretch"):
        guess = nv.resolve_guess(tok, d.raw, typed, picked)
        if guess is None:
            st.warning(t("next_token.guess_nothing"))
        else:
            nv.reveal(ids, guess)
    hidden = nv.revealed(ids) is None
    if hidden:
        st.info(t("next_token.hidden"))
done = nv.revealed(ids) if guess_mode else None
if done:
    key = "next_token.guess_top" if done["rank"] == 1 else "next_token.guess_result"
    st.success(t(key, token=done["label"], rank=done["rank"], prob=done["prob"]))
    if done["note"]:
        st.caption(t(f"next_token.guess_note_{done['note']}"))

# ---- the distribution: top-N table, then each processor's effect
if not hidden:
    labels, stages = nv.stages(tok, d, top_n)
    left, right = st.columns([1, 1])
    with left:
        st.markdown(f"**{t('next_token.top_header', n=top_n)}**")
        st.dataframe(nv.top_table(tok, d, top_n), hide_index=True, width="stretch", height=35 * (len(labels) + 1) + 3)
        st.caption(t("next_token.entropy", h0=d.entropy_raw, h1=d.entropy_final, v=d.raw.numel()))
    right.plotly_chart(prob_bars(labels, stages[0]["before"], t("next_token.raw_title", h=d.entropy_raw)),
                       width="stretch", key="next_token.raw_fig")
    st.markdown(f"**{t('next_token.stages_header')}**")
    if len(stages) > 1:
        st.plotly_chart(stage_bars(labels, stages[1:], t("next_token.before"), t("next_token.after"),
                                   t("next_token.removed"), cols=3), width="stretch", key="next_token.stage_fig")
        if d.views:
            st.dataframe(nv.stage_table(d), hide_index=True, width="stretch")
    else:
        st.caption(t("next_token.no_processor"))

# ---- choose, append, repeat
st.subheader(t("next_token.choose_header"))
c = st.columns([1.3, 1, 1, 1, 1], vertical_alignment="bottom")
seed = c[0].number_input(t("decoding.seed"), min_value=0, max_value=nv.MAX_SEED, step=1,
                         help=t("next_token.seed_help"), **remember("next_token.seed", 0))
c[1].button(t("next_token.greedy_btn"), on_click=nv.on_choose, args=(lm, ids, checked, "greedy", seed),
            disabled=hidden, width="stretch", key="next_token.greedy_btn")
c[2].button(t("next_token.sample_btn", seed=seed + len(hist)), on_click=nv.on_choose,
            args=(lm, ids, checked, "sample", seed), disabled=hidden, width="stretch", key="next_token.sample_btn")
c[3].button(t("next_token.undo"), on_click=nv.on_undo, disabled=not hist, width="stretch", key="next_token.undo")
c[4].button(t("next_token.reset"), on_click=nv.on_reset, disabled=not hist, width="stretch", key="next_token.reset")
if checked.greedy:
    st.caption(t("next_token.sample_is_greedy"))

if hist:
    st.subheader(t("next_token.history_header", n=len(hist)))
    a, b = st.columns([5, 3])
    a.dataframe(nv.history_frame(tok, hist), hide_index=True, width="stretch")
    b.plotly_chart(history_chart([h["prob"] for h in hist], [h["entropy"] for h in hist], t("common.prob"),
                                 t("next_token.col_entropy"), t("next_token.history_chart")), width="stretch")
