"""Validate the archetype judge where it is used: on real generations of the steered model (issue 13).

The shipped corpus (``data/judge_real/``) holds real SmolLM2 generations under the conditions the
experiments use (assistant axis, random and role-difference directions, role prompts, unsteered, small
finetunes; see ``experiments/judge_corpus.py``) and labels written by blind readers under
``docs/judge_rubric.md``. This module turns them into honest numbers:

- :func:`load_real_corpus`: one item per generation, with its label and its *units* — the steering direction
  (or prompt condition) and the question that produced it.
- :func:`crossed_group_cv`: repeated crossed grouped cross-validation. In every fold the directions and the
  questions are both split, the judge is fitted on the hand-written set plus real items whose direction *and*
  question are in the training part, and tested on items whose direction *and* question are both held out:
  no steering direction and no question is ever on both sides. Out-of-fold probabilities are averaged over
  repeats.
- :func:`evaluate`: accuracy (Wilson interval), per-label precision/recall/F1, the confusion matrix, expected
  calibration error and the reliability curve.
- :func:`validate_labelled_file`: the same report for any labelled JSONL of the user's (``persona-vectors
  judge validate --labelled FILE``).
- :func:`corrected_label_shares`: shares two ways — argmax counts, and expected counts from probabilities
  corrected with the judge's held-out confusion matrix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .judge import LABELS, VALIDATION_PATH, EmbeddingJudge, Embedder, FinetunedJudge, default_judge, load_labelled

REAL_DIR: Path = Path(__file__).resolve().parent / "data" / "judge_real"
"""The shipped corpus of real generations (``generations.jsonl``) and its labels (``labels.jsonl``)."""


class LabelledFileError(ValueError):
    """A labelled file is empty, malformed, or uses a label outside the judge's label set."""


@dataclass
class RealCorpus:
    """Labelled real generations with their units of analysis (one entry per generation)."""

    texts: list[str]
    labels: list[str]
    directions: list[str]
    questions: list[str]
    conditions: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def direction_unit(condition: Mapping[str, Any]) -> str:
    """The steering unit of a generation: the direction id, or the prompt/finetune condition that replaced it."""
    kind = condition.get("kind")
    if kind == "role_prompt":
        return f"role:{condition.get('role')}"
    if kind == "finetuned":
        return f"finetune:{condition.get('finetune')}"
    if kind == "unsteered":
        return "unsteered"
    return str(condition.get("direction"))


def load_real_corpus(directory: str | os.PathLike[str] | None = None, *, pass_no: int = 1) -> RealCorpus:
    """Join the corpus with one labelling pass (generations whose text is unlabelled in that pass are skipped)."""
    d = Path(directory) if directory is not None else REAL_DIR
    gens = [json.loads(line) for line in (d / "generations.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    labels_path = d / "labels.jsonl"
    if not labels_path.is_file():
        raise LabelledFileError(f"{labels_path} does not exist: label the corpus first (experiments/label_texts.py)")
    lab = {}
    for line in labels_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("pass") == pass_no:
                lab[r["id"]] = r["label"]
    out = RealCorpus([], [], [], [], [])
    for g in gens:
        if g["id"] in lab:
            c = g["condition"]
            out.texts.append(g["text"])
            out.labels.append(lab[g["id"]])
            out.directions.append(direction_unit(c))
            out.questions.append(str(c.get("question_id")))
            out.conditions.append(c)
    if not out.texts:
        raise LabelledFileError(f"no generation in {d} has a pass-{pass_no} label")
    return out


def crossed_folds(directions: Sequence[str], questions: Sequence[str], n_folds: int, rng: np.random.Generator
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(train_idx, test_idx)]``: directions and questions each assigned to folds; test = both in fold k,
    train = neither in fold k (items with exactly one unit in fold k sit the fold out)."""
    def assign(units: Sequence[str]) -> np.ndarray:
        levels = sorted(set(units))
        fold_of = dict(zip(levels, rng.permutation(len(levels)) % n_folds))
        return np.array([fold_of[u] for u in units])

    fd, fq = assign(directions), assign(questions)
    folds = []
    for k in range(n_folds):
        test = np.flatnonzero((fd == k) & (fq == k))
        train = np.flatnonzero((fd != k) & (fq != k))
        folds.append((train, test))
    return folds


def _top_label(proba: np.ndarray) -> list[str]:
    return [LABELS[int(k)] for k in proba.argmax(axis=1)]


def evaluate(labels: Sequence[str], proba: np.ndarray, *, n_bins: int = 10) -> dict[str, Any]:
    """Accuracy (Wilson 95 %), per-label precision/recall/F1/support, confusion matrix (rows = true), ECE and
    the reliability curve of the top-label probability. ``proba`` columns are in :data:`LABELS` order."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from .stats import ece, reliability_curve, wilson

    y = list(labels)
    pred = _top_label(proba)
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=list(LABELS), zero_division=0)
    k = sum(a == b for a, b in zip(y, pred))
    acc = wilson(k, len(y))
    curve = reliability_curve(proba, [LABELS.index(v) for v in y], n_bins=n_bins)
    return {
        "n": len(y),
        "accuracy": acc.estimate, "accuracy_ci95": [acc.lo, acc.hi],
        "per_label": {lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                            "support": int(sup[i])} for i, lab in enumerate(LABELS)},
        "confusion_matrix": confusion_matrix(y, pred, labels=list(LABELS)).astype(int).tolist(),
        "labels": list(LABELS),
        "ece": float(ece(proba, [LABELS.index(v) for v in y], n_bins=n_bins)),
        "reliability": curve.as_records(),
    }


def _design(judge: EmbeddingJudge, texts: Sequence[str], embedder: Embedder) -> np.ndarray:
    return judge._design(embedder.encode(list(texts)), list(texts))


def crossed_group_cv(corpus: Optional[RealCorpus] = None, *, n_folds: int = 3, repeats: int = 5, seed: int = 0,
                     judge_params: Optional[Mapping[str, Any]] = None, include_hand_written: bool = True
                     ) -> dict[str, Any]:
    """Held-out performance of the judge on real text (see the module docstring for the split).

    Returns :func:`evaluate` on the items that were tested at least once (out-of-fold probabilities averaged
    over repeats), plus ``coverage`` (share of items tested), the fold sizes and the out-of-fold probabilities
    themselves (``oof_proba``), which :func:`corrected_label_shares` uses as the judge's held-out behaviour.
    """
    corpus = corpus or load_real_corpus()
    params = dict(judge_params or {})
    embedder = Embedder()
    proto = EmbeddingJudge(**params)
    X = _design(proto, corpus.texts, embedder)
    y = np.asarray(corpus.labels)
    hand_X = hand_y = None
    if include_hand_written:
        ht, hl = load_labelled()
        hand_X, hand_y = _design(proto, ht, embedder), np.asarray(hl)
    rng = np.random.default_rng(seed)
    total = np.zeros((len(y), len(LABELS)))
    times = np.zeros(len(y))
    sizes = []
    for _ in range(repeats):
        for train, test in crossed_folds(corpus.directions, corpus.questions, n_folds, rng):
            if len(test) == 0:
                continue
            Xt, yt = X[train], y[train]
            if hand_X is not None:
                Xt, yt = np.vstack([hand_X, Xt]), np.concatenate([hand_y, yt])
            judge = EmbeddingJudge(**params)._fit_design(Xt, list(yt))
            total[test] += judge._proba_design(X[test])
            times[test] += 1
            sizes.append((len(train), len(test)))
            assert not (set(np.asarray(corpus.directions)[train]) & set(np.asarray(corpus.directions)[test]))
            assert not (set(np.asarray(corpus.questions)[train]) & set(np.asarray(corpus.questions)[test]))
    tested = np.flatnonzero(times > 0)
    oof = total[tested] / times[tested, None]
    res = evaluate(y[tested], oof)
    res.update({"coverage": len(tested) / len(y), "n_items": len(y), "n_folds": n_folds, "repeats": repeats,
                "seed": seed, "fold_sizes": sizes, "tested_index": tested.tolist(), "oof_proba": oof.tolist(),
                "split": "crossed grouped CV: no direction and no question in both train and test",
                "train": "hand-written set + real train folds" if include_hand_written else "real train folds"})
    return res


def hand_written_cv(n_splits: int = 5, seed: int = 0, *, include_real: bool = True,
                    judge_params: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Stratified CV on the hand-written set, with every real labelled item added to each training fold
    (the judge as shipped must still hold on the text it was first built on)."""
    from sklearn.model_selection import StratifiedKFold

    ht, hl = load_labelled()
    embedder = Embedder()
    proto = EmbeddingJudge(**dict(judge_params or {}))
    X, y = _design(proto, ht, embedder), np.asarray(hl)
    extra_X = extra_y = None
    if include_real:
        real = load_real_corpus()
        extra_X, extra_y = _design(proto, real.texts, embedder), np.asarray(real.labels)
    proba = np.zeros((len(y), len(LABELS)))
    for train, test in StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X, y):
        Xt, yt = X[train], y[train]
        if extra_X is not None:
            Xt, yt = np.vstack([Xt, extra_X]), np.concatenate([yt, extra_y])
        proba[test] = EmbeddingJudge(**dict(judge_params or {}))._fit_design(Xt, list(yt))._proba_design(X[test])
    return evaluate(list(y), proba)


def read_labelled_file(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from a JSONL of ``{"text", "label"}`` objects; every label must be in :data:`LABELS`."""
    from ._infra.files import jsonl_objects

    p = Path(path)
    texts, labels = [], []
    for i, row in jsonl_objects(p, '{"text": ..., "label": ...}', error=LabelledFileError):
        if not isinstance(row.get("text"), str) or "label" not in row:
            raise LabelledFileError(f"{p}:{i} needs a JSON object with a string \"text\" and a \"label\"")
        if row["label"] not in LABELS:
            raise LabelledFileError(f"{p}:{i}: label {row['label']!r} is not one of the judge's labels: "
                                    f"{', '.join(LABELS)}")
        texts.append(row["text"])
        labels.append(row["label"])
    if not texts:
        raise LabelledFileError(f"{p} holds no labelled texts: write one {{\"text\": ..., \"label\": ...}} object per line")
    return texts, labels


def validate_labelled_file(path: str | os.PathLike[str], judge: EmbeddingJudge | FinetunedJudge | None = None
                           ) -> dict[str, Any]:
    """:func:`evaluate` of ``judge`` (default: :func:`~persona_vectors.judge.default_judge`, the shipped frozen
    judge; any judge with ``predict_proba``) against a user's labelled JSONL."""
    texts, labels = read_labelled_file(path)
    judge = judge or default_judge()
    proba = judge.predict_proba(texts)
    res = evaluate(labels, proba)
    res["triage"] = triage_on(proba, labels)
    return res


def triage_on(proba: np.ndarray, labels: Sequence[str], target: float = 0.85) -> dict[str, Any]:
    """The triage threshold these labelled texts support (:func:`~persona_vectors.judge.triage.choose_threshold`,
    without its curve), or ``{"threshold": None, "reason": ...}`` when none reaches ``target``: what
    ``judge validate --labelled`` reports so a user can calibrate triage on their own model's text."""
    from .judge.triage import choose_threshold

    try:
        chosen = choose_threshold(proba, labels, target=target)
    except ValueError as err:
        return {"threshold": None, "target": target, "reason": str(err)}
    return {k: v for k, v in chosen.items() if k != "curve"}


def stored_held_out(source: str) -> dict[str, Any] | None:
    """The stored crossed-grouped-CV figures on real generations (an :func:`evaluate` result) of the shipped judge
    whose results carry ``source``, as its validation script wrote them; ``None`` for a judge the library has not
    validated (e.g. an :class:`~persona_vectors.judge.LLMJudge` or one you fitted).

    ``"embedding"`` and ``"embedding+reader"``: the frozen judge (the default, :func:`~persona_vectors.judge.default_judge`)
    and its reader variant (``docs/judge_validation.md``, rebuilt by ``experiments/judge_validation_report.py``);
    ``"finetuned"``: the fine-tuned judge (``docs/judge_finetuned.md``, ``experiments/judge_finetuned_cv.py``).

    Raises:
        OSError / ValueError / KeyError: the stored file is missing or not what its script writes.
    """
    where = _stored_location(source)
    if where is None:
        return None
    path, keys = where
    node: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    for k in keys:
        node = node[k]
    return node


def _stored_location(source: str) -> tuple[Path, tuple[str, ...]] | None:
    """The file and key path of :func:`stored_held_out`'s figures for ``source`` (``None``: not validated)."""
    from .judge.finetuned import FINETUNED_VALIDATION_PATH

    return {"finetuned": (FINETUNED_VALIDATION_PATH, ("finetuned", "real")),
            "embedding": (VALIDATION_PATH, ("crossed_cv",)),
            "embedding+reader": (VALIDATION_PATH, ("reader", "crossed_cv"))}.get(source)


def held_out_confusion(source: str) -> list[list[int]] | None:
    """The held-out confusion matrix on real generations (rows = reader's label, columns = judge, :data:`LABELS`
    order) of the shipped judge whose results carry ``source`` (:func:`stored_held_out`), for
    :func:`corrected_label_shares`; ``None`` for a judge the library has not validated.

    Each comes from crossed grouped CV, so it describes the shipped judge on text *like the shipped corpus*
    (SmolLM2 generations): on another model's text, validate first (``persona-vectors judge validate --labelled``).
    """
    node = stored_held_out(source)
    if node is None:
        return None
    if list(node["labels"]) != list(LABELS):
        raise ValueError(f"{_stored_location(source)[0]} stores a confusion matrix over {node['labels']}, not the "
                         f"judge's labels {LABELS}: rebuild it with its validation script")
    return [[int(v) for v in row] for row in node["confusion_matrix"]]


def corrected_label_shares(proba: np.ndarray, confusion: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Label shares of a set of generations, two ways: argmax counts, and probabilities corrected with the
    judge's held-out confusion matrix (rows = true label, columns = predicted, :data:`LABELS` order).

    Labels with no held-out items are dropped from the correction (their share stays the argmax share).
    """
    from .stats import corrected_shares

    proba = np.asarray(proba, dtype=float)
    counts = np.bincount(proba.argmax(axis=1), minlength=len(LABELS))
    C = np.asarray(confusion, dtype=float)
    keep = [i for i in range(len(LABELS)) if C[i].sum() > 0]
    conf = C[np.ix_(keep, keep)]
    conf = conf / conf.sum(axis=1, keepdims=True)
    observed = proba[:, keep].sum(axis=0)
    res = corrected_shares(observed, conf, labels=[LABELS[i] for i in keep])
    return {"n": int(len(proba)),
            "argmax": {lab: float(counts[i] / max(len(proba), 1)) for i, lab in enumerate(LABELS)},
            "corrected": res.as_dict(), "residual": float(res.residual)}


def format_validation_markdown(res: Mapping[str, Any], title: str) -> str:
    """Per-label table, confusion matrix and calibration of an :func:`evaluate` result, as Markdown."""
    lo, hi = res["accuracy_ci95"]
    lines = [f"{title}: accuracy **{res['accuracy']:.3f}** (95 % Wilson {lo:.3f}–{hi:.3f}, n = {res['n']}); "
             f"expected calibration error {res['ece']:.3f}", "",
             "| label | support | precision | recall | F1 |", "|---|---:|---:|---:|---:|"]
    for lab in res["labels"]:
        m = res["per_label"][lab]
        lines.append(f"| {lab} | {m['support']} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |")
    short = [lab[:6] for lab in res["labels"]]
    lines += ["", "Confusion matrix (rows = reader's label, columns = judge):", "",
              "| reader \\ judge | " + " | ".join(short) + " |", "|---|" + "---:|" * len(short)]
    for lab, row in zip(res["labels"], res["confusion_matrix"]):
        lines.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    tri = res.get("triage")
    if tri:
        lines.append("")
        if tri.get("threshold") is None:
            lines.append(f"Triage: no threshold keeps texts at {tri['target']} accuracy (Wilson lower bound) on these "
                         "texts; label them by reading.")
        else:
            a, (tlo, thi) = tri["accuracy"], tri["accuracy_ci95"]
            lines.append(f"Triage on these texts: `--threshold {tri['threshold']}` keeps {tri['covered']} of "
                         f"{tri['n']} ({tri['coverage']:.0%}) at accuracy {a:.3f} ({tlo:.3f}–{thi:.3f}); the "
                         "shipped threshold was calibrated on SmolLM2 text (docs/judge_triage.md).")
    return "\n".join(lines) + "\n"
