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

from .config import GPTConfig
from .errors import InvalidInput
from .model import GPT

__all__ = [
    "IGNORE_INDEX", "TASKS", "TrainConfig", "pick_device", "autocast_dtype", "train",
    "batch_loss", "model_logits", "last_token_logits", "prepare_pretraining",
    "prepare_instruction_finetune", "merge_lora", "prepare_classifier", "is_classifier",
    "estimate_run", "check_fits", "available_memory", "save_trained", "load_trained",
    "steps_for_epochs", "GPT_LORA_TARGETS", "make_sample_fn", "evaluate_batches",
]

IGNORE_INDEX = -100
TASKS = ("lm", "instruct", "classify")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
GPT_LORA_TARGETS = ("att.qkv", "att.out_proj", "ff.fc_in", "ff.fc_out")


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
        raise InvalidInput(
            f"« {preference} » n'est pas un périphérique valide : choisissez auto, cpu, cuda ou mps."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("Aucun GPU CUDA n'est disponible sur cette machine : choisissez cpu ou auto.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInput("Le périphérique mps (Apple) n'est pas disponible ici : choisissez cpu ou auto.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInput(f"Le périphérique « {preference} » n'est pas pris en charge : choisissez cpu, cuda ou mps.")
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
            raise InvalidInput(
                f"La précision bf16 n'est pas disponible sur {device.type} : choisissez fp32 ou auto."
            )
        return dtype
    return autocast_dtype(device)


# -------------------------------------------------------------------- config
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
            raise InvalidInput(
                f"Le taux d'apprentissage doit être un nombre fini, strictement positif et au plus 1 "
                f"(reçu : {lr!r}) ; une valeur courante est 3e-4."
            )
        for name, label, minimum in (
            ("batch_size", "La taille de batch", 1),
            ("steps", "Le nombre d'étapes", 1),
            ("grad_accum", "L'accumulation de gradient", 1),
            ("warmup", "Le nombre d'étapes de warm-up", 0),
            ("eval_every", "La fréquence d'évaluation", 0),
            ("eval_batches", "Le nombre de batchs de validation", 0),
            ("sample_every", "La fréquence des exemples générés", 0),
            ("checkpoint_every", "La fréquence des checkpoints", 0),
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise InvalidInput(f"{label} doit être un entier ≥ {minimum} (reçu : {value!r}).")
        if self.warmup >= self.steps and self.warmup > 0:
            raise InvalidInput(
                f"Le warm-up ({self.warmup} étapes) doit être plus court que l'entraînement ({self.steps} étapes)."
            )
        if self.schedule not in SCHEDULES:
            raise InvalidInput(f"Le planning du taux d'apprentissage doit être cosine ou constant (reçu : {self.schedule!r}).")
        if not _is_number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise InvalidInput(f"min_lr_ratio doit être compris entre 0 et 1 (reçu : {self.min_lr_ratio!r}).")
        if not _is_number(self.weight_decay) or not math.isfinite(self.weight_decay) or not 0 <= self.weight_decay < 1:
            raise InvalidInput(f"Le weight decay doit être compris entre 0 et 1 (reçu : {self.weight_decay!r}).")
        if self.max_grad_norm is not None and (
            not _is_number(self.max_grad_norm) or not math.isfinite(self.max_grad_norm) or self.max_grad_norm <= 0
        ):
            raise InvalidInput(
                f"La norme maximale du gradient doit être un nombre > 0, ou vide pour ne pas écrêter (reçu : {self.max_grad_norm!r})."
            )
        if self.diverge_ratio is not None and (
            not _is_number(self.diverge_ratio) or not math.isfinite(self.diverge_ratio) or self.diverge_ratio <= 1
        ):
            raise InvalidInput(f"diverge_ratio doit être un nombre > 1 ou None (reçu : {self.diverge_ratio!r}).")
        if not _is_int(self.seed):
            raise InvalidInput(f"La graine doit être un entier (reçu : {self.seed!r}).")
        if self.precision not in PRECISIONS:
            raise InvalidInput(f"La précision doit être auto, fp32 ou bf16 (reçu : {self.precision!r}).")
        if not isinstance(self.device, str) or not self.device.strip():
            raise InvalidInput(f"Le périphérique doit être auto, cpu, cuda ou mps (reçu : {self.device!r}).")

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
    if not _is_int(epochs) or epochs < 1:
        raise InvalidInput(f"Le nombre d'époques doit être un entier ≥ 1 (reçu : {epochs!r}).")
    if not _is_int(batches_per_epoch) or batches_per_epoch < 1:
        raise InvalidInput("Le jeu d'entraînement ne contient aucun batch : ajoutez des données ou réduisez la taille de batch.")
    return max(1, (batches_per_epoch * epochs) // grad_accum)


# ---------------------------------------------------------------------- loss
def model_logits(model: nn.Module, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, T, V) of our GPT, a Hugging Face model or a peft wrapper of either."""
    if attention_mask is not None and not isinstance(_unwrap(model), GPT):
        out = model(input_ids=inputs, attention_mask=attention_mask)
    else:
        out = model(inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


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
        raise InvalidInput("Un batch doit être un couple (entrées, cibles) ou un dict avec les clés inputs et targets.")
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise InvalidInput("Les entrées et les cibles d'un batch doivent être des tenseurs PyTorch.")
    if inputs.dim() != 2:
        raise InvalidInput(f"Les entrées d'un batch doivent avoir la forme (batch, tokens), reçu {tuple(inputs.shape)}.")
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
        return loss, inputs.numel(), {"correct": correct, "rows": int(targets.numel())}
    logits = model_logits(model, inputs, mask)  # (B, T, V)
    flat_targets = targets.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat_targets,
                            ignore_index=IGNORE_INDEX, reduction="sum")
    counted = (flat_targets != IGNORE_INDEX).sum()
    return total / counted.clamp(min=1), inputs.numel(), {"counted": counted}


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under a peft wrapper (or the model itself)."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


# --------------------------------------------------------------------- loop
def _optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise InvalidInput("Ce modèle n'a aucun paramètre entraînable : dégelez au moins une couche.")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
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
                raise InvalidInput(f"Le jeu {label} ne contient aucun batch : ajoutez des données ou réduisez la taille de batch.")
            return
        if iterator is batches:  # a one-shot iterator cannot start a second epoch
            return
        epoch += 1


def _new_history() -> dict:
    return {"step": [], "train_loss": [], "lr": [], "tokens_seen": [], "elapsed": [],
            "eval_step": [], "val_loss": [], "val_accuracy": [], "samples": []}


def evaluate_batches(model: nn.Module, batches: Iterable, task: str = "lm", loss_fn: Callable | None = None,
                     device: torch.device | None = None, amp: torch.dtype | None = None,
                     max_batches: int = 0, cancel: threading.Event | None = None) -> dict:
    """Mean loss over (at most ``max_batches``) batches, in eval mode, without gradients.

    Returns ``{"loss", "batches", "accuracy" (classify only)}``; ``loss`` is NaN when
    there was no batch. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    losses, weights, correct, rows = [], [], 0, 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches and i >= max_batches:
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
    result = {"loss": sum(losses) / sum(weights) if weights else float("nan"), "batches": len(losses)}
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
) -> Iterator[dict]:
    """Train ``model`` in place and yield events (see the module docstring).

    Arguments are checked now (a bad one raises :class:`InvalidInput` at the
    call, not at the first ``next``). ``loss_fn(model, inputs, targets)``
    replaces the built-in loss; ``sample_fn(model) -> str`` is called every
    ``cfg.sample_every`` steps in eval mode without gradients; setting
    ``cancel`` stops the loop before the next step with a "cancelled" event.
    """
    if not isinstance(cfg, TrainConfig):
        raise InvalidInput("cfg doit être un TrainConfig.")
    if task not in TASKS:
        raise InvalidInput(f"La tâche doit être lm, instruct ou classify (reçu : {task!r}).")
    if not isinstance(model, nn.Module):
        raise InvalidInput("Le modèle à entraîner doit être un module PyTorch.")
    if train_batches is None:
        raise InvalidInput("Il faut un jeu d'entraînement.")
    device = pick_device(cfg.device)
    amp = _resolve_precision(cfg.precision, device)
    return _train_loop(model, train_batches, val_batches, cfg, task, loss_fn, sample_fn, cancel, device, amp)


def _train_loop(model, train_batches, val_batches, cfg, task, loss_fn, sample_fn, cancel, device, amp):
    torch.manual_seed(cfg.seed)
    model.to(device)
    model.train()
    optimizer = _optimizer(model, cfg, device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    history = _new_history()
    start = time.perf_counter()
    tokens_seen, step, first_loss, checkpoint = 0, 0, None, None
    recent: list[float] = []

    def elapsed() -> float:
        return time.perf_counter() - start

    def final(kind: str, message: str, **extra) -> dict:
        return {"type": kind, "step": step, "history": copy.deepcopy(history), "message": message,
                "checkpoint": checkpoint, "elapsed": elapsed(), **extra}

    def run_eval() -> dict | None:
        if val_batches is None:
            return None
        res = evaluate_batches(model, val_batches, task, loss_fn, device, amp, cfg.eval_batches, cancel)
        if not res["batches"]:
            return None
        event = {"type": "eval", "step": step, "val_loss": res["loss"],
                 "train_loss": sum(recent) / len(recent) if recent else None, "elapsed": elapsed()}
        history["eval_step"].append(step)
        history["val_loss"].append(res["loss"])
        if task == "classify":
            event["accuracy"] = res["accuracy"]
            history["val_accuracy"].append(res["accuracy"])
        else:
            event["perplexity"] = math.exp(min(res["loss"], 50.0))
        return event

    if cfg.eval_at_start:
        event = run_eval()
        if event is not None:
            yield event
    stream = _batch_stream(train_batches, "d'entraînement")
    epoch = 0
    while step < cfg.steps:
        if cancel is not None and cancel.is_set():
            yield final("cancelled", f"Entraînement annulé à l'étape {step} sur {cfg.steps}.")
            return
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        exhausted = False
        for _ in range(cfg.grad_accum):
            try:
                epoch, batch = next(stream)
            except StopIteration:
                exhausted = True
                break
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss, n_tokens, _ = batch_loss(model, batch, task, loss_fn, device)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach().float()
            tokens_seen += n_tokens
        if exhausted:
            optimizer.zero_grad(set_to_none=True)
            yield final("done", f"Les données d'entraînement sont épuisées après {step} étapes "
                                f"(itérateur à usage unique) : entraînement arrêté.")
            return
        loss_value = float(loss_sum.item()) / cfg.grad_accum
        if first_loss is None and math.isfinite(loss_value):
            first_loss = loss_value
        limit = None if cfg.diverge_ratio is None or first_loss is None else cfg.diverge_ratio * first_loss + 1.0
        if not math.isfinite(loss_value) or (limit is not None and loss_value > limit):
            optimizer.zero_grad(set_to_none=True)
            shown = f"{loss_value:.4g}" if math.isfinite(loss_value) else str(loss_value)
            yield final("diverged",
                        f"L'entraînement a divergé à l'étape {step + 1} : la perte vaut {shown}"
                        + (f" (départ : {first_loss:.3g})" if first_loss is not None else "")
                        + ". Essayez un taux d'apprentissage plus petit (par exemple 3e-4) "
                          "ou un écrêtage du gradient plus strict (max_grad_norm plus petit).",
                        loss=loss_value)
            return
        if cfg.max_grad_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                yield final("diverged",
                            f"L'entraînement a divergé à l'étape {step + 1} : la norme du gradient n'est pas finie. "
                            "Essayez un taux d'apprentissage plus petit ou la précision fp32.",
                            loss=loss_value)
                return
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        recent.append(loss_value)
        del recent[:-20]
        now = elapsed()
        for key, value in (("step", step), ("train_loss", loss_value), ("lr", lr),
                           ("tokens_seen", tokens_seen), ("elapsed", now)):
            history[key].append(value)
        yield {"type": "step", "step": step, "train_loss": loss_value, "lr": lr,
               "tokens_seen": tokens_seen, "elapsed": now, "epoch": epoch}
        last = step == cfg.steps
        if (cfg.eval_every and step % cfg.eval_every == 0) or last:
            event = run_eval()
            if event is not None:
                yield event
        if sample_fn is not None and ((cfg.sample_every and step % cfg.sample_every == 0) or (last and cfg.sample_every)):
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    text = sample_fn(model)
            finally:
                model.train(was_training)
            history["samples"].append({"step": step, "text": text})
            yield {"type": "sample", "step": step, "text": text}
        if cfg.checkpoint_dir and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last):
            checkpoint = str(save_trained(model, cfg.checkpoint_dir, {"step": step, "task": task,
                                                                      "train_config": cfg.to_dict()}))
            yield {"type": "checkpoint", "step": step, "path": checkpoint}
    model.eval()
    val = history["val_loss"][-1] if history["val_loss"] else None
    message = f"Entraînement terminé : {step} étapes, perte d'entraînement {history['train_loss'][-1]:.3f}"
    message += f", perte de validation {val:.3f}." if val is not None else "."
    yield final("done", message)


def make_sample_fn(tokenizer, prompt: str, max_new_tokens: int = 30) -> Callable[[nn.Module], str]:
    """A ``sample_fn`` for :func:`train`: the greedy continuation of ``prompt`` (prompt included)."""
    if not isinstance(prompt, str) or not prompt:
        raise InvalidInput("Le début de texte des exemples générés est vide.")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise InvalidInput(f"Le nombre de tokens à générer doit être un entier ≥ 1 (reçu : {max_new_tokens!r}).")
    prompt_ids = list(tokenizer.encode(prompt))

    def sample(model: nn.Module) -> str:
        from .decoding import greedy

        base = _unwrap(model)
        limit = base.cfg.context_length if isinstance(base, GPT) else 1024
        ids = prompt_ids[-max(1, limit - max_new_tokens):]
        result = greedy(base, ids, min(max_new_tokens, limit - 1), trace=False)
        return tokenizer.decode(ids + list(result.new_ids))

    return sample


# ---------------------------------------------------------------- task setup
def prepare_pretraining(cfg: GPTConfig, seed: int = 0) -> GPT:
    """A freshly initialised GPT (random weights drawn under ``seed``)."""
    if not isinstance(cfg, GPTConfig):
        raise InvalidInput("La configuration du modèle doit être un GPTConfig.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(cfg)
    return model


def _trainable_copy(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidInput("Le modèle à adapter doit être un module PyTorch.")
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
        raise InvalidInput(f"Le rang LoRA doit être un entier ≥ 1 (reçu : {lora_r!r}).")
    if not _is_number(lora_dropout) or not 0 <= lora_dropout < 1:
        raise InvalidInput(f"Le dropout LoRA doit être compris entre 0 et 1 (reçu : {lora_dropout!r}).")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise InvalidInput("LoRA demande le paquet peft : installez-le avec « pip install peft ».") from None
    if target_modules is None and isinstance(twin, GPT):
        target_modules = list(GPT_LORA_TARGETS)
    # Hugging Face GPT-2 stores its linear layers as Conv1D (weights transposed)
    conv1d = any(type(m).__name__ == "Conv1D" for m in twin.modules())
    config = LoraConfig(r=lora_r, lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_r,
                        lora_dropout=lora_dropout, fan_in_fan_out=conv1d,
                        target_modules=list(target_modules) if target_modules is not None else None)
    try:
        return get_peft_model(twin, config)
    except ValueError as exc:
        raise InvalidInput(f"LoRA ne trouve pas de couches à adapter dans ce modèle ({exc}).") from None


def merge_lora(model: nn.Module) -> nn.Module:
    """A plain model with the LoRA matrices folded into its weights (for export).

    The model passed in keeps its adapters; a model without LoRA is returned as is.
    """
    if not hasattr(model, "merge_and_unload"):
        return model
    return copy.deepcopy(model).merge_and_unload()


def is_classifier(model: nn.Module) -> bool:
    return getattr(_unwrap(model), "gpt_core_n_classes", None) is not None


def prepare_classifier(model: nn.Module, n_classes: int, freeze_until_last: int | None = None,
                       labels: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose output head predicts ``n_classes`` classes.

    The vocabulary head is replaced by ``nn.Linear(d_model, n_classes)``; the
    class is read at the last real token of each row (:func:`last_token_logits`).
    ``freeze_until_last=N`` trains only the last N blocks, the final norm and the
    head (0: only the norm and the head); None trains everything.
    """
    if not _is_int(n_classes) or n_classes < 2:
        raise InvalidInput(f"Un classifieur a besoin d'au moins 2 classes (reçu : {n_classes!r}).")
    if labels is not None and len(labels) != n_classes:
        raise InvalidInput(f"{len(labels)} noms de classes pour {n_classes} classes : les nombres doivent être égaux.")
    twin = _trainable_copy(model)
    if isinstance(twin, GPT):
        blocks, final_norm, d_model = twin.blocks, twin.final_norm, twin.cfg.d_model
    else:
        from .trace import _hf_blocks, _hf_final_norm, _hf_config

        hf_cfg = _hf_config(twin)
        d_model = getattr(hf_cfg, "hidden_size", None) or getattr(hf_cfg, "n_embd", None)
        if d_model is None or not hasattr(twin, "set_output_embeddings"):
            raise InvalidInput(f"Ce modèle ({type(twin).__name__}) ne peut pas recevoir de tête de classification.")
        try:
            blocks, final_norm = _hf_blocks(twin), _hf_final_norm(twin)
        except ValueError:
            blocks = final_norm = None
    n_layers = len(blocks) if blocks is not None else 0
    if freeze_until_last is not None and (not _is_int(freeze_until_last) or not 0 <= freeze_until_last <= n_layers):
        raise InvalidInput(
            f"Le nombre de blocs à entraîner doit être compris entre 0 et {n_layers} (reçu : {freeze_until_last!r})."
        )
    ref = next(twin.parameters())
    head = nn.Linear(d_model, n_classes).to(device=ref.device, dtype=ref.dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        nn.init.normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    if isinstance(twin, GPT):
        twin.out_head = head  # unties the vocabulary head from the token embedding
    else:
        twin.config.tie_word_embeddings = False
        text_cfg = _hf_config(twin)
        text_cfg.tie_word_embeddings = False
        twin.set_output_embeddings(head)
    if freeze_until_last is not None:
        for p in twin.parameters():
            p.requires_grad_(False)
        keep = [head] + ([final_norm] if final_norm is not None else [])
        if freeze_until_last:
            keep += list(blocks[len(blocks) - freeze_until_last:])
        for module in keep:
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
        from .trace import describe

        unique = {id(p): p for p in model_or_cfg.parameters()}
        n = sum(p.numel() for p in unique.values())
        trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
        try:
            info = describe(_unwrap(model_or_cfg))
            n_layers, d_model, heads, vocab = info.n_layers, info.d_model, info.n_heads, info.vocab_size
        except Exception:
            n_layers, d_model, heads, vocab = 1, 1, 1, 1
        if is_classifier(model_or_cfg):
            vocab = _unwrap(model_or_cfg).gpt_core_n_classes
        return n, trainable, n_layers, d_model, heads, vocab
    raise InvalidInput("estimate_run attend un GPTConfig ou un modèle PyTorch.")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} Go"


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
    for name, value in (("La taille de batch", batch_size), ("Le contexte", context),
                        ("Le nombre d'étapes", steps), ("L'accumulation de gradient", grad_accum)):
        if not _is_int(value) or value < 1:
            raise InvalidInput(f"{name} doit être un entier ≥ 1 (reçu : {value!r}).")
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
        reason = (f"Cet entraînement demande environ {_gb(memory)} de mémoire mais seulement {_gb(free)} sont libres "
                  f"sur {dev.type} : réduisez la taille de batch, le contexte ou le modèle.")
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
        raise InvalidInput(estimate["reason"])
    return estimate


# --------------------------------------------------------------- checkpoints
_CLASSIFIER_FILE = "classifier.json"


def save_trained(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save a trained model atomically; the previous checkpoint survives a crash mid-save.

    * our GPT (language model): :func:`gpt_core.model.save_checkpoint`;
    * our GPT classifier: a directory with config.json, model.safetensors
      (head included) and classifier.json, swapped in with ``atomic_dir``;
    * Hugging Face models: ``save_pretrained(safe_serialization=True)`` in a
      temporary directory renamed into place.
    LoRA adapters are merged into a copy first.
    """
    from .hub import atomic_dir
    from .model import save_checkpoint

    path = Path(path)
    plain = merge_lora(model)
    extra = dict(extra or {})
    if isinstance(plain, GPT) and not is_classifier(plain):
        return save_checkpoint(plain, path, extra)
    if isinstance(plain, GPT):
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in plain.state_dict().items()}
        with atomic_dir(path) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
            meta = {"gpt_core": 1, "config": plain.cfg.to_dict(), **extra}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            (tmp / _CLASSIFIER_FILE).write_text(json.dumps(
                {"n_classes": plain.gpt_core_n_classes, "labels": plain.gpt_core_labels}, ensure_ascii=False),
                encoding="utf-8")
        return path
    if not hasattr(plain, "save_pretrained"):
        raise InvalidInput(f"Je ne sais pas enregistrer un modèle de type {type(plain).__name__}.")
    with atomic_dir(path) as tmp:
        plain.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "gpt_core_train.json").write_text(json.dumps(extra, indent=2, default=str), encoding="utf-8")
        if is_classifier(plain):
            (tmp / _CLASSIFIER_FILE).write_text(json.dumps(
                {"n_classes": plain.gpt_core_n_classes, "labels": plain.gpt_core_labels}, ensure_ascii=False),
                encoding="utf-8")
    return path


def load_trained(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Load what :func:`save_trained` wrote for our GPT (language model or classifier)."""
    from .model import load_checkpoint

    path = Path(path)
    if not (path / "config.json").is_file():
        raise InvalidInput(f"Le dossier « {path} » ne contient pas de checkpoint (config.json manquant).")
    if not (path / _CLASSIFIER_FILE).is_file():
        return load_checkpoint(path, map_location)
    from safetensors.torch import load_file

    meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    info = json.loads((path / _CLASSIFIER_FILE).read_text(encoding="utf-8"))
    if "gpt_core" not in meta:
        raise InvalidInput(f"« {path} » n'est pas un classifieur gpt_core.")
    base = GPT(GPTConfig.from_dict(meta["config"]))
    model = prepare_classifier(base, int(info["n_classes"]), labels=info.get("labels"))
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=map_location))
    return model.eval()
