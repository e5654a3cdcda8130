"""gpt_core.decoding: parity with Hugging Face generate and logits warpers, traces, hostile input."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gpt_core import decoding as D
from gpt_core.decoding import cuda_graph as G
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.model import GPT

VOCAB, CTX = 1000, 128
PROMPT = [5, 17, 300, 42, 7]


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    # A wide initialisation gives peaked, well separated logits. With GPT-2's
    # default 0.02 a random model is nearly uniform, and float rounding between
    # two correct implementations could flip a near-tie.
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=CTX, n_embd=64, n_layer=2, n_head=4,
                     initializer_range=0.2, bos_token_id=0, eos_token_id=None, pad_token_id=None)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def our_model(hf_model):
    return GPT.from_hf(hf_model)


@pytest.fixture(params=["ours", "hf"])
def model(request, hf_model, our_model):
    return our_model if request.param == "ours" else hf_model


def hf_generate(hf_model, prompt, **kw):
    ids = torch.tensor([prompt])
    kw.setdefault("eos_token_id", None)
    kw.setdefault("pad_token_id", VOCAB - 1)
    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    return out


# ------------------------------------------------------------------ parity with HF
@pytest.mark.parametrize("prompt", [PROMPT, [999]])
def test_greedy_equals_hf_generate(model, hf_model, prompt):
    ref = hf_generate(hf_model, prompt, max_new_tokens=24, do_sample=False)[0, len(prompt):].tolist()
    res = D.greedy(model, prompt, 24)
    assert res.new_ids == ref
    assert res.prompt_ids == prompt
    assert res.stop_reason == "max_new_tokens"
    assert len(res.steps) == 24


def test_greedy_trace_matches_hf_scores(our_model, hf_model):
    out = hf_generate(hf_model, PROMPT, max_new_tokens=6, do_sample=False,
                      return_dict_in_generate=True, output_scores=True)
    res = D.greedy(our_model, PROMPT, 6)
    for step, scores in zip(res.steps, out.scores):
        probs = scores[0].softmax(-1)
        top_p, top_i = probs.topk(D.TOP_N)
        assert [i for i, _ in step.top] == top_i.tolist()
        assert [p for _, p in step.top] == pytest.approx(top_p.tolist(), abs=1e-5)
        assert step.chosen_rank == 1 and step.chosen_id == step.top[0][0]
        assert step.logprob == pytest.approx(math.log(step.chosen_prob), abs=1e-5)
        entropy = -(probs * probs.log()).sum().item()
        assert step.entropy == pytest.approx(entropy, abs=1e-4)
    assert res.total_logprob == pytest.approx(sum(s.logprob for s in res.steps))


def test_greedy_with_repetition_penalty_equals_hf(model, hf_model):
    ref = hf_generate(hf_model, PROMPT, max_new_tokens=16, do_sample=False,
                      repetition_penalty=1.5, no_repeat_ngram_size=2)[0, len(PROMPT):].tolist()
    procs, notes, greedy_mode = D.build_processors(temperature=0, repetition_penalty=1.5, no_repeat_ngram=2)
    assert greedy_mode
    assert D.greedy(model, PROMPT, 16, processors=procs).new_ids == ref


@pytest.mark.parametrize("k", [2, 4])
def test_beam_search_equals_hf_generate(model, hf_model, k):
    ref = hf_generate(hf_model, PROMPT, max_new_tokens=12, num_beams=k, do_sample=False,
                      return_dict_in_generate=True, output_scores=True)
    res = D.beam_search(model, PROMPT, k, 12)
    assert res.best.new_ids == ref.sequences[0, len(PROMPT):].tolist()
    assert res.best.score == pytest.approx(ref.sequences_scores[0].item(), abs=1e-4)
    assert len(res.sequences) == k
    scores = [h.score for h in res.sequences]
    assert scores == sorted(scores, reverse=True)
    for h in res.sequences:
        assert len(h.new_ids) == 12
        assert h.sum_logprob == pytest.approx(sum(h.token_logprobs))
        assert h.score == pytest.approx(h.sum_logprob / 12 ** 1.0, abs=1e-5)


@pytest.mark.parametrize("early_stopping,length_penalty", [(True, 1.0), (False, 0.0), ("never", 2.0)])
def test_beam_search_with_eos_equals_hf(hf_model, early_stopping, length_penalty):
    # choose as EOS a token the search meets, so hypotheses really end early
    first = D.beam_search(hf_model, PROMPT, 3, 10)
    eos = first.tree[2].candidates[1].token_id
    ref = hf_generate(hf_model, PROMPT, max_new_tokens=10, num_beams=3, do_sample=False, eos_token_id=eos,
                      pad_token_id=VOCAB - 1, early_stopping=early_stopping, length_penalty=length_penalty,
                      return_dict_in_generate=True, output_scores=True)
    res = D.beam_search(hf_model, PROMPT, 3, 10, eos_id=eos, early_stopping=early_stopping,
                        length_penalty=length_penalty)
    n = len(res.best.new_ids)
    assert ref.sequences[0, len(PROMPT):len(PROMPT) + n].tolist() == res.best.new_ids
    assert res.best.score == pytest.approx(ref.sequences_scores[0].item(), abs=1e-4)
    ended = [c for c in res.tree[2].candidates if c.token_id == eos and c.finished]
    assert len(ended) == 1 and not ended[0].kept  # it ended a hypothesis, greyed as a leaf in the tree
    if length_penalty == 0.0:  # no bonus for length: the short hypothesis wins
        assert res.best.finished_by == "eos" and res.best.new_ids[-1] == eos


def test_one_beam_is_greedy(our_model):
    assert D.beam_search(our_model, PROMPT, 1, 10).best.new_ids == D.greedy(our_model, PROMPT, 10).new_ids


def test_beam_tree_is_consistent(our_model):
    k, n = 3, 8
    res = D.beam_search(our_model, PROMPT, k, n)
    assert len(res.tree) == n
    for t, bs in enumerate(res.tree):
        assert bs.step == t and len(bs.candidates) == 2 * k
        kept = [c for c in bs.candidates if c.kept]
        if t < n - 1:
            assert sorted(c.beam_id for c in kept) == list(range(k))
            assert not any(c.finished for c in bs.candidates)
        else:  # the last step ends every candidate; the k best become the hypotheses
            assert kept == [] and sum(c.finished for c in bs.candidates) == k
        for c in bs.candidates:
            assert 0 <= c.parent_beam_id < k and (t > 0 or c.parent_beam_id == 0)
            assert c.score == pytest.approx(c.cumulative_logprob / (t + 1))
    # walk back from the best hypothesis through the tree
    best = res.best
    last = next(c for c in res.tree[-1].candidates
                if c.finished and c.cumulative_logprob == pytest.approx(best.sum_logprob, abs=1e-6))
    path, parent = [last.token_id], last.parent_beam_id
    for bs in reversed(res.tree[:-1]):
        node = next(c for c in bs.candidates if c.beam_id == parent)
        path.append(node.token_id)
        parent = node.parent_beam_id
    assert path[::-1] == best.new_ids


def test_sample_equals_hf_sampling_on_cpu(hf_model):
    torch.manual_seed(11)
    ref = hf_generate(hf_model, PROMPT, max_new_tokens=20, do_sample=True, top_k=50, temperature=0.8)
    procs, _, _ = D.build_processors(temperature=0.8, top_k=50, vocab_size=VOCAB)
    res = D.sample(hf_model, PROMPT, 20, procs, seed=11)
    assert res.new_ids == ref[0, len(PROMPT):].tolist()


def test_sample_reproducible_and_seed_dependent(our_model):
    procs = [D.Temperature(3.0)]  # flat enough that two seeds diverge
    state = torch.random.get_rng_state()
    a = D.sample(our_model, PROMPT, 20, procs, seed=1)
    b = D.sample(our_model, PROMPT, 20, procs, seed=1)
    c = D.sample(our_model, PROMPT, 20, procs, seed=2)
    assert a.new_ids == b.new_ids
    assert [s.chosen_prob for s in a.steps] == [s.chosen_prob for s in b.steps]
    assert a.new_ids != c.new_ids
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    assert max(s.chosen_rank for s in a.steps + c.steps) > 1


def test_sample_respects_top_k(our_model):
    res = D.sample(our_model, PROMPT, 30, [D.Temperature(5.0), D.TopK(3)], seed=0)
    assert all(s.chosen_rank <= 3 for s in res.steps)
    assert all(sum(p for _, p in s.top[:3]) == pytest.approx(1.0, abs=1e-5) for s in res.steps)


# ------------------------------------------------------------------------- stopping
def test_eos_stops_generation(our_model):
    full = D.greedy(our_model, PROMPT, 20).new_ids
    eos = full[5]
    res = D.greedy(our_model, PROMPT, 20, eos_id=eos)
    assert res.stop_reason == "eos"
    assert res.new_ids == full[:full.index(eos) + 1]


def test_stop_string_stops_generation(our_model):
    from gpt_core.tokenizers import load_tokenizer

    tok = load_tokenizer("gpt2")  # ids below 1000 are real GPT-2 tokens
    full = D.greedy(our_model, PROMPT, 20, tokenizer=tok)
    assert full.text == tok.decode(full.new_ids)
    stop = tok.decode(full.new_ids[6:8])
    first = next(i for i in range(1, 21) if stop in tok.decode(full.new_ids[:i]))
    res = D.greedy(our_model, PROMPT, 20, stop_strings=[stop], tokenizer=tok)
    assert res.stop_reason == "stop_string" and res.stop_string == stop
    assert res.new_ids == full.new_ids[:first]
    with pytest.raises(InvalidInput, match="tokenizer") as exc:
        D.greedy(our_model, PROMPT, 5, stop_strings=["x"])
    assert exc.value.code == "decoding.stop_needs_tokenizer"


def test_context_window_stops_without_crash():
    torch.manual_seed(0)
    small = GPT(GPTConfig(vocab_size=50, context_length=12, d_model=16, n_heads=2, n_layers=1)).eval()
    res = D.greedy(small, [1, 2, 3, 4, 5], 10)
    assert res.stop_reason == "context" and len(res.new_ids) == 7
    assert res.notes[0].code == "decoding.context_full" and res.notes[0].params == {"n": 7, "ctx": 12}
    assert "context window" in str(res.notes[0])
    beams = D.beam_search(small, [1, 2, 3, 4, 5], 2, 10)
    assert all(len(h.new_ids) == 7 and h.finished_by == "context" for h in beams.sequences)
    assert [n.code for n in beams.notes] == ["decoding.beam_context_full"]
    ok = D.greedy(small, [1, 2, 3, 4, 5], 7)
    assert ok.stop_reason == "max_new_tokens" and len(ok.new_ids) == 7


# ---------------------------------------------------------------- processors vs HF
def _logits(data, rows, vocab):
    # rounded to 1 decimal: many exact ties, including at the top-k / top-p boundaries
    return torch.tensor(data, dtype=torch.float32).reshape(rows, vocab).mul(10).round().div(10)


logit_tables = st.integers(1, 3).flatmap(lambda rows: st.integers(1, 40).flatmap(
    lambda vocab: st.tuples(st.just(rows), st.just(vocab),
                            st.lists(st.floats(-4, 4, allow_nan=False), min_size=rows * vocab,
                                     max_size=rows * vocab))))

CASES = [
    ("top_k", st.integers(1, 45), lambda v: D.TopK(v), lambda v: TopKLogitsWarper(v)),
    ("top_p", st.floats(0.01, 1.0), lambda v: D.TopP(v), lambda v: TopPLogitsWarper(v)),
    ("min_p", st.floats(0.0, 1.0), lambda v: D.MinP(v), lambda v: MinPLogitsWarper(v)),
    ("temperature", st.floats(0.05, 5.0), lambda v: D.Temperature(v), lambda v: TemperatureLogitsWarper(v)),
    ("repetition", st.floats(0.2, 3.0), lambda v: D.RepetitionPenalty(v),
     lambda v: RepetitionPenaltyLogitsProcessor(v)),
    ("ngram", st.integers(1, 4), lambda v: D.NoRepeatNGram(v), lambda v: NoRepeatNGramLogitsProcessor(v)),
]


@pytest.mark.parametrize("name,param,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_processor_matches_hf(name, param, ours, theirs):
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(table=logit_tables, value=param, data=st.data())
    def check(table, value, data):
        rows, vocab, values = table
        logits = _logits(values, rows, vocab)
        # ids from a small alphabet so that repeated tokens and n-grams occur
        t = data.draw(st.integers(0, 12))
        ids = torch.tensor(data.draw(st.lists(st.integers(0, min(vocab, 4)), min_size=rows * t,
                                              max_size=rows * t)), dtype=torch.long).reshape(rows, t)
        if name == "ngram" and t == 0:
            return
        mine, ref = ours(value)(ids, logits), theirs(value)(ids, logits.clone())
        assert torch.equal(torch.isfinite(mine), torch.isfinite(ref))
        assert torch.allclose(mine[torch.isfinite(mine)], ref[torch.isfinite(ref)], rtol=0, atol=1e-6)
    check()


@settings(max_examples=150, deadline=None)
@given(table=logit_tables,
       temperature=st.one_of(st.none(), st.floats(0.05, 10.0)),
       top_k=st.one_of(st.none(), st.integers(1, 40)),
       top_p=st.one_of(st.none(), st.floats(1e-4, 1.0)),
       min_p=st.one_of(st.none(), st.floats(0.0, 1.0)),
       penalty=st.one_of(st.none(), st.floats(0.1, 10.0)),
       ngram=st.integers(0, 3))
def test_processor_chains_stay_valid(table, temperature, top_k, top_p, min_p, penalty, ngram):
    rows, vocab, values = table
    logits = _logits(values, rows, vocab)
    ids = torch.arange(6).remainder(3).repeat(rows, 1)
    procs, _, _ = D.build_processors(temperature, top_k, top_p, min_p, penalty, ngram)
    out = logits
    for p in procs:
        out = p(ids, out)
    if ngram and vocab <= 3:  # ids use tokens 0-2: an n-gram ban may then remove every token (as in HF)
        return
    assert not torch.isnan(out).any()
    probs = out.softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(rows), atol=1e-5)
    assert (torch.isfinite(out).sum(-1) >= 1).all()


@pytest.mark.parametrize("proc", [D.Temperature(0.7), D.TopK(3), D.TopP(0.5), D.MinP(0.2),
                                  D.RepetitionPenalty(1.3), D.NoRepeatNGram(2)], ids=repr)
def test_processors_do_not_modify_inputs(proc):
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 20), torch.tensor([[1, 2, 1, 2, 3], [4, 4, 4, 4, 4]])
    logits_before, ids_before = logits.clone(), ids.clone()
    out = proc(ids, logits)
    assert torch.equal(logits, logits_before) and torch.equal(ids, ids_before)
    assert out.data_ptr() != logits.data_ptr()


def test_explain_processors_describes_each_step():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    views = D.explain_processors(logits, [D.Temperature(2.0), D.TopK(2)])
    assert [v.name for v in views] == ["temperature", "top-k"]
    temp, topk = views
    assert temp.removed_mass == 0.0 and temp.n_kept == 5
    assert temp.entropy_after > temp.entropy_before  # T > 1 flattens
    assert torch.allclose(temp.probs_before, logits.softmax(-1))
    assert topk.kept.tolist() == [True, True, False, False, False]
    assert topk.removed_mass == pytest.approx(float(temp.probs_after[2:].sum()))
    assert float(topk.probs_after.sum()) == pytest.approx(1.0)
    assert torch.equal(logits, torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0]))


# ------------------------------------------------------------------- hostile input
def test_temperature_zero_means_greedy_with_note():
    procs, notes, greedy_mode = D.build_processors(temperature=0, top_k=5)
    assert greedy_mode
    assert [n.code for n in notes] == ["decoding.temperature_zero_greedy", "decoding.greedy_ignores_filters"]
    assert "greedy" in str(notes[0])
    assert not any(isinstance(p, D.Temperature) for p in procs)


@pytest.mark.parametrize("bad,code", [(-1.0, "decoding.bad_temperature"), (float("nan"), "decoding.not_a_number"),
                                      (float("inf"), "decoding.bad_temperature"), ("hot", "decoding.not_a_number"),
                                      (None, "decoding.not_a_number")])
def test_bad_temperature(bad, code):
    with pytest.raises(InvalidInput, match="temperature") as exc:
        D.Temperature(bad)
    assert exc.value.code == code
    if code == "decoding.not_a_number":
        assert exc.value.params["field"] == "temperature"
    if bad is not None:
        with pytest.raises(InvalidInput, match="temperature") as exc:
            D.build_processors(temperature=bad)
        assert exc.value.code == code


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, float("nan")])
def test_bad_top_p(bad):
    with pytest.raises(InvalidInput) as exc:
        D.TopP(bad)
    assert exc.value.code in ("decoding.bad_top_p", "decoding.not_a_number")
    assert "top-p" in str(exc.value) or exc.value.params.get("field") == "top_p"


def test_bad_top_k():
    with pytest.raises(InvalidInput, match="at least 1 token") as exc:
        D.TopK(0)
    assert exc.value.code == "decoding.top_k_too_small" and exc.value.params == {"k": 0}
    with pytest.raises(InvalidInput, match="larger than the vocabulary") as exc:
        D.build_processors(top_k=2000, vocab_size=VOCAB)
    assert exc.value.code == "decoding.top_k_above_vocab" and exc.value.params == {"k": 2000, "vocab": VOCAB}
    assert str(exc.value) == ("top-k = 2000 is larger than the vocabulary (1000 tokens): "
                              "choose a value between 1 and 1000.")  # English for notebook users
    with pytest.raises(InvalidInput, match="whole number") as exc:
        D.TopK(2.5)
    assert exc.value.code == "decoding.not_whole" and exc.value.params["field"] == "top_k"
    assert D.TopK(2000)(torch.empty(1, 0, dtype=torch.long), torch.randn(1, 10)).isfinite().all()  # clamped


def test_bad_other_params():
    for call, msg, code in [(lambda: D.MinP(1.5), "min-p", "decoding.bad_min_p"),
                            (lambda: D.RepetitionPenalty(0), "repetition penalty", "decoding.bad_repetition_penalty"),
                            (lambda: D.NoRepeatNGram(0), "n-gram", "decoding.bad_ngram_size"),
                            (lambda: D.explain_processors(torch.zeros(2, 2), []), "vector",
                             "decoding.explain_needs_vector"),
                            (lambda: D.explain_processors(torch.zeros(3), ["x"]), "not a logits processor",
                             "decoding.not_a_processor")]:
        with pytest.raises(InvalidInput, match=msg) as exc:
            call()
        assert exc.value.code == code


def test_bad_beams(our_model):
    with pytest.raises(InvalidInput, match="At most 16 beams") as exc:
        D.beam_search(our_model, PROMPT, 17, 5)
    assert exc.value.code == "decoding.beams_too_many" and exc.value.params == {"max": 16, "k": 17}
    with pytest.raises(InvalidInput, match="at least 1 beam") as exc:
        D.beam_search(our_model, PROMPT, 0, 5)
    assert exc.value.code == "decoding.beams_too_few"
    tiny_vocab = GPT(GPTConfig(vocab_size=8, context_length=16, d_model=16, n_heads=2, n_layers=1)).eval()
    with pytest.raises(InvalidInput, match="vocabulary size \\(8 tokens\\)") as exc:
        D.beam_search(tiny_vocab, [1, 2], 10, 5)
    assert exc.value.code == "decoding.beams_above_vocab"
    for kwargs, code in [({"length_penalty": float("inf")}, "decoding.bad_length_penalty"),
                         ({"early_stopping": "soon"}, "decoding.bad_early_stopping"),
                         ({"eos_id": VOCAB}, "decoding.eos_outside_vocab")]:
        with pytest.raises(InvalidInput) as exc:
            D.beam_search(our_model, PROMPT, 2, 5, **kwargs)
        assert exc.value.code == code


def test_max_new_tokens_above_context(our_model):
    with pytest.raises(InvalidInput, match=f"context window holds only {CTX} tokens") as exc:
        D.greedy(our_model, PROMPT, CTX + 1)
    assert exc.value.code == "decoding.max_new_above_context" and exc.value.params == {"n": CTX + 1, "ctx": CTX}
    with pytest.raises(InvalidInput, match="at least 1") as exc:
        D.sample(our_model, PROMPT, 0, [], seed=0)
    assert exc.value.code == "decoding.max_new_too_small"


def test_empty_prompt(our_model):
    from gpt_core.tokenizers import load_tokenizer

    with pytest.raises(InvalidInput, match="empty") as exc:
        D.greedy(our_model, [], 5)
    assert exc.value.code == "decoding.empty_prompt"
    tok = load_tokenizer("gpt2")
    ids, notes = D.prepare_prompt(tok, "", 1024)
    assert ids == [50256] and notes[0].code == "decoding.started_from_special"
    assert notes[0].params == {"token": "<|endoftext|>", "id": 50256} and "<|endoftext|>" in str(notes[0])
    for call, code in [(lambda: D.prepare_prompt(tok, 42, 1024), "decoding.prompt_not_text"),
                       (lambda: D.prepare_prompt(tok, "hi", 1024, reserve=1024), "decoding.bad_reserve")]:
        with pytest.raises(InvalidInput) as exc:
            call()
        assert exc.value.code == code


def test_prompt_longer_than_context(our_model):
    from gpt_core.tokenizers import load_tokenizer

    tok = load_tokenizer("gpt2")
    text = " ".join(f"word{i}" for i in range(200))
    full = tok.encode(text)
    ids, notes = D.prepare_prompt(tok, text, CTX)
    assert ids == full[-(CTX - 1):] and "only its last 127 tokens" in str(notes[0])
    assert notes[0].code == "decoding.prompt_cut" and notes[0].params == {"n": len(full), "ctx": CTX, "keep": CTX - 1}
    ids, notes = D.prepare_prompt(tok, "Hello world", CTX)
    assert ids == tok.encode("Hello world") and notes == []
    with pytest.raises(InvalidInput, match="fills the model's context window") as exc:
        D.greedy(our_model, [1] * CTX, 5)
    assert exc.value.code == "decoding.prompt_fills_context"


def test_ngram_ban_of_every_token_is_reported():
    torch.manual_seed(0)
    two = GPT(GPTConfig(vocab_size=2, context_length=16, d_model=8, n_heads=1, n_layers=1)).eval()
    with pytest.raises(InvalidInput, match="every token would repeat an n-gram") as exc:
        D.greedy(two, [0, 1, 0, 1], 8, processors=[D.NoRepeatNGram(1)])
    assert exc.value.code == "decoding.ngram_bans_all"


def test_bad_token_ids(our_model):
    with pytest.raises(InvalidInput, match="does not exist") as exc:
        D.greedy(our_model, [1, VOCAB], 3)
    assert exc.value.code == "decoding.unknown_token_id" and exc.value.params == {"id": VOCAB, "max": VOCAB - 1}
    with pytest.raises(InvalidInput, match="whole numbers") as exc:
        D.greedy(our_model, torch.tensor([1.5]), 3)
    assert exc.value.code == "decoding.ids_not_whole"
    with pytest.raises(InvalidInput, match="seed") as exc:
        D.sample(our_model, PROMPT, 3, [], seed=-1)
    assert exc.value.code == "decoding.bad_seed"
    for prompt, code in [(torch.zeros(2, 3, dtype=torch.long), "decoding.prompt_one_row"),
                         (5, "decoding.prompt_not_ids"), (["a"], "decoding.not_whole")]:
        with pytest.raises(InvalidInput) as exc:
            D.greedy(our_model, prompt, 3)
        assert exc.value.code == code
    with pytest.raises(InvalidInput) as exc:
        D.greedy(our_model, PROMPT, 3, stop_strings=[3], tokenizer=object())
    assert exc.value.code == "decoding.stop_not_text"


@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
def test_static_decode_path_matches_greedy(our_model, attention):
    # the CUDA-graph greedy path (static shapes, masked attention over a fixed span),
    # run eagerly on the CPU: same tokens and trace as the ordinary KV-cache loop
    ref = D.greedy(our_model, PROMPT, 20)
    runner = G.GraphRunner(our_model, D.TOP_N, attention)
    with torch.inference_mode():
        for _ in range(2):  # a second start reuses the buffers
            runner.start(torch.tensor([PROMPT]))
            for _ in range(19):
                runner.replay()
    assert runner.tokens[:20].tolist() == ref.new_ids
    assert runner.ints[:20, 1].tolist() == [s.chosen_rank for s in ref.steps]
    probs = torch.tensor([[p for _, p in s.top] for s in ref.steps])
    assert torch.allclose(runner.floats[:20, 3:], probs, atol=1e-5)
    assert torch.allclose(runner.floats[:20, 1], torch.tensor([s.entropy for s in ref.steps]), atol=1e-4)


def test_static_decode_crosses_spans():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, context_length=300, d_model=32, n_heads=2, n_layers=1)).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(20)  # peaked logits: no near-ties between the two attention paths
    prompt = torch.randint(0, 300, (1, 120)).tolist()[0]
    ref = D.greedy(model, prompt, 40)
    runner = G.GraphRunner(model, D.TOP_N, "matmul")
    with torch.inference_mode():
        runner.start(torch.tensor([prompt]))
        spans = []
        for _ in range(39):
            spans.append(G.span_for(runner.position, 300))
            runner.replay()
    assert sorted(set(spans)) == [128, 256]
    assert runner.tokens[:40].tolist() == ref.new_ids
