"""Helpers of the Next-token page: one distribution, each processor's effect, choosing, history, guessing.

The history of chosen tokens lives in plain session keys (``next_token.*``), so
it survives reruns; buttons change it through callbacks that run before the page.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from gpt_core.trace import next_token_logits

from .decoding_view import Checked
from .i18n import t
from .tokens_view import token_label, visible

HISTORY = "next_token.history"   # list of dicts, one per chosen token
BASE = "next_token.base"         # (model key, prompt ids) the history belongs to
GUESS = "next_token.guess"       # {"ids": tuple, **Guess} once the student revealed
MAX_SEED = 2**31 - 1


@st.cache_data(max_entries=64, show_spinner=False)
def last_logits(_model, model_key: str, ids: tuple) -> np.ndarray:
    """Raw scores (V,) the model gives to every token after ``ids``."""
    with torch.inference_mode():
        return next_token_logits(_model, list(ids)).float().cpu().numpy()


def entropy(probs: torch.Tensor) -> float:
    """Entropy in nats (removed tokens, of probability 0, count for nothing)."""
    return float(torch.special.entr(probs.double()).sum())


def rank_of(probs: torch.Tensor, token_id: int) -> int:
    """1 + the number of tokens strictly more probable than ``token_id``."""
    return int((probs > probs[token_id]).sum()) + 1


@dataclass
class Distribution:
    ids: list[int]
    logits: torch.Tensor          # (V,) raw scores
    raw: torch.Tensor             # softmax of the raw scores
    final: torch.Tensor           # after every processor, renormalised
    views: list                   # gpt_core.decoding.StepView, one per processor
    greedy: bool

    @property
    def entropy_raw(self) -> float:
        return entropy(self.raw)

    @property
    def entropy_final(self) -> float:
        return entropy(self.final)


def distribution_from_logits(logits, ids: list[int], checked: Checked) -> Distribution:
    from gpt_core.decoding import explain_processors

    logits = torch.as_tensor(logits).float()
    raw = logits.softmax(-1)
    views = explain_processors(logits, checked.processors, ids) if checked.processors else []
    final = views[-1].probs_after if views else raw
    if checked.greedy:  # temperature 0: all the mass on the most probable token
        final = torch.zeros_like(final).scatter(0, final.argmax().reshape(1), 1.0)
    return Distribution(list(ids), logits, raw, final, views, checked.greedy)


def distribution(lm, ids: list[int], checked: Checked) -> Distribution:
    return distribution_from_logits(last_logits(lm.model, lm.source.key, tuple(ids)), ids, checked)


def shown_ids(d: Distribution, n: int) -> list[int]:
    """The n most probable raw tokens, plus any token of the final top n missing from them (raw order)."""
    ids = d.raw.topk(min(n, d.raw.numel())).indices.tolist()
    extra = [i for i in d.final.topk(min(n, d.final.numel())).indices.tolist() if i not in ids and d.final[i] > 0]
    return sorted(ids + extra, key=lambda i: (-float(d.raw[i]), i))


def top_table(tokenizer, d: Distribution, n: int) -> pd.DataFrame:
    """Seed 003's top-10 table, with the raw score and the probability after the processors."""
    rows = shown_ids(d, n)
    return pd.DataFrame({
        t("common.rank"): [rank_of(d.raw, i) for i in rows],
        t("common.token"): [token_label(tokenizer, i) for i in rows],
        t("common.logit"): [round(float(d.logits[i]), 2) for i in rows],
        t("next_token.col_softmax"): [f"{float(d.raw[i]):.2%}" for i in rows],
        t("next_token.col_after"): [f"{float(d.final[i]):.2%}" if d.final[i] > 0 else "—" for i in rows],
    })


def stage_table(d: Distribution) -> pd.DataFrame:
    return pd.DataFrame([{
        t("next_token.col_processor"): t(f"next_token.proc_{v.name.replace(' ', '_').replace('-', '_')}"),
        t("next_token.col_param"): v.label,
        t("next_token.col_kept"): v.n_kept,
        t("next_token.col_removed"): f"{v.removed_mass:.1%}",
        t("next_token.col_h_before"): round(v.entropy_before, 3),
        t("next_token.col_h_after"): round(v.entropy_after, 3),
    } for v in d.views])


def stages(tokenizer, d: Distribution, n: int) -> tuple[list[str], list[dict]]:
    """Labels of the shown tokens and, per stage (softmax, then each processor), before/after/kept."""
    rows = shown_ids(d, n)
    labels = [token_label(tokenizer, i) for i in rows]
    out = [{"title": t("next_token.stage_raw", h=d.entropy_raw), "before": [float(d.raw[i]) for i in rows],
            "after": [float(d.raw[i]) for i in rows], "kept": [True] * len(rows)}]
    for k, v in enumerate(d.views, 1):
        name = t(f"next_token.proc_{v.name.replace(' ', '_').replace('-', '_')}")
        out.append({
            "title": t("next_token.stage", k=k, name=name, label=v.label, removed=v.removed_mass,
                       h0=v.entropy_before, h1=v.entropy_after, n=v.n_kept),
            "before": [float(v.probs_before[i]) for i in rows], "after": [float(v.probs_after[i]) for i in rows],
            "kept": [bool(v.kept[i]) for i in rows],
        })
    if d.greedy:  # temperature 0: the last step keeps only the argmax
        before = d.views[-1].probs_after if d.views else d.raw
        out.append({"title": t("next_token.stage_greedy", k=len(out)), "before": [float(before[i]) for i in rows],
                    "after": [float(d.final[i]) for i in rows], "kept": [bool(d.final[i] > 0) for i in rows]})
    return labels, out


# ================================================================== choosing
def choose(d: Distribution, how: str, seed: int, step: int) -> dict:
    """Greedy (argmax) or a draw with seed ``seed + step``: the same seed replays the same tokens."""
    if how == "greedy" or d.greedy:
        token, used = int(d.final.argmax()), None
    else:
        gen = torch.Generator().manual_seed(int(seed) + step)
        token, used = int(torch.multinomial(d.final, 1, generator=gen)), int(seed) + step
    return {"id": token, "prob": float(d.final[token]), "rank": rank_of(d.final, token),
            "entropy": d.entropy_final, "how": "greedy" if used is None else "sample", "seed": used}


def sync_base(model_key: str, prompt_ids: list[int]) -> bool:
    """Start a new history when the prompt or the model changed; True if an old one was dropped."""
    base = (model_key, tuple(prompt_ids))
    if st.session_state.get(BASE) == base:
        return False
    dropped = bool(st.session_state.get(HISTORY))
    st.session_state[BASE], st.session_state[HISTORY], st.session_state[GUESS] = base, [], None
    return dropped


def history() -> list[dict]:
    return st.session_state.setdefault(HISTORY, [])


def on_choose(lm, ids: list[int], checked: Checked, how: str, seed: int) -> None:
    hist = history()
    hist.append(choose(distribution(lm, ids, checked), how, seed, len(hist)))
    st.session_state[GUESS] = None


def on_undo() -> None:
    if history():
        history().pop()
    st.session_state[GUESS] = None


def on_reset() -> None:
    st.session_state[HISTORY], st.session_state[GUESS] = [], None


def history_frame(tokenizer, hist: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{
        t("next_token.col_step"): i + 1,
        t("common.token"): token_label(tokenizer, h["id"]),
        t("common.prob"): f"{h['prob']:.2%}",
        t("common.rank"): h["rank"],
        t("next_token.col_entropy"): round(h["entropy"], 3),
        t("next_token.col_how"): t("next_token.how_greedy") if h["how"] == "greedy"
        else t("next_token.how_sample", seed=h["seed"]),
    } for i, h in enumerate(hist)])


def sequence_parts(tokenizer, hist: list[dict]) -> tuple[list[str], list[float]]:
    return [visible(tokenizer.decode([h["id"]])) for h in hist], [h["prob"] for h in hist]


# =================================================================== guessing
@dataclass
class Guess:
    id: int
    label: str
    rank: int                     # in the raw distribution (the model's own prediction)
    prob: float
    note: str | None = None       # 'multi' (first token kept) | 'spaced' (a leading space helped)


def candidates(d: Distribution, n: int) -> list[int]:
    """The top n raw tokens, shuffled the same way every time for this context."""
    ids = d.raw.topk(min(n, d.raw.numel())).indices.tolist()
    random.Random(zlib.crc32(repr(d.ids).encode())).shuffle(ids)
    return ids


def resolve_guess(tokenizer, probs: torch.Tensor, typed: str | None = None, picked: int | None = None) -> Guess | None:
    """A picked candidate, or typed text (its first token; with a leading space if that ranks better)."""
    if picked is not None:
        return Guess(picked, token_label(tokenizer, picked), rank_of(probs, picked), float(probs[picked]))
    typed = typed or ""
    best = None
    for variant in (typed, " " + typed) if typed.strip() and not typed.startswith(" ") else (typed,):
        ids = tokenizer.encode(variant) if variant.strip() else []
        if not ids:
            continue
        first = ids[0]
        note = "multi" if len(ids) > 1 else ("spaced" if variant is not typed else None)
        g = Guess(first, token_label(tokenizer, first), rank_of(probs, first), float(probs[first]), note)
        if best is None or g.rank < best.rank:
            best = g
    return best


def revealed(ids: list[int]) -> dict | None:
    state = st.session_state.get(GUESS)
    return state if state and tuple(state["ids"]) == tuple(ids) else None


def reveal(ids: list[int], guess: Guess) -> None:
    st.session_state[GUESS] = {"ids": tuple(ids), **asdict(guess)}
