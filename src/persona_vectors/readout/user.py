"""Who the model thinks the user is, next to control questions about other people.

:func:`user_readout_with_controls` reads "Who am I?" together with questions about third parties, so that
"the model thinks the user is X" can be told apart from "X is primed" (:class:`ControlledUserReadout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..models import PersonaModel, steering_bypassed
from .candidates import UserControls, load_user_controls
from .groups import _library_hooks, _tuples
from .identity import _check_candidates, identity_readout_batch
from .scoring import _resolve_scoring

__all__ = [
    "ControlledUserReadout",
    "user_readout_with_controls",
]


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
    history: Sequence[Mapping[str, str]] | None = None,
) -> ControlledUserReadout:
    """Who the model thinks the user is, with controls that tell attribution from priming.

    Scores ``candidates`` (default: the control file's list; ``target`` is appended when missing) after the
    user questions ("Who am I?" → "You are ...", "Who are you talking to?" → "I am talking to ...") and after
    the control questions — non-self ("Who wrote Hamlet?" → "Hamlet was written by ...", "Name a famous
    scientist.") and third-person ("Who is he?" → "He is ...") — each with its own answer prefix. Reports
    P(target) under each and the difference (:class:`ControlledUserReadout`). ``prior="auto"`` also scores
    everything with steering bypassed when steering hooks are active (as :func:`group_readout`);
    ``None`` skips it. ``history``: earlier messages of a conversation (user/assistant turns, optionally a
    system message first); every question is then asked as the next user turn of that conversation.
    """
    if history is not None and system is not None and history and history[0].get("role") == "system":
        raise ValueError("history already starts with a system message; do not also pass system=")
    past = [dict(m) for m in history] if history else []
    for m in past:
        if "role" not in m or "content" not in m:
            raise ValueError(f"each history message needs 'role' and 'content' keys, got {m!r}")
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
            qs: list[Any] = [past + [{"role": "user", "content": items[i][1]}] if past else items[i][1] for i in idx]
            rs = identity_readout_batch(model, cands, qs, prefix=pre, system=system,
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
