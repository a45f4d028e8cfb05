"""Resumable steering sweeps: a grid of (vector × layer × alpha × prompt × sample × seed) generations.

>>> cfg = SweepConfig.from_toml("sweeps/assistant.toml")       # doctest: +SKIP
>>> run_sweep(model, cfg, "runs/assistant.jsonl", judge=default_judge())  # doctest: +SKIP
>>> print(summary_markdown(summarize("runs/assistant.jsonl")))  # doctest: +SKIP

Batching: for each (vector, layer, seed) the rows (prompt × alpha × sample, in that order) are cut into batches of
``batch_size`` rows; each batch is ONE ``generate`` call with per-row coefficients (see :mod:`.steer`). The batch
composition is a pure function of the config, so a rerun reproduces it (and, for sampling, the same texts on the
same hardware): each batch is seeded from ``(seed, vector, layer, batch index)``.

Store: one JSON object per line, one line per generation, with every coordinate and a deterministic ``row_id``
(hash of the coordinates). Each batch is appended with one write, ``flush`` and ``os.fsync``. On reopening, a
partial or corrupt trailing line (a crash mid-write) is reported, and truncated away; rows whose ``row_id`` is
already stored are skipped, a partially stored batch is regenerated and only its missing rows written, so an
interrupted sweep resumes with no lost and no duplicated rows. The sidecar ``<out>.config.json`` records the
config (with a hash of every vector's tensor), the library version and the model fingerprint; resuming with a
different config or model raises :class:`SweepConfigMismatchError`.

Safety of the output path (checked by :func:`check_sweep_output` before any model work, and again under the lock):
``out`` must not be the sweep config itself, a directory, or an existing file that is not a results file of this
library (its first line must be a stored row, or, after a crash in the very first write, the start of one next to a
valid sidecar); an existing ``<stem>.config.json`` must be a sweep sidecar. ``resume=False`` (``--no-resume``)
therefore only ever deletes a results file this library wrote. Refusals raise :class:`SweepStoreError`.

Lock: while :func:`run_sweep` works on a store it holds an exclusive ``flock`` (via :mod:`filelock`) on the sibling
file ``<out>.lock`` (e.g. ``results.jsonl.lock``), which names the PID, host and start time of the holder; a second
sweep on the same store fails at once with :class:`SweepStoreLockedError` ("results store X is in use by PID N").
The lock file is removed when the sweep ends. A process killed with SIGKILL leaves it behind, but the kernel has
released the ``flock``: a stale lock file never blocks a resume, and it is safe to delete when no sweep is running.

Non-finite steering: a generation whose residual stream became non-finite (at the steered site or at the last
layer; NaN, inf, or a mean square that overflows like an RMSNorm would), or that raised
:class:`persona_vectors.steer.SteeringError`, or whose judge / read-out values are non-finite, is never stored. The
other rows of its batch are regenerated without it (a batch that raises ``SteeringError`` is bisected down to the
failing rows), the sweep goes on, and :attr:`SweepReport.failures` lists the rows that were not stored (a warning per
(vector, layer, alpha) cell; the CLI prints one ``error:`` line per cell and exits 2 after storing the good rows).
Resuming retries only those rows.

The package's rooms: :mod:`.errors` (exceptions and the warning), :mod:`.config` (:class:`SweepConfig`, the TOML
schema and its validation; ``row_id``; :func:`expand_grid`), :mod:`.store` (the JSONL results store, sidecar,
output-path checks, lock), :mod:`.runner` (:func:`run_sweep`, :class:`SweepReport`) and :mod:`.summary`
(:func:`summarize`, :func:`summary_markdown`).
"""

from __future__ import annotations

from .config import SweepBatch, SweepConfig, expand_grid, row_id
from .errors import (
    StoreCorruptError,
    SweepConfigError,
    SweepConfigMismatchError,
    SweepRowsNotStoredWarning,
    SweepStoreError,
    SweepStoreLockedError,
)
from .runner import Readout, SweepFailure, SweepReport, load_sweep_vectors, run_sweep
from .store import (
    CONFIG_SUFFIX,
    LOCK_SUFFIX,
    STORE_FORMAT,
    JsonlStore,
    check_sweep_output,
    lock_path,
    lock_store,
    sidecar_path,
)
from .summary import summarize, summary_markdown


__all__ = [
    "JsonlStore",
    "StoreCorruptError",
    "SweepBatch",
    "SweepConfig",
    "SweepConfigError",
    "SweepConfigMismatchError",
    "SweepFailure",
    "SweepReport",
    "SweepRowsNotStoredWarning",
    "SweepStoreError",
    "SweepStoreLockedError",
    "check_sweep_output",
    "expand_grid",
    "load_sweep_vectors",
    "lock_path",
    "lock_store",
    "row_id",
    "run_sweep",
    "sidecar_path",
    "summarize",
    "summary_markdown",
]
