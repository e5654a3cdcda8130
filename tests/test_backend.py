"""gpt_core.backend: the one model seam answers the same questions for every family.

Families: our GPT, Hugging Face GPT-2, a Llama-style model with grouped-query
attention, and peft (LoRA) wrappers of them. Adding a family means adding it to
FAMILIES below and to backend.py, nothing else.
"""
import json

import pytest
import torch
import torch.nn as nn
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)

from gpt_core.backend import GPT_LORA_TARGETS, backend_of, own_gpt, unwrap
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT, load_checkpoint

VOCAB = 500


def ours():
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny").with_(vocab_size=VOCAB, context_length=96)).eval()


def hf_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=80, n_embd=48, n_layer=2, n_head=4,
                                      attn_implementation="eager")).eval()


def hf_llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
                                        attn_implementation="eager")).eval()


def hf_gemma3(softcap=None):
    torch.manual_seed(0)
    return Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, sliding_window=4, max_position_embeddings=128,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        final_logit_softcapping=softcap, attn_implementation="eager")).eval()


# family: (factory, kind, context, layers, d_model, position table?)
FAMILIES = {
    "gpt_core": (ours, "gpt_core", 96, 2, 64, True),
    "hf-gpt2": (hf_gpt2, "hf", 80, 2, 48, True),
    "hf-llama": (hf_llama, "hf", 128, 3, 64, False),
    "hf-gemma3": (hf_gemma3, "hf", 128, 3, 64, False),
}


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    targets = backend_of(model).lora_targets()
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())
    return get_peft_model(model, LoraConfig(r=2, target_modules=targets, fan_in_fan_out=conv1d))


IDS = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(1)).tolist()


@pytest.fixture(params=[(name, wrapped) for name in FAMILIES for wrapped in (False, True)],
                ids=lambda p: p[0] + ("+lora" if p[1] else ""))
def case(request):
    name, wrapped = request.param
    make, *facts = FAMILIES[name]
    model = make()
    return (with_lora(model) if wrapped else model), facts


def full_logits(model, ids):
    out = model(torch.tensor([ids]))
    return (out if torch.is_tensor(out) else out.logits)[0]


def test_description(case):
    model, (kind, context, layers, d_model, table) = case
    b = backend_of(model)
    info = b.info()
    assert b.kind == kind
    assert b.context_length == info.context_length == context
    assert b.vocab_size == info.vocab_size == VOCAB
    assert b.d_model == info.d_model == d_model
    assert len(b.blocks()) == info.n_layers == layers
    assert b.embedding_matrix().shape == (VOCAB, d_model)
    assert (b.position_matrix() is not None) == table and info.position_kind == ("learned" if table else "rotary")
    assert (own_gpt(model) is not None) == (kind == "gpt_core")
    assert unwrap(model) is b.base


def test_logits_agree_with_the_model(case):
    model, _ = case
    b = backend_of(model)
    full = full_logits(model, IDS)
    with torch.no_grad():
        torch.testing.assert_close(b.next_token_logits(IDS), full[-1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.logits(torch.tensor([IDS]))[0], full, atol=1e-5, rtol=1e-5)
        logits, trace = b.run_with_cache(IDS)
    torch.testing.assert_close(logits, full, atol=1e-4, rtol=1e-4)
    # the logit lens of the last residual is the model's own prediction
    torch.testing.assert_close(b.unembed(trace.resid[-1]), full, atol=1e-4, rtol=1e-4)
    assert isinstance(b.final_norm(), nn.Module)


def test_incremental_decoding_matches_the_full_pass(case):
    model, _ = case
    b = backend_of(model)
    full = full_logits(model, IDS).float()
    with torch.no_grad():
        stepper = b.stepper(max_len=len(IDS) + 1)
        first = stepper.prefill(torch.tensor([IDS[:-2]]))
        second = stepper.step(torch.tensor([IDS[-2]]))
        stepper.reorder(torch.tensor([0, 0]))  # a batch of one grows into two beams
        third = stepper.step(torch.tensor([IDS[-1], IDS[-1]]))
    torch.testing.assert_close(first[0], full[-3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second[0], full[-2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(third, full[-1].expand(2, -1), atol=1e-4, rtol=1e-4)


def test_param_groups_count_shared_weights_once(case):
    model, _ = case
    groups = backend_of(model).param_groups(0.1)
    params = [p for g in groups for p in g["params"]]
    assert len({id(p) for p in params}) == len(params)  # the tied head is not counted twice
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in params} == trainable
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.1
    assert all(p.dim() < 2 for g in groups[1:] for p in g["params"])


def test_lora_targets():
    assert backend_of(ours()).lora_targets() == list(GPT_LORA_TARGETS)
    assert backend_of(hf_gpt2()).lora_targets() is None  # peft knows GPT-2's layers


@pytest.mark.parametrize("name", list(FAMILIES))
def test_replace_head_unties_and_predicts_classes(name):
    model = FAMILIES[name][0]()
    b = backend_of(model)
    head = nn.Linear(b.d_model, 3)
    b.replace_head(head)
    assert full_logits(model, IDS).shape == (len(IDS), 3)
    assert b.embedding_matrix().shape == (VOCAB, b.d_model)  # the embedding kept its vocabulary


def test_write_weights_round_trip(tmp_path):
    model = ours()
    backend_of(model).write_weights(tmp_path, {"step": 7})
    meta = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert meta["step"] == 7 and meta["gpt_core"] == 1
    torch.testing.assert_close(full_logits(load_checkpoint(tmp_path), IDS), full_logits(model, IDS))
    hf = hf_gpt2()
    (tmp_path / "hf").mkdir()
    backend_of(hf).write_weights(tmp_path / "hf", {"step": 3})
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    torch.testing.assert_close(full_logits(again, IDS), full_logits(hf, IDS))
    assert json.loads((tmp_path / "hf" / "gpt_core_train.json").read_text(encoding="utf-8")) == {"step": 3}


def test_bad_input_is_a_coded_error():
    with pytest.raises(InvalidInput) as err:
        backend_of("not a model")
    assert err.value.code == "backend.not_a_module" and err.value.params == {"kind": "str"}
    with pytest.raises(InvalidInput) as err:
        backend_of(ours()).next_token_logits([])
    assert err.value.code == "backend.no_tokens"
    with pytest.raises(InvalidInput) as err:
        backend_of(ours()).run_with_cache([[1, 2], [3, 4]])
    assert err.value.code == "backend.one_sequence"


@pytest.mark.parametrize("name", ["gpt_core", "hf-llama"])
def test_a_trace_ignores_other_threads_using_the_same_model(name):
    """The app shares one model between sessions: another session's forward passes must not leak in."""
    import threading

    model = FAMILIES[name][0]()
    b = backend_of(model)
    _, reference = b.run_with_cache(IDS)
    stop = threading.Event()

    def other_session():
        while not stop.is_set():
            b.next_token_logits([1, 2, 3])

    worker = threading.Thread(target=other_session)
    worker.start()
    try:
        traces = [b.run_with_cache(IDS)[1] for _ in range(15)]
    finally:
        stop.set()
        worker.join()
    for trace in traces:
        assert [r.shape for r in trace.resid] == [r.shape for r in reference.resid]
        torch.testing.assert_close(trace.resid[-1], reference.resid[-1])
        torch.testing.assert_close(trace.attentions[0], reference.attentions[0])


def test_run_with_cache_can_skip_the_head_at_earlier_positions(case):
    model, _facts = case
    b = backend_of(model)
    full, trace_full = b.run_with_cache(IDS)
    last, trace_last = b.run_with_cache(IDS, all_logits=False)
    assert last.shape == (1, b.vocab_size) and trace_last.logits.shape == (1, b.vocab_size)
    torch.testing.assert_close(last[0], full[-1], atol=1e-4, rtol=0)
    for a, c in zip(trace_full.attentions, trace_last.attentions):
        torch.testing.assert_close(a, c, atol=0, rtol=0)


def test_gemma_windows_and_softcap():
    model = hf_gemma3(softcap=30.0)
    info = backend_of(model).info()
    assert info.attention_windows == [4, 4, None] and info.final_logit_softcap == 30.0
    logits, trace = backend_of(model).run_with_cache(IDS)
    torch.testing.assert_close(backend_of(model).unembed(trace.resid[-1]), logits, atol=1e-5, rtol=0)
    assert float(logits.abs().max()) <= 30.0
    att = trace.attentions[0]  # a sliding layer: nothing beyond 4 positions back
    assert float(att[:, 8, :5].abs().max()) == 0.0 and float(trace.attentions[2][:, 8, :5].sum()) > 0
