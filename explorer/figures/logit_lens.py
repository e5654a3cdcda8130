"""Figures of the Logit lens page (pure: data in, plotly Figure out).

Token texts are HTML-escaped before plotly, which would read "<b>" in a token as markup.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gpt_core.logit_lens import LogitLens


def _esc(text: str) -> str:
    return html.escape(str(text), quote=False)


def lens_heatmap(lens: LogitLens, cell_text, hover, rows: list[str], columns: list[str], title: str,
                 x_title: str, hover_tpl: str) -> go.Figure:
    """ecco-style table: rows = layers (output at the bottom), columns = positions,
    text = top-1 token, colour = its probability; ✓ marks the model's final choice.

    ``cell_text`` and ``columns`` are plain text (escaped here); ``hover`` is plotly text the caller escaped."""
    P = len(columns)
    marks = [[("✓ " if lens.top_ids[r, p, 0] == lens.target_ids[p] else "") + _esc(cell_text[r][p])
              for p in range(P)] for r in range(lens.n_rows)]
    fig = go.Figure(go.Heatmap(
        z=lens.top_probs[:, :, 0], x=list(range(P)), y=list(range(lens.n_rows)), zmin=0, zmax=1,
        colorscale="YlOrRd", text=marks, texttemplate="%{text}", textfont=dict(size=11),
        customdata=np.array(hover, dtype=object), hovertemplate=hover_tpl + "<extra></extra>",
        colorbar=dict(title="p", thickness=14), xgap=2, ygap=2,
    ))
    fig.update_layout(
        title=title, height=int(140 + 26 * lens.n_rows), margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(title=x_title, tickmode="array", tickvals=list(range(P)), ticktext=[_esc(c) for c in columns],
                   tickangle=-30 if P > 8 else 0),
        yaxis=dict(tickmode="array", tickvals=list(range(lens.n_rows)), ticktext=rows, autorange="reversed"),
        plot_bgcolor="white",
    )
    return fig


def rank_figure(lens: LogitLens, column: int, rows: list[str], title: str, rank_title: str,
                prob_title: str, percent: str = "%") -> go.Figure:
    """Rank (log scale) and probability (in %, ``percent`` the suffix: "\u202f%" in French) of the final
    prediction, layer after layer. Numbers follow the layout's separators (``explorer.figures.bars.localize``)."""
    rank_title, prob_title = _esc(rank_title), _esc(prob_title)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[rank_title, prob_title], horizontal_spacing=0.08)
    x = list(range(lens.n_rows))
    fig.add_trace(go.Scatter(x=x, y=lens.target_rank[:, column], mode="lines+markers", name=rank_title,
                             line=dict(color="#1f77b4")), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=100 * lens.target_prob[:, column], mode="lines+markers", name=prob_title,
                             line=dict(color="#d62728")), row=1, col=2)
    fig.update_yaxes(type="log", autorange="reversed", tickformat=",d", row=1, col=1)
    fig.update_yaxes(range=[0, 100], ticksuffix=percent, row=1, col=2)
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=rows, tickangle=-60, tickfont=dict(size=9))
    fig.update_layout(title=title, height=380, showlegend=False, margin=dict(l=10, r=10, t=70, b=10))
    return fig
