"""run_with_cache gives one Trace structure for every backend."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from gpt_core.config import GPTConfig
from gpt_core.model import GPT
from gpt_core.trace import describe, run_with_cache, unembed


def gpt_core_model():
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny").with_(vocab_size=500)).eval()


def hf_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=500, n_positions=64, n_embd=48, n_layer=2, n_head=4,
                     attn_implementation="eager")
    return GPT2LMHeadModel(cfg).eval()


def hf_llama_gqa():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
                      attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


BACKENDS = {
    "gpt_core": (gpt_core_model, 2, 4, 4, "learned"),
    "hf-gpt2": (hf_gpt2, 2, 4, 4, "learned"),
    "hf-llama-gqa": (hf_llama_gqa, 3, 8, 2, "rotary"),
}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_trace_shapes_and_rows(name):
    make, n_layers, n_heads, n_kv, pos_kind = BACKENDS[name]
    model = make()
    T = 11
    ids = torch.randint(0, 500, (T,), generator=torch.Generator().manual_seed(0))
    logits, tr = run_with_cache(model, ids)
    d = describe(model).d_model
    assert logits.shape == (T, 500)
    assert tr.info.n_layers == n_layers and tr.info.n_heads == n_heads and tr.info.n_kv_heads == n_kv
    assert tr.position_kind == pos_kind
    assert tr.tok_emb.shape == (T, d)
    assert (tr.pos_emb is None) == (pos_kind == "rotary")
    assert len(tr.attentions) == n_layers and len(tr.resid) == n_layers + 1
    for a in tr.attentions:
        assert a.shape == (n_heads, T, T)
        assert torch.allclose(a.sum(-1), torch.ones(n_heads, T), atol=1e-5)
        assert torch.all(torch.triu(a, diagonal=1) == 0)  # causal
    assert all(r.shape == (T, d) for r in tr.resid)
    # the last residual through final norm + head is the model's own prediction
    assert torch.allclose(unembed(model, tr.resid[-1]), logits, atol=1e-4)
    assert torch.allclose(tr.final_norm, tr.final_norm)  # finite
    assert torch.isfinite(tr.final_norm).all()


def test_hooks_removed_and_fused_path_restored():
    model = gpt_core_model()
    run_with_cache(model, [1, 2, 3])
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="At least one token"):
        run_with_cache(model, [])
    assert not any(m._forward_hooks for m in model.modules())


def test_gpt_core_trace_matches_hf_gpt2_trace():
    hf = hf_gpt2()
    ours = GPT.from_hf(hf)
    ids = list(range(5, 25))
    _, a = run_with_cache(ours, ids)
    _, b = run_with_cache(hf, ids)
    for x, y in zip(a.attentions, b.attentions):
        assert torch.allclose(x, y, atol=1e-5)
    for x, y in zip(a.resid, b.resid):
        assert torch.allclose(x, y, atol=1e-4)
    assert torch.allclose(a.pos_emb, b.pos_emb)
    assert torch.allclose(a.final_norm, b.final_norm, atol=1e-4)
