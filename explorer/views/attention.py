"""The Attention page: one cached analysis, layer/head choice (URL + session), figures, bertviz.

The page stays a thin view: it calls :func:`analyse` (tokenise as the model
reads the text, Gemma's <bos> first; fit the context; run the model through
gpt_core's backend; score every head), :func:`pick_layer_head` (layer/head
from the URL, the session or a default, clamped with a readable message) and
the ``render_*`` sections. Sliding-window layers (Gemma 3) are named as such
everywhere and their window is drawn on the heatmap.
"""
from __future__ import annotations

import base64

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from gpt_core.attention import (HeadGrid, analyse_attention, clamp_index, grid_panels, kv_group, layer_window,
                                layer_windows, window_applies)
from gpt_core.backend import ModelInfo, backend_of

from explorer.compute import compute_slot
from explorer.figures import attention as fa
from explorer.figures.bars import localize
from explorer.figures import bertviz_html as bertviz
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import attempt, decimal, number, plain
from explorer.ui.state import persisted, set_value
from explorer.ui.text_input import fit_context
from explorer.ui.token_chips import visible

MAX_TOKENS = 96          # the attention page draws at most this many tokens (T x T per head)
MAX_PANELS = 48          # small multiples drawn at once (layers x heads)
MAX_BERTVIZ_LAYERS = 6   # layers embedded in the bertviz views at once
MAX_FRAME_PX = 6000      # taller bertviz views scroll inside their frame


@dataclass
class AttentionData:
    ids: list[int]
    tokens: list[str]               # visible text of each token (bertviz, tables)
    labels: list[str]               # unique axis labels "i·text"
    attentions: list[np.ndarray]    # n_layers x (n_heads, T, T) float32
    grid: HeadGrid
    info: ModelInfo
    notice: str | None              # why the text was cut, if it was
    windows: list[int | None]       # per layer: None (global attention) or the sliding window
    n_prefix: int = 0               # tokens the model needs before the text (Gemma's <bos>), at position 0

    @property
    def n_layers(self) -> int:
        return len(self.attentions)

    @property
    def n_heads(self) -> int:
        return self.attentions[0].shape[0]

    @property
    def group_size(self) -> int:
        return self.info.n_heads // max(1, self.info.n_kv_heads)

    @property
    def sliding(self) -> bool:
        """Does the model have sliding-window layers?"""
        return any(self.windows)

    def bos_share(self) -> float:
        """Mean weight every head puts on the first token (the <bos> when the model has one)."""
        return float(np.nanmean(self.grid.first)) if self.grid.first.size else float("nan")


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


def fit_ids(ids: list[int], context_length: int, n_prefix: int = 0) -> tuple[list[int], str | None]:
    """The model's window first (common message), then the page's own drawing limit.

    The last tokens are kept; the model's prefix (Gemma's <bos>) stays in front."""
    prefix = ids[:n_prefix]
    kept, notice = fit_context(ids, context_length)
    if len(kept) > MAX_TOKENS:
        extra = t("attention.too_many", total=len(kept), limit=MAX_TOKENS)
        notice = f"{notice} {extra}" if notice else extra
        kept = kept[-MAX_TOKENS:]
    if notice and prefix:
        kept = prefix + kept[len(prefix):]
    return kept, notice


@st.cache_data(max_entries=6, show_spinner=False)
def _cached_compute(_model, model_key: str, ids: tuple[int, ...]):
    with compute_slot(), torch.inference_mode():
        return analyse_attention(_model, list(ids))


def analyse(lm, text: str) -> AttentionData:
    """Tokens as the model reads them (its prefix first), the patterns, scores and windows."""
    n_prefix = len(lm.tokenizer.model_prefix)
    ids = [p.id for p in lm.tokenizer.tokenize_for_model(text)]
    ids, notice = fit_ids(ids, backend_of(lm.model).context_length, n_prefix)
    attentions, grid, info = _cached_compute(lm.model, lm.source.key, tuple(ids))
    tokens = token_texts(lm.tokenizer, ids)
    return AttentionData(ids, tokens, axis_labels(tokens), attentions, grid, info, notice,
                         layer_windows(info, len(attentions)), n_prefix)


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
                    value=plain(str(raw)[:40]), source=t(f"attention.from_{source}"), max=n - 1, used=index)
    session[key] = index
    return index, message


def head_option(data: AttentionData, head: int) -> str:
    """Label of a head in the picker, with its K/V head under grouped-query attention."""
    if data.info.n_kv_heads == 1 and data.info.n_heads > 1:
        return t("attention.head_mqa", h=head)
    if data.info.n_kv_heads < data.info.n_heads:
        return t("attention.head_gqa", h=head, kv=kv_group(head, data.info.n_heads, data.info.n_kv_heads))
    return t("attention.head_n", h=head)


def layer_option(data: AttentionData, layer: int) -> str:
    """Label of a layer: its number, and on a model with sliding windows, its kind."""
    if not data.sliding:
        return str(layer)
    window = data.windows[layer]
    return t("attention.layer_sliding", l=layer, w=number(window, current_lang())) if window else \
        t("attention.layer_global", l=layer)


def layer_short(data: AttentionData, layer: int, template: str) -> str:
    """Compact label of a layer for figure axes ("C5 · glob."), with its kind only when the model slides."""
    base = template.format(l=layer)
    if not data.sliding:
        return base
    return t("attention.short_layer", base=base, kind=t("attention.short_sliding" if data.windows[layer]
                                                          else "attention.short_global"))


def window_start(layer: int, n_heads: int) -> int:
    per_view = max(1, MAX_PANELS // max(1, n_heads))
    return (layer // per_view) * per_view


def scores_table(data: AttentionData, layer: int) -> pd.DataFrame:
    g = data.grid
    heads = range(data.n_heads)

    def two(values) -> list[str]:  # two decimals, written the UI's way ("0,08" in French)
        return [decimal(float(v), 2) for v in values]

    return pd.DataFrame({
        t("attention.col_head"): [head_option(data, h) for h in heads],
        t("attention.col_kind"): [t(f"attention.kind_{g.kinds[layer][h]}") for h in heads],
        t("attention.col_prev"): two(g.prev[layer]), t("attention.col_first"): two(g.first[layer]),
        t("attention.col_self"): two(g.self_[layer]), t("attention.col_entropy"): two(g.entropy[layer]),
        t("attention.col_norm_entropy"): two(g.norm_entropy[layer]),
    })


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
                    _attentions, tokens: tuple[str, ...], initial_layer: int, labels: tuple) -> str:
    return bertviz.bertviz_html([torch.from_numpy(a) for a in _attentions], list(tokens), view,
                                list(layers), initial_layer=initial_layer, labels=dict(labels))


def bertviz_frame(data: AttentionData, model_key: str, view: str, layers: list[int],
                  initial_layer: int = 0) -> tuple[str | None, int]:
    """(HTML or None when the offline JavaScript is missing, iframe height in px)."""
    if not bertviz.vendor_available():
        return None, 0
    html = _cached_bertviz(model_key, tuple(data.ids), view, tuple(layers), data.attentions, tuple(data.tokens),
                           initial_layer, tuple(sorted(bertviz_labels().items())))
    T = len(data.ids)
    if view == "head":
        height = int(90 + 22.5 * T)
    else:  # bertviz's model view: one row of thumbnails per layer, T boxes of 84 / n_heads px each
        thumb = T * 84 / max(1, data.n_heads) + 10
        height = int(max(38 + len(layers) * thumb, 55 + 18 * T) + 30)
    return html, min(height, MAX_FRAME_PX)


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
    explain_model(data)
    return data


def explain_model(data: AttentionData) -> None:
    """What is special about this model's attention: shared keys/values, sliding windows, the <bos>."""
    lines = []
    if data.info.n_kv_heads == 1 and data.info.n_heads > 1:
        lines.append(t("attention.mqa", n_heads=data.info.n_heads))
    elif data.info.n_kv_heads < data.info.n_heads:
        lines.append(t("attention.gqa", n_heads=data.info.n_heads, n_kv=data.info.n_kv_heads,
                       group=data.group_size))
    if data.sliding:
        sliding = [w for w in data.windows if w]
        glob = [str(l) for l, w in enumerate(data.windows) if not w]
        window = number(max(sliding), current_lang())
        lines.append(t("attention.windows", n_sliding=len(sliding), w=window, n_global=len(glob),
                       layers=", ".join(glob)))
        T = len(data.ids)
        lines.append(t("attention.window_hides", T=T, w=window) if any(window_applies(T, w) for w in sliding)
                     else t("attention.window_covers", T=T, w=window))
    if lines:
        st.info("\n\n".join(lines))
    if data.n_prefix:
        share = data.bos_share()
        st.caption(t("attention.bos_sink", share="?" if math.isnan(share) else number(round(100 * share),
                                                                                         current_lang())))


def pick_layer_head(data: AttentionData) -> tuple[int, int]:
    """Layer and head: from the URL, then the session, clamped with a message; then the two pickers."""
    layer, msg_layer = resolve_index("layer", data.n_layers, st.session_state, st.query_params)
    head, msg_head = resolve_index("head", data.n_heads, st.session_state, st.query_params)
    for message in (msg_layer, msg_head):
        if message:
            st.warning(message)
    pick_l, pick_h = st.columns(2)
    layers = [layer_option(data, l) for l in range(data.n_layers)]  # said now, in this run's language
    layer = index_picker(pick_l, "layer", data.n_layers, layer, fmt=layers.__getitem__)
    heads = [head_option(data, h) for h in range(data.n_heads)]
    head = index_picker(pick_h, "head", data.n_heads, head, fmt=heads.__getitem__)
    return layer, head


def head_view_data(data: AttentionData, layer: int, head: int,
                   hide_bos: bool) -> tuple[np.ndarray, list[str], float]:
    """The pattern, axis labels and colour-scale top of the heatmap (without the <bos> row and column
    when asked: the rest is then rescaled to its own maximum)."""
    matrix, labels = data.attentions[layer][head], data.labels
    if not (hide_bos and data.n_prefix and len(labels) > data.n_prefix):
        return matrix, labels, 1.0
    cut = data.n_prefix
    matrix = matrix[cut:, cut:]
    top = float(np.nanmax(np.tril(matrix))) if matrix.size else 1.0
    return matrix, labels[cut:], max(top, 1e-3)


def head_subtitle(data: AttentionData, layer: int, head: int, zmax: float | None) -> str:
    """The heatmap's second line: the layer's kind, the head's K/V sharing, the hidden <bos>."""
    parts = []
    if data.sliding:
        window = data.windows[layer]
        parts.append(t("attention.sub_sliding", w=number(window, current_lang())) if window
                     else t("attention.sub_global"))
    if data.info.n_kv_heads == 1 and data.info.n_heads > 1:
        parts.append(t("attention.sub_kv_shared", n=data.info.n_heads))
    elif data.info.n_kv_heads < data.info.n_heads:
        parts.append(t("attention.sub_kv", kv=kv_group(head, data.info.n_heads, data.info.n_kv_heads)))
    if zmax is not None:
        parts.append(t("attention.rescaled", top=decimal(zmax, 2)))
    return " · ".join(parts)


def render_head(data: AttentionData, layer: int, head: int) -> None:
    """One head as a heatmap (its sliding window drawn), next to the scores of every head of its layer."""
    left, right = st.columns([1, 1])
    hide = data.n_prefix > 0 and persisted(left.toggle, t("attention.hide_bos"), "attention.hide_bos", False,
                                           help=t("attention.hide_bos_help"))
    matrix, labels, zmax = head_view_data(data, layer, head, bool(hide))
    window = data.windows[layer]
    left.plotly_chart(localize(fa.head_heatmap(
        matrix, labels, t("attention.one_head_title", layer=layer, head=head),
        t("attention.query"), t("attention.key"), t("attention.masked"), t("attention.hover"),
        window=window, window_name=t("attention.outside_window", w=number(window or 0, current_lang())),
        zmax=zmax, subtitle=head_subtitle(data, layer, head, zmax if hide else None),
    ), current_lang()), width="stretch")
    if data.sliding:
        T = len(data.ids)
        w = number(window or 0, current_lang())
        left.caption(t("attention.global_caption") if not window else
                     t("attention.window_caption", w=w) if window_applies(T, window) else
                     t("attention.window_covers_caption", w=w, T=T))
    right.markdown(f"**{t('attention.scores_title', layer=layer)}**")
    right.dataframe(scores_table(data, layer), hide_index=True, width="stretch")
    right.caption(t("attention.scores_help"))


def render_summary(data: AttentionData, layer: int, head: int) -> None:
    """Every layer x head at a glance, coloured by one score."""
    st.subheader(t("attention.summary_header", layers=data.n_layers, heads=data.n_heads))
    metrics = ["prev", "first", "self", "norm_entropy"]
    metric = persisted(st.radio, t("attention.metric_pick"), "attention.metric", metrics[0], options=metrics,
                       horizontal=True, format_func={m: t(f"attention.metric_{m}") for m in metrics}.get)
    shorts = [[t(f"attention.short_{k}") for k in row] for row in data.grid.kinds]
    ticks = [layer_short(data, l, "{l}") for l in range(data.n_layers)] if data.sliding else None
    st.plotly_chart(localize(fa.summary_heatmap(
        data.grid.metric(metric), shorts, t("attention.summary_title", metric=t(f"attention.metric_{metric}")),
        t(f"attention.metric_{metric}"), t("attention.layer_title"), t("attention.head_title"), (layer, head),
        layer_ticks=ticks,
    ), current_lang()), width="stretch")
    caption = t("attention.kinds_caption", summary=kind_summary(data))
    if data.n_prefix or data.sliding:
        caption += "."
    if data.n_prefix:
        caption += " " + t("attention.first_is_bos")
    if data.sliding:
        caption += " " + t("attention.short_layers_help")
    st.caption(caption)


def render_grid(data: AttentionData, layer: int, head: int) -> range:
    """Small multiples of the layers around ``layer``; returns the layers drawn."""
    window = layer_window(data.n_layers, data.n_heads, window_start(layer, data.n_heads), MAX_PANELS)
    st.subheader(t("attention.grid_header", first=window.start, last=window.stop - 1))
    st.caption(t("attention.grid_help"))
    panels = grid_panels(data.attentions, window)
    template = t("attention.grid_layer")
    st.plotly_chart(localize(fa.grid_figure(
        panels, data.n_heads, t("attention.grid_title", n=len(panels), first=window.start, last=window.stop - 1),
        (layer, head), template, t("attention.grid_head"), t("attention.grid_hover"),
        layer_names={l: layer_short(data, l, template) for l in window},
    ), current_lang()), width="stretch")
    return window


def bertviz_labels() -> dict[str, str]:
    """bertviz's own words in the UI's language."""
    return {key: t(f"attention.bvl_{key}") for key in bertviz.LABELS}


def render_bertviz(data: AttentionData, model_key: str, layer: int, window: range) -> None:
    """bertviz's head and model views, offline, in an iframe."""
    st.subheader(t("attention.bertviz_header"))
    st.caption(t("attention.bertviz_help"))
    view_col, layers_col = st.columns([1, 2])
    view = persisted(view_col.radio, t("attention.bv_view"), "attention.bv_view", "head", options=["head", "model"],
                     horizontal=True, format_func={v: t(f"attention.bv_{v}") for v in ("head", "model")}.get)
    picked = layers_col.multiselect(t("attention.bv_layers", n=MAX_BERTVIZ_LAYERS), list(range(data.n_layers)),
                                    default=list(window)[:MAX_BERTVIZ_LAYERS],
                                    format_func=lambda l: layer_short(data, l, "{l}"))
    layers, capped = bertviz_layers(picked, data.n_layers, layer)
    if capped:
        st.info(capped)
    html, height = bertviz_frame(data, model_key, view, layers, layer)
    if html is None:
        st.warning(t("attention.bertviz_missing"))
    else:
        # a data: URL gives the frame an opaque origin: its scripts cannot reach the app's page or cookies
        st.iframe("data:text/html;base64," + base64.b64encode(html.encode("utf-8")).decode("ascii"), height=height)
        st.caption(t("attention.bv_size", kb=len(html.encode()) // 1024))
