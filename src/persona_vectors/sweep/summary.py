"""Summaries of a sweep's results store: :func:`summarize` (per vector, layer and alpha: n, label shares with
Wilson intervals, mean coherence) and :func:`summary_markdown` (the same as a table).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .config import _finite, _is_int, _is_number
from .errors import StoreCorruptError, SweepStoreError
from .store import JsonlStore


_COORDS = {"row_id", "vector", "layer", "alpha", "prompt_id", "prompt", "sample", "seed", "alpha_raw", "relative",
           "temperature", "text", "label", "label_scores", "label_source", "operator", "positions", "system"}


def _check_row(path: Path, line_no: int, r: Mapping[str, Any]) -> None:
    """Raise :class:`StoreCorruptError` naming ``file:line`` when a row lacks a coordinate or has a wrong type."""
    fix = "fix or delete that line (or rerun the sweep into a new --out)"
    missing = [k for k in ("vector", "layer", "alpha") if k not in r]
    if missing:
        raise StoreCorruptError(f"{path}:{line_no}: row lacks {', '.join(map(repr, missing))}; {fix}")
    checks = (
        ("vector", isinstance(r["vector"], str), "a string"),
        ("layer", _is_int(r["layer"]), "an integer"),
        ("alpha", _is_number(r["alpha"]) and _finite(r["alpha"]), "a finite number"),
        ("label", r.get("label") is None or isinstance(r.get("label"), str), "a string"),
    )
    for key, good, what in checks:
        if not good:
            raise StoreCorruptError(f"{path}:{line_no}: {key!r} must be {what}, got {r.get(key)!r}; {fix}")


def read_label_file(path: str | os.PathLike) -> dict[str, str]:
    """``{row id: label}`` from a JSONL of ``{"id", "label"}`` objects, e.g. the merged output of
    ``persona-vectors judge triage --readings`` (judge + blind reader).

    Raises:
        SweepStoreError: the file is missing, a line is not such an object, or a text still has no label (an
            unmerged triage output: merge the reader's labels first).
    """
    from .._infra.files import jsonl_objects

    p = Path(path)
    if not p.is_file():
        raise SweepStoreError(f"no labels file at {p}: pass the JSONL written by `persona-vectors judge triage "
                              "--readings`")
    out: dict[str, str] = {}
    unlabelled = 0
    for i, row in jsonl_objects(p, '{"id": ..., "label": ...}', error=SweepStoreError):
        if row.get("id") is None:
            raise SweepStoreError(f"{p}:{i} needs a JSON object with an \"id\" (the sweep row's row_id) and a \"label\"")
        if row.get("label") is None:
            unlabelled += 1
            continue
        out[str(row["id"])] = str(row["label"])
    if unlabelled:
        raise SweepStoreError(f"{p}: {unlabelled} text(s) have no label yet (the judge left them to a reader): merge "
                              "the reader's labels with `persona-vectors judge triage ... --readings FILE` first")
    return out


def summarize(path: str | os.PathLike, *, judge: Any = None, labels: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
    """Per cell (vector, layer, alpha): n, label shares with Wilson 95 % intervals, mean coherence and other means.

    Returns ``{"path", "n_rows", "n_labelled", "labels", "notes", "cells": [{"vector", "layer", "alpha",
    "alpha_raw", "n", "labels": {label: {"k", "share", "low", "high"}}, "corrected": {label: share} | None,
    "coherence": float | None, "means": {field: float}}], "judge": source | None}``.
    ``corrected``: the shares corrected with the labelling judge's held-out confusion matrix
    (:func:`~persona_vectors.judge_validation.corrected_label_shares`; issue 13 asks for both views), when every
    labelled row records the same validated judge (``label_source``) and its probabilities; a note says why not
    otherwise. The correction assumes the judge errs on these texts as on its validation corpus (SmolLM2
    generations); it is a point estimate.
    Label rows use :func:`persona_vectors.judge.label_shares` (all archetypes listed) when every label is a known
    archetype, else the observed labels. Shares need judge labels: rows stored without them (a sweep run
    without ``--judge``) are labelled here, in memory, when ``judge`` is given (an object with ``classify``,
    e.g. ``default_judge()``; CLI ``summarize --judge``); otherwise ``notes`` says how to get them.
    ``labels`` (``{row_id: label}``, e.g. :func:`read_label_file` of a merged triage output; CLI ``summarize
    --labels FILE``) replaces every row's label: the counts a claim should rest on (judge where it is sure, a blind
    reader elsewhere; ``docs/judge_triage.md``). Such rows carry ``label_source = "triage"``; their shares are
    counted, not corrected, and rows the file does not cover are left out with a note.
    """
    from ..judge import LABELS, label_shares, wilson_interval
    from ..judge_validation import corrected_label_shares

    p = Path(path)
    if p.is_dir():
        raise SweepStoreError(f"{p} is a directory: pass the results .jsonl file written by `persona-vectors sweep`")
    if not p.is_file():
        raise FileNotFoundError(f"No results file at {p}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = JsonlStore(p, repair=False)
        rows = []
        seen: set[str] = set()
        for line_no, r in store.numbered_rows():
            if r["row_id"] in seen:
                continue
            seen.add(r["row_id"])
            _check_row(p, line_no, r)
            rows.append(r)
    if labels is not None:
        if judge is not None:
            raise ValueError("pass judge= or labels=, not both: labels= already says every row's label")
        for r in rows:
            r.pop("label_scores", None)
            r["label"] = labels.get(str(r["row_id"]))
            r["label_source"] = "triage" if r["label"] is not None else None
    unlabelled = [r for r in rows if r.get("label") is None and isinstance(r.get("text"), str)]
    if judge is not None and unlabelled:
        results = judge.classify([r["text"] for r in unlabelled])
        if len(results) != len(unlabelled):
            raise ValueError(f"judge returned {len(results)} results for {len(unlabelled)} texts")
        for r, res in zip(unlabelled, results):
            r["label"] = res.label
            r["label_scores"] = {k: float(v) for k, v in dict(res.scores).items()}
            if getattr(res, "source", None) is not None:
                r["label_source"] = str(res.source)
    n_labelled = sum(1 for r in rows if r.get("label") is not None)
    notes: list[str] = []
    if n_labelled < len(rows) and labels is not None:
        notes.append(f"{len(rows) - n_labelled} of {len(rows)} rows have no label in the labels file and are left "
                     "out of the shares; triage every row of this store to count them")
    elif rows and n_labelled == 0:
        notes.append(f"no label shares: none of the {len(rows)} rows has a judge label (the sweep ran without "
                     f"--judge); run `persona-vectors summarize {p} --judge` to label them now, or sweep with --judge")
    elif n_labelled < len(rows):
        notes.append(f"{len(rows) - n_labelled} of {len(rows)} rows have no judge label and are left out of the "
                     f"shares; `persona-vectors summarize {p} --judge` labels them")
    cells: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["vector"], r["layer"], r["alpha"]), []).append(r)
    observed = sorted({r["label"] for r in rows if r.get("label") is not None})
    use_archetypes = bool(observed) and set(observed) <= set(LABELS)
    label_names = list(LABELS) if use_archetypes else observed
    confusion, source = _correction_for(rows, notes) if use_archetypes else (None, None)
    out_cells = []
    for (vname, layer, alpha), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        labels = [r["label"] for r in rs if r.get("label") is not None]
        lab: dict[str, dict[str, float]] = {}
        if labels:
            if use_archetypes:
                shares = label_shares(labels)
                for name, (share, lo, hi) in shares.items():
                    lab[name] = {"k": sum(1 for x in labels if x == name), "share": share, "low": lo, "high": hi}
            else:
                for name in label_names:
                    k = sum(1 for x in labels if x == name)
                    lo, hi = wilson_interval(k, len(labels))
                    lab[name] = {"k": k, "share": k / len(labels), "low": lo, "high": hi}
        corrected = None
        if confusion is not None and labels:
            proba = np.array([[r["label_scores"][lab] for lab in LABELS] for r in rs if r.get("label") is not None])
            corrected = corrected_label_shares(proba, confusion)["corrected"]
        means: dict[str, float] = {}
        numeric_keys = sorted({k for r in rs for k, v in r.items()
                               if k not in _COORDS and isinstance(v, (int, float)) and not isinstance(v, bool)})
        for k in numeric_keys:
            vals = [float(r[k]) for r in rs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                means[k] = sum(vals) / len(vals)
        out_cells.append({
            "vector": vname, "layer": layer, "alpha": alpha, "alpha_raw": rs[0].get("alpha_raw"),
            "relative": rs[0].get("relative"), "n": len(rs), "n_labelled": len(labels), "labels": lab,
            "corrected": corrected, "coherence": means.get("coherence"), "means": means,
        })
    return {"path": str(p), "n_rows": len(rows), "n_labelled": n_labelled, "labels": label_names, "notes": notes,
            "judge": source, "cells": out_cells}


def _correction_for(rows: list[dict[str, Any]], notes: list[str]) -> tuple[list[list[int]] | None, str | None]:
    """The held-out confusion matrix that corrects these rows' shares: rows labelled by one validated judge,
    each with its probabilities. Otherwise ``(None, source)``, with a note saying why when the rows name their
    judge(s) (rows that name none, e.g. from a custom judge, get no correction and no note)."""
    from ..judge import LABELS
    from ..judge_validation import held_out_confusion

    labelled = [r for r in rows if r.get("label") is not None]
    sources = {r.get("label_source") for r in labelled}
    if sources == {None}:  # a judge that does not name itself (or a store from before label_source): no claim
        return None, None
    if sources == {"triage"}:
        notes.append("labels from triage (the judge where it is sure, a blind reader elsewhere): shares are counted, "
                     "not corrected")
        return None, "triage"
    if len(sources) != 1:
        named = sorted(str(x) for x in sources if x is not None)
        notes.append(f"no corrected shares: rows were labelled by several judges ({', '.join(named)}"
                     f"{', and unnamed ones' if None in sources else ''}); relabel them with one")
        return None, None
    source = sources.pop()
    if any(not isinstance(r.get("label_scores"), Mapping) or set(r["label_scores"]) != set(LABELS) for r in labelled):
        notes.append("no corrected shares: some rows lack the judge's probabilities over every label (label_scores)")
        return None, source
    confusion = held_out_confusion(source)
    if confusion is None:
        notes.append(f"no corrected shares: the judge {source!r} has no held-out confusion matrix in the library "
                     "(validate it on labelled text first)")
    return confusion, source


def summary_markdown(summary: Mapping[str, Any], *, min_share: float = 0.0) -> str:
    """Render :func:`summarize`'s output as a Markdown table (``share [low, high]`` per label, then ``→ corrected``
    when the shares could be corrected with the judge's held-out confusion matrix).

    Labels whose share never exceeds ``min_share`` in any cell are left out to keep the table narrow.
    """
    cells = summary["cells"]
    labels = [lab for lab in summary.get("labels", [])
              if any(c["labels"].get(lab, {}).get("share", 0.0) > min_share for c in cells)]
    has_coh = any(c.get("coherence") is not None for c in cells)
    relative = any(c.get("relative") for c in cells)
    head = ["vector", "layer", "alpha" + (" (rel.)" if relative else ""), "alpha_raw", "n"] + labels
    if has_coh:
        head.append("coherence")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in cells:
        raw = c.get("alpha_raw")
        cols = [str(c["vector"]), str(c["layer"]), f"{c['alpha']:g}",
                f"{raw:.4g}" if isinstance(raw, (int, float)) else "", str(c["n"])]
        corr = c.get("corrected") or {}
        for lab in labels:
            s = c["labels"].get(lab)
            cell = f"{s['share']:.2f} [{s['low']:.2f}, {s['high']:.2f}]" if s else ""
            if s and lab in corr:
                cell += f" → {corr[lab]:.2f}"
            cols.append(cell)
        if has_coh:
            coh = c.get("coherence")
            cols.append(f"{coh:.3f}" if coh is not None else "")
        lines.append("| " + " | ".join(cols) + " |")
    if any(c.get("corrected") for c in cells):
        lines.append(f"\nshares: argmax share [Wilson 95 %] → share corrected with the {summary.get('judge')} "
                     "judge's held-out confusion matrix (a sensitivity check, not an estimate: it assumes the "
                     "judge errs here as on its validation text, and on fresh real text it was further from blind "
                     "readers than the argmax share; docs/judge_fresh_test2.md)")
    lines += [f"\nnote: {n}" for n in summary.get("notes", ())]
    return "\n".join(lines) + "\n"
