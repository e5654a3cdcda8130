"""Figures of the tokenizer lab (pure: data in, plotly Figure or HTML out)."""
from __future__ import annotations

import html
from typing import Callable

import pandas as pd
import plotly.graph_objects as go

from gpt_core.tokenlab import spell_bytes

from explorer.ui.token_chips import PALETTE, visible

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
LANG_COLOURS = {"fr": "#1f5fa8", "en": "#e08a1e"}
MAX_LABEL = 40  # characters of a word shown under its bar (longer ones end with "…")
LONG_CHIP = 30  # a chip longer than this may wrap inside itself (else it would overflow the line)


def separators(lang: str) -> str:
    """plotly's ``separators`` (decimal mark, then thousands mark) for the UI language."""
    return ", " if lang == "fr" else ".,"


def _label(word: str) -> str:
    shown = visible(word).replace("\n", "")
    return shown if len(shown) <= MAX_LABEL else shown[:MAX_LABEL - 1] + "…"


def word_counts_chart(words: list[str], series: list[tuple[str, list[int]]], title: str,
                      x_title: str, y_title: str, max_words: int = 40, lang: str = "fr") -> go.Figure:
    """Grouped bars: how many tokens each word became, one bar colour per tokenizer.

    Words are shown in text order (the first ``max_words``); a repeated word keeps its
    own bar because the x axis is the word's position, labelled with the word. Labels
    are whole words (up to MAX_LABEL characters): the margins grow to fit them.
    """
    n = min(len(words), max_words)
    x = list(range(n))
    labels = [_label(w) for w in words[:n]]
    fig = go.Figure()
    for i, (name, counts) in enumerate(series):
        fig.add_trace(go.Bar(
            x=x, y=counts[:n], name=name, marker_color=COLOURS[i % len(COLOURS)],
            customdata=[html.escape(w, quote=False) for w in labels],
            hovertemplate="%{customdata}: %{y}<extra>" + html.escape(name, quote=False) + "</extra>",
        ))
    top = max([max(c[:n], default=0) for _, c in series] + [1])
    longest = max((len(w) for w in labels), default=0)
    slanted = n > 8 or longest * n > 90
    fig.update_layout(
        title=title, barmode="group", bargap=0.25, separators=separators(lang),
        height=360 + (int(5.5 * longest) if slanted else 0),
        margin=dict(l=10, r=30, t=70, b=10),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
        xaxis=dict(title=x_title, tickmode="array", tickvals=x, ticktext=[html.escape(w, quote=False) for w in labels],
                   tickangle=-45 if slanted else 0, automargin=True),
        yaxis=dict(title=y_title, dtick=1 if top <= 8 else None, rangemode="tozero", automargin=True),
    )
    return fig


def language_chart(costs, names: dict[str, str], languages: dict[str, str], hover: str,
                   fmt: Callable[[int], str], title: str, y_title: str, lang: str) -> go.Figure:
    """Grouped bars: tokens per word of each tokenizer (x) on each reference text (one colour per language).

    ``costs`` are ``tokenlab.LanguageCost`` rows; ``names`` gives each tokenizer's label,
    ``languages`` each reference text's label (in the order of the bars), ``hover`` a
    template with ``{name}``, ``{tokens}``, ``{words}`` whose numbers ``fmt`` writes.
    Numbers follow the UI language (``lang``: "fr" gives a decimal comma).
    """
    order = list(dict.fromkeys(c.name for c in costs))
    # the name on one line, its details "(…)" on the next: labels stay whole and narrow
    ticks = [html.escape(names.get(n, n), quote=False).replace(" (", "<br>(", 1) or "—" for n in order]
    fig = go.Figure()
    top = 1.0
    for code, label in languages.items():
        mine = {c.name: c for c in costs if c.lang == code}
        ys = [mine[n].tokens_per_word or 0 for n in order]
        top = max([top, *ys])
        text = [hover.format(name=names.get(n, n), tokens=fmt(mine[n].n_tokens), words=fmt(mine[n].n_words))
                for n in order]
        fig.add_trace(go.Bar(
            x=ticks, y=ys, name=html.escape(label, quote=False), marker_color=LANG_COLOURS.get(code, "#777"),
            texttemplate="%{y:.2f}", textposition="outside", cliponaxis=False,
            customdata=[html.escape(h, quote=False) for h in text],
            hovertemplate="%{customdata}<extra>" + html.escape(label, quote=False) + "</extra>",
        ))
    fig.update_layout(
        title=title, barmode="group", bargap=0.3, height=420, separators=separators(lang),
        margin=dict(l=10, r=10, t=70, b=10),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
        xaxis=dict(automargin=True, tickangle=0),
        yaxis=dict(title=y_title, rangemode="tozero", range=[0, top * 1.18], automargin=True, tickformat=".1f"),
    )
    return fig


def chips_html(pieces, text: str, show_ids: bool = False) -> str:
    """One chip per token over the exact characters of the text.

    A chip never breaks inside itself (``white-space:pre``: " de" keeps its space with
    its word); a line breaks only between chips (``<wbr>``), or inside a very long chip.
    Empty-span tokens (UTF-8 continuation bytes) appear as a thin dashed "·".
    """
    chips = []
    for i, p in enumerate(pieces):
        segment = text[p.start:p.end]
        colour = "#e0e0e0" if p.special else PALETTE[i % len(PALETTE)]
        title = f"id {p.id} · {p.raw!r} · {p.bytes.hex(' ')}"
        label = html.escape(visible(segment)) if segment else "·"
        border = "border:1px dashed #888;" if (p.byte_fallback or not segment) else ""
        wrap = "pre-wrap;word-break:break-all" if len(segment) > LONG_CHIP else "pre"
        sub = f"<sub style='color:#555;font-size:0.7em'>{p.id}</sub>" if show_ids else ""
        chips.append(
            f"<span class='tok-chip' title='{html.escape(title, quote=True)}' style='background:{colour};{border}"
            f"border-radius:4px;padding:1px 2px;margin:0 1px;white-space:{wrap};unicode-bidi:isolate'>"
            f"{label}{sub}</span>"
        )
    return (
        "<div dir='auto' style='font-family:ui-monospace,Menlo,Consolas,monospace;line-height:2.1;"
        "white-space:pre-wrap;color:#111'>" + "<wbr>".join(chips) + "</div>"
    )


GLYPH_CODES = ("space", "newline", "tab", "return", "control", "utf8", "sp_space", "sp_byte")


def glyph_legend(items: list[tuple[str, str, str]], meanings: dict[str, str], none_text: str,
                 per_line: int = 8) -> str:
    """Markdown list of the notable glyphs (``tokenlab.notable_glyphs``), grouped by meaning."""
    if not items:
        return none_text
    groups: dict[str, list[str]] = {}
    for glyph, hexa, code in items:
        groups.setdefault(code, []).append(f"`{glyph}`\u202f=\u202f{hexa}")
    lines = []
    for code, shown in groups.items():
        more = f" … (+{len(shown) - per_line})" if len(shown) > per_line else ""
        lines.append(f"- {', '.join(shown[:per_line])}{more} — {meanings.get(code, code)}")
    return "\n".join(lines)


def merges_frame(steps, headers: list[str]) -> pd.DataFrame:
    """The table of BPE merges: step, rank, merged pair, new token, parts after (``headers`` name the columns)."""
    return pd.DataFrame(dict(zip(headers, (
        list(range(1, len(steps) + 1)),
        [s.rank for s in steps],
        [f"{spell_bytes(s.left)} + {spell_bytes(s.right)}" for s in steps],
        [spell_bytes(s.merged) for s in steps],
        [" | ".join(spell_bytes(p) for p in s.parts_after) for s in steps],
    ))))


def parts_html(parts: list[bytes], highlight: int | None) -> str:
    """The parts of a chunk as chips spelled like GPT-2's vocabulary; the new merge outlined."""
    chips = []
    for i, part in enumerate(parts):
        border = "outline:2px solid #d62728;" if i == highlight else ""
        chips.append(f"<span style='background:{PALETTE[i % len(PALETTE)]};{border}border-radius:4px;"
                     f"padding:2px 4px;margin:0 2px'>{html.escape(spell_bytes(part))}</span>")
    return ("<div style='font-family:ui-monospace,Menlo,Consolas,monospace;font-size:1.15em;line-height:2.2;"
            "color:#111'>" + "".join(chips) + "</div>")
