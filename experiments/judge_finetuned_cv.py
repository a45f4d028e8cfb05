"""The fine-tuned judge against the default judge, on the same held-out real generations (issue 13).

    python experiments/judge_finetuned_cv.py [--repeats 2] [--folds 3] [--seed 0] [--threads 2] [--ship]

Plan: ``experiments/prereg/judge_finetuned.md`` (committed before this ran). For every fold of the crossed grouped
split of ``persona_vectors.judge_validation`` (no steering direction and no question on both sides; the same
folds, in the same order, as the first ``--repeats`` repeats of ``docs/judge_validation.md``), and a stratified
split of the hand-written set aligned with it (hand-written fold *k* is held out in crossed fold *k*), both judges
are trained on exactly the same texts and score exactly the same held-out texts:

- **default**: :class:`~persona_vectors.judge.EmbeddingJudge` (logistic regression on frozen MiniLM + features);
- **finetuned**: :class:`~persona_vectors.judge.FinetunedJudge` (LoRA on MiniLM + head, settings as shipped).

Each fold's out-of-fold probabilities are appended to ``runs/judge_finetuned_cv/folds.jsonl`` as it finishes, so a
stopped run resumes where it was (a fold takes minutes). The report (``docs/judge_finetuned.md``) and every number
(``src/persona_vectors/data/judge_real/finetuned_validation.json``) are computed from that file; the decision is
computed by :func:`decide` from the plan's rule. ``--ship`` then fits the fine-tuned judge on everything shipped,
with the temperature fitted on its out-of-fold predictions, and writes it where
:meth:`FinetunedJudge.default` loads it; it is also scored on the first ghost/angel run's 120 blind hand-check
texts (never in any training set).
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
RUN_DIR = ROOT / "runs" / "judge_finetuned_cv"
MARGIN = 0.03
"""The plan's margin: the fine-tuned judge must beat the default's pooled held-out accuracy by this much."""


def folds_for(corpus: Any, n_hand: list[str], n_folds: int, repeats: int, seed: int
              ) -> list[dict[str, Any]]:
    """Every (repeat, fold): real train/test indices (crossed grouped, the validation report's rng sequence) and
    hand-written train/test indices (stratified, seeded per repeat)."""
    from sklearn.model_selection import StratifiedKFold

    from persona_vectors.judge_validation import crossed_folds

    rng = np.random.default_rng(seed)
    out = []
    for r in range(repeats):
        real = crossed_folds(corpus.directions, corpus.questions, n_folds, rng)
        hand = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed + r).split(
            np.zeros(len(n_hand)), n_hand))
        for k in range(n_folds):
            (rtr, rte), (htr, hte) = real[k], hand[k]
            out.append({"repeat": r, "fold": k, "real_train": rtr.tolist(), "real_test": rte.tolist(),
                        "hand_train": htr.tolist(), "hand_test": hte.tolist()})
    return out


def run_fold(f: dict[str, Any], corpus: Any, ht: list[str], hl: list[str], emb_real: np.ndarray,
             emb_hand: np.ndarray, settings: Any) -> dict[str, Any]:
    """Fit both judges on the fold's training texts; their probabilities on the fold's held-out texts."""
    from persona_vectors.judge import EmbeddingJudge
    from persona_vectors.judge.finetuned import FinetunedJudge

    rtr, rte, htr, hte = (np.asarray(f[k], dtype=int) for k in ("real_train", "real_test", "hand_train", "hand_test"))
    texts = [ht[i] for i in htr] + [corpus.texts[i] for i in rtr]
    labels = [hl[i] for i in htr] + [corpus.labels[i] for i in rtr]
    test_texts = [corpus.texts[i] for i in rte] + [ht[i] for i in hte]

    lr = EmbeddingJudge()
    design_train = lr._design(np.vstack([emb_hand[htr], emb_real[rtr]]), texts)
    lr._fit_design(design_train, labels)
    p_lr = lr._proba_design(lr._design(np.vstack([emb_real[rte], emb_hand[hte]]), test_texts))

    t0 = time.time()
    ft = FinetunedJudge(settings).fit(texts, labels)
    p_ft = ft.predict_proba(test_texts)
    n = len(rte)
    return {**{k: f[k] for k in ("repeat", "fold", "real_test", "hand_test")}, "n_train": len(texts),
            "fit_seconds": time.time() - t0,
            "default": {"real": p_lr[:n].tolist(), "hand": p_lr[n:].tolist()},
            "finetuned": {"real": p_ft[:n].tolist(), "hand": p_ft[n:].tolist()}}


def pooled(rows: list[dict[str, Any]], which: str, part: str, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities averaged over the folds that tested each item: (tested index, probabilities)."""
    from persona_vectors.judge import LABELS

    total = np.zeros((n_items, len(LABELS)))
    times = np.zeros(n_items)
    key = "real_test" if part == "real" else "hand_test"
    for row in rows:
        idx = np.asarray(row[key], dtype=int)
        if len(idx):
            total[idx] += np.asarray(row[which][part])
            times[idx] += 1
    tested = np.flatnonzero(times > 0)
    return tested, total[tested] / times[tested, None]


def decide(acc_default: float, acc_finetuned: float, hand_default: float, hand_finetuned: float,
           margin: float = MARGIN) -> dict[str, Any]:
    """The plan's rule: ADOPT the fine-tuned judge as the default for future runs iff its pooled held-out accuracy
    on real text is at least ``margin`` above the default judge's on the same items *and* its held-out accuracy on
    the hand-written set is not below the default's; otherwise KEEP."""
    gain = acc_finetuned - acc_default
    ok_real = gain >= margin - 1e-12
    ok_hand = hand_finetuned >= hand_default - 1e-12
    return {"rule": f"accuracy gain >= {margin:.2f} on real held-out text and hand-written accuracy not lower",
            "gain": gain, "real_ok": bool(ok_real), "hand_ok": bool(ok_hand),
            "verdict": "ADOPT" if ok_real and ok_hand else "KEEP"}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run (or resume) the folds, then write the JSON and the Markdown report (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run-dir", default=str(RUN_DIR))
    ap.add_argument("--out", default="docs/judge_finetuned.md")
    ap.add_argument("--json", default=None, help="default: finetuned_validation.json beside the shipped corpus")
    ap.add_argument("--limit-folds", type=int, default=None, help="run at most this many new folds (tests)")
    ap.add_argument("--settings", default=None, help="JSON of FinetuneSettings overrides (tests; the plan uses none)")
    ap.add_argument("--ship", action="store_true", help="then fit on everything shipped and write the shipped judge")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from persona_vectors.judge import LABELS, Embedder, load_labelled
    from persona_vectors.judge.finetuned import FinetuneSettings
    from persona_vectors.judge_validation import REAL_DIR, evaluate, load_real_corpus
    from persona_vectors.io import atomic_file
    from persona_vectors.stats import ece

    import judge_validation_report as JV

    settings = FinetuneSettings(**json.loads(args.settings)) if args.settings else FinetuneSettings()
    corpus = load_real_corpus()
    ht, hl = load_labelled()
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "folds.jsonl"
    done = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.is_file() else []
    done_keys = {(d["repeat"], d["fold"]) for d in done}
    plan = folds_for(corpus, hl, args.folds, args.repeats, args.seed)
    todo = [f for f in plan if (f["repeat"], f["fold"]) not in done_keys]
    if args.limit_folds is not None:
        todo = todo[:args.limit_folds]
    if todo:
        C.say(f"embedding {len(corpus)} real + {len(ht)} hand-written texts")
        emb = Embedder()
        emb_real, emb_hand = emb.encode(corpus.texts), emb.encode(ht)
        for f in todo:
            C.say(f"repeat {f['repeat']} fold {f['fold']}: {len(f['real_train'])} real + {len(f['hand_train'])} "
                  f"hand-written to train, {len(f['real_test'])} real + {len(f['hand_test'])} hand-written held out")
            row = run_fold(f, corpus, ht, hl, emb_real, emb_hand, settings)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            done.append(row)
            C.say(f"  fitted in {row['fit_seconds']:.0f} s")
    rows = [d for d in done if d["repeat"] < args.repeats and d["fold"] < args.folds]

    batch = np.array([int(c.get("batch", 1)) for c in corpus.conditions])
    drawn = np.array([str(c.get("drawn", "")) for c in corpus.conditions])
    res: dict[str, Any] = {"plan": "experiments/prereg/judge_finetuned.md", "settings": settings.__dict__,
                           "folds": args.folds, "repeats": args.repeats, "seed": args.seed,
                           "n_folds_done": len(rows), "n_folds_planned": len(plan),
                           "fit_seconds": [r["fit_seconds"] for r in rows]}
    tested_sets = {}
    for which in ("default", "finetuned"):
        tested, oof = pooled(rows, which, "real", len(corpus))
        htested, hoof = pooled(rows, which, "hand", len(ht))
        tested_sets[which] = (tested, oof)
        y_idx = np.array([LABELS.index(corpus.labels[i]) for i in tested])
        real = evaluate([corpus.labels[i] for i in tested], oof)
        res[which] = {
            "real": real, "hand_written": evaluate([hl[i] for i in htested], hoof),
            "by_batch": {str(k): evaluate([corpus.labels[i] for i in tested[m]], oof[m])
                         for k, m in JV.subsets(batch, tested, drawn).items()},
            "temperature": JV.fit_temperature(oof, y_idx), "ece_raw": float(ece(oof, y_idx)),
            "coverage": len(tested) / len(corpus), "hand_coverage": len(htested) / len(ht),
        }
    assert np.array_equal(tested_sets["default"][0], tested_sets["finetuned"][0])
    # paired comparison over the same held-out items: exact McNemar on the discordant pairs
    tested = tested_sets["default"][0]
    y = np.array([corpus.labels[i] for i in tested])
    right = {w: np.array([LABELS[int(k)] for k in tested_sets[w][1].argmax(axis=1)]) == y for w in tested_sets}
    b = int((right["finetuned"] & ~right["default"]).sum())
    c = int((~right["finetuned"] & right["default"]).sum())
    from scipy.stats import binomtest

    res["paired"] = {"finetuned_only_right": b, "default_only_right": c,
                     "mcnemar_exact_p": float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0}
    res["decision"] = decide(res["default"]["real"]["accuracy"], res["finetuned"]["real"]["accuracy"],
                             res["default"]["hand_written"]["accuracy"], res["finetuned"]["hand_written"]["accuracy"])
    res["complete"] = len(rows) == len(plan)
    if not res["complete"]:  # the plan applies its rule only to a complete run
        res["decision"]["verdict"] = "INCOMPLETE"

    if args.ship and res["complete"]:
        res["shipped"] = ship(settings, res["finetuned"]["temperature"])
    json_path = Path(args.json) if args.json else REAL_DIR / "finetuned_validation.json"
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(C.jsonable(res), indent=1) + "\n")
    with atomic_file(ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)) as tmp:
        tmp.write_text(report(res))
    C.say(f"decision: {res['decision']['verdict']} (gain {res['decision']['gain']:+.3f}); wrote {json_path}")
    return res


def ship(settings: Any, temperature: float) -> dict[str, Any]:
    """Fit the fine-tuned judge on everything shipped, with the held-out temperature, save it where
    :meth:`FinetunedJudge.default` loads it, and score it on the first ghost/angel run's blind hand-check."""
    from persona_vectors.judge import embedding as E
    from persona_vectors.judge import finetuned as F
    from persona_vectors.judge_validation import evaluate

    import judge_validation_report as JV
    import records as RC
    from judge_corpus import text_id

    texts, labels, _ = E._shipped_embeddings()
    C.say(f"shipping: fitting the fine-tuned judge on all {len(texts)} shipped texts")
    t0 = time.time()
    judge = F.FinetunedJudge(settings, temperature=temperature, progress=True).fit(texts, labels)
    path = judge.save(F.FINETUNED_JUDGE_PATH, training_sha256=E.shipped_training_sha256(),
                      source="experiments/judge_finetuned_cv.py --ship", n_train=len(texts))
    F._DEFAULT[0] = None
    recs = RC.read_records(ROOT / "docs" / "data" / "assistant_axis_prereg" / "records.jsonl.gz")
    gens = {text_id(g["text"]): g["text"] for g in RC.of_kind(recs, "generation")}
    hand = RC.of_kind(recs, "hand_label")
    check = evaluate([h["label"] for h in hand], judge.predict_proba([gens[h["id"]] for h in hand]))
    default_check = JV.hand_check_accuracy(False)
    return {"path": str(path.relative_to(ROOT)), "fit_seconds": time.time() - t0, "n_train": len(texts),
            "ghost_angel_hand_check": check, "ghost_angel_hand_check_default": default_check}


def report(res: dict[str, Any]) -> str:
    """The Markdown report from the result dict (every number comes from it)."""
    d, f = res["default"], res["finetuned"]

    def row(name: str, get: Any, fmt: str = "{:.3f}") -> str:
        return f"| {name} | {fmt.format(get(d))} | {fmt.format(get(f))} |"

    def pl(lab: str, key: str) -> Any:
        return lambda v: v["real"]["per_label"][lab][key]

    s = res["settings"]
    dec = res["decision"]
    lines = [
        "# A fine-tuned judge, against the default, on held-out real generations",
        "",
        "Generated by `python experiments/judge_finetuned_cv.py` (plan: `experiments/prereg/judge_finetuned.md`, "
        "committed before the run; every number is in `src/persona_vectors/data/judge_real/finetuned_validation.json`).",
        "",
        f"Both judges were trained on exactly the same texts and scored on exactly the same held-out texts in each of "
        f"{res['n_folds_done']} folds ({res['repeats']} repeats × {res['folds']} folds of the crossed grouped split: no "
        f"steering direction and no question on both sides; hand-written fold *k* held out in fold *k*). Real items "
        f"tested at least once: {f['coverage']:.0%}; hand-written: {f['hand_coverage']:.0%}."
        + ("" if res["complete"] else f" **Incomplete: {res['n_folds_done']} of {res['n_folds_planned']} folds.**"),
        "",
        f"- **default**: `EmbeddingJudge` (logistic regression on the frozen MiniLM embedding + text features).",
        f"- **finetuned**: `FinetunedJudge`: LoRA (rank {s['rank']}, α {s['alpha']}) on every linear layer of "
        f"MiniLM + a linear head, {s['epochs']} epochs, lr {s['lr']:g}, batch {s['batch_size']}, class-balanced loss; "
        f"median fit {np.median(res['fit_seconds']):.0f} s per fold on 2 CPU threads.",
        "",
        "| held out | default | finetuned |",
        "|---|---:|---:|",
        row("accuracy, real text (pooled)", lambda v: v["real"]["accuracy"]),
    ]
    for key, name in (("1", "batch 1 (the experiments' conditions)"), ("2", "batch 2 (rare archetypes)"),
                      ("3", "batch 3 (ghost/angel run)"), ("3u", "batch 3 uniform")):
        if key in d["by_batch"]:
            lines.append(row(f"accuracy, {name}", lambda v, k=key: v["by_batch"][k]["accuracy"]))
    lines += [
        row("supernatural precision", pl("supernatural", "precision")),
        row("supernatural recall", pl("supernatural", "recall")),
        row("incoherent recall", pl("incoherent", "recall")),
        row("human recall", pl("human", "recall")),
        row("no_self recall", pl("no_self", "recall")),
        row("accuracy, hand-written set (held-out folds)", lambda v: v["hand_written"]["accuracy"]),
        row("ECE raw", lambda v: v["ece_raw"]),
        row("temperature (fitted on all out-of-fold)", lambda v: v["temperature"], "{:.2f}"),
    ]
    if "shipped" in res:
        sh = res["shipped"]
        lines.append(f"| the first ghost/angel run's blind hand-check (n = {sh['ghost_angel_hand_check']['n']}; "
                     f"shipped judges, never trained on it) | {sh['ghost_angel_hand_check_default']['accuracy']:.3f} | "
                     f"{sh['ghost_angel_hand_check']['accuracy']:.3f} |")
    p = res["paired"]
    lines += [
        "",
        f"Paired over the same held-out real items: the fine-tuned judge alone is right on {p['finetuned_only_right']}, "
        f"the default alone on {p['default_only_right']} (exact McNemar p = {p['mcnemar_exact_p']:.3g}).",
        "",
        f"**Decision ({dec['rule']}): {dec['verdict']}** — gain {dec['gain']:+.3f}; real-text condition "
        f"{'met' if dec['real_ok'] else 'not met'}, hand-written condition {'met' if dec['hand_ok'] else 'not met'}.",
        "",
        "Issue 13's targets (accuracy ≥ 0.85, supernatural precision and recall ≥ 0.85, incoherent recall ≥ 0.85, "
        "hand-written ≥ 0.90) are read off the same table.",
        "",
        "Confusion matrix of the fine-tuned judge on real held-out text (rows = reader's label, columns = judge):",
        "",
    ]
    labels = f["real"]["labels"]
    lines.append("| reader \\ judge | " + " | ".join(lab[:6] for lab in labels) + " |")
    lines.append("|---|" + "---:|" * len(labels))
    for lab, r in zip(labels, f["real"]["confusion_matrix"]):
        lines.append(f"| {lab} | " + " | ".join(str(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
