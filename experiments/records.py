"""Per-generation records and the results computed from them: the middle of ``records → stats → report``.

Every experiment writes, next to ``config.json``:

- ``records.jsonl.gz`` — one JSON object per measured unit (one generation, one read-out of one question,
  one answer of one finetuned model, …), each with a ``kind`` field, in a deterministic order, floats at
  full precision (``repr`` round-trips a float exactly, so the numbers recomputed from the file are the
  numbers the run computed). A few kinds hold measurements that are not generations (training losses,
  vectors, persona-space PCA): the experiment's ``summarize`` says which numbers it re-derives and which it
  carries through. gzip with ``mtime=0``: the same records give the same bytes.
- ``results.json`` — ``summarize(records, config)``: every number of the report, and the verdict's inputs;
- ``report.md`` — ``render(results, config)``: text only, no arithmetic beyond formatting.

During a run the records pass through :meth:`Records.write`, which returns them exactly as they will be
read back (JSON round trip), and ``summarize`` is called on those: the live results and the replayed ones
are computed from the same values. ``experiments/recompute.py`` replays a run directory (or
``docs/data/<experiment>/``) and fails on any difference.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

RECORDS = "records.jsonl.gz"
RESULTS = "results.json"
CONFIG = "config.json"
REPORT = "report.md"


# ============================================================================================ JSON normal form
def plain(obj: Any) -> Any:
    """JSON types only (recursively): numpy/torch scalars and arrays, tuples, paths, dataclasses;
    non-finite floats become ``None`` (strict JSON)."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch tensor
        return plain(obj.detach().cpu().tolist())
    return obj


def roundtrip(obj: Any) -> Any:
    """``obj`` exactly as it reads back from its JSON text."""
    return json.loads(json.dumps(plain(obj), ensure_ascii=False, allow_nan=False))


# ============================================================================================ records file
class Records:
    """Writer of ``records.jsonl.gz``; :meth:`write` appends one gzip member per call (a crash keeps what was
    written) and returns the rows in their read-back form. ``rows`` holds everything written so far."""

    def __init__(self, path: str | Path, *, fresh: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / RECORDS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not self.path.exists():
            self.path.write_bytes(b"")
            self.rows: list[dict[str, Any]] = []
        else:
            self.rows = read_records(self.path)

    def write(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = []
        buf = io.StringIO()
        for r in rows:
            if "kind" not in r:
                raise ValueError("every record needs a 'kind'")
            obj = plain({"kind": r["kind"], **{k: v for k, v in r.items() if k != "kind"}})
            line = json.dumps(obj, ensure_ascii=False, allow_nan=False)
            buf.write(line + "\n")
            out.append(json.loads(line))
        if out:
            with open(self.path, "ab") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
                gz.write(buf.getvalue().encode("utf-8"))
        self.rows.extend(out)
        return out

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self.write([{"kind": kind, **fields}])[0]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``records.jsonl.gz`` (a run directory is accepted too)."""
    p = Path(path)
    if p.is_dir():
        p = p / RECORDS
    with gzip.open(p, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def of_kind(records: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [r for r in records if r["kind"] == kind]


# ============================================================================================ arrays in records
def encode_array(x: Any) -> dict[str, Any]:
    """A float array as ``{"dtype", "shape", "b64"}`` (exact; little-endian bytes, base64)."""
    a = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x))
    if a.dtype.kind != "f":
        raise TypeError(f"only float arrays, got {a.dtype}")
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": str(a.dtype.name), "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    dt = np.dtype(d["dtype"]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=dt).reshape(d["shape"]).astype(np.dtype(d["dtype"]))


# ============================================================================================ results / config
def write_json(path: str | Path, obj: Any) -> Path:
    p = Path(path)
    p.write_text(json.dumps(plain(obj), ensure_ascii=False, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return p


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def git_commit() -> str | None:
    """The repository's HEAD commit (None outside a git checkout): which code produced a run. A run made with
    ``PYTHONPATH`` pointing at another copy of the library says so in ``library_path``."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip() or None
    except Exception:
        return None


def provenance() -> dict[str, Any]:
    """``{"git_commit", "library_path"}`` for config.json."""
    try:
        import persona_vectors

        lib = str(Path(persona_vectors.__file__).resolve().parent)
    except Exception:
        lib = None
    return {"git_commit": git_commit(), "library_path": lib}


def keyed(rows: Iterable[Mapping[str, Any]], *keys: str) -> dict[tuple, Any]:
    """``{(row[k1], row[k2], …): row}`` — the tuple-keyed view the report code indexes by."""
    return {tuple(r[k] for k in keys): r for r in rows}


# ============================================================================================ comparison
def leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) for every scalar in a nested JSON value, in document order."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def _same(a: Any, b: Any, rel: float, abs_tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_tol)
    return a == b


def compare(stored: Any, recomputed: Any, *, rel: float = 1e-9, abs_tol: float = 1e-12) -> dict[str, Any]:
    """Compare two JSON values leaf by leaf: integers (counts) exactly, floats to ``rel`` (relative) /
    ``abs_tol``, strings / booleans / null exactly, and the set of paths exactly.

    Returns ``{"checked": [(path, stored, recomputed, ok)], "n_numbers", "n_other", "mismatches": [...],
    "max_rel": …}``; ``mismatches`` lists ``(path, stored, recomputed)`` in document order.
    """
    a, b = dict(leaves(stored)), dict(leaves(recomputed))
    checked, mism = [], []
    n_num = n_other = 0
    max_rel = 0.0
    for p in list(a) + [p for p in b if p not in a]:
        if p not in a or p not in b:
            mism.append((p, a.get(p, "<missing>"), b.get(p, "<missing>")))
            checked.append((p, a.get(p, "<missing>"), b.get(p, "<missing>"), False))
            continue
        x, y = a[p], b[p]
        ok = _same(x, y, rel, abs_tol)
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            n_num += 1
            if isinstance(y, (int, float)) and not isinstance(y, bool) and x != y:
                max_rel = max(max_rel, abs(x - y) / max(abs(x), abs(y), 1e-300))
        else:
            n_other += 1
        checked.append((p, x, y, ok))
        if not ok:
            mism.append((p, x, y))
    return {"checked": checked, "n_numbers": n_num, "n_other": n_other, "mismatches": mism, "max_rel": max_rel}


def first_text_difference(a: str, b: str) -> tuple[int, str, str] | None:
    """(line number, stored line, recomputed line) of the first differing line, or None when equal."""
    la, lb = a.splitlines(), b.splitlines()
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else "<end of file>"
        y = lb[i] if i < len(lb) else "<end of file>"
        if x != y:
            return i + 1, x, y
    return None
