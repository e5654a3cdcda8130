"""Helpers of the Attention page: one cached analysis, index resolution, bertviz.

The page stays a thin view: it calls :func:`analyse` (tokenise, fit the
context, run :func:`gpt_core.trace.run_with_cache`, score every head) and
:func:`resolve_index` (layer/head from the URL, the session or a default,
clamped with a readable message).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from gpt_core.attention import HeadGrid, analyse_attention, clamp_index, kv_group
from gpt_core.trace import ModelInfo, describe

from . import bertviz_offline
from .i18n import t
from .textinput import fit_context
from .tokens_view import visible

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
    ids, notice = fit_ids(ids, describe(lm.model).context_length)
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
    return bertviz_offline.bertviz_html([torch.from_numpy(a) for a in _attentions], list(tokens), view,
                                        list(layers), initial_layer=initial_layer)


def bertviz_frame(data: AttentionData, model_key: str, view: str, layers: list[int],
                  initial_layer: int = 0) -> tuple[str | None, int]:
    """(HTML or None when the offline JavaScript is missing, iframe height in px)."""
    if not bertviz_offline.vendor_available():
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
    widget = f"_w.attention.{name}"

    def sync():
        st.session_state[f"attention.{name}"] = st.session_state[widget]
        st.query_params[name] = str(st.session_state[widget])

    st.session_state[widget] = value
    chosen = container.selectbox(t(f"attention.{name}_pick"), list(range(n)), key=widget,
                                 format_func=fmt, on_change=sync)
    st.query_params[name] = str(chosen)
    return chosen
