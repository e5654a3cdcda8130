"""Training plans: a run's choices checked at once, its data, model copy and cost, ready to train.

:func:`plan_pretrain` / :func:`plan_finetune` return a :class:`RunPlan` (loaders, TrainConfig, how to
build the model that trains, cost estimate, the params recorded with the run). The app's training pages
and the command line (``python -m gpt_core.train``) build the same plans with the same defaults
(:class:`Hyper`, :data:`ARCH_PRESETS`, :func:`finetune_defaults`); :mod:`gpt_core.train.job` runs one.
Nothing is worded here: refusals are Message codes (``runs.*``); a model's names come from the caller.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch.nn as nn

from .. import data as D
from ..backend import backend_of
from ..config import GPTConfig
from ..errors import InvalidInput
from ..evaluate import continue_text
from ..timing import Work, job_seconds
from . import (
    TrainConfig, estimate_finetune, estimate_run, make_sample_fn, prepare_classifier,
    prepare_instruction_finetune, prepare_pretraining,
)

ARCH_PRESETS: dict[str, dict[str, int]] = {
    "nano": {"n_layers": 1, "n_heads": 2, "d_model": 32, "context": 32},
    "tiny": {"n_layers": 2, "n_heads": 4, "d_model": 64, "context": 64},
    "small": {"n_layers": 4, "n_heads": 4, "d_model": 128, "context": 128},
}
SAMPLE_PROMPTS = {"corpus_fr": "Pour préparer une", "corpus_en": "To make a", "pydoc": "The"}
MAX_CORPUS_CHARS = 600_000      # a longer corpus is cut (tokenizing and training stay interactive)
MAX_PROMPT_CHARS = 2_000
SAMPLE_TOKENS = 24              # tokens of the live samples and the before/after answers
COMPARE_TOKENS = 32
ANSWER_END = "###"              # an instruction's answer stops where the next template section starts
LARGE_MODEL = 50_000_000        # above this many parameters, defaults favour LoRA and few steps
FEATURE_BATCH = 16              # texts per forward pass when a probe reads the frozen model


# ===================================================================== choices
@dataclass
class Hyper:
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: int = 5
    grad_accum: int = 1
    seed: int = 0


def train_config(h: Hyper, device: str, eval_every: int | None = None, eval_batches: int = 5,
                 sample_every: int = 0) -> TrainConfig:
    """The TrainConfig of a run (refused with a reason when a value is impossible); ~10 evaluations per run."""
    if eval_every is None:
        eval_every = max(1, h.steps // 10)
    return TrainConfig(lr=h.lr, batch_size=h.batch_size, steps=h.steps, grad_accum=h.grad_accum,
                       warmup=h.warmup, schedule=h.schedule, eval_every=eval_every,
                       eval_batches=eval_batches, sample_every=sample_every, seed=h.seed, device=device)


@dataclass
class FinetuneOptions:
    task: str = "instruct"          # "instruct" or "classify"
    method: str = "lora"            # instruct: "full" or "lora"; classify: "probe" or "blocks"
    lora_r: int = 8
    mask_prompt: bool = True        # instruct: the loss ignores the prompt tokens
    style: str = "alpaca"           # prompt template (gpt_core.data.ALPACA_STYLES)
    max_length: int = 128           # tokens per row (longer rows are cut)
    n_last: int | None = None       # classify with "blocks": train only the last N blocks (None: all)


PRETRAIN_HYPER = Hyper(steps=250, batch_size=16, lr=3e-3, warmup=12)   # the Pretraining page's and the CLI's
PRETRAIN_PRESET = "tiny"
PROBE_HYPER = Hyper(steps=100, batch_size=32, lr=1e-2, warmup=5)
BLOCKS_HYPER = Hyper(steps=150, batch_size=16, lr=3e-3, warmup=10)


def finetune_defaults(large: bool, task: str, n_layers: int, method: str | None = None) -> tuple[Hyper, FinetuneOptions]:
    """Sensible starting values: a probe for classification, LoRA, short rows and few steps for a big model.

    The classification default reads the class from the frozen model (``probe``): one pass over
    the tickets then seconds of training, where training the last blocks takes minutes on a CPU.
    """
    if task == "classify":
        if method == "blocks":
            hyper = Hyper(steps=20, batch_size=8, lr=1e-3, warmup=2) if large else BLOCKS_HYPER
            return hyper, FinetuneOptions("classify", "blocks", max_length=64, n_last=min(2, n_layers))
        return PROBE_HYPER, FinetuneOptions("classify", "probe", max_length=64)
    if large:
        return Hyper(steps=10, batch_size=4, lr=1e-3, warmup=1), FinetuneOptions("instruct", "lora", max_length=96)
    return Hyper(steps=80, batch_size=8, lr=3e-3, warmup=5), FinetuneOptions("instruct", "full", max_length=96)


@dataclass
class RunNames:
    """How a finished language model appears in every page's sidebar (chosen by the page, in its language)."""
    name: str = "run"               # short name; the job adds the time ("pretrained 14:02:11")
    label: str = "model trained here"


# =================================================================== tokenizers
PRETRAIN_TOKENIZERS = ("bpe", "gpt2")
CORPUS_BPE_VOCAB = 1600         # the vocabulary of a BPE learnt on the training corpus
_CORPUS_BPES: "dict[str, Any]" = {}


def pretrain_tokenizer(choice: str, source: str, text: str) -> tuple[Any, str]:
    """(tokenizer, name to rebuild it; "" when it must travel with the checkpoint) for a pretraining run.

    ``"bpe"``: a small byte-level BPE learnt on the corpus itself (the built-in corpora's are the
    Tokenizer lab's ``bpe-fr`` / ``bpe-en``): every token is a piece of the corpus, so a tiny model
    spends its few weights on the language, not on a 50,257-row vocabulary. ``"gpt2"``: GPT-2's.
    """
    from ..tokenizers import load_tokenizer
    from ..tokenlab import MIN_TRAIN_VOCAB, language_bpe, train_bpe

    if choice == "gpt2":
        return load_tokenizer("gpt2"), "gpt2"
    lang = {"corpus_fr": "fr", "corpus_en": "en"}.get(source)
    if lang is not None:
        return language_bpe(lang, CORPUS_BPE_VOCAB).tokenizer, f"bpe-{lang}"
    if len(text) < MIN_TRAIN_VOCAB:
        raise InvalidInput("runs.too_short_for_bpe", "The corpus ({n} characters) is too short to learn a tokenizer "
                           "from it (at least {minimum} characters): add text or choose GPT-2's tokenizer.",
                           n=len(text), minimum=MIN_TRAIN_VOCAB)
    key = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    if key not in _CORPUS_BPES:
        vocab = max(MIN_TRAIN_VOCAB, min(CORPUS_BPE_VOCAB, len(text) // 4))
        if len(_CORPUS_BPES) >= 8:
            _CORPUS_BPES.pop(next(iter(_CORPUS_BPES)))
        _CORPUS_BPES[key] = train_bpe(text, vocab, name="bpe-corpus")
    return _CORPUS_BPES[key], ""


# ======================================================================== plans
@dataclass
class RunPlan:
    """Everything a training job needs, validated in the script thread."""
    kind: str                                   # "pretrain" | "finetune" (the job manager's kind)
    task: str                                   # "lm" | "instruct" | "classify"
    cfg: TrainConfig
    make_model: Callable[[], nn.Module]         # builds the trainable copy (called in the worker)
    tokenizer: Any
    train_batches: Any
    val_batches: Any
    estimate: dict
    params: dict                                # what the user chose, for the UI and the metrics JSON
    names: RunNames = field(default_factory=RunNames)
    base: nn.Module | None = None               # the shared base model (read only), fine-tuning only
    method: str = "full"                        # "full", "lora", "probe" or "blocks"
    base_key: str = ""                          # the store key of the base model (fine-tuning), for the history
    tokenizer_name: str = ""                    # how to rebuild the tokenizer (a gpt_core.tokenizers name)
    owner: str | None = None                    # the session that started the run
    tracking: dict = field(default_factory=dict)  # {"wandb": bool, "project": str, "online": bool}
    prompts: list[str] = field(default_factory=list)    # before/after prompts (already formatted)
    shown: list[dict] = field(default_factory=list)     # what the UI shows for each prompt
    test_batches: Any = None                    # classification: held-out tickets (token ids)
    labels: list[str] | None = None
    max_length: int = 128
    style: str = "alpaca"
    sample_fn: Callable[[nn.Module], str] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    args: dict = field(default_factory=dict)    # the plan function's own arguments (model, tokenizer aside)
    recipe: Any = None                          # how a worker process builds it again (the app's)


def _evaluations(cfg: TrainConfig) -> int:
    """How many evaluations a run makes (at the start, every ``eval_every`` steps and at the end)."""
    every = cfg.eval_every or cfg.steps
    return int(cfg.eval_at_start) + cfg.steps // every + (cfg.steps % every != 0)


def _samples(cfg: TrainConfig) -> int:
    if not cfg.sample_every:
        return 0
    return cfg.steps // cfg.sample_every + (cfg.steps % cfg.sample_every != 0)


def _eval_rows(cfg: TrainConfig, loader) -> int:
    batches = len(loader) if cfg.eval_batches == 0 else min(cfg.eval_batches, len(loader))
    return _evaluations(cfg) * batches * (loader.batch_size or 1)


def _typical(lengths: Sequence[int], cap: int) -> int:
    """The padded length of a typical batch: the 90th percentile of the row lengths, at most ``cap``."""
    ordered = sorted(min(n, cap) for n in lengths) or [cap]
    return max(1, ordered[int(0.9 * (len(ordered) - 1))])


_SHAPE_MODELS: dict[tuple, nn.Module] = {}


def _shape_model(cfg: GPTConfig) -> nn.Module:
    """A random GPT of this shape, built once: the speeds of a pretraining run are measured on it."""
    key = tuple(sorted(asdict(cfg).items()))
    if key not in _SHAPE_MODELS:
        _SHAPE_MODELS.clear()  # one shape at a time is enough (the page's current choice)
        _SHAPE_MODELS[key] = prepare_pretraining(cfg)
    return _SHAPE_MODELS[key]


def _with_time(estimate: dict, model: nn.Module, work: Work, prompt_tokens: int, throwaway: bool = False) -> dict:
    """The memory estimate with its time replaced by the measured job time (see gpt_core.timing)."""
    timed = job_seconds(model, work, prompt_tokens, throwaway)
    return {**estimate, "seconds_estimate": timed["seconds"], "parts": timed["parts"], "assumes": timed["assumes"]}


def plan_pretrain(tokenizer, text: str, arch: dict, hyper: Hyper, device: str, prompt: str,
                  names: RunNames | None = None, source: str = "", val_fraction: float = 0.1,
                  tokenizer_name: str = "", estimate: dict | None = None) -> RunPlan:
    """A from-scratch GPT on ``text``: windows of ``context`` tokens, stride = context.

    ``estimate``: the cost already estimated (a worker building the page's plan again measures nothing)."""
    args = {"text": text, "arch": dict(arch), "hyper": hyper, "device": device, "prompt": prompt, "names": names,
            "source": source, "val_fraction": val_fraction, "tokenizer_name": tokenizer_name}
    cfg_model = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=arch["context"], d_model=arch["d_model"],
                          n_heads=arch["n_heads"], n_layers=arch["n_layers"])
    ctx = cfg_model.context_length
    train_text, val_text = D.split_text(text, val_fraction)
    try:
        train_ds = D.GPTWindowDataset.from_text(train_text, tokenizer, ctx, ctx)
        val_ds = D.GPTWindowDataset.from_text(val_text, tokenizer, ctx, ctx)
    except InvalidInput:
        raise InvalidInput("runs.corpus_too_short", "The corpus ({n} tokens) is too short for a context of {ctx} "
                           "tokens: the validation part (10 % of the text) needs at least one window of {ctx} + 1 "
                           "tokens, about {need} tokens in all. Add text or lower the context.",
                           n=len(tokenizer.encode(text)), ctx=ctx, need=int((ctx + 1) / val_fraction)) from None
    prompt = (prompt or "").strip()[:MAX_PROMPT_CHARS]
    sample_fn = make_sample_fn(tokenizer, prompt, SAMPLE_TOKENS)  # refuses an empty prompt
    train_loader = D.make_loader(train_ds, batch_size=hyper.batch_size, shuffle=True,
                                 drop_last=len(train_ds) >= hyper.batch_size, seed=hyper.seed)
    val_loader = D.make_loader(val_ds, batch_size=hyper.batch_size, shuffle=False, drop_last=False)
    cfg = train_config(hyper, device, eval_every=max(1, min(hyper.steps // 10, 50)),
                       sample_every=max(1, min(hyper.steps // 6, 25)))
    if estimate is None:
        estimate = _pretrain_estimate(cfg_model, hyper, device, cfg, val_loader, tokenizer, prompt)
    params = {"task": "lm", "source": source, "architecture": dict(arch), "vocab_size": tokenizer.vocab_size,
              "tokenizer": tokenizer_name, "train_windows": len(train_ds), "val_windows": len(val_ds),
              **asdict(hyper), "device": device}
    return RunPlan("pretrain", "lm", cfg, lambda: prepare_pretraining(cfg_model, seed=hyper.seed), tokenizer,
                   train_loader, val_loader, estimate, params, names or RunNames(), tokenizer_name=tokenizer_name,
                   prompts=[prompt], shown=[{"prompt": prompt}], max_length=ctx, sample_fn=sample_fn,
                   args=args)


def _pretrain_estimate(cfg_model: GPTConfig, hyper: Hyper, device: str, cfg: TrainConfig, val_loader, tokenizer,
                       prompt: str) -> dict:
    ctx = cfg_model.context_length
    estimate = estimate_run(cfg_model, hyper.batch_size, ctx, hyper.steps, device, "auto", hyper.grad_accum)
    if estimate["fits"]:
        work = Work(hyper.steps, hyper.batch_size * hyper.grad_accum, ctx, "full", _eval_rows(cfg, val_loader), ctx,
                    SAMPLE_TOKENS * (_samples(cfg) + 2), save_bytes=4 * estimate["params"])
        estimate = _with_time(estimate, _shape_model(cfg_model), work, len(tokenizer.encode(prompt)), True)
    return estimate


@dataclass
class _TaskData:
    train: Any
    val: Any
    make: Callable[[], nn.Module]
    prompts: list[str]
    shown: list[dict]
    row_tokens: int                 # padded length of a typical batch
    mean_tokens: int = 0            # mean length of a row (a probe batches rows of similar lengths)
    test: Any = None
    labels: list[str] | None = None
    sample_fn: Callable[[nn.Module], str] | None = None
    notes: dict = field(default_factory=dict)  # extra params shown with the run (the live sample's instruction)


def _instruction_data(base, tokenizer, records, opts: FinetuneOptions, hyper: Hyper, n_compare: int) -> _TaskData:
    D.require_columns(records, ["instruction", "output"])
    train_r, val_r, test_r = D.split_records(records, (0.8, 0.1, 0.1), seed=hyper.seed)
    datasets = [D.InstructionDataset(r, tokenizer, opts.style) for r in (train_r, val_r)]
    if opts.mask_prompt and all(len(p) >= opts.max_length for p, _ in datasets[0].items):
        raise InvalidInput("runs.prompts_fill_rows", "With {n} tokens per example and the prompt masked, the prompts "
                           "fill every row: no answer would count in the loss. Raise the length or stop masking.",
                           n=opts.max_length)
    train_loader, val_loader = (
        D.make_instruction_loader(ds, tokenizer, batch_size=hyper.batch_size, shuffle=i == 0, seed=hyper.seed,
                                  mask_prompt=opts.mask_prompt, max_length=opts.max_length)
        for i, ds in enumerate(datasets))
    lora = opts.method == "lora"
    shown = [{"instruction": r["instruction"], "input": r.get("input") or "", "expected": r.get("output") or ""}
             for r in test_r[:n_compare]]
    sample_prompt = D.format_alpaca(val_r[0], opts.style)[0]  # the live sample: an answer alone
    notes = {"sample_instruction": str(val_r[0]["instruction"])[:MAX_PROMPT_CHARS]}
    row_tokens = _typical([len(p) + len(a) + 1 for p, a in datasets[0].items], opts.max_length)
    return _TaskData(train_loader, val_loader,
                     lambda: prepare_instruction_finetune(base, lora=lora, lora_r=opts.lora_r),
                     [D.format_alpaca(r, opts.style)[0] for r in test_r[:n_compare]], shown, row_tokens,
                     sample_fn=lambda model: continue_text(model, tokenizer, sample_prompt, SAMPLE_TOKENS, ANSWER_END),
                     notes=notes)


def _classification_data(base, tokenizer, records, opts: FinetuneOptions, hyper: Hyper, n_compare: int) -> _TaskData:
    D.require_columns(records, ["text", "label"])
    vocab = D.label_vocab([r["label"] for r in records])
    parts = D.split_records(records, (0.7, 0.1, 0.2), seed=hyper.seed)
    sets = [D.ClassificationDataset([r["text"] for r in p], [r["label"] for r in p], tokenizer,
                                    max_length=opts.max_length, vocab=vocab) for p in parts]
    probe = opts.method == "probe"  # a probe reads every text once, in order, FEATURE_BATCH at a time
    train_loader, val_loader, test_loader = (
        D.make_loader(ds, batch_size=FEATURE_BATCH if probe else hyper.batch_size if i == 0 else 64,
                      shuffle=i == 0 and not probe, drop_last=False, seed=hyper.seed) for i, ds in enumerate(sets))
    labels = sets[0].label_names
    make = lambda: prepare_classifier(base, len(labels), freeze_until_last=opts.n_last, labels=labels)  # noqa: E731
    shown = [{"text": r["text"], "label": str(r["label"]).strip()} for r in parts[2][:n_compare]]
    lengths = [int(n) for ds in sets for n in ds.lengths]
    return _TaskData(train_loader, val_loader, make, [r["text"] for r in parts[2][:n_compare]], shown,
                     _typical(lengths, opts.max_length), -(-sum(lengths) // len(lengths)), test_loader, labels)


def registry_model(key: str) -> bool:
    """A registry model (embedded, GPT-2 family, hub) that loads again: not a model trained in this server."""
    from ..registry import list_sources

    return bool(key) and any(source.key == key for source in list_sources())


def _finetune_work(base: nn.Module, opts: FinetuneOptions, hyper: Hyper, cfg: TrainConfig, data: _TaskData,
                   adapter_only: bool) -> Work:
    """What a fine-tuning job will do, counted for :func:`gpt_core.timing.job_seconds`."""
    n_params, n_layers = backend_of(base).n_params(), backend_of(base).info().n_layers
    rows = hyper.batch_size * hyper.grad_accum
    n_compare = len(data.prompts)
    if opts.method == "probe":
        texts = sum(len(loader.dataset) for loader in (data.train, data.val, data.test))
        return Work(hyper.steps, rows, 0, "none", feature_rows=texts + 2 * n_compare, feature_tokens=data.mean_tokens)
    work = Work(hyper.steps, rows, data.row_tokens, opts.method if opts.task == "instruct" else
                f"blocks:{n_layers if opts.n_last is None else opts.n_last}/{n_layers}",
                _eval_rows(cfg, data.val), data.row_tokens, copy_bytes=4 * n_params,
                save_bytes=0 if adapter_only else 4 * n_params)
    if opts.task == "instruct":
        work.generated = SAMPLE_TOKENS * _samples(cfg) + 2 * COMPARE_TOKENS * n_compare
    else:
        work.eval_rows += 2 * (len(data.test.dataset) + n_compare)
    return work


def _finetune_estimate(base: nn.Module, opts: FinetuneOptions, hyper: Hyper, device: str, data: _TaskData) -> dict:
    """The memory estimate (and the checks that come with it), before the TrainConfig's own checks."""
    probe = opts.task == "classify" and opts.method == "probe"
    return estimate_finetune(base, opts.task, hyper.batch_size, opts.max_length, hyper.steps, device,
                             hyper.grad_accum, "full" if opts.task == "classify" else opts.method, opts.lora_r,
                             0 if probe else opts.n_last, len(data.labels) if data.labels else None)


def _finetune_time(estimate: dict, base: nn.Module, tokenizer, opts: FinetuneOptions, hyper: Hyper, cfg: TrainConfig,
                   data: _TaskData, base_key: str) -> dict:
    if estimate["fits"]:
        adapter_only = opts.task == "instruct" and opts.method == "lora" and registry_model(base_key)
        estimate = _with_time(estimate, base, _finetune_work(base, opts, hyper, cfg, data, adapter_only),
                              len(tokenizer.encode(data.prompts[0])) if data.prompts else 16)
    return estimate


def plan_finetune(base: nn.Module, tokenizer, records: Sequence[dict], opts: FinetuneOptions, hyper: Hyper,
                  device: str, names: RunNames | None = None, n_compare: int | None = None, base_key: str = "",
                  tokenizer_name: str = "", estimate: dict | None = None) -> RunPlan:
    """Instruction (full or LoRA) or classification (probe or last blocks) fine-tuning of ``base``.

    ``base`` is never changed: instruction and block training work on a copy, a probe reads it frozen.
    ``tokenizer`` is the base model's own (a worker gets both from ``base_key`` or the base's checkpoint).
    ``estimate``: the cost already estimated (a worker building the page's plan again measures nothing).
    """
    records = list(records)
    args = {"records": records, "opts": opts, "hyper": hyper, "device": device, "names": names,
            "n_compare": n_compare, "base_key": base_key, "tokenizer_name": tokenizer_name}
    large = backend_of(base).n_params() > LARGE_MODEL
    n_compare = n_compare if n_compare is not None else (2 if large else 3)
    build = _classification_data if opts.task == "classify" else _instruction_data
    data = build(base, tokenizer, records, opts, hyper, n_compare)
    probe = opts.task == "classify" and opts.method == "probe"
    memory = _finetune_estimate(base, opts, hyper, device, data) if estimate is None else None
    # a big model on a CPU: each forward pass counts, so evaluate on one batch and sample twice
    eval_batches = 1 if large else (4 if opts.task == "instruct" else 0)
    cfg = train_config(hyper, device, eval_every=max(1, hyper.steps // (10 if probe else 3 if large else 8)),
                       eval_batches=0 if probe else eval_batches,
                       sample_every=max(1, hyper.steps // (2 if large else 4)) if opts.task == "instruct" else 0)
    if estimate is None:
        estimate = _finetune_time(memory, base, tokenizer, opts, hyper, cfg, data, base_key)
    params = {"task": opts.task, **asdict(opts), **asdict(hyper), "device": device, "examples": len(records),
              "base": base_key, "tokenizer": tokenizer_name, **data.notes}
    return RunPlan("finetune", opts.task, cfg, data.make, tokenizer, data.train, data.val, estimate, params,
                   names or RunNames(), base=base, method=opts.method, base_key=base_key,
                   tokenizer_name=tokenizer_name, prompts=data.prompts, shown=data.shown, test_batches=data.test,
                   labels=data.labels, max_length=opts.max_length, style=opts.style, sample_fn=data.sample_fn,
                   args=args)
