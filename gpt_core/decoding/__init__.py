"""From scores to text: logit processors, greedy decoding, sampling and beam search.

The model gives one score (logit) per token of the vocabulary. A chain of
*processors* reshapes those scores (temperature, top-k, top-p, min-p,
repetition penalty, no-repeat n-gram); a *strategy* then picks the next token:

* :func:`greedy` always takes the most probable token;
* :func:`sample` draws it from the softmax, reproducibly under a seed;
* :func:`beam_search` keeps the ``num_beams`` best partial sequences.

Every function returns a trace the app can draw: for each generated token the
ten best candidates, the chosen token's probability, rank and the entropy
(in nats) of the distribution it was drawn from; for beam search, every
candidate considered at each step, kept or pruned.

Any model :func:`gpt_core.backend.backend_of` understands works: gpt_core's
:class:`~gpt_core.model.GPT` (pre-allocated KV cache) and Hugging Face causal
LMs (``past_key_values``). Processors match Hugging Face's
``transformers.generation.logits_process`` token for token, and
``beam_search`` matches ``generate(num_beams=k, do_sample=False)``.

Modules, by role:

=================  ==========================================================
``processors``     the processors, ``build_processors``, ``explain_processors``
``prompt``         checks on a request: prompt, context window, EOS, stop strings
``generate``       the shared token loop, ``greedy`` and ``sample``
``beam``           ``beam_search`` and its tree
``cuda_graph``     greedy decoding of our GPT replayed as CUDA graphs
``stats``          entropy and per-step statistics shared by the above
=================  ==========================================================
"""
from __future__ import annotations

from .beam import MAX_BEAMS, BeamCandidate, BeamResult, BeamStep, Hypothesis, beam_search
from .generate import TOP_N, GenerationResult, Step, greedy, sample
from .processors import (
    LogitsProcessor,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    StepView,
    Temperature,
    TopK,
    TopP,
    build_processors,
    explain_processors,
)
from .prompt import prepare_prompt, validate_request

__all__ = [
    "LogitsProcessor", "Temperature", "TopK", "TopP", "MinP", "RepetitionPenalty", "NoRepeatNGram",
    "build_processors", "explain_processors", "StepView",
    "Step", "GenerationResult", "Hypothesis", "BeamCandidate", "BeamStep", "BeamResult",
    "greedy", "sample", "beam_search", "validate_request", "prepare_prompt",
    "MAX_BEAMS", "TOP_N",
]

