"""Sweeps sharded over Ray actors: ``run_sweep(..., backend="ray")`` / ``persona-vectors sweep CONFIG --ray``.

Each actor holds its own model replica (loaded in the actor from ``model.load_args``, or from ``model_loader``)
and generates whole batches (cells) of the grid with the same code as the local runner, so greedy results are
the same rows. The driver stays the one writer: it holds the store's lock and appends each finished batch with
one write + fsync, skipping ``row_id`` s already stored, so a batch that Ray retries (its actor died and was
restarted) or that a resumed sweep regenerates never duplicates a row.

Faults: an actor that dies is restarted by Ray (``max_restarts``) and its unfinished batches are retried
(``max_task_retries``); the rows of finished batches are already on disk. An actor that keeps dying, or a batch
that raises, stops the sweep with :class:`SweepWorkerError` naming the batch and the actor's error; the store
keeps every row written so far, and a resume runs only the rest.

Resources: ``num_gpus=1`` per actor when the cluster has GPUs, otherwise ``threads`` CPUs per actor (torch uses
that many threads in it). Ray is an optional dependency: ``pip install persona-vectors[ray]``.

The actor/submit/wait loop is :func:`ray_map` (items → results on replica-holding actors, the caller the one
writer); the catalogue's answer generation (``role_means(..., backend="ray")``, ``persona-vectors map --ray``)
runs on it too, with the driver the one writer of the generation cache.

>>> run_sweep(model, cfg, "runs/big.jsonl", backend="ray", ray_address="auto")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from typing import Any, Callable, Iterator, Sequence, TypeVar

from .config import SweepBatch, SweepConfig
from .errors import SweepStoreError

#: How often Ray restarts a dead actor (and retries its batches) before the sweep stops.
DEFAULT_MAX_RESTARTS = 3

RAY_INSTALL = "pip install 'persona-vectors[ray]'"

T = TypeVar("T")
R = TypeVar("R")


class RayWorkerError(RuntimeError):
    """Work on Ray actors stopped: a task raised, or its actor died more often than Ray restarts it. What the
    driver wrote before stays written (a rerun does only the rest); the message names the task and the error."""


class SweepWorkerError(SweepStoreError, RayWorkerError):
    """A Ray sweep stopped: a batch raised, or its actor died more often than Ray restarts it. The rows stored
    before stay in the store (a resume runs only the missing ones)."""


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or no Ray cluster answers at the address given; the message says how to fix it."""


def import_ray() -> Any:
    """The ``ray`` module, or :class:`RayUnavailableError` naming the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise RayUnavailableError(f"backend='ray' needs Ray, which is not installed: {RAY_INSTALL}") from err
    return ray


def _start_hint(address: str) -> str:
    return (f"start one with `ray start --head` on this machine (or `ray start --address=HEAD_IP:6379` to join "
            f"one), pass its address, or use `--ray local` for a cluster just for this sweep (tried {address})")


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def connect(address: str | None) -> bool:
    """Connect this process to Ray; returns whether it started Ray itself (and should shut it down after).

    ``None``: keep an existing connection (``ray.init`` done by the caller), else ``"auto"``. ``"auto"``: the
    cluster named by ``RAY_ADDRESS`` or the one running on this machine. ``"local"``: start a private local
    cluster for this process. ``"HOST:PORT"`` or ``"ray://HOST:PORT"``: that cluster (checked with a TCP
    connect first, so an unreachable address fails in seconds). Failure raises :class:`RayUnavailableError`
    in one line naming the address tried and how to start a cluster.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or "auto"
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        return True
    target = os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address
    hostport = target.removeprefix("ray://")
    if hostport != "auto":
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise RayUnavailableError(f"Ray address {target!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or "
                                      "ray://10.0.0.5:10001): pass one, or `auto` for the local cluster")
        if not _reachable(host, int(port)):
            raise RayUnavailableError(f"no Ray cluster answers at {target}: {_start_hint(target)}")
    try:
        ray.init(address=target, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RayUnavailableError(f"no Ray cluster at {target} ({first[:160]}): {_start_hint(target)}") from None
    return True


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[bool]:
    """:func:`connect` for the duration of a ``with`` block (yields whether it started Ray); shuts down a Ray it
    started on the way out. Entry points use it to fail fast on a missing cluster, before any other work."""
    started = connect(address)
    try:
        yield started
    finally:
        if started:
            import_ray().shutdown()


def replica_loader(model: Any, model_loader: Callable[[], Any] | None) -> Callable[[], Any]:
    """The zero-argument callable each actor calls to load its replica: ``model_loader``, else
    :func:`~persona_vectors.models.load_model` with the arguments ``model`` was loaded with (on the actor's GPU
    when Ray gave it one and the driver's model was on the CPU)."""
    if model_loader is not None:
        if not callable(model_loader):
            raise TypeError(f"model_loader must be a zero-argument callable returning the model, got {model_loader!r}")
        return model_loader
    if getattr(model, "weights_version", 0):
        raise ValueError("backend='ray' loads a model replica in every actor from the arguments this model was "
                         "loaded with, and its weights were changed in place since (finetuning): save the tuned "
                         "model and pass model_loader= (a picklable zero-argument callable loading it), or run "
                         "locally")
    args = getattr(model, "load_args", None)
    if not args:
        raise ValueError("backend='ray' loads a model replica in every actor, and this model was not made by "
                         "load_model(): pass model_loader= (a picklable zero-argument callable returning it, e.g. "
                         "functools.partial(load_model, 'org/name'))")
    return functools.partial(_load_replica, dict(args))


def _load_replica(args: dict[str, Any]) -> Any:
    """``load_model(**args)`` in an actor; on the GPU Ray gave the actor when the driver's model sat on the CPU
    without a device map (a CLI sweep loads on the CPU; its actors on a GPU cluster should not)."""
    import torch

    from ..models import load_model

    if "device_map" not in args and str(args.get("device", "cpu")).startswith("cpu") and torch.cuda.is_available():
        args = {**args, "device": "cuda"}
    return load_model(**args, progress=False)


def _check_picklable(what: str, obj: Any) -> None:
    try:
        import cloudpickle  # ships with Ray

        cloudpickle.dumps(obj)
    except Exception as err:  # noqa: BLE001 - any pickling failure gets the same advice
        raise ValueError(f"backend='ray' ships {what} to every actor, but it cannot be pickled ({type(err).__name__}: "
                         f"{str(err)[:120]}); pass a module-level function or an object without open handles (a read-out "
                         "that needs the model can load it per process)") from None


class _Replica:
    """One Ray actor: a model replica and the function it runs on it; ``run(item)`` is ``task(model, item)``."""

    def __init__(self, loader: Callable[[], Any], task: Callable[[Any, Any], Any], threads: int,
                 fingerprint: str) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.model = loader()
        got = self.model.info.fingerprint
        if got != fingerprint:
            raise RuntimeError(f"the actor's model replica has weights {got}, the driver's {fingerprint}: the loader "
                               "must load the same model")
        self.task = task

    def run(self, item: Any) -> Any:
        return self.task(self.model, item)

    def pid(self) -> int:
        return os.getpid()


def _check_counts(threads: int, num_actors: int | None) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer (torch threads per actor), got {threads!r}")
    if num_actors is not None and (isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1):
        raise ValueError(f"num_actors must be a positive integer, got {num_actors!r}")


def ray_map(
    model: Any, items: Sequence[T], task: Callable[[Any, T], R], *,
    fail: Callable[[T, str], Exception], ship: Sequence[tuple[str, Any]] = (),
    address: str | None = None, num_actors: int | None = None, threads: int = 1,
    model_loader: Callable[[], Any] | None = None, max_restarts: int = DEFAULT_MAX_RESTARTS,
) -> Iterator[tuple[T, R]]:
    """Run ``task(replica, item)`` for every item on Ray actors that each hold a model replica; yields
    ``(item, result)`` as items finish (completion order), each item once.

    The engine under :func:`ray_batches` (sweep cells) and the catalogue's answer generation
    (:func:`persona_vectors.personas.role_means` with ``backend="ray"``). Replicas are loaded by
    :func:`replica_loader` (``model_loader``, else ``load_model(**model.load_args)``) and must have the
    driver model's fingerprint. ``task`` must be picklable (a module-level function, or a
    ``functools.partial`` of one); ``ship`` names other objects it carries, checked picklable up front so
    the error says which. The caller writes what it receives (it stays the one writer).

    ``num_actors`` defaults to the cluster's GPUs, or its CPUs ÷ ``threads``, at most one per item; an actor
    asks for ``num_gpus=1`` when the cluster has GPUs, else ``threads`` CPUs. A dead actor is restarted
    (``max_restarts``) and its unfinished items retried; an item that fails for good raises
    ``fail(item, "ErrorType: last line of the error")``. Connects with :func:`connect` (``address=None``
    keeps an existing ``ray.init``); closing the generator kills the actors and shuts down a Ray it started.

    >>> for item, result in ray_map(model, chunks, functools.partial(work, n), fail=err):  # doctest: +SKIP
    ...     store(item, result)
    """
    if not items:
        return
    _check_counts(threads, num_actors)
    loader = replica_loader(model, model_loader)
    for what, obj in (("model_loader", loader), *ship):
        _check_picklable(what, obj)
    ray = import_ray()
    started = connect(address)
    actors: list[Any] = []
    try:
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        per = {"num_gpus": 1, "num_cpus": threads} if gpus else {"num_cpus": threads}
        n = num_actors or max(1, gpus if gpus else int(res.get("CPU", 1)) // threads)
        n = min(n, len(items))
        Actor = ray.remote(max_restarts=max_restarts, max_task_retries=max_restarts, **per)(_Replica)
        args = (loader, task, threads, model.info.fingerprint)
        actors = [Actor.remote(*args) for _ in range(n)]  # plain arguments: a restarted actor gets them again
        pending = list(items)
        inflight: dict[Any, tuple[T, Any]] = {}  # in submission order; an actor runs its items in order

        def submit(actor: Any) -> None:
            if pending:
                it = pending.pop(0)
                inflight[actor.run.remote(it)] = (it, actor)

        for a in actors:  # two items queued per actor: it starts the next while the driver writes
            submit(a)
            submit(a)
        while inflight:
            done, _ = ray.wait(list(inflight), num_returns=1)
            ref = done[0]
            item, actor = inflight[ref]
            try:
                result = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - RayActorError, RayTaskError: all stop the run
                # the actor's earliest unfinished item is the one it was running (the others were queued behind it)
                item = next(i for i, a in inflight.values() if a is actor)
                cause = getattr(err, "cause", None) or err
                msg = str(cause).strip().splitlines()
                raise fail(item, f"{type(cause).__name__}: {(msg[-1] if msg else '')[:300]}") from None
            del inflight[ref]
            submit(actor)
            yield item, result
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - an actor that is already gone
                pass
        if started:
            ray.shutdown()


def _cell(batch: SweepBatch) -> str:
    return f"vector {batch.vector!r}, layer {batch.layer}, seed {batch.seed}, batch {batch.index}"


def _sweep_task(run_batch: Callable[..., Any], cfg: SweepConfig, vectors: dict[str, Any], judge: Any,
                readouts: Sequence[Any], model: Any, batch: SweepBatch) -> tuple[list[dict[str, Any]], list[Any]]:
    """One sweep cell in an actor (bound with ``functools.partial`` up to ``model``)."""
    return run_batch(model, cfg, vectors[batch.vector], batch, judge, readouts)


def _sweep_stopped(batch: SweepBatch, cause: str) -> SweepWorkerError:
    return SweepWorkerError(f"Ray sweep stopped at {_cell(batch)}: {cause} (rows stored so far are kept; fix the "
                            "cause and resume to run the rest)")


def ray_batches(
    model: Any, cfg: SweepConfig, vectors: dict[str, Any], batches: Sequence[SweepBatch], *,
    run_batch: Callable[..., tuple[list[dict[str, Any]], list[Any]]], judge: Any, readouts: Sequence[Any],
    address: str | None = None, num_actors: int | None = None, threads: int = 1,
    model_loader: Callable[[], Any] | None = None, max_restarts: int = DEFAULT_MAX_RESTARTS,
) -> Iterator[tuple[SweepBatch, list[dict[str, Any]], list[Any]]]:
    """Run ``batches`` on Ray actors; yields ``(batch, rows, failures)`` as batches finish (completion order).

    ``run_batch(model, cfg, vector, batch, judge, readouts) -> (rows, failures)`` is what each actor runs per batch
    (the local runner's function). The caller writes what it receives (it is the one writer). ``num_actors``
    defaults to the cluster's GPUs, or its CPUs ÷ ``threads``, at most one per batch. Raises
    :class:`SweepWorkerError` when a batch fails for good. Closing the generator kills the actors (and shuts down
    a Ray it started). A :func:`ray_map` over the batches.
    """
    if not batches:
        return
    task = functools.partial(_sweep_task, run_batch, cfg, vectors, judge, list(readouts))
    results = ray_map(model, batches, task, fail=_sweep_stopped,
                      ship=(("the judge", judge), ("the read-outs", list(readouts))), address=address,
                      num_actors=num_actors, threads=threads, model_loader=model_loader, max_restarts=max_restarts)
    try:
        for batch, (rows, failures) in results:
            yield batch, rows, failures
    finally:
        results.close()


__all__ = ["DEFAULT_MAX_RESTARTS", "RayUnavailableError", "RayWorkerError", "SweepWorkerError", "connect", "import_ray",
           "ray_batches", "ray_map", "ray_session", "replica_loader"]
