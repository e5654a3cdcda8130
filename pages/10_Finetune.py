"""Fine-tune: instruction (full or LoRA) or classification on a copy of a model, then before/after."""
import streamlit as st

from explorer import training_view as V
from explorer.i18n import current_lang, t
from explorer.models import DEVICE_KEY, current_model, store
from gpt_core.data import ALPACA_STYLES
from gpt_core.errors import GPTCoreError
from gpt_core.trace import describe

A = "finetune"
lm = current_model()
st.title(t("nav.10_Finetune"))
st.caption(t("training.ft.intro"))
device = st.session_state.get(DEVICE_KEY, "cpu")

left, right = st.columns(2, border=True)
with left:
    st.markdown(f"**{t('training.ft.model')}**")
    base_key = V.kept(A, st, "radio", t("training.ft.base"), "base", "current", ["current", "tiny-random"],
                      format_func=lambda k: t(f"training.ft.base.{k}"), horizontal=True)
    base = lm if base_key == "current" else store().load("tiny-random", device)
    info = describe(base.model)
    large = info.n_params > V.LARGE_MODEL
    st.caption(t("training.ft.base_info", label=base.source.label, params=V.count_text(info.n_params),
                 layers=info.n_layers, ctx=info.context_length))
    task = V.kept(A, st, "radio", t("training.ft.task"), "task", "instruct", ["instruct", "classify"],
                  format_func=lambda k: t(f"training.ft.task.{k}"), horizontal=True)
    if large:
        st.info(t(f"training.ft.large_note.{task}"))
    P = f"{A}.{'large' if large else 'small'}.{task}"  # defaults and choices kept per model size and task
    d_hyper, d_opts = V.finetune_defaults(large, task, info.n_layers)

with right:
    st.markdown(f"**{t('training.ft.data')}**")
    src = V.kept(P, st, "radio", t("training.ft.source"), "src", "bundled", ["bundled", "upload"],
                 format_func=lambda k: t(f"training.ft.src.{task}.{k}"), horizontal=True)
    upload = None
    if src == "upload":
        upload = V.upload_of(st.file_uploader(t(f"training.ft.upload.{task}"), type=V.RECORD_TYPES,
                                              key=f"_w.{P}.file"))
        if upload is None:
            st.info(t(f"training.ft.upload_hint.{task}"))
    ctx = info.context_length
    max_length = V.kept(P, st, "select_slider", t("training.ft.max_length"), "max_length", d_opts.max_length,
                        [n for n in (16, 32, 48, 64, 96, 128, 192, 256, 384, 512) if n <= ctx] or [ctx])
    c = st.columns(2)
    if task == "instruct":
        method = V.kept(P, c[0], "radio", t("training.ft.method"), "method", d_opts.method, ["lora", "full"],
                        format_func=lambda k: t(f"training.ft.method.{k}"))
        lora_r = V.kept(P, c[0], "select_slider", t("training.ft.lora_r"), "lora_r", 8, [2, 4, 8, 16, 32],
                        disabled=method != "lora")
        mask = V.kept(P, c[1], "checkbox", t("training.ft.mask"), "mask", True, help=t("training.ft.mask_help"))
        style = V.kept(P, c[1], "selectbox", t("training.ft.style"), "style", "alpaca", list(ALPACA_STYLES))
        opts = V.FinetuneOptions("instruct", method, lora_r, mask, style, max_length)
    else:
        n_last = V.kept(P, c[0], "slider", t("training.ft.n_last"), "n_last", d_opts.n_last, min_value=0,
                        max_value=info.n_layers, help=t("training.ft.n_last_help"))
        c[1].caption(t("training.ft.head_note"))
        opts = V.FinetuneOptions("classify", max_length=max_length, n_last=n_last)

st.markdown(f"**{t('training.hyper')}**")
hyper, problem = V.hyper_widgets(P, d_hyper)
plan = None
try:
    if problem:
        st.error(problem)
    elif src == "bundled" or upload is not None:
        records = V.cached_records(task, upload, current_lang())
        plan = V.plan_finetune(base.model, base.tokenizer, records, opts, hyper, device, base.source.label)
        st.caption(t(f"training.ft.data_info.{task}", n=len(records), classes=len(plan.labels or [])))
except GPTCoreError as exc:
    st.error(t("training.invalid", reason=str(exc)))
    plan = None

if plan is not None:
    st.markdown(f"**{t('training.estimate')}**")
    if not V.show_estimate(plan.estimate):
        plan = None
V.start_button(A, plan, store())
snap = V.job_panel("finetune", A)
if snap is not None:
    V.results(snap, A)
