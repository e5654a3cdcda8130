#!/usr/bin/env python3
"""Fetch once, with a network, what the app otherwise downloads; then it runs offline with it.

    python scripts/prefetch.py --dry-run          # what would be fetched, and where; nothing is downloaded
    python scripts/prefetch.py                    # everything (about 4.5 GB with the embedded copies)
    python scripts/prefetch.py --only embedded    # only the embedded models' converted copies (no network)
    python scripts/prefetch.py --only gpt2,barthez,datasets --rows 100

Items: the embedded models' converted copies (SmolLM2, Gemma 3), GPT-2 small, DistilGPT-2,
GPT-2 medium, BARThez and its tokenizer, BART's tokenizer, bertviz's JavaScript files, and the
first rows of each dataset the Data page offers online. Run it as the user (and with the
environment: LLM_EXPLORER_CACHE, HF_HOME) that runs the app, so that it fills the caches the app reads.
Exit status: 0 when every chosen item is there, 1 when one failed, 2 for a wrong option.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also works without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from gpt_core import prefetch as P  # noqa: E402
from gpt_core.errors import InvalidInput  # noqa: E402

VENDOR_SCRIPT = ROOT / "scripts" / "vendor_js.sh"


def _fetch_js() -> str:
    from explorer.figures.bertviz_html import VENDOR_DIR, vendor_available

    if vendor_available():
        return f"already in {VENDOR_DIR}"
    if not VENDOR_SCRIPT.is_file():
        raise FileNotFoundError(f"{VENDOR_SCRIPT} is missing")
    done = subprocess.run(["bash", str(VENDOR_SCRIPT)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not vendor_available():
        last = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(last[-1] if last else f"vendor_js.sh exited with {done.returncode}")
    return f"d3, jQuery and require.js in {VENDOR_DIR}"


def items(rows: int) -> list[P.Item]:
    """The library's catalogue plus bertviz's JavaScript (an app concern: npm registry, not the hub)."""
    js = P.Item("bertviz-js", "js", "bertviz's d3 5.7.0, jQuery 2.2.4 and require.js 2.3.6, from the npm registry",
                "explorer/static/vendor", "0.41 MB", _fetch_js, needs_hub=False)
    return [*P.catalogue(rows), js]


def _caches() -> list[str]:
    from huggingface_hub import constants

    from gpt_core.hub import cache_dir

    return [f"app cache (LLM_EXPLORER_CACHE): {cache_dir()}", f"Hugging Face cache (HF_HOME): {constants.HF_HUB_CACHE}"]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _line(outcome: P.Outcome) -> str:
    mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}[outcome.status]
    return f"[{mark}] {outcome.item.key} ({_duration(outcome.seconds)}): {outcome.detail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefetch", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list what would be fetched; download nothing")
    parser.add_argument("--only", default="all", help="comma-separated items or groups: all, "
                        + ", ".join(P.GROUPS) + ", or item keys (see --dry-run)")
    parser.add_argument("--rows", type=int, default=P.DEFAULT_ROWS, help="rows kept per dataset (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        chosen = P.select(items(args.rows), args.only.split(","))
    except InvalidInput as err:
        print(f"prefetch: {err}", file=sys.stderr)
        return 2
    for line in _caches():
        print(line)
    if args.dry_run:
        print(f"would fetch {sum(not i.skip for i in chosen)} items (dry run: nothing is downloaded):")
        width = max(len(i.key) for i in chosen)
        for i in chosen:
            where = f"skipped: {i.skip}" if i.skip else f"{i.size} -> {i.where}"
            print(f"  {i.key:<{width}}  {i.what}  [{where}]")
        return 0

    start = time.perf_counter()
    if sys.stdout.isatty():  # a live bar in a terminal; plain lines in a log (docker build, CI)
        from tqdm import tqdm

        with tqdm(total=len(chosen), unit="item", desc="prefetch", file=sys.stdout, dynamic_ncols=True) as bar:
            def started(item: P.Item) -> None:
                bar.set_postfix_str(item.key)

            def done(outcome: P.Outcome) -> None:
                bar.write(_line(outcome))
                bar.update(1)

            outcomes = P.run(chosen, started, done)
    else:
        position = {i.key: n for n, i in enumerate(chosen, 1)}

        def started(item: P.Item) -> None:
            print(f"({position[item.key]}/{len(chosen)}) {item.key}: {item.what}", flush=True)

        outcomes = P.run(chosen, started, lambda outcome: print(_line(outcome), flush=True))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "failed", "skipped")}
    print(f"{counts['ok']} ready, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {_duration(time.perf_counter() - start)}")
    for o in outcomes:
        if o.status == "failed":
            print(f"  failed: {o.item.key}: {o.detail}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
