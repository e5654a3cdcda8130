"""Beam search: keep the ``num_beams`` best partial sequences, and the whole search tree.

It follows Hugging Face's beam search step for step (and matches
``generate(num_beams=k, do_sample=False)``, scores included): the log-softmax
of each beam (then the processors) is added to the beam's running log-prob,
the 2 x num_beams best continuations over all beams x vocabulary are taken,
the best num_beams that did not end continue, and those that ended (EOS or the
last step) compete for the list of finished hypotheses with the score
sum / length ** length_penalty. All bookkeeping stays on the device; the tree
is moved to the host once, at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..backend import backend_of
from ..errors import InvalidInput, Message, note
from .processors import apply, as_number, as_processors
from .prompt import eos_of, prompt_tensor, validate_request

__all__ = ["BeamCandidate", "BeamStep", "Hypothesis", "BeamResult", "beam_search", "MAX_BEAMS"]

MAX_BEAMS = 16      # more beams than this is slow and teaches nothing more
_NEG = -1.0e9       # "impossible" score used by the bookkeeping (as Hugging Face does)


MAX_LENGTH_PENALTY = 10.0


@dataclass
class BeamCandidate:
    """One continuation considered at a beam-search step."""

    beam_id: int                 # its beam slot at the next step if kept, else -1
    parent_beam_id: int          # the beam slot it extends
    token_id: int
    token_logprob: float         # log-prob of this token (after processors)
    cumulative_logprob: float    # parent's running log-prob + token_logprob
    score: float                 # cumulative_logprob / new_length ** length_penalty
    kept: bool                   # continues as a running beam
    finished: bool               # ended here (EOS or last step) and entered the list of finished hypotheses


@dataclass
class BeamStep:
    step: int                    # 0 = first generated token
    candidates: list[BeamCandidate]


@dataclass
class Hypothesis:
    new_ids: list[int]
    token_logprobs: list[float]
    sum_logprob: float
    score: float                 # sum_logprob / len(new_ids) ** length_penalty
    finished_by: str             # 'eos' | 'max_new_tokens' | 'context'


@dataclass
class BeamResult:
    prompt_ids: list[int]
    sequences: list[Hypothesis]  # best first
    tree: list[BeamStep]
    num_beams: int
    length_penalty: float
    notes: list[Message] = field(default_factory=list)

    @property
    def best(self) -> Hypothesis:
        return self.sequences[0]


# ================================================================== the request
@dataclass(frozen=True)
class _Request:
    """A checked beam-search request."""

    k: int                       # number of beams
    lp: float                    # length penalty
    eos_id: int | None
    early_stopping: bool | str   # True, False or "never" (Hugging Face's meanings)
    vocab: int
    context: int
    prompt_len: int
    budget: int                  # tokens that can be generated (the window may hold fewer than asked)
    cut: bool                    # the context window made the budget smaller than max_new_tokens

    @property
    def max_length(self) -> int:
        return self.prompt_len + self.budget

    @property
    def n_cand(self) -> int:
        return 2 * self.k        # enough to leave k live beams even if k end on EOS


def _check_request(backend, prompt_ids, num_beams, max_new_tokens, length_penalty, eos_id,
                   early_stopping) -> tuple[_Request, torch.Tensor]:
    """Validate every argument (in a fixed order) and return the request with the prompt tensor."""
    vocab = backend.vocab_size
    k = as_number("num_beams", num_beams, integer=True)
    if k < 1:
        raise InvalidInput("decoding.beams_too_few", "Beam search needs at least 1 beam (got {k}).", k=k)
    if k > MAX_BEAMS:
        raise InvalidInput("decoding.beams_too_many", "At most {max} beams are allowed (got {k}).",
                           max=MAX_BEAMS, k=k)
    if k > vocab:
        raise InvalidInput("decoding.beams_above_vocab",
                           "{k} beams cannot be more than the vocabulary size ({vocab} tokens).", k=k, vocab=vocab)
    lp = as_number("length_penalty", length_penalty)
    if not math.isfinite(lp):
        raise InvalidInput("decoding.bad_length_penalty", "The length penalty must be a finite number.")
    if abs(lp) > MAX_LENGTH_PENALTY:  # length ** 1e9 overflows; the useful range is about 0 to 2
        raise InvalidInput("decoding.length_penalty_out_of_range", "The length penalty must be between -{limit} "
                           "and {limit} (got {value}); 1 divides by the length, 0 ignores it.",
                           limit=MAX_LENGTH_PENALTY, value=lp)
    if early_stopping not in (True, False, "never"):
        raise InvalidInput("decoding.bad_early_stopping", "early_stopping must be True, False or 'never'.")
    ids = prompt_tensor(prompt_ids, vocab, backend.device)
    ctx = backend.context_length
    P = ids.size(1)
    validate_request(P, max_new_tokens, ctx)
    eos_id = eos_of(eos_id, vocab)
    budget = min(int(max_new_tokens), ctx - P)
    req = _Request(k=k, lp=lp, eos_id=eos_id, early_stopping=early_stopping, vocab=vocab, context=ctx,
                   prompt_len=P, budget=budget, cut=budget < max_new_tokens)
    return req, ids


# ============================================================ one step's candidates
@dataclass
class _Expansion:
    """The 2k best continuations of one step, over all beams x vocabulary."""

    scores: torch.Tensor         # (2k,) cumulative log-probs
    parent: torch.Tensor         # (2k,) beam each one extends
    token: torch.Tensor          # (2k,) token each one appends
    tok_lp: torch.Tensor         # (2k,) log-prob of that token (after processors)
    ended: torch.Tensor          # (2k,) bool: EOS or the last step
    seq: torch.Tensor            # (2k, max_length) parent's sequence + token
    lps: torch.Tensor            # (2k, budget) parent's per-token log-probs + tok_lp
    gen_len: int                 # generated length once the token is appended


# ================================================================ the beam state
class _BeamState:
    """Running beams and finished hypotheses, as fixed-size tensors on the device."""

    def __init__(self, ids: torch.Tensor, req: _Request):
        k, P, device = req.k, req.prompt_len, ids.device
        self.req, self.cur = req, P
        self.in_top_k = torch.arange(req.n_cand, device=device) < k
        self.seq = torch.zeros(k, req.max_length, dtype=torch.long, device=device)
        self.seq[:, :P] = ids
        self.lps = torch.zeros(k, max(req.budget, 1), device=device)       # per-token log-probs
        self.scores = torch.full((k,), _NEG, device=device)
        self.scores[0] = 0.0                              # all beams start identical: only beam 0 counts
        self.fin_seq, self.fin_lps = self.seq.clone(), self.lps.clone()
        self.fin_scores = torch.full((k,), _NEG, device=device)
        self.fin_flag = torch.zeros(k, dtype=torch.bool, device=device)
        self.fin_len = torch.zeros(k, dtype=torch.long, device=device)
        self.improvable = torch.ones((), dtype=torch.bool, device=device)
        self.tree_rows: list[tuple[torch.Tensor, torch.Tensor]] = []

    def expand(self, logits: torch.Tensor, processors) -> _Expansion:
        """Score every beam x token and keep the 2k best continuations."""
        req, cur = self.req, self.cur
        logp = logits.log_softmax(dim=-1)
        logp = apply(processors, self.seq[:, :cur], logp) if processors else logp
        total = (logp + self.scores[:, None]).reshape(1, -1)       # (1, k*V)
        scores, flat = torch.topk(total, req.n_cand)
        scores, flat = scores[0], flat[0]                          # (2k,)
        parent, token = flat // req.vocab, flat % req.vocab
        ended = torch.full((req.n_cand,), cur + 1 >= req.max_length, device=scores.device)
        if req.eos_id is not None:
            ended = ended | (token == req.eos_id)
        gen_len = cur + 1 - req.prompt_len
        seq = self.seq[parent]
        seq[:, cur] = token
        lps = self.lps[parent]
        tok_lp = logp[parent, token]
        lps[:, gen_len - 1] = tok_lp
        return _Expansion(scores, parent, token, tok_lp, ended, seq, lps, gen_len)

    def merge_finished(self, ex: _Expansion) -> torch.Tensor:
        """Candidates that ended among the top k compete with the finished hypotheses.

        Returns a (2k,) bool: the candidates that entered the finished list.
        """
        req, k = self.req, self.req.k
        ended_top = ex.ended & self.in_top_k
        final = ex.scores / (ex.gen_len ** req.lp)
        final = final + (self.fin_flag.all() & (req.early_stopping is True)).float() * _NEG
        final = final + (~self.improvable).float() * _NEG
        final = final + (~ended_top).float() * _NEG
        merged = torch.topk(torch.cat([self.fin_scores, final]), k).indices
        from_cand = merged >= k
        cidx = (merged - k).clamp(min=0)
        old = merged.clamp(max=k - 1)
        self.fin_seq = torch.where(from_cand[:, None], ex.seq[cidx], self.fin_seq[old])
        self.fin_lps = torch.where(from_cand[:, None], ex.lps[cidx], self.fin_lps[old])
        self.fin_len = torch.where(from_cand, ex.gen_len, self.fin_len[old])
        self.fin_flag = torch.where(from_cand, ended_top[cidx], self.fin_flag[old])
        self.fin_scores = torch.cat([self.fin_scores, final])[merged]
        entered = torch.zeros(req.n_cand, dtype=torch.bool, device=merged.device)
        entered[cidx[from_cand]] = True
        return entered & ended_top

    def select_live(self, ex: _Expansion) -> torch.Tensor:
        """The best k candidates that did not end become the running beams; returns their indices."""
        masked = ex.scores + ex.ended.float() * _NEG
        live = torch.topk(masked, self.req.k).indices
        self.seq, self.lps, self.scores = ex.seq[live], ex.lps[live], masked[live]
        self.cur += 1
        return live

    def record_tree_row(self, ex: _Expansion, live: torch.Tensor, entered: torch.Tensor) -> None:
        """One row per candidate (kept in device tensors, moved to the host at the end)."""
        req = self.req
        slot = torch.full((req.n_cand,), -1, dtype=torch.long, device=live.device)
        slot[live] = torch.arange(req.k, device=live.device)
        slot = slot.masked_fill(ex.ended, -1)             # an ended candidate does not continue
        self.tree_rows.append((torch.stack([slot, ex.parent, ex.token, entered.long()]),
                               torch.stack([ex.tok_lp, ex.scores, ex.scores / (ex.gen_len ** req.lp)])))

    def should_stop(self, ex: _Expansion) -> bool:
        """Whether no running beam can still beat the finished hypotheses (one host sync per step)."""
        req = self.req
        if req.early_stopping == "never" and req.lp > 0.0:
            best_len = req.max_length - req.prompt_len     # the longest a running beam may grow
        else:
            best_len = self.cur - req.prompt_len
        best_running = self.scores[0] / (best_len ** req.lp)
        worst_finished = torch.where(self.fin_flag, self.fin_scores.min(), torch.full_like(self.fin_scores, _NEG))
        self.improvable = self.improvable & (best_running > worst_finished).any()
        go_on = self.improvable & ~(self.fin_flag.all() & (req.early_stopping is True)) & ~ex.ended.all()
        return not bool(go_on)


# ================================================================= back to the host
def _tree_from_rows(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> list[BeamStep]:
    tree = []
    for t, (ints, floats) in enumerate(rows):
        ints, floats = ints.tolist(), floats.tolist()
        tree.append(BeamStep(step=t, candidates=[
            BeamCandidate(beam_id=ints[0][j], parent_beam_id=ints[1][j], token_id=ints[2][j],
                          token_logprob=floats[0][j], cumulative_logprob=floats[1][j], score=floats[2][j],
                          kept=ints[0][j] >= 0, finished=bool(ints[3][j]))
            for j in range(len(ints[0]))
        ]))
    return tree


def _collect_hypotheses(state: _BeamState) -> list[Hypothesis]:
    """The finished hypotheses, best first (the finished list is kept sorted by score)."""
    req, P = state.req, state.req.prompt_len
    flags, lens, scores = state.fin_flag.tolist(), state.fin_len.tolist(), state.fin_scores.tolist()
    seqs, lps = state.fin_seq.tolist(), state.fin_lps.tolist()
    sequences = []
    for i in range(req.k):
        if not flags[i]:
            continue
        n = lens[i]
        new, tok_lps = seqs[i][P:P + n], lps[i][:n]
        reason = "eos" if req.eos_id is not None and new and new[-1] == req.eos_id else (
            "context" if req.cut else "max_new_tokens")
        sequences.append(Hypothesis(new_ids=new, token_logprobs=tok_lps, sum_logprob=float(sum(tok_lps)),
                                    score=scores[i], finished_by=reason))
    return sequences


def beam_search(model, prompt_ids, num_beams: int, max_new_tokens: int, length_penalty: float = 1.0,
                eos_id: int | None = None, processors=(), early_stopping: bool | str = True) -> BeamResult:
    """Keep the ``num_beams`` best partial sequences; return finished hypotheses and the search tree.

    ``early_stopping`` has Hugging Face's meaning: True stops once k hypotheses
    are finished, False once no running beam can beat them at its current
    length, "never" once none can beat them even at the longest length.
    """
    processors = as_processors(processors)
    backend = backend_of(model)
    req, ids = _check_request(backend, prompt_ids, num_beams, max_new_tokens, length_penalty, eos_id,
                              early_stopping)
    state = _BeamState(ids, req)
    stepper = backend.stepper(req.max_length)
    with torch.inference_mode():
        logits = stepper.prefill(ids)                      # (1, V): the prompt is read once
        stepper.reorder(torch.zeros(req.k, dtype=torch.long, device=ids.device))
        logits = logits.expand(req.k, -1)
        while True:
            ex = state.expand(logits, processors)
            entered = state.merge_finished(ex)
            live = state.select_live(ex)
            state.record_tree_row(ex, live, entered)
            if state.should_stop(ex):
                break
            stepper.reorder(ex.parent[live])
            logits = stepper.step(ex.token[live])
    notes = []
    if req.cut:
        notes.append(note("decoding.beam_context_full",
                          "Only {n} tokens could be generated: the context window ({ctx} tokens) is full.",
                          n=req.budget, ctx=req.context))
    return BeamResult(prompt_ids=ids[0].tolist(), sequences=_collect_hypotheses(state),
                      tree=_tree_from_rows(state.tree_rows), num_beams=req.k, length_penalty=req.lp, notes=notes)
