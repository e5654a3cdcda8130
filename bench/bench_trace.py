"""run_with_cache on our GPT vs a Hugging Face GPT-2 forward with attentions and
hidden states, on the same random GPT-2-124M weights, measured in one run.

    python bench/bench_trace.py [--tokens 64] [--repeats 5] [--device cpu]

Prints one JSON line; ratio = our time / HF time (target <= 1.2).
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt_core.model import GPT
from gpt_core.trace import run_with_cache


def best_of(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(attn_implementation="eager")).eval().to(args.device)
    ours = GPT.from_hf(hf).to(args.device)
    ids = torch.randint(0, 50257, (1, args.tokens), device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def run_hf():
        with torch.no_grad():
            out = hf(ids, output_attentions=True, output_hidden_states=True, use_cache=False)
        assert len(out.attentions) == 12

    def run_ours():
        _, trace = run_with_cache(ours, ids)
        assert len(trace.attentions) == 12

    run_hf(), run_ours()  # warm-up
    t_hf, t_ours = [], []
    for _ in range(args.repeats):  # alternate so both see the same machine state
        t_hf.append(best_of(run_hf, 1, sync))
        t_ours.append(best_of(run_ours, 1, sync))
    with torch.no_grad():
        _, trace = run_with_cache(ours, ids)
        ref = hf(ids, output_attentions=True).attentions
    diff = max((a - b[0]).abs().max().item() for a, b in zip(trace.attentions, ref))
    print(json.dumps({
        "bench": f"trace_{args.device}", "tokens": args.tokens, "ours_s": round(min(t_ours), 5),
        "hf_s": round(min(t_hf), 5), "ratio": round(min(t_ours) / min(t_hf), 3), "target": "<= 1.2",
        "max_attention_diff": diff, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
