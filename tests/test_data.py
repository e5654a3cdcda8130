"""Tests for gpt_core.data: windows, chunking, collate, bundled datasets, hostile uploads."""
from __future__ import annotations

import ast
import collections
import importlib.util
import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from gpt_core import data as D
from gpt_core.errors import HubUnavailable, InvalidInput

ROOT = Path(__file__).resolve().parent.parent
SHARED_ALPACA = ROOT.parent / "shared" / "data" / "instruction-data.json"
EOT = 50256


@pytest.fixture(scope="module")
def gpt2():
    from gpt_core.tokenizers import load_tokenizer
    return load_tokenizer("gpt2")


@contextmanager
def raises_code(code, exc_type=InvalidInput, **params):
    """``pytest.raises(exc_type)`` that also checks the error's code and some of its parameters."""
    with pytest.raises(exc_type) as info:
        yield info
    assert info.value.code == code, f"{info.value.code} != {code} ({info.value})"
    for key, value in params.items():
        assert info.value.params[key] == value, (key, info.value.params)


def reference_windows(ids, max_length, stride):
    """The classic sliding-window loop, written out as the reference."""
    inputs, targets = [], []
    for i in range(0, len(ids) - max_length, stride):
        inputs.append(ids[i:i + max_length])
        targets.append(ids[i + 1:i + max_length + 1])
    return inputs, targets


# ------------------------------------------------------------------ windows
def test_sliding_windows_exact_for_max_length_4_stride_3():
    w = D.sliding_windows(list(range(20)), max_length=4, stride=3)
    assert w.starts == [0, 3, 6, 9, 12, 15]
    assert w.n_samples == 6 and w.inputs.shape == (6, 4) and w.targets.shape == (6, 4)
    assert w.inputs[0].tolist() == [0, 1, 2, 3] and w.targets[0].tolist() == [1, 2, 3, 4]
    assert w.inputs[-1].tolist() == [15, 16, 17, 18] and w.targets[-1].tolist() == [16, 17, 18, 19]
    assert w.overlap == 1 and w.gap == 0 and w.unused_tail == 0
    assert w.inputs.dtype == torch.long


@pytest.mark.parametrize("n,max_length,stride", [(20, 4, 3), (20, 4, 4), (21, 4, 4), (30, 5, 1),
                                                 (30, 3, 7), (9, 8, 1), (50, 10, 25)])
def test_sliding_windows_match_the_reference_loop(n, max_length, stride):
    ids = [(7 * i + 3) % 101 for i in range(n)]
    w = D.sliding_windows(ids, max_length, stride)
    ref_in, ref_tg = reference_windows(ids, max_length, stride)
    assert w.inputs.tolist() == ref_in and w.targets.tolist() == ref_tg
    assert w.overlap == max(0, max_length - stride) and w.gap == max(0, stride - max_length)
    assert torch.equal(w.inputs[:, 1:], w.targets[:, :-1])  # targets are inputs shifted by one


def test_stride_larger_than_window_skips_tokens_and_reports_tail():
    w = D.sliding_windows(list(range(20)), max_length=3, stride=5)
    assert w.starts == [0, 5, 10, 15] and w.gap == 2 and w.overlap == 0
    assert w.inputs[-1].tolist() == [15, 16, 17] and w.unused_tail == 20 - (15 + 3 + 1)


def test_sliding_windows_validation_messages():
    with raises_code("data.text_too_short", n=10, needed=11):
        D.sliding_windows(list(range(10)), max_length=10, stride=1)
    with raises_code("data.too_small", field="max_length", minimum=1):
        D.sliding_windows(list(range(10)), max_length=0, stride=1)
    with raises_code("data.too_small", field="stride", minimum=1):
        D.sliding_windows(list(range(10)), max_length=2, stride=0)
    with raises_code("data.not_whole", field="stride", value="'3'"):
        D.sliding_windows(list(range(10)), max_length=2, stride="3")
    with raises_code("data.ids_are_text"):
        D.sliding_windows("hello world", max_length=2, stride=1)


def test_window_dataset_and_seeded_loader(gpt2):
    text = D.load_bundled("corpus_en")[:3000]
    ds = D.GPTWindowDataset.from_text(text, gpt2, max_length=16, stride=16)
    ids = gpt2.encode(text)
    assert len(ds) == len(range(0, len(ids) - 16, 16))
    x, y = ds[1]
    assert x.tolist() == ids[16:32] and y.tolist() == ids[17:33]
    first = [b[0] for b in D.make_loader(ds, batch_size=4, shuffle=True, seed=3)]
    again = [b[0] for b in D.make_loader(ds, batch_size=4, shuffle=True, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(b.shape == (4, 16) for b in first) and len(first) == len(ds) // 4
    with raises_code("data.fewer_than_batch", n=len(ds), batch_size=len(ds) + 1):
        D.make_loader(ds, batch_size=len(ds) + 1, drop_last=True)


def test_batch_arithmetic():
    a = D.batch_arithmetic(103, batch_size=8, epochs=3, drop_last=True, grad_accum=4, max_length=256)
    assert (a["batches_per_epoch"], a["dropped_samples"], a["optimizer_steps"]) == (12, 7, 9)
    assert a["tokens_per_step"] == 8 * 4 * 256 and a["total_tokens"] == 96 * 256 * 3
    b = D.batch_arithmetic(103, batch_size=8, epochs=2, drop_last=False, grad_accum=5)
    assert (b["batches_per_epoch"], b["last_batch_size"], b["dropped_samples"]) == (13, 7, 0)
    assert b["optimizer_steps_per_epoch"] == 3 and b["partial_accumulation"] is True
    assert b["total_batches"] == 26 and b["tokens_per_step"] is None
    # agrees with what a real DataLoader yields
    loader = D.make_loader(list(range(103)), batch_size=8, shuffle=False, drop_last=False)
    assert len(list(loader)) == b["batches_per_epoch"]


# ----------------------------------------------------------------- chunking
DOCS = [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35]]


def test_chunk_eot_pads_last_window_and_colours_documents():
    r = D.chunk_eot(DOCS, eot_id=0, context=4, pad_id=9)
    assert r.rows.tolist() == [[11, 12, 13, 0], [21, 22, 0, 31], [32, 33, 34, 35], [0, 9, 9, 9]]
    assert r.doc_index.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2], [2, 2, 2, 2], [2, -1, -1, -1]]
    assert r.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert (r.n_tokens, r.n_pad, r.last_window) == (13, 3, "padded")
    assert r.waste_pct == pytest.approx(100 * 3 / 16)  # 18.75 %


def test_chunk_eot_drop_and_exact():
    r = D.chunk_eot(DOCS, eot_id=0, context=4, last="drop")
    assert r.rows.shape == (3, 4) and r.last_window == "dropped" and r.dropped_tokens == 1
    assert r.waste_pct == 0.0
    exact = D.chunk_eot([[1, 2, 3], [4, 5, 6, 7]], eot_id=0, context=3)
    assert exact.last_window == "exact" and exact.rows.tolist() == [[1, 2, 3], [0, 4, 5], [6, 7, 0]]
    with raises_code("data.shorter_than_window", total=3, context=8):
        D.chunk_eot([[1, 2]], eot_id=0, context=8, last="drop")
    with raises_code("data.no_documents"):
        D.chunk_eot([], eot_id=0, context=4)
    with raises_code("data.bad_last", value="'keep'"):
        D.chunk_eot(DOCS, eot_id=0, context=4, last="keep")


def test_chunk_padding_one_document_per_row():
    r = D.chunk_padding(DOCS, pad_id=9, context=4)
    assert r.rows.tolist() == [[11, 12, 13, 9], [21, 22, 9, 9], [31, 32, 33, 34]]
    assert r.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert r.doc_index.tolist() == [[0, 0, 0, -1], [1, 1, -1, -1], [2, 2, 2, 2]]
    assert (r.truncated_tokens, r.truncated_docs) == (1, 1)
    assert r.waste_pct == pytest.approx(100 * 3 / 12)  # 25 %
    with_eot = D.chunk_padding(DOCS, pad_id=9, context=6, eot_id=0)
    assert with_eot.rows[1].tolist() == [21, 22, 0, 9, 9, 9]
    assert with_eot.waste_pct == pytest.approx(100 * 5 / 18)  # rows of 4, 3 and 6 real tokens


def test_eot_wastes_less_than_padding_on_the_french_corpus(gpt2):
    docs = D.encode_documents(D.split_documents(D.load_bundled("corpus_fr"))[:40], gpt2)
    eot = D.chunk_eot(docs, gpt2.eos_id, 128)
    pad = D.chunk_padding(docs, D.pad_token_id(gpt2), 128, eot_id=gpt2.eos_id)
    # GPT-2 pads with the end-of-text id, so masks must come from positions, not values
    assert eot.n_tokens == sum(len(d) + 1 for d in docs)
    assert int((eot.rows == EOT).sum()) == 40 + eot.n_pad
    assert eot.waste_pct < 100 / eot.n_rows and pad.waste_pct > 5 * eot.waste_pct
    assert gpt2.decode(eot.rows[0].tolist()).startswith(gpt2.decode(docs[0])[:50])


# --------------------------------------------------------- instruction data
def test_format_alpaca_layout():
    prompt, response = D.format_alpaca({"instruction": "Convert 3 hours to minutes.", "input": "",
                                        "output": "3 hours is 180 minutes."})
    assert prompt == ("Below is an instruction that describes a task. Write a response that "
                      "appropriately completes the request.\n\n### Instruction:\n"
                      "Convert 3 hours to minutes.\n\n### Response:\n")
    assert response == "3 hours is 180 minutes."
    prompt_fr, _ = D.format_alpaca({"instruction": "Traduis en anglais.", "input": "le chat",
                                    "output": "the cat"}, style="alpaca-fr")
    assert "### Consigne :\nTraduis en anglais.\n\n### Entrée :\nle chat\n\n### Réponse :\n" in prompt_fr
    with raises_code("data.alpaca_no_instruction"):
        D.format_alpaca({"instruction": "  ", "output": "x"})
    with raises_code("data.unknown_prompt_style", style="chatml"):
        D.format_alpaca({"instruction": "a"}, style="chatml")


def test_collate_pads_and_masks_exactly():
    batch = [([1, 2], [3]), ([4], [5, 6, 7]), ([8], [9])]
    out = D.collate_instructions(batch, pad_id=EOT)
    assert out["inputs"].tolist() == [[1, 2, 3, EOT], [4, 5, 6, 7], [8, 9, EOT, EOT]]
    # the first end-of-text stays a target, the padding after it is -100
    assert out["targets"].tolist() == [[2, 3, EOT, -100], [5, 6, 7, EOT], [9, EOT, -100, -100]]
    assert out["loss_mask_positions"] == [[3], [], [2, 3]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert out["lengths"].tolist() == [4, 4, 3] and out["n_loss_tokens"] == 12 - 3
    assert torch.equal(out["loss_mask"], out["targets"] != -100)


def test_collate_masks_prompt_truncates_and_uses_separate_eos():
    batch = [([1, 2, 3], [4]), ([5], [6, 7])]
    out = D.collate_instructions(batch, pad_id=0, eos_id=99, mask_prompt=True)
    assert out["inputs"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 99]]
    assert out["targets"].tolist() == [[-100, -100, 4, 99], [6, 7, 99, -100]]
    assert out["loss_mask_positions"] == [[0, 1], [3]]
    short = D.collate_instructions(batch, pad_id=0, eos_id=99, max_length=2)
    assert short["inputs"].tolist() == [[1, 2], [5, 6]] and short["targets"].tolist() == [[2, 3], [6, 7]]
    with raises_code("data.batch_empty"):
        D.collate_instructions([], pad_id=0)
    with raises_code("data.batch_item_not_pair", n=1):
        D.collate_instructions([[1, 2, 3]], pad_id=0)


def test_instruction_dataset_with_gpt2(gpt2):
    records = D.load_bundled("instructions_fr_en")[:6]
    ds = D.InstructionDataset(records, gpt2)
    loader = D.make_instruction_loader(ds, gpt2, batch_size=3, shuffle=False, mask_prompt=True)
    batch = next(iter(loader))
    T = batch["inputs"].shape[1]
    for r in range(3):
        prompt, response = D.format_alpaca(records[r])
        prompt_ids, response_ids = ds[r]
        assert gpt2.decode(prompt_ids + response_ids) == prompt + response
        seq = prompt_ids + response_ids + [EOT]
        n = int(batch["lengths"][r])
        assert n == min(len(seq), T) and batch["inputs"][r, :n].tolist() == seq[:n]
        assert batch["prompt_lengths"][r] == len(prompt_ids)
        counted = batch["targets"][r][batch["targets"][r] != -100].tolist()
        assert counted == gpt2.encode(response) + [EOT]


@pytest.mark.skipif(not SHARED_ALPACA.exists(), reason="shared Alpaca data absent")
def test_collate_on_the_shared_alpaca_data(gpt2):
    records = json.loads(SHARED_ALPACA.read_text(encoding="utf-8"))[:8]
    ds = D.InstructionDataset(records, gpt2)
    out = D.collate_instructions([ds[i] for i in range(8)], pad_id=EOT)
    lengths = [len(p) + len(r) + 1 for p, r in ds.items]
    assert out["inputs"].shape == (8, max(lengths) - 1)
    for row, n in enumerate(lengths):  # exactly one end-of-text target per row, the rest -100
        t = out["targets"][row]
        assert int((t == EOT).sum()) == 1 and int((t == -100).sum()) == max(lengths) - n


# ----------------------------------------------------------- classification
def test_classification_dataset_records_last_real_token(gpt2):
    texts = ["Le wifi ne marche plus.", "Imprimante en panne depuis ce matin, merci de regarder vite.",
             "Mot de passe expiré."]
    labels = ["reseau", "impression", "compte_acces"]
    ds = D.ClassificationDataset(texts, labels, gpt2)
    assert ds.label_names == ["compte_acces", "impression", "reseau"]
    width = max(len(gpt2.encode(t)) for t in texts)
    assert ds.inputs.shape == (3, width)
    for i, text in enumerate(texts):
        ids = gpt2.encode(text)
        item = ds[i]
        assert int(item["last_index"]) == len(ids) - 1 and item["inputs"][len(ids) - 1] == ids[-1]
        assert item["inputs"][len(ids):].tolist() == [EOT] * (width - len(ids))
        assert int(item["targets"]) == ds.vocab[labels[i]]
    short = D.ClassificationDataset(texts, labels, gpt2, max_length=4)
    assert short.inputs.shape == (3, 4)
    assert short.truncated == sum(len(gpt2.encode(t)) > 4 for t in texts) and short.last_index.tolist() == [
        min(len(gpt2.encode(t)), 4) - 1 for t in texts]
    batch = next(iter(D.make_loader(ds, batch_size=3, shuffle=False, drop_last=False)))
    assert batch["inputs"].shape == (3, width) and batch["lengths"].tolist() == [
        len(gpt2.encode(t)) for t in texts]


def test_label_vocab_errors():
    assert D.label_vocab(["b", "a", "b"]) == {"a": 0, "b": 1}
    with raises_code("data.single_label", n=3, label="reseau"):
        D.label_vocab(["reseau"] * 3)
    with raises_code("data.example_no_label", n=2):
        D.label_vocab(["a", "", "b"])
    with raises_code("data.no_labels"):
        D.label_vocab([])


# ------------------------------------------------------------------- splits
def test_split_records_deterministic_and_complete():
    items = list(range(1100))
    train, val, test = D.split_records(items, seed=0)
    assert (len(train), len(val), len(test)) == (935, 55, 110)  # the usual 85/5/10 counts
    assert sorted(train + val + test) == items
    assert D.split_records(items, seed=0) == (train, val, test)
    assert D.split_records(items, seed=1)[0] != train
    small = D.split_records(list(range(3)), seed=0)
    assert [len(p) for p in small] == [1, 1, 1]
    with raises_code("data.too_few_to_split", n=1, needed=3):
        D.split_records([{"text": "a"}])
    with raises_code("data.nothing_to_split"):
        D.split_records([])
    with raises_code("data.fractions_sum") as err:
        D.split_records(items, fractions=(0.5, 0.2, 0.2))
    assert err.value.params["total"] == pytest.approx(0.9)
    with raises_code("data.bad_fractions"):
        D.split_records(items, fractions=("half", 0.5))


def test_split_text():
    train, val = D.split_text("abcdefghij", 0.2)
    assert (train, val) == ("abcdefgh", "ij")
    with raises_code("data.text_too_short_to_split", n_chars=1, percent=10.0):
        D.split_text("a", 0.1)
    with raises_code("data.val_fraction_range", value=1.0):
        D.split_text("abcdef", 1.0)


# ---------------------------------------------------------- bundled datasets
def test_bundled_corpora():
    for name in ("corpus_fr", "corpus_en"):
        text = D.load_bundled(name)
        assert 30_000 <= len(text.encode("utf-8")) <= 60_000
        docs = D.split_documents(text)
        assert len(docs) >= 100 and len(set(docs)) == len(docs)
        assert len(set(text.split())) > 800  # varied vocabulary
    assert "Il était une fois" in D.load_bundled("corpus_fr")
    assert D.bundled_path("corpus_en.txt").name == "corpus_en.txt"
    with raises_code("data.unknown_bundled", name="wikipedia"):
        D.load_bundled("wikipedia")


def test_bundled_instructions_are_correct():
    examples = D.load_bundled("instructions_fr_en")
    assert 190 <= len(examples) <= 210
    assert all(set(e) == {"instruction", "input", "output"} for e in examples)
    assert all(e["instruction"].strip() and e["output"].strip() for e in examples)
    french_starts = ("Combien", "Multiplie", "Soustrais", "Convertis", "Écris", "Traduis", "Donne",
                     "Ce mot", "Quelle", "Mets", "Réécris", "Range", "Le nombre")
    french = [e for e in examples if e["instruction"].startswith(french_starts)]
    assert 0.35 < len(french) / len(examples) < 0.65
    checked = 0
    for e in examples:  # recompute every arithmetic answer
        m = re.fullmatch(r"(?:What is|Combien font) (\d+) \+ (\d+) \?|(?:What is (\d+) \+ (\d+)\?)",
                         e["instruction"])
        if m:
            a, b = [int(g) for g in m.groups() if g is not None]
            assert e["output"] == f"{a} + {b} = {a + b}."
            checked += 1
        m = re.fullmatch(r"(\d+) (?:and|et) (\d+)", e["input"])
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            assert e["output"] == f"{a} × {b} = {a * b}."
            checked += 1
        if e["instruction"].startswith(("Sort these", "Range ces")):
            nums = [int(x) for x in e["input"].split(", ")]
            assert e["output"] == ", ".join(map(str, sorted(nums)))
            checked += 1
    assert checked >= 30


def test_bundled_tickets_are_balanced_enough():
    tickets = D.load_bundled("tickets_fr")
    assert 280 <= len(tickets) <= 320
    D.require_columns(tickets, ["text", "label"])
    assert all(set(t) == {"text", "label"} and t["text"].strip() for t in tickets)
    counts = collections.Counter(t["label"] for t in tickets)
    assert len(counts) >= 4 and max(counts.values()) / len(tickets) <= 0.40
    assert len({t["text"] for t in tickets}) == len(tickets)


def test_make_datasets_script_reproduces_the_committed_files():
    spec = importlib.util.spec_from_file_location("make_datasets", ROOT / "scripts" / "make_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = module.build_all()
    assert set(files) == {info["file"] for info in D.BUNDLED.values()}
    for name, text in files.items():
        assert (D.DATASETS_DIR / name).read_text(encoding="utf-8") == text, name


def test_pydoc_corpus():
    from pydoc_data.topics import topics
    docs = D.pydoc_documents()
    assert len(docs) == len([t for t in topics.values() if t.strip()])
    assert len(D.pydoc_corpus()) > 300_000
    assert D.pydoc_corpus(max_chars=1000) == D.pydoc_corpus()[:1000]
    with raises_code("data.too_small", field="max_chars", value=0):
        D.pydoc_corpus(max_chars=0)


# ---------------------------------------------------------- Hugging Face hub
def test_hf_slice_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with raises_code("data.hf_unreachable", HubUnavailable, name="wikimedia/wikipedia"):
        D.load_hf_dataset_slice("wikipedia-fr", n=5)
    assert time.perf_counter() - t0 < 2.0


def test_hf_slice_streams_a_bounded_slice(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return ({"review": f"critique {i}", "label": i % 2} for i in range(10_000))

    monkeypatch.setattr(D, "_hub_is_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    s = D.load_hf_dataset_slice("allocine", n=3)
    assert calls == [("tblard/allocine", None, "train", True)]
    assert s.texts == ["critique 0", "critique 1", "critique 2"] and len(s.records) == 3
    with raises_code("data.hf_no_column", column="text", columns="review, label"):
        D.load_hf_dataset_slice("tblard/allocine", n=2, text_field="text")
    with raises_code("data.too_small", field="n", minimum=1):
        D.load_hf_dataset_slice("allocine", n=0)


# ------------------------------------------------------------ hostile input
def test_invalid_utf8_names_the_line():
    with raises_code("data.file_not_utf8", name="notes.txt", byte=9, line=2):
        D.read_text_upload(b"bonjour\n\xe9t\xe9", "notes.txt")


def test_size_limit_empty_and_binary():
    with raises_code("data.file_too_large", name="big.txt", size=1200, limit=1000):
        D.read_text_upload(b"a" * 1200, "big.txt", max_bytes=1000)
    with raises_code("data.file_empty", name="vide.txt"):
        D.read_text_upload(b"  \n ", "vide.txt")
    with raises_code("data.file_binary", name="u16.txt"):
        D.read_text_upload("héllo".encode("utf-16"), "u16.txt")
    assert D.read_text_upload(b"\xef\xbb\xbfa\r\nb\rc", "bom.txt") == "a\nb\nc"
    assert D.read_records(b'[{"a": 1}]', "ok.json", max_bytes=None) == [{"a": 1}]


def test_malformed_json_names_line():
    bad = b'[\n  {"text": "a", "label": "x"},\n  {"text": "b" "label": "y"}\n]'
    with raises_code("data.json_invalid", name="data.json", line=3):
        D.read_records(bad, "data.json")
    with raises_code("data.json_item_not_object", index=2, name="data.json", kind="string"):
        D.read_records(b'[{"text": "a"}, "b"]', "data.json")
    with raises_code("data.json_single_object", name="data.json"):
        D.read_records(b'{"text": "a"}', "data.json")


def test_malformed_jsonl_names_line():
    bad = b'{"text": "a"}\n\n{"text": "b"}\n{"text": oops}\n'
    with raises_code("data.jsonl_invalid", line=4, name="data.jsonl"):
        D.read_records(bad, "data.jsonl")
    with raises_code("data.jsonl_line_not_object", line=2, name="d.jsonl", kind="array"):
        D.read_records(b'{"a": 1}\n[1, 2]\n', "d.jsonl")
    assert D.read_records(b'{"a": 1}\n\n{"a": 2}\n', "d.jsonl") == [{"a": 1}, {"a": 2}]


def test_csv_dialects_and_malformed_rows():
    tickets = D.read_records(D.bundled_path("tickets_fr").read_bytes(), "tickets_fr.csv")
    assert len(tickets) == 300
    semi = "text;label\n\"Écran noir; rien ne s'affiche\";materiel\nWifi coupé;reseau\n".encode()
    assert D.read_records(semi, "t.csv") == [
        {"text": "Écran noir; rien ne s'affiche", "label": "materiel"},
        {"text": "Wifi coupé", "label": "reseau"}]
    tabs = b"text\tlabel\nun, deux\tx\n"
    assert D.read_records(tabs, "t.tsv") == [{"text": "un, deux", "label": "x"}]
    bad = b"text,label\nok,a\n\"multi\nline\",b\ntrop,de,champs\n"
    with raises_code("data.csv_field_count", line=5, name="t.csv", n_fields=3, n_columns=2):
        D.read_records(bad, "t.csv")
    with raises_code("data.csv_duplicate_column", column="text"):
        D.read_records(b"text,text\na,b\n", "t.csv")
    with raises_code("data.unsupported_format", name="t.xlsx"):
        D.read_records(b"a,b\n", "t.xlsx")


def test_empty_dataset_and_missing_columns():
    with raises_code("data.no_examples", name="e.json"):
        D.read_records(b"[]", "e.json")
    with raises_code("data.no_examples", name="h.csv"):
        D.read_records(b"text,label\n", "h.csv")
    records = D.read_records(b"texte,categorie\nbonjour,a\n", "x.csv")
    with raises_code("data.file_column_missing", column="text", name="x.csv", found="categorie, texte"):
        D.require_columns(records, ["text", "label"], filename="x.csv")
    with raises_code("data.column_missing", column="text", found="categorie, texte"):
        D.require_columns(records, ["text", "label"])
    with raises_code("data.example_missing_field", n=2, column="output"):
        D.require_columns([{"instruction": "a", "output": "b"}, {"instruction": "c"}],
                          ["instruction", "output"])
    with raises_code("data.dataset_empty"):
        D.require_columns([], ["text"])


def test_one_example_and_single_class_datasets(gpt2):
    records = D.read_records(b'[{"text": "Le wifi tombe", "label": "reseau"}]', "one.json")
    with raises_code("data.too_few_to_split", n=1):
        D.split_records(records)
    with raises_code("data.single_label", label="reseau"):
        D.ClassificationDataset([r["text"] for r in records], [r["label"] for r in records], gpt2)
    with raises_code("data.example_no_instruction", n=2):
        D.InstructionDataset([{"instruction": "a", "output": "b"}, {"instruction": "", "output": "c"}], gpt2)


# ------------------------------------------------------------ what users read
def test_every_checked_parameter_has_a_name_in_both_locales():
    """``_check_int(value, "stride", 1)`` says "{field} must be ...": core.field.stride must exist."""
    tree = ast.parse(Path(D.__file__).read_text(encoding="utf-8"))
    names = {node.args[1].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_check_int"
             and isinstance(node.args[1], ast.Constant)}
    assert {"stride", "max_length", "batch_size"} <= names
    for lang in ("fr", "en"):
        keys = set()
        for path in (ROOT / "assets" / "locales" / lang).glob("*.json"):
            keys |= set(json.loads(path.read_text(encoding="utf-8")))
        assert not {f"core.field.{n}" for n in names} - keys, lang


def test_labels_are_messages():
    for table in (D.BUNDLED, D.HF_PRESETS):
        for info in table.values():
            assert info["label"].code.startswith("data.") and str(info["label"])


def test_deeply_nested_json_is_refused_with_a_sentence():
    from said import fr

    for name, raw in (("deep.json", b"[" * 100_000 + b"]" * 100_000),
                      ("deep.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")):
        with pytest.raises(InvalidInput) as err:
            D.read_records(raw, name)
        assert err.value.code == "data.json_too_deep"
        assert fr(err.value) == (f"Le fichier « {name} » imbrique des listes ou des objets trop profondément pour "
                                 "être lu : un jeu de données est une liste d'objets simples.")
