"""The History page's figure: several runs' loss curves overlaid (pure: data in, plotly Figure out)."""
from __future__ import annotations

import html
import math
from typing import Sequence

import plotly.graph_objects as go

from explorer.figures.bars import localize

# one colour per run (colour-blind friendly, then a few more); a run keeps its colour for both splits
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7f7f7f", "#bcbd22", "#8c564b",
           "#17becf")


def _points(xs: Sequence, ys: Sequence) -> tuple[list, list]:
    """The (step, value) pairs whose value is a finite number (a diverged run's NaN is left out)."""
    keep = [(x, y) for x, y in zip(xs or [], ys or [])
            if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y)]
    return [x for x, _ in keep], [y for _, y in keep]


def overlay_losses(runs: Sequence[dict], split_names: Sequence[str] = ("train", "validation"), title: str = "",
                   x_title: str = "", y_title: str = "", lang: str = "en") -> go.Figure:
    """One colour per run; its training loss as a solid line, its validation loss dashed with markers.

    ``runs``: ``{"name", "train_steps", "train_loss", "val_steps", "val_loss"}`` each. A split with no
    finite point draws no trace. Names are shown as plain text (plotly would read ``<b>`` as markup).
    """
    fig = go.Figure()
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        name = html.escape(str(run.get("name", "")), quote=False)
        for split, (steps, values) in enumerate((("train_steps", "train_loss"), ("val_steps", "val_loss"))):
            xs, ys = _points(run.get(steps), run.get(values))
            if not xs:
                continue
            label = f"{name} · {split_names[split]}"
            fig.add_trace(go.Scatter(
                x=xs, y=ys, name=label, legendgroup=f"run{i}", mode="lines" if split == 0 else "lines+markers",
                line=dict(color=colour, width=2, dash="solid" if split == 0 else "dash"), marker=dict(size=7),
                hovertemplate="%{x} · %{y:.3f}<extra>" + label + "</extra>"))
    fig.update_layout(
        title=dict(text=html.escape(title, quote=False), font=dict(size=15)), height=420,
        margin=dict(l=10, r=10, t=50 if title else 10, b=40), xaxis=dict(title=x_title, rangemode="tozero"),
        yaxis=dict(title=y_title), hovermode="closest",
        legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))
    return localize(fig, lang)
