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

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import judge_fresh_test as F  # noqa: E402

ROOT = F.ROOT
PLAN = "experiments/prereg/judge_fresh_test2.md"
DATA = ROOT / "docs" / "data" / "judge_fresh2"
TEXTS, LABELS_FILE, RESULTS = DATA / "texts.jsonl", DATA / "labels.jsonl", DATA / "results.json"
BLIND = ROOT / "runs" / "judge_fresh2"
REPORT = ROOT / "docs" / "judge_fresh_test2.md"
SOURCE = ROOT / "docs" / "data" / "assistant_axis_prereg_bf16" / "records.jsonl.gz"
SEED = 29
COMMITS: dict[str, str] = {"plan and code": "56392a1", "texts": "3c178c0", "labels": "799e7b9"}
"""The commits that fixed the plan, the drawn texts and the blind labels (filled in as each lands; cited by the
report)."""
DEVIATIONS: tuple[str, ...] = ()
"""Departures from the plan, recorded."""


def check_plan() -> dict[str, Any]:
    """The plan's numbers (its toml block); raises if this script's constants disagree with them."""
    return F.check_plan(PLAN, SEED)


def used_ids() -> set[str]:
    """Ids of every text already used to train, tune, select or test a judge: the judges' corpus and hand-written
    set, the first fresh test's texts, and both ghost/angel runs' blind hand-checks."""
    import records as RC

    ids = F.corpus_ids() | {t["id"] for t in F.read_jsonl(F.TEXTS)}
    for run in ("assistant_axis_prereg", "assistant_axis_prereg_bf16"):
        ids |= {h["id"] for h in RC.of_kind(RC.read_records(ROOT / "docs" / "data" / run / "records.jsonl.gz"),
                                            "hand_label")}
    return ids


def draw() -> list[dict[str, Any]]:
    """Draw the plan's 360 texts (seeded), write them with their sources and the readers' blind shards."""
    import records as RC

    check_plan()
    return F.draw_texts(RC.read_records(SOURCE), used_ids(), seed=SEED, source_name="ghost_angel_bf16",
                        texts_path=TEXTS, labels_path=LABELS_FILE, blind=BLIND)


def import_labels(path: Path, reader: str, pass_no: int) -> int:
    """Validate and store a reader's labels for this test's texts (see the first test's ``import_labels``)."""
    return F.import_labels(path, reader, pass_no, texts=TEXTS, labels_file=LABELS_FILE)


def decide(right_ft: np.ndarray, right_frozen: np.ndarray, ece_ft: float, ece_frozen: float,
           alpha: float = F.ALPHA) -> dict[str, Any]:
    """The plan's rule. Exact two-sided McNemar on paired correctness (pass-1 labels): SWITCH if the frozen judge is
    right on more discordant texts with p < alpha, KEEP if the fine-tuned one is; otherwise the judge with the lower
    ECE (compared at three decimals) becomes or stays the default (``TIE -> CALIBRATION: SWITCH`` / ``... KEEP``).
    """
    from persona_vectors.stats import mcnemar_exact

    b = int((right_ft & ~right_frozen).sum())
    c = int((~right_ft & right_frozen).sum())
    p = mcnemar_exact(b, c)
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
    from persona_vectors.stats import mcnemar_exact

    check_plan()
    texts, y, first, second = F.labelled_texts(TEXTS, LABELS_FILE)
    judged, proba, right = F.judge_texts(texts, y, "ghost_angel_bf16/anti_axis")
    res: dict[str, Any] = {"plan": PLAN, "n": len(texts), "reader_label_counts": dict(Counter(y)), **judged}
    res["decision"] = decide(right["finetuned"], right["frozen"], res["finetuned"]["all"]["ece"],
                             res["frozen"]["all"]["ece"])
    res["second_reader"] = F.second_reader(texts, first, second)
    first_test = json.loads(F.RESULTS.read_text(encoding="utf-8"))["decision"]
    b = first_test["finetuned_only_right"] + res["decision"]["finetuned_only_right"]
    c = first_test["frozen_only_right"] + res["decision"]["frozen_only_right"]
    res["pooled_with_first_test"] = {"n": len(texts) + 360, "finetuned_only_right": b, "frozen_only_right": c,
                                     "p": mcnemar_exact(b, c),
                                     "note": "descriptive: the first test's result was seen before this plan"}
    res["shares"] = F.share_recovery(texts, y, proba, anti_name="ghost_angel_bf16/anti_axis")
    return F.finish(res, replay, RESULTS, REPORT, report)


def report(res: dict[str, Any]) -> str:
    """The Markdown report, every number from the results dict."""
    f, e, dec, sr, pool = (res["finetuned"], res["frozen"], res["decision"], res["second_reader"],
                           res["pooled_with_first_test"])

    acc = F.accuracy_cell

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
    lines += F.second_reader_lines(sr)
    lines += ["Shares as experiments report them vs the readers' shares (descriptive: computed by the script committed "
              "with the plan, not named in the plan; total variation distance; argmax counts / corrected with the "
              "judge's corpus confusion matrix):", ""]
    lines += F.share_table(res["shares"], ("supernatural",))
    for k, name in (("frozen", "frozen judge"), ("finetuned", "fine-tuned judge")):
        lines += [""] + F.confusion_lines(res[k]["all"], name)
    lines += ["", "## Deviations from the plan", ""]
    lines += [f"- {d}" for d in DEVIATIONS] or ["None."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> Any:
    """CLI: draw / import / score (see the module docstring)."""
    return F.cli(__doc__, draw, import_labels, score, argv)


if __name__ == "__main__":
    main()
