"""Sections of the embeddings page (widgets, caching, rendering; logic in gpt_core.embeddings).

Session keys: ``emb.text``, ``emb.words`` (plain keys, restored after a page switch).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from gpt_core import embeddings as E
from gpt_core.backend import ModelInfo, backend_of
from gpt_core.errors import GPTCoreError

from explorer.figures import embeddings as F
from explorer.ui.i18n import t
from explorer.ui.messages import plain, show
from explorer.ui.state import persisted
from explorer.ui.text_input import check_text, show_messages
from explorer.ui.token_chips import visible

TEXT, WORDS = "emb.text", "emb.words"


def model_key(lm) -> str:
    """A hashable key for caches: the source, plus the object (a fine-tuned model is another one)."""
    return f"{lm.source.key}|{id(lm.model)}"


def model_info(lm) -> ModelInfo:
    """What the page header says about the model (vocabulary, width, kind of positions)."""
    return backend_of(lm.model).info()


@st.cache_data(show_spinner=False, max_entries=32)
def _input(_model, _tokenizer, key: str, text: str, max_tokens: int) -> E.InputEmbeddings:
    return E.input_embeddings(_model, _tokenizer, text, max_tokens)


@st.cache_data(show_spinner=False, max_entries=16)
def _positions(_model, key: str, n: int) -> E.PositionInfo:
    return E.position_info(_model, n)


@st.cache_resource(show_spinner=False, max_entries=2)
def _unit(_model, key: str):
    return E.unit_embeddings(_model)


@st.cache_data(show_spinner=False, max_entries=32)
def _projection(_model, _tokenizer, key: str, words: tuple, k: int, dims: int, pooling: str) -> E.Projection:
    return E.project_words(_model, _tokenizer, list(words), k, dims, pooling, unit=_unit(_model, key))


# --------------------------------------------------------------------------- input rows


def render_input(lm) -> None:
    raw = persisted(st.text_area, t("embeddings.text"), TEXT, t("embeddings.default_text"), height=80)
    checked = check_text(raw, max_chars=2_000)
    show_messages(st, checked)
    if not checked.ok:
        return
    try:
        emb = _input(lm.model, lm.tokenizer, model_key(lm), checked.text, E.MAX_INPUT_TOKENS)
    except GPTCoreError as exc:
        show(st, exc)
        return
    if emb.n_tokens_total > len(emb.ids):
        st.warning(t("embeddings.truncated", shown=len(emb.ids), total=emb.n_tokens_total))
    labels = F.token_axis_labels(emb.pieces)
    x_title, y_title = t("embeddings.dim_axis", d=emb.d_model), t("embeddings.token_axis")
    heat = lambda m, title: F.matrix_heatmap(m, labels, title, x_title, y_title, t("embeddings.value"))  # noqa: E731
    if emb.pos is not None:
        tabs = st.tabs([t("embeddings.tab_tok"), t("embeddings.tab_pos"), t("embeddings.tab_sum")])
        tabs[0].plotly_chart(heat(emb.tok, t("embeddings.tok_title")), width="stretch")
        tabs[1].plotly_chart(heat(emb.pos, t("embeddings.pos_rows_title")), width="stretch")
        tabs[2].plotly_chart(heat(emb.block_input, t("embeddings.sum_title")), width="stretch")
        st.caption(t("embeddings.sum_check", diff=emb.max_abs_diff))
    else:
        tabs = st.tabs([t("embeddings.tab_tok"), t("embeddings.tab_block")])
        tabs[0].plotly_chart(heat(emb.tok, t("embeddings.tok_title")), width="stretch")
        tabs[1].plotly_chart(heat(emb.block_input, t("embeddings.block_title_rope")), width="stretch")
        st.caption(t("embeddings.rope_sum", diff=emb.max_abs_diff))


# --------------------------------------------------------------------------- positions


def render_positions(lm, context_length: int) -> None:
    top = min(context_length, 512)
    n = persisted(st.slider, t("embeddings.n_positions"), "emb.n_positions", min(top, 128), min_value=2, max_value=top)
    try:
        info = _positions(lm.model, model_key(lm), n)
    except GPTCoreError as exc:
        show(st, exc)
        return
    axis = t("embeddings.position_axis")
    if info.kind == "learned":
        left, right = st.columns(2)
        rows = info.table[: min(n, 128)]
        left.plotly_chart(F.matrix_heatmap(rows, None, t("embeddings.table_title"),
                                           t("embeddings.dim_axis", d=rows.shape[1]), axis, t("embeddings.value")),
                          width="stretch")
        right.plotly_chart(F.cosine_heatmap(info.cosine, t("embeddings.cos_title"), axis, "cos"), width="stretch")
        random = lm.source.kind == "random"
        st.caption(t("embeddings.learned_help") + (" " + t("embeddings.random_note") if random else ""))
        return
    st.info(t("embeddings.rope_explain", base=info.rope_base, head_dim=info.head_dim, pairs=info.head_dim // 2))
    left, right = st.columns(2)
    left.plotly_chart(F.rope_turns_heatmap(info.rope_cos, t("embeddings.rope_turns_title"), t("embeddings.pair_axis"),
                                           axis, "cos(p·θ)"), width="stretch")
    right.plotly_chart(F.cosine_heatmap(info.cosine, t("embeddings.rope_cos_title"), axis, "cos"), width="stretch")
    st.caption(t("embeddings.rope_cos_help"))


# --------------------------------------------------------------------------- PCA and neighbours


def render_projection(lm) -> None:
    raw = persisted(st.text_input, t("embeddings.words"), WORDS, t("embeddings.default_words"))
    c1, c2, c3 = st.columns(3)
    k = persisted(c1.slider, t("embeddings.k"), "emb.k", 2, min_value=0, max_value=10)
    dims = persisted(c2.radio, t("embeddings.dims"), "emb.dims", 2, options=[2, 3], horizontal=True,
                     format_func=lambda d: f"{d}D")
    pooling = persisted(c3.radio, t("embeddings.pooling"), "emb.pooling", list(E.POOLINGS)[0], options=list(E.POOLINGS),
                        horizontal=True, format_func={p: t(f"embeddings.pool_{p}") for p in E.POOLINGS}.get)
    try:
        words = E.parse_words(raw)
        proj = _projection(lm.model, lm.tokenizer, model_key(lm), tuple(words), k, dims, pooling)
    except GPTCoreError as exc:
        show(st, exc)
        return
    st.plotly_chart(F.projection_figure(proj, t("embeddings.pca_title"), t("embeddings.pca_words"),
                                        t("embeddings.pca_neighbours"), t("embeddings.pca_axis")), width="stretch")
    split = [f"{p.label} → {len(p.ids)}" for p in proj.words if len(p.ids) > 1]
    st.caption(t("embeddings.pca_help") + (" " + t("embeddings.pca_split", words=", ".join(split)) if split else ""))


def render_neighbours(lm) -> None:
    c1, c2, c3 = st.columns([1, 2, 1])
    mode = persisted(c1.radio, t("embeddings.nn_mode"), "emb.nn_mode", "text", options=["text", "id"],
                     format_func={m: t(f"embeddings.nn_by_{m}") for m in ("text", "id")}.get)
    query = persisted(c2.text_input, t("embeddings.nn_query"), f"emb.nn_query.{mode}",
                      "Paris" if mode == "text" else "1000", max_chars=60)
    k = persisted(c3.slider, t("embeddings.nn_k"), "emb.nn_k", 10, min_value=1, max_value=E.MAX_NEIGHBOURS)
    if mode == "id" and (not query.strip().isdigit() or len(query.strip()) > 9):
        st.error(t("embeddings.nn_bad_id", q=plain(query[:20])))  # the page's own check, said directly
        return
    unit = _unit(lm.model, model_key(lm))
    try:
        if mode == "text":
            table = E.neighbours_of_word(unit, lm.tokenizer, query, k)
        else:
            table = E.neighbours_of_id(unit, lm.tokenizer, int(query.strip()), k)
    except GPTCoreError as exc:
        show(st, exc)
        return
    pieces = " + ".join(f"“{visible(p).replace(' ', '␣')}” ({i})" for p, i in zip(table.pieces, table.ids))
    st.caption(t("embeddings.nn_query_tokens", tokens=pieces))
    st.dataframe(pd.DataFrame({
        t("common.rank"): [n.rank for n in table.neighbours],
        t("common.token"): [visible(n.text).replace(" ", "␣") for n in table.neighbours],
        t("common.id"): [n.id for n in table.neighbours],
        t("embeddings.cosine"): [round(n.cosine, 4) for n in table.neighbours],
    }), hide_index=True, width="stretch", height=min(600, 38 + 35 * len(table.neighbours)))
