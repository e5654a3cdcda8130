"""Attention and logit lens on Gemma 3: sliding-window and global layers, one shared K/V head, <bos>, soft-cap.

A tiny random Gemma3 (window 4, layers slide, slide, global, slide, slide, global,
a final logit soft-cap of 3) runs everywhere; the real embedded Gemma 3 270M
is checked when it is installed.
"""
import numpy as np
import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from gpt_core.attention import (analyse_attention, head_grid, head_scores, layer_windows, window_applies,
                                window_mask)
from gpt_core.backend import backend_of
from gpt_core.logit_lens import lean_trace, logit_lens

from explorer.figures.attention import head_heatmap

WINDOW = 4
KINDS = ["sliding_attention", "sliding_attention", "full_attention"] * 2
IDS = [2, 17, 42, 42, 9, 120, 3, 77, 250, 5, 64, 11]       # 12 tokens: 3 times the window
CAP = 3.0


@pytest.fixture(scope="module")
def gemma():
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=WINDOW,
                           layer_types=KINDS, final_logit_softcapping=CAP, max_position_embeddings=64,
                           attn_implementation="eager")
    return Gemma3ForCausalLM(cfg).eval()


def test_info_names_each_layer_kind(gemma):
    info = backend_of(gemma).info()
    assert info.attention_windows == [WINDOW, WINDOW, None, WINDOW, WINDOW, None]
    assert layer_windows(info) == [4, 4, None, 4, 4, None]
    assert (info.n_heads, info.n_kv_heads, info.final_logit_softcap) == (4, 1, CAP)


def test_trace_shapes_rows_and_window_on_every_layer_type(gemma):
    attentions, grid, info = analyse_attention(gemma, IDS)
    T = len(IDS)
    assert len(attentions) == 6 and all(a.shape == (4, T, T) and a.dtype == np.float32 for a in attentions)
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    outside = window_mask(T, WINDOW)
    assert outside.sum() == sum(range(1, T - WINDOW + 1))        # rows 4..11 lose 1..8 keys
    for layer, a in enumerate(attentions):
        np.testing.assert_allclose(a.sum(-1), np.ones((4, T)), atol=1e-5)   # every row sums to 1
        assert (a[:, future] == 0).all()
        if info.attention_windows[layer]:                        # keys beyond the window get exactly 0
            assert (a[:, outside] == 0).all()
        else:                                                    # a global layer does look that far back
            assert (a[:, outside] > 0).all()
    assert grid.prev.shape == (6, 4)


def test_window_helpers():
    assert [a.tolist() for a in window_mask(6, 4).nonzero()] == [[4, 5, 5], [0, 0, 1]]
    assert not window_mask(6, None).any()
    assert window_applies(513, 512) and not window_applies(512, 512) and not window_applies(600, None)


def test_normalised_entropy_counts_only_the_keys_in_the_window():
    T, W = 8, 3
    rows = torch.zeros(T, T)
    for i in range(T):
        lo = max(0, i - W + 1)
        rows[i, lo:i + 1] = 1 / (i + 1 - lo)                     # uniform over the window
    s = head_scores(rows[None], windows=[W])
    assert s.norm_entropy[0] == pytest.approx(1.0)
    assert head_scores(rows[None]).norm_entropy[0] < 0.9        # against the whole past it looks peaked
    grid = head_grid([rows[None], rows[None]], windows=[W, None])
    assert grid.norm_entropy[0, 0] == pytest.approx(1.0) and grid.norm_entropy[1, 0] < 0.9


def test_lens_last_row_is_the_real_soft_capped_logits(gemma):
    with torch.no_grad():
        real = gemma(torch.tensor([IDS])).logits[0]              # transformers applies the soft-cap itself
    assert real.abs().max() < CAP
    trace = lean_trace(gemma, IDS)
    for precision in ("float32", "auto"):
        lens = logit_lens(gemma, trace, k=5, precision=precision)
        torch.testing.assert_close(lens.final_logits, real, atol=1e-5, rtol=1e-5)
        assert np.array_equal(lens.target_ids, real.argmax(-1).numpy())
        assert (lens.target_rank[-1] == 1).all()
        assert lens.softcap == CAP and lens.norm == "Gemma3RMSNorm"
    probs = torch.softmax(real, -1)
    np.testing.assert_allclose(lens.top_probs[-1], torch.topk(probs, 5).values.numpy(), rtol=1e-5)


def test_lens_middle_rows_are_the_backends_unembedding(gemma):
    trace = lean_trace(gemma, IDS)
    lens = logit_lens(gemma, trace, k=3, positions=[3, -1], precision="float32")
    backend = backend_of(gemma)
    for row in range(lens.n_rows):
        logits = backend.unembed(trace.resid[row][[3, 11]])      # norm, tied head, soft-cap
        probs = torch.softmax(logits, -1)
        assert np.array_equal(lens.top_ids[row], torch.topk(probs, 3).indices.numpy())
        np.testing.assert_allclose(lens.top_probs[row], torch.topk(probs, 3).values.numpy(), rtol=1e-4)
        for col in range(2):
            target = int(lens.target_ids[col])
            assert lens.target_rank[row, col] == int((logits[col] > logits[col, target]).sum()) + 1


def test_bfloat16_lens_stays_close_to_float32(gemma):
    trace = lean_trace(gemma, IDS)
    exact = logit_lens(gemma, trace, k=5, precision="float32")
    fast = logit_lens(gemma, trace, k=5, precision="bfloat16")
    assert (exact.precision, fast.precision) == ("float32", "bfloat16")
    np.testing.assert_allclose(fast.top_probs, exact.top_probs, atol=5e-3)
    np.testing.assert_allclose(fast.target_prob, exact.target_prob, atol=5e-3)
    torch.testing.assert_close(fast.final_logits, exact.final_logits)  # the last row is float32 either way
    assert np.array_equal(fast.top_ids[-1], exact.top_ids[-1])


def test_lean_trace_projects_the_last_position_only(gemma):
    trace = lean_trace(gemma, IDS)
    with torch.no_grad():
        real = gemma(torch.tensor([IDS])).logits[0]
    assert trace.logits.shape == (1, 300)
    torch.testing.assert_close(trace.logits[0], real[-1], atol=1e-5, rtol=1e-5)
    lens = logit_lens(gemma, trace, k=2, positions=[2, -1])                 # reuses it for the last column
    torch.testing.assert_close(lens.final_logits, real[[2, -1]], atol=1e-5, rtol=1e-5)


def test_heatmap_draws_the_window_only_when_it_hides_something():
    T = 7
    m = np.tril(np.ones((T, T))) * ~window_mask(T, 3)
    m = m / m.sum(1, keepdims=True)
    fig = head_heatmap(m, [str(i) for i in range(T)], "t", "q", "k", "future", "%{z}", window=3,
                       window_name="outside the window")
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[window_mask(T, 3)]).all() and not np.isnan(z[~window_mask(T, 3) & (np.tril(m) > 0)]).any()
    assert [d.name for d in fig.data[1:]] == ["future", "outside the window"]
    xs, ys = fig.data[2].x, fig.data[2].y                        # the staircase around cells j <= i - 3
    assert (xs[0], ys[0]) == (-0.5, 2.5) and max(xs) == T - 3 - 0.5 and max(ys) == T - 0.5
    covered = head_heatmap(m[:3, :3], ["0", "1", "2"], "t", "q", "k", "future", "%{z}", window=3, window_name="w")
    assert [d.name for d in covered.data[1:]] == ["future"]     # a short text: nothing is out of the window


# ------------------------------------------------------------------ the real embedded Gemma 3 270M
@pytest.fixture(scope="module")
def real_gemma():
    from gpt_core.registry import GEMMA_MODEL, is_available_offline, load_model

    if not is_available_offline(GEMMA_MODEL):
        pytest.skip("the embedded Gemma 3 270M is not installed (see the README)")
    return load_model(GEMMA_MODEL)


def test_real_gemma_attention_on_sliding_and_global_layers(real_gemma):
    tok = real_gemma.tokenizer
    ids = tok.encode_for_model("Le chat dort sur le canapé parce qu'il est fatigué.")
    assert ids[0] == 2 and tok.model_prefix == (2,)
    attentions, grid, info = analyse_attention(real_gemma.model, ids)
    T = len(ids)
    assert info.attention_windows == ([512] * 5 + [None]) * 3
    assert len(attentions) == 18 and all(a.shape == (4, T, T) for a in attentions)
    for a in attentions:
        np.testing.assert_allclose(a.sum(-1), np.ones((4, T)), atol=1e-4)
        assert (a[:, np.triu(np.ones((T, T), dtype=bool), 1)] == 0).all()
    assert float(np.nanmean(grid.first)) > 0.3                  # <bos> is an attention sink


def test_real_gemma_lens_ends_on_the_models_next_token(real_gemma):
    model, tok = real_gemma.model, real_gemma.tokenizer
    ids = tok.encode_for_model("Un, deux, trois, quatre,")
    lens = logit_lens(model, lean_trace(model, ids), k=5, positions=[-1])
    with torch.no_grad():
        real = backend_of(model).next_token_logits(ids).float()
    torch.testing.assert_close(lens.final_logits[0], real, atol=1e-4, rtol=1e-4)
    assert tok.decode([int(lens.target_ids[0])]) == " cinq"
    assert lens.top_probs[-1, 0, 0] == pytest.approx(float(torch.softmax(real, -1).max()), abs=1e-4)
