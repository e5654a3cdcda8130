"""The French/English lesson of the tokenizer lab: BPEs learnt on each built-in corpus, tokens per word on
the reference texts, and the pure figures that show them (chart labels, number formats, chips)."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from explorer.figures.tokens import chips_html, language_chart, word_counts_chart
from gpt_core import tokenlab as L
from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = json.loads((ROOT / "assets" / "examples" / "tokenizer_examples.json").read_text(encoding="utf-8"))
REFERENCE = {e["lang"]: e["text"] for e in EXAMPLES if e.get("reference")}


@pytest.fixture(scope="module")
def tokenizers():
    return {"gpt2": load_tokenizer("gpt2"), "gemma3": load_tokenizer("gemma3"),
            "bpe-fr": L.language_bpe("fr").tokenizer, "bpe-en": L.language_bpe("en").tokenizer}


def test_reference_texts_are_a_french_english_pair():
    assert set(REFERENCE) == {"fr", "en"}
    assert [len(L.find_words(REFERENCE[k])) for k in ("fr", "en")] == [57, 57]
    by_lang = {}
    for e in EXAMPLES:
        by_lang.setdefault(e["lang"], e["key"])
    assert by_lang == {"fr": "sherbrooke", "en": "sherbrooke_en"}  # each UI language's default example
    assert all(set(e["title"]) == {"fr", "en"} for e in EXAMPLES)


def test_language_bpes_are_the_same_size_cached_and_deterministic():
    fr, en = L.language_bpe("fr"), L.language_bpe("en")
    assert fr.tokenizer.vocab_size == en.tokenizer.vocab_size == L.LANGUAGE_BPE_VOCAB == 1600
    assert (fr.tokenizer.name, en.tokenizer.name) == ("bpe-fr", "bpe-en")
    assert fr.n_chars == len(L.builtin_corpus("fr")) and fr.seconds < 5
    assert L.language_bpe("fr") is fr  # trained once per process
    again = L.train_bpe(L.builtin_corpus("fr"), 1600)  # the same merges every time
    assert again.encode(REFERENCE["fr"]) == fr.tokenizer.encode(REFERENCE["fr"])
    corpus = L.builtin_corpus("fr")
    assert fr.tokenizer.decode(fr.tokenizer.encode(corpus)) == corpus


def test_language_bpe_is_thread_safe():
    got = []
    threads = [threading.Thread(target=lambda: got.append(L.language_bpe("en", 1200))) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 4 and all(g is got[0] for g in got)


def test_reference_sentence_exact_counts(tokenizers):
    costs = {(c.name, c.lang): c for c in L.language_costs(list(tokenizers.values()), REFERENCE)}
    tokens = {k: costs[k].n_tokens for k in costs}
    assert tokens == {
        ("gpt2", "fr"): 115, ("gpt2", "en"): 68,
        ("gemma3", "fr"): 77, ("gemma3", "en"): 67,
        ("bpe-fr", "fr"): 98, ("bpe-fr", "en"): 184,
        ("bpe-en", "fr"): 185, ("bpe-en", "en"): 89,
    }
    tpw = {k: c.tokens_per_word for k, c in costs.items()}
    assert tpw[("gpt2", "fr")] == pytest.approx(115 / 57)
    # on French, Gemma and the French BPE use fewer tokens per word than GPT-2
    assert tpw[("gemma3", "fr")] < tpw[("gpt2", "fr")] and tpw[("bpe-fr", "fr")] < tpw[("gpt2", "fr")]
    # each BPE is cheap on the language it learnt
    assert tpw[("bpe-fr", "fr")] < tpw[("bpe-fr", "en")] and tpw[("bpe-en", "en")] < tpw[("bpe-en", "fr")]
    assert tpw[("gpt2", "en")] < tpw[("gpt2", "fr")]


def test_language_errors_are_coded():
    with pytest.raises(InvalidInput) as err:
        L.language_bpe("de")
    assert err.value.code == "tokenlab.no_corpus_for_lang" and err.value.params == {"lang": "de", "choices": "fr, en"}
    with pytest.raises(InvalidInput) as err:
        L.language_bpe("fr", 10)
    assert err.value.code == "tokenlab.vocab_out_of_range"
    with pytest.raises(InvalidInput) as err:
        L.language_costs([load_tokenizer("gpt2")], {})
    assert err.value.code == "tokenlab.no_reference_text"
    assert issubclass(InvalidInput, GPTCoreError)


def test_language_chart_formats_numbers_in_the_ui_language(tokenizers):
    costs = L.language_costs([tokenizers["gpt2"], tokenizers["bpe-fr"]], REFERENCE)
    names = {"gpt2": "GPT-2 (BPE d'octets, 50 257)", "bpe-fr": "BPE français <b>appris</b> ici (1 600)"}
    args = (costs, names, {"fr": "Texte français", "en": "Texte anglais"}, "{name} : {tokens} jetons pour {words} mots")
    fr = language_chart(*args, lambda n: f"{n:,}".replace(",", "\u202f"), "t", "y", "fr").to_dict()
    en = language_chart(*args, str, "t", "y", "en").to_dict()
    assert fr["layout"]["separators"] == ", " and en["layout"]["separators"] == ".,"
    assert [d["name"] for d in fr["data"]] == ["Texte français", "Texte anglais"]
    assert list(fr["data"][0]["x"]) == ["GPT-2<br>(BPE d'octets, 50 257)",
                                        "BPE français &lt;b&gt;appris&lt;/b&gt; ici<br>(1 600)"]  # no markup
    assert list(fr["data"][0]["y"]) == pytest.approx([115 / 57, 98 / 57])
    assert fr["data"][0]["customdata"][0] == "GPT-2 (BPE d'octets, 50 257) : 115 jetons pour 57 mots"


def test_word_chart_labels_are_whole_words():
    words = ["l'Université", "hippopotomonstrosesquippedaliophobie", "x" * 100, "a\nb"]
    fig = word_counts_chart(words, [("GPT-2", [5, 11, 20, 2])], "t", "x", "y", lang="fr").to_dict()
    axis = fig["layout"]["xaxis"]
    assert list(axis["ticktext"]) == ["l'Université", "hippopotomonstrosesquippedaliophobie", "x" * 39 + "…",
                                      "a↵b"]
    assert axis["automargin"] is True and axis["tickangle"] == -45
    assert fig["layout"]["height"] >= 360 + 5 * 40  # room for the slanted labels
    short = word_counts_chart(["le", "chat"], [("GPT-2", [1, 1])], "t", "x", "y").to_dict()
    assert short["layout"]["xaxis"]["tickangle"] == 0


def test_chips_break_only_between_tokens():
    gpt2 = load_tokenizer("gpt2")
    text = "Je suis au campus de l'Université de Sherbrooke"
    page = chips_html(gpt2.tokenize(text), text)
    chips = page.split("<wbr>")
    assert len(chips) == 15
    assert all("white-space:pre;" in c for c in chips)
    labels = [re.search(r"isolate'>(.*?)</span>", c).group(1) for c in chips]
    assert labels[1] == " su" and labels[4] == " campus"  # the space stays with its word
    long = " " * 40  # a very long token may wrap inside itself rather than overflow the line
    assert "white-space:pre-wrap" in chips_html(gpt2.tokenize(long), long)
    hostile = "<script>alert(1)</script>\x00"
    assert "<script>" not in chips_html(gpt2.tokenize(hostile), hostile)


def test_language_costs_count_as_the_comparison_does(tokenizers):
    texts = dict(REFERENCE, x="a<|endoftext|>b 👩‍👩‍👧 l'été", empty="  ")
    for c in L.language_costs(list(tokenizers.values()), texts):
        stats = L.compare_tokenizers([tokenizers[c.name]], texts[c.lang], allow_special=False).reports[0].stats
        assert (c.n_tokens, c.n_words, c.tokens_per_word) == (stats.n_tokens, stats.n_words, stats.tokens_per_word)
