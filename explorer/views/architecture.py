"""The Architecture page: which GPT to walk through, tables, parity badge, and the sections that draw them.

The page shows our own GPT's source code, so it needs our GPT: the chosen model
when it is one (:func:`gpt_core.backend.own_gpt`), else a random GPT-2-shaped stand-in.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st
import torch

from gpt_core import architecture as arch
from gpt_core.backend import backend_of, own_gpt
from gpt_core.model import GPT

from explorer.figures.architecture import param_bars
from explorer.figures.bars import prob_bars
from explorer.ui.i18n import t
from explorer.ui.messages import attempt
from explorer.ui.model_store import label_of
from explorer.ui.text_input import fit_context
from explorer.ui.token_chips import visible
from explorer.views.home import human

# which live-shape rows go next to which module's code
MODULE_SITES = {
    "GPT": lambda p: p.count(".") == 0 or (p.startswith("blocks.") and p.count(".") == 1),
    "TransformerBlock": lambda p: p.startswith("blocks.") and p.count(".") <= 2 and not p.endswith((".qkv", ".act")),
    "MultiHeadAttention": lambda p: ".att" in p,
    "LayerNorm": lambda p: p.endswith(("norm1", "norm2", "final_norm")),
    "FeedForward": lambda p: ".ff" in p,
    "GELU": lambda p: p.endswith(".ff.act") or p.endswith(".ff.fc_in"),
}


@dataclass
class Subject:
    model: GPT
    tokenizer: object
    label: str
    stand_in: bool          # True when the chosen model is not a from-scratch GPT
    size: str               # arch.PARITY_SIZES key of the stand-in, or "model"


@st.cache_resource(show_spinner=False)
def _pair(size: str):
    """(random HF GPT2LMHeadModel, our GPT converted from it), built once per server; never trained."""
    return arch.parity_pair(size, seed=0)


@st.cache_resource(show_spinner=False)
def _gpt2_tokenizer():
    from gpt_core.tokenizers import load_tokenizer

    return load_tokenizer("gpt2")


def subject(lm, full_size: bool = False) -> Subject:
    """The from-scratch GPT to explain: the chosen model if it is one, else a random GPT-2-shaped stand-in."""
    ours = own_gpt(lm.model)
    if ours is not None:
        return Subject(ours, lm.tokenizer, label_of(lm.source), False, "model")
    size = "gpt2" if full_size else "gpt2-reduced"
    _, ours = _pair(size)
    c = ours.cfg
    family = backend_of(lm.model).info().family
    label = t(f"architecture.stand_in_{size}", family=family, d=c.d_model, layers=c.n_layers,
              heads=c.n_heads, vocab=f"{c.vocab_size:,}".replace(",", " "), ctx=c.context_length)
    return Subject(ours, _gpt2_tokenizer(), label, True, size)


def encode(subj: Subject, text: str) -> tuple[list[int], str | None]:
    ids = subj.tokenizer.encode(text)
    return fit_context(ids, subj.model.cfg.context_length)


def token_text(subj: Subject, token_id: int | None) -> str:
    return "—" if token_id is None else f"“{visible(subj.tokenizer.decode([token_id]))}”"


# --------------------------------------------------------------------- tables
def shapes_table(steps: list[arch.ShapeStep]) -> pd.DataFrame:
    return pd.DataFrame({
        t("architecture.col_step"): [s.path for s in steps],
        t("architecture.col_module"): [s.module for s in steps],
        t("architecture.col_symbolic"): [arch.symbolic_shape(s.path) for s in steps],
        t("architecture.col_shape"): [str(tuple(s.shape)) for s in steps],
        t("architecture.col_params"): [f"{s.params:,}".replace(",", " ") for s in steps],
    })


def compact_shapes(steps: list[arch.ShapeStep]) -> pd.DataFrame:
    """Two columns for the narrow panel next to the code: the step and its shape in symbols = numbers."""
    return pd.DataFrame({
        t("architecture.col_step"): [s.path for s in steps],
        t("architecture.col_symbolic"): [f"{arch.symbolic_shape(s.path)} = {tuple(s.shape)}".replace(", ", ",")
                                         for s in steps],
    })


def table_height(n_rows: int, cap: int = 900) -> int:
    return min(cap, 38 + 35 * n_rows)


def module_steps(name: str, steps: list[arch.ShapeStep]) -> list[arch.ShapeStep]:
    keep = MODULE_SITES[name]
    return [s for s in steps if keep(s.path)]


def params_table(model: GPT) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    rows = arch.param_rows(model)
    total = sum(r.params for r in rows)

    def frame(items):
        return pd.DataFrame({
            t("architecture.col_module_path"): [r.path for r in items],
            t("architecture.col_module"): [r.module for r in items],
            t("architecture.col_params"): [r.params for r in items],
            t("architecture.col_share"): [f"{r.params / total:.1%}" for r in items],
            t("architecture.col_note"): [t("architecture.tied", other=r.shared_with) if r.shared_with else ""
                                         for r in items],
        })
    return frame(rows), frame(arch.block_rows(model, 0)), total


def params_figure(model: GPT, title: str):
    """Parameters per part of the model (embeddings, all blocks, final norm, head) as bars."""
    rows = arch.param_rows(model)
    blocks = sum(r.params for r in rows if r.path.startswith("blocks."))
    groups = [("tok_emb", rows[0].params), ("pos_emb", rows[1].params),
              (f"blocks × {len(model.blocks)}", blocks), ("final_norm", rows[-2].params),
              ("out_head", rows[-1].params)]
    return param_bars([g[0] for g in groups], [g[1] for g in groups], [human(g[1]) for g in groups], title)


# --------------------------------------------------------------------- parity
@st.cache_data(max_entries=8, show_spinner=False)
def _parity_model(_model, model_key: str, ids: tuple[int, ...]) -> arch.ParityResult:
    return arch.parity_same_weights(_model, list(ids))


@st.cache_data(max_entries=4, show_spinner=False)
def _parity_random(size: str, ids: tuple[int, ...]) -> arch.ParityResult:
    return arch.parity_random(size, seed=0, ids=list(ids), pair=_pair(size))


def parity(subj: Subject, model_key: str, ids: list[int]) -> tuple[arch.ParityResult, str]:
    """The parity result and a sentence saying honestly what was compared."""
    if subj.stand_in:
        return _parity_random(subj.size, tuple(ids)), t(f"architecture.parity_what_{subj.size}")
    return _parity_model(subj.model, model_key, tuple(ids)), t("architecture.parity_what_model", label=subj.label)


# ------------------------------------------------------------ last position
@st.cache_data(max_entries=8, show_spinner=False)
def _walk(_model, model_key: str, ids: tuple[int, ...]) -> arch.NextTokenWalk:
    with torch.inference_mode():
        return arch.last_position_walk(_model, list(ids), k=10)


def walk(subj: Subject, model_key: str, ids: list[int]):
    w = _walk(subj.model, f"{model_key}|{subj.size}", tuple(ids))
    positions = pd.DataFrame({
        t("architecture.col_pos"): [r["position"] for r in w.per_position],
        t("architecture.col_input"): [token_text(subj, r["input_id"]) for r in w.per_position],
        t("architecture.col_predicts"): [token_text(subj, r["predicted_id"]) for r in w.per_position],
        t("architecture.col_actual"): [token_text(subj, r["actual_next_id"]) if r["actual_next_id"] is not None
                                       else t("architecture.unknown_next") for r in w.per_position],
        t("architecture.col_used"): ["" if r["actual_next_id"] is not None else "✓" for r in w.per_position],
    })
    labels = [token_text(subj, r["id"]) for r in w.top]
    return w, positions, labels, [r["prob"] for r in w.top]


@st.cache_data(max_entries=8, show_spinner=False)
def _shapes(_model, model_key: str, ids: tuple[int, ...]) -> list[arch.ShapeStep]:
    with torch.inference_mode():
        return arch.live_shapes(_model, list(ids))


def shapes(subj: Subject, model_key: str, ids: list[int]) -> list[arch.ShapeStep]:
    return _shapes(subj.model, f"{model_key}|{subj.size}", tuple(ids))


def is_random(lm, subj: Subject) -> bool:
    return subj.stand_in or lm.source.kind == "random"


# ------------------------------------------------------------------ the page
def is_own_gpt(lm) -> bool:
    return own_gpt(lm.model) is not None


def live_shapes_or_explain(subj: Subject, model_key: str, ids: list[int]) -> list[arch.ShapeStep] | None:
    """The shapes of one forward pass, or None with the reason shown in the user's language."""
    return attempt(st, shapes, subj, model_key, ids, wrap="architecture.error")


def render_modules(steps: list[arch.ShapeStep]) -> None:
    """Each module's real source next to the live shapes of its steps."""
    st.subheader(t("architecture.modules_header"))
    for name in arch.MODULE_NAMES:
        with st.expander(name, expanded=name == "MultiHeadAttention"):
            st.markdown(t(f"architecture.mod_{name}"))
            code_col, shape_col = st.columns([2, 1])
            source = arch.module_source(name)
            code_col.code(source, language="python", wrap_lines=True, height=min(560, 60 + 20 * source.count("\n")))
            code_col.caption(t("architecture.code_caption", name=name, file="gpt_core/model.py"))
            shape_col.markdown(f"**{t('architecture.shapes_for')}**")
            shape_col.dataframe(compact_shapes(module_steps(name, steps)), hide_index=True, width="stretch")


def render_params(subj: Subject) -> None:
    st.subheader(t("architecture.params_header"))
    top, block0, total = params_table(subj.model)
    left, right = st.columns([3, 2])
    left.dataframe(top, hide_index=True, width="stretch")
    right.plotly_chart(params_figure(subj.model, t("architecture.params_fig")), width="stretch")
    st.caption(t("architecture.params_total", total=f"{total:,}".replace(",", " "),
                 check=f"{subj.model.num_parameters():,}".replace(",", " ")))
    with st.expander(t("architecture.block_detail")):
        st.dataframe(block0, hide_index=True, width="stretch")


def render_parity(subj: Subject, model_key: str, ids: list[int]) -> None:
    st.subheader(t("architecture.parity_header"))
    with st.spinner():
        result, what = parity(subj, model_key, ids)
    key = "parity_ok" if result.ok else "parity_bad"
    st.badge(t(f"architecture.{key}", diff=f"{result.max_abs_diff:.1e}", tol=f"{result.tolerance:.0e}"),
             icon=":material/check_circle:" if result.ok else ":material/error:",
             color="green" if result.ok else "red")
    st.caption(t("architecture.parity_detail", what=what, n=result.n_tokens, scale=result.max_abs_logit,
                 seconds=result.seconds))


def render_last_position(subj: Subject, model_key: str, ids: list[int]) -> None:
    """Only the last position's logits choose the next token."""
    st.subheader(t("architecture.next_header"))
    st.markdown(t("architecture.next_help"))
    w, positions, labels, probs = walk(subj, model_key, ids)
    st.markdown(t("architecture.next_shapes", full=w.logits_shape, last=w.last_shape, v=subj.model.cfg.vocab_size))
    st.dataframe(positions, hide_index=True, width="stretch")
    st.caption(t("architecture.last_only", diff=w.last_only_diff))
    left, right = st.columns([3, 2])
    left.plotly_chart(prob_bars(labels, probs, t("architecture.top_title"), highlight=0), width="stretch")
    right.success(t("architecture.greedy", token=labels[0]))
