"""gpt_core.tokenlab: comparison, byte view, BPE step-through, training, ids -> text, exports."""
from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.figures.tokens import chips_html
from explorer.ui.token_chips import visible
from gpt_core import tokenlab as L
from gpt_core.errors import InvalidInput
from gpt_core.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHERBROOKE = "Je suis au campus de l'Université de Sherbrooke"
HOSTILE = [
    "👩‍👩‍👧‍👦 famille 🇫🇷 👍🏽",
    "مرحبا بالعالم שלום עולם",
    "a\x00b\x01\x1b[0m\x7f\t\n",
    "café vs cafe\u0301, 漢字",
    "x\ud800y",  # lone surrogate: replaced by U+FFFD, same length
    " ",
    "<|endoftext|><|endoftext|>",
]


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def sp():
    return load_tokenizer("mistral-sp")


@pytest.fixture(scope="module")
def corpus():
    path = ROOT / "assets" / "datasets" / "corpus_fr.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    examples = json.loads((ROOT / "assets" / "examples" / "tokenizer_examples.json").read_text(encoding="utf-8"))
    return "\n".join(e["text"] for e in examples) * 40


@pytest.fixture(scope="module")
def trained(corpus):
    return L.train_bpe(corpus, 600, name="t600")


def assert_tiles(pieces, text):
    assert pieces[0].start == 0 and pieces[-1].end == len(text)
    for a, b in zip(pieces, pieces[1:]):
        assert a.end == b.start, (a, b)
    assert "".join(text[p.start : p.end] for p in pieces) == text


# --------------------------------------------------------------------------- comparison


def test_seed_sentence_gpt2_counts_and_stats(gpt2, sp):
    comp = L.compare_tokenizers([gpt2, sp], SHERBROOKE)
    assert [w.text for w in comp.words] == ["Je", "suis", "au", "campus", "de", "l'Université", "de", "Sherbrooke"]
    g = comp.reports[0]
    assert [p.raw for p in g.pieces] == ["Je", "Ġsu", "is", "Ġau", "Ġcampus", "Ġde", "Ġl", "'", "Un", "ivers",
                                         "itÃ©", "Ġde", "ĠSher", "bro", "oke"]
    assert g.word_counts == [1, 2, 1, 1, 1, 5, 1, 3]
    assert g.stats.n_tokens == 15 and g.stats.n_words == 8 and g.stats.n_chars == len(SHERBROOKE)
    assert g.stats.chars_per_token == pytest.approx(47 / 15)
    assert g.stats.tokens_per_word == pytest.approx(15 / 8)
    assert (g.stats.n_unknown, g.stats.n_byte_fallback, g.stats.n_special) == (0, 0, 0)
    # SentencePiece keeps "Univers" whole: fewer tokens for the French word
    assert comp.reports[1].word_counts[5] < g.word_counts[5]


def test_seed_casing_cases_have_the_courses_ids(gpt2):
    comp = L.compare_tokenizers([gpt2], "ArtificCial intElliGence")
    assert [p.id for p in comp.reports[0].pieces] == [8001, 811, 34, 498, 493, 36, 15516, 38, 594]
    assert comp.reports[0].word_counts == [4, 5]
    assert [p.id for p in L.compare_tokenizers([gpt2], "Artificial intelligence").reports[0].pieces] == [
        8001, 9542, 4430]


def test_endoftext_between_documents(gpt2, sp):
    text = "Premier document.<|endoftext|>Second document."
    comp = L.compare_tokenizers([gpt2, sp], text)
    g, s = comp.reports
    assert g.stats.n_special == 1 and 50256 in [p.id for p in g.pieces]
    assert s.stats.n_special == 0  # SentencePiece reads it as ordinary text
    assert "endoftext" not in [w.text for w in comp.words]
    plain = L.compare_tokenizers([gpt2], text, allow_special=False).reports[0]
    assert plain.stats.n_special == 0 and 50256 not in [p.id for p in plain.pieces]


def test_smollm2_endoftext_is_special_not_unknown():
    tok = load_tokenizer("smollm2")
    r = L.compare_tokenizers([tok], "a<|endoftext|>b").reports[0]
    assert r.stats.n_special == 1 and r.stats.n_unknown == 0


def test_byte_fallback_counted(gpt2, sp):
    r = L.compare_tokenizers([sp, gpt2], "👩").reports
    assert [p.raw for p in r[0].pieces][-4:] == ["<0xF0>", "<0x9F>", "<0x91>", "<0xA9>"]
    assert r[0].stats.n_byte_fallback == 4
    assert r[1].stats.n_byte_fallback == sum(p.byte_fallback for p in r[1].pieces) >= 1


@pytest.mark.parametrize("text", HOSTILE + [SHERBROOKE, "é" * 50])
def test_chip_spans_cover_the_text_exactly(gpt2, sp, trained, text):
    comp = L.compare_tokenizers([gpt2, sp, trained], text)
    for report in comp.reports:
        if not report.pieces:
            continue
        assert_tiles(report.pieces, comp.text)
        page = chips_html(report.pieces, comp.text)
        assert page.count("<span class='tok-chip' title=") == len(report.pieces)
        assert page.count("<wbr>") == len(report.pieces) - 1  # a line breaks only between chips
        labels = re.findall(r"unicode-bidi:isolate'>(.*?)</span>", page, flags=re.S)
        shown = "".join(html.unescape(x) for x, p in zip(labels, report.pieces) if p.end > p.start)
        assert shown == visible(comp.text)


def test_multibyte_character_split_across_gpt2_tokens(gpt2):
    text = "a👩‍👩‍👧b"
    pieces = L.compare_tokenizers([gpt2], text).reports[0].pieces
    assert_tiles(pieces, text)
    assert any(p.start == p.end for p in pieces)  # continuation-byte tokens have an empty span
    assert b"".join(p.bytes for p in pieces) == text.encode("utf-8")
    counts = L.word_token_counts(pieces, L.find_words(text))
    assert counts == [1, 1]  # "a" and "b": the emoji pieces belong to no word


def test_compare_validates_its_inputs(gpt2):
    with pytest.raises(InvalidInput) as err:
        L.compare_tokenizers([], "x")
    assert err.value.code == "tokenlab.no_tokenizer"
    with pytest.raises(InvalidInput) as err:
        L.compare_tokenizers([gpt2] * 5, "x")
    assert err.value.code == "tokenlab.too_many_tokenizers" and err.value.params == {"limit": 4, "n": 5}
    with pytest.raises(InvalidInput):
        L.compare_tokenizers([gpt2], None)
    empty = L.compare_tokenizers([gpt2], "").reports[0]
    assert empty.stats.n_tokens == 0 and empty.stats.chars_per_token is None and empty.stats.tokens_per_word is None


def test_hundred_thousand_characters(gpt2, sp):
    text = ("Le château d'Ébène — 12,5 % ! " * 4000)[:100_000]
    comp = L.compare_tokenizers([gpt2, sp], text)
    assert len(comp.words) == len(L.find_words(text)) > 10_000
    for r in comp.reports:
        assert_tiles(r.pieces, text)
        assert len(r.word_counts) == len(comp.words)


# --------------------------------------------------------------------------- byte view


def test_byte_spelling_explains_g_and_sentencepiece_space(gpt2, sp):
    g = L.compare_tokenizers([gpt2], " de l'Université\n").reports[0]
    spelled = {p.raw: L.byte_spelling(p, "byte-bpe") for p in g.pieces}
    assert spelled["Ġde"] == [("Ġ", "20"), ("d", "64"), ("e", "65")]
    assert spelled["itÃ©"] == [("i", "69"), ("t", "74"), ("Ã", "C3"), ("©", "A9")]
    codes = {glyph: code for glyph, _, code in L.notable_glyphs(g.pieces, "byte-bpe")}
    assert codes == {"Ġ": "space", "Ã": "utf8", "©": "utf8", "Ċ": "newline"}
    s = L.compare_tokenizers([sp], "Je 👩").reports[0]
    assert L.byte_spelling(s.pieces[0], "sentencepiece") == [("▁", "20"), ("J", "4A"), ("e", "65")]
    assert L.byte_spelling(s.pieces[-1], "sentencepiece") == [("<0xA9>", "A9")]
    assert {c for _, _, c in L.notable_glyphs(s.pieces, "sentencepiece")} == {"sp_space", "sp_byte"}


def test_spell_bytes_is_gpt2s_table():
    assert L.spell_bytes(b" \n\t") == "ĠĊĉ"
    assert L.spell_bytes("é".encode()) == "Ã©"


# --------------------------------------------------------------------------- BPE step through


@pytest.mark.parametrize("word", [" Sherbrooke", "Université", " anticonstitutionnellement", "👩‍👧",
                                  " 12345", "a<|endoftext|>b", "ArtificCial intElliGence"])
def test_bpe_walkthrough_ends_in_encode_ids(gpt2, word):
    walk = L.bpe_walkthrough(gpt2, word)
    assert walk.ids == gpt2.encode(word)
    for chunk in walk.chunks:
        if chunk.special:
            continue
        assert chunk.parts_at(0) == [bytes([b]) for b in chunk.chunk.encode()]
        assert b"".join(chunk.parts_at(len(chunk.steps))) == chunk.chunk.encode()
        for k, step in enumerate(chunk.steps, 1):
            assert gpt2.mergeable_ranks[step.merged] == step.rank  # a merge's rank is its token's id
            assert len(chunk.parts_at(k)) == len(chunk.parts_at(k - 1)) - 1


def test_bpe_ranks_grow_within_sherbrooke(gpt2):
    chunk = L.bpe_walkthrough(gpt2, " Sherbrooke").chunks[0]
    assert [L.spell_bytes(s.merged) for s in chunk.steps] == ["he", "ro", "ĠS", "ke", "her", "oke", "ĠSher", "bro"]
    assert [s.rank for s in chunk.steps] == [258, 305, 311, 365, 372, 2088, 6528, 7957]
    assert chunk.merged_at(0) is None and chunk.merged_at(99) is None
    assert [chunk.merged_at(k) for k in (1, 2, 3)] == [2, 5, 0]  # "he" after "ĠS", then "ro" in "b|ro", then "ĠS"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_bpe_walkthrough_matches_encode_on_any_text(gpt2, text):
    assert L.bpe_walkthrough(gpt2, text).ids == gpt2.encode(text)


def test_bpe_walkthrough_rejects_bad_input(gpt2, sp):
    with pytest.raises(InvalidInput) as err:
        L.bpe_walkthrough(sp, "mot")
    assert err.value.code == "tokenlab.bpe_needs_gpt2" and err.value.params["name"] == sp.name
    with pytest.raises(InvalidInput) as err:
        L.bpe_walkthrough(gpt2, "")
    assert err.value.code == "tokenlab.bpe_no_text"
    with pytest.raises(InvalidInput) as err:
        L.bpe_walkthrough(gpt2, "x" * 5000)
    assert err.value.code == "tokenizers.bpe_text_too_long" and err.value.params["n_chars"] == 5000


# --------------------------------------------------------------------------- training


def test_trained_tokenizer_round_trips_its_training_text(corpus, trained):
    assert trained.decode(trained.encode(corpus)) == corpus
    assert trained.kind == "byte-bpe" and trained.name == "t600"
    assert 257 < trained.vocab_size <= 600
    assert trained.eos_id == trained.special_tokens["<|endoftext|>"]
    for text in HOSTILE[:4]:
        assert trained.decode(trained.encode(text)) == text  # every byte has a token


def test_training_learns_the_corpus_words():
    tok = L.train_bpe("le chat dort. " * 400, 300, name="chat")
    assert [p.raw for p in tok.tokenize("le chat dort.")][:3] == ["le", "Ġchat", "Ġdort"]
    assert tok.vocab_size < 300  # a tiny corpus cannot fill the vocabulary: it stops early
    # a trained tokenizer joins the comparison like any other
    comp = L.compare_tokenizers([load_tokenizer("gpt2"), tok], "le chat dort.")
    assert comp.reports[1].stats.n_tokens < comp.reports[0].stats.n_tokens


def test_training_with_nul_rtl_emoji_and_eot(corpus):
    text = (corpus[:3000] + "\x00 مرحبا 👩‍👩‍👧‍👦 <|endoftext|> שלום\n") * 3
    tok = L.train_bpe(text, 400)
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|endoftext|>") == [tok.eos_id]


@pytest.mark.parametrize("vocab, code", [
    (0, "tokenlab.vocab_out_of_range"), (10**7, "tokenlab.vocab_out_of_range"), (-5, "tokenlab.vocab_out_of_range"),
    ("abc", "tokenlab.vocab_not_whole"), (2.5, "tokenlab.vocab_not_whole"), (True, "tokenlab.vocab_not_whole"),
    (None, "tokenlab.vocab_not_whole"),
])
def test_training_rejects_bad_vocabulary_sizes(corpus, vocab, code):
    with pytest.raises(InvalidInput) as err:
        L.train_bpe(corpus, vocab)
    assert err.value.code == code
    if code == "tokenlab.vocab_out_of_range":
        assert err.value.params == {"minimum": 260, "maximum": 50_000, "value": vocab}


@pytest.mark.parametrize("text, code", [
    ("", "tokenlab.corpus_empty"), ("  \n\t ", "tokenlab.corpus_empty"),
    ("abc " * 20, "tokenlab.corpus_smaller_than_vocab"), (b"bytes", "tokenlab.corpus_not_text"),
])
def test_training_rejects_bad_corpora(text, code):
    with pytest.raises(InvalidInput) as err:
        L.train_bpe(text, 1000)
    assert err.value.code == code


# --------------------------------------------------------------------------- ids -> text


@pytest.mark.parametrize("raw", ["8001 811 34", "[8001, 811, 34]", "tensor([[ 8001,   811,    34]])",
                                 "8001;811\n34", "tensor([[8001, 811, 34]], device='mps:0')"])
def test_parse_ids_accepts_common_formats(raw):
    assert L.parse_ids(raw, 50257) == [8001, 811, 34]


@pytest.mark.parametrize("raw, code", [
    ("", "tokenlab.no_ids"), ("  ,, [] ", "tokenlab.no_ids"), ("1 2 x", "tokenlab.id_not_whole"),
    ("-3", "tokenlab.id_negative"), ("50257", "tokenlab.id_beyond_vocab"), ("1" * 5000, "tokenlab.id_not_whole"),
    ("1.5", "tokenlab.id_not_whole"), ("0x10", "tokenlab.id_not_whole"), (12, "tokenlab.ids_not_text"),
    ("1 " * 100_001, "tokenlab.too_many_ids"),
])
def test_parse_ids_rejects_hostile_input(raw, code):
    with pytest.raises(InvalidInput) as err:
        L.parse_ids(raw, 50257)
    assert err.value.code == code
    if raw == "1 2 x":
        assert err.value.params == {"item": "x", "position": 3}


def test_round_trip(gpt2, sp):
    rt = L.round_trip(gpt2, "8001 811 34 498 493 36 15516 38 594")
    assert rt.text == "ArtificCial intElliGence" and rt.same
    split = L.round_trip(gpt2, [32, 81, 83])  # "A" "r" "t": not how GPT-2 would cut "Art"
    assert split.text == "Art" and not split.same and split.reencoded == [8001]
    partial = L.round_trip(gpt2, "41840")  # first bytes of an emoji only
    assert partial.text == "\ufffd" and not partial.same
    ids = sp.encode("Bonjour à tous")
    assert L.round_trip(sp, " ".join(map(str, ids))).same
    with pytest.raises(InvalidInput) as err:
        L.round_trip(sp, "40000")
    assert err.value.code == "tokenlab.id_beyond_vocab" and err.value.params["vocab_size"] == 32000


# --------------------------------------------------------------------------- uploads


def test_read_upload():
    assert L.read_upload("\ufeffBonjour".encode("utf-8")) == ("Bonjour", False)
    text = "é" * 100_000
    assert L.read_upload(text.encode()) == (text, False)
    assert L.read_upload(text.encode(), max_chars=10) == ("é" * 10, True)
    with pytest.raises(InvalidInput) as err:
        L.read_upload(b"abc\xff\xfe")
    assert err.value.code == "tokenlab.upload_not_utf8" and err.value.params == {"byte": "FF", "position": 3}
    for raw, code in [(b"", "tokenlab.upload_empty"), (b" \n ", "tokenlab.upload_blank"),
                      ("déjà du texte", "tokenlab.upload_unreadable")]:
        with pytest.raises(InvalidInput) as err:
            L.read_upload(raw)
        assert err.value.code == code
    assert L.read_upload(b"a\x00b")[0] == "a\x00b"


# --------------------------------------------------------------------------- exports


def test_exports(gpt2, sp):
    text = "==1 Sherbrooke, l'été 👍"
    comp = L.compare_tokenizers([gpt2, sp], text)
    rows = list(csv.DictReader(io.StringIO(L.tokens_csv(comp))))
    assert len(rows) == sum(len(r.pieces) for r in comp.reports)
    assert rows[0]["tokenizer"] == "gpt2" and rows[0]["text"] == "'==" and rows[0]["id"] == str(comp.reports[0].pieces[0].id)
    doc = json.loads(L.tokens_json(comp))
    assert doc["text"] == text
    for r, d in zip(comp.reports, doc["tokenizers"]):
        assert [t["id"] for t in d["tokens"]] == [p.id for p in r.pieces]
        assert "".join(t["text"] for t in d["tokens"]) == text
        assert d["stats"]["n_tokens"] == r.stats.n_tokens
