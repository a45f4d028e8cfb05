"""Monitoring persona shift caused by finetuning, and screening training data before it.

Three tools, all reading the residual stream through the bridge's hook points and projecting on persona
directions (always on the UNIT direction ``v/|v|``, so numbers are in residual-stream units):

- :func:`finetuning_shift`: after training, per layer, the projection of (tuned − base) mean activation on
  each persona vector, at the **last prompt token** (where the model "decides" who answers, before it has
  written anything) and over the **response tokens**. Which responses? ``response_source="own"`` (default):
  each model answers the prompts itself (greedy) and is read on its own words, as in Persona Vectors' shift
  measurement: this includes the effect of the text changing. ``response_source="base"``: both models are
  teacher-forced on the *base* model's answers, so the number isolates the change of representation of the
  same text. Per prompt the tuned and base values are paired, giving a 95 % CI of the mean shift.
- :func:`projection_difference`: before training, per example, projection of the training response's mean
  activation minus projection of the base model's own (greedy) answer to the same prompt (the Persona
  Vectors data-screening metric); mean ± 95 % CI; examples above a threshold are flagged.
- :class:`TrainingMonitor`: the cheap in-loop version used by :func:`persona_vectors.finetune.finetune`
  (a fixed small prompt set, last prompt token only, one batched forward per measurement), and
  :func:`shift_figure` to plot its trajectory.

>>> base = activation_means(model, prompts, vec.sites)                  # doctest: +SKIP
>>> result = finetune(model, convs, cfg)                                # doctest: +SKIP
>>> rep = finetuning_shift(base, model, {"voyager": vec}, prompts)      # doctest: +SKIP
>>> rep.shift("voyager", "last_prompt")[12]                             # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch

from .models import PersonaModel, PromptLike
from .record import Conversation, record
from .sites import Site, as_sites
from .vector import PersonaVector

__all__ = [
    "ActivationMeans",
    "ProjectionDifference",
    "SHIFT_POSITIONS",
    "ShiftReport",
    "TrainingMonitor",
    "activation_means",
    "default_monitor_prompts",
    "finetuning_shift",
    "named_vectors",
    "projection_difference",
    "shift_figure",
]

SHIFT_POSITIONS: tuple[str, ...] = ("last_prompt", "response")
VectorsLike = Union[PersonaVector, Sequence[PersonaVector], Mapping[str, PersonaVector]]


# ================================================================================================ helpers
def named_vectors(vectors: VectorsLike) -> dict[str, PersonaVector]:
    """Normalize one vector, a sequence or a ``{name: vector}`` mapping to ``{name: vector}``.

    Unnamed vectors are called by their provenance name/expression, else ``v0``, ``v1``, …
    """
    if isinstance(vectors, PersonaVector):
        vectors = [vectors]
    if isinstance(vectors, Mapping):
        out = {str(k): v for k, v in vectors.items()}
    else:
        out = {}
        for i, v in enumerate(vectors):
            name = v.provenance.name or v.provenance.expression or f"v{i}"
            if name in out:
                name = f"{name}#{i}"
            out[name] = v
    if not out:
        raise ValueError("No vectors given: pass at least one PersonaVector")
    for k, v in out.items():
        if not isinstance(v, PersonaVector):
            raise TypeError(f"vector {k!r} is a {type(v).__name__}, not a PersonaVector")
    return out


def _unit(vec: PersonaVector, site: Site) -> torch.Tensor:
    v = vec[site].to(torch.float64)
    n = v.norm()
    if n == 0:
        raise ValueError(f"The direction at {site} is zero")
    return v / n


def _ci95(x: np.ndarray) -> tuple[float, float]:
    """Normal-approximation 95 % CI of the mean (t quantile when scipy is available)."""
    n = len(x)
    if n < 2:
        m = float(x.mean()) if n else float("nan")
        return (m, m)
    m, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(n))
    try:
        from scipy import stats

        q = float(stats.t.ppf(0.975, n - 1))
    except Exception:  # scipy missing: normal quantile
        q = 1.959964
    return (m - q * se, m + q * se)


def default_monitor_prompts(n: int = 8) -> list[str]:
    """The first ``n`` held-out *evaluation* questions (never used to build a vector)."""
    from .datasets import load_questions

    qs = [q.text for q in load_questions("evaluation")]
    return qs[: max(1, n)]


# ================================================================================================ means
@dataclass
class ActivationMeans:
    """Per-prompt mean activations of one model on a prompt set, at some sites and positions.

    ``samples[position][site]`` is a float32 ``[n_prompts, d_model]`` tensor: for ``"last_prompt"`` the
    activation at the last prompt token, for ``"response"`` the mean over the response tokens of
    ``responses[i]``. ``responses`` are the texts read at ``"response"`` (the model's own greedy answers
    unless given). ``fingerprint`` identifies the weights that produced them
    (:meth:`~persona_vectors.models.PersonaModel.weights_key`: a model finetuned in place gets its own).
    """

    prompts: list[Any]
    sites: tuple[Site, ...]
    samples: dict[str, dict[Site, torch.Tensor]]
    responses: list[str] | None = None
    system: str | None = None
    model_id: str = ""
    fingerprint: str = ""

    def mean(self, position: str, site: Site) -> torch.Tensor:
        """Mean over prompts of the per-prompt activations (float32 ``[d_model]``)."""
        return self.samples[position][site].mean(0)

    @property
    def positions(self) -> tuple[str, ...]:
        """Positions recorded."""
        return tuple(self.samples)


def activation_means(
    model: PersonaModel,
    prompts: Sequence[PromptLike],
    sites: "Sequence[Site | int | str] | str | int",
    *,
    positions: Sequence[str] = SHIFT_POSITIONS,
    system: str | None = None,
    responses: Sequence[str] | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    progress: bool = False,
) -> ActivationMeans:
    """Record ``model``'s per-prompt mean activations at ``sites`` (see :class:`ActivationMeans`).

    For ``"response"`` the model answers greedily (``max_new_tokens``) unless ``responses`` are given, in
    which case those texts are teacher-forced. An empty answer is read as ``"..."`` (as in
    :func:`~persona_vectors.record.record_generated`). Hooks active around the call apply.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list: wrap a single prompt as [prompt]")
    if not prompts:
        raise ValueError("No prompts: pass at least one")
    bad = [p for p in positions if p not in SHIFT_POSITIONS]
    if bad:
        raise ValueError(f"positions must be among {SHIFT_POSITIONS}, got {bad}")
    site_t = as_sites(sites, model.n_layers)
    samples: dict[str, dict[Site, torch.Tensor]] = {}
    texts: list[str] | None = list(responses) if responses is not None else None
    if texts is not None and len(texts) != len(prompts):
        raise ValueError(f"{len(texts)} responses for {len(prompts)} prompts: give one response per prompt")
    msgs = [model.to_messages(p, system) for p in prompts]
    for pos in positions:
        if pos == "last_prompt":
            convs: list[Conversation] = [list(m) for m in msgs]
        else:
            if texts is None:
                texts = model.generate(list(prompts), system=system, max_new_tokens=max_new_tokens,
                                       temperature=0.0, batch_size=batch_size, progress=progress)
            convs = [m + [{"role": "assistant", "content": r if r.strip() else "..."}] for m, r in zip(msgs, texts)]
        rec = record(model, convs, site_t, positions=pos, batch_size=batch_size, keep_samples=True,
                     progress=progress, desc=f"record {pos}")
        samples[pos] = {s: rec.per_sample(s).float() for s in site_t}
    key = model.weights_key() if hasattr(model, "weights_key") else model.info.fingerprint
    return ActivationMeans(list(prompts), site_t, samples, texts, system, model.info.model_id, key)


# ================================================================================================ shift
@dataclass
class ShiftReport:
    """Result of :func:`finetuning_shift`.

    ``rows``: one dict per (vector, position, layer) with ``base`` and ``tuned`` mean projections, their
    difference ``shift`` (tuned − base, on the unit direction), the 95 % CI of the per-prompt paired shift
    (``ci_low``, ``ci_high``), ``n`` prompts, ``rel_shift`` = shift / mean base activation norm at that site.
    """

    rows: list[dict[str, Any]]
    response_source: str
    base: ActivationMeans
    tuned: ActivationMeans

    def shift(self, vector: str, position: str = "last_prompt") -> dict[int, float]:
        """``{layer: shift}`` for one vector and position."""
        out = {r["layer"]: r["shift"] for r in self.rows if r["vector"] == vector and r["position"] == position}
        if not out:
            raise KeyError(f"No rows for vector={vector!r}, position={position!r}")
        return out

    def at(self, vector: str, position: str, layer: int) -> dict[str, Any]:
        """The row for one (vector, position, layer)."""
        for r in self.rows:
            if r["vector"] == vector and r["position"] == position and r["layer"] == layer:
                return dict(r)
        raise KeyError(f"No row for vector={vector!r}, position={position!r}, layer={layer}")

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable summary (rows plus the response texts read)."""
        return {
            "response_source": self.response_source,
            "rows": [dict(r) for r in self.rows],
            "base_responses": self.base.responses,
            "tuned_responses": self.tuned.responses,
        }


def finetuning_shift(
    base_model_or_means: PersonaModel | ActivationMeans,
    tuned_model: PersonaModel,
    vectors: VectorsLike,
    prompts: Sequence[PromptLike],
    *,
    positions: Sequence[str] = SHIFT_POSITIONS,
    response_source: str = "own",
    layers: "Sequence[int | Site | str] | None" = None,
    system: str | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    progress: bool = False,
) -> ShiftReport:
    """Per layer, projection of (tuned − base) mean activation on each persona vector's unit direction.

    Args:
        base_model_or_means: the base :class:`PersonaModel`, or its :class:`ActivationMeans` recorded on the
            same prompts before training (needed when the tuned model is the base model with an adapter
            injected in place: record the means first, or inside ``with result.base_weights():``).
        tuned_model: the finetuned model (no steering hooks should be active).
        vectors: a vector, a list, or ``{name: vector}``; every site of each vector is reported unless
            ``layers`` restricts them.
        prompts: evaluation prompts (held-out questions).
        positions: ``"last_prompt"`` and/or ``"response"``.
        response_source: ``"own"`` (each model reads its own greedy answers) or ``"base"`` (both are
            teacher-forced on the base's answers; isolates representational change). See the module docstring.
    """
    if response_source not in ("own", "base"):
        raise ValueError(f"response_source must be 'own' or 'base', got {response_source!r}")
    vecs = named_vectors(vectors)
    sites = sorted({s for v in vecs.values() for s in v.sites})
    if layers is not None:
        want = set(as_sites(layers, tuned_model.n_layers))
        sites = [s for s in sites if s in want]
        if not sites:
            raise ValueError("layers= selects none of the vectors' sites")
    site_t = tuple(sites)
    if isinstance(base_model_or_means, PersonaModel):
        if base_model_or_means is tuned_model:
            raise ValueError(
                "base and tuned model are the same object: record the base first with activation_means(...) "
                "(before training or inside `with result.base_weights():`) and pass that"
            )
        base = activation_means(base_model_or_means, prompts, site_t, positions=positions, system=system,
                                max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    elif isinstance(base_model_or_means, ActivationMeans):
        base = base_model_or_means
        if len(base.prompts) != len(prompts) or any(a != b for a, b in zip(base.prompts, prompts)):
            raise ValueError("The base ActivationMeans were recorded on different prompts")
        missing = [s for s in site_t if s not in base.sites]
        missing_pos = [p for p in positions if p not in base.samples]
        if missing or missing_pos:
            raise ValueError(f"The base ActivationMeans lack sites {[str(s) for s in missing]} / positions {missing_pos}")
        if base.system != system:
            raise ValueError(f"The base ActivationMeans used system={base.system!r}, not {system!r}")
    else:
        raise TypeError("base_model_or_means must be a PersonaModel or an ActivationMeans")
    responses = None
    if response_source == "base" and "response" in positions:
        if base.responses is None:
            raise ValueError("response_source='base' needs the base responses (record base means with 'response')")
        responses = base.responses
    tuned = activation_means(tuned_model, prompts, site_t, positions=positions, system=system, responses=responses,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    rows: list[dict[str, Any]] = []
    for name, vec in vecs.items():
        for pos in positions:
            for s in vec.sites:
                if s not in site_t:
                    continue
                u = _unit(vec, s)
                b = base.samples[pos][s].to(torch.float64) @ u
                t = tuned.samples[pos][s].to(torch.float64) @ u
                d = (t - b).numpy()
                lo, hi = _ci95(d)
                norm = float(base.samples[pos][s].to(torch.float64).norm(dim=-1).mean())
                rows.append({
                    "vector": name, "position": pos, "layer": s.layer, "site": str(s),
                    "base": float(b.mean()), "tuned": float(t.mean()), "shift": float(d.mean()),
                    "ci_low": lo, "ci_high": hi, "n": int(len(d)),
                    "rel_shift": float(d.mean()) / norm if norm > 0 else float("nan"),
                })
    return ShiftReport(rows, response_source, base, tuned)


# ================================================================================================ screening
@dataclass
class ProjectionDifference:
    """Result of :func:`projection_difference`.

    ``per_example[i]`` = proj(training response i) − proj(base model's own answer to prompt i), on the unit
    direction at ``site``; ``train_proj`` / ``base_proj`` are the two terms. ``flagged`` lists the indices
    with ``per_example > threshold``.
    """

    site: Site
    per_example: np.ndarray
    train_proj: np.ndarray
    base_proj: np.ndarray
    threshold: float
    base_responses: list[str]
    mean: float = field(init=False)
    std: float = field(init=False)
    ci95: tuple[float, float] = field(init=False)
    flagged: list[int] = field(init=False)

    def __post_init__(self) -> None:
        x = np.asarray(self.per_example, dtype=np.float64)
        self.mean = float(x.mean()) if len(x) else float("nan")
        self.std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
        self.ci95 = _ci95(x)
        self.flagged = [int(i) for i in np.nonzero(x > self.threshold)[0]]

    @property
    def flagged_fraction(self) -> float:
        """Share of examples above the threshold."""
        return len(self.flagged) / max(1, len(self.per_example))

    def summary(self) -> dict[str, Any]:
        """JSON-serializable aggregate (no per-example arrays)."""
        return {
            "site": str(self.site), "n": int(len(self.per_example)), "mean": self.mean, "std": self.std,
            "ci95": list(self.ci95), "threshold": self.threshold, "n_flagged": len(self.flagged),
            "flagged_fraction": self.flagged_fraction,
            "train_proj_mean": float(np.mean(self.train_proj)) if len(self.train_proj) else float("nan"),
            "base_proj_mean": float(np.mean(self.base_proj)) if len(self.base_proj) else float("nan"),
        }


def projection_difference(
    model: PersonaModel,
    conversations: Sequence[Conversation],
    vector: PersonaVector,
    site: "Site | int | str",
    *,
    threshold: float | None = None,
    threshold_frac: float = 0.5,
    base_responses: Sequence[str] | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    progress: bool = False,
) -> ProjectionDifference:
    """Per training example: projection of its response minus projection of the base model's own answer.

    Both are mean activations over response tokens at ``site``, projected on ``vector``'s unit direction;
    the prompt (every message before the final assistant turn, system message included) is the same.
    ``model`` must be the *base* model (before finetuning); its greedy answers are generated unless
    ``base_responses`` are given. A positive difference means the data pushes further along the persona
    than the model already is.

    ``threshold``: flag examples with a difference above it. Default: ``threshold_frac * |v[site]|``; for a
    mean-difference persona vector ``|v|`` is the persona-vs-assistant projection gap of its extraction
    data, so the default flags examples that sit more than half that gap beyond the model's own answer.
    """
    s = as_sites([site], model.n_layers)[0]
    if s not in vector:
        raise ValueError(f"{s} is not among the vector's sites")
    convs = [list(c) for c in conversations]
    if not convs:
        raise ValueError("No conversations")
    for i, c in enumerate(convs):
        if not c or c[-1]["role"] != "assistant" or not c[-1]["content"].strip():
            raise ValueError(f"conversation {i} does not end with a non-empty assistant message")
    prompts = [c[:-1] for c in convs]
    if base_responses is None:
        base_responses = model.generate(prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                                        batch_size=batch_size, progress=progress)
    elif len(base_responses) != len(convs):
        raise ValueError(f"{len(base_responses)} base responses for {len(convs)} conversations")
    base_convs = [p + [{"role": "assistant", "content": r if r.strip() else "..."}] for p, r in zip(prompts, base_responses)]
    u = _unit(vector, s)
    rt = record(model, convs, [s], positions="response", batch_size=batch_size, keep_samples=True, progress=progress)
    rb = record(model, base_convs, [s], positions="response", batch_size=batch_size, keep_samples=True,
                progress=progress)
    tp = (rt.per_sample(s).to(torch.float64) @ u).numpy()
    bp = (rb.per_sample(s).to(torch.float64) @ u).numpy()
    thr = float(threshold) if threshold is not None else float(threshold_frac * vector[s].norm())
    return ProjectionDifference(s, tp - bp, tp, bp, thr, list(base_responses))


# ================================================================================================ in-loop
class TrainingMonitor:
    """Cheap persona-shift tracking during training: last-prompt-token projections on a fixed prompt set.

    Built before the first step (it records the step-0 baseline); :meth:`measure` returns
    ``({vector: shift at monitor layer}, {vector: {layer: shift}})`` where shift = mean projection now minus
    at step 0. One batched forward over the prompts per measurement, stopped at the deepest site needed.
    Call it with no steering hooks active (the finetune loop measures outside the training steps).
    """

    def __init__(
        self,
        model: PersonaModel,
        vectors: VectorsLike,
        prompts: Sequence[PromptLike] | None = None,
        *,
        layer: int | None = None,
        system: str | None = None,
    ) -> None:
        self.model = model
        self.vectors = named_vectors(vectors)
        self.prompts = list(prompts) if prompts is not None else default_monitor_prompts()
        self.system = system
        self.sites = tuple(sorted({s for v in self.vectors.values() for s in v.sites}))
        self.layer = {name: self._pick_layer(v, layer) for name, v in self.vectors.items()}
        self._units = {name: {s: _unit(v, s) for s in v.sites} for name, v in self.vectors.items()}
        self._convs = [model.to_messages(p, system) for p in self.prompts]
        self.baseline = self._projections()

    def _pick_layer(self, vec: PersonaVector, layer: int | None) -> int:
        layers = vec.layers
        target = layer if layer is not None else int(round(0.6 * (self.model.n_layers - 1)))
        return min(layers, key=lambda x: (abs(x - target), x))

    def _projections(self) -> dict[str, dict[int, float]]:
        rec = record(self.model, self._convs, self.sites, positions="last_prompt", progress=False)
        out: dict[str, dict[int, float]] = {}
        for name, units in self._units.items():
            out[name] = {s.layer: float(rec.mean(s).to(torch.float64) @ u) for s, u in units.items()}
        return out

    def measure(self) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
        """Shift since construction: (scalar per vector at its monitor layer, per-layer per vector)."""
        now = self._projections()
        per_layer = {n: {k: now[n][k] - self.baseline[n][k] for k in now[n]} for n in now}
        scalar = {n: per_layer[n][self.layer[n]] for n in per_layer}
        return scalar, per_layer


# ================================================================================================ figure
def shift_figure(result: Any, *, title: str | None = None) -> Any:
    """A plotly figure of persona shift (top) and training loss (bottom) against the step.

    ``result``: a :class:`~persona_vectors.finetune.FinetuneResult`, or ``{run name: FinetuneResult}`` to
    overlay runs (e.g. plain / preventative / inoculation). Shift is the last-prompt-token projection on each
    monitored vector's unit direction minus its step-0 value, at the monitor layer.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs: Mapping[str, Any] = result if isinstance(result, Mapping) else {"run": result}
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("persona shift at the last prompt token (projection − step 0)",
                                        "training loss"))
    for run_name, res in runs.items():
        monitor = list(getattr(res, "monitor", []) or [])
        names: list[str] = sorted({k for _, d in monitor for k in d})
        layers = getattr(res, "monitor_layer", {}) or {}
        for vname in names:
            xs = [st for st, d in monitor if vname in d]
            ys = [d[vname] for st, d in monitor if vname in d]
            label = f"{run_name}: {vname}" + (f" (L{layers[vname]})" if vname in layers else "")
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, legendgroup=run_name), row=1, col=1)
        losses = list(getattr(res, "losses", []) or [])
        if losses:
            fig.add_trace(go.Scatter(x=list(range(1, len(losses) + 1)), y=losses, mode="lines",
                                     name=f"{run_name}: loss", legendgroup=run_name, line={"dash": "dot"}),
                          row=2, col=1)
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1}, row=1, col=1)
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    fig.update_yaxes(title_text="Δ projection", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=2, col=1)
    fig.update_layout(title=title or "Persona shift during finetuning", height=650, template="plotly_white")
    return fig

