"""gpt_core.attention (head scores, types, grid, indices) and the offline bertviz HTML."""
import json
import math
import re

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from gpt_core.attention import (
    causal_mask, clamp_index, classify, grid_panels, head_grid, head_matrix, head_scores, kv_group,
    layer_window, validate_index,
)
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT
from gpt_core.trace import run_with_cache


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny").with_(vocab_size=300)).eval()


def tiny_llama_gqa():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=72, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=64,
                      attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


def causal_softmax(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), -math.inf), -1)


# ------------------------------------------------------------------ real patterns
@pytest.mark.parametrize("make", [tiny_gpt, tiny_llama_gqa])
def test_patterns_rows_sum_to_one_and_are_causal(make):
    model = make()
    _, trace = run_with_cache(model, list(range(5, 17)))
    T = 12
    for layer in range(len(trace.attentions)):
        for head in range(trace.attentions[layer].shape[0]):
            m = head_matrix(trace.attentions, layer, head)
            assert m.shape == (T, T) and m.dtype == np.float32
            np.testing.assert_allclose(m.sum(-1), np.ones(T), atol=1e-5)
            assert np.all(m[causal_mask(T)] == 0)
    grid = head_grid(trace.attentions)
    assert grid.prev.shape == (len(trace.attentions), trace.attentions[0].shape[0])
    assert sum(grid.kind_counts().values()) == grid.n_layers * grid.n_heads


def test_one_token_is_a_1x1_pattern():
    _, trace = run_with_cache(tiny_gpt(), [7])
    m = head_matrix(trace.attentions, 0, 0)
    assert m.shape == (1, 1) and m[0, 0] == pytest.approx(1.0)
    grid = head_grid(trace.attentions)
    assert np.isnan(grid.prev).all() and np.isnan(grid.norm_entropy).all()
    assert grid.entropy == pytest.approx(np.zeros_like(grid.entropy))
    assert {k for row in grid.kinds for k in row} == {"undetermined"}


# ------------------------------------------------------- scores of known patterns
def stack(*patterns):
    return torch.stack([torch.as_tensor(p, dtype=torch.float32) for p in patterns])


def previous_pattern(T):
    a = torch.zeros(T, T)
    a[0, 0] = 1
    a[torch.arange(1, T), torch.arange(0, T - 1)] = 1
    return a


def first_pattern(T):
    a = torch.zeros(T, T)
    a[:, 0] = 1
    return a


def test_scores_and_types_of_textbook_heads():
    T = 6
    uniform = causal_softmax(torch.zeros(T, T))
    s = head_scores(stack(previous_pattern(T), first_pattern(T), torch.eye(T), uniform))
    assert s.prev == pytest.approx([1, 0, 0, np.mean([1 / 3, 1 / 4, 1 / 5, 1 / 6])])
    assert s.first == pytest.approx([0, 1, 0, np.mean([1 / 3, 1 / 4, 1 / 5, 1 / 6])])
    assert s.self_ == pytest.approx([0, 0, 1, np.mean([1 / 3, 1 / 4, 1 / 5, 1 / 6])])
    # one-hot rows have zero entropy; uniform row i has log2(i + 1) bits
    assert s.entropy[:3] == pytest.approx([0, 0, 0])
    assert s.entropy[3] == pytest.approx(np.mean([math.log2(i + 1) for i in range(T)]))
    assert s.norm_entropy[3] == pytest.approx(1.0)
    kinds = [classify(s.prev[h], s.first[h], s.self_[h], s.norm_entropy[h]) for h in range(4)]
    assert kinds == ["previous", "first", "self", "broad"]


def test_mixed_when_nothing_dominates():
    # row i puts 0.4 on itself, 0.4 on the previous token, 0.2 on the first: no score reaches 0.5,
    # and three keys out of up to ten is far from uniform
    T = 10
    a = torch.zeros(T, T)
    a[0, 0] = 1
    a[1, 0], a[1, 1] = 0.5, 0.5
    for i in range(2, T):
        a[i, i], a[i, i - 1], a[i, 0] = 0.4, 0.4, 0.2
    s = head_scores(a[None])
    assert s.prev[0] == pytest.approx(0.4) and s.self_[0] == pytest.approx(0.4) and s.first[0] == pytest.approx(0.2)
    assert classify(s.prev[0], s.first[0], s.self_[0], s.norm_entropy[0]) == "mixed"


def test_two_tokens_use_the_second_query():
    a = torch.tensor([[[1.0, 0.0], [0.3, 0.7]]])
    s = head_scores(a)
    assert s.prev[0] == pytest.approx(0.3) and s.first[0] == pytest.approx(0.3) and s.self_[0] == pytest.approx(0.7)


def test_head_scores_does_not_modify_its_input():
    a = causal_softmax(torch.randn(3, 7, 7, generator=torch.Generator().manual_seed(1)))
    before = a.clone()
    head_scores(a)
    assert torch.equal(a, before)


@pytest.mark.parametrize("bad", [torch.zeros(4, 4), torch.zeros(2, 3, 4), torch.zeros(2, 0, 0)])
def test_bad_pattern_shapes_are_rejected(bad):
    with pytest.raises(InvalidInput) as err:
        head_scores(bad)
    assert err.value.code == "attention.bad_pattern_shape"
    assert err.value.params["shape"] == str(tuple(bad.shape))


# --------------------------------------------------------------- grid and windows
def test_grid_panels_cover_layers_times_heads():
    atts = [causal_softmax(torch.randn(4, 5, 5)) for _ in range(3)]
    panels = grid_panels(atts, range(3))
    assert len(panels) == 3 * 4
    assert [(l, h) for l, h, _ in panels] == [(l, h) for l in range(3) for h in range(4)]
    np.testing.assert_allclose(panels[5][2], atts[1][1].numpy())
    assert grid_panels([a.numpy() for a in atts], [2])[0][2].shape == (5, 5)  # numpy input too


def test_layer_window_limits_the_number_of_panels():
    assert layer_window(30, 9, 0) == range(0, 5)        # SmolLM2: 45 panels at most
    assert layer_window(30, 9, 28) == range(25, 30)     # the last window stays full
    assert layer_window(12, 12, 4) == range(4, 8)       # GPT-2: 4 layers of 12 heads
    assert layer_window(2, 4, 0) == range(0, 2)         # a tiny model fits entirely
    assert layer_window(30, 9, 99) == range(25, 30)     # out of range start: clamped


def test_kv_groups_of_smollm2():
    assert [kv_group(h, 9, 3) for h in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [kv_group(h, 12, 12) for h in range(3)] == [0, 1, 2]
    with pytest.raises(InvalidInput):
        kv_group(0, 9, 2)
    with pytest.raises(InvalidInput):
        kv_group(9, 9, 3)


# ----------------------------------------------------------------- user indices
@pytest.mark.parametrize("value, n, expected", [
    (0, 12, 0), ("11", 12, 11), (" 3 ", 12, 3), (np.int64(2), 4, 2),
])
def test_valid_indices(value, n, expected):
    assert validate_index(value, n, "layer") == expected
    assert clamp_index(value, n) == (expected, None)


@pytest.mark.parametrize("value, n, expected", [
    ("99", 12, (11, "out_of_range")), (-1, 12, (0, "out_of_range")), ("abc", 12, (0, "not_a_number")),
    ("1.5", 12, (0, "not_a_number")), (1.5, 12, (0, "not_a_number")), (True, 12, (0, "not_a_number")),
    (None, 12, (0, "not_a_number")), ("", 3, (0, "not_a_number")), (10**30, 3, (2, "out_of_range")),
    (float("nan"), 3, (0, "not_a_number")),
])
def test_hostile_indices_are_clamped_with_a_reason(value, n, expected):
    assert clamp_index(value, n) == expected
    with pytest.raises(InvalidInput) as err:
        validate_index(value, n, "layer")
    assert err.value.code in ("attention.not_an_index", "attention.index_out_of_range")
    assert err.value.params["field"] == "layer" and err.value.params["last"] == n - 1


def test_head_matrix_rejects_out_of_range():
    atts = [causal_softmax(torch.zeros(2, 3, 3))]
    with pytest.raises(InvalidInput) as err:
        head_matrix(atts, 0, 2)
    assert err.value.code == "attention.index_out_of_range"
    assert err.value.params == {"field": "head", "last": 1, "value": 2}
    with pytest.raises(InvalidInput) as err:
        head_matrix(atts, 1, 0)
    assert err.value.code == "attention.index_out_of_range"
    assert err.value.params == {"field": "layer", "last": 0, "value": 1}


# --------------------------------------------------------------- bertviz offline
bertviz_offline = pytest.importorskip("explorer.figures.bertviz_html")
needs_vendor = pytest.mark.skipif(not bertviz_offline.vendor_available(),
                                  reason="offline JS not installed: run bash scripts/vendor_js.sh")


def params_of(html: str) -> dict:
    """The params object bertviz's script receives (our compact numbers made JSON again)."""
    line = re.search(r"const params = (.*?);\s*\n", html).group(1)
    line = re.sub(r"(?<=[\[,])\.(?=\d)", "0.", line)
    return json.loads(line)


@needs_vendor
@pytest.mark.parametrize("view", ["head", "model"])
def test_bertviz_html_is_self_contained(view):
    _, trace = run_with_cache(tiny_gpt(), list(range(3, 11)))
    tokens = [f"t{i}" for i in range(8)]
    html = bertviz_offline.bertviz_html(trace.attentions, tokens, view=view, layers=[1])
    assert not bertviz_offline.has_remote_script(html)
    assert "cdnjs" not in html and not re.search(r"src\s*=\s*[\"']?https?:", html)
    assert 'version="5.7.0"' in html and "jQuery v2.2.4" in html and "version = '2.3.6'" in html
    params = params_of(html)
    assert params["include_layers"] == [1]
    attn = np.array(params["attention"][0]["attn"])
    assert attn.shape == (1, 4, 8, 8)                     # only the chosen layer is embedded
    expected = np.round(trace.attentions[1].double().numpy(), 3)
    np.testing.assert_allclose(attn[0], expected, atol=1e-12)


@needs_vendor
def test_bertviz_tokens_cannot_close_the_script():
    _, trace = run_with_cache(tiny_gpt(), [1, 2, 3])
    evil = ["</script><script>alert(1)</script>", "<b>", "ok"]
    html = bertviz_offline.bertviz_html(trace.attentions, evil, view="head")
    # our five script elements (d3, jQuery, require.js, the AMD shim, bertviz) are the only ones closed
    assert html.count("</script>") == 5
    assert "alert(1)</script>" not in html
    assert params_of(html)["attention"][0]["left_text"] == evil


def test_remote_script_checker_sees_bertvizs_cdn_tags():
    from bertviz import head_view

    atts = [causal_softmax(torch.zeros(1, 2, 2))[None]]
    raw = head_view(atts, ["a", "b"], html_action="return").data
    assert bertviz_offline.has_remote_script(raw)


def test_missing_vendor_files_raise(tmp_path):
    atts = [causal_softmax(torch.zeros(2, 3, 3))]
    with pytest.raises(bertviz_offline.VendorMissing, match="vendor_js.sh"):
        bertviz_offline.bertviz_html(atts, ["a", "b", "c"], vendor_dir=tmp_path)


@pytest.mark.parametrize("layers", [[], [5], [-1]])
def test_bertviz_rejects_bad_layers(layers):
    atts = [causal_softmax(torch.zeros(2, 3, 3))] * 2
    with pytest.raises(ValueError):
        bertviz_offline.bertviz_html(atts, ["a", "b", "c"], layers=layers)


@needs_vendor
@pytest.mark.parametrize("view", ["head", "model"])
def test_bertviz_words_follow_the_ui_language(view):
    _, trace = run_with_cache(tiny_gpt(), [1, 2, 3])
    french = {"layer_select": "Couche :", "layers": "Couches", "heads": "Têtes", "detail_layer": "Couche ",
              "detail_head": ", tête "}
    html = bertviz_offline.bertviz_html(trace.attentions, ["a", "b", "c"], view=view, labels=french)
    english = bertviz_offline.bertviz_html(trace.attentions, ["a", "b", "c"], view=view)
    if view == "head":
        assert "Couche : <select" in html and "Layer: <select" not in html and "Layer: <select" in english
    else:
        assert '.text("T\\u00eates")' in html and '.text("Couches")' in html
        assert '.text("Couche " + config.layers[layerIndex] + ", t\\u00eate " + config.heads' in html
        assert '.text("Heads")' in english and '.text("Heads")' not in html and "'Layer '" not in html


def test_bertviz_labels_are_escaped():
    head, code = bertviz_offline.translate('Layer: <select id="layer">', '.text("Heads")',
                                           {"layer_select": "<b>C</b>", "heads": '"</script>'})
    assert head == '&lt;b&gt;C&lt;/b&gt; <select id="layer">'
    assert code == '.text("\\"<\\/script>")'
