"""Greedy and beam-search generation: gpt_core.decoding on our GPT vs Hugging Face
``generate`` on the same random GPT-2-124M weights, measured in one run.

    python bench/bench_generate.py [--device cpu|cuda] [--dtype fp32|bf16] [--compile]
                                   [--repeats 3] [--prompt 32] [--new 64] [--beams 4] [--no-beam]
                                   [--threads N] [--graph-attention sdpa|matmul]

Batch 1, EOS disabled, a warm-up run each, then best-of-N timings with ours and
HF alternating. One JSON line per measurement:

* greedy_<device>: ratio = our tokens/s / HF tokens/s (target >= 1.0 on CPU, >= 5 on an H100);
  ours runs with the full step trace (top-10, rank, entropy per token). With
  ``--compile`` (our GPT on CUDA), the decode step, argmax and trace statistics
  are captured in one CUDA graph (``greedy(..., cuda_graph=True)``);
  ``ours_notrace_s`` is also reported.
* beam<k>_<device>: ratio = our seconds / HF seconds (target <= 1.3), ours with the full tree trace.

``same_tokens`` says whether both produced exactly the same ids (in bf16 the two
implementations round differently, so near-ties of the random model can flip).
On a shared CPU, other processes make 2-thread timings erratic; ``--threads 1``
gives steadier (still same-run, alternating) comparisons.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt_core import decoding as D
from gpt_core.decoding import cuda_graph
from gpt_core.model import GPT


def timed(fn, sync):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="CUDA graph for our greedy decode step")
    ap.add_argument("--graph-attention", default=None, choices=["sdpa", "matmul"],
                    help="attention kernel inside the captured decode step (default: the library's)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own choice)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--no-beam", action="store_true")
    return ap.parse_args()


class Setup:
    """Both models on the same random GPT-2-124M weights, the prompt, and where it all runs."""

    def __init__(self, args: argparse.Namespace):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
        self.args, self.dev = args, torch.device(args.device)
        torch.manual_seed(0)
        hf = GPT2LMHeadModel(GPT2Config()).eval()
        self.ours = GPT.from_hf(hf).to(self.dev, dtype)
        self.hf = hf.to(self.dev, dtype)
        self.hf.generation_config.eos_token_id = None
        self.hf.generation_config.pad_token_id = 50256
        gen = torch.Generator().manual_seed(1)
        self.prompt = torch.randint(0, 50257, (1, args.prompt), generator=gen).to(self.dev)
        self.mask = torch.ones_like(self.prompt)
        self.sync = torch.cuda.synchronize if self.dev.type == "cuda" else (lambda: None)
        if self.dev.type == "cuda":
            self.where = f"{torch.cuda.get_device_name(self.dev)}, {args.dtype}"
        else:
            cpu = platform.processor() or platform.machine()
            self.where = f"cpu {cpu}, {torch.get_num_threads()} threads, {args.dtype}"
        self.graph = bool(args.compile and self.dev.type == "cuda")

    def hf_generate(self, **kw) -> list[int]:
        with torch.inference_mode():
            out = self.hf.generate(self.prompt, attention_mask=self.mask, max_new_tokens=self.args.new,
                                   do_sample=False, eos_token_id=None, **kw)
        return out[0, self.args.prompt:].tolist()


def bench_greedy(s: Setup) -> dict:
    args, N = s.args, s.args.new

    def ours(trace=True):
        return D.greedy(s.ours, s.prompt, N, trace=trace, cuda_graph=s.graph).new_ids

    ours(), s.hf_generate(), ours(False)  # warm-up (and graph capture)
    t_ours, t_hf, t_fast = [], [], []
    for _ in range(args.repeats):
        t, ids_ours = timed(ours, s.sync)
        t_ours.append(t)
        t, ids_hf = timed(s.hf_generate, s.sync)
        t_hf.append(t)
        if s.dev.type == "cuda":
            t_fast.append(timed(lambda: ours(False), s.sync)[0])
    o, h = min(t_ours), min(t_hf)
    line = {"bench": f"greedy_{s.dev.type}", "ours_s": round(o, 4), "hf_s": round(h, 4),
            "ours_tok_s": round(N / o, 1), "hf_tok_s": round(N / h, 1), "ratio": round(h / o, 3),
            "target": ">= 5.0 (H100)" if s.dev.type == "cuda" else ">= 1.0",
            "same_tokens": ids_ours == ids_hf, "trace": True, "cuda_graph": s.graph,
            "graph_attention": cuda_graph.graph_attention(s.ours) if s.graph else None,
            "prompt": args.prompt, "new_tokens": N, "repeats": args.repeats, "device": s.where}
    if t_fast:
        line["ours_notrace_s"] = round(min(t_fast), 4)
        line["ratio_notrace"] = round(h / min(t_fast), 3)
    return line


def bench_beam(s: Setup) -> dict:
    args = s.args

    def ours():
        return D.beam_search(s.ours, s.prompt, args.beams, args.new, early_stopping=True).best.new_ids

    def theirs():
        return s.hf_generate(num_beams=args.beams, early_stopping=True)

    ours(), theirs()  # warm-up
    t_ours, t_hf = [], []
    for _ in range(args.repeats):
        t, ids_ours = timed(ours, s.sync)
        t_ours.append(t)
        t, ids_hf = timed(theirs, s.sync)
        t_hf.append(t)
    o, h = min(t_ours), min(t_hf)
    return {"bench": f"beam{args.beams}_{s.dev.type}", "ours_s": round(o, 4), "hf_s": round(h, 4),
            "ratio": round(o / h, 3), "target": "<= 1.3", "same_tokens": ids_ours == ids_hf,
            "tree_trace": True, "prompt": args.prompt, "new_tokens": args.new, "repeats": args.repeats,
            "device": s.where}


def main() -> None:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.graph_attention:
        cuda_graph.FORCE_ATTENTION = args.graph_attention
    setup = Setup(args)
    print(json.dumps(bench_greedy(setup)), flush=True)
    if not args.no_beam:
        print(json.dumps(bench_beam(setup)), flush=True)


if __name__ == "__main__":
    main()
