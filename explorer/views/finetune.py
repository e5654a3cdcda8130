"""The Fine-tune page: instruction (full or LoRA) or classification training of a copy of a model.

Widgets -> :func:`explorer.runs.plan_finetune` -> estimate -> start button;
the live job and the before/after comparison are drawn by
:mod:`explorer.views.training_form`. Choices are kept per model size and task,
so a big model's cautious defaults never leak into a tiny one's.
"""
from __future__ import annotations

import streamlit as st

from gpt_core.backend import backend_of
from gpt_core.data import ALPACA_STYLES
from gpt_core.errors import GPTCoreError

from explorer import runs as R
from explorer.corpus import RECORD_TYPES
from explorer.ui.i18n import t
from explorer.ui.messages import plain
from explorer.ui.model_store import DEVICE_KEY, current_model, label_of, store
from explorer.ui.state import persisted
from explorer.views import data as data_view
from explorer.views import training_form as W
from explorer.views.tracking import tracking_options
from explorer.views.training_results import results
from explorer.views.decoding_settings import follow_language

A = "finetune"
LENGTHS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def _base_and_task(lm, device: str):
    """The model to start from and the task -> (LoadedModel, ModelInfo, task, large)."""
    st.markdown(f"**{t('training.ft.model')}**")
    base_key = persisted(st.radio, t("training.ft.base"), f"{A}.base", "current", options=["current", "tiny-random"],
                         format_func=lambda k: t(f"training.ft.base.{k}"), horizontal=True)
    base = lm if base_key == "current" else store().load("tiny-random", device)
    info = backend_of(base.model).info()
    large = info.n_params > R.LARGE_MODEL
    st.caption(t("training.ft.base_info", label=plain(label_of(base.source)), params=W.count_text(info.n_params),
                 layers=info.n_layers, ctx=W.thousands(info.context_length)))
    task = persisted(st.radio, t("training.ft.task"), f"{A}.task", "instruct", options=["instruct", "classify"],
                     format_func=lambda k: t(f"training.ft.task.{k}"), horizontal=True)
    if large and task == "instruct":
        st.info(t("training.ft.large_note.instruct"))
    return base, info, task, large


def _options(P: str, task: str, info, d_opts: R.FinetuneOptions):
    """The data source and the method -> (upload or None, FinetuneOptions, whether data is ready)."""
    st.markdown(f"**{t('training.ft.data')}**")
    src = persisted(st.radio, t("training.ft.source"), f"{P}.src", "bundled", options=["bundled", "upload"],
                    format_func=lambda k: t(f"training.ft.src.{task}.{k}"), horizontal=True)
    upload = None
    if src == "upload":
        upload = data_view.uploaded(st, t(f"training.ft.upload.{task}"), RECORD_TYPES, f"_w.{P}.file")
        if upload is None:
            st.info(t(f"training.ft.upload_hint.{task}"))
    ctx = info.context_length
    max_length = persisted(st.select_slider, t("training.ft.max_length"), f"{P}.max_length", d_opts.max_length,
                           options=[n for n in LENGTHS if n <= ctx] or [ctx])
    c = st.columns(2)
    if task == "instruct":
        method = persisted(c[0].radio, t("training.ft.method"), f"{P}.method", d_opts.method, options=["lora", "full"],
                           format_func=lambda k: t(f"training.ft.method.{k}"))
        lora_r = persisted(c[0].select_slider, t("training.ft.lora_r"), f"{P}.lora_r", 8, options=[2, 4, 8, 16, 32],
                           disabled=method != "lora")
        mask = persisted(c[1].checkbox, t("training.ft.mask"), f"{P}.mask", True, help=t("training.ft.mask_help"))
        style = persisted(c[1].selectbox, t("training.ft.style"), f"{P}.style",
                          follow_language(f"{P}.style", data_view.ALPACA_STYLE), options=list(ALPACA_STYLES))
        opts = R.FinetuneOptions("instruct", method, lora_r, mask, style, max_length)
    elif d_opts.method == "probe":
        c[0].caption(t("training.ft.probe_note", d=info.d_model))
        opts = R.FinetuneOptions("classify", "probe", max_length=max_length)
    else:
        n_last = persisted(c[0].slider, t("training.ft.n_last"), f"{P}.n_last", d_opts.n_last, min_value=0,
                           max_value=info.n_layers, help=t("training.ft.n_last_help"))
        c[1].caption(t("training.ft.head_note"))
        opts = R.FinetuneOptions("classify", "blocks", max_length=max_length, n_last=n_last)
    return upload, opts, src == "bundled" or upload is not None


def _classify_method() -> str:
    """Probe (the default: the model stays frozen) or training the last blocks with a new head."""
    return persisted(st.radio, t("training.ft.classify_method"), f"{A}.classify_method", "probe",
                     options=["probe", "blocks"], format_func=lambda k: t(f"training.ft.cmethod.{k}"),
                     horizontal=True)


def _plan(base, task: str, upload, opts: R.FinetuneOptions, hyper: R.Hyper, device: str) -> R.RunPlan:
    records = W.cached_records(task, upload)
    names = R.RunNames(t(f"training.name.{task}"), t("training.label.ft", base=label_of(base.source),
                                                     task=t(f"training.ft.task.{task}")))
    plan = R.plan_finetune(base.model, base.tokenizer, records, opts, hyper, device, names, base_key=base.source.key,
                           tokenizer_name=getattr(base.tokenizer, "name", ""))
    st.caption(t(f"training.ft.data_info.{task}", n=len(records), classes=len(plan.labels or [])))
    return plan


def page() -> None:
    """The whole Fine-tune page (pages/10_Finetune.py calls it)."""
    lm = current_model()
    st.title(t("nav.10_Finetune"))
    st.caption(t("training.ft.intro"))
    device = st.session_state.get(DEVICE_KEY, "cpu")
    left, right = st.columns(2, border=True)
    with left:
        base, info, task, large = _base_and_task(lm, device)
        method = _classify_method() if task == "classify" else None
    # defaults and choices kept per model size, task and (classification) method
    P = f"{A}.{'large' if large else 'small'}.{task}" + (f".{method}" if method else "")
    d_hyper, d_opts = R.finetune_defaults(large, task, info.n_layers, method)
    with right:
        upload, opts, ready = _options(P, task, info, d_opts)
    st.markdown(f"**{t('training.hyper')}**")
    hyper, bad = W.hyper_widgets(P, d_hyper)
    plan = None
    try:
        if bad:
            raise bad
        if ready:
            with st.spinner(t("training.measuring")):
                plan = _plan(base, task, upload, opts, hyper, device)
    except GPTCoreError as exc:
        W.refused(exc)
    if plan is not None:
        st.markdown(f"**{t('training.estimate')}**")
        if not W.show_estimate(plan.estimate):
            plan = None
    tracking = tracking_options(A)
    W.start_button(A, plan, store(), tracking)
    snap = W.job_panel("finetune", A)
    if snap is not None:
        results(snap, A)
