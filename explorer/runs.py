"""Training runs without Streamlit: the plans of :mod:`gpt_core.train.plans`, with a worker's recipe.

The choices, defaults and plans are gpt_core's (the command line ``python -m gpt_core.train`` builds the
same ones); this module re-exports them and adds what the app needs: a :class:`Recipe` on each plan, so
that :mod:`explorer.worker` can build it again in a worker process. :mod:`explorer.run_job` runs a plan as
a job. Refusals are Message codes (``runs.*``, locale keys ``core.runs.*``) the page says in the user's
language; a model's names come from the page.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from gpt_core.train import plans as P
from gpt_core.train.plans import (  # noqa: F401  (re-exported: the pages and tests read them from here)
    ANSWER_END, ARCH_PRESETS, BLOCKS_HYPER, COMPARE_TOKENS, CORPUS_BPE_VOCAB, FEATURE_BATCH, LARGE_MODEL,
    MAX_CORPUS_CHARS, MAX_PROMPT_CHARS, PRETRAIN_HYPER, PRETRAIN_PRESET, PRETRAIN_TOKENIZERS, PROBE_HYPER,
    SAMPLE_PROMPTS, SAMPLE_TOKENS, FinetuneOptions, Hyper, RunNames, RunPlan, finetune_defaults, pretrain_tokenizer, registry_model, train_config,
)


@dataclass
class Recipe:
    """How to build the same plan again in a worker process (:mod:`explorer.worker`): the plan function's own
    arguments, all picklable; the model and the tokenizer travel as references, never as weights."""
    kind: str                       # "pretrain" | "finetune": which plan function
    args: dict                      # its keyword arguments, model and tokenizer aside
    model: dict | None = None       # fine-tuning: {"key": registry key or folder} or {"run_id": checkpoint's run}
    tokenizer: dict | None = None   # pretraining: {"name"}, {"bpe": lang} or {"json", "name", "label"}


def _recipe(kind: str, args: dict, tokenizer=None, base: nn.Module | None = None) -> Recipe | None:
    """The plan's recipe for a worker process; None when the model or the tokenizer cannot be had there."""
    from explorer.worker import model_ref, tokenizer_ref

    if kind == "pretrain":
        ref = tokenizer_ref(tokenizer, args["tokenizer_name"])
        return Recipe(kind, args, tokenizer=ref) if ref else None
    ref = model_ref(base, args["base_key"])
    return Recipe(kind, args, model=ref) if ref else None


def plan_pretrain(tokenizer, *args, **kwargs) -> RunPlan:
    """:func:`gpt_core.train.plans.plan_pretrain`, with its recipe."""
    plan = P.plan_pretrain(tokenizer, *args, **kwargs)
    plan.recipe = _recipe("pretrain", plan.args, tokenizer=tokenizer)
    return plan


def plan_finetune(base: nn.Module, *args, **kwargs) -> RunPlan:
    """:func:`gpt_core.train.plans.plan_finetune`, with its recipe."""
    plan = P.plan_finetune(base, *args, **kwargs)
    plan.recipe = _recipe("finetune", plan.args, base=base)
    return plan
