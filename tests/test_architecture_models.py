"""gpt_core.architecture on other families: a tiny random Llama and a tiny random Gemma 3.

Live shapes come from forward hooks on a real forward pass, so they are checked
against the configuration (q_proj (T, nh*hd), k_proj (T, kv*hd), MLP width f, ...),
and the layer kinds against what the attention weights really reach.
"""
import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from gpt_core import architecture as arch
from gpt_core.errors import InvalidInput

V, D = 101, 64
LAYER_TYPES = ["sliding_attention"] * 5 + ["full_attention"]
IDS = [2, 17, 5, 60, 33, 8, 91]          # T = 7 > the Gemma window of 4


def llama(**over):
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, hidden_size=D, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=True,
               attn_implementation="eager")
    return LlamaForCausalLM(LlamaConfig(**{**cfg, **over})).eval()


def gemma(**over):
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, hidden_size=D, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
               num_key_value_heads=1, head_dim=16, sliding_window=4, layer_types=LAYER_TYPES,
               attn_implementation="eager")
    return Gemma3ForCausalLM(Gemma3TextConfig(**{**cfg, **over})).eval()


def shapes(anatomy):
    return {s.path: s.shape for s in anatomy.steps}


def test_llama_live_shapes_follow_the_configuration():
    a = arch.anatomy(llama(), IDS)
    T, s = len(IDS), shapes(a)
    attn = "model.layers.0.self_attn"
    assert s[f"{attn}.q_proj"] == (1, T, 4 * 16)           # nh * hd
    assert s[f"{attn}.k_proj"] == s[f"{attn}.v_proj"] == (1, T, 2 * 16)   # kv * hd
    assert s[f"{attn}.weights"] == (1, 4, T, T)
    assert s["model.layers.0.mlp.gate_proj"] == s["model.layers.0.mlp.up_proj"] == (1, T, 160)
    assert s["model.layers.0.mlp.act_fn"] == (1, T, 160) and s["model.layers.0.mlp.down_proj"] == (1, T, D)
    assert s["model.rotary_emb"] == (1, T, 16)               # cos: one angle per position and head dimension
    assert a.steps[0].path == "model.embed_tokens" and a.steps[-1].path == "lm_head"
    assert a.steps[-1].shape == (1, T, V) and a.steps[-1].params == 0       # tied head
    assert [s.path for s in a.steps if s.role == "block"] == ["model.layers.0", "model.layers.1"]
    roles = [s.role for s in a.steps if s.layer == 0]
    assert roles == ["attn_norm", "q_proj", "k_proj", "v_proj", "scores", "o_proj", "attention", "ffn_norm",
                     "gate_proj", "act", "up_proj", "down_proj", "mlp", "block"]   # the order the forward runs
    assert {s.module for s in a.steps if s.role in arch.NORM_ROLES} == {"LlamaRMSNorm"}
    assert "pos_emb" not in {s.role for s in a.steps}     # no position table
    assert arch.symbol(a.steps[-1], a) == "(B, T, V)"
    assert arch.symbol(next(s for s in a.steps if s.role == "k_proj"), a) == "(B, T, kv·hd)"


def test_llama_facts():
    a = arch.model_facts(llama())
    assert (a.family, a.norm, a.position, a.mlp, a.activation) == ("llama", "rmsnorm", "rotary", "swiglu", "silu")
    assert (a.n_heads, a.n_kv_heads, a.kv_group, a.head_dim, a.d_ff) == (4, 2, 2, 16, 160)
    assert a.rope_theta == {"full": 10000.0} and a.windows == [None, None] and a.layer_kinds == ["full", "full"]
    assert a.tied_head and a.embed_scale is None and not a.qk_norm and not a.sandwich_norm and not a.biases
    assert a.attn_scale == pytest.approx(16 ** -0.5) and a.logit_softcap is None
    assert a.n_params == sum({id(p): p.numel() for p in llama().parameters()}.values())


def test_gemma_live_shapes_and_layer_kinds():
    model = gemma()
    a = arch.anatomy(model, IDS)
    T, s = len(IDS), shapes(a)
    attn = "model.layers.0.self_attn"
    assert s[f"{attn}.q_proj"] == (1, T, 4 * 16) and s[f"{attn}.k_proj"] == s[f"{attn}.v_proj"] == (1, T, 16)
    assert s[f"{attn}.q_norm"] == (1, 4, T, 16) and s[f"{attn}.k_norm"] == (1, 1, T, 16)   # per head, after the view
    assert s["model.layers.0.mlp.up_proj"] == (1, T, 128) and s["model.layers.0.mlp.act_fn"] == (1, T, 128)
    assert {s.note for s in a.steps if s.role == "rope"} == {"sliding_attention", "full_attention"}
    roles = [s.role for s in a.steps if s.layer == 0]
    assert roles[:1] == ["attn_norm"] and roles[-1] == "block"
    assert [r for r in roles if r.endswith("norm")] == ["attn_norm", "q_norm", "k_norm", "post_attn_norm",
                                                        "ffn_norm", "post_ffn_norm"]
    assert a.windows == [4, 4, 4, 4, 4, None] and a.layer_kinds == ["sliding"] * 5 + ["full"]
    # measured on the attention weights: the last token reaches 4 tokens in a sliding layer, all 7 in the global one
    assert a.spans == {0: 4, 1: 4, 2: 4, 3: 4, 4: 4, 5: 7}
    assert all(not m._forward_hooks for m in model.modules())     # every hook removed


def test_gemma_facts():
    a = arch.model_facts(gemma())
    assert (a.family, a.norm, a.mlp, a.activation) == ("gemma3_text", "rmsnorm", "geglu", "gelu_pytorch_tanh")
    assert a.qk_norm and a.sandwich_norm and a.norm_unit_offset and a.tied_head
    assert a.embed_scale == pytest.approx(D ** 0.5)
    assert a.rope_theta == {"sliding": 10000.0, "full": 1000000.0}
    assert (a.n_heads, a.n_kv_heads, a.kv_group, a.head_dim) == (4, 1, 4, 16)


def test_a_long_text_keeps_only_the_last_position_in_the_head(monkeypatch):
    monkeypatch.setattr(arch, "FULL_LOGITS_LIMIT", 10)
    a = arch.anatomy(llama(), IDS)
    head = a.steps[-1]
    assert head.shape == (1, 1, V) and arch.symbol(head, a) == "(B, 1, V)"


@pytest.mark.parametrize("build", [llama, gemma, lambda: gemma(final_logit_softcapping=3.0)])
def test_next_token_walk_on_other_families(build):
    model = build()
    w = arch.next_token_walk(model, IDS, k=10, chunk=3)     # chunks of 3 positions: 3 + 3 + 1
    with torch.no_grad():
        logits = model(torch.tensor([IDS]), use_cache=False).logits[0].float()
    probs = torch.softmax(logits[-1], -1)
    top = [r["prob"] for r in w.top]
    assert len(top) == 10 and 0 < sum(top) <= 1 + 1e-6 and top[0] > 0
    assert top == sorted(top, reverse=True)
    assert top == pytest.approx(torch.topk(probs, 10).values.tolist(), abs=1e-6)
    assert w.greedy_id == w.top[0]["id"] == int(probs.argmax())
    assert [r["predicted_id"] for r in w.per_position] == logits.argmax(-1).tolist()
    assert [r["actual_next_id"] for r in w.per_position] == IDS[1:] + [None]
    assert w.logits_shape == (1, len(IDS), V) and w.last_shape == (1, V)
    assert w.last_only_diff < 1e-5


@pytest.mark.parametrize("build", [llama, gemma])
def test_parameters_add_up(build):
    model = build()
    rows = arch.model_param_rows(model)
    total = sum({id(p): p.numel() for p in model.parameters()}.values())
    assert sum(r.params for r in rows) == total
    head = rows[-1]
    assert head.path == "lm_head" and head.params == 0 and head.shared_with == "model.embed_tokens"
    block = arch.model_block_rows(model, 0)
    assert sum(r.params for r in block) == next(r.params for r in rows if r.path == "model.layers.0")
    assert {r.path: r.params for r in block}["0.self_attn.k_proj"] == D * model.config.num_key_value_heads * 16


def test_counterparts_are_the_model_s_own_classes():
    expected = {"TransformerBlock": "LlamaDecoderLayer", "MultiHeadAttention": "LlamaAttention",
                "LayerNorm": "LlamaRMSNorm", "FeedForward": "LlamaMLP", "GELU": "SiLUActivation"}
    model = llama()
    for name, cls in expected.items():
        found = arch.counterpart(model, name)
        assert found.__name__ == cls
        source, path = arch.class_source(found)
        assert f"class {cls}(" in source and path.startswith("transformers/")
    assert arch.counterpart(model, "GPT") is None
    assert arch.counterpart(gemma(), "GELU").__name__ == "GELUTanh"


@pytest.mark.parametrize("ids, code", [([], "architecture.no_ids"), ([V], "architecture.bad_id"),
                                       ([-1], "architecture.bad_id"), ([1] * 33, "architecture.too_long")])
def test_hostile_ids_on_other_families(ids, code):
    with pytest.raises(InvalidInput) as info:
        arch.anatomy(llama(), ids)
    assert info.value.code == code
    with pytest.raises(InvalidInput):
        arch.next_token_walk(llama(), ids)


@pytest.mark.parametrize("limit", [arch.FULL_LOGITS_LIMIT, 10])    # every position's logits, or the last only
def test_explain_answers_both_from_one_forward_pass(limit, monkeypatch):
    monkeypatch.setattr(arch, "FULL_LOGITS_LIMIT", limit)
    model = gemma(final_logit_softcapping=3.0)
    calls = []
    handle = model.model.embed_tokens.register_forward_hook(lambda *_: calls.append(1))
    try:
        facts, walk = arch.explain(model, IDS, k=5)
    finally:
        handle.remove()
    assert len(calls) == 1
    alone = arch.next_token_walk(model, IDS, k=5)
    assert [r["id"] for r in walk.top] == [r["id"] for r in alone.top]
    assert [r["prob"] for r in walk.top] == pytest.approx([r["prob"] for r in alone.top], abs=1e-6)
    assert walk.per_position == alone.per_position and walk.last_only_diff < 1e-5
    assert shapes(facts) == shapes(arch.anatomy(model, IDS))
