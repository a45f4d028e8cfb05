"""Teacher-forced scoring of continuations: the primitive every identity read-out stands on.

The chat prompt is rendered once (and kept as a KV cache when candidates share it), each candidate's tokens
are split from the answer prefix the way the tokenizer merges them (:func:`continuation_tokens`), and their
log-probs are summed or averaged per token (:data:`SCORING_MODES`); the answer tokens count as *response*
positions for position-aware steering. :func:`score_continuations` is the public entry point.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Sequence

import torch

from ..models import PersonaModel, PromptLike, position_ids_from_mask

__all__ = [
    "SCORING_MODES",
    "SteeringActiveError",
    "continuation_tokens",
    "score_continuations",
]


#: Candidate scores: ``"mean"`` log-prob per scored token (the read-outs' default) or ``"sum"`` over tokens.
SCORING_MODES: tuple[str, ...] = ("mean", "sum")


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
    tokenizer: Any, prefix: str, continuation: str, *, raw_special_tokens: bool = False, lead: str = ""
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

    ``lead``: text that precedes every answer after the generation prompt (:attr:`PersonaModel.response_prefix`:
    one space in the plain dialogue of base models); it is part of the context, or of the scored span when the
    tokenizer merges it into the first word (as SentencePiece does with a space).
    """
    full = _ids(tokenizer, lead + _answer_text(prefix, continuation), raw_special_tokens)
    pre = _ids(tokenizer, lead + prefix.rstrip(), raw_special_tokens)
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
        targets = ids[:, lo + 1 : hi + 1].to(logp.device)  # the unembedding's device under a device map
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
    lead = getattr(model, "response_prefix", "")
    spans = [continuation_tokens(model.tokenizer, prefix, c, raw_special_tokens=raw, lead=lead) for c in continuations]
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
