"""Figures of the Data page: pure functions, data in, plotly Figure out."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

PAD_COLOUR, EOT_COLOUR = "#e4e4e4", "#2b2b2b"
DOC_COLOURS = ["#66c5cc", "#f6cf71", "#f89c74", "#dcb0f2", "#87c55f",
               "#9eb9f3", "#fe88b1", "#c9db74", "#8be0a4", "#b497e7"]
# collate cells: prompt, response, end-of-text, padding (inputs), -100 on padding, -100 on the prompt
COLLATE_COLOURS = ["#9ecae1", "#a1d99b", "#2b2b2b", "#e4e4e4", "#d7301f", "#fc9272"]
CELL_TEXT_MAX_COLUMNS = 24   # write the token inside each cell only when cells are wide enough


def doc_colours(n_docs: int) -> list[str]:
    """Colours of the chunk grid categories: padding, end-of-text, then one per document."""
    return [PAD_COLOUR, EOT_COLOUR] + [DOC_COLOURS[d % len(DOC_COLOURS)] for d in range(n_docs)]


def _short(text: str, n: int = 5) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def category_grid(cats: Sequence[Sequence[int]], texts: Sequence[Sequence[str]], row_labels: Sequence[str],
                  names: Sequence[str], colours: Sequence[str], title: str = "", x_title: str = "",
                  values: Sequence[Sequence[int]] | None = None) -> go.Figure:
    """A (rows × positions) grid of categorical cells with the token text on hover.

    ``cats[r][c]`` indexes ``names``/``colours``; the colour bar is the legend.
    ``values`` (the ids, or -100) are shown on hover when given.
    """
    n = len(colours)
    scale = []
    for i, colour in enumerate(colours):                     # one flat band per category
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    hover = []
    for r, row in enumerate(cats):
        line = []
        for c, cat in enumerate(row):
            val = f" · {values[r][c]}" if values is not None else ""
            line.append(f"{row_labels[r]} · {c}<br>“{texts[r][c]}”{val}<br>{names[cat]}")
        hover.append(line)
    width = max((len(row) for row in cats), default=0)
    show_text = 0 < width <= CELL_TEXT_MAX_COLUMNS
    fig = go.Figure(go.Heatmap(
        z=[list(row) for row in cats], y=list(row_labels), x=list(range(width)),
        zmin=-0.5, zmax=n - 0.5, colorscale=scale, xgap=1, ygap=1,
        customdata=hover, hovertemplate="%{customdata}<extra></extra>",
        text=[[_short(s) for s in row] for row in texts] if show_text else None,
        texttemplate="%{text}" if show_text else None, textfont=dict(size=10),
        colorbar=dict(tickvals=list(range(n)), ticktext=list(names), thickness=14, len=1.0,
                      outlinewidth=0, tickfont=dict(size=11)),
    ))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=max(200, 24 * len(cats) + 110),
        margin=dict(l=10, r=10, t=40 if title else 10, b=40),
        yaxis=dict(autorange="reversed", type="category", tickfont=dict(size=11)),
        xaxis=dict(title=x_title, showgrid=False, zeroline=False),
        plot_bgcolor="white",
    )
    return fig


def mask_grid(mask: Sequence[Sequence[int]], row_labels: Sequence[str], names: Sequence[str],
              title: str = "", x_title: str = "") -> go.Figure:
    """The attention mask (1 = real token, 0 = padding) as a two-colour grid."""
    fig = go.Figure(go.Heatmap(
        z=[list(row) for row in mask], y=list(row_labels), zmin=0, zmax=1, xgap=1, ygap=1,
        colorscale=[[0, PAD_COLOUR], [0.5, PAD_COLOUR], [0.5, "#3182bd"], [1, "#3182bd"]],
        hovertemplate="%{y} · %{x}<br>mask = %{z}<extra></extra>",
        colorbar=dict(tickvals=[0.25, 0.75], ticktext=list(names), thickness=14, outlinewidth=0),
    ))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=max(160, 20 * len(mask) + 100),
        margin=dict(l=10, r=10, t=40 if title else 10, b=40),
        yaxis=dict(autorange="reversed", type="category"), xaxis=dict(title=x_title),
        plot_bgcolor="white",
    )
    return fig


def window_bars(starts: Sequence[int], max_length: int, texts: Sequence[str], chosen: int,
                names: Sequence[str], title: str = "", x_title: str = "", first: int = 0) -> go.Figure:
    """Each window as two horizontal bars over token positions: its input and its target (shifted by one).

    ``starts`` are the start positions of windows ``first``, ``first + 1``, ... (``chosen`` is
    an absolute window number); ``names`` = legend names (input, target, chosen window);
    ``texts`` = token text per position of the stream (hover shows a window's text; x ticks
    show the tokens when few).
    """
    def snippet(s: int) -> str:
        joined = "".join(texts[s:s + max_length]).replace("␣", " ")
        return joined if len(joined) <= 70 else joined[:69] + "…"

    labels = [f"#{first + i}" for i in range(len(starts))]
    traces = [  # (name, shift, colour, opacity, offset): input bars above, target bars below
        (names[0], 0, "#1f77b4", 1.0, -0.42), (names[1], 1, "#1f77b4", 0.35, 0.0)]
    fig = go.Figure()
    for name, shift, colour, opacity, offset in traces:
        for highlight in (False, True):
            keep = [(first + i == chosen) == highlight for i in range(len(starts))]
            fig.add_bar(
                name=names[2] if highlight else name, legendgroup="chosen" if highlight else name,
                showlegend=not highlight or shift == 0, y=labels,
                x=[max_length if k else None for k in keep], base=[s + shift for s in starts],
                orientation="h", offset=offset, width=0.4, opacity=opacity,
                marker_color="#d62728" if highlight else colour,
                customdata=[[s + shift, s + shift + max_length - 1, snippet(s + shift)] for s in starts],
                hovertemplate=("y" if shift else "x") + " %{y} : %{customdata[0]}–%{customdata[1]}"
                              "<br>%{customdata[2]}<extra></extra>")
    lo, end = (min(starts), max(starts) + max_length + 1) if starts else (0, 1)
    xaxis = dict(title=x_title, range=[lo - 0.5, end - 0.5], showgrid=True, gridcolor="#eee", zeroline=False)
    if end - lo <= 48:                                       # few tokens: write them under the axis
        xaxis.update(tickvals=list(range(lo, end)), ticktext=[_short(texts[i], 8) for i in range(lo, end)],
                     tickangle=-60, tickfont=dict(size=10))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), barmode="overlay",
        height=max(240, 26 * len(starts) + 160), margin=dict(l=10, r=10, t=70 if title else 30, b=10),
        yaxis=dict(autorange="reversed", type="category"), xaxis=xaxis, plot_bgcolor="white",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return fig
