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
from dataclasses import dataclass, field
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
    "UnitEmbeddings",
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
    "whole_word_mask",
    "single_token",
    "Analogy",
    "word_analogy",
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
    all_ids = tokenizer.encode_for_model(text)  # what the model reads (Gemma: its BOS first)
    if len(all_ids) <= len(getattr(tokenizer, "model_prefix", ())):
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
    # layer type -> (RoPE base, number of layers) when layers differ (Gemma 3: sliding vs full attention)
    rope_bases: dict[str, tuple[float, int]] = field(default_factory=dict)


def _rope_params(model: torch.nn.Module) -> tuple[float, int, dict[str, tuple[float, int]]]:
    """(base of the charts, head_dim, {layer type: (base, number of layers)} when layer types differ).

    Gemma 3 keeps one RoPE base per layer type (10 000 in its sliding-window layers,
    1 000 000 in its global ones): the charts use the most common type's base.
    """
    cfg = model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    params = getattr(cfg, "rope_parameters", None) or {}
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    fallback = float(getattr(cfg, "rope_theta", None) or 10000.0)
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        types = list(getattr(cfg, "layer_types", None) or params)
        per_type = {name: (float(p.get("rope_theta") or fallback), types.count(name)) for name, p in params.items()}
        main = max(per_type, key=lambda name: per_type[name][1])
        return per_type[main][0], int(head_dim), per_type
    base = params.get("rope_theta") if isinstance(params, dict) else None
    return float(base or fallback), int(head_dim), {}


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
    base, head_dim, per_type = _rope_params(model)
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    dist = np.arange(n)[:, None] - np.arange(n)[None, :]
    cosine = np.cos(dist[..., None] * inv_freq).mean(axis=-1)
    turns = np.cos(np.arange(n)[:, None] * inv_freq[None, :])
    return PositionInfo("rotary", n, info.context_length, None, cosine.astype(np.float32), base, head_dim,
                        inv_freq.astype(np.float32), turns.astype(np.float32), per_type)


# --------------------------------------------------------------------------- words and neighbours


class UnitEmbeddings:
    """The embedding table seen with rows of length 1 (cosine = dot product), without copying it.

    It keeps a reference to the model's own table (float16 for Gemma: 335 MB; a
    float32 copy of 262k × 640 rows would add 671 MB) and one inverse norm per row.
    ``unit[ids]`` gives float32 unit rows; ``unit @ q`` the (V,) dot products of every
    unit row with ``q``: one matrix-vector product over the whole table. For a
    float16 table that product runs in float16 (fast, within :attr:`SLACK` of the
    exact cosine); :meth:`exact` rescores a few rows in float32, which the searches
    below do for their answers, so every cosine they return is exact.
    """

    CHUNK = 32768
    SLACK = 2e-3  # bound on |float16 cosine − exact cosine| (measured ≤ 3e-4 on Gemma's table)

    def __init__(self, weight: torch.Tensor):
        self.weight = weight.detach()
        self.approximate = self.weight.dtype != torch.float32
        with torch.no_grad():
            norms = torch.cat([torch.linalg.vector_norm(self.weight[i:i + self.CHUNK], dim=1, dtype=torch.float32)
                               for i in range(0, self.weight.shape[0], self.CHUNK)])
        self.inv_norm = 1.0 / norms.clamp_min(1e-12)  # (V,) float32, on the table's device

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape

    def __len__(self) -> int:
        return int(self.weight.shape[0])

    def __getitem__(self, index) -> torch.Tensor:
        """Unit rows (float32, CPU): ``unit[3]`` is (d,), ``unit[[3, 5]]`` is (2, d)."""
        if isinstance(index, (list, tuple)):
            index = torch.as_tensor(list(index), dtype=torch.long)
        with torch.no_grad():
            return (self.weight[index].float() * self.inv_norm[index].unsqueeze(-1)).cpu()

    def __matmul__(self, q: torch.Tensor) -> torch.Tensor:
        """(V,) dot products of every unit row with ``q`` (d,), float32 on the CPU (see :attr:`SLACK`)."""
        with torch.no_grad():
            q = q.detach().to(self.weight.device)
            raw = self.weight @ q.to(self.weight.dtype)
            return (raw.float() * self.inv_norm).cpu()

    def exact(self, ids: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Dot products of the unit rows ``ids`` with ``q``, computed in float32."""
        return self[ids] @ q.detach().float().cpu()


def unit_embeddings(model: torch.nn.Module) -> UnitEmbeddings:
    """The model's embedding table with rows of length 1 (cosine = dot product); see :class:`UnitEmbeddings`."""
    return UnitEmbeddings(embedding_matrix(model))


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


def word_ids(tokenizer: Any, word: str, leading_space: bool = True) -> list[int]:
    """The ids of ``word`` as it appears inside a sentence (with its leading space).

    Byte-level BPE keeps the space inside the next token (GPT-2's 'Ġking'), and so
    does Gemma's SentencePiece without a dummy prefix ('▁roi', while 'roi' alone is
    another token). A tokenizer that turns the space into a token of its own gets
    that lone space dropped.
    """
    ids = tokenizer.encode(" " + word if leading_space else word, allow_special=False)
    if leading_space and len(ids) > 1 and not tokenizer.decode(ids[:1]).strip():
        ids = ids[1:]
    if not ids:
        raise InvalidInput("embeddings.word_no_tokens", "'{word}' gives no token with this tokenizer.",
                           word=word[:MAX_WORD_CHARS])
    return ids


def _pool(unit_or_emb: UnitEmbeddings | torch.Tensor, ids: Sequence[int], pooling: str) -> torch.Tensor:
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


def nearest_neighbours(unit: UnitEmbeddings, tokenizer: Any, vector: torch.Tensor, k: int,
                       exclude: Sequence[int] = ()) -> list[Neighbour]:
    """The ``k`` tokens whose embedding has the highest cosine with ``vector``, best first.

    ``unit`` comes from :func:`unit_embeddings`. Rows past the tokenizer's vocabulary
    (padding rows some models add) and the ids in ``exclude`` are skipped.
    """
    return _nearest(unit, tokenizer, vector, _check_k(k), exclude)


def _nearest(unit: UnitEmbeddings, tokenizer: Any, vector: torch.Tensor, k: int, exclude: Any = (),
             allowed: torch.Tensor | None = None) -> list[Neighbour]:
    """Top ``k`` rows by cosine; ``allowed`` (bool, one per row) keeps only some tokens as answers."""
    if k <= 0:
        return []
    q = vector.float().cpu()
    q = q / q.norm().clamp_min(1e-12)
    scores = unit @ q  # (V,): one matrix-vector product
    n_real = min(int(getattr(tokenizer, "vocab_size", scores.numel())), scores.numel())
    if n_real < scores.numel():
        scores[n_real:] = -math.inf
    if allowed is not None:
        scores = scores.masked_fill(~allowed[: scores.numel()], -math.inf)
    skip = [i for i in set(exclude) if 0 <= i < scores.numel()]
    if skip:
        scores[skip] = -math.inf
    n_ok = int(torch.isfinite(scores).sum())
    k = min(k, n_ok)
    if k <= 0:
        return []
    if getattr(unit, "approximate", False):  # float16 scores: rescore a margin of candidates exactly
        cand = torch.topk(scores, min(n_ok, k + 64)).indices
        exact = unit.exact(cand, q)
        order = torch.argsort(exact, descending=True, stable=True)[:k]
        values, indices = exact[order], cand[order]
    else:
        values, indices = torch.topk(scores, k)  # sorted, highest first
    return [
        Neighbour(r + 1, int(i), tokenizer.decode([int(i)]), float(s))
        for r, (s, i) in enumerate(zip(values.tolist(), indices.tolist()))
    ]


@dataclass
class NeighbourTable:
    query: str
    ids: list[int]  # the query's token ids
    pieces: list[str]
    neighbours: list[Neighbour]


def neighbours_of_word(unit: UnitEmbeddings, tokenizer: Any, word: str, k: int = 10, pooling: str = "mean",
                       leading_space: bool = True, allowed: torch.Tensor | None = None) -> NeighbourTable:
    """Nearest tokens of a word (its tokens themselves excluded), sorted by cosine.

    ``allowed`` (a bool mask such as :func:`whole_word_mask`) keeps only those tokens as neighbours.
    """
    if not isinstance(word, str) or not word.strip():
        raise InvalidInput("embeddings.no_word", "Type a word or a token.")
    word = word.strip() if leading_space else word
    if len(word) > MAX_WORD_CHARS:
        raise InvalidInput("embeddings.word_too_long", "'{word}…' is too long: a word has at most {limit} "
                           "characters.", word=word[:20], limit=MAX_WORD_CHARS)
    ids = word_ids(tokenizer, word, leading_space)
    vec = _pool(unit, ids, pooling)
    return NeighbourTable(word, ids, [tokenizer.decode([i]) for i in ids],
                          _nearest(unit, tokenizer, vec, _check_k(k), exclude=ids, allowed=allowed))


def neighbours_of_id(unit: UnitEmbeddings, tokenizer: Any, token_id: Any, k: int = 10,
                     allowed: torch.Tensor | None = None) -> NeighbourTable:
    """Nearest tokens of one token id (itself excluded), sorted by cosine."""
    token_id = tokenizer._check_id(token_id)
    if token_id >= unit.shape[0]:
        raise InvalidInput("embeddings.id_beyond_vocab", "Token {token_id} is beyond the model's vocabulary "
                           "({rows} embedding rows).", token_id=token_id, rows=int(unit.shape[0]))
    text = tokenizer.decode([token_id])
    return NeighbourTable(text, [token_id], [text],
                          _nearest(unit, tokenizer, unit[token_id], _check_k(k), exclude=[token_id], allowed=allowed))


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
                  dims: int = 2, pooling: str = "mean", unit: UnitEmbeddings | None = None,
                  leading_space: bool = True, allowed: torch.Tensor | None = None) -> Projection:
    """PCA (2D or 3D) of chosen words and their ``k`` nearest neighbours by cosine.

    ``allowed`` (a bool mask such as :func:`whole_word_mask`) keeps only those tokens as neighbours.

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
        for n in _nearest(unit, tokenizer, vec, k, exclude=plotted | set(ids), allowed=allowed):
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


# --------------------------------------------------------------------------- word arithmetic

WORD_MARKS = ("\u2581", "\u0120", " ")  # SentencePiece '▁', byte-level BPE 'Ġ', a plain space
MAX_ANSWERS = 50


def _raw_pieces(tokenizer: Any, n: int) -> list[str]:
    """The raw vocabulary pieces of ids 0..n-1 ('▁roi', 'Ġking'), in one call when the backend allows it."""
    hf = getattr(tokenizer, "hf_tokenizer", None)
    convert = getattr(hf, "convert_ids_to_tokens", None)
    if convert is not None:
        return [str(p or "") for p in convert(list(range(n)))]
    return [tokenizer.id_to_raw(i) for i in range(n)]


def whole_word_mask(tokenizer: Any, n_rows: int | None = None) -> torch.Tensor:
    """(n_rows,) bool: True for tokens that are a whole word as it appears after a space.

    A whole-word token starts with a word-boundary mark ('▁', 'Ġ' or a space) and the
    rest is alphabetic, at least 2 letters ('▁reine', 'Ġqueen'; not 'ards', '▁,' or
    '▁x'). For WordPiece, a piece without the '##' continuation mark counts as a
    word start. Rows past the tokenizer's vocabulary are False.
    """
    n_vocab = int(tokenizer.vocab_size)
    n_rows = n_vocab if n_rows is None else int(n_rows)
    specials = set(getattr(tokenizer, "special_tokens", {}).values())
    wordpiece = getattr(tokenizer, "kind", "") == "wordpiece"
    keep = []
    for i, raw in enumerate(_raw_pieces(tokenizer, min(n_vocab, n_rows))):
        if raw[:1] in WORD_MARKS:
            rest = raw[1:]
        elif wordpiece and not raw.startswith("##"):
            rest = raw
        else:
            rest = ""
        keep.append(len(rest) >= 2 and rest.isalpha() and i not in specials)
    mask = torch.zeros(n_rows, dtype=torch.bool)
    mask[: len(keep)] = torch.tensor(keep, dtype=torch.bool)
    return mask


def single_token(tokenizer: Any, word: Any) -> int:
    """The one token of ``word`` as written inside a sentence; a word of several tokens is refused, its pieces said."""
    if not isinstance(word, str) or not word.strip():
        raise InvalidInput("embeddings.no_word", "Type a word or a token.")
    word = word.strip()
    if len(word) > MAX_WORD_CHARS:
        raise InvalidInput("embeddings.word_too_long", "'{word}…' is too long: a word has at most {limit} "
                           "characters.", word=word[:20], limit=MAX_WORD_CHARS)
    ids = word_ids(tokenizer, word)
    if len(ids) != 1:
        pieces = " + ".join("\u201c" + tokenizer.decode([i]).replace(" ", "\u2423") + "\u201d" for i in ids)
        raise InvalidInput("embeddings.not_one_token", "'{word}' is not one token of this model: it splits into "
                           "{n} pieces, {pieces}. Choose a word that is a single token.",
                           word=word, n=len(ids), pieces=pieces)
    return ids[0]


@dataclass
class Analogy:
    """``a − b + c``: the words, their token ids and the nearest whole words (the three inputs excluded)."""

    words: tuple[str, str, str]
    ids: tuple[int, int, int]
    answers: list[Neighbour]
    n_candidates: int  # tokens the answers were chosen from (whole words only, or the whole vocabulary)
    expected: str | None = None  # the answer a textbook expects ("reine"), when one is given
    expected_id: int | None = None  # its token (None: it is not one token, so it cannot be an answer)
    expected_rank: int | None = None  # 1 = the top answer; None when it cannot be ranked
    expected_cosine: float | None = None


def word_analogy(unit: UnitEmbeddings, tokenizer: Any, a: str, b: str, c: str, k: int = 10,
                 candidates: torch.Tensor | None = None, expected: str | None = None) -> Analogy:
    """The ``k`` tokens nearest (cosine) to ``unit[a] − unit[b] + unit[c]`` ("roi − homme + femme").

    ``unit`` comes from :func:`unit_embeddings` (rows of length 1, so each word weighs
    the same); ``candidates`` is a (vocab,) bool mask of the tokens allowed as answers,
    usually :func:`whole_word_mask`. One matrix-vector product over the vocabulary.
    With ``expected`` ("reine"), its rank among the allowed answers is measured too.
    """
    k = _check_k(k)
    ids = tuple(single_token(tokenizer, w) for w in (a, b, c))
    for i in ids:
        if i >= unit.shape[0]:
            raise InvalidInput("embeddings.id_beyond_vocab", "Token {token_id} is beyond the model's vocabulary "
                               "({rows} embedding rows).", token_id=i, rows=int(unit.shape[0]))
    vector = unit[ids[0]] - unit[ids[1]] + unit[ids[2]]
    answers = _nearest(unit, tokenizer, vector, k, exclude=ids, allowed=candidates)
    n = int(candidates[: unit.shape[0]].sum()) if candidates is not None else int(unit.shape[0])
    result = Analogy((a.strip(), b.strip(), c.strip()), ids, answers, n)
    if expected and expected.strip():
        result.expected = expected.strip()
        _rank_expected(result, unit, tokenizer, vector, candidates)
    return result


def _rank_expected(result: Analogy, unit: UnitEmbeddings, tokenizer: Any, vector: torch.Tensor,
                   candidates: torch.Tensor | None) -> None:
    """Fill ``expected_id``, ``expected_rank`` and ``expected_cosine`` (ranked among the allowed answers)."""
    ids = word_ids(tokenizer, result.expected)
    if len(ids) != 1 or ids[0] >= unit.shape[0] or ids[0] in result.ids:
        return
    target = ids[0]
    q = vector.float() / vector.float().norm().clamp_min(1e-12)
    scores = unit @ q
    allowed = torch.ones_like(scores, dtype=torch.bool) if candidates is None else candidates[: scores.numel()].clone()
    allowed[min(int(getattr(tokenizer, "vocab_size", scores.numel())), scores.numel()):] = False
    allowed[list(result.ids)] = False
    exact = getattr(unit, "exact", None)
    mine = float(exact(torch.tensor([target]), q)[0]) if exact else float(scores[target])
    result.expected_id, result.expected_cosine = target, mine
    if not allowed[target]:
        return
    slack = unit.SLACK if getattr(unit, "approximate", False) else 0.0
    above = allowed & (scores > mine + slack)  # surely above, even with float16 scores
    close = (allowed & ~above & (scores >= mine - slack)).nonzero().flatten()
    close = close[close != target]
    n_close = int((exact(close, q) > mine).sum()) if slack and close.numel() else int((scores[close] > mine).sum())
    result.expected_rank = int(above.sum()) + n_close + 1
