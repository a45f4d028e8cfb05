"""Pre-registered ghost/angel test on the base model (``cross_model.md`` §8, the ``--full`` part of cross_model).

    python experiments/cross_model_ghost_angel.py [--quick] [--resume] [--out DIR] [--threads N]
    python experiments/cross_model_ghost_angel.py --export-blind FILE [--out DIR]         # 240 blind texts
    python experiments/cross_model_ghost_angel.py --import-labels FILE --labeller NAME [--second] [--out DIR]
    python experiments/cross_model_ghost_angel.py --report-only [--out DIR]

The governing plan is ``experiments/prereg/cross_model.md`` (§8, committed before this run): the assistant-axis
rerun's design (``experiments/prereg/assistant_axis.md`` §2–§6, run by :mod:`assistant_axis_prereg`) on
Gemma 3 270M (base) at layer 8 with that plan's rule, reduced to 10 random and 5 role-pair controls and the
1-nat level, all 49 evaluation questions × 2 samples. Both plans' commits are recorded; a default run refuses
either one uncommitted or edited.

The judge is validated on SmolLM2 text only, so §8 adds a blind reader: 120 generations (the assistant-axis
plan's hand-check sample: half anti-axis, half controls) give the judge's agreement on Gemma text, reported next
to every share; **if it is below 0.7, the reader's labels on a stratified sample of 240 generations (anti-axis
vs controls) are the primary outcome**, tested with a one-sided Fisher exact test (:func:`reader_rule`). The
240 hold the 120 plus every remaining anti-axis generation and controls drawn evenly across the control
directions (the anti-axis has 98 generations at one level, so an even 120/120 split cannot exist); one blind
file of all 240, shuffled, is labelled once (``--export-blind`` / ``--import-labels``).

``results.json`` = :func:`summarize` (the assistant-axis summary plus the §8 block); ``report.md`` =
:func:`render`; ``python experiments/recompute.py <run dir>`` replays both.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import assistant_axis_prereg as A  # noqa: E402
import prereg_plan as P  # noqa: E402
import records as RC  # noqa: E402
import run_dir as R  # noqa: E402
from judge_corpus import text_id  # noqa: E402

NAME = "cross_model_ghost_angel"
PLAN = "experiments/prereg/cross_model.md"
SUPER = A.SUPER
# cross_model.md §8, word for word in numbers: the base model, its primary layer (the plan's primary pair is
# [14, 8]), the reduced controls and level, the blind-reader sizes and the agreement bar
MODEL = "gemma-3-270m"
LAYER = 8
N_RANDOM, N_ROLE_PAIRS, KL_LEVELS = 10, 5, [1.0]
HAND_N, AGREEMENT_MIN = 120, 0.7  # the reader sample is 2 × HAND_N = 240


def preset(quick: bool = False, out: Optional[str] = None, threads: int = 0) -> A.Config:
    """The assistant-axis plan's configuration with §8's reductions on the base model (``quick``: the same
    shrink as the assistant-axis smoke test, never a verdict)."""
    plan = P.read_plan(PLAN)
    if not plan.get("full_ghost_angel"):
        raise SystemExit(f"{PLAN} does not enable the base-model ghost/angel test (full_ghost_angel)")
    cfg = A.Config.preset(quick=quick, threads=threads)
    cfg.model, cfg.layer = MODEL, LAYER
    if quick:
        cfg.out = out or f"runs/{NAME}_quick"
        cfg.n_random, cfg.n_role_pairs, cfg.kl_levels = 2, 1, KL_LEVELS
        cfg.hand_check_n = 6
    else:
        cfg.out = out or f"runs/{NAME}"
        cfg.n_random, cfg.n_role_pairs, cfg.kl_levels, cfg.hand_check_n = N_RANDOM, N_ROLE_PAIRS, KL_LEVELS, HAND_N
    return cfg


def run(cfg: A.Config, resume: bool = False, model: Any = None) -> dict[str, Any]:
    """Run the design (:func:`assistant_axis_prereg.run`) under the cross-model plan; returns the results
    (``model``: an already loaded base model, as :func:`assistant_axis_prereg.run` takes it)."""
    design = A.plan_commit()
    P.require_committed(design, cfg.mode)
    prereg = {**P.plan_commit(PLAN), "design": design}
    return A.run(cfg, resume=resume, prereg=prereg, experiment=NAME, report_fn=report, model=model)


# ============================================================================================ blind reader
def reader_sample(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The 240 (2 × hand_check_n): the 120-text hand-check sample, then every other
    anti-axis generation, then controls round-robin over the control directions (seeded) up to the size."""
    n = 2 * int(config["config"]["hand_check_n"])
    base = A.hand_check_sample(records, config)
    seen = {text_id(g["text"]) for g in base}
    gens = sorted(RC.of_kind(records, "generation"), key=lambda g: (g["direction"], g["question_id"], g["sample"]))
    out = list(base)

    def take(g: Mapping[str, Any]) -> None:
        i = text_id(g["text"])
        if i not in seen and len(out) < n:
            seen.add(i)
            out.append(dict(g))

    for g in gens:
        if g["dkind"] == "anti_axis":
            take(g)
    rng = random.Random(int(config["config"]["seed"]) + 240)
    pools: dict[str, list[dict[str, Any]]] = {}
    for g in gens:
        if g["dkind"] in A.CONTROL_KINDS and text_id(g["text"]) not in seen:
            pools.setdefault(g["direction"], []).append(g)
    for p in pools.values():
        rng.shuffle(p)
    while len(out) < n and any(pools.values()):
        for d in sorted(pools):
            if pools[d]:
                take(pools[d].pop())
    return out


def export_blind(out: Path, dest: Path) -> int:
    """Write the reader sample's texts, shuffled, as ``{"id", "text"}`` lines (no condition: the reader is blind)."""
    return A.export_hand_check(out, dest, sample=reader_sample, shuffle_seed=7)


def import_labels(out: Path, src: Path, labeller: str, *, second: bool = False) -> int:
    """Append a reader's labels (``{"id", "label"}`` lines) as ``hand_label`` records (the primary reader's, the
    ones every rule reads) or, with ``second``, as ``hand_label_second`` records (an independent second reader:
    only Cohen's κ between the two is computed from them), then rebuild the report."""
    return A.import_hand_labels(out, src, labeller, sample=reader_sample, report_fn=report,
                                kind="hand_label_second" if second else "hand_label")


# ============================================================================================ analysis
def reader_rule(agreement: Optional[float], anti: tuple[int, int], controls: tuple[int, int], *, quick: bool,
                alpha: float = 0.05, bar: float = AGREEMENT_MIN) -> dict[str, Any]:
    """§8's rule. ``anti``/``controls``: (reader-supernatural count, n) in the 240. Below the agreement bar the
    reader's one-sided Fisher exact test (anti-axis more supernatural than controls) is the primary outcome."""
    from scipy.stats import fisher_exact

    (ka, na), (kc, nc) = anti, controls
    fisher = None
    if na and nc:
        odds, p = fisher_exact([[ka, na - ka], [kc, nc - kc]], alternative="greater")
        fisher = {"odds_ratio": float(odds), "p_value": float(p)}
    if quick:
        return {"primary": "none", "word": "NO VERDICT (quick mode)", "fisher": fisher}
    if agreement is None:
        return {"primary": "pending", "word": "PENDING (the blind reader's labels are not in yet)", "fisher": fisher}
    if agreement >= bar:
        return {"primary": "judge", "word": "the judge's verdict stands (agreement ≥ the bar)", "fisher": fisher}
    if fisher is None:
        return {"primary": "reader", "word": "NO VERDICT (the reader sample is incomplete)", "fisher": None}
    word = "SUPPORTED" if fisher["p_value"] <= alpha else "NOT SUPPORTED"
    return {"primary": "reader", "word": word, "fisher": fisher,
            "rule": f"judge agreement < {bar}: reader's Fisher exact (one-sided) p <= {alpha} -> SUPPORTED"}


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """The assistant-axis summary (:func:`assistant_axis_prereg.summarize`) plus §8's reader block."""
    res = A.summarize(records, config)
    cfg = config["config"]
    labels = {h["id"]: h["label"] for h in RC.of_kind(records, "hand_label")}
    sample = reader_sample(records, config)
    by_text = {text_id(g["text"]): g for g in A._joined(records)}
    lab = [(g, labels[text_id(g["text"])]) for g in sample if text_id(g["text"]) in labels]

    def count(kinds: Sequence[str]) -> tuple[int, int]:
        sel = [x for g, x in lab if g["dkind"] in kinds]
        return sum(x == SUPER for x in sel), len(sel)

    anti, ctrl = count(("anti_axis",)), count(A.CONTROL_KINDS)
    hand = res.get("hand_check") or {}
    complete = len(lab) == len(sample)
    agree_all = [x == by_text[text_id(g["text"])]["label"] for g, x in lab if text_id(g["text"]) in by_text]
    rule = reader_rule(hand.get("agreement") if hand.get("n") == len(A.hand_check_sample(records, config)) else None,
                       anti if complete else (0, 0), ctrl if complete else (0, 0), quick=cfg["mode"] != "default",
                       alpha=float(cfg["alpha_test"]))
    second = {h["id"]: h["label"] for h in RC.of_kind(records, "hand_label_second")}
    both = sorted(set(labels) & set(second))
    kappa = None
    if both:
        from sklearn.metrics import cohen_kappa_score

        a, b = [labels[i] for i in both], [second[i] for i in both]
        kappa = {"n": len(both), "kappa": float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else 1.0,
                 "raw_agreement": sum(x == y for x, y in zip(a, b)) / len(both),
                 "supernatural_either": sum(SUPER in (x, y) for x, y in zip(a, b)),
                 "supernatural_both": sum(x == y == SUPER for x, y in zip(a, b)),
                 "labellers": sorted({h["labeller"] for h in RC.of_kind(records, "hand_label_second")})}
    res["reader"] = {"sample_n": len(sample), "labelled_n": len(lab), "anti_axis": {"k": anti[0], "n": anti[1]},
                     "second_reader": kappa,
                     "controls": {"k": ctrl[0], "n": ctrl[1]},
                     "label_counts": {k: sum(x == k for _, x in lab) for k in sorted(set(x for _, x in lab))},
                     "judge_agreement_all": (sum(agree_all) / len(agree_all)) if agree_all else None,
                     "rule": rule}
    return res


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report: §8's primary outcome first, then the assistant-axis report of the same records."""
    cfg, rd = config["config"], results["reader"]
    rule = rd["rule"]
    design = config["prereg"].get("design") or {}
    h = results.get("hand_check") or {}
    pa = results.get("permutation_anti") or {}
    L = [f"# Ghost/angel on the base model, pre-registered (cross_model.md §8; {cfg['mode']} run)", "",
         f"Governing plan [`{config['prereg']['path']}`](../{config['prereg']['path']}) §8 at commit "
         f"`{(config['prereg']['commit'] or 'uncommitted')[:12]}`; design [`{design.get('path', '?')}`]"
         f"(../{design.get('path', '')}) §2–§6 at `{(design.get('commit') or 'uncommitted')[:12]}`. "
         f"Model {config['model']['model_id']}, layer {cfg['layer']}, controls {cfg['n_random']} random + "
         f"{cfg['n_role_pairs']} role pairs, KL level(s) {cfg['kl_levels']}.", "",
         "## §8 primary outcome", "",
         f"- Judge agreement with the blind reader on the {h.get('n', 0)}-text hand-check sample: "
         f"**{C.pct(h.get('agreement'), 1)}** (bar {AGREEMENT_MIN:.0%}); on all {rd['labelled_n']} labelled texts "
         f"{C.pct(rd['judge_agreement_all'], 1)}.",
         f"- Reader's supernatural share in the {rd['sample_n']}-text sample: anti-axis {rd['anti_axis']['k']}/"
         f"{rd['anti_axis']['n']}, controls {rd['controls']['k']}/{rd['controls']['n']}"
         + (f"; Fisher exact one-sided p = {rule['fisher']['p_value']:.3g} (odds ratio "
            f"{A._num(rule['fisher']['odds_ratio'], 2)})." if rule.get("fisher") else "."),
         f"- Primary: **{rule['primary']}** → **{rule['word']}**.",
         f"- The assistant-axis rule (judge): **{results['verdict']['h1']}**"
         + (f"; with {pa.get('n_controls')} control directions the permutation test's smallest p is "
            f"{pa.get('min_p', float('nan')):.3f}, so by itself it cannot reach α = {cfg['alpha_test']}."
            if pa and pa.get("min_p", 0) > cfg["alpha_test"] else "."), ""]
    if rd["label_counts"]:
        L += ["Reader's labels: " + ", ".join(f"{k} {v}" for k, v in rd["label_counts"].items()) + ".", ""]
    k2 = rd.get("second_reader")
    if k2:
        L += [f"Second, independent reader ({', '.join(k2['labellers'])}) on {k2['n']} of the same texts: Cohen's κ "
              f"{k2['kappa']:.3f}, raw agreement {C.pct(k2['raw_agreement'], 1)}; supernatural by both "
              f"{k2['supernatural_both']}, by either {k2['supernatural_either']}. Only the primary reader's labels "
              "enter the rules.", ""]
    body = A.render(results, config).split("\n", 1)[1]
    return "\n".join(L) + "\n## The assistant-axis design's report on these records\n" + body


def figure(results: Mapping[str, Any], records: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
           path: Path) -> Path:
    """Supernatural share by group, two instruments side by side: the judge over every generation (with Wilson
    intervals) and the blind reader over the 240 (the primary outcome when the judge's agreement is below the bar)."""
    import plotly.graph_objects as go

    from persona_vectors.plotting.output import write_html
    from persona_vectors.stats import wilson

    per, rd = results["per_direction"], results["reader"]
    groups = {"anti-axis": [per.get("anti_axis")], "pro-axis": [per.get("pro_axis")], "unsteered": [per.get("unsteered")],
              "controls": [v for v in per.values() if v["kind"] in A.CONTROL_KINDS]}
    fig = go.Figure()

    def bars(name: str, counts: Sequence[tuple[str, int, int]]) -> None:
        """One bar per (group, k, n) with n > 0: the share in percent and its 95 % Wilson interval."""
        xs, ys, lo, hi = [], [], [], []
        for g, k, n in counts:
            if n:
                w = wilson(k, n)
                xs.append(g), ys.append(100 * k / n), lo.append(100 * (k / n - w.lo)), hi.append(100 * (w.hi - k / n))
        fig.add_trace(go.Bar(x=xs, y=ys, name=name, error_y={"type": "data", "array": hi, "arrayminus": lo}))

    bars("judge (all generations)", [(g, sum(v["k"] for v in vs if v), sum(v["n"] for v in vs if v))
                                     for g, vs in groups.items()])
    bars("blind reader (the 240)", [(g, rd[key]["k"], rd[key]["n"])
                                    for g, key in (("anti-axis", "anti_axis"), ("controls", "controls"))])
    h = results.get("hand_check") or {}
    fig.update_layout(template="plotly_white", barmode="group", width=900, height=480,
                      title=f"{config['model']['model_id'].split(' ')[0]}, layer {config['config']['layer']}, KL "
                            f"{config['config']['kl_levels']} nats: supernatural self-descriptions "
                            f"(judge–reader agreement {C.pct(h.get('agreement'), 0)}; primary: {rd['rule']['primary']}, "
                            f"{rd['rule']['word']})",
                      yaxis_title="supernatural share (%), 95 % Wilson interval", title_font_size=13)
    return write_html(fig, path)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json and report.md from the run directory."""
    return R.write_report(out, NAME, summarize, render, figures=[("shares.html", figure)],
                          headline=lambda r: r["reader"]["rule"]["word"])


# ============================================================================================ entry point
def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    ap = R.parser(__doc__, quick_help="smoke test on the base model (never a verdict)")
    ap.add_argument("--export-blind", type=Path, metavar="FILE")
    ap.add_argument("--import-labels", type=Path, metavar="FILE")
    ap.add_argument("--labeller", default=None)
    ap.add_argument("--second", action="store_true", help="the labels are an independent second reader's (κ only)")
    a = ap.parse_args(argv)
    cfg = preset(quick=a.quick, out=a.out, threads=a.threads)
    out = Path(cfg.out)
    if a.export_blind:
        n = export_blind(out, a.export_blind)
        print(f"wrote {n} blind texts to {a.export_blind}")
        return n
    if a.import_labels:
        if not a.labeller:
            ap.error("--import-labels needs --labeller NAME")
        return import_labels(out, a.import_labels, a.labeller, second=a.second)
    if a.report_only:
        return report(out)
    return run(cfg, resume=a.resume)


if __name__ == "__main__":
    main()
