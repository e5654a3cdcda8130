"""The Attention page: one cached analysis, layer/head choice (URL + session), figures, bertviz.

The page stays a thin view: it calls :func:`analyse` (tokenise, fit the
context, run the model through gpt_core's backend, score every head),
:func:`pick_layer_head` (layer/head from the URL, the session or a default,
clamped with a readable message) and the ``render_*`` sections.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from gpt_core.attention import HeadGrid, analyse_attention, clamp_index, grid_panels, kv_group, layer_window
from gpt_core.backend import ModelInfo, backend_of

from explorer.figures import attention as fa
from explorer.figures import bertviz_html as bertviz
from explorer.ui.i18n import t
from explorer.ui.messages import attempt
from explorer.ui.state import persisted, set_value
from explorer.ui.text_input import fit_context
from explorer.ui.token_chips import visible

MAX_TOKENS = 96          # the attention page draws at most this many tokens (T x T per head)
MAX_PANELS = 48          # small multiples drawn at once (layers x heads)
MAX_BERTVIZ_LAYERS = 6   # layers embedded in the bertviz views at once


@dataclass
class AttentionData:
    ids: list[int]
    tokens: list[str]               # visible text of each token (bertviz, tables)
    labels: list[str]               # unique axis labels "i·text"
    attentions: list[np.ndarray]    # n_layers x (n_heads, T, T) float32
    grid: HeadGrid
    info: ModelInfo
    notice: str | None              # why the text was cut, if it was

    @property
    def n_layers(self) -> int:
        return len(self.attentions)

    @property
    def n_heads(self) -> int:
        return self.attentions[0].shape[0]

    @property
    def group_size(self) -> int:
        return self.info.n_heads // max(1, self.info.n_kv_heads)


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Visible text of each token; whitespace-only tokens become ␣, empty ones ∅."""
    out = []
    for i in ids:
        text = visible(tokenizer.decode([i]))
        out.append("∅" if not text else text.replace(" ", "␣") if not text.strip() else text)
    return out


def axis_labels(tokens: list[str], width: int = 12) -> list[str]:
    """Unique labels for plot axes: the position then the (shortened) token text."""
    return [f"{i}·{tok if len(tok) <= width else tok[:width - 1] + '…'}" for i, tok in enumerate(tokens)]


def fit_ids(ids: list[int], context_length: int) -> tuple[list[int], str | None]:
    """The model's window first (common message), then the page's own drawing limit."""
    ids, notice = fit_context(ids, context_length)
    if notice is None and len(ids) > MAX_TOKENS:
        notice = t("attention.too_many", total=len(ids), limit=MAX_TOKENS)
        ids = ids[-MAX_TOKENS:]
    elif len(ids) > MAX_TOKENS:
        notice = f"{notice} {t('attention.too_many', total=len(ids), limit=MAX_TOKENS)}"
        ids = ids[-MAX_TOKENS:]
    return ids, notice


@st.cache_data(max_entries=6, show_spinner=False)
def _cached_compute(_model, model_key: str, ids: tuple[int, ...]):
    with torch.inference_mode():
        return analyse_attention(_model, list(ids))


def analyse(lm, text: str) -> AttentionData:
    ids = [p.id for p in lm.tokenizer.tokenize(text)]
    ids, notice = fit_ids(ids, backend_of(lm.model).context_length)
    attentions, grid, info = _cached_compute(lm.model, lm.source.key, tuple(ids))
    tokens = token_texts(lm.tokenizer, ids)
    return AttentionData(ids, tokens, axis_labels(tokens), attentions, grid, info, notice)


# ----------------------------------------------------------- layer / head choice
def resolve_index(name: str, n: int, session: dict, query) -> tuple[int, str | None]:
    """Layer or head index from the URL (``?layer=3&head=1``), else the session, else 0.

    A bad value (not a number, out of range: e.g. a head of a bigger model kept
    in the session) is clamped, and the message says so.
    """
    key = f"attention.{name}"
    source = "url" if name in query else "session"
    raw = query.get(name) if source == "url" else session.get(key, 0)
    index, problem = clamp_index(raw, n)
    message = None
    if problem is not None:
        message = t(f"attention.bad_{problem}", what=t(f"attention.{name}_word"),
                    value=str(raw)[:40], source=t(f"attention.from_{source}"), max=n - 1, used=index)
    session[key] = index
    return index, message


def head_option(data: AttentionData, head: int) -> str:
    """Label of a head in the picker, with its K/V head under grouped-query attention."""
    if data.info.n_kv_heads < data.info.n_heads:
        return t("attention.head_gqa", h=head, kv=kv_group(head, data.info.n_heads, data.info.n_kv_heads))
    return t("attention.head_n", h=head)


def window_start(layer: int, n_heads: int) -> int:
    per_view = max(1, MAX_PANELS // max(1, n_heads))
    return (layer // per_view) * per_view


def scores_table(data: AttentionData, layer: int) -> pd.DataFrame:
    g = data.grid
    heads = range(data.n_heads)
    return pd.DataFrame({
        t("attention.col_head"): [head_option(data, h) for h in heads],
        t("attention.col_kind"): [t(f"attention.kind_{g.kinds[layer][h]}") for h in heads],
        t("attention.col_prev"): g.prev[layer], t("attention.col_first"): g.first[layer],
        t("attention.col_self"): g.self_[layer], t("attention.col_entropy"): g.entropy[layer],
        t("attention.col_norm_entropy"): g.norm_entropy[layer],
    })


def score_columns() -> dict:
    """Compact number columns for the scores table (two decimals)."""
    names = ("col_prev", "col_first", "col_self", "col_entropy", "col_norm_entropy")
    return {t(f"attention.{n}"): st.column_config.NumberColumn(t(f"attention.{n}"), format="%.2f") for n in names}


def kind_summary(data: AttentionData) -> str:
    counts = data.grid.kind_counts()
    parts = [f"{t(f'attention.kind_{k}')} : {n}" for k, n in counts.items() if n]
    return " · ".join(parts)


# --------------------------------------------------------------------- bertviz
def bertviz_layers(selected: list[int], n_layers: int, layer: int) -> tuple[list[int], str | None]:
    """Layers for the bertviz views: the user's choice, capped; default around ``layer``."""
    chosen = sorted({int(x) for x in selected if 0 <= int(x) < n_layers}) or [layer]
    if len(chosen) > MAX_BERTVIZ_LAYERS:
        return chosen[:MAX_BERTVIZ_LAYERS], t("attention.bv_capped", n=MAX_BERTVIZ_LAYERS)
    return chosen, None


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_bertviz(model_key: str, ids: tuple[int, ...], view: str, layers: tuple[int, ...],
                    _attentions, tokens: tuple[str, ...], initial_layer: int) -> str:
    return bertviz.bertviz_html([torch.from_numpy(a) for a in _attentions], list(tokens), view,
                                list(layers), initial_layer=initial_layer)


def bertviz_frame(data: AttentionData, model_key: str, view: str, layers: list[int],
                  initial_layer: int = 0) -> tuple[str | None, int]:
    """(HTML or None when the offline JavaScript is missing, iframe height in px)."""
    if not bertviz.vendor_available():
        return None, 0
    html = _cached_bertviz(model_key, tuple(data.ids), view, tuple(layers), data.attentions, tuple(data.tokens),
                           initial_layer)
    T = len(data.ids)
    if view == "head":
        height = int(90 + 22.5 * T)
    else:
        thumb = 970 / max(1, data.n_heads)
        height = int(max(60 + len(layers) * thumb, 150 + 18 * T))
    return html, min(height, 4000)


# ------------------------------------------------------------------- widgets
def index_picker(container, name: str, n: int, value: int, fmt=str) -> int:
    """A selectbox whose value lives in ``attention.<name>`` and in the URL (``?<name>=``)."""
    key = f"attention.{name}"
    set_value(key, value)  # the URL (or the clamped session value) wins over the widget's memory

    def sync_url() -> None:
        st.query_params[name] = str(st.session_state[key])

    chosen = persisted(container.selectbox, t(f"attention.{name}_pick"), key, value, options=list(range(n)),
                       format_func=fmt, on_change=sync_url)
    st.query_params[name] = str(chosen)
    return chosen


# ------------------------------------------------------------------ the page
def analyse_or_explain(lm, text: str) -> AttentionData | None:
    """The analysis, or None with the reason shown in the user's language."""
    data = attempt(st, analyse, lm, text, wrap="attention.error")
    if data is None:
        return None
    if data.notice:
        st.warning(data.notice)
    T = len(data.ids)
    st.caption(t("attention.n_tokens", n=T, layers=data.n_layers, heads=data.n_heads,
                 panels=data.n_layers * data.n_heads))
    if T == 1:
        st.info(t("attention.one_token"))
    if data.info.n_kv_heads < data.info.n_heads:
        st.info(t("attention.gqa", n_heads=data.info.n_heads, n_kv=data.info.n_kv_heads, group=data.group_size))
    return data


def pick_layer_head(data: AttentionData) -> tuple[int, int]:
    """Layer and head: from the URL, then the session, clamped with a message; then the two pickers."""
    layer, msg_layer = resolve_index("layer", data.n_layers, st.session_state, st.query_params)
    head, msg_head = resolve_index("head", data.n_heads, st.session_state, st.query_params)
    for message in (msg_layer, msg_head):
        if message:
            st.warning(message)
    pick_l, pick_h = st.columns(2)
    layer = index_picker(pick_l, "layer", data.n_layers, layer)
    heads = [head_option(data, h) for h in range(data.n_heads)]  # said now, in this run's language
    head = index_picker(pick_h, "head", data.n_heads, head, fmt=heads.__getitem__)
    return layer, head


def render_head(data: AttentionData, layer: int, head: int) -> None:
    """One head as a heatmap, next to the scores of every head of its layer."""
    left, right = st.columns([1, 1])
    left.plotly_chart(fa.head_heatmap(
        data.attentions[layer][head], data.labels,
        t("attention.one_head_title", layer=layer, head=head_option(data, head)),
        t("attention.query"), t("attention.key"), t("attention.masked"), t("attention.hover"),
    ), width="stretch")
    right.markdown(f"**{t('attention.scores_title', layer=layer)}**")
    right.dataframe(scores_table(data, layer), hide_index=True, width="stretch", column_config=score_columns())
    right.caption(t("attention.scores_help"))


def render_summary(data: AttentionData, layer: int, head: int) -> None:
    """Every layer x head at a glance, coloured by one score."""
    st.subheader(t("attention.summary_header", layers=data.n_layers, heads=data.n_heads))
    metrics = ["prev", "first", "self", "norm_entropy"]
    metric = persisted(st.radio, t("attention.metric_pick"), "attention.metric", metrics[0], options=metrics,
                       horizontal=True, format_func={m: t(f"attention.metric_{m}") for m in metrics}.get)
    shorts = [[t(f"attention.short_{k}") for k in row] for row in data.grid.kinds]
    st.plotly_chart(fa.summary_heatmap(
        data.grid.metric(metric), shorts, t("attention.summary_title", metric=t(f"attention.metric_{metric}")),
        t(f"attention.metric_{metric}"), t("attention.layer_title"), t("attention.head_title"), (layer, head),
    ), width="stretch")
    st.caption(t("attention.kinds_caption", summary=kind_summary(data)))


def render_grid(data: AttentionData, layer: int, head: int) -> range:
    """Small multiples of the layers around ``layer``; returns the layers drawn."""
    window = layer_window(data.n_layers, data.n_heads, window_start(layer, data.n_heads), MAX_PANELS)
    st.subheader(t("attention.grid_header", first=window.start, last=window.stop - 1))
    st.caption(t("attention.grid_help"))
    panels = grid_panels(data.attentions, window)
    st.plotly_chart(fa.grid_figure(
        panels, data.n_heads, t("attention.grid_title", n=len(panels), first=window.start, last=window.stop - 1),
        (layer, head), t("attention.grid_layer"), t("attention.grid_head"), t("attention.grid_hover"),
    ), width="stretch")
    return window


def render_bertviz(data: AttentionData, model_key: str, layer: int, window: range) -> None:
    """bertviz's head and model views, offline, in an iframe."""
    st.subheader(t("attention.bertviz_header"))
    st.caption(t("attention.bertviz_help"))
    view_col, layers_col = st.columns([1, 2])
    view = persisted(view_col.radio, t("attention.bv_view"), "attention.bv_view", "head", options=["head", "model"],
                     horizontal=True, format_func={v: t(f"attention.bv_{v}") for v in ("head", "model")}.get)
    picked = layers_col.multiselect(t("attention.bv_layers", n=MAX_BERTVIZ_LAYERS), list(range(data.n_layers)),
                                    default=list(window)[:MAX_BERTVIZ_LAYERS])
    layers, capped = bertviz_layers(picked, data.n_layers, layer)
    if capped:
        st.info(capped)
    html, height = bertviz_frame(data, model_key, view, layers, layer)
    if html is None:
        st.warning(t("attention.bertviz_missing"))
    else:
        st.iframe(html, height=height)
        st.caption(t("attention.bv_size", kb=len(html.encode()) // 1024))
