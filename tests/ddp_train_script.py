"""A tiny data-parallel run for tests/test_distributed.py, started by torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_train_script.py OUT

Every rank trains the same tiny GPT on the bundled French corpus (character
ids) for a few steps, then a second run is stopped after its first checkpoint
and resumed from it. Each rank writes into OUT: ``rank<r>.pt`` and
``resumed<r>.pt`` (final state_dicts; ``accum<r>.pt`` of a 4-step run with
two micro-batches per rank and step) and ``events<r>.json`` (its events and
how many times it called save_trained). The test imports :func:`setup` and
:func:`config` to train the same model on the same loaders in one process.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpt_core.train as gpt_train  # noqa: E402
from gpt_core import data  # noqa: E402
from gpt_core.config import GPTConfig  # noqa: E402
from gpt_core.train import TrainConfig, prepare_pretraining, train  # noqa: E402
from gpt_core.train.distributed import from_env, split_batch  # noqa: E402

BATCH, ACCUM, STEPS, CONTEXT = 8, 2, 8, 32


def char_ids() -> tuple[list[int], int]:
    """The bundled French corpus as character ids, and the size of that alphabet."""
    text = data.load_bundled("corpus_fr.txt")
    alphabet = {c: i for i, c in enumerate(sorted(set(text)))}
    return [alphabet[c] for c in text], len(alphabet)


def setup(rows: int):
    """(model, train loader, val loader): a 2-layer GPT of width 32, batches of ``rows`` windows."""
    ids, vocab = char_ids()
    cut = len(ids) * 9 // 10
    train_loader = data.make_loader(data.GPTWindowDataset(ids[:cut], CONTEXT, CONTEXT), batch_size=rows, seed=0)
    val_loader = data.make_loader(data.GPTWindowDataset(ids[cut:], CONTEXT, CONTEXT), batch_size=rows,
                                  shuffle=False, drop_last=False)
    cfg = GPTConfig(vocab_size=vocab, context_length=CONTEXT, d_model=32, n_heads=2, n_layers=2)
    return prepare_pretraining(cfg, seed=0), train_loader, val_loader


def config(rows: int, accum: int, **changes) -> TrainConfig:
    base = dict(lr=3e-3, batch_size=rows, grad_accum=accum, steps=STEPS, warmup=2, eval_every=4, eval_batches=0,
                sample_every=4, device="cpu")
    return TrainConfig(**{**base, **changes})


def sample_fn(model) -> str:
    return f"{float(model.out_head.weight.sum()):.6f}"


def plain(events: list[dict]) -> list[dict]:
    return [{k: (str(v) if k == "message" else v) for k, v in e.items()} for e in events]


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist = from_env("cpu")
    rows, accum = split_batch(BATCH, ACCUM, dist.world)
    saves = []
    real_save = gpt_train.save_trained

    def counted(*args, **kwargs):
        saves.append(kwargs["training_state"]["step"])
        return real_save(*args, **kwargs)

    gpt_train.save_trained = counted
    model, train_loader, val_loader = setup(rows)
    cfg = config(rows, accum, checkpoint_dir=str(out / "ckpt"), checkpoint_every=4)
    events = list(train(model, train_loader, val_loader, cfg, sample_fn=sample_fn, dist=dist))
    torch.save(model.state_dict(), out / f"rank{dist.rank}.pt")

    rows4, accum4 = split_batch(BATCH, 2 * ACCUM, dist.world)  # 2 micro-batches per rank and step
    model, train_loader, val_loader = setup(rows4)
    deeper = list(train(model, train_loader, val_loader, config(rows4, accum4, steps=4), dist=dist))
    torch.save(model.state_dict(), out / f"accum{dist.rank}.pt")

    part = replace(cfg, checkpoint_dir=str(out / "part"))
    model, train_loader, val_loader = setup(rows)
    stopped = train(model, train_loader, val_loader, part, sample_fn=sample_fn, dist=dist)
    for event in stopped:
        if event["type"] == "checkpoint":
            break
    stopped.close()  # as if killed right after its step-4 checkpoint
    model, train_loader, val_loader = setup(rows)
    resumed = list(train(model, train_loader, val_loader, part, sample_fn=sample_fn, dist=dist,
                         resume=out / "part"))
    torch.save(model.state_dict(), out / f"resumed{dist.rank}.pt")
    record = {"rank": dist.rank, "world": dist.world, "rows": rows, "accum": accum, "saves": saves,
              "events": plain(events), "resumed": plain(resumed), "accum4": accum4, "deeper": plain(deeper)}
    (out / f"events{dist.rank}.json").write_text(json.dumps(record), encoding="utf-8")
    dist.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
