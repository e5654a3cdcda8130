"""explorer.training_view and explorer.fig_training: plans, hostile input, the job, before/after.

Everything runs on the CPU with 1-block or 2-block GPTs and fixed seeds.
"""
from __future__ import annotations

import io
import json
import logging
import math
import threading
import zipfile

import pytest
import torch

from explorer import fig_training as F
from explorer import training_view as V
from explorer.jobs import JobManager
from gpt_core.config import GPTConfig
from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core.model import GPT
from gpt_core.registry import LoadedModel
from gpt_core.train import prepare_pretraining

NANO = dict(V.ARCH_PRESETS["nano"])
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
    """What explorer.models.store() offers the job: register(name, LoadedModel) and .custom."""

    def __init__(self):
        self.custom = {}

    def register(self, name, lm):
        self.custom[name] = lm


def run_job(plan, store=None, cancel_after_steps=None):
    cancel = threading.Event()
    events = []
    for event in V.job_fn(plan, store)(cancel):
        events.append(event)
        if cancel_after_steps is not None and event["type"] == "step" and event["step"] >= cancel_after_steps:
            cancel.set()
    return events


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------ learning rate
@pytest.mark.parametrize("raw, value", [("3e-4", 3e-4), (" 0,001 ", 1e-3), ("1", 1.0), (0.02, 0.02)])
def test_parse_lr_accepts_usual_spellings(raw, value):
    assert V.parse_lr(raw) == pytest.approx(value)


@pytest.mark.parametrize("raw, message", [
    ("", "Indiquez un taux"), ("   ", "Indiquez un taux"), (None, "Indiquez un taux"),
    ("abc", "« abc » n'est pas un nombre"), ("3e-4x", "n'est pas un nombre"),
    ("nan", "doit être un nombre fini"), ("NaN", "doit être un nombre fini"), ("inf", "doit être un nombre fini"),
    ("0", "strictement positif"), ("-1e-3", "strictement positif"),
    ("10", "ferait diverger"), ("1.5", "ferait diverger"),
])
def test_parse_lr_refuses_hostile_values_with_a_sentence(raw, message):
    with pytest.raises(InvalidInput) as err:
        V.parse_lr(raw)
    assert message in str(err.value)


# ------------------------------------------------------------------ sources
def test_bundled_and_pydoc_corpora():
    fr = V.corpus_text("corpus_fr")
    assert fr.origin == "corpus_fr.txt" and "tarte aux pommes" in fr.text and not fr.cut
    py = V.corpus_text("pydoc")
    assert py.origin == "pydoc_data.topics" and len(py.text) > 100_000


def test_uploaded_text_json_and_csv_corpora():
    assert V.corpus_text("upload", upload=(b"un texte\r\n\r\nun autre", "a.txt")).text == "un texte\n\nun autre"
    records = json.dumps([{"text": "premier"}, {"text": "second"}]).encode()
    assert V.corpus_text("upload", upload=(records, "a.json")).text == "premier\n\nsecond"
    alpaca = b'{"instruction": "Dis bonjour.", "output": "Bonjour."}\n'
    assert "### Response:\nBonjour." in V.corpus_text("upload", upload=(alpaca, "a.jsonl")).text


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
        V.corpus_text("upload", upload=(data, name))
    assert message in str(err.value)


def test_empty_pasted_text_and_missing_file():
    with pytest.raises(InvalidInput, match="Le texte est vide"):
        V.corpus_text("paste", pasted=" \n\t ")
    with pytest.raises(InvalidInput, match="Aucun fichier"):
        V.corpus_text("upload")


def test_records_for_fine_tuning_and_their_hostile_variants():
    assert len(V.instruction_records()) == 200
    tickets = V.classification_records()
    assert len(tickets) == 300 and {"text", "label"} <= set(tickets[0])
    with pytest.raises(InvalidInput, match="La colonne « output » est absente"):
        V.instruction_records((b'[{"instruction": "a", "answer": "b"}]', "x.json"))
    with pytest.raises(InvalidInput, match="L'exemple n° 2 .*n'a pas de champ « label »"):
        V.classification_records((b'[{"text": "a", "label": "x"}, {"text": "b"}]', "x.json"))
    with pytest.raises(InvalidInput, match="même étiquette « reseau »"):
        V.classification_records(("text,label\npanne wifi,reseau\ncâble,reseau\n".encode(), "x.csv"))
    with pytest.raises(InvalidInput, match="ne contient aucun exemple"):
        V.instruction_records((b"[]", "vide.json"))


# -------------------------------------------------------------------- plans
def test_model_config_refuses_heads_that_do_not_divide_d_model():
    with pytest.raises(InvalidInput, match="d_model \\(64\\) doit être divisible par le nombre de têtes \\(12\\)"):
        V.model_config(2, 12, 64, 32, 50257)


def test_pretrain_plan_windows_batches_and_estimate(tok):
    corpus = V.corpus_text("corpus_fr")
    plan = V.plan_pretrain(tok, corpus, NANO, V.Hyper(steps=30, batch_size=4, lr=3e-3, warmup=2), "cpu", "Il était")
    x, y = next(iter(plan.train_batches))
    assert x.shape == y.shape == (4, 32)
    assert plan.params["train_windows"] == len(plan.train_batches.dataset) > 100
    assert plan.cfg.steps == 30 and plan.cfg.eval_every == 3 and plan.cfg.sample_every == 5
    est = plan.estimate
    # one block of d=32: 2 norms (2 x 64) + qkv (32 x 96 + 96) + out (32 x 32 + 32) + fc_in (32 x 128 + 128) + fc_out
    block = 2 * 64 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
    assert est["params"] == 50257 * 32 + 32 * 32 + block + 64  # embeddings, positions, block, final norm
    assert est["fits"] and V.refusal(est) is None
    assert est["tokens"] == 30 * 4 * 32


def test_pretrain_plan_refuses_a_corpus_too_short_and_an_empty_prompt(tok):
    short = V.corpus_text("paste", pasted="Il était une fois un chat. " * 12)
    with pytest.raises(InvalidInput, match="trop court pour un contexte de 32 tokens"):
        V.plan_pretrain(tok, short, NANO, V.Hyper(), "cpu", "Il")
    with pytest.raises(InvalidInput, match="Le début de texte est vide"):
        V.plan_pretrain(tok, V.corpus_text("corpus_en"), NANO, V.Hyper(), "cpu", "   ")


def test_a_run_too_big_for_memory_is_refused_with_a_reason(tok):
    arch = {"n_layers": 12, "n_heads": 12, "d_model": 768, "context": 1024}
    plan = V.plan_pretrain(tok, V.corpus_text("pydoc"), arch, V.Hyper(steps=10, batch_size=512), "cpu", "The")
    assert not plan.estimate["fits"]
    assert plan.estimate["memory_bytes"] > 100e9  # activations of 512 x 1024 tokens through 12 blocks
    reason = V.refusal(plan.estimate)
    assert reason.startswith("Impossible de lancer : cet entraînement demande environ")
    assert "Réduisez la taille de batch" in reason


@pytest.mark.parametrize("records, message", [
    ([], "est vide"),
    ([{"instruction": "a", "output": "b"}], "Il n'y a que 1 exemple"),
    ([{"instruction": "a", "input": "", "output": "b"}] * 2, "Il n'y a que 2 exemple"),
    ([{"instruction": "", "output": "b"}] * 5, "n'a pas de champ « instruction » rempli"),
])
def test_finetune_plan_refuses_empty_and_tiny_instruction_sets(tiny_base, tok, records, message):
    with pytest.raises(InvalidInput, match=message):
        V.plan_finetune(tiny_base, tok, records, V.FinetuneOptions("instruct", "full"), V.Hyper(), "cpu")


def test_finetune_plan_refuses_single_class_lengths_and_masked_prompts(tiny_base, tok):
    one_class = [{"text": f"ticket {i}", "label": "reseau"} for i in range(10)]
    with pytest.raises(InvalidInput, match="même étiquette"):
        V.plan_finetune(tiny_base, tok, one_class, V.FinetuneOptions("classify"), V.Hyper(), "cpu")
    records = V.instruction_records()
    with pytest.raises(InvalidInput, match="dépassent le contexte du modèle \\(128\\)"):
        V.plan_finetune(tiny_base, tok, records, V.FinetuneOptions("instruct", max_length=256), V.Hyper(), "cpu")
    with pytest.raises(InvalidInput, match="les prompts remplissent toute la longueur"):
        V.plan_finetune(tiny_base, tok, records, V.FinetuneOptions("instruct", mask_prompt=True, max_length=16),
                        V.Hyper(), "cpu")


def test_trainable_counts_and_estimates_for_lora_and_frozen_blocks(tiny_base, tok):
    d, layers, total = 64, 2, sum(p.numel() for p in tiny_base.parameters())
    lora = V.FinetuneOptions("instruct", "lora", lora_r=4)
    # qkv (d -> 3d), out_proj (d -> d), fc_in (d -> 4d), fc_out (4d -> d): r x (in + out) each
    assert V.trainable_params(tiny_base, lora) == layers * 4 * (4 * d + 2 * d + 5 * d + 5 * d)
    assert V.trainable_params(tiny_base, V.FinetuneOptions("instruct", "full")) == total
    frozen = V.FinetuneOptions("classify", n_last=1)
    block = sum(p.numel() for p in tiny_base.blocks[1].parameters())
    assert V.trainable_params(tiny_base, frozen, 5) == block + 2 * d + (5 * d + 5)
    full = V.finetune_estimate(tiny_base, V.FinetuneOptions("instruct", "full", max_length=64), V.Hyper(), "cpu")
    small = V.finetune_estimate(tiny_base, V.FinetuneOptions("instruct", "lora", max_length=64), V.Hyper(), "cpu")
    assert small["memory_breakdown"]["grads_and_adamw"] == 12 * small["trainable_params"]
    assert small["memory_bytes"] < full["memory_bytes"]
    assert small["fits"] and full["fits"]


# ---------------------------------------------------------------------- jobs
def test_pretraining_job_learns_measures_saves_and_registers(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(V, "RUNS_DIR", tmp_path)
    plan = V.plan_pretrain(tok, V.corpus_text("corpus_fr"), NANO,
                           V.Hyper(steps=16, batch_size=8, lr=1e-2, warmup=2), "cpu", "Pour préparer une")
    store = FakeStore()
    events = run_job(plan, store)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "status" and kinds[-2:] == ["result", "done"]
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, 17))
    evals = [e["val_loss"] for e in events if e["type"] == "eval"]
    assert evals[0] == pytest.approx(LN_VOCAB, abs=0.1)
    assert evals[-1] < evals[0] - 2.0  # stated margin: 16 steps at lr 1e-2 learn the unigram statistics
    samples = [e for e in events if e["type"] == "sample"]
    assert samples and all(s["text"].startswith("Pour préparer une") for s in samples)
    result, done = events[-2], events[-1]
    name = result["model_name"]
    assert name.startswith("pré-entraîné ") and list(store.custom) == [name]
    lm = store.custom[name]
    assert isinstance(lm, LoadedModel) and isinstance(lm.model, GPT) and not lm.model.training
    assert lm.model.cfg.n_layers == 1 and lm.tokenizer is tok and lm.source.family == "gpt"
    row = result["comparison"]["rows"][0]
    assert row["prompt"] == "Pour préparer une" and row["before"] != row["after"]
    dist = result["comparison"]["dist"]
    assert 8 <= len(dist["labels"]) <= 12 and len(dist["before"]) == len(dist["after"]) == len(dist["labels"])
    assert all(0 <= p <= 1 for p in dist["before"] + dist["after"])
    assert max(dist["after"]) > 10 * max(dist["before"])  # random init is flat, the trained model is not
    assert done["checkpoint"] == str(tmp_path / plan.run_id)
    archive = zipfile.ZipFile(io.BytesIO(V.checkpoint_zip(done["checkpoint"])))
    assert sorted(n.split("/", 1)[1] for n in archive.namelist()) == ["config.json", "model.safetensors"]
    run = V.get_run(plan.run_id)
    out = V.compare_prompt(run, "Il était une fois")
    assert set(out) == {"before_text", "after_text", "dist"}
    with pytest.raises(InvalidInput, match="vide"):
        V.compare_prompt(run, "  ")


def test_job_through_the_manager_gives_metrics_json(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(V, "RUNS_DIR", tmp_path)
    plan = V.plan_pretrain(tok, V.corpus_text("corpus_en"), NANO, V.Hyper(steps=5, batch_size=4, warmup=0),
                           "cpu", "To make a")
    manager = JobManager()
    job = manager.submit(plan.kind, V.job_fn(plan, None), {**plan.params, "run_id": plan.run_id})
    snap = manager.wait(job, timeout=120)
    assert snap.status == "done", snap.message
    assert snap.result["model_name"] is None  # no store given: nothing registered
    metrics = json.loads(V.metrics_json(snap))
    assert metrics["status"] == "done" and metrics["params"]["steps"] == 5
    assert metrics["history"]["train_loss"] == snap.train_loss and len(snap.train_loss) == 5
    assert metrics["comparison"]["rows"][0]["prompt"] == "To make a"


def test_cancelled_and_diverged_jobs_end_with_a_message_and_register_nothing(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(V, "RUNS_DIR", tmp_path)
    corpus = V.corpus_text("corpus_fr")
    store = FakeStore()
    plan = V.plan_pretrain(tok, corpus, NANO, V.Hyper(steps=500, batch_size=4), "cpu", "Le")
    events = run_job(plan, store, cancel_after_steps=2)
    assert events[-1]["type"] == "cancelled" and "annulé à l'étape 2" in events[-1]["message"]
    hot = V.plan_pretrain(tok, corpus, NANO, V.Hyper(steps=40, batch_size=4, lr=1.0, warmup=0, schedule="constant"),
                          "cpu", "Le")
    hot.cfg.max_grad_norm = None
    events = run_job(hot, store)
    assert events[-1]["type"] == "diverged"
    assert "divergé" in events[-1]["message"] and "taux d'apprentissage plus petit" in events[-1]["message"]
    assert store.custom == {} and not list(tmp_path.iterdir())


def test_instruction_job_with_lora_leaves_the_base_untouched(tiny_base, tok, tmp_path, monkeypatch):
    monkeypatch.setattr(V, "RUNS_DIR", tmp_path)
    before = state_of(tiny_base)
    opts = V.FinetuneOptions("instruct", "lora", lora_r=4, mask_prompt=True, max_length=64)
    plan = V.plan_finetune(tiny_base, tok, V.instruction_records(), opts, V.Hyper(steps=4, batch_size=4, warmup=0),
                           "cpu", base_label="tiny")
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
    assert "after_text" in V.compare_prompt(V.get_run(plan.run_id), "Traduis en anglais : le soleil")


def test_classification_job_reports_accuracy_and_confusion(tiny_base, tok, tmp_path, monkeypatch):
    monkeypatch.setattr(V, "RUNS_DIR", tmp_path)
    opts = V.FinetuneOptions("classify", max_length=48, n_last=2)
    plan = V.plan_finetune(tiny_base, tok, V.classification_records(), opts,
                           V.Hyper(steps=60, batch_size=16, lr=3e-3, warmup=5), "cpu")
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
    out = V.compare_prompt(V.get_run(plan.run_id), "L'imprimante du 2e étage n'imprime plus.")
    assert out["labels"] == rep["labels"] and sum(out["after"]) == pytest.approx(1.0)


def test_only_the_last_runs_are_kept(tok, tmp_path, monkeypatch):
    store = FakeStore()
    for i in range(V.MAX_KEPT_RUNS + 1):
        (tmp_path / f"r{i}").mkdir()
        store.custom[f"m{i}"] = object()
        V._remember(V.TrainedRun(f"r{i}", "lm", tok, None, torch.nn.Linear(1, 1), None, 8, "alpaca", f"m{i}",
                                 str(tmp_path / f"r{i}")), store)
    assert V.get_run("r0") is None and V.get_run(f"r{V.MAX_KEPT_RUNS}") is not None
    assert not (tmp_path / "r0").exists() and "m0" not in store.custom and "m1" in store.custom


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
