"""Balanced group read-outs: probability mass per candidate group, its unsteered prior and the lift over it.

:func:`group_readout` scores a :class:`~persona_vectors.readout.candidates.CandidateSet`, reports per group
the mass, the prior (the same read-out with the library's steering hooks bypassed) and the lift, and runs a
robustness check (:class:`RobustnessCheck`: leave each candidate out, add distractor groups) that flags a
result whose top group depends on the set.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..models import PersonaModel, PromptLike, steering_bypassed
from .candidates import CandidateSet, _as_candidate_set
from .identity import identity_readout_batch
from .scoring import _resolve_scoring

__all__ = [
    "GroupReadout",
    "RobustnessCheck",
    "group_readout",
]


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
    # numpy, not torch: these [questions, candidates] matrices are tiny and the robustness check softmaxes them
    # thousands of times; torch's intra-op thread pool made each call ~8 ms on a busy 2-core machine.
    s = scores.detach().cpu().numpy().astype(np.float64, copy=True)
    if keep is not None:
        s[:, ~np.asarray(list(keep), dtype=bool)] = -np.inf
    e = np.exp(s - s.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    out: dict[str, np.ndarray] = {}
    for j, c in enumerate(cands):
        g = group_of[c]
        out[g] = out.get(g, np.zeros(s.shape[0], dtype=np.float64)) + p[:, j]
    return {g: torch.from_numpy(v) for g, v in out.items()}


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
