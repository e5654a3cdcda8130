"""Encoder-decoder (seq2seq) models made visible: BARThez step by step, and a classifier on its encoder.

BARThez (``moussaKam/barthez``) is a French BART: an *encoder* reads the whole source
once (bidirectional), then a *decoder* writes the output one token at a time, looking
at its own previous tokens (self-attention, cached) and at the encoded source
(cross-attention). This module shows that mechanism on any BART/MBart-style model
from ``transformers``:

* :func:`seq2seq_trace` runs the encoder **once**, then the decoder greedily, one
  token per step, reusing the encoder output (``encoder_outputs``) and the decoder's
  key/value cache at every step. Each :class:`DecoderStep` holds the chosen token,
  its probability, the top-k alternatives and the cross-attention of that step over
  the source tokens, for every layer and head (:func:`cross_attention_map` averages
  them, or picks one layer/head). The greedy choice is the plain argmax of the
  model's logits: no generation-config processor (forced tokens, n-gram bans) is
  applied, so on a model without such settings the tokens equal
  ``model.generate(..., do_sample=False, num_beams=1)``.
* :class:`EncoderClassifier` sets the decoder aside: a *copy* of the encoder, a
  mean over the real (non-padding) tokens' final states, and a linear head.
  :func:`encoder_classifier` builds one from a seq2seq model, :func:`classifier_loss`
  plugs it into :func:`gpt_core.train.train` (``loss_fn=``), and
  :func:`train_ticket_classifier` runs the whole lesson on labelled records
  (split, train, accuracy against the majority-class baseline, confusion matrix).
* :func:`load_barthez` loads the real model from the hub or the local Hugging Face
  cache; offline it raises :class:`~gpt_core.errors.HubUnavailable` saying how to
  fetch it once. :func:`tiny_seq2seq` builds a tiny MBart with **random weights**
  and an offline French byte-level BPE laid out like BARThez's special tokens
  (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4): it shows the
  mechanics only, for tests and the offline demo.
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import hub as _hub
from .errors import HubUnavailable, InvalidInput, Message, note
from .tokenizers import clean_text

__all__ = [
    "BARTHEZ", "MAX_SOURCE_TOKENS", "MAX_NEW_TOKENS", "MAX_TOP_K", "PREFETCH_COMMAND",
    "Seq2SeqModel", "DecoderStep", "Seq2SeqTrace", "seq2seq_trace", "cross_attention_map", "source_ids",
    "tiny_tokenizer", "tiny_seq2seq", "load_barthez", "barthez_reachable", "barthez_offline_note",
    "EncoderClassifier", "encoder_classifier", "classifier_loss", "classifier_batches", "classifier_report",
    "ClassifierRun", "train_ticket_classifier", "time_training_step", "estimate_seconds",
]

BARTHEZ = "moussaKam/barthez"
MAX_SOURCE_TOKENS = 256   # source tokens read by the encoder (special tokens included)
MAX_NEW_TOKENS = 64       # decoder steps of one trace
MAX_TOP_K = 20            # alternatives kept per step
MAX_STEPS = 2000          # classifier training updates
PREFETCH_COMMAND = "python scripts/prefetch.py --only barthez"
TINY_KEY = "tiny-mbart"
TINY_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # BARThez's order: ids 0..4


@dataclass
class Seq2SeqModel:
    """A loaded encoder-decoder model and the tokenizer that goes with it."""

    model: nn.Module          # a transformers encoder-decoder (BART/MBart family), eval mode, eager attention
    tokenizer: Any            # a gpt_core.tokenizers tokenizer
    key: str                  # "moussaKam/barthez" or "tiny-mbart"
    label: Message            # honest description (random weights are said)
    random_weights: bool
    load_seconds: float = 0.0


# ----------------------------------------------------------------------------- checks


def _whole(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput("seq2seq.bad_number", "{name} must be a whole number from {low} to {high} (got {value}).",
                           name=name, low=low, high=high, value=repr(value)[:40])
    return value


def _check_model(model: Any) -> None:
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or not getattr(config, "is_encoder_decoder", False):
        raise InvalidInput("seq2seq.not_encoder_decoder", "This model is not an encoder-decoder (seq2seq) model: "
                           "choose BARThez or the tiny random MBart.")


def _special(model: nn.Module, name: str) -> int | None:
    value = getattr(model.config, name, None)
    return int(value) if value is not None else None


def source_ids(model: nn.Module, tokenizer: Any, text: str, max_source_tokens: int = MAX_SOURCE_TOKENS) -> list[int]:
    """What the encoder reads: ``<s>`` + the text's tokens + ``</s>`` (BART's layout), within the bound."""
    _check_model(model)
    limit = _whole(max_source_tokens, "max_source_tokens", 3, 1024)
    text = clean_text(text)
    body = list(tokenizer.encode(text)) if text.strip() else []
    if not body:
        raise InvalidInput("seq2seq.empty_source", "The source text is empty: type a sentence for the encoder.")
    bos, eos = _special(model, "bos_token_id"), _special(model, "eos_token_id")
    ids = [*([bos] if bos is not None else []), *body, *([eos] if eos is not None else [])]
    if len(ids) > limit:
        raise InvalidInput("seq2seq.source_too_long", "The source has {n} tokens: the limit is {limit}. Shorten "
                           "the text.", n=len(ids), limit=limit)
    return ids


# ----------------------------------------------------------------------------- the trace


@dataclass
class DecoderStep:
    """One decoder step: what it read, what it chose, and where it looked in the source."""

    index: int                        # 0-based step
    input_id: int                     # the token fed to the decoder at this step (the previous choice)
    token_id: int                     # the greedy choice
    token: str                        # its readable text
    prob: float                       # its probability
    top: list[tuple[int, str, float]]  # the top-k (id, text, probability), best first
    seconds: float


@dataclass
class Seq2SeqTrace:
    source_ids: list[int]
    source_tokens: list[str]          # readable text of each source token
    encoder_shape: tuple[int, ...]    # (1, source tokens, d_model) of the encoder output
    encoder_seconds: float
    encoder_calls: int                # how many times the encoder ran during the trace (1)
    decoder_start_id: int
    steps: list[DecoderStep]
    cross_attention: torch.Tensor     # (steps, layers, heads, source tokens): each row sums to 1
    stopped: str                      # "eos" (end-of-sequence chosen) or "length" (max_new_tokens reached)
    text: str                         # the generated text (special tokens left out)
    d_model: int = 0
    n_layers: int = 0
    n_heads: int = 0

    @property
    def new_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]


def _cache_argument(model: nn.Module) -> str:
    """transformers 5.2x calls the decoder cache ``cache``; earlier versions ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out: Any) -> Any:
    keys = out.keys()
    return out["cache"] if "cache" in keys else (out["past_key_values"] if "past_key_values" in keys else None)


def _top(probs: torch.Tensor, tokenizer: Any, k: int) -> list[tuple[int, str, float]]:
    values, ids = probs.topk(min(k, probs.numel()))
    return [(int(i), tokenizer.token_text(int(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist())]


def _step_cross(out: Any) -> torch.Tensor:
    found = getattr(out, "cross_attentions", None)
    if not found:
        raise InvalidInput("seq2seq.no_attention", "This model does not return its cross-attention weights: load "
                           "it with attn_implementation=\"eager\".")
    return torch.stack([a[0, :, -1, :].float() for a in found])  # (L, H, S)


@torch.no_grad()
def seq2seq_trace(model: nn.Module, tokenizer: Any, text: str, max_new_tokens: int = 20, top_k: int = 5,
                  max_source_tokens: int = MAX_SOURCE_TOKENS) -> Seq2SeqTrace:
    """Encode ``text`` once, then decode greedily token by token (see the module docstring)."""
    ids = source_ids(model, tokenizer, text, max_source_tokens)
    max_new_tokens = _whole(max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS)
    top_k = _whole(top_k, "top_k", 1, MAX_TOP_K)
    device = next(model.parameters()).device
    src = torch.tensor([ids], device=device)
    mask = torch.ones_like(src)
    encoder, calls = model.get_encoder(), [0]
    hook = encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    was_training = model.training
    model.eval()
    try:
        start = time.perf_counter()
        encoded = encoder(input_ids=src, attention_mask=mask, return_dict=True)
        encoder_seconds = time.perf_counter() - start
        steps, cross, stopped = _decode(model, tokenizer, encoded, mask, max_new_tokens, top_k)
    finally:
        hook.remove()
        model.train(was_training)
    specials = set(getattr(tokenizer, "special_tokens", {}).values())
    shown = [s.token_id for s in steps if s.token_id not in specials]
    states = encoded.last_hidden_state
    return Seq2SeqTrace(ids, [tokenizer.token_text(i) for i in ids], tuple(states.shape), encoder_seconds, calls[0],
                        _start_id(model), steps, cross, stopped, tokenizer.decode(shown) if shown else "",
                        int(states.shape[-1]), int(cross.shape[1]), int(cross.shape[2]))


def _start_id(model: nn.Module) -> int:
    start = _special(model, "decoder_start_token_id")
    if start is None:
        start = _special(model, "eos_token_id")
    if start is None:
        raise InvalidInput("seq2seq.no_start_token", "The model's configuration names no decoder start token.")
    return start


def _decode(model, tokenizer, encoded, mask, max_new_tokens: int, top_k: int):
    """The greedy decoder loop: one new token per step, the encoder output and the cache reused."""
    cache_name, cache = _cache_argument(model), None
    eos = _special(model, "eos_token_id")
    current = _start_id(model)
    device = mask.device
    steps: list[DecoderStep] = []
    cross: list[torch.Tensor] = []
    stopped = "length"
    for index in range(max_new_tokens):
        start = time.perf_counter()
        out = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=torch.tensor([[current]], device=device),
                    use_cache=True, output_attentions=True, return_dict=True, **{cache_name: cache})
        cache = _returned_cache(out)
        probs = torch.softmax(out.logits[0, -1].float(), dim=-1)
        chosen = int(probs.argmax())
        cross.append(_step_cross(out).cpu())
        steps.append(DecoderStep(index, current, chosen, tokenizer.token_text(chosen), float(probs[chosen]),
                                 _top(probs, tokenizer, top_k), time.perf_counter() - start))
        current = chosen
        if eos is not None and chosen == eos:
            stopped = "eos"
            break
    return steps, torch.stack(cross) if cross else torch.zeros(0, 0, 0, int(mask.shape[1])), stopped


def cross_attention_map(trace: Seq2SeqTrace, layer: int | None = None, head: int | None = None) -> list[list[float]]:
    """(decoder steps, source tokens): one layer/head, or the mean over all layers and/or heads (None)."""
    att = trace.cross_attention  # (steps, L, H, S)
    if not len(trace.steps):
        return []
    if layer is not None:
        _whole(layer, "layer", 0, att.shape[1] - 1)
        att = att[:, layer:layer + 1]
    if head is not None:
        _whole(head, "head", 0, att.shape[2] - 1)
        att = att[:, :, head:head + 1]
    return att.mean(dim=(1, 2)).tolist()


# ----------------------------------------------------------------------------- models


@functools.lru_cache(maxsize=2)
def tiny_tokenizer(vocab_size: int = 1000):
    """A French byte-level BPE trained here on the built-in corpus, with BARThez's special tokens first."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from .tokenizers import HFTokenizer
    from .tokenlab import builtin_corpus

    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(TINY_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator([builtin_corpus("fr")], trainer)
    bos, pad, eos, unk, mask = TINY_SPECIALS
    return HFTokenizer.from_tokenizers_object(raw, "tiny-fr-bpe", f"French byte-level BPE ({vocab_size} tokens, "
                                              "trained here)", eos_token=eos, bos_token=bos, pad_token=pad,
                                              unk_token=unk, mask_token=mask)


def tiny_seq2seq(seed: int = 0, d_model: int = 64, layers: int = 2, heads: int = 4) -> Seq2SeqModel:
    """A tiny MBart (BARThez's architecture family) with random weights (``seed``), offline, in a blink."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    start = time.perf_counter()
    tok = tiny_tokenizer()
    config = MBartConfig(
        vocab_size=tok.vocab_size, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, max_position_embeddings=MAX_SOURCE_TOKENS + 2, bos_token_id=0, pad_token_id=1,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None, scale_embedding=True,
        tie_word_embeddings=False,  # tied random embeddings make greedy repeat its input: untied shows more
        attn_implementation="eager")
    torch.manual_seed(seed)
    model = MBartForConditionalGeneration(config).eval()
    label = note("seq2seq.tiny_label", "Tiny MBart ({layers}+{layers} layers, d_model {d_model}) — random weights "
                 "(seed {seed}): shows the mechanics only", layers=layers, d_model=d_model, seed=seed)
    return Seq2SeqModel(model, tok, TINY_KEY, label, True, time.perf_counter() - start)


def barthez_reachable() -> bool:
    """True when BARThez can be loaded now: cached locally, or the hub answers."""
    from .registry import is_available_offline

    return is_available_offline(BARTHEZ) or _hub.hub_reachable()


def barthez_offline_note() -> Message:
    """The one line said when BARThez is out of reach: it needs the hub once, and how to fetch it."""
    return note("seq2seq.barthez_offline", "BARThez needs the Hugging Face hub once: it is neither reachable nor in "
                "the local cache. On a connected machine, fetch it with '{command}' (or python -c \"from transformers "
                "import AutoModelForSeq2SeqLM as M; M.from_pretrained('moussaKam/barthez')\"), then reload this page.",
                command=PREFETCH_COMMAND)


def load_barthez(progress: Callable | None = None) -> Seq2SeqModel:
    """BARThez from the local Hugging Face cache or the hub (``AutoModelForSeq2SeqLM``, eager attention).

    Offline and not cached: :class:`HubUnavailable` ``seq2seq.barthez_offline``, which says
    how to fetch it once (``hf download moussaKam/barthez``).
    """
    from .registry import load_model

    try:
        loaded = load_model(BARTHEZ, progress=progress)
    except HubUnavailable as err:
        said = barthez_offline_note()
        raise HubUnavailable(said.code, said.text, **said.params) from err
    label = note("seq2seq.barthez_label", "BARThez (moussaKam/barthez) — pretrained French seq2seq, hub weights")
    return Seq2SeqModel(loaded.model, loaded.tokenizer, BARTHEZ, label, False, loaded.load_seconds)


# ----------------------------------------------------------------------------- classifier on the encoder


class EncoderClassifier(nn.Module):
    """The decoder set aside: encoder -> mean of the real tokens' final states -> dropout -> linear head."""

    def __init__(self, encoder: nn.Module, d_model: int, n_classes: int, pad_id: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.pad_id = int(pad_id)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_id).long()
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(states.dtype)                          # (B, T, 1)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)               # (B, D)
        return self.head(self.dropout(pooled))                                           # (B, C)


def encoder_classifier(model: nn.Module, n_classes: int, train_layers: int | None = None,
                       seed: int = 0) -> EncoderClassifier:
    """A classifier on a *copy* of ``model``'s encoder (the shared model is never trained).

    ``train_layers``: None trains the whole encoder; ``k`` freezes everything but the
    top ``k`` encoder layers (and the head); 0 trains the head alone on frozen features.
    """
    _check_model(model)
    n_classes = _whole(n_classes, "n_classes", 2, 1000)
    encoder = copy.deepcopy(model.get_encoder())
    n_layers = len(encoder.layers)
    if train_layers is not None:
        _whole(train_layers, "train_layers", 0, n_layers)
        for p in encoder.parameters():
            p.requires_grad_(False)
        for layer in list(encoder.layers)[n_layers - train_layers:] if train_layers else []:
            for p in layer.parameters():
                p.requires_grad_(True)
        if train_layers and getattr(encoder, "layer_norm", None) is not None:
            encoder.layer_norm.requires_grad_(True)
    torch.manual_seed(seed)
    pad = _special(model, "pad_token_id")
    return EncoderClassifier(encoder, int(model.config.d_model), n_classes, 1 if pad is None else pad)


def classifier_loss(model: EncoderClassifier, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the classifier (``loss_fn`` of :func:`gpt_core.train.train`; padding = ``model.pad_id``)."""
    return F.cross_entropy(model(inputs).float(), targets)


def classifier_batches(texts: Sequence[str], labels: Sequence[Any], tokenizer: Any, vocab: dict[str, int],
                       model: nn.Module, max_tokens: int = 96, batch_size: int = 16, shuffle: bool = False,
                       seed: int = 0) -> list[dict]:
    """Dict batches ``inputs`` (B, T) / ``attention_mask`` / ``targets`` (B,), each text read as the encoder reads it."""
    _whole(batch_size, "batch_size", 1, 512)
    pad = _special(model, "pad_token_id")
    pad = 1 if pad is None else pad
    rows = []
    for text, label in zip(texts, labels):
        ids = source_ids(model, tokenizer, str(text), 1024)
        if len(ids) > max_tokens:  # keep the end-of-sequence token
            ids = ids[:max_tokens - 1] + ids[-1:]
        rows.append((ids, vocab[str(label).strip()]))
    order = list(range(len(rows)))
    if shuffle:
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        inputs = torch.full((len(chunk), width), pad, dtype=torch.long)
        for r, (ids, _) in enumerate(chunk):
            inputs[r, :len(ids)] = torch.tensor(ids)
        batches.append({"inputs": inputs, "attention_mask": (inputs != pad).long(),
                        "targets": torch.tensor([y for _, y in chunk])})
    return batches


@torch.no_grad()
def classifier_report(model: EncoderClassifier, batches: Sequence[dict], labels: Sequence[str]) -> dict:
    """``accuracy``, ``confusion_matrix`` (rows: true, columns: predicted), ``majority_baseline`` (always the
    most frequent true class of these batches), ``majority_label``, ``labels``, ``n`` (as gpt_core.evaluate)."""
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            pred = model(batch["inputs"], batch["attention_mask"]).argmax(-1)
            for t, p in zip(batch["targets"].tolist(), pred.tolist()):
                confusion[t][p] += 1
    finally:
        model.train(was_training)
    n = sum(map(sum, confusion))
    if n == 0:
        raise InvalidInput("seq2seq.empty_test_set", "Nothing to evaluate: the test set is empty.")
    supports = [sum(row) for row in confusion]
    majority = max(range(k), key=lambda i: supports[i])
    return {"accuracy": sum(confusion[i][i] for i in range(k)) / n, "confusion_matrix": confusion,
            "majority_baseline": supports[majority] / n, "majority_label": list(labels)[majority],
            "labels": list(labels), "n": n}


@dataclass
class ClassifierRun:
    report: dict                  # classifier_report on the test split, after training
    accuracy_before: float        # the same classifier before training
    losses: list[float]           # training loss at each step
    seconds: float
    n_train: int
    n_test: int
    trained_params: int
    total_params: int
    train_layers: int | None
    events: list[dict] = field(default_factory=list, repr=False)


def time_training_step(model: EncoderClassifier, batch: dict, repeats: int = 3) -> float:
    """Median seconds of one forward + backward on ``batch`` after a warm-up one (gradients dropped, weights
    unchanged): the basis of an estimate, measured on this machine now."""
    times = []
    model.train()
    try:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            classifier_loss(model, batch["inputs"], batch["targets"]).backward()
            times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    finally:
        model.eval()
    return sorted(times[1:])[len(times[1:]) // 2]


def train_ticket_classifier(loaded: Seq2SeqModel, records: Sequence[dict], steps: int = 60, batch_size: int = 16,
                            lr: float = 3e-3, train_layers: int | None = None, seed: int = 0,
                            max_tokens: int = 96, test_fraction: float = 0.2,
                            on_step: Callable[[int, int, float], None] | None = None) -> ClassifierRun:
    """Split ``records`` (``text``/``label``), train an :class:`EncoderClassifier` with
    :func:`gpt_core.train.train` (``loss_fn=classifier_loss``), and score it on the test split."""
    from .data import label_vocab, split_records
    from .train import TrainConfig, train

    steps = _whole(steps, "steps", 1, MAX_STEPS)
    vocab = label_vocab([r["label"] for r in records])
    labels = [name for name, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    train_set, test_set = split_records(records, (1 - test_fraction, test_fraction), seed=seed)
    make = functools.partial(classifier_batches, tokenizer=loaded.tokenizer, vocab=vocab, model=loaded.model,
                             max_tokens=max_tokens, batch_size=batch_size)
    train_b = make([r["text"] for r in train_set], [r["label"] for r in train_set], shuffle=True, seed=seed)
    test_b = make([r["text"] for r in test_set], [r["label"] for r in test_set])
    clf = encoder_classifier(loaded.model, len(labels), train_layers, seed)
    before = classifier_report(clf, test_b, labels)["accuracy"]
    cfg = TrainConfig(lr=lr, batch_size=batch_size, steps=steps, warmup=max(1, steps // 10), eval_every=0,
                      eval_at_start=False, weight_decay=0.01, seed=seed, device="cpu", precision="fp32",
                      diverge_ratio=None)
    start, events, losses = time.perf_counter(), [], []
    for event in train(clf, train_b, None, cfg, task="classify", loss_fn=classifier_loss):
        events.append(event)
        if event["type"] == "step":
            losses.append(float(event["train_loss"]))
            if on_step is not None:
                on_step(event["step"], steps, losses[-1])
    seconds = time.perf_counter() - start
    trained = sum(p.numel() for p in clf.parameters() if p.requires_grad)
    total = sum(p.numel() for p in clf.parameters())
    return ClassifierRun(classifier_report(clf, test_b, labels), before, losses, seconds, len(train_set),
                         len(test_set), trained, total, train_layers, events)


def estimate_seconds(step_seconds: float, steps: int) -> float:
    """Training time announced from one measured step: ``steps`` updates, plus about two evaluations."""
    return max(step_seconds, 0.0) * (steps + 2) if math.isfinite(step_seconds) else float("nan")
