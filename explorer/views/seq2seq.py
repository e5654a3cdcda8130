"""The Seq2seq page: BARThez (or a tiny random MBart) generating step by step, then a classifier on its encoder.

The logic is in :mod:`gpt_core.seq2seq`; this module draws it. Session keys:
``seq2seq.model`` ("barthez" | "tiny"), ``seq2seq.text``, ``seq2seq.new``, ``seq2seq.layer``,
``seq2seq.head``, ``seq2seq.clf_steps``, ``seq2seq.clf_layers``, and the last results
``seq2seq.trace`` / ``seq2seq.clf`` (each with the inputs it was made from, so a
changed input never shows a stale result).
"""
from __future__ import annotations

import streamlit as st

from gpt_core import seq2seq as S
from gpt_core.errors import GPTCoreError

from explorer.corpus import classification_records
from explorer.figures.seq2seq import cross_attention_heatmap
from explorer.figures.training import confusion_heatmap
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import attempt, decimal, number, percent, plain, say, show
from explorer.ui.state import persisted
from explorer.ui.token_chips import visible

A = "seq2seq"
TRACE, CLF = f"{A}.trace", f"{A}.clf"
DEFAULT_TEXT = "Le chat dort sur le {mask} du salon."
TOP_K = 5
LAYER_CHOICES = {"all": None, "top2": 2, "top1": 1, "head": 0}  # label key -> train_layers
# per model: (steps, layers trained, learning rate); the tiny model learns from scratch, BARThez adapts its top
CLF_DEFAULTS = {"tiny": (40, "all", 3e-3), "barthez": (40, "top2", 1e-4)}
CLF_BATCH, CLF_MAX_TOKENS = 16, 64


@st.cache_resource(show_spinner=False)
def tiny_model() -> S.Seq2SeqModel:
    return S.tiny_seq2seq(0)


@st.cache_resource(show_spinner=False)
def barthez_model() -> S.Seq2SeqModel:
    return S.load_barthez()  # an error is not cached: a later run tries again


@st.cache_data(ttl=60, show_spinner=False)
def barthez_reachable() -> bool:
    return S.barthez_reachable()


def tok_text(text: str) -> str:
    """A token as a cell shows it: spaces as ␣, nothing as ∅."""
    shown = visible(text).replace(" ", "␣")
    return shown or "∅"


# ----------------------------------------------------------------------------- model


def choose_model() -> tuple[str, S.Seq2SeqModel]:
    """BARThez when it can be loaded, else the one offline line and the tiny random model."""
    choice = "tiny"
    if barthez_reachable():
        names = {k: t(f"seq2seq.model.{k}") for k in ("barthez", "tiny")}  # said now, in this run's language
        choice = persisted(st.radio, t("seq2seq.model"), f"{A}.model", "barthez", options=list(names),
                           format_func=names.get, horizontal=True)
    else:
        st.warning(plain(say(S.barthez_offline_note())), icon=":material/wifi_off:")
    if choice == "barthez":
        try:
            with st.spinner(t("seq2seq.loading")):
                return choice, barthez_model()
        except GPTCoreError as exc:
            show(st, exc, "warning")
            choice = "tiny"
    loaded = tiny_model()
    st.caption(plain(say(loaded.label)))
    st.info(t("seq2seq.random_weights"), icon=":material/casino:")
    return choice, loaded


# ----------------------------------------------------------------------------- generation


def mask_token(loaded: S.Seq2SeqModel) -> str:
    special = getattr(loaded.tokenizer, "special_tokens", {})
    return "<mask>" if "<mask>" in special else ""


def generation_inputs(loaded: S.Seq2SeqModel) -> tuple[str, int]:
    default = DEFAULT_TEXT.format(mask=mask_token(loaded) or "canapé")
    left, right = st.columns([3, 1])
    text = persisted(left.text_area, t("seq2seq.text"), f"{A}.text", default, height=80, max_chars=2000)
    left.caption(t("seq2seq.text_help"))
    new = persisted(right.number_input, t("seq2seq.new_tokens"), f"{A}.new", 12, min_value=1,
                    max_value=S.MAX_NEW_TOKENS, step=1, help=t("seq2seq.new_tokens_help"))
    return text, int(new)


def generate_section(choice: str, loaded: S.Seq2SeqModel) -> None:
    st.subheader(t("seq2seq.gen_title"))
    st.caption(t("seq2seq.gen_intro"))
    text, new = generation_inputs(loaded)
    inputs = (choice, text, new)
    if st.button(t("seq2seq.generate"), type="primary", key=f"{A}.go"):
        trace = attempt(st, S.seq2seq_trace, loaded.model, loaded.tokenizer, text, max_new_tokens=new, top_k=TOP_K)
        st.session_state[TRACE] = (inputs, trace) if trace is not None else None
    stored = st.session_state.get(TRACE)
    if not stored or stored[0] != inputs:
        st.caption(t("seq2seq.press_generate"))
        return
    trace = stored[1]
    encoder_box(trace)
    decoder_table(trace)
    attention_section(trace)


def encoder_box(trace: S.Seq2SeqTrace) -> None:
    lang = current_lang()
    with st.container(border=True):
        st.markdown(f"**{t('seq2seq.encoder_title')}**")
        st.caption(t("seq2seq.encoder_help"))
        st.code(" │ ".join(tok_text(x) for x in trace.source_tokens), language=None, wrap_lines=True)
        m = st.columns(4)
        m[0].metric(t("seq2seq.source_tokens"), number(len(trace.source_ids), lang))
        m[1].metric(t("seq2seq.encoder_shape"), " × ".join(number(int(d), lang) for d in trace.encoder_shape))
        m[2].metric(t("seq2seq.encoder_time"), t("seq2seq.ms", ms=decimal(trace.encoder_seconds * 1000, 1, lang)))
        m[3].metric(t("seq2seq.encoder_calls"), number(trace.encoder_calls, lang), help=t("seq2seq.encoder_calls_help"))


def decoder_table(trace: S.Seq2SeqTrace) -> None:
    lang = current_lang()
    st.markdown(f"**{t('seq2seq.decoder_title')}**")
    st.caption(t("seq2seq.decoder_help", n=number(len(trace.steps), lang)))
    rows = [{t("seq2seq.col.step"): s.index + 1, t("seq2seq.col.input"): read_token(trace, s),
             t("seq2seq.col.chosen"): tok_text(s.token), t("seq2seq.col.prob"): percent(s.prob, 1, lang),
             t("seq2seq.col.alternatives"): ", ".join(f"{tok_text(txt)} ({percent(p, 1, lang)})"
                                                     for _, txt, p in s.top[1:])}
            for s in trace.steps]
    st.dataframe(rows, hide_index=True, width="stretch")
    said = t("seq2seq.stopped_eos" if trace.stopped == "eos" else "seq2seq.stopped_length")
    st.caption(said)
    st.markdown(f"**{t('seq2seq.generated')}**")
    st.code(trace.text or "∅", language=None, wrap_lines=True)


def read_token(trace: S.Seq2SeqTrace, step: S.DecoderStep) -> str:
    """The token a step read: the decoder's start token, or the previous step's choice."""
    if step.index > 0:
        return tok_text(trace.steps[step.index - 1].token)
    return t("seq2seq.start_token", id=step.input_id)


def attention_section(trace: S.Seq2SeqTrace) -> None:
    lang = current_lang()
    st.markdown(f"**{t('seq2seq.attn_title')}**")
    st.caption(t("seq2seq.attn_help"))
    left, right = st.columns(2)
    layers = {"mean": t("seq2seq.mean_layers"), **{i: t("seq2seq.layer_n", n=i + 1) for i in range(trace.n_layers)}}
    heads = {"mean": t("seq2seq.mean_heads"), **{i: t("seq2seq.head_n", n=i + 1) for i in range(trace.n_heads)}}
    layer = persisted(left.selectbox, t("seq2seq.layer"), f"{A}.layer", "mean", options=list(layers),
                      format_func=layers.get)
    head = persisted(right.selectbox, t("seq2seq.head"), f"{A}.head", "mean", options=list(heads), format_func=heads.get)
    matrix = S.cross_attention_map(trace, None if layer == "mean" else layer, None if head == "mean" else head)
    fig = cross_attention_heatmap(matrix, [tok_text(x) for x in trace.source_tokens],
                                  [tok_text(s.token) for s in trace.steps], t("seq2seq.attn_chart"),
                                  t("seq2seq.attn_x"), t("seq2seq.attn_y"), t("seq2seq.attn_hover"), lang)
    st.plotly_chart(fig, width="stretch", key=f"{A}.attn_chart")


# ----------------------------------------------------------------------------- classifier


@st.cache_data(show_spinner=False, max_entries=8)
def step_seconds(_loaded: S.Seq2SeqModel, key: str, layers: str) -> float:
    """One training step measured on a batch of tickets (the basis of the estimate)."""
    records = classification_records()[:CLF_BATCH]
    vocab = {name: i for i, name in enumerate(sorted({r["label"] for r in classification_records()}))}
    batch = S.classifier_batches([r["text"] for r in records], [r["label"] for r in records], _loaded.tokenizer,
                                 vocab, _loaded.model, CLF_MAX_TOKENS, CLF_BATCH)[0]
    clf = S.encoder_classifier(_loaded.model, len(vocab), LAYER_CHOICES[layers])
    return S.time_training_step(clf, batch)


def classifier_inputs(choice: str) -> tuple[int, str, float]:
    steps_d, layers_d, lr = CLF_DEFAULTS[choice]
    left, right = st.columns(2)
    steps = persisted(left.number_input, t("seq2seq.clf_steps"), f"{A}.clf_steps.{choice}", steps_d, min_value=5,
                      max_value=400, step=5)
    names = {k: t(f"seq2seq.clf_layers.{k}") for k in LAYER_CHOICES}
    layers = persisted(right.selectbox, t("seq2seq.clf_layers"), f"{A}.clf_layers.{choice}", layers_d,
                       options=list(names), format_func=names.get)
    return int(steps), layers, lr


def classifier_section(choice: str, loaded: S.Seq2SeqModel) -> None:
    lang = current_lang()
    st.subheader(t("seq2seq.clf_title"))
    st.caption(t("seq2seq.clf_intro"))
    steps, layers, lr = classifier_inputs(choice)
    seconds = step_seconds(loaded, choice, layers)
    total = S.estimate_seconds(seconds, steps)
    st.caption(t("seq2seq.clf_estimate", total=decimal(total, 1 if total < 10 else 0, lang),
                 step=decimal(seconds, 2, lang), steps=number(steps, lang), batch=number(CLF_BATCH, lang),
                 lr=f"{lr:g}".replace(".", "," if lang == "fr" else ".")))
    inputs = (choice, steps, layers)
    if st.button(t("seq2seq.clf_train"), key=f"{A}.train"):
        bar = st.progress(0.0, text=t("seq2seq.clf_running"))

        def on_step(step: int, total: int, loss: float) -> None:
            bar.progress(step / total, text=t("seq2seq.clf_progress", step=number(step, lang), total=number(total, lang),
                                              loss=decimal(loss, 3, lang)))

        run = attempt(st, S.train_ticket_classifier, loaded, classification_records(), steps=steps,
                      batch_size=CLF_BATCH, lr=lr, train_layers=LAYER_CHOICES[layers], max_tokens=CLF_MAX_TOKENS,
                      on_step=on_step)
        bar.empty()
        st.session_state[CLF] = (inputs, run) if run is not None else None
    stored = st.session_state.get(CLF)
    if stored and stored[0] == inputs:
        classifier_results(stored[1])


def classifier_results(run: S.ClassifierRun) -> None:
    lang, rep = current_lang(), run.report
    st.caption(t("seq2seq.clf_done", seconds=decimal(run.seconds, 1, lang), n_train=number(run.n_train, lang),
                 n_test=number(run.n_test, lang), trained=number(run.trained_params, lang),
                 total=number(run.total_params, lang), first=decimal(run.losses[0], 3, lang),
                 last=decimal(run.losses[-1], 3, lang)))
    m = st.columns(3)
    m[0].metric(t("seq2seq.acc_before"), percent(run.accuracy_before, 0, lang))
    gap = number(round((rep["accuracy"] - rep["majority_baseline"]) * 100), lang)
    m[1].metric(t("seq2seq.acc_after"), percent(rep["accuracy"], 0, lang),
                delta=t("seq2seq.vs_majority", pts=gap if gap.startswith("-") else f"+{gap}"))
    m[2].metric(t("seq2seq.majority"), percent(rep["majority_baseline"], 0, lang),
                help=t("seq2seq.majority_help", label=rep["majority_label"]))
    st.plotly_chart(confusion_heatmap(rep["confusion_matrix"], rep["labels"], t("seq2seq.confusion", n=rep["n"]),
                                      t("seq2seq.predicted"), t("seq2seq.true"), t("seq2seq.count"), lang),
                    width="stretch", key=f"{A}.confusion")


def page() -> None:
    """The whole Seq2seq page (pages/12_Seq2seq.py calls it)."""
    st.title(t("seq2seq.title"))
    st.caption(t("seq2seq.intro"))
    choice, loaded = choose_model()
    generate_section(choice, loaded)
    st.divider()
    classifier_section(choice, loaded)
