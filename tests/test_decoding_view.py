"""Unit tests of the Next-token / Decoding-lab helpers and figures (exact small examples, tiny model)."""
import math

import pytest
import torch

from explorer.views import decoding as dv
from explorer.views import decoding_settings as ds
from explorer.figures import decoding as fd
from explorer.views import next_token as nv
from gpt_core import decoding as dec
from gpt_core.errors import GPTCoreError
from gpt_core.tokenizers import load_tokenizer
from shown import assert_said, core_key, unescape


@pytest.fixture(scope="module")
def gpt2_tok():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiny():
    from gpt_core.registry import load_model

    return load_model("tiny-random")


def texts(messages):
    return " ".join(m for _, m in messages)


# ------------------------------------------------------------------ settings
def test_valid_settings_build_processors_in_hf_order():
    c = ds.check_settings(100, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, repetition_penalty=1.2,
                          no_repeat_ngram=3)
    assert c.ok and not c.greedy and c.messages == []
    assert [type(p).__name__ for p in c.processors] == ["RepetitionPenalty", "NoRepeatNGram", "Temperature",
                                                        "TopK", "TopP", "MinP"]
    assert c.spec == (1.2, 3, 0.7, 5, 0.9, 0.1)


def test_neutral_settings_give_no_processor():
    c = ds.check_settings(100, temperature=1.0, top_k=None, top_p=1.0, min_p=0.0, repetition_penalty=1.0)
    assert c.ok and c.processors == [] and not c.greedy


def test_temperature_zero_is_greedy_and_says_so():
    c = ds.check_settings(100, temperature=0.0)
    assert c.ok and c.greedy
    assert [lvl for lvl, _ in c.messages] == ["info"]
    assert "glouton" in c.messages[0][1]
    c = ds.check_settings(100, temperature=0, top_k=5)
    assert len(c.messages) == 2 and "top-k, top-p et min-p ne changent rien" in c.messages[1][1]


@pytest.mark.parametrize("kwargs, expected", [
    (dict(temperature=-1.0), "Température refusée (-1)"),
    (dict(temperature=float("nan")), "Température refusée (NaN)"),
    (dict(temperature=float("inf")), "Température refusée (inf)"),
    (dict(top_p=0.0), "Top-p refusé (0)"),
    (dict(top_p=1.5), "Top-p refusé (1,5)"),
    (dict(top_k=0), "Top-k refusé (0)"),
    (dict(top_k=101), "entre 1 et 100 jetons"),
    (dict(min_p=2.0), "Min-p refusé (2)"),
    (dict(repetition_penalty=0.0), "Pénalité de répétition refusée (0)"),
    (dict(no_repeat_ngram=-2), "Taille de n-gramme refusée (-2)"),
])
def test_hostile_settings_name_the_culprit(kwargs, expected):
    c = ds.check_settings(100, **kwargs)
    assert not c.ok and c.processors == []
    assert c.messages[0][0] == "error" and expected in c.messages[0][1]


def test_first_culprit_wins_when_two_settings_are_bad():
    c = ds.check_settings(100, temperature=-1.0, top_p=0.0)
    assert "Température" in c.messages[0][1] and len(c.messages) == 1


def test_processors_from_spec_round_trips():
    c = ds.check_settings(100, temperature=0.5, top_k=3)
    procs, greedy = ds.processors_from_spec(c.spec, 100)
    assert [repr(p) for p in procs] == [repr(p) for p in c.processors] and not greedy


@pytest.mark.parametrize("n, ctx, expected_n, level, fragment", [
    (20, 128, 20, None, None),
    (0, 128, 0, "error", "au moins 1"),
    (-5, 128, 0, "error", "au moins 1"),
    (129, 128, 0, "error", "n'en contient que 128"),
    (1000, 8192, ds.MAX_NEW_UI, "warning", "1000 jetons demandés"),
    (float("nan"), 128, 0, "error", "NaN"),
])
def test_check_length(n, ctx, expected_n, level, fragment):
    got, messages = ds.check_length(n, ctx)
    assert got == expected_n
    if level is None:
        assert messages == []
    else:
        assert messages[0][0] == level and fragment in messages[0][1]


@pytest.mark.parametrize("k, vocab, fragment", [
    (3, 100, None), (16, 100, None), (0, 100, "au moins 1"), (17, 100, "au plus 16"),
    (12, 10, "plus que le vocabulaire (10"), (2.5, 100, "refusé (2,5)"),
])
def test_check_beams(k, vocab, fragment):
    messages = ds.check_beams(k, vocab)
    if fragment is None:
        assert messages == []
    else:
        assert messages[0][0] == "error" and fragment in messages[0][1]


# -------------------------------------------------------------------- prompts
def test_empty_prompt_starts_from_end_of_text(gpt2_tok):
    for raw in ("", "   ", None):
        p = ds.prepare(gpt2_tok, raw, 128)
        assert p.ids == [50256] and p.text == ""
        assert "<|endoftext|>" in texts(p.messages) and "50256" in texts(p.messages)


def test_long_prompt_keeps_the_last_tokens(gpt2_tok):
    ids = gpt2_tok.encode("one two three four five six seven eight nine ten")
    p = ds.prepare(gpt2_tok, "one two three four five six seven eight nine ten", 8, reserve=3)
    assert p.ids == ids[-5:]
    assert p.messages[-1][0] == "warning" and "10 jetons" in p.messages[-1][1] and "5 derniers" in p.messages[-1][1]
    assert p.text == gpt2_tok.decode(ids[-5:])


def test_normal_prompt_is_encoded_unchanged(gpt2_tok):
    p = ds.prepare(gpt2_tok, "Hello world", 128)
    assert p.ids == [15496, 995] and p.messages == [] and p.text == "Hello world"


# ---------------------------------------------------------------- lanes, html
def test_repeat_share_exact():
    assert dv.repeat_share([1, 2, 3, 1, 2, 3], start=3) == pytest.approx(1 / 3)
    assert dv.repeat_share([5, 5, 5, 5, 5], start=2) == pytest.approx(2 / 3)  # (5,5,5) first ends at 2
    assert dv.repeat_share([1, 2, 3, 4], start=2) == 0.0
    assert dv.repeat_share([1, 2], start=1) == 0.0


def test_make_lane(gpt2_tok):
    lane = dv.make_lane(gpt2_tok, [15496], [995, 995], [-0.5, -1.0], [math.log(0.5), math.log(0.25)], "eos")
    assert lane.texts == [" world", " world"] and lane.text == " world world"
    assert lane.probs == pytest.approx([0.5, 0.25])
    assert lane.strategy_logprob == pytest.approx(-1.5) and lane.raw_logprob == pytest.approx(math.log(0.125))


def test_tokens_html_escapes_and_colours():
    out = fd.tokens_html("<b>x</b>\n", ["<i>", ""], [1.0, 0.0])
    assert "&lt;b&gt;x&lt;/b&gt;↵" in out and "&lt;i&gt;" in out and "<b>" not in out
    assert "hsl(120, 75%, 82%)" in out and "hsl(0, 75%, 82%)" in out and "∅" in out
    assert fd.prob_colour(0.5) == "hsl(60, 75%, 82%)" and fd.prob_colour(7) == "hsl(120, 75%, 82%)"


# ----------------------------------------------------------------- beam tree
def _cand(beam, parent, tok, cum, kept, finished=False, lp=-1.0):
    return dec.BeamCandidate(beam, parent, tok, lp, cum, cum / 2, kept, finished)


@pytest.fixture()
def small_beam():
    # 2 beams, 2 steps; the best hypothesis is tokens [20, 40] (first token of beam 1, then its child)
    tree = [
        dec.BeamStep(0, [_cand(0, 0, 10, -0.5, True), _cand(1, 0, 20, -0.7, True),
                         _cand(-1, 0, 30, -2.0, False), _cand(-1, 0, 31, -2.1, False)]),
        dec.BeamStep(1, [_cand(-1, 1, 40, -0.9, False, True), _cand(-1, 0, 41, -1.2, False, True),
                         _cand(-1, 0, 42, -3.0, False), _cand(-1, 1, 43, -3.5, False)]),
    ]
    best = dec.Hypothesis([20, 40], [-0.7, -0.2], -0.9, -0.45, "max_new_tokens")
    other = dec.Hypothesis([10, 41], [-0.5, -0.7], -1.2, -0.6, "max_new_tokens")
    return dec.BeamResult([1], [best, other], tree, 2, 1.0)


class FakeTok:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_tree_nodes_links_parents_and_marks_the_best_path(small_beam):
    nodes = fd.tree_nodes(small_beam, FakeTok())
    assert len(nodes) == 8
    assert [n.parent for n in nodes[:4]] == [-1, -1, -1, -1]
    # step 1: candidates of beam slot 1 hang from node 1 (token 20), of slot 0 from node 0 (token 10)
    assert [n.parent for n in nodes[4:]] == [1, 0, 0, 1]
    assert [n.on_best for n in nodes] == [False, True, False, False, True, False, False, False]
    assert [n.rank for n in nodes[4:]] == [0, 1, 2, 3] and nodes[1].rank == 1
    assert nodes[4].finished and not nodes[4].kept and nodes[4].token == "<40>"


def test_beams_at_and_hypotheses_table(small_beam):
    nodes = fd.tree_nodes(small_beam, FakeTok())
    after0 = dv.beams_at(nodes, 0)
    assert after0.iloc[:, 0].tolist() == ["<10>", "<20>"] and after0.iloc[:, 3].tolist() == ["en cours"] * 2
    after1 = dv.beams_at(nodes, 1)
    assert after1.iloc[:, 0].tolist() == ["<20><40>", "<10><41>"]
    assert after1.iloc[:, 1].tolist() == ["-0,900", "-1,200"]  # the French UI writes a decimal comma
    table = dv.hypotheses_table(small_beam, FakeTok())
    assert table.iloc[:, 0].tolist() == ["<20><40>", "<10><41>"] and table.iloc[:, 1].tolist() == [2, 2]


def test_beam_tree_figure_draws_one_marker_per_candidate(small_beam):
    nodes = fd.tree_nodes(small_beam, FakeTok())
    labels = {k: k for k in ("title", "prompt", "step", "kept", "pruned", "best", "finished", "hover")}
    fig = fd.beam_tree(nodes, upto=1, window=10, text=labels)
    markers = [tr for tr in fig.data if tr.mode == "markers+text" and tr.name in labels]
    assert sum(len(tr.x) for tr in markers) == 8
    best = next(tr for tr in markers if tr.name == "best")
    assert list(best.x) == [1.0, 2.0] and list(best.marker.symbol) == ["circle", "star"]
    assert list(fig.layout.xaxis.tickvals) == [1, 2]
    # only the first step: half the nodes
    fig0 = fd.beam_tree(nodes, upto=0, window=10, text=labels)
    assert sum(len(tr.x) for tr in fig0.data if tr.mode == "markers+text" and tr.name in labels) == 4
    # a window of one step drops the prompt and the edges from outside it
    fig1 = fd.beam_tree(nodes, upto=1, window=1, text=labels)
    assert list(fig1.layout.xaxis.tickvals) == [2]
    assert all(len(tr.x) == 0 for tr in fig1.data if tr.mode == "lines")


def test_tree_of_a_real_beam_search(tiny):
    beam = dec.beam_search(tiny.model, [464, 3290], 3, 5)
    nodes = fd.tree_nodes(beam, tiny.tokenizer)
    assert len(nodes) == sum(len(s.candidates) for s in beam.tree) == 5 * 6
    for n in nodes:
        if n.parent >= 0:
            assert nodes[n.parent].step == n.step - 1 and nodes[n.parent].kept
    best = [n for n in nodes if n.on_best]
    assert len(best) == len(beam.best.new_ids) and best[-1].finished
    assert best[-1].cumulative == pytest.approx(beam.best.sum_logprob, abs=1e-4)


# ------------------------------------------------------------------- presets
def test_presets_follow_the_model(gpt2_tok):
    smol = load_tokenizer("smollm2")
    assert dv.preset("greedy_loop", gpt2_tok)["prompt"] == "Artificial intelligence"
    assert dv.preset("beam_loop", gpt2_tok)["prompt"] == "What is the capital of Australia?"
    assert dv.preset("greedy_loop", smol, "en")["prompt"] == "The cat sat on the mat. The dog"
    assert "capital of Australia" in dv.preset("beam_loop", smol, "en")["prompt"]
    # other models get the failure cases in the page's language; GPT-2 keeps its English classics
    assert dv.preset("greedy_loop", smol, "fr")["prompt"] == "Le chat est assis sur le tapis. Le chien"
    assert dv.preset("beam_loop", smol, "fr")["prompt"] == "Quelle est la capitale de l'Australie ?"
    assert dv.preset("greedy_loop", gpt2_tok, "fr")["prompt"] == "Artificial intelligence"
    assert dv.preset("greedy_fix", smol)["repetition_penalty"] > 1 and dv.preset("greedy_loop", smol)[
        "repetition_penalty"] == 1.0
    assert dv.preset("beam_fix", smol)["no_repeat_ngram"] == 4 and dv.preset("beam_loop", smol)["beams"] == 5


# ----------------------------------------------------------------- lab run
def test_run_lab_matches_the_engine(tiny):
    ids = tiny.tokenizer.encode("The cat")
    fix = ds.check_settings(50257, None)
    samp = ds.check_settings(50257, 0.8, 20, 0.9)
    lab = dv.run_lab(tiny, ids, 6, fix, samp, seed=3, num_beams=2, length_penalty=1.0)
    assert set(lab.lanes) == {"greedy", "sample", "beam"} and lab.errors == {}
    g = dec.greedy(tiny.model, ids, 6)
    assert lab.lanes["greedy"].new_ids == g.new_ids
    # no processor: the raw model's log-probs equal the greedy trace's (full forward vs KV cache)
    assert lab.lanes["greedy"].raw_logprob == pytest.approx(g.total_logprob, abs=1e-3)
    s = dec.sample(tiny.model, ids, 6, samp.processors, 3)
    assert lab.lanes["sample"].new_ids == s.new_ids
    b = dec.beam_search(tiny.model, ids, 2, 6)
    assert lab.lanes["beam"].new_ids == b.best.new_ids and lab.beam.num_beams == 2


def test_run_lab_skips_invalid_lanes(tiny):
    ids = tiny.tokenizer.encode("The cat")
    bad = ds.check_settings(50257, 1.0, top_p=0.0)
    lab = dv.run_lab(tiny, ids, 3, ds.check_settings(50257, None), bad, 0, 2, 1.0, run_beams=False)
    assert set(lab.lanes) == {"greedy"} and lab.beam is None


# ------------------------------------------------------------- next token
def _checked(**kw):
    return ds.check_settings(4, **{"temperature": 1.0, **kw})


def test_rank_entropy_exact():
    p = torch.tensor([0.1, 0.5, 0.4, 0.0])
    assert [nv.rank_of(p, i) for i in range(4)] == [3, 1, 2, 4]
    assert nv.entropy(torch.full((4,), 0.25)) == pytest.approx(math.log(4))
    assert nv.entropy(torch.tensor([1.0, 0.0])) == 0.0


def test_distribution_with_top_k_and_greedy():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    d = nv.distribution_from_logits(logits, [0], _checked(top_k=2))
    assert d.final[2:].tolist() == [0.0, 0.0] and float(d.final.sum()) == pytest.approx(1.0)
    assert float(d.final[0] / d.final[1]) == pytest.approx(math.e)
    assert d.raw.tolist() == pytest.approx(logits.softmax(-1).tolist())
    assert len(d.views) == 1 and d.views[0].n_kept == 2
    g = nv.distribution_from_logits(logits, [0], _checked(temperature=0))
    assert g.greedy and g.final.tolist() == [1.0, 0.0, 0.0, 0.0] and g.entropy_final == 0.0


def test_shown_ids_adds_tokens_promoted_by_the_penalty():
    # token 0 is the most probable raw, but the penalty (token 0 already seen) pushes token 3 into the top 2
    logits = torch.tensor([2.0, 1.9, 0.0, 1.5])
    d = nv.distribution_from_logits(logits, [0], _checked(repetition_penalty=10.0))
    assert nv.shown_ids(d, 2) == [0, 1, 3]


def test_stages_describe_each_processor(gpt2_tok):
    logits = torch.zeros(50257)
    logits[:4] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    d = nv.distribution_from_logits(logits, [0], ds.check_settings(50257, 0.5, 2))
    labels, stages = nv.stages(gpt2_tok, d, 3)
    assert labels == ["“!” · 0", "“\"” · 1", "“#” · 2"]
    assert [s["kept"] for s in stages] == [[True] * 3, [True] * 3, [True, True, False]]
    assert "top-k (k=2)" in stages[2]["title"] and "température (T=0,5)" in stages[1]["title"]
    assert "50\u202f257 gardés" in stages[1]["title"]                   # French thousands
    table = nv.stage_table(d)
    assert table.iloc[:, 2].tolist() == ["50\u202f257", "2"] and table.iloc[:, 1].tolist() == ["T=0,5", "k=2"]


def test_choose_greedy_and_seeded_sampling():
    d = nv.distribution_from_logits(torch.tensor([0.0, 2.0, 1.0, 0.5]), [0], _checked())
    row = nv.choose(d, "greedy", 0, 0)
    assert row["id"] == 1 and row["rank"] == 1 and row["how"] == "greedy" and row["seed"] is None
    assert row["prob"] == pytest.approx(float(d.final[1]))
    draws = [nv.choose(d, "sample", 7, step)["id"] for step in range(20)]
    assert draws == [nv.choose(d, "sample", 7, step)["id"] for step in range(20)]
    assert len(set(draws)) > 1  # the step is part of the seed: not the same draw every time
    assert nv.choose(d, "sample", 7, 3)["seed"] == 10
    expected = int(torch.multinomial(d.final, 1, generator=torch.Generator().manual_seed(10)))
    assert nv.choose(d, "sample", 7, 3)["id"] == expected


def test_candidates_are_a_stable_shuffle_of_the_top():
    logits = torch.arange(20, dtype=torch.float32)
    d = nv.distribution_from_logits(logits, [1, 2, 3], _checked())
    c = nv.candidates(d, 8)
    assert sorted(c) == list(range(12, 20)) and c == nv.candidates(d, 8)


def test_resolve_guess(gpt2_tok):
    probs = torch.zeros(50257)
    probs[262], probs[1169], probs[5] = 0.6, 0.1, 0.3   # " the", "the", "&"
    g = nv.resolve_guess(gpt2_tok, probs, typed="the")
    assert (g.id, g.rank, g.note) == (262, 1, "spaced") and g.prob == pytest.approx(0.6)
    g = nv.resolve_guess(gpt2_tok, probs, typed=" the")
    assert (g.id, g.rank, g.note) == (262, 1, None)
    g = nv.resolve_guess(gpt2_tok, probs, typed="the cat")  # several tokens: the first one counts
    assert g.note == "multi" and g.id in (262, 1169)
    assert nv.resolve_guess(gpt2_tok, probs, typed="   ") is None
    assert nv.resolve_guess(gpt2_tok, probs) is None
    g = nv.resolve_guess(gpt2_tok, probs, typed="ignored", picked=5)
    assert (g.id, g.rank, g.label) == (5, 2, "“&” · 5")


# ------------------------------------------------------------------ figures
def test_stage_bars_grey_out_removed_tokens():
    stages = [{"title": "a", "before": [0.5, 0.3, 0.2], "after": [0.5, 0.3, 0.2], "kept": [True] * 3},
              {"title": "b", "before": [0.5, 0.3, 0.2], "after": [0.625, 0.375, 0.0], "kept": [True, True, False]}]
    fig = fd.stage_bars(["x", "y", "z"], stages, "before", "after", "removed", cols=2)
    assert len(fig.data) == 4
    before, after = fig.data[2], fig.data[3]
    assert list(after.x) == [0.625, 0.375, 0.0] and list(after.text) == ["62.5%", "37.5%", ""]
    assert list(before.text) == ["", "", "removed"]
    assert [a.text for a in fig.layout.annotations] == ["a", "b"]


def test_lane_bars_label_tokens_by_position():
    fig = fd.lane_bars(["a", "a", "b"], [0.9, 0.5, 0.1], "t", "p")
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.layout.xaxis.ticktext) == ["a", "a", "b"]
    assert fig.data[0].marker.color[0] == "hsl(108, 65%, 50%)"


def test_stages_end_with_the_argmax_at_temperature_zero(gpt2_tok):
    logits = torch.zeros(50257)
    logits[:3] = torch.tensor([1.0, 3.0, 2.0])
    d = nv.distribution_from_logits(logits, [0], ds.check_settings(50257, 0, 2))
    labels, stages = nv.stages(gpt2_tok, d, 3)
    assert len(stages) == 3 and "température 0 → glouton" in stages[-1]["title"]
    assert stages[-1]["kept"] == [True, False, False] and stages[-1]["after"] == [1.0, 0.0, 0.0]
    assert stages[-1]["before"] == pytest.approx([float(d.views[-1].probs_after[i]) for i in (1, 2, 0)])


# ------------------------------------------------- hostile values, in the UI language
@pytest.fixture(params=["fr", "en"])
def lang(request, monkeypatch):
    """Pretend the user chose ``lang`` (outside a Streamlit run there is no session to hold it)."""
    import explorer.ui.i18n as i18n
    import explorer.ui.messages as messages

    monkeypatch.setattr(i18n, "current_lang", lambda: request.param)
    monkeypatch.setattr(messages, "current_lang", lambda: request.param)
    return request.param


@pytest.mark.parametrize("kwargs, key", [
    (dict(temperature=float("nan")), "decoding.bad_temperature"),
    (dict(temperature=float("-inf")), "decoding.bad_temperature"),
    (dict(temperature=-0.1), "decoding.bad_temperature"),
    (dict(top_k=0), "decoding.bad_top_k"),
    (dict(top_p=float("nan")), "decoding.bad_top_p"),
    (dict(min_p=-1.0), "decoding.bad_min_p"),
    (dict(repetition_penalty=float("inf")), "decoding.bad_repetition_penalty"),
    (dict(no_repeat_ngram=2.5), "decoding.bad_no_repeat_ngram"),
])
def test_refused_settings_are_said_in_the_ui_language(lang, kwargs, key):
    c = ds.check_settings(100, **kwargs)
    assert not c.ok
    assert_said(texts(c.messages), key, lang)


@pytest.mark.parametrize("n, ctx, key", [(float("nan"), 128, "decoding.bad_max_new"), (-3, 128, "decoding.bad_max_new"),
                                         (10**9, 128, "decoding.bad_max_new_ctx"),
                                         (10**6, 10**7, "decoding.max_new_capped")])
def test_lengths_are_said_in_the_ui_language(lang, n, ctx, key):
    assert_said(texts(ds.check_length(n, ctx)[1]), key, lang)


@pytest.mark.parametrize("k, key", [(2.5, "decoding.bad_beams"), (-1, "decoding.bad_beams"),
                                    (10**6, "decoding.too_many_beams"), (float("nan"), "decoding.bad_beams")])
def test_beam_counts_are_said_in_the_ui_language(lang, k, key):
    assert_said(texts(ds.check_beams(k, 100)), key, lang)


def test_engine_refusals_are_said_in_the_ui_language(lang, tiny):
    # a length penalty the page lets through is refused by beam search itself: its code is said
    ids = tiny.tokenizer.encode("The cat")
    with pytest.raises(GPTCoreError) as info:
        dec.beam_search(tiny.model, ids, 2, 3, length_penalty=float("nan"))
    lab = dv.run_lab(tiny, ids, 3, ds.check_settings(50257, None), ds.check_settings(50257, 1.0), 0, 2,
                     float("nan"))
    assert set(lab.lanes) == {"greedy", "sample"}
    assert_said(unescape(lab.errors["beam"]), core_key(info.value), lang)
