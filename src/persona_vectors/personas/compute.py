"""Generation and recording through the disk caches: the model's greedy answers (pooled in batches, each
reply generated once per model), per-conversation response-token statistics (each conversation recorded
once per site set), and the progress reporting every entry point shares."""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch

from ..models import PersonaModel
from ..record import Conversation, Recording
from ..sites import Site, as_sites
from .store import ActivationStore, GenerationCache, Rows, _Caches

log = logging.getLogger("persona_vectors.personas")

Layers = Union[str, int, Site, Sequence[Union[int, str, Site]]]
ProgressFn = Optional[Callable[[str], None]]


def _say(progress: ProgressFn, msg: str) -> None:
    if progress is not None:
        progress(msg)


@dataclass(frozen=True)
class _RayGen:
    """Where missing answers are generated with ``backend="ray"``: actors holding model replicas
    (:func:`persona_vectors.sweep.distributed.ray_map`), this process the one writer of the answer cache."""

    address: Optional[str] = None
    num_actors: Optional[int] = None
    threads: int = 1
    model_loader: Optional[Callable[[], Any]] = None


def _ray_backend(model: PersonaModel, backend: str, address: Optional[str], num_actors: Optional[int],
                 threads: Optional[int], model_loader: Optional[Callable[[], Any]]) -> Optional[_RayGen]:
    """The checked ``backend=`` arguments of an entry point: ``None`` for this process, else the Ray settings.
    Bad values, and a model Ray cannot replicate, fail here, before any work."""
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "local":
        if address is not None or num_actors is not None or threads is not None or model_loader is not None:
            raise ValueError("address, num_actors, threads and model_loader apply to backend='ray' only: pass "
                             "backend='ray' too")
        return None
    from ..sweep.distributed import _check_counts, replica_loader

    _check_counts(1 if threads is None else threads, num_actors)
    replica_loader(model, model_loader)
    return _RayGen(address, num_actors, 1 if threads is None else threads, model_loader)


def _ray_connected(ray: Optional[_RayGen]) -> contextlib.AbstractContextManager[Any]:
    """Connected to Ray for a ``with`` block when ``ray`` is set (a missing cluster fails at once, in one line)."""
    if ray is None:
        return contextlib.nullcontext()
    from ..sweep.distributed import ray_session

    return ray_session(ray.address)


def _generate_batch(max_new_tokens: int, batch_size: int, model: PersonaModel,
                    batch: tuple[int, list[Conversation]]) -> list[str]:
    """Greedy answers to one batch ``(index, conversations)``: the one call this process and Ray actors make,
    so the same batch gives the same text wherever it runs."""
    return model.generate(batch[1], system=None, max_new_tokens=max_new_tokens, temperature=0.0, seed=0,
                          batch_size=batch_size)


def _generate_cached(
    model: PersonaModel,
    pairs: Sequence[tuple[Optional[str], str]],
    *,
    max_new_tokens: int,
    caches: _Caches,
    batch_size: int = 16,
    progress: ProgressFn = None,
    ray: Optional[_RayGen] = None,
) -> list[str]:
    """Greedy replies to (system, question) pairs; missing ones generated in batches (all pairs pooled).

    The missing pairs are sorted by prompt length and cut into batches of ``batch_size``; with ``ray`` the same
    batches run on Ray actors (left padding could change a greedy near-tie if batches were recut, so they are
    not). Either way this process writes each finished batch to the cache, so an interrupted run keeps whole
    batches and a rerun generates only what is missing.
    """
    keys = [GenerationCache.key(s, q, max_new_tokens) for s, q in pairs]
    todo: dict[str, tuple[Optional[str], str]] = {}
    for k, p in zip(keys, pairs):
        if caches.gen.get(k) is None and k not in todo:
            todo[k] = p
    if todo:
        items = list(todo.items())
        msgs = {k: model.to_messages(q, s) for k, (s, q) in items}
        lens = {k: len(model.chat_text(m)) for k, m in msgs.items()}
        items.sort(key=lambda kv: lens[kv[0]])
        n_batches = (len(items) + batch_size - 1) // batch_size
        chunks = [items[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]
        batches = [(b, [msgs[k] for k, _ in chunk]) for b, chunk in enumerate(chunks)]
        results: Any
        if ray is None:
            def run_here() -> Iterator[tuple[tuple[int, list[Conversation]], list[str]]]:
                for batch in batches:
                    _say(progress, f"generate batch {batch[0] + 1}/{n_batches} ({len(batch[1])} answers, "
                                   f"{max_new_tokens} new tokens)")
                    yield batch, _generate_batch(max_new_tokens, batch_size, model, batch)

            results = run_here()
        else:
            from ..sweep.distributed import RayWorkerError, ray_map

            def stopped(batch: tuple[int, list[Conversation]], cause: str) -> RayWorkerError:
                return RayWorkerError(f"Ray answer generation stopped at batch {batch[0] + 1}/{n_batches} "
                                      f"({len(batch[1])} answers, {max_new_tokens} new tokens): {cause} (the answers "
                                      "of finished batches are cached; fix the cause and rerun to generate the rest)")

            _say(progress, f"generate {len(items)} answers in {n_batches} batches on Ray actors "
                           f"({max_new_tokens} new tokens)")
            results = ray_map(model, batches, functools.partial(_generate_batch, max_new_tokens, batch_size),
                              fail=stopped, address=ray.address, num_actors=ray.num_actors, threads=ray.threads,
                              model_loader=ray.model_loader)
        bar = _bar(progress, len(items), "generate answers" + (" (Ray)" if ray is not None else ""), "answer")
        try:
            for (b, _), replies in results:  # this process is the one writer, whichever backend generates
                chunk = chunks[b]
                caches.gen.put({k: r for (k, _), r in zip(chunk, replies)})
                if ray is not None:
                    _say(progress, f"generated batch {b + 1}/{n_batches} on Ray ({len(chunk)} answers)")
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            results.close()  # a Ray run stops its actors here
            if bar is not None:
                bar.close()
    return [caches.gen.get(k) or "" for k in keys]


def _record_rows(model: PersonaModel, convs: Sequence[Conversation], sites: tuple[Site, ...],
                 batch_size: int = 16, on_batch: Optional[Callable[[int], None]] = None,
                 positions: str = "response",
                 tokenized: Optional[Sequence[tuple[Sequence[int], Sequence[bool]]]] = None) -> Rows:
    """Per-conversation statistics of the tokens at ``positions`` (default: the response): a reducer on
    :class:`~persona_vectors.capture.Capture` (the same masks and batches as :func:`record.record`).
    ``tokenized``: each conversation's ``(ids, mask)`` already built (then ``positions`` is not used)."""
    from ..capture import Capture, padded_batches, tokenize_conversation

    n, S, d = len(convs), len(sites), model.d_model
    if tokenized is None:
        tokenized = [tokenize_conversation(model, c, positions) for c in convs]
    elif len(tokenized) != n:
        raise ValueError(f"{len(tokenized)} tokenized rows for {n} conversations")
    means = torch.zeros(n, S, d, dtype=torch.float32)
    norm_sums = torch.zeros(n, S, dtype=torch.float64)
    n_tokens = torch.zeros(n, dtype=torch.long)
    with Capture(model, sites, stop=True) as cap:
        for idx, ids, attention, mask in padded_batches(model, tokenized, batch_size):
            cap.forward(ids, attention)
            m = mask.to(torch.float64)
            count = mask.sum(1)
            for k, s in enumerate(sites):
                x = cap.acts[s].to(torch.float64)
                row_sum = (x * m.unsqueeze(-1)).sum(1)
                means[idx, k] = (row_sum / count.clamp_min(1).unsqueeze(-1)).float().cpu()
                norm_sums[idx, k] = (x.norm(dim=-1) * m).sum(1).cpu()
            n_tokens[idx] = count.cpu()
            if on_batch is not None:
                on_batch(len(idx))
    return Rows(sites, means, norm_sums, n_tokens)


def _rows_cached(
    model: PersonaModel,
    convs: Sequence[Conversation],
    sites: tuple[Site, ...],
    *,
    caches: _Caches,
    progress: ProgressFn = None,
    chunk: int = 64,
) -> Rows:
    """Statistics for every conversation, computing (and storing) only those not cached yet."""
    keys = [ActivationStore.conversation_key(c) for c in convs]
    got = caches.acts.get(sites, keys)
    missing: dict[str, int] = {}
    for i, (k, g) in enumerate(zip(keys, got)):
        if g is None and k not in missing:
            missing[k] = i
    if missing:
        todo = list(missing.items())
        bar = _bar(progress, len(todo), f"record activations ({len(sites)} sites)", "conv")
        try:
            for b in range(0, len(todo), chunk):
                part = todo[b : b + chunk]
                _say(progress, f"record {b + len(part)}/{len(todo)} conversations at {len(sites)} sites")
                rows = _record_rows(model, [convs[i] for _, i in part], sites,
                                    on_batch=None if bar is None else bar.update)
                caches.acts.put(sites, [k for k, _ in part], rows)
        finally:
            if bar is not None:
                bar.close()
        got = caches.acts.get(sites, keys)
    if any(g is None for g in got):  # pragma: no cover - put() always fills the memory layer
        raise RuntimeError("activation cache lost rows it just stored")
    return Rows(sites, torch.stack([g[0] for g in got]), torch.stack([g[1] for g in got]),  # type: ignore[index]
                torch.tensor([g[2] for g in got], dtype=torch.long))  # type: ignore[index]


def _answer_conversations(
    model: PersonaModel,
    systems: Sequence[Optional[str]],
    questions: Sequence[str],
    *,
    max_new_tokens: int,
    caches: _Caches,
    progress: ProgressFn = None,
) -> list[Conversation]:
    """The model's own answers to every (system, question) pair, as recordable conversations."""
    pairs = [(s, q) for s in systems for q in questions]
    replies = _generate_cached(model, pairs, max_new_tokens=max_new_tokens, caches=caches, progress=progress)
    return [model.to_messages(q, s) + [{"role": "assistant", "content": r if r.strip() else "..."}]
            for (s, q), r in zip(pairs, replies)]


def _prompt_side(
    model: PersonaModel,
    systems: Sequence[Optional[str]],
    questions: Sequence[str],
    sites: tuple[Site, ...],
    *,
    max_new_tokens: int,
    caches: _Caches,
    progress: ProgressFn = None,
) -> tuple[Recording, list[Conversation]]:
    convs = _answer_conversations(model, systems, questions, max_new_tokens=max_new_tokens, caches=caches,
                                  progress=progress)
    rows = _rows_cached(model, convs, sites, caches=caches, progress=progress)
    return rows.to_recording(convs), convs


class _BarProgress:
    """``progress=True``: stage messages go to the log and long loops show tqdm bars on stderr."""

    bars = True

    def __call__(self, msg: str) -> None:
        log.info(msg)


def _progress_fn(progress: Union[bool, ProgressFn]) -> ProgressFn:
    """``True`` → tqdm bars (plus log.info messages); ``False``/``None`` → silent; a callable gets the
    stage messages (``"generate batch 2/5 …"``) and no bars, so callers keep their own reporting."""
    if progress is True:
        return _BarProgress()
    if progress is False or progress is None:
        return None
    if not callable(progress):
        raise TypeError(f"progress must be True, False or a callable taking a message, got {progress!r}")
    return progress


def _bar(progress: ProgressFn, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr when ``progress`` asks for bars, else None."""
    if not getattr(progress, "bars", False) or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


def _sites(model: PersonaModel, layers: Layers) -> tuple[Site, ...]:
    return as_sites(layers, model.n_layers)  # type: ignore[arg-type]
