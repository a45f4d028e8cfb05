"""Which judge should be the library's default? A second fresh-text test, on new texts (issue 13).

    python experiments/judge_fresh_test2.py draw                 # the 360 new texts + blind reader shards
    python experiments/judge_fresh_test2.py import FILE --reader NAME --pass 1|2
    python experiments/judge_fresh_test2.py score [--replay]     # the verdict, report and every number

Plan: ``experiments/prereg/judge_fresh_test2.md`` (committed before any text was drawn, labelled or scored). The
first fresh test (``experiments/judge_fresh_test.py``) did not confirm the fine-tuned judge's adoption; this one
draws 360 texts that neither test, nor the judges' corpus, nor any hand-check has used -- 240 generations of the
second (bfloat16) ghost/angel run, stratified by direction kind as before, and 120 further drift turns -- and
decides the default with :func:`decide`: SWITCH to the frozen judge, KEEP the fine-tuned one, or, with no
significant difference in accuracy, take the better calibrated one.

Blind shards go to ``runs/judge_fresh2/``; texts, labels and results to ``docs/data/judge_fresh2/``; the report to
``docs/judge_fresh_test2.md``. ``score --replay`` recomputes every number and the report and fails on any
difference.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import judge_fresh_test as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAN = "experiments/prereg/judge_fresh_test2.md"
DATA = ROOT / "docs" / "data" / "judge_fresh2"
TEXTS, LABELS_FILE, RESULTS = DATA / "texts.jsonl", DATA / "labels.jsonl", DATA / "results.json"
BLIND = ROOT / "runs" / "judge_fresh2"
REPORT = ROOT / "docs" / "judge_fresh_test2.md"
SOURCE = ROOT / "docs" / "data" / "assistant_axis_prereg_bf16" / "records.jsonl.gz"
SEED = 29
GHOST_ANGEL = dict(F.GHOST_ANGEL)
"""Texts drawn from the bfloat16 ghost/angel run, per direction kind (240), as in the first test."""
DRIFT_PER_CELL = F.DRIFT_PER_CELL
N_SHARDS, N_SECOND = 4, 150
ALPHA = 0.05
COMMITS: dict[str, str] = {"plan and code": "56392a1", "texts": "3c178c0", "labels": "799e7b9"}
"""The commits that fixed the plan, the drawn texts and the blind labels (filled in as each lands; cited by the
report)."""
DEVIATIONS: tuple[str, ...] = ()
"""Departures from the plan, recorded."""


def check_plan() -> dict[str, Any]:
    """The plan's numbers (its toml block); raises if this script's constants disagree with them."""
    from prereg_plan import read_plan

    plan = read_plan(PLAN)
    mine = {"seed": SEED, "n_ghost_angel": sum(GHOST_ANGEL.values()), "n_drift": 8 * DRIFT_PER_CELL,
            "n_second_reader": N_SECOND, "alpha": ALPHA}
    bad = {k: (plan.get(k), v) for k, v in mine.items() if plan.get(k) != v}
    if bad:
        raise SystemExit(f"{PLAN} and this script disagree (plan, script): {bad}")
    return plan


def used_ids() -> set[str]:
    """Ids of every text already used to train, tune, select or test a judge: the judges' corpus and hand-written
    set, the first fresh test's texts, and both ghost/angel runs' blind hand-checks."""
    import records as RC
    from judge_corpus import text_id

    from persona_vectors.judge import load_labelled
    from persona_vectors.judge_validation import REAL_DIR

    ids = {g["id"] for g in F.read_jsonl(REAL_DIR / "generations.jsonl")} | {text_id(t) for t in load_labelled()[0]}
    ids |= {t["id"] for t in F.read_jsonl(F.TEXTS)}
    for run in ("assistant_axis_prereg", "assistant_axis_prereg_bf16"):
        ids |= {h["id"] for h in RC.of_kind(RC.read_records(ROOT / "docs" / "data" / run / "records.jsonl.gz"),
                                            "hand_label")}
    return ids


def draw() -> list[dict[str, Any]]:
    """Draw the plan's 360 texts (seeded), write them with their sources and the readers' blind shards."""
    import records as RC

    from persona_vectors.io import atomic_file

    check_plan()
    if LABELS_FILE.is_file():
        raise SystemExit(f"{LABELS_FILE} exists: labels were imported for this draw; drawing again would change "
                         "the texts under them")
    used = used_ids()
    rng = random.Random(SEED)
    gens = F._distinct(RC.of_kind(RC.read_records(SOURCE), "generation"), used)
    picked: list[dict[str, Any]] = []
    for kind, n in GHOST_ANGEL.items():
        pool = [g for g in gens if g["dkind"] == kind]
        for g in rng.sample(pool, n):
            picked.append({"id": g["id"], "text": g["text"], "source": "ghost_angel_bf16", "stratum": kind,
                           "direction": g["direction"], "level": g["level"], "question_id": g["question_id"]})
    taken = used | {p["id"] for p in picked}
    turns = F._distinct(RC.of_kind(RC.read_records(ROOT / "docs" / "data" / "drift" / "records.jsonl.gz"), "turn"),
                        taken)
    for cell in sorted({(t["condition"], t["conv_kind"]) for t in turns}):
        pool = [t for t in turns if (t["condition"], t["conv_kind"]) == cell]
        for t in rng.sample(pool, DRIFT_PER_CELL):
            picked.append({"id": t["id"], "text": t["text"], "source": "drift", "stratum": f"{cell[0]}/{cell[1]}",
                           "conv": t["conv"], "turn": t["turn"]})
    assert len({p["id"] for p in picked}) == len(picked)
    DATA.mkdir(parents=True, exist_ok=True)
    with atomic_file(TEXTS) as tmp:
        tmp.write_text("".join(json.dumps(p) + "\n" for p in picked))
    order = list(range(len(picked)))
    rng.shuffle(order)
    BLIND.mkdir(parents=True, exist_ok=True)
    for k in range(N_SHARDS):
        part = [picked[i] for i in order[k::N_SHARDS]]
        (BLIND / f"blind_pass1_{k + 1}of{N_SHARDS}.jsonl").write_text(
            "".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in part))
    second = sorted(rng.sample(order, N_SECOND), key=lambda i: rng.random())
    (BLIND / "blind_pass2.jsonl").write_text(
        "".join(json.dumps({"id": picked[i]["id"], "text": picked[i]["text"]}) + "\n" for i in second))
    C.say(f"drew {len(picked)} texts ({Counter(p['source'] for p in picked)}); blind shards in {BLIND}")
    return picked


def import_labels(path: Path, reader: str, pass_no: int) -> int:
    """Validate and store a reader's labels for this test's texts (see the first test's ``import_labels``)."""
    return F.import_labels(path, reader, pass_no, texts=TEXTS, labels_file=LABELS_FILE)


def decide(right_ft: np.ndarray, right_frozen: np.ndarray, ece_ft: float, ece_frozen: float,
           alpha: float = ALPHA) -> dict[str, Any]:
    """The plan's rule. Exact two-sided McNemar on paired correctness (pass-1 labels): SWITCH if the frozen judge is
    right on more discordant texts with p < alpha, KEEP if the fine-tuned one is; otherwise the judge with the lower
    ECE (compared at three decimals) becomes or stays the default (``TIE -> CALIBRATION: SWITCH`` / ``... KEEP``).
    """
    from scipy.stats import binomtest

    b = int((right_ft & ~right_frozen).sum())
    c = int((~right_ft & right_frozen).sum())
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    if c > b and p < alpha:
        verdict, default = "SWITCH", "frozen"
    elif b > c and p < alpha:
        verdict, default = "KEEP", "finetuned"
    elif round(ece_frozen, 3) < round(ece_ft, 3):
        verdict, default = "TIE -> CALIBRATION: SWITCH", "frozen"
    else:
        verdict, default = "TIE -> CALIBRATION: KEEP", "finetuned"
    return {"rule": f"exact two-sided McNemar on paired correctness, alpha {alpha}; no difference -> lower ECE",
            "finetuned_only_right": b, "frozen_only_right": c, "p": p,
            "gain_frozen": float(right_frozen.mean() - right_ft.mean()),
            "ece": {"finetuned": float(ece_ft), "frozen": float(ece_frozen)}, "verdict": verdict, "default": default}


def score(replay: bool = False) -> dict[str, Any]:
    """Both shipped judges on the labelled new texts: the plan's numbers, its verdict and the report."""
    import records as RC

    from persona_vectors.io import atomic_file
    from persona_vectors.judge import LABELS, EmbeddingJudge, FinetunedJudge
    from persona_vectors.judge_validation import evaluate
    from persona_vectors.stats import cohen_kappa

    check_plan()
    texts = F.read_jsonl(TEXTS)
    labels = F.read_jsonl(LABELS_FILE)
    first = {h["id"]: h["label"] for h in labels if h["pass"] == 1}
    second = {h["id"]: h["label"] for h in labels if h["pass"] == 2}
    missing = [t["id"] for t in texts if t["id"] not in first]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(texts)} texts have no pass-1 label yet (e.g. {missing[0]}): "
                         "import every shard first")
    y = [first[t["id"]] for t in texts]
    judges = {"finetuned": FinetunedJudge.default(), "frozen": EmbeddingJudge.default()}
    proba = {k: j.predict_proba([t["text"] for t in texts]) for k, j in judges.items()}
    res: dict[str, Any] = {"plan": PLAN, "n": len(texts), "reader_label_counts": dict(Counter(y))}
    right = {}
    for k, p in proba.items():
        pred = np.array([LABELS[int(i)] for i in p.argmax(axis=1)])
        right[k] = pred == np.array(y)
        by = {}
        for src in sorted({t["source"] for t in texts}):
            m = [i for i, t in enumerate(texts) if t["source"] == src]
            by[src] = evaluate([y[i] for i in m], p[m])
        anti = [i for i, t in enumerate(texts) if t.get("stratum") == "anti_axis"]
        by["ghost_angel_bf16/anti_axis"] = evaluate([y[i] for i in anti], p[anti])
        res[k] = {"all": evaluate(y, p), "by_source": by}
    res["decision"] = decide(right["finetuned"], right["frozen"], res["finetuned"]["all"]["ece"],
                             res["frozen"]["all"]["ece"])
    both = [t["id"] for t in texts if t["id"] in second]
    res["second_reader"] = {"n": len(both),
                            "agreement": float(np.mean([first[i] == second[i] for i in both])) if both else None,
                            "kappa": float(cohen_kappa([first[i] for i in both], [second[i] for i in both]))
                            if both else None}
    first_test = json.loads(F.RESULTS.read_text(encoding="utf-8"))["decision"]
    b = first_test["finetuned_only_right"] + res["decision"]["finetuned_only_right"]
    c = first_test["frozen_only_right"] + res["decision"]["frozen_only_right"]
    from scipy.stats import binomtest

    res["pooled_with_first_test"] = {"n": len(texts) + 360, "finetuned_only_right": b, "frozen_only_right": c,
                                     "p": float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0,
                                     "note": "descriptive: the first test's result was seen before this plan"}
    res["shares"] = F.share_recovery(texts, y, proba, anti_name="ghost_angel_bf16/anti_axis")
    res = json.loads(json.dumps(C.jsonable(res)))
    if replay:
        cmp = RC.compare(json.loads(RESULTS.read_text(encoding="utf-8")), res)
        if cmp["mismatches"]:
            print(f"replay differs from {RESULTS} in {len(cmp['mismatches'])} place(s):",
                  *(f"{p}: stored {a!r}, recomputed {b!r}" for p, a, b in cmp["mismatches"][:20]), sep="\n  ")
            raise SystemExit(1)
        if REPORT.read_text(encoding="utf-8") != report(res):
            print(f"{REPORT} differs from the report these results give: regenerate it with `score`")
            raise SystemExit(1)
        C.say(f"replayed: all {cmp['n_numbers']} numbers equal {RESULTS}, and {REPORT.name} is their report")
        return res
    with atomic_file(RESULTS) as tmp:
        tmp.write_text(json.dumps(res, indent=1) + "\n")
    with atomic_file(REPORT) as tmp:
        tmp.write_text(report(res))
    C.say(f"verdict: {res['decision']['verdict']} (default: {res['decision']['default']}); wrote {RESULTS} and "
          f"{REPORT}")
    return res


def report(res: dict[str, Any]) -> str:
    """The Markdown report, every number from the results dict."""
    f, e, dec, sr, pool = (res["finetuned"], res["frozen"], res["decision"], res["second_reader"],
                           res["pooled_with_first_test"])

    def acc(v: dict[str, Any]) -> str:
        lo, hi = v["accuracy_ci95"]
        return f"{v['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] (n = {v['n']})"

    cited = "; ".join(f"{k} {v}" for k, v in COMMITS.items())
    lines = [
        "# Which judge should be the default? A second fresh-text test",
        "",
        f"Generated by `python experiments/judge_fresh_test2.py score` (plan: `{res['plan']}`; commits: {cited}; every "
        "number is in `docs/data/judge_fresh2/results.json`, the texts and labels beside it).",
        "",
        f"{res['n']} texts that no judge was trained, tuned, selected or tested on: 240 generations of the second "
        "(bfloat16) ghost/angel run, stratified by direction kind (80 anti-axis), and 120 drift-conversation turns, "
        "none in the judges' corpus, either ghost/angel hand-check or the first fresh test. Labels: blind readers "
        "(new Claude subagents shown only shuffled texts and the rubric); a second, independent reader on "
        f"{sr['n']} of them. Both judges as shipped, not refitted.",
        "",
        "| | `FinetunedJudge` (default at the plan's commit) | `EmbeddingJudge` (frozen) | target |",
        "|---|---:|---:|---:|",
        f"| accuracy, all | {acc(f['all'])} | {acc(e['all'])} | ≥ 0.85 |",
    ]
    for src, name in (("ghost_angel_bf16", "ghost/angel run"), ("ghost_angel_bf16/anti_axis", "  of which anti-axis"),
                      ("drift", "drift turns")):
        lines.append(f"| accuracy, {name} | {acc(f['by_source'][src])} | {acc(e['by_source'][src])} | |")
    for name, get, goal in F.TARGETS[1:]:
        lines.append(f"| {name} | {get(f['all']):.3f} | {get(e['all']):.3f} | ≥ {goal:.2f} |")
    sup = f["all"]["per_label"]["supernatural"]["support"]
    lines += [
        f"| ECE | {f['all']['ece']:.3f} | {e['all']['ece']:.3f} | |",
        "",
        "Reader's labels: " + ", ".join(f"{k} {v}" for k, v in sorted(res["reader_label_counts"].items(),
                                                                        key=lambda kv: -kv[1]))
        + f" (supernatural n = {sup}).",
        "",
        f"**Verdict ({dec['rule']}): {dec['verdict']}** — the frozen judge alone right on {dec['frozen_only_right']} "
        f"texts, the fine-tuned judge alone on {dec['finetuned_only_right']} (p = {dec['p']:.3g}; accuracy difference "
        f"frozen − fine-tuned {dec['gain_frozen']:+.3f}; ECE {dec['ece']['frozen']:.3f} vs "
        f"{dec['ece']['finetuned']:.3f}). **Library default from this test: the "
        f"{'frozen `EmbeddingJudge`' if dec['default'] == 'frozen' else 'fine-tuned `FinetunedJudge`'}.**",
        "",
        f"Both fresh tests pooled ({pool['n']} texts; {pool['note']}): frozen alone right on "
        f"{pool['frozen_only_right']}, fine-tuned alone on {pool['finetuned_only_right']}, exact McNemar p = "
        f"{pool['p']:.3g}.",
        "",
        "Issue 13's targets on this text: " + "; ".join(
            f"{name} {get(e['all']):.3f} / {get(f['all']):.3f} {'met' if max(get(e['all']), get(f['all'])) >= goal else 'not met'}"
            for name, get, goal in F.TARGETS) + " (frozen / fine-tuned).",
        "",
    ]
    if sup < 20:
        lines += [f"Only {sup} of {res['n']} texts are supernatural by the first reader: the supernatural figures "
                  "rest on a handful of texts.", ""]
    if sr["n"]:
        lines += [f"Second reader vs first on {sr['n']} texts: agreement {sr['agreement']:.3f}, Cohen's κ "
                  f"{sr['kappa']:.3f}.", ""]
    lines += ["Shares as experiments report them vs the readers' shares (total variation distance; argmax counts / "
              "corrected with the judge's corpus confusion matrix):", "",
              "| texts | judge | TV argmax | TV corrected | supernatural: reader / argmax / corrected |",
              "|---|---|---:|---:|---:|"]
    for name, row in res["shares"].items():
        for k in ("finetuned", "frozen"):
            a, c = row[k]["argmax"], row[k]["corrected"]
            lines.append(f"| {name} (n = {row['n']}) | {k} | {a['tv_distance']:.3f} | {c['tv_distance']:.3f} | "
                         f"{row['reader']['supernatural']:.3f} / {a['shares']['supernatural']:.3f} / "
                         f"{c['shares']['supernatural']:.3f} |")
    for k, name in (("frozen", "frozen judge"), ("finetuned", "fine-tuned judge")):
        lines += ["", f"Confusion matrix of the {name} (rows = reader, columns = judge):", "",
                  "| reader \\ judge | " + " | ".join(lab[:6] for lab in res[k]["all"]["labels"]) + " |",
                  "|---|" + "---:|" * len(res[k]["all"]["labels"])]
        for lab, r in zip(res[k]["all"]["labels"], res[k]["all"]["confusion_matrix"]):
            lines.append(f"| {lab} | " + " | ".join(str(v) for v in r) + " |")
    lines += ["", "## Deviations from the plan", ""]
    lines += [f"- {d}" for d in DEVIATIONS] or ["None."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> Any:
    """CLI: draw / import / score (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("draw")
    p = sub.add_parser("import")
    p.add_argument("file", type=Path)
    p.add_argument("--reader", required=True)
    p.add_argument("--pass", dest="pass_no", type=int, choices=(1, 2), required=True)
    p = sub.add_parser("score")
    p.add_argument("--replay", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "draw":
        return draw()
    if args.cmd == "import":
        return import_labels(args.file, args.reader, args.pass_no)
    return score(replay=args.replay)


if __name__ == "__main__":
    main()
