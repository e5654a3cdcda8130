"""``python -m gpt_core.train {pretrain,instruct,classify}``: the app's training runs, from a terminal.

The same plans as the app's Pretraining and Fine-tuning pages (:mod:`gpt_core.train.plans`: same options,
same defaults), run by the same job (:func:`gpt_core.train.job.run_plan`): the checkpoint lands in
``<runs>/checkpoints/<run_id>`` and the run in ``<runs>/history.sqlite`` (:mod:`gpt_core.runlog`), so the app's
History page lists it and loads it as a model. ``<runs>`` is ``$LLM_EXPLORER_RUNS`` (or ``--runs-dir``), else
the app's default. A progress bar goes to stderr; ``--json`` writes every event as one JSON line on stdout.

Under ``torchrun --nproc_per_node N`` every process trains its share of each batch
(:mod:`gpt_core.train.distributed`); one optimizer step still covers ``--batch-size x --grad-accum`` rows, and
only the first process saves and records. Exit status: 0 done, 1 failed or diverged, 2 refused, 130 cancelled.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

from .. import data as D
from .. import runlog
from ..backend import backend_of
from ..errors import GPTCoreError, InvalidInput, Message
from ..hub import settle
from . import PRECISIONS, TRAINING_STATE, pick_device
from . import distributed
from .job import run_plan
from .plans import (
    ARCH_PRESETS, LARGE_MODEL, PRETRAIN_HYPER, PRETRAIN_PRESET, PRETRAIN_TOKENIZERS, SAMPLE_PROMPTS,
    Hyper, RunNames, RunPlan, finetune_defaults, plan_finetune, plan_pretrain, pretrain_tokenizer,
)

CORPORA = ("corpus_fr", "corpus_en", "pydoc")       # the Pretraining page's built-in texts
EXIT = {"done": 0, "failed": 1, "diverged": 1, "cancelled": 130}


# ===================================================================== options
def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (defaults: the app's page for this model and task)")
    g.add_argument("--steps", type=int, help="optimizer updates")
    g.add_argument("--batch-size", type=int, help="rows per optimizer step and micro-batch (see --grad-accum)")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--schedule", choices=("cosine", "constant"))
    g.add_argument("--warmup", type=int, help="steps of linear warm-up")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", default="auto", help="auto (CUDA, then mps, then cpu), cpu, cuda, mps")
    g.add_argument("--dtype", default="auto", choices=PRECISIONS, help="auto: bf16 on a capable GPU, else fp32")
    o = p.add_argument_group("output")
    o.add_argument("--runs-dir", help="where checkpoints and the run history live (default: $LLM_EXPLORER_RUNS, "
                   "else the app's)")
    o.add_argument("--name", help="the model's name in the app, the end time added (default: preset and tokenizer, "
                   "or base model and method)")
    o.add_argument("--checkpoint-every", type=int, default=0, help="also save every N steps, to --resume after "
                   "an interruption (0: only at the end)")
    o.add_argument("--resume", metavar="RUN_ID", help="continue this run from its last --checkpoint-every save "
                   "(give the same options as when it started)")
    o.add_argument("--json", action="store_true", help="every event as one JSON line on stdout")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpt_core.train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="task", required=True)
    pre = sub.add_parser("pretrain", help="a small GPT from scratch on a text")
    pre.add_argument("--data", default="corpus_fr", help=f"{', '.join(CORPORA)}, or a .txt/.json/.jsonl/.csv file")
    pre.add_argument("--tokenizer", default="bpe", choices=PRETRAIN_TOKENIZERS,
                     help="bpe: learnt on the corpus (the page's default); gpt2: GPT-2's")
    pre.add_argument("--preset", default=PRETRAIN_PRESET, choices=list(ARCH_PRESETS))
    for flag in ("layers", "heads", "d-model", "context"):
        pre.add_argument(f"--{flag}", type=int, help="overrides the preset")
    pre.add_argument("--prompt", help="the live samples' prompt (default: the corpus's own first words)")
    for task, helptext in (("instruct", "instruction fine-tuning (full or LoRA)"),
                           ("classify", "a classifier on a pretrained model (probe or last blocks)")):
        ft = sub.add_parser(task, help=helptext)
        ft.add_argument("--model", help="registry key or model folder (default: the app's French default model)")
        ft.add_argument("--data", help="a .json/.jsonl/.csv file (default: the app's bundled examples)")
        ft.add_argument("--method", choices=("full", "lora") if task == "instruct" else ("probe", "blocks"))
        ft.add_argument("--max-length", type=int, help="tokens per example")
        if task == "instruct":
            ft.add_argument("--lora-r", type=int, help="LoRA rank")
            ft.add_argument("--no-mask-prompt", action="store_true", help="the loss also counts the prompt")
            ft.add_argument("--style", choices=tuple(D.ALPACA_STYLES), help="prompt template")
        else:
            ft.add_argument("--last-blocks", type=int, help="with --method blocks: train only the last N blocks")
    for p in sub.choices.values():
        _common(p)
    return parser


def _hyper(args, default: Hyper) -> Hyper:
    chosen = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
              "warmup": args.warmup, "grad_accum": args.grad_accum, "seed": args.seed}
    hyper = replace(default, **{k: v for k, v in chosen.items() if v is not None})
    if args.warmup is None and hyper.warmup >= hyper.steps:  # a default warm-up longer than the few steps asked
        hyper = replace(hyper, warmup=hyper.steps // 10)
    return hyper


# ======================================================================= plans
def corpus_text(data: str) -> tuple[str, str]:
    """(text, source) of ``--data``: a built-in corpus, or a file (documents joined by blank lines, as the page)."""
    if data in CORPORA:
        docs = D.pydoc_documents() if data == "pydoc" else D.split_documents(D.load_bundled(data))
        return "\n\n".join(docs), data
    path = _file(data)
    if path.suffix.lower() == ".txt":
        docs = D.split_documents(D.read_text_upload(path.read_bytes(), path.name, None))
    else:
        docs = D.records_texts(D.read_records(path.read_bytes(), path.name, None), path.name)[0]
    text = "\n\n".join(d.strip() for d in docs if d.strip())
    if not text:
        raise InvalidInput("train.cli_no_text", "'{name}' holds no text to train on.", name=path.name)
    return text, "file"


def _file(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        raise InvalidInput("train.cli_no_file", "No file '{name}' (or a built-in name: {names}).", name=name,
                           names=", ".join(CORPORA))
    return path


def _split(hyper: Hyper, dist) -> Hyper:
    """Each process's micro-batch and accumulation, for the same rows per step as one process."""
    if dist is None:
        return hyper
    rows, accum = distributed.split_batch(hyper.batch_size, hyper.grad_accum, dist.world)
    return replace(hyper, batch_size=rows, grad_accum=accum)


def pretrain_plan(args, device: str, dist) -> tuple[RunPlan, Hyper]:
    text, source = corpus_text(args.data)
    tokenizer, tok_name = pretrain_tokenizer(args.tokenizer, source, text)
    arch = dict(ARCH_PRESETS[args.preset])
    arch.update({k: v for k, v in (("n_layers", args.layers), ("n_heads", args.heads), ("d_model", args.d_model),
                                   ("context", args.context)) if v is not None})
    hyper = _hyper(args, PRETRAIN_HYPER)
    prompt = args.prompt or SAMPLE_PROMPTS.get(source) or " ".join(text.split()[:3])
    # a name in no language (the app shows it on French and English pages alike): preset and tokenizer
    names = RunNames(args.name or f"{args.preset}-{tok_name or 'bpe'}", "model trained from the command line")
    plan = plan_pretrain(tokenizer, text, arch, _split(hyper, dist), device, prompt, names, source,
                         tokenizer_name=tok_name, estimate={})
    return plan, hyper


def _load_base(key: str, device: str, quiet: bool):
    from ..registry import load_model

    def said(fraction: float, message: Message) -> None:
        if not quiet:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)
    return load_model(key, device=device, progress=said)


def finetune_plan(args, device: str, dist) -> tuple[RunPlan, Hyper]:
    from ..registry import default_model

    key = args.model or default_model("fr")
    if Path(key).expanduser().is_dir():
        key = str(Path(key).expanduser().resolve())
    base = _load_base(key, device, args.no_progress or (dist is not None and not dist.is_main))
    info = backend_of(base.model).info()
    method = args.method if args.task == "classify" else None
    d_hyper, opts = finetune_defaults(info.n_params > LARGE_MODEL, args.task, info.n_layers, method)
    chosen = {"method": args.method, "max_length": args.max_length, "lora_r": getattr(args, "lora_r", None),
              "style": getattr(args, "style", None), "n_last": getattr(args, "last_blocks", None)}
    opts = replace(opts, **{k: v for k, v in chosen.items() if v is not None})
    if getattr(args, "no_mask_prompt", False):
        opts = replace(opts, mask_prompt=False)
    if dist is not None and opts.method == "probe":
        raise InvalidInput("train.cli_probe_one_process", "A probe reads the texts once and trains in seconds: run it "
                           "without torchrun, or choose --method blocks.")
    path = _file(args.data) if args.data else None
    upload = (path.read_bytes(), path.name) if path else None
    records = D.task_records(args.task, upload, max_bytes=None)
    hyper = _hyper(args, d_hyper)
    names = RunNames(args.name or f"{Path(key).name}-{opts.method}", "model fine-tuned from the command line")
    plan = plan_finetune(base.model, base.tokenizer, records, opts, _split(hyper, dist), device, names,
                         base_key=key, tokenizer_name=getattr(base.tokenizer, "name", ""), estimate={})
    return plan, hyper


# ========================================================================= run
class _Silent(runlog.Recorder):
    """The recorder of the processes that are not the first under torchrun: they record nothing."""

    def _record(self, *args, **kwargs) -> None:
        self.recorded = True


def _run_id(args, dist) -> str:
    """A new id (the same on every process), or the one to resume."""
    if args.resume:
        runlog.checkpoint_dir(args.resume)  # checks the id
        return args.resume
    ids = [uuid.uuid4().hex[:10]]
    if dist is not None and dist.world > 1:
        import torch.distributed as torch_dist

        torch_dist.broadcast_object_list(ids, src=0)
    return ids[0]


def configure(plan: RunPlan, args, hyper: Hyper, dist) -> Path | None:
    """The run's id, precision, periodic saves and recorded options; returns the folder to resume from."""
    plan.run_id, plan.owner = _run_id(args, dist), None
    folder = runlog.checkpoint_dir(plan.run_id)
    plan.cfg = replace(plan.cfg, precision=args.dtype, checkpoint_every=args.checkpoint_every,
                       checkpoint_dir=str(folder) if args.checkpoint_every else None)
    plan.params.update({"batch_size": hyper.batch_size, "grad_accum": hyper.grad_accum, "launched": "command line",
                        "processes": dist.world if dist else 1, "precision": args.dtype})
    if dist is not None:
        plan.params.update({"batch_per_process": plan.cfg.batch_size, "grad_accum_per_process": plan.cfg.grad_accum})
    if not args.resume:
        return None
    settle(folder)  # a save killed half-way is finished or undone first
    if not (folder / TRAINING_STATE).is_file():
        raise InvalidInput("train.cli_nothing_to_resume", "Run '{run_id}' has no saved training state in {folder}: only a "
                           "run started with --checkpoint-every can be resumed.", run_id=plan.run_id,
                           folder=str(folder))
    return folder


def jsonable(event: dict) -> dict:
    """An event as plain JSON (messages as their code and English text)."""
    out = {k: ({"code": v.code, "text": str(v)} if isinstance(v, Message) else v) for k, v in event.items()}
    return runlog.jsonable(out)


class Progress:
    """A tqdm bar over the optimizer steps (stderr), with the latest losses; status lines above it."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="step", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
        self.val: float | None = None

    def see(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "step":
            self.bar.update(event["step"] - self.bar.n)
            post = {"loss": f"{event['train_loss']:.3f}", "lr": f"{event['lr']:.2e}"}
            if self.val is not None:
                post["val"] = f"{self.val:.3f}"
            self.bar.set_postfix(post, refresh=False)
        elif kind == "eval":
            self.val = event["val_loss"]
        elif kind in ("status", "sample") and not self.bar.disable:
            self.bar.write(str(event.get("message") or f"  step {event['step']}: {event['text']!r}"), file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _cancel_on_interrupt(cancel: threading.Event, dist) -> None:
    """Ctrl-C once: stop after the current step, save nothing, record the run as cancelled; twice: stop now.
    Under torchrun, torchrun itself stops every process."""
    if dist is not None or threading.current_thread() is not threading.main_thread():
        return

    def first(signum, frame):
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCancelling after this step (Ctrl-C again to stop at once)…", file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, first)


def execute(plan: RunPlan, args, dist, resume: Path | None) -> str:
    """Run the job, showing its events; returns how it ended (done, cancelled, diverged, failed)."""
    main = dist is None or dist.is_main
    cancel = threading.Event()
    _cancel_on_interrupt(cancel, dist)
    record = runlog.Recorder(plan) if main else _Silent(plan)
    bar = Progress(plan.cfg.steps, main and not args.no_progress)
    if resume is not None and main:
        bar.bar.write(f"Resuming run {plan.run_id} from {resume}", file=sys.stderr)
    ending = "failed"
    try:
        for event in run_plan(plan, cancel, record, dist=dist, resume=resume):
            bar.see(event)
            if main and args.json:
                print(json.dumps(jsonable(event), ensure_ascii=False), flush=True)
            if event.get("type") in EXIT:
                ending = event["type"]
                if ending != "done" and main:
                    bar.bar.write(str(event.get("message", "")), file=sys.stderr)
    finally:
        bar.close()
    return ending


def _report(plan: RunPlan, ending: str) -> None:
    rec = runlog.RunStore().get(plan.run_id)
    if rec is None:
        return
    folder = runlog.RunStore().checkpoint_path(rec)
    last = {k: rec.metrics.get(k) for k in ("train_loss", "val_loss", "accuracy") if rec.metrics.get(k) is not None}
    print(f"Run {rec.run_id} ({ending}): {rec.name} · {rec.seconds:.1f} s · "
          + ", ".join(f"{k} {v:.4f}" for k, v in last.items()), file=sys.stderr)
    if folder is not None:
        print(f"Checkpoint: {folder}\nIn the app: History page (its run history is {runlog.runs_dir()}).",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notes: nothing to act on
    if args.runs_dir:
        os.environ["LLM_EXPLORER_RUNS"] = str(Path(args.runs_dir).expanduser().resolve())
    dist = None
    try:
        dist = distributed.from_env(args.device)
        device = str(dist.device) if dist is not None else str(pick_device(args.device))
        build = pretrain_plan if args.task == "pretrain" else finetune_plan
        plan, hyper = build(args, device, dist)
        resume = configure(plan, args, hyper, dist)
        ending = execute(plan, args, dist, resume)
    except GPTCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist is not None:
            dist.close()
    if dist is None or dist.is_main:
        _report(plan, ending)
    return EXIT.get(ending, 1)
