"""Figures of the tokenizer lab (pure: data in, plotly Figure or HTML out)."""
from __future__ import annotations

import html

import plotly.graph_objects as go

from gpt_core.tokenlab import spell_bytes

from explorer.ui.token_chips import PALETTE, visible

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def word_counts_chart(words: list[str], series: list[tuple[str, list[int]]], title: str,
                      x_title: str, y_title: str, max_words: int = 40) -> go.Figure:
    """Grouped bars: how many tokens each word became, one bar colour per tokenizer.

    Words are shown in text order (the first ``max_words``); a repeated word keeps its
    own bar because the x axis is the word's position, labelled with the word.
    """
    n = min(len(words), max_words)
    x = list(range(n))
    fig = go.Figure()
    for i, (name, counts) in enumerate(series):
        fig.add_trace(go.Bar(
            x=x, y=counts[:n], name=name, marker_color=COLOURS[i % len(COLOURS)],
            customdata=[visible(w) for w in words[:n]],
            hovertemplate="%{customdata}: %{y}<extra>" + name.replace("<", "&lt;") + "</extra>",
        ))
    top = max([max(c[:n], default=0) for _, c in series] + [1])
    fig.update_layout(
        title=title, barmode="group", height=380, bargap=0.25,
        margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
        xaxis=dict(title=x_title, tickmode="array", tickvals=x, ticktext=[visible(w)[:18] for w in words[:n]],
                   tickangle=-45 if n > 8 else 0),
        yaxis=dict(title=y_title, dtick=1 if top <= 8 else None, rangemode="tozero"),
    )
    return fig


def parts_html(parts: list[bytes], highlight: int | None) -> str:
    """The parts of a chunk as chips spelled like GPT-2's vocabulary; the new merge outlined."""
    chips = []
    for i, part in enumerate(parts):
        border = "outline:2px solid #d62728;" if i == highlight else ""
        chips.append(f"<span style='background:{PALETTE[i % len(PALETTE)]};{border}border-radius:4px;"
                     f"padding:2px 4px;margin:0 2px'>{html.escape(spell_bytes(part))}</span>")
    return ("<div style='font-family:ui-monospace,Menlo,Consolas,monospace;font-size:1.15em;line-height:2.2;"
            "color:#111'>" + "".join(chips) + "</div>")
