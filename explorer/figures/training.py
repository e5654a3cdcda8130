"""Figures of the Pretrain and Fine-tune pages: pure functions, data in, plotly Figure out."""
from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go

from explorer.figures.bars import localize, percent

TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#d62728"
BEFORE_COLOUR, AFTER_COLOUR = "#9e9e9e", "#2ca02c"


def _finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[list, list]:
    """Drop points whose value is NaN or infinite (plotly would break the line silently)."""
    keep = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float)) and math.isfinite(y)]
    return [x for x, _ in keep], [y for _, y in keep]


def loss_curve(train_steps: Sequence[int], train_loss: Sequence[float], val_steps: Sequence[int],
               val_loss: Sequence[float], names: Sequence[str] = ("train", "validation"),
               title: str = "", x_title: str = "", y_title: str = "", total_steps: int | None = None,
               lang: str = "en") -> go.Figure:
    """Training loss (a line, one point per optimizer step) and validation loss (markers).

    ``total_steps`` fixes the x axis to the whole run, so the curve grows
    from left to right while the job runs.
    """
    tx, ty = _finite(train_steps, train_loss)
    vx, vy = _finite(val_steps, val_loss)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=tx, y=ty, mode="lines", name=names[0], line=dict(color=TRAIN_COLOUR, width=2),
                             hovertemplate="%{x} · %{y:.3f}<extra>" + names[0] + "</extra>"))
    fig.add_trace(go.Scatter(x=vx, y=vy, mode="lines+markers", name=names[1],
                             line=dict(color=VAL_COLOUR, width=2, dash="dot"), marker=dict(size=8),
                             hovertemplate="%{x} · %{y:.3f}<extra>" + names[1] + "</extra>"))
    xaxis = dict(title=x_title, rangemode="tozero", tickformat="d")  # steps are whole numbers
    if total_steps:
        xaxis["range"] = [0, max(int(total_steps), 1) * 1.02]
    yaxis = dict(title=y_title)
    values = list(ty) + list(vy)
    if values:  # a margin above the first (highest) point and below the last
        low, high = min(values), max(values)
        pad = 0.06 * (high - low) or 0.1
        yaxis["range"] = [low - pad, high + pad]
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=360, margin=dict(l=10, r=10, t=50 if title else 10, b=40),
        xaxis=xaxis, yaxis=yaxis, hovermode="x unified",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    return localize(fig, lang)


def confusion_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "",
                      x_title: str = "", y_title: str = "", colour_title: str = "", lang: str = "en") -> go.Figure:
    """Rows: true class, columns: predicted class; each cell shows its count."""
    z = [list(map(int, row)) for row in matrix]
    labels = [str(x) for x in labels]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, colorscale="Blues", zmin=0, text=z, texttemplate="%{text}",
        textfont=dict(size=14), hovertemplate="%{y} → %{x}: %{z}<extra></extra>",
        colorbar=dict(title=dict(text=colour_title), thickness=14),
    ))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=max(320, 60 * len(labels) + 140),
        margin=dict(l=10, r=10, t=50 if title else 10, b=40),
        xaxis=dict(title=x_title, type="category", side="bottom"),
        yaxis=dict(title=y_title, type="category", autorange="reversed"),
    )
    return localize(fig, lang)


def compare_bars(labels: Sequence[str], before: Sequence[float], after: Sequence[float],
                 names: Sequence[str] = ("before", "after"), title: str = "", lang: str = "en") -> go.Figure:
    """The same candidates (tokens or classes) with two probabilities each: grouped horizontal bars."""
    labels = [str(x) for x in labels]
    fig = go.Figure()
    for name, values, colour in ((names[0], before, BEFORE_COLOUR), (names[1], after, AFTER_COLOUR)):
        fig.add_trace(go.Bar(
            x=list(values), y=labels, orientation="h", name=name, marker_color=colour,
            text=[percent(v, 1, lang) if v >= 5e-4 else _tiny(v, lang) for v in values], textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra>" + name + "</extra>",
        ))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), barmode="group", height=max(260, 46 * len(labels) + 90),
        margin=dict(l=10, r=50, t=50 if title else 10, b=30),
        yaxis=dict(autorange="reversed", type="category"),
        xaxis=dict(tickformat=".0%" if max(list(before) + list(after) + [0]) >= 0.1 else ".1%", rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    return localize(fig, lang)


def _tiny(v: float, lang: str) -> str:
    """A probability too small for one decimal of a percent: '< 0,1 %' (or '0 %'), on the axis's own scale."""
    return percent(0.0, 0, lang) if v <= 0 else "< " + percent(0.001, 1, lang)
