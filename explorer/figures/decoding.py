"""Pure figures of the Next-token and Decoding pages: data in, plotly Figure (or HTML) out."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.figures.bars import localize, percent
from explorer.ui.token_chips import visible

BLUE, GREY, RED, GREEN = "#1f77b4", "rgba(150,150,150,0.45)", "#d62728", "#2ca02c"


def short(text: str, width: int = 10) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def stage_bars(labels: list[str], stages: list[dict], before_name: str, after_name: str, removed_text: str,
               cols: int = 3, lang: str = "en") -> go.Figure:
    """One panel per stage (softmax, then each processor): wide grey bar = before, narrow bar = after.

    ``stages``: dicts with ``title``, ``before``, ``after`` (renormalised) and ``kept``
    (one value per label). Removed tokens keep only their grey bar and are marked.
    """
    n = len(stages)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    row_px, gap_px, top_px = 24 * len(labels) + 40, 70, 95
    height = rows * row_px + (rows - 1) * gap_px + top_px + 10
    plot_px = height - top_px - 10
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[s["title"] for s in stages], shared_yaxes=True,
                        horizontal_spacing=0.04 if cols > 1 else 0.0,
                        vertical_spacing=gap_px / plot_px if rows > 1 else 0.0)
    top = max([max(s["before"] + s["after"], default=0) for s in stages], default=0) or 1.0
    for k, s in enumerate(stages):
        r, c = k // cols + 1, k % cols + 1
        fig.add_trace(go.Bar(
            x=s["before"], y=labels, orientation="h", marker_color=GREY, width=0.8, name=before_name,
            legendgroup="before", showlegend=k == 0, hovertemplate="%{y}: %{x:.2%}<extra>" + before_name + "</extra>",
            text=["" if kept else removed_text for kept in s["kept"]], textposition="outside", cliponaxis=False,
            textfont=dict(color="#888"),
        ), row=r, col=c)
        fig.add_trace(go.Bar(
            x=[a if kept else 0.0 for a, kept in zip(s["after"], s["kept"])], y=labels, orientation="h",
            marker_color=BLUE, width=0.45, name=after_name, legendgroup="after", showlegend=k == 0,
            text=[percent(a, 1, lang) if kept else "" for a, kept in zip(s["after"], s["kept"])],
            textposition="outside", cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra>" + after_name + "</extra>",
        ), row=r, col=c)
        fig.update_xaxes(range=[0, top * 1.3], tickformat=".0%", row=r, col=c)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_annotations(font_size=12)
    fig.update_layout(barmode="overlay", height=height, margin=dict(l=10, r=10, t=top_px, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0 + 42 / plot_px, x=0))
    return localize(fig, lang)


def lane_bars(texts: list[str], probs: list[float], title: str, y_title: str, lang: str = "en") -> go.Figure:
    """Probability of each generated token (x: position, labelled with the token)."""
    x = list(range(1, len(probs) + 1))
    colours = [f"hsl({round(120 * min(max(p, 0.0), 1.0))}, 65%, 50%)" for p in probs]
    fig = go.Figure(go.Bar(x=x, y=probs, marker_color=colours, customdata=texts,
                           hovertemplate="%{x}. “%{customdata}”: %{y:.1%}<extra></extra>"))
    fig.update_layout(title=dict(text=title, font_size=13), height=230, margin=dict(l=10, r=10, t=36, b=10),
                      yaxis=dict(range=[0, 1], tickformat=".0%", title=y_title),
                      xaxis=dict(tickmode="array", tickvals=x, ticktext=[short(s, 6) for s in texts],
                                 tickangle=-60, tickfont_size=9) if len(x) <= 24 else dict(title="#"))
    return localize(fig, lang)


def beam_tree(nodes: list, upto: int, window: int, text: dict, lang: str = "en") -> go.Figure:
    """The beam-search tree up to step ``upto`` (0-based), its last ``window`` steps.

    ``nodes``: :class:`TreeNode` list (see :func:`tree_nodes`). Candidates of a step are placed by
    their sum of log-probs (best on top). Kept branches are blue, the best
    finished hypothesis red, pruned candidates grey, finished ones a green star.
    ``text`` holds the strings: title, prompt, step, kept, pruned, best, finished, hover.
    """
    lo = max(0, upto - window + 1)
    visible_nodes = [i for i, n in enumerate(nodes) if lo <= n.step <= upto]
    per_step = max((n.rank for n in nodes), default=0) + 1
    root_y = (per_step - 1) / 2

    def pos(i: int) -> tuple[float, float]:
        if i < 0:
            return 0.0, root_y
        return nodes[i].step + 1.0, float(nodes[i].rank)

    def kind(n) -> str:
        if n.on_best:
            return "best"
        if n.finished:
            return "finished"
        return "kept" if n.kept else "pruned"

    style = {"pruned": (GREY, 1, "dot", "circle", 7), "kept": (BLUE, 1.6, "solid", "circle", 9),
             "finished": (GREEN, 1.6, "solid", "star", 14), "best": (RED, 3, "solid", "circle", 11)}
    fig = go.Figure()
    for k in ("pruned", "kept", "finished", "best"):
        colour, width, dash, symbol, size = style[k]
        xs, ys = [], []
        for i in visible_nodes:
            n = nodes[i]
            if kind(n) != k or (n.parent >= 0 and nodes[n.parent].step < lo) or (n.parent < 0 and lo > 0):
                continue
            (x0, y0), (x1, y1) = pos(n.parent), pos(i)
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=width, dash=dash),
                                 hoverinfo="skip", showlegend=False))
    for k in ("pruned", "kept", "finished", "best"):
        colour, _, _, symbol, size = style[k]
        members = [i for i in visible_nodes if kind(nodes[i]) == k]
        if k == "best":  # a finished node on the best path is the hypothesis itself: show its star
            symbol = ["star" if nodes[i].finished else "circle" for i in members]
            size = [16 if nodes[i].finished else 11 for i in members]
        fig.add_trace(go.Scatter(
            x=[pos(i)[0] for i in members], y=[pos(i)[1] for i in members], mode="markers+text",
            marker=dict(color=colour, symbol=symbol, size=size, line=dict(color="white", width=1)),
            text=[short(nodes[i].token, 9) for i in members], textposition="top center",
            textfont=dict(size=10, color="#999" if k == "pruned" else "#222"), name=text[k],
            customdata=[[nodes[i].token, nodes[i].token_logprob, nodes[i].cumulative, nodes[i].score,
                         nodes[i].step + 1] for i in members],
            hovertemplate=text["hover"] + "<extra></extra>",
        ))
    if lo == 0:
        fig.add_trace(go.Scatter(x=[0], y=[root_y], mode="markers+text", text=[text["prompt"]],
                                 textposition="middle left", marker=dict(color="#444", size=12, symbol="square"),
                                 showlegend=False, hoverinfo="skip"))
    ticks = list(range(lo + 1, upto + 2))
    fig.update_layout(
        title=dict(text=text["title"], font_size=14), height=min(900, 140 + 46 * per_step),
        margin=dict(l=10, r=10, t=70, b=10), plot_bgcolor="white",
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        xaxis=dict(tickmode="array", tickvals=ticks, ticktext=[f"{text['step']} {s}" for s in ticks],
                   range=[lo - 0.6 if lo else -0.9, upto + 1.6], showgrid=False, zeroline=False),
        yaxis=dict(autorange="reversed", visible=False, range=None),
    )
    return localize(fig, lang)


def history_chart(probs: list[float], entropies: list[float], prob_name: str, entropy_name: str,
                  title: str, lang: str = "en") -> go.Figure:
    """Chosen token's probability (bars) and the entropy it was drawn from (line), step by step."""
    x = list(range(1, len(probs) + 1))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=x, y=probs, name=prob_name, marker_color=BLUE), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=entropies, name=entropy_name, mode="lines+markers",
                             line=dict(color=RED)), secondary_y=True)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title_text=prob_name, secondary_y=False)
    fig.update_yaxes(rangemode="tozero", tickformat=".1f", showgrid=False, title_text=entropy_name, secondary_y=True)
    fig.update_layout(title=dict(text=title, font_size=13), height=290, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(tickmode="array", tickvals=x),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0))
    return localize(fig, lang)


# ================================================================= generated text
def prob_colour(p: float) -> str:
    """Red (unlikely) -> yellow -> green (likely), light enough to read black text on."""
    p = min(max(float(p), 0.0), 1.0)
    return f"hsl({round(120 * p)}, 75%, 82%)"


def tokens_html(prompt_text: str, texts: list[str], probs: list[float], lang: str = "en") -> str:
    """The prompt in grey, then one chip per generated token coloured by its probability."""
    chips = [
        f"<span title='{percent(p, 1, lang)}' style='background:{prob_colour(p)};border-radius:3px;padding:1px 1px;"
        f"margin:0 1px'>{html.escape(tx) or '∅'}</span>"
        for tx, p in zip(texts, probs)
    ]
    return (
        "<div style='font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.9em;line-height:1.9;"
        "white-space:pre-wrap;word-break:break-word;color:#111'>"
        f"<span style='color:#777'>{html.escape(visible(prompt_text))}</span>" + "".join(chips) + "</div>"
    )


# ================================================================= beam tree
@dataclass
class TreeNode:
    step: int                     # 0 = first generated token
    parent: int                   # index of the parent node in the list, -1 = the prompt
    token: str
    token_logprob: float
    cumulative: float             # sum of log-probs
    score: float                  # cumulative / length ** length_penalty
    kept: bool
    finished: bool
    on_best: bool                 # on the path of the best finished hypothesis
    rank: int                     # 0 = best cumulative log-prob among this step's candidates


def tree_nodes(beam, tokenizer) -> list[TreeNode]:
    """Flatten ``BeamResult.tree`` into nodes with parent links and the best path marked."""
    best = beam.sequences[0].new_ids if beam.sequences else []
    nodes: list[TreeNode] = []
    seqs: list[tuple[int, ...]] = []
    slot_node = {0: -1}           # beam slot -> node index at the previous step (-1: the prompt)
    for bstep in beam.tree:
        order = sorted(range(len(bstep.candidates)), key=lambda j: -bstep.candidates[j].cumulative_logprob)
        rank = {j: r for r, j in enumerate(order)}
        next_slots = {}
        for j, c in enumerate(bstep.candidates):
            parent = slot_node.get(c.parent_beam_id)
            if parent is None:    # a slot that did not exist yet (impossible scores at step 0)
                continue
            seq = (seqs[parent] if parent >= 0 else ()) + (c.token_id,)
            on_best = (c.kept or c.finished) and list(seq) == best[:len(seq)]
            nodes.append(TreeNode(bstep.step, parent, visible(tokenizer.decode([c.token_id])), c.token_logprob,
                                  c.cumulative_logprob, c.score, c.kept, c.finished, on_best, rank[j]))
            seqs.append(seq)
            if c.kept:
                next_slots[c.beam_id] = len(nodes) - 1
        slot_node = next_slots
    return nodes
