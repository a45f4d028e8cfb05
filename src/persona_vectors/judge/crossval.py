"""How good the embedding judge is, measured: stratified k-fold cross-validation and its report.

:func:`cross_validate_judge` gives per-label recall/precision/F1 on the shipped set,
:func:`format_cv_markdown` the README table, and :func:`main` the ``python -m persona_vectors.judge`` command
(``--cv`` report or ad-hoc judging).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import EmbeddingJudge, _hand_written_embeddings
from .features import JudgeModelMissingError
from .labels import LABELS, wilson_interval

__all__ = [
    "cross_validate_judge",
    "format_cv_markdown",
]


def cross_validate_judge(
    n_splits: int = 5,
    seed: int = 0,
    *,
    judge_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Stratified k-fold estimate of the :class:`EmbeddingJudge` on the shipped set.

    Why: the judge's labels feed quantitative claims ("steering turns 60 % of answers
    into ghosts"), so its error rates must be measured on held-out data, per label.
    The embedding model is frozen (not learned), so texts are embedded once up front;
    only the classifier is refitted inside each fold, which leaks nothing.

    Args:
        n_splits: number of folds.
        seed: shuffling seed of ``StratifiedKFold``.
        judge_params: keyword arguments for :class:`EmbeddingJudge` (e.g. ``{"C": 4}``).

    Returns:
        A JSON-serialisable dict with ``accuracy``, ``accuracy_ci95`` (Wilson),
        ``n``, ``n_splits``, ``seed``, ``labels``, ``per_label`` (``recall`` -- the
        per-label accuracy --, ``precision``, ``f1``, ``support`` for each label),
        ``macro`` averages, ``confusion_matrix`` (rows = true label, columns =
        predicted, both in :data:`LABELS` order) and ``errors`` (the misclassified
        texts with true and predicted label).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    texts, labels, emb = _hand_written_embeddings()
    y = np.asarray(labels)
    pred = np.empty(len(texts), dtype=object)
    # features are per-text and unlearned, so building the design matrix once is leak-free
    design = EmbeddingJudge(**dict(judge_params or {}))._design(emb, texts)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in skf.split(design, y):
        judge = EmbeddingJudge(**dict(judge_params or {}))._fit_design(design[train], y[train])
        proba = judge._proba_design(design[test])
        pred[test] = [LABELS[int(k)] for k in proba.argmax(axis=1)]

    labels_list = list(LABELS)
    prec, rec, f1, sup = precision_recall_fscore_support(
        y, pred.astype(str), labels=labels_list, zero_division=0
    )
    cm = confusion_matrix(y, pred.astype(str), labels=labels_list)
    n_correct = int((pred == y).sum())
    return {
        "n": len(texts),
        "n_splits": n_splits,
        "seed": seed,
        "labels": labels_list,
        "accuracy": n_correct / len(texts),
        "accuracy_ci95": list(wilson_interval(n_correct, len(texts))),
        "per_label": {
            lab: {
                "recall": float(rec[i]),
                "precision": float(prec[i]),
                "f1": float(f1[i]),
                "support": int(sup[i]),
            }
            for i, lab in enumerate(labels_list)
        },
        "macro": {
            "recall": float(np.mean(rec)),
            "precision": float(np.mean(prec)),
            "f1": float(np.mean(f1)),
        },
        "confusion_matrix": cm.astype(int).tolist(),
        "errors": [
            {"text": texts[i], "label": labels[i], "predicted": str(pred[i])}
            for i in range(len(texts))
            if pred[i] != labels[i]
        ],
    }


def format_cv_markdown(cv: Mapping[str, Any]) -> str:
    """Render :func:`cross_validate_judge` output as Markdown (per-label table + confusion matrix).

    Kept separate from the computation so the README table and the JSON artefact are
    guaranteed to come from the same numbers.
    """
    lo, hi = cv["accuracy_ci95"]
    lines = [
        f"Archetype judge, {cv['n_splits']}-fold stratified CV (seed {cv['seed']}, "
        f"n = {cv['n']}): accuracy **{cv['accuracy']:.3f}** (95 % Wilson CI {lo:.3f}-{hi:.3f})",
        "",
        "| label | support | recall | precision | F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for lab in cv["labels"]:
        m = cv["per_label"][lab]
        lines.append(
            f"| {lab} | {m['support']} | {m['recall']:.3f} | {m['precision']:.3f} | {m['f1']:.3f} |"
        )
    mac = cv["macro"]
    lines.append(
        f"| *macro avg* | {cv['n']} | {mac['recall']:.3f} | {mac['precision']:.3f} | {mac['f1']:.3f} |"
    )
    short = {
        "ai_assistant": "ai",
        "human": "hum",
        "historical_figure": "hist",
        "supernatural": "super",
        "cosmic_nature_object": "cosmic",
        "animal": "anim",
        "fantasy_creature": "fant",
        "incoherent": "incoh",
        "no_self": "none",
    }
    lines += [
        "",
        "Confusion matrix (rows = true, columns = predicted):",
        "",
        "| true \\ pred | " + " | ".join(short.get(lab, lab) for lab in cv["labels"]) + " |",
        "|---|" + "---:|" * len(cv["labels"]),
    ]
    for lab, row in zip(cv["labels"], cv["confusion_matrix"]):
        lines.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m persona_vectors.judge``: cross-validation report or ad-hoc judging.

    ``--cv`` prints the per-label Markdown table (for the README) and optionally writes
    the full result as JSON (``--json PATH``); positional texts are classified with the
    default embedding judge.
    """
    ap = argparse.ArgumentParser(prog="python -m persona_vectors.judge", description=main.__doc__)
    ap.add_argument("--cv", action="store_true", help="cross-validate the embedding judge on the shipped set")
    ap.add_argument("--json", metavar="PATH", help="also write the CV result as JSON to PATH")
    ap.add_argument("--splits", type=int, default=5, help="number of CV folds (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="CV shuffling seed (default 0)")
    ap.add_argument("--errors", action="store_true", help="also list misclassified texts")
    ap.add_argument("texts", nargs="*", help="texts to classify with EmbeddingJudge.default()")
    args = ap.parse_args(argv)
    if not args.cv and not args.texts:
        ap.print_help()
        return 2
    try:
        if args.cv:
            cv = cross_validate_judge(n_splits=args.splits, seed=args.seed)
            print(format_cv_markdown(cv))
            if args.errors:
                print("\nMisclassified (true -> predicted):")
                for e in cv["errors"]:
                    print(f"- {e['label']} -> {e['predicted']}: {e['text'][:120]!r}")
            if args.json:
                from .._infra.files import atomic_file

                out = Path(args.json)
                with atomic_file(out) as tmp:
                    tmp.write_text(json.dumps(cv, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                print(f"\n(wrote {out})", file=sys.stderr)
        if args.texts:
            for text, res in zip(args.texts, EmbeddingJudge.default().classify(args.texts)):
                print(f"{res.label}\t{res.scores[res.label]:.2f}\t{text}")
    except JudgeModelMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
