"""What the Pretrain and Fine-tune pages share: hyperparameters, the estimate, the start button, the live job.

Streamlit code only: plans are in :mod:`explorer.runs`, the job in :mod:`explorer.run_job`,
figures in :mod:`explorer.figures.training`; a finished job is drawn by
:mod:`explorer.views.training_results`. Every gpt_core refusal or job message is said in
the user's language with :mod:`explorer.ui.messages`.
"""
from __future__ import annotations

import time

import streamlit as st

from gpt_core.errors import GPTCoreError, InvalidInput, Message
from gpt_core.tokenizers import load_tokenizer
from gpt_core.train import parse_learning_rate

from explorer import history as H
from explorer import run_job as J
from explorer import runs as R
from explorer.corpus import records_for
from explorer.figures import training as F
from explorer.jobs import get_manager
from explorer.worker import warm_up
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import decimal, duration_text, number, plain, say
from explorer.ui.state import persisted
from explorer.ui.identity import owner



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


def short_duration(seconds: float) -> str:
    """0.0042 -> '4,2 ms', 0.35 -> '0,35 s' (a speed measured for an estimate)."""
    if seconds < 0.1:
        return f"{decimal(seconds * 1000, 1)} ms"
    return f"{decimal(seconds, 2)} s"


def size_text(n_bytes: float) -> str:
    """Bytes as "1.25 GB" / "1,25 Go" or "340 MB" / "340 Mo"."""
    if n_bytes >= 1e8:
        return t("training.size.gb", n=number(round(n_bytes / 1e9, 2), current_lang()))
    return t("training.size.mb", n=number(int(round(n_bytes / 1e6)), current_lang()))


def blocks_text(n: int) -> str:
    """'1 bloc' / '4 blocs' ('1 block' / '4 blocks')."""
    return t("training.blocks.one") if n == 1 else t("training.blocks.many", n=n)


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
    if est.get("parts"):
        st.caption(assumptions(est))
    if not est.get("fits", True):
        st.error(t("training.cannot_start", reason=said(est.get("reason"))))
        return False
    long = J.too_long(est)
    if long is not None:  # said before the click: the start button stays off
        st.error(t("training.cannot_start", reason=said(long)))
        return False
    return True


PHASES = ("features", "train", "eval", "generate", "copy", "save")


def assumptions(est: dict) -> str:
    """What the time estimate assumes: the speeds measured just now and the time of each phase."""
    a, parts = est["assumes"], est["parts"]
    shown = ", ".join(t(f"training.phase.{k}", s=duration_text(parts[k])) for k in PHASES if parts.get(k, 0) >= 0.05)
    speeds = []
    if a.get("step_s"):
        speeds.append(t("training.assume.step", s=short_duration(a["step_s"])))
    if a.get("token_s"):
        speeds.append(t("training.assume.token", s=short_duration(a["token_s"])))
    separator = " ; " if current_lang() == "fr" else "; "
    return t("training.assume", speeds=separator.join(speeds) or "–", parts=shown or "–")


def start_button(area: str, plan: R.RunPlan | None, store, tracking: dict | None = None) -> None:
    """The start button (disabled without a valid plan); a busy server means a queue, said first."""
    H.startup()  # once per process: half-written run folders removed, size cap applied
    warm_up()  # the process that starts jobs imports torch once, in the background, before the first click
    running = get_manager().running_job()
    if running is not None:
        st.info(t("training.busy", kind=t(f"training.kind.{running.kind}"), step=running.step,
                  total=running.total_steps or "?"))
    if st.button(t("training.start"), type="primary", disabled=plan is None, key=f"{area}.start"):
        plan.tracking = dict(tracking or {})
        try:
            st.session_state[f"{area}.job"] = J.submit(plan, store, owner())
        except GPTCoreError as exc:  # too long, a second run of this session, a full queue
            refused(exc)


# ================================================================ live job
def one_line(text: str) -> str:
    """Generated text for display: newlines shown as ↵ (a run of them would make a tall empty box)."""
    if not text or not text.strip():
        return t("training.empty") if not text else text.replace("\n", "↵")
    return text.replace("\r", "").replace("\n", "↵ ")


def _cancel_button(snap) -> None:
    if st.button(t("training.cancel"), key=f"cancel.{snap.job_id}"):
        get_manager().cancel(snap.job_id, owner=owner())
        st.toast(t("training.cancelling"))


def _samples(snap) -> None:
    last = snap.samples[-1]
    st.markdown(t("training.sample", step=last["step"]))
    if snap.params.get("sample_instruction"):  # an instruction run answers one validation instruction
        st.caption(t("training.sample_for", instruction=plain(snap.params["sample_instruction"])))
    st.code(one_line(last["text"]), language=None, wrap_lines=True)
    if len(snap.samples) > 1:
        with st.expander(t("training.samples_before")):
            for s in reversed(snap.samples[:-1]):
                st.caption(t("training.sample", step=s["step"]))
                st.code(one_line(s["text"]), language=None, wrap_lines=True)


def progress_text(snap, live: bool) -> str:
    """'Step 40 / 250 · 12 s · about 1.2 min left': live, the clock runs from the job's start and the time
    left follows the steps' measured pace (a busy server shows it); finished, the job's own duration."""
    elapsed = time.time() - snap.started_at if live and snap.started_at else snap.elapsed
    text = t("training.progress", step=snap.step, total=snap.total_steps or "?", elapsed=duration_text(elapsed))
    if live and snap.step and snap.total_steps and snap.elapsed:  # snap.elapsed: the training loop's own clock
        text += t("training.progress_left", left=duration_text(snap.elapsed / snap.step * (snap.total_steps - snap.step)))
    return text


def progress_view(snap, live: bool) -> None:
    if snap.status == "queued":
        st.info(t("training.queued", pos=snap.queue_position or "?"))
    else:
        st.progress(min(max(snap.progress, 0.0), 1.0), text=progress_text(snap, live))
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
    speed = snap.tokens_seen / snap.elapsed if snap.elapsed else 0  # 0 for a probe: it reads features
    m[3].metric(t("training.m.speed"), f"{count_text(speed)}/s" if speed else "–")
    st.plotly_chart(F.loss_curve(snap.train_steps, snap.train_loss, snap.val_steps, snap.val_loss,
                                 (t("training.curve.train"), t("training.curve.val")), t("training.curve.title"),
                                 t("training.curve.x"), t("training.curve.y"), lang=current_lang()),
                    width="stretch", key=f"loss.{snap.job_id}.{'live' if live else 'final'}")
    if snap.samples:
        _samples(snap)
    if live:
        _cancel_button(snap)


def job_settings(snap) -> str:
    """The settings of the job shown (which may not be the form's current ones), and when it started."""
    p = snap.params
    what = t("training.job_arch", blocks=blocks_text(p["architecture"]["n_layers"]),
             d=p["architecture"]["d_model"], ctx=p["architecture"]["context"]) if "architecture" in p \
        else t(f"training.job_task.{p.get('task', 'instruct')}.{p.get('method', 'full')}")
    return t("training.job_settings", what=what, steps=p.get("steps", "?"), batch=p.get("batch_size", "?"),
             at=time.strftime("%H:%M", time.localtime(snap.submitted_at)))


LIVE_EVERY_S = 2.0  # the live view's refresh: each one costs the server a snapshot and a chart


@st.fragment(run_every=LIVE_EVERY_S)
def _live(job_id: str) -> None:
    get_manager().seen(owner())  # watching a job keeps it from being taken for an orphan
    snap = get_manager().snapshot(job_id)
    if snap is None:
        return
    if snap.finished:
        st.rerun()  # the whole page draws the final view, without a timer
    progress_view(snap, live=True)


def job_panel(kind: str, area: str):
    """Re-attach to this browser's job of this kind (after a reload, in another tab); nobody else's.

    An active job is drawn live (a fragment polling its snapshot every few seconds);
    a finished one is returned for :func:`results`.
    """
    mgr, me = get_manager(), owner()
    job_id = st.session_state.get(f"{area}.job")
    snap = mgr.snapshot(job_id) if job_id else None
    if snap is None or snap.kind != kind or snap.owner != me:
        snap = mgr.latest_job(owner=me, kind=kind)
    if snap is None:
        return None
    st.session_state[f"{area}.job"] = snap.job_id
    st.subheader(t("training.job_title"))
    st.caption(job_settings(snap))
    if snap.active:
        _live(snap.job_id)
        return None
    return snap
