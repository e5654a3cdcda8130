"""explorer.runs, explorer.corpus, explorer.views.training_form and explorer.figures.training.

Plans, hostile input, the job, before/after, the finished-run registry.

Everything runs on the CPU with 1-block or 2-block GPTs and fixed seeds.
"""
from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import zipfile

import pytest
import torch

from said import fr

from explorer import corpus as C
from explorer import history as H
from explorer import run_job as J
from explorer import runs as R
from explorer.figures import training as F
from explorer.jobs import JobManager
from explorer.views import training_results as TR
from gpt_core.config import GPTConfig
from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core.model import GPT
from gpt_core.registry import LoadedModel
from gpt_core.train import prepare_pretraining

NANO = dict(R.ARCH_PRESETS["nano"])
LN_VOCAB = math.log(50257)


@pytest.fixture(scope="module", autouse=True)
def quiet_and_one_thread():
    """Tiny models gain nothing from threads; bare-mode Streamlit warnings are noise here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("streamlit.runtime.scriptrunner_utils.script_run_context",
                 "streamlit.runtime.state.session_state_proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    from gpt_core.tokenizers import load_tokenizer

    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiny_base():
    return prepare_pretraining(GPTConfig.preset("tiny"), seed=0).eval()


class FakeStore:
    """What explorer.ui.model_store.store() offers the job: register(name, LoadedModel) and .custom."""

    def __init__(self):
        self.custom = {}

    def register(self, name, lm, owner=None):
        self.custom[name] = lm


def run_job(plan, store=None, cancel_after_steps=None):
    cancel = threading.Event()
    events = []
    for event in J.job_fn(plan, store)(cancel):
        events.append(event)
        if cancel_after_steps is not None and event["type"] == "step" and event["step"] >= cancel_after_steps:
            cancel.set()
    return events


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def text_of(source, **kw):
    return C.load_corpus(source, **kw).text


def pretrain(tok, text, hyper, prompt, arch=NANO):
    return R.plan_pretrain(tok, text, arch, hyper, "cpu", prompt, R.RunNames("pré-entraîné", "GPT pré-entraîné ici"),
                           tokenizer_name="gpt2")


# ------------------------------------------------------------------ sources
def test_bundled_and_pydoc_corpora():
    fr_corpus = C.load_corpus("corpus_fr")
    assert fr_corpus.origin == "corpus_fr.txt" and "tarte aux pommes" in fr_corpus.text
    assert not C.training_text(fr_corpus, R.MAX_CORPUS_CHARS).cut
    py = C.load_corpus("pydoc")
    assert py.origin == "pydoc_data.topics" and len(py.text) > 100_000
    cut = C.training_text(py, 1000)
    assert cut.cut and len(cut.text) == 1000 and cut.chars == len(py.text)


def test_uploaded_text_json_and_csv_corpora():
    assert text_of("upload", upload=(b"un texte\r\n\r\nun autre", "a.txt")) == "un texte\n\nun autre"
    records = json.dumps([{"text": "premier"}, {"text": "second"}]).encode()
    assert text_of("upload", upload=(records, "a.json")) == "premier\n\nsecond"
    alpaca = b'{"instruction": "Dis bonjour.", "output": "Bonjour."}\n'
    assert "### Response:\nBonjour." in text_of("upload", upload=(alpaca, "a.jsonl"))
    # the same columns as the Data page: a review column is a text column for pretraining too
    reviews = "review,stars\nSuper film,5\nBof,2\n".encode()
    corpus = C.load_corpus("upload", upload=(reviews, "avis.csv"))
    assert corpus.text == "Super film\n\nBof" and corpus.column == "review"


@pytest.mark.parametrize("data, name, message", [
    (b"x" * 5_000_001, "big.txt", "est trop gros"),
    (b"", "vide.txt", "est vide"),
    (b"\xff\xfe\x00a\x00b", "utf16.txt", "octets nuls"),
    (b"caf\xe9", "latin1.txt", "pas du texte UTF-8 valide"),
    (b'[{"text": "a"}, {"text": ', "broken.json", "n'est pas du JSON valide"),
    (b'{"text": "a"}\n{text: b}\n', "broken.jsonl", "Ligne 2"),
    (b"title,body2\nx,y\n", "cols.csv", "La colonne « text » est absente"),
    (b"text\n\"ouvert\n", "quote.csv", "CSV mal formé"),
    (b"\x89PNG\r\n", "image.png", "Format de fichier non pris en charge"),
])
def test_hostile_uploads_give_a_sentence(data, name, message):
    with pytest.raises(GPTCoreError) as err:
        C.load_corpus("upload", upload=(data, name))
    assert message in fr(err.value)


def test_empty_pasted_text_and_missing_file():
    with pytest.raises(InvalidInput) as err:
        C.load_corpus("paste", text=" \n\t ")
    assert err.value.code == "corpus.empty_paste" and fr(err.value).startswith("Le texte est vide")
    with pytest.raises(InvalidInput) as err:
        C.load_corpus("upload")
    assert err.value.code == "corpus.no_file" and fr(err.value).startswith("Aucun fichier")


def test_records_for_fine_tuning_and_their_hostile_variants():
    assert len(C.instruction_records()) == 200
    tickets = C.classification_records()
    assert len(tickets) == 300 and {"text", "label"} <= set(tickets[0])
    cases = [
        (C.instruction_records, (b'[{"instruction": "a", "answer": "b"}]', "x.json"), "La colonne « output » est absente"),
        (C.classification_records, (b'[{"text": "a", "label": "x"}, {"text": "b"}]', "x.json"),
         "L'exemple n° 2 .*n'a pas de champ « label »"),
        (C.classification_records, ("text,label\npanne wifi,reseau\ncâble,reseau\n".encode(), "x.csv"),
         "même étiquette « reseau »"),
        (C.instruction_records, (b"[]", "vide.json"), "ne contient aucun exemple"),
    ]
    for reader, upload, pattern in cases:
        with pytest.raises(InvalidInput) as err:
            reader(upload)
        assert re.search(pattern, fr(err.value)), fr(err.value)


# -------------------------------------------------------------------- plans
def test_pretrain_plan_refuses_heads_that_do_not_divide_d_model(tok):
    arch = {"n_layers": 2, "n_heads": 12, "d_model": 64, "context": 32}
    with pytest.raises(InvalidInput) as err:
        pretrain(tok, text_of("corpus_fr"), R.Hyper(), "Il", arch=arch)
    assert err.value.code == "config.heads_do_not_divide"


def test_pretrain_plan_windows_batches_and_estimate(tok):
    plan = pretrain(tok, text_of("corpus_fr"), R.Hyper(steps=30, batch_size=4, lr=3e-3, warmup=2), "Il était")
    x, y = next(iter(plan.train_batches))
    assert x.shape == y.shape == (4, 32)
    assert plan.params["train_windows"] == len(plan.train_batches.dataset) > 100
    assert plan.cfg.steps == 30 and plan.cfg.eval_every == 3 and plan.cfg.sample_every == 5
    est = plan.estimate
    # one block of d=32: 2 norms (2 x 64) + qkv (32 x 96 + 96) + out (32 x 32 + 32) + fc_in (32 x 128 + 128) + fc_out
    block = 2 * 64 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
    assert est["params"] == 50257 * 32 + 32 * 32 + block + 64  # embeddings, positions, block, final norm
    assert est["fits"] and est["reason"] is None
    assert est["tokens"] == 30 * 4 * 32


def test_pretrain_plan_refuses_a_corpus_too_short_and_an_empty_prompt(tok):
    with pytest.raises(InvalidInput) as err:
        pretrain(tok, "Il était une fois un chat. " * 12, R.Hyper(), "Il")
    assert err.value.code == "runs.corpus_too_short" and "trop court pour un contexte de 32 tokens" in fr(err.value)
    with pytest.raises(InvalidInput) as err:
        pretrain(tok, text_of("corpus_en"), R.Hyper(), "   ")
    assert err.value.code == "train.empty_sample_prompt"


def test_a_run_too_big_for_memory_is_refused_with_a_reason(tok):
    arch = {"n_layers": 12, "n_heads": 12, "d_model": 768, "context": 1024}
    plan = pretrain(tok, text_of("pydoc"), R.Hyper(steps=10, batch_size=512), "The", arch=arch)
    assert not plan.estimate["fits"]
    assert plan.estimate["memory_bytes"] > 100e9  # activations of 512 x 1024 tokens through 12 blocks
    reason = plan.estimate["reason"]
    assert reason.code == "train.too_big" and fr(reason).startswith("Cet entraînement demande environ")
    assert "réduisez la taille de batch" in fr(reason)


@pytest.mark.parametrize("records, message", [
    ([], "est vide"),
    ([{"instruction": "a", "output": "b"}], "Il n'y a que 1 exemple"),
    ([{"instruction": "a", "input": "", "output": "b"}] * 2, "Il n'y a que 2 exemple"),
    ([{"instruction": "", "output": "b"}] * 5, "n'a pas de champ « instruction » rempli"),
])
def test_finetune_plan_refuses_empty_and_tiny_instruction_sets(tiny_base, tok, records, message):
    with pytest.raises(InvalidInput) as err:
        R.plan_finetune(tiny_base, tok, records, R.FinetuneOptions("instruct", "full"), R.Hyper(), "cpu")
    assert re.search(message, fr(err.value)), fr(err.value)


def test_finetune_plan_refuses_single_class_lengths_and_masked_prompts(tiny_base, tok):
    one_class = [{"text": f"ticket {i}", "label": "reseau"} for i in range(10)]
    with pytest.raises(InvalidInput) as err:
        R.plan_finetune(tiny_base, tok, one_class, R.FinetuneOptions("classify"), R.Hyper(), "cpu")
    assert "même étiquette" in fr(err.value)
    records = C.instruction_records()
    with pytest.raises(InvalidInput) as err:
        R.plan_finetune(tiny_base, tok, records, R.FinetuneOptions("instruct", max_length=256), R.Hyper(), "cpu")
    assert err.value.code == "train.rows_above_context" and "dépassent le contexte du modèle (128" in fr(err.value)
    with pytest.raises(InvalidInput) as err:
        R.plan_finetune(tiny_base, tok, records, R.FinetuneOptions("instruct", mask_prompt=True, max_length=16),
                        R.Hyper(), "cpu")
    assert err.value.code == "runs.prompts_fill_rows" and "les prompts remplissent toute la longueur" in fr(err.value)


def test_finetune_plan_estimates_lora_and_frozen_blocks(tiny_base, tok):
    records = C.instruction_records()
    full = R.plan_finetune(tiny_base, tok, records, R.FinetuneOptions("instruct", "full", max_length=64), R.Hyper(),
                           "cpu").estimate
    small = R.plan_finetune(tiny_base, tok, records, R.FinetuneOptions("instruct", "lora", max_length=64), R.Hyper(),
                            "cpu").estimate
    assert small["memory_breakdown"]["grads_and_adamw"] == 12 * small["trainable_params"]
    assert small["memory_bytes"] < full["memory_bytes"] and small["fits"] and full["fits"]
    frozen = R.plan_finetune(tiny_base, tok, C.classification_records(), R.FinetuneOptions("classify", n_last=1),
                             R.Hyper(), "cpu").estimate
    block = sum(p.numel() for p in tiny_base.blocks[1].parameters())
    assert frozen["trainable_params"] == block + 2 * 64 + (5 * 64 + 5)  # last block, final norm, 5-class head


# ---------------------------------------------------------------------- jobs
def test_pretraining_job_learns_measures_saves_and_registers(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    plan = pretrain(tok, text_of("corpus_fr"), R.Hyper(steps=16, batch_size=8, lr=1e-2, warmup=2), "Pour préparer une")
    store = FakeStore()
    events = run_job(plan, store)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "status" and kinds[-2:] == ["result", "done"]
    assert [e["message"].code for e in events if e["type"] == "status"] == [
        "runs.preparing", "runs.before", "runs.training", "runs.after", "runs.saving"]
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, 17))
    evals = [e["val_loss"] for e in events if e["type"] == "eval"]
    assert evals[0] == pytest.approx(LN_VOCAB, abs=0.1)
    assert evals[-1] < evals[0] - 2.0  # stated margin: 16 steps at lr 1e-2 learn the unigram statistics
    samples = [e for e in events if e["type"] == "sample"]
    assert samples and all(s["text"].startswith("Pour préparer une") for s in samples)
    result, done = events[-2], events[-1]
    name = result["model_name"]
    assert name.startswith("pré-entraîné ") and list(store.custom) == [name]
    assert store.custom[name].load_seconds == 0.0  # trained here, not loaded: no load time to show
    lm = store.custom[name]
    assert isinstance(lm, LoadedModel) and isinstance(lm.model, GPT) and not lm.model.training
    assert lm.model.cfg.n_layers == 1 and lm.tokenizer is tok and lm.source.family == "gpt"
    row = result["comparison"]["rows"][0]
    assert row["prompt"] == "Pour préparer une" and row["before"] != row["after"]
    dist = result["comparison"]["dist"]
    assert 8 <= len(dist["labels"]) <= 12 and len(dist["before"]) == len(dist["after"]) == len(dist["labels"])
    assert all(0 <= p <= 1 for p in dist["before"] + dist["after"])
    assert max(dist["after"]) > 10 * max(dist["before"])  # random init is flat, the trained model is not
    assert done["checkpoint"] == str(tmp_path / "checkpoints" / plan.run_id)
    record = H.RunStore().get(plan.run_id)
    assert record.status == "done" and record.config["tokenizer"] == "gpt2" and record.config["steps"] == 16
    assert record.history["train_steps"] == list(range(1, 17)) and record.history["val_loss"] == evals
    archive = zipfile.ZipFile(io.BytesIO(TR.checkpoint_zip(done["checkpoint"])))
    assert sorted(n.split("/", 1)[1] for n in archive.namelist()) == ["config.json", "model.safetensors"]
    run = J.get_run(plan.run_id)
    out = J.compare_prompt(run, "Il était une fois")
    assert set(out) == {"before_text", "after_text", "dist"}
    with pytest.raises(InvalidInput) as err:
        J.compare_prompt(run, "  ")
    assert err.value.code == "evaluate.empty_prompt"
    with pytest.raises(InvalidInput) as err:
        TR.checkpoint_zip(tmp_path / "gone")
    assert err.value.code == "runs.no_checkpoint"


def test_job_through_the_manager_gives_metrics_json(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    plan = pretrain(tok, text_of("corpus_en"), R.Hyper(steps=5, batch_size=4, warmup=0), "To make a")
    manager = JobManager()
    job = manager.submit(plan.kind, J.job_fn(plan, None), {**plan.params, "run_id": plan.run_id})
    snap = manager.wait(job, timeout=120)
    assert snap.status == "done", snap.message
    assert snap.result["model_name"] is None  # no store given: nothing registered
    metrics = json.loads(TR.metrics_json(snap))
    assert metrics["status"] == "done" and metrics["params"]["steps"] == 5
    assert metrics["message"].startswith("Entraînement terminé : 5 étapes")  # said in the (default) French
    assert metrics["history"]["train_loss"] == snap.train_loss and len(snap.train_loss) == 5
    assert metrics["comparison"]["rows"][0]["prompt"] == "To make a"


def test_cancelled_and_diverged_jobs_end_with_a_message_and_register_nothing(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    text = text_of("corpus_fr")
    store = FakeStore()
    plan = pretrain(tok, text, R.Hyper(steps=500, batch_size=4), "Le")
    events = run_job(plan, store, cancel_after_steps=2)
    assert events[-1]["type"] == "cancelled" and "annulé à l'étape 2" in fr(events[-1]["message"])
    hot = pretrain(tok, text, R.Hyper(steps=40, batch_size=4, lr=1.0, warmup=0, schedule="constant"), "Le")
    hot.cfg.max_grad_norm = None
    events = run_job(hot, store)
    assert events[-1]["type"] == "diverged"
    said = fr(events[-1]["message"])
    assert "divergé" in said and "taux d'apprentissage plus petit" in said
    assert store.custom == {} and not list((tmp_path / "checkpoints").glob("*"))
    recorded = {r.run_id: r for r in H.RunStore().list()}
    assert recorded[plan.run_id].status == "cancelled" and recorded[hot.run_id].status == "diverged"
    assert recorded[plan.run_id].checkpoint == "" and recorded[plan.run_id].history["train_steps"] == [1, 2]


def test_instruction_job_with_lora_leaves_the_base_untouched(tiny_base, tok, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    before = state_of(tiny_base)
    opts = R.FinetuneOptions("instruct", "lora", lora_r=4, mask_prompt=True, max_length=64)
    plan = R.plan_finetune(tiny_base, tok, C.instruction_records(), opts, R.Hyper(steps=4, batch_size=4, warmup=0),
                           "cpu", R.RunNames("instruct", "tiny, fine-tuné ici (instruct)"))
    assert plan.estimate["trainable_params"] == 2 * 4 * 16 * 64
    store = FakeStore()
    events = run_job(plan, store)
    assert events[-1]["type"] == "done", events[-1]["message"]
    result = events[-2]
    rows = result["comparison"]["rows"]
    assert len(rows) == 3 and {"instruction", "input", "expected", "before", "after"} <= set(rows[0])
    lm = store.custom[result["model_name"]]
    assert type(lm.model) is GPT  # LoRA merged into a plain GPT for the other pages
    assert "tiny, fine-tuné ici (instruct)" in lm.source.label
    for key, value in state_of(tiny_base).items():
        assert torch.equal(value, before[key]), key
    assert "after_text" in J.compare_prompt(J.get_run(plan.run_id), "Traduis en anglais : le soleil")


def test_classification_job_reports_accuracy_and_confusion(tiny_base, tok, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    opts = R.FinetuneOptions("classify", max_length=48, n_last=2)
    plan = R.plan_finetune(tiny_base, tok, C.classification_records(), opts,
                           R.Hyper(steps=60, batch_size=16, lr=3e-3, warmup=5), "cpu")
    store = FakeStore()
    events = run_job(plan, store)
    assert events[-1]["type"] == "done", events[-1]["message"]
    cmp = events[-2]["comparison"]
    rep = cmp["report"]
    assert rep["n"] == 60 and sum(map(sum, rep["confusion_matrix"])) == 60
    assert rep["labels"] == ["compte_acces", "impression", "logiciel", "materiel", "reseau"]
    assert rep["accuracy"] > rep["majority_baseline"]  # 60 steps already beat always answering one class
    assert len(cmp["rows"]) == 3 and cmp["rows"][0]["after"] in rep["labels"]
    assert sum(cmp["dist"]["after"]) == pytest.approx(1.0)
    assert store.custom == {}  # a classifier is not a language model: not offered to other pages
    out = J.compare_prompt(J.get_run(plan.run_id), "L'imprimante du 2e étage n'imprime plus.")
    assert out["labels"] == rep["labels"] and sum(out["after"]) == pytest.approx(1.0)
    with pytest.raises(InvalidInput) as err:
        J.compare_prompt(J.get_run(plan.run_id), "   ")
    assert err.value.code == "evaluate.empty_text"


def test_only_the_last_runs_stay_in_memory(tok, tmp_path):
    store = FakeStore()
    for i in range(J.MAX_KEPT_RUNS + 1):
        (tmp_path / f"r{i}").mkdir()
        store.custom[f"m{i}"] = object()
        J.remember(J.TrainedRun(f"r{i}", "lm", tok, None, torch.nn.Linear(1, 1), None, 8, "alpaca", f"m{i}",
                                str(tmp_path / f"r{i}")), store)
    assert J.get_run("r0") is None and J.get_run(f"r{J.MAX_KEPT_RUNS}") is not None
    # the oldest model leaves the sidebar (memory); its checkpoint stays for the run history
    assert (tmp_path / "r0").exists() and "m0" not in store.custom and "m1" in store.custom


# ------------------------------------------------------------------ figures
def test_loss_curve_drops_non_finite_points():
    fig = F.loss_curve([1, 2, 3], [3.0, float("nan"), 2.0], [0, 3], [3.5, float("inf")], ("tr", "va"), "t")
    train, val = fig.data
    assert list(train.x) == [1, 3] and list(train.y) == [3.0, 2.0]
    assert list(val.x) == [0] and train.name == "tr" and val.mode == "lines+markers"


def test_confusion_heatmap_and_compare_bars():
    fig = F.confusion_heatmap([[3, 1], [0, 4]], ["a", "b"], "m", "pred", "true", "n")
    heat = fig.data[0]
    assert [list(r) for r in heat.z] == [[3, 1], [0, 4]] and list(heat.x) == ["a", "b"]
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.xaxis.title.text == "pred"
    bars = F.compare_bars(["x", "y"], [0.1, 0.2], [0.5, 0.3], ("avant", "après"), "d")
    assert [b.name for b in bars.data] == ["avant", "après"] and list(bars.data[1].x) == [0.5, 0.3]
    assert bars.layout.barmode == "group"


def test_a_pasted_corpus_pretrains_on_its_own_bpe_which_travels_with_the_checkpoint(tmp_path, monkeypatch):
    from explorer import history_models as HM
    from gpt_core.tokenlab import language_bpe

    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    bundled, name = R.pretrain_tokenizer("bpe", "corpus_fr", text_of("corpus_fr"))
    assert name == "bpe-fr" and bundled is language_bpe("fr").tokenizer and bundled.vocab_size == 1600
    assert R.pretrain_tokenizer("gpt2", "paste", "x")[1] == "gpt2"
    pasted = text_of("corpus_fr")[:5000]
    tok, name = R.pretrain_tokenizer("bpe", "paste", pasted)
    assert name == "" and 300 < tok.vocab_size <= 1250  # a quarter of the characters, at most 1,600
    assert R.pretrain_tokenizer("bpe", "paste", pasted)[0] is tok  # learnt once per text
    with pytest.raises(InvalidInput) as err:
        R.pretrain_tokenizer("bpe", "paste", "Trop court.")
    assert fr(err.value).startswith("Le corpus (11 caractères) est trop court pour en apprendre un tokenizer")
    plan = R.plan_pretrain(tok, pasted, NANO, R.Hyper(steps=3, batch_size=4, warmup=0), "cpu", "Le chat",
                           tokenizer_name=name)
    assert run_job(plan)[-1]["type"] == "done"
    record = H.RunStore().get(plan.run_id)
    assert record.config["tokenizer"] == ""
    reloaded = HM.load_checkpoint_model(record)
    assert reloaded.tokenizer.encode("Le chat dort.") == tok.encode("Le chat dort.")
    ids = torch.tensor([tok.encode("Le chat dort sur le tapis.")])
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(ids), J.get_run(plan.run_id).after(ids), rtol=0, atol=1e-6)


def test_a_lora_run_keeps_its_adapter_only_and_loads_back_merged(tmp_path, monkeypatch):
    from explorer import history_models as HM
    from gpt_core.registry import load_model

    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    base = load_model("tiny-random")
    opts = R.FinetuneOptions("instruct", "lora", lora_r=4, mask_prompt=True, max_length=64)
    plan = R.plan_finetune(base.model, base.tokenizer, C.instruction_records(), opts,
                           R.Hyper(steps=3, batch_size=4, warmup=0), "cpu", base_key="tiny-random",
                           tokenizer_name="gpt2")
    assert plan.estimate["parts"]["save"] == 0  # megabytes, not the model
    assert run_job(plan)[-1]["type"] == "done"
    record = H.RunStore().get(plan.run_id)
    folder = H.RunStore().checkpoint_path(record)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert "model.safetensors" not in {p.name for p in folder.iterdir()}
    assert record.checkpoint_bytes < 200_000  # 2 x 4 x (64 + 64) x ... for 2 blocks: kilobytes
    reloaded = HM.load_checkpoint_model(record)
    ids = torch.tensor([base.tokenizer.encode("Traduis en anglais : le soleil")])
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(ids), J.get_run(plan.run_id).after(ids), rtol=0, atol=1e-5)
        assert not torch.allclose(reloaded.model(ids), base.model(ids))  # the adapter changed something


def test_a_run_logged_to_weights_and_biases_offline_names_its_folder(tok, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    plan = pretrain(tok, text_of("corpus_fr"), R.Hyper(steps=3, batch_size=4, warmup=0), "Le")
    plan.tracking = {"wandb": True, "project": "llm-explorer-tests"}
    events = run_job(plan)
    assert events[-1]["type"] == "done"
    said = [fr(e["message"]) for e in events if e["type"] == "status" and not isinstance(e["message"], str)]
    assert any("hors ligne" in s for s in said), said
    folder = events[-2]["wandb_dir"]
    assert folder.startswith(str(tmp_path / "wandb" / "offline-run-"))


def test_lora_on_a_model_trained_here_keeps_the_whole_model(tiny_base, tok, tmp_path, monkeypatch):
    """Its base may be gone after a restart: only a registry model is loaded again under an adapter."""
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    assert R.registry_model("tiny-random") and not R.registry_model("GPT pré-entraîné 12:00:00")
    opts = R.FinetuneOptions("instruct", "lora", lora_r=4, max_length=64)
    plan = R.plan_finetune(tiny_base, tok, C.instruction_records(), opts, R.Hyper(steps=2, batch_size=4, warmup=0),
                           "cpu", base_key="GPT pré-entraîné 12:00:00", tokenizer_name="gpt2")
    assert plan.estimate["parts"]["save"] > 0
    assert run_job(plan)[-1]["type"] == "done"
    folder = H.RunStore().checkpoint_path(H.RunStore().get(plan.run_id))
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names


def test_the_shared_server_refuses_long_runs_second_runs_and_a_full_queue(tok, monkeypatch):
    import explorer.jobs as jobs

    manager = jobs.JobManager()
    monkeypatch.setattr(jobs, "_manager", manager)
    monkeypatch.setattr(J, "get_manager", lambda: manager)
    release = threading.Event()

    def blocker(cancel):
        while not (cancel.is_set() or release.is_set()):
            yield {"type": "status", "message": "…"}
            threading.Event().wait(0.02)

    plan = pretrain(tok, text_of("corpus_fr"), R.Hyper(steps=2, batch_size=4, warmup=0), "Le")
    plan.estimate = {**plan.estimate, "seconds_estimate": 94 * 3600}
    with pytest.raises(InvalidInput) as err:
        J.admit(plan, "alice")
    assert fr(err.value) == ("Ce run prendrait environ 5\u202f640 minutes : ce serveur accepte des runs d'au plus 30 "
                             "minutes. Réduisez les étapes, le batch ou le modèle.")
    plan.estimate["seconds_estimate"] = 5
    manager.submit("pretrain", blocker, owner="alice")
    with pytest.raises(InvalidInput) as err:
        J.admit(plan, "alice")
    assert err.value.code == "runs.one_job_each"
    J.admit(plan, "bob")  # another student may queue
    for i in range(4):
        manager.submit("pretrain", blocker, owner=f"s{i}")
    with pytest.raises(InvalidInput) as err:
        J.admit(plan, "bob")
    assert fr(err.value) == ("5 runs sont déjà en file d'attente ou en cours sur ce serveur : réessayez quand l'un "
                             "d'eux sera terminé.")
    release.set()
    for snap in manager.jobs():
        manager.wait(snap.job_id, timeout=30)
    J.admit(plan, "alice")  # all ended: accepted again
