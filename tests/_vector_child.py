"""Child process for tests/test_concurrency_vector.py.

``python tests/_vector_child.py save DIR N TAG GO``: prints ``ready``, waits for the file GO, then saves N times
into DIR, alternating the two vectors ``make(TAG, 0)`` and ``make(TAG, 1)``.
``python tests/_vector_child.py read DIR STOP GO``: prints ``ready``, waits for GO, then loads DIR in a loop
until the file STOP exists, checking that every load equals one of the vectors the writers save.
Both print one JSON line at the end: counts and every error seen (type and message).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from persona_vectors import PersonaVector, Provenance, Site

TAGS = ("a", "b", "init")


def make(tag: str, k: int) -> PersonaVector:
    """A deterministic vector per (writer tag, k); its provenance name says which."""
    g = torch.Generator().manual_seed(sum(map(ord, tag)) * 10 + k)
    return PersonaVector([Site(3), Site(7)], torch.randn(2, 64, generator=g),
                         Provenance(model_id="m", fingerprint="fp", d_model=64, name=f"{tag}-{k}"))


def _wait(go: Path) -> None:
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)


def save(directory: Path, n: int, tag: str, go: Path) -> dict:
    vecs = [make(tag, 0), make(tag, 1)]
    _wait(go)
    errors: list[str] = []
    t0 = time.perf_counter()
    for i in range(n):
        try:
            vecs[i % 2].save(directory)
        except Exception as err:  # noqa: BLE001 - the test counts every failure
            errors.append(f"{type(err).__name__}: {err}")
    return {"saves": n, "errors": errors, "seconds": time.perf_counter() - t0}


def read(directory: Path, stop: Path, go: Path) -> dict:
    known = {f"{t}-{k}": make(t, k) for t in TAGS for k in (0, 1)}
    _wait(go)
    errors: list[str] = []
    loads = torn = 0
    seen: set[str] = set()
    while not stop.exists():
        try:
            v = PersonaVector.load(directory)
        except Exception as err:  # noqa: BLE001
            errors.append(f"{type(err).__name__}: {err}")
            continue
        loads += 1
        want = known.get(v.provenance.name)
        if want is None or not torch.equal(v.directions, want.directions) or v.sites != want.sites \
                or v.provenance != want.provenance:
            torn += 1
        else:
            seen.add(v.provenance.name)
    return {"loads": loads, "errors": errors, "torn": torn, "seen": sorted(seen)}


if __name__ == "__main__":
    mode, d = sys.argv[1], Path(sys.argv[2])
    if mode == "save":
        out = save(d, int(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))
    else:
        out = read(d, Path(sys.argv[3]), Path(sys.argv[4]))
    print(json.dumps(out), flush=True)
