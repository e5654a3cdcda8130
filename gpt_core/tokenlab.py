"""The tokenizer lab: compare tokenizers, show BPE at work, train one, decode ids.

Pure functions over :mod:`gpt_core.tokenizers` (no Streamlit, no printing):

* :func:`compare_tokenizers` - 1 to 4 tokenizers on the same text: pieces, statistics
  (tokens, characters per token, tokens per word, unknown / byte-fallback / special
  pieces) and the number of tokens each word was split into;
* :func:`byte_spelling` / :func:`notable_glyphs` - the byte view, which explains the
  vocabulary spellings ``Ġ`` (GPT-2's space byte) and ``▁`` (SentencePiece's space);
* :func:`bpe_walkthrough` - "show your work": GPT-2's merges, one by one, with ranks;
* :func:`train_bpe` - a byte-level BPE trained with the ``tokenizers`` library;
* :func:`language_bpe` - that BPE trained once (then cached) on the built-in French or
  English corpus, so a lesson can show each one cheap on the language it learnt;
* :func:`language_costs` - tokens per word of each tokenizer on reference texts;
* :func:`parse_ids` / :func:`round_trip` - pasted ids back to text, safely;
* :func:`read_upload` - bytes of an uploaded file to text, with readable errors;
* :func:`tokens_csv` / :func:`tokens_json` - exports.

Every error a user can cause is an :class:`~gpt_core.errors.InvalidInput` with a
stable code (``tokenlab.*``) that the app says in the user's language.
"""
from __future__ import annotations

import bisect
import csv
import io
import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core.tokenizers import MergeStep, TokenPiece, Tokenizer, bytes_to_unicode, clean_text

__all__ = [
    "MAX_COMPARED",
    "MIN_TRAIN_VOCAB",
    "MAX_TRAIN_VOCAB",
    "MAX_TRAIN_CHARS",
    "Word",
    "TokenStats",
    "TokenizerReport",
    "Comparison",
    "find_words",
    "word_token_counts",
    "token_stats",
    "compare_tokenizers",
    "byte_spelling",
    "notable_glyphs",
    "spell_bytes",
    "BpeChunk",
    "BpeWalk",
    "bpe_walkthrough",
    "train_bpe",
    "LANGUAGE_BPE_VOCAB",
    "LanguageBpe",
    "builtin_corpus",
    "language_bpe",
    "LanguageCost",
    "language_costs",
    "parse_ids",
    "RoundTrip",
    "round_trip",
    "read_upload",
    "token_rows",
    "tokens_csv",
    "tokens_json",
]

MAX_COMPARED = 4  # tokenizers side by side
MIN_TRAIN_VOCAB = 260  # 256 byte tokens + <|endoftext|> + a few merges
MAX_TRAIN_VOCAB = 50_000
MAX_TRAIN_CHARS = 2_000_000
MAX_PASTED_IDS = 100_000
MAX_IDS_CHARS = 1_000_000
EOT = "<|endoftext|>"
# Both built-in corpora (45 kB of French, 41 kB of English) can fill this vocabulary with
# merges seen at least twice (about 1,820 and 1,660 at most): the two BPEs are the same size.
LANGUAGE_BPE_VOCAB = 1600
LANGUAGE_CORPORA = {"fr": "corpus_fr.txt", "en": "corpus_en.txt"}

# A word: letters/digits, possibly joined by an apostrophe or a hyphen
# ("l'Université", "aujourd'hui", "peut-être" are one word each).
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")

_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SP_SPACE = "\u2581"


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # character span [start, end) in the text
    end: int


@dataclass(frozen=True)
class TokenStats:
    n_tokens: int
    n_chars: int
    n_words: int
    chars_per_token: float | None  # None for an empty text
    tokens_per_word: float | None  # tokens / words ("fertility"); None without words
    n_unknown: int  # <unk> pieces standing for text the vocabulary cannot spell
    n_byte_fallback: int  # <0x..> pieces, or byte-level tokens that are not whole characters
    n_special: int  # special tokens (<|endoftext|>, <s>, ...)


@dataclass
class TokenizerReport:
    name: str
    label: str
    kind: str
    vocab_size: int
    pieces: list[TokenPiece]
    stats: TokenStats
    word_counts: list[int]  # tokens touching each word of Comparison.words
    seconds: float  # time spent tokenising


@dataclass
class Comparison:
    text: str
    words: list[Word]
    reports: list[TokenizerReport] = field(default_factory=list)


def find_words(text: str) -> list[Word]:
    """The words of ``text``: runs of letters and digits, with inner apostrophes/hyphens."""
    return [Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def _effective_span(p: TokenPiece) -> tuple[int, int]:
    """A token with an empty span carries continuation bytes of the character before it."""
    if p.end > p.start:
        return p.start, p.end
    return max(p.start - 1, 0), p.start


def word_token_counts(pieces: Sequence[TokenPiece], words: Sequence[Word]) -> list[int]:
    """For each word, the number of tokens whose characters overlap it.

    A token that also holds the space before the word (GPT-2's ``Ġde``) counts for the
    word; a token holding only continuation bytes of a character counts for the word
    that character belongs to. Linear time: spans and words are both in text order.
    """
    spans = [_effective_span(p) for p in pieces]
    counts: list[int] = []
    first = 0
    for w in words:
        while first < len(spans) and spans[first][1] <= w.start:
            first += 1
        n, j = 0, first
        while j < len(spans) and spans[j][0] < w.end:
            if spans[j][1] > w.start and spans[j][1] > spans[j][0]:
                n += 1
            j += 1
        counts.append(n)
    return counts


def _is_unknown(p: TokenPiece, text: str) -> bool:
    # SmolLM2 uses <|endoftext|> as its "unknown" token: typed literally, it is not unknown.
    return p.unknown and text[p.start : p.end] != p.raw


def token_stats(pieces: Sequence[TokenPiece], text: str, words: Sequence[Word]) -> TokenStats:
    n_tokens, n_chars, n_words = len(pieces), len(text), len(words)
    return TokenStats(
        n_tokens=n_tokens,
        n_chars=n_chars,
        n_words=n_words,
        chars_per_token=n_chars / n_tokens if n_tokens else None,
        tokens_per_word=n_tokens / n_words if n_words else None,
        n_unknown=sum(1 for p in pieces if _is_unknown(p, text)),
        n_byte_fallback=sum(1 for p in pieces if p.byte_fallback),
        n_special=sum(1 for p in pieces if p.special and not _is_unknown(p, text)),
    )


def _inside(spans: list[tuple[int, int]], w: Word) -> bool:
    """Is the word inside one of these sorted, non-overlapping spans?"""
    i = bisect.bisect_right(spans, (w.start, 1 << 62)) - 1
    return i >= 0 and spans[i][0] <= w.start and w.end <= spans[i][1]


def compare_tokenizers(tokenizers: Sequence[Tokenizer], text: str, allow_special: bool = True) -> Comparison:
    """Tokenise ``text`` with 1 to 4 tokenizers and gather what the lab shows."""
    tokenizers = list(tokenizers)
    if not tokenizers:
        raise InvalidInput("tokenlab.no_tokenizer", "Choose at least one tokenizer to compare.")
    if len(tokenizers) > MAX_COMPARED:
        raise InvalidInput("tokenlab.too_many_tokenizers", "At most {limit} tokenizers can be compared at once "
                           "(got {n}).", limit=MAX_COMPARED, n=len(tokenizers))
    text = clean_text(text)
    tokenised = []
    for tok in tokenizers:
        start = time.perf_counter()
        pieces = tok.tokenize(text, allow_special=allow_special)
        tokenised.append((tok, pieces, time.perf_counter() - start))
    # words typed inside a special token ("endoftext" in <|endoftext|>) are not words
    special_spans = sorted({(p.start, p.end) for _, pieces, _ in tokenised for p in pieces if p.special})
    words = [w for w in find_words(text) if not _inside(special_spans, w)]
    out = Comparison(text, words)
    for tok, pieces, seconds in tokenised:
        out.reports.append(
            TokenizerReport(
                name=tok.name,
                label=tok.label,
                kind=tok.kind,
                vocab_size=tok.vocab_size,
                pieces=pieces,
                stats=token_stats(pieces, text, words),
                word_counts=word_token_counts(pieces, words),
                seconds=seconds,
            )
        )
    return out


# --------------------------------------------------------------------------- byte view


def spell_bytes(data: bytes) -> str:
    """GPT-2's vocabulary spelling of some bytes (a space becomes 'Ġ', a newline 'Ċ')."""
    return "".join(_BYTE_TO_CHAR[b] for b in data)


def byte_spelling(piece: TokenPiece, kind: str) -> list[tuple[str, str]]:
    """Each glyph of the token's vocabulary spelling, with the byte(s) it stands for (hex).

    Byte-level BPE: one glyph per byte (``Ġ`` -> ``20``, ``Ã`` -> ``C3``). SentencePiece:
    ``▁`` -> ``20`` (a space), ``<0xF0>`` -> ``F0`` (byte fallback), other characters
    -> their UTF-8 bytes. Special tokens are not spelled: they are whole symbols.
    """
    if piece.special:
        return []
    raw = piece.raw
    if kind in ("byte-bpe",) and all(c in _CHAR_TO_BYTE for c in raw):
        return [(c, f"{_CHAR_TO_BYTE[c]:02X}") for c in raw]
    if kind == "sentencepiece" and _SP_BYTE.fullmatch(raw):
        return [(raw, raw[3:5].upper())]
    out = []
    for c in raw:
        if c == _SP_SPACE and kind == "sentencepiece":
            out.append((c, "20"))
        else:
            out.append((c, c.encode("utf-8", errors="replace").hex(" ").upper()))
    return out


_SPECIAL_BYTES = {0x20: "space", 0x0A: "newline", 0x09: "tab", 0x0D: "return"}


def notable_glyphs(pieces: Sequence[TokenPiece], kind: str) -> list[tuple[str, str, str]]:
    """The spellings worth explaining in these pieces: (glyph, bytes hex, meaning code).

    Meaning codes: ``space``, ``newline``, ``tab``, ``return``, ``control`` (a byte
    shifted to a visible character), ``utf8`` (one byte of a multi-byte UTF-8 character
    shown as a Latin-1 letter, e.g. ``Ã``), ``sp_space`` (SentencePiece's ``▁``),
    ``sp_byte`` (SentencePiece byte fallback ``<0x..>``). Each glyph appears once.
    """
    seen: dict[str, tuple[str, str, str]] = {}
    for p in pieces:
        for glyph, hexa in byte_spelling(p, kind):
            if glyph in seen:
                continue
            if kind == "byte-bpe":
                b = _CHAR_TO_BYTE.get(glyph)
                if b is None:
                    continue
                if b in _SPECIAL_BYTES:
                    seen[glyph] = (glyph, hexa, _SPECIAL_BYTES[b])
                elif b >= 0x80:
                    seen[glyph] = (glyph, hexa, "utf8")
                elif ord(glyph) >= 256:
                    seen[glyph] = (glyph, hexa, "control")
            elif kind == "sentencepiece":
                if glyph == _SP_SPACE:
                    seen[glyph] = (glyph, hexa, "sp_space")
                elif _SP_BYTE.fullmatch(glyph):
                    seen[glyph] = (glyph, hexa, "sp_byte")
    return list(seen.values())


# --------------------------------------------------------------------------- BPE step through


@dataclass
class BpeChunk:
    chunk: str  # one pre-tokenised chunk (" Sherbrooke": GPT-2 keeps the space in front)
    special: bool  # a special token: one id, no merge
    start: list[bytes]  # the single bytes BPE starts from
    steps: list[MergeStep]
    ids: list[int]  # ids of the final parts

    def parts_at(self, k: int) -> list[bytes]:
        """The chunk's parts after ``k`` merges (0 = single bytes)."""
        if self.special:
            return [self.chunk.encode("utf-8")]
        k = max(0, min(int(k), len(self.steps)))
        return list(self.start) if k == 0 else list(self.steps[k - 1].parts_after)

    def merged_at(self, k: int) -> int | None:
        """Where the ``k``-th merge happened: the index of the new part after it (None for k = 0)."""
        if self.special or not 1 <= k <= len(self.steps):
            return None
        before, after = self.parts_at(k - 1), self.parts_at(k)
        return next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), len(after) - 1)


@dataclass
class BpeWalk:
    text: str
    chunks: list[BpeChunk]

    @property
    def ids(self) -> list[int]:
        return [i for c in self.chunks for i in c.ids]

    @property
    def n_merges(self) -> int:
        return sum(len(c.steps) for c in self.chunks)


def bpe_walkthrough(tokenizer: Tokenizer, text: str, allow_special: bool = True) -> BpeWalk:
    """Show GPT-2's work: the pre-tokenised chunks of ``text`` and every merge, in order.

    Needs a tokenizer with ``bpe_steps`` (GPT-2's byte-level BPE). The ids of the final
    parts are looked up in the merge table, independently of ``encode``, so a test can
    check that the step-through ends where ``encode`` does.
    """
    if not hasattr(tokenizer, "bpe_steps") or not hasattr(tokenizer, "mergeable_ranks"):
        raise InvalidInput("tokenlab.bpe_needs_gpt2", "The step-by-step BPE merges are only available for GPT-2 "
                           "(not for '{name}').", name=str(getattr(tokenizer, "name", "?"))[:60])
    if not isinstance(text, str) or not text:
        raise InvalidInput("tokenlab.bpe_no_text", "Type a word (or a short sentence) to see its BPE merges.")
    chunks: list[BpeChunk] = []
    for chunk, steps in tokenizer.bpe_steps(text, allow_special=allow_special):
        if allow_special and chunk in tokenizer.special_tokens:
            chunks.append(BpeChunk(chunk, True, [], [], [tokenizer.special_tokens[chunk]]))
            continue
        data = chunk.encode("utf-8")
        start = [bytes([b]) for b in data]
        final = steps[-1].parts_after if steps else start
        ids = [tokenizer.mergeable_ranks[part] for part in final]
        chunks.append(BpeChunk(chunk, False, start, steps, ids))
    return BpeWalk(text, chunks)


# --------------------------------------------------------------------------- training


def _check_vocab_size(vocab_size: Any) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        try:
            if isinstance(vocab_size, bool) or float(vocab_size) != int(vocab_size):
                raise ValueError
            vocab_size = int(vocab_size)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput("tokenlab.vocab_not_whole", "The vocabulary size must be a whole number (got {value}).",
                               value=repr(vocab_size)[:40]) from None
    if not MIN_TRAIN_VOCAB <= vocab_size <= MAX_TRAIN_VOCAB:
        raise InvalidInput(
            "tokenlab.vocab_out_of_range",
            "The vocabulary size must be between {minimum} and {maximum} (got {value}): 257 tokens already go to "
            "the 256 bytes and <|endoftext|>, and a small corpus cannot fill a large vocabulary.",
            minimum=MIN_TRAIN_VOCAB, maximum=MAX_TRAIN_VOCAB, value=vocab_size,
        )
    return vocab_size


def train_bpe(
    corpus: str,
    vocab_size: int,
    name: str = "bpe-trained",
    label: str | None = None,
    min_frequency: int = 2,
):
    """Train a byte-level BPE (GPT-2 style) on ``corpus`` with the ``tokenizers`` library.

    The vocabulary starts from the 256 bytes plus ``<|endoftext|>`` (special), then
    learns merges of pairs seen at least ``min_frequency`` times until it holds
    ``vocab_size`` tokens, or until no pair is frequent enough (then it is smaller: the
    returned tokenizer's ``vocab_size`` tells). Any text round-trips: every byte has a token.

    Raises InvalidInput for an empty corpus, a vocabulary size outside
    [MIN_TRAIN_VOCAB, MAX_TRAIN_VOCAB], a corpus with fewer characters than the
    vocabulary asks for, or a corpus over MAX_TRAIN_CHARS characters.
    Returns a :class:`gpt_core.tokenizers.HFTokenizer`.
    """
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from gpt_core.tokenizers import HFTokenizer

    if not isinstance(corpus, str):
        raise InvalidInput("tokenlab.corpus_not_text", "The training corpus must be text (got {kind}).",
                           kind=type(corpus).__name__)
    corpus = clean_text(corpus)
    vocab_size = _check_vocab_size(vocab_size)
    if not corpus.strip():
        raise InvalidInput("tokenlab.corpus_empty", "The training corpus is empty: paste or upload some text.")
    if len(corpus) > MAX_TRAIN_CHARS:
        raise InvalidInput("tokenlab.corpus_too_long", "The corpus is too long ({n_chars} characters): the limit is "
                           "{limit} characters.", n_chars=len(corpus), limit=MAX_TRAIN_CHARS)
    if len(corpus) < vocab_size:
        raise InvalidInput("tokenlab.corpus_smaller_than_vocab",
                           "The corpus ({n_chars} characters) is smaller than the requested vocabulary ({vocab} "
                           "tokens): add text or choose a smaller vocabulary.", n_chars=len(corpus), vocab=vocab_size)
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise InvalidInput("tokenlab.bad_min_frequency", "The minimum frequency of a pair must be a whole number "
                           "of at least 1 (got {value}).", value=repr(min_frequency)[:40])

    tok = RawTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_lines(corpus), trainer=trainer, length=None)
    if label is None:
        label = f"BPE trained here ({tok.get_vocab_size():,} tokens, {len(corpus):,} characters)"
    return HFTokenizer.from_tokenizers_object(tok, name=name, label=label)


def _lines(corpus: str, size: int = 8192):
    """Feed the trainer pieces of the corpus cut at line ends (lets it use several threads)."""
    start = 0
    while start < len(corpus):
        end = min(start + size, len(corpus))
        if end < len(corpus):
            nl = corpus.rfind("\n", start, end)
            if nl > start:
                end = nl + 1
        yield corpus[start:end]
        start = end


# --------------------------------------------------------------------------- one BPE per language


@dataclass(frozen=True)
class LanguageBpe:
    lang: str
    tokenizer: Tokenizer  # named ``bpe-<lang>``
    n_chars: int  # size of the corpus it learnt from
    seconds: float  # training time (once per process)


def builtin_corpus(lang: str) -> str:
    """The text of the built-in corpus of ``lang`` ("fr" or "en", ``assets/datasets/corpus_<lang>.txt``)."""
    from gpt_core.data import DATASETS_DIR

    if lang not in LANGUAGE_CORPORA:
        raise InvalidInput("tokenlab.no_corpus_for_lang", "There is no built-in corpus for the language '{lang}' "
                           "(choose one of {choices}).", lang=str(lang)[:20], choices=", ".join(LANGUAGE_CORPORA))
    path = DATASETS_DIR / LANGUAGE_CORPORA[lang]
    if not path.is_file():
        raise GPTCoreError("tokenlab.corpus_file_missing", "The built-in corpus '{file}' is missing from this "
                           "installation.", file=path.name)
    return path.read_text(encoding="utf-8")


_language_bpes: dict[tuple[str, int], LanguageBpe] = {}
_language_lock = threading.Lock()


def language_bpe(lang: str, vocab_size: int = LANGUAGE_BPE_VOCAB) -> LanguageBpe:
    """A byte-level BPE trained on the built-in corpus of ``lang`` ("fr" or "en").

    Trained at the first call (a fraction of a second), then kept for the process:
    every caller gets the same tokenizer (thread-safe). Training is deterministic, so
    the ids are the same from one process to the next. The tokenizer is named
    ``bpe-fr`` / ``bpe-en``. Raises InvalidInput for another language and GPTCoreError
    when the corpus file is missing.
    """
    key = (lang, _check_vocab_size(vocab_size))
    with _language_lock:  # one training per key; later calls read the cache
        found = _language_bpes.get(key)
        if found is not None:
            return found
        corpus = builtin_corpus(lang)
        import transformers.tokenization_utils_fast  # noqa: F401  (imported first: the time is training only)

        start = time.perf_counter()
        tok = train_bpe(corpus, key[1], name=f"bpe-{lang}",
                        label=f"Byte-level BPE trained here on the built-in {lang} corpus ({len(corpus):,} characters)")
        found = LanguageBpe(lang, tok, len(corpus), time.perf_counter() - start)
        _language_bpes[key] = found
        return found


@dataclass(frozen=True)
class LanguageCost:
    name: str  # the tokenizer's name
    lang: str  # the reference text's language
    n_tokens: int
    n_words: int
    tokens_per_word: float | None  # None for a text without words


def language_costs(tokenizers: Sequence[Tokenizer], texts: dict[str, str]) -> list[LanguageCost]:
    """Tokens per word of each tokenizer on each reference text (``{"fr": ..., "en": ...}``).

    Counted as :func:`compare_tokenizers` counts them with ``allow_special=False``
    (special tokens read as text), in the order tokenizer by tokenizer, then language
    by language.
    """
    if not isinstance(texts, dict) or not texts:
        raise InvalidInput("tokenlab.no_reference_text", "Give at least one reference text.")
    texts = {lang: clean_text(text) for lang, text in texts.items()}
    n_words = {lang: len(find_words(text)) for lang, text in texts.items()}
    out = []
    for tok in tokenizers:
        for lang, text in texts.items():
            n = len(tok.encode(text, allow_special=False))
            out.append(LanguageCost(tok.name, lang, n, n_words[lang], n / n_words[lang] if n_words[lang] else None))
    return out


# --------------------------------------------------------------------------- ids -> text


_ID_NOISE = re.compile(r"tensor|device\s*=\s*'[^']*'|dtype\s*=\s*[\w.]+|input_ids|[:=]")
_ID_SEPARATORS = re.compile(r"[\s,;\[\]\(\)\{\}]+")
_INT = re.compile(r"[+-]?\d{1,12}")


def parse_ids(raw: Any, vocab_size: int | None = None, max_ids: int = MAX_PASTED_IDS) -> list[int]:
    """Parse pasted token ids: ``8001 811``, ``[8001, 811]`` or ``tensor([[8001, 811]])``.

    Raises InvalidInput, naming the first bad item, for anything that is not a list of
    integers in [0, vocab_size).
    """
    if not isinstance(raw, str):
        raise InvalidInput("tokenlab.ids_not_text", "Paste token ids as text, for example '8001 811'.")
    if len(raw) > MAX_IDS_CHARS:
        raise InvalidInput("tokenlab.ids_text_too_long", "The pasted text is too long ({n_chars} characters).",
                           n_chars=len(raw))
    items = [s for s in _ID_SEPARATORS.split(_ID_NOISE.sub(" ", raw)) if s]
    if not items:
        raise InvalidInput("tokenlab.no_ids", "Paste at least one token id, for example '8001 811'.")
    if len(items) > max_ids:
        raise InvalidInput("tokenlab.too_many_ids", "Too many ids ({n}): the limit is {limit}.",
                           n=len(items), limit=max_ids)
    ids = []
    for pos, item in enumerate(items, 1):
        if not _INT.fullmatch(item):
            shown = item if len(item) <= 20 else item[:20] + "…"
            raise InvalidInput("tokenlab.id_not_whole", "'{item}' (item {position}) is not a whole token id.",
                               item=shown, position=pos)
        value = int(item)
        if value < 0:
            raise InvalidInput("tokenlab.id_negative", "The id {value} (item {position}) is negative: ids start "
                               "at 0.", value=value, position=pos)
        if vocab_size is not None and value >= vocab_size:
            raise InvalidInput("tokenlab.id_beyond_vocab",
                               "The id {value} (item {position}) is outside the vocabulary: this tokenizer has "
                               "{vocab_size} tokens (ids 0 to {last}).",
                               value=value, position=pos, vocab_size=vocab_size, last=vocab_size - 1)
        ids.append(value)
    return ids


@dataclass
class RoundTrip:
    ids: list[int]
    text: str  # decode(ids)
    reencoded: list[int]  # encode(decode(ids))
    same: bool  # the ids come back unchanged (they were the tokenizer's own encoding)


def round_trip(tokenizer: Tokenizer, raw_ids: Any) -> RoundTrip:
    """ids -> text -> ids. ``raw_ids`` is pasted text or a list of ints."""
    if isinstance(raw_ids, str):
        ids = parse_ids(raw_ids, tokenizer.vocab_size)
    else:
        ids = tokenizer._check_ids(raw_ids)
        if not ids:
            raise InvalidInput("tokenlab.no_ids_given", "Give at least one token id.")
    text = tokenizer.decode(ids)
    reencoded = tokenizer.encode(text)
    return RoundTrip(ids, text, reencoded, reencoded == ids)


# --------------------------------------------------------------------------- uploads


def read_upload(data: Any, max_chars: int | None = None) -> tuple[str, bool]:
    """Decode an uploaded file as UTF-8 text. Returns (text, truncated).

    A UTF-8 byte-order mark is dropped. Invalid UTF-8 raises InvalidInput with the
    position of the first bad byte; an empty file too. ``max_chars`` cuts a long text.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput("tokenlab.upload_unreadable", "The uploaded file could not be read.")
    data = bytes(data)
    if not data:
        raise InvalidInput("tokenlab.upload_empty", "The uploaded file is empty.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidInput("tokenlab.upload_not_utf8",
                           "The file is not valid UTF-8 text (byte 0x{byte} at position {position}): save it as "
                           "UTF-8 (a .txt file) and try again.", byte=f"{data[err.start]:02X}", position=err.start,
                           ) from None
    if not text.strip():
        raise InvalidInput("tokenlab.upload_blank", "The uploaded file holds only spaces.")
    if max_chars is not None and len(text) > max_chars:
        return text[:max_chars], True
    return text, False


# --------------------------------------------------------------------------- exports


def token_rows(pieces: Sequence[TokenPiece], text: str, kind: str = "") -> list[dict]:
    """One plain dict per token (what the tables and the exports show)."""
    rows = []
    for i, p in enumerate(pieces):
        rows.append(
            {
                "index": i,
                "id": p.id,
                "text": text[p.start : p.end],
                "raw": p.raw,
                "bytes": p.bytes.hex(" ").upper(),
                "spelling": " ".join(f"{g}={h}" for g, h in byte_spelling(p, kind)),
                "start": p.start,
                "end": p.end,
                "special": p.special,
                "byte_fallback": p.byte_fallback,
                "unknown": p.unknown,
            }
        )
    return rows


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_safe(value: Any) -> Any:
    # a spreadsheet would run a cell starting with '=' (CSV injection): quote it
    if isinstance(value, str) and value.startswith(_FORMULA_START) and len(value) > 1:
        return "'" + value
    return value


def tokens_csv(comparison: Comparison) -> str:
    """All tokens of all tokenizers, one row each. Cells that a spreadsheet would run as
    a formula (starting with = + - @) get a leading apostrophe; the JSON export is exact."""
    buf = io.StringIO()
    columns = ["tokenizer", "index", "id", "text", "raw", "bytes", "start", "end", "special", "byte_fallback", "unknown"]
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in comparison.reports:
        for row in token_rows(r.pieces, comparison.text, r.kind):
            writer.writerow({k: _csv_safe(v) for k, v in {"tokenizer": r.name, **row}.items()})
    return buf.getvalue()


def tokens_json(comparison: Comparison) -> str:
    """The text, and for each tokenizer its statistics and tokens, as JSON."""
    doc = {
        "text": comparison.text,
        "tokenizers": [
            {
                "name": r.name,
                "label": r.label,
                "kind": r.kind,
                "vocab_size": r.vocab_size,
                "stats": asdict(r.stats),
                "tokens": [
                    {k: v for k, v in row.items() if k != "spelling"}
                    for row in token_rows(r.pieces, comparison.text, r.kind)
                ],
            }
            for r in comparison.reports
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=1)
