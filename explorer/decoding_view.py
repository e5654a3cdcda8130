"""Helpers of the Next-token and Decoding-lab pages: settings checks, cached generation, lanes, beam tree.

Every value a user typed goes through ``gpt_core.decoding`` (``build_processors``,
``validate_request``, ``prepare_prompt``); what it refuses comes back here as a
message in the user's language, never as a traceback.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
import torch

from gpt_core import decoding as dec
from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core.trace import describe, is_gpt_core

from .i18n import t
from .textinput import check_text
from .tokens_view import visible

MAX_NEW_UI = 200        # the page must answer within seconds on a CPU
FIELDS = ("repetition_penalty", "no_repeat_ngram", "temperature", "top_k", "top_p", "min_p")
GPT2_VOCAB = 50257

Message = tuple[str, str]  # (level: info | warning | error, text)


# ================================================================== settings
@dataclass
class Checked:
    """The processors to use, whether decoding is greedy, and what to tell the user."""

    processors: list
    greedy: bool
    spec: tuple                   # hashable settings, to rebuild the processors inside cached functions
    messages: list[Message] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(level == "error" for level, _ in self.messages)


def _fmt(value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{value:g}" if isinstance(value, (int, float)) else repr(value)


def _culprit(settings: dict, vocab_size: int) -> str | None:
    """The first setting that build_processors refuses on its own."""
    for name in FIELDS:
        value = settings.get(name)
        if value is None:
            continue
        try:
            dec.build_processors(**{"temperature": None, name: value}, vocab_size=vocab_size)
        except InvalidInput:
            return name
    return None


def check_settings(vocab_size: int, temperature=1.0, top_k=None, top_p=None, min_p=None,
                   repetition_penalty=None, no_repeat_ngram=0) -> Checked:
    """Route the page's settings through ``build_processors`` and explain its verdict."""
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                    repetition_penalty=repetition_penalty, no_repeat_ngram=no_repeat_ngram)
    spec = tuple(settings[name] for name in FIELDS)
    try:
        procs, notes, greedy = dec.build_processors(**settings, vocab_size=vocab_size)
    except InvalidInput as exc:
        name = _culprit(settings, vocab_size)
        text = (t(f"decoding.bad_{name}", value=_fmt(settings[name]), vocab=vocab_size) if name
                else t("common.error", msg=str(exc)))
        return Checked([], False, spec, [("error", text)])
    messages: list[Message] = []
    if greedy:
        messages.append(("info", t("decoding.temp0")))
        if any(isinstance(p, (dec.TopK, dec.TopP, dec.MinP)) for p in procs):
            messages.append(("info", t("decoding.greedy_filters")))
    if len(messages) != len(notes):  # a note the engine added that we do not translate yet
        messages += [("info", n) for n in notes[len(messages):]]
    return Checked(procs, greedy, spec, messages)


def vocab_of(model) -> int:
    return describe(model).vocab_size


def context_of(model) -> int:
    return dec.context_length_of(model)


def processors_from_spec(spec: tuple, vocab_size: int) -> tuple[list, bool]:
    procs, _, greedy = dec.build_processors(**dict(zip(FIELDS, spec)), vocab_size=vocab_size)
    return procs, greedy


def check_length(max_new, context_length: int, cap: int = MAX_NEW_UI) -> tuple[int, list[Message]]:
    """``(n, messages)``: n = 0 when the request is refused; above ``cap`` it is lowered, with a warning."""
    try:
        dec.validate_request(1, max_new, context_length)
    except InvalidInput:
        if isinstance(max_new, (int, float)) and not isinstance(max_new, bool) and max_new > context_length:
            return 0, [("error", t("decoding.bad_max_new_ctx", n=_fmt(max_new), ctx=context_length))]
        return 0, [("error", t("decoding.bad_max_new", n=_fmt(max_new)))]
    n = int(max_new)
    if n > cap:
        return cap, [("warning", t("decoding.max_new_capped", n=n, cap=cap))]
    return n, []


def check_beams(num_beams, vocab_size: int) -> list[Message]:
    if isinstance(num_beams, bool) or not isinstance(num_beams, (int, float)) or num_beams != int(num_beams):
        return [("error", t("decoding.bad_beams", k=_fmt(num_beams)))]
    k = int(num_beams)
    if k < 1:
        return [("error", t("decoding.bad_beams", k=k))]
    if k > dec.MAX_BEAMS:
        return [("error", t("decoding.too_many_beams", k=k, max=dec.MAX_BEAMS))]
    if k > vocab_size:
        return [("error", t("decoding.beams_vocab", k=k, vocab=vocab_size))]
    return []


@dataclass
class Prompt:
    ids: list[int]
    text: str                     # the text actually used ("" when starting from a special token)
    messages: list[Message] = field(default_factory=list)


def prepare(tokenizer, raw: str | None, context_length: int, reserve: int = 1) -> Prompt:
    """Check and encode a prompt: empty -> start token, too long -> last tokens kept (each said)."""
    raw = raw or ""
    messages: list[Message] = []
    text = ""
    if raw.strip():
        checked = check_text(raw)
        messages += checked.messages
        text = checked.text
    reserve = max(1, min(int(reserve), context_length - 1))
    n_tokens = len(tokenizer.encode(text)) if text else 0
    ids, _ = dec.prepare_prompt(tokenizer, text, context_length, reserve)
    if n_tokens == 0:
        messages.append(("info", t("decoding.empty_prompt", token=visible(tokenizer.decode(ids[:1])), id=ids[0])))
        text = ""
    elif n_tokens > len(ids):
        messages.append(("warning", t("decoding.prompt_cut", total=n_tokens, ctx=context_length, keep=len(ids))))
        text = tokenizer.decode(ids)
    return Prompt(ids, text, messages)


def show(st_module, messages: list[Message]) -> None:
    for level, text in messages:
        getattr(st_module, level)(text)


# ================================================================ generation (cached)
@st.cache_data(max_entries=32, show_spinner=False)
def run_greedy(_model, model_key: str, ids: tuple, max_new: int, spec: tuple, eos: int | None):
    procs, _ = processors_from_spec(spec, vocab_of(_model))
    return dec.greedy(_model, list(ids), max_new, eos_id=eos, processors=procs)


@st.cache_data(max_entries=32, show_spinner=False)
def run_sample(_model, model_key: str, ids: tuple, max_new: int, spec: tuple, seed: int, eos: int | None):
    procs, greedy = processors_from_spec(spec, vocab_of(_model))
    if greedy:
        return dec.greedy(_model, list(ids), max_new, eos_id=eos, processors=procs)
    return dec.sample(_model, list(ids), max_new, procs, seed, eos_id=eos)


@st.cache_data(max_entries=16, show_spinner=False)
def run_beam(_model, model_key: str, ids: tuple, num_beams: int, max_new: int, length_penalty: float,
             spec: tuple, eos: int | None):
    procs, _ = processors_from_spec(spec, vocab_of(_model))
    return dec.beam_search(_model, list(ids), num_beams, max_new, length_penalty=length_penalty,
                           eos_id=eos, processors=procs)


@torch.inference_mode()
def raw_logprobs(model, prompt_ids: list[int], new_ids: list[int]) -> list[float]:
    """Log-probability of each new token under the raw model (no processor): comparable across strategies."""
    if not new_ids:
        return []
    seq = torch.tensor([list(prompt_ids) + list(new_ids)], device=next(model.parameters()).device)
    inputs = seq[:, :-1]
    logits = model(inputs) if is_gpt_core(model) else model(input_ids=inputs, use_cache=False).logits
    logp = logits[0, len(prompt_ids) - 1:].float().log_softmax(-1)  # (n_new, V)
    return logp.gather(1, seq[0, len(prompt_ids):, None].to(logp.device))[:, 0].tolist()


@st.cache_data(max_entries=64, show_spinner=False)
def cached_raw_logprobs(_model, model_key: str, prompt_ids: tuple, new_ids: tuple) -> list[float]:
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


def prob_colour(p: float) -> str:
    """Red (unlikely) -> yellow -> green (likely), light enough to read black text on."""
    p = min(max(float(p), 0.0), 1.0)
    return f"hsl({round(120 * p)}, 75%, 82%)"


def tokens_html(prompt_text: str, texts: list[str], probs: list[float]) -> str:
    """The prompt in grey, then one chip per generated token coloured by its probability."""
    chips = [
        f"<span title='{p:.1%}' style='background:{prob_colour(p)};border-radius:3px;padding:1px 1px;"
        f"margin:0 1px'>{html.escape(tx) or '∅'}</span>"
        for tx, p in zip(texts, probs)
    ]
    return (
        "<div style='font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.9em;line-height:1.9;"
        "white-space:pre-wrap;word-break:break-word;color:#111'>"
        f"<span style='color:#777'>{html.escape(visible(prompt_text))}</span>" + "".join(chips) + "</div>"
    )


# ================================================================= beam tree
@dataclass
class TreeNode:
    step: int                     # 0 = first generated token
    parent: int                   # index of the parent node in the list, -1 = the prompt
    token: str
    token_logprob: float
    cumulative: float             # sum of log-probs
    score: float                  # cumulative / length ** length_penalty
    kept: bool
    finished: bool
    on_best: bool                 # on the path of the best finished hypothesis
    rank: int                     # 0 = best cumulative log-prob among this step's candidates


def tree_nodes(beam, tokenizer) -> list[TreeNode]:
    """Flatten ``BeamResult.tree`` into nodes with parent links and the best path marked."""
    best = beam.sequences[0].new_ids if beam.sequences else []
    nodes: list[TreeNode] = []
    seqs: list[tuple[int, ...]] = []
    slot_node = {0: -1}           # beam slot -> node index at the previous step (-1: the prompt)
    for bstep in beam.tree:
        order = sorted(range(len(bstep.candidates)), key=lambda j: -bstep.candidates[j].cumulative_logprob)
        rank = {j: r for r, j in enumerate(order)}
        next_slots = {}
        for j, c in enumerate(bstep.candidates):
            parent = slot_node.get(c.parent_beam_id)
            if parent is None:    # a slot that did not exist yet (impossible scores at step 0)
                continue
            seq = (seqs[parent] if parent >= 0 else ()) + (c.token_id,)
            on_best = (c.kept or c.finished) and list(seq) == best[:len(seq)]
            nodes.append(TreeNode(bstep.step, parent, visible(tokenizer.decode([c.token_id])), c.token_logprob,
                                  c.cumulative_logprob, c.score, c.kept, c.finished, on_best, rank[j]))
            seqs.append(seq)
            if c.kept:
                next_slots[c.beam_id] = len(nodes) - 1
        slot_node = next_slots
    return nodes


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
                     t("decoding.col_sum"): round(n.cumulative, 3), t("decoding.col_score"): round(n.score, 3),
                     t("decoding.col_state"): t("decoding.state_finished") if n.finished else t("decoding.state_kept")})
    return pd.DataFrame(rows)


def hypotheses_table(beam, tokenizer) -> pd.DataFrame:
    return pd.DataFrame([{
        t("decoding.col_text"): visible(tokenizer.decode(h.new_ids)),
        t("decoding.col_len"): len(h.new_ids),
        t("decoding.col_sum"): round(h.sum_logprob, 3),
        t("decoding.col_score"): round(h.score, 3),
        t("decoding.col_end"): t(f"decoding.stop_{h.finished_by}"),
    } for h in beam.sequences])


# =================================================================== presets
def is_gpt2_vocab(tokenizer) -> bool:
    return getattr(tokenizer, "vocab_size", None) == GPT2_VOCAB


def preset(name: str, tokenizer) -> dict:
    """Seed 003's failure cases, on the seed's own prompts for GPT-2, on prompts that show them for SmolLM2.

    ``*_fix`` presets keep the prompt and add the cure (repetition penalty or no-repeat n-gram).
    """
    gpt2 = is_gpt2_vocab(tokenizer)
    base = {"repetition_penalty": 1.0, "no_repeat_ngram": 0, "seed": 0, "temperature": 1.0,
            "top_k": 50, "top_p": 1.0, "length_penalty": 1.0}
    if name.startswith("greedy"):
        base.update(prompt="Artificial intelligence" if gpt2 else "The cat sat on the mat. The dog",
                    max_new=50 if gpt2 else 40, beams=3)
        if name == "greedy_fix":
            base.update(repetition_penalty=1.3)
    else:
        base.update(prompt="What is the capital of Australia?" if gpt2
                    else "Question: What is the capital of Australia?\nAnswer:",
                    max_new=50 if gpt2 else 30, beams=5)
        if name == "beam_fix":
            base.update(no_repeat_ngram=4)
    return base


def apply_preset(name: str, tokenizer) -> None:
    """Button callback: write the preset into the page's plain keys and drop the widgets' own state."""
    for key, value in preset(name, tokenizer).items():
        st.session_state[f"decoding.{key}"] = st.session_state[f"_w.decoding.{key}"] = value
    st.session_state["decoding.preset"] = name


# ============================================================ session helpers
def remembered(name: str, default) -> dict:
    """Widget kwargs whose value lives in the plain session key ``name`` (it survives page switches).

    The widget's own key is seeded from the plain key (no ``value=`` argument),
    so a callback may set both, as the presets do, and the widget shows it.
    """
    widget = f"_w.{name}"
    if widget not in st.session_state:
        st.session_state[widget] = st.session_state.get(name, default)

    def copy():
        st.session_state[name] = st.session_state[widget]

    return {"key": widget, "on_change": copy}


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
        except (GPTCoreError, ValueError) as exc:
            out.errors[name] = t("common.error", msg=str(exc))
    return out


def tree_text() -> dict:
    return {k: t(f"decoding.tree_{k}") for k in ("title", "prompt", "step", "kept", "pruned", "best",
                                                 "finished", "hover")}


def strategy_caption(name: str, samp_spec: tuple, num_beams: int, length_penalty: float) -> str:
    if name == "sample":
        s = dict(zip(FIELDS, samp_spec))
        return t("decoding.cap_sample", T=_fmt(s["temperature"]),
                 k=_fmt(s["top_k"]) if s["top_k"] is not None else "—", p=_fmt(s["top_p"]))
    if name == "beam":
        return t("decoding.cap_beam", k=num_beams, lp=_fmt(length_penalty))
    return t("decoding.cap_greedy")
