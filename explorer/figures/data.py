"""What the Data page draws: grid cells computed from :mod:`gpt_core.data` results, then plotly figures.

Pure functions, no Streamlit: token ids in, cell categories / tables / Figures out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import plotly.graph_objects as go
import torch

from gpt_core import data as D
from gpt_core.errors import InvalidInput

from explorer.corpus import eot_token_id, token_texts
from explorer.figures.bars import localize

MAX_ROWS = 24            # rows of a chunk grid drawn at most (all rows are counted)
MAX_WINDOWS = 24         # sliding windows drawn at most
# categories of a chunk grid: 0 padding, 1 end-of-text, 2 + d = document d
CAT_PAD, CAT_EOT = 0, 1
# categories of a collate grid
(CAT_PROMPT, CAT_RESPONSE, CAT_END, CAT_PADDING, CAT_IGN_PAD, CAT_IGN_PROMPT) = range(6)
PAD_COLOUR, EOT_COLOUR = "#e4e4e4", "#2b2b2b"
DOC_COLOURS = ["#66c5cc", "#f6cf71", "#f89c74", "#dcb0f2", "#87c55f",
               "#9eb9f3", "#fe88b1", "#c9db74", "#8be0a4", "#b497e7"]
# collate cells: prompt, response, end-of-text, padding (inputs), -100 on padding, -100 on the prompt
COLLATE_COLOURS = ["#9ecae1", "#a1d99b", "#2b2b2b", "#e4e4e4", "#d7301f", "#fc9272"]
CELL_TEXT_MAX_COLUMNS = 24   # write the token inside each cell only when cells are wide enough


# ==================================================================== chunking
@dataclass
class ChunkGrid:
    result: D.ChunkResult
    cats: list[list[int]]       # (rows, context): CAT_PAD, CAT_EOT or 2 + document
    texts: list[list[str]]      # token text of each cell
    shown_rows: int             # rows kept for drawing (<= MAX_ROWS)


def _grid(result: D.ChunkResult, eot_id: int, tokenizer: Any, max_rows: int) -> ChunkGrid:
    rows, owner = result.rows[:max_rows], result.doc_index[:max_rows]     # (R, context)
    cats = torch.where(owner < 0, CAT_PAD, torch.where(rows == eot_id, CAT_EOT, owner + 2))
    flat = token_texts(tokenizer, rows.flatten().tolist())
    width = result.context
    texts = [flat[r * width:(r + 1) * width] for r in range(rows.shape[0])]
    return ChunkGrid(result, cats.tolist(), texts, int(rows.shape[0]))


def chunk_grids(docs_ids: Sequence[Sequence[int]], tokenizer: Any, context: int, last: str = "pad",
                max_rows: int = MAX_ROWS) -> tuple[ChunkGrid, ChunkGrid]:
    """The same documents chunked both ways: EOT concatenation, then one padded document per row."""
    eot, pad = eot_token_id(tokenizer), D.pad_token_id(tokenizer)
    by_eot = D.chunk_eot(docs_ids, eot, context, last=last, pad_id=pad)
    by_pad = D.chunk_padding(docs_ids, pad, context, eot_id=eot)
    return _grid(by_eot, eot, tokenizer, max_rows), _grid(by_pad, eot, tokenizer, max_rows)


# ============================================================= sliding windows
@dataclass
class WindowView:
    result: D.WindowResult
    shown: int                  # windows drawn (<= MAX_WINDOWS)
    texts: list[str]            # token text of every position of the stream


def window_view(ids: Sequence[int], tokenizer: Any, max_length: int, stride: int,
                max_shown: int = MAX_WINDOWS) -> WindowView:
    result = D.sliding_windows(ids, max_length, stride)
    return WindowView(result, min(result.n_samples, max_shown), token_texts(tokenizer, ids))


def shown_windows(view: WindowView, chosen: int) -> range:
    """The block of at most ``view.shown`` consecutive windows to draw, centred on ``chosen`` when possible."""
    n = view.result.n_samples
    first = max(0, min(int(chosen) - view.shown // 2, n - view.shown))
    return range(first, first + view.shown)


def shift_table(view: WindowView, index: int, row_names: Sequence[str]) -> pd.DataFrame:
    """Window ``index`` as four rows (input text, input id, target text, target id), one column per position."""
    r = view.result
    if not 0 <= index < r.n_samples:
        raise InvalidInput("corpus.no_window", "Window {index} does not exist (there are {n}).",
                           index=index, n=r.n_samples)
    start = r.starts[index]
    x, y = r.inputs[index].tolist(), r.targets[index].tolist()
    rows = [view.texts[start:start + r.max_length], [str(i) for i in x],
            view.texts[start + 1:start + r.max_length + 1], [str(i) for i in y]]
    return pd.DataFrame(rows, index=list(row_names), columns=[str(start + j) for j in range(r.max_length)])


def batch_frame(tensor: torch.Tensor, tokenizer: Any) -> pd.DataFrame:
    """A (batch, context) tensor as a table of token texts (rows: samples, columns: positions)."""
    b, c = tensor.shape
    flat = token_texts(tokenizer, tensor.flatten().tolist())
    return pd.DataFrame([flat[r * c:(r + 1) * c] for r in range(b)], columns=[str(j) for j in range(c)])


# ============================================================ instruction data
@dataclass
class CollateView:
    batch: dict                 # what collate_instructions returned
    cats: list[list[int]]       # (2B, T): rows x0, y0, x1, y1, ... (CAT_* codes)
    texts: list[list[str]]      # token text of each cell (the masked token's text for -100)
    values: list[list[int]]     # ids in the tensors (-100 where the loss ignores the target)
    n_ignored_pad: int
    n_ignored_prompt: int


def _collate_row(prompt_len: int, n: int, width: int, targets: list[int]) -> tuple[list[int], list[int]]:
    """Categories of one example's input and target rows (``n`` real tokens, EOS included)."""
    row_x, row_y = [], []
    for j in range(width):
        row_x.append(CAT_PADDING if j >= n else CAT_PROMPT if j < prompt_len else CAT_END if j == n - 1
                     else CAT_RESPONSE)
        k = j + 1                                                         # target j is token j+1
        if targets[j] == D.IGNORE_INDEX:
            row_y.append(CAT_IGN_PAD if k >= n else CAT_IGN_PROMPT)
        else:
            row_y.append(CAT_PROMPT if k < prompt_len else CAT_END if k == n - 1 else CAT_RESPONSE)
    return row_x, row_y


def collate_view(records: Sequence[dict], start: int, size: int, tokenizer: Any, style: str = "alpaca",
                 mask_prompt: bool = False) -> CollateView:
    """Collate ``size`` examples from ``start`` (clamped to the dataset) and classify every cell."""
    size = max(1, min(int(size), len(records)))
    start = max(0, min(int(start), len(records) - size))
    ds = D.InstructionDataset(records[start:start + size], tokenizer, style)
    pad = D.pad_token_id(tokenizer)
    eos = tokenizer.eos_id if getattr(tokenizer, "eos_id", None) is not None else pad
    batch = D.collate_instructions(ds.items, pad_id=pad, eos_id=eos, mask_prompt=mask_prompt)
    x, y = batch["inputs"], batch["targets"]                              # (B, T)
    cats, texts, values = [], [], []
    for r, (prompt, response) in enumerate(ds.items):
        seq = prompt + response + [eos]
        full = seq + [pad] * (x.shape[1] + 1 - len(seq))                  # the padded row
        cats += list(_collate_row(len(prompt), len(seq), x.shape[1], y[r].tolist()))
        texts += [token_texts(tokenizer, full[:-1]), token_texts(tokenizer, full[1:])]
        values += [x[r].tolist(), y[r].tolist()]
    targets = cats[1::2]
    return CollateView(batch, cats, texts, values, sum(row.count(CAT_IGN_PAD) for row in targets),
                       sum(row.count(CAT_IGN_PROMPT) for row in targets))


def doc_colours(n_docs: int) -> list[str]:
    """Colours of the chunk grid categories: padding, end-of-text, then one per document."""
    return [PAD_COLOUR, EOT_COLOUR] + [DOC_COLOURS[d % len(DOC_COLOURS)] for d in range(n_docs)]


def _short(text: str, n: int = 5) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def category_grid(cats: Sequence[Sequence[int]], texts: Sequence[Sequence[str]], row_labels: Sequence[str],
                  names: Sequence[str], colours: Sequence[str], title: str = "", x_title: str = "",
                  values: Sequence[Sequence[int]] | None = None, lang: str = "en") -> go.Figure:
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
    return localize(fig, lang)


def mask_grid(mask: Sequence[Sequence[int]], row_labels: Sequence[str], names: Sequence[str],
              title: str = "", x_title: str = "", lang: str = "en") -> go.Figure:
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
    return localize(fig, lang)


def window_bars(starts: Sequence[int], max_length: int, texts: Sequence[str], chosen: int,
                names: Sequence[str], title: str = "", x_title: str = "", first: int = 0,
                lang: str = "en") -> go.Figure:
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
    return localize(fig, lang)
