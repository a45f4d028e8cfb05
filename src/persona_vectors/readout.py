"""Read out who a model thinks it is (by log-probs), and how coherent its text is.

**Identity read-out.** Instead of sampling an answer to "Who are you?" and classifying it, we ask the model
for its probability of each candidate identity directly: the chat prompt (rendered with the chat template
and the generation prompt) is followed by an answer prefix ("I am") and each candidate (" Napoleon
Bonaparte"), and the candidate's tokens are scored teacher-forced. The candidate scores (mean token
log-probs by default) are turned into a distribution over the candidate set (softmax), so the read-out is
deterministic and cheap (the prompt runs once into a KV cache, then one batched forward per chunk of
candidates; no sampling noise). It works under steering: hooks active around the call apply to every
forward, and the answer tokens count as *response* positions for position-aware steering, as they would if
the model generated them.

**Scoring** (changed default): a candidate's score is the MEAN log-prob per scored token (``scoring="mean"``)
so that a three-token name is not penalised against a one-token one; ``scoring="sum"`` (or the older
``normalize_length=False``) gives the full-string log-likelihood, which the read-outs used by default before
the balanced candidate sets. :func:`score_continuations`, the raw primitive, still returns sums by default.

**Grouped read-outs** (:func:`group_readout`) score a versioned, balanced candidate set
(:func:`load_candidate_set`, ``data/identity/candidates_v1.json``: 8 groups of 6 — ai, human,
historical_figure, supernatural, nature_cosmic, animal, object, fantasy_creature) and report per group the
probability mass, the *unsteered prior* (the same read-out with the library's steering hooks bypassed) and
the lift over it; a robustness check recomputes the masses leaving each candidate out and adding held-back
distractor groups and flags a result whose top group changes. :func:`user_readout_with_controls` asks who the
user is next to control questions about other people, so "the model thinks the user is X" can be told
apart from "X is primed".

The read-out is *relative to the candidate set*: probabilities only compare the candidates given (which is
why groups must be balanced and results checked for robustness to the set), and
``bits_of_identification = log2 N - H`` says how far the distribution is from uniform (0 bits: no
preference; log2 N bits: all mass on one candidate).

**Coherence.** Steering far enough breaks a model's language. :func:`coherence` scores texts by their
per-token perplexity under the *unsteered* model plus word-level repetition, combined into one number in
[0, 1] so sweeps can drop degenerate samples (:func:`is_coherent`).

>>> r = identity_readout(model, ["an AI assistant", "Napoleon Bonaparte"], system="You are Napoleon.")  # doctest: +SKIP
>>> r.top(1)                                                                                          # doctest: +SKIP
[('Napoleon Bonaparte', 0.97)]
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from .models import PersonaModel, PromptLike, position_ids_from_mask, steering_bypassed

__all__ = [
    "COHERENCE_PPL_HIGH",
    "COHERENCE_PPL_LOW",
    "SCORING_MODES",
    "CandidateSet",
    "CoherenceScore",
    "ControlledUserReadout",
    "DEFAULT_IDENTITY_CANDIDATES",
    "DEFAULT_USER_CANDIDATES",
    "GroupReadout",
    "IdentityReadout",
    "RobustnessCheck",
    "SteeringActiveError",
    "UserControls",
    "available_candidate_sets",
    "candidate_names",
    "coherence",
    "continuation_tokens",
    "group_readout",
    "identity_readout",
    "identity_readout_batch",
    "is_coherent",
    "load_candidate_set",
    "load_user_controls",
    "score_continuations",
    "user_identity_readout",
    "user_readout_with_controls",
]

#: Candidate scores: ``"mean"`` log-prob per scored token (the read-outs' default) or ``"sum"`` over tokens.
SCORING_MODES: tuple[str, ...] = ("mean", "sum")

#: The original curated candidate list (unbalanced: 8 historical figures, 5 supernatural, 3 AI, 1 nature
#: candidate; kept for the experiments that use it). For group-level claims use the balanced, versioned set
#: ``load_candidate_set("v1")`` with :func:`group_readout`: with this list the supernatural group's share
#: under anti-assistant steering depends on how many nature candidates compete with it. Phrased to follow "I am".
DEFAULT_IDENTITY_CANDIDATES: tuple[str, ...] = (
    "an AI assistant",
    "SmolLM",
    "a chatbot",
    "a ghost",
    "an angel",
    "a spirit",
    "a soul",
    "a demon",
    "Adolf Hitler",
    "Joseph Stalin",
    "Napoleon",
    "Lenin",
    "Peter the Great",
    "Oda Nobunaga",
    "Neil Armstrong",
    "Winston Churchill",
    "Voyager 1",
    "Bitcoin",
    "the ocean",
    "a human",
)

#: Default candidates for "Who am I?" → "You are ...": who the model thinks its interlocutor is.
DEFAULT_USER_CANDIDATES: tuple[str, ...] = (
    "a human",
    "a user",
    "a student",
    "a child",
    "a friend",
    "an AI",
    "a robot",
    "a ghost",
    "my creator",
    "Napoleon",
)


class SteeringActiveError(RuntimeError):
    """A measurement that needs the unsteered model found hooks active on the model's hook points."""


# =============================================================================================== tokens
def _ids(tokenizer: Any, text: str, raw_special_tokens: bool = False) -> list[int]:
    """Token ids of message text: special-token strings in it are plain text unless ``raw_special_tokens``."""
    if not text:
        return []
    kw: dict[str, Any] = {}
    if not raw_special_tokens and any(t and t in text for t in getattr(tokenizer, "all_special_tokens", ())):
        kw["split_special_tokens"] = True
    return list(tokenizer(text, add_special_tokens=False, **kw)["input_ids"])


def _answer_text(prefix: str, continuation: str) -> str:
    """The assistant's answer string: ``prefix + " " + continuation`` (no space when the prefix is empty)."""
    p, c = prefix.rstrip(), continuation.strip()
    if not c:
        raise ValueError("Empty continuation: every candidate needs at least one non-space character")
    return f"{p} {c}" if p else c


def continuation_tokens(
    tokenizer: Any, prefix: str, continuation: str, *, raw_special_tokens: bool = False
) -> tuple[list[int], list[int]]:
    """Split ``tokens(prefix + " " + continuation)`` into (context ids, scored ids).

    Why not tokenize the continuation alone: BPE/SentencePiece tokenizers encode a word differently at the
    start of a string than after a space, and a prefix ending in a character that merges with the next one
    (e.g. a trailing space, or "I'm" + "m...") tokenizes differently inside the full string. So we tokenize
    the full answer and compare it with ``tokens(prefix)``: the scored span starts at their longest common
    prefix. Usually that is exactly ``tokens(prefix)``; when the tokenizer merged across the boundary, the
    re-merged boundary token is scored as part of the continuation (it is what the model would emit).

    Special-token strings inside the prefix or continuation (``"<|im_end|>"``) are tokenized as plain text,
    like any message content, unless ``raw_special_tokens=True``.
    """
    full = _ids(tokenizer, _answer_text(prefix, continuation), raw_special_tokens)
    pre = _ids(tokenizer, prefix.rstrip(), raw_special_tokens)
    k = 0
    while k < min(len(pre), len(full)) and pre[k] == full[k]:
        k += 1
    if k == len(full):  # cannot happen for a non-empty continuation unless the tokenizer drops it
        raise ValueError(f"Continuation {continuation!r} adds no tokens after prefix {prefix!r}")
    return full[:k], full[k:]


def _prompt_ids(model: PersonaModel, prompt: PromptLike, system: str | None) -> list[int]:
    """Tokens of the rendered chat prompt (with generation prompt), as generation sees them (special-token
    strings inside message contents stay plain text, see :meth:`PersonaModel.chat_ids`)."""
    return model.chat_ids(model.to_messages(prompt, system), add_generation_prompt=True)


# =============================================================================================== scoring
def _forward(model: PersonaModel, input_ids: torch.Tensor, attention: torch.Tensor, keep: torch.Tensor,
             past: Any = None) -> torch.Tensor:
    """Logits at the window positions ``keep`` only (``logits_to_keep``), falling back to all positions.

    Keeping only the scored positions avoids materializing [batch, seq, vocab] logits (49k vocab for
    SmolLM2); models whose forward lacks ``logits_to_keep`` get full logits, indexed afterwards.
    ``attention`` covers the cached positions too when ``past`` (a KV cache of a shared prefix) is given.
    """
    window = input_ids.shape[1]
    kw: dict[str, Any] = dict(input_ids=input_ids, attention_mask=attention,
                              position_ids=position_ids_from_mask(attention)[:, -window:])
    if past is None:
        kw["use_cache"] = False
    else:
        kw.update(past_key_values=past, use_cache=True)
    try:
        return model.hf(**kw, logits_to_keep=keep).logits
    except TypeError:
        return model.hf(**kw).logits[:, keep]


def _prefix_cache(model: PersonaModel, prefix: Sequence[int], prompt_len: int | None = None) -> Any:
    """KV cache of one shared prefix (batch 1), computed once and copied per candidate chunk."""
    ids = torch.tensor([list(prefix)], device=model.device)
    att = torch.ones_like(ids)
    kw: dict[str, Any] = dict(input_ids=ids, attention_mask=att, position_ids=position_ids_from_mask(att), use_cache=True)
    with torch.inference_mode(), _answer_positions(model, prompt_len):
        try:
            out = model.hf(**kw, logits_to_keep=1)
        except TypeError:
            out = model.hf(**kw)
    past = getattr(out, "past_key_values", None)
    return past if hasattr(past, "batch_repeat_interleave") else None


@contextlib.contextmanager
def _answer_positions(model: PersonaModel, prompt_len: int | None) -> Iterator[None]:
    """Mark window positions ``>= prompt_len`` as *response* for position-aware steering hooks.

    Generation marks generated tokens as response (:meth:`PersonaModel.response_region`); a teacher-forced answer
    is the same tokens, so steering restricted to ``positions="response"`` applies to it here exactly as it
    would while the model generated it (and ``"prompt"`` steering applies to the prompt only).
    """
    region = getattr(model, "response_region", None)
    if region is None or prompt_len is None:
        yield
        return
    with region(prompt_len):
        yield


def _score_chunk(
    model: PersonaModel,
    rows: Sequence[Sequence[int]],
    starts: Sequence[int],
    prompt_lens: Sequence[int] | None = None,
    cache: Any = None,
    cache_len: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over ``rows`` (suffixes after ``cache_len`` cached tokens when ``cache`` is given).

    Rows are right padded. With ``prompt_lens`` (each row's prompt length, counted from the start of the
    full row, cache included), rows are also left padded so every prompt ends at the same window position,
    which is then marked as the prompt/response boundary for steering hooks — the layout ``generate`` uses.
    Position ids come from the attention mask, so padding on either side never shifts a row's positions.
    """
    dev = model.device
    padid = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    n = len(rows)
    if any(s < 1 or s >= len(r) for s, r in zip(starts, rows)):
        raise ValueError("Each row needs at least one context token and one scored token")
    left = [0] * n
    boundary = None
    if prompt_lens is not None:
        boundary = max(prompt_lens)
        left = [boundary - pl for pl in prompt_lens]
        if cache is not None and any(left):
            raise ValueError("Rows sharing a cached prefix must share their prompt")
    lens = [lp + len(r) for lp, r in zip(left, rows)]
    st = [lp + s for lp, s in zip(left, starts)]
    width = max(lens)
    ids = torch.full((n, width), padid, dtype=torch.long)
    att = torch.zeros((n, cache_len + width), dtype=torch.long)
    att[:, :cache_len] = 1
    for r in range(n):
        ids[r, left[r] : lens[r]] = torch.tensor(list(rows[r]), dtype=torch.long)
        att[r, cache_len + left[r] : cache_len + lens[r]] = 1
    past = None
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(n)
    # logits at window position t predict token t+1: scored tokens live in [min start, max len)
    lo, hi = min(st) - 1, max(lens) - 1  # logit positions lo .. hi-1
    keep = torch.arange(lo, hi, device=dev)
    with torch.inference_mode(), _answer_positions(model, boundary):
        logits = _forward(model, ids.to(dev), att.to(dev), keep, past)
        logp = torch.log_softmax(logits.float(), dim=-1)
        targets = ids[:, lo + 1 : hi + 1].to(dev)
        tok_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double().cpu()
    pos = torch.arange(lo + 1, hi + 1).unsqueeze(0)
    sel = (pos >= torch.tensor(st).unsqueeze(1)) & (pos < torch.tensor(lens).unsqueeze(1))
    return (tok_lp * sel).sum(1), sel.sum(1)


def _common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    first, k = rows[0], min(len(r) for r in rows)
    for i in range(k):
        if any(r[i] != first[i] for r in rows):
            return i
    return k


def _score_rows(
    model: PersonaModel,
    rows: Sequence[Sequence[int]],
    starts: Sequence[int],
    batch_size: int | None,
    group: int | None = None,
    prompt_lens: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs (float64 [n]) and token counts ([n]) of ``row[start:]`` given ``row[:start]``.

    Rows are run in the given order, in contiguous chunks of ``batch_size`` (``None``: one forward over
    all rows), padded with explicit position ids so padding never shifts a row's positions.

    With ``group=g``, consecutive groups of ``g`` rows (one prompt's candidates) share their common
    prefix: it runs once (batch 1) into a KV cache, and each chunk of the group's rows runs only its
    suffix on a copy of that cache. Same numbers up to float error, several times fewer FLOPs when the
    prompt is much longer than the candidates; but hooks then see two forwards of different shapes.

    ``prompt_lens`` (each row's prompt length) aligns prompts and marks the answer as response positions
    for steering hooks (see :func:`_score_chunk`).
    """
    n = len(rows)
    sums = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.long)
    if n == 0:
        return sums, counts
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if group is None:
        for b0 in range(0, n, bs):
            chunk = list(range(b0, min(n, b0 + bs)))
            pls = None if prompt_lens is None else [prompt_lens[i] for i in chunk]
            sums[chunk], counts[chunk] = _score_chunk(model, [rows[i] for i in chunk], [starts[i] for i in chunk], pls)
        return sums, counts
    for g0 in range(0, n, group):
        idx = list(range(g0, min(n, g0 + group)))
        # share everything before the first scored token's predecessor (its logit must come from the suffix pass)
        shared = min(_common_prefix_len([rows[i] for i in idx]), min(starts[i] for i in idx) - 1)
        boundary = None if prompt_lens is None else max(prompt_lens[i] for i in idx)
        cache = _prefix_cache(model, rows[idx[0]][:shared], boundary) if shared > 0 else None
        if cache is None:  # nothing shared, or a model without a batch-expandable cache: full rows
            shared = 0
        for b0 in range(0, len(idx), bs):
            chunk = idx[b0 : b0 + bs]
            pls = None if prompt_lens is None else [prompt_lens[i] for i in chunk]
            sums[chunk], counts[chunk] = _score_chunk(
                model, [rows[i][shared:] for i in chunk], [starts[i] - shared for i in chunk], pls, cache, shared
            )
    return sums, counts


def _continuation_rows(
    model: PersonaModel, prompts: Sequence[PromptLike], continuations: Sequence[str], prefix: str, system: str | None
) -> tuple[list[list[int]], list[int], list[int]]:
    """Token rows ``prompt + answer prefix + continuation`` (prompt-major), scored starts, prompt lengths."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of prompts: wrap a single prompt as [prompt]")
    if not continuations:
        raise ValueError("No continuations to score: pass at least one candidate")
    raw = bool(getattr(model, "raw_special_tokens", False))
    spans = [continuation_tokens(model.tokenizer, prefix, c, raw_special_tokens=raw) for c in continuations]
    longest = max(range(len(spans)), key=lambda j: len(spans[j][0]) + len(spans[j][1]))
    rows: list[list[int]] = []
    starts: list[int] = []
    plens: list[int] = []
    for p in prompts:
        pids = _prompt_ids(model, p, system)
        answer = len(spans[longest][0]) + len(spans[longest][1])
        model.check_length(len(pids) + answer,
                           what=f"prompt ({len(pids)} tokens) + answer {prefix!r} {continuations[longest]!r}",
                           fix="shorten the prompt or the candidates")
        for ctx, cont in spans:
            rows.append(pids + ctx + cont)
            starts.append(len(pids) + len(ctx))
            plens.append(len(pids))
    return rows, starts, plens


def score_continuations(
    model: PersonaModel,
    prompts: Sequence[PromptLike],
    continuations: Sequence[str],
    prefix: str = "I am",
    system: str | None = None,
    *,
    batch_size: int | None = None,
    normalize_length: bool | None = None,
    share_prompt: bool = False,
    scoring: str | None = None,
) -> torch.Tensor:
    """Teacher-forced log-prob of each continuation after each prompt's chat turn and the answer prefix.

    Returns a float64 tensor ``[len(prompts), len(continuations)]``: the SUM of the continuation's token
    log-probs by default — this raw primitive keeps the sum, unlike the read-outs — or the mean per token
    with ``scoring="mean"`` (equivalently ``normalize_length=True``). The assistant's answer is
    ``prefix + " " + continuation``; see :func:`continuation_tokens` for the token split.

    **Row order** (for per-row steering): the rows of the forward batch are laid out prompt-major,
    row ``i * len(continuations) + j`` ↔ (prompt ``i``, continuation ``j``). With ``batch_size=None``
    (default) all rows run in ONE forward in that order, so a ``[len(prompts) * len(continuations)]``
    per-row coefficient lines up with the batch; with a ``batch_size``, forward ``k`` holds rows
    ``[k * batch_size, (k + 1) * batch_size)``. Rows are laid out as ``generate`` lays them out: prompts
    left padded to end at the same position, answers right padded, position ids from the attention mask.
    Steering hooks active around this call apply to every forward, and a response region
    (:meth:`PersonaModel.response_region`) starts at that common prompt end, so position-aware steering
    (``positions="response"``) acts on the answer tokens exactly as when the model generates them.

    ``share_prompt=True`` runs each prompt (plus the shared part of the answer prefix) once into a KV
    cache and only the continuations per row: the same scores up to float error for several times fewer
    FLOPs, but then every prompt costs one extra batch-1 forward before its continuation chunks (chunked
    per prompt), so per-row hooks no longer line up with one forward — keep the default ``False`` for
    per-row steering.
    """
    mode = _resolve_scoring(scoring, normalize_length, default="sum")
    rows, starts, plens = _continuation_rows(model, prompts, continuations, prefix, system)
    sums, counts = _score_rows(model, rows, starts, batch_size, len(continuations) if share_prompt else None, plens)
    out = sums / counts.clamp_min(1) if mode == "mean" else sums
    return out.reshape(len(prompts), len(continuations))


def _resolve_scoring(scoring: str | None, normalize_length: bool | None, default: str = "mean") -> str:
    """``"mean"`` or ``"sum"`` from the two ways of asking (``scoring=`` and the older ``normalize_length=``)."""
    if scoring is not None and scoring not in SCORING_MODES:
        raise ValueError(f"scoring must be one of {', '.join(SCORING_MODES)}, got {scoring!r}")
    if normalize_length is not None:
        implied = "mean" if normalize_length else "sum"
        if scoring is not None and scoring != implied:
            raise ValueError(f"scoring={scoring!r} contradicts normalize_length={normalize_length}: pass one of them")
        return implied
    return scoring if scoring is not None else default


# =============================================================================================== readout
@dataclass(frozen=True)
class IdentityReadout:
    """A distribution over candidate identities for one prompt.

    ``logprobs`` are the candidate scores — per-token mean log-probs (``scoring == "mean"``, the default,
    stored as ``normalize_length=True``) or summed log-probs (``"sum"``) — and ``probs`` their softmax: the
    model's preference *within this candidate set*. ``n_tokens`` is each candidate's scored token count
    (long names pay for every token in the summed score).
    """

    candidates: tuple[str, ...]
    logprobs: tuple[float, ...]
    probs: tuple[float, ...]
    n_tokens: tuple[int, ...]
    question: str
    prefix: str
    system: str | None = None
    normalize_length: bool = False

    @classmethod
    def from_scores(
        cls,
        candidates: Sequence[str],
        scores: torch.Tensor,
        n_tokens: Sequence[int],
        *,
        question: str,
        prefix: str,
        system: str | None = None,
        normalize_length: bool = False,
    ) -> "IdentityReadout":
        """Build a read-out from raw candidate scores (softmax-normalized here)."""
        s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
        p = torch.softmax(s, dim=0)
        return cls(tuple(candidates), tuple(float(x) for x in s), tuple(float(x) for x in p),
                   tuple(int(x) for x in n_tokens), question, prefix, system, normalize_length)

    @property
    def scoring(self) -> str:
        """``"mean"`` (per-token mean log-prob) or ``"sum"``."""
        return "mean" if self.normalize_length else "sum"

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable candidates as (name, probability), most probable first."""
        order = sorted(range(len(self.candidates)), key=lambda i: -self.probs[i])
        return [(self.candidates[i], self.probs[i]) for i in order[:k]]

    @property
    def best(self) -> str:
        """The most probable candidate."""
        return self.top(1)[0][0]

    def prob(self, candidate: str) -> float:
        """Probability of one candidate (KeyError if it is not in the set)."""
        try:
            return self.probs[self.candidates.index(candidate)]
        except ValueError:
            raise KeyError(f"{candidate!r} is not a candidate of this read-out") from None

    @property
    def entropy(self) -> float:
        """Shannon entropy of ``probs`` in bits (0·log 0 = 0)."""
        return float(-sum(p * math.log2(p) for p in self.probs if p > 0))

    @property
    def bits_of_identification(self) -> float:
        """``log2 N - H``: information the read-out carries relative to a uniform guess over N candidates."""
        return math.log2(len(self.candidates)) - self.entropy

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (candidates sorted by probability)."""
        order = sorted(range(len(self.candidates)), key=lambda i: -self.probs[i])
        return {
            "question": self.question,
            "prefix": self.prefix,
            "system": self.system,
            "normalize_length": self.normalize_length,
            "scoring": self.scoring,
            "entropy_bits": self.entropy,
            "bits_of_identification": self.bits_of_identification,
            "candidates": [
                {"name": self.candidates[i], "prob": self.probs[i], "logprob": self.logprobs[i],
                 "n_tokens": self.n_tokens[i]}
                for i in order
            ],
        }


def _check_candidates(candidates: Sequence[str]) -> list[str]:
    """Candidates as a list: at least two, all strings, none empty, no two the same after stripping whitespace.

    The answer is ``prefix + " " + candidate.strip()``, so candidates differing only by surrounding whitespace
    would be scored as the same text and split its probability: that is an error, not a silent merge.
    """
    if isinstance(candidates, str):
        raise TypeError("candidates must be a list of names, not one string")
    c = list(candidates)
    bad = [x for x in c if not isinstance(x, str)]
    if bad:
        raise TypeError(f"candidates must be strings, got {bad[0]!r}")
    if len(c) < 2:
        raise ValueError("An identity read-out needs at least two candidates")
    dup = sorted({x for x in c if c.count(x) > 1})
    if dup:
        raise ValueError(f"Duplicate candidates: {dup}: pass each candidate once")
    groups: dict[str, list[str]] = {}
    for x in c:
        groups.setdefault(x.strip(), []).append(x)
    same = [g for g in groups.values() if len(g) > 1]
    if same:
        shown = "; ".join(" and ".join(repr(x) for x in g) for g in same)
        raise ValueError(f"Candidates differ only by surrounding whitespace ({shown}): they are scored as the same "
                         "answer; keep one of each")
    return c


def identity_readout_batch(
    model: PersonaModel,
    candidates: Sequence[str] | None,
    questions: Sequence[PromptLike],
    *,
    prefix: str = "I am",
    system: str | None = None,
    batch_size: int = 32,
    normalize_length: bool | None = None,
    share_prompt: bool = True,
    scoring: str | None = None,
) -> list[IdentityReadout]:
    """One :class:`IdentityReadout` per question, scoring all (question × candidate) rows in batched forwards.

    Rows follow :func:`score_continuations`'s order (question-major) in chunks of ``batch_size``. By default
    each question's prompt runs once into a KV cache shared by its candidates (``share_prompt``, see
    :func:`score_continuations`): position-wise steering hooks apply identically either way; pass
    ``share_prompt=False`` when a hook depends on the batch layout (per-row coefficients).
    ``candidates=None`` uses :data:`DEFAULT_IDENTITY_CANDIDATES`. Scores are per-token means by default
    (``scoring="mean"``); ``scoring="sum"`` or ``normalize_length=False`` sums the token log-probs (the
    default before balanced candidate sets).
    """
    mode = _resolve_scoring(scoring, normalize_length)
    normalize = mode == "mean"
    cands = _check_candidates(DEFAULT_IDENTITY_CANDIDATES if candidates is None else candidates)
    rows, starts, plens = _continuation_rows(model, questions, cands, prefix, system)
    sums, counts = _score_rows(model, rows, starts, batch_size, len(cands) if share_prompt else None, plens)
    scores = sums / counts.clamp_min(1) if normalize else sums
    nc = len(cands)
    out = []
    for i, q in enumerate(questions):
        sl = slice(i * nc, (i + 1) * nc)
        out.append(IdentityReadout.from_scores(
            cands, scores[sl], counts[sl].tolist(), question=q if isinstance(q, str) else str(list(q)),
            prefix=prefix, system=system, normalize_length=normalize,
        ))
    return out


def identity_readout(
    model: PersonaModel,
    candidates: Sequence[str] | None = None,
    *,
    question: PromptLike = "Who are you?",
    prefix: str = "I am",
    system: str | None = None,
    batch_size: int = 32,
    normalize_length: bool | None = None,
    share_prompt: bool = True,
    scoring: str | None = None,
) -> IdentityReadout:
    """Who the model says it is: P(candidate | chat(question), "I am") normalized over the candidates.

    Each candidate is scored by the MEAN of its token log-probs by default (``scoring="mean"``), so names
    of different token lengths compete on per-token likelihood; ``scoring="sum"`` (or
    ``normalize_length=False``) uses the full-string log-likelihood, which charges every extra token — the
    default before the balanced candidate sets. With summed scores a candidate that is a string prefix of
    another ("Napoleon" vs "Napoleon Bonaparte") always scores at least as high, and with mean scores the
    two share their first tokens' evidence: pick candidate sets without such overlaps
    (:func:`load_candidate_set` enforces it).
    ``system=None`` keeps the chat template's default (SmolLM2 inserts its assistant system prompt).
    """
    return identity_readout_batch(model, candidates, [question], prefix=prefix, system=system,
                                  batch_size=batch_size, normalize_length=normalize_length,
                                  share_prompt=share_prompt, scoring=scoring)[0]


def user_identity_readout(
    model: PersonaModel,
    candidates: Sequence[str] | None = None,
    *,
    question: PromptLike = "Who am I?",
    prefix: str = "You are",
    system: str | None = None,
    batch_size: int = 32,
    normalize_length: bool | None = None,
    share_prompt: bool = True,
    scoring: str | None = None,
) -> IdentityReadout:
    """Who the model thinks the *user* is: P(candidate | chat("Who am I?"), "You are").

    ``candidates=None`` uses :data:`DEFAULT_USER_CANDIDATES`. On its own this cannot tell "the model thinks
    the user is X" from "X is primed everywhere" (a steered-in identity can also win "Who wrote Hamlet?"):
    use :func:`user_readout_with_controls` for claims about the user.
    """
    cands = DEFAULT_USER_CANDIDATES if candidates is None else candidates
    return identity_readout(model, cands, question=question, prefix=prefix, system=system,
                            batch_size=batch_size, normalize_length=normalize_length, share_prompt=share_prompt,
                            scoring=scoring)


def candidate_names(categories: Sequence[str] | str | None = None, roles: Sequence[str] | None = None) -> list[str]:
    """Identity candidates from the role catalogue: the first alias of each role, deduplicated, in file order.

    ``categories`` filters by :data:`~persona_vectors.datasets.ROLE_CATEGORIES`; ``roles`` picks roles by
    name (matched like :func:`~persona_vectors.datasets.get_role`). With neither, every role is used. The
    first alias is the catalogue's canonical short name; some are bare nouns ("ghost"), which read a little
    less naturally after "I am" than "a ghost" — the same for every such candidate, but keep it in mind
    when comparing against curated lists like :data:`DEFAULT_IDENTITY_CANDIDATES`.
    """
    from .datasets import get_role, load_roles

    if isinstance(categories, str):
        categories = [categories]
    selected = []
    if roles is not None:
        selected.extend(get_role(r) for r in roles)
    if categories is not None:
        for c in categories:
            selected.extend(load_roles(c))
    if roles is None and categories is None:
        selected = load_roles()
    names: list[str] = []
    for r in selected:
        name = r.aliases[0] if r.aliases else r.display
        if name not in names:
            names.append(name)
    return names


# =============================================================================================== candidate sets
_CANDIDATE_SET_SCHEMA = "persona_vectors.identity_candidates/1"
_USER_CONTROLS_SCHEMA = "persona_vectors.user_controls/1"


def _identity_data_dir() -> Any:
    from .datasets import _data_root

    return _data_root().joinpath("identity")


def _available(prefix: str) -> list[str]:
    try:
        names = [f.name for f in _identity_data_dir().iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n[len(prefix) + 1 : -5] for n in names if n.startswith(prefix + "_") and n.endswith(".json"))


def available_candidate_sets() -> list[str]:
    """Names of the shipped identity candidate sets (``data/identity/candidates_<name>.json``)."""
    return _available("candidates")


def _read_json_file(name: str | os.PathLike[str], kind: str) -> tuple[dict[str, Any], str]:
    """A shipped ``<kind>_<name>.json`` (by name) or a user file (a path ending in .json)."""
    from .datasets import DataError

    text_name = os.fspath(name)
    if text_name.endswith(".json") or os.sep in text_name or "/" in text_name:
        path = Path(text_name)
        label = str(path)
        if not path.is_file():
            raise DataError(f"{label}: no such file; pass a shipped set name "
                            f"({', '.join(_available(kind)) or 'none shipped'}) or the path of a JSON file")
        raw = path.read_text(encoding="utf-8")
    else:
        res = _identity_data_dir().joinpath(f"{kind}_{text_name}.json")
        label = f"persona_vectors/data/identity/{kind}_{text_name}.json"
        if not res.is_file():
            what = {"candidates": "candidate set", "user_controls": "user-controls set"}.get(kind, kind)
            raise DataError(f"unknown {what} {text_name!r}; available: {', '.join(_available(kind)) or 'none'} "
                            "(or pass the path of a JSON file)")
        raw = res.read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DataError(f"{label}: not valid JSON ({err.msg} at line {err.lineno}); fix the file") from None
    if not isinstance(data, dict):
        raise DataError(f"{label}: the top level must be a JSON object; see candidates_v1.json for the layout")
    return data, label


def _string_list(value: Any, what: str, label: str, min_len: int = 1) -> tuple[str, ...]:
    from .datasets import DataError

    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise DataError(f"{label}: {what} must be a list of strings; fix the file")
    bad = [x for x in value if not x.strip() or x != x.strip()]
    if bad:
        raise DataError(f"{label}: {what} has an empty entry or one with surrounding whitespace ({bad[0]!r}); "
                        "strip it")
    if len(value) < min_len:
        raise DataError(f"{label}: {what} needs at least {min_len} entries, got {len(value)}")
    return tuple(value)


def _overlap_errors(names: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(duplicates, (prefix, longer) pairs), compared case-insensitively."""
    folded = [n.casefold() for n in names]
    dups = sorted({n for n, f in zip(names, folded) if folded.count(f) > 1})
    pairs = []
    for i, fa in enumerate(folded):
        for j, fb in enumerate(folded):
            if i != j and fa != fb and fb.startswith(fa):
                pairs.append((names[i], names[j]))
    return dups, pairs


@dataclass(frozen=True)
class CandidateSet:
    """A balanced, versioned identity candidate set: named groups of equal size, plus held-back distractors.

    ``groups`` (in file order) are what :func:`group_readout` scores; ``distractors`` are extra groups of
    the same size that the robustness check adds one at a time. ``counts_as[d]`` names the group whose kind
    distractor ``d`` is (its mass then counts toward that group: more candidates of a rival kind, the
    situation where an unbalanced list changes the answer); a distractor without it is a group of its own. ``questions`` and ``prefix`` are the set's
    default read-out prompts ("Who are you?" → "I am ..."). ``token_lengths`` records each candidate's
    scored token count under the tokenizer named in the file (for documentation; checked by the tests).
    Validation (see :meth:`validate`): at least two groups, every group and distractor group the same size
    (at least two), no empty or whitespace-padded names, no duplicates and no candidate a string prefix of
    another (case-insensitive, across groups and distractors), and recorded token lengths within
    ``max_token_spread`` of each other inside every group.
    """

    name: str
    groups: dict[str, tuple[str, ...]]
    distractors: dict[str, tuple[str, ...]]
    questions: tuple[str, ...] = ("Who are you?",)
    counts_as: dict[str, str] | None = None
    prefix: str = "I am"
    token_lengths: dict[str, int] | None = None
    max_token_spread: int = 1
    description: str = ""
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_groups(cls, groups: Mapping[str, Sequence[str]], distractors: Mapping[str, Sequence[str]] | None = None,
                    *, counts_as: Mapping[str, str] | None = None, name: str = "custom",
                    questions: Sequence[str] = ("Who are you?",), prefix: str = "I am",
                    token_lengths: Mapping[str, int] | None = None, max_token_spread: int = 1) -> "CandidateSet":
        """A validated set from in-memory groups (e.g. ``{"ai": [...], "human": [...]}``)."""
        return cls(name, {str(g): tuple(c) for g, c in groups.items()},
                   {str(g): tuple(c) for g, c in (distractors or {}).items()}, tuple(questions),
                   None if counts_as is None else dict(counts_as), prefix=prefix,
                   token_lengths=None if token_lengths is None else dict(token_lengths),
                   max_token_spread=max_token_spread)

    def validate(self) -> None:
        """Raise :class:`~persona_vectors.datasets.DataError` (a ValueError) naming the first problem found."""
        from .datasets import DataError

        label = self.source
        if not isinstance(self.groups, Mapping) or len(self.groups) < 2:
            raise DataError(f"{label}: a candidate set needs at least two groups")
        for g, cs in list(self.groups.items()) + list(self.distractors.items()):
            _string_list(list(cs), f"group {g!r}", label, min_len=2)
        clash = sorted(set(self.groups) & set(self.distractors))
        if clash:
            raise DataError(f"{label}: {clash[0]!r} is both a group and a distractor group; rename one")
        for d, g in (self.counts_as or {}).items():
            if d not in self.distractors:
                raise DataError(f"{label}: counts_as names {d!r}, which is not a distractor group")
            if g not in self.groups:
                raise DataError(f"{label}: distractor group {d!r} counts as {g!r}, which is not a group "
                                f"({', '.join(self.groups)})")
        sizes = {g: len(cs) for g, cs in list(self.groups.items()) + list(self.distractors.items())}
        if len(set(sizes.values())) > 1:
            n = len(next(iter(self.groups.values())))
            shown = ", ".join(f"{g}={k}" for g, k in sizes.items())
            raise DataError(f"{label}: group sizes differ ({shown}); every group and distractor group needs the same "
                            f"number of candidates (e.g. {n}) so no group wins by having more members")
        every = [c for cs in list(self.groups.values()) + list(self.distractors.values()) for c in cs]
        dups, pairs = _overlap_errors(every)
        if dups:
            raise DataError(f"{label}: duplicate candidate(s) {dups} (case-insensitive); list each candidate once")
        if pairs:
            a, b = pairs[0]
            raise DataError(f"{label}: candidate {a!r} is a string prefix of {b!r} (their answers share those tokens, "
                            f"so one's score is contained in the other's); rename one of them")
        _string_list(list(self.questions), "questions", label)
        if not isinstance(self.prefix, str) or not self.prefix.strip():
            raise DataError(f"{label}: prefix must be a non-empty string such as 'I am'")
        if self.token_lengths is not None:
            missing = [c for c in every if c not in self.token_lengths]
            extra = [c for c in self.token_lengths if c not in every]
            if missing or extra:
                raise DataError(f"{label}: token_lengths must list exactly the candidates "
                                f"({'missing ' + repr(missing[0]) if missing else 'unknown ' + repr(extra[0])})")
            for g, cs in list(self.groups.items()) + list(self.distractors.items()):
                ls = [int(self.token_lengths[c]) for c in cs]
                if max(ls) - min(ls) > self.max_token_spread:
                    shown = ", ".join(f"{c}={n}" for c, n in zip(cs, ls))
                    raise DataError(f"{label}: group {g!r} mixes token lengths {min(ls)}..{max(ls)} ({shown}), more "
                                    f"than max_token_spread={self.max_token_spread}; pick names of similar length")

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(self.groups)

    @property
    def candidates(self) -> tuple[str, ...]:
        """Every group candidate, group by group in file order (distractors excluded)."""
        return tuple(c for cs in self.groups.values() for c in cs)

    @property
    def group_size(self) -> int:
        return len(next(iter(self.groups.values())))

    def scored_as(self, distractor: str) -> str:
        """The group a distractor group's mass counts toward (itself when it has no ``counts_as``)."""
        return (self.counts_as or {}).get(distractor, distractor)

    def group_of(self, candidate: str) -> str:
        """The group (or distractor group) a candidate belongs to (KeyError if none)."""
        for g, cs in list(self.groups.items()) + list(self.distractors.items()):
            if candidate in cs:
                return g
        raise KeyError(f"{candidate!r} is not in candidate set {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The file layout (``schema``, ``name``, ``groups``, ``distractors``, ...)."""
        d: dict[str, Any] = {"schema": _CANDIDATE_SET_SCHEMA, "name": self.name, "description": self.description,
                             "prefix": self.prefix, "questions": list(self.questions),
                             "max_token_spread": self.max_token_spread,
                             "groups": {g: list(c) for g, c in self.groups.items()},
                             "distractors": {g: ({"candidates": list(c), "counts_as": self.counts_as[g]}
                                                 if self.counts_as and g in self.counts_as else list(c))
                                             for g, c in self.distractors.items()}}
        if self.token_lengths is not None:
            d["token_lengths"] = {"counts": dict(self.token_lengths)}
        return d


def load_candidate_set(name: str | os.PathLike[str] = "v1") -> CandidateSet:
    """Load and validate an identity candidate set: a shipped name (``"v1"``) or the path of a JSON file.

    File layout (``data/identity/candidates_v1.json``)::

        {"schema": "persona_vectors.identity_candidates/1", "name": "v1", "description": "...",
         "prefix": "I am", "questions": ["Who are you?", ...], "max_token_spread": 1,
         "groups": {"ai": ["an AI assistant", ...], "human": [...], ...},
         "distractors": {"nature_cosmic_extra": {"counts_as": "nature_cosmic", "candidates": [...]}, ...},
         "token_lengths": {"tokenizer": "...", "prefix": "I am", "counts": {"an AI assistant": 3, ...}}}

    Errors (:class:`~persona_vectors.datasets.DataError`, one line naming the file and the fix): unknown
    name, invalid JSON, unequal group sizes, duplicates, a candidate that is a string prefix of another,
    a group whose recorded token lengths spread more than ``max_token_spread``.
    """
    from .datasets import DataError

    data, label = _read_json_file(name, "candidates")
    schema = data.get("schema", _CANDIDATE_SET_SCHEMA)
    if schema != _CANDIDATE_SET_SCHEMA:
        raise DataError(f"{label}: schema {schema!r} is not {_CANDIDATE_SET_SCHEMA!r}")
    groups = data.get("groups")
    if not isinstance(groups, dict):
        raise DataError(f"{label}: 'groups' must be an object mapping group names to candidate lists")
    raw_distractors = data.get("distractors", {})
    if not isinstance(raw_distractors, dict):
        raise DataError(f"{label}: 'distractors' must be an object mapping group names to candidate lists")
    distractors: dict[str, Any] = {}
    counts_as: dict[str, str] = {}
    for d, v in raw_distractors.items():
        if isinstance(v, dict):
            if not isinstance(v.get("counts_as", ""), str):
                raise DataError(f"{label}: distractors[{d!r}].counts_as must be a group name")
            if v.get("counts_as"):
                counts_as[d] = v["counts_as"]
            v = v.get("candidates")
        distractors[d] = v
    tl = data.get("token_lengths")
    counts = None
    if tl is not None:
        counts = tl.get("counts") if isinstance(tl, dict) else None
        if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
            raise DataError(f"{label}: 'token_lengths.counts' must map candidates to integer token counts")
    questions = data.get("questions", ["Who are you?"])
    prefix = data.get("prefix", "I am")
    spread = data.get("max_token_spread", 1)
    if not isinstance(spread, int) or spread < 0:
        raise DataError(f"{label}: 'max_token_spread' must be a non-negative integer")
    for what, v in (("groups", groups), ("distractors", distractors)):
        for g, cs in v.items():
            _string_list(cs, f"{what}[{g!r}]", label)
    _string_list(questions, "questions", label)
    return CandidateSet(str(data.get("name", name)), {g: tuple(c) for g, c in groups.items()},
                        {g: tuple(c) for g, c in distractors.items()}, tuple(questions), counts_as or None,
                        prefix=str(prefix), token_lengths=counts, max_token_spread=spread,
                        description=str(data.get("description", "")), source=label)


def _as_candidate_set(candidate_set: "CandidateSet | Mapping[str, Sequence[str]] | str | os.PathLike[str]") -> CandidateSet:
    if isinstance(candidate_set, CandidateSet):
        return candidate_set
    if isinstance(candidate_set, Mapping):
        return CandidateSet.from_groups(candidate_set)
    return load_candidate_set(candidate_set)


# =============================================================================================== group read-out
def _argmax_group(mass: Mapping[str, float]) -> str:
    """The group with the largest mass (ties: the first in order)."""
    best = None
    for g, m in mass.items():
        if best is None or m > mass[best]:
            best = g
    assert best is not None
    return best


def _group_mass(scores: torch.Tensor, cands: Sequence[str], group_of: Mapping[str, str],
                keep: Sequence[bool] | None = None) -> dict[str, torch.Tensor]:
    """Per-question mass of every group: softmax over the kept columns of ``scores`` [q, n], summed by group."""
    n = scores.shape[1]
    mask = torch.ones(n, dtype=torch.bool) if keep is None else torch.tensor(list(keep), dtype=torch.bool)
    s = scores.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=1)
    out: dict[str, torch.Tensor] = {}
    for j, c in enumerate(cands):
        g = group_of[c]
        out[g] = out.get(g, torch.zeros(scores.shape[0], dtype=torch.float64)) + p[:, j]
    return out


def _mean_mass(per_q: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {g: float(v.mean()) for g, v in per_q.items()}


def _lift(mass: Mapping[str, float], prior: Mapping[str, float]) -> dict[str, dict[str, float]]:
    return {g: {"diff": mass[g] - prior[g], "ratio": (mass[g] / prior[g]) if prior[g] > 0 else math.inf}
            for g in mass}


@dataclass(frozen=True)
class RobustnessCheck:
    """Does the top group survive leaving out any one candidate, and adding each distractor group?

    ``leave_one_out[c]`` is the top group with candidate ``c`` removed (the other candidates renormalized:
    a subset softmax is exact); ``with_distractor[d]`` the top group with distractor group ``d`` scored
    alongside the groups (its mass counted toward ``counts_as[d]``, else as a group of its own). With a separate prior (a steered
    read-out) the same is checked for the top group by lift (``top_lift_group``). ``robust`` is False, with
    one ``reasons`` line per change, when any top group changes.
    """

    top_group: str
    leave_one_out: dict[str, str]
    with_distractor: dict[str, str]
    leave_one_out_mass: dict[str, dict[str, float]]
    with_distractor_mass: dict[str, dict[str, float]]
    top_lift_group: str | None = None
    leave_one_out_lift: dict[str, str] | None = None
    with_distractor_lift: dict[str, str] | None = None
    reasons: tuple[str, ...] = ()

    @property
    def robust(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {"robust": self.robust, "reasons": list(self.reasons), "top_group": self.top_group,
                "leave_one_out": dict(self.leave_one_out), "with_distractor": dict(self.with_distractor),
                "with_distractor_mass": {d: dict(m) for d, m in self.with_distractor_mass.items()},
                "top_lift_group": self.top_lift_group,
                "leave_one_out_lift": None if self.leave_one_out_lift is None else dict(self.leave_one_out_lift),
                "with_distractor_lift": None if self.with_distractor_lift is None else dict(self.with_distractor_lift)}


def _robustness(cs: CandidateSet, scores: torch.Tensor, prior: torch.Tensor | None,
                dscores: Mapping[str, torch.Tensor], dprior: Mapping[str, torch.Tensor] | None) -> RobustnessCheck:
    cands = list(cs.candidates)
    group_of = {c: cs.group_of(c) for c in cands}
    mass = _mean_mass(_group_mass(scores, cands, group_of))
    top = _argmax_group(mass)
    use_lift = prior is not None and not torch.equal(prior, scores)
    top_lift = None
    if use_lift:
        pmass = _mean_mass(_group_mass(prior, cands, group_of))  # type: ignore[arg-type]
        top_lift = _argmax_group({g: mass[g] - pmass[g] for g in mass})
    reasons: list[str] = []

    def lift_top(sc: torch.Tensor, pr: torch.Tensor, names: list[str], gof: Mapping[str, str],
                 keep: Sequence[bool] | None = None) -> str:
        m = _mean_mass(_group_mass(sc, names, gof, keep))
        p = _mean_mass(_group_mass(pr, names, gof, keep))
        return _argmax_group({g: m[g] - p[g] for g in m})

    loo, loo_mass, loo_lift = {}, {}, {}
    for j, c in enumerate(cands):
        keep = [k != j for k in range(len(cands))]
        m = _mean_mass(_group_mass(scores, cands, group_of, keep))
        loo_mass[c] = m
        loo[c] = _argmax_group(m)
        if loo[c] != top:
            reasons.append(f"leaving out {c!r} changes the top group from {top} ({mass[top]:.3f}) to {loo[c]} "
                           f"({m[loo[c]]:.3f} vs {m[top]:.3f})")
        if use_lift:
            loo_lift[c] = lift_top(scores, prior, cands, group_of, keep)  # type: ignore[arg-type]
            if loo_lift[c] != top_lift:
                reasons.append(f"leaving out {c!r} changes the top group by lift from {top_lift} to {loo_lift[c]}")
    wd, wd_mass, wd_lift = {}, {}, {}
    for d, ds in dscores.items():
        names = cands + list(cs.distractors[d])
        gof = {**group_of, **{c: cs.scored_as(d) for c in cs.distractors[d]}}
        what = f"{d!r}" + (f" (counted as {cs.scored_as(d)})" if cs.scored_as(d) != d else "")
        sc = torch.cat([scores, ds], dim=1)
        m = _mean_mass(_group_mass(sc, names, gof))
        wd_mass[d] = m
        wd[d] = _argmax_group(m)
        if wd[d] != top:
            reasons.append(f"adding distractor group {what} changes the top group from {top} to {wd[d]} "
                           f"({m[wd[d]]:.3f} vs {m[top]:.3f})")
        if use_lift and dprior is not None and d in dprior:
            pr = torch.cat([prior, dprior[d]], dim=1)  # type: ignore[list-item]
            wd_lift[d] = lift_top(sc, pr, names, gof)
            if wd_lift[d] != top_lift:
                reasons.append(f"adding distractor group {what} changes the top group by lift from {top_lift} to "
                               f"{wd_lift[d]}")
    return RobustnessCheck(top, loo, wd, loo_mass, wd_mass, top_lift, loo_lift if use_lift else None,
                           wd_lift if use_lift else None, tuple(reasons))


def _tensor2(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return t


def _tuples(t: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in t)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class GroupReadout:
    """Group-level identity read-out over a balanced candidate set, with its unsteered prior and lift.

    ``scores`` [question][candidate] are the candidate scores (``candidates`` in group order) and
    ``prior_scores`` the same read-out without steering (``None`` when no prior was asked for). Per group:

    - ``mass[g]``: the group's probability (sum over its candidates of the within-set softmax), averaged
      over questions (``mass_per_question`` keeps each question's);
    - ``prior[g]``: the same from ``prior_scores``;
    - ``lift[g]``: ``{"diff": mass - prior, "ratio": mass / prior}``.

    ``prior_source`` says where the prior came from: ``"steering bypassed"`` (re-scored inside
    :func:`~persona_vectors.models.steering_bypassed`), ``"no hooks active"`` (the read-out was unsteered,
    so it is its own prior and every lift is 0 / ratio 1), ``"given"`` (a precomputed read-out) or
    ``"none"``. ``robustness`` is the :class:`RobustnessCheck` (``None`` when not run); ``robust`` mirrors it.
    """

    candidate_set: str
    groups: tuple[str, ...]
    candidates: tuple[str, ...]
    candidate_groups: tuple[str, ...]
    questions: tuple[str, ...]
    prefix: str
    scoring: str
    scores: tuple[tuple[float, ...], ...]
    prior_scores: tuple[tuple[float, ...], ...] | None = None
    distractor_scores: dict[str, tuple[tuple[float, ...], ...]] | None = None
    distractor_prior_scores: dict[str, tuple[tuple[float, ...], ...]] | None = None
    system: str | None = None
    prior_source: str = "none"
    robustness: RobustnessCheck | None = None

    @classmethod
    def from_scores(
        cls,
        candidate_set: "CandidateSet | Mapping[str, Sequence[str]] | str",
        scores: Any,
        prior_scores: Any = None,
        *,
        distractor_scores: Mapping[str, Any] | None = None,
        distractor_prior_scores: Mapping[str, Any] | None = None,
        questions: Sequence[str] | None = None,
        prefix: str | None = None,
        system: str | None = None,
        scoring: str = "mean",
        prior_source: str | None = None,
        robust: bool = True,
    ) -> "GroupReadout":
        """Build from score matrices ``[questions, candidates]`` (columns in ``candidate_set.candidates``
        order; a 1-D vector is one question). ``distractor_scores[d]`` are ``[questions, len(group d)]``
        scores of distractor group ``d``; with ``robust`` the check uses every distractor group given."""
        cs = _as_candidate_set(candidate_set)
        s = _tensor2(scores)
        if s.shape[1] != len(cs.candidates):
            raise ValueError(f"scores have {s.shape[1]} columns but candidate set {cs.name!r} has "
                             f"{len(cs.candidates)} candidates")
        p = None if prior_scores is None else _tensor2(prior_scores)
        if p is not None and p.shape != s.shape:
            raise ValueError(f"prior_scores shape {tuple(p.shape)} differs from scores shape {tuple(s.shape)}")
        qs = tuple(questions) if questions is not None else tuple(f"q{i}" for i in range(s.shape[0]))
        if len(qs) != s.shape[0]:
            raise ValueError(f"{len(qs)} questions for {s.shape[0]} rows of scores")
        ds = {d: _tensor2(v) for d, v in (distractor_scores or {}).items()}
        dp = {d: _tensor2(v) for d, v in (distractor_prior_scores or {}).items()}
        for d, v in list(ds.items()) + list(dp.items()):
            if d not in cs.distractors:
                raise ValueError(f"{d!r} is not a distractor group of {cs.name!r} ({', '.join(cs.distractors)})")
            if v.shape != (s.shape[0], len(cs.distractors[d])):
                raise ValueError(f"distractor scores of {d!r} have shape {tuple(v.shape)}, expected "
                                 f"{(s.shape[0], len(cs.distractors[d]))}")
        rob = _robustness(cs, s, p, ds, dp or None) if robust else None
        return cls(cs.name, cs.group_names, cs.candidates, tuple(cs.group_of(c) for c in cs.candidates), qs,
                   prefix if prefix is not None else cs.prefix, scoring, _tuples(s),
                   None if p is None else _tuples(p), {d: _tuples(v) for d, v in ds.items()} or None,
                   {d: _tuples(v) for d, v in dp.items()} or None, system,
                   prior_source if prior_source is not None else ("none" if p is None else "given"), rob)

    # ------------------------------------------------------------------ derived numbers
    def _masses(self, scores: tuple[tuple[float, ...], ...]) -> dict[str, torch.Tensor]:
        gof = dict(zip(self.candidates, self.candidate_groups))
        return _group_mass(torch.tensor(scores, dtype=torch.float64), self.candidates, gof)

    @property
    def probs(self) -> tuple[tuple[float, ...], ...]:
        """Within-set candidate probabilities per question."""
        return _tuples(torch.softmax(torch.tensor(self.scores, dtype=torch.float64), dim=1))

    @property
    def candidate_probs(self) -> dict[str, float]:
        """Each candidate's probability averaged over questions."""
        p = torch.softmax(torch.tensor(self.scores, dtype=torch.float64), dim=1).mean(0)
        return {c: float(v) for c, v in zip(self.candidates, p)}

    @property
    def mass_per_question(self) -> dict[str, tuple[float, ...]]:
        return {g: tuple(float(x) for x in v) for g, v in self._masses(self.scores).items()}

    @property
    def mass(self) -> dict[str, float]:
        """Group probability mass, averaged over questions (sums to 1 over groups)."""
        return _mean_mass(self._masses(self.scores))

    @property
    def prior(self) -> dict[str, float] | None:
        """The unsteered group mass (``None`` without a prior)."""
        return None if self.prior_scores is None else _mean_mass(self._masses(self.prior_scores))

    @property
    def prior_per_question(self) -> dict[str, tuple[float, ...]] | None:
        if self.prior_scores is None:
            return None
        return {g: tuple(float(x) for x in v) for g, v in self._masses(self.prior_scores).items()}

    @property
    def lift(self) -> dict[str, dict[str, float]] | None:
        """Per group ``{"diff": mass - prior, "ratio": mass / prior}`` (``None`` without a prior)."""
        prior = self.prior
        return None if prior is None else _lift(self.mass, prior)

    @property
    def top_group(self) -> str:
        """The group with the most mass."""
        return _argmax_group(self.mass)

    @property
    def top_lift_group(self) -> str | None:
        """The group whose mass rose most over the prior (``None`` without a prior, or when every lift is 0)."""
        lift = self.lift
        if lift is None or all(v["diff"] == 0 for v in lift.values()):
            return None
        return _argmax_group({g: v["diff"] for g, v in lift.items()})

    @property
    def top_candidate(self) -> str:
        cp = self.candidate_probs
        return max(cp, key=lambda c: cp[c])

    @property
    def robust(self) -> bool | None:
        """The robustness verdict (``None`` when the check was not run)."""
        return None if self.robustness is None else self.robustness.robust

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (infinite ratios become ``None``)."""
        lift = self.lift
        prior = self.prior
        mass = self.mass
        return {
            "candidate_set": self.candidate_set,
            "questions": list(self.questions),
            "prefix": self.prefix,
            "system": self.system,
            "scoring": self.scoring,
            "prior_source": self.prior_source,
            "top_group": self.top_group,
            "top_lift_group": self.top_lift_group,
            "top_candidate": self.top_candidate,
            "robust": self.robust,
            "groups": {
                g: {"mass": mass[g], "prior": None if prior is None else prior[g],
                    "lift_diff": None if lift is None else lift[g]["diff"],
                    "lift_ratio": None if lift is None else _finite_or_none(lift[g]["ratio"]),
                    "mass_per_question": list(self.mass_per_question[g])}
                for g in self.groups
            },
            "candidates": self.candidate_probs,
            "robustness": None if self.robustness is None else self.robustness.to_dict(),
        }


def _library_hooks(model: PersonaModel) -> tuple[int, int]:
    """(steering hooks, other hooks) registered on the bridge's hook points."""
    steering = other = 0
    unique = {id(hp): hp for hp in model.bridge.hook_dict.values()}
    for hp in unique.values():
        lens = list(getattr(hp, "fwd_hooks", None) or [])
        for h in lens:
            if getattr(getattr(h, "user_hook", None), "_pv_steering", False):
                steering += 1
            else:
                other += 1
        # HookPoint.add_hook registers each hook in fwd_hooks AND as a torch forward hook: count only the rest
        other += max(0, len(getattr(hp, "_forward_hooks", {}) or {}) - len(lens))
        other += len(getattr(hp, "_forward_pre_hooks", {}) or {})
    return steering, other


def _score_matrix(model: PersonaModel, cands: Sequence[str], questions: Sequence[PromptLike], *, prefix: str,
                  system: str | None, scoring: str, batch_size: int, share_prompt: bool) -> torch.Tensor:
    rs = identity_readout_batch(model, cands, questions, prefix=prefix, system=system, batch_size=batch_size,
                                scoring=scoring, share_prompt=share_prompt)
    return torch.tensor([r.logprobs for r in rs], dtype=torch.float64)


def group_readout(
    model: PersonaModel,
    candidate_set: "CandidateSet | Mapping[str, Sequence[str]] | str" = "v1",
    questions: Sequence[PromptLike] | None = None,
    *,
    prefix: str | None = None,
    system: str | None = None,
    scoring: str = "mean",
    prior: "GroupReadout | str | None" = "auto",
    robust: bool = True,
    distractors: Sequence[str] | None = None,
    batch_size: int = 32,
    share_prompt: bool = True,
) -> GroupReadout:
    """Group masses over a balanced candidate set, with the unsteered prior, the lift and a robustness check.

    Scores every candidate of ``candidate_set`` (a shipped name such as ``"v1"``, a JSON path, a
    :class:`CandidateSet` or a ``{group: [candidates]}`` mapping) after each question (default: the set's
    questions) and the answer ``prefix`` (default: the set's, "I am"), per-token mean log-probs by default.
    Steering hooks active around the call apply, as in :func:`identity_readout`.

    ``prior``: ``"auto"`` (default) re-scores the same read-out inside
    :func:`~persona_vectors.models.steering_bypassed` when library steering hooks are active (hooks the
    library did not add still apply: a warning says so), and reuses the read-out itself when no hooks are
    active (lift 0, ratio 1); a :class:`GroupReadout` computed earlier on the unsteered model is used as is
    (it must match the candidate set, questions, prefix, system and scoring); ``None`` skips the prior.

    ``robust=True`` also scores the set's distractor groups (all, or those named in ``distractors``) and runs
    :class:`RobustnessCheck`: the top group must survive leaving out each candidate and adding each
    distractor group, else ``robust`` is False with the reasons.
    """
    if isinstance(questions, str):
        raise TypeError("questions must be a list of prompts: wrap a single question as [question]")
    cs = _as_candidate_set(candidate_set)
    mode = _resolve_scoring(scoring, None)
    qs = list(cs.questions if questions is None else questions)
    if not qs:
        raise ValueError("group_readout needs at least one question")
    pre = cs.prefix if prefix is None else prefix
    if prior is not None and not isinstance(prior, (GroupReadout, str)):
        raise TypeError(f"prior must be 'auto', a GroupReadout or None, got {type(prior).__name__}")
    if isinstance(prior, str) and prior != "auto":
        raise ValueError(f"prior must be 'auto', a GroupReadout or None, got {prior!r}")
    dnames = list(cs.distractors) if distractors is None else list(distractors)
    unknown = [d for d in dnames if d not in cs.distractors]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a distractor group of {cs.name!r}; available: "
                         f"{', '.join(cs.distractors) or 'none'}")
    if not robust:
        dnames = []
    qnames = [q if isinstance(q, str) else str(list(q)) for q in qs]
    if isinstance(prior, GroupReadout):
        want = (cs.candidates, tuple(qnames), pre, system, mode)
        got = (prior.candidates, prior.questions, prior.prefix, prior.system, prior.scoring)
        names = ("candidates", "questions", "prefix", "system", "scoring")
        diff = [n for n, a, b in zip(names, want, got) if a != b]
        if diff:
            raise ValueError(f"the given prior differs in {', '.join(diff)}: compute it with the same settings "
                             "(or pass prior='auto')")
        missing = [d for d in dnames if not prior.distractor_scores or d not in prior.distractor_scores]
        if missing:
            raise ValueError(f"the given prior has no scores for distractor group {missing[0]!r}: compute it with "
                             "robust=True and the same distractors")
    every = list(cs.candidates) + [c for d in dnames for c in cs.distractors[d]]
    kw = dict(prefix=pre, system=system, scoring=mode, batch_size=batch_size, share_prompt=share_prompt)
    full = _score_matrix(model, every, qs, **kw)  # type: ignore[arg-type]
    pfull: torch.Tensor | None = None
    source = "none"
    if prior == "auto":
        steering, other = _library_hooks(model)
        if steering:
            if other:
                warnings.warn(f"{other} hook(s) not added by persona_vectors.steer are active: steering_bypassed() "
                              "skips only steering hooks, so the prior includes their effect", stacklevel=2)
            with steering_bypassed():
                pfull = _score_matrix(model, every, qs, **kw)  # type: ignore[arg-type]
            source = "steering bypassed"
        else:
            if other:
                warnings.warn(f"{other} hook(s) not added by persona_vectors.steer are active and cannot be bypassed: "
                              "the prior equals the read-out (lift 0); pass a prior computed without them",
                              stacklevel=2)
            pfull = full
            source = "no hooks active" if not other else "no steering hooks active"
    elif isinstance(prior, GroupReadout):
        cols = [torch.tensor(prior.scores, dtype=torch.float64)]  # the prior read-out's own scores
        cols += [torch.tensor(prior.distractor_scores[d], dtype=torch.float64) for d in dnames]  # type: ignore[index]
        pfull = torch.cat(cols, dim=1)
        source = "given"
    n = len(cs.candidates)
    splits: dict[str, slice] = {}
    k = n
    for d in dnames:
        splits[d] = slice(k, k + len(cs.distractors[d]))
        k += len(cs.distractors[d])
    return GroupReadout.from_scores(
        cs, full[:, :n], None if pfull is None else pfull[:, :n],
        distractor_scores={d: full[:, sl] for d, sl in splits.items()},
        distractor_prior_scores=None if pfull is None else {d: pfull[:, sl] for d, sl in splits.items()},
        questions=qnames, prefix=pre, system=system, scoring=mode, prior_source=source, robust=robust,
    )


# =============================================================================================== user read-out + controls
@dataclass(frozen=True)
class UserControls:
    """Questions for :func:`user_readout_with_controls`: ``user`` (about the user) and ``controls`` by kind
    (``non_self``: a named person unrelated to the conversation; ``third_person``: a third party), each a
    tuple of ``(question, answer prefix)``; ``candidates`` is the default candidate list."""

    name: str
    user: tuple[tuple[str, str], ...]
    controls: dict[str, tuple[tuple[str, str], ...]]
    candidates: tuple[str, ...]
    description: str = ""
    source: str = "<memory>"

    def items(self) -> list[tuple[str, str, str]]:
        """Every ``(kind, question, prefix)``: the user questions first, then each control kind."""
        return [("user", q, p) for q, p in self.user] + [(k, q, p) for k, qs in self.controls.items() for q, p in qs]


def load_user_controls(name: str | os.PathLike[str] = "v1") -> UserControls:
    """Load the user read-out questions and controls (``data/identity/user_controls_v1.json`` or a path).

    Layout: ``{"schema": "persona_vectors.user_controls/1", "name": "v1", "user": [{"question", "prefix"}, ...],
    "controls": {"non_self": [...], "third_person": [...]}, "candidates": [...]}``.
    """
    from .datasets import DataError

    data, label = _read_json_file(name, "user_controls")
    schema = data.get("schema", _USER_CONTROLS_SCHEMA)
    if schema != _USER_CONTROLS_SCHEMA:
        raise DataError(f"{label}: schema {schema!r} is not {_USER_CONTROLS_SCHEMA!r}")

    def pairs(v: Any, what: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(v, list) or not v:
            raise DataError(f"{label}: {what} must be a non-empty list of {{'question', 'prefix'}} objects")
        out = []
        for it in v:
            if not (isinstance(it, dict) and isinstance(it.get("question"), str) and isinstance(it.get("prefix"), str)
                    and it["question"].strip() and it["prefix"].strip()):
                raise DataError(f"{label}: every entry of {what} needs a non-empty 'question' and 'prefix', got {it!r}")
            out.append((it["question"], it["prefix"]))
        return tuple(out)

    controls = data.get("controls")
    if not isinstance(controls, dict) or not controls:
        raise DataError(f"{label}: 'controls' must map control kinds (e.g. 'non_self') to question lists")
    if "user" in controls:
        raise DataError(f"{label}: 'user' is reserved for the user questions; rename that control kind")
    cands = _string_list(data.get("candidates"), "candidates", label, min_len=2)
    dups, pre = _overlap_errors(cands)
    if dups or pre:
        what = f"duplicate {dups[0]!r}" if dups else f"{pre[0][0]!r} is a string prefix of {pre[0][1]!r}"
        raise DataError(f"{label}: candidates: {what}; fix the list")
    return UserControls(str(data.get("name", name)), pairs(data.get("user"), "'user'"),
                        {k: pairs(v, f"controls[{k!r}]") for k, v in controls.items()}, cands,
                        str(data.get("description", "")), label)


@dataclass(frozen=True)
class ControlledUserReadout:
    """P(target) when asked who the user is, next to the same under control questions.

    ``items`` are ``(kind, question, prefix)`` with kind ``"user"`` or a control kind; ``probs[i]`` the
    within-set candidate distribution for item ``i`` (``prior_probs`` the same with steering bypassed, or
    ``None``). The summary numbers are for ``target``; :meth:`p` gives them for any candidate.

    - ``p_user``: mean P(target) over the user questions; ``p_controls[kind]``: over each control kind;
      ``p_control``: over all control questions.
    - ``difference = p_user - p_control`` (``differences[kind]`` per kind): near 0 when the target wins the
      control questions as much as the user ones — "X is primed", not "the user is X".
    - With a prior: ``lift_user``, ``lift_control`` (each minus its unsteered value) and
      ``specific_lift = lift_user - lift_control``: what steering added to the user attribution beyond what
      it added everywhere.
    """

    target: str
    candidates: tuple[str, ...]
    items: tuple[tuple[str, str, str], ...]
    probs: tuple[tuple[float, ...], ...]
    prior_probs: tuple[tuple[float, ...], ...] | None
    scoring: str
    controls_name: str
    system: str | None = None
    prior_source: str = "none"

    def p(self, kind: str = "user", candidate: str | None = None, *, prior: bool = False) -> float:
        """Mean P(candidate) over the items of ``kind`` (``"user"``, a control kind, or ``"controls"`` for all
        control items); ``prior=True`` reads the unsteered probabilities."""
        c = self.target if candidate is None else candidate
        if c not in self.candidates:
            raise KeyError(f"{c!r} is not a candidate of this read-out")
        src = self.prior_probs if prior else self.probs
        if src is None:
            raise ValueError("this read-out has no prior (computed with prior=None)")
        j = self.candidates.index(c)
        rows = [src[i][j] for i, (k, _, _) in enumerate(self.items)
                if (k == kind) or (kind == "controls" and k != "user")]
        if not rows:
            raise KeyError(f"no items of kind {kind!r}; kinds: {', '.join(self.kinds)}")
        return float(sum(rows) / len(rows))

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for k, _, _ in self.items))

    @property
    def p_user(self) -> float:
        return self.p("user")

    @property
    def p_controls(self) -> dict[str, float]:
        return {k: self.p(k) for k in self.kinds if k != "user"}

    @property
    def p_control(self) -> float:
        return self.p("controls")

    @property
    def difference(self) -> float:
        return self.p_user - self.p_control

    @property
    def differences(self) -> dict[str, float]:
        return {k: self.p_user - v for k, v in self.p_controls.items()}

    @property
    def lift_user(self) -> float | None:
        return None if self.prior_probs is None else self.p_user - self.p("user", prior=True)

    @property
    def lift_control(self) -> float | None:
        return None if self.prior_probs is None else self.p_control - self.p("controls", prior=True)

    @property
    def specific_lift(self) -> float | None:
        lu, lc = self.lift_user, self.lift_control
        return None if lu is None or lc is None else lu - lc

    def to_dict(self) -> dict[str, Any]:
        j = self.candidates.index(self.target)
        per = []
        for i, (k, q, pre) in enumerate(self.items):
            row = self.probs[i]
            top = max(range(len(row)), key=lambda t: row[t])
            per.append({"kind": k, "question": q, "prefix": pre, "p_target": row[j],
                        "p_target_prior": None if self.prior_probs is None else self.prior_probs[i][j],
                        "top": self.candidates[top], "p_top": row[top]})
        return {"target": self.target, "controls": self.controls_name, "scoring": self.scoring, "system": self.system,
                "prior_source": self.prior_source, "p_user": self.p_user, "p_controls": self.p_controls,
                "p_control": self.p_control, "difference": self.difference, "differences": self.differences,
                "p_user_prior": None if self.prior_probs is None else self.p("user", prior=True),
                "p_control_prior": None if self.prior_probs is None else self.p("controls", prior=True),
                "lift_user": self.lift_user, "lift_control": self.lift_control,
                "specific_lift": self.specific_lift, "candidates": list(self.candidates), "items": per}


def user_readout_with_controls(
    model: PersonaModel,
    target: str,
    candidates: Sequence[str] | None = None,
    *,
    controls: "UserControls | str" = "v1",
    system: str | None = None,
    scoring: str = "mean",
    prior: str | None = "auto",
    batch_size: int = 32,
) -> ControlledUserReadout:
    """Who the model thinks the user is, with controls that tell attribution from priming.

    Scores ``candidates`` (default: the control file's list; ``target`` is appended when missing) after the
    user questions ("Who am I?" → "You are ...", "Who are you talking to?" → "I am talking to ...") and after
    the control questions — non-self ("Who wrote Hamlet?" → "Hamlet was written by ...", "Name a famous
    scientist.") and third-person ("Who is he?" → "He is ...") — each with its own answer prefix. Reports
    P(target) under each and the difference (:class:`ControlledUserReadout`). ``prior="auto"`` also scores
    everything with steering bypassed when steering hooks are active (as :func:`group_readout`);
    ``None`` skips it.
    """
    ctl = controls if isinstance(controls, UserControls) else load_user_controls(controls)
    mode = _resolve_scoring(scoring, None)
    cands = list(ctl.candidates if candidates is None else candidates)
    if not isinstance(target, str) or not target.strip():
        raise ValueError("target must be a non-empty candidate name")
    if target not in cands:
        cands.append(target)
    cands = _check_candidates(cands)
    if prior not in ("auto", None):
        raise ValueError(f"prior must be 'auto' or None, got {prior!r}")
    items = ctl.items()
    by_prefix: dict[str, list[int]] = {}
    for i, (_, _, pre) in enumerate(items):
        by_prefix.setdefault(pre, []).append(i)

    def score_all() -> torch.Tensor:
        out = torch.zeros(len(items), len(cands), dtype=torch.float64)
        for pre, idx in by_prefix.items():
            rs = identity_readout_batch(model, cands, [items[i][1] for i in idx], prefix=pre, system=system,
                                        batch_size=batch_size, scoring=mode)
            for i, r in zip(idx, rs):
                out[i] = torch.tensor(r.probs, dtype=torch.float64)
        return out

    probs = score_all()
    pprobs = None
    source = "none"
    if prior == "auto":
        steering, other = _library_hooks(model)
        if steering:
            with steering_bypassed():
                pprobs = score_all()
            source = "steering bypassed"
        else:
            pprobs, source = probs, ("no hooks active" if not other else "no steering hooks active")
    return ControlledUserReadout(target, tuple(cands), tuple(items), _tuples(probs),
                                 None if pprobs is None else _tuples(pprobs), mode, ctl.name, system, source)


# =============================================================================================== coherence
#: Perplexity at or below which the perplexity factor of :func:`coherence` is 1.
COHERENCE_PPL_LOW: float = 20.0
#: Perplexity at or above which the perplexity factor of :func:`coherence` is 0.
COHERENCE_PPL_HIGH: float = 1000.0

_WORD_RE = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class CoherenceScore:
    """Coherence of one text. ``score`` in [0, 1]; see :func:`coherence` for the formula."""

    text: str
    perplexity: float
    n_tokens: int
    repetition_rate: float
    distinct_1: float
    score: float
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (infinite perplexity becomes ``None``)."""
        d = dict(self.__dict__)
        if not math.isfinite(self.perplexity):
            d["perplexity"] = None
        return d


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def repetition_rate(text: str, n: int = 3) -> float:
    """Fraction of the word ``n``-grams that repeat an earlier one (0 with fewer than ``n`` words).

    Words are lower-cased ``\\w+`` runs and single punctuation marks, so "!!!!!!" repeats too.
    """
    w = _words(text)
    grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def distinct_1(text: str) -> float:
    """Unique words / words (0 for a text without words)."""
    w = _words(text)
    return len(set(w)) / len(w) if w else 0.0


def coherence_score(perplexity: float, repetition: float) -> float:
    """The combined score: ``f_ppl * (1 - repetition)``.

    ``f_ppl`` is 1 at ``perplexity <= COHERENCE_PPL_LOW``, 0 at ``>= COHERENCE_PPL_HIGH`` and falls
    linearly in log perplexity between. Fluent text from a small chat model sits at perplexity ~3-20;
    random characters and word salad sit far above 1000; degenerate loops ("the the the…") have low
    perplexity but high repetition, so they are caught by the second factor.
    """
    if not math.isfinite(perplexity):
        return 0.0
    lo, hi = math.log(COHERENCE_PPL_LOW), math.log(COHERENCE_PPL_HIGH)
    f = min(1.0, max(0.0, 1.0 - (math.log(max(perplexity, 1e-12)) - lo) / (hi - lo)))
    return float(f * (1.0 - min(1.0, max(0.0, repetition))))


def _hooks_active(model: PersonaModel) -> list[str]:
    active = []
    for name, hp in model.bridge.hook_dict.items():
        if getattr(hp, "fwd_hooks", None) or getattr(hp, "_forward_hooks", None) or getattr(hp, "_forward_pre_hooks", None):
            active.append(name)
    return active


def _context_token(tokenizer: Any) -> int:
    """A document-start token to condition unprompted text on, so its first token is scored too."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("The tokenizer has no BOS/EOS/pad token to condition unprompted text on; pass prompts=")


def coherence(
    model: PersonaModel,
    texts: Sequence[str],
    prompts: Sequence[PromptLike] | None = None,
    *,
    system: str | None = None,
    batch_size: int = 16,
) -> list[CoherenceScore]:
    """Score texts (typically steered generations) for coherence under the UNSTEERED model.

    Call it outside any steering context: a steered model would rate its own degenerate output as likely.
    It raises :class:`SteeringActiveError` when any hook is registered on the bridge's hook points (the
    residual-stream sites steering uses); hooks attached elsewhere (e.g. directly on HF submodules) are
    not detected.

    - ``perplexity``: exp(mean NLL) over the text's tokens. With ``prompts`` each text is scored as the
      assistant's reply to its prompt (chat template, generation prompt, ``system``); without, it is
      conditioned on a document-start token only.
    - ``repetition_rate``: fraction of repeated word 3-grams; ``distinct_1``: unique / total words.
    - ``score`` = :func:`coherence_score` (1 at perplexity ≤ 20 with no repetition, falling with log
      perplexity to 0 at 1000, times ``1 - repetition_rate``). Empty texts score 0 with a ``note``.
    """
    if isinstance(texts, str):
        raise TypeError("coherence() takes a list of texts: wrap a single text as [text]")
    if prompts is not None and len(prompts) != len(texts):
        raise ValueError(f"Got {len(texts)} texts but {len(prompts)} prompts: pass one prompt per text")
    active = _hooks_active(model)
    if active:
        raise SteeringActiveError(
            f"coherence() must run on the unsteered model, but hooks are active on {len(active)} hook point(s) "
            f"(e.g. {active[0]}): call it outside any steering context"
        )
    tok = model.tokenizer
    rows: list[list[int]] = []
    starts: list[int] = []
    idx: list[int] = []
    ctx_tok = None if prompts is not None else _context_token(tok)
    raw = bool(getattr(model, "raw_special_tokens", False))
    for i, t in enumerate(texts):
        ids = _ids(tok, t.strip(), raw)
        if not ids:
            continue
        ctx = _prompt_ids(model, prompts[i], system) if prompts is not None else [ctx_tok]  # type: ignore[index,list-item]
        model.check_length(len(ctx) + len(ids), what=f"text {i} to score ({len(ids)} tokens) with its context",
                           fix="shorten the text or its prompt")
        rows.append(ctx + ids)
        starts.append(len(ctx))
        idx.append(i)
    # sort by length to cut padding (no per-row steering here, so order is free)
    order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
    sums, counts = _score_rows(model, [rows[r] for r in order], [starts[r] for r in order], batch_size)
    nll: dict[int, tuple[float, int]] = {}
    for k, r in enumerate(order):
        nll[idx[r]] = (-float(sums[k]), int(counts[k]))
    out = []
    for i, t in enumerate(texts):
        if i not in nll:
            out.append(CoherenceScore(t, float("inf"), 0, 0.0, 0.0, 0.0, note="empty text"))
            continue
        total, n = nll[i]
        ppl = math.exp(min(total / n, 700.0))
        rep = repetition_rate(t)
        out.append(CoherenceScore(t, ppl, n, rep, distinct_1(t), coherence_score(ppl, rep)))
    return out


def is_coherent(score: CoherenceScore | float, threshold: float = 0.5) -> bool:
    """Whether a coherence score (a :class:`CoherenceScore` or its ``score``) reaches ``threshold``."""
    s = score.score if isinstance(score, CoherenceScore) else float(score)
    return s >= threshold
