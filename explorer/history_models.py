"""A recorded run's checkpoint turned back into a model: what "Load as a model" on the History page does.

:func:`load_checkpoint_model` gives a :class:`gpt_core.registry.LoadedModel` that the model store can
register, so every page's sidebar offers it: our GPT checkpoints load with
:func:`gpt_core.train.load_trained`, Hugging Face saves (``save_pretrained``) with transformers
(local safetensors only, no remote code). The tokenizer is rebuilt from the record's ``config["tokenizer"]``
(:func:`rebuild_tokenizer`). No Streamlit here; refusals are Message codes ``history.*``.
"""
from __future__ import annotations

import copy
import json
import time
import weakref
from pathlib import Path

from gpt_core.errors import InvalidInput, note

from explorer.history import RunRecord, RunStore, is_complete

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SAVED_TOKENIZER = "tokenizer"   # a tokenizer trained here, saved inside the checkpoint folder
# a model key of the registry -> the gpt_core tokenizer it uses
MODEL_TOKENIZERS = {"smollm2-embedded": "smollm2", "gemma3-embedded": "gemma3", "tiny-random": "gpt2",
                    "gpt2": "gpt2", "distilgpt2": "gpt2", "gpt2-medium": "gpt2"}
LANGUAGE_BPES = {"bpe-fr": "fr", "bpe-en": "en"}   # trained once per process on the built-in corpora (same ids)
CLASSIFIER_FILE = "classifier.json"   # gpt_core.train.save_trained's note beside a classifier's weights
_ORIGINS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> run_id of its checkpoint


def checkpoint_origin(model) -> str | None:
    """The run whose checkpoint ``model`` was loaded from by :func:`load_checkpoint_model` (None: another model).

    A worker process (:mod:`explorer.worker`) loads the same model again from that checkpoint."""
    try:
        return _ORIGINS.get(model)
    except TypeError:  # not weak-referenceable: not one of ours
        return None


def _saved_tokenizer(folder: Path | None) -> Path | None:
    for place in ((folder / SAVED_TOKENIZER, folder) if folder is not None else ()):
        if any((place / f).is_file() for f in TOKENIZER_FILES):
            return place
    return None


def rebuild_tokenizer(rec: RunRecord, folder: Path | None = None):
    """The run's tokenizer. ``config["tokenizer"]`` names it: "bpe-fr"/"bpe-en" (retrained, same ids), a
    gpt_core tokenizer ("gpt2", "gemma3", ...), a registry model key ("gemma3-embedded"), a hub id. A
    tokenizer saved in the checkpoint folder (``tokenizer/``) comes before any other name; with neither,
    the base model's, else GPT-2's."""
    from gpt_core import tokenlab
    from gpt_core.tokenizers import load_tokenizer

    name = str(rec.config.get("tokenizer") or "").strip()
    if name in LANGUAGE_BPES:
        return tokenlab.language_bpe(LANGUAGE_BPES[name]).tokenizer
    saved = _saved_tokenizer(folder)
    name = str(saved) if saved is not None else name or rec.base_model or "gpt2"
    return load_tokenizer(MODEL_TOKENIZERS.get(name, name))


def _hf_causal(folder: Path, device: str):
    """A Hugging Face save (``save_pretrained``) as a causal LM: safetensors, local files, no remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if meta.get("auto_map") or meta.get("is_encoder_decoder"):
        raise InvalidInput("history.not_causal", "The checkpoint '{folder}' is not a causal language model this "
                           "app can run.", folder=folder.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32,
                                                     local_files_only=True, use_safetensors=True).eval()
    except Exception as exc:
        raise InvalidInput("history.unloadable", "The checkpoint '{folder}' could not be loaded ({kind}).",
                           folder=folder.name, kind=type(exc).__name__) from exc
    if meta.get("model_type") == "gpt2":  # GPT-2 weights run in gpt_core's GPT, as the registry does
        from gpt_core.model import GPT

        model = GPT.from_hf(model).eval()
    return model.to(device)


def _folder(store: RunStore, rec: RunRecord) -> Path:
    folder = store.checkpoint_path(rec)
    if folder is None or not is_complete(folder):
        raise InvalidInput("history.checkpoint_gone", "The checkpoint of the run '{name}' is no longer on the "
                           "server.", name=rec.name or rec.run_id)
    return folder


def _gpt_core_checkpoint(folder: Path) -> bool:
    config = folder / "config.json"
    return config.is_file() and "gpt_core" in json.loads(config.read_text(encoding="utf-8"))


def _base_model(rec: RunRecord, device: str, base=None):
    """A fresh copy of the model a LoRA run started from (its adapter is merged into it): a copy of ``base``
    when the caller holds that model already, else loaded again."""
    from gpt_core.registry import load_model

    if base is not None:
        return copy.deepcopy(base)
    if not rec.base_model:
        raise InvalidInput("history.no_base", "The run '{name}' kept only its LoRA adapter and does not say which "
                           "model it was trained from.", name=rec.name or rec.run_id)
    return load_model(rec.base_model, device=device).model


def load_checkpoint_model(rec: RunRecord, device: str = "cpu", store: RunStore | None = None, base=None):
    """The run's language model as a :class:`gpt_core.registry.LoadedModel` (to register in the model store).

    ``base``: the model the run started from, when the caller holds it (a LoRA adapter is merged into a copy
    of it rather than into a fresh load). Refused with a code: a classifier (history.not_a_language_model),
    a deleted checkpoint (history.checkpoint_gone), weights transformers cannot read (history.unloadable)."""
    from gpt_core.registry import LoadedModel, ModelSource
    from gpt_core.backend import own_gpt
    from gpt_core.train import ADAPTER_FILE, load_lora_adapter, load_trained

    if not rec.language_model:
        raise InvalidInput("history.not_a_language_model", "The run '{name}' trained a classifier: it cannot be "
                           "loaded as a language model.", name=rec.name or rec.run_id)
    start = time.perf_counter()
    folder = _folder(store or RunStore(), rec)
    if (folder / ADAPTER_FILE).is_file():  # a LoRA run kept its adapter only: merged into a fresh base
        model = load_lora_adapter(_base_model(rec, device, base), folder)
        gpt = own_gpt(model) is not None
    else:
        gpt = _gpt_core_checkpoint(folder)
        model = load_trained(folder, map_location=device).eval() if gpt else _hf_causal(folder, device)
    tokenizer = rebuild_tokenizer(rec, folder)
    label = note("history.source", "Run '{name}' trained on this server, reloaded from its checkpoint",
                 name=rec.name or rec.run_id)
    source = ModelSource(rec.name or rec.run_id, str(label), "local", "gpt" if gpt else "hf-causal", True, label)
    params = list({id(p): p for p in model.parameters()}.values())
    _ORIGINS[model] = rec.run_id
    return LoadedModel(model, tokenizer, source, time.perf_counter() - start,
                       sum(p.numel() * p.element_size() for p in params), None, sum(p.numel() for p in params))


def load_classifier(rec: RunRecord, device: str = "cpu", store: RunStore | None = None, body=None):
    """A classification run's model: a probe on its base model (``body``, else a fresh load of the base),
    our GPT with its head (gpt_core.train.load_trained), or a Hugging Face model with its head on a copy
    of ``body`` (the model it was trained from)."""
    from gpt_core.probe import is_probe_checkpoint, load_probe
    from gpt_core.train import load_trained

    folder = _folder(store or RunStore(), rec)
    if is_probe_checkpoint(folder):
        return load_probe(folder, body if body is not None else _base_model(rec, device))
    if not _gpt_core_checkpoint(folder):
        if body is not None and (folder / CLASSIFIER_FILE).is_file():
            return _hf_classifier(rec, folder, body, device)
        raise InvalidInput("history.classifier_unloadable", "The classifier of the run '{name}' can only be "
                           "reloaded with its training code.", name=rec.name or rec.run_id)
    return load_trained(folder, map_location=device)


def _hf_classifier(rec: RunRecord, folder: Path, body, device: str):
    """A Hugging Face classifier saved by save_trained: its head put on a copy of ``body``, then its weights."""
    from safetensors.torch import load_file

    from gpt_core.train import prepare_classifier

    info = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
    model = prepare_classifier(body, int(info["n_classes"]), labels=info.get("labels"))
    state = {}
    for part in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(part), device=str(device)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = {name for name, _ in model.named_parameters()}
    if unexpected or any(name in params for name in missing):
        raise InvalidInput("history.classifier_unloadable", "The classifier of the run '{name}' can only be "
                           "reloaded with its training code.", name=rec.name or rec.run_id)
    return model.eval()
