"""Attention: one head as a heatmap, every head at a glance, scores, bertviz offline."""
import streamlit as st

from explorer import attention_view as av
from explorer import fig_attention as fa
from explorer.i18n import t
from explorer.models import current_model, label_of
from explorer.textinput import text_area_checked
from gpt_core.attention import grid_panels, layer_window
from gpt_core.errors import GPTCoreError

lm = current_model()
st.title(t("attention.title"))
st.caption(t("attention.intro"))
st.caption(label_of(lm.source))

checked = text_area_checked(st, "attention", t("attention.text_label"), t("attention.default_text"), height=80)
if not checked.ok:
    st.stop()
try:
    data = av.analyse(lm, checked.text)
except (GPTCoreError, ValueError) as exc:
    st.error(t("attention.error", msg=str(exc)))
    st.stop()
if data.notice:
    st.warning(data.notice)
T = len(data.ids)
st.caption(t("attention.n_tokens", n=T, layers=data.n_layers, heads=data.n_heads,
             panels=data.n_layers * data.n_heads))
if T == 1:
    st.info(t("attention.one_token"))
if data.info.n_kv_heads < data.info.n_heads:
    st.info(t("attention.gqa", n_heads=data.info.n_heads, n_kv=data.info.n_kv_heads, group=data.group_size))

# ---- which layer / head: URL, then session, clamped with a message
layer, msg_layer = av.resolve_index("layer", data.n_layers, st.session_state, st.query_params)
head, msg_head = av.resolve_index("head", data.n_heads, st.session_state, st.query_params)
for message in (msg_layer, msg_head):
    if message:
        st.warning(message)
pick_l, pick_h = st.columns(2)
layer = av.index_picker(pick_l, "layer", data.n_layers, layer)
head = av.index_picker(pick_h, "head", data.n_heads, head, fmt=lambda h: av.head_option(data, h))

# ---- one head, and the scores of its layer
left, right = st.columns([1, 1])
left.plotly_chart(fa.head_heatmap(
    data.attentions[layer][head], data.labels,
    t("attention.one_head_title", layer=layer, head=av.head_option(data, head)),
    t("attention.query"), t("attention.key"), t("attention.masked"), t("attention.hover"),
), width="stretch")
right.markdown(f"**{t('attention.scores_title', layer=layer)}**")
right.dataframe(av.scores_table(data, layer), hide_index=True, width="stretch",
                column_config=av.score_columns())
right.caption(t("attention.scores_help"))

# ---- all layers x heads
st.subheader(t("attention.summary_header", layers=data.n_layers, heads=data.n_heads))
metrics = ["prev", "first", "self", "norm_entropy"]
metric = st.radio(t("attention.metric_pick"), metrics, horizontal=True, key="attention.metric",
                  format_func=lambda m: t(f"attention.metric_{m}"))
shorts = [[t(f"attention.short_{k}") for k in row] for row in data.grid.kinds]
st.plotly_chart(fa.summary_heatmap(
    data.grid.metric(metric), shorts, t("attention.summary_title", metric=t(f"attention.metric_{metric}")),
    t(f"attention.metric_{metric}"), t("attention.layer_title"), t("attention.head_title"), (layer, head),
), width="stretch")
st.caption(t("attention.kinds_caption", summary=av.kind_summary(data)))

# ---- small multiples around the chosen layer
window = layer_window(data.n_layers, data.n_heads, av.window_start(layer, data.n_heads), av.MAX_PANELS)
st.subheader(t("attention.grid_header", first=window.start, last=window.stop - 1))
st.caption(t("attention.grid_help"))
panels = grid_panels(data.attentions, window)
st.plotly_chart(fa.grid_figure(
    panels, data.n_heads, t("attention.grid_title", n=len(panels), first=window.start, last=window.stop - 1),
    (layer, head), t("attention.grid_layer"), t("attention.grid_head"), t("attention.grid_hover"),
), width="stretch")

# ---- bertviz, offline
st.subheader(t("attention.bertviz_header"))
st.caption(t("attention.bertviz_help"))
view_col, layers_col = st.columns([1, 2])
view = view_col.radio(t("attention.bv_view"), ["head", "model"], horizontal=True, key="attention.bv_view",
                      format_func=lambda v: t(f"attention.bv_{v}"))
default_layers = list(window)[:av.MAX_BERTVIZ_LAYERS]
picked = layers_col.multiselect(t("attention.bv_layers", n=av.MAX_BERTVIZ_LAYERS), list(range(data.n_layers)),
                                default=default_layers)
bv_layers, capped = av.bertviz_layers(picked, data.n_layers, layer)
if capped:
    st.info(capped)
html, height = av.bertviz_frame(data, lm.source.key, view, bv_layers, layer)
if html is None:
    st.warning(t("attention.bertviz_missing"))
else:
    st.iframe(html, height=height)
    st.caption(t("attention.bv_size", kb=len(html.encode()) // 1024))
