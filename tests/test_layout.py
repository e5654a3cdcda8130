"""The shape of the code base: rules a reviewer would otherwise check by hand."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 420      # "about 400" for modules under explorer/
MAX_FUNCTION_LINES = 80


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.splitlines()


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_two_paths_differ_only_by_case():
    seen: dict[str, str] = {}
    clashes = []
    for path in _tracked():
        key = path.lower()
        if key in seen:
            clashes.append((seen[key], path))
        seen[key] = path
    assert not clashes, f"paths that collide on a case-insensitive disk (macOS, Windows): {clashes}"


def test_explorer_modules_stay_small():
    long = [(str(p.relative_to(ROOT)), n) for p in _python_files("explorer")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, f"explorer modules longer than {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long():
    long = []
    for path in _python_files("gpt_core", "explorer", "pages", "bench", "scripts"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "functions longer than {} lines:\n{}".format(MAX_FUNCTION_LINES, "\n".join(long))


def test_only_the_model_seam_knows_model_classes():
    """Outside gpt_core/backend.py nothing branches on our GPT's class."""
    pattern = re.compile(r"isinstance\([^)]*\bGPT\b|is_gpt_core")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _python_files("gpt_core", "explorer", "pages")
            if p.name != "backend.py"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, f"model-class tests outside gpt_core/backend.py: {hits}"


def test_no_course_jargon_reaches_users():
    """'seed 003', 'séance 004' or 'GPTDatasetV1 du cours' mean nothing to a user of the app."""
    pattern = re.compile(r"\b(seed|séance)s? 00\d|GPTDatasetV1 du cours", re.IGNORECASE)
    files = [*_python_files("gpt_core", "explorer", "pages"), *sorted((ROOT / "assets" / "locales").rglob("*.json")),
             ROOT / "README.md"]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, f"course jargon in user-facing code or text: {hits}"
