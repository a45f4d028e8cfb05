"""Coherence of generated text: perplexity under the unsteered model plus word-level repetition.

:func:`coherence` scores texts (:class:`CoherenceScore`) in [0, 1] so that sweeps can drop degenerate
samples (:func:`is_coherent`); it refuses to run while steering hooks are active, since the measurement
needs the unsteered model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..models import PersonaModel, PromptLike, active_hook_points
from .scoring import SteeringActiveError, _ids, _prompt_ids, _score_rows

__all__ = [
    "COHERENCE_PPL_HIGH",
    "COHERENCE_PPL_LOW",
    "CoherenceScore",
    "coherence",
    "is_coherent",
]


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
    active = active_hook_points(model)
    if active:
        raise SteeringActiveError(
            f"coherence() must run on the unsteered model, but hooks are active on {len(active)} hook point(s) "
            f"(e.g. {active[0]}): call it outside any steering context"
        )
    tok = model.tokenizer
    rows: list[list[int]] = []
    starts: list[int] = []
    idx: list[int] = []
    bos = getattr(model, "bos_token_id", None)
    ctx_tok = None if prompts is not None else (bos if bos is not None else _context_token(tok))
    raw = bool(getattr(model, "raw_special_tokens", False))
    for i, t in enumerate(texts):
        lead = getattr(model, "response_prefix", "") if prompts is not None else ""
        ids = _ids(tok, lead + t.strip(), raw) if t.strip() else []
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
