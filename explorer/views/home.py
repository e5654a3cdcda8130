"""Helpers of the Home page: model card figures and the quick look."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from gpt_core.backend import backend_of
from gpt_core.trace import top_next_tokens

from explorer.compute import compute_slot
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import decimal, number, percent
from explorer.ui.text_input import fit_context
from explorer.ui.token_chips import token_label


def human(n: float, unit: str = "") -> str:
    for factor, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if n >= factor:
            return f"{decimal(n / factor, 1)}{suffix}{unit}"
    return f"{n:.0f} {unit}".strip()


def model_card_rows(lm) -> list[tuple[str, str]]:
    info = backend_of(lm.model).info()
    heads = str(info.n_heads) if info.n_kv_heads == info.n_heads else f"{info.n_heads} (K/V : {info.n_kv_heads})"
    return [
        (t("home.params"), human(info.n_params)),
        (t("home.layers"), str(info.n_layers)),
        (t("home.heads"), heads),
        (t("home.d_model"), str(info.d_model)),
        (t("home.vocab"), number(info.vocab_size, current_lang())),
        (t("home.context"), number(info.context_length, current_lang())),
        (t("home.positions"), t(f"home.pos_{info.position_kind}")),
        (t("home.load_time"), f"{decimal(lm.load_seconds, 1)} s"),
        (t("home.memory"), human(lm.memory_bytes, "o" if current_lang() == "fr" else "B")),  # Mo / MB
    ]


@dataclass
class QuickLook:
    text: str
    pieces: list
    labels: list[str]
    probs: list[float]
    table: pd.DataFrame
    notice: str | None


@st.cache_data(max_entries=512, show_spinner=False)
def next_tokens(_model, model_key: str, ids: tuple, k: int) -> list[dict]:
    """The model's top-``k`` next tokens after ``ids``: one forward per model and text for the whole server
    (thirty students opening Home with the same sentence cost one)."""
    with compute_slot():
        return top_next_tokens(backend_of(_model).next_token_logits(list(ids)), k)


def quick_look(lm, text: str, k: int = 10) -> QuickLook:
    pieces = lm.tokenizer.tokenize_for_model(text)  # Gemma's BOS first, shown as a special chip
    backend = backend_of(lm.model)
    ids, notice = fit_context([p.id for p in pieces], backend.context_length)
    top = next_tokens(lm.model, f"{lm.source.key}@{id(lm.model)}", tuple(ids), k)
    labels = [token_label(lm.tokenizer, row["id"]) for row in top]
    table = pd.DataFrame({
        t("common.rank"): [r["rank"] for r in top],
        t("common.token"): labels,
        t("common.prob"): [percent(r["prob"], 2) for r in top],
        t("common.logit"): [decimal(r["logit"], 2) for r in top],
    })
    return QuickLook(text, pieces, labels, [r["prob"] for r in top], table, notice)


def licences() -> list[tuple[str, str, str]]:
    """(model, licence, where its text is) for each embedded model that is installed."""
    from gpt_core import embedded

    rows = []
    for pack in embedded.PACKS.values():
        if embedded.installed(pack):
            where = embedded.licence_path(pack)
            rows.append((pack.display, pack.licence, str(where) if where else pack.pip.split()[-1]))
    return rows
