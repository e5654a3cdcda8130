"""A linear probe: classes read from a frozen language model's mean hidden state.

The cheapest fine-tuning that still teaches. The language model is not changed
at all: each text goes through it once (:func:`pooled_features`: the last
layer's normalised hidden states averaged over the text's tokens, the
beginning-of-sequence token left out), then only a linear layer of
``d_model x classes`` weights learns to read the class from that vector
(:class:`LinearProbe`, trained by :func:`gpt_core.train.train` on feature
batches from :func:`feature_loader`). On a CPU this is seconds of training
after one pass over the data, where training the model's blocks takes minutes.

:class:`ProbeClassifier` puts the frozen body and the probe back together so
the result reads token ids like any classifier of gpt_core
(:func:`gpt_core.evaluate.class_probabilities`). :func:`save_probe` writes the
probe alone (a few kilobytes): the body is the base model, named in the
probe's metadata.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn

from .backend import backend_of
from .errors import InvalidInput

__all__ = ["pooled_features", "LinearProbe", "ProbeClassifier", "feature_loader", "save_probe", "load_probe",
           "PROBE_FILE", "is_probe_checkpoint"]

PROBE_FILE = "probe.json"
_WEIGHTS = "probe.safetensors"


def _rows(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A classification batch -> (inputs cut to the longest row, targets, mask of real tokens)."""
    from .train import _unpack

    inputs, targets, lengths, mask = _unpack(batch)
    if lengths is None:
        lengths = mask.sum(1) if mask is not None else torch.full((inputs.size(0),), inputs.size(1))
    width = int(lengths.max())
    inputs = inputs[:, :width]
    return inputs, targets, torch.arange(width)[None, :] < lengths[:, None]


@torch.no_grad()
def pooled_features(model: nn.Module, batches: Iterable, skip: int = 0, cancel: threading.Event | None = None,
                    on_batch: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, d) float32 on the CPU, targets (N,)) of labelled batches, in eval mode.

    A row's feature is the mean of the last layer's normalised hidden states over its
    real tokens, the first ``skip`` (the model's beginning-of-sequence prefix) left out.
    ``on_batch(rows_done)`` is called after each batch; a set ``cancel`` stops early
    (the rows done so far are returned).
    """
    backend = backend_of(model)
    device = backend.device
    was_training = model.training
    model.eval()
    xs, ys, done = [], [], 0
    try:
        for batch in batches:
            if cancel is not None and cancel.is_set():
                break
            inputs, targets, mask = _rows(batch)
            hidden = backend.hidden(inputs.to(device), mask.long().to(device)).float().cpu()  # (B, T, d)
            keep = mask.clone()
            keep[:, :skip] = keep[:, :skip] & (mask.sum(1, keepdim=True) <= skip)  # a row of BOS alone keeps it
            weights = keep.unsqueeze(-1).float()
            xs.append((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))
            ys.append(targets.long().cpu())
            done += len(targets)
            if on_batch is not None:
                on_batch(done)
    finally:
        model.train(was_training)
    if not xs:
        return torch.zeros(0, backend.d_model), torch.zeros(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys)


class LinearProbe(nn.Module):
    """Standardised features (B, d) -> class logits (B, 1, classes): one "position", read as the last.

    ``mean`` and ``std`` (from the training features) put every feature on the same
    scale, so one learning rate suits every model.
    """

    def __init__(self, d_model: int, n_classes: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        if n_classes < 2:
            raise InvalidInput("probe.too_few_classes", "A classifier needs at least two classes.")
        self.register_buffer("mean", torch.zeros(d_model) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(d_model) if std is None else std.float().clamp(min=1e-5).clone())
        self.linear = nn.Linear(d_model, n_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    @classmethod
    def for_features(cls, features: torch.Tensor, n_classes: int, seed: int = 0) -> "LinearProbe":
        """A probe standardised on ``features`` (N, d), N >= 1."""
        if features.dim() != 2 or features.size(0) == 0:
            raise InvalidInput("probe.no_features", "No training example reached the probe.")
        std = features.std(0) if features.size(0) > 1 else torch.ones(features.size(1))
        return cls(features.size(1), n_classes, features.mean(0), std, seed)

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = (features.float() - self.mean) / self.std
        return self.linear(x).unsqueeze(1)  # (B, 1, C)


class ProbeClassifier(nn.Module):
    """The frozen body (shared, never trained) followed by a :class:`LinearProbe`: token ids -> (B, 1, classes)."""

    def __init__(self, body: nn.Module, probe: LinearProbe, skip: int = 0, labels: list[str] | None = None):
        super().__init__()
        self.body, self.probe, self.skip = body, probe, skip
        self.gpt_core_n_classes = probe.linear.out_features
        self.gpt_core_labels = list(labels) if labels is not None else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.long().sum(1).cpu()
        batch = {"inputs": input_ids.cpu(), "targets": torch.zeros(len(input_ids), dtype=torch.long),
                 "lengths": lengths}
        features, _ = pooled_features(self.body, [batch], self.skip)
        return self.probe(features.to(self.probe.mean.device))


def feature_loader(features: torch.Tensor, targets: torch.Tensor, batch_size: int, shuffle: bool,
                   seed: int = 0) -> torch.utils.data.DataLoader:
    """Batches (features, targets) for :func:`gpt_core.train.train` (task ``classify``)."""
    if len(features) == 0:
        raise InvalidInput("probe.no_features", "No training example reached the probe.")
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, targets), batch_size=batch_size,
                                       shuffle=shuffle, generator=generator)


def save_probe(probe: LinearProbe, path: str | os.PathLike, meta: dict) -> Path:
    """The probe's weights and ``meta`` (labels, base model, skip, ...) in a new folder, written atomically
    (``atomic_dir``: after a kill at any point, :func:`load_probe` finds the old probe or the new one)."""
    from safetensors.torch import save_file

    from .hub import atomic_dir

    path = Path(path)
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(tmp / _WEIGHTS))
        (tmp / PROBE_FILE).write_text(json.dumps({**meta, "d_model": probe.linear.in_features,
                                                  "n_classes": probe.linear.out_features},
                                                 ensure_ascii=False, default=str), encoding="utf-8")
    return path


def is_probe_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / PROBE_FILE).is_file()


def load_probe(path: str | os.PathLike, body: nn.Module) -> ProbeClassifier:
    """A :class:`ProbeClassifier` from :func:`save_probe`'s folder on top of ``body`` (its base model)."""
    from safetensors.torch import load_file

    from .hub import settle

    path = Path(path)
    settle(path)  # a save killed while swapping folders is finished (or undone) first
    if not is_probe_checkpoint(path):
        raise InvalidInput("probe.no_checkpoint", "The folder '{path}' holds no probe.", path=path.name)
    meta = json.loads((path / PROBE_FILE).read_text(encoding="utf-8"))
    if int(meta["d_model"]) != backend_of(body).d_model:
        raise InvalidInput("probe.wrong_body", "This probe reads vectors of {want} values but the model gives "
                           "{got}: load it on the model it was trained on ({base}).", want=meta["d_model"],
                           got=backend_of(body).d_model, base=meta.get("base", "?"))
    probe = LinearProbe(int(meta["d_model"]), int(meta["n_classes"]))
    probe.load_state_dict(load_file(str(path / _WEIGHTS)))
    return ProbeClassifier(body, probe.eval(), int(meta.get("skip", 0)), meta.get("labels"))
