"""The Lessons page, and the lesson step a link opened, shown above the page it opened.

A teacher picks a lesson and walks its steps. Each step opens a page with its
inputs set, through a link whose query parameters :mod:`explorer.ui.state`
reads (``?next_token.temperature=0.5&lang=fr&lesson=next&step=2``), and shows
that link as plain text to paste for the class. The link's ``lesson``/``step``
make the opened page say, above its title, what to look at.
"""
from __future__ import annotations

from urllib.parse import quote, urlencode

import streamlit as st

from explorer import lessons as L
from explorer.ui.i18n import current_lang, lookup, t
from explorer.ui.messages import number
from explorer.ui.model_store import default_model
from explorer.ui.state import URL_ICON, guard_url, persisted, set_value

LESSON, STEP = "lessons.lesson", "lessons.step"


def check_lesson_url() -> tuple[L.Lesson | None, int | None]:
    """The lesson and step the URL names: an unknown lesson is dropped, a step clamped, each with a notice.

    Idempotent: the URL is corrected, so a second call in the same run says nothing."""
    qp = st.query_params
    lesson_id, step, problems = L.check_position(qp.get("lesson"), qp.get("step"))
    lang = current_lang()
    for code, params in problems:
        st.warning(t(f"url.{code}", **{k: number(v, lang) for k, v in params.items()}), icon=URL_ICON)
    if lesson_id is None:
        for key in ("lesson", "step"):
            if key in qp:
                del qp[key]
        return None, None
    if step is None:
        if "step" in qp:
            del qp["step"]
    elif qp.get("step") != str(step):
        qp["step"] = str(step)
    return L.lessons()[lesson_id], step


def app_root() -> str:
    """The app's address in the user's browser, without the page's own path ("" when unknown: tests)."""
    root = (st.context.url or "").rstrip("/")
    own = "/" + L.url_path(L.LESSONS_PAGE)
    return root[: -len(own)] if root.endswith(own) else root  # Streamlit does not always trim it


def step_link(lesson: L.Lesson, number_: int) -> tuple[str, dict[str, str], str]:
    """(page path, query parameters, the full URL to share) of a step, in the UI language."""
    lang = current_lang()
    step = lesson.steps[number_ - 1]
    params = L.step_params(lesson, number_, lang, lookup, model=default_model(lang))
    url = f"{app_root()}/{L.url_path(step.page)}?{urlencode(params, quote_via=quote)}"
    return L.page_path(step.page), params, url


def _on_lessons_page() -> bool:
    """Is the page being run the Lessons page? (its own panel says the step: no banner there)"""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        info = ctx.pages_manager.get_pages().get(ctx.pages_manager.current_page_script_hash, {})
        return str(info.get("script_path", "")).endswith(f"{L.LESSONS_PAGE}.py")
    except Exception:  # an internal API: when it moves, the banner simply shows on the Lessons page too
        return False


def lesson_banner(where) -> None:
    """Above a page a lesson link opened: the step's title, what to look at, the way back to the lesson."""
    lesson, step = check_lesson_url()
    if lesson is None or step is None or _on_lessons_page():
        return
    with where.container(border=True):
        st.caption(t("lessons.banner", lesson=t(lesson.key("title")), i=step, n=len(lesson.steps)))
        st.markdown(f"**{t(lesson.key(step, 'title'))}** — {t(lesson.key(step, 'body'))}")
        st.page_link(L.page_path(L.LESSONS_PAGE), label=t("lessons.back"), icon=":material/school:",
                     query_params={"lang": current_lang(), "lesson": lesson.id, "step": str(step)})


def _pick_lesson() -> L.Lesson:
    all_lessons = L.lessons()
    titles = {k: t(lesson.key("title")) for k, lesson in all_lessons.items()}  # said now, in this run's language
    chosen = persisted(st.radio, t("lessons.pick"), LESSON, next(iter(all_lessons)), options=list(all_lessons),
                       format_func=titles.get, on_change=lambda: set_value(STEP, 1))
    return all_lessons[chosen]


def _move(to: int) -> None:
    set_value(STEP, to)


def _pick_step(lesson: L.Lesson) -> int:
    n = len(lesson.steps)
    titles = {i: t("lessons.step_option", i=i, title=t(lesson.key(i, "title"))) for i in range(1, n + 1)}
    return persisted(st.radio, t("lessons.step_pick"), STEP, 1, options=list(titles), horizontal=True,
                     format_func=titles.get)


def render_step(lesson: L.Lesson, step: int) -> None:
    """The step: what to look at, the link that opens its page with its inputs, the URL to paste."""
    n = len(lesson.steps)
    page = lesson.steps[step - 1].page
    path, params, url = step_link(lesson, step)
    with st.container(border=True):
        st.subheader(t("lessons.step_header", i=step, n=n, title=t(lesson.key(step, "title"))))
        st.markdown(t(lesson.key(step, "body")))
        st.page_link(path, label=t("lessons.open", page=t(f"nav.{page}")), icon=":material/open_in_new:",
                     query_params=params)
        st.caption(t("lessons.share"))
        st.code(url, language=None, wrap_lines=True)
    back, _, forward = st.columns([1, 2, 1])
    back.button(t("lessons.previous"), on_click=_move, args=(step - 1,), disabled=step <= 1, width="stretch",
                key="lessons.previous")
    forward.button(t("lessons.next"), on_click=_move, args=(step + 1,), disabled=step >= n, width="stretch",
                   key="lessons.next")


def page() -> None:
    guard_url()
    check_lesson_url()
    st.title(t("lessons.title"))
    st.caption(t("lessons.intro"))
    lesson = _pick_lesson()
    st.markdown(t(lesson.key("intro")))
    step = _pick_step(lesson)
    render_step(lesson, step)
