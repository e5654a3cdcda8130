"""The embedded models: load time (first conversion, then the cached copy), RSS, and the cloze sets.

    python bench/bench_models.py                 # both models, cached copies only
    python bench/bench_models.py --first         # also time a first conversion (into a temporary cache)

Each measurement runs in a fresh Python process, so RSS is that of a process
holding only this model (imports + tokenizer + weights after one forward pass).
The cloze rates (assets/examples/cloze.json, top 5) are what chose each UI
language's default model (gpt_core.registry.default_model).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("gemma3-embedded", "smollm2-embedded")

CHILD = r"""
import json, os, sys, time
start = time.perf_counter()
import psutil, torch
from gpt_core.registry import load_model
from gpt_core.backend import backend_of
from gpt_core.evaluate import cloze_hits
key, cloze = sys.argv[1], sys.argv[2] == "1"
imported = time.perf_counter() - start
lm = load_model(key)
ids = lm.tokenizer.encode_for_model("Le chat dort sur le tapis du salon et regarde la pluie tomber.")
with torch.inference_mode():
    backend_of(lm.model).run_with_cache(ids)
out = {"key": key, "imports_s": imported, "load_s": lm.load_seconds, "params": lm.n_params,
       "weights_mb": lm.memory_bytes / 1e6, "rss_mb": psutil.Process().memory_info().rss / 1e6}
if cloze:
    sets = json.loads(open(os.path.join(sys.argv[3], "assets", "examples", "cloze.json"), encoding="utf-8").read())
    for lang in ("fr", "en"):
        hits = cloze_hits(lm.model, lm.tokenizer, sets[lang], k=5)
        out[f"cloze_{lang}"] = f"{sum(h for h, _ in hits)}/{len(hits)}"
print("RESULT " + json.dumps(out))
"""


def run(key: str, cloze: bool, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, key, "1" if cloze else "0", str(ROOT)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"key": key, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", action="store_true", help="also time a first conversion in a fresh cache")
    parser.add_argument("--no-cloze", action="store_true")
    args = parser.parse_args()
    rows = []
    for key in MODELS:
        if args.first:
            with tempfile.TemporaryDirectory() as cache:
                first = run(key, False, {**os.environ, "LLM_EXPLORER_CACHE": cache})
            rows.append({**first, "key": f"{key} (first conversion)"})
        rows.append(run(key, not args.no_cloze))
    print(f"{'model':38} {'load s':>7} {'RSS MB':>7} {'weights MB':>10} {'params':>12} {'cloze fr':>8} {'cloze en':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['key']:38} skipped: {r['error']}")
            continue
        print(f"{r['key']:38} {r['load_s']:7.1f} {r['rss_mb']:7.0f} {r['weights_mb']:10.0f} {r['params']:12,} "
              f"{r.get('cloze_fr', '-'):>8} {r.get('cloze_en', '-'):>8}")


if __name__ == "__main__":
    main()
