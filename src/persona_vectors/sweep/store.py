"""The sweep's results store: the append-only JSONL file (torn-line recovery), its ``<out>.config.json``
sidecar, the output-path safety checks and the exclusive lock a running sweep holds on the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from .._infra.jsonl import JsonlLog
from .errors import StoreCorruptError, SweepStoreError, SweepStoreLockedError

log = logging.getLogger(__name__)

CONFIG_SUFFIX = ".config.json"
LOCK_SUFFIX = ".lock"
STORE_FORMAT = 1
_ROW_SIGNATURE = b'{"row_id": "'  # every row run_sweep writes starts with these bytes
_LOCK_HEADER = "persona-vectors sweep lock"


class JsonlStore:
    """Append-only JSON-lines results file keyed by ``row_id``; crash-safe (see :mod:`persona_vectors.sweep`).

    ``repair=True`` (default) truncates a partial/corrupt trailing line on open (with a warning);
    ``repair=False`` only skips it when reading (for read-only consumers such as :func:`summarize`).
    """

    def __init__(self, path: str | os.PathLike, *, repair: bool = True) -> None:
        self.path = Path(path)
        self.dropped_bytes = 0
        self._ids: set[str] = set()
        self._log = JsonlLog(self.path, _parse_row)
        self._n = 0
        self._scan(repair)

    def _scan(self, repair: bool) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise SweepStoreError(f"{self.path} is not a file (a directory?): pass a results file path such as "
                                  f"{self.path / 'results.jsonl'}")
        scan = self._log.scan()
        problems = scan.problems
        first_bad = problems[0] if problems else None
        for line_no, obj in scan.entries:
            if first_bad is not None and line_no > first_bad[0]:
                break
            self._ids.add(obj["row_id"])
            self._n += 1
        if first_bad is None:
            return
        line_no, bad_at, bad_end = first_bad
        if len(problems) > 1 or bad_end != scan.size:  # only the very last line may be a crash artefact
            raise StoreCorruptError(
                f"{self.path}: line {line_no} is corrupt and is not the last line; this is not a crash artefact: "
                "inspect the file (or start over with resume=False)"
            )
        first_line = scan.first_line
        if bad_at == 0 and not (first_line.startswith(_ROW_SIGNATURE) or _ROW_SIGNATURE.startswith(first_line)):
            raise StoreCorruptError(
                f"{self.path}: line 1 is not a results row: this is not a results file of persona-vectors (nothing "
                "was changed); pass another results path"
            )
        self.dropped_bytes = scan.size - bad_at
        msg = (f"{self.path}: dropped a partial trailing line ({self.dropped_bytes} bytes) left by an "
               "interrupted run; its rows will be regenerated")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
        if repair:
            self._log.truncate(bad_at)

    @property
    def row_ids(self) -> set[str]:
        """Ids of the stored rows."""
        return set(self._ids)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, rid: object) -> bool:
        return rid in self._ids

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append rows whose ``row_id`` is not stored yet (one write + fsync); returns how many were written."""
        new = []
        batch_ids: set[str] = set()
        for r in rows:
            rid = r.get("row_id")
            if not isinstance(rid, str):
                raise ValueError("every row needs a string 'row_id'")
            if rid in self._ids or rid in batch_ids:
                continue
            batch_ids.add(rid)
            new.append(r)
        if not new:
            return 0
        self._log.append(new, fsync=True, allow_nan=False, default=_json_default)
        for r in new:
            self._ids.add(r["row_id"])
        self._n += len(new)
        return len(new)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Stored rows, in file order (a partial trailing line is skipped)."""
        for _, obj in self.numbered_rows():
            yield obj

    def numbered_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, row)`` of the stored rows, in file order (1-based; for error messages)."""
        if not self.path.is_file():
            return
        yield from self._log.scan().entries

    def rows(self) -> list[dict[str, Any]]:
        """All stored rows (first occurrence of each ``row_id``)."""
        seen: set[str] = set()
        out = []
        for r in self:
            if r["row_id"] not in seen:
                seen.add(r["row_id"])
                out.append(r)
        return out

    def reset(self) -> None:
        """Delete all rows (start over)."""
        if self.path.exists():
            self.path.unlink()
        self._ids.clear()
        self._n = 0


def _parse_row(line: bytes) -> dict[str, Any]:
    """One stored line as a row dict with a string ``row_id``; ``ValueError`` for anything else."""
    try:
        obj = json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("row_id"), str):
        raise ValueError("not a row")
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def sidecar_path(out_path: str | os.PathLike) -> Path:
    """``results.jsonl`` → ``results.config.json``."""
    return Path(out_path).with_suffix(CONFIG_SUFFIX)


def _config_hash(cfg_json: Mapping[str, Any]) -> str:
    d = {k: v for k, v in cfg_json.items() if k != "name"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _diff_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        if k == "name" or old.get(k) == new.get(k):
            continue
        if k == "vectors" and isinstance(old.get(k), Mapping) and isinstance(new.get(k), Mapping):
            for vk in sorted(set(old[k]) | set(new[k])):
                if old[k].get(vk) != new[k].get(vk):
                    out.append(f"vectors.{vk}")
            continue
        out.append(f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}")
    return out


def _write_sidecar(path: Path, meta: Mapping[str, Any]) -> None:
    from .._infra.files import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's content when ``path`` is a sweep sidecar written by this library, else ``None``."""
    try:
        d = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(d, dict) or d.get("format") != STORE_FORMAT or not isinstance(d.get("config_hash"), str):
        return None
    if not isinstance(d.get("config"), dict) or not isinstance(d.get("model", {}), dict):
        return None
    return d


def _is_store_file(path: Path, side: Path) -> bool:
    """Whether ``path`` (an existing file) is a results file this library wrote (so it may be resumed or removed).

    Empty files qualify; otherwise the first line must be a stored row, or (a crash during the very first write)
    the start of one, next to a valid sidecar.
    """
    with open(path, "rb") as f:
        first = f.readline(1 << 24)
    if not first:
        return True
    if first.endswith(b"\n"):
        try:
            _parse_row(first)
        except ValueError:
            return False
        return True
    partial = first.startswith(_ROW_SIGNATURE) or _ROW_SIGNATURE.startswith(first)
    return partial and _read_sidecar(side) is not None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def lock_path(out_path: str | os.PathLike) -> Path:
    """``results.jsonl`` → ``results.jsonl.lock``: the file :func:`run_sweep` locks while it writes the store."""
    p = Path(out_path)
    return p.with_name(p.name + LOCK_SUFFIX)


def check_sweep_output(
    out_path: str | os.PathLike, *, resume: bool = True, config_path: str | os.PathLike | None = None,
) -> None:
    """Refuse an output path that a sweep would damage; raises :class:`SweepStoreError` naming the fix.

    Refused: ``out`` equal to (or the same file as) ``config_path``; ``out`` a directory or another non-file;
    an existing non-empty ``out`` that is not a results file of this library (resuming would truncate or append
    to it, ``resume=False`` would delete it); an existing ``<stem>.config.json`` that is not a sweep sidecar (it
    would be overwritten); an existing ``<out>.lock`` that is not a sweep lock file. Nothing is written.
    """
    out = Path(out_path)
    action = "--resume would append to it" if resume else "--no-resume would delete it"
    if config_path is not None and _same_file(out, Path(config_path)):
        cfgp = Path(config_path)
        raise SweepStoreError(
            f"--out {out} is the sweep config itself: the results would overwrite it; pass another --out, e.g. "
            f"{cfgp.with_name(cfgp.stem + '.results.jsonl')}"
        )
    if out.is_dir():
        raise SweepStoreError(f"--out {out} is a directory: pass a results file path, e.g. {out / 'results.jsonl'}")
    if out.exists() and not out.is_file():
        raise SweepStoreError(f"--out {out} is not a regular file: pass a results file path (e.g. results.jsonl)")
    side = sidecar_path(out)
    if side.exists() and (not side.is_file() or _read_sidecar(side) is None):
        raise SweepStoreError(
            f"{side} exists and is not a sweep sidecar (a sweep writing {out.name} would overwrite it): "
            "move it away or pass another --out"
        )
    if out.is_file() and not _is_store_file(out, side):
        raise SweepStoreError(
            f"{out} exists and is not a results file of persona-vectors (its first line is not a sweep row); "
            f"{action}: pass another --out, or move {out.name} away"
        )
    lk = lock_path(out)
    if lk.exists() or lk.is_symlink():
        foreign = not lk.is_file() or lk.is_symlink()
        if not foreign:
            with open(lk, "rb") as f:
                head = f.read(len(_LOCK_HEADER))
            foreign = bool(head) and head != _LOCK_HEADER.encode()
        if foreign:
            raise SweepStoreError(
                f"{lk} exists and is not a sweep lock file (a sweep on {out.name} locks that path): "
                "move it away or pass another --out"
            )


def _lock_holder(lk: Path) -> str:
    """``"PID 123"`` (``"PID 123 on host"`` for another host) from a lock file, or ``"another process"``."""
    try:
        text = lk.read_text(errors="replace")
    except OSError:
        return "another process"
    info = dict(line.split(": ", 1) for line in text.splitlines()[1:4] if ": " in line)
    pid = info.get("pid", "").strip()
    if not pid.isdigit():
        return "another process"
    host = info.get("host", "").strip()
    return f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


@contextlib.contextmanager
def lock_store(out_path: str | os.PathLike, *, timeout: float = 1.0) -> Iterator[Path]:
    """Hold the exclusive lock of a results store for the ``with`` block; yields the lock file's path.

    Uses :class:`filelock.FileLock` (``flock``) on :func:`lock_path`; the file names the holder's PID, host and
    start time, and is removed on exit. After a SIGKILL the kernel drops the ``flock``, so a leftover lock file
    never blocks the next run. Raises :class:`SweepStoreLockedError` when another process holds the lock
    (after waiting ``timeout`` seconds), :class:`SweepStoreError` when the lock file cannot be created.
    """
    from filelock import FileLock, Timeout

    out = Path(out_path)
    lk = lock_path(out)
    held: dict[str, tuple[int, int]] = {}

    def announce(fd: int) -> None:
        st = os.fstat(fd)
        held["inode"] = (st.st_dev, st.st_ino)
        text = (f"{_LOCK_HEADER}\npid: {os.getpid()}\nhost: {socket.gethostname()}\n"
                f"started: {time.strftime('%Y-%m-%dT%H:%M:%S')}\nstore: {out.resolve()}\n"
                "This file marks a running sweep on the store and is removed when it ends. After a crash it is left "
                "behind but blocks nothing (the OS released the lock); it is safe to delete when no sweep runs.\n")
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)

    lock = FileLock(str(lk), timeout=timeout, on_acquired=announce)
    try:
        lock.acquire()
    except Timeout:
        raise SweepStoreLockedError(
            f"results store {out} is in use by {_lock_holder(lk)} (another sweep is running); "
            "wait for it or pass another --out"
        ) from None
    except OSError as err:
        raise SweepStoreError(
            f"cannot create the lock file {lk} ({err.strerror or err}): pass an --out in a writable directory"
        ) from None
    try:
        yield lk
    finally:
        try:
            st = os.stat(lk)
            if (st.st_dev, st.st_ino) == held.get("inode"):
                lk.unlink()  # while still holding it: filelock's waiters notice the unlinked inode and retry
        except OSError:
            pass
        finally:
            lock.release()


# ------------------------------------------------------------------------------------------------ run
