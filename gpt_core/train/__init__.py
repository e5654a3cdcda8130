"""Training: one loop for pretraining, instruction fine-tuning and classification.

The loop is a generator of plain event dicts, so a notebook can print them, a
test can assert on them and the app can run it in a worker thread and draw the
live loss::

    model = prepare_pretraining(GPTConfig.preset("tiny"), seed=0)
    for event in train(model, train_batches, val_batches, TrainConfig(lr=1e-3, steps=200)):
        if event["type"] == "eval":
            ...

Events
------
``{"type": "step", "step", "train_loss", "lr", "tokens_seen", "elapsed", "epoch"}``
``{"type": "eval", "step", "val_loss", "perplexity" | "accuracy", "train_loss", "elapsed"}``
``{"type": "sample", "step", "text"}``
``{"type": "checkpoint", "step", "path"}``
and one final event ``{"type": "done" | "cancelled" | "diverged", "step", "history", "message", "checkpoint"}``.

Batches are ``(inputs, targets)`` pairs (or dicts with ``inputs``/``targets``,
as :func:`gpt_core.data.collate_instructions` returns). Targets equal to -100
are ignored by the loss (padding, masked prompts). For ``task="classify"``
targets are one class index per row, and the logits are read at each row's last
real token (``lengths`` or ``attention_mask`` in the batch give it; without
them the last position is used).

The loop trains the model it is given, in place: pass it the copy returned by
:func:`prepare_instruction_finetune` / :func:`prepare_classifier`, never a model
shared with other users of the app.
"""
from __future__ import annotations

import copy
import functools
import gc
import inspect
import json
import math
import os
import time
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backend import GPT_LORA_TARGETS, backend_of, unwrap
from ..config import GPTConfig
from ..errors import InvalidInput, Message, note
from ..model import GPT
from ..tokenizers import model_ids

__all__ = [
    "IGNORE_INDEX", "TASKS", "TrainConfig", "pick_device", "autocast_dtype", "train",
    "batch_loss", "model_logits", "last_token_logits", "prepare_pretraining",
    "prepare_instruction_finetune", "merge_lora", "prepare_classifier", "is_classifier",
    "estimate_run", "check_fits", "available_memory", "save_trained", "load_trained",
    "steps_for_epochs", "GPT_LORA_TARGETS", "make_sample_fn", "evaluate_batches", "parse_learning_rate",
    "continuation_ids", "lora_target_names", "count_trainable", "estimate_finetune", "FINETUNE_TASKS",
    "TRAINING_STATE",
]

IGNORE_INDEX = -100
TASKS = ("lm", "instruct", "classify")
FINETUNE_TASKS = ("instruct", "classify")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
TRAINING_STATE = "training_state.pt"  # in a checkpoint of the loop, beside the weights: what resuming needs


# ------------------------------------------------------------------- devices
def pick_device(preference: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; other names are checked."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(pref)
    except (RuntimeError, TypeError):
        raise InvalidInput("train.bad_device", "'{device}' is not a valid device: choose auto, cpu, cuda or mps.",
                           device=str(preference)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("train.no_cuda", "No CUDA GPU is available on this machine: choose cpu or auto.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInput("train.no_mps", "The Apple mps device is not available here: choose cpu or auto.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInput("train.unsupported_device", "The device '{device}' is not supported: choose cpu, cuda or mps.",
                           device=str(preference))
    return device


def autocast_dtype(device: torch.device | str, allow_cpu: bool = False) -> torch.dtype | None:
    """bfloat16 where the device runs it well (CUDA with bf16 support), else None.

    On the CPU bf16 autocast is usually slower than float32 with small models,
    so it is off unless ``allow_cpu`` is set.
    """
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and allow_cpu:
        return torch.bfloat16
    return None


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        dtype = autocast_dtype(device, allow_cpu=True)
        if dtype is None:
            raise InvalidInput("train.no_bf16", "bf16 precision is not available on {device}: choose fp32 or auto.",
                               device=device.type)
        return dtype
    return autocast_dtype(device)


# -------------------------------------------------------------------- config
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_whole(field: str, value, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise InvalidInput("train.bad_whole", "{field} must be a whole number of at least {minimum} (got {value}).",
                           field=field, minimum=minimum, value=repr(value))


@dataclass
class TrainConfig:
    lr: float = 3e-4                 # peak learning rate of AdamW (0 < lr <= 1)
    batch_size: int = 8              # rows per micro-batch (used by loaders and estimates)
    steps: int = 200                 # optimizer updates
    grad_accum: int = 1              # micro-batches summed into one update
    warmup: int = 0                  # steps of linear warm-up from 0 to lr
    schedule: str = "cosine"         # "cosine" (decay to min_lr_ratio x lr) or "constant"
    min_lr_ratio: float = 0.1        # final lr of the cosine schedule, as a fraction of lr
    weight_decay: float = 0.1        # AdamW decay, applied to matrices only (not biases, norms)
    eval_every: int = 50             # evaluate every N steps (0: only at start and end)
    eval_batches: int = 20           # validation batches per evaluation (0: all of them)
    eval_at_start: bool = True       # evaluate before the first step (the initial loss)
    sample_every: int = 0            # call sample_fn every N steps (0: never)
    max_grad_norm: float | None = 1.0  # gradient clipping (None: no clipping)
    seed: int = 0                    # seeds torch before training (shuffles, dropout)
    device: str = "auto"             # "auto", "cpu", "cuda", "mps"
    precision: str = "auto"          # "auto" (bf16 on capable GPUs), "fp32", "bf16"
    diverge_ratio: float | None = 4.0  # stop when loss > ratio x first loss + 1 (None: NaN/inf only)
    checkpoint_dir: str | None = None  # where to save (atomic); None: no checkpoint
    checkpoint_every: int = 0        # save every N steps (0: only at the end)

    def __post_init__(self) -> None:
        lr = self.lr
        if not _is_number(lr) or not math.isfinite(lr) or lr <= 0 or lr > 1:
            raise InvalidInput("train.bad_lr", "The learning rate must be a finite number above 0 and at most 1 "
                               "(got {value}); a common value is 3e-4.", value=repr(lr))
        for name, minimum in (("batch_size", 1), ("steps", 1), ("grad_accum", 1), ("warmup", 0), ("eval_every", 0),
                              ("eval_batches", 0), ("sample_every", 0), ("checkpoint_every", 0)):
            _check_whole(name, getattr(self, name), minimum)
        if self.warmup >= self.steps and self.warmup > 0:
            raise InvalidInput("train.warmup_too_long", "The warm-up ({warmup} steps) must be shorter than training "
                               "({steps} steps).", warmup=self.warmup, steps=self.steps)
        if self.schedule not in SCHEDULES:
            raise InvalidInput("train.bad_schedule", "The learning-rate schedule must be cosine or constant (got {value}).",
                               value=repr(self.schedule))
        if not _is_number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise InvalidInput("train.bad_min_lr_ratio", "min_lr_ratio must be between 0 and 1 (got {value}).",
                               value=repr(self.min_lr_ratio))
        if not _is_number(self.weight_decay) or not math.isfinite(self.weight_decay) or not 0 <= self.weight_decay < 1:
            raise InvalidInput("train.bad_weight_decay", "The weight decay must be between 0 and 1 (got {value}).",
                               value=repr(self.weight_decay))
        if self.max_grad_norm is not None and (
            not _is_number(self.max_grad_norm) or not math.isfinite(self.max_grad_norm) or self.max_grad_norm <= 0
        ):
            raise InvalidInput("train.bad_grad_norm", "The maximum gradient norm must be a number above 0, or empty "
                               "for no clipping (got {value}).", value=repr(self.max_grad_norm))
        if self.diverge_ratio is not None and (
            not _is_number(self.diverge_ratio) or not math.isfinite(self.diverge_ratio) or self.diverge_ratio <= 1
        ):
            raise InvalidInput("train.bad_diverge_ratio", "diverge_ratio must be a number above 1, or None (got {value}).",
                               value=repr(self.diverge_ratio))
        if not _is_int(self.seed):
            raise InvalidInput("train.bad_seed", "The seed must be a whole number (got {value}).", value=repr(self.seed))
        if self.precision not in PRECISIONS:
            raise InvalidInput("train.bad_precision", "The precision must be auto, fp32 or bf16 (got {value}).",
                               value=repr(self.precision))
        if not isinstance(self.device, str) or not self.device.strip():
            raise InvalidInput("train.bad_device", "'{device}' is not a valid device: choose auto, cpu, cuda or mps.",
                               device=str(self.device))

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_at(self, step: int) -> float:
        """Learning rate for update number ``step`` (0-based)."""
        if self.warmup and step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        span = max(self.steps - self.warmup - 1, 1)
        progress = min(max(step - self.warmup, 0) / span, 1.0)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def steps_for_epochs(batches_per_epoch: int, epochs: int, grad_accum: int = 1) -> int:
    """Optimizer steps that cover ``epochs`` passes over a loader of that length."""
    _check_whole("epochs", epochs, 1)
    if not _is_int(batches_per_epoch) or batches_per_epoch < 1:
        raise InvalidInput("train.no_batch", "The {split} set holds no batch: add data or lower the batch size.",
                           split="train")
    return max(1, (batches_per_epoch * epochs) // grad_accum)


def parse_learning_rate(raw) -> float:
    """A learning rate typed as text ("3e-4", "0,001") -> float, refused with a reason when unusable."""
    text = str(raw if raw is not None else "").strip().replace(",", ".")
    if not text:
        raise InvalidInput("train.lr_empty", "Give a learning rate, for example 3e-4.")
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput("train.lr_not_number", "'{value}' is not a number: write a learning rate such as 3e-4 "
                           "or 0.001.", value=str(raw)[:40]) from None
    if not math.isfinite(value):
        raise InvalidInput("train.lr_not_finite", "The learning rate must be a finite number (got {value}).",
                           value=text)
    if value <= 0:
        raise InvalidInput("train.lr_not_positive", "The learning rate must be above 0 (got {value}): with 0 the "
                           "weights would never move.", value=text)
    if value > 1:
        raise InvalidInput("train.lr_too_big", "A learning rate of {value} would make training diverge: choose at "
                           "most 1 (usually between 1e-4 and 1e-2).", value=text)
    return value


# ---------------------------------------------------------------------- loss
def model_logits(model: nn.Module, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, T, V) of our GPT, a Hugging Face model or a peft wrapper of either."""
    return backend_of(model).logits(inputs, attention_mask)


def last_token_logits(
    logits: torch.Tensor,
    lengths: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T, C) -> (B, C): the logits at each row's last real (non-padding) token."""
    B, T = logits.shape[:2]
    if lengths is not None:
        index = lengths.to(logits.device).long().clamp(1, T) - 1
    elif attention_mask is not None:
        positions = torch.arange(T, device=logits.device).expand(B, T)
        index = (positions * attention_mask.to(logits.device).long()).amax(dim=1)
    else:
        return logits[:, -1, :]
    return logits[torch.arange(B, device=logits.device), index]  # (B, C)


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A batch -> (inputs, targets, lengths, attention_mask)."""
    if isinstance(batch, dict):
        inputs = batch.get("inputs", batch.get("input_ids"))
        targets = batch.get("targets", batch.get("labels"))
        lengths, mask = batch.get("lengths"), batch.get("attention_mask")
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        inputs, targets = batch[0], batch[1]
        lengths = batch[2] if len(batch) > 2 else None
        mask = None
    else:
        raise InvalidInput("train.bad_batch", "A batch must be an (inputs, targets) pair or a dict with the keys "
                           "inputs and targets.")
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise InvalidInput("train.batch_not_tensors", "The inputs and targets of a batch must be PyTorch tensors.")
    if inputs.dim() != 2:
        raise InvalidInput("train.batch_shape", "The inputs of a batch must have the shape (batch, tokens), "
                           "got {shape}.", shape=str(tuple(inputs.shape)))
    return inputs, targets, lengths, mask


def batch_loss(model: nn.Module, batch, task: str = "lm", loss_fn: Callable | None = None,
               device: torch.device | None = None) -> tuple[torch.Tensor, int, dict]:
    """Loss of one batch -> (loss, tokens in the batch, extras such as correct predictions)."""
    inputs, targets, lengths, mask = _unpack(batch)
    if device is not None:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True) if mask is not None else None
    if loss_fn is not None:
        return loss_fn(model, inputs, targets), inputs.numel(), {}
    if task == "classify":
        logits = last_token_logits(model_logits(model, inputs, mask), lengths, mask).float()  # (B, C)
        loss = F.cross_entropy(logits, targets)
        correct = int((logits.argmax(-1) == targets).sum().item()) if not torch.is_grad_enabled() else 0
        tokens = 0 if inputs.is_floating_point() else inputs.numel()  # a probe's rows are features, not tokens
        return loss, tokens, {"correct": correct, "rows": int(targets.numel())}
    logits = model_logits(model, inputs, mask)  # (B, T, V)
    flat_targets = targets.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat_targets,
                            ignore_index=IGNORE_INDEX, reduction="sum")
    counted = (flat_targets != IGNORE_INDEX).sum()
    return total / counted.clamp(min=1), inputs.numel(), {"counted": counted}


# --------------------------------------------------------------------- loop
def _optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = backend_of(model).param_groups(cfg.weight_decay)
    if not groups:
        raise InvalidInput("train.nothing_trainable", "This model has no trainable parameter: unfreeze at least one layer.")
    kwargs = {"lr": cfg.lr, "betas": (0.9, 0.95)}
    if device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def _batch_stream(batches: Iterable, label: str) -> Iterator[tuple[int, object]]:
    """Endless (epoch, batch) pairs: restarts re-iterable sources at each epoch."""
    epoch = 0
    while True:
        iterator = iter(batches)
        produced = False
        for batch in iterator:
            produced = True
            yield epoch, batch
        if not produced:
            if epoch == 0:
                raise InvalidInput("train.no_batch", "The {split} set holds no batch: add data or lower the batch size.",
                                   split=label)
            return
        if iterator is batches:  # a one-shot iterator cannot start a second epoch
            return
        epoch += 1


def _new_history() -> dict:
    return {"step": [], "train_loss": [], "lr": [], "tokens_seen": [], "elapsed": [],
            "eval_step": [], "val_loss": [], "val_accuracy": [], "samples": []}


def evaluate_batches(model: nn.Module, batches: Iterable, task: str = "lm", loss_fn: Callable | None = None,
                     device: torch.device | None = None, amp: torch.dtype | None = None,
                     max_batches: int = 0, cancel: threading.Event | None = None, dist=None) -> dict:
    """Mean loss over (at most ``max_batches``) batches, in eval mode, without gradients.

    Returns ``{"loss", "batches", "accuracy" (classify only)}``; ``loss`` is NaN when
    there was no batch. The model's train/eval mode is restored afterwards.
    With ``dist`` (a :class:`~gpt_core.train.distributed.Dist`), ``batches`` is this
    rank's shard (global batch ``i`` on rank ``i % world``), ``max_batches`` counts
    global batches, and the sums of all ranks are added: every rank returns the same.
    """
    limit = _local_limit(max_batches, dist)
    was_training = model.training
    model.eval()
    losses, weights, correct, rows = [], [], 0, 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if limit is not None and i >= limit:
                    break
                if cancel is not None and cancel.is_set():
                    break
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None) if device is not None else _null():
                    loss, _, extra = batch_loss(model, batch, task, loss_fn, device)
                w = float(extra["counted"]) if "counted" in extra else 1.0
                if w > 0:
                    losses.append(float(loss) * w)
                    weights.append(w)
                correct += extra.get("correct", 0)
                rows += extra.get("rows", 0)
    finally:
        model.train(was_training)
    if dist is not None:
        return _reduced_eval(dist, task, sum(losses), sum(weights), correct, rows, len(losses))
    result = {"loss": sum(losses) / sum(weights) if weights else float("nan"), "batches": len(losses)}
    if task == "classify":
        result["accuracy"] = correct / rows if rows else float("nan")
    return result


def _local_limit(max_batches: int, dist) -> int | None:
    """How many of its batches this rank evaluates (None: all) for a global limit (0: none)."""
    if not max_batches:
        return None
    if dist is None:
        return max_batches
    return max(0, -(-(max_batches - dist.rank) // dist.world))  # global batches i < max_batches with i % world == rank


def _reduced_eval(dist, task: str, loss_sum: float, weight: float, correct: int, rows: int, n: int) -> dict:
    """:func:`evaluate_batches`' result from the sums of every rank (one all-reduce)."""
    sums = torch.tensor([loss_sum, weight, correct, rows, n], dtype=torch.float64, device=dist.device)
    loss_sum, weight, correct, rows, n = dist.all_reduce_sum(sums).tolist()
    result = {"loss": loss_sum / weight if weight else float("nan"), "batches": int(n)}
    if task == "classify":
        result["accuracy"] = correct / rows if rows else float("nan")
    return result


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def train(
    model: nn.Module,
    train_batches: Iterable,
    val_batches: Iterable | None,
    cfg: TrainConfig,
    task: str = "lm",
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    sample_fn: Callable[[nn.Module], str] | None = None,
    cancel: threading.Event | None = None,
    dist=None,
    resume: str | os.PathLike | None = None,
) -> Iterator[dict]:
    """Train ``model`` in place and yield events (see the module docstring).

    Arguments are checked now (a bad one raises :class:`InvalidInput` at the
    call, not at the first ``next``). ``loss_fn(model, inputs, targets)``
    replaces the built-in loss; ``sample_fn(model) -> str`` is called every
    ``cfg.sample_every`` steps in eval mode without gradients; setting
    ``cancel`` stops the loop before the next step with a "cancelled" event.

    ``dist`` (a :class:`~gpt_core.train.distributed.Dist`, under torchrun) trains
    data-parallel on ``dist.device``: each rank takes its shard of the batches
    (see :meth:`~gpt_core.train.distributed.Dist.shard`), gradients are averaged,
    losses, token counts and evaluations are those of all ranks together; only
    the main rank samples and saves. ``resume`` (a checkpoint folder this loop
    wrote, with its :data:`TRAINING_STATE`) continues that run where it stopped:
    weights, optimizer, counters, history, random state and the place in the data.
    """
    if not isinstance(cfg, TrainConfig):
        raise InvalidInput("train.bad_config", "cfg must be a TrainConfig.")
    if task not in TASKS:
        raise InvalidInput("train.bad_task", "The task must be lm, instruct or classify (got {value}).", value=repr(task))
    if not isinstance(model, nn.Module):
        raise InvalidInput("backend.not_a_module", "Expected a PyTorch model, got {kind}.", kind=type(model).__name__)
    if train_batches is None:
        raise InvalidInput("train.no_train_set", "A training set is needed.")
    if dist is not None:
        _check_dist(dist)
    device = dist.device if dist is not None else pick_device(cfg.device)
    amp = _resolve_precision(cfg.precision, device)
    state = None
    if resume is not None:
        state = _read_state(resume, cfg, dist)
        _load_weights(model, state)
    return _train_loop(model, train_batches, val_batches, cfg, task, loss_fn, sample_fn, cancel, device, amp,
                       dist, state)


def _train_loop(model, train_batches, val_batches, cfg, task, loss_fn, sample_fn, cancel, device, amp,
                dist=None, state=None):
    torch.manual_seed(cfg.seed)
    model.to(device)
    model.train()
    if dist is not None:
        train_batches = dist.shard(train_batches)
        val_batches = None if val_batches is None else dist.shard(val_batches, even=False)
    run = _Run(model, val_batches, cfg, task, loss_fn, cancel, device, amp, dist)
    try:
        stream = _batch_stream(train_batches, "train")
        if state is not None:
            run.restore(state, stream)
        elif cfg.eval_at_start:
            yield from run.evaluate()
        while run.step < cfg.steps:
            if run.cancelled():
                yield run.final("cancelled", note("train.cancelled", "Training cancelled at step {step} of {steps}.",
                                                  step=run.step, steps=cfg.steps))
                return
            lr = cfg.lr_at(run.step)
            loss_value = run.accumulate(stream, lr)
            if loss_value is None:
                yield run.final("done", note("train.data_exhausted", "The training data ran out after {step} steps "
                                             "(a one-shot iterator): training stopped.", step=run.step))
                return
            stop = run.divergence(loss_value) or run.clip(loss_value)
            if stop is not None:
                yield stop
                return
            yield run.update(loss_value, lr)
            last = run.step == cfg.steps
            if (cfg.eval_every and run.step % cfg.eval_every == 0) or last:
                yield from run.evaluate()
            if sample_fn is not None and cfg.sample_every and (run.step % cfg.sample_every == 0 or last):
                yield from run.sample(sample_fn)
            if cfg.checkpoint_dir and ((cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0) or last):
                yield run.save()
        model.eval()
        yield run.final("done", run.summary())
    finally:
        run.release()


def _check_dist(dist) -> None:
    from .distributed import Dist

    if not isinstance(dist, Dist):
        raise InvalidInput("train.dist_bad_group", "dist must be the Dist that gpt_core.train.distributed.from_env "
                           "returns (got {kind}).", kind=type(dist).__name__)


def _data_parallel(model: nn.Module, dist) -> nn.Module:
    """``model`` under DistributedDataParallel (its parameters are shared, not copied)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.local_rank] if dist.device.type == "cuda" else None
    # buffers (causal masks, rotary tables) never change while training: synced once, not before each forward
    known = inspect.signature(DistributedDataParallel.__init__).parameters
    flag = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"  # newer torch
    return DistributedDataParallel(model, device_ids=ids, **{flag: False})


def _read_state(resume, cfg: TrainConfig, dist) -> dict:
    """The training state saved in the checkpoint folder ``resume``, once it is known to fit this run."""
    from ..hub import settle

    path = Path(resume)
    settle(path)  # a save killed while swapping folders is finished (or undone) first
    file = path / TRAINING_STATE
    if not file.is_file():
        raise InvalidInput("train.resume_no_state", "The folder '{path}' holds no training state ({file} is "
                           "missing): only a checkpoint written during training can be resumed.",
                           path=path.name, file=TRAINING_STATE)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        saved, step, world = dict(state["config"]), int(state["step"]), int(state["world"])
    except Exception:
        raise InvalidInput("train.resume_unreadable", "The training state in '{path}' cannot be read: the file is "
                           "damaged or was not written by this program.", path=path.name) from None
    for name in ("steps", "batch_size", "grad_accum"):
        if saved.get(name) != getattr(cfg, name):
            raise InvalidInput("train.resume_config_differs", "{field} differs: the checkpoint in '{path}' was "
                               "trained with {saved}, this run asks for {asked}. Resume with the same value.",
                               path=path.name, field=name, saved=saved.get(name), asked=getattr(cfg, name))
    if world != (dist.world if dist is not None else 1):
        raise InvalidInput("train.resume_world_differs", "The checkpoint in '{path}' was trained by {saved} "
                           "process(es), this run has {world}: resume with as many.", path=path.name,
                           saved=world, world=dist.world if dist is not None else 1)
    if step >= cfg.steps:
        raise InvalidInput("train.resume_finished", "The checkpoint in '{path}' is already at step {step} of "
                           "{steps}: there is nothing left to train.", path=path.name, step=step, steps=cfg.steps)
    state["path"] = str(path)
    return state


def _load_weights(model: nn.Module, state: dict) -> None:
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError):
        raise InvalidInput("train.resume_other_model", "The checkpoint in '{path}' belongs to another model: its "
                           "weights do not fit this one.", path=Path(state["path"]).name) from None


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)


class _Run:
    """The state of one training run, and the named steps of the loop above."""

    def __init__(self, model, val_batches, cfg, task, loss_fn, cancel, device, amp, dist=None):
        self.module = model  # the caller's module: evaluated, sampled and saved
        self.model = model if dist is None else _data_parallel(model, dist)  # what the training steps run
        self.val_batches, self.cfg, self.task, self.dist = val_batches, cfg, task, dist
        self.loss_fn, self.cancel, self.device, self.amp = loss_fn, cancel, device, amp
        self.optimizer = _optimizer(self.model, cfg, device)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.history = _new_history()
        self.start = time.perf_counter()
        self.tokens_seen, self.step, self.epoch = 0, 0, 0
        self.first_loss: float | None = None
        self.checkpoint: str | None = None
        self.recent: list[float] = []
        self.stop_asked = False  # under torchrun: some rank's cancel was set (seen at the last step)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def final(self, kind: str, message: Message, **extra) -> dict:
        return {"type": kind, "step": self.step, "history": copy.deepcopy(self.history), "message": message,
                "checkpoint": self.checkpoint, "elapsed": self.elapsed(), **extra}

    def release(self) -> None:
        """Drop the data-parallel wrapper: its gradient hooks leave the caller's module (trained in place)."""
        if self.model is not self.module:
            self.model = self.module
            gc.collect()  # the wrapper may sit in a reference cycle

    def cancelled(self) -> bool:
        """Whether to stop now; under torchrun every rank decides alike, from the last step's all-reduce."""
        if self.dist is not None:
            return self.stop_asked
        return self.cancel is not None and self.cancel.is_set()

    def evaluate(self) -> Iterator[dict]:
        """An "eval" event (nothing without a validation set)."""
        if self.val_batches is None:
            return
        res = evaluate_batches(self.module, self.val_batches, self.task, self.loss_fn, self.device, self.amp,
                               self.cfg.eval_batches, self.cancel, self.dist)
        if not res["batches"]:
            return
        event = {"type": "eval", "step": self.step, "val_loss": res["loss"], "elapsed": self.elapsed(),
                 "train_loss": sum(self.recent) / len(self.recent) if self.recent else None}
        self.history["eval_step"].append(self.step)
        self.history["val_loss"].append(res["loss"])
        if self.task == "classify":
            event["accuracy"] = res["accuracy"]
            self.history["val_accuracy"].append(res["accuracy"])
        else:
            event["perplexity"] = math.exp(min(res["loss"], 50.0))
        yield event

    def accumulate(self, stream, lr: float) -> float | None:
        """Forward and backward over ``grad_accum`` micro-batches: the mean loss, or None when data ran out."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        accum, tokens = self.cfg.grad_accum, 0
        for i in range(accum):
            try:
                self.epoch, batch = next(stream)
            except StopIteration:
                self.optimizer.zero_grad(set_to_none=True)
                return None
            # under DDP gradients are averaged over the ranks once per step: at the last micro-batch
            with self.model.no_sync() if self.dist is not None and i < accum - 1 else _null():
                with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                    loss, n_tokens, _ = batch_loss(self.model, batch, self.task, self.loss_fn, self.device)
                (loss / accum).backward()
            loss_sum += loss.detach().float()
            if self.dist is None:
                self.tokens_seen += n_tokens
            tokens += n_tokens
        if self.dist is None:
            loss_value = float(loss_sum.item()) / accum
        else:
            loss_value = self._all_ranks(loss_sum, tokens)
        if self.first_loss is None and math.isfinite(loss_value):
            self.first_loss = loss_value
        return loss_value

    def _all_ranks(self, loss_sum: torch.Tensor, tokens: int) -> float:
        """The step's mean loss and token count over every rank, and whether one was cancelled: one all-reduce."""
        local = torch.tensor([tokens, self.cancel is not None and self.cancel.is_set()], dtype=torch.float64)
        sums = torch.cat([loss_sum.double().reshape(1), local.to(self.device)])
        total, tokens, stops = self.dist.all_reduce_sum(sums).tolist()
        self.tokens_seen += int(tokens)
        self.stop_asked = stops > 0
        return total / (self.dist.world * self.cfg.grad_accum)

    def divergence(self, loss_value: float) -> dict | None:
        """A "diverged" event when the loss is not finite or far above the first one (before any update)."""
        ratio, first = self.cfg.diverge_ratio, self.first_loss
        limit = None if ratio is None or first is None else ratio * first + 1.0
        if math.isfinite(loss_value) and (limit is None or loss_value <= limit):
            return None
        self.optimizer.zero_grad(set_to_none=True)
        return self.final("diverged", note(
            "train.diverged", "Training diverged at step {step}: the loss is {loss} (it started at {first}). "
            "Try a smaller learning rate (for example 3e-4) or stricter gradient clipping (a smaller max_grad_norm).",
            step=self.step + 1, loss=loss_value, first=first if first is not None else float("nan")), loss=loss_value)

    def clip(self, loss_value: float) -> dict | None:
        """Clip the gradient norm; a "diverged" event when that norm is not finite."""
        if self.cfg.max_grad_norm is None:
            return None
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        if torch.isfinite(grad_norm):
            return None
        self.optimizer.zero_grad(set_to_none=True)
        return self.final("diverged", note(
            "train.diverged_grad", "Training diverged at step {step}: the gradient norm is not finite. "
            "Try a smaller learning rate or fp32 precision.", step=self.step + 1), loss=loss_value)

    def update(self, loss_value: float, lr: float) -> dict:
        """Apply the update and record it: the "step" event."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.recent.append(loss_value)
        del self.recent[:-20]
        now = self.elapsed()
        for key, value in (("step", self.step), ("train_loss", loss_value), ("lr", lr),
                           ("tokens_seen", self.tokens_seen), ("elapsed", now)):
            self.history[key].append(value)
        return {"type": "step", "step": self.step, "train_loss": loss_value, "lr": lr,
                "tokens_seen": self.tokens_seen, "elapsed": now, "epoch": self.epoch}

    def sample(self, sample_fn: Callable[[nn.Module], str]) -> Iterator[dict]:
        """A "sample" event (under torchrun only from the main rank)."""
        if self.dist is not None and not self.dist.is_main:
            return
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                text = sample_fn(self.module)
        finally:
            self.module.train(was_training)
        self.history["samples"].append({"step": self.step, "text": text})
        yield {"type": "sample", "step": self.step, "text": text}

    def save(self) -> dict:
        """Save weights and training state (under torchrun: the main rank saves, the others wait for it)."""
        path = Path(self.cfg.checkpoint_dir)
        if self.dist is None or self.dist.is_main:
            extra = {"step": self.step, "task": self.task, "train_config": self.cfg.to_dict()}
            path = save_trained(self.module, path, extra, training_state=self.state())
        if self.dist is not None:
            self.dist.barrier()
        self.checkpoint = str(path)
        return {"type": "checkpoint", "step": self.step, "path": self.checkpoint}

    def state(self) -> dict:
        """What ``train(..., resume=folder)`` needs to go on from this point (saved as TRAINING_STATE)."""
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "tokens_seen": self.tokens_seen, "epoch": self.epoch, "history": copy.deepcopy(self.history),
                "first_loss": self.first_loss, "recent": list(self.recent), "elapsed": self.elapsed(),
                "rng": _rng_state(self.device), "config": self.cfg.to_dict(), "task": self.task,
                "world": self.dist.world if self.dist is not None else 1}

    def restore(self, state: dict, stream) -> None:
        """Go on from a saved state (weights already loaded): optimizer, counters, place in the data, RNG."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.tokens_seen, self.epoch = state["step"], state["tokens_seen"], state["epoch"]
        self.history, self.first_loss, self.recent = state["history"], state["first_loss"], list(state["recent"])
        self.start = time.perf_counter() - state["elapsed"]
        self.checkpoint = state["path"]
        for _ in range(self.step * self.cfg.grad_accum):  # this rank's batches already trained on, epochs included
            try:
                self.epoch, _batch = next(stream)
            except StopIteration:
                break
        _set_rng_state(state["rng"], self.device)

    def summary(self) -> Message:
        train_loss = self.history["train_loss"][-1]
        if self.history["val_loss"]:
            return note("train.finished_val", "Training finished: {steps} steps, training loss {train_loss}, "
                        "validation loss {val_loss}.", steps=self.step, train_loss=train_loss,
                        val_loss=self.history["val_loss"][-1])
        return note("train.finished", "Training finished: {steps} steps, training loss {train_loss}.",
                    steps=self.step, train_loss=train_loss)


def continuation_ids(model: nn.Module, prompt_ids, max_new_tokens: int, eos_id: int | None = None) -> list[int]:
    """Greedy continuation ids of ``prompt_ids`` (the prompt excluded, a final ``eos_id`` dropped).

    A prompt too long for the context window keeps its last tokens, leaving
    room for at least ``min(max_new_tokens, context // 2)`` new ones.
    """
    from ..decoding import greedy

    base = unwrap(model)
    ctx = backend_of(base).context_length
    room = max(1, min(max_new_tokens, ctx // 2))
    prompt_ids = list(prompt_ids)[-(ctx - room):]
    new = list(greedy(base, prompt_ids, min(max_new_tokens, ctx), eos_id=eos_id, trace=False).new_ids)
    return new[:-1] if new and eos_id is not None and new[-1] == eos_id else new


def make_sample_fn(tokenizer, prompt: str, max_new_tokens: int = 30) -> Callable[[nn.Module], str]:
    """A ``sample_fn`` for :func:`train`: the greedy continuation of ``prompt`` (prompt included)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("train.empty_sample_prompt", "The prompt of the generated samples is empty.")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        _check_whole("max_new_tokens", max_new_tokens, 1)
    prompt_ids = list(model_ids(tokenizer, prompt))
    if len(prompt_ids) <= len(getattr(tokenizer, "model_prefix", ())):
        raise InvalidInput("train.empty_sample_prompt", "The prompt of the generated samples is empty.")

    def sample(model: nn.Module) -> str:
        return tokenizer.decode(prompt_ids + continuation_ids(model, prompt_ids, max_new_tokens))

    return sample


# ---------------------------------------------------------------- task setup
def prepare_pretraining(cfg: GPTConfig, seed: int = 0) -> GPT:
    """A freshly initialised GPT (random weights drawn under ``seed``)."""
    if not isinstance(cfg, GPTConfig):
        raise InvalidInput("train.bad_model_config", "The model configuration must be a GPTConfig.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(cfg)
    return model


def _trainable_copy(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidInput("backend.not_a_module", "Expected a PyTorch model, got {kind}.", kind=type(model).__name__)
    twin = copy.deepcopy(model)
    # half-precision weights make poor master weights for AdamW: train in float32
    if any(p.is_floating_point() and p.dtype in (torch.float16, torch.bfloat16) for p in twin.parameters()):
        twin = twin.float()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def prepare_instruction_finetune(
    model: nn.Module,
    lora: bool = False,
    lora_r: int = 8,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.0,
    target_modules: list[str] | tuple[str, ...] | None = None,
) -> nn.Module:
    """A copy of ``model`` ready for instruction fine-tuning (the input is never modified).

    Full fine-tuning trains every weight of the copy. With ``lora=True`` the
    copy is wrapped by ``peft``: its weights are frozen and small low-rank
    matrices (rank ``lora_r``) are added to the attention and feed-forward
    linear layers (``att.qkv``, ``att.out_proj``, ``ff.fc_in``, ``ff.fc_out``
    for our GPT; peft's defaults for Hugging Face models).
    """
    twin = _trainable_copy(model)
    if not lora:
        return twin
    if not _is_int(lora_r) or lora_r < 1:
        _check_whole("lora_r", lora_r, 1)
    if not _is_number(lora_dropout) or not 0 <= lora_dropout < 1:
        raise InvalidInput("train.bad_lora_dropout", "The LoRA dropout must be between 0 and 1 (got {value}).",
                           value=repr(lora_dropout))
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise InvalidInput("train.no_peft", "LoRA needs the peft package: install it with 'pip install peft'.") from None
    if target_modules is None:
        target_modules = backend_of(twin).lora_targets()
    # Hugging Face GPT-2 stores its linear layers as Conv1D (weights transposed)
    conv1d = any(type(m).__name__ == "Conv1D" for m in twin.modules())
    config = LoraConfig(r=lora_r, lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_r,
                        lora_dropout=lora_dropout, fan_in_fan_out=conv1d,
                        target_modules=list(target_modules) if target_modules is not None else None)
    try:
        return get_peft_model(twin, config)
    except ValueError as exc:
        raise InvalidInput("train.lora_no_target", "LoRA finds no layer to adapt in this model ({detail}).",
                           detail=str(exc)) from None


def merge_lora(model: nn.Module) -> nn.Module:
    """A plain model with the LoRA matrices folded into its weights (for export).

    The model passed in keeps its adapters; a model without LoRA is returned as is.
    """
    if not hasattr(model, "merge_and_unload"):
        return model
    return copy.deepcopy(model).merge_and_unload()


ADAPTER_FILE = "adapter_config.json"


def save_lora_adapter(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save only the LoRA matrices of a peft-wrapped model (megabytes, not the whole model), atomically
    (``atomic_dir``: see :func:`save_trained`).

    :func:`load_lora_adapter` puts them back on a fresh copy of the same base model.
    """
    from ..hub import atomic_dir

    if not hasattr(model, "peft_config"):
        raise InvalidInput("train.not_lora", "This model has no LoRA adapter to save.")
    with atomic_dir(Path(path)) as tmp:
        model.save_pretrained(str(tmp))
        (tmp / "gpt_core_train.json").write_text(json.dumps(dict(extra or {}), indent=2, default=str),
                                                 encoding="utf-8")
    return Path(path)


def load_lora_adapter(base: nn.Module, path: str | os.PathLike) -> nn.Module:
    """``base`` (a fresh model, changed in place) with the adapter of :func:`save_lora_adapter` merged in."""
    from peft import PeftModel

    from ..hub import settle

    path = Path(path)
    settle(path)  # a save killed while swapping folders is finished (or undone) first
    if not (path / ADAPTER_FILE).is_file():
        raise InvalidInput("train.no_adapter", "The folder '{path}' holds no LoRA adapter.", path=path.name)
    return PeftModel.from_pretrained(base, str(path)).merge_and_unload().eval()


def is_classifier(model: nn.Module) -> bool:
    return getattr(unwrap(model), "gpt_core_n_classes", None) is not None


def prepare_classifier(model: nn.Module, n_classes: int, freeze_until_last: int | None = None,
                       labels: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose output head predicts ``n_classes`` classes.

    The vocabulary head is replaced by ``nn.Linear(d_model, n_classes)``; the
    class is read at the last real token of each row (:func:`last_token_logits`).
    ``freeze_until_last=N`` trains only the last N blocks, the final norm and the
    head (0: only the norm and the head); None trains everything.
    """
    if not _is_int(n_classes) or n_classes < 2:
        raise InvalidInput("train.too_few_classes", "A classifier needs at least 2 classes (got {value}).",
                           value=repr(n_classes))
    if labels is not None and len(labels) != n_classes:
        raise InvalidInput("train.label_count", "{n_labels} class names for {n_classes} classes: the numbers must match.",
                           n_labels=len(labels), n_classes=n_classes)
    twin = _trainable_copy(model)
    adapter = backend_of(twin)
    blocks, final_norm = adapter.blocks(), adapter.final_norm()
    n_layers = len(blocks)
    if freeze_until_last is not None and (not _is_int(freeze_until_last) or not 0 <= freeze_until_last <= n_layers):
        raise InvalidInput("train.bad_frozen_blocks", "The number of blocks to train must be between 0 and {n_layers} "
                           "(got {value}).", n_layers=n_layers, value=repr(freeze_until_last))
    ref = next(twin.parameters())
    head = nn.Linear(adapter.d_model, n_classes).to(device=ref.device, dtype=ref.dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        nn.init.normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    adapter.replace_head(head)
    if freeze_until_last is not None:
        for p in twin.parameters():
            p.requires_grad_(False)
        for module in [head, final_norm, *blocks[n_layers - freeze_until_last:]]:
            for p in module.parameters():
                p.requires_grad_(True)
    twin.gpt_core_n_classes = n_classes
    twin.gpt_core_labels = list(labels) if labels is not None else None
    return twin


# ----------------------------------------------------------------- estimates
def available_memory(device: torch.device | str) -> int | None:
    """Free bytes on the device (CUDA: free GPU memory; else system RAM), or None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:
            return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=8)
def _matmul_flops(device_str: str, dtype_str: str) -> float:
    """Measured matrix-multiply throughput of the device (FLOP/s): the best of several
    short timings, so that one unlucky moment on a busy machine does not skew estimates."""
    device, dtype = torch.device(device_str), getattr(torch, dtype_str)
    n = 2048 if device.type == "cuda" else 768
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 10 if device.type == "cuda" else 2
    a @ b  # warm-up
    best = float("inf")
    for _ in range(7):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 * reps / max(best, 1e-9)


def _shape_of(model_or_cfg) -> tuple[int, int, int, int, int, int]:
    """(params, trainable params, layers, d_model, heads, vocab) of a GPTConfig or a model."""
    if isinstance(model_or_cfg, GPTConfig):
        with torch.device("meta"):
            meta = GPT(model_or_cfg)
        n = meta.num_parameters()
        c = model_or_cfg
        return n, n, c.n_layers, c.d_model, c.n_heads, c.vocab_size
    if isinstance(model_or_cfg, nn.Module):
        unique = {id(p): p for p in model_or_cfg.parameters()}
        n = sum(p.numel() for p in unique.values())
        trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
        info = backend_of(model_or_cfg).info()
        vocab = unwrap(model_or_cfg).gpt_core_n_classes if is_classifier(model_or_cfg) else info.vocab_size
        return n, trainable, info.n_layers, info.d_model, info.n_heads, vocab
    raise InvalidInput("train.bad_estimate_subject", "estimate_run expects a GPTConfig or a PyTorch model.")


def estimate_run(model_or_cfg, batch_size: int, context: int, steps: int, device="auto",
                 precision: str = "auto", grad_accum: int = 1) -> dict:
    """What a run will cost before it starts.

    ``memory_bytes`` adds float32 weights, gradients and the two AdamW moments
    of the trainable weights, and an activation estimate (about 34 x d_model
    values kept per token and layer for backward, plus the attention matrix
    on the CPU, plus the logits). ``seconds_estimate`` is 6 x params x tokens
    FLOPs divided by the device's matrix-multiply speed measured right now
    (a few milliseconds) times a typical training efficiency.
    """
    for name, value in (("batch_size", batch_size), ("context", context), ("steps", steps), ("grad_accum", grad_accum)):
        _check_whole(name, value, 1)
    dev = pick_device(device)
    amp = _resolve_precision(precision, dev)
    n, trainable, n_layers, d_model, n_heads, vocab = _shape_of(model_or_cfg)
    act_bytes = 2 if amp is not None else 4
    tokens = batch_size * context
    weights = 4 * n
    optimizer = (4 + 8) * trainable  # gradients + AdamW exp_avg, exp_avg_sq
    activations = n_layers * tokens * d_model * 17 * act_bytes  # 34 x d values at 16 bits ~ 17 x d x bytes
    if dev.type != "cuda":  # no flash kernel: the (T x T) attention weights are kept per head
        activations += n_layers * batch_size * n_heads * context * context * act_bytes * 2
    activations += tokens * vocab * (act_bytes + 8)  # logits, their float32 copy and gradient
    memory = int(weights + optimizer + activations)
    flops_per_s = _matmul_flops(str(dev), "bfloat16" if amp is not None else "float32")
    efficiency = 0.35 if dev.type == "cuda" else 0.5
    total_tokens = tokens * grad_accum * steps
    seconds = 6.0 * n * total_tokens / (flops_per_s * efficiency)
    free = available_memory(dev)
    fits, reason = True, None
    if free is not None and memory > 0.9 * free:
        fits = False
        reason = note("train.too_big", "This run needs about {need_gb} GB of memory but only {free_gb} GB are free "
                      "on {device}: lower the batch size, the context or the model.",
                      need_gb=round(memory / 1e9, 2), free_gb=round(free / 1e9, 2), device=dev.type)
    return {"params": n, "trainable_params": trainable, "memory_bytes": memory,
            "memory_breakdown": {"weights": int(weights), "grads_and_adamw": int(optimizer),
                                 "activations": int(activations)},
            "available_bytes": free, "seconds_estimate": seconds, "tokens": total_tokens,
            "device": str(dev), "precision": "bf16" if amp is not None else "fp32",
            "fits": fits, "reason": reason}


def check_fits(model_or_cfg, batch_size: int, context: int, steps: int, device="auto",
               precision: str = "auto", grad_accum: int = 1) -> dict:
    """:func:`estimate_run`, raising :class:`InvalidInput` with the reason when it does not fit."""
    estimate = estimate_run(model_or_cfg, batch_size, context, steps, device, precision, grad_accum)
    if not estimate["fits"]:
        raise InvalidInput(estimate["reason"].code, estimate["reason"].text, **estimate["reason"].params)
    return estimate


def lora_target_names(model: nn.Module) -> list[str]:
    """Names of the linear layers LoRA adapts in ``model``: ours, else peft's defaults for the family."""
    adapter = backend_of(model)
    targets = adapter.lora_targets()
    if targets is not None:
        return list(targets)
    try:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults
    except ImportError:
        return []
    return list(defaults.get(adapter.info().family, ()))


def count_trainable(model: nn.Module, task: str = "instruct", method: str = "full", lora_r: int = 8,
                    n_classes: int | None = None, n_last: int | None = None) -> int:
    """How many weights fine-tuning will train, counted on ``model`` without copying it.

    ``task="instruct"``: every weight (``method="full"``) or the LoRA matrices of
    rank ``lora_r`` (``method="lora"``), as :func:`prepare_instruction_finetune` builds them.
    ``task="classify"``: the new class head plus every weight (``n_last=None``) or
    only the last ``n_last`` blocks and the final norm, as :func:`prepare_classifier` trains them.
    """
    adapter = backend_of(model)
    total = adapter.n_params()
    if task == "classify":
        k = n_classes or 2
        head = adapter.d_model * k + k
        if n_last is None:
            return total + head
        blocks = adapter.blocks()
        kept = list(blocks[len(blocks) - n_last:]) if n_last else []
        return (sum(p.numel() for m in kept for p in m.parameters())
                + sum(p.numel() for p in adapter.final_norm().parameters()) + head)
    if method != "lora":
        return total
    targets = lora_target_names(model)
    count = 0
    for name, module in model.named_modules():
        if any(name == tgt or name.endswith("." + tgt) for tgt in targets):
            weight = getattr(module, "weight", None)
            if weight is not None and weight.dim() == 2:
                count += lora_r * (weight.shape[0] + weight.shape[1])
    return count or total // 100


def _check_finetune(model: nn.Module, task: str, method: str, max_length: int) -> int:
    """The model's context length, once the fine-tuning request is known to make sense."""
    if task not in FINETUNE_TASKS:
        raise InvalidInput("train.bad_finetune_task", "The fine-tuning task must be instruct or classify "
                           "(got {value}).", value=repr(task))
    if method not in ("full", "lora"):
        raise InvalidInput("train.bad_method", "The fine-tuning method must be full or lora (got {value}).",
                           value=repr(method))
    _check_whole("max_length", max_length, 1)
    ctx = backend_of(model).context_length
    if max_length > ctx:
        raise InvalidInput("train.rows_above_context", "{n} tokens per example exceed the model's context "
                           "window ({ctx} tokens).", n=max_length, ctx=ctx)
    return ctx


def estimate_finetune(model: nn.Module, task: str, batch_size: int, max_length: int, steps: int, device="auto",
                      grad_accum: int = 1, method: str = "full", lora_r: int = 8, n_last: int | None = None,
                      n_classes: int | None = None) -> dict:
    """:func:`estimate_run` on the base model, corrected for LoRA, frozen blocks and a class head.

    AdamW keeps 12 bytes per *trained* weight (gradient + two moments), so LoRA
    or frozen blocks shrink that part. A backward pass that stops early costs
    less time: LoRA computes no weight gradient (about 4 instead of 6 FLOPs per
    weight and token); frozen blocks cost their forward pass only. A classifier
    has no vocabulary projection, so its logits take almost no memory.
    """
    _check_finetune(model, task, method, max_length)
    est = estimate_run(model, batch_size, max_length, steps, device, "auto", grad_accum)
    n, trainable = est["params"], count_trainable(model, task, method, lora_r, n_classes, n_last)
    parts = dict(est["memory_breakdown"])
    parts["grads_and_adamw"] = 12 * trainable
    info = backend_of(model).info()
    if task == "classify":
        act_bytes = 2 if est["precision"] == "bf16" else 4
        tokens = batch_size * max_length
        parts["activations"] = max(0, parts["activations"] - tokens * (info.vocab_size - (n_classes or 2))
                                   * (act_bytes + 8))
        n_compute = max(n - info.vocab_size * info.d_model, 1)  # the embedding is a lookup, not a matmul
        frac = min(trainable / n_compute, 1.0) if n_last is not None else 1.0
        factor = (n_compute / max(n, 1)) * (2 + 4 * frac) / 6
    else:
        factor = 4 / 6 if method == "lora" else 1.0
    memory = int(sum(parts.values()))
    free = est["available_bytes"]
    fits = free is None or memory <= 0.9 * free
    reason = None if fits else note(
        "train.too_big", "This run needs about {need_gb} GB of memory but only {free_gb} GB are free "
        "on {device}: lower the batch size, the context or the model.",
        need_gb=round(memory / 1e9, 2), free_gb=round(free / 1e9, 2), device=torch.device(est["device"]).type)
    est.update(memory_bytes=memory, memory_breakdown=parts, trainable_params=trainable,
               seconds_estimate=est["seconds_estimate"] * factor, fits=fits, reason=reason)
    return est


# --------------------------------------------------------------- checkpoints
_CLASSIFIER_FILE = "classifier.json"


def save_trained(model: nn.Module, path: str | os.PathLike, extra: dict | None = None,
                 training_state: dict | None = None) -> Path:
    """Save a trained model atomically; the previous checkpoint survives a crash mid-save.

    The folder is built aside and swapped in with ``atomic_dir`` (a kill at any point leaves the old
    or the new folder once a loader has run ``gpt_core.hub.settle``). It holds what
    the model's backend writes (our GPT: config.json + model.safetensors, the
    layout of :func:`gpt_core.model.save_checkpoint`; Hugging Face models:
    ``save_pretrained``), plus classifier.json for a classifier. LoRA adapters
    are merged into a copy first. ``training_state`` (what ``train(..., resume=path)``
    needs, LoRA wrappers unmerged) goes beside the weights as :data:`TRAINING_STATE`.
    """
    from ..hub import atomic_dir

    plain = merge_lora(model)
    with atomic_dir(Path(path)) as tmp:
        backend_of(plain).write_weights(tmp, dict(extra or {}))
        if is_classifier(plain):
            (tmp / _CLASSIFIER_FILE).write_text(json.dumps(
                {"n_classes": plain.gpt_core_n_classes, "labels": plain.gpt_core_labels}, ensure_ascii=False),
                encoding="utf-8")
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE)
    return Path(path)


def load_trained(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Load what :func:`save_trained` wrote for our GPT (language model or classifier)."""
    from ..hub import settle
    from ..model import load_checkpoint

    path = Path(path)
    settle(path)  # a save killed while swapping folders is finished (or undone) first
    if not (path / "config.json").is_file():
        raise InvalidInput("train.no_checkpoint", "The folder '{path}' holds no checkpoint (config.json is missing).",
                           path=path.name)
    if not (path / _CLASSIFIER_FILE).is_file():
        return load_checkpoint(path, map_location)
    from safetensors.torch import load_file

    meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    info = json.loads((path / _CLASSIFIER_FILE).read_text(encoding="utf-8"))
    if "gpt_core" not in meta:
        raise InvalidInput("train.not_a_classifier", "'{path}' is not a gpt_core classifier.", path=path.name)
    base = GPT(GPTConfig.from_dict(meta["config"]))
    model = prepare_classifier(base, int(info["n_classes"]), labels=info.get("labels"))
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=map_location))
    return model.eval()
