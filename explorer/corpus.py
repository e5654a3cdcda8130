"""Where the texts of the Data, Pretrain and Fine-tune pages come from: one pipeline for all three.

A *source* gives a :class:`Corpus`, a list of documents:

* ``corpus_fr`` / ``corpus_en``: the small corpora shipped with the app (documents at blank lines);
* ``pydoc``: Python's own help topics, an offline English corpus (one document per topic);
* ``paste``: typed text (documents at blank lines);
* ``upload``: a .txt file (documents at blank lines) or a table (.json, .jsonl, .csv),
  read by :func:`gpt_core.data.records_texts` the same way on every page: Alpaca records become
  their full training text, otherwise the first column of :data:`TEXT_COLUMNS` found;
* ``hf``: a bounded slice streamed from the Hugging Face hub (:func:`corpus_from_hf`).

The Data page lays out a few documents; Pretrain trains on :attr:`Corpus.text`
(the documents joined by blank lines). Fine-tuning reads records
(:func:`instruction_records`, :func:`classification_records`). The token helpers
at the end (:func:`eot_token_id`, :func:`token_texts`, :func:`eot_stream`) turn
documents into the stream the pages show.

No Streamlit here. Refusals are :class:`gpt_core.errors.InvalidInput` with
codes ``corpus.*``; the pages say them in the user's language through
:mod:`explorer.ui.messages` (locale keys ``core.corpus.*``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from gpt_core import data as D
from gpt_core.errors import InvalidInput

from explorer.ui.token_chips import visible

SOURCES = ("corpus_fr", "corpus_en", "pydoc", "paste", "upload", "hf")
BUNDLED_CORPORA = ("corpus_fr", "corpus_en")
UPLOAD_TYPES = ["txt", "json", "jsonl", "csv"]
RECORD_TYPES = ["json", "jsonl", "csv"]
TEXT_COLUMNS, ALPACA_COLUMN = D.TEXT_COLUMNS, D.ALPACA_COLUMN
HF_ROWS = 40             # rows streamed from a Hugging Face dataset
HF_PRESETS = D.HF_PRESETS


# ====================================================================== sources
@dataclass
class Corpus:
    docs: list[str]                      # non-empty, stripped documents
    origin: str | None                   # file name, dataset address; None for pasted text
    column: str | None = None            # column the texts were read from (tables)
    source: str = ""                     # the source key it came from

    @property
    def text(self) -> str:
        """The documents joined by blank lines: what a language model is trained on."""
        return "\n\n".join(self.docs)

    def cut(self, max_chars: int) -> tuple[list[str], int]:
        """The documents cut to ``max_chars`` characters each, and how many were cut."""
        return [d[:max_chars] for d in self.docs], sum(len(d) > max_chars for d in self.docs)


@dataclass
class TrainingText:
    text: str
    cut: bool = False                    # the corpus was longer than the limit
    chars: int = 0                       # characters before the cut


def training_text(corpus: Corpus, max_chars: int) -> TrainingText:
    """The text a model is trained on, cut to ``max_chars`` characters (tokenizing stays interactive)."""
    text = corpus.text
    return TrainingText(text[:max_chars], len(text) > max_chars, len(text))


def _corpus(docs: Sequence[Any], origin: str | None, source: str, column: str | None = None) -> Corpus:
    docs = [d.replace("\x00", "").strip() for d in docs if isinstance(d, str)]
    docs = [d for d in docs if d]
    if not docs:
        if origin is None:
            raise InvalidInput("corpus.empty_paste", "The text is empty: there is nothing to split into tokens.")
        raise InvalidInput("corpus.no_text", "'{name}' holds no text: there is nothing to split into tokens.",
                           name=origin)
    return Corpus(docs, origin, column, source)


def corpus_from_text(text: str) -> Corpus:
    """Pasted text: documents are separated by blank lines."""
    return _corpus(D.split_documents(text or ""), None, "paste")


def corpus_from_upload(data: bytes, filename: str, max_bytes: int | None = D.MAX_UPLOAD_BYTES) -> Corpus:
    """An uploaded .txt (documents at blank lines) or .json/.jsonl/.csv (one document per row)."""
    if Path(str(filename)).suffix.lower() == ".txt":
        return _corpus(D.split_documents(D.read_text_upload(data, filename, max_bytes)), filename, "upload")
    records = D.read_records(data, filename, max_bytes)
    texts, column = D.records_texts(records, filename)
    return _corpus(texts, filename, "upload", column)


def load_corpus(source: str, text: str = "", upload: tuple[bytes, str] | None = None) -> Corpus:
    """Any source but the Hugging Face one, which needs a click (:func:`corpus_from_hf`)."""
    if source in BUNDLED_CORPORA:
        return _corpus(D.split_documents(D.load_bundled(source)), D.BUNDLED[source]["file"], source)
    if source == "pydoc":
        return _corpus(D.pydoc_documents(), "pydoc_data.topics", source)
    if source == "paste":
        return corpus_from_text(text)
    if source == "upload":
        if upload is None:
            raise InvalidInput("corpus.no_file", "No file: drop a .txt, .json, .jsonl or .csv file.")
        return corpus_from_upload(*upload)
    raise InvalidInput("corpus.unknown_source", "Unknown source '{source}'.", source=str(source)[:40])


def corpus_from_hf(preset: str, n: int = HF_ROWS) -> Corpus:
    """A bounded slice streamed from the hub (raises HubUnavailable at once when offline)."""
    piece = D.load_hf_dataset_slice(preset, n=n)
    return _corpus(piece.texts, piece.source, "hf", piece.text_field)


# ============================================================ fine-tuning records
def instruction_records(upload: tuple[bytes, str] | None = None) -> list[dict]:
    """The bundled Alpaca examples, or an uploaded .json/.jsonl/.csv with instruction and output."""
    return D.task_records("instruct", upload)


def classification_records(upload: tuple[bytes, str] | None = None) -> list[dict]:
    """The bundled French IT tickets, or an uploaded file with ``text`` and ``label`` columns."""
    return D.task_records("classify", upload)


def records_for(task: str, upload: tuple[bytes, str] | None = None) -> list[dict]:
    """The records of a fine-tuning task: ``"instruct"`` or ``"classify"``."""
    return D.task_records(task, upload)


# ======================================================================= tokens
def eot_token_id(tokenizer: Any) -> int:
    """The document separator: ``<|endoftext|>`` when the vocabulary has it (GPT-2: 50256), else eos."""
    try:
        ids = list(tokenizer.encode("<|endoftext|>", allow_special=True))
    except Exception:  # a tokenizer without special-token support
        ids = []
    if len(ids) == 1 and tokenizer.decode(ids) == "<|endoftext|>":
        return int(ids[0])
    if getattr(tokenizer, "eos_id", None) is not None:
        return int(tokenizer.eos_id)
    raise InvalidInput("corpus.no_eot", "This tokenizer has no end-of-text token: documents cannot be separated.")


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """(end-of-text id, padding id) of a tokenizer, refused when it has neither."""
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
