"""Sections of the tokenizer lab page (widgets and rendering; the logic is in gpt_core.tokenlab).

Session keys (plain keys survive page switches; ``_w.*`` are widget keys):
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

from .fig_tokens import word_counts_chart
from .i18n import t
from .textinput import check_text, show_messages
from .tokens_view import PALETTE, chips_html, visible

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples" / "tokenizer_examples.json"
DATASETS = Path(__file__).resolve().parents[1] / "assets" / "datasets"
BUILTIN = ["gpt2", "barthez", "smollm2", "mistral-sp"]
DEFAULT = ["gpt2", "barthez"]
STAND_IN = "mistral-sp"  # offline SentencePiece shown when BARThez cannot be reached
TRAINED_PREFIX = "trained:"
MAX_CHARS = 10_000  # text compared (chips of 4 tokenizers stay light in the browser)
MAX_TRAINED = 4
SEL, TEXT, EXAMPLE, TRAINED, PENDING, NOTE = (
    "tok.selected", "tok.text", "tok.example", "tok.trained", "tok.pending", "tok.train_note")


# --------------------------------------------------------------------------- state helpers


def _init_widget(state_key: str, default):
    """Give a widget key its value from a plain session key (restored after a page switch)."""
    wkey = f"_w.{state_key}"
    if wkey not in st.session_state:
        st.session_state[wkey] = st.session_state.get(state_key, default)
    return wkey


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
    if key.startswith(TRAINED_PREFIX):
        tok = trained().get(key[len(TRAINED_PREFIX):])
        if tok is None:
            raise GPTCoreError(t("tokenizer.trained_gone"))
        return tok
    return load_tokenizer(key)


# --------------------------------------------------------------------------- inputs


def choose_tokenizers() -> list[str]:
    """The multiselect of 1 to 4 tokenizers (built-in ones and those trained here)."""
    options = BUILTIN + [TRAINED_PREFIX + name for name in trained()]
    selected = [k for k in st.session_state.get(SEL, DEFAULT) if k in options] or list(DEFAULT)
    pending = st.session_state.pop(PENDING, None)
    if pending in options and pending not in selected:
        selected = (selected if len(selected) < tokenlab.MAX_COMPARED else selected[:-1]) + [pending]
        st.session_state.pop(f"_w.{SEL}", None)
    st.session_state[SEL] = selected
    wkey = _init_widget(SEL, selected)
    st.session_state[wkey] = [k for k in st.session_state[wkey] if k in options]
    st.multiselect(t("tokenizer.choose"), options, key=wkey, format_func=option_label,
                   max_selections=tokenlab.MAX_COMPARED, help=t("tokenizer.choose_help"))
    st.session_state[SEL] = list(st.session_state[wkey])
    return st.session_state[SEL]


def _pick_example():
    key = st.session_state[f"_w.{EXAMPLE}"]
    st.session_state[EXAMPLE] = key
    found = [e["text"] for e in examples() if e["key"] == key]
    if not found:
        return
    text = found[0]
    st.session_state[TEXT] = text
    st.session_state[f"_w.{TEXT}"] = text


def text_input(lang: str) -> str:
    """Example picker + text area; returns the checked text ("" when there is nothing to do)."""
    by_key = {e["key"]: e for e in examples()}
    default_text = examples()[0]["text"]
    left, right = st.columns([1, 2])
    ex_key = _init_widget(EXAMPLE, examples()[0]["key"])
    left.selectbox(t("tokenizer.example"), list(by_key), key=ex_key, on_change=_pick_example,
                   format_func=lambda k: by_key[k]["title"].get(lang, by_key[k]["title"]["fr"]))
    left.caption(t("tokenizer.example_help"))
    wkey = _init_widget(TEXT, default_text)
    raw = right.text_area(t("tokenizer.text"), key=wkey, height=110)
    st.session_state[TEXT] = raw
    checked = check_text(raw, max_chars=MAX_CHARS)
    show_messages(st, checked)
    return checked.text


def load_selected(keys: list[str]) -> list:
    """Load the chosen tokenizers; BARThez out of reach is replaced by the offline SentencePiece."""
    tokenizers = []
    for key in keys:
        try:
            tokenizers.append(get_tokenizer(key))
        except HubUnavailable:
            stand_in = STAND_IN not in keys and len(keys) <= tokenlab.MAX_COMPARED
            message = "tokenizer.barthez_missing" if key == "barthez" else "tokenizer.hub_missing"
            st.warning(t(message if stand_in else message + "_left_out", name=option_label(key),
                         stand_in=option_label(STAND_IN)), icon="📡")
            if stand_in:
                tokenizers.append(load_tokenizer(STAND_IN))
        except GPTCoreError as exc:
            st.error(t("common.error", msg=str(exc)))
    return tokenizers


# --------------------------------------------------------------------------- comparison


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


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


def parts_html(parts: list[bytes], highlight: int | None) -> str:
    """The parts of a chunk as chips spelled like GPT-2's vocabulary; the new merge outlined."""
    chips = []
    for i, part in enumerate(parts):
        border = "outline:2px solid #d62728;" if i == highlight else ""
        chips.append(f"<span style='background:{PALETTE[i % len(PALETTE)]};{border}border-radius:4px;"
                     f"padding:2px 4px;margin:0 2px'>{html.escape(tokenlab.spell_bytes(part))}</span>")
    return ("<div style='font-family:ui-monospace,Menlo,Consolas,monospace;font-size:1.15em;line-height:2.2;"
            "color:#111'>" + "".join(chips) + "</div>")


def render_bpe() -> None:
    st.caption(t("tokenizer.bpe_help"))
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    word = left.text_input(t("tokenizer.bpe_word"), value=st.session_state.get("tok.bpe_word", "Sherbrooke"),
                           key="_w.tok.bpe_word", max_chars=200)
    st.session_state["tok.bpe_word"] = word
    space = right.checkbox(t("tokenizer.bpe_space"), value=True, key="_w.tok.bpe_space")
    if not word.strip():
        st.info(t("tokenizer.bpe_empty"))
        return
    gpt2 = load_tokenizer("gpt2")
    text = (" " + word.lstrip(" ")) if space else word
    try:
        walk = tokenlab.bpe_walkthrough(gpt2, text)
    except GPTCoreError as exc:
        st.error(str(exc))
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
            return "", [("error", str(exc))]
        return text, [("warning", t("tokenizer.train_cut", n=tokenlab.MAX_TRAIN_CHARS))] if cut else []
    return _builtin_corpus("corpus_fr.txt" if source == "corpus_fr" else "corpus_en.txt"), []


def render_training(compared_text: str) -> None:
    st.caption(t("tokenizer.train_help"))
    sources = ["corpus_fr", "corpus_en", "text", "paste", "upload"]
    source = st.radio(t("tokenizer.train_source"), sources, horizontal=True, key="_w.tok.train_source",
                      format_func=lambda s: t(f"tokenizer.train_src.{s}"))
    corpus, messages = _corpus(source, compared_text)
    for level, msg in messages:
        getattr(st, level)(msg)
    vocab = st.slider(t("tokenizer.train_vocab"), tokenlab.MIN_TRAIN_VOCAB, 8000, 1000, step=10, key="_w.tok.train_vocab")
    st.caption(t("tokenizer.train_corpus_size", n=len(corpus)))
    if st.button(t("tokenizer.train_button"), type="primary", key="_w.tok.train_go"):
        try:
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
            st.session_state[NOTE] = t("tokenizer.train_done", name=name, learned=tok.vocab_size, asked=vocab,
                                       seconds=seconds, ok="✓" if ok else "✗")
            st.rerun()
        except GPTCoreError as exc:
            st.error(str(exc))
    if st.session_state.get(NOTE):
        st.success(st.session_state[NOTE])


# --------------------------------------------------------------------------- round trip & export


def render_round_trip(comp: tokenlab.Comparison, tokenizers: list) -> None:
    names = [r.name for r in comp.reports]
    i = st.selectbox(t("tokenizer.rt_tokenizer"), range(len(names)), key="_w.tok.rt_tok",
                     format_func=lambda j: option_label(names[j]) if names[j] in BUILTIN else names[j])
    default = " ".join(str(p.id) for p in comp.reports[i].pieces[:40])
    raw = st.text_area(t("tokenizer.rt_ids"), value=default, key=f"_w.tok.rt_ids.{i}", height=80,
                       help=t("tokenizer.rt_help"))
    try:
        rt = tokenlab.round_trip(tokenizers[i], raw)
    except GPTCoreError as exc:
        st.error(str(exc))
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
