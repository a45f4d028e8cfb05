"""The sweep runner: :func:`run_sweep` walks the batches of a config, generates each batch in one steered
``generate`` call, guards against non-finite activations (bisecting batches that fail), judges and reads out
the texts, and appends the good rows to the store; :class:`SweepReport` says what was stored and what was not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..steer import SteeringError, steer
from ..vector import PersonaVector, library_version
from .config import SweepBatch, SweepConfig, expand_grid
from .errors import SweepConfigMismatchError, SweepRowsNotStoredWarning, SweepStoreError
from .store import (
    STORE_FORMAT,
    JsonlStore,
    _config_hash,
    _diff_keys,
    _read_sidecar,
    _write_sidecar,
    check_sweep_output,
    lock_store,
    sidecar_path,
)

log = logging.getLogger(__name__)

Readout = Callable[[list[str], list[dict]], list[dict]]


@dataclass(frozen=True)
class SweepFailure:
    """One grid row that was not stored (its generation or read-outs were non-finite), and why."""

    row_id: str
    vector: str
    layer: int
    alpha: float
    prompt_id: str
    sample: int
    seed: int
    reason: str


@dataclass
class SweepReport:
    """What :func:`run_sweep` did. ``failures`` lists the rows that were not stored (see
    :mod:`persona_vectors.sweep`)."""

    path: Path
    rows_total: int
    rows_written: int
    rows_skipped: int
    batches_run: int
    seconds: float
    failures: list[SweepFailure] = field(default_factory=list)

    @property
    def rows_failed(self) -> int:
        """Number of rows not stored in this run."""
        return len(self.failures)

    @property
    def ok(self) -> bool:
        """True when every row of the grid is stored."""
        return not self.failures

    def failure_lines(self) -> list[str]:
        """One line per failed (vector, layer, alpha) cell: how many rows were not stored, why, and the fix."""
        groups: dict[tuple[str, int, float], list[SweepFailure]] = {}
        for f in self.failures:
            groups.setdefault((f.vector, f.layer, f.alpha), []).append(f)
        lines = []
        for (vname, layer, alpha), fs in groups.items():
            lines.append(
                f"{len(fs)} row(s) of vector {vname!r}, layer {layer}, alpha {alpha:g} not stored: {fs[0].reason} "
                "(the other rows are stored; a resume retries only the missing ones)"
            )
        return lines


def load_sweep_vectors(model: Any, cfg: SweepConfig) -> dict[str, PersonaVector]:
    """Load (and check against ``model``) every vector of the config."""
    from ..io import check_vector_model, load_vector

    out: dict[str, PersonaVector] = {}
    for name, v in cfg.vectors.items():
        vec = v if isinstance(v, PersonaVector) else load_vector(v)
        check_vector_model(vec, model, allow_other_model=cfg.allow_other_model)
        missing = [L for L in cfg.layers if L not in vec.layers]
        if missing:
            raise ValueError(
                f"vector {name!r} has no direction at layer(s) {missing} (its layers: {list(vec.layers)}); "
                "change 'layers' or re-extract the vector"
            )
        out[name] = vec
    return out


def run_sweep(
    model: Any,
    cfg: SweepConfig,
    out_path: str | os.PathLike,
    *,
    judge: Any = None,
    readouts: Sequence[Readout] = (),
    resume: bool = True,
    progress: bool = True,
    backend: str = "local",
    ray_address: str | None = None,
    num_actors: int | None = None,
    actor_threads: int = 1,
    model_loader: Callable[[], Any] | None = None,
    max_restarts: int | None = None,
) -> SweepReport:
    """Run (or resume) the sweep, streaming one JSON line per generation to ``out_path``.

    Args:
        model: a :class:`PersonaModel`.
        cfg: the grid.
        out_path: results file (JSONL); its sidecar ``<stem>.config.json`` records config, version, model. It is
            checked by :func:`check_sweep_output` first, and locked (``<out>.lock``) while the sweep runs.
        judge: optional object with ``classify(texts)`` returning results with ``.label`` and ``.scores``
            (e.g. :func:`persona_vectors.judge.default_judge`): adds ``label``, ``label_scores`` and
            ``label_source`` (the result's ``source``, when it has one: which judge labelled the row).
        readouts: callables ``(texts, rows) -> list[dict]`` (one dict per row) whose fields are added to the
            rows, e.g. coherence or identity read-outs. The judge and read-outs run after the batch's steering
            hooks are removed (on the unsteered model), e.g.
            ``lambda texts, rows: [{"coherence": c.score} for c in readout.coherence(model, texts,
            [r["prompt"] for r in rows], system=cfg.system)]``.
        resume: keep stored rows and skip them (the config and model must match the sidecar);
            ``False`` deletes the existing results (only a results file this library wrote) and starts over.
        progress: show a tqdm bar with ETA.
        backend: ``"local"`` (this process) or ``"ray"``: batches sharded over Ray actors, each holding a model
            replica, this process the one writer (see :mod:`persona_vectors.sweep.distributed`). With Ray,
            ``ray_address`` (``None``: an existing ``ray.init`` or ``"auto"``; ``"local"``; ``"HOST:PORT"``),
            ``num_actors`` (default: the cluster's GPUs, or CPUs ÷ ``actor_threads``), ``actor_threads`` (torch
            threads per CPU actor), ``model_loader`` (a picklable zero-argument callable returning the replica;
            default: ``load_model`` with ``model.load_args``) and ``max_restarts`` (Ray restarts of a dead actor,
            whose batches are retried; default 3). The judge and read-outs are pickled to every actor.

    Each row holds: ``row_id, vector, layer, alpha, prompt_id, prompt, sample, seed`` (the coordinates),
    ``operator, positions, relative, alpha_raw`` (the raw-equivalent coefficient on the stored vector),
    ``system, temperature, text, n_tokens``, plus judge/read-out fields, plus ``mean_activation`` (a list of
    ``d_model`` floats at the row's steered layer) when ``cfg.record_activations``.

    Rows whose steered generation became non-finite are not stored; they are listed in
    :attr:`SweepReport.failures` and reported with a warning per (vector, layer, alpha) cell.

    Raises:
        SweepStoreError: ``out_path`` is unusable (see :func:`check_sweep_output`).
        SweepStoreLockedError: another process is running a sweep on the same store.
        SweepConfigMismatchError: resuming a store written by another config or model.
    """
    out = Path(out_path)
    t0 = time.perf_counter()
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "local" and (ray_address is not None or num_actors is not None or model_loader is not None
                               or max_restarts is not None):
        raise ValueError("ray_address, num_actors, model_loader and max_restarts apply to backend='ray' only: pass "
                         "backend='ray' too")
    if backend == "ray":
        from .distributed import connect, replica_loader

        check_sweep_output(out, resume=resume, config_path=cfg.source)
        loader = replica_loader(model, model_loader)
        started = connect(ray_address)  # before any store work: a missing extra or cluster fails at once
        try:
            return _run_sweep(model, cfg, out, t0, judge, readouts, resume, progress, backend,
                              dict(num_actors=num_actors, threads=actor_threads, model_loader=loader,
                                   max_restarts=max_restarts))
        finally:
            if started:
                import ray

                ray.shutdown()
    return _run_sweep(model, cfg, out, t0, judge, readouts, resume, progress, backend, {})


def _run_sweep(model: Any, cfg: SweepConfig, out: Path, t0: float, judge: Any, readouts: Sequence[Readout],
               resume: bool, progress: bool, backend: str, ray_opts: dict[str, Any]) -> SweepReport:
    """:func:`run_sweep` after its argument checks (and, for Ray, connected)."""
    check_sweep_output(out, resume=resume, config_path=cfg.source)
    vectors = load_sweep_vectors(model, cfg)
    batches = expand_grid(cfg)
    cfg_json = cfg.to_json(vectors)
    meta = {
        "format": STORE_FORMAT,
        "config": cfg_json,
        "config_hash": _config_hash(cfg_json),
        "library_version": library_version(),
        "model": {"model_id": model.info.model_id, "fingerprint": model.info.fingerprint,
                  "weights": model.weights_key(), "n_layers": model.n_layers, "d_model": model.d_model},
    }
    side = sidecar_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepStoreError(f"cannot create the directory of {out} ({err.strerror or err}): "
                              "pass an --out in a writable directory") from None
    with lock_store(out):
        check_sweep_output(out, resume=resume, config_path=cfg.source)  # again, now that nobody else can write
        if not resume:
            out.unlink(missing_ok=True)  # a results file of this library (checked above)
        store = JsonlStore(out)
        if len(store) and resume:
            old = _read_sidecar(side)
            if old is None:
                raise SweepConfigMismatchError(
                    f"{out} holds results but no {side.name}: cannot check they come from this config; "
                    "use another output path or resume=False to start over"
                )
            if old.get("model", {}).get("fingerprint") != model.info.fingerprint:
                raise SweepConfigMismatchError(
                    f"{out} was written with model {old.get('model', {}).get('model_id')} "
                    f"({old.get('model', {}).get('fingerprint')}), not {model.info.model_id} "
                    f"({model.info.fingerprint}); use another output path or resume=False"
                )
            old_weights = old.get("model", {}).get("weights", old.get("model", {}).get("fingerprint"))
            if old_weights != meta["model"]["weights"]:
                raise SweepConfigMismatchError(
                    f"{out} was written with other weights of {model.info.model_id} ({old_weights}, e.g. before "
                    f"finetuning in place), not the current ones ({meta['model']['weights']}); use another output "
                    "path or resume=False"
                )
            if old.get("config_hash") != meta["config_hash"]:
                diff = _diff_keys(old.get("config", {}), cfg_json)
                raise SweepConfigMismatchError(
                    f"{out} was written with a different config ({'; '.join(diff) or 'details differ'}); "
                    "use another output path or resume=False to start over"
                )
            meta["created"] = old.get("created")
            meta["resumed"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        else:
            meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _write_sidecar(side, meta)

        total = sum(len(b.rows) for b in batches)
        done_ids = store.row_ids
        wanted = {r["row_id"] for b in batches for r in b.rows}
        skipped = len(done_ids & wanted)
        written = 0
        ran = 0
        failures: list[SweepFailure] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=skipped, unit="row", desc=cfg.name or "sweep", dynamic_ncols=True)
        todo = [b for b in batches if any(r["row_id"] not in done_ids for r in b.rows)]
        if backend == "ray":
            from .distributed import DEFAULT_MAX_RESTARTS, ray_batches

            restarts = ray_opts.pop("max_restarts")
            results: Any = ray_batches(model, cfg, vectors, todo, run_batch=_run_batch, judge=judge, readouts=readouts,
                                       **ray_opts,
                                       max_restarts=DEFAULT_MAX_RESTARTS if restarts is None else restarts)
        else:
            results = ((b, *_run_batch(model, cfg, vectors[b.vector], b, judge, readouts)) for b in todo)
        try:
            for batch, rows, failed in results:  # this process is the one writer, whichever backend generates
                n = store.append([r for r in rows if r["row_id"] not in done_ids])
                failed = [f for f in failed if f.row_id not in done_ids]
                failures.extend(failed)
                written += n
                ran += 1
                if bar is not None:
                    bar.update(n + len(failed))
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # a Ray backend stops its actors (and a cluster it started) here
            if bar is not None:
                bar.close()
    report = SweepReport(out, total, written, skipped, ran, time.perf_counter() - t0, failures)
    for line in report.failure_lines():
        msg = f"sweep {out}: {line}"
        warnings.warn(msg, SweepRowsNotStoredWarning, stacklevel=2)
        log.warning(msg)
    return report


class _NonFiniteRows(Exception):
    """Raised inside a forward by the sweep's guard hook: these batch rows have a non-finite residual."""

    def __init__(self, rows: list[int], site: str) -> None:
        super().__init__(f"non-finite residual stream at {site}")
        self.rows = rows


def _guard_hook(site_name: str) -> Callable[..., None]:
    """A read-only hook: raise :class:`_NonFiniteRows` when a row's residual (or its mean square, as an RMSNorm
    computes it) is non-finite. It sits at the last block, downstream of the steered site (which
    :mod:`persona_vectors.steer` checks itself), so overflow that builds up later is caught too."""

    def hook(x: Any, hook: Any = None) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            return None
        ok = torch.isfinite(x.float().pow(2).mean(-1)).reshape(x.shape[0], -1).all(-1)
        if not bool(ok.all()):
            raise _NonFiniteRows(torch.nonzero(~ok).flatten().tolist(), site_name)
        return None

    return hook


def _activation_hook(steps: list[torch.Tensor]) -> Callable[..., None]:
    """A capture sink collecting, per forward call after the prefill, the newest position ``[batch, d]``:
    call ``k >= 1`` of a generation reads response token ``k - 1`` (with or without the KV cache)."""
    calls = [0]

    def hook(site: Any, x: Any) -> None:
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            if calls[0] > 0:
                steps.append(x[:, -1, :].detach().to(torch.float64).cpu())
            calls[0] += 1
        return None

    return hook


def _mean_activations(steps: list[torch.Tensor], toks: Sequence[torch.Tensor]) -> list[list[float] | None]:
    """Per row: the mean of the collected activations over that row's response tokens (None for an empty one)."""
    out: list[list[float] | None] = []
    for i, t in enumerate(toks):
        n = min(int(t.numel()), len(steps))
        if n == 0:
            out.append(None)
            continue
        m = torch.stack([steps[j][i] for j in range(n)]).mean(0)
        out.append([float(f"{v:.5g}") for v in m.tolist()])
    return out


def _generate_guarded(
    model: Any, cfg: SweepConfig, vec: PersonaVector, layer: int, rows: Sequence[dict[str, Any]], seed: int,
) -> tuple[list[torch.Tensor], list[Any], list[Any]]:
    """One steered generate call for ``rows`` (per-row alphas) with non-finite guards;
    (tokens, alpha_raw, mean activations at the steered layer or Nones)."""
    from ..capture import Capture, HookSet
    from ..sites import Site

    alphas = torch.tensor([float(r["alpha"]) for r in rows], dtype=torch.float64)  # exact, even beyond float32
    steps: list[torch.Tensor] = []
    last = Site(model.n_layers - 1)
    with steer(model, cfg.steer_spec(vec, alphas, layer)) as handle, HookSet() as guards, \
            (Capture(model, [Site(layer)], sink=_activation_hook(steps)) if cfg.record_activations
             else contextlib.nullcontext()):  # entered after the steering hook: it reads the steered residual
        info = handle.report()[0]
        guards.add(model.hook_point(last), _guard_hook(str(last)))
        toks = model.generate_tokens(
            [r["prompt"] for r in rows], system=cfg.system, max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature, top_p=cfg.top_p, seed=seed,
        )
    raw = info.get("alpha_raw", info["alpha"])
    raw_list = raw if isinstance(raw, list) else [raw] * len(rows)
    acts = _mean_activations(steps, toks) if cfg.record_activations else [None] * len(rows)
    return toks, raw_list, acts


def _spec_text(cfg: SweepConfig, alpha: float) -> str:
    s = f"operator {cfg.operator}, alpha {alpha:g}{' (relative)' if cfg.relative else ''}"
    if cfg.threshold is not None:
        s += f", threshold {cfg.threshold:g}"
    return s


def _generate_rows(
    model: Any, cfg: SweepConfig, vec: PersonaVector, batch: SweepBatch,
) -> tuple[list[tuple[dict[str, Any], torch.Tensor, Any, Any]], list[tuple[dict[str, Any], str]]]:
    """Generate the batch; rows that go non-finite are dropped (and the rest regenerated without them)."""
    done: list[tuple[dict[str, Any], torch.Tensor, Any, Any]] = []
    failed: list[tuple[dict[str, Any], str]] = []
    pending: list[list[dict[str, Any]]] = [list(batch.rows)]
    while pending:
        part = pending.pop(0)
        try:
            toks, raws, acts = _generate_guarded(model, cfg, vec, batch.layer, part, batch.gen_seed)
        except (_NonFiniteRows, SteeringError) as err:
            bad = {i for i in (err.rows or ()) if 0 <= i < len(part)} or set(range(len(part)))
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, _NonFiniteRows):  # SteeringError's own message names the spec and the fix
                why += "; use a smaller |alpha| (or check the vector / threshold)"
            for i in sorted(bad):
                failed.append((part[i], f"{why} [this row: {_spec_text(cfg, part[i]['alpha'])}]"))
            rest = [r for i, r in enumerate(part) if i not in bad]
            if rest:
                pending.insert(0, rest)
            continue
        done.extend(zip(part, toks, raws, acts))
    order = {r["row_id"]: i for i, r in enumerate(batch.rows)}
    done.sort(key=lambda t: order[t[0]["row_id"]])
    failed.sort(key=lambda t: order[t[0]["row_id"]])
    return done, failed


def _nonfinite_field(value: Any, path: str) -> str | None:
    """The path of the first non-finite number inside a row value, or ``None``."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, torch.Tensor):
        return None if not value.is_floating_point() or bool(torch.isfinite(value).all()) else path
    if isinstance(value, Mapping):
        for k, v in value.items():
            hit = _nonfinite_field(v, f"{path}.{k}")
            if hit:
                return hit
        return None
    if isinstance(value, (list, tuple, set)):
        for i, v in enumerate(value):
            hit = _nonfinite_field(v, f"{path}[{i}]")
            if hit:
                return hit
        return None
    if hasattr(value, "item") and getattr(value, "shape", ()) == ():
        try:
            return _nonfinite_field(value.item(), path)
        except (TypeError, ValueError):
            return None
    return None


def _failure(row: Mapping[str, Any], reason: str) -> SweepFailure:
    return SweepFailure(row["row_id"], row["vector"], row["layer"], row["alpha"], row["prompt_id"], row["sample"],
                        row["seed"], reason)


def _run_batch(
    model: Any, cfg: SweepConfig, vec: PersonaVector, batch: SweepBatch, judge: Any, readouts: Sequence[Readout],
) -> tuple[list[dict[str, Any]], list[SweepFailure]]:
    """Generate one batch (one call, per-row alphas) and attach read-outs; (rows to store, rows not stored)."""
    done, failed = _generate_rows(model, cfg, vec, batch)
    failures = [_failure(r, why) for r, why in failed]
    texts = [model.decode_response(t) for _, t, _, _ in done]
    rows = []
    for (r, t, a_raw, act), text in zip(done, texts):
        rows.append({
            **r, "operator": cfg.operator, "positions": cfg.positions, "relative": cfg.relative,
            "alpha_raw": a_raw, "system": cfg.system, "temperature": cfg.temperature,
            "text": text, "n_tokens": int(t.numel()),
        })
        if cfg.record_activations:
            rows[-1]["mean_activation"] = act
    if rows and judge is not None:
        results = judge.classify(texts)
        if len(results) != len(rows):
            raise ValueError(f"judge returned {len(results)} results for {len(rows)} texts")
        for row, res in zip(rows, results):
            row["label"] = res.label
            row["label_scores"] = {k: float(v) for k, v in dict(res.scores).items()}
            if getattr(res, "source", None) is not None:  # which judge labelled the row ("finetuned", ...)
                row["label_source"] = str(res.source)
    for fn in readouts if rows else ():
        extra = fn(list(texts), [dict(r) for r in rows])
        if len(extra) != len(rows):
            raise ValueError(f"read-out {getattr(fn, '__name__', fn)!r} returned {len(extra)} dicts for {len(rows)} rows")
        for row, add in zip(rows, extra):
            clash = set(add) & {"row_id", "vector", "layer", "alpha", "prompt_id", "prompt", "sample", "seed", "text",
                                "mean_activation"}
            if clash:
                raise ValueError(f"read-out {getattr(fn, '__name__', fn)!r} may not overwrite coordinates {sorted(clash)}")
            row.update(add)
    good = []
    for row in rows:
        hit = next((h for k, v in row.items() if (h := _nonfinite_field(v, k))), None)
        if hit:
            failures.append(_failure(row, f"field {hit!r} is non-finite (from the judge or a read-out, or an "
                                          "overflowing alpha_raw); fix the read-out or use a smaller |alpha|"))
        else:
            good.append(row)
    return good, failures
