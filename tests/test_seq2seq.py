"""gpt_core.seq2seq on a tiny random MBart (BARThez's configuration family), offline."""
from __future__ import annotations

import copy

import pytest
import torch

from gpt_core import seq2seq as S
from gpt_core.data import load_bundled
from gpt_core.errors import HubUnavailable, InvalidInput
from gpt_core.tokenizers import load_tokenizer
from said import en, fr

TEXT = "Le chat dort sur le <mask> du salon."


@pytest.fixture(scope="module")
def tiny():
    return S.tiny_seq2seq(0)


def generate(model, ids, n):
    src = torch.tensor([ids])
    out = model.generate(src, attention_mask=torch.ones_like(src), do_sample=False, num_beams=1, max_new_tokens=n,
                         output_scores=True, return_dict_in_generate=True)
    return out.sequences[0].tolist(), [torch.softmax(s[0].float(), -1) for s in out.scores]


def test_tiny_tokenizer_has_barthez_special_layout(tiny):
    tok = tiny.tokenizer
    assert [tok.special_tokens[s] for s in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert tok.vocab_size == tiny.model.config.vocab_size == 1000
    assert 4 in tok.encode(TEXT) and tok.encode("<mask>") == [4]
    assert S.source_ids(tiny.model, tok, TEXT) == [0, *tok.encode(TEXT), 2]
    assert tiny.random_weights and en(tiny.label).endswith("random weights (seed 0): shows the mechanics only")
    assert "poids aléatoires" in fr(tiny.label)


def test_trace_runs_the_encoder_once_and_equals_generate(tiny):
    model, tok = tiny.model, tiny.tokenizer
    calls = []
    hook = model.get_encoder().register_forward_hook(lambda *_: calls.append(1))
    try:
        trace = S.seq2seq_trace(model, tok, TEXT, max_new_tokens=10, top_k=4)
    finally:
        hook.remove()
    assert len(calls) == 1 and trace.encoder_calls == 1
    n_src = len(trace.source_ids)
    assert trace.encoder_shape == (1, n_src, 64) and trace.source_ids[0] == 0 and trace.source_ids[-1] == 2
    sequence, probs = generate(model, trace.source_ids, 10)
    assert sequence[0] == trace.decoder_start_id == 2
    assert trace.new_ids == sequence[1:] and len(trace.steps) == len(sequence) - 1 == 10
    assert trace.stopped == "length"
    for step, p in zip(trace.steps, probs):
        assert step.prob == pytest.approx(float(p[step.token_id]), abs=1e-6)
        assert [i for i, _, _ in step.top] == p.topk(4).indices.tolist() and step.top[0][0] == step.token_id
    assert [s.input_id for s in trace.steps] == sequence[:-1]  # each step reads the previous choice
    att = trace.cross_attention
    assert att.shape == (10, 2, 4, n_src)
    assert torch.allclose(att.sum(-1), torch.ones(10, 2, 4), atol=1e-5)
    assert trace.text == tok.decode(trace.new_ids)


def test_trace_stops_at_the_end_token(tiny):
    model = copy.deepcopy(tiny.model)
    with torch.no_grad():
        model.final_logits_bias[0, 2] = 50.0  # </s> wins at once
    trace = S.seq2seq_trace(model, tiny.tokenizer, TEXT, max_new_tokens=8)
    assert trace.new_ids == [2] and trace.stopped == "eos" and trace.text == ""
    assert trace.steps[0].prob == pytest.approx(1.0, abs=1e-6)
    assert generate(model, trace.source_ids, 8)[0] == [2, 2]


def test_cross_attention_map_averages_or_picks(tiny):
    trace = S.seq2seq_trace(tiny.model, tiny.tokenizer, TEXT, max_new_tokens=5)
    att = trace.cross_attention
    mean = torch.tensor(S.cross_attention_map(trace))
    assert mean.shape == (5, len(trace.source_ids))
    assert torch.allclose(mean, att.mean(dim=(1, 2))) and torch.allclose(mean.sum(-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(torch.tensor(S.cross_attention_map(trace, 1, 3)), att[:, 1, 3])
    assert torch.allclose(torch.tensor(S.cross_attention_map(trace, layer=0)), att[:, 0].mean(1))
    with pytest.raises(InvalidInput) as err:
        S.cross_attention_map(trace, layer=2)
    assert err.value.code == "seq2seq.bad_number" and err.value.params["high"] == 1


def test_inputs_are_bounded(tiny):
    model, tok = tiny.model, tiny.tokenizer
    with pytest.raises(InvalidInput) as err:
        S.seq2seq_trace(model, tok, "mot " * 400)
    assert err.value.code == "seq2seq.source_too_long" and err.value.params["limit"] == S.MAX_SOURCE_TOKENS
    assert fr(err.value) == f"La source compte {err.value.params['n']} jetons : la limite est de 256. Raccourcissez le texte."
    with pytest.raises(InvalidInput) as err:
        S.seq2seq_trace(model, tok, "Bonjour tout le monde", max_source_tokens=4)
    assert err.value.params == {"n": len(tok.encode("Bonjour tout le monde")) + 2, "limit": 4}
    for bad in (0, S.MAX_NEW_TOKENS + 1, 2.5, True):
        with pytest.raises(InvalidInput) as err:
            S.seq2seq_trace(model, tok, TEXT, max_new_tokens=bad)
        assert err.value.code == "seq2seq.bad_number" and err.value.params["name"] == "max_new_tokens"
    with pytest.raises(InvalidInput) as err:
        S.seq2seq_trace(model, tok, "   ")
    assert err.value.code == "seq2seq.empty_source"
    from gpt_core.config import GPTConfig
    from gpt_core.model import GPT

    with pytest.raises(InvalidInput) as err:
        S.seq2seq_trace(GPT(GPTConfig.preset("tiny")), load_tokenizer("gpt2"), TEXT)
    assert err.value.code == "seq2seq.not_encoder_decoder"


def test_encoder_classifier_is_a_copy_and_ignores_padding(tiny):
    model = tiny.model
    clf = S.encoder_classifier(model, 5, seed=0).eval()
    assert clf.encoder is not model.get_encoder()
    ids = torch.tensor([[0, 40, 41, 42, 2], [0, 50, 2, 1, 1]])
    logits = clf(ids)
    assert logits.shape == (2, 5)
    assert torch.allclose(logits[1], clf(torch.tensor([[0, 50, 2]]))[0], atol=1e-5)  # padding changes nothing
    frozen = S.encoder_classifier(model, 5, train_layers=0)
    assert [n for n, p in frozen.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    top = S.encoder_classifier(model, 5, train_layers=1)
    trainable = {n.split(".")[2] for n, p in top.named_parameters() if p.requires_grad and n.startswith("encoder.layers")}
    assert trainable == {"1"}
    with pytest.raises(InvalidInput):
        S.encoder_classifier(model, 5, train_layers=3)


def test_ticket_classifier_beats_the_majority_baseline(tiny):
    before = {k: v.clone() for k, v in tiny.model.get_encoder().state_dict().items()}
    run = S.train_ticket_classifier(tiny, load_bundled("tickets_fr"), steps=30, max_tokens=48, batch_size=16)
    assert (run.n_train, run.n_test, run.report["n"]) == (240, 60, 60)
    assert run.report["majority_baseline"] == pytest.approx(17 / 60)
    assert run.report["labels"] == sorted(run.report["labels"]) and len(run.report["labels"]) == 5
    assert run.report["accuracy"] - run.report["majority_baseline"] >= 0.5  # 93 % vs 28 % on this seed
    assert run.accuracy_before < run.report["majority_baseline"]
    assert len(run.losses) == 30 and run.losses[-1] < run.losses[0] / 2
    assert run.events[-1]["type"] == "done" and run.trained_params == run.total_params
    assert sum(map(sum, run.report["confusion_matrix"])) == 60
    after = tiny.model.get_encoder().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shared model was not trained


def test_barthez_offline_says_how_to_fetch_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if S.barthez_reachable():
        pytest.skip("BARThez is in the local Hugging Face cache here")
    with pytest.raises(HubUnavailable) as err:
        S.load_barthez()
    assert err.value.code == "seq2seq.barthez_offline"
    assert "python scripts/prefetch.py --only barthez" in fr(err.value) and fr(err.value).startswith("BARThez a besoin du hub")
    assert fr(S.barthez_offline_note()) == fr(err.value)


def test_bart_tokenizer_is_a_hub_builtin_like_barthez(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from gpt_core.tokenizers import available_tokenizers

    assert dict(available_tokenizers())["bart"] == "BART byte-level BPE, English (hub: facebook/bart-base)"
    try:
        load_tokenizer("bart")
    except HubUnavailable as err:
        assert err.code == "tokenizers.hub_unreachable" and err.params["name"] == "facebook/bart-base"
    else:
        pytest.skip("facebook/bart-base is in the local Hugging Face cache here")
