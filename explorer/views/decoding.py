"""The Decoding lab: greedy, sampling and beam search side by side, the beam tree step by step,
and the classic failure cases (greedy loops, repeating beams) one click away.

Settings are checked in :mod:`explorer.views.decoding_settings`; generation is
cached per model, prompt and settings; figures and HTML come from
:mod:`explorer.figures.decoding`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import streamlit as st
import torch

from gpt_core import decoding as dec
from gpt_core.backend import backend_of
from gpt_core.errors import GPTCoreError

from explorer.compute import compute_slot
from explorer.figures.bars import fixed, percent
from explorer.figures.decoding import TreeNode, beam_tree, lane_bars, tokens_html, tree_nodes
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import decimal, plain, say
from explorer.ui.state import persisted, set_value
from explorer.ui.token_chips import visible
from explorer.views.decoding_settings import (FIELDS, MAX_NEW_UI, Checked, Prompt, check_beams, check_length,
                                              check_settings, context_of, fmt, localized, prepare,
                                              processors_from_spec, show, vocab_of)

GPT2_VOCAB = 50257
TREE_WINDOW = 10        # steps drawn at once in the beam tree
PRESETS = ("greedy_loop", "greedy_fix", "beam_loop", "beam_fix")


# ================================================================ generation (cached)
@st.cache_data(max_entries=32, show_spinner=False)
def run_greedy(_model, model_key: str, ids: tuple, max_new: int, spec: tuple, eos: int | None):
    procs, _ = processors_from_spec(spec, vocab_of(_model))
    with compute_slot():
        return dec.greedy(_model, list(ids), max_new, eos_id=eos, processors=procs)


@st.cache_data(max_entries=32, show_spinner=False)
def run_sample(_model, model_key: str, ids: tuple, max_new: int, spec: tuple, seed: int, eos: int | None):
    procs, greedy = processors_from_spec(spec, vocab_of(_model))
    with compute_slot():
        if greedy:
            return dec.greedy(_model, list(ids), max_new, eos_id=eos, processors=procs)
        return dec.sample(_model, list(ids), max_new, procs, seed, eos_id=eos)


@st.cache_data(max_entries=16, show_spinner=False)
def run_beam(_model, model_key: str, ids: tuple, num_beams: int, max_new: int, length_penalty: float,
             spec: tuple, eos: int | None):
    procs, _ = processors_from_spec(spec, vocab_of(_model))
    with compute_slot():
        return dec.beam_search(_model, list(ids), num_beams, max_new, length_penalty=length_penalty,
                               eos_id=eos, processors=procs)


@torch.inference_mode()
def raw_logprobs(model, prompt_ids: list[int], new_ids: list[int]) -> list[float]:
    """Log-probability of each new token under the raw model (no processor): comparable across strategies."""
    if not new_ids:
        return []
    backend = backend_of(model)
    seq = torch.tensor([list(prompt_ids) + list(new_ids)], device=backend.device)
    logits = backend.logits(seq[:, :-1])
    logp = logits[0, len(prompt_ids) - 1:].float().log_softmax(-1)  # (n_new, V)
    return logp.gather(1, seq[0, len(prompt_ids):, None].to(logp.device))[:, 0].tolist()


@st.cache_data(max_entries=64, show_spinner=False)
def cached_raw_logprobs(_model, model_key: str, prompt_ids: tuple, new_ids: tuple) -> list[float]:
    with compute_slot():
        return raw_logprobs(_model, list(prompt_ids), list(new_ids))


# ====================================================================== lanes
@dataclass
class Lane:
    """One strategy's output, ready to draw in a column."""

    new_ids: list[int]
    texts: list[str]              # visible text of each new token
    probs: list[float]            # raw-model probability of each new token
    strategy_logprob: float       # sum of log-probs under the distribution it was chosen from
    raw_logprob: float            # sum of log-probs under the raw model
    stop_reason: str
    repeat_share: float           # share of generated 3-grams already seen earlier
    text: str


def repeat_share(ids: list[int], start: int, n: int = 3) -> float:
    """Share of the n-grams ending at positions >= ``start`` that already ended at an earlier position."""
    seen: set[tuple[int, ...]] = set()
    total = repeated = 0
    for end in range(n - 1, len(ids)):
        gram = tuple(ids[end - n + 1:end + 1])
        if end >= start:
            total += 1
            repeated += gram in seen
        seen.add(gram)
    return repeated / total if total else 0.0


def make_lane(tokenizer, prompt_ids: list[int], new_ids: list[int], strategy_logprobs: list[float],
              raw_lps: list[float], stop_reason: str) -> Lane:
    return Lane(
        new_ids=list(new_ids),
        texts=[visible(tokenizer.decode([i])) for i in new_ids],
        probs=[math.exp(x) for x in raw_lps],
        strategy_logprob=float(sum(strategy_logprobs)),
        raw_logprob=float(sum(raw_lps)),
        stop_reason=stop_reason,
        repeat_share=repeat_share(list(prompt_ids) + list(new_ids), len(prompt_ids)),
        text=tokenizer.decode(list(new_ids)),
    )


def beams_at(nodes: list[TreeNode], step: int) -> pd.DataFrame:
    """The live beams after ``step`` (0-based): text so far, sum of log-probs, score."""
    rows = []
    for i, n in enumerate(nodes):
        if n.step != step or not (n.kept or n.finished):
            continue
        tokens, j = [], i
        while j >= 0:
            tokens.append(nodes[j].token)
            j = nodes[j].parent
        rows.append({t("decoding.col_text"): "".join(reversed(tokens)),
                     t("decoding.col_sum"): fixed(n.cumulative, 3, current_lang()),
                     t("decoding.col_score"): fixed(n.score, 3, current_lang()),
                     t("decoding.col_state"): t("decoding.state_finished") if n.finished else t("decoding.state_kept")})
    return pd.DataFrame(rows)


def hypotheses_table(beam, tokenizer) -> pd.DataFrame:
    return pd.DataFrame([{
        t("decoding.col_text"): visible(tokenizer.decode(h.new_ids)),
        t("decoding.col_len"): len(h.new_ids),
        t("decoding.col_sum"): fixed(h.sum_logprob, 3, current_lang()),
        t("decoding.col_score"): fixed(h.score, 3, current_lang()),
        t("decoding.col_end"): t(f"decoding.stop_{h.finished_by}"),
    } for h in beam.sequences])


# =================================================================== presets
def is_gpt2_vocab(tokenizer) -> bool:
    return getattr(tokenizer, "vocab_size", None) == GPT2_VOCAB


# prompts that show the failures on the embedded models (SmolLM2, Gemma 3), in the page's language
PRESET_PROMPTS = {
    "fr": {"greedy": "Le chat est assis sur le tapis. Le chien", "beam": "Quelle est la capitale de l'Australie ?"},
    "en": {"greedy": "The cat sat on the mat. The dog", "beam": "Question: What is the capital of Australia?\nAnswer:"},
}
GPT2_PROMPTS = {"greedy": "Artificial intelligence", "beam": "What is the capital of Australia?"}


def preset(name: str, tokenizer, lang: str = "fr") -> dict:
    """The classic failure cases (greedy loops, repeating beams): the well-known GPT-2 prompts for GPT-2
    (an English model), for other models prompts in the page's language that show the same failures.

    ``*_fix`` presets keep the prompt and add the cure (repetition penalty or no-repeat n-gram).
    """
    gpt2 = is_gpt2_vocab(tokenizer)
    prompts = GPT2_PROMPTS if gpt2 else PRESET_PROMPTS.get(lang, PRESET_PROMPTS["en"])
    base = {"repetition_penalty": 1.0, "no_repeat_ngram": 0, "seed": 0, "temperature": 1.0,
            "top_k": 50, "top_p": 1.0, "length_penalty": 1.0}
    if name.startswith("greedy"):
        base.update(prompt=prompts["greedy"], max_new=50 if gpt2 else 40, beams=3)
        if name == "greedy_fix":
            base.update(repetition_penalty=1.3)
    else:
        base.update(prompt=prompts["beam"], max_new=50 if gpt2 else 30, beams=5)
        if name == "beam_fix":
            base.update(no_repeat_ngram=4)
    return base


def apply_preset(name: str, tokenizer) -> None:
    """Button callback: write the preset into the page's settings (plain keys and widgets alike)."""
    for key, value in preset(name, tokenizer, current_lang()).items():
        set_value(f"decoding.{key}", value)
    st.session_state["decoding.preset"] = name


# ================================================================ the lab run
@dataclass
class LabResult:
    lanes: dict                   # strategy -> Lane
    errors: dict                  # strategy -> message
    beam: object | None = None    # gpt_core.decoding.BeamResult


def run_lab(lm, prompt_ids: list[int], n_new: int, fix: Checked, samp: Checked, seed: int,
            num_beams: int, length_penalty: float, run_beams: bool = True) -> LabResult:
    """Greedy and beam search with the fix processors; sampling with its own settings (and the fix)."""
    model, key, tok = lm.model, lm.source.key, lm.tokenizer
    ids, eos = tuple(prompt_ids), tok.eos_id
    out = LabResult({}, {})
    jobs = {"greedy": fix.ok, "sample": samp.ok, "beam": fix.ok and run_beams}
    for name, ok in jobs.items():
        if not ok:
            continue
        try:
            if name == "beam":
                res = run_beam(model, key, ids, int(num_beams), n_new, float(length_penalty), fix.spec, eos)
                out.beam, best = res, res.best
                new, lps, stop = best.new_ids, best.token_logprobs, best.finished_by
            else:
                res = (run_greedy(model, key, ids, n_new, fix.spec, eos) if name == "greedy"
                       else run_sample(model, key, ids, n_new, samp.spec, int(seed), eos))
                new, lps, stop = res.new_ids, [s.logprob for s in res.steps], res.stop_reason
            raw = cached_raw_logprobs(model, key, ids, tuple(new))
            out.lanes[name] = make_lane(tok, list(ids), new, lps, raw, stop)
        except GPTCoreError as exc:
            out.errors[name] = plain(say(exc))
        except ValueError as exc:   # not one of gpt_core's: name its kind only, never an English sentence
            out.errors[name] = t("common.unexpected", kind=type(exc).__name__)
    return out


def tree_text() -> dict:
    return {k: t(f"decoding.tree_{k}") for k in ("title", "prompt", "step", "kept", "pruned", "best",
                                                 "finished", "hover")}


def strategy_caption(name: str, samp_spec: tuple, num_beams: int, length_penalty: float) -> str:
    if name == "sample":
        s = dict(zip(FIELDS, samp_spec))
        return t("decoding.cap_sample", T=fmt(s["temperature"]),
                 k=fmt(s["top_k"]) if s["top_k"] is not None else "—", p=fmt(s["top_p"]))
    if name == "beam":
        return t("decoding.cap_beam", k=num_beams, lp=fmt(length_penalty))
    return t("decoding.cap_greedy")


# ================================================================== the page
def render_presets(lm) -> None:
    """The classic failure cases and their cures, one button each."""
    st.markdown(f"**{t('decoding.presets')}**")
    for col, name in zip(st.columns(len(PRESETS)), PRESETS):
        col.button(t(f"decoding.preset_{name}"), on_click=apply_preset, args=(name, lm.tokenizer), width="stretch",
                   key=f"decoding.btn_{name}")
    active = st.session_state.get("decoding.preset")
    if active:
        chosen = preset(active, lm.tokenizer, current_lang())
        st.info(t(f"decoding.preset_{active}_help", prompt=plain(chosen["prompt"].replace("\n", " ↵ ")),
                  beams=chosen["beams"]))


@dataclass
class LabSettings:
    """What the user typed, unchecked."""

    prompt: str
    seed: int
    max_new: object
    beams: object
    length_penalty: object
    temperature: object
    top_k: object
    top_p: object
    repetition_penalty: object
    no_repeat_ngram: object


def settings_form() -> LabSettings:
    """The prompt and every setting, each kept across page switches (``decoding.<name>``)."""
    prompt = persisted(st.text_area, t("decoding.prompt"), "decoding.prompt",
                       localized("decoding.prompt", "decoding.default_prompt"), height=80)
    c = st.columns(4)
    seed = persisted(c[0].number_input, t("decoding.seed"), "decoding.seed", 0, min_value=0, max_value=2**31 - 1,
                     step=1, help=t("decoding.seed_help"))
    max_new = persisted(c[1].number_input, t("decoding.max_new"), "decoding.max_new", 20, step=1,
                        help=t("decoding.max_new_help", cap=MAX_NEW_UI))
    beams = persisted(c[2].number_input, t("decoding.beams"), "decoding.beams", 3, step=1,
                      help=t("decoding.beams_help"))
    length_penalty = persisted(c[3].number_input, t("decoding.length_penalty"), "decoding.length_penalty", 1.0,
                               step=0.1, format="%.2f", help=t("decoding.length_penalty_help"))
    c = st.columns(5)
    temperature = persisted(c[0].number_input, t("decoding.temperature"), "decoding.temperature", 1.0, step=0.1,
                            format="%.2f", help=t("decoding.temperature_help"))
    top_k = persisted(c[1].number_input, t("decoding.top_k"), "decoding.top_k", 50, step=1,
                      placeholder=t("decoding.off"), help=t("decoding.top_k_help"))
    top_p = persisted(c[2].number_input, t("decoding.top_p"), "decoding.top_p", 1.0, step=0.05, format="%.2f",
                      help=t("decoding.top_p_help"))
    penalty = persisted(c[3].number_input, t("decoding.rep_penalty"), "decoding.repetition_penalty", 1.0, step=0.1,
                        format="%.2f", help=t("decoding.rep_penalty_fix_help"))
    no_repeat = persisted(c[4].number_input, t("decoding.no_repeat"), "decoding.no_repeat_ngram", 0, step=1,
                          help=t("decoding.no_repeat_help"))
    return LabSettings(prompt, seed, max_new, beams, length_penalty, temperature, top_k, top_p, penalty, no_repeat)


@dataclass
class LabPlan:
    n_new: int
    fix: Checked                  # greedy and beam search: only the cures (penalty, no-repeat n-gram)
    samp: Checked                 # sampling: its own settings, plus the cures
    run_beams: bool
    prompt: Prompt


def plan_lab(lm, s: LabSettings) -> LabPlan | None:
    """Check every value (each refusal said in the user's language); None when nothing can run."""
    ctx, vocab = context_of(lm.model), vocab_of(lm.model)
    n_new, messages = check_length(s.max_new, ctx)
    beam_messages = check_beams(s.beams, vocab)
    fix = check_settings(vocab, None, repetition_penalty=s.repetition_penalty, no_repeat_ngram=s.no_repeat_ngram)
    samp = check_settings(vocab, s.temperature, s.top_k, s.top_p, None, s.repetition_penalty, s.no_repeat_ngram)
    show(st, messages + beam_messages + fix.messages + [m for m in samp.messages if m not in fix.messages])
    if not n_new or not fix.ok:
        return None
    prompt = prepare(lm.tokenizer, s.prompt, ctx, reserve=n_new)
    show(st, prompt.messages)
    return LabPlan(n_new, fix, samp, not beam_messages, prompt)


def run_plan(lm, s: LabSettings, plan: LabPlan) -> LabResult:
    with st.spinner(t("decoding.running")):
        return run_lab(lm, plan.prompt.ids, plan.n_new, plan.fix, plan.samp, s.seed, s.beams, s.length_penalty,
                       run_beams=plan.run_beams)


def render_lanes(lab: LabResult, s: LabSettings, plan: LabPlan) -> None:
    """Greedy, sampling and beam search side by side: text, log-prob, repeats, per-token probabilities."""
    lang = current_lang()
    for col, name in zip(st.columns(3), ("greedy", "sample", "beam")):
        with col:
            st.subheader(t(f"decoding.lane_{name}"))
            st.caption(strategy_caption(name, plan.samp.spec, s.beams, s.length_penalty))
            lane = lab.lanes.get(name)
            if lane is None:
                st.error(lab.errors.get(name) or t(f"decoding.lane_off_{name}"))
                continue
            st.html(tokens_html(plan.prompt.text, lane.texts, lane.probs, lang))
            m1, m2 = st.columns(2)
            m1.metric(t("decoding.logprob"), decimal(lane.raw_logprob, 2), help=t("decoding.logprob_help"))
            m2.metric(t("decoding.repeats"), percent(lane.repeat_share, 0, lang), help=t("decoding.repeats_help"))
            st.caption(t("decoding.lane_caption", n=len(lane.new_ids), stop=t(f"decoding.stop_{lane.stop_reason}"),
                         lp=fixed(lane.strategy_logprob, 2, lang)))
            st.plotly_chart(lane_bars(lane.texts, lane.probs, t("decoding.lane_chart"), t("common.prob"), lang),
                            width="stretch", key=f"decoding.chart_{name}")


def render_tree(beam, tokenizer) -> None:
    """Beam search step by step: the tree up to a step, the live beams then, the finished hypotheses."""
    if beam is None or not beam.tree:
        return
    st.subheader(t("decoding.tree_header"))
    st.caption(t("decoding.tree_intro", k=beam.num_beams, lp=fmt(beam.length_penalty)))
    nodes = tree_nodes(beam, tokenizer)
    n_steps = len(beam.tree)
    step = n_steps if n_steps == 1 else st.slider(t("decoding.tree_slider"), 1, n_steps, n_steps,
                                                  key=f"_w.decoding.tree_step.{n_steps}")
    if step > TREE_WINDOW:
        st.caption(t("decoding.tree_window", lo=step - TREE_WINDOW + 1, hi=step))
    st.plotly_chart(beam_tree(nodes, step - 1, TREE_WINDOW, tree_text(), current_lang()), width="stretch",
                    key="decoding.tree")
    st.markdown(f"**{t('decoding.beams_at', step=step)}**")
    st.table(beams_at(nodes, step - 1), hide_index=True)
    st.markdown(f"**{t('decoding.finished_header')}**")
    st.table(hypotheses_table(beam, tokenizer), hide_index=True)
