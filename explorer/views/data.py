"""The Data page: documents -> EOT or padding rows, sliding windows, batches, Alpaca collate.

Everything is computed on real token ids with :mod:`gpt_core.data`; the
documents come from :mod:`explorer.corpus` (the same sources and columns as
Pretrain and Fine-tune, which reuse :func:`pick_corpus` and :func:`uploaded`).
Grid cells and figures come from :mod:`explorer.figures.data`; :func:`page`
draws the page, one function per tab.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st
import torch

from gpt_core import data as D
from gpt_core.errors import GPTCoreError, Message
from gpt_core.tokenizers import load_tokenizer

from explorer import corpus as C
from explorer.figures import data as F
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import decimal, number, plain, say
from explorer.ui.model_store import current_model, tokenizer_label
from explorer.ui.state import persisted
from explorer.views.decoding_settings import follow_language, localized
from explorer.ui.text_input import check_text, show_messages

MAX_DOCS = 10            # documents the page lays out at most
MAX_DOC_CHARS = 3_000    # a longer document is cut (the grids are about structure)


def first_batch(ids: Sequence[int], max_length: int, stride: int, batch_size: int,
                shuffle: bool = True, drop_last: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (inputs, targets) batch of a DataLoader over the sliding windows."""
    loader = D.make_loader(D.GPTWindowDataset(ids, max_length, stride), batch_size=batch_size,
                           shuffle=shuffle, drop_last=drop_last, seed=seed)
    x, y = next(iter(loader))
    return x, y


def arithmetic_sentence(a: dict, tr: Callable[..., str], lang: str | None = None) -> str:
    """The epoch/batch/step arithmetic of :func:`gpt_core.data.batch_arithmetic` in words.

    With ``lang``, whole numbers are written that language's way ("12 865 792" in French).
    """
    n = a
    if lang:
        n = {k: number(v, lang) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in a.items()}
    if a["batches_per_epoch"] == 0:
        return tr("data.arith.none", n=n["n_samples"], bs=n["batch_size"])
    text = tr("data.arith.main", n=n["n_samples"], bs=n["batch_size"], batches=n["batches_per_epoch"])
    if a["dropped_samples"]:
        text += " " + tr("data.arith.dropped", dropped=n["dropped_samples"])
    elif a["last_batch_size"] != a["batch_size"]:
        text += " " + tr("data.arith.last", last=n["last_batch_size"])
    text += " " + tr("data.arith.steps", accum=n["grad_accum"], steps_epoch=n["optimizer_steps_per_epoch"],
                     epochs=n["epochs"], steps=n["optimizer_steps"], eff=n["effective_batch_size"],
                     tokens=n["tokens_per_step"] if a["tokens_per_step"] is not None else "?")
    if a["partial_accumulation"]:
        text += " " + tr("data.arith.partial")
    return text


# ============================================ widgets shared with Pretrain and Fine-tune
def uploaded(where: Any, label: str, types: Sequence[str], key: str) -> tuple[bytes, str] | None:
    """A file uploader -> (bytes, file name), or None while no file is dropped."""
    file = where.file_uploader(label, type=list(types), key=key)
    return None if file is None else (file.getvalue(), file.name)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_corpus(source: str, text: str = "", upload: tuple[bytes, str] | None = None) -> C.Corpus:
    return C.load_corpus(source, text, upload)


DEFAULT_SOURCE = {"fr": "corpus_fr", "en": "corpus_en"}   # the bundled corpus in the UI language
ALPACA_STYLE = {"fr": "alpaca-fr", "en": "alpaca"}         # the prompt template in the UI language
FIRST_EXAMPLE = {"fr": 2, "en": 1}                         # the bundled instructions: #1 is English, #2 French


def pick_corpus(area: str, where: Any, labels: dict[str, str], per_lang: bool = False,
                max_chars: int | None = None) -> tuple[C.Corpus | None, str | None]:
    """The source picker -> (corpus, hint to show while there is none); a refused source raises GPTCoreError.

    ``labels``: ``source`` (the box), ``paste``, ``paste_default`` (a locale key: the example text, in the
    UI language until edited), ``upload``, ``upload_hint``. The default source is the bundled corpus in the
    UI language.
    """
    default = follow_language(f"{area}.source", DEFAULT_SOURCE, per_lang)
    source = persisted(where.selectbox, labels["source"], f"{area}.source", default, options=C.SOURCES,
                       per_lang=per_lang, format_func=lambda k: t(f"corpus.src.{k}"))
    if source == "paste":
        raw = persisted(where.text_area, labels["paste"], f"{area}.text",
                        localized(f"{area}.text", labels["paste_default"], per_lang), per_lang=per_lang, height=110)
        checked = check_text(raw, max_chars) if max_chars else check_text(raw)
        show_messages(where, checked)
        return (cached_corpus("paste", checked.text) if checked.ok else None), None
    if source == "upload":
        upload = uploaded(where, labels["upload"], C.UPLOAD_TYPES, f"_w.{area}.file")
        return (cached_corpus("upload", "", upload), None) if upload else (None, labels["upload_hint"])
    if source == "hf":
        preset = persisted(where.selectbox, t("corpus.hf_preset"), f"{area}.hf_preset", "wikipedia-fr",
                           options=list(C.HF_PRESETS), per_lang=per_lang,
                           format_func=_preset_label)
        if where.button(t("corpus.hf_load"), key=f"{area}.hf_button"):
            st.session_state.pop(f"{area}.hf", None)
            with st.spinner(t("corpus.hf_loading")):
                st.session_state[f"{area}.hf"] = C.corpus_from_hf(preset)
        found = st.session_state.get(f"{area}.hf")
        return found, None if found else t("corpus.hf_hint")
    return cached_corpus(source), None


def _preset_label(key: str) -> str:
    label = C.HF_PRESETS[key]["label"]
    return say(label) if isinstance(label, Message) else str(label)


def origin_of(corpus: C.Corpus) -> str:
    """Where the documents come from, for a caption (pasted text has no file name)."""
    return corpus.origin or t("corpus.src.paste")


def attempt(where: Any, fn: Callable, *args, **kw):
    """``fn(*args, **kw)``, or None after showing a gpt_core refusal in ``where``, in the user's language."""
    try:
        return fn(*args, **kw)
    except GPTCoreError as exc:
        where.warning(plain(say(exc)))
        return None


def metrics(where: Any, pairs: Sequence[tuple[str, Any]]) -> None:
    """One ``st.metric`` per (label, value), side by side; whole numbers written the UI language's way."""
    lang = current_lang()
    for col, (label, value) in zip(where.columns(len(pairs)), pairs):
        col.metric(label, number(value, lang) if isinstance(value, int) and not isinstance(value, bool) else value)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_encode(_tokenizer: Any, tokenizer_key: tuple, docs: tuple[str, ...]) -> list[list[int]]:
    return D.encode_documents(list(docs), _tokenizer)


def tokenizer_key(tokenizer: Any) -> tuple:
    return (getattr(tokenizer, "name", ""), getattr(tokenizer, "label", ""), getattr(tokenizer, "vocab_size", 0))


# ========================================================================= page
def _kept(widget, label: str, name: str, default: Any, **kw):
    """A Data widget whose value survives page switches; a fresh widget (new labels) per language."""
    return persisted(widget, label, f"data.{name}", default, per_lang=True, **kw)


def _tokenizer(where: Any, lm) -> tuple[Any, tuple[int, int] | None]:
    kind = _kept(where.radio, t("data.tokenizer"), "tok", "model", options=["model", "gpt2"], horizontal=True,
                 format_func=lambda k: t(f"data.tok.{k}"))
    tok = lm.tokenizer if kind == "model" else load_tokenizer("gpt2")
    specials = attempt(st, C.special_ids, tok)
    if specials is not None:
        where.caption(t("data.tok_info", label=tokenizer_label(tok), eot=specials[0], pad=specials[1]))
    return tok, specials


def _source(where: Any) -> tuple[C.Corpus | None, str | None]:
    labels = {"source": t("data.source"), "paste": t("data.paste"), "paste_default": "data.paste_default",
              "upload": t("data.upload"), "upload_hint": t("data.upload_hint")}
    try:
        return pick_corpus("data", where, labels, per_lang=True)
    except GPTCoreError as exc:
        st.error(t("data.bad_source", reason=plain(say(exc))))
        return None, None


def _alpaca_tab(tok: Any) -> None:
    st.markdown(t("data.alpaca_intro"))
    a1, a2, a3, a4 = st.columns([2, 1, 1, 1])
    src = _kept(a1.radio, t("data.inst_source"), "inst_src", "bundled", options=["bundled", "upload"],
                format_func=lambda k: t(f"data.inst.{k}"), horizontal=True)
    upload = uploaded(a1, t("data.inst_upload"), C.RECORD_TYPES, "_w.data.inst_file") if src == "upload" else None
    try:
        records = C.instruction_records(upload) if src == "bundled" or upload else None
        first = follow_language("data.example", FIRST_EXAMPLE, per_lang=True) if src == "bundled" else 1
        index = _kept(a2.number_input, t("data.example", n=len(records)), "example", first, min_value=1,
                      max_value=len(records), step=1) if records else 0
        style = _kept(a3.radio, t("data.style"), "style", follow_language("data.style", ALPACA_STYLE, per_lang=True),
                      options=list(D.ALPACA_STYLES))
        size = _kept(a4.slider, t("data.collate_size"), "collate_size", 3, min_value=1, max_value=4)
        mask_prompt = _kept(a4.checkbox, t("data.mask_prompt"), "mask_prompt", False)
        if not records:
            return
        prompt, response = D.format_alpaca(records[index - 1], style)
        view = F.collate_view(records, index - 1, size, tok, style, mask_prompt)
    except GPTCoreError as exc:
        st.error(t("data.bad_source", reason=plain(say(exc))))
        return
    st.code(prompt + response, language=None, wrap_lines=True)
    st.caption(t("data.prompt_tokens", p=len(tok.encode(prompt)), r=len(tok.encode(response))))
    metrics(st, [(t("data.m.shape"), " × ".join(map(str, view.batch["inputs"].shape))),
                 (t("data.m.ign_pad"), view.n_ignored_pad), (t("data.m.ign_prompt"), view.n_ignored_prompt),
                 (t("data.m.loss_tokens"), view.batch["n_loss_tokens"])])
    rows = [t(f"data.row.{k}", i=index + i) for i in range(len(view.cats) // 2) for k in ("x", "y")]
    names = [t(f"data.cat.{k}") for k in ("prompt", "response", "end", "pad", "ign_pad", "ign_prompt")]
    st.plotly_chart(F.category_grid(view.cats, view.texts, rows, names, F.COLLATE_COLOURS,
                                    t("data.collate_title"), t("data.position"), view.values, current_lang()),
                    width="stretch")
    st.caption(t("data.collate_note", ignore=D.IGNORE_INDEX))


def _chunk_tab(docs_ids: list[list[int]], tok: Any, n_docs: int) -> None:
    st.markdown(t("data.chunk_intro"))
    k1, k2 = st.columns(2)
    context = _kept(k1.select_slider, t("data.context"), "context", 128, options=[8, 16, 32, 64, 128, 256])
    last = _kept(k2.radio, t("data.last"), "last", "pad", options=["pad", "drop"], horizontal=True,
                 format_func=lambda k: t(f"data.last.{k}"))
    grids = attempt(st, F.chunk_grids, docs_ids, tok, context, last) or ()
    names = [t("data.cat.pad"), t("data.cat.eot")] + [t("data.cat.doc", d=d + 1) for d in range(n_docs)]
    for col, g in zip(st.columns(2, border=True), grids):
        res = g.result
        col.markdown(f"**{t(f'data.strategy.{res.strategy}')}**")
        metrics(col, [(t("data.m.rows"), f"{number(res.n_rows, current_lang())} × {context}"),
                      (t("data.m.waste"), f"{decimal(res.waste_pct, 1)}\u202f%" if current_lang() == "fr"
                       else f"{decimal(res.waste_pct, 1)}%"),
                      (t(f"data.m.lost_{res.strategy}"), res.dropped_tokens + res.truncated_tokens)])
    rows: list[str] = []
    for g in grids:
        rows = [t("data.row.n", i=r) for r in range(g.shown_rows)]
        st.plotly_chart(F.category_grid(g.cats, g.texts, rows, names, F.doc_colours(n_docs), t(
            f"data.grid_title.{g.result.strategy}", shown=g.shown_rows, n=g.result.n_rows), t("data.position"),
            lang=current_lang()), width="stretch")
    if grids:
        st.plotly_chart(F.mask_grid(grids[1].result.attention_mask[:len(rows)].tolist(), rows,
                                    [t("data.mask0"), t("data.mask1")], t("data.mask_title"), t("data.position"),
                                    current_lang()), width="stretch")
        st.caption(t("data.waste_note"))


def _windows_tab(stream: list[int], tok: Any) -> tuple[Any, int, int]:
    st.markdown(t("data.windows_intro"))
    w1, w2, w3 = st.columns(3)
    max_length = _kept(w1.slider, "max_length", "max_length", 8, min_value=2, max_value=64)
    stride = _kept(w2.slider, "stride", "stride", 4, min_value=1, max_value=64)
    wv = attempt(st, F.window_view, stream, tok, max_length, stride)
    if wv is None:
        return None, max_length, stride
    r = wv.result
    chosen = _kept(w3.slider, t("data.window"), "window", 0, min_value=0,
                   max_value=r.n_samples - 1) if r.n_samples > 1 else 0
    metrics(st, [(t(f"data.m.{k}"), v) for k, v in zip(("samples", "overlap", "gap", "tail", "tokens"),
                 (r.n_samples, r.overlap, r.gap, r.unused_tail, r.n_tokens))])
    block = F.shown_windows(wv, chosen)
    st.plotly_chart(F.window_bars(r.starts[block.start:block.stop], max_length, wv.texts, chosen,
                                  [t(f"data.bar.{k}") for k in "xyc"], t("data.windows_title", a=block.start,
                                  b=block.stop - 1, n=r.n_samples), t("data.position"), block.start, current_lang()),
                    width="stretch")
    st.markdown(t("data.shift_title", i=chosen))
    st.dataframe(F.shift_table(wv, chosen, [t(f"data.shift.{k}") for k in ("xt", "xi", "yt", "yi")]))
    return wv, max_length, stride


def _batches_tab(wv: Any, stream: list[int], tok: Any, max_length: int, stride: int) -> None:
    st.markdown(t("data.batches_intro"))
    b = st.columns(5)
    bs = _kept(b[0].slider, t("data.batch_size"), "bs", 4, min_value=1, max_value=32)
    epochs = _kept(b[1].slider, t("data.epochs"), "epochs", 2, min_value=1, max_value=20)
    accum = _kept(b[2].slider, t("data.accum"), "accum", 1, min_value=1, max_value=8)
    drop_last = _kept(b[3].checkbox, "drop_last", "drop_last", True)
    shuffle = _kept(b[4].checkbox, "shuffle", "shuffle", True)
    if wv is None:
        st.info(t("data.need_windows"))
        return
    a = D.batch_arithmetic(wv.result.n_samples, bs, epochs, drop_last, accum, max_length)
    metrics(st, [(t(f"data.m.{k}"), a[k]) for k in ("batches_per_epoch", "optimizer_steps",
                                                     "effective_batch_size", "tokens_per_step")])
    st.markdown(arithmetic_sentence(a, t, current_lang()))
    batch = attempt(st, first_batch, stream, max_length, stride, bs, shuffle, drop_last)
    for col, key, tensor in zip(st.columns(2), ("batch_x", "batch_y"), batch or ()):
        col.markdown(t(f"data.{key}", shape=tuple(tensor.shape)))
        col.dataframe(F.batch_frame(tensor, tok))


def page() -> None:
    """The whole Data page (pages/8_Data.py calls it)."""
    lm = current_model()
    st.title(t("nav.8_Data"))
    st.caption(t("data.intro"))
    c1, c2, c3 = st.columns([2, 2, 1])
    tok, specials = _tokenizer(c1, lm)
    if specials is None:
        return
    corpus, problem = _source(c2)
    about = st.empty()
    tabs = st.tabs([t("data.tab.chunk"), t("data.tab.windows"), t("data.tab.batches"), t("data.tab.alpaca")])
    with tabs[3]:  # Alpaca formatting and collate, from its own source
        _alpaca_tab(tok)
    if corpus is None:
        for tab in tabs[:3]:
            tab.info(problem or t("data.no_corpus"))
        return
    docs, n_cut = corpus.cut(MAX_DOC_CHARS)
    n_max = min(MAX_DOCS, len(docs))
    n_docs = _kept(c3.slider, t("data.n_docs"), "n_docs", 6, min_value=1, max_value=n_max) if n_max > 1 else 1
    docs_ids = cached_encode(tok, tokenizer_key(tok), tuple(docs[:n_docs]))
    stream = C.eot_stream(docs_ids, specials[0])
    lang = current_lang()
    about.caption(t("data.corpus_info", origin=plain(origin_of(corpus)), total=number(len(docs), lang), n=n_docs,
                    tokens=number(len(stream), lang))
                  + (" " + t("data.cut_docs", n=n_cut, chars=MAX_DOC_CHARS) if n_cut else ""))
    with tabs[0]:
        _chunk_tab(docs_ids, tok, n_docs)
    with tabs[1]:
        wv, max_length, stride = _windows_tab(stream, tok)
    with tabs[2]:
        _batches_tab(wv, stream, tok, max_length, stride)
