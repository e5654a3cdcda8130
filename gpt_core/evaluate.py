"""Evaluation after training: losses, classification reports, generated answers, judges.

* :func:`lm_loss` — mean cross-entropy and perplexity over batches;
* :func:`classification_report` — accuracy, confusion matrix, per-class scores
  and the majority-class baseline a classifier must beat;
* :func:`generate_answers` — greedy answers to Alpaca-style examples, saved as
  JSON with :func:`save_json` (expected vs generated, side by side);
* :func:`continue_text`, :func:`next_token_probs`, :func:`top_token_union`,
  :func:`class_probabilities` — what one prompt gives, to compare a model
  before and after training;
* :func:`ollama_judge` — optional scores from a local LLM served by Ollama
  (:func:`judge_comparison` for before/after rows), and :func:`answers_json`,
  the course's JSON export of generated vs expected answers;
* :func:`wandb_logger` — optional Weights & Biases tracking (offline when no
  account or no network: the run folder is still written).
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
    "OllamaUnavailable", "judge_items", "judge_comparison", "answers_json", "wandb_logger", "WandbLogger",
    "wandb_credentials", "alpaca_prompt", "evaluating", "continue_text",
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


JUDGED = ("after", "before")  # the answers of a before/after comparison that the judge scores


def judge_items(rows: Sequence[dict], which: str = "after") -> list[dict]:
    """The items :func:`ollama_judge` scores, from before/after comparison rows.

    Each row has ``instruction``, ``input``, ``expected``, ``before`` and
    ``after``; ``which`` ("after" or "before") picks the answer to grade.
    """
    if which not in JUDGED:
        raise InvalidInput("evaluate.bad_judged", "Choose the answers to grade: 'after' or 'before' (got {which}).",
                           which=repr(which))
    items = []
    for row in rows:
        if not isinstance(row, dict) or "instruction" not in row:
            raise InvalidInput("evaluate.bad_example", "Each example must be a dict with at least the key "
                               "'instruction'.")
        items.append({"instruction": row["instruction"], "input": row.get("input") or "",
                      "expected": row.get("expected") or "", "generated": row.get(which) or ""})
    return items


def judge_comparison(rows: Sequence[dict], model: str = "llama3", url: str = "http://127.0.0.1:11434",
                     timeout: float = 3.0, request_timeout: float = 120.0) -> dict:
    """Scores of the answers after training, and before when the rows have them: ``{"after": ..., "before": ...}``.

    Each value is what :func:`ollama_judge` returns (``scores``, ``mean``, ...);
    ``"before"`` is None when no row holds an answer before training.
    """
    rows = list(rows)
    if not rows:
        raise InvalidInput("evaluate.nothing_to_judge", "There is no answer to grade.")
    after = ollama_judge(judge_items(rows, "after"), model, url, timeout, request_timeout)
    has_before = any(row.get("before") not in (None, "") for row in rows)
    before = ollama_judge(judge_items(rows, "before"), model, url, timeout, request_timeout) if has_before else None
    return {"after": after, "before": before}


def answers_json(rows: Sequence[dict], judged: dict | None = None) -> str:
    """The course's export of generated answers (as ``instruction-data-with-response.json``), as a JSON text.

    One entry per row: ``instruction``, ``input``, ``output`` (the expected
    answer), ``model_response`` (after training) and ``model_response_before``;
    with ``judged`` (what :func:`judge_comparison` returns) also
    ``judge_score`` and ``judge_score_before`` (0-100, or null).
    """
    entries = []
    for i, row in enumerate(rows):
        entry = {"instruction": row.get("instruction", ""), "input": row.get("input") or "",
                 "output": row.get("expected") or "", "model_response": row.get("after") or "",
                 "model_response_before": row.get("before") or ""}
        for key, which in (("judge_score", "after"), ("judge_score_before", "before")):
            scores = ((judged or {}).get(which) or {}).get("scores")
            if scores is not None and i < len(scores):
                entry[key] = scores[i]
        entries.append(entry)
    return json.dumps(entries, indent=4, ensure_ascii=False)


# -------------------------------------------------------------------- wandb
WANDB_PROJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what a Weights & Biases project name may be here


class WandbLogger:
    """Sends :func:`gpt_core.train.train` events to a Weights & Biases run (online or offline).

    ``step``/``eval`` events become curves (``train/*``, ``val/*``); ``sample``
    events a table of texts (step, text); ``checkpoint`` and the final event
    (``done``, ``cancelled``, ``diverged``, ``failed``) go to the run's summary.
    """

    def __init__(self, run, table=None, offline: bool = False):
        self.run, self.offline = run, offline
        self._table = table            # wandb.Table, to log the samples as text
        self.samples: list[list] = []  # [[step, text], ...] logged so far
        self.status: str | None = None
        self._finished = False

    @property
    def run_dir(self) -> Path | None:
        """The run's own folder (``.../offline-run-<time>-<id>``): what ``wandb sync`` uploads."""
        settings = getattr(self.run, "settings", None)
        sync_dir = getattr(settings, "sync_dir", None)
        if sync_dir:
            return Path(sync_dir)
        files = getattr(self.run, "dir", None)
        return Path(files).parent if files else None

    def log(self, event: dict) -> None:
        kind, step = event.get("type"), event.get("step")
        if kind == "step":
            self._log({"train/loss": event.get("train_loss"), "train/lr": event.get("lr"),
                       "train/tokens_seen": event.get("tokens_seen"), "train/epoch": event.get("epoch"),
                       "train/elapsed_s": event.get("elapsed")}, step)
        elif kind == "eval":
            self._log({"val/loss": event.get("val_loss"), "val/perplexity": event.get("perplexity"),
                       "val/accuracy": event.get("accuracy")}, step)
        elif kind == "sample":
            self.samples.append([step, str(event.get("text", ""))])
            if self._table is not None:  # the whole table again: wandb shows the latest one
                self.run.log({"samples": self._table(columns=["step", "text"], data=[list(r) for r in self.samples])},
                             step=step)
            else:
                self.run.log({"sample": str(event.get("text", ""))}, step=step)
        elif kind == "checkpoint":
            self._summary({"checkpoint": str(event.get("path", ""))})
        elif kind in ("done", "cancelled", "diverged", "failed", "error"):
            self.status = kind
            self._summary({"status": kind, "final_step": step, "elapsed_s": event.get("elapsed")})

    def _log(self, data: dict, step) -> None:
        data = {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if data:
            self.run.log(data, step=step)

    def _summary(self, data: dict) -> None:
        summary = getattr(self.run, "summary", None)
        if summary is not None:
            for key, value in data.items():
                if value is not None:
                    summary[key] = value

    def finish(self) -> Path | None:
        """Close the run (once); returns its folder (None when wandb does not say)."""
        if not self._finished:
            self._finished = True
            if self.status in ("diverged", "failed", "error"):
                self.run.finish(exit_code=1)
            else:
                self.run.finish()
        return self.run_dir


def wandb_credentials() -> bool:
    """Is a Weights & Biases account set up on this machine (WANDB_API_KEY, or a netrc entry for api.wandb.ai)?"""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return False


def _wandb_init(wandb, project: str, config: dict, dir: Path | None, mode: str):
    settings = wandb.Settings(silent=True, quiet=True, console="off", disable_git=True, save_code=False,
                              x_disable_stats=True, init_timeout=20)
    # a new run per call: several sessions of a server may train at once
    return wandb.init(project=project, config=config, dir=str(dir) if dir else None, mode=mode,
                      reinit="create_new", settings=settings)


def wandb_logger(project: str, config: dict | None = None, dir: str | os.PathLike | None = None,
                 online: bool = False) -> tuple[WandbLogger | None, Message | None]:
    """A Weights & Biases logger and a note saying where the run goes, or ``(None, reason)``.

    The run is online only when ``online`` is asked and an account is set up
    (:func:`wandb_credentials`); otherwise — or when the server cannot be
    reached — it runs offline and still writes its run folder under ``dir``
    (``<dir>/wandb/offline-run-...``), to upload later with ``wandb sync``.
    ``wandb`` is optional: imported here only, and said when missing.
    """
    if not isinstance(project, str) or not project.strip():
        return None, note("evaluate.wandb_no_project", "Give a Weights & Biases project name.")
    project = project.strip()
    if not WANDB_PROJECT.match(project):
        return None, note("evaluate.wandb_bad_project", "A Weights & Biases project name holds 1 to 64 letters, "
                          "digits, '-' or '_'.")
    try:
        import wandb  # optional, never a requirement
    except ImportError:
        return None, note("evaluate.wandb_missing", "The wandb package is not installed (pip install wandb): "
                          "Weights & Biases tracking is off.")
    if dir is not None:
        dir = Path(dir)
        dir.mkdir(parents=True, exist_ok=True)
    config = dict(config or {})
    problem = None
    if online and wandb_credentials():
        try:
            run = _wandb_init(wandb, project, config, dir, "online")
            return WandbLogger(run, getattr(wandb, "Table", None)), note(
                "evaluate.wandb_online", "Weights & Biases logs this run online: {url}",
                url=str(getattr(run, "url", "") or project))
        except Exception as exc:  # no network, a refused key, ...: the run is still written offline
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        run = _wandb_init(wandb, project, config, dir, "offline")
    except Exception as exc:  # a folder that cannot be written, ...
        return None, note("evaluate.wandb_failed", "Weights & Biases could not start: {detail}", detail=str(exc))
    logger = WandbLogger(run, getattr(wandb, "Table", None), offline=True)
    path = str(logger.run_dir or dir or "wandb")
    if problem is not None:
        return logger, note("evaluate.wandb_offline_fallback", "Weights & Biases could not reach its server "
                            "({detail}): the run is written offline in {path}; upload it later with "
                            "'wandb sync {path}'.", detail=problem, path=path)
    if online:
        return logger, note("evaluate.wandb_no_login", "Weights & Biases is not set up ('wandb login' or "
                            "WANDB_API_KEY): the run is written offline in {path}; upload it later with "
                            "'wandb sync {path}'.", path=path)
    return logger, note("evaluate.wandb_offline", "Weights & Biases runs offline: the run is written in {path}; "
                        "upload it later with 'wandb sync {path}'.", path=path)
