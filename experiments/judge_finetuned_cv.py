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
import gzip
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
RECORDS = ROOT / "docs" / "data" / "judge_finetuned" / "folds.jsonl.gz"
"""The default run's fold records (held-out indices and both judges' probabilities), committed compressed."""
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
    ap.add_argument("--replay", nargs="?", const=str(RECORDS), default=None, metavar="FOLDS_GZ",
                    help="recompute every number from the committed fold records (default: %(const)s) and fail on "
                         "any difference from the stored JSON; trains nothing")
    ap.add_argument("--write", action="store_true", help="with --replay: rewrite the JSON and the report instead")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from persona_vectors.io import atomic_file
    from persona_vectors.judge import Embedder, load_labelled
    from persona_vectors.judge.finetuned import FinetuneSettings
    from persona_vectors.judge_validation import REAL_DIR, load_real_corpus

    settings = FinetuneSettings(**json.loads(args.settings)) if args.settings else FinetuneSettings()
    corpus = load_real_corpus()
    ht, hl = load_labelled()
    json_path = Path(args.json) if args.json else REAL_DIR / "finetuned_validation.json"
    out_path = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    if args.replay is not None:
        return replay(Path(args.replay), json_path, out_path, corpus, hl, write=args.write)
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
    res = summarise(rows, corpus, hl, settings.__dict__, folds=args.folds, repeats=args.repeats, seed=args.seed,
                    n_planned=len(plan))
    if args.ship and res["complete"]:
        res["shipped"] = ship(settings, res["finetuned"]["temperature"])
    if res["complete"] and not args.json:  # the default run's records, committed beside its other runs' records
        RECORDS.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(RECORDS) as tmp:
            with gzip.open(tmp, "wt", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)
    write_outputs(res, json_path, out_path)
    C.say(f"decision: {res['decision']['verdict']} (gain {res['decision']['gain']:+.3f}); wrote {json_path}")
    return res


def summarise(rows: list[dict[str, Any]], corpus: Any, hl: list[str], settings: dict[str, Any], *, folds: int,
              repeats: int, seed: int, n_planned: int) -> dict[str, Any]:
    """Every reported number, from the fold records alone (the run and :func:`replay` both call this)."""
    from persona_vectors.judge import LABELS
    from persona_vectors.judge_validation import evaluate
    from persona_vectors.stats import ece

    import judge_validation_report as JV

    batch = np.array([int(c.get("batch", 1)) for c in corpus.conditions])
    drawn = np.array([str(c.get("drawn", "")) for c in corpus.conditions])
    res: dict[str, Any] = {"plan": "experiments/prereg/judge_finetuned.md", "settings": dict(settings),
                           "folds": folds, "repeats": repeats, "seed": seed,
                           "n_folds_done": len(rows), "n_folds_planned": n_planned,
                           "fit_seconds": [r["fit_seconds"] for r in rows]}
    tested_sets = {}
    for which in ("default", "finetuned"):
        tested, oof = pooled(rows, which, "real", len(corpus))
        htested, hoof = pooled(rows, which, "hand", len(hl))
        tested_sets[which] = (tested, oof)
        y_idx = np.array([LABELS.index(corpus.labels[i]) for i in tested])
        real = evaluate([corpus.labels[i] for i in tested], oof)
        res[which] = {
            "real": real, "hand_written": evaluate([hl[i] for i in htested], hoof),
            "by_batch": {str(k): evaluate([corpus.labels[i] for i in tested[m]], oof[m])
                         for k, m in JV.subsets(batch, tested, drawn).items()},
            "temperature": JV.fit_temperature(oof, y_idx), "ece_raw": float(ece(oof, y_idx)),
            "coverage": len(tested) / len(corpus), "hand_coverage": len(htested) / len(hl),
        }
    assert np.array_equal(tested_sets["default"][0], tested_sets["finetuned"][0])
    # paired comparison over the same held-out items: exact McNemar on the discordant pairs
    tested = tested_sets["default"][0]
    y = np.array([corpus.labels[i] for i in tested])
    right = {w: np.array([LABELS[int(k)] for k in tested_sets[w][1].argmax(axis=1)]) == y for w in tested_sets}
    b = int((right["finetuned"] & ~right["default"]).sum())
    c = int((~right["finetuned"] & right["default"]).sum())
    from persona_vectors.stats import mcnemar_exact

    res["paired"] = {"finetuned_only_right": b, "default_only_right": c, "mcnemar_exact_p": mcnemar_exact(b, c)}
    res["decision"] = decide(res["default"]["real"]["accuracy"], res["finetuned"]["real"]["accuracy"],
                             res["default"]["hand_written"]["accuracy"], res["finetuned"]["hand_written"]["accuracy"])
    res["complete"] = len(rows) == n_planned
    if not res["complete"]:  # the plan applies its rule only to a complete run
        res["decision"]["verdict"] = "INCOMPLETE"
    # exploratory, not in the plan (added after the run): the two judges' out-of-fold probabilities averaged
    ens = (tested_sets["default"][1] + tested_sets["finetuned"][1]) / 2
    res["exploratory"] = {"average_of_both_judges": evaluate(list(y), ens)}
    return res


def write_outputs(res: dict[str, Any], json_path: Path, out_path: Path) -> None:
    """Write the JSON of every number and the Markdown report, each atomically."""
    from persona_vectors.io import atomic_file

    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(C.jsonable(res), indent=1) + "\n")
    with atomic_file(out_path) as tmp:
        tmp.write_text(report(res))


def replay(records: Path, json_path: Path, out_path: Path, corpus: Any, hl: list[str], *,
           write: bool = False) -> dict[str, Any]:
    """Recompute every number from the committed fold records and compare it with the stored JSON (the shipped
    judge's figures are taken from the JSON: they come from the shipped fit, not from the folds). Raises
    ``SystemExit(1)`` naming the differing numbers, unless ``write`` rewrites the JSON and the report."""
    stored = json.loads(json_path.read_text(encoding="utf-8"))
    with gzip.open(records, "rt", encoding="utf-8") as fh:
        rows = [json.loads(x) for x in fh if x.strip()]
    res = summarise(rows, corpus, hl, stored["settings"], folds=stored["folds"], repeats=stored["repeats"],
                    seed=stored["seed"], n_planned=stored["n_folds_planned"])
    res["fit_seconds"] = [r["fit_seconds"] for r in rows]
    if "shipped" in stored:
        res["shipped"] = stored["shipped"]
    res = json.loads(json.dumps(C.jsonable(res)))
    if write:
        write_outputs(res, json_path, out_path)
        C.say(f"replayed {len(rows)} folds from {records}; rewrote {json_path} and {out_path}")
        return res
    import records as RC

    cmp = RC.compare(stored, res)
    if cmp["mismatches"]:
        print(f"replay of {records} differs from {json_path} in {len(cmp['mismatches'])} place(s):",
              *(f"{p}: stored {a!r}, recomputed {b!r}" for p, a, b in cmp["mismatches"][:20]), sep="\n  ")
        raise SystemExit(1)
    C.say(f"replayed {len(rows)} folds from {records}: all {cmp['n_numbers']} numbers equal {json_path}")
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


TARGETS = (
    ("accuracy, real text", lambda v: v["real"]["accuracy"], 0.85),
    ("supernatural precision", lambda v: v["real"]["per_label"]["supernatural"]["precision"], 0.85),
    ("supernatural recall", lambda v: v["real"]["per_label"]["supernatural"]["recall"], 0.85),
    ("incoherent recall", lambda v: v["real"]["per_label"]["incoherent"]["recall"], 0.85),
    ("accuracy, hand-written set", lambda v: v["hand_written"]["accuracy"], 0.90),
)
"""Issue 13's targets for the judge on held-out text: (name, getter on a judge's results, goal)."""


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
        "What the decision does: " + (
            "the fine-tuned judge is the library's default judge for new runs (`persona_vectors.judge.default_judge()`; "
            "the CLI's `sweep --judge`, `summarize --judge` and `judge validate`). Experiments committed before it keep "
            "the judge they were scored with (`EmbeddingJudge.default()`); switching theirs is a deviation their own "
            "plans must record." if dec["verdict"] == "ADOPT" else
            "the fine-tuned judge ships as an opt-in judge beside the default (`FinetunedJudge.default()`)."),
        "",
        "**Superseded on 2026-12-02.** Two pre-registered tests on fresh real text that no judge was selected on "
        "did not confirm this decision (`docs/judge_fresh_test.md`: NOT CONFIRMED; `docs/judge_fresh_test2.md`: equal "
        "accuracy, the frozen judge better calibrated, so by that plan's rule the default is the frozen "
        "`EmbeddingJudge` again; `persona_vectors.judge.DEFAULT_JUDGE_HISTORY`).",
        "",
        "Issue 13's targets, read off the same held-out numbers:",
        "",
        "| target | default | finetuned |",
        "|---|---:|---:|",
    ]
    for name, get, goal in TARGETS:
        a, b = get(d), get(f)
        lines.append(f"| {name} ≥ {goal:.2f} | {a:.3f} {'✅' if a >= goal else '❌'} | {b:.3f} {'✅' if b >= goal else '❌'} |")
    worse = [f"{lab} {k} {d['real']['per_label'][lab][k]:.3f} → {f['real']['per_label'][lab][k]:.3f}"
             for lab in f["real"]["labels"] for k in ("precision", "recall")
             if f["real"]["per_label"][lab]["support"] >= 10
             and f["real"]["per_label"][lab][k] < d["real"]["per_label"][lab][k] - 0.03]
    lines += ["", "Where the fine-tuned judge is worse than the default on real held-out text (labels with ≥ 10 "
              "held-out items, by more than 0.03): " + ("; ".join(worse) if worse else "nowhere") + ". "
              "A claim that rests on one of these labels should carry a blind reader's count beside the judge's."]
    if "exploratory" in res:
        e = res["exploratory"]["average_of_both_judges"]
        sp = e["per_label"]["supernatural"]
        lines += [
            "",
            f"*Exploratory, not in the plan (looked at after fold 0 of the run, computed from the same stored "
            f"out-of-fold probabilities):* averaging the two judges' probabilities gives held-out real accuracy "
            f"{e['accuracy']:.3f}, supernatural precision / recall {sp['precision']:.3f} / {sp['recall']:.3f}, "
            f"incoherent recall {e['per_label']['incoherent']['recall']:.3f}. No rule was set for it; a plan that "
            "wants it must test it on new folds or new text.",
        ]
    lines += [
        "",
        "Disclosures: the settings were chosen on a split of the hand-written set only (the plan lists the "
        "candidates); a one-epoch smoke test of the pipeline ran on real text before the plan was committed; "
        "after fold 0 finished, its figures were looked at (nothing was changed). Replay every number from the "
        "fold records: `python experiments/judge_finetuned_cv.py --replay` "
        "(records: `docs/data/judge_finetuned/folds.jsonl.gz`).",
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
