"""Helpers of the Logit lens page: cached analysis, table data and pure figures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from gpt_core.logit_lens import LogitLens, logit_lens
from gpt_core.trace import describe, run_with_cache

from .i18n import t
from .textinput import fit_context
from .tokens_view import visible

MAX_TOKENS = 128      # longest text the lens runs on (the trace keeps every attention pattern)
MAX_COLUMNS = 24      # positions shown side by side in the table heatmap
TOP_K = 5


@dataclass
class LensData:
    lens: LogitLens
    tokens: list[str]          # visible text of every input token
    cell_text: list[list[str]]  # (rows, P) top-1 token text
    hover: list[list[str]]     # (rows, P) top-k with probabilities
    n_tokens: int
    notice: str | None


def shown(text: str) -> str:
    """A token as a cell shows it: whitespace-only tokens become ␣ so the cell is not blank."""
    text = visible(text)
    if not text:
        return "∅"
    return text.replace(" ", "␣") if not text.strip() else text


def short(text: str, width: int = 10) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def fit_ids(ids: list[int], context_length: int) -> tuple[list[int], str | None]:
    ids, notice = fit_context(ids, context_length)
    if len(ids) > MAX_TOKENS:
        extra = t("logit_lens.too_many", total=len(ids), limit=MAX_TOKENS)
        notice = f"{notice} {extra}" if notice else extra
        ids = ids[-MAX_TOKENS:]
    return ids, notice


@torch.inference_mode()
def compute(model, ids: list[int], positions: list[int], k: int) -> LogitLens:
    _, trace = run_with_cache(model, ids)
    return logit_lens(model, trace, k=k, positions=positions)


@st.cache_data(max_entries=8, show_spinner=False)
def _cached(_model, model_key: str, ids: tuple[int, ...], positions: tuple[int, ...], k: int) -> LogitLens:
    return compute(_model, list(ids), list(positions), k)


def tokenize(lm, text: str) -> tuple[list[int], str | None]:
    ids = [p.id for p in lm.tokenizer.tokenize(text)]
    return fit_ids(ids, describe(lm.model).context_length)


def analyse(lm, ids: list[int], n_columns: int, notice: str | None = None, k: int = TOP_K) -> LensData:
    """Lens over the last ``n_columns`` positions of ``ids``."""
    T = len(ids)
    n_columns = max(1, min(int(n_columns), T, MAX_COLUMNS))
    positions = list(range(T - n_columns, T))
    lens = _cached(lm.model, lm.source.key, tuple(ids), tuple(positions), k)
    tok = lm.tokenizer
    tokens = [shown(tok.decode([i])) for i in ids]
    decoded = {int(i): shown(tok.decode([int(i)])) for i in np.unique(lens.top_ids)}
    cell_text, hover = [], []
    for r in range(lens.n_rows):
        cell_text.append([short(decoded[int(lens.top_ids[r, p, 0])]) for p in range(len(positions))])
        hover.append(["<br>".join(f"{decoded[int(i)]!r} {pr:.1%}" for i, pr in
                                  zip(lens.top_ids[r, p], lens.top_probs[r, p])) for p in range(len(positions))])
    return LensData(lens, tokens, cell_text, hover, T, notice)


def is_rotary(lm) -> bool:
    return describe(lm.model).position_kind == "rotary"


def row_names(lens: LogitLens) -> list[str]:
    return [t("logit_lens.row_embed") if n == "embed" else t("logit_lens.row_block", n=n) for n in lens.layer_names]


def column_labels(data: LensData) -> list[str]:
    return [f"{p}·{short(data.tokens[p])}" for p in data.lens.positions]


def tracked_table(data: LensData, column: int, tokenizer) -> pd.DataFrame:
    lens = data.lens
    return pd.DataFrame({
        t("logit_lens.col_layer"): row_names(lens),
        t("logit_lens.col_top1"): [data.cell_text[r][column] for r in range(lens.n_rows)],
        t("logit_lens.col_top1_prob"): [f"{lens.top_probs[r, column, 0]:.1%}" for r in range(lens.n_rows)],
        t("logit_lens.col_rank"): lens.target_rank[:, column],
        t("logit_lens.col_prob"): [f"{p:.2%}" for p in lens.target_prob[:, column]],
    })


# ---------------------------------------------------------------- pure figures
def lens_heatmap(lens: LogitLens, cell_text, hover, rows: list[str], columns: list[str], title: str,
                 x_title: str, hover_tpl: str) -> go.Figure:
    """ecco-style table: rows = layers (output at the bottom), columns = positions,
    text = top-1 token, colour = its probability; ✓ marks the model's final choice."""
    P = len(columns)
    marks = [[("✓ " if lens.top_ids[r, p, 0] == lens.target_ids[p] else "") + cell_text[r][p] for p in range(P)]
             for r in range(lens.n_rows)]
    fig = go.Figure(go.Heatmap(
        z=lens.top_probs[:, :, 0], x=list(range(P)), y=list(range(lens.n_rows)), zmin=0, zmax=1,
        colorscale="YlOrRd", text=marks, texttemplate="%{text}", textfont=dict(size=11),
        customdata=np.array(hover, dtype=object), hovertemplate=hover_tpl + "<extra></extra>",
        colorbar=dict(title="p", thickness=14), xgap=2, ygap=2,
    ))
    fig.update_layout(
        title=title, height=int(140 + 26 * lens.n_rows), margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(title=x_title, tickmode="array", tickvals=list(range(P)), ticktext=columns,
                   tickangle=-30 if P > 8 else 0),
        yaxis=dict(tickmode="array", tickvals=list(range(lens.n_rows)), ticktext=rows, autorange="reversed"),
        plot_bgcolor="white",
    )
    return fig


def rank_figure(lens: LogitLens, column: int, rows: list[str], title: str, rank_title: str,
                prob_title: str) -> go.Figure:
    """Rank (log scale) and probability of the final prediction, layer after layer."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[rank_title, prob_title], horizontal_spacing=0.08)
    x = list(range(lens.n_rows))
    fig.add_trace(go.Scatter(x=x, y=lens.target_rank[:, column], mode="lines+markers", name=rank_title,
                             line=dict(color="#1f77b4")), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=lens.target_prob[:, column], mode="lines+markers", name=prob_title,
                             line=dict(color="#d62728")), row=1, col=2)
    fig.update_yaxes(type="log", autorange="reversed", row=1, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=rows, tickangle=-60, tickfont=dict(size=9))
    fig.update_layout(title=title, height=380, showlegend=False, margin=dict(l=10, r=10, t=70, b=10))
    return fig
