"""Read out who a model thinks it is (by log-probs), and how coherent its text is.

**Identity read-out.** Instead of sampling an answer to "Who are you?" and classifying it, we ask the model
for its probability of each candidate identity directly: the chat prompt (rendered with the chat template
and the generation prompt) is followed by an answer prefix ("I am") and each candidate (" Napoleon
Bonaparte"), and the candidate's tokens are scored teacher-forced. Summed log-probs are turned into a
distribution over the candidate set (softmax), so the read-out is deterministic and cheap (the prompt runs
once into a KV cache, then one batched forward per chunk of candidates; no sampling noise). It works under
steering: hooks active around the call apply to every forward, and the answer tokens count as *response*
positions for position-aware steering, as they would if the model generated them.

The read-out is *relative to the candidate set*: probabilities only compare the candidates given, and
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
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from .models import PersonaModel, PromptLike, position_ids_from_mask

__all__ = [
    "COHERENCE_PPL_HIGH",
    "COHERENCE_PPL_LOW",
    "CoherenceScore",
    "DEFAULT_IDENTITY_CANDIDATES",
    "DEFAULT_USER_CANDIDATES",
    "IdentityReadout",
    "SteeringActiveError",
    "candidate_names",
    "coherence",
    "continuation_tokens",
    "identity_readout",
    "identity_readout_batch",
    "is_coherent",
    "score_continuations",
    "user_identity_readout",
]

#: A curated candidate set spanning the identities this library steers between: the default assistant,
#: supernatural beings, historical figures, objects, and a plain human. Phrased to follow "I am".
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

    Generation marks generated tokens as response (``model.positions.prompt_len``); a teacher-forced answer
    is the same tokens, so steering restricted to ``positions="response"`` applies to it here exactly as it
    would while the model generated it (and ``"prompt"`` steering applies to the prompt only).
    """
    tracker = getattr(model, "positions", None)
    if tracker is None or prompt_len is None:
        yield
        return
    prev = tracker.prompt_len
    tracker.prompt_len = prompt_len
    try:
        yield
    finally:
        tracker.prompt_len = prev
        tracker.offset = 0


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
    normalize_length: bool = False,
    share_prompt: bool = False,
) -> torch.Tensor:
    """Teacher-forced log-prob of each continuation after each prompt's chat turn and the answer prefix.

    Returns a float64 tensor ``[len(prompts), len(continuations)]``: the SUM of the continuation's token
    log-probs (the mean per token with ``normalize_length=True``). The assistant's answer is
    ``prefix + " " + continuation``; see :func:`continuation_tokens` for the token split.

    **Row order** (for per-row steering): the rows of the forward batch are laid out prompt-major,
    row ``i * len(continuations) + j`` ↔ (prompt ``i``, continuation ``j``). With ``batch_size=None``
    (default) all rows run in ONE forward in that order, so a ``[len(prompts) * len(continuations)]``
    per-row coefficient lines up with the batch; with a ``batch_size``, forward ``k`` holds rows
    ``[k * batch_size, (k + 1) * batch_size)``. Rows are laid out as ``generate`` lays them out: prompts
    left padded to end at the same position, answers right padded, position ids from the attention mask.
    Steering hooks active around this call apply to every forward, and ``model.positions.prompt_len`` is
    set to that common prompt end, so position-aware steering (``positions="response"``) acts on the
    answer tokens exactly as when the model generates them.

    ``share_prompt=True`` runs each prompt (plus the shared part of the answer prefix) once into a KV
    cache and only the continuations per row: the same scores up to float error for several times fewer
    FLOPs, but then every prompt costs one extra batch-1 forward before its continuation chunks (chunked
    per prompt), so per-row hooks no longer line up with one forward — keep the default ``False`` for
    per-row steering.
    """
    rows, starts, plens = _continuation_rows(model, prompts, continuations, prefix, system)
    sums, counts = _score_rows(model, rows, starts, batch_size, len(continuations) if share_prompt else None, plens)
    out = sums / counts.clamp_min(1) if normalize_length else sums
    return out.reshape(len(prompts), len(continuations))


# =============================================================================================== readout
@dataclass(frozen=True)
class IdentityReadout:
    """A distribution over candidate identities for one prompt.

    ``logprobs`` are the summed candidate log-probs (or per-token means with ``normalize_length``), ``probs``
    their softmax: the model's preference *within this candidate set*. ``n_tokens`` is each candidate's
    scored token count (long names pay for every token in the summed score).
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
    normalize_length: bool = False,
    share_prompt: bool = True,
) -> list[IdentityReadout]:
    """One :class:`IdentityReadout` per question, scoring all (question × candidate) rows in batched forwards.

    Rows follow :func:`score_continuations`'s order (question-major) in chunks of ``batch_size``. By default
    each question's prompt runs once into a KV cache shared by its candidates (``share_prompt``, see
    :func:`score_continuations`): position-wise steering hooks apply identically either way; pass
    ``share_prompt=False`` when a hook depends on the batch layout (per-row coefficients).
    ``candidates=None`` uses :data:`DEFAULT_IDENTITY_CANDIDATES`.
    """
    cands = _check_candidates(DEFAULT_IDENTITY_CANDIDATES if candidates is None else candidates)
    rows, starts, plens = _continuation_rows(model, questions, cands, prefix, system)
    sums, counts = _score_rows(model, rows, starts, batch_size, len(cands) if share_prompt else None, plens)
    scores = sums / counts.clamp_min(1) if normalize_length else sums
    nc = len(cands)
    out = []
    for i, q in enumerate(questions):
        sl = slice(i * nc, (i + 1) * nc)
        out.append(IdentityReadout.from_scores(
            cands, scores[sl], counts[sl].tolist(), question=q if isinstance(q, str) else str(list(q)),
            prefix=prefix, system=system, normalize_length=normalize_length,
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
    normalize_length: bool = False,
    share_prompt: bool = True,
) -> IdentityReadout:
    """Who the model says it is: P(candidate | chat(question), "I am") normalized over the candidates.

    Each candidate is scored by the SUM of its token log-probs (a full-name likelihood; multi-token names
    are not favoured by length normalization unless ``normalize_length=True``, which uses the mean per
    token instead). Note that a candidate that is a string prefix of another ("Napoleon" vs "Napoleon
    Bonaparte") always scores at least as high: pick candidate sets without such overlaps.
    ``system=None`` keeps the chat template's default (SmolLM2 inserts its assistant system prompt).
    """
    return identity_readout_batch(model, candidates, [question], prefix=prefix, system=system,
                                  batch_size=batch_size, normalize_length=normalize_length,
                                  share_prompt=share_prompt)[0]


def user_identity_readout(
    model: PersonaModel,
    candidates: Sequence[str] | None = None,
    *,
    question: PromptLike = "Who am I?",
    prefix: str = "You are",
    system: str | None = None,
    batch_size: int = 32,
    normalize_length: bool = False,
    share_prompt: bool = True,
) -> IdentityReadout:
    """Who the model thinks the *user* is: P(candidate | chat("Who am I?"), "You are").

    ``candidates=None`` uses :data:`DEFAULT_USER_CANDIDATES`.
    """
    cands = DEFAULT_USER_CANDIDATES if candidates is None else candidates
    return identity_readout(model, cands, question=question, prefix=prefix, system=system,
                            batch_size=batch_size, normalize_length=normalize_length, share_prompt=share_prompt)


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
