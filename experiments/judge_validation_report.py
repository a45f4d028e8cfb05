"""The judge's validation on real generations, written to docs/judge_validation.md (issue 13, deliverable 2).

    python experiments/judge_validation_report.py [--repeats 5] [--folds 3] [--seed 0]

Reads the shipped corpus (``src/persona_vectors/data/judge_real/``: generations + blind labels) and reports:

1. **Agreement between readers**: Cohen's kappa of the independent second pass against the first.
2. **The judge trained on hand-written text only**, scored on every real generation (none of them was seen
   in training): what the v0.1 judge design achieves where it is used.
3. **The retrained judge** (hand-written + real training folds) by repeated crossed grouped CV: no steering
   direction and no question is on both sides of a fold. Accuracy, per-label precision/recall, confusion
   matrix, targets met or not.
4. **Calibration**: expected calibration error of the out-of-fold probabilities before and after a single
   temperature, the temperature fitted on one half of the directions and scored on the other (and vice
   versa), so the calibrated ECE is itself held out; reliability curves (plotly HTML + data).
5. **Hand-written set**: stratified CV with every real item in each training fold (target ≥ 0.90).
6. **By batch**: the held-out figures on batch 1 alone (the experiments' own conditions: the distribution the
   judge is used on) and on batch 2 alone (enriched for rare archetypes), beside the pooled ones.
7. **The readers' ceiling**: the second reader's per-label precision/recall against the first. A judge
   target above what two careful readers reach against each other cannot be met by any judge.

Writes ``validation.json`` (every number, incl. the out-of-fold probabilities) beside the corpus and the
Markdown report; the shipped judge (:meth:`EmbeddingJudge.default`) uses the temperature fitted here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"accuracy": 0.85, "supernatural_precision": 0.85, "supernatural_recall": 0.85,
           "incoherent_recall": 0.85, "hand_written_accuracy": 0.90}


def temper(proba: np.ndarray, T: float) -> np.ndarray:
    """Probabilities with temperature ``T`` applied exactly as the shipped judge applies it."""
    from persona_vectors.judge import apply_temperature

    return apply_temperature(proba, T)


def fit_temperature(proba: np.ndarray, y_idx: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of the true labels (bounded search)."""
    from scipy.optimize import minimize_scalar

    def nll(t: float) -> float:
        return float(-np.log(np.clip(temper(proba, t)[np.arange(len(y_idx)), y_idx], 1e-12, 1)).mean())

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def subsets(batch: np.ndarray, tested: np.ndarray, drawn: np.ndarray) -> dict[Any, np.ndarray]:
    """Masks over the tested items: each batch, and ``"3u"`` — batch 3's uniformly drawn texts (the ghost/angel
    run's distribution as it is, without the keyword enrichment)."""
    out: dict[Any, np.ndarray] = {bt: batch[tested] == bt for bt in sorted(set(batch.tolist()))}
    out["3u"] = (batch[tested] == 3) & (drawn[tested] == "random")
    return {k: m for k, m in out.items() if m.any()}


def variant_figures(corpus: Any, args: argparse.Namespace, batch: np.ndarray, drawn: np.ndarray,
                    params: dict[str, Any]) -> dict[str, Any]:
    """Crossed grouped CV (same folds as the default), per-batch figures, the temperature fitted on all
    out-of-fold predictions, held-out ECE at that temperature, and the hand-written CV of one judge variant."""
    from persona_vectors.judge import LABELS
    from persona_vectors.judge_validation import crossed_group_cv, evaluate, hand_written_cv
    from persona_vectors.stats import ece

    cv = crossed_group_cv(corpus, n_folds=args.folds, repeats=args.repeats, seed=args.seed, judge_params=params)
    tested = np.asarray(cv["tested_index"])
    oof = np.asarray(cv["oof_proba"])
    y_idx = np.array([LABELS.index(corpus.labels[i]) for i in tested])
    T = fit_temperature(oof, y_idx)
    by_batch = {str(bt): evaluate([corpus.labels[i] for i in tested[m]], oof[m]) for bt, m in subsets(batch, tested,
                                                                                                   drawn).items()}
    return {"params": params, "crossed_cv": {k: v for k, v in cv.items() if k != "oof_proba"},
            "by_batch": by_batch, "temperature": T, "ece_raw": float(ece(oof, y_idx)),
            "hand_written_cv": hand_written_cv(include_real=True, judge_params=params)}


def ship_judge(temperature: float, reader: bool) -> Path:
    """Fit one variant of the frozen judge on everything shipped, with its held-out temperature, and write it where
    ``EmbeddingJudge.default(reader=...)`` loads it (so no user machine, test worker or experiment process has to
    embed -- or, for the reader, read -- the ~1,900 training texts)."""
    from persona_vectors.judge import EmbeddingJudge, Embedder
    from persona_vectors.judge import embedding as E

    texts, labels, emb = E._shipped_embeddings()
    judge = EmbeddingJudge(embedder=Embedder(), temperature=temperature, reader=reader)
    judge.embedder_ = judge.embedder
    states = judge._reader().encode(texts, progress=True) if reader else None
    judge._fit_design(judge._design(emb, texts, states), labels)
    path = judge.save(E.shipped_judge_path(reader), training_sha256=E.shipped_training_sha256(),
                      source="experiments/judge_validation_report.py", n_train=len(texts))
    E._DEFAULT_JUDGES.pop(reader, None)
    return path


def hand_check_accuracy(reader: bool) -> dict[str, Any]:
    """The shipped judge variant (fitted on everything shipped) scored against the blind reader's labels of the
    ghost/angel rerun's pre-registered hand-check sample (``docs/data/assistant_axis_prereg``): text the judge
    never saw, drawn from the very distribution an experiment used it on."""
    import records as RC
    from judge_corpus import text_id
    from persona_vectors.judge import EmbeddingJudge
    from persona_vectors.judge_validation import evaluate

    recs = RC.read_records(ROOT / "docs" / "data" / "assistant_axis_prereg" / "records.jsonl.gz")
    gens = {text_id(g["text"]): g["text"] for g in RC.of_kind(recs, "generation")}
    hand = RC.of_kind(recs, "hand_label")
    texts, labels = [gens[h["id"]] for h in hand], [h["label"] for h in hand]
    res = evaluate(labels, EmbeddingJudge.default(reader=reader).predict_proba(texts))
    res["source"] = "docs/data/assistant_axis_prereg (hand_label records: blind subagent reader, rubric v1)"
    return res


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Compute every number and write the report (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/judge_validation.md")
    args = ap.parse_args(argv)
    from persona_vectors.judge import LABELS, EmbeddingJudge, Embedder, load_labelled
    from persona_vectors.judge_validation import (
        REAL_DIR,
        crossed_group_cv,
        evaluate,
        format_validation_markdown,
        hand_written_cv,
        load_real_corpus,
    )
    from persona_vectors.io import atomic_file
    from persona_vectors.stats import cohen_kappa, ece

    sys.path.insert(0, str(ROOT / "experiments"))
    import label_texts

    corpus = load_real_corpus()
    C.say(f"{len(corpus)} labelled generations, {len(set(corpus.texts))} distinct texts")
    ag = label_texts.agreement(1, 2)
    rows = label_texts.load_labels()
    a = {r["id"]: r["label"] for r in rows if r["pass"] == 1}
    b = {r["id"]: r["label"] for r in rows if r["pass"] == 2}
    both = sorted(set(a) & set(b))
    kappa = cohen_kappa([a[i] for i in both], [b[i] for i in both])
    labellers = sorted({(r["pass"], r["labeller"]) for r in rows})

    C.say("hand-written-only judge on every real generation")
    ht, hl = load_labelled()
    base = EmbeddingJudge().fit(ht, hl)
    base_res = evaluate(corpus.labels, base.predict_proba(corpus.texts))

    C.say(f"crossed grouped CV ({args.folds} folds x {args.repeats} repeats)")
    cv = crossed_group_cv(corpus, n_folds=args.folds, repeats=args.repeats, seed=args.seed)
    tested = np.asarray(cv["tested_index"])
    oof = np.asarray(cv["oof_proba"])
    y_idx = np.array([LABELS.index(corpus.labels[i]) for i in tested])
    dirs = np.asarray(corpus.directions)[tested]
    levels = sorted(set(dirs))
    half = set(np.random.default_rng(args.seed).permutation(levels)[: len(levels) // 2])
    in_a = np.array([d in half for d in dirs])
    calibrated = np.empty_like(oof)
    temps = []
    for fit_mask in (in_a, ~in_a):
        T = fit_temperature(oof[fit_mask], y_idx[fit_mask])
        temps.append(T)
        calibrated[~fit_mask] = temper(oof[~fit_mask], T)
    T_all = fit_temperature(oof, y_idx)
    ece_raw = float(ece(oof, y_idx))
    ece_cal = float(ece(calibrated, y_idx))
    cal_res = evaluate([corpus.labels[i] for i in tested], calibrated)

    C.say("hand-written CV with the real items in every training fold")
    hand = hand_written_cv(include_real=True)

    batch = np.array([int(c.get("batch", 1)) for c in corpus.conditions])
    drawn = np.array([str(c.get("drawn", "")) for c in corpus.conditions])
    by_batch = {bt: evaluate([corpus.labels[i] for i in tested[m]], oof[m])
                for bt, m in subsets(batch, tested, drawn).items()}
    base_b1 = evaluate([lab for lab, bt in zip(corpus.labels, batch) if bt == 1],
                       base.predict_proba([t for t, bt in zip(corpus.texts, batch) if bt == 1]))
    batch_of_id = {}
    for g in (REAL_DIR / "generations.jsonl").read_text(encoding="utf-8").splitlines():
        if g.strip():
            row = json.loads(g)
            batch_of_id.setdefault(row["id"], int(row["condition"].get("batch", 1)))
    kappa_by_batch = {bt: cohen_kappa([a[i] for i in both if batch_of_id.get(i) == bt],
                                      [b[i] for i in both if batch_of_id.get(i) == bt])
                      for bt in sorted(set(batch_of_id.values())) if any(batch_of_id.get(i) == bt for i in both)}
    ceiling = evaluate([a[i] for i in both], np.eye(len(LABELS))[[LABELS.index(b[i]) for i in both]])

    C.say("the reader variant: crossed grouped CV, calibration, hand-written CV")
    reader = variant_figures(corpus, args, batch, drawn, {"reader": True})

    C.say(f"shipping the fitted judges: {ship_judge(T_all, reader=False)}, "
          f"{ship_judge(reader['temperature'], reader=True)}")

    C.say("both variants on the ghost/angel rerun's blind hand-check (the experiment's own generations)")
    external = {"default": hand_check_accuracy(False), "reader": hand_check_accuracy(True)}

    pl = cv["per_label"]
    checks = {
        "accuracy": cv["accuracy"], "supernatural_precision": pl["supernatural"]["precision"],
        "supernatural_recall": pl["supernatural"]["recall"], "incoherent_recall": pl["incoherent"]["recall"],
        "hand_written_accuracy": hand["accuracy"],
    }
    met = {k: bool(v >= TARGETS[k]) for k, v in checks.items()}
    results = {
        "n_generations": len(corpus), "n_distinct_texts": len(set(corpus.texts)),
        "label_counts": {lab: corpus.labels.count(lab) for lab in LABELS},
        "labellers": [{"pass": p, "labeller": n} for p, n in labellers],
        "agreement": {**ag, "kappa": kappa},
        "hand_written_only_on_real": {k: v for k, v in base_res.items()},
        "crossed_cv": {k: v for k, v in cv.items() if k not in ("oof_proba",)},
        "calibration": {"temperature_halves": temps, "temperature": T_all, "ece_raw": ece_raw,
                        "ece_calibrated_heldout": ece_cal, "reliability_raw": cv["reliability"],
                        "reliability_calibrated": cal_res["reliability"]},
        "hand_written_cv": hand, "targets": TARGETS, "checks": checks, "met": met,
        "by_batch": {str(k): v for k, v in by_batch.items()}, "hand_written_only_on_batch1": base_b1,
        "kappa_by_batch": {str(k): v for k, v in kappa_by_batch.items()}, "reader_ceiling": ceiling,
        "oof_proba": cv["oof_proba"],
        "reader": reader, "ghost_angel_hand_check": external,
    }
    results["calibration"]["reader"] = {"temperature": reader["temperature"]}
    with atomic_file(REAL_DIR / "validation.json") as tmp:
        tmp.write_text(json.dumps(C.jsonable(results), indent=1) + "\n")

    import plotly.graph_objects as go

    from persona_vectors.plotting import write_html

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="perfect"))
    for name, curve in (("raw", cv["reliability"]), (f"temperature {T_all:.2f}", cal_res["reliability"])):
        fig.add_trace(go.Scatter(x=[c["confidence"] for c in curve], y=[c["accuracy"] for c in curve],
                                 mode="lines+markers", name=name,
                                 error_y={"type": "data", "symmetric": False,
                                          "array": [c["acc_hi"] - c["accuracy"] for c in curve],
                                          "arrayminus": [c["accuracy"] - c["acc_lo"] for c in curve]},
                                 text=[f"n = {c['count']}" for c in curve]))
    fig.update_layout(title="Judge reliability on real generations (out-of-fold, crossed grouped CV)",
                      xaxis_title="top-label probability", yaxis_title="share correct", width=720, height=520)
    write_html(fig, ROOT / "runs" / "judge_validation" / "judge_reliability.html")  # PNG: experiments/snapshot_figures.py

    def tick(k: str) -> str:
        return "✅" if met[k] else "❌"

    lines = [
        "# The archetype judge on real generations",
        "",
        "Generated by `python experiments/judge_validation_report.py` from the shipped corpus "
        "(`src/persona_vectors/data/judge_real/`; every number is in `validation.json` there).",
        "",
        f"- **Corpus:** {len(corpus)} real SmolLM2-135M generations ({results['n_distinct_texts']} distinct texts, "
        "`experiments/judge_corpus.py`): **batch 1**, "
        f"{int((batch == 1).sum())} generations under the experiments' conditions and past them (the distribution the "
        f"judge is used on); **batch 2**, {int((batch == 2).sum())} generations enriched for the rare archetypes "
        "(role prompts and role-direction steering of supernatural, nature, animal and fictional roles), so their "
        "precision and recall rest on more than a handful of items. Batch 2 was generated and labelled after the "
        "judge's design was fixed: its figures were not used to choose anything. **Batch 3**, "
        f"{int((batch == 3).sum())} texts drawn from the pre-registered ghost/angel run in bfloat16 "
        "(`docs/data/assistant_axis_prereg_bf16`; the experiment's own generations, the exact distribution the "
        "judge scores there): 180 containing a supernatural-sounding word (chosen by a word list, never by the "
        "judge: ghosts and angels, but as often a \"spirit of adventure\" in scenery), 180 drawn uniformly, and "
        "the run's 120 pre-registered hand-check texts with their blind reader's labels. The column *batch 3 "
        "uniform* scores the uniformly drawn ones alone: the ghost/angel distribution as it is.",
        f"- **Labels:** read blind to condition under `docs/judge_rubric.md` by "
        + ", ".join(f"{n} (pass {p})" for p, n in labellers) + ".",
        f"- **Agreement:** a second, independent reader labelled {ag['n']} texts: raw agreement "
        f"{ag['agreement']:.3f}, Cohen's κ **{kappa:.3f}**. Most frequent disagreements (pass 1 / pass 2): "
        + ", ".join(f"{k} ×{v}" for k, v in list(ag["disagreements"].items())[:6]) + ". κ by batch: "
        + ", ".join(f"batch {k} {v:.3f}" for k, v in kappa_by_batch.items()) + ".",
        "",
        "| target | measured (pooled) | batch 1 only | batch 2 only | batch 3 only | batch 3 uniform | "
        "second reader vs first | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def sub(res: Any, key: str) -> str:
        if res is None:
            return "–"
        if key == "accuracy":
            return f"{res['accuracy']:.3f}"
        lab, kind = {"supernatural_precision": ("supernatural", "precision"), "supernatural_recall":
                     ("supernatural", "recall"), "incoherent_recall": ("incoherent", "recall")}[key]
        return f"{res['per_label'][lab][kind]:.3f} (n = {res['per_label'][lab]['support']})"

    names = {"accuracy": "accuracy on held-out real text", "supernatural_precision": "supernatural precision",
             "supernatural_recall": "supernatural recall", "incoherent_recall": "incoherent recall",
             "hand_written_accuracy": "accuracy on the hand-written set"}
    for k in TARGETS:
        cells = (["–"] * 5 if k == "hand_written_accuracy" else
                 [sub(by_batch.get(b), k) for b in (1, 2, 3, "3u")] + [sub(ceiling, k)])
        lines.append(f"| {names[k]} | {checks[k]:.3f} | " + " | ".join(cells) + f" | ≥ {TARGETS[k]:.2f} | {tick(k)} |")
    sup_c = ceiling["per_label"]["supernatural"]
    lines += [
        "",
        f"**The readers' ceiling.** On the {ceiling['n']} texts both readers labelled, the second reader agrees with the "
        f"first on {ceiling['accuracy']:.3f} of them, and *as a judge of the first reader's supernatural label* "
        f"reaches precision {sup_c['precision']:.2f} and recall {sup_c['recall']:.2f} (n = {sup_c['support']}). "
        "Supernatural vs nature/cosmic (\"a being of the wind\", \"a creature of the night\") is where careful "
        "readers part most often, so a supernatural target of 0.85 on both sides sits at or above what two readers "
        "reach against each other: it cannot be met against one reader's labels by any judge, and the judge's "
        "supernatural shares must be read with the confusion-corrected estimate beside them.",
    ]
    rb = reader["by_batch"]
    rcv = reader["crossed_cv"]
    lines += [
        "",
        "## The reader variant (`EmbeddingJudge(reader=True)`, `EmbeddingJudge.default(reader=True)`)",
        "",
        "The judge's errors sit on *who is speaking* (a self-description vs narration with no speaker, a person "
        "vs a spirit, repetition vs a terse answer), which sentence embeddings capture poorly. The reader variant "
        "adds a second view: a private, unsteered copy of the embedded SmolLM2-135M-Instruct is asked \"Who or what "
        "does the writer of this reply say they are?\" about each text, and its last-token residual states at six "
        "depths (layers 6–26, each centred and scaled to unit norm) join the MiniLM embedding in the same "
        "logistic regression (`src/persona_vectors/judge/reader.py`). Same folds, same units, same targets:",
        "",
        "| held out | default judge | reader variant | target |",
        "|---|---:|---:|---:|",
        f"| accuracy, pooled (crossed grouped CV) | {cv['accuracy']:.3f} | {rcv['accuracy']:.3f} | ≥ 0.85 |",
        f"| accuracy, batch 1 (the experiments' distribution) | {by_batch[1]['accuracy']:.3f} | "
        f"{rb['1']['accuracy']:.3f} | ≥ 0.85 |",
        f"| accuracy, batch 2 (rare archetypes) | {by_batch[2]['accuracy']:.3f} | {rb['2']['accuracy']:.3f} | |",
        *([f"| accuracy, batch 3 (ghost/angel run, incl. keyword-drawn) | {by_batch[3]['accuracy']:.3f} | "
           f"{rb['3']['accuracy']:.3f} | |",
           f"| accuracy, batch 3 uniform (ghost/angel run as it is) | {by_batch['3u']['accuracy']:.3f} | "
           f"{rb['3u']['accuracy']:.3f} | |"] if 3 in by_batch and "3u" in by_batch else []),
        f"| supernatural precision / recall, pooled | {pl['supernatural']['precision']:.2f} / "
        f"{pl['supernatural']['recall']:.2f} | {rcv['per_label']['supernatural']['precision']:.2f} / "
        f"{rcv['per_label']['supernatural']['recall']:.2f} | ≥ 0.85 / 0.85 |",
        f"| incoherent recall, pooled | {pl['incoherent']['recall']:.3f} | "
        f"{rcv['per_label']['incoherent']['recall']:.3f} | ≥ 0.85 |",
        f"| hand-written set (5-fold CV) | {hand['accuracy']:.3f} | {reader['hand_written_cv']['accuracy']:.3f} | "
        "≥ 0.90 |",
        f"| ECE raw; temperature fitted on all out-of-fold predictions | {ece_raw:.3f}; T = {T_all:.2f} | "
        f"{reader['ece_raw']:.3f}; T = {reader['temperature']:.2f} | |",
        f"| **the ghost/angel rerun's blind hand-check** (n = {external['default']['n']}, shipped judges) | "
        f"{external['default']['accuracy']:.3f} | {external['reader']['accuracy']:.3f} | |",
        "",
        "The last row is the most direct test there is: the 120 generations of the pre-registered ghost/angel "
        "rerun that a blind reader labelled, none of them in any training set (batch 3 holds other generations "
        "of the same design, from the second run), scored by each shipped judge. "
        "How the variant was chosen, honestly: in an exploration (same split, 2 repeats) the reader prompt "
        "with six layers reached 0.831 on batch 1 and was kept; the alternatives tried — reader states alone, "
        "mean-pooled states of the bare text, layer subsets, C = 1 or 4, reader weights 0.5–2 — reached "
        "0.78–0.83. The hand-check accuracy of every alternative was also looked at (0.68–0.78; the reader "
        "states alone scored best there, 0.78, and worst by CV), so that row is not a pristine test of the "
        "final choice. The "
        "variant is opt-in: the committed experiments were scored with the default, and switching an "
        "experiment's instrument is a deviation its plan must record.",
    ]
    lines += [
        "",
        f"**Before (hand-written training only), on every real generation:** accuracy "
        f"{base_res['accuracy']:.3f} (95 % {base_res['accuracy_ci95'][0]:.3f}–{base_res['accuracy_ci95'][1]:.3f}); "
        f"supernatural precision {base_res['per_label']['supernatural']['precision']:.3f}, recall "
        f"{base_res['per_label']['supernatural']['recall']:.3f}; on batch 1 alone accuracy {base_b1['accuracy']:.3f}.",
        "",
        f"**Calibration:** expected calibration error {ece_raw:.3f} raw; {ece_cal:.3f} after one temperature "
        f"(fitted on half of the directions, scored on the other half: T = {temps[0]:.2f} / {temps[1]:.2f}); the "
        f"shipped judge uses T = {T_all:.2f} fitted on all out-of-fold predictions.",
        "",
        "![judge reliability](figures/judge_reliability.png)",
        "",
        format_validation_markdown(cv, f"**Retrained judge, crossed grouped CV** ({args.folds} folds × {args.repeats} "
                                       f"repeats; {cv['coverage']:.0%} of items tested at least once)"),
        *[format_validation_markdown(r, f"**Retrained judge, {'batch 3 uniformly drawn' if k == '3u' else f'batch {k}'} "
                                        "items only** (same out-of-fold predictions)")
          for k, r in by_batch.items()],
        format_validation_markdown(base_res, "**Hand-written-only judge on all real generations**"),
        format_validation_markdown(hand, "**Hand-written set** (5-fold stratified CV, real items in every training fold)"),
        format_validation_markdown({**rcv, "reliability": []}, "**Reader variant, crossed grouped CV** (same folds)"),
        format_validation_markdown(external["default"], "**Default judge on the ghost/angel rerun's blind hand-check**"),
        format_validation_markdown(external["reader"], "**Reader variant on the ghost/angel rerun's blind hand-check**"),
    ]
    out = ROOT / args.out
    with atomic_file(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    C.say(f"wrote {out}; targets met: {sum(met.values())}/{len(met)}")
    return results


if __name__ == "__main__":
    main()
