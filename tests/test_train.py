"""gpt_core.train and gpt_core.evaluate: one loop for three tasks, on real bundled data.

Everything runs on the CPU with tiny models and fixed seeds; the whole file
takes well under a minute on two cores.
"""
from __future__ import annotations

import http.server
import json
import math
import socket
import threading

import pytest
from local_server import serving
from said import fr, raises_said
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt_core import data
from gpt_core.config import GPTConfig
from gpt_core.errors import GPTCoreError, InvalidInput
from gpt_core.evaluate import (
    OllamaUnavailable, alpaca_prompt, class_probabilities, classification_report, continue_text, generate_answers,
    lm_loss, next_token_probs, ollama_judge, save_json, top_token_union,
)
from gpt_core.model import GPT
from gpt_core.train import (
    TrainConfig, check_fits, continuation_ids, count_trainable, estimate_finetune, estimate_run, is_classifier,
    last_token_logits, load_trained, make_sample_fn, merge_lora, parse_learning_rate, pick_device,
    prepare_classifier, prepare_instruction_finetune, prepare_pretraining, save_trained, steps_for_epochs, train,
)

LN_VOCAB = math.log(50257)  # the loss of a uniform guess over GPT-2's vocabulary: 10.825


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    from gpt_core.tokenizers import load_tokenizer

    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiny_base():
    """A tiny GPT with GPT-2's real vocabulary and a 64-token window."""
    return prepare_pretraining(GPTConfig.preset("tiny").with_(context_length=64), seed=0)


def small_vocab_model(seed: int = 0) -> GPT:
    return prepare_pretraining(GPTConfig.preset("tiny").with_(vocab_size=97, context_length=32), seed=seed)


def random_batches(n: int = 4, batch: int = 8, T: int = 16, vocab: int = 97, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(0, vocab, (batch, T + 1), generator=g)
        out.append((x[:, :-1], x[:, 1:]))
    return out


def state_copy(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, state: dict) -> None:
    current = model.state_dict()
    assert current.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(current[key], value), key


def cpu(**kw) -> TrainConfig:
    kw.setdefault("device", "cpu")
    return TrainConfig(**kw)


# ------------------------------------------------------------------ pretraining
def test_pretraining_on_french_corpus_lowers_validation_loss(tok):
    text = data.load_bundled("corpus_fr.txt")
    train_text, val_text = data.split_text(text, 0.1)
    T, B = 32, 8
    train_loader = data.make_loader(data.GPTWindowDataset.from_text(train_text, tok, T, T), batch_size=B, seed=0)
    val_loader = data.make_loader(data.GPTWindowDataset.from_text(val_text, tok, T, T), batch_size=25,
                                  shuffle=False, drop_last=False)
    model = prepare_pretraining(GPTConfig.preset("tiny").with_(context_length=T), seed=0)
    cfg = cpu(lr=1e-2, steps=12, warmup=2, eval_every=0, eval_batches=0)
    events = list(train(model, train_loader, val_loader, cfg, task="lm"))

    evals = [e for e in events if e["type"] == "eval"]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in evals] == [0, 12]
    assert evals[0]["val_loss"] == pytest.approx(LN_VOCAB, abs=0.1)  # random init: uniform guess
    # stated margin: at least 2 nats lower after 12 steps (about 4 are seen: unigram statistics)
    assert evals[-1]["val_loss"] <= evals[0]["val_loss"] - 2.0
    assert evals[-1]["perplexity"] == pytest.approx(math.exp(evals[-1]["val_loss"]))
    assert [e["step"] for e in steps] == list(range(1, 13))
    assert [e["tokens_seen"] for e in steps] == [B * T * s for s in range(1, 13)]
    assert [e["lr"] for e in steps] == pytest.approx([cfg.lr_at(s) for s in range(12)])
    assert all(math.isfinite(e["train_loss"]) for e in steps)
    final = events[-1]
    assert final["type"] == "done"
    assert final["history"]["val_loss"] == [e["val_loss"] for e in evals]
    assert final["history"]["train_loss"] == [e["train_loss"] for e in steps]
    assert fr(final["message"]).startswith("Entraînement terminé : 12 étapes")
    assert not model.training  # left in eval mode


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, steps=11, warmup=2, min_lr_ratio=0.1)
    lrs = [cfg.lr_at(s) for s in range(11)]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3])
    assert lrs[2] == pytest.approx(1e-3)              # top of the cosine
    assert lrs[-1] == pytest.approx(1e-4)             # floor: min_lr_ratio x lr
    assert lrs[6] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half-way
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    const = TrainConfig(lr=2e-3, steps=5, schedule="constant")
    assert [const.lr_at(s) for s in range(5)] == [2e-3] * 5


def test_grad_accum_consumes_batches_and_epochs_restart():
    model = small_vocab_model()
    batches = random_batches(n=3)  # a list: re-iterable, so epochs restart
    events = list(train(model, batches, None, cpu(lr=1e-3, steps=4, grad_accum=2)))
    steps = [e for e in events if e["type"] == "step"]
    assert [e["tokens_seen"] for e in steps] == [2 * 8 * 16 * s for s in range(1, 5)]
    assert [e["epoch"] for e in steps] == [0, 1, 1, 2]  # epoch of the last micro-batch; 3 per epoch
    assert events[-1]["type"] == "done"
    assert steps_for_epochs(138, 2) == 276
    # a one-shot generator cannot restart: the run ends early with a message
    model = small_vocab_model()
    events = list(train(model, iter(random_batches(n=2)), None, cpu(lr=1e-3, steps=5)))
    assert events[-1]["type"] == "done"
    assert events[-1]["step"] == 2
    assert "épuisées après 2 étapes" in fr(events[-1]["message"])


class DigitTokenizer:
    """Characters '0'..'9' and ' ' as ids (enough to sample from a 97-token model)."""

    def encode(self, text):
        return [10 if c == " " else int(c) for c in text]

    def decode(self, ids):
        return "".join(" " if i == 10 else str(i) if i < 10 else f"<{i}>" for i in ids)


def test_samples_are_generated_during_training():
    from gpt_core.decoding import greedy

    model = small_vocab_model()
    tok = DigitTokenizer()
    sample_fn = make_sample_fn(tok, "1 2 3", max_new_tokens=4)
    events = list(train(model, random_batches(), None, cpu(lr=1e-3, steps=6, sample_every=3), sample_fn=sample_fn))
    samples = [e for e in events if e["type"] == "sample"]
    assert [s["step"] for s in samples] == [3, 6]
    expected = tok.decode(tok.encode("1 2 3") + greedy(model, tok.encode("1 2 3"), 4, trace=False).new_ids)
    assert samples[-1]["text"] == expected  # the final weights, greedy: reproducible
    assert events[-1]["history"]["samples"] == [{"step": s["step"], "text": s["text"]} for s in samples]
    with raises_said(InvalidInput, "est vide"):
        make_sample_fn(tok, "")


# ------------------------------------------------------------ instruction tuning
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_instruction_finetune_lowers_loss_and_leaves_original_untouched(tok, tiny_base, lora):
    records = data.load_bundled("instructions_fr_en.json")
    train_rec, val_rec = data.split_records(records, (0.85, 0.15), seed=0)
    train_loader = data.make_instruction_loader(data.InstructionDataset(train_rec[:64], tok), tok,
                                                batch_size=8, max_length=64)
    val_loader = data.make_instruction_loader(data.InstructionDataset(val_rec[:20], tok), tok,
                                              batch_size=20, shuffle=False, max_length=64)
    before = state_copy(tiny_base)
    model = prepare_instruction_finetune(tiny_base, lora=lora, lora_r=8)
    assert model is not tiny_base
    initial, _ = lm_loss(model, val_loader)
    events = list(train(model, train_loader, val_loader, cpu(lr=1e-2, steps=8, eval_every=0, eval_batches=0),
                        task="instruct"))
    assert events[-1]["type"] == "done"
    evals = [e["val_loss"] for e in events if e["type"] == "eval"]
    assert evals[0] == pytest.approx(initial, rel=1e-5)
    final, ppl = lm_loss(model, val_loader)
    assert final == pytest.approx(evals[-1], rel=1e-5)
    assert ppl == pytest.approx(math.exp(final), rel=1e-5)
    margin = 0.2 if lora else 1.5  # LoRA moves far fewer weights in 8 steps
    assert final <= initial - margin
    assert_same_state(tiny_base, before)  # isolation: the shared model never trains
    if lora:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert 0 < trainable < 0.01 * tiny_base.num_parameters()
        merged = merge_lora(model)
        assert isinstance(merged, GPT)
        x = torch.randint(0, 50257, (2, 10))
        with torch.no_grad():
            torch.testing.assert_close(merged(x), model(x), atol=1e-4, rtol=1e-4)
        assert merged.out_head.weight is merged.tok_emb.weight  # still tied after merging


def test_lora_on_hugging_face_gpt2_uses_peft_defaults():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    before = state_copy(hf)
    model = prepare_instruction_finetune(hf, lora=True, lora_r=4)
    events = list(train(model, random_batches(n=2), random_batches(n=1, seed=1),
                        cpu(lr=1e-2, steps=3, eval_every=0), task="instruct"))
    assert events[-1]["type"] == "done"
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert_same_state(hf, before)


# ---------------------------------------------------------------- classification
def test_classifier_beats_majority_on_held_out_tickets(tok, tiny_base):
    records = data.load_bundled("tickets_fr.csv")
    vocab = data.label_vocab([r["label"] for r in records])
    train_rec, test_rec = data.split_records(records, (0.8, 0.2), seed=0)

    def dataset(recs):
        return data.ClassificationDataset([r["text"] for r in recs], [r["label"] for r in recs], tok,
                                          max_length=64, vocab=vocab)

    train_ds, test_ds = dataset(train_rec), dataset(test_rec)
    train_loader = data.make_loader(train_ds, batch_size=16, seed=0, drop_last=False)
    test_loader = data.make_loader(test_ds, batch_size=64, shuffle=False, drop_last=False)
    before = state_copy(tiny_base)
    # train the two blocks, the final norm and the new head; embeddings stay frozen (and fast)
    model = prepare_classifier(tiny_base, len(vocab), freeze_until_last=2, labels=train_ds.label_names)
    assert is_classifier(model) and not is_classifier(tiny_base)
    assert model.out_head.weight.shape == (5, 64)
    assert not model.tok_emb.weight.requires_grad and model.out_head.weight.requires_grad
    events = list(train(model, train_loader, test_loader,
                        cpu(lr=3e-3, steps=150, warmup=10, weight_decay=0.0, eval_every=50, eval_batches=0),
                        task="classify"))
    assert events[-1]["type"] == "done"
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[0]["val_loss"] == pytest.approx(math.log(5), abs=0.1)  # untrained head: near uniform
    report = classification_report(model, test_loader, train_ds.label_names)
    assert report["n"] == len(test_rec) == 60
    assert report["accuracy"] == pytest.approx(evals[-1]["accuracy"])
    assert report["majority_baseline"] <= 0.35  # five classes, nearly balanced
    # stated margin: at least 30 points above always answering the majority class
    assert report["accuracy"] >= report["majority_baseline"] + 0.30
    assert sum(map(sum, report["confusion_matrix"])) == 60
    assert sum(c["support"] for c in report["per_class"].values()) == 60
    assert_same_state(tiny_base, before)


def test_classifier_on_hugging_face_model_and_freezing():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=3, n_head=2))
    model = prepare_classifier(hf, 3, freeze_until_last=1)
    x = torch.randint(0, 97, (4, 10))
    assert model(x).logits.shape == (4, 10, 3)
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"transformer.h", "transformer.ln_f", "lm_head.weight", "lm_head.bias"}
    assert all(p.requires_grad == (".h.2." in n or "ln_f" in n or "lm_head" in n)
               for n, p in model.named_parameters())
    g = torch.Generator().manual_seed(0)
    batches = [{"inputs": torch.randint(0, 97, (8, 10), generator=g), "targets": torch.randint(0, 3, (8,), generator=g),
                "lengths": torch.randint(3, 11, (8,), generator=g)} for _ in range(2)]
    events = list(train(model, batches, batches, cpu(lr=1e-2, steps=3), task="classify"))
    assert events[-1]["type"] == "done"
    assert hf.lm_head.weight.shape == (97, 32)  # the original keeps its vocabulary head
    with raises_said(InvalidInput, "entre 0 et 3"):
        prepare_classifier(hf, 3, freeze_until_last=4)
    with raises_said(InvalidInput, "au moins 2 classes"):
        prepare_classifier(hf, 1)


def test_last_token_logits_reads_last_real_position():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    lengths = torch.tensor([2, 4])
    assert torch.equal(last_token_logits(logits, lengths), torch.stack([logits[0, 1], logits[1, 3]]))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert torch.equal(last_token_logits(logits, attention_mask=mask), torch.stack([logits[0, 1], logits[1, 3]]))
    assert torch.equal(last_token_logits(logits), logits[:, -1])


# ------------------------------------------------------------- control and errors
def test_cancel_event_stops_the_loop():
    cancel = threading.Event()
    model = small_vocab_model()
    seen = []
    for event in train(model, random_batches(), None, cpu(lr=1e-3, steps=100), cancel=cancel):
        seen.append(event)
        if event["type"] == "step" and event["step"] == 3:
            cancel.set()
    assert seen[-1]["type"] == "cancelled"
    assert seen[-1]["step"] == 3
    assert fr(seen[-1]["message"]) == "Entraînement annulé à l'étape 3 sur 100."
    assert len(seen[-1]["history"]["train_loss"]) == 3


@pytest.mark.parametrize("lr", [0, 0.0, -1e-3, float("nan"), float("inf"), 10, "3e-4", None])
def test_bad_learning_rate_is_refused_with_a_sentence(lr):
    with pytest.raises(InvalidInput) as err:
        TrainConfig(lr=lr)
    assert fr(err.value) == (
        "Le taux d'apprentissage doit être un nombre fini, strictement positif et au plus 1 "
        f"(reçu : {lr!r}) ; une valeur courante est 3e-4."
    )


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "La taille de batch doit être un entier ≥ 1 (reçu : 0)."),
    ("batch_size", 2.5, "La taille de batch doit être un entier ≥ 1 (reçu : 2.5)."),
    ("steps", 0, "Le nombre d'étapes doit être un entier ≥ 1 (reçu : 0)."),
    ("grad_accum", True, "L'accumulation de gradient doit être un entier ≥ 1 (reçu : True)."),
    ("schedule", "linear", "Le planning du taux d'apprentissage doit être cosine ou constant (reçu : 'linear')."),
    ("precision", "fp8", "La précision doit être auto, fp32 ou bf16 (reçu : 'fp8')."),
    ("max_grad_norm", -1.0, "La norme maximale du gradient doit être un nombre > 0, ou vide pour ne pas écrêter (reçu : -1.0)."),
])
def test_bad_config_values_are_refused(field, value, message):
    with pytest.raises(InvalidInput) as err:
        TrainConfig(**{field: value})
    assert fr(err.value) == message


def test_bad_task_device_and_empty_data_are_refused():
    model = small_vocab_model()
    with raises_said(InvalidInput, "lm, instruct ou classify"):
        train(model, random_batches(), None, cpu(), task="translate")
    with raises_said(InvalidInput, "n'est pas un périphérique valide"):
        pick_device("banane")
    if not torch.cuda.is_available():
        with raises_said(InvalidInput, "Aucun GPU CUDA"):
            pick_device("cuda")
        assert pick_device("auto").type in ("cpu", "mps")
    assert pick_device("cpu") == torch.device("cpu")
    with raises_said(InvalidInput, "ne contient aucun batch"):
        list(train(model, [], None, cpu()))


def test_divergence_with_huge_learning_rate_is_reported():
    model = small_vocab_model()
    events = list(train(model, random_batches(), None, cpu(lr=1.0, steps=50, max_grad_norm=None)))
    last = events[-1]
    assert last["type"] == "diverged"
    assert last["step"] < 50
    assert fr(last["message"]).startswith(f"L'entraînement a divergé à l'étape {last['step'] + 1} : la perte vaut")
    assert "taux d'apprentissage plus petit" in fr(last["message"])


def test_injected_nan_loss_diverges_without_touching_weights():
    model = small_vocab_model()
    calls = {"n": 0}

    def loss_fn(m, inputs, targets):
        calls["n"] += 1
        logits = m(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return loss * float("nan") if calls["n"] == 3 else loss

    states = []
    events = []
    for event in train(model, random_batches(), None, cpu(lr=1e-3, steps=10), loss_fn=loss_fn):
        events.append(event)
        if event["type"] == "step":
            states.append(state_copy(model))
    assert [e["type"] for e in events] == ["step", "step", "diverged"]
    assert fr(events[-1]["message"]).startswith("L'entraînement a divergé à l'étape 3 : la perte vaut nan")
    assert_same_state(model, states[-1])  # the NaN step was not applied


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_mid_training_is_loadable_and_survives_a_crash(tmp_path, monkeypatch):
    import safetensors.torch

    model = small_vocab_model()
    ckpt = tmp_path / "run"
    cfg = cpu(lr=1e-3, steps=10, checkpoint_dir=str(ckpt), checkpoint_every=5)
    gen = train(model, random_batches(), None, cfg)
    x = torch.randint(0, 97, (2, 12))
    for event in gen:
        if event["type"] == "checkpoint":
            break
    assert event["step"] == 5 and event["path"] == str(ckpt)
    loaded = load_trained(ckpt)
    with torch.no_grad():
        expected = model.eval()(x)
        torch.testing.assert_close(loaded(x), expected)
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["step"] == 5 and meta["task"] == "lm"

    real_save = safetensors.torch.save_file

    def killed(tensors, filename, *args, **kwargs):  # half a file, then the process "dies"
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        for event in gen:
            pass
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    survivor = load_trained(ckpt)  # still the step-5 checkpoint
    with torch.no_grad():
        torch.testing.assert_close(survivor(x), expected)
    assert json.loads((ckpt / "config.json").read_text())["step"] == 5


def test_classifier_checkpoint_round_trip_and_crash(tmp_path, monkeypatch):
    import safetensors.torch

    model = prepare_classifier(small_vocab_model(), 3, labels=["a", "b", "c"])
    path = save_trained(model, tmp_path / "clf", {"step": 1})
    x = torch.randint(0, 97, (2, 7))
    loaded = load_trained(path)
    assert is_classifier(loaded) and loaded.gpt_core_labels == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))

    def killed(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with torch.no_grad():
        model.out_head.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="disk full"):
        save_trained(model, path, {"step": 2})
    monkeypatch.undo()
    again = load_trained(path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), loaded(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]  # no temporary left behind


def test_hugging_face_model_saved_atomically(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()
    path = save_trained(hf, tmp_path / "hf", {"step": 3})
    assert (path / "model.safetensors").is_file()
    back = GPT2LMHeadModel.from_pretrained(str(path)).eval()
    x = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, hf(x).logits)


# ------------------------------------------------------------------ estimates
def test_estimate_run_counts_memory_and_refuses_what_cannot_fit():
    cfg = GPTConfig.preset("tiny")
    n = GPT(cfg).num_parameters()
    est = estimate_run(cfg, batch_size=8, context=128, steps=100, device="cpu", precision="fp32")
    assert est["params"] == est["trainable_params"] == n
    assert est["memory_breakdown"]["weights"] == 4 * n
    assert est["memory_breakdown"]["grads_and_adamw"] == 12 * n
    assert est["memory_bytes"] == sum(est["memory_breakdown"].values())
    assert est["tokens"] == 8 * 128 * 100
    assert est["seconds_estimate"] > 0 and est["fits"] and est["reason"] is None
    # a frozen classifier trains fewer weights, so its optimizer state is smaller
    clf = prepare_classifier(GPT(cfg), 5, freeze_until_last=0)
    est_clf = estimate_run(clf, batch_size=8, context=128, steps=100, device="cpu", precision="fp32")
    assert est_clf["trainable_params"] < n // 10
    assert est_clf["memory_breakdown"]["grads_and_adamw"] == 12 * est_clf["trainable_params"]
    with pytest.raises(InvalidInput) as err:
        check_fits(GPTConfig.preset("gpt2-medium"), batch_size=100_000, context=1024, steps=1, device="cpu")
    assert fr(err.value).startswith("Cet entraînement demande environ")
    assert "réduisez la taille de batch" in fr(err.value)
    with raises_said(InvalidInput, "La taille de batch doit être un entier ≥ 1"):
        estimate_run(cfg, batch_size=0, context=128, steps=1, device="cpu")


@pytest.mark.parametrize("raw, value", [("3e-4", 3e-4), (" 0,001 ", 1e-3), ("1", 1.0), (0.02, 0.02)])
def test_parse_learning_rate_accepts_usual_spellings(raw, value):
    assert parse_learning_rate(raw) == pytest.approx(value)


@pytest.mark.parametrize("raw, code, message", [
    ("", "train.lr_empty", "Indiquez un taux"), ("   ", "train.lr_empty", "Indiquez un taux"),
    (None, "train.lr_empty", "Indiquez un taux"), ("abc", "train.lr_not_number", "« abc » n'est pas un nombre"),
    ("3e-4x", "train.lr_not_number", "n'est pas un nombre"), ("nan", "train.lr_not_finite", "doit être un nombre fini"),
    ("NaN", "train.lr_not_finite", "nombre fini"), ("inf", "train.lr_not_finite", "doit être un nombre fini"),
    ("0", "train.lr_not_positive", "strictement positif"), ("-1e-3", "train.lr_not_positive", "strictement positif"),
    ("10", "train.lr_too_big", "ferait diverger"), ("1.5", "train.lr_too_big", "ferait diverger"),
])
def test_parse_learning_rate_refuses_hostile_values_with_a_code(raw, code, message):
    with pytest.raises(InvalidInput) as err:
        parse_learning_rate(raw)
    assert err.value.code == code and message in fr(err.value)


def test_trainable_counts_for_lora_full_and_frozen_blocks():
    base = GPT(GPTConfig.preset("tiny"))
    d, layers, total = 64, 2, base.num_parameters()
    # qkv (d -> 3d), out_proj (d -> d), fc_in (d -> 4d), fc_out (4d -> d): r x (in + out) each
    assert count_trainable(base, "instruct", "lora", lora_r=4) == layers * 4 * (4 * d + 2 * d + 5 * d + 5 * d)
    assert count_trainable(base, "instruct", "full") == total
    block = sum(p.numel() for p in base.blocks[1].parameters())
    assert count_trainable(base, "classify", n_classes=5, n_last=1) == block + 2 * d + (5 * d + 5)
    assert count_trainable(base, "classify", n_classes=5) == total + 5 * d + 5
    # the count matches what the prepared copies really train
    lora = prepare_instruction_finetune(base, lora=True, lora_r=4)
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == count_trainable(base, "instruct", "lora", 4)
    clf = prepare_classifier(base, 5, freeze_until_last=1)
    assert sum(p.numel() for p in clf.parameters() if p.requires_grad) == count_trainable(base, "classify",
                                                                                        n_classes=5, n_last=1)


def test_trainable_count_of_a_hugging_face_model_uses_peft_defaults():
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    lora = prepare_instruction_finetune(hf, lora=True, lora_r=4)
    assert count_trainable(hf, "instruct", "lora", 4) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_estimate_finetune_shrinks_memory_and_time_and_refuses_impossible_rows():
    base = GPT(GPTConfig.preset("tiny"))
    full = estimate_finetune(base, "instruct", 8, 64, 60, "cpu", method="full")
    lora = estimate_finetune(base, "instruct", 8, 64, 60, "cpu", method="lora", lora_r=4)
    clf = estimate_finetune(base, "classify", 8, 64, 60, "cpu", n_last=0, n_classes=5)
    assert lora["memory_breakdown"]["grads_and_adamw"] == 12 * lora["trainable_params"]
    assert lora["memory_bytes"] < full["memory_bytes"] and lora["seconds_estimate"] < full["seconds_estimate"]
    assert clf["memory_breakdown"]["activations"] < full["memory_breakdown"]["activations"]  # no vocabulary logits
    assert full["fits"] and full["reason"] is None and full["trainable_params"] == base.num_parameters()
    with pytest.raises(InvalidInput) as err:
        estimate_finetune(base, "instruct", 8, 256, 60, "cpu")
    assert err.value.code == "train.rows_above_context"
    assert fr(err.value) == "256 tokens par exemple dépassent le contexte du modèle (128 tokens)."
    with pytest.raises(InvalidInput) as err:
        estimate_finetune(base, "translate", 8, 64, 60, "cpu")
    assert err.value.code == "train.bad_finetune_task"


def test_estimate_finetune_that_cannot_fit_gives_the_reason(monkeypatch):
    import gpt_core.train as T

    monkeypatch.setattr(T, "available_memory", lambda device: 1_000_000)  # 1 MB free
    est = estimate_finetune(GPT(GPTConfig.preset("tiny")), "instruct", 8, 64, 60, "cpu")
    assert not est["fits"] and est["reason"].code == "train.too_big"
    assert fr(est["reason"]).startswith("Cet entraînement demande environ")


# ------------------------------------------------------------------ evaluation
class Echo(nn.Module):
    """A fake classifier: the predicted class is the last real token's id."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        return F.one_hot(idx, self.k).float() + self.dummy


def test_classification_report_counts_exactly():
    batch = {"inputs": torch.tensor([[0, 2, 2], [1, 0, 0], [2, 2, 2], [0, 1, 1]]),
             "lengths": torch.tensor([1, 1, 3, 2]),        # predictions: 0, 1, 2, 1
             "targets": torch.tensor([0, 1, 1, 1])}
    report = classification_report(Echo(3), [batch], ["a", "b", "c"])
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 2, 1], [0, 0, 0]]
    assert report["accuracy"] == 0.75
    assert report["majority_baseline"] == 0.75 and report["majority_label"] == "b"
    assert report["per_class"]["b"] == {"precision": 1.0, "recall": pytest.approx(2 / 3),
                                        "f1": pytest.approx(0.8), "support": 3}
    assert report["per_class"]["c"]["precision"] == 0.0
    assert report["predictions"] == [0, 1, 2, 1]


def test_lm_loss_matches_cross_entropy():
    model = small_vocab_model().eval()
    batches = random_batches(n=2)
    loss, ppl = lm_loss(model, batches)
    with torch.no_grad():
        manual = torch.stack([F.cross_entropy(model(x).flatten(0, 1), y.flatten()) for x, y in batches]).mean()
    assert loss == pytest.approx(float(manual), rel=1e-5)
    assert ppl == pytest.approx(math.exp(loss), rel=1e-5)


def test_generate_answers_and_save_json(tok, tiny_base, tmp_path):
    from gpt_core.decoding import greedy

    examples = data.load_bundled("instructions_fr_en.json")[:2]
    answers = generate_answers(tiny_base, tok, examples, max_new_tokens=6)
    assert [a["instruction"] for a in answers] == [e["instruction"] for e in examples]
    assert [a["expected"] for a in answers] == [e["output"] for e in examples]
    prompt = alpaca_prompt(examples[0])
    assert prompt.endswith("### Response:\n") and examples[0]["instruction"] in prompt
    ids = greedy(tiny_base, tok.encode(prompt), 6, eos_id=tok.eos_id, trace=False).new_ids
    ids = [i for i in ids if i != tok.eos_id]
    assert answers[0]["generated"] == tok.decode(ids).split("### Instruction:")[0].replace("### Response:", "").strip()
    path = save_json(answers, tmp_path / "out" / "answers.json")
    assert json.loads(path.read_text(encoding="utf-8")) == answers
    with pytest.raises(InvalidInput):
        generate_answers(tiny_base, tok, examples, max_new_tokens=0)



def test_continue_text_is_the_greedy_continuation_and_leaves_the_model_as_it_was(tok, tiny_base):
    from gpt_core.decoding import greedy

    tiny_base.train()
    prompt = "Il était une fois"
    new = greedy(tiny_base, tok.encode(prompt), 8, eos_id=tok.eos_id, trace=False).new_ids
    new = new[:-1] if new and new[-1] == tok.eos_id else new
    assert continue_text(tiny_base, tok, prompt, 8) == tok.decode(new)
    assert tiny_base.training  # the mode came back
    cut = continue_text(tiny_base, tok, prompt, 8, stop=tok.decode(new[2:4]))
    assert cut == tok.decode(new).split(tok.decode(new[2:4]))[0].strip()
    assert continuation_ids(tiny_base, tok.encode(prompt) * 40, 8) == continuation_ids(
        tiny_base, (tok.encode(prompt) * 40)[-56:], 8)  # context 64: the last 64 - 8 tokens
    for empty in ("", "   "):
        with pytest.raises(InvalidInput) as err:
            continue_text(tiny_base, tok, empty, 8)
        assert err.value.code == "evaluate.empty_prompt"
    tiny_base.eval()


def test_next_token_probs_top_union_and_class_probabilities(tok, tiny_base):
    probs = next_token_probs(tiny_base, tok, "Il était une fois")
    with torch.no_grad():
        logits = tiny_base(torch.tensor([tok.encode("Il était une fois")]))[0, -1]
    torch.testing.assert_close(probs, logits.softmax(-1))
    assert probs.shape == (50257,) and float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    before, after = torch.tensor([0.5, 0.3, 0.1, 0.1]), torch.tensor([0.05, 0.05, 0.1, 0.8])
    assert top_token_union(before, after, k=2, limit=3) == [3, 2, 0]
    clf = prepare_classifier(tiny_base, 3).eval()
    out = class_probabilities(clf, tok, "panne du wifi au 2e étage " * 20, max_length=16)
    with torch.no_grad():
        expected = clf(torch.tensor([tok.encode("panne du wifi au 2e étage " * 20)[:16]]))[0, -1].softmax(-1)
    assert out == pytest.approx(expected.tolist(), abs=1e-6) and len(out) == 3
    with pytest.raises(InvalidInput) as err:
        class_probabilities(clf, tok, " ", max_length=16)
    assert err.value.code == "evaluate.empty_text"

class _FakeOllama(http.server.BaseHTTPRequestHandler):
    replies = ["Score : 85", "je ne sais pas"]
    requests: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self._send(200, {"models": [{"name": "llama3:latest"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        if body["model"] != "llama3":
            self._send(404, {"error": f"model '{body['model']}' not found"})
            return
        self._send(200, {"model": "llama3", "response": self.replies[len(self.requests) - 1], "done": True})


@pytest.fixture
def fake_ollama():
    _FakeOllama.requests = []
    with serving(_FakeOllama) as url:
        yield url


ITEMS = [{"instruction": "Traduis en anglais.", "input": "le soleil", "expected": "the sun", "generated": "the sun"},
         {"instruction": "Convert 3 hours to minutes.", "input": "", "expected": "180 minutes.", "generated": "3"}]


def test_ollama_judge_with_a_fake_local_server(fake_ollama):
    result = ollama_judge(ITEMS, url=fake_ollama, timeout=3)
    assert result["scores"] == [85, None]
    assert result["mean"] == 85
    paths = [p for p, _ in _FakeOllama.requests]
    assert paths == ["/api/generate", "/api/generate"]
    body = _FakeOllama.requests[0][1]
    assert body["stream"] is False and body["model"] == "llama3"
    assert "le soleil" in body["prompt"] and "the sun" in body["prompt"]


def test_ollama_judge_reports_missing_model(fake_ollama):
    with raises_said(OllamaUnavailable, "Le modèle « mistral » n'est pas installé dans Ollama"):
        ollama_judge(ITEMS, model="mistral", url=fake_ollama)


def test_ollama_judge_without_server_fails_fast_with_a_sentence():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OllamaUnavailable) as err:
        ollama_judge(ITEMS, url=f"http://127.0.0.1:{port}", timeout=1)
    assert isinstance(err.value, GPTCoreError)
    assert fr(err.value).startswith(f"Aucun serveur Ollama ne répond sur 127.0.0.1:{port}")
    with raises_said(InvalidInput, "adresse de serveur Ollama valide"):
        ollama_judge(ITEMS, url="pas une url")
