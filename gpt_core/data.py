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
* **Chunking for pretraining** (seed 000): documents joined by
  ``<|endoftext|>`` and cut into fixed windows (:func:`chunk_eot`) versus one
  padded document per row (:func:`chunk_padding`); the book's sliding window
  (:func:`sliding_windows`, :class:`GPTWindowDataset`, :func:`make_loader`) and
  the arithmetic of epochs and batches (:func:`batch_arithmetic`).
* **Instruction data** (seed 001): the Alpaca prompt (:func:`format_alpaca`),
  :class:`InstructionDataset` and the padding/masking collate
  (:func:`collate_instructions`).
* **Classification** (seed 002): :class:`ClassificationDataset`,
  :func:`label_vocab`.
* **Splits**: :func:`split_records`, :func:`split_text`.

Error messages are French sentences (the app's audience), raised as
:class:`~gpt_core.errors.InvalidInput` (bad input) or
:class:`~gpt_core.errors.HubUnavailable` (no network).
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

from .errors import HubUnavailable, InvalidInput

__all__ = [
    "MAX_UPLOAD_BYTES", "IGNORE_INDEX", "DATASETS_DIR", "BUNDLED", "HF_PRESETS",
    "read_text_upload", "read_records", "require_columns", "split_documents",
    "bundled_path", "load_bundled", "pydoc_documents", "pydoc_corpus", "HFSlice",
    "load_hf_dataset_slice", "encode_documents", "pad_token_id",
    "ChunkResult", "chunk_eot", "chunk_padding", "WindowResult", "sliding_windows",
    "GPTWindowDataset", "make_loader", "create_dataloader", "batch_arithmetic",
    "ALPACA_STYLES", "format_alpaca", "InstructionDataset", "collate_instructions",
    "instruction_collate_fn", "make_instruction_loader",
    "label_vocab", "ClassificationDataset", "split_records", "split_text",
]

MAX_UPLOAD_BYTES = 5_000_000   # default size limit of an uploaded file (5 MB)
IGNORE_INDEX = -100            # targets with this value are skipped by cross_entropy
DATASETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "datasets"


# =============================================================== small helpers
def _size_text(n_bytes: int) -> str:
    """5_300_000 -> '5,3 Mo' (French decimal comma)."""
    if n_bytes >= 1_000_000:
        return f"{n_bytes / 1e6:.1f} Mo".replace(".", ",")
    if n_bytes >= 1_000:
        return f"{n_bytes / 1e3:.1f} ko".replace(".", ",")
    return f"{n_bytes} octets"


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    else:
        raise InvalidInput(f"« {name} » doit être un nombre entier (reçu : {value!r}).")
    if value < minimum:
        raise InvalidInput(f"« {name} » doit valoir au moins {minimum} (reçu : {value}).")
    return value


def _as_id_list(ids: Any, what: str = "la liste de tokens") -> list[int]:
    """A list/tuple/tensor/array of token ids -> list[int], with a readable error otherwise."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise InvalidInput(f"{what[:1].upper()}{what[1:]} doit être à une dimension (forme reçue : {tuple(ids.shape)}).")
        return [int(v) for v in ids.tolist()]
    if isinstance(ids, (str, bytes)):
        raise InvalidInput(f"{what[:1].upper()}{what[1:]} doit contenir des identifiants de tokens, pas du texte.")
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
        raise InvalidInput(f"{what[:1].upper()}{what[1:]} doit contenir des entiers (des identifiants de tokens).") from None


def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding: ``tokenizer.pad_id``, else ``eos_id`` (GPT-2 pads with 50256)."""
    pad = getattr(tokenizer, "pad_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_id", None)
    if pad is None:
        raise InvalidInput("Ce tokenizer n'a ni token de padding ni token de fin de texte : "
                           "impossible de compléter les séquences.")
    return int(pad)


# ====================================================================== loading
def read_text_upload(data: bytes | bytearray | memoryview | str, filename: str = "fichier",
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
        raise InvalidInput(f"Le contenu du fichier « {filename} » doit être des octets "
                           f"(reçu : {type(data).__name__}).")
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidInput(f"Le fichier « {filename} » est trop gros ({_size_text(len(raw))}) : "
                           f"la limite est de {_size_text(max_bytes)}.")
    if not raw.strip():
        raise InvalidInput(f"Le fichier « {filename} » est vide.")
    if b"\x00" in raw:
        raise InvalidInput(f"Le fichier « {filename} » contient des octets nuls : c'est un fichier "
                           "binaire ou un texte en UTF-16, pas du texte UTF-8.")
    if isinstance(data, str):
        text = data
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise InvalidInput(
                f"Le fichier « {filename} » n'est pas du texte UTF-8 valide (octet n° {err.start + 1}, "
                f"ligne {line}). Enregistrez-le en UTF-8 puis réessayez."
            ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _reject_non_object(item: Any, where: str, filename: str) -> dict:
    if not isinstance(item, dict):
        kind = {list: "une liste", str: "une chaîne", int: "un nombre", float: "un nombre",
                bool: "un booléen", type(None): "null"}.get(type(item), type(item).__name__)
        raise InvalidInput(f"{where} du fichier « {filename} » est {kind}, pas un objet "
                           "{\"clé\": valeur}.")
    return item


def _read_json(text: str, filename: str) -> list[dict]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"Le fichier « {filename} » n'est pas du JSON valide : ligne {err.lineno}, "
                           f"colonne {err.colno} ({err.msg}).") from None
    if isinstance(obj, dict):
        raise InvalidInput(f"Le fichier « {filename} » contient un seul objet JSON : il faut une "
                           "liste d'objets, par exemple [{\"text\": ..., \"label\": ...}, ...].")
    if not isinstance(obj, list):
        raise InvalidInput(f"Le fichier « {filename} » doit contenir une liste d'objets JSON.")
    return [_reject_non_object(item, f"L'élément n° {i}", filename) for i, item in enumerate(obj, 1)]


def _read_jsonl(text: str, filename: str) -> list[dict]:
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InvalidInput(f"Ligne {lineno} du fichier « {filename} » : JSON invalide, colonne "
                               f"{err.colno} ({err.msg}).") from None
        records.append(_reject_non_object(obj, f"La ligne {lineno}", filename))
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
            raise InvalidInput(f"Le fichier « {filename} » est vide.")
        header = [h.strip() for h in header]
        if any(not h for h in header):
            raise InvalidInput(f"La ligne d'en-tête du fichier « {filename} » contient une colonne "
                               f"sans nom : {', '.join(repr(h) for h in header)}.")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise InvalidInput(f"La ligne d'en-tête du fichier « {filename} » nomme deux fois la "
                               f"colonne « {dupes[0]} ».")
        records = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InvalidInput(
                    f"Ligne {reader.line_num} du fichier « {filename} » : {len(row)} champ(s) au lieu "
                    f"de {len(header)} (colonnes : {', '.join(header)}). Vérifiez les guillemets "
                    "et les séparateurs."
                )
            records.append(dict(zip(header, row)))
    except csv.Error as err:
        raise InvalidInput(f"Ligne {reader.line_num} du fichier « {filename} » : CSV mal formé "
                           f"({err}).") from None
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
        raise InvalidInput(f"Format de fichier non pris en charge pour « {name} » : utilisez "
                           ".json (liste d'objets), .jsonl (un objet par ligne) ou .csv.")
    text = read_text_upload(data, name, max_bytes=max_bytes)
    if suffix == ".json":
        records = _read_json(text, name)
    elif suffix == ".jsonl":
        records = _read_jsonl(text, name)
    else:
        records = _read_csv(text, name)
    if not records:
        raise InvalidInput(f"Le fichier « {name} » ne contient aucun exemple.")
    return records


def require_columns(records: Sequence[dict], columns: Sequence[str],
                    filename: str | None = None) -> Sequence[dict]:
    """Check that every record has each column; returns ``records`` unchanged.

    The message names the missing column and either the columns that were found
    (when no record has it) or the first record that lacks it.
    """
    where = f" du fichier « {filename} »" if filename else ""
    if not records:
        raise InvalidInput(f"Le jeu de données{where} est vide : il ne contient aucun exemple.")
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise InvalidInput(f"L'exemple n° {i}{where} n'est pas un objet avec des colonnes.")
    for col in columns:
        lacking = [i for i, rec in enumerate(records, 1) if col not in rec]
        if len(lacking) == len(records):
            found = sorted({k for rec in records for k in rec})
            raise InvalidInput(f"La colonne « {col} » est absente{where} (colonnes trouvées : "
                               f"{', '.join(map(str, found)) or 'aucune'}).")
        if lacking:
            raise InvalidInput(f"L'exemple n° {lacking[0]}{where} n'a pas de champ « {col} ».")
    return records


def split_documents(text: str) -> list[str]:
    """Split a text into documents at blank lines (empty documents are dropped)."""
    if not isinstance(text, str):
        raise InvalidInput("Le corpus doit être du texte.")
    return [doc.strip() for doc in re.split(r"\n[ \t]*\n", text) if doc.strip()]


# ------------------------------------------------------------ bundled datasets
BUNDLED: dict[str, dict[str, str]] = {
    "corpus_fr": {"file": "corpus_fr.txt", "kind": "text",
                  "label": "Petit corpus français (villes imaginaires, recettes, météo, contes, sciences)"},
    "corpus_en": {"file": "corpus_en.txt", "kind": "text",
                  "label": "Small English corpus (invented towns, recipes, weather, tales, science)"},
    "instructions_fr_en": {"file": "instructions_fr_en.json", "kind": "records",
                           "label": "Instructions Alpaca FR/EN (instruction, input, output)"},
    "tickets_fr": {"file": "tickets_fr.csv", "kind": "records",
                   "label": "Tickets de support informatique étiquetés (text, label), 5 classes"},
}


def _bundled_key(name: str) -> str:
    key = str(name).strip()
    for k, info in BUNDLED.items():
        if key in (k, info["file"]):
            return k
    raise InvalidInput(f"Jeu de données inconnu : « {name} ». Jeux fournis : {', '.join(BUNDLED)}.")


def bundled_path(name: str) -> Path:
    """Path of a bundled dataset file (``corpus_fr``, ``tickets_fr.csv``, ...)."""
    path = DATASETS_DIR / BUNDLED[_bundled_key(name)]["file"]
    if not path.is_file():
        raise InvalidInput(f"Le fichier {path.name} est introuvable dans {DATASETS_DIR} : "
                           "lancez scripts/make_datasets.py pour le recréer.")
    return path


def load_bundled(name: str) -> str | list[dict]:
    """A bundled dataset: the text of a corpus, or the records of a JSON/CSV dataset."""
    key = _bundled_key(name)
    path = bundled_path(key)
    if BUNDLED[key]["kind"] == "text":
        return read_text_upload(path.read_bytes(), path.name, max_bytes=None)
    return read_records(path.read_bytes(), path.name, max_bytes=None)


def pydoc_documents() -> list[str]:
    """Python's own help topics (``pydoc_data.topics``), one document per topic, sorted by name."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some stripped Python builds leave it out
        raise InvalidInput("Cette installation de Python ne contient pas pydoc_data : "
                           "le corpus de documentation est indisponible.") from None
    return [topics[key].strip() for key in sorted(topics) if topics[key].strip()]


def pydoc_corpus(max_chars: int | None = None) -> str:
    """An offline English corpus: the help topics joined by blank lines, cut to ``max_chars``."""
    text = "\n\n".join(pydoc_documents())
    if max_chars is None:
        return text
    return text[: _check_int(max_chars, "max_chars", 1)]


# ------------------------------------------------------- Hugging Face datasets
HF_PRESETS: dict[str, dict[str, Any]] = {
    "wikipedia-fr": {"name": "wikimedia/wikipedia", "config": "20231101.fr", "split": "train",
                     "text_field": "text", "label": "Wikipédia en français (novembre 2023)"},
    "piaf": {"name": "AgentPublic/piaf", "config": "plain_text", "split": "train",
             "text_field": "context", "label": "PIAF : questions/réponses en français"},
    "allocine": {"name": "tblard/allocine", "config": None, "split": "train",
                 "text_field": "review", "label": "Allociné : critiques de films (positif/négatif)"},
    "fquad": {"name": "illuin/fquad", "config": None, "split": "train", "text_field": "context",
              "label": "FQuAD : questions/réponses en français (téléchargement manuel auprès d'Illuin)"},
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
    try:
        from .hub import hub_reachable
    except ImportError:
        return False
    try:
        return bool(hub_reachable())
    except Exception:
        return False


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
        raise InvalidInput(f"« n » est limité à 10 000 lignes (reçu : {n}).")
    preset = HF_PRESETS.get(str(name))
    if preset is not None:
        name = preset["name"]
        config = config if config is not None else preset["config"]
        text_field = text_field if text_field is not None else preset["text_field"]
    if not isinstance(name, str) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise InvalidInput(f"Nom de jeu de données invalide : « {name} » (attendu : organisation/nom).")
    if not _hub_is_reachable():
        raise HubUnavailable(f"Le hub Hugging Face est injoignable : le jeu de données « {name} » ne peut "
                             "pas être téléchargé. Utilisez les jeux fournis avec l'application.")
    try:
        import datasets
    except ImportError:
        raise HubUnavailable("La bibliothèque « datasets » n'est pas installée : "
                             "pip install datasets.") from None
    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
        records = [dict(row) for row in itertools.islice(iter(stream), n)]
    except Exception as err:  # the datasets library raises many kinds of errors
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        if type(err).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "ValueError"):
            raise InvalidInput(f"Le jeu de données « {name} » (config {config!r}, partie {split!r}) "
                               f"n'a pas pu être ouvert : {msg}") from None
        raise HubUnavailable(f"Le téléchargement de « {name} » depuis le hub a échoué : {msg}") from None
    if not records:
        raise InvalidInput(f"La partie « {split} » du jeu de données « {name} » est vide.")
    texts: list[str] = []
    if text_field is not None:
        if text_field not in records[0]:
            raise InvalidInput(f"Le champ « {text_field} » n'existe pas dans « {name} » (champs : "
                               f"{', '.join(map(str, records[0]))}).")
        texts = [str(rec.get(text_field, "")) for rec in records]
    return HFSlice(name=name, config=config, split=split, text_field=text_field, records=records,
                   texts=texts, source=f"https://huggingface.co/datasets/{name}")


# ================================================================= chunking
def encode_documents(docs: Sequence[str], tokenizer: Any) -> list[list[int]]:
    """Encode each document with ``tokenizer.encode`` (no special token added)."""
    if isinstance(docs, str):
        raise InvalidInput("encode_documents attend une liste de documents, pas un seul texte.")
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
        raise InvalidInput("Il faut une liste de documents, chacun étant une liste d'identifiants de tokens.")
    if len(docs_ids) == 0:
        raise InvalidInput("Aucun document : ajoutez au moins un texte.")
    docs = [_as_id_list(doc, f"le document n° {i}") for i, doc in enumerate(docs_ids, 1)]
    if not any(docs):
        raise InvalidInput("Tous les documents sont vides : il n'y a aucun token à découper.")
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
        raise InvalidInput(f"« last » doit valoir \"pad\" ou \"drop\" (reçu : {last!r}).")
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
            raise InvalidInput(f"Le texte ne fait que {total} tokens (fins de texte comprises) : il en faut "
                               f"au moins {context} pour remplir une fenêtre quand la dernière fenêtre "
                               "incomplète est abandonnée.")
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
    """Input/target windows of the book's ``GPTDatasetV1`` (targets = inputs shifted by one)."""
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
    """Cut a token list into windows exactly like the book's ``GPTDatasetV1``.

    ``for i in range(0, len(ids) - max_length, stride)``: input ``ids[i:i+max_length]``,
    target ``ids[i+1:i+max_length+1]``. Needs at least ``max_length + 1`` tokens.
    """
    max_length = _check_int(max_length, "max_length", 1)
    stride = _check_int(stride, "stride", 1)
    ids = _as_id_list(ids)
    n = len(ids)
    if n < max_length + 1:
        raise InvalidInput(f"Le texte est trop court : {n} token(s), alors qu'il en faut au moins "
                           f"{max_length + 1} (max_length + 1) pour former une fenêtre et sa cible "
                           "décalée d'un token.")
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
            raise InvalidInput("Le texte d'entraînement est vide.")
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
        raise InvalidInput("Le jeu de données est vide : aucun batch possible.")
    if drop_last and n < batch_size:
        raise InvalidInput(f"Le jeu de données n'a que {n} exemple(s), moins que la taille de batch "
                           f"({batch_size}) : avec drop_last, aucun batch ne serait produit. Réduisez "
                           "la taille de batch ou désactivez drop_last.")
    generator = None
    if shuffle and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, collate_fn=collate_fn, generator=generator)


def create_dataloader(text: str, tokenizer: Any, batch_size: int = 8, max_length: int = 256,
                      stride: int = 128, shuffle: bool = True, drop_last: bool = True,
                      seed: int | None = 0) -> DataLoader:
    """The book's ``create_dataloader_v1``: text -> windows -> batches of (inputs, targets)."""
    return make_loader(GPTWindowDataset.from_text(text, tokenizer, max_length, stride),
                       batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)


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
    if style not in ALPACA_STYLES:
        raise InvalidInput(f"Style de prompt inconnu : « {style} » (styles : {', '.join(ALPACA_STYLES)}).")
    if not isinstance(example, dict):
        raise InvalidInput("Un exemple d'instruction doit être un objet avec les champs "
                           "instruction, input et output.")
    t = ALPACA_STYLES[style]
    instruction = example.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise InvalidInput("L'exemple n'a pas de champ « instruction » rempli.")
    inp = example.get("input") or ""
    out = example.get("output") or ""
    if not isinstance(inp, str) or not isinstance(out, str):
        raise InvalidInput("Les champs « input » et « output » d'un exemple doivent être du texte.")
    inp = inp.strip()
    parts = [t["preamble"], f"{t['instruction']}\n{instruction.strip()}"]
    if inp:
        parts.append(f"{t['input']}\n{inp}")
    parts.append(f"{t['response']}\n")
    return "\n\n".join(parts), out.strip()


class InstructionDataset(Dataset):
    """Alpaca examples pre-tokenized as ``(prompt_ids, response_ids)`` pairs.

    ``records`` need ``instruction`` and ``output`` (``input`` is optional). The
    end-of-text token is *not* included: :func:`collate_instructions` adds it.
    """

    def __init__(self, records: Sequence[dict], tokenizer: Any, style: str = "alpaca"):
        require_columns(records, ["instruction", "output"])
        self.records = list(records)
        self.style = style
        self.items: list[tuple[list[int], list[int]]] = []
        for i, rec in enumerate(self.records, 1):
            try:
                prompt, response = format_alpaca(rec, style)
            except InvalidInput as err:
                raise InvalidInput(f"Exemple n° {i} : {err}") from None
            self.items.append((list(tokenizer.encode(prompt)), list(tokenizer.encode(response))))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[list[int], list[int]]:
        return self.items[idx]


def collate_instructions(batch: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                         ignore_index: int = IGNORE_INDEX, mask_prompt: bool = False,
                         max_length: int | None = None, device: str | torch.device = "cpu",
                         eos_id: int | None = None) -> dict:
    """Pad a batch of ``(prompt_ids, response_ids)`` into ``inputs``/``targets`` tensors.

    As in the book: each sequence is ``prompt + response + [eos]`` (``eos_id``
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
        raise InvalidInput("Le batch est vide.")
    pad_id = _check_int(pad_id, "pad_id", 0)
    eos = pad_id if eos_id is None else _check_int(eos_id, "eos_id", 0)
    if max_length is not None:
        max_length = _check_int(max_length, "max_length", 1)
    seqs, prompt_lens = [], []
    for i, item in enumerate(batch, 1):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidInput(f"L'élément n° {i} du batch doit être un couple (prompt_ids, response_ids).")
        prompt = _as_id_list(item[0], "le prompt")
        response = _as_id_list(item[1], "la réponse")
        if not prompt and not response:
            raise InvalidInput(f"L'élément n° {i} du batch est vide.")
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
        raise InvalidInput("Les étiquettes doivent être une liste.")
    labels = list(labels)
    if not labels:
        raise InvalidInput("Aucune étiquette : le jeu de données est vide.")
    names = []
    for i, lab in enumerate(labels, 1):
        if lab is None or (isinstance(lab, str) and not lab.strip()):
            raise InvalidInput(f"L'exemple n° {i} n'a pas d'étiquette.")
        names.append(str(lab).strip())
    distinct = sorted(set(names))
    if len(distinct) < 2:
        raise InvalidInput(f"Tous les exemples ({len(names)}) ont la même étiquette « {distinct[0]} » : "
                           "un classifieur a besoin d'au moins deux classes.")
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
            raise InvalidInput("Il faut une liste de textes, pas un seul texte.")
        texts, labels = list(texts), list(labels)
        if not texts:
            raise InvalidInput("Le jeu de données de classification est vide.")
        if len(texts) != len(labels):
            raise InvalidInput(f"Il y a {len(texts)} textes mais {len(labels)} étiquettes.")
        if max_length is not None:
            max_length = _check_int(max_length, "max_length", 1)
        self.vocab = dict(vocab) if vocab is not None else label_vocab(labels)
        self.label_names = [name for name, _ in sorted(self.vocab.items(), key=lambda kv: kv[1])]
        self.pad_id = pad_token_id(tokenizer)
        encoded = []
        for i, text in enumerate(texts, 1):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput(f"Le texte de l'exemple n° {i} est vide.")
            ids = list(tokenizer.encode(text))
            if not ids:
                raise InvalidInput(f"Le texte de l'exemple n° {i} ne donne aucun token.")
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
                raise InvalidInput(f"L'étiquette « {key} » de l'exemple n° {i} est inconnue "
                                   f"(étiquettes : {', '.join(self.label_names)}).")
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
        raise InvalidInput("split_records attend une liste d'exemples.")
    items = list(records)
    fr = [float(f) for f in fractions]
    if not 2 <= len(fr) <= 3 or any(not 0 <= f <= 1 for f in fr) or fr[0] <= 0:
        raise InvalidInput("Les proportions doivent être 2 ou 3 nombres entre 0 et 1, "
                           "la première (entraînement) non nulle.")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise InvalidInput(f"Les proportions doivent faire 1 au total (reçu : {sum(fr):g}).")
    n = len(items)
    if n == 0:
        raise InvalidInput("Le jeu de données est vide : rien à découper.")
    needed = sum(1 for f in fr if f > 0)
    if n < needed:
        raise InvalidInput(f"Il n'y a que {n} exemple(s) : il en faut au moins {needed} pour faire "
                           "les parties entraînement/validation/test demandées.")
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
        raise InvalidInput("Le texte est vide : rien à découper.")
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError):
        raise InvalidInput(f"« val_fraction » doit être un nombre (reçu : {val_fraction!r}).") from None
    if not 0 < val_fraction < 1:
        raise InvalidInput(f"« val_fraction » doit être strictement entre 0 et 1 (reçu : {val_fraction:g}).")
    cut = int(len(text) * (1 - val_fraction))
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise InvalidInput(f"Le texte ({len(text)} caractères) est trop court pour en réserver "
                           f"{val_fraction:.0%} à la validation.")
    return train, val
