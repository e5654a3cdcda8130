"""Greedy decoding of our GPT replayed as CUDA graphs.

Each decode step (``GPT.decode_step``: the model's own blocks with static
shapes), the argmax and the step's trace statistics are captured once per
attention span and replayed for every new token, which removes the Python and
kernel-launch overhead that dominates one-token steps on a GPU. Off CUDA the
same steps run eagerly, which is how the tests check it on a CPU.
"""
from __future__ import annotations

import threading
import weakref

import torch

from ..model import GPT
from .stats import step_stats

# force "sdpa" or "matmul" inside the captured decode step (benchmarks); None: see graph_attention
FORCE_ATTENTION: str | None = None


def graph_ok(model: GPT, processors, strategy: str) -> bool:
    """Whether greedy decoding of ``model`` can go through CUDA graphs."""
    return (strategy == "greedy" and not processors and not model.training
            and next(model.parameters()).device.type == "cuda")


def span_for(position: int, context: int) -> int:
    """Cache length a decode step at ``position`` attends over: 128, 256, 512... (at most the context)."""
    span = 128
    while span <= position:
        span *= 2
    return min(span, context)


def graph_attention(model: GPT) -> str:
    """The attention kernel for the captured step."""
    # measured on an H100: with one query, fused SDPA in float32 falls back to a slow kernel,
    # while in bf16/fp16 it beats the explicit matrix products
    if FORCE_ATTENTION:
        return FORCE_ATTENTION
    return "matmul" if model.tok_emb.weight.dtype == torch.float32 else "sdpa"


class GraphRunner:
    """Greedy decoding of our GPT on CUDA: decode step + argmax + step trace replayed as one CUDA graph.

    Buffers (cache of the full context, step counter, position, token, trace
    rows) are allocated once per model and reused; one graph is captured per
    attention span (128, 256, ... tokens) the first time it is needed, and a
    lock serialises users of a shared model. Off CUDA the same steps run eagerly.
    """

    def __init__(self, model: GPT, n_top: int, attention: str = "sdpa"):
        self._model = weakref.ref(model)  # a strong reference would keep the model alive in _RUNNERS
        self.n_top, self.attention, self.lock = n_top, attention, threading.Lock()
        dev, ctx = next(model.parameters()).device, model.cfg.context_length
        self.context = ctx
        self.cache = model.new_cache(1, ctx)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)        # position of tok_buf
        self.idx = torch.zeros(1, dtype=torch.long, device=dev)        # index of the next new token
        self.tok_buf = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.tokens = torch.zeros(ctx, dtype=torch.long, device=dev)
        self.ints = torch.zeros(ctx, 2 + n_top, dtype=torch.long, device=dev)
        self.floats = torch.zeros(ctx, 3 + n_top, dtype=torch.float32, device=dev)
        self.graphs: dict[int, "torch.cuda.CUDAGraph"] = {}
        self.use_graphs = dev.type == "cuda"
        self.position = 0                                                # host copy of pos
        self.key = None

    @property
    def model(self) -> GPT:
        return self._model()

    def _record(self, logits: torch.Tensor) -> None:
        tok = logits.argmax(dim=-1)  # (1,)
        int_row, float_row = step_stats(logits, tok, self.n_top)
        self.ints.index_copy_(0, self.idx, int_row[None])
        self.floats.index_copy_(0, self.idx, float_row[None])
        self.tokens.index_copy_(0, self.idx, tok)
        self.tok_buf.copy_(tok.view(1, 1))
        self.idx.add_(1)

    def _body(self, span: int) -> None:
        logits = self.model.decode_step(self.tok_buf, self.pos, self.cache, span, self.attention)
        self.pos.add_(1)
        self._record(logits[:, -1, :].float())

    def start(self, ids: torch.Tensor) -> None:
        """Prefill the prompt (eagerly) and record the first new token."""
        P = ids.size(1)
        self.cache.crop(0)
        logits = self.model(ids, cache=self.cache, last_only=True)[:, -1, :].float()
        self.pos.fill_(P)
        self.idx.zero_()
        self._record(logits)
        self.position = P

    def _capture(self, span: int) -> None:
        saved = [t.clone() for t in (self.tok_buf, self.pos, self.idx)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph, as CUDA graphs require
            self._body(span)
        torch.cuda.current_stream().wait_stream(stream)
        for buf, value in zip((self.tok_buf, self.pos, self.idx), saved):
            buf.copy_(value)  # undo the warm-up step: the replay computes it again
        graph = torch.cuda.CUDAGraph()
        pool = next(iter(self.graphs.values())).pool() if self.graphs else None
        with torch.cuda.graph(graph, pool=pool):
            self._body(span)
        self.graphs[span] = graph

    def replay(self) -> None:
        """Decode the next token."""
        span = span_for(self.position, self.context)
        if not self.use_graphs:
            self._body(span)
        else:
            if span not in self.graphs:
                self._capture(span)
            self.graphs[span].replay()
        self.position += 1


_RUNNERS: "weakref.WeakKeyDictionary[GPT, GraphRunner]" = weakref.WeakKeyDictionary()


def graph_runner(model: GPT, n_top: int, attention: str = "sdpa") -> GraphRunner:
    """The runner of ``model`` (created, or re-created when its weights moved or were re-cast)."""
    key = (model.tok_emb.weight.data_ptr(), model.tok_emb.weight.dtype, n_top, attention)
    runner = _RUNNERS.get(model)
    if runner is None or runner.key != key:
        runner = GraphRunner(model, n_top, attention)
        runner.key = key
        _RUNNERS[model] = runner
    return runner


def greedy_on_graph(model: GPT, ids: torch.Tensor, budget: int, stop, n_top: int,
                    trace: bool) -> tuple[list[int], list, list, str | None]:
    """Up to ``budget`` greedy tokens after ``ids``: ``(new_ids, trace ints, trace floats, stop reason or None)``.

    ``stop`` is called with each new token (a device tensor) when ``stop.active``
    and returns a stop reason or None.
    """
    runner = graph_runner(model, n_top, graph_attention(model))
    stop_reason, n_new = None, 0
    with runner.lock, torch.inference_mode():
        runner.start(ids)
        for i in range(budget):
            if i:
                runner.replay()
            n_new = i + 1
            if stop.active and (stop_reason := stop(runner.tokens[i])):
                break
        new_ids = runner.tokens[:n_new].tolist()
        ints, floats = (runner.ints[:n_new].tolist(), runner.floats[:n_new].tolist()) if trace else ([], [])
    return new_ids, ints, floats, stop_reason
