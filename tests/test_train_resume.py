"""Resuming a run from a checkpoint of the training loop (``train(..., resume=folder)``).

A tiny GPT (width 32, 2 layers, dropout on) learns the bundled French corpus
as character ids. A run of 6 steps straight must end with exactly the weights
of a run killed after its step-3 checkpoint and resumed from it: the loop
restores weights, AdamW moments, counters, history and the random state, and
skips the batches already seen, across an epoch boundary (7 batches per epoch,
2 per step). Everything runs on the CPU in one thread, so every operation is
repeated bit for bit and the comparison is exact.
"""
from __future__ import annotations

import math

import pytest
import torch

from gpt_core import data
from gpt_core.config import GPTConfig
from gpt_core.errors import InvalidInput
from gpt_core.train import (
    TRAINING_STATE, TrainConfig, prepare_instruction_finetune, prepare_pretraining, save_trained, train,
)

CONTEXT, ROWS = 32, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus() -> tuple[list[int], int]:
    text = data.load_bundled("corpus_fr.txt")
    alphabet = {c: i for i, c in enumerate(sorted(set(text)))}
    return [alphabet[c] for c in text], len(alphabet)


def setup(corpus, vocab: int | None = None):
    """(model, train loader of 7 shuffled batches, val loader): the same each time it is called."""
    ids, n = corpus
    train_loader = data.make_loader(data.GPTWindowDataset(ids[:1850], CONTEXT, CONTEXT), batch_size=ROWS, seed=0)
    val_loader = data.make_loader(data.GPTWindowDataset(ids[-600:], CONTEXT, CONTEXT), batch_size=ROWS,
                                  shuffle=False, drop_last=False)
    cfg = GPTConfig(vocab_size=vocab or n, context_length=CONTEXT, d_model=32, n_heads=2, n_layers=2, drop_rate=0.1)
    return prepare_pretraining(cfg, seed=0), train_loader, val_loader


def config(folder, **changes) -> TrainConfig:
    base = dict(lr=3e-3, batch_size=ROWS, grad_accum=2, steps=6, warmup=1, eval_every=2, eval_batches=0,
                device="cpu", checkpoint_dir=str(folder), checkpoint_every=3)
    return TrainConfig(**{**base, **changes})


def killed_after_first_checkpoint(corpus, folder) -> dict:
    """Train until the step-3 checkpoint event, then stop as a killed process would (no further step)."""
    model, train_loader, val_loader = setup(corpus)
    run = train(model, train_loader, val_loader, config(folder))
    for event in run:
        if event["type"] == "checkpoint":
            break
    run.close()
    return event


def without_clock(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "elapsed"}


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
    """The reference: 6 steps in one go (checkpoints at steps 3 and 6)."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    model, train_loader, val_loader = setup(corpus)
    assert len(train_loader) == 7  # 12 micro-batches in 6 steps: the run crosses an epoch boundary
    events = list(train(model, train_loader, val_loader, config(folder)))
    return model, events, folder


def test_a_killed_run_resumed_ends_with_the_same_weights_and_history(corpus, straight, tmp_path):
    model, events, _ = straight
    folder = tmp_path / "run"
    stop = killed_after_first_checkpoint(corpus, folder)
    assert stop["step"] == 3 and stop["path"] == str(folder)
    state = torch.load(folder / TRAINING_STATE, weights_only=True)
    assert state["step"] == 3 and state["tokens_seen"] == 3 * 2 * ROWS * CONTEXT and state["world"] == 1
    assert state["history"]["step"] == [1, 2, 3] and state["config"]["steps"] == 6

    fresh, train_loader, val_loader = setup(corpus)
    resumed = list(train(fresh, train_loader, val_loader, config(folder), resume=folder))

    # same operations on the same CPU thread: the weights are equal bit for bit, not merely close
    trained = model.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in fresh.state_dict().items())
    steps = [e for e in events if e["type"] == "step"]
    again = [e for e in resumed if e["type"] == "step"]
    assert [e["step"] for e in again] == [4, 5, 6]
    for key in ("train_loss", "lr", "tokens_seen", "epoch"):
        assert [e[key] for e in again] == [e[key] for e in steps[3:]], key
    assert [e["epoch"] for e in steps] == [0, 0, 0, 1, 1, 1]  # step 4 takes the last batch of epoch 0 and one of 1
    assert [e["type"] for e in resumed] == ["step", "eval", "step", "step", "eval", "checkpoint", "done"]
    assert without_clock(resumed[-1]["history"]) == without_clock(events[-1]["history"])
    assert resumed[-1]["history"]["eval_step"] == [0, 2, 4, 6]  # the step-0 evaluation is in the history, not redone
    elapsed = resumed[-1]["history"]["elapsed"]
    assert elapsed == sorted(elapsed)  # the clock goes on from the checkpoint's


def test_training_state_is_saved_beside_the_weights(straight):
    _, events, folder = straight
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [3, 6]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", TRAINING_STATE]
    state = torch.load(folder / TRAINING_STATE, weights_only=True)
    assert state["step"] == 6 and state["epoch"] == 1 and not math.isnan(state["first_loss"])
    assert state["rng"]["cpu"].dtype == torch.uint8 and state["rng"]["cuda"] is None
    assert len(state["optimizer"]["state"]) == len(list(straight[0].parameters()))


def test_lora_model_resumes_with_its_adapter(corpus, tmp_path):
    def lora_run(folder, resume=None, stop_at=None):
        model, train_loader, val_loader = setup(corpus)
        torch.manual_seed(0)  # peft draws the adapter's first matrices from the global generator
        model = prepare_instruction_finetune(model, lora=True, lora_r=4)
        run = train(model, train_loader, None, config(folder, steps=4, checkpoint_every=2, lr=1e-2), resume=resume)
        for event in run:
            if event["type"] == "checkpoint" and event["step"] == stop_at:
                run.close()
                break
        return model

    straight_lora = lora_run(tmp_path / "a")
    lora_run(tmp_path / "b", stop_at=2)
    resumed = lora_run(tmp_path / "b", resume=tmp_path / "b")
    state = torch.load(tmp_path / "b" / TRAINING_STATE, weights_only=True)
    assert any("lora_A" in key for key in state["model"])  # the adapter, not merged weights
    trained = straight_lora.state_dict()
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in trained.items())  # the adapter did learn
    assert all(torch.equal(value, trained[key]) for key, value in resumed.state_dict().items())


def refusal(corpus, folder, **changes) -> InvalidInput:
    model, train_loader, val_loader = setup(corpus, changes.pop("vocab", None))
    with pytest.raises(InvalidInput) as info:
        train(model, train_loader, val_loader, config(folder, **changes), resume=folder)  # refused at the call
    return info.value


def test_resume_refuses_what_it_cannot_continue(corpus, straight, tmp_path):
    _, _, finished = straight
    err = refusal(corpus, finished)
    assert err.code == "train.resume_finished" and "already at step 6 of 6" in str(err)

    halfway = tmp_path / "halfway"
    killed_after_first_checkpoint(corpus, halfway)
    err = refusal(corpus, halfway, steps=8)
    assert err.code == "train.resume_config_differs" and err.params["field"] == "steps"
    assert "steps differs" in str(err) and "trained with 6, this run asks for 8" in str(err)
    err = refusal(corpus, halfway, grad_accum=1)
    assert err.code == "train.resume_config_differs" and err.params["field"] == "grad_accum"
    err = refusal(corpus, halfway, batch_size=4)
    assert err.params["field"] == "batch_size"
    err = refusal(corpus, halfway, vocab=50)
    assert err.code == "train.resume_other_model"

    weights_only = save_trained(setup(corpus)[0], tmp_path / "plain", {"step": 3})
    err = refusal(corpus, weights_only)
    assert err.code == "train.resume_no_state" and TRAINING_STATE in str(err)
    (halfway / TRAINING_STATE).write_bytes(b"not a torch file")
    assert refusal(corpus, halfway).code == "train.resume_unreadable"
