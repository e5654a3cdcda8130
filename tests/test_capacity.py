"""What keeps a 2-core classroom server fast: few threads per page run, no full GC after every run."""
from __future__ import annotations

import os
import threading
import re
from pathlib import Path

import torch

from explorer import settings
from gpt_core.timing import job_thread_count, use_page_threads

ROOT = Path(__file__).resolve().parents[1]


def test_a_page_run_computes_on_its_share_and_later_threads_keep_the_default():
    default, seen = torch.get_num_threads(), {}

    def script_run():
        use_page_threads(1)
        seen["page"] = torch.get_num_threads()
        later = threading.Thread(target=lambda: seen.setdefault("later", torch.get_num_threads()))
        later.start()
        later.join()

    runner = threading.Thread(target=script_run)
    runner.start()
    runner.join()
    assert seen == {"page": 1, "later": default}
    assert job_thread_count() == max(1, default // 2)  # the process's count, whatever a page thread uses


def test_page_threads_default_to_a_quarter_of_the_cores(monkeypatch):
    monkeypatch.delenv("LLM_EXPLORER_PAGE_THREADS", raising=False)
    assert settings.page_threads() == max(1, (os.cpu_count() or 2) // 4)
    monkeypatch.setenv("LLM_EXPLORER_PAGE_THREADS", "3")
    assert settings.page_threads() == 3
    for bad in ("0", "-2", "nan", "lots"):
        monkeypatch.setenv("LLM_EXPLORER_PAGE_THREADS", bad)
        assert settings.page_threads() == max(1, (os.cpu_count() or 2) // 4)


def test_no_full_garbage_collection_after_each_script_run():
    config = (ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8")
    assert re.search(r"^\[runner\]\n(?:#.*\n)*postScriptGC = false$", config, re.M)


def test_model_computations_take_turns_in_as_many_slots_as_the_cores_hold(monkeypatch):
    import time

    from explorer import compute

    monkeypatch.setenv("LLM_EXPLORER_PAGE_THREADS", "1")
    monkeypatch.setattr(compute.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(compute, "_slots", None)
    assert compute.slot_count() == 2
    running, peak, lock = [0], [0], threading.Lock()

    def student():
        with compute.compute_slot():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=student) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert peak[0] == 2 and running[0] == 0
