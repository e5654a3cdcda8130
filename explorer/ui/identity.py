"""Who is this browser, and is it the teacher's.

A shared server must keep each student's jobs and runs their own, across reloads and new tabs. The URL
cannot carry the identity (it is the lesson link students share), so a random owner token lives in the
browser: a cookie the server reads when the page connects (``st.context.cookies``), mirrored in the
browser's local storage for pages embedded where cookies are refused (a Space's iframe in some browsers).

- :func:`owner` returns this session's token: the cookie's when the browser sent a valid one, else a new one.
- :func:`keep_owner` mounts a tiny script (a Streamlit v2 component, in the page itself) that stores the
  token in the cookie and local storage, and reports a token the browser already kept, which is then adopted
  (with the jobs and runs made under the provisional one).
- :func:`is_teacher` / :func:`teacher_login`: teacher mode, opened by the deployment's password
  (``explorer.settings.teacher_password``), sees and cancels every job. Wrong passwords are rate-limited for
  the whole server.

A token is a bearer secret of 128 random bits: knowing one's own gives nothing about another's.
"""
from __future__ import annotations

import hmac
import re
import secrets
import threading
import time

import streamlit as st

from explorer import settings

COOKIE = "llmx_owner"
OWNER_KEY = "app.owner"
TEACHER_KEY = "app.teacher"
TOKEN = re.compile(r"[0-9a-f]{32}")
MAX_FAILURES = 10            # wrong teacher passwords accepted per window, for the whole server
FAILURE_WINDOW_S = 60.0

_JS = """
export default function (component) {
  const { data, setStateValue } = component;
  const name = data.name, valid = /^[0-9a-f]{32}$/;
  let kept = null;
  try { kept = window.localStorage.getItem(name); } catch (e) {}
  const token = kept && valid.test(kept) ? kept : data.token;
  try { window.localStorage.setItem(name, token); } catch (e) {}
  const secure = window.location.protocol === "https:";
  document.cookie = name + "=" + token + "; path=/; max-age=31536000; SameSite=" + (secure ? "None; Secure" : "Lax");
  if (token !== data.token) { setStateValue("token", token); }
}
"""


def _cookie() -> str | None:
    """The owner cookie the browser sent when this session connected (None outside a server, or without one)."""
    try:
        value = st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser behind this run (AppTest, bare mode)
        return None
    return value if isinstance(value, str) and TOKEN.fullmatch(value) else None


def owner() -> str:
    """This browser's owner token (jobs and runs it starts carry it)."""
    token = st.session_state.get(OWNER_KEY)
    if not token:
        token = _cookie() or secrets.token_hex(16)
        st.session_state[OWNER_KEY] = token
    return token


@st.cache_resource(show_spinner=False)
def _keeper():
    return st.components.v2.component("llm_explorer_owner", js=_JS)


def _adopt(old: str, new: str) -> None:
    """The browser kept ``new`` from an earlier visit: this session becomes it, with what it did meanwhile."""
    from explorer.jobs import get_manager
    from explorer.views.history import run_store

    st.session_state[OWNER_KEY] = new
    get_manager().adopt(old, new)
    run_store().adopt(old, new)


def keep_owner() -> str:
    """Store this session's token in the browser (and adopt the one it already kept); returns the owner."""
    token = owner()
    try:
        result = _keeper()(data={"name": COOKIE, "token": token}, key="app.owner_keeper",
                           on_token_change=lambda: None)
    except Exception:  # noqa: BLE001 - no browser behind this run (AppTest): the session keeps its token
        return token
    kept = getattr(result, "token", None)
    if isinstance(kept, str) and TOKEN.fullmatch(kept) and kept != token:
        _adopt(token, kept)
        token = kept
    return token


def present() -> str:
    """Each page run: keep the identity in the browser and tell the job manager this owner is still here."""
    from explorer.jobs import get_manager

    token = keep_owner()
    get_manager().seen(token)
    return token


# ================================================================= teacher mode
_failures: list[float] = []
_failures_lock = threading.Lock()


def teacher_password() -> str:
    """The deployment's teacher password: ``LLM_EXPLORER_TEACHER_PASSWORD``, else the secret ``teacher_password``
    ("" when neither is set: then nobody is a teacher)."""
    if settings.teacher_password():
        return settings.teacher_password()
    try:
        return str(st.secrets.get("teacher_password", "") or "").strip()
    except Exception:  # noqa: BLE001 - no secrets file
        return ""


def is_teacher() -> bool:
    return bool(st.session_state.get(TEACHER_KEY)) and bool(teacher_password())


def teacher_login(password: str) -> str:
    """Check a typed password: "ok", "wrong", "wait" (too many wrong ones on this server lately) or "off"."""
    expected = teacher_password()
    if not expected:
        return "off"
    now = time.monotonic()
    with _failures_lock:
        _failures[:] = [f for f in _failures if now - f < FAILURE_WINDOW_S]
        if len(_failures) >= MAX_FAILURES:
            return "wait"
        if hmac.compare_digest(str(password or "").encode("utf-8"), expected.encode("utf-8")):
            st.session_state[TEACHER_KEY] = True
            return "ok"
        _failures.append(now)
    return "wrong"


def teacher_logout() -> None:
    st.session_state.pop(TEACHER_KEY, None)
