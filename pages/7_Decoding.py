"""Decoding lab: greedy, sampling and beam search side by side; the beam tree step by step; seed 003's failures."""
import streamlit as st

from explorer import decoding_view as dv
from explorer.fig_decoding import beam_tree, lane_bars
from explorer.i18n import t
from explorer.models import current_model, label_of

TREE_WINDOW = 10  # steps drawn at once in the beam tree

lm = current_model()
tok = lm.tokenizer
st.title(t("decoding.title"))
st.caption(t("decoding.intro"))
st.caption(label_of(lm.source))
remember = dv.remembered

# ---- seed 003's failure cases, one click each (the prompt depends on the model: see decoding_view.preset)
st.markdown(f"**{t('decoding.presets')}**")
cols = st.columns(4)
for col, name in zip(cols, ("greedy_loop", "greedy_fix", "beam_loop", "beam_fix")):
    col.button(t(f"decoding.preset_{name}"), on_click=dv.apply_preset, args=(name, tok), width="stretch",
               key=f"decoding.btn_{name}")
active = st.session_state.get("decoding.preset")
if active:
    st.info(t(f"decoding.preset_{active}_help", model=lm.source.key))

raw = st.text_area(t("decoding.prompt"), height=80, **remember("decoding.prompt", t("decoding.default_prompt")))
c = st.columns(4)
seed = c[0].number_input(t("decoding.seed"), min_value=0, max_value=2**31 - 1, step=1,
                         help=t("decoding.seed_help"), **remember("decoding.seed", 0))
max_new = c[1].number_input(t("decoding.max_new"), step=1, help=t("decoding.max_new_help", cap=dv.MAX_NEW_UI),
                            **remember("decoding.max_new", 20))
beams = c[2].number_input(t("decoding.beams"), step=1, help=t("decoding.beams_help"), **remember("decoding.beams", 3))
length_penalty = c[3].number_input(t("decoding.length_penalty"), step=0.1, format="%.2f",
                                   help=t("decoding.length_penalty_help"), **remember("decoding.length_penalty", 1.0))
c = st.columns(5)
temperature = c[0].number_input(t("decoding.temperature"), step=0.1, format="%.2f",
                                help=t("decoding.temperature_help"), **remember("decoding.temperature", 1.0))
top_k = c[1].number_input(t("decoding.top_k"), step=1, placeholder=t("decoding.off"), help=t("decoding.top_k_help"),
                          **remember("decoding.top_k", 50))
top_p = c[2].number_input(t("decoding.top_p"), step=0.05, format="%.2f", help=t("decoding.top_p_help"),
                          **remember("decoding.top_p", 1.0))
penalty = c[3].number_input(t("decoding.rep_penalty"), step=0.1, format="%.2f",
                            help=t("decoding.rep_penalty_fix_help"), **remember("decoding.repetition_penalty", 1.0))
no_repeat = c[4].number_input(t("decoding.no_repeat"), step=1, help=t("decoding.no_repeat_help"),
                              **remember("decoding.no_repeat_ngram", 0))

# ---- every value is checked by gpt_core.decoding; what it refuses is said, never raised
ctx, vocab = dv.context_of(lm.model), dv.vocab_of(lm.model)
n_new, messages = dv.check_length(max_new, ctx)
beam_messages = dv.check_beams(beams, vocab)
fix = dv.check_settings(vocab, None, repetition_penalty=penalty, no_repeat_ngram=no_repeat)
samp = dv.check_settings(vocab, temperature, top_k, top_p, None, penalty, no_repeat)
dv.show(st, messages + beam_messages + fix.messages + [m for m in samp.messages if m not in fix.messages])
if not n_new or not fix.ok:
    st.stop()
prompt = dv.prepare(tok, raw, ctx, reserve=n_new)
dv.show(st, prompt.messages)

with st.spinner(t("decoding.running")):
    lab = dv.run_lab(lm, prompt.ids, n_new, fix, samp, seed, beams, length_penalty, run_beams=not beam_messages)

cols = st.columns(3)
for col, name in zip(cols, ("greedy", "sample", "beam")):
    with col:
        st.subheader(t(f"decoding.lane_{name}"))
        st.caption(dv.strategy_caption(name, samp.spec, beams, length_penalty))
        lane = lab.lanes.get(name)
        if lane is None:
            st.error(lab.errors.get(name) or t(f"decoding.lane_off_{name}"))
            continue
        st.html(dv.tokens_html(prompt.text, lane.texts, lane.probs))
        m1, m2 = st.columns(2)
        m1.metric(t("decoding.logprob"), f"{lane.raw_logprob:.2f}", help=t("decoding.logprob_help"))
        m2.metric(t("decoding.repeats"), f"{lane.repeat_share:.0%}", help=t("decoding.repeats_help"))
        st.caption(t("decoding.lane_caption", n=len(lane.new_ids), stop=t(f"decoding.stop_{lane.stop_reason}"),
                     lp=lane.strategy_logprob))
        st.plotly_chart(lane_bars(lane.texts, lane.probs, t("decoding.lane_chart"), t("common.prob")),
                        width="stretch", key=f"decoding.chart_{name}")

# ---- beam search step by step
beam = lab.beam
if beam is not None and beam.tree:
    st.subheader(t("decoding.tree_header"))
    st.caption(t("decoding.tree_intro", k=beam.num_beams, lp=beam.length_penalty))
    nodes = dv.tree_nodes(beam, tok)
    n_steps = len(beam.tree)
    step = n_steps if n_steps == 1 else st.slider(t("decoding.tree_slider"), 1, n_steps, n_steps,
                                                  key=f"_w.decoding.tree_step.{n_steps}")
    if step > TREE_WINDOW:
        st.caption(t("decoding.tree_window", lo=step - TREE_WINDOW + 1, hi=step))
    st.plotly_chart(beam_tree(nodes, step - 1, TREE_WINDOW, dv.tree_text()), width="stretch",
                    key="decoding.tree")
    st.markdown(f"**{t('decoding.beams_at', step=step)}**")
    st.table(dv.beams_at(nodes, step - 1), hide_index=True)
    st.markdown(f"**{t('decoding.finished_header')}**")
    st.table(dv.hypotheses_table(beam, tok), hide_index=True)
