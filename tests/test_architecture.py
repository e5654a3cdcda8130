"""gpt_core.architecture: real source, live shapes, parameter counts, HF parity, last position."""
import inspect

import pytest
import torch

import gpt_core.model as model_module
from gpt_core import architecture as arch
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT

CFG = GPTConfig.preset("tiny").with_(vocab_size=300)


def tiny():
    torch.manual_seed(0)
    return GPT(CFG).eval()


@pytest.mark.parametrize("name", arch.MODULE_NAMES)
def test_code_panels_are_the_real_source(name):
    src = arch.module_source(name)
    assert src == inspect.getsource(getattr(model_module, name))
    assert src.startswith(f"class {name}(")
    assert arch.source_file().endswith("gpt_core/model.py")


def test_unknown_module_is_rejected():
    with pytest.raises(InvalidInput, match="not a module"):
        arch.module_source("os")


def test_live_shapes_follow_the_forward_pass():
    model = tiny()
    T = 7
    steps = arch.live_shapes(model, list(range(T)))
    shapes = {s.path: s.shape for s in steps}
    d, V = CFG.d_model, CFG.vocab_size
    assert [s.path for s in steps][:3] == ["tok_emb", "pos_emb", "drop_emb"]
    assert steps[-1].path == "out_head" and steps[-1].shape == (1, T, V)
    assert shapes["tok_emb"] == (1, T, d) and shapes["pos_emb"] == (T, d)
    assert shapes["blocks.0.att.qkv"] == (1, T, 3 * d)
    assert shapes["blocks.0.att.hook_pattern"] == (1, CFG.n_heads, T, T)
    assert shapes["blocks.0.ff.fc_in"] == (1, T, 4 * d) and shapes["blocks.0.ff.act"] == (1, T, 4 * d)
    assert [s.path for s in steps if s.module == "TransformerBlock"] == [f"blocks.{i}" for i in range(CFG.n_layers)]
    assert "blocks.1.att.qkv" not in shapes  # only block 0 is detailed by default
    assert "blocks.1.att.qkv" in {s.path for s in arch.live_shapes(model, [1, 2], detail_block=1)}
    params = {s.path: s.params for s in steps}
    assert params["blocks.0.att.qkv"] == d * 3 * d + 3 * d and params["out_head"] == 0  # tied head
    assert arch.symbolic_shape("blocks.0.att.hook_pattern") == "(B, nh, T, T)"
    assert arch.symbolic_shape("blocks.3") == "(B, T, d)"
    # hooks are removed and the fused attention path is back
    assert not model.blocks[0].att.hook_pattern.has_hooks()
    assert all(not m._forward_hooks for m in model.modules())


def test_parameter_counts_add_up():
    model = tiny()
    rows = arch.param_rows(model)
    assert sum(r.params for r in rows) == model.num_parameters()
    head = rows[-1]
    assert head.path == "out_head" and head.params == 0 and head.shared_with == "tok_emb"
    d = CFG.d_model
    block = arch.block_rows(model, 0)
    assert sum(r.params for r in block) == next(r.params for r in rows if r.path == "blocks.0")
    assert {r.path.split(".", 2)[2]: r.params for r in block} == {
        "norm1": 2 * d, "att.qkv": 3 * d * d + 3 * d, "att.out_proj": d * d + d, "norm2": 2 * d,
        "ff.fc_in": 4 * d * d + 4 * d, "ff.fc_out": 4 * d * d + d}


def test_parity_on_random_gpt2_weights_is_under_1e_4():
    # the real GPT-2 small configuration (124M), random weights, converted with GPT.from_hf
    result = arch.parity_random("gpt2", seed=0, n_tokens=12)
    assert result.config == {"vocab_size": 50257, "context_length": 1024, "d_model": 768, "n_layers": 12,
                             "n_heads": 12}
    assert result.weights == "random" and result.n_tokens == 12
    assert result.max_abs_diff < 1e-4 and result.ok
    assert result.max_abs_logit > 0.1  # logits are not trivially zero


def test_parity_with_the_same_weights_and_its_failure():
    model = tiny()
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    result = arch.parity_same_weights(model, ids)
    assert result.ok and result.max_abs_diff < 1e-4 and result.size == "model"
    hf = arch.to_hf_gpt2(model)
    assert hf.lm_head.weight is hf.transformer.wte.weight
    with torch.no_grad():
        # a real difference must show (not a constant shift of the residual: LayerNorm removes those)
        model.blocks[1].ff.fc_out.weight[0, :] += 0.5
    diff, _ = arch.max_logit_diff(model, hf, ids)
    assert diff > 1e-3


def test_last_position_walk():
    model = tiny()
    ids = [10, 20, 30, 40, 50]
    w = arch.last_position_walk(model, ids, k=4)
    assert w.logits_shape == (1, 5, CFG.vocab_size) and w.last_shape == (1, CFG.vocab_size)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0]
    assert w.greedy_id == int(logits[-1].argmax()) == w.top[0]["id"]
    assert [r["rank"] for r in w.top] == [1, 2, 3, 4]
    assert all(a["prob"] >= b["prob"] for a, b in zip(w.top, w.top[1:]))
    assert [r["actual_next_id"] for r in w.per_position] == [20, 30, 40, 50, None]
    assert [r["predicted_id"] for r in w.per_position] == logits.argmax(-1).tolist()
    assert w.last_only_diff < 1e-5


@pytest.mark.parametrize("ids, message", [
    ([], "at least one"), ([0] * 129, "context window"), ([300], "between 0 and 299"), ([-1], "between 0"),
])
def test_hostile_ids(ids, message):
    with pytest.raises(InvalidInput, match=message):
        arch.live_shapes(tiny(), ids)


def test_needs_our_gpt():
    with pytest.raises(InvalidInput, match="from-scratch GPT"):
        arch.last_position_walk(torch.nn.Linear(2, 2), [1])
