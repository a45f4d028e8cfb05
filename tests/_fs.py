"""Filesystem snapshots for bad-input tests: prove that nothing outside a command's target changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(root: str | os.PathLike[str], *, exclude: tuple[str | os.PathLike[str], ...] = ()) -> dict[str, tuple[str, int]]:
    """Map every file and directory under ``root`` (relative path) to (sha256 or 'dir', permission bits).

    Paths under any of ``exclude`` (absolute or relative to ``root``) are left out, so a test can allow
    a command to write its own target and assert that everything else is byte-for-byte unchanged.
    """
    base = Path(root)
    skip = [(base / e).resolve() for e in exclude]
    out: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            rp = p.resolve()
            if any(rp == s or s in rp.parents for s in skip):
                continue
            mode = p.lstat().st_mode & 0o7777
            digest = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(base))] = (digest, mode)
    return out


def assert_unchanged(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> None:
    """Fail with the list of added, removed and changed paths when two snapshots differ."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"files changed: added={added} removed={removed} changed={changed}"
