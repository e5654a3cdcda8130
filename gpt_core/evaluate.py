"""Evaluation after training: losses, classification reports, generated answers, judges.

* :func:`lm_loss` — mean cross-entropy and perplexity over batches;
* :func:`classification_report` — accuracy, confusion matrix, per-class scores
  and the majority-class baseline a classifier must beat;
* :func:`generate_answers` — greedy answers to Alpaca-style examples, saved as
  JSON with :func:`save_json` (expected vs generated, side by side);
* :func:`continue_text`, :func:`next_token_probs`, :func:`top_token_union`,
  :func:`class_probabilities` — what one prompt gives, to compare a model
  before and after training;
* :func:`ollama_judge` — optional scores from a local LLM served by Ollama;
* :func:`wandb_logger` — optional Weights & Biases tracking.
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

from .backend import backend_of
from .data import format_alpaca
from .errors import GPTCoreError, InvalidInput, Message, note
from .tokenizers import model_ids
from .train import continuation_ids, evaluate_batches, last_token_logits, model_logits, _unpack

__all__ = [
    "lm_loss", "classification_report", "generate_answers", "save_json", "ollama_judge",
    "OllamaUnavailable", "wandb_logger", "WandbLogger", "alpaca_prompt", "evaluating", "continue_text",
    "next_token_probs", "top_token_union", "class_probabilities", "cloze_hits",
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
        raise InvalidInput("evaluate.no_batch", "Nothing to evaluate: the validation set is empty.")
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
        raise InvalidInput("evaluate.too_few_classes", "A classification report needs at least two classes.")
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
                        raise InvalidInput("evaluate.unknown_class", "Class {index} does not exist: there are only "
                                           "{n_labels} labels.", index=max(t, p), n_labels=k)
                    confusion[t][p] += 1
                    predictions.append(p)
    finally:
        model.train(was_training)
    n = sum(map(sum, confusion))
    if n == 0:
        raise InvalidInput("evaluate.empty_test_set", "Nothing to evaluate: the test set is empty.")
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
    return format_alpaca(example)[0]  # (prompt, response)


def generate_answers(model: nn.Module, tokenizer, examples: Sequence[dict], max_new_tokens: int = 128) -> list[dict]:
    """Greedy answers to Alpaca-style examples (``instruction``, ``input``, ``output``).

    Returns ``[{"instruction", "input", "expected", "generated"}, ...]``, the
    JSON to compare side by side (and that :func:`ollama_judge` scores).
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidInput("train.bad_whole", "{field} must be a whole number of at least {minimum} (got {value}).",
                           field="max_new_tokens", minimum=1, value=repr(max_new_tokens))
    eos_id = getattr(tokenizer, "eos_id", None)
    was_training = model.training
    model.eval()
    results = []
    try:
        with torch.no_grad():
            for example in examples:
                if not isinstance(example, dict) or "instruction" not in example:
                    raise InvalidInput("evaluate.bad_example", "Each example must be a dict with at least the key "
                                       "'instruction'.")
                prompt_ids = model_ids(tokenizer, alpaca_prompt(example))
                new_ids = continuation_ids(model, prompt_ids, max_new_tokens, eos_id)
                text = tokenizer.decode(new_ids)
                text = text.split("### Instruction:")[0].replace("### Response:", "").strip()
                results.append({"instruction": example["instruction"], "input": example.get("input", ""),
                                "expected": example.get("output", ""), "generated": text})
    finally:
        model.train(was_training)
    return results


class evaluating:
    """Eval mode and no gradients inside the block; the model's previous mode comes back after."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training
        self.no_grad = torch.inference_mode()

    def __enter__(self) -> nn.Module:
        self.model.eval()
        self.no_grad.__enter__()
        return self.model

    def __exit__(self, *exc) -> bool:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)
        return False


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    ids = list(model_ids(tokenizer, prompt)) if isinstance(prompt, str) and prompt.strip() else []
    if len(ids) <= len(getattr(tokenizer, "model_prefix", ())):
        raise InvalidInput("evaluate.empty_prompt", "The prompt is empty: type a few words.")
    return ids


def continue_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int, stop: str | None = None) -> str:
    """The greedy continuation of ``prompt`` (without the prompt), cut at ``stop`` and stripped when given.

    The model is left as it was (mode, weights); a peft wrapper answers with its adapters.
    """
    ids = _prompt_ids(tokenizer, prompt)
    with evaluating(model):
        new = continuation_ids(model, ids, max_new_tokens, getattr(tokenizer, "eos_id", None))
    text = tokenizer.decode(new)
    return text.split(stop)[0].strip() if stop else text


def next_token_probs(model: nn.Module, tokenizer, prompt: str) -> torch.Tensor:
    """The probabilities (vocab,) of the token after ``prompt`` (its last tokens when too long), on the CPU."""
    ids = _prompt_ids(tokenizer, prompt)[-backend_of(model).context_length:]
    with evaluating(model):
        x = torch.tensor([ids], device=_device_of(model))
        return model_logits(model, x)[0, -1].float().softmax(-1).cpu()


def cloze_hits(model: nn.Module, tokenizer, items: Sequence[tuple[str, str]], k: int = 5) -> list[tuple[bool, list[str]]]:
    """For each (prefix, expected word): is the word among the ``k`` most probable next tokens?

    A token counts when its text (spaces stripped, case ignored) is the word or a
    start of it of at least 3 letters (a word may span several tokens). Returns
    (hit, the ``k`` tokens' texts) per item.
    """
    out = []
    for prefix, word in items:
        top = torch.topk(next_token_probs(model, tokenizer, prefix), k).indices.tolist()
        texts = [tokenizer.decode([i]) for i in top]
        want = word.casefold()
        hit = any((p := t.strip().casefold()) and (p == want or (len(p) >= 3 and want.startswith(p))) for t in texts)
        out.append((hit, texts))
    return out


def top_token_union(before: torch.Tensor, after: torch.Tensor, k: int = 8, limit: int = 12) -> list[int]:
    """The ``k`` most probable ids after training, then those before training not yet listed (``limit`` ids at most)."""
    order = [int(i) for i in torch.topk(after, min(k, after.numel())).indices]
    for i in torch.topk(before, min(k, before.numel())).indices.tolist():
        if len(order) >= max(k, limit):
            break
        if int(i) not in order:
            order.append(int(i))
    return order


def class_probabilities(model: nn.Module, tokenizer, text: str, max_length: int) -> list[float]:
    """A classifier's class probabilities for one text (its first ``max_length`` tokens, read at the last one)."""
    ids = list(model_ids(tokenizer, text))[:max_length] if isinstance(text, str) and text.strip() else []
    if not ids:
        raise InvalidInput("evaluate.empty_text", "The text to classify is empty: type a few words.")
    with evaluating(model):
        x = torch.tensor([ids], device=_device_of(model))
        return model_logits(model, x)[0, -1].float().softmax(-1).cpu().tolist()


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
    """Score generated answers 0-100 with a model served by a local Ollama.

    Each item needs ``instruction``, ``expected`` and ``generated`` (as
    :func:`generate_answers` returns them). Returns ``{"scores": [int | None],
    "mean": float | None, "model", "url"}``; a score is None when the judge's
    reply holds no number between 0 and 100. Raises :class:`OllamaUnavailable`
    when no server answers at ``url`` within ``timeout`` seconds or the model
    is not installed.
    """
    url = (url or "").rstrip("/")
    if not re.match(r"^https?://[^\s/]+$", url):
        raise InvalidInput("evaluate.bad_ollama_url", "'{url}' is not a valid Ollama server address "
                           "(e.g. http://127.0.0.1:11434).", url=url)
    host = url.split("://", 1)[1]
    try:
        with urllib.request.urlopen(url + "/api/tags", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OllamaUnavailable("evaluate.ollama_down", "No Ollama server answers on {host}: install Ollama, run "
                                "'ollama serve' then 'ollama pull {model}' ({detail}).", host=host, model=model,
                                detail=str(getattr(exc, "reason", exc))) from None
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
                raise OllamaUnavailable("evaluate.ollama_no_model", "The model '{model}' is not installed in Ollama: "
                                        "run 'ollama pull {model}'.", model=model) from None
            raise OllamaUnavailable("evaluate.ollama_http", "The Ollama server on {host} answered with HTTP error "
                                    "{status}.", host=host, status=exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OllamaUnavailable("evaluate.ollama_gone", "The Ollama server on {host} stopped answering "
                                    "({detail}).", host=host, detail=str(exc)) from None
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


def wandb_logger(project: str, config: dict | None = None) -> tuple[WandbLogger | None, Message | None]:
    """``(logger, None)`` when wandb is installed and logged in, else ``(None, reason)``."""
    if not isinstance(project, str) or not project.strip():
        return None, note("evaluate.wandb_no_project", "Give a Weights & Biases project name.")
    try:
        import wandb  # optional, never a requirement
    except ImportError:
        return None, note("evaluate.wandb_missing", "The wandb package is not installed (pip install wandb): "
                          "Weights & Biases tracking is off.")
    if not _wandb_configured():
        return None, note("evaluate.wandb_no_login", "Weights & Biases is not set up: run 'wandb login' or set "
                          "WANDB_API_KEY.")
    try:
        run = wandb.init(project=project.strip(), config=config or {}, reinit=True)
    except Exception as exc:  # network, credentials, ...
        return None, note("evaluate.wandb_failed", "Weights & Biases could not start: {detail}", detail=str(exc))
    return WandbLogger(run), None
