"""Pure figure builders of the Attention page: data in, plotly Figure out.

Token labels come from the user's text: they are HTML-escaped before plotly,
which would otherwise read "<b>" or "<a href=...>" in them as markup.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from gpt_core.attention import causal_mask, window_mask

SCALE = "Blues"
MASK_COLOUR = "rgba(150,150,150,0.55)"
WINDOW_COLOUR = "rgba(230,120,20,0.75)"   # keys that left a sliding window: orange dots


def _mask_polygon(T: int) -> tuple[list[float], list[float]]:
    """Staircase outline of the cells above the diagonal (query row i, key column j > i)."""
    xs, ys = [T - 0.5], [-0.5]
    for i in range(T - 1):
        xs += [i + 0.5, i + 0.5]
        ys += [i - 0.5, i + 0.5]
    xs += [T - 0.5, T - 0.5]
    ys += [T - 1.5, -0.5]
    return xs, ys


def _window_polygon(T: int, window: int) -> tuple[list[float], list[float]]:
    """Staircase outline of the cells a sliding window hides (query row i, key column j <= i - window)."""
    xs, ys = [-0.5], [window - 0.5]
    for i in range(window, T):
        xs += [i - window + 0.5, i - window + 0.5]
        ys += [i - 0.5, i + 0.5]
    xs += [-0.5, -0.5]
    ys += [T - 0.5, window - 0.5]
    return xs, ys


def _esc(text: str) -> str:
    return html.escape(str(text), quote=False)


def head_heatmap(matrix: np.ndarray, labels: list[str], title: str, query_title: str, key_title: str,
                 masked_name: str, hover: str, window: int | None = None, window_name: str = "",
                 zmax: float = 1.0, subtitle: str = "") -> go.Figure:
    """One head: rows are queries, columns keys; future keys (causal mask) are hatched grey.

    ``window``: on a sliding-window layer, the keys that left the window (``j <= i - window``, weight 0)
    are dotted orange and outlined (nothing is drawn when the text fits in the window).
    ``zmax``: top of the colour scale (below 1 when a column is hidden and the rest is rescaled);
    ``subtitle``: a second, smaller title line (plain text, escaped here)."""
    T = matrix.shape[0]
    z = matrix.astype(float).copy()
    z[causal_mask(T)] = np.nan
    outside = window_mask(T, window)
    z[outside] = np.nan
    x = list(range(T))
    labels = [_esc(label) for label in labels]
    names = np.array(labels, dtype=object)
    pairs = np.stack(np.broadcast_arrays(names[:, None], names[None, :]), axis=-1)  # (T, T, 2): query, key
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=x, zmin=0, zmax=zmax, colorscale=SCALE, colorbar=dict(title="p", thickness=14),
        customdata=pairs,
        hovertemplate=hover + "<extra></extra>", xgap=1 if T <= 40 else 0, ygap=1 if T <= 40 else 0,
    ))
    if T > 1:
        xs, ys = _mask_polygon(T)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, fill="toself", mode="lines", line=dict(width=0.5, color="#999"),
            fillcolor="rgba(220,220,220,0.6)", fillpattern=dict(shape="/", fgcolor=MASK_COLOUR, size=6),
            name=_esc(masked_name), hoverinfo="skip", showlegend=True,
        ))
    if outside.any():
        xs, ys = _window_polygon(T, int(window))
        fig.add_trace(go.Scatter(
            x=xs, y=ys, fill="toself", mode="lines", line=dict(width=1.5, color="#e67814"),
            fillcolor="rgba(255,240,225,0.7)", fillpattern=dict(shape=".", fgcolor=WINDOW_COLOUR, size=6),
            name=_esc(window_name), hoverinfo="skip", showlegend=True,
        ))
    tick = dict(tickmode="array", tickvals=x, ticktext=labels, tickfont=dict(size=10 if T <= 40 else 8))
    size = int(min(900, max(320, 14 * T + 200)))
    fig.update_layout(
        title=dict(text=_esc(title), subtitle=dict(text=_esc(subtitle))), height=size + (24 if subtitle else 0),
        margin=dict(l=10, r=10, t=74 if subtitle else 50, b=10), plot_bgcolor="white",
        xaxis=dict(title=key_title, tickangle=-60, range=[-0.5, T - 0.5], **tick),
        yaxis=dict(title=query_title, autorange=False, range=[T - 0.5, -0.5], **tick),
        # inside the plot, top right: always over the hatched future cells, never over the titles
        legend=dict(yanchor="top", y=0.99, xanchor="right", x=0.99, bgcolor="rgba(255,255,255,0.9)",
                    bordercolor="#bbb", borderwidth=1, font=dict(size=11)),
    )
    return fig


def tile_panels(panels: list[tuple[int, int, np.ndarray]], n_heads: int, gap: int) -> tuple[np.ndarray, list[int]]:
    """All panels in one matrix (rows = layers, columns = heads), NaN in the gaps and above each diagonal."""
    layers = sorted({p[0] for p in panels})
    T = panels[0][2].shape[0]
    step = T + gap
    tiled = np.full((len(layers) * step - gap, n_heads * step - gap), np.nan, dtype=np.float32)
    mask = causal_mask(T)
    for l, h, m in panels:
        r, c = layers.index(l) * step, h * step
        tiled[r:r + T, c:c + T] = np.where(mask, np.nan, m)
    return tiled, layers


def grid_figure(panels: list[tuple[int, int, np.ndarray]], n_heads: int, title: str,
                selected: tuple[int, int] | None = None, layer_label: str = "L{l}", head_label: str = "H{h}",
                hover: str = "%{z:.2f}", layer_names: dict[int, str] | None = None) -> go.Figure:
    """Small multiples: one tiny heatmap per (layer, head), rows = layers, columns = heads.

    ``layer_names``: a label per layer drawn (e.g. with "global" / "window"), else ``layer_label``.

    Drawn as one tiled heatmap (fast to build and to draw even for 45 panels of
    96 tokens); ``layout.meta.panels`` lists the (layer, head) of each panel.
    """
    T = panels[0][2].shape[0]
    gap = max(1, T // 8)
    step = T + gap
    tiled, layers = tile_panels(panels, n_heads, gap)
    centre = (T - 1) / 2
    fig = go.Figure(go.Heatmap(z=tiled, zmin=0, zmax=1, colorscale=SCALE, hoverongaps=False,
                               colorbar=dict(title="p", thickness=12), hovertemplate=hover + "<extra></extra>"))
    if selected is not None and selected[0] in layers:
        r, c = layers.index(selected[0]) * step, selected[1] * step
        fig.add_shape(type="rect", x0=c - 0.5 - gap / 3, x1=c + T - 0.5 + gap / 3, y0=r - 0.5 - gap / 3,
                      y1=r + T - 0.5 + gap / 3, line=dict(color="#d62728", width=3))
    # the panels keep square cells (scaleanchor): size the figure to the tiled aspect ratio
    height = int(min(1400, max(260, 110 + 860 * tiled.shape[0] / tiled.shape[1])))
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=60, b=10),
        plot_bgcolor="white", meta={"panels": [[int(l), int(h)] for l, h, _ in panels]},
        xaxis=dict(side="top", tickmode="array", tickvals=[h * step + centre for h in range(n_heads)],
                   ticktext=[head_label.format(h=h) for h in range(n_heads)], showgrid=False, zeroline=False),
        yaxis=dict(autorange="reversed", tickmode="array", tickvals=[i * step + centre for i in range(len(layers))],
                   ticktext=[(layer_names or {}).get(l) or layer_label.format(l=l) for l in layers],
                   showgrid=False, zeroline=False,
                   scaleanchor="x", constrain="domain"),
    )
    return fig


def summary_heatmap(values: np.ndarray, kinds_short: list[list[str]], title: str, metric_name: str,
                    layer_title: str, head_title: str, selected: tuple[int, int] | None = None,
                    zmax: float = 1.0, layer_ticks: list[str] | None = None) -> go.Figure:
    """All layers x heads at a glance: colour = one score, text = the head type.

    ``layer_ticks``: one label per layer (e.g. "5 · global"), else the layer numbers."""
    L, H = values.shape
    fig = go.Figure(go.Heatmap(
        z=values, x=list(range(H)), y=list(range(L)), zmin=0, zmax=zmax, colorscale="Viridis",
        text=kinds_short, texttemplate="%{text}", textfont=dict(size=10),
        colorbar=dict(title=metric_name, thickness=14),
        hovertemplate=(f"{layer_title} %{{y}} · {head_title} %{{x}}<br>{metric_name} %{{z:.2f}}"
                       "<br>%{text}<extra></extra>"),
        xgap=1, ygap=1,
    ))
    if selected is not None:
        l, h = selected
        fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=l - 0.5, y1=l + 0.5,
                      line=dict(color="#d62728", width=3))
    fig.update_layout(
        title=title, height=int(min(900, 120 + 24 * L)), margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(title=head_title, dtick=1, side="top"),
        yaxis=dict(title=layer_title, autorange="reversed", **(
            dict(tickmode="array", tickvals=list(range(L)), ticktext=layer_ticks) if layer_ticks is not None
            else dict(dtick=1 if L <= 32 else 2))),
    )
    return fig
