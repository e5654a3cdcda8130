"""The Next-token page: one distribution, each processor's effect, choosing, history, guessing.

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

from gpt_core.backend import backend_of
from gpt_core.decoding import explain_processors

from explorer.compute import compute_slot
from explorer.figures.bars import fixed, percent, prob_bars
from explorer.figures.decoding import history_chart, stage_bars, tokens_html
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import number
from explorer.ui.state import persisted
from explorer.ui.text_input import fit_context
from explorer.ui.token_chips import token_label, visible
from explorer.views.decoding_settings import (Checked, check_settings, context_of, localized, prepare, show,
                                              vocab_of)

HISTORY = "next_token.history"   # list of dicts, one per chosen token
BASE = "next_token.base"         # (model key, prompt ids) the history belongs to
GUESS = "next_token.guess"       # {"ids": tuple, **Guess} once the student revealed
MAX_SEED = 2**31 - 1


@st.cache_data(max_entries=64, show_spinner=False)
def last_logits(_model, model_key: str, ids: tuple) -> np.ndarray:
    """Raw scores (V,) the model gives to every token after ``ids``."""
    with compute_slot(), torch.inference_mode():
        return backend_of(_model).next_token_logits(list(ids)).float().cpu().numpy()


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
    """The classic top-10 table of the next token, with the raw score and the probability after the processors."""
    rows, lang = shown_ids(d, n), current_lang()
    return pd.DataFrame({
        t("common.rank"): [rank_of(d.raw, i) for i in rows],
        t("common.token"): [token_label(tokenizer, i) for i in rows],
        t("common.logit"): [fixed(float(d.logits[i]), 2, lang) for i in rows],
        t("next_token.col_softmax"): [percent(float(d.raw[i]), 2, lang) for i in rows],
        t("next_token.col_after"): [percent(float(d.final[i]), 2, lang) if d.final[i] > 0 else "—" for i in rows],
    })


def setting_label(view, lang: str) -> str:
    """A processor's setting as gpt_core writes it ("T=0.8", "p=0.9"), with a decimal comma in French."""
    return view.label.replace(".", ",") if lang == "fr" else view.label


def stage_table(d: Distribution) -> pd.DataFrame:
    lang = current_lang()
    return pd.DataFrame([{
        t("next_token.col_processor"): t(f"next_token.proc_{v.name.replace(' ', '_').replace('-', '_')}"),
        t("next_token.col_param"): setting_label(v, lang),
        t("next_token.col_kept"): number(v.n_kept, lang),
        t("next_token.col_removed"): percent(v.removed_mass, 1, lang),
        t("next_token.col_h_before"): fixed(v.entropy_before, 3, lang),
        t("next_token.col_h_after"): fixed(v.entropy_after, 3, lang),
    } for v in d.views])


def stages(tokenizer, d: Distribution, n: int) -> tuple[list[str], list[dict]]:
    """Labels of the shown tokens and, per stage (softmax, then each processor), before/after/kept."""
    rows, lang = shown_ids(d, n), current_lang()
    labels = [token_label(tokenizer, i) for i in rows]
    out = [{"title": t("next_token.stage_raw", h=fixed(d.entropy_raw, 2, lang)),
            "before": [float(d.raw[i]) for i in rows],
            "after": [float(d.raw[i]) for i in rows], "kept": [True] * len(rows)}]
    for k, v in enumerate(d.views, 1):
        name = t(f"next_token.proc_{v.name.replace(' ', '_').replace('-', '_')}")
        out.append({
            "title": t("next_token.stage", k=k, name=name, label=setting_label(v, lang),
                       removed=percent(v.removed_mass, 1, lang),
                       h0=fixed(v.entropy_before, 2, lang), h1=fixed(v.entropy_after, 2, lang),
                       n=number(v.n_kept, lang)),
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
    lang = current_lang()
    return pd.DataFrame([{
        t("next_token.col_step"): i + 1,
        t("common.token"): token_label(tokenizer, h["id"]),
        t("common.prob"): percent(h["prob"], 2, lang),
        t("common.rank"): h["rank"],
        t("next_token.col_entropy"): fixed(h["entropy"], 3, lang),
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


# =================================================================== the page
@dataclass
class NextSettings:
    prompt: str
    temperature: object
    top_k: object
    top_p: object
    min_p: object
    repetition_penalty: object
    top_n: int
    guess_mode: bool


def settings_form() -> NextSettings:
    """The prompt and the processors' settings, each kept across page switches (``next_token.<name>``)."""
    prompt = persisted(st.text_area, t("next_token.prompt"), "next_token.prompt",
                       localized("next_token.prompt", "next_token.default_prompt"), height=80)
    c = st.columns(6)
    temperature = persisted(c[0].number_input, t("decoding.temperature"), "next_token.temperature", 0.8, step=0.1,
                            format="%.2f", help=t("decoding.temperature_help"))
    top_k = persisted(c[1].number_input, t("decoding.top_k"), "next_token.top_k", None, step=1,
                      placeholder=t("decoding.off"), help=t("decoding.top_k_help"))
    top_p = persisted(c[2].number_input, t("decoding.top_p"), "next_token.top_p", 0.9, step=0.05, format="%.2f",
                      help=t("decoding.top_p_help"))
    min_p = persisted(c[3].number_input, t("decoding.min_p"), "next_token.min_p", 0.0, step=0.05, format="%.2f",
                      help=t("decoding.min_p_help"))
    penalty = persisted(c[4].number_input, t("decoding.rep_penalty"), "next_token.rep_penalty", 1.0, step=0.1,
                        format="%.2f", help=t("decoding.rep_penalty_help"))
    top_n = persisted(c[5].slider, t("next_token.top_n"), "next_token.top_n", 10, min_value=3, max_value=30)
    guess_mode = persisted(st.toggle, t("next_token.guess_mode"), "next_token.guess_mode", False,
                           help=t("next_token.guess_help"))
    return NextSettings(prompt, temperature, top_k, top_p, min_p, penalty, top_n, guess_mode)


@dataclass
class Step:
    """Where the sequence stands: its ids (prompt + chosen tokens), their distribution, the settings used."""

    ids: list[int]
    d: Distribution
    checked: Checked
    hist: list[dict]


def current_step(lm, s: NextSettings) -> Step | None:
    """Check the prompt and the settings (each refusal said); draw the sequence so far. None: nothing to do."""
    tok = lm.tokenizer
    ctx = context_of(lm.model)
    prompt = prepare(tok, s.prompt, ctx)
    show(st, prompt.messages)
    if sync_base(lm.source.key, prompt.ids):
        st.info(t("next_token.history_dropped"))
    checked = check_settings(vocab_of(lm.model), s.temperature, s.top_k, s.top_p, s.min_p, s.repetition_penalty)
    show(st, checked.messages)
    if not checked.ok:
        return None
    hist = history()
    ids, notice = fit_context(prompt.ids + [h["id"] for h in hist], ctx)
    if notice:
        st.warning(notice)
    d = distribution(lm, ids, checked)
    texts, probs = sequence_parts(tok, hist)
    st.markdown(f"**{t('next_token.sequence', n=len(ids))}**")
    st.html(tokens_html(prompt.text, texts, probs, current_lang()))
    if hist and hist[-1]["id"] == tok.eos_id:
        st.info(t("next_token.eos_chosen", token=token_label(tok, tok.eos_id)))
    return Step(ids, d, checked, hist)


def render_guess(tok, step: Step, top_n: int, guess_mode: bool) -> bool:
    """Guess mode: the distribution stays hidden until the student commits. True while it is hidden."""
    ids, d = step.ids, step.d
    hidden = False
    if guess_mode and revealed(ids) is None:
        st.subheader(t("next_token.guess_header"))
        cands = candidates(d, top_n)
        picked = st.radio(t("next_token.pick"), [None, *cands], horizontal=True, key=f"_w.next_token.pick.{len(ids)}",
                          format_func={i: t("next_token.pick_none") if i is None else token_label(tok, i)
                                       for i in [None, *cands]}.get)
        g1, g2 = st.columns([3, 1], vertical_alignment="bottom")
        typed = g1.text_input(t("next_token.type_guess"), key=f"_w.next_token.typed.{len(ids)}",
                              help=t("next_token.type_help"))
        if g2.button(t("next_token.reveal"), type="primary", width="stretch"):
            guess = resolve_guess(tok, d.raw, typed, picked)
            if guess is None:
                st.warning(t("next_token.guess_nothing"))
            else:
                reveal(ids, guess)
        hidden = revealed(ids) is None
        if hidden:
            st.info(t("next_token.hidden"))
    done = revealed(ids) if guess_mode else None
    if done:
        key = "next_token.guess_top" if done["rank"] == 1 else "next_token.guess_result"
        st.success(t(key, token=done["label"], rank=done["rank"],
                     prob=percent(done["prob"], 1 if done["rank"] == 1 else 2, current_lang())))
        if done["note"]:
            st.caption(t(f"next_token.guess_note_{done['note']}"))
    return hidden


def render_distribution(tok, d: Distribution, top_n: int) -> None:
    """The top-N table and the raw softmax, then each processor's effect."""
    labels, stage_list = stages(tok, d, top_n)
    lang = current_lang()
    left, right = st.columns([1, 1])
    with left:
        st.markdown(f"**{t('next_token.top_header', n=top_n)}**")
        st.dataframe(top_table(tok, d, top_n), hide_index=True, width="stretch", height=35 * (len(labels) + 1) + 3)
        st.caption(t("next_token.entropy", h0=fixed(d.entropy_raw, 2, lang), h1=fixed(d.entropy_final, 2, lang),
                     v=number(d.raw.numel(), lang)))
    right.plotly_chart(prob_bars(labels, stage_list[0]["before"], t("next_token.raw_title",
                                                                   h=fixed(d.entropy_raw, 2, lang)), lang=lang),
                       width="stretch", key="next_token.raw_fig")
    st.markdown(f"**{t('next_token.stages_header')}**")
    if len(stage_list) > 1:
        st.plotly_chart(stage_bars(labels, stage_list[1:], t("next_token.before"), t("next_token.after"),
                                   t("next_token.removed"), cols=3, lang=lang), width="stretch",
                        key="next_token.stage_fig")
        if d.views:
            st.dataframe(stage_table(d), hide_index=True, width="stretch")
    else:
        st.caption(t("next_token.no_processor"))


def render_choose(lm, step: Step, hidden: bool) -> None:
    """Greedy or a seeded draw appends a token; undo and reset."""
    st.subheader(t("next_token.choose_header"))
    hist, ids, checked = step.hist, step.ids, step.checked
    c = st.columns([1.3, 1, 1, 1, 1], vertical_alignment="bottom")
    seed = persisted(c[0].number_input, t("decoding.seed"), "next_token.seed", 0, min_value=0, max_value=MAX_SEED,
                     step=1, help=t("next_token.seed_help"))
    c[1].button(t("next_token.greedy_btn"), on_click=on_choose, args=(lm, ids, checked, "greedy", seed),
                disabled=hidden, width="stretch", key="next_token.greedy_btn")
    c[2].button(t("next_token.sample_btn", seed=seed + len(hist)), on_click=on_choose,
                args=(lm, ids, checked, "sample", seed), disabled=hidden, width="stretch", key="next_token.sample_btn")
    c[3].button(t("next_token.undo"), on_click=on_undo, disabled=not hist, width="stretch", key="next_token.undo")
    c[4].button(t("next_token.reset"), on_click=on_reset, disabled=not hist, width="stretch", key="next_token.reset")
    if checked.greedy:
        st.caption(t("next_token.sample_is_greedy"))


def render_history(tok, hist: list[dict]) -> None:
    if not hist:
        return
    st.subheader(t("next_token.history_header", n=len(hist)))
    a, b = st.columns([5, 3])
    a.dataframe(history_frame(tok, hist), hide_index=True, width="stretch")
    b.plotly_chart(history_chart([h["prob"] for h in hist], [h["entropy"] for h in hist], t("common.prob"),
                                 t("next_token.col_entropy"), t("next_token.history_chart"), current_lang()),
                   width="stretch")
