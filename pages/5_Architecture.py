"""Architecture: the from-scratch GPT module by module, live shapes, parameters, parity, last position."""
import streamlit as st

from explorer import architecture_view as av
from explorer.figures import prob_bars
from explorer.i18n import t
from explorer.models import current_model
from explorer.textinput import text_area_checked
from gpt_core import architecture as arch
from gpt_core.errors import GPTCoreError
from gpt_core.trace import is_gpt_core

lm = current_model()
st.title(t("architecture.title"))
st.caption(t("architecture.intro"))

full = False
if not is_gpt_core(lm.model):
    full = st.toggle(t("architecture.full_size"), key="architecture.full_size")
with st.spinner():
    subj = av.subject(lm, full)
st.info(t("architecture.subject", label=subj.label))

checked = text_area_checked(st, "architecture", t("architecture.text_label"), t("architecture.default_text"), height=68)
if not checked.ok:
    st.stop()
ids, notice = av.encode(subj, checked.text)
if notice:
    st.warning(notice)
try:
    steps = av.shapes(subj, lm.source.key, ids)
except (GPTCoreError, ValueError) as exc:
    st.error(t("architecture.error", msg=str(exc)))
    st.stop()
cfg = subj.model.cfg
st.caption(t("architecture.n_tokens", n=len(ids), d=cfg.d_model, nh=cfg.n_heads, v=cfg.vocab_size))
if av.is_random(lm, subj):
    st.caption(t("architecture.random_note"))

# ---- the whole journey
st.subheader(t("architecture.flow_header"))
st.caption(t("architecture.flow_help"))
st.dataframe(av.shapes_table(steps), hide_index=True, width="stretch", height=av.table_height(len(steps)))

# ---- module by module: real source next to live shapes
st.subheader(t("architecture.modules_header"))
for name in arch.MODULE_NAMES:
    with st.expander(name, expanded=name == "MultiHeadAttention"):
        st.markdown(t(f"architecture.mod_{name}"))
        code_col, shape_col = st.columns([2, 1])
        source = arch.module_source(name)
        code_col.code(source, language="python", wrap_lines=True, height=min(560, 60 + 20 * source.count("\n")))
        code_col.caption(t("architecture.code_caption", name=name, file="gpt_core/model.py"))
        shape_col.markdown(f"**{t('architecture.shapes_for')}**")
        shape_col.dataframe(av.compact_shapes(av.module_steps(name, steps)), hide_index=True, width="stretch")

# ---- parameters
st.subheader(t("architecture.params_header"))
top, block0, total = av.params_table(subj.model)
left, right = st.columns([3, 2])
left.dataframe(top, hide_index=True, width="stretch")
right.plotly_chart(av.params_figure(subj.model, t("architecture.params_fig")), width="stretch")
st.caption(t("architecture.params_total", total=f"{total:,}".replace(",", " "),
             check=f"{subj.model.num_parameters():,}".replace(",", " ")))
with st.expander(t("architecture.block_detail")):
    st.dataframe(block0, hide_index=True, width="stretch")

# ---- parity badge
st.subheader(t("architecture.parity_header"))
with st.spinner():
    result, what = av.parity(subj, lm.source.key, ids)
key = "parity_ok" if result.ok else "parity_bad"
st.badge(t(f"architecture.{key}", diff=f"{result.max_abs_diff:.1e}", tol=f"{result.tolerance:.0e}"),
         icon=":material/check_circle:" if result.ok else ":material/error:", color="green" if result.ok else "red")
st.caption(t("architecture.parity_detail", what=what, n=result.n_tokens, scale=result.max_abs_logit,
             seconds=result.seconds))

# ---- seed 004: only the last position chooses the next token
st.subheader(t("architecture.next_header"))
st.markdown(t("architecture.next_help"))
w, positions, labels, probs = av.walk(subj, lm.source.key, ids)
st.markdown(t("architecture.next_shapes", full=w.logits_shape, last=w.last_shape, v=cfg.vocab_size))
st.dataframe(positions, hide_index=True, width="stretch")
st.caption(t("architecture.last_only", diff=w.last_only_diff))
left, right = st.columns([3, 2])
left.plotly_chart(prob_bars(labels, probs, t("architecture.top_title"), highlight=0), width="stretch")
right.success(t("architecture.greedy", token=labels[0]))
