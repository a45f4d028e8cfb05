"""Pre-registration plans: read a plan's parameters and prove it was committed before the run it governs.

A plan is a markdown file under ``experiments/prereg/`` with exactly one fenced ``toml`` block holding every
number the run's code reads. :func:`read_plan` parses that block; :func:`plan_commit` records the plan's last
commit, whether the working copy differs from it, and its sha256 (stored in the run's ``config.json``);
:func:`require_committed` stops a default run whose plan is not committed as it stands.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[1]


def read_plan(path: str | Path) -> dict[str, Any]:
    """The parameters of a pre-registration (a path relative to the repository root): its ``toml`` block."""
    text = (ROOT / path).read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    if len(blocks) != 1:
        raise ValueError(f"{path} must hold exactly one ```toml block of parameters, found {len(blocks)}")
    return tomllib.loads(blocks[0])


def plan_commit(path: str | Path) -> dict[str, Any]:
    """``{path, commit, dirty, sha256}``: the plan's last commit and whether the working copy differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()

    commit = git("log", "-1", "--format=%H", "--", str(path)) or None
    dirty = bool(git("status", "--porcelain", "--", str(path)))
    return {"path": str(path), "commit": commit, "dirty": dirty,
            "sha256": hashlib.sha256((ROOT / path).read_bytes()).hexdigest()}


def require_committed(prereg: Mapping[str, Any], mode: str) -> None:
    """Stop a default run whose plan is uncommitted or edited (``SystemExit`` naming the fix)."""
    if mode == "default" and (prereg["commit"] is None or prereg["dirty"]):
        raise SystemExit(f"{prereg['path']} is not committed as it stands: commit the plan before the run it governs")
