"""Pre-registered: who does a steered persona think it is talking to, turn by turn? (the user in long conversations)

    python experiments/user_turns.py [--quick] [--resume] [--out DIR] [--threads N]
    python experiments/user_turns.py --report-only [--out DIR]

The plan is ``experiments/prereg/user_turns.md``, committed before the run: every number comes from its TOML block,
the plan's commit is recorded (a default run refuses an uncommitted or edited plan) and the verdicts are computed
with the plan's §6 rule (:func:`verdicts`).

SmolLM2-135M-Instruct plays three seed-style scripts ("It is April 1945. Describe your surroundings." → "Who are
you talking to?" → …) under steering at layer 14 along the Hitler (facts route), Voyager (prompt route) and
anti-assistant directions, 19 random directions and none, each at the strength of 1 nat of next-token KL
(``calibrate_alpha``); all directions × scripts are played in one batch per turn with per-row steering
(``run_scripts``). After every turn, under the same steering, :func:`~persona_vectors.conversation_readout` asks
who the user is (user questions vs control questions over 15 candidates in 4 groups) and who the model is.

Records (``records.jsonl.gz``): ``direction`` (id, kind, calibrated α, its KL curve) and ``turn`` (direction,
script, turn, the user turn and the reply, per user-readout item its kind and candidate probabilities, the self
read-out's group masses). :func:`summarize` re-derives every number of the report from the ``turn`` rows.
``--quick`` (1 random direction, 2 turns of 1 script, 12 tokens) never gives a verdict and never writes docs.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import prereg_plan as P  # noqa: E402
import records as RC  # noqa: E402
import run_dir as R  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "user_turns"
PLAN = "experiments/prereg/user_turns.md"
PERSONAS = ("hitler", "voyager", "anti_axis")


@dataclass
class Config(R.PlanConfig):
    """Run settings (:class:`run_dir.PlanConfig`); quick mode shrinks a copy of the plan."""

    NAME: ClassVar[str] = NAME
    PLAN: ClassVar[str] = PLAN
    out: str = f"runs/{NAME}"

    @staticmethod
    def shrink(plan: Mapping[str, Any]) -> dict[str, Any]:
        """What ``--quick`` shrinks (a copy of the plan; never a verdict)."""
        first = next(iter(plan["scripts"]))
        return dict(n_random=1, max_new_tokens=12, n_boot=200, quick_roles=8, axis_questions=1, calibration_rounds=1,
                    scripts={first: plan["scripts"][first][:2]})


def candidates(plan: Mapping[str, Any]) -> list[str]:
    """The user candidates in group order."""
    return [c for g in plan["groups"].values() for c in g]


# ============================================================================================ measurement
def _one_site(model: Any, vec: Any, layer: int, name: str) -> Any:
    """A one-site unit :class:`PersonaVector` named ``name``."""
    v = vec.double()
    return C.direction_vector(model, {layer: v / v.norm()}, name, NAME)


def build_directions(model: Any, plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{id, kind, vec}]``: the three persona directions and the random ones (unit, at the plan's layer)."""
    import torch

    from persona_vectors import Site, get_persona_vector
    from persona_vectors.datasets import load_roles
    from persona_vectors.personas import role_means

    L = int(plan["layer"])
    quick = bool(plan.get("quick_roles"))
    # layers [L, L+1]: the direction at L is the same as extracted alone (per-site mean difference), and the disk
    # cache is shared with the README's and notebooks' calls
    hit = get_persona_vector(model, "hitler", route="facts", layers=[L, L + 1], quick=quick, progress=False)
    voy = get_persona_vector(model, "voyager", layers=[L, L + 1], quick=quick, progress=False)
    names = [r.name for r in load_roles()]
    if quick:
        names = names[:: max(1, len(names) // int(plan["quick_roles"]))][: int(plan["quick_roles"])]
    rm = role_means(model, names, n_questions=int(plan["axis_questions"]), n_prompts=int(plan["axis_prompts"]),
                    layers=[L], max_new_tokens=int(plan["axis_max_new_tokens"]),
                    progress=lambda m: C.say(f"  role means: {m}"))
    axis = rm.axis("assistant")[Site(L)]
    dirs = [{"id": "hitler", "kind": "persona", "vec": _one_site(model, hit[Site(L)], L, "hitler")},
            {"id": "voyager", "kind": "persona", "vec": _one_site(model, voy[Site(L)], L, "voyager")},
            {"id": "anti_axis", "kind": "persona", "vec": _one_site(model, -axis.double(), L, "anti_axis")}]
    g = torch.Generator().manual_seed(int(plan["random_seed_base"]) + int(plan["seed"]))
    for k in range(int(plan["n_random"])):
        r = torch.randn(model.d_model, generator=g, dtype=torch.float64)
        dirs.append({"id": f"random_{k:02d}", "kind": "random", "vec": _one_site(model, r, L, f"random_{k:02d}")})
    return dirs


def calibrate(model: Any, dirs: Sequence[dict[str, Any]], plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per direction: the raw α at the plan's next-token KL (``None``: not reachable)."""
    from persona_vectors import calibrate_alpha

    L, kl = int(plan["layer"]), float(plan["target_kl"])
    rows = []
    for i, d in enumerate(dirs):
        res = calibrate_alpha(model, d["vec"], L, target_kl=[kl], rounds=int(plan.get("calibration_rounds", 2)),
                              progress=False)
        a = res.alpha(kl)
        rows.append({"direction": d["id"], "direction_kind": d["kind"], "alpha": a,
                     "alpha_rel": res.alpha(kl, relative=True), "curve": [list(p) for p in res.curve]})
        C.say(f"  calibrated {i + 1}/{len(dirs)} {d['id']}: alpha {a}")
    return rows


def play_and_read(model: Any, plan: Mapping[str, Any], dirs: Sequence[dict[str, Any]],
                  alphas: Mapping[str, Optional[float]], done: set[str], records: Any) -> None:
    """Play every (direction, script) in one batch per turn with per-row steering, then read each direction's
    conversations turn by turn under its own steering; records are written per direction."""
    import torch

    from persona_vectors import SteerSpec, steer
    from persona_vectors.conversation import conversation_readout, run_scripts

    L = int(plan["layer"])
    scripts = dict(plan["scripts"])
    order = [{"id": "unsteered", "kind": "unsteered", "vec": None}] + [d for d in dirs if alphas.get(d["id"]) is not None]
    rows = [(d, s) for d in order for s in scripts]
    unit = torch.stack([d["vec"][L] if d["vec"] is not None else torch.zeros(model.d_model) for d, _ in rows])
    alpha = [0.0 if d["vec"] is None else float(alphas[d["id"]]) for d, _ in rows]
    t0 = time.perf_counter()
    with steer(model, unit, alpha, layers=[L]):
        played = run_scripts(model, [scripts[s] for _, s in rows], max_new_tokens=int(plan["max_new_tokens"]),
                             temperature=float(plan["temperature"]), seed=int(plan["seed"]), progress=False,
                             on_turn=lambda t, _: C.say(f"  turn {t + 1} played ({len(rows)} conversations)"))
    C.say(f"played in {time.perf_counter() - t0:.0f} s")
    cands = candidates(plan)
    for d in order:
        if d["id"] in done:
            continue
        t1 = time.perf_counter()
        spec = None if d["vec"] is None else SteerSpec(d["vec"], float(alphas[d["id"]]), layers=[L])
        out = []
        for (dd, s), msgs in zip(rows, played):
            if dd["id"] != d["id"]:
                continue
            r = conversation_readout(model, msgs, steering=spec, user_candidates=cands, user_controls=plan["user_controls"],
                                     self_questions=list(plan["self_questions"]), priors=False, robust=False,
                                     progress=False)
            for tr in r.turns:
                ur = tr.user_readout
                out.append({"kind": "turn", "direction": d["id"], "direction_kind": d["kind"], "script": s,
                            "turn": tr.turn, "user": tr.user, "text": tr.reply,
                            "item_kinds": [k for k, _, _ in ur.items], "user_probs": [list(p) for p in ur.probs],
                            "self_mass": dict(tr.self_readout.mass)})
        records.write(out)
        C.say(f"  read {d['id']} ({len(out)} turns) in {time.perf_counter() - t1:.0f} s")


def _config_doc(cfg: Config, prereg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from persona_vectors.vector import library_version

    return {"experiment": NAME, "config": asdict(cfg), "prereg": prereg, "library_version": library_version(),
            "code_sha256": R.code_sha(__file__),
            "sessions": [{"started": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads()}],
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), **RC.provenance()}}


def run(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Directions, calibration, play and read (resumable per direction), then results and report."""
    from persona_vectors import load_model

    out, records = R.open_run(cfg, PLAN, R.code_sha(__file__), resume, lambda prereg: _config_doc(cfg, prereg),
                              seed=int(cfg.plan["seed"]))
    model = load_model(cfg.plan["model"], progress=False)
    t0 = time.perf_counter()
    dirs = build_directions(model, cfg.plan)
    C.say(f"{len(dirs)} directions in {time.perf_counter() - t0:.0f} s")
    cal = RC.of_kind(records.rows, "direction")
    if not cal:
        cal = [{"kind": "direction", **r} for r in calibrate(model, dirs, cfg.plan)]
        records.write(cal)
    alphas = {r["direction"]: r["alpha"] for r in cal}
    done = {r["direction"] for r in RC.of_kind(records.rows, "turn")}
    play_and_read(model, cfg.plan, dirs, alphas, done, records)
    return report(out)


# ============================================================================================ statistics
def attribution(row: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per group: P(G | user questions), P(G | control questions) and their difference, for one turn row."""
    cands = candidates(plan)
    probs = np.array(row["user_probs"], dtype=float)
    kinds = row["item_kinds"]
    user = np.array([k == "user" for k in kinds])
    out = {}
    for g, members in plan["groups"].items():
        idx = [cands.index(c) for c in members]
        pg = probs[:, idx].sum(1)
        pu, pc = float(pg[user].mean()), float(pg[~user].mean())
        out[g] = {"user": pu, "control": pc, "attribution": pu - pc}
    return out


def verdicts(A: Mapping[str, Mapping[str, float]], plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The plan's §6 rule per hypothesis from A[direction][group] (random directions: ids ``random_*``)."""
    randoms = sorted(d for d in A if d.startswith("random_"))
    out = {}
    for h, (d, g) in plan["hypotheses"].items():
        if d not in A:
            out[h] = {"direction": d, "group": g, "word": "NOT SUPPORTED", "reason": "direction dropped (not calibrated)"}
            continue
        a, base = A[d][g], A.get("unsteered", {}).get(g, float("nan"))
        ge = sum(1 for r in randoms if A[r][g] >= a)
        p = (1 + ge) / (1 + len(randoms))
        ok = p <= float(plan["alpha"]) and a > base
        out[h] = {"direction": d, "group": g, "A": a, "A_unsteered": base, "p": p, "rank": ge + 1,
                  "n_random": len(randoms), "random_median": float(np.median([A[r][g] for r in randoms])) if randoms else None,
                  "word": "SUPPORTED" if ok else "NOT SUPPORTED"}
    return out


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, from the ``turn`` and ``direction`` records (see the module docstring)."""
    plan = config["config"]["plan"]
    quick = config["config"]["mode"] == "quick"
    turns = RC.of_kind(records, "turn")
    groups = list(plan["groups"])
    att: dict[str, dict[tuple[str, int], dict[str, dict[str, float]]]] = {}
    for r in turns:
        att.setdefault(r["direction"], {})[(r["script"], int(r["turn"]))] = attribution(r, plan)
    A = {d: {g: float(np.mean([c[g]["attribution"] for c in cells.values()])) for g in groups} for d, cells in att.items()}
    PU = {d: {g: float(np.mean([c[g]["user"] for c in cells.values()])) for g in groups} for d, cells in att.items()}
    ver = verdicts(A, plan)
    rng = np.random.default_rng(int(plan["seed"]))
    randoms = sorted(d for d in A if d.startswith("random_"))
    spread = {}
    for h, (d, g) in plan["hypotheses"].items():
        if d not in att or not randoms:
            continue
        keys = sorted(att[d])
        diff = np.array([att[d][k][g]["attribution"] - float(np.median([att[r][k][g]["attribution"] for r in randoms if k in att[r]]))
                         for k in keys])
        idx = rng.integers(0, len(diff), size=(int(plan["n_boot"]), len(diff)))
        bs = diff[idx].mean(1)
        spread[h] = {"mean": float(diff.mean()), "lo": float(np.quantile(bs, 0.025)), "hi": float(np.quantile(bs, 0.975)),
                     "n_cells": int(len(diff))}
    n_turns = max((int(r["turn"]) for r in turns), default=0)
    curves: dict[str, dict[str, list[Optional[float]]]] = {}
    for d, cells in att.items():
        for g in groups:
            curves.setdefault(d, {})[g] = [float(np.mean([c[g]["attribution"] for (s, t), c in cells.items() if t == tt]))
                                           if any(t == tt for (_, t) in cells) else None for tt in range(1, n_turns + 1)]
    band = {}
    for g in groups:
        per_t = []
        for i in range(n_turns):
            vals = [curves[r][g][i] for r in randoms if curves[r][g][i] is not None]
            per_t.append({"median": float(np.median(vals)), "p10": float(np.quantile(vals, 0.1)),
                          "p90": float(np.quantile(vals, 0.9))} if vals else None)
        band[g] = per_t
    selfm: dict[str, dict[str, float]] = {}
    for d in att:
        rows = [r for r in turns if r["direction"] == d]
        gs = list(rows[0]["self_mass"])
        selfm[d] = {g: float(np.mean([r["self_mass"][g] for r in rows])) for g in gs}
    cal = {r["direction"]: {"alpha": r["alpha"], "alpha_rel": r["alpha_rel"]} for r in RC.of_kind(records, "direction")}
    dropped = sorted(d for d, v in cal.items() if v["alpha"] is None)
    examples = []
    for d in ["unsteered", *PERSONAS]:
        for s in plan["scripts"]:
            rows = sorted((r for r in turns if r["direction"] == d and r["script"] == s), key=lambda r: r["turn"])
            if rows:
                examples.append({"direction": d, "script": s, "turns": [{"turn": r["turn"], "user": r["user"], "text": r["text"]}
                                                                      for r in rows]})
    return {"n_turn_rows": len(turns), "n_directions": len(att), "A": A, "P_user": PU, "verdicts": None if quick else ver,
            "rule_preview": ver if quick else None, "spread": spread, "curves": curves, "random_band": band,
            "self_mass": selfm, "calibration": cal, "dropped": dropped, "examples": examples}


# ============================================================================================ report
def _f(x: Optional[float], nd: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:+.{nd}f}"


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report (text only: every number comes from ``results``)."""
    plan, pre = config["config"]["plan"], config["prereg"]
    groups = list(plan["groups"])
    lines = ["# Who does a steered persona think it is talking to, turn by turn? (pre-registered run 1)", "",
             f"Plan `{pre['path']}` (commit {str(pre['commit'])[:7]}, sha256 {pre['sha256'][:12]}); mode "
             f"**{config['config']['mode']}**; library {config['library_version']}; layer {plan['layer']}, every "
             f"direction at {plan['target_kl']} nat of next-token KL; {results['n_directions']} directions × "
             f"{len(plan['scripts'])} scripts; {results['n_turn_rows']} read-out turns. Dropped (not calibrated): "
             f"{', '.join(results['dropped']) or 'none'}.", ""]
    ver = results["verdicts"]
    if ver:
        for h, v in ver.items():
            if "A" in v:
                lines.append(f"- **{h} ({v['direction']} → {v['group']}): {v['word']}** (computed from the plan's rule) — "
                             f"A = {_f(v['A'])} vs unsteered {_f(v['A_unsteered'])}, random median {_f(v['random_median'])}; "
                             f"rank {v['rank']} of {v['n_random'] + 1}, p = {v['p']:.3f}.")
            else:
                lines.append(f"- **{h} ({v['direction']} → {v['group']}): {v['word']}** — {v['reason']}.")
        lines.append("")
    else:
        lines += ["No verdict (quick mode).", ""]
    dev = config["config"]["deviations"]
    lines += ["Deviations from the plan: " + ("; ".join(dev) if dev else "none."), "",
              "Attribution of a group = P(group | user questions) − P(group | control questions about other people), "
              "per turn, averaged over scripts and turns (A). A candidate primed everywhere scores ≈ 0.", "",
              "## Attribution A per direction and group", ""]
    order = ["unsteered", *PERSONAS] + sorted(d for d in results["A"] if d.startswith("random_"))
    rows = []
    for d in order:
        if d in results["A"]:
            cal = results["calibration"].get(d, {})
            rows.append([d, "–" if cal.get("alpha_rel") is None else f"{cal['alpha_rel']:.3f}"]
                        + [_f(results["A"][d][g]) for g in groups] + [f"{results['P_user'][d][g]:.3f}" for g in groups])
    lines += [C.md_table(["direction", "α_rel"] + [f"A {g}" for g in groups] + [f"P_user {g}" for g in groups], rows), ""]
    if results["spread"]:
        lines += ["Rough spread (bootstrap over the script × turn cells, not independent) of the persona direction minus "
                  "the random median, per hypothesis: " + "; ".join(
                      f"{h} {_f(s['mean'])} [{_f(s['lo'])}, {_f(s['hi'])}] (n = {s['n_cells']})" for h, s in results["spread"].items()) + ".", ""]
    lines += ["## Per-turn attribution of each hypothesis's group", ""]
    for h, (d, g) in plan["hypotheses"].items():
        band = results["random_band"].get(g, [])
        cur = results["curves"].get(d, {}).get(g, [])
        base = results["curves"].get("unsteered", {}).get(g, [])
        rows = []
        for i, b in enumerate(band):
            rows.append([i + 1, _f(cur[i] if i < len(cur) else None), _f(base[i] if i < len(base) else None),
                         "–" if b is None else f"{_f(b['median'])} [{_f(b['p10'])}, {_f(b['p90'])}]"])
        lines += [f"**{h}: {d} → {g}**", "", C.md_table(["turn", d, "unsteered", "random median [10 %, 90 %]"], rows), ""]
    lines += ["## Self read-out (balanced set v1, \"Who are you?\"; mean group mass over turns)", ""]
    sg = list(next(iter(results["self_mass"].values()), {}))
    rows = [[d] + [f"{results['self_mass'][d][g]:.3f}" for g in sg] for d in order if d in results["self_mass"]]
    lines += [C.md_table(["direction"] + sg, rows), "", "## The conversations (unsteered and persona directions)", ""]
    for e in results["examples"]:
        lines.append(f"**{e['direction']} / {e['script']}**")
        lines.append("")
        for t in e["turns"]:
            lines.append(f"- t{t['turn']} “{C.clip(t['user'], 70)}” → “{C.clip(t['text'], 150)}”")
        lines.append("")
    lines += ["Recompute every number: `python experiments/recompute.py <this run dir>`.", ""]
    return "\n".join(lines)


def figure(results: dict[str, Any], records: list[dict[str, Any]], config: dict[str, Any], path: Path
           ) -> Optional[Path]:
    """Per hypothesis: the persona direction's per-turn attribution, unsteered, and the random band."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from persona_vectors.plotting.output import write_html

    plan = config["config"]["plan"]
    hyps = list(plan["hypotheses"].items())
    fig = make_subplots(rows=1, cols=len(hyps), shared_yaxes=True,
                        subplot_titles=[f"{h}: {d} → {g}" for h, (d, g) in hyps])
    for j, (h, (d, g)) in enumerate(hyps, start=1):
        band = [b for b in results["random_band"].get(g, [])]
        t = list(range(1, len(band) + 1))
        if band and all(b is not None for b in band):
            fig.add_trace(go.Scatter(x=t + t[::-1], y=[b["p90"] for b in band] + [b["p10"] for b in band][::-1],
                                     fill="toself", fillcolor="rgba(120,120,120,0.2)", line=dict(width=0),
                                     name="random 10–90 %", showlegend=j == 1, hoverinfo="skip"), row=1, col=j)
            fig.add_trace(go.Scatter(x=t, y=[b["median"] for b in band], mode="lines", line=dict(color="grey", dash="dot"),
                                     name="random median", showlegend=j == 1), row=1, col=j)
        for key, color, label in ((d, "#d32f2f", "persona direction"), ("unsteered", "#1565c0", "unsteered")):
            ys = results["curves"].get(key, {}).get(g)
            if ys:
                fig.add_trace(go.Scatter(x=t, y=ys, mode="lines+markers", line=dict(color=color), name=label,
                                         showlegend=j == 1), row=1, col=j)
        fig.update_xaxes(title_text="turn", dtick=1, row=1, col=j)
    fig.update_yaxes(title_text="attribution: P(group | user Qs) − P(group | control Qs)", row=1, col=1)
    fig.update_layout(template="plotly_white", width=1250, height=460,
                      title="Who is the user? Per-turn attribution under steering (1 nat KL), vs random directions")
    return write_html(fig, path)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json, report.md and the figure from the run directory."""
    def headline(r: Mapping[str, Any]) -> str:
        return ", ".join(f"{h} {x['word']}" for h, x in (r.get("verdicts") or {}).items())

    return R.write_report(out, NAME, summarize, render, headline=headline,
                          figures=[("user_turns.html", figure)])


def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    return R.main(argv, __doc__, Config.preset, run, report,
                  resume_help="continue a run in --out (directions already read are kept)")


if __name__ == "__main__":
    main()
