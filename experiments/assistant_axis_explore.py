"""Exploratory (NOT pre-registered) read-outs on the pre-registered assistant-axis run's directions.

    python experiments/assistant_axis_explore.py [--prereg-run DIR] [--out DIR] [--threads N] [--quick]
    python experiments/assistant_axis_explore.py --report-only [--out DIR]

The issue asked for two secondary analyses that the committed plan (``experiments/prereg/assistant_axis.md``)
does not contain, so they are run here and reported as exploratory, apart from the verdict:

1. **Balanced identity read-out** (``group_readout`` on the ``v1`` candidate set: 8 groups × 6 candidates,
   per-token mean scoring, 4 identity questions) under every direction of the pre-registered run at each
   calibrated KL level, with the unsteered read-out as prior. Per group: mass, lift over the prior (mass −
   prior) and the robustness check (leave-one-out and distractor groups). The anti-axis's supernatural lift
   is ranked among the 40 controls' at each level (a permutation p over directions, descriptive).
2. **Nearest roles** (geometry, no generation): the cosine of each signed direction with every catalogue
   role's offset from the mean of all role means at the steered layer. For the anti- and pro-axis: the 10
   nearest roles and their categories; for every direction: the mean cosine of the supernatural roles.

Directions and strengths are the pre-registered run's (rebuilt with its code and read from its
``calibration`` records), so nothing here is tuned. Also copied in (as ``judge_share`` records): each
direction's supernatural share by the judge from that run, to relate the read-out to the generations.

Records: ``group_readout`` (score matrices, so :func:`summarize` rebuilds every mass from them),
``role_cosines``, ``judge_share``. ``python experiments/recompute.py <out>`` replays results and report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import assistant_axis_prereg as A  # noqa: E402
import records as RC  # noqa: E402

NAME = "assistant_axis_explore"
CANDIDATE_SET = "v1"
N_NEAREST = 10


def _group_readout_rows(model: Any, dirs: Sequence[Mapping[str, Any]], cal: Mapping[str, Mapping[str, Any]],
                        levels: Sequence[float], layer: int, done: set[tuple]) -> Any:
    """Yield one ``group_readout`` record per (direction, level) not in ``done`` (plus the unsteered one)."""
    from persona_vectors import steer
    from persona_vectors.readout import group_readout

    def rec(gr: Any) -> dict[str, Any]:
        return {"scores": [list(r) for r in gr.scores],
                "distractor_scores": {d: [list(r) for r in v] for d, v in (gr.distractor_scores or {}).items()}}

    if ("unsteered", None) not in done:
        gr = group_readout(model, CANDIDATE_SET, prior=None)
        yield {"kind": "group_readout", "direction": "unsteered", "dkind": "unsteered", "level": None,
               "alpha_rel": 0.0, **rec(gr)}
    for d in dirs:
        for lv in levels:
            a = cal[d["id"]]["alpha_rel"].get(str(lv))
            if a is None or (d["id"], lv) in done:
                continue
            with steer(model, d["vec"], float(a), layers=[layer], relative=True):
                gr = group_readout(model, CANDIDATE_SET, prior=None)
            yield {"kind": "group_readout", "direction": d["id"], "dkind": d["kind"], "level": lv,
                   "alpha_rel": float(a), **rec(gr)}


def role_cosines(model: Any, cfg: Any, dirs: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict]:
    """``role_cosines`` records (signed direction · unit role offset) and ``{role: category}``."""
    import torch

    from persona_vectors import Site
    from persona_vectors.datasets import get_role, load_roles
    from persona_vectors.personas import role_means

    names = cfg.roles or [r.name for r in load_roles()]
    rm = role_means(model, names, n_questions=cfg.role_questions, n_prompts=cfg.role_prompts, layers=[cfg.layer],
                    max_new_tokens=32, progress=False)
    k = rm.sites.index(Site(cfg.layer))
    roles = sorted(rm.means)
    M = torch.stack([rm.means[r][k].double() for r in roles])
    off = M - M.mean(0, keepdim=True)
    off = off / off.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows = []
    for d in dirs:
        v = d["sign"] * d["vec"].double()
        c = (off @ (v / v.norm())).tolist()
        rows.append({"kind": "role_cosines", "direction": d["id"], "dkind": d["kind"], "sign": d["sign"],
                     "cos": dict(zip(roles, c))})
    return rows, {r: get_role(r).category for r in roles}


def run(prereg_run: Path, out: Path, threads: int = 0, quick: bool = False) -> dict[str, Any]:
    """Measure the read-outs for the pre-registered run in ``prereg_run``; write records, results and report."""
    t0 = time.perf_counter()
    pconf = RC.read_json(prereg_run / RC.CONFIG)
    precs = RC.read_records(prereg_run / RC.RECORDS)
    cfg = A.Config.preset(quick=pconf["config"]["mode"] == "quick", threads=threads)
    for k in ("layer", "kl_levels", "n_random", "n_role_pairs", "roles", "role_questions", "role_prompts", "seed"):
        setattr(cfg, k, pconf["config"][k])
    out.mkdir(parents=True, exist_ok=True)
    records = RC.Records(out / RC.RECORDS, fresh=False)
    model = C.load(cfg)
    dirs = A.build_directions(model, cfg)
    if [d["id"] for d in dirs] != [d["id"] for d in pconf["directions"]]:
        raise SystemExit(f"the rebuilt directions differ from {prereg_run}'s: not the same run")
    if quick:
        dirs = dirs[:4]
    cal = {r["direction"]: r for r in RC.of_kind(precs, "calibration")}
    role_cat: dict[str, str] = {}
    if not RC.of_kind(records.rows, "role_cosines"):
        rows, role_cat = role_cosines(model, cfg, dirs)
        records.write(rows)
    else:
        _, role_cat = role_cosines(model, cfg, dirs[:1])
    n_gen, n_score = len(RC.of_kind(precs, "generation")), len(RC.of_kind(precs, "score"))
    if not RC.of_kind(records.rows, "judge_share") and n_gen and n_score == n_gen:  # only from a finished run
        sc = {(r["batch"], r["direction"], r["level"], r["question_id"], r["sample"]): r["label"]
              for r in RC.of_kind(precs, "score")}
        share: dict[tuple, list[int]] = {}
        for g in RC.of_kind(precs, "generation"):
            lab = sc.get((g["batch"], g["direction"], g["level"], g["question_id"], g["sample"]))
            if lab is not None:
                share.setdefault((g["direction"], g["level"]), []).append(int(lab == A.SUPER))
        records.write([{"kind": "judge_share", "direction": d, "level": lv, "n": len(v), "k": sum(v)}
                       for (d, lv), v in sorted(share.items(), key=lambda x: (x[0][0], x[0][1] or 0))])
    done = {(r["direction"], r["level"]) for r in RC.of_kind(records.rows, "group_readout")}
    n_todo = 1 + len(dirs) * len(cfg.kl_levels) - len(done)
    for i, rec in enumerate(_group_readout_rows(model, dirs, cal, cfg.kl_levels, cfg.layer, done)):
        records.add(**rec)
        C.say(f"group read-out {i + 1}/{n_todo}: {rec['direction']} KL {rec['level']}")
    RC.write_json(out / RC.CONFIG, {
        "experiment": NAME, "config": {"mode": "quick" if quick else "default", "out": str(out), "seed": cfg.seed,
                                       "layer": cfg.layer, "kl_levels": cfg.kl_levels},
        "prereg_run": {"dir": str(prereg_run), "plan": pconf["prereg"], "code": pconf["environment"].get("git_commit")},
        "candidate_set": CANDIDATE_SET, "role_categories": role_cat,
        "directions": [{k: v for k, v in d.items() if k != "vec"} for d in dirs],
        "timings_s": {"total_this_session": round(time.perf_counter() - t0, 1)}, **RC.provenance()})
    return report(out)


def report(out: Path) -> dict[str, Any]:
    """Recompute results.json and report.md from the records and config."""
    config = RC.read_json(out / RC.CONFIG)
    results = RC.roundtrip(summarize(RC.read_records(out / RC.RECORDS), config))
    RC.write_json(out / RC.RESULTS, results)
    (out / RC.REPORT).write_text(render(results, config), encoding="utf-8")
    C.say(f"wrote {out / RC.REPORT}")
    return results


# ============================================================================================ pure part
def _perm(stat: float, controls: Sequence[float]) -> dict[str, Any]:
    c = np.asarray(controls, dtype=float)
    return {"value": stat, "p_value": float((1 + np.sum(c >= stat)) / (1 + len(c))), "rank": int(1 + np.sum(c > stat)),
            "n_controls": int(len(c)), "control_median": float(np.median(c)) if len(c) else None,
            "control_p90": float(np.quantile(c, 0.9)) if len(c) else None}


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every reported number, from the records (group masses are rebuilt from the stored score matrices)."""
    from persona_vectors.readout import GroupReadout

    grs = RC.of_kind(records, "group_readout")
    prior = next(r for r in grs if r["direction"] == "unsteered")

    def build(r: Mapping[str, Any]) -> Any:
        ds = r["distractor_scores"] or None
        return GroupReadout.from_scores(CANDIDATE_SET, r["scores"], None if r is prior else prior["scores"],
                                        distractor_scores=ds,
                                        distractor_prior_scores=None if r is prior else (prior["distractor_scores"] or None))

    pr = build(prior)
    rows = []
    for r in grs:
        if r is prior:
            continue
        g = build(r)
        lift = g.lift or {}
        rows.append({"direction": r["direction"], "dkind": r["dkind"], "level": r["level"], "alpha_rel": r["alpha_rel"],
                     "mass": g.mass, "lift": {k: v["diff"] for k, v in lift.items()}, "top_group": g.top_group,
                     "top_lift_group": g.top_lift_group, "robust": g.robust})
    levels = config["config"]["kl_levels"]
    ctrl = {"random", "role_pair"}
    per_level = []
    for lv in levels:
        at = [x for x in rows if x["level"] == lv]
        anti = next((x for x in at if x["dkind"] == "anti_axis"), None)
        pro = next((x for x in at if x["dkind"] == "pro_axis"), None)
        cs = [x for x in at if x["dkind"] in ctrl]
        entry: dict[str, Any] = {"level": lv, "n_controls": len(cs)}
        for name, x in (("anti_axis", anti), ("pro_axis", pro)):
            if x is not None:
                entry[name] = {"lift": x["lift"], "mass": x["mass"], "top_group": x["top_group"],
                               "top_lift_group": x["top_lift_group"], "robust": x["robust"],
                               "supernatural_lift_perm": _perm(x["lift"]["supernatural"],
                                                               [c["lift"]["supernatural"] for c in cs])}
        entry["controls_top_lift_groups"] = dict(sorted(
            {g: sum(c["top_lift_group"] == g for c in cs) for g in {c["top_lift_group"] for c in cs}}.items()))
        per_level.append(entry)
    cat = config["role_categories"]
    near = {}
    sup_cos = {}
    for r in RC.of_kind(records, "role_cosines"):
        order = sorted(r["cos"], key=lambda k: -r["cos"][k])
        sup = [r["cos"][k] for k in r["cos"] if cat.get(k) == "supernatural"]
        sup_cos[r["direction"]] = {"dkind": r["dkind"], "mean_cos_supernatural": float(np.mean(sup)) if sup else None}
        if r["dkind"] in ("anti_axis", "pro_axis"):
            near[r["direction"]] = [{"role": k, "category": cat.get(k), "cos": r["cos"][k]} for k in order[:N_NEAREST]]
    ctrl_sup = [v["mean_cos_supernatural"] for v in sup_cos.values() if v["dkind"] in ctrl]
    geometry = {d: _perm(sup_cos[d]["mean_cos_supernatural"], ctrl_sup) for d in ("anti_axis", "pro_axis") if d in sup_cos}
    js = {(r["direction"], r["level"]): r for r in RC.of_kind(records, "judge_share")}
    pairs = [(x["lift"]["supernatural"], js[(x["direction"], x["level"])]["k"] / js[(x["direction"], x["level"])]["n"])
             for x in rows if (x["direction"], x["level"]) in js and js[(x["direction"], x["level"])]["n"]]
    rho = None
    if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
        from scipy.stats import spearmanr

        rho = float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
    return {"prior": pr.mass, "per_level": per_level, "readouts": rows, "nearest_roles": near,
            "supernatural_geometry": geometry,
            "readout_vs_judge": {"n_cells": len(pairs), "spearman_rho": rho}}


def _g(x: Optional[float], nd: int = 3) -> str:
    return "–" if x is None else f"{x:+.{nd}f}"


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report (markdown)."""
    pre = config["prereg_run"]
    groups = list(results["prior"])
    L = ["# Assistant axis rerun 1: exploratory read-outs (not pre-registered)", "",
         f"On the directions and calibrated strengths of the pre-registered run `{pre['dir']}` (plan commit "
         f"`{(pre['plan'].get('commit') or '')[:12]}`). The plan did not contain these analyses, so they "
         "do not enter its verdict; they were run after the generations, on the same directions, with nothing "
         "tuned. Mode: " + config["config"]["mode"] + ".", "",
         "## Balanced identity read-out (v1: 8 groups × 6, mean per-token scoring, 4 questions)", "",
         "Unsteered group masses: " + ", ".join(f"{g} {results['prior'][g]:.3f}" for g in groups) + ".", ""]
    hdr = ["KL (nats)", "direction", *[f"lift {g}" for g in groups], "top lift group", "robust"]
    body = []
    for e in results["per_level"]:
        for name in ("anti_axis", "pro_axis"):
            if name in e:
                x = e[name]
                body.append([e["level"], name, *[_g(x["lift"][g]) for g in groups], x["top_lift_group"], x["robust"]])
    L += [C.md_table(hdr, body), ""]
    L += ["Supernatural lift of the anti-axis among the controls (rank 1 = largest; one-sided p over directions):", ""]
    for e in results["per_level"]:
        if "anti_axis" in e:
            p = e["anti_axis"]["supernatural_lift_perm"]
            q = e.get("pro_axis", {}).get("supernatural_lift_perm")
            L.append(f"- KL {e['level']}: anti-axis {_g(p['value'])}, rank {p['rank']} of {p['n_controls'] + 1}, "
                     f"p = {p['p_value']:.3f} (controls median {_g(p['control_median'])}, 90th pct "
                     f"{_g(p['control_p90'])})" + ("" if q is None else f"; pro-axis {_g(q['value'])}, p = {q['p_value']:.3f}")
                     + "; controls' top lift groups: " + ", ".join(f"{g} {n}" for g, n in e["controls_top_lift_groups"].items()))
    rv = results["readout_vs_judge"]
    L += ["", f"Across all {rv['n_cells']} (direction, level) cells, Spearman ρ between the read-out's supernatural "
          f"lift and the judge's supernatural share of the generations: "
          + ("undefined (a constant input, or the run's scores were not complete)" if rv["spearman_rho"] is None
             else _g(rv["spearman_rho"], 2)) + ".", "",
          "## Nearest roles (cosine of the signed direction with each role's offset from the mean role)", ""]
    for d, rows in results["nearest_roles"].items():
        L.append(f"- **{d}**: " + "; ".join(f"{r['role']} ({r['category']}, {r['cos']:+.2f})" for r in rows))
    for d, p in results["supernatural_geometry"].items():
        L.append(f"- {d}: mean cosine with the supernatural roles {_g(p['value'])}, rank {p['rank']} of "
                 f"{p['n_controls'] + 1} among the controls (p = {p['p_value']:.3f}).")
    return "\n".join(L) + "\n"


def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--prereg-run", type=Path, default=Path("runs/assistant_axis_prereg"))
    ap.add_argument("--out", type=Path, default=Path("runs/assistant_axis_explore"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="4 directions only (a smoke test)")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    if a.report_only:
        return report(a.out)
    return run(a.prereg_run, a.out, threads=a.threads, quick=a.quick)


if __name__ == "__main__":
    main()
