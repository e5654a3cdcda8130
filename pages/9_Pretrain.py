"""Pretrain: a tiny GPT from scratch on a corpus, trained in a background job with a live loss curve."""
import streamlit as st

from explorer import training_view as V
from explorer.i18n import current_lang, t
from explorer.models import DEVICE_KEY, current_model, store
from explorer.textinput import check_text, show_messages
from gpt_core.errors import GPTCoreError

A = "pretrain"
lm = current_model()  # the sidebar's model is not used here: this page starts from random weights
st.title(t("nav.9_Pretrain"))
st.caption(t("training.pre.intro"))
device = st.session_state.get(DEVICE_KEY, "cpu")
tok = V.gpt2_tokenizer()

left, right = st.columns(2, border=True)
with left:
    st.markdown(f"**{t('training.pre.model')}**")
    V.kept(A, st, "selectbox", t("training.pre.preset"), "preset", "tiny", list(V.ARCH_PRESETS),
           format_func=lambda k: t(f"training.preset.{k}"), on_change=V.apply_preset, args=(A,))
    arch_defaults = V.ARCH_PRESETS[st.session_state.get(f"{A}.preset", "tiny")]
    c = st.columns(2)
    arch = {
        "n_layers": V.kept(A, c[0], "slider", t("training.pre.layers"), "n_layers", arch_defaults["n_layers"],
                           min_value=1, max_value=12),
        "n_heads": V.kept(A, c[1], "select_slider", t("training.pre.heads"), "n_heads", arch_defaults["n_heads"],
                          [1, 2, 4, 8, 12]),
        "d_model": V.kept(A, c[0], "select_slider", "d_model", "d_model", arch_defaults["d_model"],
                          [16, 32, 64, 128, 256, 384, 512, 768]),
        "context": V.kept(A, c[1], "select_slider", t("training.pre.context"), "context", arch_defaults["context"],
                          [16, 32, 64, 128, 256, 512, 1024]),
    }
    st.caption(t("training.pre.tokenizer", label=tok.label, vocab=f"{tok.vocab_size:,}"))

with right:
    st.markdown(f"**{t('training.pre.data')}**")
    source = V.kept(A, st, "selectbox", t("training.pre.source"), "source", "corpus_fr", V.CORPUS_SOURCES,
                    format_func=lambda k: t(f"training.src.{k}"))
    pasted, upload = "", None
    if source == "paste":
        checked = check_text(V.kept(A, st, "text_area", t("training.pre.paste"), "text", t("training.pre.paste_default"),
                                    height=120), max_chars=V.MAX_CORPUS_CHARS)
        show_messages(st, checked)
        pasted = checked.text
    elif source == "upload":
        file = st.file_uploader(t("training.pre.upload"), type=V.TEXT_TYPES, key=f"_w.{A}.file")
        upload = V.upload_of(file)
        if upload is None:
            st.info(t("training.pre.upload_hint"))
    default_prompt = V.SAMPLE_PROMPTS.get(source, t("training.pre.prompt_default"))
    if st.session_state.get(f"{A}.prompt_for") != source:  # a new source suggests its own prompt
        st.session_state[f"{A}.prompt_for"] = source
        V.set_kept(A, "prompt", default_prompt)
    prompt = V.kept(A, st, "text_input", t("training.pre.prompt"), "prompt", default_prompt,
                    help=t("training.pre.prompt_help"))

st.markdown(f"**{t('training.hyper')}**")
hyper, problem = V.hyper_widgets(A, V.Hyper(steps=60, batch_size=8, lr=3e-3, warmup=5))
plan = None
try:
    if problem:
        st.error(problem)
    elif source != "upload" or upload is not None:
        corpus = V.cached_corpus(source, pasted, upload, current_lang())
        if corpus.cut:
            st.warning(t("training.pre.cut", n=f"{V.MAX_CORPUS_CHARS:,}"))
        plan = V.plan_pretrain(tok, corpus, arch, hyper, device, prompt)
        st.caption(t("training.pre.data_info", origin=corpus.origin, chars=f"{len(corpus.text):,}",
                     train=plan.params["train_windows"], val=plan.params["val_windows"], ctx=arch["context"]))
except GPTCoreError as exc:
    st.error(t("training.invalid", reason=str(exc)))
    plan = None

if plan is not None:
    st.markdown(f"**{t('training.estimate')}**")
    emb = tok.vocab_size * arch["d_model"]
    st.caption(t("training.pre.params_note", total=V.count_text(plan.estimate["params"]), emb=V.count_text(emb),
                 pct=f"{100 * emb / plan.estimate['params']:.0f}"))
    if not V.show_estimate(plan.estimate):
        plan = None
V.start_button(A, plan, store())
snap = V.job_panel("pretrain", A)
if snap is not None:
    V.results(snap, A)
