"""Training throughput: our GPT vs Hugging Face GPT2LMHeadModel, measured in one run.

    python bench/bench_train.py                                  # CPU, small config
    python bench/bench_train.py --device cuda --dtype bf16       # GPT-2 124M on a GPU
    python bench/bench_train.py --device cuda --dtype bf16 --alpaca ../shared/data/instruction-data.json

Both models start from the same random weights (ours converted from HF's), see
the same batches of real GPT-2 tokens (the bundled French corpus) and are
trained by the same loop, :func:`gpt_core.train.train` (AdamW, fused on CUDA;
gradient clipping; bf16 autocast with ``--dtype bf16``). Ours runs its SDPA
attention path, HF runs ``attn_implementation="sdpa"``. Rounds alternate
ours / HF; the first step of each round is a warm-up and is not counted.

One JSON line: ``{"bench": "train_<device>", "ours_tok_s", "hf_tok_s", "ratio", "target": ">= 1.0"}``.

``--alpaca PATH`` also times seed 001's workload end to end with our GPT:
gpt2-medium-sized random weights, the Alpaca examples of PATH split 85/10/5,
batch 8 padded to the longest row, 2 epochs, a 5-batch validation every 5
steps (as in the book), and prints ``{"bench": "alpaca_2epochs", "minutes", ...}``
(the book reports 0.86 min on an A100 with pretrained weights).

``--ddp N`` measures data-parallel scaling of our GPT instead: the same timed
rounds run under ``torchrun`` with N processes (each one ``--batch`` rows per
step, ``--threads`` threads, default 1 on the CPU; gloo on the CPU, NCCL on
GPUs), then with 1 process and the same threads (the baseline), then with 1
process and N x threads (what the machine gives one process)::

    python bench/bench_train.py --ddp 2                          # CPU, 1 thread per process

One JSON line: ``{"bench": "train_ddp_<device>", "processes", "tok_s_per_rank",
"tok_s_total", "tok_s_single", "scaling_efficiency" (total / (N x single)),
"threads_per_process", "tok_s_single_all_threads", ...}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_core import data  # noqa: E402
from gpt_core.config import GPTConfig  # noqa: E402
from gpt_core.model import GPT  # noqa: E402
from gpt_core.train import TrainConfig, steps_for_epochs, train  # noqa: E402

CPU_CFG = GPTConfig(d_model=256, n_layers=4, n_heads=4, context_length=128)
GPU_CFG = GPTConfig.preset("gpt2")


def hf_model(cfg: GPTConfig):
    from transformers import AutoModelForCausalLM, GPT2Config

    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.d_model,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=cfg.ln_eps)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa")


def token_batches(tok, batch: int, context: int, n: int, device: torch.device) -> list[tuple]:
    """``n`` (inputs, targets) batches of real GPT-2 tokens from the bundled corpora."""
    text = data.load_bundled("corpus_fr.txt") + "\n\n" + data.load_bundled("corpus_en.txt")
    ids = tok.encode(text)
    windows = data.sliding_windows(ids, context, context // 2)
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        rows = torch.randint(0, windows.n_samples, (batch,), generator=g)
        out.append((windows.inputs[rows].to(device), windows.targets[rows].to(device)))
    return out


def timed_round(model, batches, cfg: TrainConfig, dist=None) -> tuple[int, float]:
    """(tokens, seconds) of one short run through our loop, the first step excluded (tokens of all ranks)."""
    first = last = None
    for event in train(model, batches, None, cfg, dist=dist):
        if event["type"] == "step":
            if first is None:
                first = event
            last = event
        elif event["type"] != "done":
            raise RuntimeError(event.get("message", str(event)))
    return last["tokens_seen"] - first["tokens_seen"], last["elapsed"] - first["elapsed"]


def bench_throughput(args, tok) -> dict:
    device = torch.device(args.device)
    cfg = GPU_CFG if device.type == "cuda" else CPU_CFG
    batch = args.batch or 8
    hf = hf_model(cfg).to(device).train()
    ours = GPT.from_hf(hf).to(device).train()
    if args.compile:  # ours through torch.compile (HF stays as users run it: eager + sdpa)
        ours = torch.compile(ours)
    batches = token_batches(tok, batch, cfg.context_length, args.steps, device)
    tcfg = TrainConfig(lr=1e-4, steps=args.steps, eval_every=0, eval_at_start=False, device=args.device,
                       precision=args.dtype, max_grad_norm=1.0)
    totals = {"ours": [0, 0.0], "hf": [0, 0.0]}
    for _ in range(args.rounds):
        for name, model in (("ours", ours), ("hf", hf)):
            tokens, seconds = timed_round(model, batches, tcfg)
            totals[name][0] += tokens
            totals[name][1] += seconds
    ours_tok_s = totals["ours"][0] / totals["ours"][1]
    hf_tok_s = totals["hf"][0] / totals["hf"][1]
    return {"bench": f"train_{device.type}", "ours_tok_s": round(ours_tok_s, 1), "hf_tok_s": round(hf_tok_s, 1),
            "ratio": round(ours_tok_s / hf_tok_s, 3), "target": ">= 1.0",
            "config": {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                       "context": cfg.context_length, "batch": batch, "vocab": cfg.vocab_size},
            "dtype": args.dtype, "compiled": bool(args.compile), "steps_per_round": args.steps, "rounds": args.rounds,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def bench_alpaca(args, tok) -> dict:
    records = json.loads(Path(args.alpaca).read_text(encoding="utf-8"))
    train_rec, val_rec, _test = data.split_records(records, (0.85, 0.10, 0.05), seed=123)
    train_ds = data.InstructionDataset(train_rec, tok)
    val_ds = data.InstructionDataset(val_rec, tok)
    train_loader = data.make_instruction_loader(train_ds, tok, batch_size=8, shuffle=True, drop_last=True,
                                                max_length=1024)
    val_loader = data.make_instruction_loader(val_ds, tok, batch_size=8, shuffle=False, max_length=1024)
    steps = steps_for_epochs(len(train_loader), 2)
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("gpt2-medium"))
    cfg = TrainConfig(lr=5e-5, weight_decay=0.1, steps=steps, eval_every=5, eval_batches=5, eval_at_start=False,
                      device=args.device, precision=args.dtype, schedule="constant")
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    final = None
    for event in train(model, train_loader, val_loader, cfg, task="instruct"):
        final = event
    if args.device == "cuda":
        torch.cuda.synchronize()
    minutes = (time.perf_counter() - start) / 60
    return {"bench": "alpaca_2epochs", "minutes": round(minutes, 3), "book_a100_minutes": 0.86,
            "steps": steps, "examples": len(train_rec), "status": final["type"],
            "final_val_loss": round(final["history"]["val_loss"][-1], 3) if final["history"]["val_loss"] else None,
            "device": args.device, "dtype": args.dtype,
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.machine()}


def ddp_worker(args) -> None:
    """One rank of ``--ddp`` (started by torchrun): time our loop, write this rank's figures to a JSON file."""
    from gpt_core.tokenizers import load_tokenizer
    from gpt_core.train.distributed import from_env

    torch.set_num_threads(args.threads)
    dist = from_env(args.device)
    cfg = GPU_CFG if dist.device.type == "cuda" else CPU_CFG
    torch.manual_seed(0)
    model = GPT(cfg).to(dist.device).train()
    # every rank builds the same list; the loop gives rank r the batches r, r + N, ...
    batches = token_batches(load_tokenizer("gpt2"), args.batch or 8, cfg.context_length, args.steps * dist.world,
                            dist.device)
    tcfg = TrainConfig(lr=1e-4, steps=args.steps, eval_every=0, eval_at_start=False, device=args.device,
                       precision=args.dtype, max_grad_norm=1.0)
    tokens = seconds = 0.0
    for _ in range(args.rounds):
        t, s = timed_round(model, batches, tcfg, dist)
        tokens, seconds = tokens + t / dist.world, seconds + s  # the loop counts every rank's tokens
    record = {"rank": dist.rank, "tokens": tokens, "seconds": seconds, "threads": torch.get_num_threads(),
              "config": {"d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                         "context": cfg.context_length, "vocab": cfg.vocab_size}}
    Path(args.ddp_worker, f"rank{dist.rank}.json").write_text(json.dumps(record), encoding="utf-8")
    dist.close()


def launch(args, processes: int, threads: int) -> list[dict]:
    """Run :func:`ddp_worker` under torchrun with ``processes`` x ``threads``; each rank's figures."""
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(Path(__file__).resolve()), "--ddp-worker", out, "--threads", str(threads), "--device", args.device,
               "--dtype", args.dtype, "--steps", str(args.steps), "--rounds", str(args.rounds),
               "--batch", str(args.batch or 8)]
        subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, check=True,
                       stdout=subprocess.DEVNULL)
        return [json.loads(Path(out, f"rank{r}.json").read_text(encoding="utf-8")) for r in range(processes)]


def bench_ddp(args) -> dict:
    threads = args.threads or 1
    ranks = launch(args, args.ddp, threads)
    single = launch(args, 1, threads)[0]
    wide = launch(args, 1, threads * args.ddp)[0]
    per_rank = [r["tokens"] / r["seconds"] for r in ranks]
    total = sum(r["tokens"] for r in ranks) / max(r["seconds"] for r in ranks)  # the slowest rank sets the pace
    tok_single = single["tokens"] / single["seconds"]
    tok_wide = wide["tokens"] / wide["seconds"]
    device = torch.device(args.device)
    return {"bench": f"train_ddp_{device.type}", "processes": args.ddp,
            "tok_s_per_rank": [round(x, 1) for x in per_rank], "tok_s_total": round(total, 1),
            "tok_s_single": round(tok_single, 1), "scaling_efficiency": round(total / (args.ddp * tok_single), 3),
            "threads_per_process": threads, "tok_s_single_all_threads": round(tok_wide, 1),
            "threads_single_all": threads * args.ddp, "speedup_vs_single_all_threads": round(total / tok_wide, 3),
            "config": ranks[0]["config"], "batch_per_rank": args.batch or 8, "dtype": args.dtype,
            "steps_per_round": args.steps, "rounds": args.rounds, "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
            "cpus": os.cpu_count()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=None, help="steps per round (first one not counted)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile our GPT (first round absorbs the compile)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--alpaca", default=None, help="instruction-data.json: also time seed 001's run")
    parser.add_argument("--no-throughput", action="store_true", help="only the --alpaca run")
    parser.add_argument("--ddp", type=int, default=None, metavar="N",
                        help="data-parallel scaling of our GPT: N processes under torchrun vs 1")
    parser.add_argument("--threads", type=int, default=None, help="threads per process with --ddp (default 1)")
    parser.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)  # one rank, started by --ddp
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    args.steps = args.steps or (20 if args.device == "cuda" else 4)
    if args.ddp_worker:
        ddp_worker(args)
        return
    if args.ddp:
        print(json.dumps(bench_ddp(args)), flush=True)
        return
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    from gpt_core.tokenizers import load_tokenizer

    tok = load_tokenizer("gpt2")
    if not args.no_throughput:
        print(json.dumps(bench_throughput(args, tok)), flush=True)
    if args.alpaca:
        print(json.dumps(bench_alpaca(args, tok)), flush=True)


if __name__ == "__main__":
    main()
