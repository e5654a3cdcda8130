"""Pure figure builders shared by pages: data in, plotly Figure out."""
from __future__ import annotations

import plotly.graph_objects as go


def prob_bars(labels: list[str], probs: list[float], title: str = "", highlight: int | None = None) -> go.Figure:
    """Horizontal probability bars, most likely on top."""
    colours = ["#d62728" if i == highlight else "#1f77b4" for i in range(len(probs))]
    fig = go.Figure(go.Bar(
        x=probs, y=labels, orientation="h", marker_color=colours,
        text=[f"{p:.1%}" for p in probs], textposition="outside", cliponaxis=False,
    ))
    fig.update_layout(
        title=title, height=max(220, 28 * len(labels) + 60), margin=dict(l=10, r=40, t=40 if title else 10, b=10),
        yaxis=dict(autorange="reversed", type="category"), xaxis=dict(tickformat=".0%", rangemode="tozero"),
    )
    return fig
