"""Sections of the embeddings page (widgets, caching, rendering; logic in gpt_core.embeddings).

Session keys: ``emb.text``, ``emb.words``, ``emb.arith.a/b/c`` ... (plain keys, restored after a
page switch). Example texts and words are in the UI language and follow it until the user edits them.
"""
from __future__ import annotations

import html
import time

import pandas as pd
import streamlit as st

from gpt_core import embeddings as E
from gpt_core.backend import ModelInfo, backend_of
from gpt_core.errors import GPTCoreError

from explorer.figures import embeddings as F
from explorer.figures.bars import fixed
from explorer.ui.i18n import current_lang, t
from explorer.ui.messages import number, plain, say, show
from explorer.ui.state import persisted, set_value
from explorer.ui.text_input import check_text, show_messages
from explorer.ui.token_chips import visible
from explorer.views.decoding_settings import localized

TEXT, WORDS = "emb.text", "emb.words"
ARITH = ("emb.arith.a", "emb.arith.b", "emb.arith.c")


def model_key(lm) -> str:
    """A hashable key for caches: the source, plus the object (a fine-tuned model is another one)."""
    return f"{lm.source.key}|{id(lm.model)}"


def model_info(lm) -> ModelInfo:
    """What the page header says about the model (vocabulary, width, kind of positions)."""
    return backend_of(lm.model).info()


@st.cache_data(show_spinner=False, max_entries=32)
def _input(_model, _tokenizer, key: str, text: str, max_tokens: int) -> E.InputEmbeddings:
    return E.input_embeddings(_model, _tokenizer, text, max_tokens)


@st.cache_data(show_spinner=False, max_entries=16)
def _positions(_model, key: str, n: int) -> E.PositionInfo:
    return E.position_info(_model, n)


@st.cache_resource(show_spinner=False, max_entries=2)
def _unit(_model, key: str):
    return E.unit_embeddings(_model)


@st.cache_resource(show_spinner=False, max_entries=2)
def _whole_words(_model, _tokenizer, key: str):
    """(rows,) bool: the tokens that are whole words (computed once per model: 262k pieces for Gemma)."""
    return E.whole_word_mask(_tokenizer, _unit(_model, key).shape[0])


def sci(x: float, lang: str) -> str:
    """A tiny number such as 1.2e-07 (decimal comma in French)."""
    text = f"{x:.2e}"
    return text.replace(".", ",") if lang == "fr" else text


@st.cache_data(show_spinner=False, max_entries=32)
def _projection(_model, _tokenizer, key: str, words: tuple, k: int, dims: int, pooling: str) -> E.Projection:
    """The chosen words and their nearest whole words (no fragments: they would crowd the map)."""
    return E.project_words(_model, _tokenizer, list(words), k, dims, pooling, unit=_unit(_model, key),
                           allowed=_whole_words(_model, _tokenizer, key))


# --------------------------------------------------------------------------- input rows


def render_input(lm) -> None:
    raw = persisted(st.text_area, t("embeddings.text"), TEXT, localized(TEXT, "embeddings.default_text"), height=80)
    checked = check_text(raw, max_chars=2_000)
    show_messages(st, checked)
    if not checked.ok:
        return
    try:
        emb = _input(lm.model, lm.tokenizer, model_key(lm), checked.text, E.MAX_INPUT_TOKENS)
    except GPTCoreError as exc:
        show(st, exc)
        return
    if emb.n_tokens_total > len(emb.ids):
        st.warning(t("embeddings.truncated", shown=len(emb.ids), total=emb.n_tokens_total))
    labels, lang = F.token_axis_labels(emb.pieces), current_lang()
    x_title, y_title = t("embeddings.dim_axis", d=emb.d_model), t("embeddings.token_axis")
    heat = lambda m, title: F.matrix_heatmap(m, labels, title, x_title, y_title, t("embeddings.value"),  # noqa: E731
                                             lang)
    prefix = getattr(lm.tokenizer, "model_prefix", ())
    if prefix and emb.ids[:len(prefix)] == list(prefix):
        st.caption(t("embeddings.prefix_note", token=plain(visible(emb.pieces[0]))))
    if emb.pos is not None:
        tabs = st.tabs([t("embeddings.tab_tok"), t("embeddings.tab_pos"), t("embeddings.tab_sum")])
        tabs[0].plotly_chart(heat(emb.tok, t("embeddings.tok_title")), width="stretch")
        tabs[1].plotly_chart(heat(emb.pos, t("embeddings.pos_rows_title")), width="stretch")
        tabs[2].plotly_chart(heat(emb.block_input, t("embeddings.sum_title")), width="stretch")
        st.caption(t("embeddings.sum_check", diff=sci(emb.max_abs_diff, lang)))
    else:
        tabs = st.tabs([t("embeddings.tab_tok"), t("embeddings.tab_block")])
        tabs[0].plotly_chart(heat(emb.tok, t("embeddings.tok_title")), width="stretch")
        tabs[1].plotly_chart(heat(emb.block_input, t("embeddings.block_title_rope")), width="stretch")
        st.caption(t("embeddings.rope_sum", diff=sci(emb.max_abs_diff, lang)))


# --------------------------------------------------------------------------- positions


def render_positions(lm, context_length: int) -> None:
    top = min(context_length, 512)
    n = persisted(st.slider, t("embeddings.n_positions"), "emb.n_positions", min(top, 128), min_value=2, max_value=top)
    try:
        info = _positions(lm.model, model_key(lm), n)
    except GPTCoreError as exc:
        show(st, exc)
        return
    axis, lang = t("embeddings.position_axis"), current_lang()
    if info.kind == "learned":
        left, right = st.columns(2)
        rows = info.table[: min(n, 128)]
        left.plotly_chart(F.matrix_heatmap(rows, None, t("embeddings.table_title"),
                                           t("embeddings.dim_axis", d=rows.shape[1]), axis, t("embeddings.value"),
                                           lang), width="stretch")
        right.plotly_chart(F.cosine_heatmap(info.cosine, t("embeddings.cos_title"), axis, "cos", lang),
                           width="stretch")
        random = lm.source.kind == "random"
        st.caption(t("embeddings.learned_help") + (" " + t("embeddings.random_note") if random else ""))
        return
    base = number(int(info.rope_base), lang) if float(info.rope_base).is_integer() else fixed(info.rope_base, 1, lang)
    st.info(t("embeddings.rope_explain", base=base, head_dim=info.head_dim, pairs=info.head_dim // 2))
    if len(info.rope_bases) > 1:
        bases = ", ".join(t("embeddings.rope_base_of", base=number(int(b), lang), n=n,
                            kind=t(f"embeddings.layer_type.{name}")) for name, (b, n) in info.rope_bases.items())
        st.caption(t("embeddings.rope_bases", bases=bases, base=base))
    left, right = st.columns(2)
    left.plotly_chart(F.rope_turns_heatmap(info.rope_cos, t("embeddings.rope_turns_title"), t("embeddings.pair_axis"),
                                           axis, "cos(p·θ)", lang), width="stretch")
    right.plotly_chart(F.cosine_heatmap(info.cosine, t("embeddings.rope_cos_title"), axis, "cos", lang),
                       width="stretch")
    st.caption(t("embeddings.rope_cos_help"))


# --------------------------------------------------------------------------- PCA and neighbours


def render_projection(lm) -> None:
    raw = persisted(st.text_input, t("embeddings.words"), WORDS, localized(WORDS, "embeddings.default_words"))
    c1, c2, c3 = st.columns(3)
    k = persisted(c1.slider, t("embeddings.k"), "emb.k", 2, min_value=0, max_value=10)
    dims = persisted(c2.radio, t("embeddings.dims"), "emb.dims", 2, options=[2, 3], horizontal=True,
                     format_func=lambda d: f"{d}D")
    pooling = persisted(c3.radio, t("embeddings.pooling"), "emb.pooling", list(E.POOLINGS)[0], options=list(E.POOLINGS),
                        horizontal=True, format_func={p: t(f"embeddings.pool_{p}") for p in E.POOLINGS}.get)
    try:
        words = E.parse_words(raw)
        proj = _projection(lm.model, lm.tokenizer, model_key(lm), tuple(words), k, dims, pooling)
    except GPTCoreError as exc:
        show(st, exc)
        return
    st.plotly_chart(F.projection_figure(proj, t("embeddings.pca_title"), t("embeddings.pca_words"),
                                        t("embeddings.pca_neighbours"), t("embeddings.pca_axis"), current_lang()),
                    width="stretch")
    split = [f"{p.label} → {len(p.ids)}" for p in proj.words if len(p.ids) > 1]
    st.caption(t("embeddings.pca_help") + (" " + t("embeddings.pca_split", words=", ".join(split)) if split else ""))


def render_neighbours(lm) -> None:
    """Nearest tokens of a word or an id (whole words only by default), then the word arithmetic."""
    c1, c2, c3 = st.columns([1, 2, 1])
    mode = persisted(c1.radio, t("embeddings.nn_mode"), "emb.nn_mode", "text", options=["text", "id"],
                     format_func={m: t(f"embeddings.nn_by_{m}") for m in ("text", "id")}.get)
    default = localized("emb.nn_query.text", "embeddings.nn_default") if mode == "text" else "1000"
    query = persisted(c2.text_input, t("embeddings.nn_query"), f"emb.nn_query.{mode}", default, max_chars=60)
    k = persisted(c3.slider, t("embeddings.nn_k"), "emb.nn_k", 10, min_value=1, max_value=E.MAX_NEIGHBOURS)
    whole = persisted(c1.toggle, t("embeddings.nn_whole"), "emb.nn_whole", True, help=t("embeddings.nn_whole_help"))
    if mode == "id" and (not query.strip().isdigit() or len(query.strip()) > 9):
        st.error(t("embeddings.nn_bad_id", q=plain(query[:20])))  # the page's own check, said directly
    else:
        _neighbour_table(lm, mode, query, k, whole)
    render_arithmetic(lm)


def _neighbour_table(lm, mode: str, query: str, k: int, whole: bool) -> None:
    unit = _unit(lm.model, model_key(lm))
    allowed = _whole_words(lm.model, lm.tokenizer, model_key(lm)) if whole else None
    try:
        if mode == "text":
            table = E.neighbours_of_word(unit, lm.tokenizer, query, k, allowed=allowed)
        else:
            table = E.neighbours_of_id(unit, lm.tokenizer, int(query.strip()), k, allowed=allowed)
    except GPTCoreError as exc:
        show(st, exc)
        return
    pieces = " + ".join(f"“{visible(p).replace(' ', '␣')}” ({i})" for p, i in zip(table.pieces, table.ids))
    st.caption(t("embeddings.nn_query_tokens", tokens=plain(pieces)))
    lang = current_lang()
    st.dataframe(pd.DataFrame({
        t("common.rank"): [n.rank for n in table.neighbours],
        t("common.token"): [visible(n.text).replace(" ", "␣") for n in table.neighbours],
        t("common.id"): [n.id for n in table.neighbours],
        t("embeddings.cosine"): [fixed(n.cosine, 4, lang) for n in table.neighbours],
    }), hide_index=True, width="stretch", height=min(600, 38 + 35 * len(table.neighbours)))


# --------------------------------------------------------------------------- word arithmetic


def examples() -> list[tuple[str, str, str, str]]:
    """The page's examples in the UI language: (a, b, c, expected answer)."""
    out = []
    for item in t("embeddings.arith_examples").split("|"):
        words = [w.strip() for w in item.split(",")]
        if len(words) == 4 and all(words):
            out.append(tuple(words))
    return out


def _use_example(words: tuple[str, str, str, str]) -> None:
    for name, word in zip(ARITH, words[:3]):
        set_value(name, word)


@st.cache_data(show_spinner=False, max_entries=32)
def _analogy(_model, _tokenizer, key: str, a: str, b: str, c: str, k: int, expected: str | None):
    start = time.perf_counter()
    result = E.word_analogy(_unit(_model, key), _tokenizer, a, b, c, k,
                            candidates=_whole_words(_model, _tokenizer, key), expected=expected)
    return result, time.perf_counter() - start


def render_arithmetic(lm) -> None:
    """A − B + C with three one-token words (each checked), the nearest whole words as a table and bars."""
    st.subheader(t("embeddings.arith_title"))
    st.caption(t("embeddings.arith_intro"))
    row = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    words = [persisted(col.text_input, t(f"embeddings.arith_{x}"), name,
                       localized(name, f"embeddings.arith_default_{x}"), max_chars=E.MAX_WORD_CHARS)
             for col, name, x in zip(row, ARITH, "abc")]
    k = persisted(row[3].slider, t("embeddings.arith_k"), "emb.arith.k", 10, min_value=1, max_value=E.MAX_NEIGHBOURS)
    known = examples()
    ex_cols = st.columns([1] + [2] * len(known), vertical_alignment="center")
    ex_cols[0].markdown(t("embeddings.arith_examples_label"))
    for i, (col, ex) in enumerate(zip(ex_cols[1:], known)):
        col.button(f"{ex[0]} − {ex[1]} + {ex[2]}", on_click=_use_example, args=(ex,), key=f"emb.arith.ex{i}",
                   width="stretch")
    bad = False
    for word in words:
        try:
            E.single_token(lm.tokenizer, word)
        except GPTCoreError as exc:
            st.error(plain(say(exc)))
            bad = True
    if bad:
        return
    expected = next((ex[3] for ex in known if [w.strip() for w in words] == list(ex[:3])), None)
    try:
        result, seconds = _analogy(lm.model, lm.tokenizer, model_key(lm), *words, k, expected)
    except GPTCoreError as exc:
        show(st, exc)
        return
    _show_analogy(result, seconds, k)


def _show_analogy(result: E.Analogy, seconds: float, k: int) -> None:
    lang = current_lang()
    a, b, c = (plain(w) for w in result.words)
    if result.expected is not None:
        expected = plain(result.expected)
        if result.expected_rank is None:
            st.info(t("embeddings.arith_unranked", expected=expected))
        elif result.expected_rank == 1:
            st.success(t("embeddings.arith_top", expected=expected, cos=fixed(result.expected_cosine, 3, lang),
                         a=a, b=b, c=c))
        else:
            st.warning(t("embeddings.arith_rank", expected=expected, rank=number(result.expected_rank, lang),
                         n=number(result.n_candidates, lang), cos=fixed(result.expected_cosine, 3, lang), k=k))
    labels = [visible(n.text).strip() for n in result.answers]
    hit = next((i for i, n in enumerate(result.answers) if n.id == result.expected_id), None)
    raw = [html.escape(w) for w in result.words]  # a chart title is not Markdown, but plotly reads some HTML
    left, right = st.columns([2, 3])
    left.dataframe(pd.DataFrame({
        t("common.rank"): [n.rank for n in result.answers],
        t("common.token"): [visible(n.text).replace(" ", "␣") for n in result.answers],
        t("common.id"): [n.id for n in result.answers],
        t("embeddings.cosine"): [fixed(n.cosine, 3, lang) for n in result.answers],
    }), hide_index=True, width="stretch", height=min(600, 38 + 35 * len(result.answers)))
    right.plotly_chart(F.analogy_bars(labels, [n.cosine for n in result.answers],
                                      t("embeddings.arith_chart", a=raw[0], b=raw[1], c=raw[2]),
                                      t("embeddings.cosine"), highlight=hit, lang=lang),
                       width="stretch", key="emb.arith_fig")
    seconds_text = f"{fixed(seconds, 2, lang)} s"
    st.caption(t("embeddings.arith_candidates", n=number(result.n_candidates, lang), seconds=seconds_text))
