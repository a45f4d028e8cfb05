"""Steering operators as registered objects: what a steering hook does to the residual stream at one site.

An operator has two steps. ``prepare(vector, alpha, model, site, ctx)`` runs once per steered site before any
hook is registered: it validates what depends on the model (dtype range, zero directions), precomputes
tensors and returns a *state*; ``apply(h, state)`` runs inside the hook on the residual ``h``
``[batch, pos, d_model]`` and returns the new residual. A state is a tensor, a number, or a dict / tuple /
list of them; the hook moves its tensors to the activation's device and dtype once per (dtype, device).

Adding an operator is one class and one registration; :func:`persona_vectors.steer.steer`, sweep configs,
preventative steering in finetuning and the CLI (``--operator``) all consult this registry:

>>> class Scale(BaseOperator):                                          # doctest: +SKIP
...     name = "scale"
...     def prepare(self, vector, alpha, model, site, ctx):
...         return {"factor": 1.0 + alpha}
...     def apply(self, h, state):
...         return h * state["factor"]
>>> register_operator(Scale())                                          # doctest: +SKIP
>>> with steer(model, vec, 0.5, layers=[14], operator="scale"): ...    # doctest: +SKIP

The shipped operators (``v`` the direction, ``û = v/|v|``, ``α`` the coefficient):

- ``"add"``: ``h + α·v`` (``relative=True``: ``h + α·N·û`` with ``N`` the site's mean residual norm);
- ``"ablate"``: ``h − α·(h·û)û``;
- ``"cap"``: ``h + α·(clamp(p) − p)·û`` with ``p = h·û`` clamped at ``threshold`` from below (``cap="min"``)
  or above (``cap="max"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .sites import Site, as_sites

STEER_POSITIONS: tuple[str, ...] = ("all", "prompt", "response")
CAP_MODES: tuple[str, ...] = ("min", "max")


# ============================================================================================== errors
class SteerSpecError(ValueError):
    """A steering setting that cannot work, found before the model runs (see :meth:`SteerSpec.validate`).

    ``str(err)`` is the message for Python callers. ``field`` (``"operator"``, ``"threshold"``, ...) and
    ``reason`` (``"must be one of 'add', 'ablate', 'cap', got 'x'"``) let front ends name the setting in their
    own words (a sweep config's key, a CLI flag); ``choices`` and ``value`` are set for choice settings.
    """

    def __init__(self, message: str, *, field: str, reason: str, choices: Sequence[str] | None = None,
                 value: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.choices: tuple[str, ...] | None = None if choices is None else tuple(choices)
        self.value = value


class SteerSpecTypeError(SteerSpecError, TypeError):
    """A :class:`SteerSpecError` about a value of the wrong type (also a ``TypeError``)."""


class SteeringError(RuntimeError):
    """Steering produced a non-finite residual stream (or was given a non-finite setting).

    The message names the spec (operator, alpha, threshold, site) and the fix; ``rows`` holds the batch rows
    that went non-finite when that is known (``None``: all of them, or not row-specific), so a batched caller
    such as a sweep can drop exactly those generations and keep the others.
    """

    def __init__(self, message: str, rows: Sequence[int] | None = None) -> None:
        super().__init__(message)
        self.rows: tuple[int, ...] | None = None if rows is None else tuple(int(r) for r in rows)


def choice_error(field_name: str, value: Any, choices: Sequence[str]) -> SteerSpecError:
    """The error for a setting outside its choices (one wording for every front end)."""
    reason = f"must be one of {', '.join(map(repr, choices))}, got {value!r}"
    return SteerSpecError(f"{field_name} must be one of {tuple(choices)}, got {value!r}", field=field_name,
                          reason=reason, choices=choices, value=value)


# ============================================================================================== helpers
def fmt(value: Any) -> str:
    """A number or list of numbers, short (``1e+39``, ``[1, 2.5]``)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else repr(value)


def describe(info: Mapping[str, Any]) -> str:
    """The spec of one steered site in words, for error messages."""
    parts = [f"operator={info['operator']}", f"alpha={fmt(info['alpha'])}"]
    if info.get("relative"):
        parts.append("relative=True")
    if "threshold" in info:
        parts.append(f"threshold={fmt(info.get('threshold'))}")
    parts += [f"layer {info['layer']} ({info['site']})", f"vector {info['source']!r}"]
    return ", ".join(parts)


def as_float_list(x: torch.Tensor) -> float | list[float]:
    """A tensor as a float (one element) or a list of floats."""
    x = x.detach().double().cpu().reshape(-1)
    return float(x[0]) if x.numel() == 1 else [float(v) for v in x]


def nonfinite_rows(t: torch.Tensor) -> list[int] | None:
    """Batch rows of ``t`` ([rows, ...]) holding a non-finite value; None when ``t`` has no row dimension."""
    if t.ndim < 2:
        return None
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(-1)
    return torch.nonzero(bad).flatten().tolist()


def check_threshold_value(value: Any, where: str, dtype: torch.dtype | None = None) -> float:
    """A threshold as a finite float (representable in ``dtype`` when given); ``where`` names it in errors."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        raise SteerSpecTypeError(f"{where} must be a number, got {value!r}", field="threshold",
                                 reason=f"must be a number, got {value!r}", value=value)
    t = float(value)
    if not math.isfinite(t):
        raise SteerSpecError(f"{where} must be finite, got {t!r}: pass a finite number (see projection_threshold())",
                             field="threshold", reason=f"must be a finite number, got {t!r} (see projection_threshold())",
                             value=value)
    if dtype is not None:
        big = float(torch.finfo(dtype).max) if dtype.is_floating_point else math.inf
        if abs(t) >= big:
            raise SteerSpecError(f"{where} is {t:g}, beyond the range of the model's {dtype} (|t| < {big:.3g}): pass "
                                 "a projection threshold on the residual's scale (see projection_threshold())",
                                 field="threshold", reason=f"is {t:g}, beyond the range of the model's {dtype}",
                                 value=value)
    return t


def threshold_for(threshold: Any, site: Site, dtype: torch.dtype | None = None) -> float:
    """The threshold at ``site`` from a float or ``{layer: float}``."""
    if threshold is None:
        raise SteerSpecError("operator='cap' needs threshold= (a float or {layer: float}); see projection_threshold()",
                             field="threshold", reason="is required with operator 'cap' (a projection value; see "
                             "projection_threshold())")
    if isinstance(threshold, Mapping):
        for k, v in threshold.items():
            if Site.parse(k) == site:
                return check_threshold_value(v, f"threshold for {site}", dtype)
        raise SteerSpecError(f"threshold has no entry for {site} (keys: {', '.join(str(Site.parse(k)) for k in threshold)})",
                             field="threshold", reason=f"has no entry for {site}")
    return check_threshold_value(threshold, f"threshold for {site}", dtype)


def unit_direction(vector: torch.Tensor, site: Site, operator: str) -> torch.Tensor:
    """``v/|v|`` (per row for ``[rows, d]``); a zero direction raises."""
    norms = vector.norm(dim=-1)
    if bool((norms == 0).any()):
        raise ValueError(f"The direction at {site} is zero: it has no unit direction to {operator} along")
    return vector / norms.unsqueeze(-1)


def state_to(state: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """``state`` with every floating tensor in it moved to ``dtype`` / ``device`` (dicts, tuples, lists walked)."""
    if isinstance(state, torch.Tensor):
        return state.to(device=device, dtype=dtype) if state.is_floating_point() else state.to(device=device)
    if isinstance(state, dict):
        return {k: state_to(v, dtype, device) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(state_to(v, dtype, device) for v in state)
    return state


# ============================================================================================ protocol
@dataclass
class PrepareContext:
    """What :meth:`Operator.prepare` may need beyond the vector and coefficient.

    ``spec`` is the :class:`~persona_vectors.steer.SteerSpec`; ``info`` the site's report dict (add entries to
    it; :meth:`~persona_vectors.steer.SteeringHandle.report` returns it); ``rows`` the per-row count (None when
    every row is steered alike); ``residual_norm()`` measures (or reads) the site's mean residual norm on the
    unsteered model, ``cached_residual_norm()`` only reads it.
    """

    spec: Any
    info: dict[str, Any]
    rows: int | None
    residual_norm: Callable[[], float]
    cached_residual_norm: Callable[[], "float | None"]
    extra: dict[str, Any] = field(default_factory=dict)

    def error(self, what: str, rows: Sequence[int] | None = None) -> SteeringError:
        """A :class:`SteeringError` naming this site's spec."""
        return SteeringError(f"{describe(self.info)}: {what}", rows=rows)


@runtime_checkable
class Operator(Protocol):
    """A steering operator: register an instance with :func:`register_operator`."""

    name: str
    #: Whether ``relative=True`` (alpha in units of the residual norm) means something for this operator.
    supports_relative: bool

    def validate(self, spec: Any) -> None:
        """Model-free checks of the operator's own settings (raise :class:`SteerSpecError`)."""

    def prepare(self, vector: torch.Tensor, alpha: torch.Tensor, model: Any, site: Site, ctx: PrepareContext) -> Any:
        """Precompute the state for one site. ``vector``: float64 ``[d]`` or per row ``[rows, d]``; ``alpha``:
        float64 ``[]`` or per row ``[rows, 1]``."""

    def apply(self, h: torch.Tensor, state: Any) -> torch.Tensor:
        """The steered residual (``h``: ``[batch, pos, d_model]``, ``state`` on ``h``'s device and dtype)."""


class BaseOperator:
    """Defaults for :class:`Operator` implementations: no relative units, no settings of its own."""

    name: str = ""
    supports_relative: bool = False

    def validate(self, spec: Any) -> None:
        return None

    def prepare(self, vector: torch.Tensor, alpha: torch.Tensor, model: Any, site: Site, ctx: PrepareContext) -> Any:
        raise NotImplementedError

    def apply(self, h: torch.Tensor, state: Any) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_REGISTRY: dict[str, Operator] = {}


def register_operator(operator: Operator, *, replace: bool = False) -> Operator:
    """Make ``operator`` available under ``operator.name`` everywhere an operator is named; returns it.

    Registering a taken name raises unless ``replace=True``.
    """
    name = getattr(operator, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"An operator needs a name that is an identifier, got {name!r}")
    for attr in ("prepare", "apply", "validate"):
        if not callable(getattr(operator, attr, None)):
            raise TypeError(f"Operator {name!r} has no {attr}() method (subclass BaseOperator)")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not operator:
        raise ValueError(f"An operator named {name!r} is already registered: pass replace=True to replace it")
    _REGISTRY[name] = operator
    return operator


def unregister_operator(name: str) -> None:
    """Remove a registered operator (no error when it is not registered)."""
    _REGISTRY.pop(name, None)


def get_operator(name: Any) -> Operator:
    """The operator registered under ``name``; an unknown name raises :class:`SteerSpecError`."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise choice_error("operator", name, operator_names())
    return _REGISTRY[name]


def operator_names() -> tuple[str, ...]:
    """Names of the registered operators, in registration order."""
    return tuple(_REGISTRY)


# ============================================================================================ shipped
def _overflows(coef: torch.Tensor | float, dt: torch.dtype) -> bool:
    if isinstance(coef, torch.Tensor):
        return not bool(torch.isfinite(coef).all())
    return dt.is_floating_point and abs(coef) >= float(torch.finfo(dt).max)


class Add(BaseOperator):
    """``h + α·v`` (``relative=True``: ``h + α·N·û``)."""

    name = "add"
    supports_relative = True

    def prepare(self, vector: torch.Tensor, alpha: torch.Tensor, model: Any, site: Site, ctx: PrepareContext) -> Any:
        info = ctx.info
        if ctx.spec.relative:
            norms = vector.norm(dim=-1)
            if bool((norms == 0).any()):
                raise ValueError(f"The direction at {site} is zero: it has no unit direction to add along")
            resid = float(ctx.residual_norm())
            vec = alpha * resid * (vector / norms.unsqueeze(-1))
            raw = (alpha.reshape(-1) if alpha.ndim else alpha) * resid / norms
            info["residual_norm"] = resid
        else:
            vec = alpha * vector
            raw = alpha
            cached = ctx.cached_residual_norm()  # only if already measured on these weights
            if cached is not None:
                info["residual_norm"] = cached
        info["alpha_raw"] = as_float_list(torch.as_tensor(raw))
        info["delta_norm"] = as_float_list(vec.norm(dim=-1))
        delta = vec.reshape(-1, 1, vec.shape[-1]) if vec.ndim == 2 else vec
        delta = delta.to(device=model.device, dtype=model.dtype)
        if not bool(torch.isfinite(delta).all()):
            raise ctx.error(f"the added vector (|alpha*v| = {fmt(info['delta_norm'])}) overflows the model's "
                            f"{model.dtype}: use a smaller alpha (or relative=True) or check the vector",
                            rows=nonfinite_rows(delta) if ctx.rows is not None else None)
        return delta

    def apply(self, h: torch.Tensor, state: Any) -> torch.Tensor:
        return h + state


class _AlongUnit(BaseOperator):
    """Shared prepare of operators acting along ``û``: the unit direction and the blend coefficient ``α``."""

    def unit_and_coef(self, vector: torch.Tensor, alpha: torch.Tensor, model: Any, site: Site,
                      ctx: PrepareContext) -> tuple[torch.Tensor, torch.Tensor | float]:
        dev, dt = model.device, model.dtype
        u = unit_direction(vector, site, self.name)
        unit = (u.reshape(-1, 1, u.shape[-1]) if u.ndim == 2 else u).to(device=dev, dtype=dt)
        coef: torch.Tensor | float = alpha.reshape(-1, 1, 1).to(device=dev, dtype=dt) if alpha.ndim else float(alpha)
        if _overflows(coef, dt):
            raise ctx.error(f"alpha overflows the model's {dt}: use a smaller alpha",
                            rows=nonfinite_rows(coef) if isinstance(coef, torch.Tensor) else None)
        return unit, coef


class Ablate(_AlongUnit):
    """``h − α·(h·û)û``: ``α = 1`` removes the component along ``û``."""

    name = "ablate"

    def prepare(self, vector: torch.Tensor, alpha: torch.Tensor, model: Any, site: Site, ctx: PrepareContext) -> Any:
        unit, coef = self.unit_and_coef(vector, alpha, model, site, ctx)
        return {"unit": unit, "coef": coef}

    def apply(self, h: torch.Tensor, state: Any) -> torch.Tensor:
        u, c = state["unit"], state["coef"]
        return h - c * (h * u).sum(-1, keepdim=True) * u


class Cap(_AlongUnit):
    """Clamp the projection ``p = h·û`` at ``threshold`` (``cap="min"``: ``p ≥ threshold``; ``"max"``: ``≤``),
    blended by ``α``."""

    name = "cap"

    def validate(self, spec: Any) -> None:
        if spec.threshold is None:
            threshold_for(None, Site(0))  # raises the one "needs threshold" error

    def prepare(self, vector: torch.Tensor, alpha: torch.Tensor, model: Any, site: Site, ctx: PrepareContext) -> Any:
        unit, coef = self.unit_and_coef(vector, alpha, model, site, ctx)
        thr = threshold_for(ctx.spec.threshold, site, model.dtype)
        ctx.info.update(threshold=thr, cap=ctx.spec.cap)
        return {"unit": unit, "coef": coef, "threshold": thr, "lower": ctx.spec.cap == "min"}

    def apply(self, h: torch.Tensor, state: Any) -> torch.Tensor:
        u, c, thr = state["unit"], state["coef"], state["threshold"]
        p = (h * u).sum(-1, keepdim=True)
        target = p.clamp(min=thr) if state["lower"] else p.clamp(max=thr)
        return h + c * (target - p) * u


for _op in (Add(), Ablate(), Cap()):
    register_operator(_op)


# ============================================================================================ validate
def _named_sites(spec: Any) -> tuple[Site, ...]:
    """The sites a spec names without a model (its layers, or a PersonaVector's sites), empty if unknown."""
    try:
        if spec.layers is not None:
            return as_sites(spec.layers)
        sites = getattr(spec.vector, "sites", None)
        return tuple(sites) if sites else ()
    except (TypeError, ValueError):
        return ()


def validate_spec(spec: Any) -> Operator:
    """Every model-free rule of a steering spec, in one place; returns the spec's operator.

    Called by :meth:`persona_vectors.steer.SteerSpec.validate` (sweep configs, preventative steering and the
    CLI build a ``SteerSpec`` and call that).
    """
    op = get_operator(spec.operator)
    if not isinstance(spec.positions, str) or spec.positions not in STEER_POSITIONS:
        raise choice_error("positions", spec.positions, STEER_POSITIONS)
    if not isinstance(spec.cap, str) or spec.cap not in CAP_MODES:
        raise SteerSpecError(f"cap must be 'min' or 'max', got {spec.cap!r}", field="cap",
                             reason=f"must be 'min' or 'max', got {spec.cap!r}", choices=CAP_MODES, value=spec.cap)
    if spec.relative and not op.supports_relative:
        ok = [n for n in operator_names() if get_operator(n).supports_relative]
        names = " or ".join(f"operator={n!r}" for n in ok) or "no registered operator"
        raise SteerSpecError(f"relative=True only applies to {names} (operator={op.name!r} takes alpha as given: "
                             "ablate's alpha is already a fraction, cap uses threshold)", field="relative",
                             reason=f"only applies to operator {' or '.join(map(repr, ok))}", value=spec.relative)
    if spec.threshold is not None:
        if isinstance(spec.threshold, Mapping):
            for k, v in spec.threshold.items():
                check_threshold_value(v, f"threshold for {Site.parse(k)}")
        else:
            sites = _named_sites(spec)
            check_threshold_value(spec.threshold, f"threshold for {sites[0]}" if sites else "threshold")
    op.validate(spec)
    return op


__all__ = [
    "Ablate",
    "Add",
    "BaseOperator",
    "CAP_MODES",
    "Cap",
    "Operator",
    "PrepareContext",
    "STEER_POSITIONS",
    "SteerSpecError",
    "SteeringError",
    "get_operator",
    "operator_names",
    "register_operator",
    "unregister_operator",
    "validate_spec",
]
