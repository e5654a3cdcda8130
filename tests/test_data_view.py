"""The Data page's logic on exact small examples: explorer.corpus (sources, tokens), explorer.figures.data
(grid cells and figures) and explorer.views.data (batches, wording, the refusal helper)."""
from __future__ import annotations

import json
import time

import pytest
import torch
from said import fr, raises_said

from explorer import corpus as C
from explorer.figures import data as F
from explorer.views import data as V
from gpt_core import data as D
from gpt_core.errors import HubUnavailable, InvalidInput


class WordTok:
    """A word-level tokenizer with predictable ids: 0 is <|endoftext|>, words get 1, 2, ... in order."""

    def __init__(self, eos_id=0, knows_eot=True):
        self.words = {"<|endoftext|>": 0} if knows_eot else {"<eos>": 0}
        self.knows_eot = knows_eot
        self.eos_id, self.pad_id, self.name, self.label, self.vocab_size = eos_id, None, "word", "word", 0

    def encode(self, text, allow_special=True):
        if not self.knows_eot:  # spelled out piece by piece, as a vocabulary without the token would
            text = text.replace("<|endoftext|>", "< | endoftext | >")
        return [self.words.setdefault(w, len(self.words)) for w in text.split()]

    def decode(self, ids):
        back = {i: w for w, i in self.words.items()}
        return " ".join(back.get(int(i), f"<{int(i)}>") for i in ids)


class CharTok(WordTok):
    """Id n decodes to the n-th lowercase letter (0 is <|endoftext|>)."""

    def decode(self, ids):
        return "".join("<|endoftext|>" if int(i) == 0 else chr(ord("a") + int(i) - 1) for i in ids)


@pytest.fixture(scope="module")
def gpt2():
    from gpt_core.tokenizers import load_tokenizer
    return load_tokenizer("gpt2")


# ------------------------------------------------------------------ tokens
def test_token_texts_show_spaces_newlines_and_eot(gpt2):
    ids = gpt2.encode("Hello world\n<|endoftext|>")
    assert ids == [15496, 995, 198, 50256]
    assert C.token_texts(gpt2, ids) == ["Hello", "␣world", "↵", "<|endoftext|>"]


def test_eot_token_id_of_real_tokenizers(gpt2):
    from gpt_core.tokenizers import load_tokenizer
    assert C.eot_token_id(gpt2) == 50256
    smol = load_tokenizer("smollm2")
    assert C.eot_token_id(smol) == 0 and smol.eos_id == 2  # <|endoftext|>, not the chat end <|im_end|>


def test_eot_token_id_falls_back_to_eos_then_refuses():
    assert C.eot_token_id(WordTok(eos_id=7, knows_eot=False)) == 7
    with raises_said(InvalidInput, "pas de token de fin de texte"):
        C.eot_token_id(WordTok(eos_id=None, knows_eot=False))


def test_eot_stream_closes_each_document_and_skips_empty_ones():
    assert C.eot_stream([[1, 2], [], [3]], 9) == [1, 2, 9, 3, 9]


# ---------------------------------------------------------------- chunking
def test_chunk_grids_exact_for_context_3():
    eot, pad = F.chunk_grids([[5, 6, 7], [8]], CharTok(), context=3)
    # EOT: stream 5 6 7 <eot> 8 <eot> cut every 3 tokens, nothing wasted
    assert eot.result.rows.tolist() == [[5, 6, 7], [0, 8, 0]]
    assert eot.cats == [[2, 2, 2], [F.CAT_EOT, 3, F.CAT_EOT]]
    assert eot.texts == [["e", "f", "g"], ["<|endoftext|>", "h", "<|endoftext|>"]]
    assert eot.result.waste_pct == 0 and eot.result.last_window == "exact"
    # padding: one document per row; the first loses its end-of-text (truncated), the second is padded
    assert pad.result.rows.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert pad.cats == [[2, 2, 2], [3, F.CAT_EOT, F.CAT_PAD]]
    assert pad.result.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert pad.result.truncated_tokens == 1 and pad.result.waste_pct == pytest.approx(100 / 6)


def test_chunk_grids_padding_cells_with_the_eot_id_are_padding_not_eot():
    eot, _ = F.chunk_grids([[5, 6, 7], [8]], CharTok(), context=4)   # pad id = eot id = 0
    assert eot.result.rows.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert eot.cats == [[2, 2, 2, F.CAT_EOT], [3, F.CAT_EOT, F.CAT_PAD, F.CAT_PAD]]
    assert eot.result.waste_pct == 25.0
    dropped, _ = F.chunk_grids([[5, 6, 7], [8]], CharTok(), context=4, last="drop")
    assert dropped.result.rows.tolist() == [[5, 6, 7, 0]] and dropped.result.dropped_tokens == 2


def test_chunk_grids_on_gpt2_use_50256_and_cap_drawn_rows(gpt2):
    docs = [gpt2.encode("Hello world"), gpt2.encode("Hi")]            # [15496, 995], [17250]
    eot, pad = F.chunk_grids(docs, gpt2, context=2, max_rows=2)
    assert eot.result.rows.tolist() == [[15496, 995], [50256, 17250], [50256, 50256]]
    assert eot.shown_rows == 2 and len(eot.cats) == 2 and eot.result.n_rows == 3
    assert eot.cats[1] == [F.CAT_EOT, 3]
    assert pad.result.rows.tolist() == [[15496, 995], [17250, 50256]]
    assert pad.result.waste_pct == 0 and pad.result.truncated_tokens == 1


# --------------------------------------------------------- sliding windows
def test_window_view_and_shift_table_exact():
    view = F.window_view(list(range(1, 11)), CharTok(), max_length=4, stride=3)
    r = view.result
    assert r.starts == [0, 3] and r.n_samples == 2 and r.overlap == 1 and view.shown == 2
    table = F.shift_table(view, 1, ["xt", "xi", "yt", "yi"])
    assert list(table.columns) == ["3", "4", "5", "6"]
    assert table.loc["xi"].tolist() == ["4", "5", "6", "7"]
    assert table.loc["yi"].tolist() == ["5", "6", "7", "8"]
    assert table.loc["xt"].tolist() == ["d", "e", "f", "g"] and table.loc["yt"].tolist() == ["e", "f", "g", "h"]
    with raises_said(InvalidInput, "n'existe pas"):
        F.shift_table(view, 2, ["a", "b", "c", "d"])


def test_window_view_caps_drawn_windows_and_rejects_short_streams():
    assert F.window_view(list(range(100)), CharTok(), 4, 1, max_shown=10).shown == 10
    with raises_said(InvalidInput, "trop court"):
        F.window_view([1, 2, 3], CharTok(), 4, 1)


# ----------------------------------------------------------------- batches
def test_first_batch_without_shuffle_is_the_first_windows():
    x, y = V.first_batch(list(range(20)), max_length=4, stride=4, batch_size=2, shuffle=False)
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and y.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    xs, _ = V.first_batch(list(range(20)), 4, 4, 2, shuffle=True, seed=0)
    xs2, _ = V.first_batch(list(range(20)), 4, 4, 2, shuffle=True, seed=0)
    assert torch.equal(xs, xs2)                                        # reproducible shuffle
    with raises_said(InvalidInput, "drop_last"):
        V.first_batch(list(range(20)), 4, 4, batch_size=5)             # 4 windows < 5


def test_batch_frame_is_token_text_per_cell():
    frame = F.batch_frame(torch.tensor([[1, 2], [3, 0]]), CharTok())
    assert frame.values.tolist() == [["a", "b"], ["c", "<|endoftext|>"]]
    assert list(frame.columns) == ["0", "1"]


def _tr(key, **kw):
    return key + json.dumps(kw, sort_keys=True)


def test_arithmetic_sentence_parts():
    a = D.batch_arithmetic(10, 4, epochs=2, drop_last=True, grad_accum=1, max_length=8)
    s = V.arithmetic_sentence(a, _tr)
    assert 'data.arith.main{"batches": 2, "bs": 4, "n": 10}' in s
    assert 'data.arith.dropped{"dropped": 2}' in s and "data.arith.partial" not in s
    assert '"steps": 4' in s and '"tokens": 32' in s
    b = V.arithmetic_sentence(D.batch_arithmetic(10, 4, 1, drop_last=False, grad_accum=2, max_length=8), _tr)
    assert 'data.arith.last{"last": 2}' in b and "data.arith.partial" in b   # 3 batches, groups of 2
    assert V.arithmetic_sentence(D.batch_arithmetic(3, 4), _tr) == 'data.arith.none{"bs": 4, "n": 3}'


def test_arithmetic_sentence_in_french():
    from explorer.ui.i18n import t
    s = V.arithmetic_sentence(D.batch_arithmetic(10, 4, epochs=2, max_length=8), t)
    assert s.startswith("10 échantillons en batchs de 4 donnent **2 batch(s) par epoch**.")
    assert "**4 pas en 2 epoch(s)**" in s and "32 tokens" in s


# ----------------------------------------------------------------- sources
def test_upload_txt_splits_documents_at_blank_lines():
    c = C.corpus_from_upload("Un.\n\nDeux\ntrois.\n\n\n".encode(), "a.txt")
    assert c.docs == ["Un.", "Deux\ntrois."] and c.origin == "a.txt" and c.cut(V.MAX_DOC_CHARS)[1] == 0


def test_upload_tabular_reads_the_text_column():
    csv = "id;text\n1;Premier ticket\n2;Second ticket\n".encode()
    c = C.corpus_from_upload(csv, "t.csv")
    assert c.docs == ["Premier ticket", "Second ticket"] and c.column == "text"
    jsonl = b'{"review": "Super film"}\n{"review": 42}\n'
    c = C.corpus_from_upload(jsonl, "r.jsonl")
    assert c.docs == ["Super film", "42"] and c.column == "review"


def test_upload_alpaca_records_become_full_training_texts():
    data = json.dumps([{"instruction": "Dis bonjour.", "input": "", "output": "Bonjour !"}]).encode()
    c = C.corpus_from_upload(data, "i.json")
    prompt, response = D.format_alpaca({"instruction": "Dis bonjour.", "output": "Bonjour !"})
    assert c.docs == [(prompt + response).strip()] and c.column == "instruction/input/output"


@pytest.mark.parametrize("data, name, message", [
    (b'[{"text": "a"},', "bad.json", "n'est pas du JSON valide : ligne 1"),
    (b'{"text": "a"}\n{oops}\n', "bad.jsonl", "Ligne 2 du fichier « bad.jsonl » : JSON invalide"),
    (b"caf\xe9 au lait", "latin1.txt", "n'est pas du texte UTF-8 valide"),
    (b"   \n  ", "empty.txt", "est vide"),
    (b"", "empty.csv", "est vide"),
    (b"label,score\nbug,1\n", "nocol.csv", "La colonne « text » est absente du fichier « nocol.csv » (colonnes trouvées : label, score)"),
    (b'[{"text": "  "}]', "blank.json", "ne contient aucun texte"),
    (b"%PDF-1.4", "doc.pdf", "Format de fichier non pris en charge"),
    (b"text\n\"unterminated\n", "q.csv", "q.csv"),
])
def test_hostile_uploads_give_readable_messages(data, name, message):
    with pytest.raises(InvalidInput) as err:
        C.corpus_from_upload(data, name)
    assert message in fr(err.value)


def test_upload_over_the_size_limit_is_refused():
    with raises_said(InvalidInput, "trop gros"):
        C.corpus_from_upload(b"x" * 2000, "big.txt", max_bytes=1000)


def test_long_documents_are_cut_and_counted():
    c = C.corpus_from_text("a" * (V.MAX_DOC_CHARS + 5) + "\n\nbref")
    docs, n_cut = c.cut(V.MAX_DOC_CHARS)
    assert [len(d) for d in docs] == [V.MAX_DOC_CHARS, 4] and n_cut == 1 and c.origin is None


def test_bundled_and_pydoc_sources():
    fr = C.load_corpus("corpus_fr")
    assert fr.origin == "corpus_fr.txt" and len(fr.docs) == len(D.split_documents(D.load_bundled("corpus_fr")))
    assert C.load_corpus("pydoc").origin == "pydoc_data.topics"
    assert len(C.load_corpus("pydoc").docs) == len(D.pydoc_documents())
    with raises_said(InvalidInput, "Aucun fichier"):
        C.load_corpus("upload")
    with raises_said(InvalidInput, "Source inconnue"):
        C.load_corpus("nope")


def test_hf_source_offline_fails_fast_with_one_line():
    start = time.perf_counter()
    with pytest.raises(HubUnavailable) as err:
        C.corpus_from_hf("wikipedia-fr")
    assert time.perf_counter() - start < 5
    assert "injoignable" in fr(err.value) and "\n" not in fr(err.value)


# --------------------------------------------------------- instruction data
def test_instruction_records_bundled_and_hostile():
    records = C.instruction_records()
    assert len(records) >= 150 and all("instruction" in r and "output" in r for r in records)
    with raises_said(InvalidInput, "La colonne « output » est absente"):
        C.instruction_records((b"instruction,input\nDis bonjour,\n", "x.csv"))
    with raises_said(InvalidInput, "JSON valide"):
        C.instruction_records((b"[{", "x.json"))


RECORDS = [{"instruction": "Say hi", "input": "", "output": "hi"},           # prompt 22 words, response 1
           {"instruction": "Add one and two", "input": "1 2", "output": "three"}]  # prompt 28, response 1


@pytest.mark.parametrize("mask_prompt", [False, True])
def test_collate_view_cells_are_exact(mask_prompt):
    tok = WordTok()
    view = F.collate_view(RECORDS, 0, 2, tok, "alpaca", mask_prompt)
    assert view.batch["prompt_lengths"] == [22, 28]
    # sequences: 22+1+1 = 24 and 28+1+1 = 30 tokens -> inputs/targets of width 29
    assert view.batch["inputs"].shape == (2, 29) and len(view.cats) == 4
    x0, y0, x1, y1 = view.cats
    assert x0 == [F.CAT_PROMPT] * 22 + [F.CAT_RESPONSE, F.CAT_END] + [F.CAT_PADDING] * 5
    prompt_y = [F.CAT_IGN_PROMPT if mask_prompt else F.CAT_PROMPT]
    assert y0 == prompt_y * 21 + [F.CAT_RESPONSE, F.CAT_END] + [F.CAT_IGN_PAD] * 6
    assert x1 == [F.CAT_PROMPT] * 28 + [F.CAT_RESPONSE]                 # the longest row has no padding
    assert y1 == prompt_y * 27 + [F.CAT_RESPONSE, F.CAT_END]
    assert view.n_ignored_pad == 6 and view.n_ignored_prompt == (21 + 27 if mask_prompt else 0)
    assert view.batch["n_loss_tokens"] == (4 if mask_prompt else 23 + 29)
    # -100 exactly where the cell is an ignored category, and the masked cell keeps its token's text
    for cats, values in ((y0, view.values[1]), (y1, view.values[3])):
        assert [v == -100 for v in values] == [c in (F.CAT_IGN_PAD, F.CAT_IGN_PROMPT) for c in cats]
    assert view.texts[1][22] == "<|endoftext|>" and view.texts[1][21] == "hi"
    assert view.values[0][:2] == tok.encode("Below is")


def test_collate_view_clamps_start_and_size():
    view = F.collate_view(RECORDS, start=5, size=9, tokenizer=WordTok())
    assert view.batch["inputs"].shape[0] == 2 and view.batch["prompt_lengths"] == [22, 28]


# ------------------------------------------------------------------ figures
def test_category_grid_spec():
    fig = F.category_grid([[0, 2], [1, 0]], [["a", "b"], ["c", "d"]], ["r0", "r1"], ["PAD", "EOT", "doc 1"],
                          F.doc_colours(1), "titre", "position", values=[[5, 6], [7, 8]])
    heat = fig.data[0]
    assert [list(r) for r in heat.z] == [[0, 2], [1, 0]]
    assert list(heat.colorbar.ticktext) == ["PAD", "EOT", "doc 1"] and heat.zmax == 2.5
    assert heat.customdata[0][1] == "r0 · 1<br>“b” · 6<br>doc 1"
    assert fig.layout.title.text == "titre"


def test_window_bars_highlight_the_chosen_window():
    fig = F.window_bars([0, 2, 4], 3, list("abcdefgh"), chosen=1, names=["x", "y", "chosen"])
    chosen_x = [tr for tr in fig.data if tr.marker.color == "#d62728" and tr.name == "chosen"]
    assert len(fig.data) == 4 and len(chosen_x) == 2
    assert [v for v in chosen_x[0].x if v is not None] == [3]
    assert list(fig.data[0].base) == [0, 2, 4] and list(fig.data[2].base) == [1, 3, 5]


def test_attempt_shows_the_message_and_returns_none():
    shown = []

    class Where:
        def warning(self, msg):
            shown.append(msg)

    assert V.attempt(Where(), lambda: 3) == 3
    assert V.attempt(Where(), F.window_view, [1], CharTok(), 4, 1) is None
    assert shown and "trop court" in shown[0]


def test_shown_windows_follow_the_chosen_window():
    view = F.window_view(list(range(100)), CharTok(), 4, 1, max_shown=10)   # 96 windows, 10 drawn
    assert F.shown_windows(view, 0) == range(0, 10)
    assert F.shown_windows(view, 50) == range(45, 55)
    assert F.shown_windows(view, 95) == range(86, 96)
    small = F.window_view(list(range(10)), CharTok(), 4, 3)                 # 2 windows
    assert F.shown_windows(small, 1) == range(0, 2)


def test_window_bars_offset_block_labels_and_range():
    fig = F.window_bars([45, 46], 4, [str(i) for i in range(60)], chosen=46, names=["x", "y", "c"], first=45)
    assert list(fig.data[0].y) == ["#45", "#46"]
    assert [v for v in fig.data[1].x if v is not None] == [4]                # window #46 is the chosen one
    assert tuple(fig.layout.xaxis.range) == (44.5, 50.5)                   # last target: 46 + 4
    assert list(fig.layout.xaxis.ticktext) == ["45", "46", "47", "48", "49", "50"]


def test_special_ids(gpt2):
    assert C.special_ids(gpt2) == (50256, 50256)
    tok = WordTok(eos_id=None, knows_eot=False)
    with pytest.raises(InvalidInput):
        C.special_ids(tok)
