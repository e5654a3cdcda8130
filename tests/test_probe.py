"""gpt_core.probe and the classification default built on it: features, training, saving, the job, the estimate."""
from __future__ import annotations

import threading

import pytest
import torch

from said import fr

from explorer import history as H
from explorer import run_job as J
from explorer import runs as R
from explorer.corpus import classification_records
from gpt_core.backend import backend_of
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.evaluate import class_probabilities
from gpt_core.probe import LinearProbe, ProbeClassifier, load_probe, pooled_features, save_probe
from gpt_core.registry import load_with_fallback
from gpt_core.timing import Work, job_seconds
from gpt_core.train import prepare_pretraining


@pytest.fixture(scope="module")
def gpt():
    return prepare_pretraining(GPTConfig(vocab_size=100, context_length=16, d_model=8, n_heads=2, n_layers=1), seed=0)


def test_features_are_the_mean_hidden_state_of_the_real_tokens_without_the_prefix(gpt):
    inputs = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    batch = {"inputs": inputs, "targets": torch.tensor([1, 0]), "lengths": torch.tensor([4, 6])}
    x, y = pooled_features(gpt, [batch], skip=1)
    assert y.tolist() == [1, 0] and x.shape == (2, 8)
    with torch.no_grad():
        first = backend_of(gpt).hidden(inputs[:1, :4])[0, 1:4].mean(0)  # BOS-like first token left out
        second = backend_of(gpt).hidden(inputs[1:])[0, 1:].mean(0)
    torch.testing.assert_close(x[0], first, rtol=0, atol=1e-6)
    torch.testing.assert_close(x[1], second, rtol=0, atol=1e-6)
    lone = {"inputs": torch.tensor([[5, 0]]), "targets": torch.tensor([0]), "lengths": torch.tensor([1])}
    with torch.no_grad():
        alone = backend_of(gpt).hidden(torch.tensor([[5]]))[0, 0]
    torch.testing.assert_close(pooled_features(gpt, [lone], skip=1)[0][0], alone)  # a prefix alone is kept


def test_probe_standardises_and_the_classifier_reads_token_ids(gpt, tmp_path):
    feats = torch.randn(20, 8) * 5 + 3
    probe = LinearProbe.for_features(feats, 3)
    standard = (feats - probe.mean) / probe.std
    torch.testing.assert_close(standard.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    assert probe(feats).shape == (20, 1, 3)
    reader = ProbeClassifier(gpt, probe, skip=0, labels=["a", "b", "c"])
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        expected = probe(backend_of(gpt).hidden(ids).mean(1)).softmax(-1)[0, 0]
        got = reader(ids)[0, 0].softmax(-1)
    torch.testing.assert_close(got, expected)
    save_probe(probe, tmp_path / "p", {"labels": ["a", "b", "c"], "skip": 0, "base": "tiny"})
    again = load_probe(tmp_path / "p", gpt)
    assert again.gpt_core_labels == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(again(ids), reader(ids), rtol=0, atol=0)
    other = prepare_pretraining(GPTConfig(vocab_size=100, context_length=16, d_model=16, n_heads=2, n_layers=1))
    with pytest.raises(InvalidInput) as err:
        load_probe(tmp_path / "p", other)
    assert "lit des vecteurs de 8 valeurs mais le modèle en donne 16" in fr(err.value)
    with pytest.raises(InvalidInput) as err:
        LinearProbe(8, 1)
    assert fr(err.value) == "Un classifieur a besoin d'au moins deux classes."


def test_the_classification_default_beats_the_majority_by_30_points(tmp_path, monkeypatch):
    """The page's default (a probe on the frozen model), on the embedded tiny model and the bundled tickets."""
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    lm = load_with_fallback("tiny-random", device="cpu")
    hyper, opts = R.finetune_defaults(False, "classify", 2)
    assert (opts.method, hyper.steps, hyper.batch_size) == ("probe", 100, 32)
    plan = R.plan_finetune(lm.model, lm.tokenizer, classification_records(), opts, hyper, "cpu",
                           base_key="tiny-random", tokenizer_name="gpt2")
    assert set(plan.estimate["parts"]) >= {"features", "train"} and plan.estimate["parts"]["copy"] == 0
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    events = list(J.job_fn(plan)(threading.Event()))
    assert events[-1]["type"] == "done", events[-1].get("message")
    statuses = [e["message"] for e in events if e["type"] == "status"]
    assert statuses[0].code == "runs.features" and fr(statuses[0]) == "Lecture des textes par le modèle gelé : 16/300…"
    assert fr(statuses[19]).endswith(": 300/300…")
    result = events[-2]
    report = result["comparison"]["report"]
    assert report["n"] == 60 and report["majority_baseline"] == pytest.approx(17 / 60)
    assert report["accuracy"] == pytest.approx(40 / 60)  # fixed seed: +38 points over the majority
    assert report["accuracy"] - report["majority_baseline"] >= 0.30
    assert result["comparison"]["accuracy_before"] < report["majority_baseline"]
    for key, value in lm.model.state_dict().items():  # the shared model was only read
        assert torch.equal(value, before[key]), key
    record = H.RunStore().get(plan.run_id)
    assert record.status == "done" and record.metrics["accuracy"] == pytest.approx(40 / 60)
    folder = H.RunStore().checkpoint_path(record)
    assert sorted(p.name for p in folder.iterdir()) == ["probe.json", "probe.safetensors"]
    reloaded = load_probe(folder, lm.model)
    text = "L'imprimante du 2e étage n'imprime plus."
    assert class_probabilities(reloaded, lm.tokenizer, text, 64) == pytest.approx(
        J.compare_prompt(J.get_run(plan.run_id), text)["after"], abs=1e-6)


def test_a_cancelled_probe_is_recorded_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    lm = load_with_fallback("tiny-random", device="cpu")
    hyper, opts = R.finetune_defaults(False, "classify", 2)
    plan = R.plan_finetune(lm.model, lm.tokenizer, classification_records(), opts, hyper, "cpu")
    cancel = threading.Event()
    events = []
    for event in J.job_fn(plan)(cancel):
        events.append(event)
        cancel.set()  # during the reading of the texts
    assert events[-1]["type"] == "cancelled" and len(events) == 2
    assert H.RunStore().get(plan.run_id).status == "cancelled"
    assert not (tmp_path / "checkpoints" / plan.run_id).exists()


def test_job_time_adds_the_phases_it_counts(gpt):
    work = Work(train_steps=10, step_rows=2, row_tokens=8, backward="full", eval_rows=4, eval_tokens=8,
                generated=5, copy_bytes=1_200_000_000, save_bytes=400_000_000)
    timed = job_seconds(gpt, work)
    parts = timed["parts"]
    assert timed["seconds"] == pytest.approx(sum(parts.values()))
    assert parts["copy"] == pytest.approx(1.0) and parts["save"] == pytest.approx(1.0)
    assert parts["train"] == pytest.approx(10 * 3.2 * timed["assumes"]["step_forward_s"])
    assert parts["generate"] == pytest.approx(5 * timed["assumes"]["token_s"]) and parts["generate"] > 0
    probe = job_seconds(gpt, Work(train_steps=100, backward="none", feature_rows=32, feature_tokens=8))
    assert probe["parts"]["train"] == pytest.approx(0.4) and probe["parts"]["features"] > 0
    assert probe["parts"]["generate"] == 0


def test_a_probe_from_the_history_classifies_a_typed_ticket(tmp_path, monkeypatch):
    """Restart-proof: the probe checkpoint and its record are read back by the History page."""
    import json

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LLM_EXPLORER_RUNS", str(tmp_path))
    lm = load_with_fallback("tiny-random", device="cpu")
    hyper, opts = R.finetune_defaults(False, "classify", 2)
    plan = R.plan_finetune(lm.model, lm.tokenizer, classification_records(), opts, hyper, "cpu",
                           base_key="tiny-random", tokenizer_name="gpt2")
    plan.owner = "a" * 32  # the browser that ran it: the History page shows a run to its owner
    assert list(J.job_fn(plan)(threading.Event()))[-1]["type"] == "done"
    at = AppTest.from_file("../pages/13_History.py", default_timeout=120)
    at.session_state["app.owner"] = plan.owner
    at.session_state["app.model"] = "tiny-random"
    at.run()
    at.selectbox(key="history.run").set_value(plan.run_id).run()
    text = "Mon imprimante n'imprime plus rien depuis ce matin."
    at.text_area[0].input(text)
    next(b for b in at.button if b.label == "Classer").click().run()
    assert not at.exception, at.exception
    bars = json.loads(at.get("plotly_chart")[-1].proto.spec)["data"][1]
    assert bars["y"] == ["compte_acces", "impression", "logiciel", "materiel", "reseau"]
    expected = J.compare_prompt(J.get_run(plan.run_id), text)["after"]
    assert bars["x"] == pytest.approx(expected, abs=1e-6)


def test_a_job_thread_uses_half_the_threads_and_later_threads_keep_the_default():
    import threading

    from gpt_core.timing import job_thread_count, job_threads, use_job_threads

    default = torch.get_num_threads()  # (a job run in this thread gave its threads back)
    seen = {}

    def job():
        use_job_threads(1)
        seen["job"] = torch.get_num_threads()
        later = threading.Thread(target=lambda: seen.setdefault("later", torch.get_num_threads()))
        later.start()
        later.join()

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert seen == {"job": 1, "later": default}
    with job_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == default and job_thread_count() == max(1, default // 2)
