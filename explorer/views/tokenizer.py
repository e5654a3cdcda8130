"""Sections of the tokenizer lab page (widgets and rendering; the logic is in gpt_core.tokenlab).

Session keys (plain keys survive page switches, see :mod:`explorer.ui.state`):
``tok.selected`` (compared tokenizer keys), ``tok.text``, ``tok.example``,
``tok.trained`` (name -> tokenizer trained in this session), ``tok.pending`` (a trained
tokenizer to add to the comparison at the next run), ``tok.train_note``.
"""
from __future__ import annotations

import html
import json
import time
from functools import lru_cache
from pathlib import Path

import pandas as pd
import streamlit as st

from gpt_core import tokenlab
from gpt_core.errors import GPTCoreError, HubUnavailable
from gpt_core.tokenizers import load_tokenizer

from explorer.figures.tokens import parts_html, word_counts_chart
from explorer.ui.i18n import t
from explorer.ui.messages import decimal, plain, say, show
from explorer.ui.state import get, persisted, set_value, widget_key
from explorer.ui.text_input import check_text, show_messages
from explorer.ui.token_chips import chips_html, visible

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples" / "tokenizer_examples.json"
DATASETS = Path(__file__).resolve().parents[2] / "assets" / "datasets"
BUILTIN = ["gpt2", "barthez", "smollm2", "mistral-sp"]
DEFAULT = ["gpt2", "barthez"]
STAND_IN = "mistral-sp"  # offline SentencePiece shown when BARThez cannot be reached
TRAINED_PREFIX = "trained:"
MAX_CHARS = 10_000  # text compared (chips of 4 tokenizers stay light in the browser)
MAX_TRAINED = 4
SEL, TEXT, EXAMPLE, TRAINED, PENDING, NOTE = (
    "tok.selected", "tok.text", "tok.example", "tok.trained", "tok.pending", "tok.train_note")


# --------------------------------------------------------------------------- state helpers


@lru_cache(maxsize=1)
def examples() -> list[dict]:
    return json.loads(EXAMPLES.read_text(encoding="utf-8"))


def trained() -> dict:
    return st.session_state.setdefault(TRAINED, {})


def option_label(key: str) -> str:
    if key.startswith(TRAINED_PREFIX):
        return t("tokenizer.opt.trained", name=key[len(TRAINED_PREFIX):])
    return t(f"tokenizer.opt.{key}")


def get_tokenizer(key: str):
    """The tokenizer for ``key``; None for a trained one this session no longer holds."""
    if key.startswith(TRAINED_PREFIX):
        return trained().get(key[len(TRAINED_PREFIX):])
    return load_tokenizer(key)


# --------------------------------------------------------------------------- inputs


def choose_tokenizers() -> list[str]:
    """The multiselect of 1 to 4 tokenizers (built-in ones and those trained here)."""
    options = BUILTIN + [TRAINED_PREFIX + name for name in trained()]
    shown = st.session_state.get(widget_key(SEL), get(SEL, DEFAULT))
    selected = [k for k in shown if k in options]   # a trained tokenizer may have been dropped
    pending = st.session_state.pop(PENDING, None)
    if pending in options and pending not in selected:
        selected = (selected if len(selected) < tokenlab.MAX_COMPARED else selected[:-1]) + [pending]
    if selected != list(shown):
        set_value(SEL, selected)
    labels = {k: option_label(k) for k in options}  # said now, in this run's language
    return list(persisted(st.multiselect, t("tokenizer.choose"), SEL, list(DEFAULT), options=options,
                          format_func=labels.get, max_selections=tokenlab.MAX_COMPARED,
                          help=t("tokenizer.choose_help")))


def _pick_example():
    found = [e["text"] for e in examples() if e["key"] == get(EXAMPLE)]
    if found:
        set_value(TEXT, found[0])


def text_input(lang: str) -> str:
    """Example picker + text area; returns the checked text ("" when there is nothing to do)."""
    by_key = {e["key"]: e for e in examples()}
    default_text = examples()[0]["text"]
    left, right = st.columns([1, 2])
    persisted(left.selectbox, t("tokenizer.example"), EXAMPLE, examples()[0]["key"], options=list(by_key),
              on_change=_pick_example, format_func=lambda k: by_key[k]["title"].get(lang, by_key[k]["title"]["fr"]))
    left.caption(t("tokenizer.example_help"))
    raw = persisted(right.text_area, t("tokenizer.text"), TEXT, default_text, height=110)
    checked = check_text(raw, max_chars=MAX_CHARS)
    show_messages(st, checked)
    return checked.text


def load_selected(keys: list[str]) -> list:
    """Load the chosen tokenizers; BARThez out of reach is replaced by the offline SentencePiece."""
    tokenizers = []
    for key in keys:
        try:
            tok = get_tokenizer(key)
            if tok is None:
                st.error(t("tokenizer.trained_gone"))
                continue
            tokenizers.append(tok)
        except HubUnavailable:
            stand_in = STAND_IN not in keys and len(keys) <= tokenlab.MAX_COMPARED
            message = "tokenizer.barthez_missing" if key == "barthez" else "tokenizer.hub_missing"
            st.warning(t(message if stand_in else message + "_left_out", name=option_label(key),
                         stand_in=option_label(STAND_IN)), icon="📡")
            if stand_in:
                tokenizers.append(load_tokenizer(STAND_IN))
        except GPTCoreError as exc:
            show(st, exc)
    return tokenizers


def compare(tokenizers: list, text: str, allow_special: bool) -> tokenlab.Comparison | None:
    """Every chosen tokenizer on ``text``; None (with the reason shown) when there is nothing to compare."""
    if not text or not tokenizers:
        return None
    try:
        return tokenlab.compare_tokenizers(tokenizers, text, allow_special=allow_special)
    except GPTCoreError as exc:
        show(st, exc)
        return None


# --------------------------------------------------------------------------- comparison


def _fmt(x: float | None) -> str:
    return "—" if x is None else decimal(x, 2)


def stats_frame(comp: tokenlab.Comparison) -> pd.DataFrame:
    rows = []
    for r in comp.reports:
        s = r.stats
        rows.append({
            t("tokenizer.col.tokenizer"): option_label(r.name) if r.name in BUILTIN else r.name,
            t("tokenizer.col.vocab"): r.vocab_size,
            t("tokenizer.col.tokens"): s.n_tokens,
            t("tokenizer.col.chars_per_token"): _fmt(s.chars_per_token),
            t("tokenizer.col.tokens_per_word"): _fmt(s.tokens_per_word),
            t("tokenizer.col.unknown"): s.n_unknown,
            t("tokenizer.col.byte_fallback"): s.n_byte_fallback,
            t("tokenizer.col.special"): s.n_special,
        })
    return pd.DataFrame(rows)


def word_chart(comp: tokenlab.Comparison):
    series = [(option_label(r.name) if r.name in BUILTIN else r.name, r.word_counts) for r in comp.reports]
    return word_counts_chart([w.text for w in comp.words], series, t("tokenizer.chart_title"),
                             t("tokenizer.chart_x"), t("tokenizer.chart_y"))


def _byte_frame(report, text: str) -> pd.DataFrame:
    rows = tokenlab.token_rows(report.pieces[:2000], text, report.kind)
    return pd.DataFrame({
        t("common.id"): [r["id"] for r in rows],
        t("tokenizer.col.raw"): [r["raw"] for r in rows],
        t("common.text"): [visible(r["text"]) for r in rows],
        t("tokenizer.col.bytes"): [r["bytes"] for r in rows],
        t("tokenizer.col.spelling"): [r["spelling"] for r in rows],
    })


def _glyph_legend(report) -> str:
    items = tokenlab.notable_glyphs(report.pieces, report.kind)
    if not items:
        return t("tokenizer.glyphs_none")
    groups: dict[str, list[str]] = {}
    for glyph, hexa, code in items:
        groups.setdefault(code, []).append(f"`{glyph}`\u202f=\u202f{hexa}")
    lines = []
    for code, shown in groups.items():
        more = f" … (+{len(shown) - 8})" if len(shown) > 8 else ""
        lines.append(f"- {', '.join(shown[:8])}{more} — {t('tokenizer.glyph.' + code)}")
    return "\n".join(lines)


def render_report(col, report, text: str, show_ids: bool, tokenizer) -> None:
    col.markdown(f"**{html.escape(option_label(report.name) if report.name in BUILTIN else report.name)}**")
    col.caption(f"{report.label} · {t('tokenizer.n_tokens', n=report.stats.n_tokens)}")
    with col:
        st.html(f"<div style='font-size:1.1rem'>{chips_html(report.pieces, text, show_ids=show_ids)}</div>")
        ids_tab, bytes_tab, special_tab = st.tabs(
            [t("tokenizer.tab_ids"), t("tokenizer.tab_bytes"), t("tokenizer.tab_special")])
        ids_tab.code(" ".join(str(p.id) for p in report.pieces), language=None, wrap_lines=True)
        bytes_tab.dataframe(_byte_frame(report, text), hide_index=True, height=240, width="stretch")
        bytes_tab.markdown(_glyph_legend(report))
        found = sorted({p.raw for p in report.pieces if p.special})
        special_tab.markdown(t("tokenizer.special_found", found=", ".join(f"`{s}`" for s in found) or "—"))
        known = list(getattr(tokenizer, "special_tokens", {}).items())[:24]
        special_tab.markdown(t("tokenizer.special_known", known=", ".join(f"`{s}` ({i})" for s, i in known) or "—"))


def render_comparison(comp: tokenlab.Comparison, tokenizers: list, show_ids: bool) -> None:
    per_row = 2
    for start in range(0, len(comp.reports), per_row):
        cols = st.columns(per_row)
        for col, report, tok in zip(cols, comp.reports[start:start + per_row], tokenizers[start:start + per_row]):
            render_report(col, report, comp.text, show_ids, tok)


# --------------------------------------------------------------------------- BPE step through


def render_bpe() -> None:
    st.caption(t("tokenizer.bpe_help"))
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    word = persisted(left.text_input, t("tokenizer.bpe_word"), "tok.bpe_word", "Sherbrooke", max_chars=200)
    space = persisted(right.checkbox, t("tokenizer.bpe_space"), "tok.bpe_space", True)
    if not word.strip():
        st.info(t("tokenizer.bpe_empty"))
        return
    gpt2 = load_tokenizer("gpt2")
    text = (" " + word.lstrip(" ")) if space else word
    try:
        walk = tokenlab.bpe_walkthrough(gpt2, text)
    except GPTCoreError as exc:
        show(st, exc)
        return
    chunks = [c for c in walk.chunks if not c.special]
    if not chunks:
        st.info(t("tokenizer.bpe_special"))
        return
    idx = 0
    if len(chunks) > 1:
        idx = st.selectbox(t("tokenizer.bpe_chunk"), range(len(chunks)),
                           format_func=lambda i: f"{i + 1}. « {visible(chunks[i].chunk)} »", key="_w.tok.bpe_chunk")
    chunk = chunks[idx]
    n = len(chunk.steps)
    k = st.slider(t("tokenizer.bpe_step"), 0, n, n, key=f"_w.tok.bpe_k.{idx}.{text}") if n else 0
    step = chunk.steps[k - 1] if k else None
    where = _merge_index(chunk.parts_at(k - 1), chunk.parts_at(k)) if step is not None else None
    st.html(parts_html(chunk.parts_at(k), where))
    if step is not None:
        st.caption(t("tokenizer.bpe_now", k=k, n=n, left=tokenlab.spell_bytes(step.left),
                     right=tokenlab.spell_bytes(step.right), merged=tokenlab.spell_bytes(step.merged), rank=step.rank))
    else:
        st.caption(t("tokenizer.bpe_start", n=len(chunk.start)))
    st.dataframe(pd.DataFrame({
        t("tokenizer.bpe_col_step"): list(range(1, n + 1)),
        t("tokenizer.bpe_col_rank"): [s.rank for s in chunk.steps],
        t("tokenizer.bpe_col_pair"): [f"{tokenlab.spell_bytes(s.left)} + {tokenlab.spell_bytes(s.right)}" for s in chunk.steps],
        t("tokenizer.bpe_col_merged"): [tokenlab.spell_bytes(s.merged) for s in chunk.steps],
        t("tokenizer.bpe_col_parts"): [" | ".join(tokenlab.spell_bytes(p) for p in s.parts_after) for s in chunk.steps],
    }), hide_index=True, width="stretch", height=min(400, 38 + 35 * max(n, 1)))
    encoded = gpt2.encode(text)
    same = walk.ids == encoded
    (st.success if same else st.error)(t("tokenizer.bpe_check" if same else "tokenizer.bpe_mismatch",
                                        walk=walk.ids, enc=encoded))


def _merge_index(before: list[bytes], after: list[bytes]) -> int:
    """Where the last merge happened: the first place the parts differ."""
    for i, (a, b) in enumerate(zip(before, after)):
        if a != b:
            return i
    return len(after) - 1


# --------------------------------------------------------------------------- training


def _builtin_corpus(name: str) -> str:
    path = DATASETS / name
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _corpus(source: str, compared_text: str) -> tuple[str, list[tuple[str, str]]]:
    if source == "text":
        return compared_text, []
    if source == "paste":
        raw = st.text_area(t("tokenizer.train_paste"), key="_w.tok.train_paste", height=120)
        return raw or "", []
    if source == "upload":
        up = st.file_uploader(t("tokenizer.train_upload"), type=["txt", "md", "csv", "json"], key="_w.tok.train_file")
        if up is None:
            return "", []
        try:
            text, cut = tokenlab.read_upload(up.getvalue(), tokenlab.MAX_TRAIN_CHARS)
        except GPTCoreError as exc:
            return "", [("error", plain(say(exc)))]
        return text, [("warning", t("tokenizer.train_cut", n=tokenlab.MAX_TRAIN_CHARS))] if cut else []
    return _builtin_corpus("corpus_fr.txt" if source == "corpus_fr" else "corpus_en.txt"), []


def render_training(compared_text: str) -> None:
    st.caption(t("tokenizer.train_help"))
    sources = ["corpus_fr", "corpus_en", "text", "paste", "upload"]
    labels = {s: t(f"tokenizer.train_src.{s}") for s in sources}  # said now, in this run's language
    source = persisted(st.radio, t("tokenizer.train_source"), "tok.train_source", sources[0], options=sources,
                       horizontal=True, format_func=labels.get)
    corpus, messages = _corpus(source, compared_text)
    for level, msg in messages:
        getattr(st, level)(msg)
    vocab = persisted(st.slider, t("tokenizer.train_vocab"), "tok.train_vocab", 1000,
                      min_value=tokenlab.MIN_TRAIN_VOCAB, max_value=8000, step=10)
    st.caption(t("tokenizer.train_corpus_size", n=len(corpus)))
    if st.button(t("tokenizer.train_button"), type="primary", key="_w.tok.train_go"):
        try:
            _train(corpus, vocab)
            st.rerun()
        except GPTCoreError as exc:
            show(st, exc)
    if st.session_state.get(NOTE):  # kept as parameters: the sentence follows a language switch
        st.success(t("tokenizer.train_done", **st.session_state[NOTE]))


def _train(corpus: str, vocab: int) -> None:
    """Train a BPE on ``corpus``, keep it for the session and queue it for the comparison."""
    name = f"bpe-{vocab}"
    while name in trained():
        name += "+"
    with st.spinner(t("tokenizer.train_running")):
        start = time.perf_counter()
        tok = tokenlab.train_bpe(corpus, vocab, name=name, label=t("tokenizer.train_label", n=len(corpus)))
        seconds = time.perf_counter() - start
    ok = tok.decode(tok.encode(corpus)) == corpus
    store = trained()
    store[name] = tok
    while len(store) > MAX_TRAINED:
        store.pop(next(iter(store)))
    st.session_state[PENDING] = TRAINED_PREFIX + name
    st.session_state[NOTE] = dict(name=name, learned=tok.vocab_size, asked=vocab, seconds=seconds,
                                  ok="✓" if ok else "✗")


# --------------------------------------------------------------------------- round trip & export


def render_round_trip(comp: tokenlab.Comparison, tokenizers: list) -> None:
    names = [r.name for r in comp.reports]
    i = st.selectbox(t("tokenizer.rt_tokenizer"), range(len(names)), key="_w.tok.rt_tok",
                     format_func=[option_label(n) if n in BUILTIN else n for n in names].__getitem__)
    default = " ".join(str(p.id) for p in comp.reports[i].pieces[:40])
    raw = st.text_area(t("tokenizer.rt_ids"), value=default, key=f"_w.tok.rt_ids.{i}", height=80,
                       help=t("tokenizer.rt_help"))
    try:
        rt = tokenlab.round_trip(tokenizers[i], raw)
    except GPTCoreError as exc:
        show(st, exc)
        return
    st.markdown(t("tokenizer.rt_text"))
    st.code(visible(rt.text) or " ", language=None, wrap_lines=True)
    if rt.same:
        st.success(t("tokenizer.rt_same", n=len(rt.ids)))
    else:
        st.warning(t("tokenizer.rt_diff", ids=" ".join(map(str, rt.reencoded[:60]))))


def render_export(comp: tokenlab.Comparison) -> None:
    left, right = st.columns(2)
    left.download_button(t("tokenizer.export_csv"), tokenlab.tokens_csv(comp), file_name="tokens.csv",
                         mime="text/csv", key="_w.tok.csv")
    right.download_button(t("tokenizer.export_json"), tokenlab.tokens_json(comp), file_name="tokens.json",
                          mime="application/json", key="_w.tok.json")
