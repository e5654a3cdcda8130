"""The training pages' defaults, run as the pages run them, on each embedded model: time, estimate, outcome.

    python bench/bench_lessons.py [--only pretrain,classify,instruct] [--models gemma3-embedded,smollm2-embedded]

One JSON line per run:

* ``pretrain`` (the Pretrain page's defaults on the French corpus; no base model): final validation
  loss, the last sample, the largest rise of the training loss over its running minimum (a spike);
* ``classify`` (the Fine-tune page's default: a linear probe on the frozen model): test accuracy
  before and after, the majority baseline and the gain in points;
* ``instruct`` (the default instruction fine-tuning): the answers before and after, and how many changed.

Each line gives ``estimate_s`` (what the page announced), ``measured_s`` (the whole job, from the
start button to the saved checkpoint), their ratio, and both per phase. Targets (issue 11): the
classification gain >= 30 points within 120 s, pretraining <= 90 s, every ratio within 0.65-1.35.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from explorer import run_job as J  # noqa: E402
from explorer import runs as R  # noqa: E402
from explorer.corpus import load_corpus, records_for, training_text  # noqa: E402
from gpt_core.registry import load_with_fallback  # noqa: E402

MODELS = ("gemma3-embedded", "smollm2-embedded")
PRETRAIN_DEFAULTS = {"arch": "tiny", "hyper": R.Hyper(steps=250, batch_size=16, lr=3e-3, warmup=12),
                     "source": "corpus_fr", "prompt": "Pour préparer une", "tokenizer": "bpe"}


def _run(plan: R.RunPlan) -> tuple[float, dict, list[dict]]:
    """Run the plan's job in this thread as the job manager would: (seconds, result, events)."""
    start = time.perf_counter()
    events = list(J.job_fn(plan)(threading.Event()))
    seconds = time.perf_counter() - start
    result = next((e for e in events if e.get("type") == "result"), {})
    final = events[-1] if events else {}
    if final.get("type") != "done":
        raise SystemExit(f"the job ended with {final.get('type')}: {final.get('message')}")
    return seconds, result, events


def _line(task: str, model: str, plan: R.RunPlan, seconds: float, result: dict, **outcome) -> dict:
    est = plan.estimate["seconds_estimate"]
    return {"task": task, "model": model, "estimate_s": round(est, 1), "measured_s": round(seconds, 1),
            "ratio": round(seconds / est, 2) if est else None,
            "phases_s": {k: round(v, 1) for k, v in (result.get("phases") or {}).items()},
            "estimate_parts_s": {k: round(v, 1) for k, v in plan.estimate.get("parts", {}).items()}, **outcome}


def pretrain() -> dict:
    d = PRETRAIN_DEFAULTS
    corpus = load_corpus(d["source"])
    text = training_text(corpus, R.MAX_CORPUS_CHARS).text
    tok, name = R.pretrain_tokenizer(d["tokenizer"], d["source"], text)
    plan = R.plan_pretrain(tok, text, dict(R.ARCH_PRESETS[d["arch"]]), d["hyper"], "cpu", d["prompt"],
                           source=d["source"], tokenizer_name=name)
    seconds, result, events = _run(plan)
    losses = [e["train_loss"] for e in events if e.get("type") == "step"]
    spike, low = 0.0, float("inf")
    for loss in losses:
        low = min(low, loss)
        spike = max(spike, loss - low)
    val = [e["val_loss"] for e in events if e.get("type") == "eval"]
    samples = [e["text"] for e in events if e.get("type") == "sample"]
    return _line("pretrain", "GPT tiny + bpe-fr", plan, seconds, result, val_loss_first=round(val[0], 3),
                 val_loss_final=round(val[-1], 3), val_loss_min=round(min(val), 3),
                 largest_rise_over_running_min=round(spike, 2), sample=samples[-1])


def classify(key: str) -> dict:
    lm = load_with_fallback(key, device="cpu")
    hyper, opts = R.finetune_defaults(True, "classify", 0)
    plan = R.plan_finetune(lm.model, lm.tokenizer, records_for("classify", None), opts, hyper, "cpu", base_key=key)
    seconds, result, _ = _run(plan)
    cmp = result["comparison"]
    report = cmp["report"]
    return _line("classify", key, plan, seconds, result, accuracy_before=round(cmp["accuracy_before"], 3),
                 accuracy=round(report["accuracy"], 3), majority_baseline=round(report["majority_baseline"], 3),
                 gain_points=round(100 * (report["accuracy"] - report["majority_baseline"]), 1), n_test=report["n"])


def instruct(key: str) -> dict:
    lm = load_with_fallback(key, device="cpu")
    large = sum(p.numel() for p in lm.model.parameters()) > R.LARGE_MODEL
    hyper, opts = R.finetune_defaults(large, "instruct", 0)
    plan = R.plan_finetune(lm.model, lm.tokenizer, records_for("instruct", None), opts, hyper, "cpu", base_key=key)
    seconds, result, _ = _run(plan)
    rows = result["comparison"]["rows"]
    return _line("instruct", key, plan, seconds, result, changed=sum(r["before"] != r["after"] for r in rows),
                 answers=[{"instruction": r["instruction"], "before": r["before"], "after": r["after"]} for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="pretrain,classify,instruct")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    only, models = args.only.split(","), args.models.split(",")
    print(json.dumps({"machine": f"{os.cpu_count()} CPU cores", "torch_threads": torch.get_num_threads(),
                      "load_average": os.getloadavg()[0]}))
    if "pretrain" in only:
        print(json.dumps(pretrain(), ensure_ascii=False), flush=True)
    for key in models:
        if "classify" in only:
            print(json.dumps(classify(key), ensure_ascii=False), flush=True)
        if "instruct" in only:
            print(json.dumps(instruct(key), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
