"""Does a model become a scientist from the names of its coauthors? Identification in bits (pre-registered).

    python experiments/coauthors.py            # the default run (plan experiments/prereg/coauthors.md)
    python experiments/coauthors.py --quick    # smoke test: never a verdict, never writes docs/

The plan (its TOML block read here) fixes everything: the dataset (``coauthors_v1``; only ``certain`` pairs that
do not give the target away are evidence), the candidates (every scientist), the k grid, draws and templates, the
shuffled-list control, the LoRA finetunes on the lists and on shuffled lists, the tests and the decision rule.

Records (one per read-out): ``baseline`` (the bare question), ``context`` (one prompt with k names, real or
shuffled, its probabilities over the candidates), ``ft_baseline`` (the unfinetuned model on the evaluation
questions) and ``finetune`` (one LoRA: its list, final loss, read-outs and sampled answers). ``summarize``
recomputes every number from them (``experiments/recompute.py`` replays it).
"""

from __future__ import annotations

import math
import platform
import random
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
NAME = "coauthors"
PLAN = "experiments/prereg/coauthors.md"
CONDITIONS = ("real", "shuffled")


@dataclass
class Config(R.PlanConfig):
    """Run settings (:class:`run_dir.PlanConfig`); quick mode shrinks a copy of the plan."""

    NAME: ClassVar[str] = NAME
    PLAN: ClassVar[str] = PLAN
    out: str = f"runs/{NAME}"

    @staticmethod
    def shrink(plan: Mapping[str, Any]) -> dict[str, Any]:
        """What ``--quick`` shrinks (a copy of the plan; never a verdict)."""
        return dict(quick_scientists=3, ks=[0, 2], draws=1, templates=plan["templates"][:1], primary_k=2,
                    seeds=[0], quick_ft=1, max_steps=2, n_samples=1, max_new_tokens=8, n_perm=200, n_boot=200,
                    eval_questions=plan["eval_questions"][:1])


# ============================================================================================ data
def usable(sci: Any) -> list[str]:
    """The coauthors that count as evidence: certain pairs that do not give the target away."""
    return [c.name for c in sci.coauthors if c.certain and not c.gives_away]


def scientists(plan: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """(kept scientists in file order, dropped names): a scientist needs ``min_coauthors`` usable coauthors."""
    from persona_vectors.datasets import load_coauthors

    all_ = load_coauthors(plan["dataset"])
    kept = [s for s in all_ if len(usable(s)) >= int(plan["min_coauthors"])]
    dropped = [s.name for s in all_ if s not in kept]
    if plan.get("quick_scientists"):
        by_field: dict[str, list[Any]] = {}
        for s in kept:
            by_field.setdefault(s.field, []).append(s)
        kept = [v[0] for v in by_field.values()][: int(plan["quick_scientists"])]
    return kept, dropped


def candidates(scis: Sequence[Any]) -> tuple[list[str], dict[str, str]]:
    """Every scientist's first name variant, and ``{candidate: field}``."""
    cands = [s.name_variants[0] for s in scis]
    return cands, {s.name_variants[0]: s.field for s in scis}


def join_names(names: Sequence[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def draw_names(sci: Any, scis: Sequence[Any], k: int, condition: str, rng: random.Random) -> list[str]:
    """k of ``sci``'s usable coauthors (real), or k usable coauthors of the other scientists that are not on
    ``sci``'s own list (shuffled)."""
    if condition == "real":
        return rng.sample(usable(sci), k)
    own = {c.name for c in sci.coauthors}
    pool = sorted({n for s in scis if s is not sci for n in usable(s)} - own)
    return rng.sample(pool, k)


# ============================================================================================ run
def _readouts(model: Any, cands: Sequence[str], prompts: Sequence[str], plan: Mapping[str, Any]) -> list[list[float]]:
    from persona_vectors import identity_readout_batch

    ros = identity_readout_batch(model, list(cands), list(prompts), prefix=plan["prefix"], scoring="mean")
    return [list(r.probs) for r in ros]


def in_context(model: Any, plan: Mapping[str, Any], scis: Sequence[Any], cands: Sequence[str],
               records: RC.Records) -> None:
    """Baseline read-out, then every (scientist, k > 0, condition, draw, template) prompt (resumable per scientist)."""
    if not RC.of_kind(records.rows, "baseline"):
        records.write([{"kind": "baseline", "question": plan["question"],
                        "probs": _readouts(model, cands, [plan["question"]], plan)[0]}])
    done = {r["scientist"] for r in RC.of_kind(records.rows, "context")}
    for s in scis:
        if s.name in done:
            continue
        rng = random.Random(f"{plan['seed']}|{s.name}")
        rows, prompts = [], []
        for k in [k for k in plan["ks"] if k > 0]:
            for cond in CONDITIONS:
                for d in range(int(plan["draws"])):
                    names = draw_names(s, scis, k, cond, rng)
                    for ti, tpl in enumerate(plan["templates"]):
                        prompts.append(tpl.format(names=join_names(names)))
                        rows.append({"kind": "context", "scientist": s.name, "k": k, "condition": cond, "draw": d,
                                     "template": ti, "names": names})
        for row, probs in zip(rows, _readouts(model, cands, prompts, plan)):
            row["probs"] = probs
        records.write(rows)
        C.say(f"  in context: {s.name} ({len(rows)} prompts)")


def finetune_set(scis: Sequence[Any], plan: Mapping[str, Any]) -> list[Any]:
    """The first ``ft_per_field`` kept scientists of each field, in file order."""
    per: dict[str, list[Any]] = {}
    for s in scis:
        if len(per.setdefault(s.field, [])) < int(plan["ft_per_field"]):
            per[s.field].append(s)
    chosen = [s for v in per.values() for s in v]
    return chosen[: int(plan["quick_ft"])] if plan.get("quick_ft") else chosen


def out_of_context(model: Any, plan: Mapping[str, Any], scis: Sequence[Any], cands: Sequence[str],
                   records: RC.Records) -> None:
    """The unfinetuned baseline, then one LoRA per (scientist, condition, seed) (resumable per finetune)."""
    from persona_vectors.finetune import FinetuneConfig, finetune

    qs = list(plan["eval_questions"])
    if not RC.of_kind(records.rows, "ft_baseline"):
        records.write([{"kind": "ft_baseline", "questions": qs, "probs": _readouts(model, cands, qs, plan)}])
    done = {(r["scientist"], r["condition"], r["seed"]) for r in RC.of_kind(records.rows, "finetune")}
    for s in finetune_set(scis, plan):
        for cond in CONDITIONS:
            rng = random.Random(f"{plan['seed']}|ft|{s.name}|{cond}")
            names = usable(s) if cond == "real" else draw_names(s, scis, len(usable(s)), "shuffled", rng)
            convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": n}]
                     for n in names for q in plan["ft_questions"]]
            for seed in plan["seeds"]:
                if (s.name, cond, seed) in done:
                    continue
                cfg = FinetuneConfig(lora_r=int(plan["lora_r"]), lora_alpha=float(plan["lora_alpha"]),
                                     lr=float(plan["lr"]), batch_size=int(plan["batch_size"]),
                                     epochs=float(plan["epochs"]), seed=int(seed),
                                     max_steps=int(plan["max_steps"]) if plan.get("max_steps") else None)
                t0 = time.perf_counter()
                with finetune(model, convs, cfg, progress=False) as res:
                    probs = _readouts(model, cands, qs, plan)
                    samples = model.generate([plan["question"]] * int(plan["n_samples"]), temperature=0.8,
                                             max_new_tokens=int(plan["max_new_tokens"]), seed=int(seed))
                    losses = list(res.losses)
                records.write([{"kind": "finetune", "scientist": s.name, "condition": cond, "seed": seed,
                                "names": names, "n_examples": len(convs), "losses": losses,
                                "final_loss": float(np.mean(losses[-3:])) if losses else None,
                                "questions": qs, "probs": probs, "samples": samples,
                                "seconds": round(time.perf_counter() - t0, 1)}])
                C.say(f"  finetune {s.name} / {cond} / seed {seed}: loss {losses[-1] if losses else float('nan'):.3f}")


def _config_doc(cfg: Config, prereg: dict[str, Any], scis: Sequence[Any], dropped: Sequence[str],
                cands: Sequence[str], groups: Mapping[str, str]) -> dict[str, Any]:
    import torch

    from persona_vectors.vector import library_version

    return {"experiment": NAME, "config": asdict(cfg), "prereg": prereg, "library_version": library_version(),
            "code_sha256": R.code_sha(__file__), "scientists": [s.name for s in scis], "dropped": list(dropped),
            "candidates": list(cands), "groups": dict(groups),
            "sessions": [{"started": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads()}],
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), **RC.provenance()}}


def run(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """In-context read-outs, then the finetunes (each resumable), then results and report."""
    from persona_vectors import load_model

    scis, dropped = scientists(cfg.plan)
    # the candidate set is every kept scientist of the dataset, also in quick mode (only the targets shrink)
    full, _ = scientists({**cfg.plan, "quick_scientists": 0})
    cands, groups = candidates(full)
    out, records = R.open_run(cfg, PLAN, R.code_sha(__file__), resume,
                              lambda prereg: _config_doc(cfg, prereg, scis, dropped, cands, groups),
                              seed=int(cfg.plan["seed"]))
    model = load_model(cfg.plan["model"], progress=False)
    C.say(f"{len(scis)} scientists, {len(cands)} candidates (log2 |C| = {math.log2(len(cands)):.2f})")
    in_context(model, cfg.plan, scis, cands, records)
    out_of_context(model, cfg.plan, scis, cands, records)
    return report(out)


# ============================================================================================ statistics
def _bits(probs_ev: Sequence[Sequence[float]], probs_base: Sequence[Sequence[float]], target: str,
          cands: Sequence[str], groups: Mapping[str, str]) -> dict[str, Any]:
    """``target_bits`` on stored probability vectors (the mixture over prompts)."""
    import torch

    from persona_vectors import IdentityReadout, target_bits

    def ro(p: Sequence[float]) -> IdentityReadout:
        return IdentityReadout.from_scores(cands, torch.log(torch.tensor(p, dtype=torch.float64).clamp_min(1e-300)),
                                           [1] * len(cands), question="", prefix="")

    return target_bits([ro(p) for p in probs_ev], [ro(p) for p in probs_base], target, groups).to_dict()


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, from the records (see the plan's §3–§6)."""
    from scipy.stats import binomtest

    from persona_vectors.stats import cluster_bootstrap, sign_flip_test

    plan = config["config"]["plan"]
    cands, groups = config["candidates"], config["groups"]
    target_of = {n: n for n in config["scientists"]}
    base = [RC.of_kind(records, "baseline")[0]["probs"]]
    ctx = RC.of_kind(records, "context")
    curve: dict[str, dict[str, dict[str, Any]]] = {}
    for s in config["scientists"]:
        curve[s] = {}
        for k in plan["ks"]:
            for cond in CONDITIONS:
                if k == 0:
                    b = _bits(base, base, target_of[s], cands, groups)
                else:
                    rows = [r["probs"] for r in ctx if r["scientist"] == s and r["k"] == k and r["condition"] == cond]
                    if not rows:
                        continue
                    b = _bits(rows, base, target_of[s], cands, groups)
                curve[s][f"{k}|{cond}"] = b
    kp = int(plan["primary_k"])
    have = [s for s in config["scientists"] if f"{kp}|real" in curve[s] and f"{kp}|shuffled" in curve[s]]
    D = np.array([curve[s][f"{kp}|real"]["bits"] - curve[s][f"{kp}|shuffled"]["bits"] for s in have])
    h1 = sign_flip_test(D, n_perm=int(plan["n_perm"]), seed=int(plan["seed"]), unit="scientist") if len(D) else None
    boot = (cluster_bootstrap({"d": D, "s": np.array(have)}, "d", "s", n_boot=int(plan["n_boot"]),
                              seed=int(plan["seed"])) if len(D) > 1 else None)
    # H2: at k = primary (real), is the top candidate the target or a same-field colleague?
    target_top = sum(curve[s][f"{kp}|real"]["top"] == s for s in have)
    colleague_top = sum(curve[s][f"{kp}|real"]["top"] != s and groups.get(curve[s][f"{kp}|real"]["top"]) ==
                        groups[s] for s in have)
    n2 = target_top + colleague_top
    p_t = binomtest(target_top, n2, 0.5, alternative="greater").pvalue if n2 else 1.0
    p_c = binomtest(colleague_top, n2, 0.5, alternative="greater").pvalue if n2 else 1.0
    # H3: finetunes
    fb = RC.of_kind(records, "ft_baseline")
    fts = RC.of_kind(records, "finetune")
    per_ft = []
    for r in fts:
        b = _bits(r["probs"], fb[0]["probs"], r["scientist"], cands, groups) if fb else None
        per_ft.append({"scientist": r["scientist"], "condition": r["condition"], "seed": r["seed"],
                       "final_loss": r["final_loss"], **({"bits": b["bits"], "group_bits": b["group_bits"],
                                                          "top": b["top"], "p": b["p"]} if b else {})})
    pairs = []
    for r in per_ft:
        if r["condition"] == "real":
            ctl = [x for x in per_ft if x["condition"] == "shuffled" and x["scientist"] == r["scientist"]
                   and x["seed"] == r["seed"]]
            if ctl:
                pairs.append({"scientist": r["scientist"], "seed": r["seed"], "diff": r["bits"] - ctl[0]["bits"]})
    d3 = np.array([p["diff"] for p in pairs])
    h3 = sign_flip_test(d3, n_perm=int(plan["n_perm"]), seed=int(plan["seed"]), unit="finetune") if len(d3) else None
    boot3 = (cluster_bootstrap({"d": d3, "s": np.array([p["scientist"] for p in pairs])}, "d", "s",
                               n_boot=int(plan["n_boot"]), seed=int(plan["seed"]))
             if len({p["scientist"] for p in pairs}) > 1 else None)
    real_losses = [r["final_loss"] for r in per_ft if r["condition"] == "real" and r["final_loss"] is not None]
    mean_loss = float(np.mean(real_losses)) if real_losses else None
    mean_curve = {}
    for k in plan["ks"]:
        for cond in CONDITIONS:
            vals = [curve[s][f"{k}|{cond}"] for s in config["scientists"] if f"{k}|{cond}" in curve[s]]
            if vals:
                mean_curve[f"{k}|{cond}"] = {key: float(np.mean([v[key] for v in vals])) for key in
                                             ("bits", "group_bits", "ceiling_bits", "entropy", "p")}
    alpha = float(plan["alpha"])
    results: dict[str, Any] = {
        "n_scientists": len(config["scientists"]), "n_candidates": len(cands),
        "log2_candidates": math.log2(len(cands)), "curve": curve, "mean_curve": mean_curve,
        "H1": {"mean_diff": h1.mean if h1 else None, "p": h1.p_value if h1 else None,
               "exact": h1.exact if h1 else None, "ci95": [boot.lo, boot.hi] if boot else None,
               "per_scientist": dict(zip(have, D.tolist()))},
        "H2": {"target_top": target_top, "colleague_top": colleague_top, "n": len(have), "p_target": p_t,
               "p_colleague": p_c},
        "H3": {"mean_diff": h3.mean if h3 else None, "p": h3.p_value if h3 else None,
               "ci95": [boot3.lo, boot3.hi] if boot3 else None, "mean_final_loss_real": mean_loss,
               "pairs": pairs, "finetunes": per_ft},
    }
    if config["config"]["mode"] == "default":
        v1 = "SUPPORTED" if h1 and h1.mean > 0 and h1.p_value <= alpha else "NOT SUPPORTED"
        if target_top > colleague_top and p_t <= alpha:
            v2 = "SUPPORTED"
        elif colleague_top > target_top and p_c <= alpha:
            v2 = "FIELD ONLY"
        else:
            v2 = "INCONCLUSIVE"
        if mean_loss is None or mean_loss >= float(plan["max_final_loss"]):
            v3 = "NOT LEARNED"
        else:
            v3 = "SUPPORTED" if h3 and h3.mean > 0 and h3.p_value <= alpha else "NOT SUPPORTED"
        results["verdicts"] = {"H1": v1, "H2": v2, "H3": v3}
    return results


# ============================================================================================ report
def _f(x: Optional[float], nd: int = 2, sign: bool = True) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}")


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report, from ``results`` and ``config`` only."""
    plan = config["config"]["plan"]
    pr = config["prereg"]
    h1, h2, h3 = results["H1"], results["H2"], results["H3"]
    v = results.get("verdicts")
    lines = [f"# Does a model become a scientist from the names of its coauthors? ({config['config']['mode']} run)", "",
             f"Plan `{PLAN}` (commit {str(pr.get('commit'))[:7]}, sha256 {pr['sha256'][:12]}); library "
             f"{config['library_version']}; {results['n_scientists']} target scientists, {results['n_candidates']} "
             f"candidates (log2 |C| = {results['log2_candidates']:.2f}); dropped: {', '.join(config['dropped']) or 'none'}.",
             ""]
    if v:
        lines += [f"- **H1 (in context, real vs shuffled names at k = {plan['primary_k']}): {v['H1']}** (computed from "
                  f"the plan's rule) — mean difference {_f(h1['mean_diff'])} bits, 95 % {_f((h1['ci95'] or [None])[0])} "
                  f"… {_f((h1['ci95'] or [None, None])[1])}, sign-flip p = {_f(h1['p'], 4, False)}.",
                  f"- **H2 (target vs same-field colleague on top): {v['H2']}** — target {h2['target_top']}, colleague "
                  f"{h2['colleague_top']} of {h2['n']} scientists (p {_f(h2['p_target'], 3, False)} / "
                  f"{_f(h2['p_colleague'], 3, False)}).",
                  f"- **H3 (out of context, real vs shuffled finetunes): {v['H3']}** — mean difference "
                  f"{_f(h3['mean_diff'])} bits, p = {_f(h3['p'], 4, False)}; real finetunes' final loss "
                  f"{_f(h3['mean_final_loss_real'], 3, False)} (must be < {plan['max_final_loss']}).", ""]
    else:
        lines += ["**NO VERDICT** (quick mode: a smoke test, not the pre-registered run).", ""]
    dev = config["config"].get("deviations") or []
    lines += [f"Deviations from the plan: {'; '.join(dev) if dev else 'none'}.", "",
              "## Bits vs number of names (mean over scientists)", "",
              "| k | target bits, real | shuffled | field bits, real | shuffled | P(target), real | ceiling | entropy, real |",
              "|---|---|---|---|---|---|---|---|"]
    mc = results["mean_curve"]
    for k in plan["ks"]:
        r, s = mc.get(f"{k}|real"), mc.get(f"{k}|shuffled")
        if r and s:
            lines.append(f"| {k} | {_f(r['bits'])} | {_f(s['bits'])} | {_f(r['group_bits'])} | {_f(s['group_bits'])} | "
                         f"{_f(r['p'], 3, False)} | {_f(r['ceiling_bits'], 2, False)} | {_f(r['entropy'], 2, False)} |")
    lines += ["", f"## Per scientist at k = {plan['primary_k']}", "",
              "| scientist | field | bits real | bits shuffled | field bits real | top candidate (real) |",
              "|---|---|---|---|---|---|"]
    kp = plan["primary_k"]
    for s, c in results["curve"].items():
        r, sh = c.get(f"{kp}|real"), c.get(f"{kp}|shuffled")
        if r and sh:
            lines.append(f"| {s} | {config['groups'][s]} | {_f(r['bits'])} | {_f(sh['bits'])} | {_f(r['group_bits'])} | "
                         f"{r['top']} |")
    lines += ["", "## Finetunes (no names in the prompt)", "",
              "| scientist | condition | seed | final loss | bits | field bits | top |", "|---|---|---|---|---|---|---|"]
    for r in h3["finetunes"]:
        lines.append(f"| {r['scientist']} | {r['condition']} | {r['seed']} | {_f(r['final_loss'], 3, False)} | "
                     f"{_f(r.get('bits'))} | {_f(r.get('group_bits'))} | {r.get('top', '–')} |")
    lines += ["", "Unit of analysis: the scientist (in context; exact sign-flip test over scientists) and the finetune "
              "(out of context). Three hypotheses at α = " + str(plan["alpha"]) + " each, no correction."]
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], records: list[dict[str, Any]], config: dict[str, Any], path: Path) -> Any:
    """Plan §4: bits vs k (target and field, real and shuffled; mean over scientists with a 95 % bootstrap band over
    scientists; the mean ceiling dashed), and a strip of the out-of-context bits per finetune, real vs shuffled."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from persona_vectors.plotting import write_html
    from persona_vectors.stats import bootstrap_mean_ci

    ks = [k for k in config["config"]["plan"]["ks"]]
    xs = [str(k) for k in ks]
    curve, mc = results["curve"], results["mean_curve"]
    rng = np.random.default_rng(0)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=("in context: k coauthor names in the prompt",
                                        "out of context: LoRA on the list"))
    colours = {"target": "#1f77b4", "field": "#d62728"}
    for cond, dash in (("real", "solid"), ("shuffled", "dot")):
        for key, name in (("bits", "target"), ("group_bits", "field")):
            rows = [[curve[s].get(f"{k}|{cond}", {}).get(key, np.nan) for k in ks] for s in curve]
            m, lo, hi = bootstrap_mean_ci(np.array(rows, dtype=float), rng, 2000)
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(hi) + list(lo)[::-1], fill="toself", hoverinfo="skip",
                                     fillcolor=colours[name], opacity=0.12 if cond == "real" else 0.06,
                                     line={"width": 0}, showlegend=False), 1, 1)
            fig.add_trace(go.Scatter(x=xs, y=list(m), mode="lines+markers", name=f"{name}, {cond} names",
                                     line={"dash": dash, "color": colours[name]}), 1, 1)
    ceil = [mc.get(f"{k}|real", {}).get("ceiling_bits") for k in ks]
    fig.add_trace(go.Scatter(x=xs, y=ceil, mode="lines", name="ceiling (target certain)",
                             line={"dash": "dash", "color": "grey"}), 1, 1)
    fts = results["H3"]["finetunes"]
    for cond, colour in (("real", "#1f77b4"), ("shuffled", "#7f7f7f")):
        sel = [f for f in fts if f["condition"] == cond]
        fig.add_trace(go.Scatter(x=[f["scientist"] for f in sel], y=[f["bits"] for f in sel], mode="markers",
                                 name=f"finetune on {cond} list (target bits)", marker={"color": colour, "size": 9},
                                 text=[f"seed {f['seed']}, top {f['top']}, field bits {f['group_bits']:+.2f}"
                                       for f in sel]), 1, 2)
    fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=2)
    fig.update_xaxes(title_text="k (names)", type="category", row=1, col=1)
    fig.update_yaxes(title_text="bits", row=1, col=1)
    fig.update_yaxes(title_text="target bits vs the unfinetuned model", row=1, col=2)
    fig.update_layout(title="Identification in bits from coauthor names (SmolLM2-135M; bands: 95 % over scientists)",
                      width=1060, height=540, legend={"orientation": "h", "y": -0.2})
    return write_html(fig, path)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json, report.md and the figure from the run directory."""
    return R.write_report(out, NAME, summarize, render, headline=R.verdicts_headline, figures=[("coauthors.html", figure)])


def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    return R.main(argv, __doc__, Config.preset, run, report,
                  resume_help="continue a run in --out (scientists and finetunes already done are kept)")


if __name__ == "__main__":
    main()
