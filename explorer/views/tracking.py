"""Tracking and judging on the training pages: Weights & Biases options, and the judge of generated answers.

* :func:`tracking_options` — an expander under a training form: log the run
  with Weights & Biases (offline when this server has no account or no
  network), in a project whose name is cleaned before use;
* :func:`judge_panel` — under a finished instruction run: the course's JSON
  export of generated vs expected answers, and scores from a local judge
  served by Ollama at the address the deployment sets
  (:func:`explorer.settings.ollama_url`; never typed by a visitor).

Answers and instructions are shown as plain text only (a table), never as Markdown.
"""
from __future__ import annotations

import importlib.util
import re
from urllib.parse import urlsplit

import streamlit as st

from gpt_core.errors import GPTCoreError
from gpt_core.evaluate import answers_json, judge_comparison, wandb_credentials

from explorer import settings
from explorer.ui.i18n import t
from explorer.ui.messages import decimal, plain, say
from explorer.ui.state import persisted

DEFAULT_PROJECT = "llm-explorer"
MAX_PROJECT = 64                          # characters of a project name
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]+")
EXPORT_NAME = "instruction-data-with-response.json"  # the course's file name


# ================================================================ Weights & Biases
def clean_project(raw: object) -> tuple[str, bool]:
    """The project name to use (letters, digits, - and _; 64 at most; the default when nothing is left) and
    whether it differs from what was typed."""
    text = raw.strip() if isinstance(raw, str) else ""
    cleaned = _NOT_ALLOWED.sub("-", text).strip("-")[:MAX_PROJECT].strip("-") or DEFAULT_PROJECT
    return cleaned, cleaned != text


def wandb_installed() -> bool:
    """Is the optional ``wandb`` package importable? (looked up, not imported: importing it is slow)"""
    try:
        return importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


def tracking_options(area: str) -> dict:
    """The Weights & Biases expander of a training form: ``{"wandb": bool, "project": str, "online": bool}``.

    ``online`` is offered only when an account is set up on this server;
    otherwise a run is logged offline into the runs folder.
    """
    with st.expander(t("tracking.title")):
        st.caption(t("tracking.intro"))
        installed = wandb_installed()
        if not installed:
            st.info(t("tracking.missing"))
        on = persisted(st.checkbox, t("tracking.log"), f"{area}.wandb", False, disabled=not installed)
        raw = persisted(st.text_input, t("tracking.project"), f"{area}.wandb_project", DEFAULT_PROJECT,
                        max_chars=2 * MAX_PROJECT, help=t("tracking.project_help"), disabled=not (on and installed))
        project, changed = clean_project(raw)
        if changed and on:
            st.warning(t("tracking.project_fixed", project=plain(project)))
        online = False
        if installed and wandb_credentials():
            online = persisted(st.checkbox, t("tracking.online"), f"{area}.wandb_online", False, disabled=not on)
        elif installed:
            st.caption(t("tracking.offline_note"))
    return {"wandb": bool(on and installed), "project": project, "online": bool(on and installed and online)}


# ================================================================ the judge
def host_of(url: str) -> str:
    """``http://user:pw@host:11434/x`` -> ``host:11434`` (what the page may show of the judge's address)."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1] or url


def export_name(area: str, run_id: str) -> str:
    safe = _NOT_ALLOWED.sub("-", f"{area}-{run_id}").strip("-")[:80]
    return f"{safe}-{EXPORT_NAME}" if safe else EXPORT_NAME


def _judge(rows: list[dict], model: str, url: str) -> dict:
    try:
        return {"result": judge_comparison(rows, model=model, url=url)}
    except GPTCoreError as exc:  # no server, model not pulled, ...: said in the user's language
        return {"error": exc.message}


def _score(value) -> str:
    return "–" if value is None else str(int(value))  # 0-100


def _mean(result: dict | None) -> str:
    mean = (result or {}).get("mean")
    return "–" if mean is None else decimal(mean, 1)


def _show_scores(rows: list[dict], result: dict) -> None:
    after, before = result["after"], result.get("before")
    table = []
    for i, row in enumerate(rows):
        line = {"#": str(i + 1), t("tracking.col_instruction"): str(row.get("instruction", "")),
                t("tracking.col_after"): _score(after["scores"][i])}
        if before is not None:
            line[t("tracking.col_before")] = _score(before["scores"][i])
        table.append(line)
    st.dataframe(table, hide_index=True, width="stretch")
    cols = st.columns(2)
    cols[0].metric(t("tracking.mean_after"), _mean(after))
    if before is not None:
        cols[1].metric(t("tracking.mean_before"), _mean(before))
    st.caption(t("tracking.judged_by", model=plain(after.get("model", "")), host=plain(host_of(after.get("url", "")))))


def judge_panel(rows: list[dict], area: str, run_id: str) -> None:
    """Export and judge the before/after answers of a finished instruction run (results kept per ``run_id``).

    ``rows``: ``[{"instruction", "input", "expected", "before", "after"}, ...]``.
    """
    key = f"{area}.judge.{run_id}"
    url, model = settings.ollama_url(), settings.ollama_model()
    st.markdown(f"**{t('tracking.judge_title')}**")
    st.caption(t("tracking.judge_help", model=plain(model), host=plain(host_of(url))))
    if st.button(t("tracking.judge"), key=f"{area}.judge_btn", disabled=not rows):
        with st.spinner(t("tracking.judging", n=len(rows))):
            st.session_state[key] = _judge(rows, model, url)
    saved = st.session_state.get(key) or {}
    if saved.get("error") is not None:
        st.error(plain(say(saved["error"])))
    elif saved.get("result") is not None:
        _show_scores(rows, saved["result"])
    st.caption(t("tracking.export_help"))
    st.download_button(t("tracking.download"), data=answers_json(rows, saved.get("result")),
                       file_name=export_name(area, run_id), mime="application/json", on_click="ignore",
                       key=f"{area}.dl_answers")
