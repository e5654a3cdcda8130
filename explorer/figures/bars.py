"""Pure figure builders shared by pages (data in, plotly Figure out), and numbers written the language's way.

French writes a decimal comma, a (narrow) space between thousands and a space
before the percent sign ("6,53 %"); English "6.53%". Plotly's own numbers
(axis ticks, hover values) follow the layout's ``separators``: every figure
of a page passes its ``lang`` to :func:`localize`.
"""
from __future__ import annotations

import plotly.graph_objects as go

NNBSP = "\u202f"  # narrow no-break space: French thousands and the space before "%"


def separators(lang: str) -> str:
    """Plotly's ``layout.separators`` (decimal mark, then thousands mark) for ``lang``."""
    return ", " if lang == "fr" else ".,"


def localize(fig: go.Figure, lang: str) -> go.Figure:
    """Numbers drawn by plotly itself (ticks, hover values) as ``lang`` writes them."""
    fig.update_layout(separators=separators(lang))
    return fig


def percent(p: float, digits: int = 1, lang: str = "en") -> str:
    """0.0653 -> "6.5%" (en) / "6,5 %" (fr, narrow no-break space)."""
    text = f"{100 * float(p):.{digits}f}"
    return f"{text.replace('.', ',')}{NNBSP}%" if lang == "fr" else f"{text}%"


def fixed(x: float, digits: int = 3, lang: str = "en") -> str:
    """A fixed-point number (decimal comma in French), e.g. for a caption or a cell built here."""
    text = f"{float(x):.{digits}f}"
    return text.replace(".", ",") if lang == "fr" else text


def prob_bars(labels: list[str], probs: list[float], title: str = "", highlight: int | None = None,
              lang: str = "en") -> go.Figure:
    """Horizontal probability bars, most likely on top."""
    colours = ["#d62728" if i == highlight else "#1f77b4" for i in range(len(probs))]
    fig = go.Figure(go.Bar(
        x=probs, y=labels, orientation="h", marker_color=colours,
        text=[percent(p, 1, lang) for p in probs], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
    ))
    fig.update_layout(
        title=title, height=max(220, 28 * len(labels) + 60), margin=dict(l=10, r=40, t=40 if title else 10, b=10),
        yaxis=dict(autorange="reversed", type="category"), xaxis=dict(tickformat=".0%", rangemode="tozero"),
    )
    return localize(fig, lang)
