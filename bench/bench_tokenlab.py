"""Server-side cost of the tokenizer lab, on CPU.

    python bench/bench_tokenlab.py [--repeats 20]

Prints three JSON lines:
* ``tokenlab_compare_4``: comparing the 4 tokenizers the lab shows offline (GPT-2, Gemma 3,
  the French and the English BPE learnt on the built-in corpora) on 5,000 characters,
  including the statistics, the per-word counts, the chips HTML of each tokenizer and the
  tokens per word on the two reference texts (target <= 100 ms; the median of warm runs,
  which is what each click of a user costs, and the first, cold run);
* ``tokenlab_train_bpe``: training a 2,000-token byte-level BPE on 200 kB of text
  (target <= 3 s; median of 3);
* ``tokenlab_languages``: training the French and the English BPE of the lab on their
  corpora (target <= 1 s for both; median of 3), and the tokens per word of each
  tokenizer on the French and the English reference text (the figures of the lesson).

There is no Hugging Face counterpart to these measurements (the lab calls the same
libraries), so no ratio: each line carries its target and whether it is met.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

from explorer.figures.tokens import chips_html
from gpt_core.tokenizers import load_tokenizer
from gpt_core.tokenlab import (LANGUAGE_BPE_VOCAB, builtin_corpus, compare_tokenizers, language_bpe, language_costs,
                               train_bpe)

ROOT = Path(__file__).resolve().parents[1]


def sample_text() -> str:
    parts = []
    for name in ("corpus_fr.txt", "corpus_en.txt"):
        path = ROOT / "assets" / "datasets" / name
        if path.is_file():
            parts.append(path.read_text(encoding="utf-8"))
    examples = json.loads((ROOT / "assets" / "examples" / "tokenizer_examples.json").read_text(encoding="utf-8"))
    parts.append("\n".join(e["text"] for e in examples))
    return "\n".join(parts)


def text_of_bytes(source: str, n_bytes: int) -> str:
    out, size = [], 0
    while size < n_bytes:
        out.append(source)
        size += len(source.encode("utf-8"))
    text = "".join(out).encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")
    return text


def reference_texts() -> dict[str, str]:
    examples = json.loads((ROOT / "assets" / "examples" / "tokenizer_examples.json").read_text(encoding="utf-8"))
    return {e["lang"]: e["text"] for e in examples if e.get("reference")}


def bench_languages(tokenizers: list) -> dict:
    corpora = {lang: builtin_corpus(lang) for lang in ("fr", "en")}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for corpus in corpora.values():
            train_bpe(corpus, LANGUAGE_BPE_VOCAB)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    costs = language_costs(tokenizers, reference_texts())
    names = list(dict.fromkeys(c.name for c in costs))
    return {
        "bench": "tokenlab_languages", "vocab_size": LANGUAGE_BPE_VOCAB,
        "corpus_chars": {lang: len(c) for lang, c in corpora.items()}, "train_both_s": round(seconds, 3),
        "tokens_per_word": {name: {c.lang: round(c.tokens_per_word, 3) for c in costs if c.name == name}
                            for name in names},
        "tokens": {name: {c.lang: c.n_tokens for c in costs if c.name == name} for name in names},
        "words": {c.lang: c.n_words for c in costs},
        "target_s": 1.0, "meets_target": seconds <= 1.0, "device": "cpu",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    source = sample_text()

    corpus = text_of_bytes(source, 200_000)
    train_times = []
    for _ in range(3):
        start = time.perf_counter()
        trained = train_bpe(corpus, 2000, name="bench-bpe")
        train_times.append(time.perf_counter() - start)
    assert trained.decode(trained.encode(corpus)) == corpus

    tokenizers = [load_tokenizer("gpt2"), load_tokenizer("gemma3"), language_bpe("fr").tokenizer,
                  language_bpe("en").tokenizer]
    references = reference_texts()
    text = source[:5000]
    n_tokens = []

    def compare_once() -> float:
        start = time.perf_counter()
        comp = compare_tokenizers(tokenizers, text)
        pages = [chips_html(r.pieces, comp.text, show_ids=True) for r in comp.reports]
        language_costs(tokenizers, references)
        elapsed = time.perf_counter() - start
        assert all(pages)
        n_tokens[:] = [r.stats.n_tokens for r in comp.reports]
        return elapsed

    cold = compare_once()
    warm = [compare_once() for _ in range(args.repeats)]
    ms = statistics.median(warm) * 1000
    print(json.dumps({
        "bench": "tokenlab_compare_4", "chars": len(text), "tokenizers": [t.name for t in tokenizers],
        "tokens": n_tokens, "ours_ms": round(ms, 1), "cold_ms": round(cold * 1000, 1),
        "target_ms": 100, "meets_target": ms <= 100, "device": "cpu",
    }))
    seconds = statistics.median(train_times)
    print(json.dumps({
        "bench": "tokenlab_train_bpe", "bytes": len(corpus.encode("utf-8")), "vocab_size": 2000,
        "learned": trained.vocab_size, "ours_s": round(seconds, 3), "target_s": 3.0,
        "meets_target": seconds <= 3.0, "device": "cpu",
    }))
    print(json.dumps(bench_languages(tokenizers), ensure_ascii=False))


if __name__ == "__main__":
    main()
