"""Server-side compute of four pages on each embedded model, for a 64-token text.

    python bench/bench_pages.py [--tokens 64] [--repeats 5] [--models smollm2-embedded gemma3-embedded]

For each embedded model (a missing one prints "skipped" with the reason), the
work each page does on a cache miss, without Streamlit (no widgets, no
serialisation), measured as the median of ``--repeats`` runs after one warm-up:

* ``attention``: :func:`gpt_core.attention.analyse_attention` (a traced forward
  pass without the vocabulary head, scores and types of every head), the three
  plotly figures of ``explorer.figures.attention`` and the bertviz head view
  HTML (6 layers), as ``explorer.views.attention`` calls them;
* ``next_token``: one ``backend_of(model).next_token_logits(ids)``;
* ``embeddings``: the nearest neighbours of one word
  (:func:`gpt_core.embeddings.neighbours_of_word`, k = 10) on the unit
  embedding table, which the page builds once per model (``unit_table_s``,
  reported apart);
* ``logit_lens``: ``lean_trace`` + :func:`gpt_core.logit_lens.logit_lens` at the
  page's default positions (the last 8), and its two figures.

Target: each <= 0.300 s on this 2-core CPU. The machine may be shared: the
load average before and after is printed with the figures.
"""
import argparse
import json
import os
import statistics
import time

import torch

MODELS = ("smollm2-embedded", "gemma3-embedded")
TEXT = ("Le chat dort sur le canapé parce qu'il est fatigué. Le chien dort aussi, près de la porte du jardin. "
        "Demain, les enfants iront à l'école à vélo, puis ils joueront au ballon avec leurs amis. ") * 6
WORD = "chat"
LENS_COLUMNS = 8      # explorer.views.logit_lens.DEFAULT_COLUMNS
BERTVIZ_LAYERS = 6    # explorer.views.attention.MAX_BERTVIZ_LAYERS
TARGET_S = 0.300


def median_of(fn, repeats: int) -> float:
    fn()  # warm-up: first calls allocate, build caches (bfloat16 kernels, tokenizer) and are excluded
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def page_attention(model, ids: list[int], labels: list[str]):
    from explorer.figures import attention as fa
    from explorer.figures.bertviz_html import bertviz_html, vendor_available
    from gpt_core.attention import analyse_attention, grid_panels, layer_window

    def run():
        with torch.inference_mode():
            attentions, grid, info = analyse_attention(model, ids)
        window = info.attention_windows[0] if info.attention_windows else None
        fa.head_heatmap(attentions[0][0], labels, "t", "q", "k", "m", "%{z}", window=window, window_name="w")
        fa.summary_heatmap(grid.prev, [["x"] * grid.n_heads] * grid.n_layers, "t", "m", "l", "h", (0, 0))
        layers = layer_window(grid.n_layers, grid.n_heads, 0)
        fa.grid_figure(grid_panels(attentions, layers), grid.n_heads, "t", (0, 0))
        if vendor_available():
            bertviz_html([torch.from_numpy(a) for a in attentions], labels, "head",
                         list(layers)[:BERTVIZ_LAYERS], initial_layer=0)
    return run


def page_lens(model, ids: list[int], labels: list[str]):
    from explorer.figures.logit_lens import lens_heatmap, rank_figure
    from gpt_core.logit_lens import lean_trace, logit_lens

    positions = list(range(len(ids) - LENS_COLUMNS, len(ids)))

    def run():
        with torch.inference_mode():
            lens = logit_lens(model, lean_trace(model, ids), k=5, positions=positions)
        text = [["x"] * len(positions) for _ in range(lens.n_rows)]
        lens_heatmap(lens, text, text, [str(r) for r in range(lens.n_rows)], labels[-len(positions):], "t", "x", "h")
        rank_figure(lens, len(positions) - 1, [str(r) for r in range(lens.n_rows)], "t", "r", "p")
    return run


def bench_model(key: str, tokens: int, repeats: int) -> dict:
    from gpt_core import embeddings as E
    from gpt_core.backend import backend_of
    from gpt_core.errors import GPTCoreError
    from gpt_core.registry import is_available_offline, load_model

    if not is_available_offline(key):
        return {"model": key, "skipped": "not installed here (see the README's set-up)"}
    try:
        lm = load_model(key)
    except GPTCoreError as exc:
        return {"model": key, "skipped": f"cannot load: {exc}"}
    model, tok = lm.model, lm.tokenizer
    ids = tok.encode_for_model(TEXT)[:tokens]
    if len(ids) < tokens:
        return {"model": key, "skipped": f"the sample text gives {len(ids)} tokens only"}
    labels = [f"{i}·{tok.decode([t])[:11]}" for i, t in enumerate(ids)]
    start = time.perf_counter()
    unit = E.unit_embeddings(model)
    unit_s = time.perf_counter() - start
    backend = backend_of(model)

    def next_token():
        with torch.inference_mode():
            backend.next_token_logits(ids)

    row = {"model": key, "tokens": tokens, "repeats": repeats, "threads": torch.get_num_threads(),
           "load_s": round(lm.load_seconds, 2), "unit_table_s": round(unit_s, 3)}
    for name, fn in (("attention", page_attention(model, ids, labels)), ("next_token", next_token),
                     ("embeddings", lambda: E.neighbours_of_word(unit, tok, WORD, 10)),
                     ("logit_lens", page_lens(model, ids, labels))):
        row[f"{name}_s"] = round(median_of(fn, repeats), 4)
    row["ok"] = all(row[f"{n}_s"] <= TARGET_S for n in ("attention", "next_token", "embeddings", "logit_lens"))
    return row


def table(rows: list[dict]) -> str:
    pages = ("attention", "next_token", "embeddings", "logit_lens")
    lines = [f"{'model':<18}" + "".join(f"{p:>13}" for p in pages), "-" * (18 + 13 * len(pages))]
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['model']:<18} skipped: {row['skipped']}")
        else:
            lines.append(f"{row['model']:<18}" + "".join(f"{row[f'{p}_s']:>12.3f}s" for p in pages))
    lines.append(f"target <= {TARGET_S:.3f} s per page (median, server-side compute, {rows[0].get('tokens', '?')} "
                 "tokens)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    args = ap.parse_args()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for key in args.models:
        row = bench_model(key, args.tokens, args.repeats)
        row["bench"] = "pages_cpu"
        print(json.dumps(row), flush=True)
        rows.append(row)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(table(rows))
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
