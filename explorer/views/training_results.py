"""The results of a finished training job: status, before/after, a typed prompt, downloads, judge.

Streamlit code only; the job's data comes from :mod:`explorer.run_job`, the figures from
:mod:`explorer.figures.training`, the shared wording and live view from
:mod:`explorer.views.training_form`.
"""
from __future__ import annotations

import functools
import io
import json
import zipfile
from pathlib import Path

import streamlit as st

from gpt_core.errors import GPTCoreError, InvalidInput, Message

from explorer import run_job as J
from explorer.figures import training as F
from explorer.figures.bars import fixed, percent
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import decimal, plain, say
from explorer.views.tracking import judge_panel
from explorer.views.training_form import one_line, progress_view, duration_text, refused, said


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
                col.code(one_line(row[key]), language=None, wrap_lines=True)
    dist = cmp.get("dist")
    if dist:
        st.plotly_chart(F.compare_bars(dist["labels"], dist["before"], dist["after"], names,
                                       t("training.dist_title"), current_lang()), width="stretch")


def _classify(cmp: dict) -> None:
    rep, lang = cmp["report"], current_lang()
    m = st.columns(3)
    gain = round(100 * rep["accuracy"], 1) - round(100 * rep["majority_baseline"], 1)  # the shown numbers' difference
    m[0].metric(t("training.acc_before"), percent(cmp["accuracy_before"], 1, lang))
    m[1].metric(t("training.acc_after"), percent(rep["accuracy"], 1, lang), delta=t(
        "training.vs_majority", pts=("+" if gain >= 0 else "−") + fixed(abs(gain), 1, lang)))
    m[2].metric(t("training.majority_metric"), percent(rep["majority_baseline"], 1, lang),
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


def _try_output(run: J.TrainedRun, out: dict) -> None:
    names = (t("training.before"), t("training.after"))
    if run.task == "classify":
        st.plotly_chart(F.compare_bars(out["labels"], [0.0] * len(out["labels"]), out["after"],
                                       ("", names[1]), t("training.class_dist"), current_lang()), width="stretch")
        return
    for col, key, name in zip(st.columns(2), ("before_text", "after_text"), names):
        if key in out:
            col.caption(name)
            col.code(one_line(out[key]), language=None, wrap_lines=True)
    if out.get("dist"):
        st.plotly_chart(F.compare_bars(out["dist"]["labels"], out["dist"]["before"], out["dist"]["after"],
                                       names, t("training.dist_title"), current_lang()), width="stretch")


def _try_prompt(run: J.TrainedRun, area: str) -> None:
    with st.form(f"{area}.try_form"):
        text = st.text_area(t(f"training.try.{run.task}"), value=st.session_state.get(f"{area}.try_text", ""), height=80)
        go = st.form_submit_button(t("training.try.go"))
    if go:
        st.session_state[f"{area}.try_text"] = text
        try:
            st.session_state[f"{area}.try_out"] = (run.run_id, J.compare_prompt(run, text))
        except GPTCoreError as exc:
            refused(exc)
    saved = st.session_state.get(f"{area}.try_out")
    if saved and saved[0] == run.run_id:
        _try_output(run, saved[1])


def results(snap, area: str) -> None:
    """The final view of a job: status, loss curve, before/after, the registered model, judge, downloads."""
    _status_line(snap)
    progress_view(snap, live=False)
    res = snap.result or {}
    cmp = res.get("comparison")
    if res.get("wandb_dir"):
        st.caption(t("training.wandb_dir", path=plain(res["wandb_dir"])))
    if snap.status == "done" and cmp:
        st.subheader(t("training.before_after"))
        if res.get("task") == "classify":
            _classify(cmp)
            st.caption(t("training.not_registered"))
        else:
            _answers(cmp, res.get("task"))
            if res.get("model_name"):
                st.info(t("training.registered", name=plain(res["model_name"])))
        run = J.get_run(res.get("run_id"))
        if run is not None:
            st.markdown(f"**{t('training.try.title')}**")
            _try_prompt(run, area)
        if res.get("task") == "instruct":
            judge_panel(cmp["rows"], area, snap.job_id)
    downloads(snap, area)
