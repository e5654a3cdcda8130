"""The Attention page's compute and the size of its bertviz HTML.

    python bench/bench_attention.py [--tokens 64] [--repeats 5] [--device cpu] [--model smollm2-embedded]

Prints one JSON line per measurement:

1. ``attention_page``: what the page computes for ``--tokens`` tokens on the
   embedded SmolLM2 (30 layers x 9 heads), excluding the first load: the traced
   forward pass (every attention pattern and residual), the scores and types
   of all 270 heads, and the three plotly figures. ``--model smollm2-shape``
   uses random weights of exactly SmolLM2's shape where the embedded package
   is absent (same work, no meaningful text). Compared with a plain
   Hugging Face forward that returns the attentions, on the same model and
   ids, measured in the same run. Target: ours <= 0.300 s on CPU.
2. ``bertviz_html``: bytes of the offline bertviz head view and model view
   for 12 layers x 12 heads x ``--tokens`` tokens (GPT-2 small shape, random
   weights: diffuse patterns, the worst case for size). Target <= 3 MB.
"""
import argparse
import json
import time

import torch


def best_of(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
                     tie_word_embeddings=True, rope_theta=100000.0)


def load(model_key: str, device: str):
    """The embedded SmolLM2, or (``smollm2-shape``) a random model of exactly its shape, for
    machines without the embedded package: same architecture, same amount of work."""
    if model_key == "smollm2-shape":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(attn_implementation="eager", **SMOLLM2_SHAPE)).eval().to(device)
        return model, None, 0.0
    from gpt_core.registry import load_model

    lm = load_model(model_key, device=device)
    return lm.model, lm.tokenizer, lm.load_seconds


def bench_page(tokens: int, repeats: int, device: str, model_key: str) -> dict:
    # the page's own calls, without Streamlit: gpt_core.attention.analyse_attention (what
    # explorer.views.attention caches) and the figure builders of explorer.figures.attention
    from explorer.figures import attention as fa
    from gpt_core.attention import analyse_attention, grid_panels, layer_window

    model, tokenizer, load_s = load(model_key, device)
    if tokenizer is not None:
        text = "Le chat dort sur le canapé parce qu'il est fatigué, et le chien dort aussi près de la porte. " * 8
        ids = tokenizer.encode(text)[:tokens]
        labels = [f"{i}·{tokenizer.decode([t])[:11]}" for i, t in enumerate(ids)]
    else:
        ids = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (tokens,), generator=torch.Generator().manual_seed(0))
        ids = ids.tolist()
        labels = [f"{i}·t{t}" for i, t in enumerate(ids)]
    assert len(ids) == tokens, "the sample text is too short"
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    timings = {}

    def page():
        start = time.perf_counter()
        with torch.inference_mode():
            attentions, grid, info = analyse_attention(model, ids)
        timings["compute"] = time.perf_counter() - start
        fa.head_heatmap(attentions[0][0], labels, "t", "q", "k", "m", "%{z}")
        fa.summary_heatmap(grid.prev, [["x"] * grid.n_heads] * grid.n_layers, "t", "m", "l", "h", (0, 0))
        window = layer_window(grid.n_layers, grid.n_heads, 0)
        fa.grid_figure(grid_panels(attentions, window), grid.n_heads, "t", (0, 0))
        assert len(attentions) == 30 and attentions[0].shape == (9, tokens, tokens)

    def hf():
        with torch.inference_mode():
            out = model(torch.tensor([ids], device=model.device), output_attentions=True, use_cache=False)
        assert len(out.attentions) == 30

    page(), hf()  # warm-up: the first load is excluded
    t_page, t_hf, t_compute = [], [], []
    for _ in range(repeats):  # alternate so both see the same machine state
        t_page.append(best_of(page, 1, sync))
        t_compute.append(timings["compute"])
        t_hf.append(best_of(hf, 1, sync))
    ours = min(t_page)
    return {
        "bench": f"attention_page_{device}", "model": model_key, "tokens": tokens,
        "ours_s": round(ours, 4), "compute_only_s": round(min(t_compute), 4), "hf_s": round(min(t_hf), 4),
        "ratio": round(ours / min(t_hf), 3), "target": "ours_s <= 0.300 on CPU", "ok": ours <= 0.300,
        "threads": torch.get_num_threads(), "load_s": round(load_s, 2), "torch": torch.__version__,
    }


def bench_bertviz(tokens: int) -> list[dict]:
    try:
        import bertviz  # noqa: F401  (the views come from it)

        from explorer.figures.bertviz_html import bertviz_html, has_remote_script, vendor_available
    except ImportError as exc:
        return [{"bench": "bertviz_html", "skipped": f"bertviz is not installed ({exc})"}]
    from gpt_core.config import GPTConfig
    from gpt_core.model import GPT
    from gpt_core.trace import run_with_cache

    if not vendor_available():  # pragma: no cover
        return [{"bench": "bertviz_html", "skipped": "run bash scripts/vendor_js.sh first"}]
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("gpt2")).eval()
    ids = torch.randint(0, 50257, (tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    _, trace = run_with_cache(model, ids)
    words = [f"tok{i}" for i in range(tokens)]
    rows = []
    for view in ("head", "model"):
        start = time.perf_counter()
        html = bertviz_html(trace.attentions, words, view=view)
        seconds = time.perf_counter() - start
        size = len(html.encode("utf-8"))
        rows.append({
            "bench": f"bertviz_html_{view}", "layers": 12, "heads": 12, "tokens": tokens, "bytes": size,
            "mb": round(size / 1e6, 3), "build_s": round(seconds, 3), "target": "<= 3 MB", "ok": size <= 3e6,
            "remote_script": has_remote_script(html),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="smollm2-embedded", choices=["smollm2-embedded", "smollm2-shape"])
    args = ap.parse_args()
    print(json.dumps(bench_page(args.tokens, args.repeats, args.device, args.model)), flush=True)
    for row in bench_bertviz(args.tokens):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
