"""Pre-registered cross-model replication of persona geometry: SmolLM2-135M-Instruct vs Gemma 3 270M (base).

    python experiments/cross_model.py [--rerun2] [--quick] [--resume] [--out DIR] [--threads N]
    python experiments/cross_model.py [--rerun2] --report-only [--out DIR]

``--rerun2`` runs ``experiments/prereg/cross_model_rerun2.md`` (six questions; the question split-half
reliabilities of the axis projections and of PC1, descriptive) into ``runs/cross_model_rerun2``.

The plan is ``experiments/prereg/cross_model.md``, committed before the run: every number comes from its TOML
block, the plan's commit is recorded (a default run refuses an uncommitted or edited plan) and the verdict is
computed with the plan's §6 rule (:func:`verdict`).

For each model: the catalogue's role means (``role_means``) from each role's prompt 1 and prompt 2 separately
(``prompt_index``), extraction questions 1-3, greedy 32-token answers, every layer; the default side is the
shipped default-assistant conditions. Per layer: role vectors (pooled = mean of the two prompts' role means −
default mean), the Assistant Axis (default − mean role), every role's projection on the unit axis (pooled and
per prompt), and the role PCA (``PersonaSpace``, PC1 oriented so the axis projects positively).

Records (``records.jsonl.gz``): ``layer`` (model, layer: roles, projections, PC1 coordinates, PCA variance
ratios, cos(PC1, axis), norms — measurements of role vectors carried through: the vectors are ~40 MB) and
``model`` (id, fingerprint, timings, sample answers). :func:`summarize` re-derives every statistic of the report
from those per-role numbers: Spearman correlations, their bootstrap intervals over roles, permutation p-values,
the reliability ceilings, the category table and the verdict. ``--quick`` (10 roles, 1 question, the primary
layers only) never gives a verdict and never writes docs.
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
NAME = "cross_model"
PLAN = "experiments/prereg/cross_model.md"
QUICK_ROLES = 10


@dataclass
class Config(R.PlanConfig):
    """Run settings (:class:`run_dir.PlanConfig`)."""

    NAME: ClassVar[str] = NAME
    PLAN: ClassVar[str] = PLAN
    out: str = f"runs/{NAME}"


@dataclass
class Rerun2(Config):
    """Rerun 2 (``experiments/prereg/cross_model_rerun2.md``): six questions and the question split-half
    measures; ``--quick`` keeps two questions (one per half)."""

    NAME: ClassVar[str] = "cross_model_rerun2"
    PLAN: ClassVar[str] = "experiments/prereg/cross_model_rerun2.md"
    out: str = "runs/cross_model_rerun2"

    @staticmethod
    def shrink(plan: Mapping[str, Any]) -> dict[str, Any]:
        """Quick: questions 1-2, one per half."""
        return {"questions": [0, 2], "halves": [[0, 1], [1, 2]]}


# ============================================================================================ measurement
def _roles(quick: bool) -> list[str]:
    from persona_vectors.datasets.catalogue import load_roles

    names = [r.name for r in load_roles()]
    if quick:
        step = len(names) // QUICK_ROLES
        names = names[::step][:QUICK_ROLES]
    return names


def measure_model(name: str, cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load one model and measure its role geometry at every layer (or the primary layer in quick mode)."""
    import torch

    from persona_vectors import PersonaSpace, load_model
    from persona_vectors.personas import extraction_questions
    from persona_vectors.personas.routes import role_means

    p, quick = cfg.plan, cfg.mode == "quick"
    t0 = time.perf_counter()
    model = load_model(name, progress=False)
    t_load = time.perf_counter() - t0
    q0, q1 = p["questions"]
    qs = extraction_questions()[q0 : (q0 + 1 if quick and "halves" not in p else q1)]
    k = p["models"].index(name)
    layers: Any = [p["primary_pair"][k]] if quick else "all"
    roles = _roles(quick)
    C.say(f"{name}: loaded in {t_load:.0f} s ({model.n_layers} layers); {len(roles)} roles x {int(p['n_prompts'])} "
          f"prompts x {len(qs)} questions")
    rms = []
    for j in range(int(p["n_prompts"])):
        t = time.perf_counter()
        rms.append(role_means(model, roles, questions=qs, n_questions=None, layers=layers,
                              max_new_tokens=int(p["max_new_tokens"]), prompt_index=j, progress=False))
        C.say(f"{name}: prompt {j + 1} role means in {time.perf_counter() - t:.0f} s")
    names = list(rms[0].means)
    halves = []  # rerun 2: [half][prompt] role means on each half of the questions
    for h0, h1 in p.get("halves", []):
        t = time.perf_counter()
        halves.append([role_means(model, roles, questions=extraction_questions()[h0:h1], n_questions=None,
                                  layers=layers, max_new_tokens=int(p["max_new_tokens"]), prompt_index=j,
                                  progress=False) for j in range(int(p["n_prompts"]))])
        C.say(f"{name}: questions {h0 + 1}-{h1} role means in {time.perf_counter() - t:.0f} s")
    rows = []
    for li, site in enumerate(rms[0].sites):
        default = rms[0].default_mean[li].double()
        per = [torch.stack([rm.means[n][li] for n in names]).double() - default for rm in rms]
        pooled = torch.stack(per).mean(0)
        axis = -pooled.mean(0)
        u = axis / axis.norm()
        space = PersonaSpace(n_components=int(p["n_components"])).fit(pooled.numpy(), names=names, anchor=axis.numpy())
        comp = np.asarray(space.components_[0], dtype=np.float64)
        rows.append({"model": name, "layer": site.layer, "n_layers": model.n_layers, "roles": names,
                     "proj": (pooled @ u).tolist(), "proj_prompt": [(x @ u).tolist() for x in per],
                     "pc1": [float(c) for c in space.coords_[:, 0]],
                     "evr": [float(x) for x in space.explained_variance_ratio_],
                     "cos_pc1_axis": float(comp @ u.numpy()), "axis_norm": float(axis.norm()),
                     "default_norm": float(rms[0].default_mean_norm.get(site, float("nan")))})
        if halves:
            rows[-1].update(_half_measures(halves, names, li, int(p["n_components"])))
    samples = {}
    for n in names[:: max(1, len(names) // 8)][:8]:
        samples[n] = rms[0].vectors[n].provenance.extra.get("sample_response", "")
    info = {"model": name, "model_id": model.info.model_id, "fingerprint": model.info.fingerprint,
            "n_layers": model.n_layers, "d_model": model.d_model, "load_seconds": t_load,
            "seconds": time.perf_counter() - t0, "n_default_samples": rms[0].n_default_samples,
            "questions": qs, "samples": samples}
    del model, rms
    return rows, info


def _half_measures(halves: Sequence[Sequence[Any]], names: list[str], li: int, n_components: int) -> dict[str, Any]:
    """Per question half (prompts pooled): every role's projection on that half's own axis and its PC1 coordinate."""
    import torch

    from persona_vectors import PersonaSpace

    proj, pc1 = [], []
    for rms in halves:
        per = [torch.stack([rm.means[n][li] for n in names]).double() - rm.default_mean[li].double() for rm in rms]
        pooled = torch.stack(per).mean(0)
        axis = -pooled.mean(0)
        proj.append((pooled @ (axis / axis.norm())).tolist())
        space = PersonaSpace(n_components=n_components).fit(pooled.numpy(), names=names, anchor=axis.numpy())
        pc1.append([float(c) for c in space.coords_[:, 0]])
    return {"proj_half": proj, "pc1_half": pc1}


def _config_doc(cfg: Config, prereg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from persona_vectors.datasets.catalogue import load_roles
    from persona_vectors.vector import library_version

    return {"experiment": NAME, "name": cfg.NAME, "config": asdict(cfg), "prereg": prereg,
            "library_version": library_version(),
            "code_sha256": R.code_sha(__file__), "categories": {r.name: r.category for r in load_roles()},
            "sessions": [{"started": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads()}],
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), **RC.provenance()}}


def run(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Measure both models (resumable per model), then write the results and the report."""
    out, records = R.open_run(cfg, cfg.PLAN, R.code_sha(__file__), resume, lambda prereg: _config_doc(cfg, prereg))
    done = {r["model"] for r in RC.of_kind(records.rows, "model")}
    for name in cfg.plan["models"]:
        if name in done:
            continue
        rows, info = measure_model(name, cfg)
        records.write([{"kind": "layer", **r} for r in rows])
        records.add("model", **info)
        C.say(f"{name}: measured in {info['seconds']:.0f} s")
    return report(out)


# ============================================================================================ statistics
def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ (Pearson correlation of average ranks)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _boot_idx(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def boot_spearman(a: Sequence[float], b: Sequence[float], idx: np.ndarray, level: float) -> dict[str, float]:
    """ρ and its percentile interval over the given resamples of the roles."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ra, rb = _ranks(a[idx]), _ranks(b[idx])  # [n_boot, n], ranked within each draw
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    ok = den > 0
    draws = (ra * rb).sum(1)[ok] / den[ok]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"est": spearman(a, b), "lo": float(lo), "hi": float(hi)}


def perm_p(a: Sequence[float], b: Sequence[float], n_perm: int, seed: int) -> float:
    """One-sided permutation p-value of ρ ≥ observed, role labels of one model shuffled (+1 correction)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = (ra - ra.mean()) / np.linalg.norm(ra - ra.mean()), (rb - rb.mean()) / np.linalg.norm(rb - rb.mean())
    obs = float(ra @ rb)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(len(rb)) for _ in range(n_perm)])
    null = rb[perms] @ ra
    return float((1 + np.sum(null >= obs - 1e-12)) / (n_perm + 1))


def label(iv: Mapping[str, float], lower: float, upper: float) -> str:
    """The §6 words for an interval: replicates / does not replicate / partial / inconclusive."""
    if iv["lo"] >= lower:
        return "REPLICATES"
    if iv["hi"] < upper:
        return "DOES NOT REPLICATE"
    return "PARTIAL" if iv["lo"] > 0 else "INCONCLUSIVE"


def verdict(rho_axis: Mapping[str, float], reliability: Mapping[str, Mapping[str, float]], plan: Mapping[str, Any]) -> str:
    """The plan's §6 rule at the primary pair."""
    if any(r["lo"] < float(plan["reliability_min"]) for r in reliability.values()):
        return "INCONCLUSIVE (reliability)"
    return label(rho_axis, float(plan["replicates_lower"]), float(plan["fails_upper"]))


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, from the per-role records and the config alone (no model)."""
    cfg = config["config"]
    p, quick = cfg["plan"], cfg["mode"] == "quick"
    level, n_boot, seed = float(p["ci_level"]), int(p["n_boot"]), int(p["seed"])
    models = list(p["models"])
    layer = {(r["model"], r["layer"]): r for r in RC.of_kind(records, "layer")}
    info = {r["model"]: r for r in RC.of_kind(records, "model")}
    out: dict[str, Any] = {"models": {m: {k: info[m][k] for k in ("model_id", "fingerprint", "n_layers", "d_model",
                                                                    "load_seconds", "seconds")}
                                      for m in models if m in info}, "pairs": [], "pc1_by_layer": {}}
    pairs = [p["primary_pair"]] if quick else p["layer_pairs"]
    for i, pair in enumerate(pairs):
        a, b = layer.get((models[0], pair[0])), layer.get((models[1], pair[1]))
        if a is None or b is None:
            continue
        if a["roles"] != b["roles"]:
            raise ValueError(f"pair {pair}: the two models' role lists differ")
        n = len(a["roles"])
        idx = _boot_idx(n, n_boot, seed + i)
        rel = {}
        for m, r in ((models[0], a), (models[1], b)):
            if len(r["proj_prompt"]) < 2:
                raise ValueError(f"{m} layer {r['layer']}: the reliability ceiling needs two prompts' projections")
            rel[m] = boot_spearman(r["proj_prompt"][0], r["proj_prompt"][1], idx, level)
        rho_axis = boot_spearman(a["proj"], b["proj"], idx, level)
        rho_pc1 = boot_spearman(a["pc1"], b["pc1"], idx, level)
        ceiling = float(np.sqrt(max(rel[models[0]]["est"], 0) * max(rel[models[1]]["est"], 0)))
        out["pairs"].append({
            "pair": list(pair), "depth": [pair[0] / (a["n_layers"] - 1), pair[1] / (b["n_layers"] - 1)], "n_roles": n,
            "rho_axis": rho_axis, "p_axis": perm_p(a["proj"], b["proj"], int(p["n_perm"]), seed + 100 + i),
            "rho_pc1": rho_pc1, "p_pc1": perm_p(a["pc1"], b["pc1"], int(p["n_perm"]), seed + 200 + i),
            "reliability": rel, "ceiling": ceiling,
            "disattenuated_axis": rho_axis["est"] / ceiling if ceiling > 0 else None,
            "label_pc1": label(rho_pc1, float(p["replicates_lower"]), float(p["fails_upper"])),
            "primary": list(pair) == list(p["primary_pair"])})
    for m in models:
        rows = sorted((r for (mm, _), r in layer.items() if mm == m), key=lambda r: r["layer"])
        out["pc1_by_layer"][m] = [{"layer": r["layer"], "depth": r["layer"] / (r["n_layers"] - 1), "pc1": r["evr"][0],
                                   "cos_pc1_axis": r["cos_pc1_axis"]} for r in rows]
    prim = next((x for x in out["pairs"] if x["primary"]), None)
    cats = config["categories"]
    if prim is not None:
        a, b = layer[(models[0], prim["pair"][0])], layer[(models[1], prim["pair"][1])]
        table = {}
        rng = np.random.default_rng(seed + 300)
        for c in sorted({cats[r] for r in a["roles"]}):
            ix = [j for j, r in enumerate(a["roles"]) if cats[r] == c]
            row = {"n": len(ix)}
            for m, rec in ((models[0], a), (models[1], b)):
                v = np.asarray(rec["proj"], float)[ix]
                draws = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
                lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
                row[m] = {"est": float(v.mean()), "lo": float(lo), "hi": float(hi)}
            table[c] = row
        out["categories"] = table
        out["category_rho"] = spearman([table[c][models[0]]["est"] for c in table], [table[c][models[1]]["est"] for c in table])
        out["category_rank"] = {m: [c for c in sorted(table, key=lambda c: table[c][m]["est"])] for m in models}
        out["verdict"] = {"word": "NO VERDICT (quick run)" if quick else verdict(prim["rho_axis"], prim["reliability"], p),
                          "pair": prim["pair"]}
    out["samples"] = {m: info[m]["samples"] for m in models if m in info}
    if "halves" in p:  # rerun 2: the question split-half reliabilities, every layer of each model (descriptive)
        out["halves"] = {}
        for k, m in enumerate(models):
            rows = sorted((r for (mm, _), r in layer.items() if mm == m and "proj_half" in r), key=lambda r: r["layer"])
            out["halves"][m] = []
            for r in rows:
                idx = _boot_idx(len(r["roles"]), n_boot, seed + 400 + 50 * k + r["layer"])
                pc1 = boot_spearman(r["pc1_half"][0], r["pc1_half"][1], idx, level)
                if pc1["est"] < 0:  # PC1's sign is arbitrary per fit: compare unsigned, as benchmark P11 does
                    pc1 = {"est": -pc1["est"], "lo": -pc1["hi"], "hi": -pc1["lo"]}
                out["halves"][m].append({"layer": r["layer"], "depth": r["layer"] / (r["n_layers"] - 1),
                                         "rho_half": boot_spearman(r["proj_half"][0], r["proj_half"][1], idx, level),
                                         "rho_half_pc1": pc1})
    return out


# ============================================================================================ report
def _iv(x: Mapping[str, float], nd: int = 2) -> str:
    return f"{x['est']:+.{nd}f} [{x['lo']:+.{nd}f}, {x['hi']:+.{nd}f}]"


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The markdown report (re-rendered by ``recompute.py`` from the recomputed results)."""
    cfg, pre = config["config"], config["prereg"]
    p = cfg["plan"]
    models = list(p["models"])
    which = "rerun 2" if config.get("name") == "cross_model_rerun2" else "run 1"
    L = [f"# Cross-model persona geometry, pre-registered {which} ({cfg['mode']} run)", ""]
    L.append(f"Plan: [`{pre['path']}`](../{pre['path']}) at commit `{(pre['commit'] or 'uncommitted')[:12]}` (sha256 "
             f"{pre['sha256'][:12]}). Code sha256 {config['code_sha256'][:12]}.")
    for m, i in results["models"].items():
        L.append(f"- {m}: {i['model_id']} ({i['fingerprint']}), {i['n_layers']} layers, d_model {i['d_model']}; "
                 f"loaded in {i['load_seconds']:.0f} s, measured in {i['seconds']:.0f} s.")
    L += ["", f"Deviations: {'; '.join(cfg['deviations']) if cfg['deviations'] else 'none'}.",
          "Reading (§5): the permutation p-value is one-sided (ρ ≥ observed), role labels of the second model shuffled.", ""]
    v = results.get("verdict")
    if v:
        prim = next(x for x in results["pairs"] if x["primary"])
        L.append(f"**Verdict (computed from the plan's §6 rule at layers {v['pair'][0]} / {v['pair'][1]}): {v['word']}.** "
                 f"ρ_axis {_iv(prim['rho_axis'])} over {prim['n_roles']} roles (permutation p {prim['p_axis']:.4f}); "
                 f"ρ_PC1 {_iv(prim['rho_pc1'])} ({prim['label_pc1']}); reliability ceilings "
                 + ", ".join(f"{m} {_iv(prim['reliability'][m])}" for m in models)
                 + "; the paper's reference: r > 0.92 across families.")
    L += ["", "## Agreement across models at matched relative depth", "",
          C.md_table(["layers", "relative depth", "ρ axis projections", "p", "ρ PC1", "p", "PC1 label",
                      f"reliability {models[0]}", f"reliability {models[1]}", "ceiling", "ρ axis / ceiling"],
                     [[f"{x['pair'][0]} / {x['pair'][1]}" + (" (primary)" if x["primary"] else ""),
                       f"{x['depth'][0]:.2f} / {x['depth'][1]:.2f}", _iv(x["rho_axis"]), f"{x['p_axis']:.4f}",
                       _iv(x["rho_pc1"]), f"{x['p_pc1']:.4f}", x["label_pc1"], _iv(x["reliability"][models[0]]),
                       _iv(x["reliability"][models[1]]), f"{x['ceiling']:.2f}",
                       "–" if x["disattenuated_axis"] is None else f"{x['disattenuated_axis']:.2f}"]
                      for x in results["pairs"]])]
    if "categories" in results:
        t = results["categories"]
        L += ["", "## Categories along the axis (primary layers; mean role projection, bootstrap over roles)", "",
              C.md_table(["category", "roles", models[0], models[1]],
                         [[c, t[c]["n"], _iv(t[c][models[0]], 1), _iv(t[c][models[1]], 1)] for c in t]),
              "", f"Spearman over the {len(t)} category means: {results['category_rho']:+.2f}. Order, most "
              "role-like (far from the assistant) first: "
              + "; ".join(f"{m}: {' < '.join(results['category_rank'][m])}" for m in models) + "."]
    if results.get("halves"):
        L += ["", "## Question split-half reliability (descriptive, rerun 2)", "",
              f"Questions {p['halves'][0][0] + 1}–{p['halves'][0][1]} vs {p['halves'][1][0] + 1}–{p['halves'][1][1]}, "
              "prompts pooled, each half with its own axis and PCA; Spearman over roles (PC1 unsigned), bootstrap "
              "over roles. Compare with the prompt-1 vs prompt-2 reliability above: whichever is lower names the "
              "larger source of noise.", ""]
        for m, rows in results["halves"].items():
            L += [f"- {m}, axis projections: " + ", ".join(f"L{r['layer']} {r['rho_half']['est']:+.2f}" for r in rows),
                  f"- {m}, PC1 coordinates (|ρ|): " + ", ".join(f"L{r['layer']} {r['rho_half_pc1']['est']:.2f}" for r in rows)]
        prim = results.get("verdict", {}).get("pair")
        if prim:
            for m, lay in zip(results["halves"], prim):
                r = next((x for x in results["halves"][m] if x["layer"] == lay), None)
                if r:
                    L.append(f"- primary layer {lay} of {m}: axis {_iv(r['rho_half'])}, PC1 {_iv(r['rho_half_pc1'])}.")
    L += ["", "## PC1 variance share and cos(PC1, axis) per layer", ""]
    for m in models:
        rows = results["pc1_by_layer"].get(m, [])
        L.append(f"- {m}: " + ", ".join(f"L{r['layer']} {r['pc1']:.2f} ({r['cos_pc1_axis']:+.2f})" for r in rows))
    L += ["", "## Sample answers (role prompt 1, first question)", ""]
    for m, s in results["samples"].items():
        for role, text in s.items():
            L.append(f"- {m} / {role}: {C.clip(text, 140)}")
    return "\n".join(L) + "\n"


def figure(results: dict[str, Any], records: list[dict[str, Any]], config: dict[str, Any], path: Path) -> Optional[Path]:
    """Scatter of role projections at the primary pair, coloured by category, plus ρ against depth."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from persona_vectors.plotting.output import write_html

    p = config["config"]["plan"]
    models, pair = list(p["models"]), p["primary_pair"]
    layer = {(r["model"], r["layer"]): r for r in RC.of_kind(records, "layer")}
    a, b = layer.get((models[0], pair[0])), layer.get((models[1], pair[1]))
    if a is None or b is None:
        return None
    cats = config["categories"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"role projections on the axis, layers {pair[0]} / {pair[1]}",
                                                        "agreement vs relative depth"))
    for c in sorted({cats[r] for r in a["roles"]}):
        ix = [j for j, r in enumerate(a["roles"]) if cats[r] == c]
        fig.add_trace(go.Scatter(x=[a["proj"][j] for j in ix], y=[b["proj"][j] for j in ix], mode="markers", name=c,
                                 text=[a["roles"][j] for j in ix]), row=1, col=1)
    xs = [x["depth"][0] for x in results["pairs"]]
    for key, nm in (("rho_axis", "ρ axis"), ("rho_pc1", "ρ PC1")):
        fig.add_trace(go.Scatter(x=xs, y=[x[key]["est"] for x in results["pairs"]], mode="lines+markers", name=nm,
                                 error_y={"type": "data", "array": [x[key]["hi"] - x[key]["est"] for x in results["pairs"]],
                                          "arrayminus": [x[key]["est"] - x[key]["lo"] for x in results["pairs"]]}), row=1, col=2)
    fig.add_trace(go.Scatter(x=xs, y=[x["ceiling"] for x in results["pairs"]], mode="lines", name="reliability ceiling",
                             line={"dash": "dot"}), row=1, col=2)
    fig.update_xaxes(title_text=models[0], row=1, col=1)
    fig.update_yaxes(title_text=models[1], row=1, col=1)
    fig.update_xaxes(title_text="relative depth (SmolLM2)", row=1, col=2)
    fig.update_yaxes(title_text="Spearman ρ over roles", range=[-1, 1], row=1, col=2)
    fig.update_layout(template="plotly_white", width=1150, height=520)
    return write_html(fig, path)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json, report.md and the figure from the run directory."""
    name = RC.read_json(Path(out) / RC.CONFIG).get("name", NAME)
    return R.write_report(out, name, summarize, render, figures=[("geometry.html", figure)],
                          headline=lambda r: str((r.get("verdict") or {}).get("word")))


def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    ap = R.parser(__doc__, resume_help="continue a run in --out (models already measured are kept)")
    ap.add_argument("--rerun2", action="store_true", help="run 2's plan (experiments/prereg/cross_model_rerun2.md)")
    a = ap.parse_args(argv)
    cfg = (Rerun2 if a.rerun2 else Config).preset(quick=a.quick, out=a.out, threads=a.threads)
    return report(Path(cfg.out)) if a.report_only else run(cfg, resume=a.resume)


if __name__ == "__main__":
    main()
