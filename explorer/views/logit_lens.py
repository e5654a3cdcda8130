"""The Logit lens page: cached analysis, table data, and the sections that draw it (figures in explorer.figures).

The text is read as the model reads it (Gemma's <bos> first); only the shown
positions are projected to the vocabulary (:func:`gpt_core.logit_lens.logit_lens`),
and the caption says what each row went through (final norm, head, soft-cap,
precision)."""
from __future__ import annotations

from dataclasses import dataclass

import html

import numpy as np
import pandas as pd
import streamlit as st
import torch

from gpt_core.backend import backend_of
from gpt_core.logit_lens import LogitLens, lean_trace, logit_lens

from explorer.figures import bars
from explorer.figures.bars import NNBSP, localize
from explorer.figures.logit_lens import lens_heatmap, rank_figure
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import attempt, number, plain
from explorer.ui.state import persisted
from explorer.ui.text_input import fit_context
from explorer.ui.token_chips import visible

MAX_TOKENS = 128      # longest text the lens runs on (the trace keeps every attention pattern)
MAX_COLUMNS = 24      # positions shown side by side in the table heatmap
DEFAULT_COLUMNS = 8   # shown at first (each column costs rows x vocabulary: 19 x 262k for Gemma)
TOP_K = 5


@dataclass
class LensData:
    lens: LogitLens
    tokens: list[str]          # visible text of every input token
    cell_text: list[list[str]]  # (rows, P) top-1 token text
    hover: list[list[str]]     # (rows, P) top-k with probabilities
    n_tokens: int
    notice: str | None


def shown(text: str) -> str:
    """A token as a cell shows it: whitespace-only tokens become ␣ so the cell is not blank."""
    text = visible(text)
    if not text:
        return "∅"
    return text.replace(" ", "␣") if not text.strip() else text


def short(text: str, width: int = 10) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def percent(p: float, digits: int = 1) -> str:
    """A probability as the UI language writes it ("23,4 %" / "23.4%")."""
    return bars.percent(p, digits, current_lang())


def fit_ids(ids: list[int], context_length: int, n_prefix: int = 0) -> tuple[list[int], str | None]:
    """The last tokens that fit (the model's window, then the page's limit); the model's prefix stays first."""
    prefix = ids[:n_prefix]
    ids, notice = fit_context(ids, context_length)
    if len(ids) > MAX_TOKENS:
        extra = t("logit_lens.too_many", total=len(ids), limit=MAX_TOKENS)
        notice = f"{notice} {extra}" if notice else extra
        ids = ids[-MAX_TOKENS:]
    if notice and prefix:
        ids = prefix + ids[len(prefix):]
    return ids, notice


@torch.inference_mode()
def compute(model, ids: list[int], positions: list[int], k: int) -> LogitLens:
    """The page's work: a trace without the vocabulary head, then the lens at the shown positions."""
    return logit_lens(model, lean_trace(model, ids), k=k, positions=positions)


@st.cache_data(max_entries=8, show_spinner=False)
def _cached(_model, model_key: str, ids: tuple[int, ...], positions: tuple[int, ...], k: int) -> LogitLens:
    return compute(_model, list(ids), list(positions), k)


def tokenize(lm, text: str) -> tuple[list[int], str | None]:
    """The ids the model reads for ``text`` (its prefix first), fitted to the page."""
    ids = lm.tokenizer.encode_for_model(text)
    return fit_ids(ids, backend_of(lm.model).context_length, len(lm.tokenizer.model_prefix))


def analyse(lm, ids: list[int], n_columns: int, notice: str | None = None, k: int = TOP_K) -> LensData:
    """Lens over the last ``n_columns`` positions of ``ids``."""
    T = len(ids)
    n_columns = max(1, min(int(n_columns), T, MAX_COLUMNS))
    positions = list(range(T - n_columns, T))
    lens = _cached(lm.model, lm.source.key, tuple(ids), tuple(positions), k)
    tok = lm.tokenizer
    tokens = [shown(tok.decode([i])) for i in ids]
    decoded = {int(i): shown(tok.decode([int(i)])) for i in np.unique(lens.top_ids)}
    cell_text, hover = [], []
    for r in range(lens.n_rows):
        cell_text.append([short(decoded[int(lens.top_ids[r, p, 0])]) for p in range(len(positions))])
        hover.append(["<br>".join(f"{html.escape(repr(decoded[int(i)]), quote=False)} {percent(pr)}" for i, pr in
                                  zip(lens.top_ids[r, p], lens.top_probs[r, p])) for p in range(len(positions))])
    return LensData(lens, tokens, cell_text, hover, T, notice)


def is_rotary(lm) -> bool:
    return backend_of(lm.model).info().position_kind == "rotary"


def row_names(lens: LogitLens) -> list[str]:
    return [t("logit_lens.row_embed") if n == "embed" else t("logit_lens.row_block", n=n) for n in lens.layer_names]


def column_labels(data: LensData) -> list[str]:
    return [f"{p}·{short(data.tokens[p])}" for p in data.lens.positions]


def tracked_table(data: LensData, column: int, tokenizer) -> pd.DataFrame:
    lens = data.lens
    return pd.DataFrame({
        t("logit_lens.col_layer"): row_names(lens),
        t("logit_lens.col_top1"): [data.cell_text[r][column] for r in range(lens.n_rows)],
        t("logit_lens.col_top1_prob"): [percent(lens.top_probs[r, column, 0]) for r in range(lens.n_rows)],
        t("logit_lens.col_rank"): [number(int(r), current_lang()) for r in lens.target_rank[:, column]],
        t("logit_lens.col_prob"): [percent(p, 2) for p in lens.target_prob[:, column]],
    })


# ------------------------------------------------------------------ the page
def analyse_or_explain(lm, text: str) -> LensData | None:
    """Tokenise (with its notices), pick how many positions to show, run the lens; None if it cannot run."""
    ids, notice = tokenize(lm, text)
    if notice:
        st.warning(notice)
    T = len(ids)
    if T == 1:
        st.info(t("logit_lens.one_token"))
    max_cols = min(T, MAX_COLUMNS)
    n_cols = max_cols if max_cols == 1 else persisted(
        st.slider, t("logit_lens.n_columns"), "logit_lens.n_columns", min(max_cols, DEFAULT_COLUMNS), min_value=1,
        max_value=max_cols, help=t("logit_lens.n_columns_help"))
    data = attempt(st, analyse, lm, ids, n_cols, notice, wrap="logit_lens.error")
    if data is None:
        return None
    st.caption(t("logit_lens.n_tokens", n=T, rows=data.lens.n_rows, layers=data.lens.n_rows - 1, k=TOP_K))
    st.caption(applied_caption(data.lens))
    if is_rotary(lm):
        st.caption(t("logit_lens.rotary_note"))
    if len(lm.tokenizer.model_prefix) and 0 in data.lens.positions:
        st.caption(t("logit_lens.bos_note"))
    return data


def applied_caption(lens: LogitLens) -> str:
    """What every row went through before the softmax, and in which precision."""
    cap = t("logit_lens.softcap", cap=number(lens.softcap, current_lang())) if lens.softcap else \
        t("logit_lens.no_softcap")
    text = t("logit_lens.applied", norm=lens.norm or "?", softcap=cap)
    if lens.precision != "float32":
        text += " " + t("logit_lens.precision", dtype=lens.precision)
    return text


def render_table(data: LensData) -> None:
    """The ecco-style table: top-1 token per layer and position."""
    st.plotly_chart(localize(lens_heatmap(data.lens, data.cell_text, data.hover, row_names(data.lens),
                                          column_labels(data), t("logit_lens.table_title"), t("logit_lens.x_title"),
                                          t("logit_lens.hover")), current_lang()), width="stretch")


def render_tracked(data: LensData, tokenizer) -> None:
    """One position followed through the layers: rank and probability of the final prediction."""
    lens, rows, columns = data.lens, row_names(data.lens), column_labels(data)
    choices = list(range(len(lens.positions)))
    column = choices[-1] if len(choices) == 1 else st.select_slider(
        t("logit_lens.track"), options=choices, value=choices[-1], format_func=lambda c: columns[c],
        key="logit_lens.track")
    target = data.cell_text[-1][column]
    st.subheader(t("logit_lens.rank_header", token=plain(target), pos=lens.positions[column]))
    first = lens.first_layer_reaching_top1(column)
    if first is not None:
        st.caption(t("logit_lens.first_top1", token=plain(target), row=rows[first]))
    lang = current_lang()
    st.plotly_chart(localize(rank_figure(lens, column, rows, t("logit_lens.rank_fig_title"),
                                         t("logit_lens.rank_title", token=target),
                                         t("logit_lens.prob_title", token=target),
                                         percent=f"{NNBSP}%" if lang == "fr" else "%"), lang), width="stretch")
    st.dataframe(tracked_table(data, column, tokenizer), hide_index=True, width="stretch")
