"""Parity of the from-scratch GPT with Hugging Face GPT-2 on random weights."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT, load_checkpoint, save_checkpoint

SMALL = dict(vocab_size=1000, n_positions=64, n_embd=64, n_layer=3, n_head=4)


def hf_model(**kw):
    torch.manual_seed(0)
    cfg = GPT2Config(**kw, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    # random, non-trivial LayerNorm parameters so the mapping of every tensor is exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)
    return model


@pytest.fixture(scope="module")
def small_pair():
    hf = hf_model(**SMALL)
    return hf, GPT.from_hf(hf)


@pytest.fixture(scope="module")
def full_pair():
    hf = hf_model(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    return hf, GPT.from_hf(hf)


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("explicit", [False, True])
def test_small_parity_both_paths(small_pair, explicit):
    hf, ours = small_pair
    ours.set_explicit_attention(explicit)
    ids = torch.randint(0, 1000, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = max_diff(ours(ids), hf(ids).logits)
    ours.set_explicit_attention(False)
    assert diff < 1e-4


@pytest.mark.parametrize("explicit", [False, True])
def test_full_gpt2_config_parity(full_pair, explicit):
    hf, ours = full_pair
    ours.set_explicit_attention(explicit)
    ids = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = max_diff(ours(ids), hf(ids).logits)
    ours.set_explicit_attention(False)
    assert diff < 1e-4


@pytest.mark.parametrize("explicit", [False, True])
def test_kv_cache_matches_full_forward_and_hf(small_pair, explicit):
    hf, ours = small_pair
    ours.set_explicit_attention(explicit)
    ids = torch.randint(0, 1000, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = hf(ids).logits
        cache = ours.new_cache()
        pieces = [ours(ids[:, :10], cache)]  # prefill 10
        pieces.append(ours(ids[:, 10:17], cache))  # a chunk of 7 with past
        for t in range(17, 30):  # one token at a time
            pieces.append(ours(ids[:, t:t + 1], cache))
    ours.set_explicit_attention(False)
    assert cache.length == 30
    assert max_diff(torch.cat(pieces, dim=1), full) < 1e-4


def test_last_only_and_context_limit(small_pair):
    _, ours = small_pair
    ids = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():
        assert torch.allclose(ours(ids, last_only=True)[:, 0], ours(ids)[:, -1], atol=1e-5)
        with pytest.raises(ValueError, match="context window of 64") as exc:
            ours(torch.zeros(1, 65, dtype=torch.long))
    assert isinstance(exc.value, InvalidInput) and exc.value.code == "model.context_overflow"
    assert exc.value.params == {"n": 65, "limit": 64}
    assert str(exc.value) == "65 positions exceed the context window of 64 tokens."


@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
def test_decode_step_matches_forward(small_pair, attention):
    # the static-shape step (as captured in CUDA graphs) gives the logits of the ordinary forward pass
    _, ours = small_pair
    ids = torch.randint(0, 1000, (1, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = ours(ids)
        cache = ours.new_cache(1, 64)
        ours(ids[:, :8], cache)  # prefill fills the cache up to position 8
        steps = [ours.decode_step(ids[:, t:t + 1], torch.tensor([t]), cache, 32, attention)
                 for t in range(8, 20)]
    assert all(s.shape == (1, 1, 1000) for s in steps)
    assert max_diff(torch.cat(steps, dim=1), full[:, 8:]) < 1e-4


def test_checkpoint_errors_have_codes(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InvalidInput) as exc:
        load_checkpoint(tmp_path)
    assert exc.value.code == "model.not_a_checkpoint"


def test_from_state_dict_and_tied_head(small_pair):
    hf, _ = small_pair
    ours = GPT.from_hf(hf.state_dict(), n_heads=4)
    assert ours.out_head.weight.data_ptr() == ours.tok_emb.weight.data_ptr()
    assert ours.cfg.n_layers == 3 and ours.cfg.n_heads == 4
    ids = torch.randint(0, 1000, (1, 9))
    with torch.no_grad():
        assert max_diff(ours(ids), hf(ids).logits) < 1e-4


def test_parameter_count_matches_gpt2_124m():
    model = GPT(GPTConfig.preset("gpt2"))
    assert model.num_parameters() == 124_439_808


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=100, n_heads=3)
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(n_layers=0)
    with pytest.raises(ValueError, match="Unknown preset"):
        GPTConfig.preset("gpt5")


def test_checkpoint_round_trip_and_crash_safety(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny").with_(vocab_size=300))
    save_checkpoint(model, tmp_path / "ck")
    again = load_checkpoint(tmp_path / "ck")
    ids = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids), again(ids))
    # a crash in the middle of a second save leaves the first checkpoint loadable
    import gpt_core.model as m

    def boom(*a, **k):
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(m.os, "replace", boom)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tmp_path / "ck")
    monkeypatch.undo()
    still = load_checkpoint(tmp_path / "ck")
    with torch.no_grad():
        assert torch.equal(still(ids), again(ids))
