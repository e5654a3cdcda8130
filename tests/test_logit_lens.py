"""gpt_core.logit_lens on our GPT and on Hugging Face models (GPT-2, Llama with GQA)."""
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.logit_lens import check_positions, logit_lens
from gpt_core.model import GPT
from gpt_core.trace import run_with_cache

V = 200


def ours():
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny").with_(vocab_size=V)).eval()


def hf_gpt2():
    torch.manual_seed(1)
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=3, n_head=4,
                                      attn_implementation="eager")).eval()


def hf_llama():
    torch.manual_seed(2)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=32,
                                        attn_implementation="eager")).eval()


IDS = [5, 17, 42, 42, 9, 120, 3, 77]


@pytest.mark.parametrize("make, n_layers", [(ours, 2), (hf_gpt2, 3), (hf_llama, 2)])
def test_last_layer_is_the_models_own_prediction(make, n_layers):
    model = make()
    logits, trace = run_with_cache(model, IDS)
    lens = logit_lens(model, trace, k=4)
    assert lens.layer_names == ["embed"] + [str(i) for i in range(1, n_layers + 1)]
    assert lens.top_ids.shape == (n_layers + 1, len(IDS), 4)
    torch.testing.assert_close(lens.final_logits, logits.float(), atol=1e-5, rtol=1e-5)
    assert np.array_equal(lens.target_ids, logits.argmax(-1).numpy())
    assert np.array_equal(lens.top_ids[-1, :, 0], lens.target_ids)
    assert (lens.target_rank[-1] == 1).all()
    np.testing.assert_allclose(lens.target_prob[-1], torch.softmax(logits, -1).max(-1).values.numpy(), rtol=1e-5)
    # probabilities are sorted and valid everywhere
    assert (np.diff(lens.top_probs, axis=-1) <= 1e-7).all()
    assert ((lens.top_probs >= 0) & (lens.top_probs <= 1)).all()


def test_middle_rows_match_a_manual_projection():
    model = ours()
    _, trace = run_with_cache(model, IDS)
    lens = logit_lens(model, trace, k=3, positions=[2, -1], precision="float32")
    with torch.no_grad():
        for row in range(lens.n_rows):
            manual = model.out_head(model.final_norm(trace.resid[row][[2, 7]]))  # (2, V)
            probs = torch.softmax(manual, -1)
            assert np.array_equal(lens.top_ids[row], torch.topk(probs, 3).indices.numpy())
            for col in range(2):
                target = int(lens.target_ids[col])
                order = torch.argsort(manual[col], descending=True).tolist()
                assert lens.target_rank[row, col] == order.index(target) + 1
                assert lens.target_prob[row, col] == pytest.approx(float(probs[col, target]), rel=1e-5)


def test_embedding_row_is_the_lens_of_token_plus_position():
    model = ours()
    _, trace = run_with_cache(model, IDS)
    lens = logit_lens(model, trace, k=1)
    with torch.no_grad():
        x = model.tok_emb(torch.tensor(IDS)) + model.pos_emb(torch.arange(len(IDS)))
        top = model.out_head(model.final_norm(x)).argmax(-1).numpy()
    assert np.array_equal(lens.top_ids[0, :, 0], top)


def test_one_token_and_first_top1_row():
    model = ours()
    _, trace = run_with_cache(model, [11])
    lens = logit_lens(model, trace, k=2)
    assert lens.positions == [0] and lens.top_ids.shape == (3, 1, 2)
    first = lens.first_layer_reaching_top1(0)
    assert first is not None and (lens.target_rank[:first, 0] > 1).all()
    assert lens.target_rank[first, 0] == 1


@pytest.mark.parametrize("positions, code", [
    ([8], "logit_lens.position_outside"), ([-9], "logit_lens.position_outside"), ([], "logit_lens.no_position"),
    ([1.5], "logit_lens.position_not_whole"), ([True], "logit_lens.position_not_whole"),
])
def test_bad_positions(positions, code):
    with pytest.raises(InvalidInput) as err:
        check_positions(positions, 8)
    assert err.value.code == code
    if code == "logit_lens.position_outside":
        assert err.value.params == {"position": positions[0], "n_tokens": 8}


@pytest.mark.parametrize("k", [0, 101, 2.5, True])
def test_bad_k(k):
    model = ours()
    _, trace = run_with_cache(model, IDS[:3])
    with pytest.raises(InvalidInput) as err:
        logit_lens(model, trace, k=k)
    assert err.value.code == "logit_lens.bad_k"


def test_does_not_modify_the_trace():
    model = ours()
    _, trace = run_with_cache(model, IDS)
    before = [r.clone() for r in trace.resid]
    logit_lens(model, trace, k=5, positions=[0, 3])
    assert all(torch.equal(a, b) for a, b in zip(before, trace.resid))
