"""Replay a report from its per-generation records and fail on any difference.

    python experiments/recompute.py RUN_DIR [RUN_DIR ...] [--verbose] [--rel 1e-9]
    python experiments/recompute.py docs/data            # every committed run under it

A run directory holds ``config.json`` (with ``"experiment": "<name>"``), ``records.jsonl.gz`` and
``results.json``, and usually ``report.md``. For each one this loads the records and the config, calls the
experiment's own ``summarize(records, config)`` (``experiments/<name>.py``) and compares

1. every leaf of the recomputed results with the stored ``results.json`` — integers (counts) exactly,
   floats to a relative tolerance of 1e-9 (``--rel``), strings and booleans exactly, and the same set of
   fields; then
2. the report rendered from the recomputed results (``render(results, config)``) with the stored
   ``report.md``, line by line (so every number printed in the report is checked as printed).

It prints one line per results section (how many numbers were checked, the largest relative difference) and
exits 1 at the first mismatch, naming the run, the field, the stored and the recomputed value. Exit 2: a
path that is not a run directory, or an experiment that is not known.

What a ``summarize`` re-derives and what it carries through from measurement records (e.g. persona-space
PCA) is documented in each experiment; carried values are still checked against ``results.json`` and the
report.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import records as RC  # noqa: E402

_NUM = re.compile(r"[-+−]?\d+(?:\.\d+)?")


class RecomputeError(Exception):
    """A replay that did not reproduce the stored numbers (``.where``: run dir, field)."""


def run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories named by ``paths`` (a run directory itself, or a folder of them, one level)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / RC.CONFIG).is_file() and (p / RC.RECORDS).is_file():
            out.append(p)
            continue
        kids = sorted(d for d in p.iterdir() if (d / RC.CONFIG).is_file() and (d / RC.RECORDS).is_file()) \
            if p.is_dir() else []
        if not kids:
            raise FileNotFoundError(f"{p}: no run directory (config.json + {RC.RECORDS}) here or one level below")
        out.extend(kids)
    return out


def experiment_module(config: dict[str, Any], where: Path) -> Any:
    name = config.get("experiment")
    if not name or not (HERE / f"{name}.py").is_file():
        raise LookupError(f"{where / RC.CONFIG}: unknown experiment {name!r} (expected a file experiments/<name>.py)")
    mod = importlib.import_module(name)
    if not hasattr(mod, "summarize") or not hasattr(mod, "render"):
        raise LookupError(f"experiments/{name}.py has no summarize(records, config) / render(results, config)")
    return mod


def recompute(run_dir: str | Path, *, rel: float = 1e-9, verbose: bool = False, out: Any = None) -> dict[str, Any]:
    """Replay one run directory; raise :class:`RecomputeError` on the first mismatch, else return counts."""
    out = sys.stdout if out is None else out
    d = Path(run_dir)
    config = RC.read_json(d / RC.CONFIG)
    mod = experiment_module(config, d)
    records = RC.read_records(d / RC.RECORDS)
    results = RC.roundtrip(mod.summarize(records, config))
    stored = RC.read_json(d / RC.RESULTS)
    print(f"\n{d}  ({config['experiment']}: {len(records)} records)", file=out)
    print(f"  {'section':<22} {'numbers':>8} {'other':>7} {'max rel diff':>13}  status", file=out)
    total_n = total_o = 0
    first: tuple | None = None
    sections = list(dict.fromkeys(list(stored) + list(results)))
    for sec in sections:
        c = RC.compare({sec: stored.get(sec, "<missing>")}, {sec: results.get(sec, "<missing>")}, rel=rel)
        total_n += c["n_numbers"]
        total_o += c["n_other"]
        status = "ok" if not c["mismatches"] else f"MISMATCH ({len(c['mismatches'])})"
        print(f"  {sec:<22} {c['n_numbers']:>8} {c['n_other']:>7} {c['max_rel']:>13.2e}  {status}", file=out)
        if verbose:
            for path, x, y, ok in c["checked"]:
                print(f"    {'  ' if ok else '!!'} {path} = {x!r}" + ("" if ok else f"  recomputed {y!r}"), file=out)
        if c["mismatches"] and first is None:
            first = c["mismatches"][0]
    if first is not None:
        raise RecomputeError(f"{d}: results.json field {first[0]}: stored {first[1]!r}, recomputed {first[2]!r}")
    n_report = 0
    rp = d / RC.REPORT
    if rp.is_file():
        stored_text = rp.read_text(encoding="utf-8")
        text = mod.render(results, config)
        text = text if text.endswith("\n") else text + "\n"
        diff = RC.first_text_difference(stored_text, text)
        n_report = len(_NUM.findall(stored_text))
        print(f"  {'report.md':<22} {n_report:>8} {len(stored_text.splitlines()):>7} {'':>13}  "
              f"{'identical' if diff is None else 'MISMATCH'}", file=out)
        if diff is not None:
            raise RecomputeError(f"{d}: report.md line {diff[0]}:\n  stored:     {diff[1]}\n  recomputed: {diff[2]}")
    else:
        print(f"  report.md              (absent: not checked)", file=out)
    print(f"  total: {total_n} numbers and {total_o} other values in results.json"
          + (f", {n_report} numbers in report.md" if n_report else "") + " reproduced", file=out)
    return {"run_dir": str(d), "experiment": config["experiment"], "records": len(records), "numbers": total_n,
            "other": total_o, "report_numbers": n_report}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("paths", nargs="+", help="run directories, or folders of them (e.g. docs/data)")
    ap.add_argument("--rel", type=float, default=1e-9, help="relative tolerance for floats (default 1e-9)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every checked value")
    a = ap.parse_args(argv)
    try:
        dirs = run_dirs(a.paths)
    except (FileNotFoundError, NotADirectoryError) as e:
        print(f"recompute: {e}", file=sys.stderr)
        return 2
    for d in dirs:
        try:
            recompute(d, rel=a.rel, verbose=a.verbose)
        except RecomputeError as e:
            print(f"\nrecompute: MISMATCH in {e}", file=sys.stderr)
            return 1
        except (LookupError, FileNotFoundError, KeyError, ValueError) as e:
            print(f"\nrecompute: {d}: cannot replay: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
    print(f"\nrecompute: {len(dirs)} run(s) reproduced", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
