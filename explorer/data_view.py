"""Logic of the Data page: a source -> documents -> token grids, windows, batches, Alpaca collate.

Everything here is computed on real token ids from a :mod:`gpt_core.tokenizers`
tokenizer with :mod:`gpt_core.data`; the page only wires widgets to these
functions and draws what they return (figures are in :mod:`explorer.fig_data`).
Only the small widget and cache helpers at the end touch Streamlit.
Bad input raises :class:`gpt_core.errors.InvalidInput` or ``HubUnavailable``
with a sentence the page shows as it is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import streamlit as st
import torch

from gpt_core import data as D
from gpt_core.errors import GPTCoreError, InvalidInput

from .tokens_view import visible

CORPUS_SOURCES = ("corpus_fr", "corpus_en", "pydoc", "paste", "upload", "hf")
BUNDLED_CORPORA = {"corpus_fr": "corpus_fr", "corpus_en": "corpus_en"}
UPLOAD_TYPES = ["txt", "json", "jsonl", "csv"]
RECORD_TYPES = ["json", "jsonl", "csv"]
TEXT_COLUMNS = ("text", "content", "context", "review", "document", "body")
MAX_DOCS = 10            # documents the page lays out at most
MAX_DOC_CHARS = 3_000    # a longer document is cut (the grids are about structure)
MAX_ROWS = 24            # rows of a chunk grid drawn at most (all rows are counted)
MAX_WINDOWS = 24         # sliding windows drawn at most
HF_ROWS = 40             # rows streamed from a Hugging Face dataset

# categories of a chunk grid: 0 padding, 1 end-of-text, 2 + d = document d
CAT_PAD, CAT_EOT = 0, 1
# categories of a collate grid
(CAT_PROMPT, CAT_RESPONSE, CAT_END, CAT_PADDING, CAT_IGN_PAD, CAT_IGN_PROMPT) = range(6)


# ====================================================================== sources
@dataclass
class Corpus:
    docs: list[str]              # documents (blank-line separated in text files)
    origin: str                  # file name, dataset address, ...
    cut_docs: int = 0            # documents cut to MAX_DOC_CHARS characters
    column: str | None = None    # column the texts were read from (tabular files)


def _corpus(docs: Sequence[Any], origin: str, column: str | None = None) -> Corpus:
    docs = [d.strip() for d in docs if isinstance(d, str) and d.strip()]
    if not docs:
        raise InvalidInput(f"« {origin} » ne contient aucun texte : rien à découper en tokens.")
    cut = sum(len(d) > MAX_DOC_CHARS for d in docs)
    return Corpus([d[:MAX_DOC_CHARS] for d in docs], origin, cut, column)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def records_texts(records: Sequence[dict], filename: str) -> tuple[list[str], str]:
    """The texts of tabular records and the column used.

    Alpaca records (``instruction`` + ``output``) become their full training text;
    otherwise the first of :data:`TEXT_COLUMNS` present is read. With none, the
    message names the columns found.
    """
    first = records[0] if records and isinstance(records[0], dict) else {}
    if "instruction" in first and "output" in first:
        D.require_columns(records, ["instruction", "output"], filename)
        return ["".join(D.format_alpaca(r)) for r in records], "instruction/input/output"
    for col in TEXT_COLUMNS:
        if col in first:
            D.require_columns(records, [col], filename)
            return [_cell_text(r[col]) for r in records], col
    D.require_columns(records, ["text"], filename)  # raises: names the columns found
    raise AssertionError("unreachable")


def corpus_from_text(text: str, origin: str) -> Corpus:
    """Pasted text: documents are separated by blank lines."""
    return _corpus(D.split_documents(text), origin)


def corpus_from_upload(data: bytes, filename: str, max_bytes: int | None = D.MAX_UPLOAD_BYTES) -> Corpus:
    """An uploaded .txt (documents at blank lines) or .json/.jsonl/.csv (one document per record)."""
    if Path(str(filename)).suffix.lower() == ".txt":
        return _corpus(D.split_documents(D.read_text_upload(data, filename, max_bytes)), filename)
    records = D.read_records(data, filename, max_bytes)
    texts, column = records_texts(records, filename)
    return _corpus(texts, filename, column)


def corpus_from_source(source: str, text: str = "", upload: tuple[bytes, str] | None = None) -> Corpus:
    """Any source but the Hugging Face one (which needs a click: :func:`corpus_from_hf`)."""
    if source in BUNDLED_CORPORA:
        key = BUNDLED_CORPORA[source]
        return _corpus(D.split_documents(D.load_bundled(key)), D.BUNDLED[key]["file"])
    if source == "pydoc":
        return _corpus(D.pydoc_documents(), "pydoc_data.topics")
    if source == "paste":
        return corpus_from_text(text, "texte collé")
    if source == "upload":
        if upload is None:
            raise InvalidInput("Aucun fichier : déposez un fichier .txt, .json, .jsonl ou .csv.")
        return corpus_from_upload(*upload)
    raise InvalidInput(f"Source inconnue : « {source} ».")


def corpus_from_hf(preset: str, n: int = HF_ROWS) -> Corpus:
    """A bounded slice streamed from the hub (raises HubUnavailable at once when offline)."""
    sl = D.load_hf_dataset_slice(preset, n=n)
    return _corpus(sl.texts, sl.source, sl.text_field)


# ==================================================================== tokens
def eot_token_id(tokenizer: Any) -> int:
    """The document separator: ``<|endoftext|>`` when the vocabulary has it (GPT-2: 50256), else eos."""
    try:
        ids = list(tokenizer.encode("<|endoftext|>", allow_special=True))
    except Exception:
        ids = []
    if len(ids) == 1 and tokenizer.decode(ids) == "<|endoftext|>":
        return int(ids[0])
    if getattr(tokenizer, "eos_id", None) is not None:
        return int(tokenizer.eos_id)
    raise InvalidInput("Ce tokenizer n'a pas de token de fin de texte : impossible de séparer les documents.")


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """(end-of-text id, padding id) of a tokenizer, or InvalidInput when it has neither."""
    return eot_token_id(tokenizer), D.pad_token_id(tokenizer)


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """A readable text per id (spaces shown as ␣, newlines as ↵), each distinct id decoded once."""
    seen: dict[int, str] = {}
    out = []
    for i in ids:
        i = int(i)
        if i not in seen:
            seen[i] = visible(tokenizer.decode([i])).replace("\n", "").replace(" ", "␣")
        out.append(seen[i])
    return out


def eot_stream(docs_ids: Sequence[Sequence[int]], eot_id: int) -> list[int]:
    """Documents joined by the end-of-text token, each one closed by it."""
    out: list[int] = []
    for doc in docs_ids:
        if doc:
            out.extend(int(i) for i in doc)
            out.append(int(eot_id))
    return out


# ================================================================== chunking
@dataclass
class ChunkGrid:
    result: D.ChunkResult
    cats: list[list[int]]       # (rows, context): CAT_PAD, CAT_EOT or 2 + document
    texts: list[list[str]]      # token text of each cell
    shown_rows: int             # rows kept for drawing (<= MAX_ROWS)


def _grid(result: D.ChunkResult, eot_id: int, tokenizer: Any, max_rows: int) -> ChunkGrid:
    rows, owner = result.rows[:max_rows], result.doc_index[:max_rows]     # (R, context)
    cats = torch.where(owner < 0, CAT_PAD, torch.where(rows == eot_id, CAT_EOT, owner + 2))
    flat = token_texts(tokenizer, rows.flatten().tolist())
    width = result.context
    texts = [flat[r * width:(r + 1) * width] for r in range(rows.shape[0])]
    return ChunkGrid(result, cats.tolist(), texts, int(rows.shape[0]))


def chunk_grids(docs_ids: Sequence[Sequence[int]], tokenizer: Any, context: int, last: str = "pad",
                max_rows: int = MAX_ROWS) -> tuple[ChunkGrid, ChunkGrid]:
    """The same documents chunked both ways: EOT concatenation, then one padded document per row.

    Both strategies place the same real tokens (each document closed by the
    end-of-text token); padding uses :func:`gpt_core.data.pad_token_id`.
    """
    eot, pad = eot_token_id(tokenizer), D.pad_token_id(tokenizer)
    by_eot = D.chunk_eot(docs_ids, eot, context, last=last, pad_id=pad)
    by_pad = D.chunk_padding(docs_ids, pad, context, eot_id=eot)
    return _grid(by_eot, eot, tokenizer, max_rows), _grid(by_pad, eot, tokenizer, max_rows)


# =========================================================== sliding windows
@dataclass
class WindowView:
    result: D.WindowResult
    shown: int                  # windows drawn (<= MAX_WINDOWS)
    texts: list[str]            # token text of every position of the stream


def window_view(ids: Sequence[int], tokenizer: Any, max_length: int, stride: int,
                max_shown: int = MAX_WINDOWS) -> WindowView:
    result = D.sliding_windows(ids, max_length, stride)
    return WindowView(result, min(result.n_samples, max_shown), token_texts(tokenizer, ids))


def shown_windows(view: WindowView, chosen: int) -> range:
    """The block of at most ``view.shown`` consecutive windows to draw, centred on ``chosen`` when possible."""
    n = view.result.n_samples
    first = max(0, min(int(chosen) - view.shown // 2, n - view.shown))
    return range(first, first + view.shown)


def shift_table(view: WindowView, index: int, row_names: Sequence[str]) -> pd.DataFrame:
    """Window ``index`` as four rows (input text, input id, target text, target id), one column per position."""
    r = view.result
    if not 0 <= index < r.n_samples:
        raise InvalidInput(f"La fenêtre n° {index} n'existe pas (il y en a {r.n_samples}).")
    start = r.starts[index]
    x, y = r.inputs[index].tolist(), r.targets[index].tolist()
    rows = [view.texts[start:start + r.max_length], [str(i) for i in x],
            view.texts[start + 1:start + r.max_length + 1], [str(i) for i in y]]
    return pd.DataFrame(rows, index=list(row_names), columns=[str(start + j) for j in range(r.max_length)])


# ==================================================================== batches
def first_batch(ids: Sequence[int], max_length: int, stride: int, batch_size: int,
                shuffle: bool = True, drop_last: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (inputs, targets) batch of the book's DataLoader over the windows."""
    loader = D.make_loader(D.GPTWindowDataset(ids, max_length, stride), batch_size=batch_size,
                           shuffle=shuffle, drop_last=drop_last, seed=seed)
    x, y = next(iter(loader))
    return x, y


def batch_frame(tensor: torch.Tensor, tokenizer: Any) -> pd.DataFrame:
    """A (batch, context) tensor as a table of token texts (rows: samples, columns: positions)."""
    b, c = tensor.shape
    flat = token_texts(tokenizer, tensor.flatten().tolist())
    return pd.DataFrame([flat[r * c:(r + 1) * c] for r in range(b)], columns=[str(j) for j in range(c)])


def arithmetic_sentence(a: dict, tr: Callable[..., str]) -> str:
    """The epoch/batch/step arithmetic of :func:`gpt_core.data.batch_arithmetic` in words."""
    if a["batches_per_epoch"] == 0:
        return tr("data.arith.none", n=a["n_samples"], bs=a["batch_size"])
    text = tr("data.arith.main", n=a["n_samples"], bs=a["batch_size"], batches=a["batches_per_epoch"])
    if a["dropped_samples"]:
        text += " " + tr("data.arith.dropped", dropped=a["dropped_samples"])
    elif a["last_batch_size"] != a["batch_size"]:
        text += " " + tr("data.arith.last", last=a["last_batch_size"])
    text += " " + tr("data.arith.steps", accum=a["grad_accum"], steps_epoch=a["optimizer_steps_per_epoch"],
                     epochs=a["epochs"], steps=a["optimizer_steps"], eff=a["effective_batch_size"],
                     tokens=a["tokens_per_step"] if a["tokens_per_step"] is not None else "?")
    if a["partial_accumulation"]:
        text += " " + tr("data.arith.partial")
    return text


# ========================================================= instruction data
def instruction_records(upload: tuple[bytes, str] | None = None) -> list[dict]:
    """The bundled Alpaca examples, or an uploaded .json/.jsonl/.csv with instruction and output."""
    if upload is None:
        records, name = D.load_bundled("instructions_fr_en"), None
    else:
        records, name = D.read_records(*upload), upload[1]
    D.require_columns(records, ["instruction", "output"], name)
    return list(records)


@dataclass
class CollateView:
    batch: dict                 # what collate_instructions returned
    cats: list[list[int]]       # (2B, T): rows x0, y0, x1, y1, ... (CAT_* codes)
    texts: list[list[str]]      # token text of each cell (the masked token's text for -100)
    values: list[list[int]]     # ids in the tensors (-100 where the loss ignores the target)
    n_ignored_pad: int
    n_ignored_prompt: int


def collate_view(records: Sequence[dict], start: int, size: int, tokenizer: Any, style: str = "alpaca",
                 mask_prompt: bool = False) -> CollateView:
    """Collate ``size`` examples from ``start`` (clamped to the dataset) and classify every cell."""
    size = max(1, min(int(size), len(records)))
    start = max(0, min(int(start), len(records) - size))
    ds = D.InstructionDataset(records[start:start + size], tokenizer, style)
    pad = D.pad_token_id(tokenizer)
    eos = tokenizer.eos_id if getattr(tokenizer, "eos_id", None) is not None else pad
    batch = D.collate_instructions(ds.items, pad_id=pad, eos_id=eos, mask_prompt=mask_prompt)
    x, y = batch["inputs"], batch["targets"]                              # (B, T)
    cats, texts, values = [], [], []
    n_pad = n_prompt = 0
    for r, (prompt, response) in enumerate(ds.items):
        seq = prompt + response + [eos]
        p, n = len(prompt), len(seq)
        full = seq + [pad] * (x.shape[1] + 1 - n)                         # the padded row
        row_x, row_y = [], []
        for j in range(x.shape[1]):
            row_x.append(CAT_PADDING if j >= n else CAT_PROMPT if j < p else CAT_END if j == n - 1
                         else CAT_RESPONSE)
            k = j + 1                                                     # target j is token j+1
            if int(y[r, j]) == D.IGNORE_INDEX:
                row_y.append(CAT_IGN_PAD if k >= n else CAT_IGN_PROMPT)
            else:
                row_y.append(CAT_PROMPT if k < p else CAT_END if k == n - 1 else CAT_RESPONSE)
        n_pad += row_y.count(CAT_IGN_PAD)
        n_prompt += row_y.count(CAT_IGN_PROMPT)
        cats += [row_x, row_y]
        texts += [token_texts(tokenizer, full[:-1]), token_texts(tokenizer, full[1:])]
        values += [x[r].tolist(), y[r].tolist()]
    return CollateView(batch, cats, texts, values, n_pad, n_prompt)


# ============================================================ page helpers (Streamlit)
def _valid(value: Any, options: list | None, kw: dict) -> bool:
    if options is not None:
        return value in options
    if "min_value" in kw and "max_value" in kw:
        try:
            return kw["min_value"] <= value <= kw["max_value"]
        except TypeError:
            return False
    return True


def kept(where: Any, widget: str, label: str, name: str, default: Any, options: Sequence | None = None, **kw):
    """A widget drawn in ``where`` whose value lives in the plain session key ``data.<name>``.

    Widget values are forgotten when the user visits another page; the plain key is not.
    The widget is seeded through its session key (no ``value``/``index`` argument that
    would change from run to run). That key holds the language (``_w.data.<name>.fr``):
    after a language switch a fresh widget starts from the plain key, instead of a stale
    one showing the old labels.
    """
    from .i18n import current_lang

    key = f"data.{name}"
    wkey = f"_w.{key}.{current_lang()}"
    options = list(options) if options is not None else None
    if wkey not in st.session_state or not _valid(st.session_state[wkey], options, kw):
        value = st.session_state.get(key, default)
        if options is None and "min_value" in kw and "max_value" in kw:        # clamp into the range
            value = value if isinstance(value, (int, float)) and not isinstance(value, bool) else default
            value = min(max(value, kw["min_value"]), kw["max_value"])
        elif not _valid(value, options, kw):
            value = default
        st.session_state[wkey] = value
    fn = getattr(where, widget)
    out = fn(label, options, key=wkey, **kw) if options is not None else fn(label, key=wkey, **kw)
    st.session_state[key] = out
    return out


def attempt(where: Any, fn: Callable, *args, **kw):
    """``fn(*args, **kw)``, or None after showing the readable message of a GPTCoreError in ``where``."""
    try:
        return fn(*args, **kw)
    except GPTCoreError as exc:
        where.warning(str(exc))
        return None


def metrics(where: Any, pairs: Sequence[tuple[str, Any]]) -> None:
    """One ``st.metric`` per (label, value), side by side."""
    for col, (label, value) in zip(where.columns(len(pairs)), pairs):
        col.metric(label, value)


def upload_of(file: Any) -> tuple[bytes, str] | None:
    """An UploadedFile as (bytes, name)."""
    return None if file is None else (file.getvalue(), file.name)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_corpus(source: str, text: str = "", upload: tuple[bytes, str] | None = None) -> Corpus:
    return corpus_from_source(source, text, upload)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_encode(_tokenizer: Any, tokenizer_key: tuple, docs: tuple[str, ...]) -> list[list[int]]:
    return D.encode_documents(list(docs), _tokenizer)


def tokenizer_key(tokenizer: Any) -> tuple:
    return (getattr(tokenizer, "name", ""), getattr(tokenizer, "label", ""), getattr(tokenizer, "vocab_size", 0))
