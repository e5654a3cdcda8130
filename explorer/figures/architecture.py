"""Figures of the Architecture page (pure: data in, plotly Figure out)."""
from __future__ import annotations

import plotly.graph_objects as go


def param_bars(names: list[str], counts: list[int], texts: list[str], title: str) -> go.Figure:
    """Horizontal bars, one per part of the model, labelled with a readable count (``texts``)."""
    fig = go.Figure(go.Bar(x=counts, y=names, orientation="h", text=texts, textposition="outside",
                           cliponaxis=False, marker_color="#1f77b4"))
    fig.update_layout(title=title, height=260, margin=dict(l=10, r=40, t=40, b=10),
                      yaxis=dict(autorange="reversed"))
    return fig
