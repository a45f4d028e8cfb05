"""Confidence triage for the archetype judge: calibrate its threshold, then test it on new text (issue 13).

    python experiments/judge_triage.py calibrate               # the shipped threshold, from the two fresh tests
    python experiments/judge_triage.py draw                    # 360 new texts + blind shards for two readers
    python experiments/judge_triage.py import FILE --reader NAME --pass 1|2
    python experiments/judge_triage.py score [--replay]        # the verdict, report and every number

Plan: ``experiments/prereg/judge_triage.md`` (committed with the calibrated threshold, before any text is drawn).
No offline judge reaches 0.85 accuracy on real steered text, but the default judge is calibrated, so the texts it is
sure of may be labelled at that accuracy while a blind reader labels the rest
(:mod:`persona_vectors.judge.triage`).

- ``calibrate`` scores the shipped default judge on the 720 blind-labelled texts of the two fresh tests
  (``docs/data/judge_fresh*``; the judge was never fitted on them) and writes the smallest threshold whose covered
  texts reach 0.85 accuracy at the Wilson 95 % lower bound (``src/persona_vectors/data/judge_real/triage.json``).
- ``draw`` takes 360 texts used by no judge, hand-check or earlier test, with the fresh tests' design (240 of the
  first ghost/angel run, stratified by direction kind; 120 drift turns), and writes blind shards for two readers:
  reader A (pass 1) labels every text and is the reference; reader B (pass 2) labels every text too, and is the
  reader of the triage protocol (its labels are used on the texts the judge leaves to a reader).
- ``score`` applies the shipped judge and policy (nothing refitted), computes the plan's verdict with
  :func:`decide`, and writes ``docs/data/judge_triage/results.json`` and ``docs/judge_triage.md``; ``--replay``
  recomputes and fails on any difference.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import judge_fresh_test as F  # noqa: E402
import judge_fresh_test2 as F2  # noqa: E402

ROOT = F.ROOT
PLAN = "experiments/prereg/judge_triage.md"
DATA = ROOT / "docs" / "data" / "judge_triage"
TEXTS, LABELS_FILE, RESULTS = DATA / "texts.jsonl", DATA / "labels.jsonl", DATA / "results.json"
BLIND = ROOT / "runs" / "judge_triage"
REPORT = ROOT / "docs" / "judge_triage.md"
SOURCE = ROOT / "docs" / "data" / "assistant_axis_prereg" / "records.jsonl.gz"
SEED = 43
TARGET = 0.85
CALIBRATION_SETS = (F.DATA, F2.DATA)


def check_plan() -> dict[str, Any]:
    """The plan's numbers (its toml block); raises if this script's constants disagree with them."""
    from prereg_plan import read_plan

    from persona_vectors.judge.triage import TriagePolicy

    plan = read_plan(PLAN)
    mine = {"seed": SEED, "n_ghost_angel": sum(F.GHOST_ANGEL.values()), "n_drift": 8 * F.DRIFT_PER_CELL,
            "n_second_reader": 360, "target": TARGET, "threshold": TriagePolicy.default().threshold}
    bad = {k: (plan.get(k), v) for k, v in mine.items() if plan.get(k) != v}
    if bad:
        raise SystemExit(f"{PLAN} and this script disagree (plan, script): {bad}")
    return plan


# -- calibration ---------------------------------------------------------------------------------------------------
def calibration_texts() -> tuple[list[str], list[str]]:
    """The two fresh tests' texts and their pass-1 (reference) labels, in file order."""
    texts, labels = [], []
    for d in CALIBRATION_SETS:
        t, y, _, _ = F.labelled_texts(d / "texts.jsonl", d / "labels.jsonl")
        texts += [r["text"] for r in t]
        labels += y
    return texts, labels


def calibrate(check: bool = False) -> dict[str, Any]:
    """Fit the shipped threshold on the fresh tests' 720 texts and write ``triage.json`` (``check``: recompute and
    fail if the shipped file differs)."""
    from persona_vectors.io import atomic_file
    from persona_vectors.judge import EmbeddingJudge
    from persona_vectors.judge.embedding import _shipped_temperature, shipped_training_sha256
    from persona_vectors.judge.triage import TRIAGE_PATH, choose_threshold

    texts, labels = calibration_texts()
    proba = EmbeddingJudge.default().predict_proba(texts)
    chosen = choose_threshold(proba, labels, target=TARGET)
    policy = {"threshold": chosen["threshold"], "target": TARGET,
              "judge": "EmbeddingJudge.default() (the library's default judge)",
              "judge_training_sha256": shipped_training_sha256(), "judge_temperature": _shipped_temperature(False),
              "calibration": {"texts": [str(d.relative_to(ROOT)) for d in CALIBRATION_SETS],
                              "rule": f"smallest threshold on the grid whose covered texts' accuracy has a Wilson "
                                      f"95 % lower bound >= {TARGET}",
                              "script": "experiments/judge_triage.py calibrate", **chosen}}
    policy = json.loads(json.dumps(C.jsonable(policy)))
    if check:
        stored = json.loads(TRIAGE_PATH.read_text(encoding="utf-8"))
        if stored != policy:
            raise SystemExit(f"{TRIAGE_PATH} differs from the recomputed policy: rerun `calibrate`")
        C.say(f"{TRIAGE_PATH.name} is current (threshold {policy['threshold']})")
        return policy
    with atomic_file(TRIAGE_PATH) as tmp:
        tmp.write_text(json.dumps(policy, indent=1) + "\n")
    C.say(f"threshold {chosen['threshold']}: covers {chosen['covered']}/{chosen['n']} calibration texts, accuracy "
          f"{chosen['accuracy']:.3f} [{chosen['accuracy_ci95'][0]:.3f}, {chosen['accuracy_ci95'][1]:.3f}]; "
          f"wrote {TRIAGE_PATH}")
    return policy


# -- the test ------------------------------------------------------------------------------------------------------
def used_ids() -> set[str]:
    """Every text already used to train, tune, select, calibrate or test a judge: the second fresh test's exclusions
    plus its own texts."""
    return F2.used_ids() | {t["id"] for t in F.read_jsonl(F2.TEXTS)}


def draw() -> list[dict[str, Any]]:
    """Draw the plan's 360 texts (seeded) and the blind shards: reader A's 4 and reader B's 4 (another order)."""
    import records as RC

    check_plan()
    return F.draw_texts(RC.read_records(SOURCE), used_ids(), seed=SEED, source_name="ghost_angel_fp32",
                        texts_path=TEXTS, labels_path=LABELS_FILE, blind=BLIND, n_second=360, second_shards=4)


def import_labels(path: Path, reader: str, pass_no: int) -> int:
    """Validate and store a reader's labels for this test's texts."""
    return F.import_labels(path, reader, pass_no, texts=TEXTS, labels_file=LABELS_FILE)


def decide(covered_right: np.ndarray, target: float = TARGET) -> dict[str, Any]:
    """The plan's rule: TARGET MET if the judge's accuracy on the texts it keeps (reader A's labels) is at least
    ``target``; NOT MET otherwise. The Wilson 95 % interval is reported beside it, and whether its lower bound also
    clears the target."""
    from persona_vectors.stats import wilson

    k, n = int(covered_right.sum()), int(len(covered_right))
    w = wilson(k, n)
    return {"rule": f"covered accuracy (point estimate) >= {target}", "covered": n, "right": k,
            "accuracy": w.estimate, "accuracy_ci95": [w.lo, w.hi], "lower_bound_clears": bool(w.lo >= target),
            "verdict": "TARGET MET" if n and w.estimate >= target else "NOT MET"}


def tv(a: Sequence[str], b: Sequence[str]) -> float:
    """Total variation distance between two label distributions."""
    from persona_vectors.judge import LABELS

    ca, cb = Counter(a), Counter(b)
    return 0.5 * sum(abs(ca[x] / len(a) - cb[x] / len(b)) for x in LABELS)


def _targets(ev: dict[str, Any]) -> dict[str, Any]:
    pl = ev["per_label"]
    return {"accuracy": ev["accuracy"], "supernatural_precision": pl["supernatural"]["precision"],
            "supernatural_recall": pl["supernatural"]["recall"], "supernatural_support": pl["supernatural"]["support"],
            "incoherent_recall": pl["incoherent"]["recall"], "incoherent_support": pl["incoherent"]["support"]}


def score(replay: bool = False) -> dict[str, Any]:
    """The shipped judge and policy on the labelled new texts: the plan's numbers, its verdict and the report."""
    from persona_vectors.judge import LABELS, EmbeddingJudge, TriagePolicy, triage
    from persona_vectors.judge_validation import evaluate

    check_plan()
    texts, y, first, second = F.labelled_texts(TEXTS, LABELS_FILE)
    missing = [t["id"] for t in texts if t["id"] not in second]
    if missing:
        raise SystemExit(f"{len(missing)} texts have no pass-2 (reader B) label yet: import every pass-2 shard")
    judge = EmbeddingJudge.default()
    policy = TriagePolicy.default()
    tri = triage([t["text"] for t in texts], judge, policy=policy)
    proba = tri.proba
    onehot = np.eye(len(LABELS))
    kept = np.array([lab is not None for lab in tri.labels])
    yarr = np.array(y)
    right = np.array(tri.judge_labels) == yarr
    reader_b = [second[t["id"]] for t in texts]
    merged = tri.merge({i: reader_b[i] for i in tri.to_read})
    res: dict[str, Any] = {"plan": PLAN, "n": len(texts), "threshold": tri.threshold,
                           "calibration": {k: policy.calibration[k] for k in ("n", "covered", "coverage", "accuracy",
                                                                              "accuracy_ci95")},
                           "reader_label_counts": dict(Counter(y))}
    res["decision"] = decide(right[kept])
    res["coverage"] = float(kept.mean())
    res["judge_covered"] = evaluate(list(yarr[kept]), proba[kept])
    res["judge_all"] = evaluate(y, proba)
    res["protocol"] = evaluate(y, onehot[[LABELS.index(v) for v in merged]])
    res["reader_b_all"] = F.second_reader(texts, first, second)
    res["reader_b_on_read"] = evaluate(list(yarr[~kept]), onehot[[LABELS.index(reader_b[i]) for i in tri.to_read]])
    res["targets"] = {"protocol": _targets(res["protocol"]), "judge_covered": _targets(res["judge_covered"]),
                      "judge_all": _targets(res["judge_all"]),
                      "reader_b_all": _targets(res["reader_b_all"]["as_judge"])}
    by: dict[str, Any] = {}
    for key in sorted({f"{t['source']}/{t['stratum']}" if t["source"] != "drift" else "drift" for t in texts}):
        m = np.array([(f"{t['source']}/{t['stratum']}" if t["source"] != "drift" else "drift") == key for t in texts])
        by[key] = {"n": int(m.sum()), "coverage": float(kept[m].mean()),
                   "covered_accuracy": float(right[m & kept].mean()) if (m & kept).any() else None,
                   "protocol_accuracy": float((np.array(merged)[m] == yarr[m]).mean()),
                   "judge_accuracy": float(right[m].mean())}
    res["by_stratum"] = by
    judge_top = tri.judge_labels
    res["shares"] = {"tv_protocol": tv(merged, y), "tv_judge_argmax": tv(judge_top, y),
                     "tv_reader_b": tv(reader_b, y),
                     "counts": {lab: {"reader_a": y.count(lab), "protocol": merged.count(lab),
                                      "judge_argmax": judge_top.count(lab), "reader_b": reader_b.count(lab)}
                                for lab in LABELS}}
    res["sent_to_reader_by_reader_a_label"] = dict(Counter(yarr[~kept].tolist()))
    res["kept_by_reader_a_label"] = dict(Counter(yarr[kept].tolist()))
    return F.finish(res, replay, RESULTS, REPORT, report)


COMMITS: dict[str, str] = {"plan, threshold and code": "195db31", "texts": "5c69ee5", "labels": "07150d7"}
"""The commits that fixed the plan, the drawn texts and the blind labels (filled in as each lands)."""
DEVIATIONS: tuple[str, ...] = (
    "Reader A4 (pass 1, shard 4) reported that while it worked, a scratch file it kept in the shared /tmp was "
    "overwritten by another concurrent reader's label list, which it then saw printed beside its own texts. Its "
    "labels were already decided, and it rebuilt its output from its own list and checked each line against its "
    "text. The other list belonged to another shard (other texts or another order), so it carried no label of these "
    "texts by position. Not otherwise acted on; later readers should be given private scratch directories.",
)
"""Departures from the plan, recorded."""


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def report(res: dict[str, Any]) -> str:
    """The Markdown report, every number from the results dict."""
    d, cal = res["decision"], res["calibration"]
    commits = "; ".join(f"{k} {v}" for k, v in COMMITS.items()) or "see git log"
    t = res["targets"]
    lines = [
        "# Judge what the judge is sure of, read the rest: confidence triage on new text",
        "",
        f"Generated by `python experiments/judge_triage.py score` (plan: `{res['plan']}`; commits: {commits}; every "
        "number is in `docs/data/judge_triage/results.json`, the texts and labels beside it).",
        "",
        f"The default judge keeps its label when its top probability is at least **{res['threshold']}**; a blind "
        "reader labels every other text (`persona_vectors.judge.triage`). The threshold was fitted before this test "
        f"on the {cal['n']} blind-labelled texts of the two fresh tests, as the smallest whose covered texts reach "
        f"0.85 accuracy at the Wilson 95 % lower bound: there it kept {cal['covered']} texts "
        f"({cal['coverage']:.1%}) at accuracy {cal['accuracy']:.3f} [{cal['accuracy_ci95'][0]:.3f}, "
        f"{cal['accuracy_ci95'][1]:.3f}].",
        "",
        f"This test: {res['n']} new texts (240 generations of the first ghost/angel run, stratified by direction "
        "kind, and 120 drift turns), none used by any judge, hand-check, earlier test or the calibration. Two blind "
        "readers (new Claude subagents shown only shuffled texts and `docs/judge_rubric.md`) labelled every text: "
        "reader A is the reference, reader B is the protocol's reader.",
        "",
        "Why triage rather than a better judge: an exploration (not pre-registered) of a larger sentence embedder, "
        "the reader models' states and more real training data found nothing on course for 0.85 "
        "(`docs/judge_views_explore.md`).",
        "",
        f"**Verdict ({d['rule']}): {d['verdict']}** — the judge kept {d['covered']} of {res['n']} texts "
        f"(coverage {res['coverage']:.3f}) and was right on {d['right']}: accuracy {d['accuracy']:.3f} "
        f"[{d['accuracy_ci95'][0]:.3f}, {d['accuracy_ci95'][1]:.3f}]; the interval's lower bound "
        f"{'clears' if d['lower_bound_clears'] else 'does not clear'} 0.85.",
        "",
        "| against reader A | judge, kept texts | triage protocol (judge + reader B) | judge alone, all texts | "
        "reader B alone, all texts (the ceiling) | target |",
        "|---|---:|---:|---:|---:|---:|",
        f"| accuracy | {_f(t['judge_covered']['accuracy'])} (n = {d['covered']}) | {_f(t['protocol']['accuracy'])} "
        f"(n = {res['n']}) | {_f(t['judge_all']['accuracy'])} (n = {res['n']}) | {_f(t['reader_b_all']['accuracy'])} "
        "| ≥ 0.85 |",
    ]
    for key, name in (("supernatural_precision", "supernatural precision"), ("supernatural_recall",
                                                                               "supernatural recall"),
                      ("incoherent_recall", "incoherent recall")):
        sup = "incoherent_support" if key.startswith("incoherent") else "supernatural_support"
        lines.append(f"| {name} | {_f(t['judge_covered'][key])} (n = {t['judge_covered'][sup]}) | "
                     f"{_f(t['protocol'][key])} (n = {t['protocol'][sup]}) | {_f(t['judge_all'][key])} | "
                     f"{_f(t['reader_b_all'][key])} | ≥ 0.85 |")
    lines.append(f"| ECE | {_f(res['judge_covered']['ece'])} | – | {_f(res['judge_all']['ece'])} | – | |")
    rb = res["reader_b_all"]
    lines += [
        "",
        f"Reader A's labels: {', '.join(f'{k} {v}' for k, v in sorted(res['reader_label_counts'].items(), key=lambda kv: -kv[1]))}.",
        f"Texts the judge kept, by reader A's label: {dict(sorted(res['kept_by_reader_a_label'].items()))}; "
        f"sent to the reader: {dict(sorted(res['sent_to_reader_by_reader_a_label'].items()))}.",
        "",
        f"Reader B vs reader A on all {rb['n']} texts: agreement {rb['agreement']:.3f}, Cohen's κ {rb['kappa']:.3f}; "
        f"on the {res['reader_b_on_read']['n']} texts sent to reading, reader B's accuracy against A is "
        f"{res['reader_b_on_read']['accuracy']:.3f}. The protocol's accuracy is bounded by what two readers agree on.",
        "",
        "By stratum:",
        "",
        "| stratum | n | coverage | judge accuracy, kept | protocol accuracy | judge accuracy, all |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, v in res["by_stratum"].items():
        lines.append(f"| {k} | {v['n']} | {v['coverage']:.3f} | {_f(v['covered_accuracy'])} | "
                     f"{v['protocol_accuracy']:.3f} | {v['judge_accuracy']:.3f} |")
    s = res["shares"]
    lines += [
        "",
        f"Label shares against reader A's (total variation distance): protocol {s['tv_protocol']:.3f}, the judge's "
        f"argmax labels {s['tv_judge_argmax']:.3f}, reader B {s['tv_reader_b']:.3f}.",
        "",
        "| label | reader A | protocol | judge argmax | reader B |",
        "|---|---:|---:|---:|---:|",
    ]
    for lab, c in s["counts"].items():
        lines.append(f"| {lab} | {c['reader_a']} | {c['protocol']} | {c['judge_argmax']} | {c['reader_b']} |")
    lines += [""] + F.confusion_lines(res["judge_covered"], "judge on the texts it kept")
    lines += ["", "## Deviations from the plan", ""]
    lines += [f"- {x}" for x in DEVIATIONS] or ["None."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> Any:
    """CLI: calibrate [--check] / draw / import / score (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["calibrate"]:
        return calibrate(check="--check" in args[1:])
    return F.cli(__doc__, draw, import_labels, score, args)


if __name__ == "__main__":
    main()
