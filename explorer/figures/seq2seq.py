"""Figures of the Seq2seq page (data in, plotly Figure out): the decoder's cross-attention over the source."""
from __future__ import annotations

import html
from typing import Sequence

import plotly.graph_objects as go

from explorer.figures.bars import localize


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Plotly merges equal category labels: number each one by its position ("3 · le"). Plotly reads tags in
    text (``<s>`` would strike the label through), so ``<``, ``>`` and ``&`` are written as entities."""
    return [f"{i} · {html.escape(text, quote=False)}" for i, text in enumerate(labels)]


def cross_attention_heatmap(matrix: Sequence[Sequence[float]], source: Sequence[str], steps: Sequence[str],
                            title: str = "", x_title: str = "", y_title: str = "", hover: str = "",
                            lang: str = "en") -> go.Figure:
    """Rows: decoder steps (the token chosen at that step), columns: source tokens; ``matrix`` rows sum to 1
    and are drawn as percentages (each row adds up to 100).

    ``hover`` is a template with ``%{y}``, ``%{x}`` and ``%{z}`` (the weight in percent).
    """
    x, y = unique_labels(source), unique_labels(steps)
    suffix = "\u202f%" if lang == "fr" else "%"  # French puts a (narrow) space before the percent sign
    fig = go.Figure(go.Heatmap(
        z=[[100 * float(v) for v in row] for row in matrix], x=x, y=y, zmin=0, colorscale="Purples",
        hovertemplate=(hover or "%{y} → %{x}: %{z:.1f}" + suffix) + "<extra></extra>",
        colorbar=dict(thickness=14, tickformat=".1f", ticksuffix=suffix),
    ))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=max(320, 26 * len(y) + 160),
        margin=dict(l=10, r=10, t=50 if title else 10, b=40),
        xaxis=dict(title=x_title, type="category", side="bottom", tickangle=-45),
        yaxis=dict(title=y_title, type="category", autorange="reversed"),
    )
    return localize(fig, lang)
