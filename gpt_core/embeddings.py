"""Embeddings made visible: token rows, position table, block input, neighbours, PCA.

Works for every backend through :mod:`gpt_core.trace` (``embedding_matrix``,
``position_matrix``, ``run_with_cache``): gpt_core's GPT, Hugging Face GPT-2 and
Llama-style models such as SmolLM2. Rotary models (RoPE) have no position table:
:func:`position_info` says so (``kind == "rotary"``) and describes the rotation instead.

Words made of several tokens are represented by the **mean** of their tokens' embedding
rows by default (``pooling="mean"``), or by their **first** token (``pooling="first"``).
By default a word is encoded with a space in front when the tokenizer marks spaces
inside tokens (GPT-2's ``Ġking``), because that is how a word appears inside a sentence.

Everything returned is plain numpy / Python data; nothing here draws.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from gpt_core.errors import InvalidInput
from gpt_core.trace import describe, embedding_matrix, position_matrix, run_with_cache

__all__ = [
    "MAX_INPUT_TOKENS",
    "MAX_WORDS",
    "MAX_NEIGHBOURS",
    "InputEmbeddings",
    "input_embeddings",
    "PositionInfo",
    "position_info",
    "unit_embeddings",
    "parse_words",
    "word_ids",
    "Neighbour",
    "nearest_neighbours",
    "neighbours_of_word",
    "neighbours_of_id",
    "ProjectedPoint",
    "Projection",
    "project_words",
]

MAX_INPUT_TOKENS = 64
MAX_WORDS = 12
MAX_WORD_CHARS = 40
MAX_NEIGHBOURS = 50
MAX_POSITIONS = 1024
POOLINGS = ("mean", "first")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _cosine_matrix(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.maximum(norms, 1e-12)
    return unit @ unit.T


# --------------------------------------------------------------------------- input rows


@dataclass
class InputEmbeddings:
    ids: list[int]
    pieces: list[str]  # each token's text (decoded alone)
    tok: np.ndarray  # (T, d) token embedding rows
    pos: np.ndarray | None  # (T, d) position rows; None for rotary models
    block_input: np.ndarray  # (T, d) what the first block receives
    position_kind: str  # "learned" | "rotary"
    max_abs_diff: float  # max |tok + pos - block_input| (0 up to rounding: the sum IS the input)
    n_tokens_total: int  # tokens in the text before truncation
    d_model: int


def input_embeddings(model: torch.nn.Module, tokenizer: Any, text: str, max_tokens: int = MAX_INPUT_TOKENS) -> InputEmbeddings:
    """Token rows, position rows and their sum, the block input, for the first tokens of ``text``."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("embeddings.no_text", "Type some text to see its embeddings.")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidInput("embeddings.bad_max_tokens", "The number of tokens shown must be a positive whole number.")
    all_ids = tokenizer.encode(text)
    if not all_ids:
        raise InvalidInput("embeddings.no_tokens", "This text gives no token with this tokenizer: try another text.")
    info = describe(model)
    ids = all_ids[: min(max_tokens, info.context_length)]
    if max(ids) >= info.vocab_size:
        raise InvalidInput("embeddings.id_beyond_vocab", "Token {token_id} is beyond the model's vocabulary "
                           "({rows} embedding rows).", token_id=max(ids), rows=info.vocab_size)
    with torch.inference_mode():
        _, trace = run_with_cache(model, ids)
    tok = _np(trace.tok_emb)
    block = _np(trace.resid[0])
    pos = _np(trace.pos_emb) if trace.pos_emb is not None else None
    expected = tok + pos if pos is not None else tok
    return InputEmbeddings(
        ids=list(ids),
        pieces=[tokenizer.decode([i]) for i in ids],
        tok=tok,
        pos=pos,
        block_input=block,
        position_kind=trace.position_kind,
        max_abs_diff=float(np.abs(expected - block).max()),
        n_tokens_total=len(all_ids),
        d_model=tok.shape[1],
    )


# --------------------------------------------------------------------------- positions


@dataclass
class PositionInfo:
    kind: str  # "learned" | "rotary"
    n_positions: int  # rows shown
    context_length: int
    table: np.ndarray | None  # (P, d) learned position rows; None for rotary
    cosine: np.ndarray  # (P, P) cosine similarity between positions
    # rotary only: RoPE rotates each pair i of a head's query/key dimensions by p * theta_i
    rope_base: float | None = None
    head_dim: int | None = None
    inv_freq: np.ndarray | None = None  # (head_dim/2,) theta_i = base^(-2i/head_dim)
    rope_cos: np.ndarray | None = None  # (P, head_dim/2) cos(p * theta_i): how far each pair has turned


def _rope_params(model: torch.nn.Module) -> tuple[float, int]:
    cfg = model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    params = getattr(cfg, "rope_parameters", None) or {}
    base = params.get("rope_theta") if isinstance(params, dict) else None
    base = base or getattr(cfg, "rope_theta", None) or 10000.0
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return float(base), int(head_dim)


def position_info(model: torch.nn.Module, n_positions: int = 128) -> PositionInfo:
    """The position table and the cosine similarity between positions.

    For a rotary model there is no table: ``cosine[p, q]`` is then the cosine between
    the same vector rotated to positions p and q (every rotation pair of equal size),
    which is ``mean_i cos((p - q) * theta_i)``: it depends only on the distance p - q.
    """
    info = describe(model)
    if isinstance(n_positions, bool) or not isinstance(n_positions, int) or n_positions < 2:
        raise InvalidInput("embeddings.too_few_positions", "Choose at least 2 positions.")
    n = min(n_positions, info.context_length, MAX_POSITIONS)
    table = position_matrix(model)
    if table is not None:
        rows = _np(table[:n])
        return PositionInfo("learned", n, info.context_length, rows, _cosine_matrix(rows))
    base, head_dim = _rope_params(model)
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    dist = np.arange(n)[:, None] - np.arange(n)[None, :]
    cosine = np.cos(dist[..., None] * inv_freq).mean(axis=-1)
    turns = np.cos(np.arange(n)[:, None] * inv_freq[None, :])
    return PositionInfo("rotary", n, info.context_length, None, cosine.astype(np.float32), base, head_dim,
                        inv_freq.astype(np.float32), turns.astype(np.float32))


# --------------------------------------------------------------------------- words and neighbours


def unit_embeddings(model: torch.nn.Module) -> torch.Tensor:
    """The embedding table with rows scaled to length 1 (float32, CPU): cosine = dot product."""
    with torch.inference_mode():
        e = embedding_matrix(model).detach().float().cpu()
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)


def parse_words(raw: Any, max_words: int = MAX_WORDS) -> list[str]:
    """Words separated by commas, semicolons or new lines; blanks and repeats dropped."""
    if not isinstance(raw, str):
        raise InvalidInput("embeddings.words_not_text",
                           "Type words separated by commas, for example 'king, queen, man, woman'.")
    words: list[str] = []
    for item in re.split(r"[,;\n\r\t]+", raw):
        word = item.strip()
        if not word or word in words:
            continue
        if len(word) > MAX_WORD_CHARS:
            raise InvalidInput("embeddings.word_too_long", "'{word}…' is too long: a word has at most {limit} "
                               "characters.", word=word[:20], limit=MAX_WORD_CHARS)
        words.append(word)
    if not words:
        raise InvalidInput("embeddings.no_words", "Type at least one word, for example 'king, queen, man, woman'.")
    if len(words) > max_words:
        raise InvalidInput("embeddings.too_many_words", "Too many words ({n}): {limit} at most.",
                           n=len(words), limit=max_words)
    return words


def _marks_spaces(tokenizer: Any) -> bool:
    # byte-level BPE keeps the space inside the next token ('Ġking'); SentencePiece adds '▁' itself
    return getattr(tokenizer, "kind", "") in ("byte-bpe", "bpe")


def word_ids(tokenizer: Any, word: str, leading_space: bool = True) -> list[int]:
    """The ids of ``word`` as it appears inside a sentence (with its leading space)."""
    text = " " + word if leading_space and _marks_spaces(tokenizer) else word
    ids = tokenizer.encode(text, allow_special=False)
    if not ids:
        raise InvalidInput("embeddings.word_no_tokens", "'{word}' gives no token with this tokenizer.",
                           word=word[:MAX_WORD_CHARS])
    return ids


def _pool(unit_or_emb: torch.Tensor, ids: Sequence[int], pooling: str) -> torch.Tensor:
    if pooling not in POOLINGS:
        raise InvalidInput("embeddings.unknown_pooling", "Unknown pooling '{name}': choose 'mean' or 'first'.",
                           name=str(pooling)[:40])
    rows = unit_or_emb[list(ids)]
    return rows.mean(0) if pooling == "mean" else rows[0]


@dataclass(frozen=True)
class Neighbour:
    rank: int
    id: int
    text: str
    cosine: float


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_NEIGHBOURS:
        raise InvalidInput("embeddings.bad_k", "The number of neighbours must be a whole number between 0 and "
                           "{limit} (got {value}).", limit=MAX_NEIGHBOURS, value=repr(k)[:40])
    return k


def nearest_neighbours(unit: torch.Tensor, tokenizer: Any, vector: torch.Tensor, k: int,
                       exclude: Sequence[int] = ()) -> list[Neighbour]:
    """The ``k`` tokens whose embedding has the highest cosine with ``vector``, best first.

    ``unit`` comes from :func:`unit_embeddings`. Rows past the tokenizer's vocabulary
    (padding rows some models add) and the ids in ``exclude`` are skipped.
    """
    return _nearest(unit, tokenizer, vector, _check_k(k), exclude)


def _nearest(unit: torch.Tensor, tokenizer: Any, vector: torch.Tensor, k: int, exclude: Any = ()) -> list[Neighbour]:
    if k <= 0:
        return []
    q = vector.float().cpu()
    q = q / q.norm().clamp_min(1e-12)
    scores = unit @ q
    n_real = min(int(getattr(tokenizer, "vocab_size", scores.numel())), scores.numel())
    if n_real < scores.numel():
        scores[n_real:] = -math.inf
    skip = [i for i in set(exclude) if 0 <= i < scores.numel()]
    if skip:
        scores[skip] = -math.inf
    k = min(k, n_real - len(skip))
    if k <= 0:
        return []
    top = torch.topk(scores, k)  # sorted, highest first
    return [
        Neighbour(r + 1, int(i), tokenizer.decode([int(i)]), float(s))
        for r, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()))
    ]


@dataclass
class NeighbourTable:
    query: str
    ids: list[int]  # the query's token ids
    pieces: list[str]
    neighbours: list[Neighbour]


def neighbours_of_word(unit: torch.Tensor, tokenizer: Any, word: str, k: int = 10, pooling: str = "mean",
                       leading_space: bool = True) -> NeighbourTable:
    """Nearest tokens of a word (its tokens themselves excluded), sorted by cosine."""
    if not isinstance(word, str) or not word.strip():
        raise InvalidInput("embeddings.no_word", "Type a word or a token.")
    word = word.strip() if leading_space else word
    if len(word) > MAX_WORD_CHARS:
        raise InvalidInput("embeddings.word_too_long", "'{word}…' is too long: a word has at most {limit} "
                           "characters.", word=word[:20], limit=MAX_WORD_CHARS)
    ids = word_ids(tokenizer, word, leading_space)
    vec = _pool(unit, ids, pooling)
    return NeighbourTable(word, ids, [tokenizer.decode([i]) for i in ids],
                          nearest_neighbours(unit, tokenizer, vec, k, exclude=ids))


def neighbours_of_id(unit: torch.Tensor, tokenizer: Any, token_id: Any, k: int = 10) -> NeighbourTable:
    """Nearest tokens of one token id (itself excluded), sorted by cosine."""
    token_id = tokenizer._check_id(token_id)
    if token_id >= unit.shape[0]:
        raise InvalidInput("embeddings.id_beyond_vocab", "Token {token_id} is beyond the model's vocabulary "
                           "({rows} embedding rows).", token_id=token_id, rows=int(unit.shape[0]))
    text = tokenizer.decode([token_id])
    return NeighbourTable(text, [token_id], [text],
                          nearest_neighbours(unit, tokenizer, unit[token_id], k, exclude=[token_id]))


# --------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class ProjectedPoint:
    label: str
    kind: str  # "word" (a chosen word) | "neighbour"
    word: str  # the chosen word this point is (or is a neighbour of)
    ids: tuple[int, ...]
    coords: tuple[float, ...]  # 2 or 3 coordinates
    cosine: float | None  # neighbours: cosine with their word


@dataclass
class Projection:
    dims: int
    pooling: str
    points: list[ProjectedPoint]
    explained: list[float]  # share of the variance of the plotted points on each axis

    @property
    def words(self) -> list[ProjectedPoint]:
        return [p for p in self.points if p.kind == "word"]

    @property
    def neighbours(self) -> list[ProjectedPoint]:
        return [p for p in self.points if p.kind == "neighbour"]


def _pca(x: np.ndarray, dims: int) -> tuple[np.ndarray, list[float]]:
    """Project rows of ``x`` on their first ``dims`` principal axes (signs made deterministic)."""
    centred = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    r = min(dims, len(s))
    coords = np.zeros((x.shape[0], dims))
    for c in range(r):
        axis = vt[c]
        if axis[np.argmax(np.abs(axis))] < 0:  # a fixed sign for each axis
            axis = -axis
        coords[:, c] = centred @ axis
    total = float((s**2).sum())
    explained = [float(s[c] ** 2 / total) if total > 0 and c < r else 0.0 for c in range(dims)]
    return coords, explained


def project_words(model: torch.nn.Module, tokenizer: Any, words: Sequence[str] | str, k: int = 5,
                  dims: int = 2, pooling: str = "mean", unit: torch.Tensor | None = None,
                  leading_space: bool = True) -> Projection:
    """PCA (2D or 3D) of chosen words and their ``k`` nearest neighbours by cosine.

    One point per chosen word (a multi-token word is pooled: the mean of its tokens'
    unit-length rows, or its first token), then each word's neighbours; a token already plotted is not
    repeated. The PCA is fitted on the plotted points (unit-length rows: cosine geometry).
    """
    if words is None or isinstance(words, str):
        words = parse_words(words)
    else:
        words = parse_words(", ".join(str(w) for w in words))
    if dims not in (2, 3):
        raise InvalidInput("embeddings.bad_dims", "The projection has 2 or 3 dimensions.")
    k = _check_k(k)
    if unit is None:
        unit = unit_embeddings(model)
    word_points, vectors, plotted = [], [], set()
    for w in words:
        ids = word_ids(tokenizer, w, leading_space)
        vec = _pool(unit, ids, pooling)
        word_points.append((w, tuple(ids), vec))
        if len(ids) == 1:
            plotted.add(ids[0])
    neighbour_points = []
    for w, ids, vec in word_points:
        for n in _nearest(unit, tokenizer, vec, k, exclude=plotted | set(ids)):
            plotted.add(n.id)
            neighbour_points.append((w, n))
    n_points = len(word_points) + len(neighbour_points)
    if n_points < 2:
        raise InvalidInput("embeddings.too_few_points", "A projection needs at least 2 points: add a word or "
                           "some neighbours.")
    for _, _, vec in word_points:
        vectors.append(vec / vec.norm().clamp_min(1e-12))
    for _, n in neighbour_points:
        vectors.append(unit[n.id])
    coords, explained = _pca(torch.stack(vectors).numpy(), dims)
    points = [
        ProjectedPoint(w, "word", w, ids, tuple(map(float, coords[i])), None)
        for i, (w, ids, _) in enumerate(word_points)
    ]
    offset = len(word_points)
    points += [
        ProjectedPoint(n.text, "neighbour", w, (n.id,), tuple(map(float, coords[offset + j])), n.cosine)
        for j, (w, n) in enumerate(neighbour_points)
    ]
    return Projection(dims, pooling, points, explained)
