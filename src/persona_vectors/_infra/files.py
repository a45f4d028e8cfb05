"""Atomic file writes, directory locks, fsync helpers and a checked JSONL reader (no other module of the package is
imported here)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

LOCK_TIMEOUT_S = 60.0


def umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` is process-wide)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Any:
    """Write a file atomically: yields a temporary sibling path to write; on success it is fsynced and renamed
    over ``path``, on any error (or interrupt) it is deleted and ``path`` keeps its previous content.

    >>> with atomic_file("out.html") as tmp:   # doctest: +SKIP
    ...     tmp.write_text(text)
    """
    import tempfile

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; the result gets the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """``Path(path).write_text(text)``, atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def fsync_dir(path: Path) -> None:
    """fsync a directory (makes renames inside it durable); silently nothing where the OS refuses."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def dir_lock(directory: Path, *, exclusive: bool, timeout: float = LOCK_TIMEOUT_S) -> Iterator[bool]:
    """Hold ``flock`` on the directory itself (no lock file is created); yields whether the lock is held.

    Yields False where the platform or filesystem has no ``flock`` (the caller then works unlocked), and
    False after ``timeout`` seconds of waiting for a holder that does not let go.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield False
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield False
        return
    try:
        op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline, pause, held = time.monotonic() + timeout, 0.0005, False
        while True:
            try:
                fcntl.flock(fd, op)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
            except OSError:  # no flock on this filesystem
                break
        yield held
    finally:
        os.close(fd)  # releases the lock


def write_temp(directory: Path, final_name: str, data: bytes) -> Path:
    """Write ``data`` to a new unique hidden file next to ``final_name``, fsynced, with umask permissions."""
    mode = 0o666 & ~umask()
    for _ in range(100):
        tmp = directory / f".{final_name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp
    raise FileExistsError(f"could not create a temporary file in {directory}")  # pragma: no cover


def jsonl_objects(path: str | os.PathLike[str], shape: str, *, error: type[Exception] = ValueError
                  ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file of objects.

    A line that is not valid JSON, or not a JSON object, raises ``error`` naming ``file:line`` and the expected
    ``shape`` (e.g. ``'{"text": ..., "label": ...}'``), so every reader of user-written JSONL fails the same way.
    """
    p = Path(path)
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise error(f"{p}:{i} is not valid JSON: write one {shape} object per line") from None
        if not isinstance(row, dict):
            raise error(f"{p}:{i} needs a JSON object, not {type(row).__name__}: write one {shape} object per line")
        yield i, row
