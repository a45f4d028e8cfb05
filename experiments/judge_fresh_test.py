"""Both shipped judges on fresh real text that no judge was trained, tuned or selected on (issue 13).

    python experiments/judge_fresh_test.py draw                 # the 360 texts + blind reader shards
    python experiments/judge_fresh_test.py import FILE --reader NAME --pass 1|2
    python experiments/judge_fresh_test.py score [--replay]     # the verdict, report and every number

Plan: ``experiments/prereg/judge_fresh_test.md`` (committed before any label was imported or any text scored).
The crossed grouped CV that adopted the fine-tuned judge (``docs/judge_finetuned.md``) held out directions and
questions, but every design choice was made on the same corpus. This test draws new texts from two committed
experiments' per-generation records that are not in the judge's corpus:

- 240 generations of the *first* (float32) pre-registered ghost/angel run (``docs/data/assistant_axis_prereg``;
  the judge corpus's batch 3 came from the second, bfloat16 run), stratified by direction kind, excluding its
  120 blind hand-check texts (already used to compare the judges) and any text in the corpus;
- 120 conversation turns of the drift experiment (``docs/data/drift``), 15 per (capping, conversation kind).

``draw`` writes them with their source (``docs/data/judge_fresh/texts.jsonl``) and, for the readers, shuffled
``{"id", "text"}`` shards with nothing else (``runs/judge_fresh/blind_*.jsonl``). Readers label under
``docs/judge_rubric.md``; ``import`` validates and stores labels keyed by text id
(``docs/data/judge_fresh/labels.jsonl``), a second pass beside the first. ``score`` applies both shipped judges
(neither is refitted), computes the plan's verdict with :func:`decide`, and writes
``docs/data/judge_fresh/results.json`` and ``docs/judge_fresh_test.md``; ``--replay`` recomputes and fails
on any difference from the stored results.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAN = "experiments/prereg/judge_fresh_test.md"
DATA = ROOT / "docs" / "data" / "judge_fresh"
TEXTS, LABELS_FILE, RESULTS = DATA / "texts.jsonl", DATA / "labels.jsonl", DATA / "results.json"
BLIND = ROOT / "runs" / "judge_fresh"
REPORT = ROOT / "docs" / "judge_fresh_test.md"
SEED = 13
GHOST_ANGEL = {"anti_axis": 80, "pro_axis": 20, "unsteered": 10, "random": 70, "role_pair": 60}
"""Texts drawn from the float32 ghost/angel run, per direction kind (240)."""
DRIFT_PER_CELL = 15
"""Turns drawn from the drift run per (condition, conversation kind): 2 × 4 cells × 15 = 120."""
N_SHARDS, N_SECOND = 4, 150
REPLAY_REL, REPLAY_ABS = 1e-5, 1e-6
"""Relative tolerance of a replay's floats (judge probabilities vary in the last float32 bits across CPUs)."""
ALPHA = 0.05


def _distinct(rows: Sequence[dict[str, Any]], exclude: set[str]) -> list[dict[str, Any]]:
    """Rows whose text is new (not in ``exclude``, first occurrence only), in their stored order."""
    from judge_corpus import text_id

    out, seen = [], set(exclude)
    for r in rows:
        i = text_id(r["text"])
        if r["text"].strip() and i not in seen:
            seen.add(i)
            out.append({**r, "id": i})
    return out


def check_plan(plan_path: str = PLAN, seed: int = SEED) -> dict[str, Any]:
    """The plan's numbers (its toml block); raises if this script's constants disagree with them. Both fresh tests
    share the design (strata, drift cells, second-reader n, alpha); each has its own plan and seed."""
    from prereg_plan import read_plan

    plan = read_plan(plan_path)
    mine = {"seed": seed, "n_ghost_angel": sum(GHOST_ANGEL.values()), "n_drift": 8 * DRIFT_PER_CELL,
            "n_second_reader": N_SECOND, "alpha": ALPHA}
    bad = {k: (plan.get(k), v) for k, v in mine.items() if plan.get(k) != v}
    if bad:
        raise SystemExit(f"{plan_path} and this script disagree (plan, script): {bad}")
    return plan


def corpus_ids() -> set[str]:
    """Ids of the texts the judges were trained on: the labelled real generations and the hand-written set."""
    from judge_corpus import text_id

    from persona_vectors.judge import load_labelled
    from persona_vectors.judge_validation import REAL_DIR

    return {g["id"] for g in read_jsonl(REAL_DIR / "generations.jsonl")} | {text_id(t) for t in load_labelled()[0]}


def draw() -> list[dict[str, Any]]:
    """Draw the plan's 360 texts (seeded), write them with their sources and the readers' blind shards."""
    import records as RC

    check_plan()
    recs = RC.read_records(ROOT / "docs" / "data" / "assistant_axis_prereg" / "records.jsonl.gz")
    hand = {h["id"] for h in RC.of_kind(recs, "hand_label")}
    return draw_texts(recs, corpus_ids() | hand, seed=SEED, source_name="ghost_angel_fp32", texts_path=TEXTS,
                      labels_path=LABELS_FILE, blind=BLIND)


def draw_texts(ghost_angel_records: Sequence[dict[str, Any]], exclude: set[str], *, seed: int, source_name: str,
               texts_path: Path, labels_path: Path, blind: Path, n_second: int = N_SECOND,
               second_shards: int = 1) -> list[dict[str, Any]]:
    """The shared draw of both fresh tests: :data:`GHOST_ANGEL` generations per direction kind from one ghost/angel
    run's records and :data:`DRIFT_PER_CELL` drift turns per cell, none in ``exclude`` and each text once (seeded);
    writes the texts with their sources to ``texts_path`` and the readers' shuffled ``{"id", "text"}`` shards
    (4 pass-1 shards; a pass-2 sample of ``n_second`` texts, in ``second_shards`` shards) to ``blind``. Refuses
    once labels exist for the draw."""
    import records as RC

    from persona_vectors.io import atomic_file

    if labels_path.is_file():
        raise SystemExit(f"{labels_path} exists: labels were imported for this draw; drawing again would change "
                         "the texts under them")
    rng = random.Random(seed)
    gens = _distinct(RC.of_kind(ghost_angel_records, "generation"), exclude)
    picked: list[dict[str, Any]] = []
    for kind, n in GHOST_ANGEL.items():
        pool = [g for g in gens if g["dkind"] == kind]
        for g in rng.sample(pool, n):
            picked.append({"id": g["id"], "text": g["text"], "source": source_name, "stratum": kind,
                           "direction": g["direction"], "level": g["level"], "question_id": g["question_id"]})
    taken = exclude | {p["id"] for p in picked}
    turns = _distinct(RC.of_kind(RC.read_records(ROOT / "docs" / "data" / "drift" / "records.jsonl.gz"), "turn"),
                      taken)
    for cell in sorted({(t["condition"], t["conv_kind"]) for t in turns}):
        pool = [t for t in turns if (t["condition"], t["conv_kind"]) == cell]
        for t in rng.sample(pool, DRIFT_PER_CELL):
            picked.append({"id": t["id"], "text": t["text"], "source": "drift", "stratum": f"{cell[0]}/{cell[1]}",
                           "conv": t["conv"], "turn": t["turn"]})
    assert len({p["id"] for p in picked}) == len(picked)
    texts_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(texts_path) as tmp:
        tmp.write_text("".join(json.dumps(p) + "\n" for p in picked))
    order = list(range(len(picked)))
    rng.shuffle(order)
    blind.mkdir(parents=True, exist_ok=True)
    for k in range(N_SHARDS):
        part = [picked[i] for i in order[k::N_SHARDS]]
        (blind / f"blind_pass1_{k + 1}of{N_SHARDS}.jsonl").write_text(
            "".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in part))
    second = sorted(rng.sample(order, n_second), key=lambda i: rng.random())
    for k in range(second_shards):
        name = "blind_pass2.jsonl" if second_shards == 1 else f"blind_pass2_{k + 1}of{second_shards}.jsonl"
        (blind / name).write_text("".join(json.dumps({"id": picked[i]["id"], "text": picked[i]["text"]}) + "\n"
                                          for i in second[k::second_shards]))
    C.say(f"drew {len(picked)} texts ({Counter(p['source'] for p in picked)}); blind shards in {blind}")
    return picked


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped)."""
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def import_labels(path: Path, reader: str, pass_no: int, *, texts: Optional[Path] = None,
                  labels_file: Optional[Path] = None) -> int:
    """Validate a reader's ``{"id", "label"[, "note"]}`` lines against the drawn texts and the rubric's labels and
    append them to the labels file (atomically); a text already labelled in that pass is an error. ``texts`` and
    ``labels_file`` default to this test's files (another fresh test passes its own)."""
    from persona_vectors.io import atomic_file
    from persona_vectors.judge import LABELS

    texts = TEXTS if texts is None else texts
    target = LABELS_FILE if labels_file is None else labels_file
    ids = {t["id"] for t in read_jsonl(texts)}
    have = read_jsonl(target) if target.is_file() else []
    done = {(h["id"], h["pass"]) for h in have}
    new = []
    for i, r in enumerate(read_jsonl(path), 1):
        if r.get("id") not in ids:
            raise SystemExit(f"{path}:{i}: id {r.get('id')!r} is not one of the drawn texts")
        if r.get("label") not in LABELS:
            raise SystemExit(f"{path}:{i}: label {r.get('label')!r} is not one of {', '.join(LABELS)}")
        if (r["id"], pass_no) in done:
            raise SystemExit(f"{path}:{i}: text {r['id']} already has a pass-{pass_no} label")
        done.add((r["id"], pass_no))
        new.append({"id": r["id"], "label": r["label"], "reader": reader, "pass": pass_no,
                    "note": str(r.get("note", ""))[:300]})
    with atomic_file(target) as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in have + new))
    C.say(f"imported {len(new)} pass-{pass_no} labels from {path} ({reader})")
    return len(new)


def decide(right_ft: np.ndarray, right_emb: np.ndarray, alpha: float = ALPHA) -> dict[str, Any]:
    """The plan's rule on paired correctness (same texts, first reader's labels): exact two-sided McNemar on the
    discordant pairs. CONFIRMED: the fine-tuned judge is right more often and p < alpha; REVERSED: the frozen
    judge is right more often and p < alpha (the default goes back to it); otherwise NOT CONFIRMED."""
    from persona_vectors.stats import mcnemar_exact

    b = int((right_ft & ~right_emb).sum())
    c = int((~right_ft & right_emb).sum())
    p = mcnemar_exact(b, c)
    verdict = ("CONFIRMED" if b > c and p < alpha else "REVERSED" if c > b and p < alpha else "NOT CONFIRMED")
    return {"rule": f"exact two-sided McNemar on paired correctness, alpha {alpha}", "finetuned_only_right": b,
            "frozen_only_right": c, "p": p, "gain": float(right_ft.mean() - right_emb.mean()), "verdict": verdict}


def labelled_texts(texts_path: Path, labels_path: Path
                   ) -> tuple[list[dict[str, Any]], list[str], dict[str, str], dict[str, str]]:
    """The drawn texts, their pass-1 labels in text order, and the pass-1 and pass-2 labels by id; every text must
    have a pass-1 label."""
    texts = read_jsonl(texts_path)
    labels = read_jsonl(labels_path)
    first = {h["id"]: h["label"] for h in labels if h["pass"] == 1}
    second = {h["id"]: h["label"] for h in labels if h["pass"] == 2}
    missing = [t["id"] for t in texts if t["id"] not in first]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(texts)} texts have no pass-1 label yet (e.g. {missing[0]}): "
                         "import every shard first")
    return texts, [first[t["id"]] for t in texts], first, second


def judge_texts(texts: Sequence[dict[str, Any]], y: Sequence[str], anti_name: str
                ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both shipped judges (``finetuned``: :meth:`FinetunedJudge.default`, ``frozen``: :meth:`EmbeddingJudge.default`,
    neither refitted) on the texts: per judge :func:`evaluate` on all texts, per source and on the anti-axis stratum
    (named ``anti_name``); also their probabilities and per-text correctness."""
    from persona_vectors.judge import LABELS, EmbeddingJudge, FinetunedJudge
    from persona_vectors.judge_validation import evaluate

    judges = {"finetuned": FinetunedJudge.default(), "frozen": EmbeddingJudge.default()}
    proba = {k: j.predict_proba([t["text"] for t in texts]) for k, j in judges.items()}
    out: dict[str, Any] = {}
    right = {}
    for k, p in proba.items():
        pred = np.array([LABELS[int(i)] for i in p.argmax(axis=1)])
        right[k] = pred == np.array(y)
        by = {}
        for src in sorted({t["source"] for t in texts}):
            m = [i for i, t in enumerate(texts) if t["source"] == src]
            by[src] = evaluate([y[i] for i in m], p[m])
        anti = [i for i, t in enumerate(texts) if t.get("stratum") == "anti_axis"]
        by[anti_name] = evaluate([y[i] for i in anti], p[anti])
        out[k] = {"all": evaluate(y, p), "by_source": by}
    return out, proba, right


def second_reader(texts: Sequence[dict[str, Any]], first: dict[str, str], second: dict[str, str]) -> dict[str, Any]:
    """The second reader against the first on the texts both read: agreement, Cohen's κ, and the second reader
    scored as a judge of the first (the ceiling a judge can reach against one reader)."""
    from persona_vectors.judge import LABELS
    from persona_vectors.judge_validation import evaluate
    from persona_vectors.stats import cohen_kappa

    both = [t["id"] for t in texts if t["id"] in second]
    if not both:
        return {"n": 0, "agreement": None, "kappa": None, "as_judge": None}
    a, b = [first[i] for i in both], [second[i] for i in both]
    return {"n": len(both), "agreement": float(np.mean([x == z for x, z in zip(a, b)])),
            "kappa": float(cohen_kappa(a, b)),
            "as_judge": evaluate(a, np.eye(len(LABELS))[[LABELS.index(z) for z in b]])}


def finish(res: dict[str, Any], replay: bool, results_path: Path, report_path: Path,
           report_fn: Any) -> dict[str, Any]:
    """Write the results and their report (atomically), or with ``replay`` compare the recomputed results with the
    committed ones -- every number -- and the committed report with the one they give, failing on any difference."""
    import records as RC

    from persona_vectors.io import atomic_file

    res = json.loads(json.dumps(C.jsonable(res)))
    if replay:
        # the judges are float32 networks whose last bits depend on the CPU's kernels (an AMD EPYC recomputes the
        # stored probabilities to ~1e-7 and the corrected shares to ~5e-8 absolute): floats are compared to 1e-5
        # relative or 1e-6 absolute; counts, labels and every figure the report prints must still be identical
        cmp = RC.compare(json.loads(results_path.read_text(encoding="utf-8")), res, rel=REPLAY_REL, abs_tol=REPLAY_ABS)
        if cmp["mismatches"]:
            print(f"replay differs from {results_path} in {len(cmp['mismatches'])} place(s):",
                  *(f"{p}: stored {a!r}, recomputed {b!r}" for p, a, b in cmp["mismatches"][:20]), sep="\n  ")
            raise SystemExit(1)
        if report_path.read_text(encoding="utf-8") != report_fn(res):
            print(f"{report_path} differs from the report these results give: regenerate it with `score`")
            raise SystemExit(1)
        C.say(f"replayed: all {cmp['n_numbers']} numbers equal {results_path}, and {report_path.name} is their report")
        return res
    with atomic_file(results_path) as tmp:
        tmp.write_text(json.dumps(res, indent=1) + "\n")
    with atomic_file(report_path) as tmp:
        tmp.write_text(report_fn(res))
    C.say(f"verdict: {res['decision']['verdict']}; wrote {results_path} and {report_path}")
    return res


def score(replay: bool = False) -> dict[str, Any]:
    """Both shipped judges on the labelled fresh texts: the plan's numbers, its verdict, the report."""
    check_plan()
    texts, y, first, second = labelled_texts(TEXTS, LABELS_FILE)
    judged, proba, right = judge_texts(texts, y, "ghost_angel_fp32/anti_axis")
    res: dict[str, Any] = {"plan": PLAN, "n": len(texts), "reader_label_counts": dict(Counter(y)), **judged}
    res["decision"] = decide(right["finetuned"], right["frozen"])
    res["shares"] = share_recovery(texts, y, proba)
    strata: dict[str, Counter] = {}
    for t, lab in zip(texts, y):
        strata.setdefault(f"{t['source']}/{t['stratum']}", Counter())[lab] += 1
    res["reader_labels_by_stratum"] = {k: dict(v) for k, v in sorted(strata.items())}
    res["second_reader"] = second_reader(texts, first, second)
    return finish(res, replay, RESULTS, REPORT, report)


COMMITS = {"plan and code": "eb9db8c", "texts": "d4b5594", "labels": "0c74ad8"}
"""The commits that fixed the plan, the drawn texts and the blind labels, each before the next step (cited by the
report)."""

DEVIATIONS = (
    "Labels were produced twice. The first set of blind labels (the same design: 4 pass-1 readers, 1 pass-2 "
    "reader, rubric v1.1) was written to a temporary directory that was lost when the session ended, before it was "
    "imported, read by anyone else or scored. The texts were redrawn with the committed seed (identical to the "
    "committed `texts.jsonl`) and labelled again by five new blind reader subagents; those labels were committed "
    "(`labels.jsonl`) before `score` ran for the first time.",
)
"""Departures from the plan, recorded (plan: ``experiments/prereg/judge_fresh_test.md``)."""


def share_recovery(texts: Sequence[dict[str, Any]], y: Sequence[str], proba: dict[str, np.ndarray],
                   anti_name: str = "ghost_angel_fp32/anti_axis") -> dict[str, Any]:
    """Label shares as an experiment reports them -- argmax counts and probabilities corrected with the judge's
    held-out confusion matrix (:func:`~persona_vectors.judge_validation.corrected_label_shares`) -- against the
    first reader's shares, on all texts and on the anti-axis stratum. Distance: total variation (half the L1)."""
    from persona_vectors.judge import LABELS
    from persona_vectors.judge_validation import corrected_label_shares, held_out_confusion

    subsets = {"all": list(range(len(texts))),
               anti_name: [i for i, t in enumerate(texts) if t.get("stratum") == "anti_axis"]}
    out: dict[str, Any] = {}
    for name, idx in subsets.items():
        reader = {lab: sum(y[i] == lab for i in idx) / len(idx) for lab in LABELS}
        row: dict[str, Any] = {"n": len(idx), "reader": reader}
        for k, source in (("finetuned", "finetuned"), ("frozen", "embedding")):
            sh = corrected_label_shares(proba[k][idx], held_out_confusion(source))
            row[k] = {way: {"shares": sh[way], "tv_distance": 0.5 * sum(abs(sh[way][lab] - reader[lab])
                                                                         for lab in LABELS)}
                      for way in ("argmax", "corrected")}
        out[name] = row
    return out


TARGETS = (
    ("accuracy", lambda v: v["accuracy"], 0.85),
    ("supernatural precision", lambda v: v["per_label"]["supernatural"]["precision"], 0.85),
    ("supernatural recall", lambda v: v["per_label"]["supernatural"]["recall"], 0.85),
    ("incoherent recall", lambda v: v["per_label"]["incoherent"]["recall"], 0.85),
)
"""Issue 13's targets that apply to real text: (name, getter on an evaluate() result, goal)."""


def accuracy_cell(v: dict[str, Any]) -> str:
    """An :func:`evaluate` result's accuracy as a report cell: ``0.700 [lo, hi] (n = N)`` (95 % Wilson)."""
    lo, hi = v["accuracy_ci95"]
    return f"{v['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] (n = {v['n']})"


def confusion_lines(ev: dict[str, Any], name: str) -> list[str]:
    """An :func:`evaluate` result's confusion matrix as a Markdown table headed by one line naming the judge."""
    lines = [f"Confusion matrix of the {name} (rows = reader, columns = judge):", "",
             "| reader \\ judge | " + " | ".join(lab[:6] for lab in ev["labels"]) + " |",
             "|---|" + "---:|" * len(ev["labels"])]
    return lines + [f"| {lab} | " + " | ".join(str(v) for v in r) + " |"
                    for lab, r in zip(ev["labels"], ev["confusion_matrix"])]


def share_table(shares: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """:func:`share_recovery`'s result as a Markdown table: per subset and judge, the total variation distance of
    argmax and corrected shares to the reader's, and reader / argmax / corrected shares of ``labels``."""
    lines = ["| texts | judge | TV argmax | TV corrected | "
             + " | ".join(f"{lab}: reader / argmax / corrected" for lab in labels) + " |",
             "|---|---|---:|---:|" + "---:|" * len(labels)]
    for name, row in shares.items():
        for k in ("finetuned", "frozen"):
            a, c = row[k]["argmax"], row[k]["corrected"]
            cells = [f"{row['reader'][lab]:.3f} / {a['shares'][lab]:.3f} / {c['shares'][lab]:.3f}" for lab in labels]
            lines.append(f"| {name} (n = {row['n']}) | {k} | {a['tv_distance']:.3f} | {c['tv_distance']:.3f} | "
                         + " | ".join(cells) + " |")
    return lines


def second_reader_lines(sr: dict[str, Any]) -> list[str]:
    """The report's paragraph on the second reader (:func:`second_reader`'s result); none if there was none."""
    if not sr["n"]:
        return []
    sj = sr["as_judge"]["per_label"]["supernatural"]
    return [f"Second reader vs first on {sr['n']} texts: agreement {sr['agreement']:.3f}, Cohen's κ "
            f"{sr['kappa']:.3f}; scored as a judge of the first, supernatural precision / recall "
            f"{sj['precision']:.3f} / {sj['recall']:.3f} (n = {sj['support']}) — the ceiling a judge can reach "
            "against one reader.", ""]


def report(res: dict[str, Any]) -> str:
    """The Markdown report, every number from the results dict."""
    f, e, dec, sr = res["finetuned"], res["frozen"], res["decision"], res["second_reader"]

    acc = accuracy_cell

    lines = [
        "# The judges on fresh real text (a pre-registered test)",
        "",
        f"Generated by `python experiments/judge_fresh_test.py score` (plan: `{res['plan']}`, committed in "
        f"{COMMITS['plan and code']} before any text was drawn, any label imported or any text scored; texts committed "
        f"in {COMMITS['texts']}, blind labels in {COMMITS['labels']}, both before scoring; every number is in "
        "`docs/data/judge_fresh/results.json`, the texts and labels beside it).",
        "",
        f"{res['n']} texts no judge was trained, tuned or selected on: 240 generations of the first (float32) "
        "ghost/angel run, stratified by direction kind (80 anti-axis), without its 120 hand-check texts, and 120 "
        "turns of the drift conversations. Labels: blind readers (Claude subagents shown only shuffled texts and the "
        "rubric), one pass over every text; a second, independent reader on "
        f"{sr['n']} of them. Both judges are the shipped ones, not refitted.",
        "",
        "| | `FinetunedJudge` (default) | `EmbeddingJudge` (frozen) | target |",
        "|---|---:|---:|---:|",
        f"| accuracy, all | {acc(f['all'])} | {acc(e['all'])} | ≥ 0.85 |",
    ]
    for src, name in (("ghost_angel_fp32", "ghost/angel run"), ("ghost_angel_fp32/anti_axis", "  of which anti-axis"),
                      ("drift", "drift turns")):
        lines.append(f"| accuracy, {name} | {acc(f['by_source'][src])} | {acc(e['by_source'][src])} | |")
    for name, get, goal in TARGETS[1:]:
        a, b = get(f["all"]), get(e["all"])
        lines.append(f"| {name} | {a:.3f} | {b:.3f} | ≥ {goal:.2f} |")
    sup = f["all"]["per_label"]["supernatural"]["support"]
    lines += [
        f"| ECE | {f['all']['ece']:.3f} | {e['all']['ece']:.3f} | |",
        "",
        f"Reader's labels: " + ", ".join(f"{k} {v}" for k, v in sorted(res["reader_label_counts"].items(),
                                                                         key=lambda kv: -kv[1])) + f" (supernatural n = {sup}).",
        "",
        f"**Verdict ({dec['rule']}): {dec['verdict']}** — the fine-tuned judge alone right on "
        f"{dec['finetuned_only_right']} texts, the frozen judge alone on {dec['frozen_only_right']} (p = {dec['p']:.3g}; "
        f"accuracy difference {dec['gain']:+.3f}).",
        "",
        "Issue 13's targets on this text: " + "; ".join(
            f"{name} {get(f['all']):.3f} {'met' if get(f['all']) >= goal else 'not met'}" for name, get, goal in TARGETS)
        + " (fine-tuned judge).",
        "",
    ]
    if sup < 20:
        lines += [f"Only {sup} of {res['n']} texts are supernatural by the first reader, so the supernatural precision "
                  "and recall above rest on a handful of texts; they are reported as planned, not as estimates.", ""]
    lines += second_reader_lines(sr)
    lines += confusion_lines(f["all"], "fine-tuned judge")
    lines += ["", "## Do the reported shares recover the readers' shares? (descriptive; added after scoring, not "
              "in the plan)", "",
              "Experiments report label shares two ways: argmax counts and probabilities corrected with the "
              "judge's held-out confusion matrix from the labelled corpus. Here both are set against the first "
              "reader's shares on the same texts (distance: total variation, 0 = identical, 1 = disjoint).", ""]
    lines += share_table(res["shares"], ("supernatural", "no_self"))
    by = res["reader_labels_by_stratum"]
    shown = [lab for lab in f["all"]["labels"] if any(v.get(lab) for v in by.values())]
    lines += ["", "## What the readers found, by stratum (descriptive; added after scoring, not in the plan)", "",
              "The first reader's labels per drawn stratum (ghost/angel strata pool all steering strengths; drift "
              "strata are capped/uncapped × conversation kind). A second blind sample of the ghost/angel run "
              "beside its own 120-text hand-check.", "",
              "| stratum | n | " + " | ".join(shown) + " |", "|---|---:|" + "---:|" * len(shown)]
    for k, v in by.items():
        lines.append(f"| {k} | {sum(v.values())} | " + " | ".join(str(v.get(lab, 0)) for lab in shown) + " |")
    lines += ["", "## Deviations from the plan", ""] + [f"- {d}" for d in DEVIATIONS]
    return "\n".join(lines) + "\n"


def cli(doc: str, draw_fn: Any, import_fn: Any, score_fn: Any, argv: Optional[list[str]] = None) -> Any:
    """The fresh tests' command line: ``draw`` / ``import FILE --reader NAME --pass 1|2`` / ``score [--replay]``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
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
        return draw_fn()
    if args.cmd == "import":
        return import_fn(args.file, args.reader, args.pass_no)
    return score_fn(replay=args.replay)


def main(argv: Optional[list[str]] = None) -> Any:
    """CLI: draw / import / score (see the module docstring)."""
    return cli(__doc__, draw, import_labels, score, argv)


if __name__ == "__main__":
    main()
