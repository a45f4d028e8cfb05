"""The request gatherer: concurrent requests are collected for a short window and run as batched generates.

Design: one asyncio task (:meth:`Batcher.run`) waits for the first pending row, sleeps ``window_ms`` so that
concurrent requests can join, then takes up to ``max_batch`` pending rows, groups them by steering
compatibility (:meth:`~.engine.Row.group_key`; unsteered rows join the largest steered group with alpha 0)
and runs each group as one :func:`~.engine.generate_rows` on the single model worker thread. Rows arriving
while a batch runs wait for the next one (batch-level continuous batching). Everything that touches the
model (generation, threshold and catalogue builds) runs on that one worker thread, so steering hooks never
overlap. If a batch fails, its rows are re-run one by one so that one bad row fails only its own request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .engine import Row, RowResult, generate_rows

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    row: Row
    future: "asyncio.Future[RowResult]"


@dataclass
class BatchStats:
    """Counters for ``GET /v1/stats``-style monitoring and the load benchmark."""

    batches: int = 0
    rows: int = 0
    max_rows: int = 0
    fallbacks: int = 0
    busy_s: float = 0.0
    sizes: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable counters."""
        mean = self.rows / self.batches if self.batches else 0.0
        return {"batches": self.batches, "rows": self.rows, "max_rows": self.max_rows, "mean_rows": round(mean, 2),
                "fallbacks": self.fallbacks, "busy_s": round(self.busy_s, 3)}


class Batcher:
    """Gathers rows from concurrent requests and runs them in batches on one worker thread."""

    def __init__(self, model: Any, *, window_ms: float = 10.0, max_batch: int = 16,
                 tok_lock: Optional[threading.Lock] = None) -> None:
        self.model = model
        self.window_s = max(0.0, window_ms) / 1000.0
        self.max_batch = max(1, max_batch)
        self.tok_lock = tok_lock or threading.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pv-model")
        self.stats = BatchStats()
        self._queue: list[_Pending] = []
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task[None]] = None

    # ------------------------------------------------------------------------------------------ public
    def start(self) -> None:
        """Start the gathering task on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop the gathering task and fail whatever is still pending."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(RuntimeError("server shutting down"))
        self._queue.clear()

    def pending(self) -> int:
        """Rows waiting for a batch."""
        return len(self._queue)

    async def submit(self, rows: list[Row]) -> list[RowResult]:
        """Queue ``rows`` (one request) and wait for their results."""
        self.start()
        loop = asyncio.get_running_loop()
        items = [_Pending(r, loop.create_future()) for r in rows]
        self._queue.extend(items)
        assert self._wake is not None
        self._wake.set()
        return list(await asyncio.gather(*(p.future for p in items)))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the model worker thread (between batches) and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def call_sync(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the model worker thread from another thread and wait."""
        return self.executor.submit(fn).result()

    # ------------------------------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Gather → group → generate, forever."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.window_s:
                await asyncio.sleep(self.window_s)
            take, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            take = [p for p in take if not p.future.cancelled()]
            for group in group_rows(take):
                t0 = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self.executor, self._run_group, [p.row for p in group])
                except Exception as err:  # noqa: BLE001  # unexpected: fail the group, keep serving
                    log.exception("batch failed")
                    results = [err] * len(group)
                self.stats.busy_s += time.perf_counter() - t0
                self.stats.batches += 1
                self.stats.rows += len(group)
                self.stats.max_rows = max(self.stats.max_rows, len(group))
                for p, res in zip(group, results):
                    if p.future.done():
                        continue
                    if isinstance(res, BaseException):
                        p.future.set_exception(res)
                    else:
                        p.future.set_result(res)

    def _run_group(self, rows: list[Row]) -> list[Any]:
        """Worker thread: one batched generate; on failure each row alone (its own error or result)."""
        try:
            return list(generate_rows(self.model, rows, self.tok_lock))
        except Exception as err:  # noqa: BLE001
            if len(rows) == 1:
                return [err]
            self.stats.fallbacks += 1
            out: list[Any] = []
            for r in rows:
                try:
                    out.extend(generate_rows(self.model, [r], self.tok_lock))
                except Exception as e:  # noqa: BLE001
                    out.append(e)
            return out


def group_rows(items: list[_Pending]) -> list[list[_Pending]]:
    """Group pending rows by steering key; unsteered rows join the largest steered group (alpha 0)."""
    groups: dict[Any, list[_Pending]] = {}
    plain: list[_Pending] = []
    for p in items:
        key = p.row.group_key()
        if key:
            groups.setdefault(key, []).append(p)
        else:
            plain.append(p)
    out = sorted(groups.values(), key=len, reverse=True)
    if plain:
        if out:
            out[0].extend(plain)
        else:
            out.append(plain)
    return out
