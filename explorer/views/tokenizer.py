"""Sections of the tokenizer lab page (widgets and rendering; the logic is in gpt_core.tokenlab).

Session keys (plain keys survive page switches, see :mod:`explorer.ui.state`):
``tok.selected`` (compared tokenizer keys), ``tok.text``, ``tok.example``,
``tok.trained`` (name -> tokenizer trained in this session), ``tok.pending`` (a trained
tokenizer to add to the comparison at the next run), ``tok.train_note``, ``tok.rt_source.<i>``
(the tokenizer and ids the ids -> text box was last filled with: new text refills it).
"""
from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import pandas as pd
import streamlit as st

from gpt_core import tokenlab
from gpt_core.errors import GPTCoreError, HubUnavailable
from gpt_core.hub import hub_reachable
from gpt_core.tokenizers import load_tokenizer

from explorer.figures.tokens import (GLYPH_CODES, chips_html, glyph_legend, language_chart, merges_frame,
                                     parts_html, word_counts_chart)
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import decimal, number, plain, say, show
from explorer.ui.state import get, persisted, set_value, widget_key
from explorer.ui.text_input import check_text, show_messages
from explorer.ui.token_chips import visible

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples" / "tokenizer_examples.json"
BUILTIN = ["gpt2", "barthez", "bart", "gemma3", "bpe-fr", "bpe-en", "smollm2", "mistral-sp"]
LANGUAGE_BPES = {"bpe-fr": "fr", "bpe-en": "en"}  # trained live on the built-in corpora (gpt_core caches them)
DEFAULT = ["gpt2", "barthez"]
DEFAULT_ONLINE = ["gpt2", "barthez", "bart"]  # with the hub: BARThez's French SentencePiece beside BART's English BPE
# offline, BARThez is replaced by tokenizers that show the French/English contrast
STAND_INS = ["gemma3", "bpe-fr", "bpe-en"]
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
    return t(f"tokenizer.opt.{key}", vocab=number(tokenlab.LANGUAGE_BPE_VOCAB, current_lang()))


def name_of(name: str) -> str:
    """A compared tokenizer's name in the UI language (a trained one keeps its own)."""
    return option_label(name) if name in BUILTIN else name


def description(report) -> str:
    """What a compared tokenizer is and where it comes from, in the UI language (else its own label)."""
    said = t(f"tokenizer.desc.{report.name}", vocab=number(report.vocab_size, current_lang()))
    return said if report.name in BUILTIN else report.label


def get_tokenizer(key: str):
    """The tokenizer for ``key``; None for a trained one this session no longer holds."""
    if key.startswith(TRAINED_PREFIX):
        return trained().get(key[len(TRAINED_PREFIX):])
    if key in LANGUAGE_BPES:
        return tokenlab.language_bpe(LANGUAGE_BPES[key]).tokenizer
    return load_tokenizer(key)


# --------------------------------------------------------------------------- inputs


def choose_tokenizers() -> list[str]:
    """The multiselect of 1 to 4 tokenizers (built-in ones and those trained here)."""
    options = BUILTIN + [TRAINED_PREFIX + name for name in trained()]
    default = DEFAULT_ONLINE if hub_reachable() else DEFAULT
    shown = st.session_state.get(widget_key(SEL, per_lang=True), get(SEL, default))
    selected = [k for k in shown if k in options]   # a trained tokenizer may have been dropped
    pending = st.session_state.pop(PENDING, None)
    if pending in options and pending not in selected:
        selected = (selected if len(selected) < tokenlab.MAX_COMPARED else selected[:-1]) + [pending]
    if selected != list(shown):
        set_value(SEL, selected, per_lang=True)
    labels = {k: option_label(k) for k in options}  # said now, in this run's language
    return list(persisted(st.multiselect, t("tokenizer.choose"), SEL, list(default), options=options, per_lang=True,
                          format_func=labels.get, max_selections=tokenlab.MAX_COMPARED,
                          help=t("tokenizer.choose_help")))


def _pick_example():
    found = [e["text"] for e in examples() if e["key"] == get(EXAMPLE)]
    if found:
        set_value(TEXT, found[0])


def text_input(lang: str) -> str:
    """Example picker + text area; returns the checked text ("" when there is nothing to do).

    The default example is in the UI language (French UI: a French sentence)."""
    ordered = sorted(examples(), key=lambda e: e["lang"] != lang)  # the UI language's first: [0] is the default
    by_key = {e["key"]: e for e in ordered}
    other = next(e for e in ordered if e["lang"] != lang)  # the other language's default example
    if get(EXAMPLE) == other["key"] and get(TEXT) == other["text"]:  # untouched: it follows the language
        set_value(EXAMPLE, ordered[0]["key"], per_lang=True)
        set_value(TEXT, ordered[0]["text"])
    left, right = st.columns([1, 2])
    persisted(left.selectbox, t("tokenizer.example"), EXAMPLE, ordered[0]["key"], options=list(by_key), per_lang=True,
              on_change=_pick_example, format_func=lambda k: by_key[k]["title"].get(lang, by_key[k]["title"]["fr"]))
    left.caption(t("tokenizer.example_help"))
    raw = persisted(right.text_area, t("tokenizer.text"), TEXT, by_key.get(get(EXAMPLE), ordered[0])["text"],
                    height=110)
    checked = check_text(raw, max_chars=MAX_CHARS)
    show_messages(st, checked)
    return checked.text


def _load(key: str):
    """The tokenizer for ``key``, or None after saying why (HubUnavailable is left to the caller)."""
    try:
        tok = get_tokenizer(key)
        if tok is None:
            st.error(t("tokenizer.trained_gone"))
        return tok
    except HubUnavailable:
        raise
    except GPTCoreError as exc:
        show(st, exc)
        return None


def load_selected(keys: list[str]) -> list:
    """Load the chosen tokenizers. A hub tokenizer out of reach (BARThez offline) is said in one line, and
    tokenizers that show the French/English contrast take its place (Gemma, a French and an English BPE)."""
    loaded, missing = [], []
    for key in keys:
        try:
            tok = _load(key)
        except HubUnavailable:
            missing.append(key)
            loaded.append(missing)  # where the stand-ins go
            continue
        if tok is not None:
            loaded.append(tok)
    if not missing:
        return loaded
    room = tokenlab.MAX_COMPARED - (len(loaded) - len(missing))
    added = [(k, tok) for k in STAND_INS if k not in keys and (tok := _load(k)) is not None][:room]
    labels = [option_label(k) for k, _ in added]
    shown = ", ".join(labels[:-1]) + t("tokenizer.and") + labels[-1] if len(labels) > 1 else "".join(labels)
    many = "_many" if len(missing) > 1 else ""  # "BARThez and BART cannot be reached" takes the plural
    st.warning(t(("tokenizer.offline_stand_ins" if added else "tokenizer.offline_left_out") + many,
                 names=t("tokenizer.and").join(option_label(k) for k in missing), shown=shown), icon="📡")
    first = loaded.index(missing)
    return [tok for tok in loaded[:first] if tok is not missing] + [tok for _, tok in added] + \
        [tok for tok in loaded[first:] if tok is not missing]


def compare(tokenizers: list, text: str, allow_special: bool) -> tokenlab.Comparison | None:
    """The French/English contrast of the chosen tokenizers, then every chosen tokenizer on ``text``;
    None (with the reason shown) when there is nothing to compare."""
    if tokenizers:
        render_languages(tokenizers)
    if not text or not tokenizers:
        return None
    try:
        return tokenlab.compare_tokenizers(tokenizers, text, allow_special=allow_special)
    except GPTCoreError as exc:
        show(st, exc)
        return None


def render_languages(tokenizers: list) -> None:
    """Tokens per word of each tokenizer on a French and an English reference text (a chart)."""
    lang = current_lang()
    refs = {e["lang"]: e["text"] for e in examples() if e.get("reference")}
    try:
        costs = tokenlab.language_costs(tokenizers, refs)
    except GPTCoreError as exc:
        show(st, exc)
        return
    st.subheader(t("tokenizer.lang_title"))
    st.caption(t("tokenizer.lang_help"))
    names = {c.name: name_of(c.name) for c in costs}
    fig = language_chart(costs, names, {c: t(f"tokenizer.lang_text.{c}") for c in refs}, t("tokenizer.lang_hover"),
                         lambda x: number(x, lang), t("tokenizer.lang_chart_title"), t("tokenizer.lang_y"), lang)
    st.plotly_chart(fig, width="stretch", key="tok.lang_chart")
    bpes = [tokenlab.language_bpe(LANGUAGE_BPES[n]) for n in names if n in LANGUAGE_BPES]
    if bpes:
        st.caption(t("tokenizer.lang_bpe_note", vocab=number(tokenlab.LANGUAGE_BPE_VOCAB, lang),
                     seconds=decimal(sum(b.seconds for b in bpes), 2, lang)))


# --------------------------------------------------------------------------- comparison


def _fmt(x: float | None) -> str:
    return "—" if x is None else decimal(x, 2)


STAT_COLUMNS = ("vocab", "tokens", "chars_per_token", "tokens_per_word", "unknown", "byte_fallback", "special")


def stats_frame(comp: tokenlab.Comparison) -> pd.DataFrame:
    rows = []
    for r in comp.reports:
        s = r.stats
        values = (number(r.vocab_size, current_lang()), s.n_tokens, _fmt(s.chars_per_token),
                  _fmt(s.tokens_per_word), s.n_unknown, s.n_byte_fallback, s.n_special)
        rows.append({t("tokenizer.col.tokenizer"): name_of(r.name),
                     **{t(f"tokenizer.col.{c}"): v for c, v in zip(STAT_COLUMNS, values)}})
    return pd.DataFrame(rows)


def word_chart(comp: tokenlab.Comparison):
    series = [(name_of(r.name), r.word_counts) for r in comp.reports]
    return word_counts_chart([w.text for w in comp.words], series, t("tokenizer.chart_title"),
                             t("tokenizer.chart_x"), t("tokenizer.chart_y"), lang=current_lang())


def _byte_frame(report, text: str) -> pd.DataFrame:
    rows = tokenlab.token_rows(report.pieces[:2000], text, report.kind)
    return pd.DataFrame({
        t("common.id"): [r["id"] for r in rows],
        t("tokenizer.col.raw"): [r["raw"] for r in rows],
        t("common.text"): [visible(r["text"]) for r in rows],
        t("tokenizer.col.bytes"): [r["bytes"] for r in rows],
        t("tokenizer.col.spelling"): [r["spelling"] for r in rows],
    })


def render_report(col, report, text: str, show_ids: bool, tokenizer) -> None:
    col.markdown(f"**{plain(name_of(report.name))}**")
    col.caption(f"{description(report)} · {t('tokenizer.n_tokens', n=number(report.stats.n_tokens, current_lang()))}")
    with col:
        st.html(f"<div style='font-size:1.1rem'>{chips_html(report.pieces, text, show_ids=show_ids)}</div>")
        ids_tab, bytes_tab, special_tab = st.tabs(
            [t("tokenizer.tab_ids"), t("tokenizer.tab_bytes"), t("tokenizer.tab_special")])
        ids_tab.code(" ".join(str(p.id) for p in report.pieces), language=None, wrap_lines=True)
        bytes_tab.dataframe(_byte_frame(report, text), hide_index=True, height=240, width="stretch")
        meanings = {c: t(f"tokenizer.glyph.{c}") for c in GLYPH_CODES}
        bytes_tab.markdown(glyph_legend(tokenlab.notable_glyphs(report.pieces, report.kind), meanings,
                                        t("tokenizer.glyphs_none")))
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
    st.html(parts_html(chunk.parts_at(k), chunk.merged_at(k)))
    if step is not None:
        st.caption(t("tokenizer.bpe_now", k=k, n=n, left=tokenlab.spell_bytes(step.left),
                     right=tokenlab.spell_bytes(step.right), merged=tokenlab.spell_bytes(step.merged), rank=step.rank))
    else:
        st.caption(t("tokenizer.bpe_start", n=len(chunk.start)))
    headers = [t(f"tokenizer.bpe_col_{c}") for c in ("step", "rank", "pair", "merged", "parts")]
    st.dataframe(merges_frame(chunk.steps, headers), hide_index=True, width="stretch",
                 height=min(400, 38 + 35 * max(n, 1)))
    encoded = gpt2.encode(text)
    same = walk.ids == encoded
    (st.success if same else st.error)(t("tokenizer.bpe_check" if same else "tokenizer.bpe_mismatch",
                                        walk=walk.ids, enc=encoded))


# --------------------------------------------------------------------------- training


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
    return tokenlab.builtin_corpus("fr" if source == "corpus_fr" else "en"), []


def render_training(compared_text: str) -> None:
    st.caption(t("tokenizer.train_help"))
    sources = ["corpus_fr", "corpus_en", "text", "paste", "upload"]
    labels = {s: t(f"tokenizer.train_src.{s}") for s in sources}  # said now, in this run's language
    own = "corpus_en" if current_lang() == "en" else "corpus_fr"  # the UI language's corpus first
    source = persisted(st.radio, t("tokenizer.train_source"), "tok.train_source", own, options=sources, per_lang=True,
                       horizontal=True, format_func=labels.get)
    corpus, messages = _corpus(source, compared_text)
    for level, msg in messages:
        getattr(st, level)(msg)
    vocab = persisted(st.slider, t("tokenizer.train_vocab"), "tok.train_vocab", 1000,
                      min_value=tokenlab.MIN_TRAIN_VOCAB, max_value=8000, step=10)
    st.caption(t("tokenizer.train_corpus_size", n=number(len(corpus), current_lang())))
    if st.button(t("tokenizer.train_button"), type="primary", key="_w.tok.train_go"):
        try:
            _train(corpus, vocab)
            st.rerun()
        except GPTCoreError as exc:
            show(st, exc)
    if st.session_state.get(NOTE):  # kept as parameters: the sentence follows a language switch
        note, lang = st.session_state[NOTE], current_lang()
        st.success(t("tokenizer.train_done", **note | {k: number(note[k], lang) for k in ("learned", "asked")}
                     | {"seconds": decimal(note["seconds"], 2)}))


def _train(corpus: str, vocab: int) -> None:
    """Train a BPE on ``corpus``, keep it for the session and queue it for the comparison."""
    name = f"bpe-{vocab}"
    while name in trained():
        name += "+"
    with st.spinner(t("tokenizer.train_running")):
        start = time.perf_counter()
        label = t("tokenizer.train_label", n=number(len(corpus), current_lang()))
        tok = tokenlab.train_bpe(corpus, vocab, name=name, label=label)
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
    """ids -> text -> ids. The ids shown follow the compared text: typing new text (or choosing
    other tokenizers) replaces them with the new ids; ids edited by hand stay until then."""
    names = [r.name for r in comp.reports]
    pick = widget_key("tok.rt_tok", per_lang=True)  # labels in the UI language: one widget per language
    if st.session_state.get(pick, 0) not in range(len(names)):
        st.session_state[pick] = 0
    i = st.selectbox(t("tokenizer.rt_tokenizer"), range(len(names)), key=pick,
                     format_func=[name_of(n) for n in names].__getitem__)
    default = " ".join(str(p.id) for p in comp.reports[i].pieces[:40])
    key, source = f"_w.tok.rt_ids.{i}", f"tok.rt_source.{i}"
    if st.session_state.get(source) != (names[i], default):  # new text or tokenizer: show its ids
        st.session_state[source] = (names[i], default)
        st.session_state[key] = default
    raw = st.text_area(t("tokenizer.rt_ids"), key=key, height=80, help=t("tokenizer.rt_help"))
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
