"""gpt_core.embeddings (and its figures) on the three backends, with tiny random weights.

The tokenizer is a byte-level BPE trained here with 400 tokens, so that it fits the
500-row embedding tables of the tiny models (rows 400..499 are "padding" rows that
neighbour searches must skip).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from explorer.figures.embeddings import projection_figure, token_axis_labels
from gpt_core import embeddings as E
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT
from gpt_core.tokenlab import train_bpe
from gpt_core.trace import embedding_matrix, position_matrix

CORPUS = (
    "le roi et la reine vivent au château. the king and the queen live in the castle. "
    "Paris est en France, Berlin est en Allemagne. Paris is in France, Berlin is in Germany. "
    "un homme, une femme, des enfants. a man, a woman, children. "
) * 40


@pytest.fixture(scope="module")
def tok():
    return train_bpe(CORPUS, 400, name="tiny-bpe")


def gpt_core_model():
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny").with_(vocab_size=500, context_length=64)).eval()


def hf_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=500, n_positions=64, n_embd=48, n_layer=2, n_head=4, attn_implementation="eager")
    return GPT2LMHeadModel(cfg).eval()


def hf_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rope_theta=10000.0, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


MODELS = {"gpt_core": gpt_core_model, "hf-gpt2": hf_gpt2, "hf-llama": hf_llama}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]()


# --------------------------------------------------------------------------- input rows


def test_input_rows_and_block_input(model, tok):
    text = "le roi et la reine"
    emb = E.input_embeddings(model, tok, text)
    ids = tok.encode(text)
    assert emb.ids == ids and emb.n_tokens_total == len(ids)
    assert "".join(emb.pieces) == text
    table = embedding_matrix(model).detach().numpy()
    np.testing.assert_allclose(emb.tok, table[ids], atol=1e-6)
    wpe = position_matrix(model)
    if wpe is None:
        assert emb.position_kind == "rotary" and emb.pos is None
        np.testing.assert_allclose(emb.block_input, emb.tok, atol=1e-6)
    else:
        assert emb.position_kind == "learned"
        np.testing.assert_allclose(emb.pos, wpe[: len(ids)].detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(emb.block_input, emb.tok + emb.pos, atol=1e-5)
    assert emb.max_abs_diff < 1e-5


def test_input_is_truncated_and_checked(tok):
    model = gpt_core_model()
    emb = E.input_embeddings(model, tok, "le roi " * 50, max_tokens=5)
    assert len(emb.ids) == 5 and emb.n_tokens_total == len(tok.encode("le roi " * 50))
    long = E.input_embeddings(model, tok, "le roi " * 50, max_tokens=1000)
    assert len(long.ids) == 64  # the context window of this model
    for bad in ["", "   ", None]:
        with pytest.raises(InvalidInput) as err:
            E.input_embeddings(model, tok, bad)
        assert err.value.code == "embeddings.no_text"
    with pytest.raises(InvalidInput):
        E.input_embeddings(model, tok, "x", max_tokens=0)
    odd = E.input_embeddings(model, tok, "👩‍👩‍👧 \x00 مرحبا")  # every byte has a token
    assert len(odd.ids) > 5


# --------------------------------------------------------------------------- positions


def test_learned_position_table_and_cosine():
    model = gpt_core_model()
    info = E.position_info(model, 40)
    assert info.kind == "learned" and info.n_positions == 40
    np.testing.assert_allclose(info.table, model.pos_emb.weight[:40].detach().numpy(), atol=1e-6)
    unit = info.table / np.linalg.norm(info.table, axis=1, keepdims=True)
    np.testing.assert_allclose(info.cosine, unit @ unit.T, atol=1e-5)
    assert E.position_info(model, 10_000).n_positions == 64  # capped at the context length
    for bad in [1, 0, -3, "12", True]:
        with pytest.raises(InvalidInput):
            E.position_info(model, bad)


def test_rotary_models_say_so_and_describe_the_rotation():
    info = E.position_info(hf_llama(), 32)
    assert info.kind == "rotary" and info.table is None
    assert info.head_dim == 16 and info.rope_base == 10000.0
    np.testing.assert_allclose(info.inv_freq, 10000.0 ** (-np.arange(0, 16, 2) / 16), rtol=1e-6)
    assert info.rope_cos.shape == (32, 8)
    np.testing.assert_allclose(info.rope_cos[5, 1], math.cos(5 * 10000.0 ** (-2 / 16)), atol=1e-6)
    # the similarity depends only on the distance p - q (Toeplitz), 1 on the diagonal
    np.testing.assert_allclose(np.diag(info.cosine), 1.0, atol=1e-6)
    np.testing.assert_allclose(info.cosine[3:, 3:], info.cosine[:-3, :-3], atol=1e-6)
    # it is the cosine between one vector rotated to two positions, computed by hand
    pairs = np.ones(8) / math.sqrt(8)  # 8 pairs of equal length: a unit vector
    def rotated(p):
        angle = p * info.inv_freq.astype(np.float64)
        return np.concatenate([pairs * np.cos(angle), pairs * np.sin(angle)])
    assert info.cosine[2, 9] == pytest.approx(float(rotated(2) @ rotated(9)), abs=1e-6)


# --------------------------------------------------------------------------- neighbours


def test_neighbours_are_sorted_by_cosine_and_exact(model, tok):
    unit = E.unit_embeddings(model)
    table = E.neighbours_of_id(unit, tok, 300, k=12)
    cos = [n.cosine for n in table.neighbours]
    assert cos == sorted(cos, reverse=True) and len(cos) == 12
    assert 300 not in [n.id for n in table.neighbours]
    assert all(n.id < tok.vocab_size for n in table.neighbours)  # padding rows 400..499 skipped
    full = embedding_matrix(model).detach().double()
    brute = torch.nn.functional.cosine_similarity(full[:400], full[300][None], dim=1)
    brute[300] = -2
    assert table.neighbours[0].id == int(brute.argmax())
    for n in table.neighbours:
        assert n.cosine == pytest.approx(float(brute[n.id]), abs=1e-5)
    assert [n.rank for n in table.neighbours] == list(range(1, 13))


def test_neighbours_of_a_word(tok):
    model = gpt_core_model()
    unit = E.unit_embeddings(model)
    table = E.neighbours_of_word(unit, tok, "château", k=5)
    assert table.ids == tok.encode(" château") and "".join(table.pieces) == " château"
    assert not set(table.ids) & {n.id for n in table.neighbours}
    vec = unit[table.ids].mean(0)
    best = E.nearest_neighbours(unit, tok, vec, 5, exclude=table.ids)
    assert [n.id for n in best] == [n.id for n in table.neighbours]
    assert E.neighbours_of_word(unit, tok, "roi", k=0).neighbours == []
    for bad_k in [-1, 51, True, 2.0]:
        with pytest.raises(InvalidInput) as err:
            E.neighbours_of_word(unit, tok, "roi", k=bad_k)
        assert err.value.code == "embeddings.bad_k" and err.value.params["limit"] == 50
    for bad in ["", "   ", "x" * 41]:
        with pytest.raises(InvalidInput):
            E.neighbours_of_word(unit, tok, bad)
    for bad_id in [-1, 400, 10**9, "12", None]:
        with pytest.raises(InvalidInput):
            E.neighbours_of_id(unit, tok, bad_id)


# --------------------------------------------------------------------------- PCA


@pytest.mark.parametrize("dims", [2, 3])
def test_projection_has_one_point_per_chosen_word(model, tok, dims):
    words = ["roi", "reine", "king", "queen", "Paris", "France"]
    proj = E.project_words(model, tok, words, k=3, dims=dims)
    assert [p.label for p in proj.words] == words
    assert all(len(p.coords) == dims for p in proj.points)
    ids = [p.ids[0] for p in proj.neighbours]
    assert len(ids) == len(set(ids)) <= 3 * len(words)
    single = {p.ids[0] for p in proj.words if len(p.ids) == 1}
    assert not single & set(ids)  # a chosen word is never repeated as a neighbour
    assert all(0 <= s <= 1 for s in proj.explained) and proj.explained == sorted(proj.explained, reverse=True)
    # PCA is a projection: distances between plotted points can only shrink
    unit = E.unit_embeddings(model)
    full = [unit[list(p.ids)].mean(0) if p.kind == "word" else unit[p.ids[0]] for p in proj.points]
    full = [v / v.norm() for v in full]
    for a, b in [(0, 1), (0, len(full) - 1), (2, 4)]:
        flat = np.linalg.norm(np.subtract(proj.points[a].coords, proj.points[b].coords))
        assert flat <= float((full[a] - full[b]).norm()) + 1e-5
    fig = projection_figure(proj, "t", "words", "neighbours", "axis")
    traces = {tr.name: tr for tr in fig.data}
    assert len(traces["words"].x) == len(words) and list(traces["words"].text) == words
    assert len(traces["neighbours"].x) == len(proj.neighbours)
    spec = json.loads(fig.to_json())
    assert spec["data"][[t.get("name") for t in spec["data"]].index("words")]["type"] == ("scatter3d" if dims == 3 else "scatter")


def test_projection_pooling_and_determinism(tok):
    model = gpt_core_model()
    unit = E.unit_embeddings(model)
    a = E.project_words(model, tok, "reine, roi, Bruxelles", k=2, pooling="first", unit=unit)
    b = E.project_words(model, tok, "reine, roi, Bruxelles", k=2, pooling="first")
    assert a.points == b.points
    multi = E.word_ids(tok, "Bruxelles")
    assert len(multi) > 1  # split into several tokens by this small vocabulary
    mean = E.project_words(model, tok, "reine, roi, Bruxelles", k=2, pooling="mean", unit=unit)
    assert a.neighbours != mean.neighbours or a.points != mean.points
    with pytest.raises(InvalidInput) as err:
        E.project_words(model, tok, "roi, reine", pooling="max")
    assert err.value.code == "embeddings.unknown_pooling" and err.value.params["name"] == "max"


@pytest.mark.parametrize("raw, code", [
    ("", "embeddings.no_words"), (" , ;\n", "embeddings.no_words"),
    (", ".join(f"m{i}" for i in range(13)), "embeddings.too_many_words"),
    ("x" * 41, "embeddings.word_too_long"), (None, "embeddings.words_not_text"),
])
def test_projection_rejects_bad_word_lists(tok, raw, code):
    with pytest.raises(InvalidInput) as err:
        E.project_words(gpt_core_model(), tok, raw)
    assert err.value.code == code


def test_projection_edge_cases(tok):
    model = gpt_core_model()
    assert E.parse_words("roi, roi ,reine\nroi") == ["roi", "reine"]
    with pytest.raises(InvalidInput) as err:
        E.project_words(model, tok, "roi", k=0)
    assert err.value.code == "embeddings.too_few_points"
    assert len(E.project_words(model, tok, "roi", k=1).points) == 2
    with pytest.raises(InvalidInput) as err:
        E.project_words(model, tok, "roi, reine", dims=4)
    assert err.value.code == "embeddings.bad_dims"


def test_axis_labels_are_unique_and_show_spaces():
    assert token_axis_labels(["le", " roi", " roi", "\n"]) == ["0: le", "1: ␣roi", "2: ␣roi", "3: ↵\n"]
