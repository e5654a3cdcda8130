"""Data pipeline: documents -> EOT or padding rows, sliding windows, batches, Alpaca collate."""
import streamlit as st

from explorer import data_view as V
from explorer import fig_data as F
from explorer.i18n import t
from explorer.models import current_model
from explorer.textinput import check_text, show_messages
from gpt_core import data as D
from gpt_core.errors import GPTCoreError
from gpt_core.tokenizers import load_tokenizer

lm = current_model()
st.title(t("nav.8_Data"))
st.caption(t("data.intro"))

c1, c2, c3 = st.columns([2, 2, 1])
tok_kind = V.kept(c1, "radio", t("data.tokenizer"), "tok", "model", ["model", "gpt2"], horizontal=True,
                  format_func=lambda k: t(f"data.tok.{k}"))
tok = lm.tokenizer if tok_kind == "model" else load_tokenizer("gpt2")
specials = V.attempt(st, V.special_ids, tok)
if specials is None:
    st.stop()
c1.caption(t("data.tok_info", label=tok.label, eot=specials[0], pad=specials[1]))
source = V.kept(c2, "selectbox", t("data.source"), "source", "corpus_fr", V.CORPUS_SOURCES,
                format_func=lambda k: t(f"data.src.{k}"))
corpus, problem = None, None
try:
    if source == "paste":
        checked = check_text(V.kept(c2, "text_area", t("data.paste"), "text", t("data.paste_default"), height=110))
        show_messages(c2, checked)
        corpus = V.cached_corpus("paste", checked.text) if checked.ok else None
    elif source == "upload":
        file = c2.file_uploader(t("data.upload"), type=V.UPLOAD_TYPES, key="_w.data.file")
        corpus = V.cached_corpus("upload", "", V.upload_of(file)) if file else None
        problem = None if file else t("data.upload_hint")
    elif source == "hf":
        preset = V.kept(c2, "selectbox", t("data.hf_preset"), "hf_preset", "wikipedia-fr", D.HF_PRESETS,
                        format_func=lambda k: D.HF_PRESETS[k]["label"])
        if c2.button(t("data.hf_load"), key="data.hf_button"):
            st.session_state.pop("data.hf", None)
            with st.spinner(t("data.hf_loading")):
                st.session_state["data.hf"] = V.corpus_from_hf(preset)
        corpus = st.session_state.get("data.hf")
        problem = None if corpus else t("data.hf_hint")
    else:
        corpus = V.cached_corpus(source)
except GPTCoreError as exc:
    st.error(t("data.bad_source", reason=str(exc)))

about = st.empty()
tabs = st.tabs([t("data.tab.chunk"), t("data.tab.windows"), t("data.tab.batches"), t("data.tab.alpaca")])
with tabs[3]:  # Alpaca formatting and collate, from its own source
    st.markdown(t("data.alpaca_intro"))
    a1, a2, a3, a4 = st.columns([2, 1, 1, 1])
    inst_src = V.kept(a1, "radio", t("data.inst_source"), "inst_src", "bundled", ["bundled", "upload"],
                      format_func=lambda k: t(f"data.inst.{k}"), horizontal=True)
    inst_file = a1.file_uploader(t("data.inst_upload"), type=V.RECORD_TYPES, key="_w.data.inst_file") \
        if inst_src == "upload" else None
    records = None
    try:
        if inst_src == "bundled" or inst_file:
            records = V.instruction_records(V.upload_of(inst_file))
        index = V.kept(a2, "number_input", t("data.example", n=len(records)), "example", 1, min_value=1,
                       max_value=len(records), step=1) if records else 0
        style = V.kept(a3, "radio", t("data.style"), "style", "alpaca", D.ALPACA_STYLES)
        size = V.kept(a4, "slider", t("data.collate_size"), "collate_size", 3, min_value=1, max_value=4)
        mask_prompt = V.kept(a4, "checkbox", t("data.mask_prompt"), "mask_prompt", False)
        if records:
            prompt, response = D.format_alpaca(records[index - 1], style)
            view = V.collate_view(records, index - 1, size, tok, style, mask_prompt)
    except GPTCoreError as exc:
        st.error(t("data.bad_source", reason=str(exc)))
        records = None
    if records:
        st.code(prompt + response, language=None, wrap_lines=True)
        st.caption(t("data.prompt_tokens", p=len(tok.encode(prompt)), r=len(tok.encode(response))))
        V.metrics(st, [(t("data.m.shape"), " × ".join(map(str, view.batch["inputs"].shape))),
                       (t("data.m.ign_pad"), view.n_ignored_pad), (t("data.m.ign_prompt"), view.n_ignored_prompt),
                       (t("data.m.loss_tokens"), view.batch["n_loss_tokens"])])
        rows = [t(f"data.row.{k}", i=index + i) for i in range(len(view.cats) // 2) for k in ("x", "y")]
        names = [t(f"data.cat.{k}") for k in ("prompt", "response", "end", "pad", "ign_pad", "ign_prompt")]
        st.plotly_chart(F.category_grid(view.cats, view.texts, rows, names, F.COLLATE_COLOURS,
                                        t("data.collate_title"), t("data.position"), view.values), width="stretch")
        st.caption(t("data.collate_note", ignore=D.IGNORE_INDEX))

if corpus is None:
    for tab in tabs[:3]:
        tab.info(problem or t("data.no_corpus"))
    st.stop()
n_max = min(V.MAX_DOCS, len(corpus.docs))
n_docs = V.kept(c3, "slider", t("data.n_docs"), "n_docs", 6, min_value=1, max_value=n_max) if n_max > 1 else 1
docs_ids = V.cached_encode(tok, V.tokenizer_key(tok), tuple(corpus.docs[:n_docs]))
stream = V.eot_stream(docs_ids, specials[0])
about.caption(t("data.corpus_info", origin=corpus.origin, total=len(corpus.docs), n=n_docs, tokens=len(stream))
           + (" " + t("data.cut_docs", n=corpus.cut_docs, chars=V.MAX_DOC_CHARS) if corpus.cut_docs else ""))

with tabs[0]:
    st.markdown(t("data.chunk_intro"))
    k1, k2 = st.columns(2)
    context = V.kept(k1, "select_slider", t("data.context"), "context", 128, [8, 16, 32, 64, 128, 256])
    last = V.kept(k2, "radio", t("data.last"), "last", "pad", ["pad", "drop"], horizontal=True,
                  format_func=lambda k: t(f"data.last.{k}"))
    grids = V.attempt(st, V.chunk_grids, docs_ids, tok, context, last) or ()
    names = [t("data.cat.pad"), t("data.cat.eot")] + [t("data.cat.doc", d=d + 1) for d in range(n_docs)]
    for col, g in zip(st.columns(2, border=True), grids):
        res = g.result
        col.markdown(f"**{t(f'data.strategy.{res.strategy}')}**")
        V.metrics(col, [(t("data.m.rows"), f"{res.n_rows} × {context}"), (t("data.m.waste"), f"{res.waste_pct:.1f} %"),
                        (t(f"data.m.lost_{res.strategy}"), res.dropped_tokens + res.truncated_tokens)])
    for g in grids:
        rows = [t("data.row.n", i=r) for r in range(g.shown_rows)]
        st.plotly_chart(F.category_grid(g.cats, g.texts, rows, names, F.doc_colours(n_docs), t(
            f"data.grid_title.{g.result.strategy}", shown=g.shown_rows, n=g.result.n_rows), t("data.position")),
            width="stretch")
    if grids:
        st.plotly_chart(F.mask_grid(grids[1].result.attention_mask[:len(rows)].tolist(), rows,
                                    [t("data.mask0"), t("data.mask1")], t("data.mask_title"), t("data.position")),
                        width="stretch")
        st.caption(t("data.waste_note"))

with tabs[1]:
    st.markdown(t("data.windows_intro"))
    w1, w2, w3 = st.columns(3)
    max_length = V.kept(w1, "slider", "max_length", "max_length", 8, min_value=2, max_value=64)
    stride = V.kept(w2, "slider", "stride", "stride", 4, min_value=1, max_value=64)
    wv = V.attempt(st, V.window_view, stream, tok, max_length, stride)
    if wv is not None:
        r = wv.result
        chosen = V.kept(w3, "slider", t("data.window"), "window", 0, min_value=0,
                        max_value=r.n_samples - 1) if r.n_samples > 1 else 0
        V.metrics(st, [(t(f"data.m.{k}"), v) for k, v in zip(("samples", "overlap", "gap", "tail", "tokens"),
                       (r.n_samples, r.overlap, r.gap, r.unused_tail, r.n_tokens))])
        block = V.shown_windows(wv, chosen)
        st.plotly_chart(F.window_bars(r.starts[block.start:block.stop], max_length, wv.texts, chosen,
                                      [t(f"data.bar.{k}") for k in "xyc"], t("data.windows_title", a=block.start,
                                      b=block.stop - 1, n=r.n_samples), t("data.position"), block.start), width="stretch")
        st.markdown(t("data.shift_title", i=chosen))
        st.dataframe(V.shift_table(wv, chosen, [t(f"data.shift.{k}") for k in ("xt", "xi", "yt", "yi")]))

with tabs[2]:
    st.markdown(t("data.batches_intro"))
    b = st.columns(5)
    bs = V.kept(b[0], "slider", t("data.batch_size"), "bs", 4, min_value=1, max_value=32)
    epochs = V.kept(b[1], "slider", t("data.epochs"), "epochs", 2, min_value=1, max_value=20)
    accum = V.kept(b[2], "slider", t("data.accum"), "accum", 1, min_value=1, max_value=8)
    drop_last = V.kept(b[3], "checkbox", "drop_last", "drop_last", True)
    shuffle = V.kept(b[4], "checkbox", "shuffle", "shuffle", True)
    if wv is None:
        st.info(t("data.need_windows"))
    else:
        a = D.batch_arithmetic(wv.result.n_samples, bs, epochs, drop_last, accum, max_length)
        V.metrics(st, [(t(f"data.m.{k}"), a[k]) for k in ("batches_per_epoch", "optimizer_steps",
                                                           "effective_batch_size", "tokens_per_step")])
        st.markdown(V.arithmetic_sentence(a, t))
        batch = V.attempt(st, V.first_batch, stream, max_length, stride, bs, shuffle, drop_last)
        for col, key, tensor in zip(st.columns(2), ("batch_x", "batch_y"), batch or ()):
            col.markdown(t(f"data.{key}", shape=tuple(tensor.shape)))
            col.dataframe(V.batch_frame(tensor, tok))
