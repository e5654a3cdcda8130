"""The Architecture page: the chosen model's own blocks next to GPT-2 written from scratch.

gpt_core's GPT is the reference: its source code is shown module by module.
When the chosen model is another family (SmolLM2 is Llama-style, Gemma 3 ...),
the page shows that model's own blocks, with shapes recorded by forward hooks
on a real forward pass of the user's text (:func:`gpt_core.architecture.anatomy`),
and says what differs from GPT-2. The parity badge checks our GPT against
Hugging Face's GPT-2.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st
import torch

from gpt_core import architecture as arch
from gpt_core.backend import backend_of
from gpt_core.config import GPTConfig

from explorer.figures.architecture import param_bars, percent, top_bars, window_bars
from explorer.ui.i18n import current_lang, lookup, t
from explorer.ui.messages import attempt, decimal, number, plain
from explorer.ui.model_store import label_of
from explorer.ui.state import get, persisted, set_value
from explorer.ui.text_input import fit_context
from explorer.ui.token_chips import visible
from explorer.views.home import human

TEXT_KEY = "architecture.text"
GPT2 = GPTConfig.preset("gpt2")  # the reference the differences are told against
# which stages go next to which module of our GPT (by role, the same names in every family)
MODULE_ROLES = {
    "GPT": ("embed", "pos_emb", "embed_sum", "rope", "block", "final_norm", "head"),
    "TransformerBlock": ("attn_norm", "attention", "post_attn_norm", "ffn_norm", "mlp", "post_ffn_norm", "block"),
    "MultiHeadAttention": ("rope", "qkv", "q_proj", "k_proj", "v_proj", "q_norm", "k_norm", "scores", "o_proj",
                           "attention"),
    "LayerNorm": arch.NORM_ROLES,
    "FeedForward": ("gate_proj", "up_proj", "act", "down_proj", "mlp"),
    "GELU": ("act",),
}
# which lines of the differences table each module's panel repeats
MODULE_PARTS = {"GPT": ("embed", "pos", "head", "size"), "TransformerBlock": ("norm_place", "span"),
                "MultiHeadAttention": ("heads", "pos", "span"), "LayerNorm": ("norm", "norm_place"),
                "FeedForward": ("mlp",), "GELU": ("mlp",)}


@dataclass
class Run:
    lm: object
    key: str                    # the model's key in the store (what the caches are keyed by)
    ids: list[int]
    facts: arch.Anatomy
    walk: arch.NextTokenWalk

    @property
    def own(self) -> bool:
        """The chosen model is gpt_core's from-scratch GPT (its code is the code shown)."""
        return self.facts.family == "gpt_core"

    @property
    def title(self) -> str:
        """The model's short name as given (its label up to the dash): for tables, never for Markdown."""
        return label_of(self.lm.source).split(" — ")[0].strip() or self.facts.model_class

    @property
    def name(self) -> str:
        """:attr:`title` escaped for Markdown."""
        return plain(self.title)


def fmt(n: int) -> str:
    return number(int(n), current_lang())


def pct(x: float) -> str:
    return percent(x, current_lang())


# ------------------------------------------------------------------ the text
def default_text() -> str:
    """This language's example sentence; an untouched example of the other language follows the switch."""
    mine = t("architecture.default_text")
    other = lookup("architecture.default_text", "en" if current_lang() == "fr" else "fr")
    if get(TEXT_KEY) == other and other != mine:
        set_value(TEXT_KEY, mine)
    return mine


def model_ids(lm, text: str) -> tuple[list[int], str | None]:
    """What the model reads for ``text`` (with the start token it expects, if any), cut to its context."""
    return fit_context(lm.tokenizer.encode_for_model(text), backend_of(lm.model).context_length)


def token_text(tokenizer, token_id: int | None) -> str:
    if token_id is None:
        return "—"
    text = tokenizer.decode([token_id]) or tokenizer.id_to_raw(token_id)
    return f"“{visible(text)}”"


def chart_labels(tokenizer, ids: list[int]) -> list[str]:
    """Readable, unique bar labels: spaces shown as ␣ (a leading space is part of the token)."""
    texts = [visible(tokenizer.decode([i]) or tokenizer.id_to_raw(i)).replace(" ", "␣") or "∅" for i in ids]
    return [f"{s} ({i})" if texts.count(s) > 1 else s for s, i in zip(texts, ids)]


# ------------------------------------------------------------------ computing
@st.cache_data(max_entries=8, show_spinner=False)
def _explain(_model, model_key: str, ids: tuple[int, ...]) -> tuple[arch.Anatomy, arch.NextTokenWalk]:
    with torch.inference_mode():
        return arch.explain(_model, list(ids), k=10)


def run_or_explain(lm, text: str) -> Run | None:
    """One forward pass with hooks on the chosen model, or None with the reason said in the user's language."""
    ids, notice = model_ids(lm, text)
    if notice:
        st.warning(notice)
    with st.spinner():
        found = attempt(st, _explain, lm.model, lm.source.key, tuple(ids), wrap="architecture.error")
    return None if found is None else Run(lm, lm.source.key, ids, *found)


# ------------------------------------------------------------------ header
def render_header(lm) -> None:
    st.title(t("architecture.title"))
    st.caption(t("architecture.intro"))
    st.info(t("architecture.subject", label=plain(label_of(lm.source))))


def render_flow(run: Run) -> None:
    f = run.facts
    st.caption(t("architecture.n_tokens", n=len(run.ids), d=f.d_model, nh=f.n_heads, kv=f.n_kv_heads, hd=f.head_dim,
                 f=fmt(f.d_ff), v=fmt(f.vocab_size)))
    prefix = getattr(run.lm.tokenizer, "model_prefix", ())
    if prefix and run.ids[:len(prefix)] == list(prefix):
        st.caption(t("architecture.bos_note", token=plain(token_text(run.lm.tokenizer, prefix[0]))))
    if run.lm.source.kind == "random":
        st.caption(t("architecture.random_note"))
    st.subheader(t("architecture.flow_header"))
    st.caption(t("architecture.flow_help" if run.own else "architecture.flow_help_model", name=run.name))
    show_shapes(st, run.facts)


def step_name(facts: arch.Anatomy, s: arch.ShapeStep) -> str:
    """The module path, with the layer kind of a block (sliding-window models) or the rotary table's kind."""
    if s.role == "block" and s.layer is not None and any(w is not None for w in facts.windows):
        window = facts.windows[s.layer]
        kind = t("architecture.kind_full") if window is None else t("architecture.kind_sliding", window=fmt(window))
        return f"{s.path} ({kind})"
    return f"{s.path} ({s.note})" if s.note else s.path


def shapes_table(facts: arch.Anatomy, steps: list[arch.ShapeStep] | None = None) -> pd.DataFrame:
    steps = facts.steps if steps is None else steps
    return pd.DataFrame({
        t("architecture.col_step"): [step_name(facts, s) for s in steps],
        t("architecture.col_module"): [s.module for s in steps],
        t("architecture.col_symbolic"): [arch.symbol(s, facts) for s in steps],
        t("architecture.col_shape"): [str(tuple(s.shape)) for s in steps],
        t("architecture.col_params"): [fmt(s.params) for s in steps],
        t("architecture.col_role"): [t(f"architecture.role_{s.role}") if s.role else "" for s in steps],
    })


def show_shapes(where, facts: arch.Anatomy, steps: list[arch.ShapeStep] | None = None) -> None:
    """The shapes table with column widths that fit a wide page without cutting text."""
    frame = shapes_table(facts, steps)
    widths = dict(zip(frame.columns, (280, 225, 100, 100, 95, 240)))
    where.dataframe(frame, hide_index=True, width="stretch", height=table_height(len(frame)),
                    column_config={c: st.column_config.Column(width=w) for c, w in widths.items()})


def compact_shapes(facts: arch.Anatomy, steps: list[arch.ShapeStep]) -> pd.DataFrame:
    """Two columns for a narrow panel: the step and its shape in symbols = numbers."""
    return pd.DataFrame({
        t("architecture.col_step"): [step_name(facts, s) for s in steps],
        t("architecture.col_symbolic"): [f"{arch.symbol(s, facts)} = {tuple(s.shape)}".replace(", ", ",")
                                         for s in steps],
    })


def table_height(n_rows: int, cap: int = 900) -> int:
    return min(cap, 38 + 35 * n_rows)


def module_steps(name: str, facts: arch.Anatomy) -> list[arch.ShapeStep]:
    """The stages shown next to one module: whole blocks only for GPT, else those of the detailed block."""
    roles, last = MODULE_ROLES[name], facts.n_layers - 1
    keep = (facts.detail_block, last) if name == "GPT" else (facts.detail_block,)
    return [s for s in facts.steps if s.role in roles and (s.role != "block" or s.layer in keep)]


# ------------------------------------------------------------------ differences
def differences(f: arch.Anatomy) -> dict[str, tuple[str, str]]:
    """part -> (GPT-2 written by hand, the chosen model), in the UI language."""
    g = GPT2
    d = "architecture.diff_"
    norm = t(f"{d}this_{f.norm}", eps=f"{f.norm_eps:.0e}") + (t(f"{d}this_offset") if f.norm_unit_offset else "")
    place = t(f"{d}this_{'sandwich' if f.sandwich_norm else 'prenorm'}") + (
        t(f"{d}this_qk_norm", hd=f.head_dim) if f.qk_norm else "")
    thetas = f.rope_theta
    if f.position == "learned":
        pos = t(f"{d}gpt2_pos", ctx=fmt(f.context_length))
    elif "sliding" in thetas and thetas.get("sliding") != thetas.get("full"):
        pos = t(f"{d}this_rope_two", local=fmt(int(thetas["sliding"])), glob=fmt(int(thetas["full"])))
    else:
        pos = t(f"{d}this_rope", theta=fmt(int(next(iter(thetas.values()), 10000))))
    q, kv = f.n_heads * f.head_dim, f.n_kv_heads * f.head_dim
    heads = (t(f"{d}this_gqa", nh=f.n_heads, kv=f.n_kv_heads, group=f.kv_group, q=fmt(q), k=fmt(kv), hd=f.head_dim)
             if f.n_kv_heads < f.n_heads else t(f"{d}gpt2_heads", nh=f.n_heads, hd=f.head_dim, d3=fmt(3 * f.d_model)))
    windows = [w for w in f.windows if w is not None]
    span = (t(f"{d}this_sliding", local=len(windows), window=fmt(max(windows)), glob=f.n_layers - len(windows),
              ctx=fmt(f.context_length)) if windows else t(f"{d}gpt2_span", ctx=fmt(f.context_length)))
    mlp = t(f"{d}this_{f.mlp}", f=fmt(f.d_ff), ratio=decimal(f.d_ff / f.d_model, 2), act=f.activation)
    embed = (t(f"{d}this_scaled", scale=decimal(f.embed_scale, 1)) if f.embed_scale
             else t(f"{d}gpt2_embed") if f.position == "learned" else t(f"{d}this_embed")) + (
        t(f"{d}this_stored", dtype=f.embed_dtype) if f.embed_dtype else "")
    head = t(f"{d}this_{'tied' if f.tied_head else 'untied'}", v=fmt(f.vocab_size)) + (
        t(f"{d}this_softcap", cap=decimal(f.logit_softcap, 1)) if f.logit_softcap else "")
    return {
        "norm": (t(f"{d}gpt2_norm"), norm), "norm_place": (t(f"{d}gpt2_prenorm"), place),
        "pos": (t(f"{d}gpt2_pos", ctx=fmt(g.context_length)), pos),
        "heads": (t(f"{d}gpt2_heads", nh=g.n_heads, hd=g.head_dim, d3=fmt(3 * g.d_model)), heads),
        "span": (t(f"{d}gpt2_span", ctx=fmt(g.context_length)), span),
        "mlp": (t(f"{d}gpt2_mlp", f=fmt(4 * g.d_model)), mlp), "embed": (t(f"{d}gpt2_embed"), embed),
        "head": (t(f"{d}gpt2_head", v=fmt(g.vocab_size)), head),
        "bias": (t(f"{d}gpt2_bias"), t(f"{d}this_{'bias' if f.biases else 'nobias'}")),
        "size": (t(f"{d}gpt2_size"), t(f"{d}this_size", layers=f.n_layers, d=f.d_model, params=human(f.n_params))),
    }


def render_differences(run: Run) -> None:
    if run.own:
        return
    st.subheader(t("architecture.diff_header", name=run.name))
    st.caption(t("architecture.diff_help"))
    rows = differences(run.facts)
    st.table(pd.DataFrame({  # st.table wraps long cells (and reads Markdown: every cell is escaped)
        plain(t("architecture.col_part")): [plain(t(f"architecture.part_{k}")) for k in rows],
        plain(t("architecture.col_gpt2")): [plain(v[0]) for v in rows.values()],
        plain(t("architecture.col_this", name=run.title)): [plain(v[1]) for v in rows.values()],
    }).set_index(plain(t("architecture.col_part"))))
    if any(w is not None for w in run.facts.windows):
        render_windows(run)


def render_windows(run: Run) -> None:
    """How far back each layer looks: sliding-window layers against global ones."""
    f = run.facts
    theta = {k: fmt(int(v)) for k, v in f.rope_theta.items()}
    hover = [t(f"architecture.win_hover_{'full' if w is None else 'sliding'}", layer=i, window=fmt(w or 0),
               ctx=fmt(f.context_length), theta=theta.get("full" if w is None else "sliding", ""))
             for i, w in enumerate(f.windows)]
    st.plotly_chart(window_bars(
        [w or f.context_length for w in f.windows], [w is None for w in f.windows], hover,
        [t("architecture.kind_sliding_short"), t("architecture.kind_full_short")],
        t("architecture.win_title"), t("architecture.win_x"), t("architecture.win_y"), current_lang()), width="stretch")
    st.caption(t("architecture.win_caption", n=len(run.ids)))


# ------------------------------------------------------------------ modules
def render_modules(run: Run) -> None:
    """Each module of our GPT: its real source, and the chosen model's counterpart with its live shapes."""
    st.subheader(t("architecture.modules_header"))
    if not run.own:
        st.caption(t("architecture.modules_help", name=run.name))
    rows = None if run.own else differences(run.facts)
    for name in arch.MODULE_NAMES:
        with st.expander(name, expanded=name == "MultiHeadAttention"):
            st.markdown(t(f"architecture.mod_{name}"))
            steps = module_steps(name, run.facts)
            if run.own:
                code_col, shape_col = st.columns([2, 1])
                _code(code_col, arch.module_source(name), name, "gpt_core/model.py")
                shape_col.markdown(f"**{t('architecture.shapes_for')}**")
                shape_col.dataframe(compact_shapes(run.facts, steps), hide_index=True, width="stretch")
                continue
            ours, theirs = st.columns(2)
            ours.markdown(f"**{t('architecture.ours_header')}**")
            _code(ours, arch.module_source(name), name, "gpt_core/model.py")
            _counterpart(theirs, run, name)
            st.markdown("\n".join(t("architecture.part_line", part=t(f"architecture.part_{part}"),
                                     text=plain(rows[part][1])) for part in MODULE_PARTS[name]))
            if steps:
                st.markdown(f"**{t('architecture.shapes_in', name=run.name)}**")
                show_shapes(st, run.facts, steps)


def _code(where, source: str, name: str, file: str) -> None:
    where.code(source, language="python", wrap_lines=True, height=min(480, 60 + 20 * source.count("\n")))
    where.caption(t("architecture.code_caption", name=name, file=file))


def _counterpart(where, run: Run, name: str) -> None:
    cls = arch.counterpart(run.lm.model, name)
    found = arch.class_source(cls) if cls is not None else None
    if found is None:
        where.markdown(f"**{t('architecture.theirs_none', name=run.name, cls=run.facts.model_class)}**")
        return
    where.markdown(f"**{t('architecture.theirs_header', name=run.name, cls=cls.__name__)}**")
    _code(where, found[0], cls.__name__, found[1])


# ------------------------------------------------------------------ parameters
def params_tables(model) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    rows = arch.model_param_rows(model)
    total = sum(r.params for r in rows)

    def frame(items):
        return pd.DataFrame({
            t("architecture.col_module_path"): [r.path for r in items],
            t("architecture.col_module"): [r.module for r in items],
            t("architecture.col_params"): [fmt(r.params) for r in items],
            t("architecture.col_share"): [pct(r.params / total) for r in items],
            t("architecture.col_note"): [t("architecture.tied", other=r.shared_with) if r.shared_with else ""
                                         for r in items],
        })
    return frame(rows), frame(arch.model_block_rows(model, 0)), total


def params_figure(model, title: str):
    """Parameters per part of the model (embeddings, all blocks together, final norm, head) as bars."""
    rows = arch.model_param_rows(model)
    at = [i for i, r in enumerate(rows) if r.path.rsplit(".", 1)[-1].isdigit()]  # the blocks
    groups = [(r.path, r.params) for r in rows[:at[0]]]
    groups.append((f"{rows[at[0]].path.rsplit('.', 1)[0]} × {len(at)}", sum(rows[i].params for i in at)))
    groups += [(r.path, r.params) for r in rows[at[-1] + 1:]]
    names, counts = [g[0] for g in groups], [g[1] for g in groups]
    return param_bars(names, counts, [human(c) for c in counts], title, current_lang())


def render_params(run: Run) -> None:
    st.subheader(t("architecture.params_header"))
    top, block0, total = params_tables(run.lm.model)
    left, right = st.columns([3, 2])
    left.dataframe(top, hide_index=True, width="stretch", height=table_height(len(top), 420))
    right.plotly_chart(params_figure(run.lm.model, t("architecture.params_fig")), width="stretch")
    st.caption(t("architecture.params_total", total=fmt(total), check=fmt(run.facts.n_params)))
    with st.expander(t("architecture.block_detail")):
        st.dataframe(block0, hide_index=True, width="stretch")


# ------------------------------------------------------------------ parity
@st.cache_resource(show_spinner=False)
def _pair(size: str):
    """(random HF GPT2LMHeadModel, our GPT converted from it), built once per server; never trained."""
    return arch.parity_pair(size, seed=0)


@st.cache_data(max_entries=8, show_spinner=False)
def _parity_model(_model, model_key: str, ids: tuple[int, ...]) -> arch.ParityResult:
    return arch.parity_same_weights(_model, list(ids))


@st.cache_data(max_entries=4, show_spinner=False)
def _parity_random(size: str) -> arch.ParityResult:
    return arch.parity_random(size, seed=0, n_tokens=16, pair=_pair(size))


def render_parity(run: Run) -> None:
    """Our GPT against Hugging Face's GPT-2: on the chosen model's weights when it is our GPT, else random ones."""
    st.subheader(t("architecture.parity_header"))
    if run.own:
        with st.spinner():
            result = _parity_model(run.lm.model, run.key, tuple(run.ids))
        what = t("architecture.parity_what_model", label=plain(label_of(run.lm.source)))
    else:
        st.caption(t("architecture.parity_why", name=run.name))
        full = persisted(st.toggle, t("architecture.full_size"), "architecture.full_size", False)
        size = "gpt2" if full else "gpt2-reduced"
        with st.spinner():
            result = _parity_random(size)
        what = t(f"architecture.parity_what_{size}")
    ok = result.ok
    st.badge(t(f"architecture.parity_{'ok' if ok else 'bad'}", diff=f"{result.max_abs_diff:.1e}",
               tol=f"{result.tolerance:.0e}"),
             icon=":material/check_circle:" if ok else ":material/error:", color="green" if ok else "red")
    st.caption(t("architecture.parity_detail", what=what, n=result.n_tokens, scale=decimal(result.max_abs_logit, 2),
                 seconds=decimal(result.seconds, 1)))


# ------------------------------------------------------------ last position
def positions_table(tokenizer, walk: arch.NextTokenWalk) -> pd.DataFrame:
    rows = walk.per_position
    return pd.DataFrame({
        t("architecture.col_pos"): [r["position"] for r in rows],
        t("architecture.col_input"): [token_text(tokenizer, r["input_id"]) for r in rows],
        t("architecture.col_predicts"): [token_text(tokenizer, r["predicted_id"]) for r in rows],
        t("architecture.col_actual"): [token_text(tokenizer, r["actual_next_id"]) if r["actual_next_id"] is not None
                                       else t("architecture.unknown_next") for r in rows],
        t("architecture.col_used"): ["" if r["actual_next_id"] is not None else "✓" for r in rows],
    })


def render_last_position(run: Run) -> None:
    """Only the last position's logits choose the next token."""
    st.subheader(t("architecture.next_header"))
    st.markdown(t("architecture.next_help"))
    w, tok = run.walk, run.lm.tokenizer
    st.markdown(t("architecture.next_shapes", full=w.logits_shape, last=w.last_shape, v=fmt(run.facts.vocab_size)))
    st.dataframe(positions_table(tok, w), hide_index=True, width="stretch", height=table_height(len(run.ids), 420))
    st.caption(t("architecture.last_only", diff=f"{w.last_only_diff:.1e}"))
    ids = [r["id"] for r in w.top]
    probs = [r["prob"] for r in w.top]
    left, right = st.columns([3, 2])
    left.plotly_chart(top_bars(chart_labels(tok, ids), probs, t("architecture.top_title"), current_lang()),
                      width="stretch")
    right.success(t("architecture.greedy", token=plain(token_text(tok, ids[0])), p=pct(probs[0])))
    right.caption(t("architecture.top_sum", p=pct(sum(probs))))
