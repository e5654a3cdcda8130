"""Logit lens: an ecco-style table of the top-1 token at every layer and position."""
import streamlit as st

from explorer import logit_lens_view as lv
from explorer.i18n import t
from explorer.models import current_model, label_of
from explorer.textinput import text_area_checked
from gpt_core.errors import GPTCoreError

lm = current_model()
st.title(t("logit_lens.title"))
st.caption(t("logit_lens.intro"))
st.caption(label_of(lm.source))

checked = text_area_checked(st, "logit_lens", t("logit_lens.text_label"), t("logit_lens.default_text"), height=80)
if not checked.ok:
    st.stop()
ids, notice = lv.tokenize(lm, checked.text)
if notice:
    st.warning(notice)
T = len(ids)
if T == 1:
    st.info(t("logit_lens.one_token"))

max_cols = min(T, lv.MAX_COLUMNS)
n_cols = max_cols if max_cols == 1 else st.slider(
    t("logit_lens.n_columns"), 1, max_cols, min(max_cols, 12), key="logit_lens.n_columns")
try:
    data = lv.analyse(lm, ids, n_cols, notice)
except (GPTCoreError, ValueError) as exc:
    st.error(t("logit_lens.error", msg=str(exc)))
    st.stop()
lens = data.lens
n_layers = lens.n_rows - 1
st.caption(t("logit_lens.n_tokens", n=T, rows=lens.n_rows, layers=n_layers, k=lv.TOP_K))
if lv.is_rotary(lm):
    st.caption(t("logit_lens.rotary_note"))

rows = lv.row_names(lens)
columns = lv.column_labels(data)
st.plotly_chart(lv.lens_heatmap(lens, data.cell_text, data.hover, rows, columns, t("logit_lens.table_title"),
                                t("logit_lens.x_title"), t("logit_lens.hover")), width="stretch")

# ---- one position followed through the layers
choices = list(range(len(lens.positions)))
column = choices[-1] if len(choices) == 1 else st.select_slider(
    t("logit_lens.track"), options=choices, value=choices[-1], format_func=lambda c: columns[c],
    key="logit_lens.track")
target = data.cell_text[-1][column]
st.subheader(t("logit_lens.rank_header", token=target, pos=lens.positions[column]))
first = lens.first_layer_reaching_top1(column)
if first is not None:
    st.caption(t("logit_lens.first_top1", token=target, row=rows[first]))
st.plotly_chart(lv.rank_figure(lens, column, rows, t("logit_lens.rank_fig_title"),
                               t("logit_lens.rank_title", token=target), t("logit_lens.prob_title", token=target)),
                width="stretch")
st.dataframe(lv.tracked_table(data, column, lm.tokenizer), hide_index=True, width="stretch")
