"""Identification in bits: how much a piece of evidence moves the model toward one identity.

The seed's coauthor experiment asks how many coauthor names it takes before a model "becomes" the scientist.
The natural unit is information: with a fixed candidate set C and a target t,

    bits(t) = log2 P(t | evidence) − log2 P(t | no evidence)

— how many halvings of the remaining doubt the evidence bought. It is bounded above by the *ceiling*
−log2 P(t | no evidence) (the evidence made t certain), which equals log2 |C| when the prior is uniform. The
entropy of the identity distribution with and without evidence says whether the model converges on *someone*
at all. With ``groups`` (e.g. each candidate's field) the same quantities are computed for the target's group,
so a report can tell "reaches the target" from "reaches only its field".

:func:`target_bits` is the pure computation on :class:`~persona_vectors.readout.identity.IdentityReadout` objects
(several prompts are pooled by averaging their probability vectors: the mixture over prompts);
:func:`identification_bits` runs the two read-outs on a model first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .identity import IdentityReadout, identity_readout_batch

if TYPE_CHECKING:
    from ..models import PersonaModel
    from ..models.wrapper import PromptLike

__all__ = ["TargetBits", "identification_bits", "target_bits"]


@dataclass(frozen=True)
class TargetBits:
    """Identification of ``target`` by the evidence, in bits (see the module docstring).

    Attributes:
        target: the identity being identified.
        p, p_prior: P(target) with and without the evidence (mixture over prompts).
        bits: ``log2 p − log2 p_prior``; negative when the evidence points away from the target.
        ceiling_bits: ``−log2 p_prior``, the most the evidence could buy.
        log2_candidates: ``log2 |C|``, the ceiling under a uniform prior.
        entropy, entropy_prior: entropy (bits) of the identity distribution with and without the evidence.
        top, top_prior: the most probable candidate with and without the evidence.
        group, group_p, group_p_prior, group_bits: the same for the target's group (``None`` without groups).
        n_prompts, n_prompts_prior: read-outs pooled on each side.
    """

    target: str
    p: float
    p_prior: float
    bits: float
    ceiling_bits: float
    log2_candidates: float
    entropy: float
    entropy_prior: float
    top: str
    top_prior: str
    group: str | None
    group_p: float | None
    group_p_prior: float | None
    group_bits: float | None
    n_prompts: int
    n_prompts_prior: int

    @property
    def share_of_ceiling(self) -> float:
        """``bits / ceiling_bits``: 1 when the evidence made the target certain, 0 when it changed nothing."""
        return self.bits / self.ceiling_bits if self.ceiling_bits > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary."""
        return {**asdict(self), "share_of_ceiling": self.share_of_ceiling}


def _mixture(readouts: Sequence[IdentityReadout], what: str) -> tuple[tuple[str, ...], np.ndarray]:
    if not readouts:
        raise ValueError(f"target_bits needs at least one {what} read-out")
    cands = readouts[0].candidates
    for r in readouts[1:]:
        if r.candidates != cands:
            raise ValueError(f"the {what} read-outs use different candidate lists: every read-out must score the "
                             "same candidates in the same order")
    return cands, np.mean([np.asarray(r.probs, dtype=np.float64) for r in readouts], axis=0)


def _entropy(p: np.ndarray) -> float:
    q = p[p > 0]
    return float(-(q * np.log2(q)).sum())


def target_bits(evidence: Sequence[IdentityReadout], baseline: Sequence[IdentityReadout], target: str,
                groups: Mapping[str, str] | None = None) -> TargetBits:
    """Bits of identification of ``target`` from read-outs with (``evidence``) and without (``baseline``) it.

    Args:
        evidence: read-outs of prompts carrying the evidence (pooled as the mixture of their distributions).
        baseline: read-outs of the same prompts without the evidence.
        target: a candidate of the read-outs.
        groups: optional ``{candidate: group}`` covering every candidate (e.g. the scientist's field).

    Raises:
        ValueError: empty sides, different candidate lists, a target that is not a candidate, or groups that
            leave a candidate out.
    """
    cands, p = _mixture(evidence, "evidence")
    cands0, p0 = _mixture(baseline, "baseline")
    if cands0 != cands:
        raise ValueError("the evidence and baseline read-outs use different candidate lists: score both with the "
                         "same candidates")
    if target not in cands:
        raise ValueError(f"target {target!r} is not one of the {len(cands)} candidates: add it to the candidate list")
    i = cands.index(target)
    tiny = 1e-300
    g = gp = gp0 = gbits = None
    if groups is not None:
        missing = [c for c in cands if c not in groups]
        if missing:
            raise ValueError(f"groups leaves {len(missing)} candidate(s) out (e.g. {missing[0]!r}): give every "
                             "candidate a group")
        g = groups[target]
        mask = np.array([groups[c] == g for c in cands])
        gp, gp0 = float(p[mask].sum()), float(p0[mask].sum())
        gbits = math.log2(max(gp, tiny)) - math.log2(max(gp0, tiny))
    return TargetBits(
        target=target, p=float(p[i]), p_prior=float(p0[i]),
        bits=math.log2(max(float(p[i]), tiny)) - math.log2(max(float(p0[i]), tiny)),
        ceiling_bits=-math.log2(max(float(p0[i]), tiny)), log2_candidates=math.log2(len(cands)),
        entropy=_entropy(p), entropy_prior=_entropy(p0),
        top=cands[int(p.argmax())], top_prior=cands[int(p0.argmax())],
        group=g, group_p=gp, group_p_prior=gp0, group_bits=gbits,
        n_prompts=len(evidence), n_prompts_prior=len(baseline),
    )


def identification_bits(
    model: PersonaModel,
    target: str,
    candidates: Sequence[str],
    evidence_prompts: Sequence[PromptLike],
    baseline_prompts: Sequence[PromptLike],
    *,
    prefix: str = "I am",
    system: str | None = None,
    groups: Mapping[str, str] | None = None,
    scoring: str = "mean",
    batch_size: int = 32,
) -> TargetBits:
    """Score the candidates after prompts with and without the evidence, then :func:`target_bits`.

    ``evidence_prompts`` and ``baseline_prompts`` are prompts or message lists (e.g. the same question with and
    without "You have written papers with A, B and C." before it); each candidate is scored as the
    continuation ``prefix + " " + candidate`` (per-token mean log-probs by default, ``scoring="sum"`` to sum).
    Works under any active steering, like every read-out.

    >>> tb = identification_bits(model, "Marie Curie", names,                      # doctest: +SKIP
    ...                          ["Your coauthors include Pierre Curie. Who are you?"], ["Who are you?"])
    >>> tb.bits, tb.ceiling_bits                                                   # doctest: +SKIP
    """
    ev = identity_readout_batch(model, candidates, list(evidence_prompts), prefix=prefix, system=system,
                                batch_size=batch_size, scoring=scoring)
    base = identity_readout_batch(model, candidates, list(baseline_prompts), prefix=prefix, system=system,
                                  batch_size=batch_size, scoring=scoring)
    return target_bits(ev, base, target, groups)
