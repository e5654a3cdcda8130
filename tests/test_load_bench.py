"""bench/load_classroom.py: its helpers, and a smoke run (2 sessions, Home + Attention) against a real server."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from explorer.ui.state import MARKUP, MAX_URL_TEXT, UrlSpec, parse_url_value

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("load_classroom", ROOT / "bench" / "load_classroom.py")
lc = importlib.util.module_from_spec(_spec)
sys.modules["load_classroom"] = lc   # its dataclasses look their module up
_spec.loader.exec_module(lc)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(10, 0, -1)]     # 10 .. 1, unsorted on purpose
    assert lc.percentile(values, 50) == 5.0
    assert lc.percentile(values, 95) == 10.0          # with 10 runs, p95 is the slowest
    assert lc.percentile([float(v) for v in range(1, 31)], 95) == 29.0
    assert lc.percentile([2.5], 95) == 2.5


def test_each_student_has_a_text_the_url_accepts():
    for page in lc.PAGES:
        texts = [lc.student_text(page, i, r) for r in (0, 1) for i in range(30)]
        assert len(set(texts)) == 60, page
        for text in texts:
            assert len(text) <= MAX_URL_TEXT and not MARKUP.search(text)
            assert parse_url_value(UrlSpec("text", ""), text) == (text, None)


def test_a_page_that_kept_its_default_text_is_an_error():
    run = lc.Run(texts={"$$ID-abc-_w.attention.text": "Le chat dort sur le canapé."})
    assert lc.text_errors(run, "attention.text", "Ma voisine dessine un vélo rouge.") == ["text_not_applied"]
    run.texts["$$ID-abc-_w.attention.text"] = "Ma voisine dessine un vélo rouge."
    assert lc.text_errors(run, "attention.text", "Ma voisine dessine un vélo rouge.") == []
    run = lc.Run(texts={"$$ID-def-_w.next_token.prompt.fr": "Le chat"})   # a per-language widget key
    assert lc.text_errors(run, "next_token.prompt", "Le chat") == []


def test_quick_run_against_a_real_server():
    proc = subprocess.run([sys.executable, "bench/load_classroom.py", "--quick", "--timeout", "60", "--budget", "150"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    warm = {r["warm_up"]: r for r in records if "warm_up" in r}
    assert set(warm) == {"Home", "Attention"} and all(r["errors"] == 0 for r in warm.values())
    phases = {r["page"]: r for r in records if "p95_s" in r and "n" in r}
    assert set(phases) == {"Home", "Attention"}
    for page, rec in phases.items():
        assert rec["n"] == 2 and rec["errors"] == 0, (page, rec["error_samples"])
        assert 0 < rec["p50_s"] <= rec["p95_s"] <= rec["max_s"] <= 60
        assert rec["kb_per_run"] > 0 and rec["server_cpu_s"] > 0
    summary = records[-1]
    assert summary["summary"] is True and summary["errors"] == 0
    assert summary["peak_rss_sum_mb"] >= summary["peak_mem_mb"] > 100   # the server with its model loaded
    assert "  2    no Attention" in proc.stdout           # the table
