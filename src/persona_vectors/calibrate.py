"""Choosing a steering strength: calibrate ``alpha`` per vector and layer, and scan layers at matched coherence.

A strength that reads well at one layer is gibberish at another, and a vector's raw norm says little about
how hard it pushes. :func:`calibrate_alpha` measures, for one vector, layer and sign, how a damage metric
grows with ``|alpha|`` on a small fixed question set, and returns the strengths at which it reaches given
levels:

- ``metric="coherence"`` (``target_coherence=(0.9, 0.7, 0.5)``, the default): greedy steered answers to the
  questions, scored by :func:`~persona_vectors.readout.coherence` under the unsteered model; the mean score
  falls with ``|alpha|``.
- ``metric="kl"`` (``target_kl=(0.25, 1.0)``, in nats): the unsteered model's greedy answers are
  teacher-forced and the next-token distribution at every response position is compared, steered vs
  unsteered: mean ``KL(unsteered || steered)``. One forward per strength: cheaper and smoother.

Search: ``|alpha|`` (in relative units, see below) doubles from ``start`` until every level is reached or
``max_alpha`` is passed; the first bracket that reaches each level is refined ``rounds`` times by
``points`` evenly spaced strengths, then interpolated linearly. Strengths are evaluated several at a time in
one batched pass (per-row steering, one row per question and strength). Greedy and deterministic. Every measured point is kept
(:attr:`CalibrationResult.curve`) for plotting.

Units (the library's one convention): ``steer()``, ``persona-vectors steer`` and ``persona-vectors identity``
take a **raw** ``alpha`` by default (the multiplier on the stored direction) and a relative one with
``relative=True`` / ``--relative`` (``alpha · residual_norm(site) · v/|v|``). A calibration result holds
both: ``res.alpha(0.7)`` is raw, ready for ``steer(model, vec, res.alpha(0.7), layers=[L])``;
``res.alpha(0.7, relative=True)`` is relative, ready for ``steer(..., relative=True)``.

Results are cached on disk under ``cache_dir()/calibration/<model fingerprint>/`` keyed by the direction's
checksum at the site, the vector's provenance fingerprint, the current weight fingerprint, the layer and
every setting, so a second call costs no forward pass.

>>> res = calibrate_alpha(model, vec, 14, sign=-1)                 # doctest: +SKIP
>>> print(res.table())                                             # doctest: +SKIP
>>> with steer(model, vec, res.alpha(0.7), layers=[14]): ...       # doctest: +SKIP
>>> scan = layer_scan(model, vec, [8, 14, 20], readout="projection")  # doctest: +SKIP
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .models import PersonaModel
from .sites import Site, check_sites
from .vector import PersonaVector, library_version

#: Bump when the meaning of a cached calibration changes.
CALIBRATION_FORMAT = 1

#: The fixed, deliberately varied questions every calibration answers (part of the cache key).
CALIBRATION_QUESTIONS: tuple[str, ...] = (
    "Who are you?",
    "What do you usually do on a normal day?",
    "Can you explain how a rainbow forms?",
    "What advice would you give to someone starting a new job?",
)

METRICS: tuple[str, ...] = ("coherence", "kl")
DEFAULT_COHERENCE: tuple[float, ...] = (0.9, 0.7, 0.5)
DEFAULT_KL: tuple[float, ...] = (0.25, 1.0)

CacheArg = Union[bool, str, "Path", None]
ProgressArg = Union[bool, Callable[[str], None], None]


class CalibrationError(ValueError):
    """A calibration setting that cannot work (bad level, layer outside the vector, zero direction, ...)."""


# ------------------------------------------------------------------------------------------------ result


@dataclass
class CalibrationResult:
    """Strengths at which a damage metric reaches given levels, for one vector, layer and sign.

    ``alphas_rel[level]`` / ``alphas_raw[level]``: the signed strength (relative / raw units) at which the
    metric first reaches ``level`` (``None``: not reached by ``max_alpha``; ``0.0``: the unsteered model is
    already there, see ``baseline``). ``curve``: every measured ``(alpha_rel, alpha_raw, value)``, sorted by
    ``|alpha|``. ``unit``: raw alpha per relative unit at this site (``residual_norm / |v|``).
    """

    metric: str
    layer: int
    site: str
    sign: int
    levels: tuple[float, ...]
    alphas_rel: dict[float, Optional[float]]
    alphas_raw: dict[float, Optional[float]]
    baseline: float
    curve: list[tuple[float, float, float]]
    residual_norm: float
    vector_norm: float
    questions: tuple[str, ...]
    settings: dict[str, Any]
    key: str = ""
    cached: bool = False
    seconds: float = 0.0
    n_evaluations: int = 0
    n_passes: int = 0

    @property
    def unit(self) -> float:
        """Raw alpha per relative unit at this site: ``residual_norm / |v|``."""
        return self.residual_norm / self.vector_norm

    def _level(self, level: Optional[float]) -> float:
        if level is None:
            if len(self.levels) != 1:
                raise CalibrationError(f"this calibration has levels {list(self.levels)}: pass one of them")
            return self.levels[0]
        for lv in self.levels:
            if math.isclose(lv, float(level), abs_tol=1e-9):
                return lv
        raise CalibrationError(f"level {level} was not calibrated (levels: {list(self.levels)}); "
                               "call calibrate_alpha with it")

    def alpha(self, level: Optional[float] = None, *, relative: bool = False) -> Optional[float]:
        """The signed strength for ``level`` (raw by default, like ``steer()``; ``relative=True`` for relative)."""
        lv = self._level(level)
        return (self.alphas_rel if relative else self.alphas_raw)[lv]

    def reached(self, level: Optional[float] = None) -> bool:
        """Whether the metric reached ``level`` within the searched range."""
        return self.alphas_rel[self._level(level)] is not None

    def rows(self) -> list[dict[str, Any]]:
        """One dict per level: level, alpha_rel, alpha_raw, reached."""
        return [{"level": lv, "alpha_rel": self.alphas_rel[lv], "alpha_raw": self.alphas_raw[lv],
                 "reached": self.alphas_rel[lv] is not None} for lv in self.levels]

    def table(self) -> str:
        """A plain-text table of the calibrated strengths."""
        name = "coherence" if self.metric == "coherence" else "KL (nats)"
        head = (f"# layer {self.layer} ({self.site}), sign {'+' if self.sign > 0 else '-'}, {self.metric}: "
                f"unsteered {self.baseline:.3f}; 1 relative = {self.unit:.4g} raw"
                + (" (cached)" if self.cached else f" ({self.n_evaluations} strengths in {self.n_passes} passes, {self.seconds:.1f} s)"))
        lines = [head, f"{name:>10}  {'alpha_rel':>10}  {'alpha_raw':>10}"]
        for r in self.rows():
            if r["reached"] and r["alpha_rel"] == 0:
                lines.append(f"{r['level']:>10.3g}  {'0':>10}  {'0':>10}  (the unsteered model is already there)")
            elif r["reached"]:
                lines.append(f"{r['level']:>10.3g}  {r['alpha_rel']:>+10.4f}  {r['alpha_raw']:>+10.4g}")
            else:
                lines.append(f"{r['level']:>10.3g}  {'not reached':>10}  (|alpha_rel| <= {self.settings['max_alpha']:g})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict (levels as numbers; the inverse is :meth:`from_dict`)."""
        return {"metric": self.metric, "layer": self.layer, "site": self.site, "sign": self.sign,
                "levels": list(self.levels), "rows": self.rows(), "baseline": self.baseline,
                "curve": [list(p) for p in self.curve], "residual_norm": self.residual_norm,
                "vector_norm": self.vector_norm, "unit": self.unit, "questions": list(self.questions),
                "settings": dict(self.settings), "key": self.key, "cached": self.cached,
                "seconds": self.seconds, "n_evaluations": self.n_evaluations, "n_passes": self.n_passes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibrationResult":
        """Inverse of :meth:`to_dict`."""
        levels = tuple(float(x) for x in d["levels"])
        rows = {float(r["level"]): r for r in d["rows"]}
        return cls(d["metric"], int(d["layer"]), d["site"], int(d["sign"]), levels,
                   {lv: rows[lv]["alpha_rel"] for lv in levels}, {lv: rows[lv]["alpha_raw"] for lv in levels},
                   float(d["baseline"]), [tuple(float(x) for x in p) for p in d["curve"]],  # type: ignore[misc]
                   float(d["residual_norm"]), float(d["vector_norm"]), tuple(d["questions"]), dict(d["settings"]),
                   d.get("key", ""), bool(d.get("cached", False)), float(d.get("seconds", 0.0)),
                   int(d.get("n_evaluations", 0)), int(d.get("n_passes", 0)))


# ------------------------------------------------------------------------------------------------ metrics


class _Metric(abc.ABC):
    """Evaluates the damage metric at several raw coefficients in one batched pass (per-row steering)."""

    higher_is_worse: bool

    def __init__(self, model: PersonaModel, vector: PersonaVector, site: Site, questions: Sequence[str],
                 max_new_tokens: int, positions: str, system: Optional[str], max_rows: int = 32) -> None:
        self.model, self.vector, self.site = model, vector, site
        self.questions = list(questions)
        self.max_new_tokens = max_new_tokens
        self.positions = positions
        self.system = system
        self.per_call = max(1, max_rows // len(self.questions))  # coefficients per batched forward
        self.n = 0  # coefficients evaluated
        self.calls = 0  # batched passes

    def _steer(self, alphas_raw: Sequence[float]) -> Any:
        """Row ``i * len(questions) + j`` gets coefficient ``alphas_raw[i]``."""
        from .steer import steer

        rows = [float(a) for a in alphas_raw for _ in self.questions]
        return steer(self.model, self.vector, rows, layers=[self.site], positions=self.positions,  # type: ignore[arg-type]
                     allow_other_model=True)

    def __call__(self, alphas_raw: Sequence[float]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(alphas_raw), self.per_call):
            chunk = list(alphas_raw[i : i + self.per_call])
            out += self._batch(chunk)
            self.n += len(chunk)
            self.calls += 1
        return out

    @abc.abstractmethod
    def _batch(self, alphas_raw: Sequence[float]) -> list[float]:
        """The metric at each raw strength (one batched pass)."""


class _Coherence(_Metric):
    higher_is_worse = False

    def _batch(self, alphas_raw: Sequence[float]) -> list[float]:
        from .readout import coherence

        prompts = [q for _ in alphas_raw for q in self.questions]
        with self._steer(alphas_raw):
            texts = self.model.generate(prompts, system=self.system, max_new_tokens=self.max_new_tokens,
                                        temperature=0.0)
        scores = [s.score for s in coherence(self.model, texts, prompts=prompts, system=self.system)]
        nq = len(self.questions)
        return [float(np.mean(scores[i * nq : (i + 1) * nq])) for i in range(len(alphas_raw))]


class _KL(_Metric):
    higher_is_worse = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        m = self.model
        answers = m.generate(self.questions, system=self.system, max_new_tokens=self.max_new_tokens,
                             temperature=0.0)
        rows, sel = [], []
        for q, a in zip(self.questions, answers):
            p = m.text_ids(m.chat_text(m.to_messages(q, self.system)))
            r = m.response_ids(a if a.strip() else ".")
            rows.append(p + r)
            # logits at position i predict token i+1: the response tokens are predicted from len(p)-1 on
            sel.append((len(p) - 1, len(p) + len(r) - 1))
        self.rows, self.sel = rows, sel
        self.base = self._logprobs(1)[0]

    def _logprobs(self, copies: int) -> list[torch.Tensor]:
        """Response-position log-probs ``[positions, vocab]`` per copy of the question set."""
        from .models import position_ids_from_mask

        m = self.model
        enc = m._rows_to_batch(self.rows * copies, "right")
        with torch.inference_mode():
            logits = m.hf(**enc, position_ids=position_ids_from_mask(enc["attention_mask"]), use_cache=False).logits
        nq = len(self.rows)
        out = []
        for c in range(copies):
            parts = [logits[c * nq + i, a:b] for i, (a, b) in enumerate(self.sel)]
            out.append(torch.log_softmax(torch.cat(parts).float(), dim=-1))
        return out

    def _batch(self, alphas_raw: Sequence[float]) -> list[float]:
        with self._steer(alphas_raw):
            lps = self._logprobs(len(alphas_raw))
        p0 = self.base.exp()
        vals = []
        for lp in lps:
            v = float((p0 * (self.base - lp)).sum(-1).mean())
            vals.append(v if math.isfinite(v) else float("inf"))
        return vals


# ------------------------------------------------------------------------------------------------ search


def _reached(value: float, level: float, higher_is_worse: bool) -> bool:
    return value >= level if higher_is_worse else value <= level


def _interp(lo: float, flo: float, hi: float, fhi: float, level: float) -> float:
    if not (math.isfinite(flo) and math.isfinite(fhi)) or fhi == flo:
        return hi
    t = min(1.0, max(0.0, (level - flo) / (fhi - flo)))
    return lo + t * (hi - lo)


def _search(f: Callable[[Sequence[float]], list[float]], levels: Sequence[float], higher_is_worse: bool, *,
            start: float, max_alpha: float, rounds: int, points: int, per_call: int
            ) -> tuple[dict[float, Optional[float]], dict[float, float]]:
    """Batched bracketing on ``|alpha|`` (relative units): a doubling grid from ``start`` (evaluated
    ``per_call`` coefficients at a time, stopping once every level is reached), then ``rounds`` rounds
    that evaluate ``points`` evenly spaced coefficients inside each level's bracket at once, and a final
    linear interpolation. Returns (``|alpha|`` per level, every measured point)."""
    curve: dict[float, float] = {}

    def evs(pts: Iterable[float]) -> None:
        todo = [p for p in dict.fromkeys(pts) if p not in curve]
        if todo:
            for p, v in zip(todo, f(todo)):
                curve[p] = v

    grid = [0.0]
    a = start
    while a <= max_alpha * (1 + 1e-9):
        grid.append(a)
        a *= 2
    done = 0
    while done < len(grid):
        evs(grid[done : done + per_call])
        done = min(len(grid), done + per_call)
        if all(any(_reached(curve[g], lv, higher_is_worse) for g in grid[:done]) for lv in levels):
            break
    grid = grid[:done]
    found: dict[float, Optional[float]] = {}
    brackets: dict[float, tuple[float, float]] = {}
    for lv in levels:
        if _reached(curve[0.0], lv, higher_is_worse):
            found[lv] = 0.0
            continue
        hit = next((i for i, g in enumerate(grid) if g > 0 and _reached(curve[g], lv, higher_is_worse)), None)
        if hit is None:
            found[lv] = None
        else:
            brackets[lv] = (grid[hit - 1], grid[hit])
    for _ in range(rounds):
        evs(lo + (hi - lo) * j / (points + 1) for lo, hi in brackets.values() for j in range(1, points + 1))
        for lv, (lo, hi) in brackets.items():
            inner = sorted(p for p in curve if lo < p < hi)
            first = next((p for p in inner if _reached(curve[p], lv, higher_is_worse)), None)
            if first is None:
                brackets[lv] = (inner[-1] if inner else lo, hi)
            else:
                before = [p for p in inner if p < first]
                brackets[lv] = (before[-1] if before else lo, first)
    for lv, (lo, hi) in brackets.items():
        found[lv] = _interp(lo, curve[lo], hi, curve[hi], lv)
    return found, curve


# ------------------------------------------------------------------------------------------------ cache


def _cache_path(cache: CacheArg, fingerprint: str, key: str) -> Optional[Path]:
    if cache is None or cache is False:
        return None
    if cache is True:
        from .models import cache_dir

        root = cache_dir()
    else:
        root = Path(cache)
    return root / "calibration" / fingerprint / f"{key}.json"


def _direction_checksum(v: torch.Tensor) -> str:
    return hashlib.sha256(v.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()).hexdigest()[:24]


def _key(parts: Mapping[str, Any]) -> str:
    blob = json.dumps({**parts, "format": CALIBRATION_FORMAT, "library_version": library_version()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _levels(target_coherence: Any, target_kl: Any) -> tuple[str, tuple[float, ...]]:
    if target_coherence is not None and target_kl is not None:
        raise CalibrationError("pass target_coherence or target_kl, not both")
    metric = "kl" if target_kl is not None else "coherence"
    raw = target_kl if target_kl is not None else (DEFAULT_COHERENCE if target_coherence is None else target_coherence)
    vals = [raw] if isinstance(raw, (int, float)) else list(raw)
    if not vals:
        raise CalibrationError(f"no {metric} levels given: pass at least one")
    out = []
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
            raise CalibrationError(f"{metric} levels must be finite numbers, got {x!r}")
        x = float(x)
        if metric == "coherence" and not 0 < x < 1:
            raise CalibrationError(f"coherence levels must lie strictly between 0 and 1 (e.g. 0.7), got {x:g}")
        if metric == "kl" and x <= 0:
            raise CalibrationError(f"KL levels must be > 0 nats (e.g. 0.5), got {x:g}")
        out.append(x)
    return metric, tuple(dict.fromkeys(out))


def _site(vector: PersonaVector, layer: Union[int, str, Site], n_layers: int) -> Site:
    site = Site.parse(layer)
    check_sites([site], n_layers)
    if site not in vector:
        have = ", ".join(str(s.layer) for s in vector.sites)
        raise CalibrationError(f"the vector has no direction at layer {site.layer} (it has layers {have}): "
                               "pass one of those")
    return site


def _bar(progress: ProgressArg, desc: str) -> Any:
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(desc=desc, unit="eval", leave=False, dynamic_ncols=True)
    return None


# ------------------------------------------------------------------------------------------------ entry points


def calibrate_alpha(
    model: PersonaModel,
    vector: PersonaVector,
    layer: Union[int, str, Site],
    *,
    target_coherence: Union[float, Sequence[float], None] = None,
    target_kl: Union[float, Sequence[float], None] = None,
    sign: int = 1,
    questions: Optional[Sequence[str]] = None,
    max_new_tokens: Optional[int] = None,
    positions: str = "all",
    system: Optional[str] = None,
    start: float = 0.0625,
    max_alpha: float = 16.0,
    rounds: int = 2,
    points: int = 3,
    max_rows: int = 32,
    cache: CacheArg = True,
    progress: ProgressArg = True,
) -> CalibrationResult:
    """Strengths at which steering ``vector`` at ``layer`` (direction ``sign``) reaches given damage levels.

    Args:
        target_coherence: mean-coherence levels in (0, 1) (default ``(0.9, 0.7, 0.5)``); the metric is
            :func:`~persona_vectors.readout.coherence` of greedy steered answers (``max_new_tokens`` 32).
        target_kl: instead, next-token KL levels in nats (teacher-forced unsteered answers, ``max_new_tokens``
            16; one forward per strength).
        sign: ``+1`` (along the vector) or ``-1`` (against it); the returned alphas carry it.
        questions: the fixed question set (default :data:`CALIBRATION_QUESTIONS`).
        positions: steered positions, as in :func:`~persona_vectors.steer.steer`.
        start, max_alpha: first and largest ``|alpha|`` of the doubling grid, in relative units.
        rounds, points: refinement: each round evaluates ``points`` strengths inside every level's bracket
            (it shrinks ``(points + 1) ** rounds``-fold, 16-fold by default), then interpolates linearly.
        max_rows: rows per batched pass (each strength steers one row per question, per-row steering).
        cache: ``True`` (``cache_dir()``), a directory, or ``False``.
        progress: ``True`` shows a tqdm counter of evaluations on stderr; ``False`` is silent.

    Returns a :class:`CalibrationResult`; ``res.alpha(level)`` is the raw strength (the default unit of
    ``steer``), ``res.alpha(level, relative=True)`` the relative one.
    """
    t0 = time.perf_counter()
    metric, levels = _levels(target_coherence, target_kl)
    if sign not in (1, -1):
        raise CalibrationError(f"sign must be +1 or -1, got {sign!r}")
    if not isinstance(vector, PersonaVector):
        raise TypeError("calibrate_alpha needs a PersonaVector (load one with PersonaVector.load)")
    for name, val in (("start", start), ("max_alpha", max_alpha)):
        if not (math.isfinite(val) and val > 0):
            raise CalibrationError(f"{name} must be a finite number > 0, got {val}")
    if start > max_alpha:
        raise CalibrationError(f"start ({start}) must not exceed max_alpha ({max_alpha})")
    for name, val, lo in (("rounds", rounds, 0), ("points", points, 1), ("max_rows", max_rows, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise CalibrationError(f"{name} must be an integer >= {lo}, got {val!r}")
    qs = tuple(questions) if questions is not None else CALIBRATION_QUESTIONS
    if not qs or isinstance(questions, str):
        raise CalibrationError("questions must be a non-empty list of strings")
    mnt = int(max_new_tokens if max_new_tokens is not None else (32 if metric == "coherence" else 16))
    if mnt < 1:
        raise CalibrationError(f"max_new_tokens must be >= 1, got {mnt}")
    site = _site(vector, layer, model.n_layers)
    v = vector[site]
    vnorm = float(v.double().norm())
    if vnorm == 0:
        raise CalibrationError(f"the vector's direction at {site} is zero: nothing to calibrate")
    fp = model.weights_fingerprint()
    settings = {"start": start, "max_alpha": max_alpha, "rounds": rounds, "points": points, "max_new_tokens": mnt,
                "positions": positions, "system": system}
    key = _key({"direction": _direction_checksum(v), "vector_fp": vector.provenance.fingerprint, "weights": fp,
                "site": str(site), "metric": metric, "levels": levels, "sign": sign, "questions": qs, **settings})
    path = _cache_path(cache, fp, key)
    if path is not None and path.is_file():
        try:
            res = CalibrationResult.from_dict(json.loads(path.read_text()))
            res.cached, res.key = True, key
            return res
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable entry: recompute and overwrite
    resid = float(model.residual_norm(site, fingerprint=fp))
    unit = resid / vnorm
    cls = _Coherence if metric == "coherence" else _KL
    f = cls(model, vector, site, qs, mnt, positions, system, max_rows)
    bar = _bar(progress, f"calibrate layer {site.layer}")

    def at(rels: Sequence[float]) -> list[float]:
        vals = f([sign * r * unit for r in rels])
        if bar is not None:
            bar.update(len(rels))
            bar.set_postfix_str(f"|alpha_rel| up to {max(rels):.3g}")
        elif callable(progress):
            progress(f"layer {site.layer}: " + ", ".join(f"|alpha_rel|={r:.3g}: {v:.3f}" for r, v in zip(rels, vals)))
        return vals

    try:
        found, curve = _search(at, levels, f.higher_is_worse, start=start, max_alpha=max_alpha, rounds=rounds,
                               points=points, per_call=f.per_call)
    finally:
        if bar is not None:
            bar.close()
    alphas_rel = {lv: (None if a is None else (sign * a if a else 0.0)) for lv, a in found.items()}
    alphas_raw = {lv: (None if a is None else a * unit) for lv, a in alphas_rel.items()}
    pts = sorted(curve.items())
    res = CalibrationResult(
        metric, site.layer, str(site), sign, levels, alphas_rel, alphas_raw, curve[0.0],
        [(sign * a, sign * a * unit, val) for a, val in pts], resid, vnorm, qs, settings, key, False,
        time.perf_counter() - t0, f.n, f.calls)
    if path is not None:
        from ._infra.files import atomic_write_text as _atomic_write_text

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(path, json.dumps(res.to_dict(), indent=1, default=str))
        except OSError:
            pass  # a cache is a convenience
    return res


# ------------------------------------------------------------------------------------------------ layer scan


@dataclass
class LayerScanRow:
    """One layer of a :class:`LayerScan`: the matched strength and the read-out's change under it."""

    layer: int
    alpha_rel: Optional[float]
    alpha_raw: Optional[float]
    baseline: Optional[float]
    steered: Optional[float]
    effect: Optional[float]
    calibration: CalibrationResult = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "alpha_rel": self.alpha_rel, "alpha_raw": self.alpha_raw,
                "baseline": self.baseline, "steered": self.steered, "effect": self.effect}


@dataclass
class LayerScan:
    """Per layer: the strength at which the metric reaches ``level`` and the read-out's effect there."""

    readout: str
    metric: str
    level: float
    sign: int
    rows: list[LayerScanRow]

    @property
    def best(self) -> Optional[int]:
        """The layer with the largest ``|effect|`` (None when no layer reached the level)."""
        ok = [r for r in self.rows if r.effect is not None]
        return max(ok, key=lambda r: abs(r.effect)).layer if ok else None  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"readout": self.readout, "metric": self.metric, "level": self.level, "sign": self.sign,
                "best": self.best, "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> str:
        lines = [f"# read-out {self.readout} at {self.metric} {self.level:g} (sign {'+' if self.sign > 0 else '-'})",
                 f"{'layer':>5}  {'alpha_rel':>10}  {'alpha_raw':>10}  {'baseline':>9}  {'steered':>9}  {'effect':>9}"]
        for r in self.rows:
            if r.effect is None:
                lines.append(f"{r.layer:>5}  {'not reached':>10}")
            else:
                lines.append(f"{r.layer:>5}  {r.alpha_rel:>+10.4f}  {r.alpha_raw:>+10.4g}  {r.baseline:>9.4f}  "
                             f"{r.steered:>9.4f}  {r.effect:>+9.4f}")
        return "\n".join(lines)


def _readout_fn(model: PersonaModel, vector: PersonaVector, readout: Union[str, Callable[[PersonaModel], float]],
                questions: Sequence[str], readout_layer: Optional[int], system: Optional[str]
                ) -> tuple[str, Callable[[PersonaModel], float]]:
    if callable(readout):
        return getattr(readout, "__name__", "custom"), readout
    if not isinstance(readout, str):
        raise CalibrationError(f"readout must be 'projection', 'group:<name>' or a callable, got {readout!r}")
    if readout == "projection":
        site = _site(vector, readout_layer if readout_layer is not None else max(s.layer for s in vector.sites),
                     model.n_layers)
        unit_v = (vector[site].double() / vector[site].double().norm()).float()
        answers = model.generate(list(questions), system=system, max_new_tokens=16, temperature=0.0)
        convs = [model.to_messages(q, system) + [{"role": "assistant", "content": a if a.strip() else "."}]
                 for q, a in zip(questions, answers)]

        def proj(m: PersonaModel) -> float:
            from .record import record

            rec = record(m, convs, [site], positions="response", progress=False)
            return float(rec.mean(site).float().cpu() @ unit_v)

        return f"projection@{site.layer}", proj
    if readout.startswith("group:"):
        from .readout import group_readout, load_candidate_set

        group = readout.split(":", 1)[1]
        cs = load_candidate_set("v1")
        if group not in cs.group_names:
            raise CalibrationError(f"no group {group!r} in candidate set v1 (groups: {', '.join(cs.group_names)})")

        def mass(m: PersonaModel) -> float:
            return float(group_readout(m, cs, system=system, prior=None, robust=False).mass[group])

        return readout, mass
    raise CalibrationError(f"readout must be 'projection', 'group:<name>' or a callable, got {readout!r}")


def layer_scan(
    model: PersonaModel,
    vector: PersonaVector,
    layers: Optional[Iterable[int]] = None,
    *,
    readout: Union[str, Callable[[PersonaModel], float]] = "projection",
    coherence_level: Optional[float] = 0.7,
    kl_level: Optional[float] = None,
    sign: int = 1,
    readout_layer: Optional[int] = None,
    system: Optional[str] = None,
    cache: CacheArg = True,
    progress: ProgressArg = True,
    **calibrate_kw: Any,
) -> LayerScan:
    """Per layer, the read-out's effect size at matched damage: steer with the strength at which the
    metric reaches ``coherence_level`` (or ``kl_level``, which takes precedence) and compare the read-out
    with the unsteered model.

    ``readout``: ``"projection"`` (mean projection of the unsteered answers' response tokens on the
    vector's unit direction at ``readout_layer``, default the vector's deepest site), ``"group:<name>"``
    (the mass of that group of the balanced candidate set v1, :func:`~persona_vectors.readout.group_readout`)
    or a callable ``model -> float``. ``effect = steered - baseline``. ``layers`` defaults to the vector's.
    """
    layer_list = [int(x) for x in (layers if layers is not None else vector.layers)]
    if not layer_list:
        raise CalibrationError("no layers to scan: pass at least one")
    for L in layer_list:
        _site(vector, L, model.n_layers)
    if kl_level is not None:
        kw: dict[str, Any] = {"target_kl": (kl_level,)}
        metric, level = "kl", float(kl_level)
    elif coherence_level is not None:
        kw = {"target_coherence": (coherence_level,)}
        metric, level = "coherence", float(coherence_level)
    else:
        raise CalibrationError("pass coherence_level or kl_level")
    qs = calibrate_kw.pop("questions", None)
    name, fn = _readout_fn(model, vector, readout, qs or CALIBRATION_QUESTIONS, readout_layer, system)
    from .steer import steer

    base = fn(model)
    rows = []
    for L in layer_list:
        cal = calibrate_alpha(model, vector, L, sign=sign, questions=qs, system=system, cache=cache,
                              progress=progress, **kw, **calibrate_kw)
        a_raw, a_rel = cal.alpha(level), cal.alpha(level, relative=True)
        if a_raw is None:
            rows.append(LayerScanRow(L, None, None, base, None, None, cal))
            continue
        with steer(model, vector, a_raw, layers=[L], positions=cal.settings["positions"], allow_other_model=True):
            val = fn(model)
        rows.append(LayerScanRow(L, a_rel, a_raw, base, val, val - base, cal))
    return LayerScan(name, metric, level, sign, rows)


__all__ = [
    "CALIBRATION_QUESTIONS",
    "CalibrationError",
    "CalibrationResult",
    "LayerScan",
    "LayerScanRow",
    "calibrate_alpha",
    "layer_scan",
]
