"""The Pretrain page: a tiny GPT from random weights on a corpus, trained in a background job.

Widgets -> :func:`explorer.runs.plan_pretrain` -> estimate -> start button;
the live job and its results are drawn by :mod:`explorer.views.training_form`.
The corpus comes from the same picker, sources and columns as the Data page.
"""
from __future__ import annotations

import streamlit as st

from gpt_core.errors import GPTCoreError

from explorer import runs as R
from explorer.corpus import training_text
from explorer.ui.i18n import LANGS, lookup, t
from explorer.ui.messages import plain
from explorer.ui.model_store import DEVICE_KEY, current_model, store, tokenizer_label
from explorer.ui.state import get, persisted, set_value
from explorer.views import training_form as W
from explorer.views.tracking import tracking_options
from explorer.views.training_results import results
from explorer.views.data import origin_of, pick_corpus
from explorer.views.decoding_settings import follow_language

A = "pretrain"
ARCH_NAMES = ("n_layers", "n_heads", "d_model", "context")
# measured on a 2-core CPU: French words after ~100 steps, validation loss still falling at 250 (~30 s)


def _apply_preset() -> None:
    """on_change of the preset box: copy the preset into the architecture sliders."""
    preset = R.ARCH_PRESETS.get(get(f"{A}.preset"))
    for name in ARCH_NAMES if preset else ():
        set_value(f"{A}.{name}", preset[name])


def _architecture() -> dict:
    st.markdown(f"**{t('training.pre.model')}**")
    persisted(st.selectbox, t("training.pre.preset"), f"{A}.preset", R.PRETRAIN_PRESET, options=list(R.ARCH_PRESETS),
              format_func=lambda k: t(f"training.preset.{k}"), on_change=_apply_preset)
    d = R.ARCH_PRESETS[get(f"{A}.preset", R.PRETRAIN_PRESET)]
    c = st.columns(2)
    arch = {
        "n_layers": persisted(c[0].slider, t("training.pre.layers"), f"{A}.n_layers", d["n_layers"],
                              min_value=1, max_value=12),
        "n_heads": persisted(c[1].select_slider, t("training.pre.heads"), f"{A}.n_heads", d["n_heads"],
                             options=[1, 2, 4, 8, 12]),
        "d_model": persisted(c[0].select_slider, "d_model", f"{A}.d_model", d["d_model"],
                             options=[16, 32, 64, 128, 256, 384, 512, 768]),
        "context": persisted(c[1].select_slider, t("training.pre.context"), f"{A}.context", d["context"],
                             options=[16, 32, 64, 128, 256, 512, 1024]),
    }
    persisted(st.radio, t("training.pre.tokenizer_choice"), f"{A}.tokenizer", "bpe", options=list(R.PRETRAIN_TOKENIZERS),
              format_func=lambda k: t(f"training.pre.tok.{k}"), horizontal=True, help=t("training.pre.tok_help"))
    return arch


def _data():
    """The corpus picker and the prompt of the live samples -> (corpus or None, hint, prompt)."""
    st.markdown(f"**{t('training.pre.data')}**")
    labels = {"source": t("training.pre.source"), "paste": t("training.pre.paste"),
              "paste_default": "training.pre.paste_default", "upload": t("training.pre.upload"),
              "upload_hint": t("training.pre.upload_hint")}
    corpus, hint, problem = None, None, None
    try:
        corpus, hint = pick_corpus(A, st, labels, max_chars=R.MAX_CORPUS_CHARS)
    except GPTCoreError as exc:
        problem = exc
    source = get(f"{A}.source")
    by_lang = {lang: R.SAMPLE_PROMPTS.get(source, lookup("training.pre.prompt_default", lang)) for lang in LANGS}
    default_prompt = follow_language(f"{A}.prompt", by_lang)  # pasted text: the prompt in the UI language
    if get(f"{A}.prompt_for") != source:  # a new source suggests its own prompt
        st.session_state[f"{A}.prompt_for"] = source
        set_value(f"{A}.prompt", default_prompt)
    prompt = persisted(st.text_input, t("training.pre.prompt"), f"{A}.prompt", default_prompt,
                       help=t("training.pre.prompt_help"))
    if hint:
        st.info(hint)
    return corpus, problem, prompt


def _plan(corpus, arch: dict, hyper: R.Hyper, device: str, prompt: str) -> R.RunPlan:
    piece = training_text(corpus, R.MAX_CORPUS_CHARS)
    if piece.cut:
        st.warning(t("training.pre.cut", n=W.thousands(R.MAX_CORPUS_CHARS)))
    origin = origin_of(corpus)
    with st.spinner(t("training.pre.tok_training")):
        tok, tok_name = R.pretrain_tokenizer(get(f"{A}.tokenizer", "bpe"), corpus.source, piece.text)
    st.caption(t("training.pre.tokenizer", label=plain(tokenizer_label(tok))))
    names = R.RunNames(t("training.name.lm"), t("training.label.pre", blocks=W.blocks_text(arch["n_layers"]),
                                                d=arch["d_model"], source=origin))
    plan = R.plan_pretrain(tok, piece.text, arch, hyper, device, prompt, names, origin, tokenizer_name=tok_name)
    st.caption(t("training.pre.data_info", origin=plain(origin), chars=W.thousands(len(piece.text)),
                 train=plan.params["train_windows"], val=plan.params["val_windows"], ctx=arch["context"]))
    return plan


def page() -> None:
    """The whole Pretrain page (pages/9_Pretrain.py calls it)."""
    current_model()  # loads the sidebar's model; this page starts from random weights
    st.title(t("nav.9_Pretrain"))
    st.caption(t("training.pre.intro"))
    device = st.session_state.get(DEVICE_KEY, "cpu")
    left, right = st.columns(2, border=True)
    with left:
        arch = _architecture()
    with right:
        corpus, problem, prompt = _data()
    st.markdown(f"**{t('training.hyper')}**")
    hyper, bad = W.hyper_widgets(A, R.PRETRAIN_HYPER)
    plan = None
    try:
        if problem or bad:
            raise problem or bad
        if corpus is not None:
            with st.spinner(t("training.measuring")):
                plan = _plan(corpus, arch, hyper, device, prompt)
    except GPTCoreError as exc:
        W.refused(exc)
    if plan is not None:
        st.markdown(f"**{t('training.estimate')}**")
        vocab = plan.tokenizer.vocab_size
        emb = vocab * arch["d_model"]
        st.caption(t("training.pre.params_note", total=W.count_text(plan.estimate["params"]), emb=W.count_text(emb),
                     pct=f"{100 * emb / plan.estimate['params']:.0f}", vocab=W.thousands(vocab)))
        if not W.show_estimate(plan.estimate):
            plan = None
    tracking = tracking_options(A)
    W.start_button(A, plan, store(), tracking)
    snap = W.job_panel("pretrain", A)
    if snap is not None:
        results(snap, A)
