"""Evaluation after training: losses, classification reports, generated answers, judges.

* :func:`lm_loss` — mean cross-entropy and perplexity over batches;
* :func:`classification_report` — accuracy, confusion matrix, per-class scores
  and the majority-class baseline a classifier must beat;
* :func:`generate_answers` — greedy answers to Alpaca-style examples, saved as
  JSON with :func:`save_json` (seed 001: expected vs generated);
* :func:`ollama_judge` — optional scores from a local LLM served by Ollama;
* :func:`wandb_logger` — optional Weights & Biases tracking (seed 002).
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from .decoding import context_length_of, greedy
from .errors import GPTCoreError, InvalidInput
from .train import _unwrap, evaluate_batches, last_token_logits, model_logits, _unpack

__all__ = [
    "lm_loss", "classification_report", "generate_answers", "save_json", "ollama_judge",
    "OllamaUnavailable", "wandb_logger", "WandbLogger", "alpaca_prompt",
]


class OllamaUnavailable(GPTCoreError):
    """No Ollama server answers, or it cannot run the requested model."""


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# ---------------------------------------------------------------------- losses
def lm_loss(model: nn.Module, batches: Iterable, max_batches: int = 0) -> tuple[float, float]:
    """Mean next-token cross-entropy (targets -100 ignored) and its perplexity exp(loss)."""
    result = evaluate_batches(model, batches, "lm", device=_device_of(model), max_batches=max_batches)
    if not result["batches"]:
        raise InvalidInput("Aucun batch à évaluer : le jeu de validation est vide.")
    loss = result["loss"]
    return loss, float(torch.exp(torch.tensor(min(loss, 50.0))))


# -------------------------------------------------------------- classification
def classification_report(model: nn.Module, batches: Iterable, labels: Sequence[str]) -> dict:
    """Scores of a classifier (see :func:`gpt_core.train.prepare_classifier`) on labelled batches.

    Returns ``accuracy``, ``confusion_matrix`` (rows: true class, columns:
    predicted class, as lists), ``per_class`` ({label: precision, recall, f1,
    support}), ``majority_baseline`` (accuracy of always answering the most
    frequent true class of these batches), ``majority_label``, ``n`` and
    ``predictions``.
    """
    labels = list(labels)
    k = len(labels)
    if k < 2:
        raise InvalidInput("Il faut au moins deux classes pour un rapport de classification.")
    device = _device_of(model)
    confusion = [[0] * k for _ in range(k)]
    predictions: list[int] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                inputs, targets, lengths, mask = _unpack(batch)
                logits = model_logits(model, inputs.to(device), mask.to(device) if mask is not None else None)
                pred = last_token_logits(logits, lengths, mask).argmax(-1).cpu()
                for t, p in zip(targets.tolist(), pred.tolist()):
                    if not 0 <= t < k or not 0 <= p < k:
                        raise InvalidInput(f"La classe {max(t, p)} n'existe pas : il n'y a que {k} étiquettes.")
                    confusion[t][p] += 1
                    predictions.append(p)
    finally:
        model.train(was_training)
    n = sum(map(sum, confusion))
    if n == 0:
        raise InvalidInput("Aucun exemple à évaluer : le jeu de test est vide.")
    correct = sum(confusion[i][i] for i in range(k))
    per_class = {}
    for i, name in enumerate(labels):
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        precision = confusion[i][i] / predicted if predicted else 0.0
        recall = confusion[i][i] / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    supports = [sum(row) for row in confusion]
    majority = max(range(k), key=lambda i: supports[i])
    return {"accuracy": correct / n, "confusion_matrix": confusion, "per_class": per_class,
            "majority_baseline": supports[majority] / n, "majority_label": labels[majority],
            "labels": labels, "n": n, "predictions": predictions}


# ------------------------------------------------------------------- answers
def alpaca_prompt(example: dict) -> str:
    """The Alpaca prompt of an example (instruction, optional input), ending where the answer starts."""
    try:
        from .data import format_alpaca  # the data pipeline's formatter when it exists
    except ImportError:
        format_alpaca = None
    if format_alpaca is not None:
        return format_alpaca(example)[0]  # (prompt, response)
    text = ("Below is an instruction that describes a task. Write a response that appropriately "
            f"completes the request.\n\n### Instruction:\n{example.get('instruction', '')}")
    if example.get("input"):
        text += f"\n\n### Input:\n{example['input']}"
    return text + "\n\n### Response:\n"


def _greedy_ids(model: nn.Module, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None) -> list[int]:
    """Greedy continuation ids (the prompt excluded); a prompt too long keeps its last tokens."""
    base = _unwrap(model)
    ctx = context_length_of(base)
    room = max(1, min(max_new_tokens, ctx // 2))
    prompt_ids = list(prompt_ids)[-(ctx - room):]
    new = list(greedy(base, prompt_ids, min(max_new_tokens, ctx), eos_id=eos_id, trace=False).new_ids)
    return new[:-1] if new and eos_id is not None and new[-1] == eos_id else new


def generate_answers(model: nn.Module, tokenizer, examples: Sequence[dict], max_new_tokens: int = 128) -> list[dict]:
    """Greedy answers to Alpaca-style examples (``instruction``, ``input``, ``output``).

    Returns ``[{"instruction", "input", "expected", "generated"}, ...]``, the
    JSON that seed 001 compares (and that :func:`ollama_judge` scores).
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidInput(f"Le nombre de tokens à générer doit être un entier ≥ 1 (reçu : {max_new_tokens!r}).")
    eos_id = getattr(tokenizer, "eos_id", None)
    was_training = model.training
    model.eval()
    results = []
    try:
        with torch.no_grad():
            for example in examples:
                if not isinstance(example, dict) or "instruction" not in example:
                    raise InvalidInput("Chaque exemple doit être un dict avec au moins la clé « instruction ».")
                prompt_ids = tokenizer.encode(alpaca_prompt(example))
                new_ids = _greedy_ids(model, prompt_ids, max_new_tokens, eos_id)
                text = tokenizer.decode(new_ids)
                text = text.split("### Instruction:")[0].replace("### Response:", "").strip()
                results.append({"instruction": example["instruction"], "input": example.get("input", ""),
                                "expected": example.get("output", ""), "generated": text})
    finally:
        model.train(was_training)
    return results


def save_json(data, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------- judges
def _judge_prompt(item: dict) -> str:
    task = item.get("instruction", "")
    if item.get("input"):
        task += f"\n{item['input']}"
    return (
        "You grade answers to instructions.\n"
        f"Instruction:\n{task}\n\n"
        f"Reference answer:\n{item.get('expected', '')}\n\n"
        f"Answer to grade:\n{item.get('generated', '')}\n\n"
        "How good is the answer to grade, compared with the reference, on a scale of 0 to 100 "
        "(100 = as good as the reference)? Reply with the number only."
    )


def _parse_score(text: str) -> int | None:
    match = re.search(r"\d+(?:\.\d+)?", text or "")
    if not match:
        return None
    value = float(match.group())
    return int(round(value)) if 0 <= value <= 100 else None


def ollama_judge(items: Sequence[dict], model: str = "llama3", url: str = "http://127.0.0.1:11434",
                 timeout: float = 3.0, request_timeout: float = 120.0) -> dict:
    """Score generated answers 0-100 with a model served by a local Ollama (seed 001).

    Each item needs ``instruction``, ``expected`` and ``generated`` (as
    :func:`generate_answers` returns them). Returns ``{"scores": [int | None],
    "mean": float | None, "model", "url"}``; a score is None when the judge's
    reply holds no number between 0 and 100. Raises :class:`OllamaUnavailable`
    when no server answers at ``url`` within ``timeout`` seconds or the model
    is not installed.
    """
    url = (url or "").rstrip("/")
    if not re.match(r"^https?://[^\s/]+$", url):
        raise InvalidInput(f"« {url} » n'est pas une adresse de serveur Ollama valide (ex. http://127.0.0.1:11434).")
    host = url.split("://", 1)[1]
    try:
        with urllib.request.urlopen(url + "/api/tags", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OllamaUnavailable(
            f"Aucun serveur Ollama ne répond sur {host} : installez Ollama, lancez « ollama serve » "
            f"puis « ollama pull {model} » ({getattr(exc, 'reason', exc)})."
        ) from None
    scores: list[int | None] = []
    for item in items:
        body = json.dumps({"model": model, "prompt": _judge_prompt(item), "stream": False,
                           "options": {"temperature": 0, "seed": 123}}).encode("utf-8")
        request = urllib.request.Request(url + "/api/generate", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=request_timeout) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise OllamaUnavailable(
                    f"Le modèle « {model} » n'est pas installé dans Ollama : lancez « ollama pull {model} »."
                ) from None
            raise OllamaUnavailable(f"Le serveur Ollama sur {host} a répondu par l'erreur HTTP {exc.code}.") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OllamaUnavailable(f"Le serveur Ollama sur {host} ne répond plus ({exc}).") from None
        scores.append(_parse_score(str(reply.get("response", ""))))
    valid = [s for s in scores if s is not None]
    return {"scores": scores, "mean": sum(valid) / len(valid) if valid else None, "model": model, "url": url}


# -------------------------------------------------------------------- wandb
class WandbLogger:
    """Sends training events to a Weights & Biases run."""

    def __init__(self, run):
        self.run = run

    def log(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "step":
            self.run.log({"train/loss": event["train_loss"], "train/lr": event["lr"],
                          "train/tokens_seen": event["tokens_seen"]}, step=event["step"])
        elif kind == "eval":
            data = {"val/loss": event["val_loss"]}
            for key in ("perplexity", "accuracy"):
                if event.get(key) is not None:
                    data[f"val/{key}"] = event[key]
            self.run.log(data, step=event["step"])

    def finish(self) -> None:
        self.run.finish()


def _wandb_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return False


def wandb_logger(project: str, config: dict | None = None) -> tuple[WandbLogger | None, str | None]:
    """``(logger, None)`` when wandb is installed and logged in, else ``(None, reason)``."""
    if not isinstance(project, str) or not project.strip():
        return None, "Indiquez un nom de projet Weights & Biases."
    try:
        import wandb  # optional, never a requirement
    except ImportError:
        return None, "Le paquet wandb n'est pas installé (pip install wandb) : suivi Weights & Biases désactivé."
    if not _wandb_configured():
        return None, "Weights & Biases n'est pas configuré : lancez « wandb login » ou définissez WANDB_API_KEY."
    try:
        run = wandb.init(project=project.strip(), config=config or {}, reinit=True)
    except Exception as exc:  # network, credentials, ...
        return None, f"Weights & Biases n'a pas pu démarrer : {exc}"
    return WandbLogger(run), None
