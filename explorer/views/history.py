"""The History page: this browser's runs (kept across restarts), their loss curves overlaid, a checkpoint
reloaded as a model of the sidebar, and delete. Teacher mode sees every run and every job of the server."""
from __future__ import annotations

import hashlib
import math
import time

import pandas as pd
import streamlit as st

from gpt_core.errors import GPTCoreError, note
from gpt_core.evaluate import class_probabilities

from explorer import history as H
from explorer import history_models as HM
from explorer import settings
from explorer.figures.history import overlay_losses
from explorer.figures.training import compare_bars
from explorer.jobs import get_manager
from explorer.ui.i18n import current_lang, t
from explorer.ui.identity import is_teacher, owner, teacher_login, teacher_logout, teacher_password
from explorer.ui.messages import decimal, duration_text, percent, plain, say
from explorer.ui.model_store import DEVICE_KEY, label_of, store

COMPARE_KEY = "history.compare"
RUN_KEY = "history.run"
FLASH_KEY = "history.flash"      # (level, text) said once after a rerun
DEFAULT_OVERLAY = 3              # the newest runs drawn when nothing is picked yet


@st.cache_resource(show_spinner=False)
def _store_at(path: str) -> H.RunStore:
    store_ = H.RunStore(path)
    H.startup(store_)  # once per process: half-written folders removed, size cap applied
    return store_


def run_store() -> H.RunStore:
    """The server's run history (in LLM_EXPLORER_RUNS), cleaned once per process."""
    return _store_at(str(settings.runs_dir() / H.DB_NAME))


# ================================================================= words
def date_text(stamp: float) -> str:
    return time.strftime(t("history.date_format"), time.localtime(stamp))


def size_text(n_bytes: float) -> str:
    """Bytes as "1.25 GB" / "1,25 Go", "340 MB" / "340 Mo", "12 kB" / "12 ko"."""
    units = ("Go", "Mo", "ko", "o") if current_lang() == "fr" else ("GB", "MB", "kB", "B")
    for factor, unit in zip((1e9, 1e6, 1e3), units):
        if n_bytes >= factor:
            value = n_bytes / factor
            return f"{decimal(value, 2 if value < 10 else 1 if value < 100 else 0)} {unit}"
    return f"{int(n_bytes)} {units[3]}"


def _last(values) -> float | None:
    finite = [v for v in values or [] if isinstance(v, (int, float)) and math.isfinite(v)]
    return finite[-1] if finite else None


def metric_text(rec: H.RunRecord) -> str:
    """The run's final result: test accuracy (and the majority baseline) for a classifier, else a loss."""
    m = rec.metrics
    if rec.task == "classify" and isinstance(m.get("accuracy"), (int, float)):
        if isinstance(m.get("majority_baseline"), (int, float)):
            return t("history.metric.accuracy_baseline", acc=percent(m["accuracy"]), base=percent(m["majority_baseline"]))
        return t("history.metric.accuracy", acc=percent(m["accuracy"]))
    val = m.get("val_loss") if isinstance(m.get("val_loss"), (int, float)) else _last(rec.history.get("val_loss"))
    if val is not None:
        return t("history.metric.val_loss", v=decimal(val, 3))
    train = _last(rec.history.get("train_loss"))
    return t("history.metric.train_loss", v=decimal(train, 3)) if train is not None else "—"


def checkpoint_text(rec: H.RunRecord) -> str:
    if rec.checkpoint:
        return size_text(rec.checkpoint_bytes)
    return t("history.ckpt.deleted" if rec.status == "done" else "history.ckpt.none")


def kind_text(rec: H.RunRecord) -> str:
    """"pretraining", or "fine-tuning (classification)": the kind, with the task when it says more."""
    kind = t(f"history.kind.{rec.kind}")
    return kind if rec.task == "lm" else t("history.kind_task", kind=kind, task=t(f"history.task.{rec.task}"))


def option_text(rec: H.RunRecord) -> str:
    return t("history.option", name=rec.name or rec.run_id, date=date_text(rec.finished_at))


def _whose(rec: H.RunRecord, me: str) -> str:
    """"yours", "terminal" for a run started from the command line (no owner), else nothing."""
    if rec.owner == me:
        return t("history.yours_mark")
    return "" if rec.owner else t("history.cli_mark")


def table(records: list[H.RunRecord], me: str) -> pd.DataFrame:
    """One row per run, plain values in the UI language."""
    rows = [{
        t("history.col.yours"): _whose(rec, me),
        t("history.col.date"): date_text(rec.finished_at),
        t("history.col.kind"): kind_text(rec),
        t("history.col.name"): rec.name or rec.run_id,
        t("history.col.status"): t(f"history.status.{rec.status}"),
        t("history.col.duration"): duration_text(rec.seconds),
        t("history.col.metric"): metric_text(rec),
        t("history.col.checkpoint"): checkpoint_text(rec),
    } for rec in records]
    return pd.DataFrame(rows)


# ================================================================= parts
def _has_curve(rec: H.RunRecord) -> bool:
    return _last(rec.history.get("train_loss")) is not None or _last(rec.history.get("val_loss")) is not None


def _compare(records: list[H.RunRecord]) -> None:
    st.subheader(t("history.compare"))
    drawable = {rec.run_id: rec for rec in records if _has_curve(rec)}
    if not drawable:
        st.info(t("history.no_curve"))
        return
    if COMPARE_KEY in st.session_state:  # a run deleted meanwhile leaves the selection
        st.session_state[COMPARE_KEY] = [r for r in st.session_state[COMPARE_KEY] if r in drawable]
    labels = {rid: option_text(rec) for rid, rec in drawable.items()}  # words chosen now, in this run's language
    picked = st.multiselect(t("history.compare_pick"), list(drawable), key=COMPARE_KEY,
                            default=None if COMPARE_KEY in st.session_state else list(drawable)[:DEFAULT_OVERLAY],
                            format_func=labels.__getitem__)
    if not picked:
        st.info(t("history.compare_none"))
        return
    curves = [{"name": drawable[rid].name or rid, **drawable[rid].history} for rid in picked]
    fig = overlay_losses(curves, (t("history.fig.train"), t("history.fig.val")), t("history.fig.title"),
                         t("history.fig.x"), t("history.fig.y"), current_lang())
    st.plotly_chart(fig, width="stretch")


def base_label(key: str) -> str:
    """A base model's name as the sidebar says it ("Gemma 3 270M…"), else its key (a folder, a hub id)."""
    from gpt_core.registry import list_sources

    found = next((src for src in list_sources() if src.key == key), None)
    return label_of(found) if found is not None else key


def _load(rec: H.RunRecord) -> None:
    """Read the checkpoint and offer the model in every page's sidebar."""
    name = rec.name or rec.run_id
    models = store()
    if name in models.mine(owner()):
        st.info(t("history.already", name=plain(name)))
        return
    try:
        with st.spinner(t("history.loading")):
            lm = HM.load_checkpoint_model(rec, st.session_state.get(DEVICE_KEY, "cpu"), run_store())
    except GPTCoreError as exc:
        st.error(t("history.load_failed", reason=plain(say(exc))))
        return
    except Exception as exc:  # a damaged file: say its kind, never a traceback
        st.error(t("history.load_failed", reason=t("common.unexpected", kind=type(exc).__name__)))
        return
    models.register(name, lm, owner())
    st.session_state[FLASH_KEY] = ("success", t("history.loaded", name=plain(name)))
    st.rerun()  # the sidebar (drawn above) lists it from the next run on


def _classify_box(rec: H.RunRecord) -> None:
    """The run's classifier, loaded from its checkpoint, reads a text typed here."""
    with st.form("history.classify_form"):
        text = st.text_area(t("history.classify_text"), max_chars=2000, height=80)
        go = st.form_submit_button(t("history.classify"))
    if not go:
        return
    device = st.session_state.get(DEVICE_KEY, "cpu")
    try:
        with st.spinner(t("history.loading")):
            body = store().load(rec.base_model, device).model if rec.base_model else None
            model = HM.load_classifier(rec, device, run_store(), body)
            probs = class_probabilities(model, HM.rebuild_tokenizer(rec), text, int(rec.config.get("max_length", 64)))
    except GPTCoreError as exc:
        st.error(t("history.load_failed", reason=plain(say(exc))))
        return
    labels = list(getattr(model, "gpt_core_labels", None) or range(len(probs)))
    st.plotly_chart(compare_bars(labels, [0.0] * len(probs), probs, ("", t("history.classes")),
                                 t("history.classify_title"), current_lang()), width="stretch")


def _delete(rec: H.RunRecord) -> None:
    run_store().delete(rec.run_id)
    st.session_state[FLASH_KEY] = ("success", t("history.deleted", name=plain(rec.name or rec.run_id)))
    st.rerun()


def _ending(rec: H.RunRecord) -> None:
    said = say(rec.message) if not isinstance(rec.message, str) else rec.message
    if said:
        st.markdown(f"**{t('history.ended')}** {plain(said)}")
    sample = rec.metrics.get("sample")
    if isinstance(sample, str) and sample.strip():
        st.markdown(f"**{t('history.sample')}**")
        st.text(sample)


def _details(records: list[H.RunRecord], me: str) -> None:
    st.subheader(t("history.details"))
    by_id = {rec.run_id: rec for rec in records}
    if st.session_state.get(RUN_KEY) not in by_id:
        st.session_state.pop(RUN_KEY, None)
    labels = {rid: option_text(rec) for rid, rec in by_id.items()}
    run_id = st.selectbox(t("history.pick"), list(by_id), key=RUN_KEY, format_func=labels.__getitem__)
    rec = by_id[run_id]
    if rec.base_model:
        st.caption(t("history.base", base=plain(base_label(rec.base_model))))
    _ending(rec)
    with st.expander(t("history.config")):
        st.json(rec.config)
    left, right = st.columns(2)
    with left:
        if not rec.language_model:
            st.caption(t("history.not_lm"))
        elif not rec.checkpoint:
            st.caption(t("history.no_checkpoint"))
        elif st.button(t("history.load"), key="history.load", help=t("history.load_help"), type="primary"):
            _load(rec)
    if not rec.language_model and rec.checkpoint:
        _classify_box(rec)
    with right:
        if rec.owner != me and not is_teacher():
            st.caption(t("history.owner_only"))
        elif st.button(t("history.delete"), key="history.delete", help=t("history.delete_help")):
            _delete(rec)


def page() -> None:
    """The whole History page (pages/13_History.py calls it)."""
    st.title(t("nav.13_History"))
    st.caption(t("history.intro"))
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash:
        getattr(st, flash[0])(flash[1])
    me = owner()
    runs = run_store()
    records = runs.list(owner=None if is_teacher() else me, shared=True)
    st.caption(t("history.usage", used=size_text(H.folder_bytes(runs.root)), cap=size_text(settings.runs_max_bytes())))
    if not records:
        st.info(t("history.empty"))
        teacher_panel()
        return
    st.subheader(t("history.table"))
    narrow = {t(f"history.col.{c}"): st.column_config.TextColumn(width=w)
              for c, w in (("yours", 55), ("status", 75), ("duration", 65), ("checkpoint", 90))}
    narrow[t("history.col.metric")] = st.column_config.TextColumn(help=t("history.metric_help"))
    st.dataframe(table(records, me), hide_index=True, width="stretch", column_config=narrow)
    _compare(records)
    _details(records, me)
    teacher_panel()


# ================================================================= teacher
def someone(token: str | None) -> str:
    """A stable short name for an owner that does not reveal their token."""
    return hashlib.sha256((token or "").encode("utf-8")).hexdigest()[:6] if token else "—"


def _jobs_table() -> None:
    jobs = get_manager().jobs()
    if not jobs:
        st.info(t("identity.no_jobs"))
        return
    st.dataframe(pd.DataFrame([{
        t("identity.col.who"): someone(j.owner),
        t("identity.col.kind"): t(f"training.kind.{j.kind}"),
        t("identity.col.status"): t(f"identity.status.{j.status}"),
        t("identity.col.step"): f"{j.step}/{j.total_steps or '?'}",
        t("identity.col.at"): time.strftime("%H:%M", time.localtime(j.submitted_at)),
    } for j in jobs]), hide_index=True, width="stretch")
    for j in [j for j in jobs if j.active]:
        label = t("identity.cancel_job", who=someone(j.owner), kind=t(f"training.kind.{j.kind}"))
        if st.button(label, key=f"teacher.cancel.{j.job_id}"):
            get_manager().cancel(j.job_id, reason=note("jobs.cancelled_by_teacher", "Cancelled by the teacher."))
            st.rerun()


def teacher_panel() -> None:
    """Teacher mode: every job of the server with a cancel button, and every run in the history above."""
    with st.expander(t("identity.teacher"), expanded=is_teacher()):
        if not teacher_password():
            st.caption(t("identity.teacher_off"))
            return
        if is_teacher():
            st.caption(t("identity.teacher_on"))
            _jobs_table()
            if st.button(t("identity.logout"), key="teacher.logout"):
                teacher_logout()
                st.rerun()
            return
        with st.form("teacher.login", clear_on_submit=True):
            password = st.text_input(t("identity.password"), type="password", max_chars=200)
            go = st.form_submit_button(t("identity.login"))
        if go:
            outcome = teacher_login(password)
            if outcome == "ok":
                st.rerun()
            st.error(t(f"identity.login_{outcome}"))
