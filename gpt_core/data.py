"""The data pipeline: from a user's file to the tensors a GPT trains on.

Everything here is pure (no Streamlit, no printing) and returns plain data the
app can draw. The tokenizer is always passed in: anything with ``encode``,
``decode``, ``eos_id`` and ``pad_id`` works (see :mod:`gpt_core.tokenizers`).

Sections
--------
* **Loading** hostile user files (:func:`read_text_upload`, :func:`read_records`,
  :func:`require_columns`), the bundled sample datasets (:func:`load_bundled`),
  Python's own documentation as an offline English corpus
  (:func:`pydoc_corpus`) and bounded slices of Hugging Face datasets
  (:func:`load_hf_dataset_slice`).
* **Chunking for pretraining**: documents joined by ``<|endoftext|>`` and cut
  into fixed windows (:func:`chunk_eot`) versus one padded document per row
  (:func:`chunk_padding`); the sliding window of (input, target) pairs
  (:func:`sliding_windows`, :class:`GPTWindowDataset`, :func:`make_loader`) and
  the arithmetic of epochs and batches (:func:`batch_arithmetic`).
* **Instruction data**: the Alpaca prompt (:func:`format_alpaca`),
  :class:`InstructionDataset` and the padding/masking collate
  (:func:`collate_instructions`).
* **Classification**: :class:`ClassificationDataset`, :func:`label_vocab`.
* **Splits**: :func:`split_records`, :func:`split_text`.

Errors are :class:`~gpt_core.errors.InvalidInput` (bad input) or
:class:`~gpt_core.errors.HubUnavailable` (no network), each with a stable code
(``data.*``) that the app says in the user's language.
"""
from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import numbers
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from . import hub as _hub
from .errors import HubUnavailable, InvalidInput, note

__all__ = [
    "MAX_UPLOAD_BYTES", "IGNORE_INDEX", "DATASETS_DIR", "BUNDLED", "HF_PRESETS",
    "read_text_upload", "read_records", "require_columns", "split_documents",
    "bundled_path", "load_bundled", "pydoc_documents", "pydoc_corpus", "HFSlice",
    "load_hf_dataset_slice", "encode_documents", "pad_token_id",
    "ChunkResult", "chunk_eot", "chunk_padding", "WindowResult", "sliding_windows",
    "GPTWindowDataset", "make_loader", "batch_arithmetic",
    "ALPACA_STYLES", "format_alpaca", "InstructionDataset", "collate_instructions",
    "instruction_collate_fn", "make_instruction_loader",
    "label_vocab", "ClassificationDataset", "split_records", "split_text",
]

MAX_UPLOAD_BYTES = 5_000_000   # default size limit of an uploaded file (5 MB)
IGNORE_INDEX = -100            # targets with this value are skipped by cross_entropy
DATASETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "datasets"


# =============================================================== small helpers
def _shown(value: Any) -> str:
    """A short, printable form of any value, for a message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``; ``name`` (a parameter name) is the message's ``field``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    else:
        raise InvalidInput("data.not_whole", "{field} must be a whole number (got {value}).",
                           field=name, value=_shown(value))
    if value < minimum:
        raise InvalidInput("data.too_small", "{field} must be at least {minimum} (got {value}).",
                           field=name, minimum=minimum, value=value)
    return value


def _as_id_list(ids: Any) -> list[int]:
    """A list/tuple/tensor/array of token ids -> list[int], with a readable error otherwise."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise InvalidInput("data.ids_not_1d", "A list of token ids must be one-dimensional (got the shape "
                               "{shape}).", shape=str(tuple(ids.shape)))
        return [int(v) for v in ids.tolist()]
    if isinstance(ids, (str, bytes)):
        raise InvalidInput("data.ids_are_text", "Expected token ids, not text.")
    try:
        out = []
        for v in ids:
            if isinstance(v, bool):
                raise TypeError
            iv = int(v)
            if iv != v:
                raise TypeError
            out.append(iv)
        return out
    except (TypeError, ValueError):
        raise InvalidInput("data.ids_not_whole", "Token ids must be whole numbers.") from None


def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding: ``tokenizer.pad_id``, else ``eos_id`` (GPT-2 pads with 50256)."""
    pad = getattr(tokenizer, "pad_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_id", None)
    if pad is None:
        raise InvalidInput("data.no_pad_token", "This tokenizer has neither a padding token nor an end-of-text "
                           "token: sequences cannot be padded.")
    return int(pad)


# ====================================================================== loading
def read_text_upload(data: bytes | bytearray | memoryview | str, filename: str = "file",
                     max_bytes: int | None = MAX_UPLOAD_BYTES) -> str:
    """Decode an uploaded file as UTF-8 text (strict), newlines normalised to ``\\n``.

    A UTF-8 byte-order mark is dropped. Raises :class:`InvalidInput` for a file
    above ``max_bytes`` (``None``: no limit), an empty file, a binary (or UTF-16)
    file, or bytes that are not valid UTF-8 (the message gives the line).
    """
    if isinstance(data, str):
        raw = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        raise InvalidInput("data.upload_not_bytes", "The content of the file '{name}' must be bytes (got {kind}).",
                           name=filename, kind=type(data).__name__)
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidInput("data.file_too_large", "The file '{name}' is too large ({size} bytes): the limit is "
                           "{limit} bytes.", name=filename, size=len(raw), limit=max_bytes)
    if not raw.strip():
        raise InvalidInput("data.file_empty", "The file '{name}' is empty.", name=filename)
    if b"\x00" in raw:
        raise InvalidInput("data.file_binary", "The file '{name}' contains null bytes: it is a binary file or "
                           "UTF-16 text, not UTF-8 text.", name=filename)
    if isinstance(data, str):
        text = data
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise InvalidInput("data.file_not_utf8", "The file '{name}' is not valid UTF-8 text (byte {byte}, "
                               "line {line}): save it as UTF-8 and try again.",
                               name=filename, byte=err.start + 1, line=line) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


# JSON's own names for the types json.loads returns
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _json_object(item: Any, filename: str, index: int | None = None, line: int | None = None) -> dict:
    """``item`` if it is a JSON object; else an error naming its place (item ``index`` or ``line``)."""
    if isinstance(item, dict):
        return item
    kind = _JSON_TYPES.get(type(item), type(item).__name__)
    if line is not None:
        raise InvalidInput("data.jsonl_line_not_object", "Line {line} of the file '{name}' is not an object "
                           "{{\"key\": value}} but a JSON {kind}.", line=line, name=filename, kind=kind)
    raise InvalidInput("data.json_item_not_object", "Item {index} of the file '{name}' is not an object "
                       "{{\"key\": value}} but a JSON {kind}.", index=index, name=filename, kind=kind)


def _too_deep(filename: str) -> InvalidInput:
    """A file whose lists or objects nest too deeply for the parser (a hostile upload, never a dataset)."""
    return InvalidInput("data.json_too_deep", "The file '{name}' nests lists or objects inside each other too "
                        "deeply to be read: a dataset is a list of flat objects.", name=filename)


def _read_json(text: str, filename: str) -> list[dict]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput("data.json_invalid", "The file '{name}' is not valid JSON: line {line}, column "
                           "{column}.", name=filename, line=err.lineno, column=err.colno) from None
    except RecursionError:
        raise _too_deep(filename) from None
    if isinstance(obj, dict):
        raise InvalidInput("data.json_single_object", "The file '{name}' holds a single JSON object: a list of "
                           "objects is needed, for example [{{\"text\": ..., \"label\": ...}}, ...].",
                           name=filename)
    if not isinstance(obj, list):
        raise InvalidInput("data.json_not_list", "The file '{name}' must contain a list of JSON objects.",
                           name=filename)
    return [_json_object(item, filename, index=i) for i, item in enumerate(obj, 1)]


def _read_jsonl(text: str, filename: str) -> list[dict]:
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InvalidInput("data.jsonl_invalid", "Line {line} of the file '{name}': invalid JSON at column "
                               "{column}.", line=lineno, name=filename, column=err.colno) from None
        except RecursionError:
            raise _too_deep(filename) from None
        records.append(_json_object(obj, filename, line=lineno))
    return records


_DELIMITERS = ",;\t|"


def _csv_dialect(text: str, filename: str) -> type[csv.Dialect] | csv.Dialect:
    header = text.split("\n", 1)[0]
    try:
        dialect = csv.Sniffer().sniff(text[:65536], delimiters=_DELIMITERS)
        if dialect.delimiter in header:
            dialect.doublequote = True  # the sniffer sometimes guesses False; "" is the norm
            return dialect
    except csv.Error:
        pass
    # Fallback: the candidate delimiter that appears most in the header line.
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], d == ","))

    class _Guess(csv.excel):
        delimiter = best if counts[best] else ","

    return _Guess


def _read_csv(text: str, filename: str) -> list[dict]:
    dialect = _csv_dialect(text, filename)
    reader = csv.reader(io.StringIO(text, newline=""), dialect, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidInput("data.file_empty", "The file '{name}' is empty.", name=filename)
        header = [h.strip() for h in header]
        if any(not h for h in header):
            raise InvalidInput("data.csv_unnamed_column", "The header line of the file '{name}' has a column "
                               "without a name: {columns}.", name=filename,
                               columns=", ".join(repr(h) for h in header))
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise InvalidInput("data.csv_duplicate_column", "The header line of the file '{name}' names the "
                               "column '{column}' twice.", name=filename, column=dupes[0])
        records = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InvalidInput("data.csv_field_count", "Line {line} of the file '{name}': {n_fields} field(s) "
                                   "instead of {n_columns} (columns: {columns}). Check the quotes and the "
                                   "separators.", line=reader.line_num, name=filename, n_fields=len(row),
                                   n_columns=len(header), columns=", ".join(header))
            records.append(dict(zip(header, row)))
    except csv.Error:
        raise InvalidInput("data.csv_malformed", "Line {line} of the file '{name}': malformed CSV (check the "
                           "quotes).", line=reader.line_num, name=filename) from None
    return records


def read_records(data: bytes | bytearray | str, filename: str,
                 max_bytes: int | None = MAX_UPLOAD_BYTES) -> list[dict]:
    """Parse an uploaded ``.json`` (list of objects), ``.jsonl`` or ``.csv``/``.tsv`` file.

    CSV files must have a header line; the delimiter (``,`` ``;`` tab ``|``) is
    detected. Every error names the line (JSON, JSONL, CSV) or the item number.
    An empty dataset raises :class:`InvalidInput` too.
    """
    name = str(filename or "")
    suffix = Path(name).suffix.lower()
    if suffix not in (".json", ".jsonl", ".csv", ".tsv"):
        raise InvalidInput("data.unsupported_format", "Unsupported file format for '{name}': use .json (a list "
                           "of objects), .jsonl (one object per line) or .csv.", name=name)
    text = read_text_upload(data, name, max_bytes=max_bytes)
    if suffix == ".json":
        records = _read_json(text, name)
    elif suffix == ".jsonl":
        records = _read_jsonl(text, name)
    else:
        records = _read_csv(text, name)
    if not records:
        raise InvalidInput("data.no_examples", "The file '{name}' contains no example.", name=name)
    return records


def require_columns(records: Sequence[dict], columns: Sequence[str],
                    filename: str | None = None) -> Sequence[dict]:
    """Check that every record has each column; returns ``records`` unchanged.

    The message names the missing column and either the columns that were found
    (when no record has it) or the first record that lacks it.
    """
    if not records:
        if filename:
            raise InvalidInput("data.no_examples", "The file '{name}' contains no example.", name=filename)
        raise InvalidInput("data.dataset_empty", "The dataset is empty: it contains no example.")
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise InvalidInput("data.example_not_object", "Example {n} is not an object with columns.", n=i)
    for col in columns:
        lacking = [i for i, rec in enumerate(records, 1) if col not in rec]
        if len(lacking) == len(records):
            found = ", ".join(map(str, sorted({k for rec in records for k in rec}))) or "—"
            if filename:
                raise InvalidInput("data.file_column_missing", "The column '{column}' is missing from the file "
                                   "'{name}' (columns found: {found}).", column=col, name=filename, found=found)
            raise InvalidInput("data.column_missing", "The column '{column}' is missing (columns found: {found}).",
                               column=col, found=found)
        if lacking:
            raise InvalidInput("data.example_missing_field", "Example {n} has no '{column}' field.",
                               n=lacking[0], column=col)
    return records


TEXT_COLUMNS = ("text", "content", "context", "review", "document", "body")   # read as text, in this order
ALPACA_COLUMN = "instruction/input/output"


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def records_texts(records: Sequence[dict], filename: str | None) -> tuple[list[str], str]:
    """The texts of table rows and the column they were read from.

    Alpaca records (``instruction`` + ``output``) become their full training
    text; otherwise the first of :data:`TEXT_COLUMNS` present is read. With
    none of them, the refusal names the columns found.
    """
    first = records[0] if records and isinstance(records[0], dict) else {}
    if "instruction" in first and "output" in first:
        require_columns(records, ["instruction", "output"], filename)
        return ["".join(format_alpaca(r)) for r in records], ALPACA_COLUMN
    for col in TEXT_COLUMNS:
        if col in first:
            require_columns(records, [col], filename)
            return [_cell_text(r[col]) for r in records], col
    require_columns(records, ["text"], filename)  # raises, naming the columns found
    raise AssertionError("unreachable: require_columns refused the table")


def split_documents(text: str) -> list[str]:
    """Split a text into documents at blank lines (empty documents are dropped)."""
    if not isinstance(text, str):
        raise InvalidInput("data.corpus_not_text", "The corpus must be text.")
    return [doc.strip() for doc in re.split(r"\n[ \t]*\n", text) if doc.strip()]


# ------------------------------------------------------------ bundled datasets
# "label" is a Message: the app says it in the user's language
BUNDLED: dict[str, dict[str, Any]] = {
    "corpus_fr": {"file": "corpus_fr.txt", "kind": "text",
                  "label": note("data.bundled_corpus_fr", "Small French corpus (invented towns, recipes, weather, "
                                "tales, science)")},
    "corpus_en": {"file": "corpus_en.txt", "kind": "text",
                  "label": note("data.bundled_corpus_en", "Small English corpus (invented towns, recipes, weather, "
                                "tales, science)")},
    "instructions_fr_en": {"file": "instructions_fr_en.json", "kind": "records",
                           "label": note("data.bundled_instructions", "Alpaca instructions in French and English "
                                         "(instruction, input, output)")},
    "tickets_fr": {"file": "tickets_fr.csv", "kind": "records",
                   "label": note("data.bundled_tickets", "Labelled IT support tickets (text, label), 5 classes")},
}


def _bundled_key(name: str) -> str:
    key = str(name).strip()
    for k, info in BUNDLED.items():
        if key in (k, info["file"]):
            return k
    raise InvalidInput("data.unknown_bundled", "Unknown dataset '{name}'. Bundled datasets: {choices}.",
                       name=str(name)[:60], choices=", ".join(BUNDLED))


def bundled_path(name: str) -> Path:
    """Path of a bundled dataset file (``corpus_fr``, ``tickets_fr.csv``, ...)."""
    path = DATASETS_DIR / BUNDLED[_bundled_key(name)]["file"]
    if not path.is_file():
        raise InvalidInput("data.bundled_file_missing", "The file {file} cannot be found in {folder}: run "
                           "scripts/make_datasets.py to build it again.", file=path.name, folder=str(DATASETS_DIR))
    return path


def load_bundled(name: str) -> str | list[dict]:
    """A bundled dataset: the text of a corpus, or the records of a JSON/CSV dataset."""
    key = _bundled_key(name)
    path = bundled_path(key)
    if BUNDLED[key]["kind"] == "text":
        return read_text_upload(path.read_bytes(), path.name, max_bytes=None)
    return read_records(path.read_bytes(), path.name, max_bytes=None)


TASK_DATASETS = {"instruct": "instructions_fr_en", "classify": "tickets_fr"}   # the bundled data of each task
TASK_COLUMNS = {"instruct": ["instruction", "output"], "classify": ["text", "label"]}


def task_records(task: str, upload: tuple[bytes, str] | None = None,
                 max_bytes: int | None = MAX_UPLOAD_BYTES) -> list[dict]:
    """The records of a fine-tuning task (``"instruct"`` or ``"classify"``): the bundled dataset, or a file's
    (bytes, name) read as .json/.jsonl/.csv, its columns checked (and at least two classes to classify)."""
    if task not in TASK_DATASETS:
        raise InvalidInput("data.unknown_task", "Unknown task '{task}': instruct or classify.", task=str(task)[:40])
    if upload is None:
        records, name = load_bundled(TASK_DATASETS[task]), None
    else:
        records, name = read_records(*upload, max_bytes=max_bytes), upload[1]
    require_columns(records, TASK_COLUMNS[task], name)
    if task == "classify":
        label_vocab([r["label"] for r in records])
    return list(records)


def pydoc_documents() -> list[str]:
    """Python's own help topics (``pydoc_data.topics``), one document per topic, sorted by name."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some stripped Python builds leave it out
        raise InvalidInput("data.no_pydoc", "This Python installation has no pydoc_data: the documentation "
                           "corpus is unavailable.") from None
    return [topics[key].strip() for key in sorted(topics) if topics[key].strip()]


def pydoc_corpus(max_chars: int | None = None) -> str:
    """An offline English corpus: the help topics joined by blank lines, cut to ``max_chars``."""
    text = "\n\n".join(pydoc_documents())
    if max_chars is None:
        return text
    return text[: _check_int(max_chars, "max_chars", 1)]


# ------------------------------------------------------- Hugging Face datasets
# "label" is a Message: the app says it in the user's language
HF_PRESETS: dict[str, dict[str, Any]] = {
    "wikipedia-fr": {"name": "wikimedia/wikipedia", "config": "20231101.fr", "split": "train", "text_field": "text",
                     "label": note("data.preset_wikipedia_fr", "French Wikipedia (November 2023)")},
    "piaf": {"name": "AgentPublic/piaf", "config": "plain_text", "split": "train", "text_field": "context",
             "label": note("data.preset_piaf", "PIAF: questions and answers in French")},
    "allocine": {"name": "tblard/allocine", "config": None, "split": "train", "text_field": "review",
                 "label": note("data.preset_allocine", "Allociné: film reviews (positive/negative)")},
    "fquad": {"name": "illuin/fquad", "config": None, "split": "train", "text_field": "context",
              "label": note("data.preset_fquad", "FQuAD: questions and answers in French (manual download "
                            "from Illuin)")},
}


@dataclass
class HFSlice:
    """A bounded slice of a Hugging Face dataset."""
    name: str                 # hub id, e.g. "wikimedia/wikipedia"
    config: str | None        # e.g. "20231101.fr"
    split: str
    text_field: str | None    # field the texts were read from
    records: list[dict]       # the rows as the hub gives them
    texts: list[str]          # records[i][text_field] (empty when text_field is None)
    source: str               # human label with the address


def _hub_is_reachable() -> bool:
    return bool(_hub.hub_reachable())


def load_hf_dataset_slice(name: str, config: str | None = None, split: str = "train", n: int = 200,
                          text_field: str | None = None) -> HFSlice:
    """Stream the first ``n`` rows of a hub dataset (nothing else is downloaded).

    ``name`` is a hub id or a key of :data:`HF_PRESETS` (``wikipedia-fr``,
    ``piaf``, ``allocine``, ``fquad``), whose config and text field fill in the
    arguments left as ``None``. Raises :class:`HubUnavailable` at once when the
    hub cannot be reached, and :class:`InvalidInput` for an unknown dataset or a
    missing text field.
    """
    n = _check_int(n, "n", 1)
    if n > 10_000:
        raise InvalidInput("data.hf_too_many_rows", "At most {limit} rows can be read (got {n}).",
                           limit=10_000, n=n)
    preset = HF_PRESETS.get(str(name))
    if preset is not None and config is None and text_field is None and split == preset["split"]:
        from .prefetch import read_slice  # fetched ahead by scripts/prefetch.py: read with no network

        kept = read_slice(str(name), n)
        if kept is not None:
            return kept
    if preset is not None:
        name = preset["name"]
        config = config if config is not None else preset["config"]
        text_field = text_field if text_field is not None else preset["text_field"]
    if not isinstance(name, str) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise InvalidInput("data.hf_bad_name", "Invalid dataset name '{name}' (expected organisation/name).",
                           name=str(name)[:100])
    if not _hub_is_reachable():
        raise HubUnavailable("data.hf_unreachable", "The Hugging Face hub cannot be reached: the dataset '{name}' "
                             "cannot be downloaded. Use the datasets bundled with the app.", name=name)
    try:
        import datasets
    except ImportError:
        raise HubUnavailable("data.no_datasets_library", "The datasets library is not installed: "
                             "pip install datasets.") from None
    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
        records = [dict(row) for row in itertools.islice(iter(stream), n)]
    except Exception as err:  # the datasets library raises many kinds of errors
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        if type(err).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "ValueError"):
            raise InvalidInput("data.hf_cannot_open", "The dataset '{name}' (config {config}, part {part}) could "
                               "not be opened: {error}", name=name, config=str(config), part=str(split),
                               error=msg) from None
        raise HubUnavailable("data.hf_download_failed", "Downloading '{name}' from the hub failed: {error}",
                             name=name, error=msg) from None
    if not records:
        raise InvalidInput("data.hf_part_empty", "The part '{part}' of the dataset '{name}' is empty.",
                           part=str(split), name=name)
    texts: list[str] = []
    if text_field is not None:
        if text_field not in records[0]:
            raise InvalidInput("data.hf_no_column", "The field '{column}' does not exist in '{name}' (fields: "
                               "{columns}).", column=str(text_field), name=name,
                               columns=", ".join(map(str, records[0])))
        texts = [str(rec.get(text_field, "")) for rec in records]
    return HFSlice(name=name, config=config, split=split, text_field=text_field, records=records,
                   texts=texts, source=f"https://huggingface.co/datasets/{name}")


# ================================================================= chunking
def encode_documents(docs: Sequence[str], tokenizer: Any) -> list[list[int]]:
    """Encode each document with ``tokenizer.encode`` (no special token added)."""
    if isinstance(docs, str):
        raise InvalidInput("data.documents_is_text", "encode_documents expects a list of documents, not a single "
                           "text.")
    return [list(tokenizer.encode(doc)) for doc in docs]


@dataclass
class ChunkResult:
    """Rows of fixed length built from documents, with what the UI needs to draw them.

    ``doc_index[r, c]`` is the document a position belongs to (its closing
    end-of-text included), -1 on padding. ``attention_mask`` is 1 on real
    tokens, 0 on padding. ``waste_pct`` = percentage of positions that are padding.
    """
    strategy: str                     # "eot" or "padding"
    context: int                      # row length
    rows: torch.Tensor                # (N, context) token ids
    doc_index: torch.Tensor           # (N, context) document number, -1 on padding
    attention_mask: torch.Tensor      # (N, context) 1 = real token, 0 = padding
    n_docs: int                       # documents given
    n_tokens: int                     # real tokens placed in the rows
    n_pad: int                        # padding positions
    waste_pct: float                  # 100 * n_pad / (N * context)
    last_window: str                  # "exact", "padded" or "dropped" (eot); "per-document" (padding)
    dropped_tokens: int = 0           # tokens of a dropped last partial window (eot)
    truncated_tokens: int = 0         # tokens cut because a document was longer than context (padding)
    truncated_docs: int = 0           # how many documents were truncated (padding)

    @property
    def n_rows(self) -> int:
        return int(self.rows.shape[0])

    def to_dict(self) -> dict:
        """Plain lists and numbers (JSON-ready)."""
        return {"strategy": self.strategy, "context": self.context, "rows": self.rows.tolist(),
                "doc_index": self.doc_index.tolist(), "attention_mask": self.attention_mask.tolist(),
                "n_docs": self.n_docs, "n_tokens": self.n_tokens, "n_pad": self.n_pad,
                "waste_pct": self.waste_pct, "last_window": self.last_window,
                "dropped_tokens": self.dropped_tokens, "truncated_tokens": self.truncated_tokens,
                "truncated_docs": self.truncated_docs}


def _check_docs(docs_ids: Any) -> list[list[int]]:
    if isinstance(docs_ids, (str, bytes)) or not isinstance(docs_ids, Sequence):
        raise InvalidInput("data.docs_not_list", "Expected a list of documents, each a list of token ids.")
    if len(docs_ids) == 0:
        raise InvalidInput("data.no_documents", "No document: add at least one text.")
    docs = [_as_id_list(doc) for doc in docs_ids]
    if not any(docs):
        raise InvalidInput("data.all_documents_empty", "All the documents are empty: there is no token to cut.")
    return docs


def chunk_eot(docs_ids: Sequence[Sequence[int]], eot_id: int, context: int, last: str = "pad",
              pad_id: int | None = None) -> ChunkResult:
    """EOT strategy: each document followed by ``eot_id``, all concatenated, cut every ``context`` tokens.

    Windows ignore document boundaries (a row may hold the end of one document,
    ``<|endoftext|>`` and the start of the next). ``last="pad"`` pads the last
    partial window with ``pad_id`` (default: ``eot_id``, as GPT-2 does);
    ``last="drop"`` drops it. Empty documents are skipped.
    """
    context = _check_int(context, "context", 1)
    eot_id = _check_int(eot_id, "eot_id", 0)
    if last not in ("pad", "drop"):
        raise InvalidInput("data.bad_last", "'last' must be 'pad' or 'drop' (got {value}).", value=_shown(last))
    pad = eot_id if pad_id is None else _check_int(pad_id, "pad_id", 0)
    docs = _check_docs(docs_ids)
    stream: list[int] = []
    owner: list[int] = []
    for i, doc in enumerate(docs):
        if not doc:
            continue
        stream.extend(doc)
        stream.append(eot_id)
        owner.extend([i] * (len(doc) + 1))
    total = len(stream)
    n_full, rest = divmod(total, context)
    dropped = 0
    if rest == 0:
        state = "exact"
    elif last == "drop":
        state = "dropped"
        dropped = rest
        stream, owner = stream[: n_full * context], owner[: n_full * context]
        if n_full == 0:
            raise InvalidInput("data.shorter_than_window", "The text has only {total} tokens (end-of-text tokens "
                               "included): at least {context} are needed to fill one window when the last "
                               "incomplete window is dropped.", total=total, context=context)
    else:
        state = "padded"
        fill = context - rest
        stream += [pad] * fill
        owner += [-1] * fill
    rows = torch.tensor(stream, dtype=torch.long).view(-1, context)           # (N, context)
    doc_index = torch.tensor(owner, dtype=torch.long).view(-1, context)       # (N, context)
    mask = (doc_index >= 0).long()
    n_pad = int((mask == 0).sum())
    return ChunkResult("eot", context, rows, doc_index, mask, len(docs), int(mask.sum()), n_pad,
                       100.0 * n_pad / rows.numel(), state, dropped_tokens=dropped)


def chunk_padding(docs_ids: Sequence[Sequence[int]], pad_id: int, context: int,
                  eot_id: int | None = None) -> ChunkResult:
    """Padding strategy: one document per row, truncated to ``context`` then padded with ``pad_id``.

    With ``eot_id`` each document first gets an end-of-text token (which may be
    truncated away like any other token). Empty documents are skipped.
    """
    context = _check_int(context, "context", 1)
    pad_id = _check_int(pad_id, "pad_id", 0)
    if eot_id is not None:
        eot_id = _check_int(eot_id, "eot_id", 0)
    docs = _check_docs(docs_ids)
    kept = [(i, doc + ([eot_id] if eot_id is not None else [])) for i, doc in enumerate(docs) if doc]
    rows = torch.full((len(kept), context), pad_id, dtype=torch.long)        # (N, context)
    doc_index = torch.full((len(kept), context), -1, dtype=torch.long)       # (N, context)
    truncated_tokens = truncated_docs = 0
    for r, (i, seq) in enumerate(kept):
        if len(seq) > context:
            truncated_tokens += len(seq) - context
            truncated_docs += 1
            seq = seq[:context]
        rows[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        doc_index[r, : len(seq)] = i
    mask = (doc_index >= 0).long()
    n_pad = int((mask == 0).sum())
    return ChunkResult("padding", context, rows, doc_index, mask, len(docs), int(mask.sum()), n_pad,
                       100.0 * n_pad / rows.numel(), "per-document",
                       truncated_tokens=truncated_tokens, truncated_docs=truncated_docs)


@dataclass
class WindowResult:
    """Input/target windows of the sliding-window dataset (targets = inputs shifted by one)."""
    inputs: torch.Tensor      # (N, max_length)
    targets: torch.Tensor     # (N, max_length), targets[i, j] = ids[starts[i] + j + 1]
    starts: list[int]         # first position of each window in the token list
    max_length: int
    stride: int
    overlap: int              # tokens shared by two consecutive windows: max(0, max_length - stride)
    gap: int                  # tokens skipped between two windows: max(0, stride - max_length)
    n_samples: int
    n_tokens: int             # length of the token list
    unused_tail: int          # tokens after the last target, never seen

    def to_dict(self) -> dict:
        return {"inputs": self.inputs.tolist(), "targets": self.targets.tolist(),
                "starts": list(self.starts), "max_length": self.max_length, "stride": self.stride,
                "overlap": self.overlap, "gap": self.gap, "n_samples": self.n_samples,
                "n_tokens": self.n_tokens, "unused_tail": self.unused_tail}


def sliding_windows(ids: Sequence[int], max_length: int, stride: int) -> WindowResult:
    """Cut a token list into (input, target) windows: the classic sliding-window dataset.

    ``for i in range(0, len(ids) - max_length, stride)``: input ``ids[i:i+max_length]``,
    target ``ids[i+1:i+max_length+1]``. Needs at least ``max_length + 1`` tokens.
    """
    max_length = _check_int(max_length, "max_length", 1)
    stride = _check_int(stride, "stride", 1)
    ids = _as_id_list(ids)
    n = len(ids)
    if n < max_length + 1:
        raise InvalidInput("data.text_too_short", "The text is too short: {n} token(s), while at least {needed} "
                           "(max_length + 1) are needed to form a window and its target shifted by one token.",
                           n=n, needed=max_length + 1)
    starts = list(range(0, n - max_length, stride))
    data = torch.tensor(ids, dtype=torch.long)
    index = torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(max_length)  # (N, max_length)
    inputs, targets = data[index], data[index + 1]
    return WindowResult(inputs, targets, starts, max_length, stride, max(0, max_length - stride),
                        max(0, stride - max_length), len(starts), n,
                        n - (starts[-1] + max_length + 1))


class GPTWindowDataset(Dataset):
    """A ``torch`` dataset of (input, target) windows, built on :func:`sliding_windows`."""

    def __init__(self, ids: Sequence[int], max_length: int, stride: int):
        self.windows = sliding_windows(ids, max_length, stride)

    @classmethod
    def from_text(cls, text: str, tokenizer: Any, max_length: int, stride: int) -> "GPTWindowDataset":
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("data.training_text_empty", "The training text is empty.")
        return cls(tokenizer.encode(text), max_length, stride)

    def __len__(self) -> int:
        return self.windows.n_samples

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.windows.inputs[idx], self.windows.targets[idx]


def make_loader(dataset: Dataset, batch_size: int = 8, shuffle: bool = True, drop_last: bool = True,
                seed: int | None = 0, num_workers: int = 0,
                collate_fn: Callable | None = None) -> DataLoader:
    """A ``DataLoader`` whose shuffling is reproducible (``seed``; ``None``: not seeded).

    Raises :class:`InvalidInput` when it would yield no batch at all.
    """
    batch_size = _check_int(batch_size, "batch_size", 1)
    num_workers = _check_int(num_workers, "num_workers", 0)
    n = len(dataset)
    if n == 0:
        raise InvalidInput("data.no_batch", "The dataset is empty: no batch is possible.")
    if drop_last and n < batch_size:
        raise InvalidInput("data.fewer_than_batch", "The dataset has only {n} example(s), fewer than the batch "
                           "size ({batch_size}): with drop_last no batch would be produced. Lower the batch size "
                           "or turn drop_last off.", n=n, batch_size=batch_size)
    generator = None
    if shuffle and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, collate_fn=collate_fn, generator=generator)


def batch_arithmetic(n_samples: int, batch_size: int, epochs: int = 1, drop_last: bool = True,
                     grad_accum: int = 1, max_length: int | None = None) -> dict:
    """How many batches, optimizer steps and tokens a run over ``n_samples`` windows gives.

    An optimizer step happens every ``grad_accum`` batches, and once more at the
    end of an epoch for a last incomplete group (``partial_accumulation``).
    Token counts need ``max_length`` (tokens per sample).
    """
    n_samples = _check_int(n_samples, "n_samples", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    epochs = _check_int(epochs, "epochs", 1)
    grad_accum = _check_int(grad_accum, "grad_accum", 1)
    if max_length is not None:
        max_length = _check_int(max_length, "max_length", 1)
    if drop_last:
        batches = n_samples // batch_size
        last_batch = batch_size if batches else 0
    else:
        batches = math.ceil(n_samples / batch_size)
        last_batch = n_samples - (batches - 1) * batch_size if batches else 0
    used = batches * batch_size if drop_last else n_samples
    steps_per_epoch = math.ceil(batches / grad_accum)
    out = {
        "n_samples": n_samples, "batch_size": batch_size, "epochs": epochs, "drop_last": drop_last,
        "grad_accum": grad_accum, "effective_batch_size": batch_size * grad_accum,
        "batches_per_epoch": batches, "last_batch_size": last_batch,
        "samples_per_epoch": used, "dropped_samples": n_samples - used,
        "total_batches": batches * epochs,
        "optimizer_steps_per_epoch": steps_per_epoch, "optimizer_steps": steps_per_epoch * epochs,
        "partial_accumulation": batches % grad_accum != 0,
        "tokens_per_batch": None, "tokens_per_step": None, "tokens_per_epoch": None, "total_tokens": None,
    }
    if max_length is not None:
        out.update(tokens_per_batch=batch_size * max_length,
                   tokens_per_step=batch_size * grad_accum * max_length,
                   tokens_per_epoch=used * max_length, total_tokens=used * max_length * epochs)
    return out


# ============================================================ instruction data
ALPACA_STYLES: dict[str, dict[str, str]] = {
    "alpaca": {
        "preamble": "Below is an instruction that describes a task. Write a response that "
                    "appropriately completes the request.",
        "instruction": "### Instruction:", "input": "### Input:", "response": "### Response:",
    },
    "alpaca-fr": {
        "preamble": "Voici une consigne qui décrit une tâche. Rédige une réponse qui "
                    "l'accomplit correctement.",
        "instruction": "### Consigne :", "input": "### Entrée :", "response": "### Réponse :",
    },
}


def format_alpaca(example: dict, style: str = "alpaca") -> tuple[str, str]:
    """``(prompt_text, response_text)`` of an Alpaca example.

    The prompt ends with the response header and a newline, so that
    ``prompt + response`` is the full training text::

        Below is an instruction that describes a task. ...

        ### Instruction:
        {instruction}

        ### Input:          (only when the input is not empty)
        {input}

        ### Response:
        {output}
    """
    _check_style(style)
    instruction, inp, out = _alpaca_fields(example)
    t = ALPACA_STYLES[style]
    parts = [t["preamble"], f"{t['instruction']}\n{instruction}"]
    if inp:
        parts.append(f"{t['input']}\n{inp}")
    parts.append(f"{t['response']}\n")
    return "\n\n".join(parts), out.strip()


def _check_style(style: Any) -> None:
    if style not in ALPACA_STYLES:
        raise InvalidInput("data.unknown_prompt_style", "Unknown prompt style '{style}' (styles: {choices}).",
                           style=str(style)[:40], choices=", ".join(ALPACA_STYLES))


def _alpaca_fields(example: Any, number: int | None = None) -> tuple[str, str, str]:
    """``(instruction, input, output)`` of an example, stripped; ``number`` names it in errors."""
    if not isinstance(example, dict):
        if number is not None:
            raise InvalidInput("data.example_not_object", "Example {n} is not an object with columns.", n=number)
        raise InvalidInput("data.alpaca_not_object", "An instruction example must be an object with the fields "
                           "instruction, input and output.")
    instruction = example.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        if number is not None:
            raise InvalidInput("data.example_no_instruction", "Example {n} has no filled-in 'instruction' field.",
                               n=number)
        raise InvalidInput("data.alpaca_no_instruction", "The example has no filled-in 'instruction' field.")
    inp = example.get("input") or ""
    out = example.get("output") or ""
    if not isinstance(inp, str) or not isinstance(out, str):
        if number is not None:
            raise InvalidInput("data.example_fields_not_text", "Example {n}: the 'input' and 'output' fields must "
                               "be text.", n=number)
        raise InvalidInput("data.alpaca_fields_not_text", "The 'input' and 'output' fields of an example must be "
                           "text.")
    return instruction.strip(), inp.strip(), out


class InstructionDataset(Dataset):
    """Alpaca examples pre-tokenized as ``(prompt_ids, response_ids)`` pairs.

    ``records`` need ``instruction`` and ``output`` (``input`` is optional). The
    end-of-text token is *not* included: :func:`collate_instructions` adds it.
    """

    def __init__(self, records: Sequence[dict], tokenizer: Any, style: str = "alpaca"):
        require_columns(records, ["instruction", "output"])
        _check_style(style)
        self.records = list(records)
        self.style = style
        self.items: list[tuple[list[int], list[int]]] = []
        for i, rec in enumerate(self.records, 1):
            _alpaca_fields(rec, number=i)  # names the example when it is wrong
            prompt, response = format_alpaca(rec, style)
            # the model's own prefix (Gemma's BOS) starts each example, as it does at generation time
            prefix = list(getattr(tokenizer, "model_prefix", ()))
            self.items.append((prefix + list(tokenizer.encode(prompt)), list(tokenizer.encode(response))))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[list[int], list[int]]:
        return self.items[idx]


def collate_instructions(batch: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                         ignore_index: int = IGNORE_INDEX, mask_prompt: bool = False,
                         max_length: int | None = None, device: str | torch.device = "cpu",
                         eos_id: int | None = None) -> dict:
    """Pad a batch of ``(prompt_ids, response_ids)`` into ``inputs``/``targets`` tensors.

    Each sequence is ``prompt + response + [eos]`` (``eos_id``
    defaults to ``pad_id``; GPT-2 uses 50256 for both), padded with ``pad_id``
    to the longest sequence; ``inputs = seq[:-1]``, ``targets = seq[1:]``.
    Target positions after the first end-of-text are padding and get
    ``ignore_index``; the end-of-text itself stays a target so the model learns
    to stop. With ``mask_prompt`` the targets that are prompt tokens get
    ``ignore_index`` too. ``max_length`` truncates inputs and targets.

    Returns ``inputs``, ``targets`` (B, T), ``attention_mask`` (B, T: 1 on real
    input tokens), ``loss_mask`` (B, T: True where the target counts),
    ``loss_mask_positions`` (per row, the positions whose target is
    ``ignore_index``), ``lengths`` (real input tokens per row),
    ``prompt_lengths``, ``n_loss_tokens``.
    """
    if not isinstance(batch, Sequence) or len(batch) == 0:
        raise InvalidInput("data.batch_empty", "The batch is empty.")
    pad_id = _check_int(pad_id, "pad_id", 0)
    eos = pad_id if eos_id is None else _check_int(eos_id, "eos_id", 0)
    if max_length is not None:
        max_length = _check_int(max_length, "max_length", 1)
    seqs, prompt_lens = [], []
    for i, item in enumerate(batch, 1):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidInput("data.batch_item_not_pair", "Item {n} of the batch must be a pair (prompt_ids, "
                               "response_ids).", n=i)
        prompt = _as_id_list(item[0])
        response = _as_id_list(item[1])
        if not prompt and not response:
            raise InvalidInput("data.batch_item_empty", "Item {n} of the batch is empty.", n=i)
        seqs.append(prompt + response + [eos])
        prompt_lens.append(len(prompt))
    width = max(len(s) for s in seqs)                                      # longest sequence
    padded = torch.full((len(seqs), width), pad_id, dtype=torch.long)      # (B, width)
    for r, s in enumerate(seqs):
        padded[r, : len(s)] = torch.tensor(s, dtype=torch.long)
    inputs = padded[:, :-1].clone()                                        # (B, T)
    targets = padded[:, 1:].clone()                                        # (B, T)
    T = width - 1
    pos = torch.arange(T)
    seq_lens = torch.tensor([len(s) for s in seqs])
    p_lens = torch.tensor(prompt_lens)
    # target j is token j+1 of the sequence: padding when j+1 >= len(seq)
    ignore = pos[None, :] + 1 >= seq_lens[:, None]                         # (B, T)
    if mask_prompt:
        ignore |= pos[None, :] + 1 < p_lens[:, None]
    targets[ignore] = ignore_index
    attention = (pos[None, :] < seq_lens[:, None]).long()                   # real input tokens
    if max_length is not None and T > max_length:
        inputs, targets, attention, ignore = (inputs[:, :max_length], targets[:, :max_length],
                                              attention[:, :max_length], ignore[:, :max_length])
    loss_mask = ~ignore
    return {
        "inputs": inputs.to(device), "targets": targets.to(device),
        "attention_mask": attention.to(device), "loss_mask": loss_mask.to(device),
        "loss_mask_positions": [torch.nonzero(row).flatten().tolist() for row in ignore],
        "lengths": attention.sum(dim=1).to(device), "prompt_lengths": p_lens.tolist(),
        "n_loss_tokens": int(loss_mask.sum()),
    }


def instruction_collate_fn(pad_id: int, ignore_index: int = IGNORE_INDEX, mask_prompt: bool = False,
                           max_length: int | None = None, device: str | torch.device = "cpu",
                           eos_id: int | None = None) -> Callable:
    """:func:`collate_instructions` with its options fixed, for a ``DataLoader``."""
    return functools.partial(collate_instructions, pad_id=pad_id, ignore_index=ignore_index,
                             mask_prompt=mask_prompt, max_length=max_length, device=device,
                             eos_id=eos_id)


def make_instruction_loader(dataset: InstructionDataset, tokenizer: Any, batch_size: int = 8,
                            shuffle: bool = True, drop_last: bool = False, seed: int | None = 0,
                            mask_prompt: bool = False, max_length: int | None = None,
                            device: str | torch.device = "cpu") -> DataLoader:
    """Batches of an :class:`InstructionDataset`, padded with the tokenizer's pad (or eos) id."""
    eos = getattr(tokenizer, "eos_id", None)
    collate = instruction_collate_fn(pad_token_id(tokenizer), mask_prompt=mask_prompt,
                                     max_length=max_length, device=device, eos_id=eos)
    return make_loader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                       seed=seed, collate_fn=collate)


# ============================================================== classification
def label_vocab(labels: Sequence[Any]) -> dict[str, int]:
    """``{label: class index}``, labels sorted by name. Needs at least two distinct labels."""
    if isinstance(labels, str) or not isinstance(labels, Iterable):
        raise InvalidInput("data.labels_not_list", "The labels must be a list.")
    labels = list(labels)
    if not labels:
        raise InvalidInput("data.no_labels", "No label: the dataset is empty.")
    names = []
    for i, lab in enumerate(labels, 1):
        if lab is None or (isinstance(lab, str) and not lab.strip()):
            raise InvalidInput("data.example_no_label", "Example {n} has no label.", n=i)
        names.append(str(lab).strip())
    distinct = sorted(set(names))
    if len(distinct) < 2:
        raise InvalidInput("data.single_label", "All the examples ({n}) have the same label '{label}': a "
                           "classifier needs at least two classes.", n=len(names), label=distinct[0][:60])
    return {name: i for i, name in enumerate(distinct)}


class ClassificationDataset(Dataset):
    """Texts and labels tokenized and padded to one length, for a last-token classifier.

    Rows are padded with the tokenizer's pad id (eos for GPT-2) to the longest
    text, or truncated/padded to ``max_length`` when given. Each item is a dict:
    ``inputs`` (T,), ``targets`` (class index), ``lengths`` (real tokens),
    ``last_index`` (position of the last real token, where the classifier reads
    the logits) and ``attention_mask`` (T,). The default ``DataLoader`` collate
    stacks them into a batch that :mod:`gpt_core.train` understands.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[Any], tokenizer: Any,
                 max_length: int | None = None, vocab: dict[str, int] | None = None):
        if isinstance(texts, str):
            raise InvalidInput("data.texts_is_text", "Expected a list of texts, not a single text.")
        texts, labels = list(texts), list(labels)
        if not texts:
            raise InvalidInput("data.classification_empty", "The classification dataset is empty.")
        if len(texts) != len(labels):
            raise InvalidInput("data.texts_labels_mismatch", "There are {n_texts} texts but {n_labels} labels.",
                               n_texts=len(texts), n_labels=len(labels))
        if max_length is not None:
            max_length = _check_int(max_length, "max_length", 1)
        self.vocab = dict(vocab) if vocab is not None else label_vocab(labels)
        self.label_names = [name for name, _ in sorted(self.vocab.items(), key=lambda kv: kv[1])]
        self.pad_id = pad_token_id(tokenizer)
        encoded = []
        for i, text in enumerate(texts, 1):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput("data.example_text_empty", "The text of example {n} is empty.", n=i)
            ids = list(tokenizer.encode(text))
            if ids:
                ids = list(getattr(tokenizer, "model_prefix", ())) + ids
            if not ids:
                raise InvalidInput("data.example_text_no_tokens", "The text of example {n} gives no token.", n=i)
            encoded.append(ids)
        self.truncated = 0
        if max_length is not None:
            self.truncated = sum(len(ids) > max_length for ids in encoded)
            encoded = [ids[:max_length] for ids in encoded]
            width = max_length
        else:
            width = max(len(ids) for ids in encoded)
        self.max_length = width
        self.inputs = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)   # (N, T)
        lengths = []
        for r, ids in enumerate(encoded):
            self.inputs[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            lengths.append(len(ids))
        self.lengths = torch.tensor(lengths, dtype=torch.long)                           # (N,)
        self.last_index = self.lengths - 1                                               # (N,)
        self.attention_mask = (torch.arange(width)[None, :] < self.lengths[:, None]).long()
        targets = []
        for i, lab in enumerate(labels, 1):
            key = str(lab).strip() if lab is not None else ""
            if key not in self.vocab:
                raise InvalidInput("data.unknown_label", "The label '{label}' of example {n} is unknown (labels: "
                                   "{labels}).", label=key[:60], n=i, labels=", ".join(self.label_names))
            targets.append(self.vocab[key])
        self.targets = torch.tensor(targets, dtype=torch.long)                          # (N,)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, idx: int) -> dict:
        return {"inputs": self.inputs[idx], "targets": self.targets[idx], "lengths": self.lengths[idx],
                "last_index": self.last_index[idx], "attention_mask": self.attention_mask[idx]}


# ===================================================================== splits
def split_records(records: Sequence[Any], fractions: Sequence[float] = (0.85, 0.05, 0.10),
                  seed: int | None = 0) -> tuple[list, ...]:
    """Shuffle (with ``seed``; ``None``: keep order) and split into len(fractions) parts.

    Every part with a positive fraction gets at least one example; the first
    part (train) takes what rounding leaves. Raises :class:`InvalidInput` when
    there are too few examples.
    """
    if isinstance(records, (str, bytes)):
        raise InvalidInput("data.records_is_text", "split_records expects a list of examples.")
    items = list(records)
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        fr = []
    if not 2 <= len(fr) <= 3 or any(not 0 <= f <= 1 for f in fr) or fr[0] <= 0:
        raise InvalidInput("data.bad_fractions", "The proportions must be 2 or 3 numbers between 0 and 1, the "
                           "first one (training) above 0.")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise InvalidInput("data.fractions_sum", "The proportions must add up to 1 (got {total}).", total=sum(fr))
    n = len(items)
    if n == 0:
        raise InvalidInput("data.nothing_to_split", "The dataset is empty: nothing to split.")
    needed = sum(1 for f in fr if f > 0)
    if n < needed:
        raise InvalidInput("data.too_few_to_split", "There are only {n} example(s): at least {needed} are needed "
                           "for the requested training/validation/test parts.", n=n, needed=needed)
    if seed is not None:
        random.Random(seed).shuffle(items)
    counts = [max(1, round(n * f)) if f > 0 else 0 for f in fr[1:]]
    while sum(counts) > n - 1:  # train keeps at least one example
        k = max(range(len(counts)), key=lambda j: counts[j])
        counts[k] -= 1
    parts, start = [items[: n - sum(counts)]], n - sum(counts)
    for c in counts:
        parts.append(items[start: start + c])
        start += c
    return tuple(parts)


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split a corpus into (train, validation) text at ``1 - val_fraction`` of its characters."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("data.text_empty_split", "The text is empty: nothing to split.")
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError):
        raise InvalidInput("data.val_fraction_not_number", "The validation share must be a number (got {value}).",
                           value=_shown(val_fraction)) from None
    if not 0 < val_fraction < 1:
        raise InvalidInput("data.val_fraction_range", "The validation share must be strictly between 0 and 1 "
                           "(got {value}).", value=val_fraction)
    cut = int(len(text) * (1 - val_fraction))
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise InvalidInput("data.text_too_short_to_split", "The text ({n_chars} characters) is too short to keep "
                           "{percent}% of it for validation.", n_chars=len(text), percent=round(val_fraction * 100, 1))
    return train, val
