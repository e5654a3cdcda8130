"""Figures of the Architecture page (pure: data in, plotly Figure out).

Numbers follow the UI language ``lang``: plotly's ``separators`` give French
axes a decimal comma and a space between thousands; bar texts are written here
("23,4 %" in French, "23.4%" in English).
"""
from __future__ import annotations

import html
import math

import plotly.graph_objects as go

SEPARATORS = {"fr": ", ", "en": ".,"}
BLUE, RED, GREEN = "#1f77b4", "#d62728", "#2ca02c"


def percent(p: float, lang: str) -> str:
    """A probability as a percentage with enough decimals to not read 0 (``0.234`` -> "23,4 %" / "23.4%")."""
    value = 100 * p
    digits = 1 if value >= 1 or value <= 0 else min(4, 1 - math.floor(math.log10(value)))
    text = f"{value:.{digits}f}"
    return f"{text.replace('.', ',')}\u202f%" if lang == "fr" else f"{text}%"


def _layout(fig: go.Figure, lang: str, **kwargs) -> go.Figure:
    fig.update_layout(separators=SEPARATORS.get(lang, SEPARATORS["en"]), **kwargs)
    return fig


def param_bars(names: list[str], counts: list[int], texts: list[str], title: str, lang: str = "en") -> go.Figure:
    """Horizontal bars, one per part of the model, labelled with a readable count (``texts``)."""
    fig = go.Figure(go.Bar(x=counts, y=names, orientation="h", text=texts, textposition="outside",
                           cliponaxis=False, marker_color=BLUE))
    top = max(counts, default=0) or 1
    step = _nice(top / 4)
    ticks = [i * step for i in range(int(top // step) + 1)]
    return _layout(fig, lang, title=title, height=60 + 36 * len(names), margin=dict(l=10, r=60, t=40, b=10),
                   yaxis=dict(autorange="reversed", automargin=True),
                   xaxis=dict(range=[0, top * 1.15], tickvals=ticks, ticktext=[_si(v, lang) for v in ticks]))


def _nice(x: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``x``."""
    power = 10 ** math.floor(math.log10(x)) if x > 0 else 1
    return next(m * power for m in (1, 2, 5, 10) if m * power >= x)


def _si(n: float, lang: str) -> str:
    """``50_000_000`` -> "50 M" (fr) / "50M" (en)."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            text = f"{n / factor:.3g}"
            return f"{text.replace('.', ',')}\u202f{suffix}" if lang == "fr" else f"{text}{suffix}"
    return f"{n:.0f}"


def top_bars(labels: list[str], probs: list[float], title: str, lang: str, highlight: int | None = 0) -> go.Figure:
    """The most likely next tokens as horizontal bars in percent, most likely on top.

    ``x`` holds percentages (23.4 for a probability of 0.234); the axis ticks carry
    the % sign and the language's decimal separator. Labels are kept as given, so
    a caller can show a token's leading space (``␣lit``); they are HTML-escaped for plotly.
    """
    values = [100 * p for p in probs]
    colours = [RED if i == highlight else BLUE for i in range(len(values))]
    fig = go.Figure(go.Bar(  # plotly reads tags in labels (<b>, <a href>): a token's text is escaped
        x=values, y=[html.escape(label, quote=False) for label in labels], orientation="h", marker_color=colours, text=[percent(p, lang) for p in probs],
        textposition="outside", cliponaxis=False, hovertemplate="%{y}: %{text}<extra></extra>",
    ))
    top = max(values, default=0) or 1.0
    return _layout(
        fig, lang, title=title, height=max(220, 28 * len(labels) + 70), margin=dict(l=10, r=70, t=40 if title else 10,
                                                                                   b=10),
        yaxis=dict(autorange="reversed", type="category", automargin=True, tickfont=dict(family="monospace")),
        xaxis=dict(range=[0, top * 1.25], ticksuffix="\u202f%" if lang == "fr" else "%", rangemode="tozero"),
    )


def window_bars(spans: list[int], full: list[bool], hover: list[str], names: tuple[str, str] | list[str],
                title: str, x_title: str, y_title: str, lang: str) -> go.Figure:
    """How far back each layer can attend: one bar per layer on a log axis, sliding-window and global
    layers in two colours (``names``: their legend entries), each bar labelled with its reach."""
    fig = go.Figure()
    for is_full, name, colour in ((False, names[0], BLUE), (True, names[1], GREEN)):
        layers = [i for i, f in enumerate(full) if f == is_full]
        if layers:
            fig.add_bar(x=layers, y=[spans[i] for i in layers], name=name, marker_color=colour, width=0.8,
                        text=[_thousands(spans[i], lang) for i in layers], textposition="outside",
                        cliponaxis=False, hovertext=[hover[i] for i in layers], hoverinfo="text")
    ticks = sorted(set(spans))
    return _layout(fig, lang, title=title, height=320, margin=dict(l=10, r=10, t=60, b=10), barmode="overlay",
                   xaxis=dict(title=x_title, tickmode="linear", dtick=1, range=[-0.6, len(spans) - 0.4]),
                   yaxis=dict(title=y_title, type="log", tickvals=ticks, ticktext=[_thousands(v, lang) for v in ticks],
                              range=[0, math.log10(max(ticks) * 4)]),
                   legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))


def _thousands(n: int, lang: str) -> str:
    text = f"{n:,}"
    return text.replace(",", "\u202f") if lang == "fr" else text
