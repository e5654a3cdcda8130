"""A config describing a 10,000-layer GPT-2 is refused before anything is built, checked in a process whose
address space is capped at 4 GiB (without the check, the same load starts building the model and fails there)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import json, resource, sys, tempfile
    from pathlib import Path

    limit = 4 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    folder = Path(tempfile.mkdtemp()) / "huge"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 10_000, "n_embd": 768,
                                                    "n_head": 12, "vocab_size": 50257}))
    (folder / "model.safetensors").write_bytes(b"\\0" * 16)
    from gpt_core import registry
    from gpt_core.errors import InvalidInput
    if sys.argv[1] == "unchecked":
        registry._check_declared_size = lambda *args, **kwargs: None
    try:
        registry.load_model(str(folder))
        print("loaded")
    except InvalidInput as exc:
        print(exc.code)
    # VmHWM: this process image's own peak (ru_maxrss would carry the forked test runner's peak across exec)
    status = Path("/proc/self/status").read_text()
    print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) // 1024)
""")


def _run(mode: str) -> tuple[str, int]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LLM_EXPLORER_MAX_PARAMS", None)
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    code, peak_mb = done.stdout.split()[-2:]
    return code, int(peak_mb)


def test_a_huge_config_is_refused_under_a_memory_limit_before_allocation():
    code, peak_mb = _run("checked")
    assert code == "registry.model_too_big"
    assert peak_mb < 600, peak_mb  # the interpreter and torch, nothing of the model


def test_without_the_check_the_same_load_starts_building_the_model():
    code, peak_mb = _run("unchecked")
    assert code != "registry.model_too_big" and code != "loaded"  # it got as far as building, then ran out
    assert peak_mb > _run("checked")[1]
