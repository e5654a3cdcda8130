"""Figures of the embeddings page (pure: data in, plotly Figure out)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.figures.bars import fixed, localize, percent
from explorer.ui.token_chips import visible

WORD_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"]


def token_axis_labels(pieces: list[str]) -> list[str]:
    """Unique, readable row labels: position, then the token with its spaces shown as ␣."""
    return [f"{i}: {visible(p).replace(' ', '␣')}" for i, p in enumerate(pieces)]


def _limit(m: np.ndarray) -> float:
    """A colour range that ignores the few outlier dimensions (99th percentile of |x|)."""
    lim = float(np.percentile(np.abs(m), 99)) if m.size else 1.0
    return lim if lim > 0 else 1.0


def matrix_heatmap(m: np.ndarray, y_labels: list[str] | None, title: str, x_title: str, y_title: str,
                   colorbar: str, lang: str = "en") -> go.Figure:
    """Rows x d_model heatmap (diverging colours centred on 0).

    With ``y_labels`` (tokens) every row is labelled and the figure grows with the rows;
    without (positions 0, 1, 2…) the rows are numbered and the height is fixed.
    """
    lim = _limit(m)
    labelled = y_labels is not None
    if not labelled:
        y_labels = list(range(m.shape[0]))
    fig = go.Figure(go.Heatmap(
        z=np.round(m, 4), x=list(range(m.shape[1])), y=y_labels, colorscale="RdBu_r", zmid=0,
        zmin=-lim, zmax=lim, colorbar=dict(title=dict(text=colorbar, side="right")),
        hovertemplate="%{y} · dim %{x}: %{z:.4f}<extra></extra>",
    ))
    height = min(900, max(260, 22 * len(y_labels) + 110)) if labelled else 520
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=50, b=40), xaxis=dict(title=x_title),
        yaxis=dict(title=y_title, autorange="reversed", type="category" if labelled else "linear",
                   tickfont=dict(size=13) if labelled else None),
    )
    return localize(fig, lang)


def cosine_heatmap(c: np.ndarray, title: str, axis_title: str, colorbar: str, lang: str = "en") -> go.Figure:
    """Cosine similarity between positions (P x P), from -1 to 1."""
    fig = go.Figure(go.Heatmap(
        z=np.round(c, 4), colorscale="RdBu_r", zmin=-1, zmax=1, zmid=0,
        colorbar=dict(title=dict(text=colorbar, side="right")),
        hovertemplate="%{y} ↔ %{x}: %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, height=520, margin=dict(l=10, r=10, t=50, b=40),
                      xaxis=dict(title=axis_title), yaxis=dict(title=axis_title, autorange="reversed"))
    return localize(fig, lang)


def rope_turns_heatmap(turns: np.ndarray, title: str, x_title: str, y_title: str, colorbar: str,
                       lang: str = "en") -> go.Figure:
    """cos(p * theta_i): positions (rows) x rotation pairs (columns)."""
    fig = go.Figure(go.Heatmap(
        z=np.round(turns, 4), colorscale="RdBu_r", zmin=-1, zmax=1, zmid=0,
        colorbar=dict(title=dict(text=colorbar, side="right")),
        hovertemplate="position %{y} · i = %{x}: %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, height=520, margin=dict(l=10, r=10, t=50, b=40),
                      xaxis=dict(title=x_title), yaxis=dict(title=y_title, autorange="reversed"))
    return localize(fig, lang)


def projection_figure(projection, title: str, words_name: str, neighbours_name: str,
                      axis_name: str, lang: str = "en") -> go.Figure:
    """PCA scatter: one big labelled point per chosen word, small points for neighbours.

    The trace named ``words_name`` holds exactly the chosen words, the one named
    ``neighbours_name`` their neighbours (coloured like their word); in 2D a first trace
    draws thin lines from each neighbour to its word.
    """
    words = projection.words
    colour = {p.word: WORD_COLOURS[i % len(WORD_COLOURS)] for i, p in enumerate(words)}
    neigh = projection.neighbours
    three = projection.dims == 3
    axes = [f"{axis_name} {i + 1} ({percent(share, 0, lang)})" for i, share in enumerate(projection.explained)]

    def coords(points):
        cols = list(zip(*[p.coords for p in points])) if points else [[] for _ in range(projection.dims)]
        return dict(zip(("x", "y", "z"), cols))

    scatter = go.Scatter3d if three else go.Scatter
    word_trace = scatter(
        **coords(words), mode="markers+text", name=words_name, text=[p.label for p in words],
        textposition="top center", textfont=dict(size=15, color="#111"),
        marker=dict(size=9 if three else 15, color=[colour[p.word] for p in words], line=dict(width=1, color="#222")),
        hovertemplate="%{text}<extra></extra>",
    )
    neigh_trace = scatter(
        **coords(neigh), mode="markers+text", name=neighbours_name,
        text=[visible(p.label).replace(" ", "␣") for p in neigh], textposition="bottom center",
        textfont=dict(size=11, color="#444"),
        marker=dict(size=4 if three else 8, color=[colour[p.word] for p in neigh], opacity=0.55),
        customdata=[[p.word, p.cosine] for p in neigh],
        hovertemplate="%{text} ← %{customdata[0]} (cos %{customdata[1]:.3f})<extra></extra>",
    )
    traces = [word_trace, neigh_trace]
    if not three and neigh:  # drawn first, under the points
        anchor = {p.word: p.coords for p in words}
        xs, ys = [], []
        for p in neigh:
            xs += [anchor[p.word][0], p.coords[0], None]
            ys += [anchor[p.word][1], p.coords[1], None]
        traces.insert(0, go.Scatter(x=xs, y=ys, mode="lines", line=dict(width=0.6, color="#bbbbbb"),
                                    hoverinfo="skip", showlegend=False, name="links"))
    fig = go.Figure(traces)
    layout = dict(title=title, height=620, margin=dict(l=10, r=10, t=50, b=10),
                  legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    if three:
        layout["scene"] = dict(xaxis_title=axes[0], yaxis_title=axes[1], zaxis_title=axes[2])
    else:
        layout["xaxis"] = dict(title=axes[0], zeroline=False)
        layout["yaxis"] = dict(title=axes[1], zeroline=False)
    fig.update_layout(**layout)
    return localize(fig, lang)


def analogy_bars(labels: list[str], cosines: list[float], title: str, x_title: str, highlight: int | None = None,
                 lang: str = "en") -> go.Figure:
    """The answers of a word analogy, best on top: one bar per word, its cosine written beside it."""
    colours = ["#d62728" if i == highlight else "#1f77b4" for i in range(len(cosines))]
    fig = go.Figure(go.Bar(
        x=cosines, y=labels, orientation="h", marker_color=colours, cliponaxis=False,
        text=[fixed(c, 3, lang) for c in cosines], textposition="outside",
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    ))
    top, low = max(cosines, default=1.0), min(cosines, default=0.0)
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)), height=max(240, 26 * len(labels) + 80),
        margin=dict(l=10, r=40, t=50, b=40),
        xaxis=dict(title=x_title, range=[min(low, 0.0) * 1.15, max(top, 0.05) * 1.15]),
        yaxis=dict(autorange="reversed", type="category"),
    )
    return localize(fig, lang)
