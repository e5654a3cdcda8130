"""AppTest of the Next-token and Decoding-lab pages on both offline backends, with interactions and hostile input."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from shown import assert_said, shown

NEXT = "../pages/6_Next_token.py"
LAB = "../pages/7_Decoding.py"
BACKENDS = ["smollm2-embedded", "tiny-random"]


def run(page, model, session=None, lang=None):
    at = AppTest.from_file(page, default_timeout=300)
    at.session_state["app.model"] = model
    if lang:
        at.session_state["app.lang"] = lang
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def messages(at, kinds=("info", "warning", "error")):
    return shown(at, kinds)


def figures(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def click(at, key):
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def set_number(at, key, value):
    at.number_input(key=key).set_value(value).run()
    assert not at.exception, at.exception
    return at


def history_tokens(at):
    return at.dataframe[-1].value.iloc[:, 1].tolist()


# ================================================================ next token
def test_next_token_smollm2_greedy_twice():
    at = run(NEXT, "smollm2-embedded")
    top = at.dataframe[0].value
    assert len(top) == 10 and top.iloc[:, 0].tolist()[0] == 1
    assert figures(at)[0]["layout"]["title"]["text"].startswith("Softmax des scores bruts")
    stage_table = at.dataframe[1].value  # default: temperature 0.8, then top-p 0.9
    assert stage_table.iloc[:, 0].tolist() == ["température", "top-p"]
    click(at, "next_token.greedy_btn")
    click(at, "next_token.greedy_btn")
    hist = at.dataframe[-1].value
    assert len(hist) == 2 and hist.iloc[:, 3].tolist() == [1, 1]  # greedy always takes rank 1
    assert "Historique (2 jetons choisis)" in [s.value for s in at.subheader]
    click(at, "next_token.undo")
    assert len(at.dataframe[-1].value) == 1


def test_next_token_seeded_sampling_replays_after_reset():
    at = run(NEXT, "tiny-random")
    set_number(at, "_w.next_token.seed", 5)
    click(at, "next_token.sample_btn")
    click(at, "next_token.sample_btn")
    first = history_tokens(at)
    assert len(first) == 2
    assert at.dataframe[-1].value.iloc[:, 5].tolist() == ["tirage (graine 5)", "tirage (graine 6)"]
    click(at, "next_token.reset")
    assert not any(s.value.startswith("Historique") for s in at.subheader)
    click(at, "next_token.sample_btn")
    click(at, "next_token.sample_btn")
    assert history_tokens(at) == first


def test_next_token_guess_mode_hides_then_reveals():
    at = run(NEXT, "tiny-random")
    n_tables = len(at.dataframe)
    at.toggle(key="_w.next_token.guess_mode").set_value(True).run()
    assert not at.exception
    assert len(at.dataframe) == 0 and not at.get("plotly_chart")  # the distribution is hidden
    assert "cachées" in messages(at)
    assert at.button(key="next_token.greedy_btn").disabled
    radio = at.radio[0]
    assert radio.options[0] == "(aucun)" and len(radio.options) == 11
    click(at, next(b.key for b in at.button if b.label == "Révéler"))  # nothing picked: a warning
    assert "Choisissez un candidat" in messages(at)
    at.text_input[0].input("the").run()
    click(at, next(b.key for b in at.button if b.label == "Révéler"))
    success = " ".join(s.value for s in at.success)
    assert "rang" in success or "Bravo" in success
    assert len(at.dataframe) == n_tables  # revealed: the tables are back
    assert not at.button(key="next_token.greedy_btn").disabled


@pytest.mark.parametrize("key, value, expected", [
    ("_w.next_token.temperature", -1.0, "Température refusée (-1)"),
    ("_w.next_token.top_p", 0.0, "Top-p refusé (0)"),
    ("_w.next_token.top_k", 60000, "entre 1 et 50257 jetons"),
])
def test_next_token_hostile_settings(key, value, expected):
    at = run(NEXT, "tiny-random")
    set_number(at, key, value)
    assert expected in messages(at, ("error",))
    assert not at.dataframe  # nothing computed on refused settings


def test_next_token_temperature_zero_empty_and_long_prompts():
    at = run(NEXT, "tiny-random")
    set_number(at, "_w.next_token.temperature", 0.0)
    assert "décodage glouton" in messages(at, ("info",))
    assert at.dataframe[0].value.iloc[:, 4].tolist()[0] == "100,00\u202f%"  # all the mass on the best token
    at.text_area[0].input("").run()
    assert "jeton spécial « <|endoftext|> » (id 50256)" in messages(at, ("info",))
    at.text_area[0].input("mot " * 400).run()
    assert not at.exception
    assert "seuls ses 127 derniers jetons" in messages(at, ("warning",))


def test_next_token_english():
    at = run(NEXT, "tiny-random", lang="en")
    assert at.title[0].value == "Next token: from scores to a choice"
    assert at.dataframe[0].value.columns.tolist() == ["Rank", "Token", "Logit", "Softmax", "After filters"]


# ============================================================== decoding lab
@pytest.mark.parametrize("model", BACKENDS)
def test_lab_three_lanes_and_tree(model):
    at = run(LAB, model)
    assert [s.value for s in at.subheader][:3] == ["Glouton", "Tirage au sort", "Beam search"]
    metrics = [m.label for m in at.metric]
    assert metrics.count("Log-prob. totale") == 3
    figs = figures(at)
    assert len(figs) == 4  # three lanes, one tree
    tree = figs[-1]
    slider = at.slider[0]
    n_steps = slider.max
    assert slider.value == n_steps and 1 <= n_steps <= 20
    assert tree["layout"]["xaxis"]["tickvals"][-1] == n_steps
    assert len(at.table) == 2 and len(at.table[0].value) >= 1


def test_lab_beam_step_through_draws_the_tree():
    at = run(LAB, "tiny-random")
    set_number(at, "_w.decoding.max_new", 6)
    assert at.slider[0].max == 6  # random weights never pick <|endoftext|> here: six steps
    at.slider[0].set_value(3).run()
    assert not at.exception
    tree = figures(at)[-1]
    assert tree["layout"]["xaxis"]["tickvals"] == [1, 2, 3]
    names = {"écarté", "gardé", "terminée", "meilleure hypothèse"}
    markers = [tr for tr in tree["data"] if tr.get("name") in names]
    assert sum(len(tr["x"]) for tr in markers) == 3 * 6  # 3 steps x (2 x 3 beams) candidates
    assert "Les faisceaux après l'étape 3" in " ".join(m.value for m in at.markdown)
    assert len(at.table[0].value) == 3  # the three live beams


def test_lab_presets_show_the_failure_and_the_fix():
    at = run(LAB, "smollm2-embedded", lang="en")  # SmolLM2 is an English model: the English page's presets
    click(at, "decoding.btn_greedy_loop")
    assert at.text_area[0].value == "The cat sat on the mat. The dog"
    assert at.number_input(key="_w.decoding.max_new").value == 40
    repeats = [m.value for m in at.metric if m.label == "Repeated 3-grams"]
    loop = int(repeats[0].rstrip("%"))
    assert loop >= 30  # greedy goes in circles
    click(at, "decoding.btn_greedy_fix")
    assert at.number_input(key="_w.decoding.repetition_penalty").value == 1.3
    fixed = int([m.value for m in at.metric if m.label == "Repeated 3-grams"][0].rstrip("%"))
    assert fixed < loop / 2
    click(at, "decoding.btn_beam_loop")
    assert "capital of Australia" in at.text_area[0].value
    best = at.table[1].value.iloc[0, 0]
    assert best.count("capital of Australia") >= 2  # beam search repeats itself
    click(at, "decoding.btn_beam_fix")
    assert at.table[1].value.iloc[0, 0].count("capital of Australia") == 1


def test_lab_hostile_values():
    at = run(LAB, "tiny-random")
    set_number(at, "_w.decoding.max_new", 100000)
    assert "n'en contient que 128" in messages(at, ("error",))
    assert not at.get("plotly_chart")
    set_number(at, "_w.decoding.max_new", 5)
    set_number(at, "_w.decoding.beams", 17)
    assert "au plus 16" in messages(at, ("error",))
    assert [m.label for m in at.metric].count("Log-prob. totale") == 2  # greedy and sampling still run
    set_number(at, "_w.decoding.beams", 0)
    assert "au moins 1" in messages(at, ("error",))
    set_number(at, "_w.decoding.beams", 2)
    set_number(at, "_w.decoding.top_p", 1.5)
    assert "Top-p refusé (1,5)" in messages(at, ("error",))
    assert "Pas de tirage" in messages(at, ("error",))
    set_number(at, "_w.decoding.top_p", 1.0)
    set_number(at, "_w.decoding.temperature", 0.0)
    assert "décodage glouton" in messages(at, ("info",))
    set_number(at, "_w.decoding.no_repeat_ngram", -1)
    assert "Taille de n-gramme refusée (-1)" in messages(at, ("error",))
    set_number(at, "_w.decoding.no_repeat_ngram", 0)
    at.text_area[0].input("").run()
    assert not at.exception
    assert "id 50256" in messages(at, ("info",))
    assert len(figures(at)) == 4
    at.text_area[0].input("mot " * 400).run()  # 800 tokens in a 128-token window, 5 to generate
    assert not at.exception
    assert "seuls ses 123 derniers jetons" in messages(at, ("warning",))
    assert len(figures(at)) == 4


# ======================================================= hostile values, in the UI language
@pytest.mark.parametrize("lang", ["fr", "en"])
def test_next_token_hostile_settings_in_the_ui_language(lang):
    at = run(NEXT, "tiny-random", lang=lang)
    for key, value, said, good in (("_w.next_token.temperature", -1.0, "decoding.bad_temperature", 0.8),
                                   ("_w.next_token.top_k", 0, "decoding.bad_top_k", 40),
                                   ("_w.next_token.top_k", 60000, "decoding.bad_top_k", 40),
                                   ("_w.next_token.top_p", 0.0, "decoding.bad_top_p", 0.9),
                                   ("_w.next_token.min_p", 2.0, "decoding.bad_min_p", 0.0),
                                   ("_w.next_token.rep_penalty", 0.0, "decoding.bad_repetition_penalty", 1.0)):
        set_number(at, key, value)
        assert_said(messages(at, ("error",)), said, lang)
        set_number(at, key, good)
        assert not messages(at, ("error",))
    set_number(at, "_w.next_token.temperature", 0.0)
    assert_said(messages(at, ("info",)), "decoding.temp0", lang)
    at.text_area[0].input("").run()
    assert_said(messages(at, ("info",)), "decoding.empty_prompt", lang)
    at.text_area[0].input("mot " * 400).run()
    assert_said(messages(at, ("warning",)), "decoding.prompt_cut", lang)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_lab_hostile_values_in_the_ui_language(lang):
    at = run(LAB, "tiny-random", lang=lang)
    set_number(at, "_w.decoding.max_new", 100000)
    assert_said(messages(at, ("error",)), "decoding.bad_max_new_ctx", lang)
    set_number(at, "_w.decoding.max_new", 0)
    assert_said(messages(at, ("error",)), "decoding.bad_max_new", lang)
    set_number(at, "_w.decoding.max_new", 3)
    for key, value, said in (("_w.decoding.beams", 0, "decoding.bad_beams"),
                             ("_w.decoding.beams", 17, "decoding.too_many_beams"),
                             ("_w.decoding.temperature", -0.5, "decoding.bad_temperature"),
                             ("_w.decoding.top_k", 0, "decoding.bad_top_k"),
                             ("_w.decoding.top_p", 1.5, "decoding.bad_top_p"),
                             ("_w.decoding.no_repeat_ngram", -1, "decoding.bad_no_repeat_ngram"),
                             ("_w.decoding.repetition_penalty", -2.0, "decoding.bad_repetition_penalty")):
        good = at.number_input(key=key).value
        set_number(at, key, value)
        assert_said(messages(at, ("error",)), said, lang)
        set_number(at, key, good)
        assert not messages(at, ("error",))
    set_number(at, "_w.decoding.top_p", 0.0)
    assert_said(messages(at, ("error",)), "decoding.lane_off_sample", lang)
    set_number(at, "_w.decoding.top_p", 1.0)
    set_number(at, "_w.decoding.temperature", 0.0)
    assert_said(messages(at, ("info",)), "decoding.temp0", lang)
    assert_said(messages(at, ("info",)), "decoding.greedy_filters", lang)


@pytest.mark.parametrize("key, value, said", [
    ("decoding.length_penalty", 1e9, "La pénalité de longueur doit être comprise entre -10"),
    ("decoding.length_penalty", -1e9, "La pénalité de longueur doit être comprise entre -10"),
    ("decoding.length_penalty", 1e308, "La pénalité de longueur doit être comprise entre -10"),
    ("decoding.temperature", 1e-300, "il faut 0 (décodage glouton) ou un nombre entre 0,01 et 100"),
    ("decoding.temperature", 1e308, "il faut 0 (décodage glouton) ou un nombre entre 0,01 et 100"),
])
def test_extreme_numbers_on_the_decoding_lab_are_refused_with_a_sentence(key, value, said):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../pages/7_Decoding.py", default_timeout=180)
    at.session_state["app.model"] = "tiny-random"
    at.session_state["app.lang"] = "fr"
    at.run()
    at.number_input(key=f"_w.{key}").set_value(value).run()
    assert not at.exception, at.exception
    errors = " ".join(str(e.value) for e in at.error).replace("\\", "")
    assert said in errors, errors
