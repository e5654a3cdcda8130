"""What the Pretrain and Fine-tune pages share: hyperparameters, the estimate, the job panel and its results.

Streamlit code only: plans, jobs and the run registry are in
:mod:`explorer.runs`; figures in :mod:`explorer.figures.training`. Every
gpt_core refusal or job message is said in the user's language with
:mod:`explorer.ui.messages`.
"""
from __future__ import annotations

import functools
import io
import json
import math
import zipfile
from pathlib import Path

import streamlit as st

from gpt_core.errors import GPTCoreError, InvalidInput, Message
from gpt_core.tokenizers import load_tokenizer
from gpt_core.train import parse_learning_rate

from explorer import runs as R
from explorer.corpus import records_for
from explorer.figures import training as F
from explorer.figures.bars import fixed, percent
from explorer.jobs import get_manager
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import decimal, number, plain, say
from explorer.ui.state import persisted


# ================================================================ wording
def said(message: Message | GPTCoreError | str | None) -> str:
    """A job's message in the user's language (text a job worded itself is shown as it is), Markdown-safe."""
    if message is None or isinstance(message, str):
        return plain(message or "")
    return plain(say(message))


def count_text(n: int | float) -> str:
    """3_320_640 -> '3.32 M' (English) / '3,32 M' (French)."""
    n = float(n)
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            text = f"{n / size:.3g}"
            return f"{text.replace('.', ',') if current_lang() == 'fr' else text} {unit}"
    return f"{n:.0f}"


def duration_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{decimal(max(seconds, 0.1), 1)} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{decimal(seconds / 60, 1)} min"
    return f"{decimal(seconds / 3600, 1)} h"


def size_text(n_bytes: float) -> str:
    """Bytes as "1.25 GB" / "1,25 Go" or "340 MB" / "340 Mo"."""
    if n_bytes >= 1e8:
        return t("training.size.gb", n=number(round(n_bytes / 1e9, 2), current_lang()))
    return t("training.size.mb", n=number(int(round(n_bytes / 1e6)), current_lang()))


def thousands(n: int) -> str:
    return number(int(n), current_lang())


def sci(x: float) -> str:
    """A learning rate such as 3.00e-04 (decimal comma in French)."""
    text = f"{x:.2e}"
    return text.replace(".", ",") if current_lang() == "fr" else text


# ================================================================ cached
@st.cache_resource(show_spinner=False)
def gpt2_tokenizer():
    return load_tokenizer("gpt2")


@st.cache_data(show_spinner=False, max_entries=8)
def cached_records(task: str, upload: tuple[bytes, str] | None = None) -> list[dict]:
    return records_for(task, upload)


# ================================================================ form
def hyper_widgets(area: str, d: R.Hyper) -> tuple[R.Hyper | None, GPTCoreError | None]:
    """Steps, batch, learning rate (typed), schedule, warm-up, accumulation -> (Hyper, None) or (None, refusal)."""
    c = st.columns(6)
    steps = persisted(c[0].number_input, t("training.steps"), f"{area}.steps", d.steps, min_value=1,
                      max_value=20_000, step=10)
    batch = persisted(c[1].number_input, t("training.batch"), f"{area}.batch", d.batch_size, min_value=1,
                      max_value=512)
    lr_text = persisted(c[2].text_input, t("training.lr"), f"{area}.lr", f"{d.lr:g}", help=t("training.lr_help"))
    schedule = persisted(c[3].selectbox, t("training.schedule"), f"{area}.schedule", d.schedule,
                         options=["cosine", "constant"], format_func=lambda k: t(f"training.schedule.{k}"))
    warmup = persisted(c[4].number_input, t("training.warmup"), f"{area}.warmup", d.warmup, min_value=0,
                       max_value=20_000)
    accum = persisted(c[5].number_input, t("training.accum"), f"{area}.accum", d.grad_accum, min_value=1,
                      max_value=64, help=t("training.accum_help"))
    try:
        hyper = R.Hyper(int(steps), int(batch), parse_learning_rate(lr_text), schedule, int(warmup), int(accum))
        R.train_config(hyper, "cpu")  # the same checks as the run (warm-up shorter than training, ...)
    except InvalidInput as exc:
        return None, exc
    return hyper, None


def refused(exc: GPTCoreError) -> None:
    """A refused input, in the user's language."""
    st.error(t("training.invalid", reason=plain(say(exc))))


def show_estimate(est: dict) -> bool:
    """Four metrics (trained weights, memory, time, tokens) and the refusal when it cannot fit."""
    m = st.columns(4)
    m[0].metric(t("training.m.params"), count_text(est["trainable_params"]),
                help=t("training.m.params_help", total=count_text(est["params"])))
    parts = est["memory_breakdown"]
    m[1].metric(t("training.m.memory"), size_text(est["memory_bytes"]), help=t(
        "training.m.memory_help", w=size_text(parts["weights"]), o=size_text(parts["grads_and_adamw"]),
        a=size_text(parts["activations"])))
    m[2].metric(t("training.m.time"), "≈ " + duration_text(est["seconds_estimate"]), help=t("training.m.time_help"))
    m[3].metric(t("training.m.tokens"), count_text(est["tokens"]))
    free = est.get("available_bytes")
    st.caption(t("training.estimate_note", device=est["device"], precision=est["precision"],
                 free=size_text(free) if free else "?"))
    if not est.get("fits", True):
        st.error(t("training.cannot_start", reason=said(est.get("reason"))))
        return False
    return True


def start_button(area: str, plan: R.RunPlan | None, store) -> None:
    """The start button (disabled without a valid plan); a busy server means a queue, said first."""
    running = get_manager().running_job()
    if running is not None:
        st.info(t("training.busy", kind=t(f"training.kind.{running.kind}"), step=running.step,
                  total=running.total_steps or "?"))
    if st.button(t("training.start"), type="primary", disabled=plan is None, key=f"{area}.start"):
        st.session_state[f"{area}.job"] = R.submit(plan, store)


# ================================================================ live job
def _one_line(text: str) -> str:
    """Generated text for display: newlines shown as ↵ (a run of them would make a tall empty box)."""
    if not text or not text.strip():
        return t("training.empty") if not text else text.replace("\n", "↵")
    return text.replace("\r", "").replace("\n", "↵ ")


def _cancel_button(snap) -> None:
    if st.button(t("training.cancel"), key=f"cancel.{snap.job_id}"):
        get_manager().cancel(snap.job_id)
        st.toast(t("training.cancelling"))


def _samples(snap) -> None:
    last = snap.samples[-1]
    st.markdown(t("training.sample", step=last["step"]))
    st.code(_one_line(last["text"]), language=None, wrap_lines=True)
    if len(snap.samples) > 1:
        with st.expander(t("training.samples_before")):
            for s in reversed(snap.samples[:-1]):
                st.caption(t("training.sample", step=s["step"]))
                st.code(_one_line(s["text"]), language=None, wrap_lines=True)


def _progress(snap, live: bool) -> None:
    if snap.status == "queued":
        st.info(t("training.queued", pos=snap.queue_position or "?"))
    else:
        st.progress(min(max(snap.progress, 0.0), 1.0), text=t(
            "training.progress", step=snap.step, total=snap.total_steps or "?", elapsed=duration_text(snap.elapsed)))
        if live and snap.message:
            st.caption(said(snap.message))
    if snap.status == "queued" or not (snap.train_loss or snap.val_loss):
        if live:
            _cancel_button(snap)
        return
    m = st.columns(4)
    m[0].metric(t("training.m.train_loss"), decimal(snap.train_loss[-1]) if snap.train_loss else "–")
    m[1].metric(t("training.m.val_loss"), decimal(snap.val_loss[-1]) if snap.val_loss else "–")
    m[2].metric(t("training.m.lr"), sci(snap.lr[-1]) if snap.lr else "–")
    speed = snap.tokens_seen / snap.elapsed if snap.elapsed else 0
    m[3].metric(t("training.m.speed"), f"{count_text(speed)}/s" if speed else "–")
    st.plotly_chart(F.loss_curve(snap.train_steps, snap.train_loss, snap.val_steps, snap.val_loss,
                                 (t("training.curve.train"), t("training.curve.val")), t("training.curve.title"),
                                 t("training.curve.x"), t("training.curve.y"), lang=current_lang()),
                    width="stretch", key=f"loss.{snap.job_id}.{'live' if live else 'final'}")
    if snap.samples:
        _samples(snap)
    if live:
        _cancel_button(snap)


@st.fragment(run_every=1.0)
def _live(job_id: str) -> None:
    snap = get_manager().snapshot(job_id)
    if snap is None:
        return
    if snap.finished:
        st.rerun()  # the whole page draws the final view, without a timer
    _progress(snap, live=True)


def job_panel(kind: str, area: str):
    """Re-attach to this session's job, else to the latest job of this kind (a reload, another tab).

    An active job is drawn live (a fragment polling its snapshot each second);
    a finished one is returned for :func:`results`.
    """
    mgr = get_manager()
    job_id = st.session_state.get(f"{area}.job")
    snap = mgr.snapshot(job_id) if job_id else None
    if snap is None or snap.kind != kind:
        snap = mgr.latest_job(kind=kind)
    if snap is None:
        return None
    st.session_state[f"{area}.job"] = snap.job_id
    st.subheader(t("training.job_title"))
    if snap.active:
        _live(snap.job_id)
        return None
    return snap


# ================================================================ downloads
def checkpoint_zip(path: str | Path) -> bytes:
    """The checkpoint directory (config.json + model.safetensors, ...) as a zip archive."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidInput("runs.no_checkpoint", "The checkpoint no longer exists on the server.")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                zf.write(file, f"{path.name}/{file.relative_to(path)}")
    return buf.getvalue()


def metrics_json(snap) -> str:
    """A job's parameters, status, loss history and before/after results as indented JSON."""
    result = dict(snap.result or {})
    payload = {
        "kind": snap.kind, "status": snap.status, "message": say(snap.message) if isinstance(
            snap.message, Message) else snap.message, "params": snap.params,
        "elapsed_s": snap.elapsed, "tokens_seen": snap.tokens_seen, "steps_done": snap.step,
        "history": result.get("history") or {"step": snap.train_steps, "train_loss": snap.train_loss,
                                             "eval_step": snap.val_steps, "val_loss": snap.val_loss},
        "comparison": result.get("comparison"), "model_name": result.get("model_name"),
    }
    return json.dumps(payload, indent=2, ensure_ascii=False, default=str)


def downloads(snap, area: str) -> None:
    cols = iter(st.columns(2))
    ckpt = (snap.result or {}).get("checkpoint")
    if snap.status == "done" and ckpt and Path(ckpt).is_dir():
        next(cols).download_button(t("training.dl_ckpt"), data=functools.partial(checkpoint_zip, ckpt),
                                   file_name=f"{area}-{snap.job_id}.zip", mime="application/zip", on_click="ignore",
                                   key=f"{area}.dl_ckpt")
    next(cols).download_button(t("training.dl_metrics"), data=metrics_json(snap), on_click="ignore",
                               file_name=f"{area}-{snap.job_id}-metrics.json", mime="application/json",
                               key=f"{area}.dl_metrics")


def _status_line(snap) -> None:
    if snap.status == "done":
        train_loss = snap.train_loss[-1] if snap.train_loss else float("nan")
        val = decimal(snap.val_loss[-1]) if snap.val_loss else "–"
        st.success(t("training.done", steps=snap.step, loss=decimal(train_loss), val=val,
                     seconds=duration_text(snap.elapsed)))
    elif snap.status == "cancelled":
        st.warning(t("training.cancelled", step=snap.step))
    elif snap.status == "diverged":
        st.error(t("training.diverged", msg=said(snap.message)))
    else:
        st.error(t("training.failed", msg=said(snap.message)))


# ================================================================ before / after
def _answers(cmp: dict, task: str) -> None:
    names = (t("training.before"), t("training.after"))
    for i, row in enumerate(cmp["rows"], 1):
        with st.container(border=True):
            if task == "instruct":
                st.markdown(f"**{i}. {plain(row['instruction'])}**"
                            + (f"  \n_{plain(row['input'])}_" if row.get("input") else ""))
                cols = st.columns(3)
                cols[0].caption(t("training.expected"))
                cols[0].code(row.get("expected") or "–", language=None, wrap_lines=True)
            else:
                st.markdown(f"**{t('training.prompt')}** `{row['prompt']}`")
                cols = st.columns(2)
            for col, name, key in zip(cols[-2:], names, ("before", "after")):
                col.caption(name)
                col.code(_one_line(row[key]), language=None, wrap_lines=True)
    dist = cmp.get("dist")
    if dist:
        st.plotly_chart(F.compare_bars(dist["labels"], dist["before"], dist["after"], names,
                                       t("training.dist_title"), current_lang()), width="stretch")


def _classify(cmp: dict) -> None:
    rep, lang = cmp["report"], current_lang()
    m = st.columns(3)
    m[0].metric(t("training.acc_before"), percent(cmp["accuracy_before"], 0, lang))
    m[1].metric(t("training.acc_after"), percent(rep["accuracy"], 0, lang), delta=t(
        "training.vs_majority", pts=f"{(rep['accuracy'] - rep['majority_baseline']) * 100:+.0f}"))
    m[2].metric(t("training.majority_metric"), percent(rep["majority_baseline"], 0, lang),
                help=t("training.majority_help", label=rep["majority_label"]))
    left, right = st.columns(2)
    left.plotly_chart(F.confusion_heatmap(rep["confusion_matrix"], rep["labels"], t("training.confusion", n=rep["n"]),
                                          t("training.predicted"), t("training.true"), t("training.count"), lang),
                      width="stretch")
    right.dataframe([{t("training.class"): k, t("training.precision"): fixed(v["precision"], 2, lang),
                      t("training.recall"): fixed(v["recall"], 2, lang), "F1": fixed(v["f1"], 2, lang),
                      t("training.support"): v["support"]} for k, v in rep["per_class"].items()],
                    hide_index=True, width="stretch")
    right.dataframe([{t("training.true"): r["label"], t("training.before"): r["before"], t("training.after"): r["after"],
                      t("training.text"): r["text"]} for r in cmp["rows"]], hide_index=True, width="stretch")
    if cmp.get("dist"):
        d = cmp["dist"]
        st.plotly_chart(F.compare_bars(d["labels"], d["before"], d["after"], (t("training.before"), t("training.after")),
                                       t("training.class_dist"), lang), width="stretch")


def _try_output(run: R.TrainedRun, out: dict) -> None:
    names = (t("training.before"), t("training.after"))
    if run.task == "classify":
        st.plotly_chart(F.compare_bars(out["labels"], [0.0] * len(out["labels"]), out["after"],
                                       ("", names[1]), t("training.class_dist"), current_lang()), width="stretch")
        return
    for col, key, name in zip(st.columns(2), ("before_text", "after_text"), names):
        if key in out:
            col.caption(name)
            col.code(_one_line(out[key]), language=None, wrap_lines=True)
    if out.get("dist"):
        st.plotly_chart(F.compare_bars(out["dist"]["labels"], out["dist"]["before"], out["dist"]["after"],
                                       names, t("training.dist_title"), current_lang()), width="stretch")


def _try_prompt(run: R.TrainedRun, area: str) -> None:
    with st.form(f"{area}.try_form"):
        text = st.text_area(t(f"training.try.{run.task}"), value=st.session_state.get(f"{area}.try_text", ""), height=80)
        go = st.form_submit_button(t("training.try.go"))
    if go:
        st.session_state[f"{area}.try_text"] = text
        try:
            st.session_state[f"{area}.try_out"] = (run.run_id, R.compare_prompt(run, text))
        except GPTCoreError as exc:
            refused(exc)
    saved = st.session_state.get(f"{area}.try_out")
    if saved and saved[0] == run.run_id:
        _try_output(run, saved[1])


def results(snap, area: str) -> None:
    """The final view of a job: status, loss curve, before/after, the registered model, downloads."""
    _status_line(snap)
    _progress(snap, live=False)
    res = snap.result or {}
    cmp = res.get("comparison")
    if snap.status == "done" and cmp:
        st.subheader(t("training.before_after"))
        if res.get("task") == "classify":
            _classify(cmp)
            st.caption(t("training.not_registered"))
        else:
            _answers(cmp, res.get("task"))
            if res.get("model_name"):
                st.info(t("training.registered", name=res["model_name"]))
        run = R.get_run(res.get("run_id"))
        if run is not None:
            st.markdown(f"**{t('training.try.title')}**")
            _try_prompt(run, area)
    downloads(snap, area)
