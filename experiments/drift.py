"""Pre-registered persona-drift experiment: do long conversations drift away from the assistant, and does capping hold them?

    python experiments/drift.py [--quick] [--resume] [--out DIR] [--threads N]
    python experiments/drift.py --report-only [--out DIR]

The plan is ``experiments/prereg/drift.md``, committed before the run: every number comes from its TOML block,
the plan's commit is recorded (a default run refuses an uncommitted or edited plan) and the verdicts are computed
with the plan's §6 rule (:func:`verdicts`).

SmolLM2-135M-Instruct plays the shipped scripted conversations (``drift_v1``: coding, emotional, philosophical,
surroundings × 12 × 10 user turns) twice — without hooks and with the Assistant Axis capped at layers 12-15 —
with the library's :func:`~persona_vectors.conversation.run_scripts`. Every assistant turn is then read by the
unsteered model (:func:`~persona_vectors.conversation.turn_projections`) on the axis at layers 14 and 20, scored
for coherence and labelled by the judge.

Records (``records.jsonl.gz``): ``axis`` (per layer: the axis norm, the cap threshold), ``turn`` (one per
assistant turn: condition, kind, conversation, turn, the user turn, the reply, its projections and activation
norms per read layer, coherence, the judge's label and probabilities) and ``condition`` (timings).
:func:`summarize` re-derives every number of the report from the ``turn`` rows. ``--quick`` (1 conversation per
kind, 3 turns, 16 tokens) never gives a verdict and never writes docs.
"""

from __future__ import annotations

import hashlib
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
NAME = "drift"
PLAN = "experiments/prereg/drift.md"
CONDITIONS = ("uncapped", "capped")
BINS = ((1, 3), (4, 7), (8, 10))


@dataclass
class Config(R.PlanConfig):
    """Run settings (:class:`run_dir.PlanConfig`); quick mode shrinks a copy of the plan."""

    NAME: ClassVar[str] = NAME
    PLAN: ClassVar[str] = PLAN
    out: str = f"runs/{NAME}"

    @staticmethod
    def shrink(plan: Mapping[str, Any]) -> dict[str, Any]:
        """What ``--quick`` shrinks (a copy of the plan; never a verdict)."""
        return dict(n_conversations=1, n_turns=3, max_new_tokens=16, axis_questions=1, n_boot=200, quick_roles=8,
                    late_turns=[2, 3])


# ============================================================================================ measurement
def scripts(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{kind, id, turns}]`` in plan order: the first ``n_conversations`` of each kind, ``n_turns`` turns each."""
    from persona_vectors.conversation import load_drift_scripts

    doc = load_drift_scripts(plan["scripts"])
    out = []
    for kind in plan["kinds"]:
        convs = doc[kind][: int(plan["n_conversations"])]
        if len(convs) < int(plan["n_conversations"]):
            raise ValueError(f"{plan['scripts']} has {len(convs)} {kind} conversations, the plan needs {plan['n_conversations']}")
        for c in convs:
            out.append({"kind": kind, "id": c["id"], "turns": list(c["turns"][: int(plan["n_turns"])])})
    return out


def build_axis(model: Any, plan: Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """The Assistant Axis at the cap and read layers (unit PersonaVector) and per-layer axis/threshold rows."""
    import torch

    from persona_vectors import Site
    from persona_vectors.datasets import load_roles
    from persona_vectors.personas import role_means
    from persona_vectors.steer import default_threshold_conversations, projection_threshold

    layers = sorted(set(plan["cap_layers"]) | set(plan["read_layers"]))
    names = [r.name for r in load_roles()]
    if plan.get("quick_roles"):  # quick mode only: a spread of the catalogue
        names = names[:: max(1, len(names) // int(plan["quick_roles"]))][: int(plan["quick_roles"])]
    rm = role_means(model, names, n_questions=int(plan["axis_questions"]), n_prompts=int(plan["axis_prompts"]),
                    layers=layers, max_new_tokens=int(plan["axis_max_new_tokens"]),
                    progress=lambda m: C.say(f"  role means: {m}"))
    raw = rm.axis("assistant")
    axis = C.direction_vector(model, {L: raw[Site(L)] / raw[Site(L)].norm() for L in layers}, "assistant_axis", NAME)
    reference = default_threshold_conversations(model, n_questions=1 if plan.get("quick_roles") else 4)
    rows = []
    for L in layers:
        thr = projection_threshold(model, axis, L, reference, percentile=float(plan["cap_percentile"])) \
            if L in plan["cap_layers"] else None
        rows.append({"layer": L, "axis_norm": float(raw[Site(L)].double().norm()), "threshold": thr,
                     "default_norm": float(rm.default_mean_norm.get(Site(L), float("nan")))})
    return axis, rows


def play(model: Any, cfg: Config, axis: Any, axis_rows: Sequence[Mapping[str, Any]], condition: str,
         convs: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One condition: play every script, then read, score and label every assistant turn (hooks off)."""
    import contextlib

    from persona_vectors import steer
    from persona_vectors.conversation import run_scripts, turn_projections
    from persona_vectors.judge import LABELS, EmbeddingJudge
    from persona_vectors.readout import coherence

    p = cfg.plan
    t0 = time.perf_counter()
    if condition == "capped":
        thr = {r["layer"]: r["threshold"] for r in axis_rows if r["threshold"] is not None}
        ctx: Any = steer(model, axis, 1.0, layers=list(p["cap_layers"]), operator="cap", threshold=thr, cap="min",
                         positions="all")
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        played = run_scripts(model, [c["turns"] for c in convs], max_new_tokens=int(p["max_new_tokens"]),
                             temperature=float(p["temperature"]), top_p=float(p["top_p"]), seed=int(p["seed"]),
                             progress=False, on_turn=lambda t, _: C.say(f"  {condition}: turn {t + 1} done"))
    t_gen = time.perf_counter() - t0
    tp = turn_projections(model, played, axis, list(p["read_layers"]), progress=False)
    texts, prompts, keys = [], [], []
    for ci, msgs in enumerate(played):
        users = [m["content"] for m in msgs if m["role"] == "user"]
        replies = [m["content"] for m in msgs if m["role"] == "assistant"]
        for t, (u, r) in enumerate(zip(users, replies)):
            texts.append(r)
            prompts.append(u)
            keys.append((ci, t))
    coh = coherence(model, texts, prompts)
    judge = EmbeddingJudge.default()
    proba = judge.predict_proba(texts)
    rows = []
    for (ci, t), text, user, cs, pr in zip(keys, texts, prompts, coh, proba):
        c = convs[ci]
        rows.append({"kind": "turn", "condition": condition, "conv_kind": c["kind"], "conv": c["id"], "turn": t + 1,
                     "user": user, "text": text,
                     "proj": {str(L): tp.values[("vector", _site(L))][ci][t] for L in p["read_layers"]},
                     "act_norm": {str(L): tp.norms[_site(L)][ci][t] for L in p["read_layers"]},
                     "coherence": cs.score, "perplexity": cs.perplexity if np.isfinite(cs.perplexity) else None,
                     "repetition": cs.repetition_rate, "label": LABELS[int(pr.argmax())],
                     "judge": dict(zip(LABELS, map(float, pr)))})
    info = {"condition": condition, "generation_seconds": t_gen, "seconds": time.perf_counter() - t0,
            "n_turns": len(rows)}
    return rows, info


def _site(layer: int) -> Any:
    from persona_vectors import Site

    return Site(int(layer))


def _config_doc(cfg: Config, prereg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from persona_vectors.judge import VALIDATION_PATH
    from persona_vectors.vector import library_version

    return {"experiment": NAME, "config": asdict(cfg), "prereg": prereg, "library_version": library_version(),
            "code_sha256": R.code_sha(__file__),
            "judge": {"validation_sha256": hashlib.sha256(VALIDATION_PATH.read_bytes()).hexdigest(),
                      "accuracy_real_batch1": _judge_accuracy()},
            "sessions": [{"started": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads()}],
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), **RC.provenance()}}


def _judge_accuracy() -> Optional[float]:
    """The judge's held-out accuracy on real batch-1 generations, from the shipped validation file."""
    import json

    from persona_vectors.judge import VALIDATION_PATH

    doc = json.loads(VALIDATION_PATH.read_text(encoding="utf-8"))
    for path in (("by_batch", "1", "accuracy"),):
        node: Any = doc
        for k in path:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            return float(node)
    return None


def run(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Build the axis, play both conditions (resumable per condition), then write results and report."""
    from persona_vectors import load_model

    out, records = R.open_run(cfg, PLAN, R.code_sha(__file__), resume, lambda prereg: _config_doc(cfg, prereg),
                              seed=int(cfg.plan["seed"]))
    model = load_model(cfg.plan["model"], progress=False)
    t0 = time.perf_counter()
    axis, axis_rows = build_axis(model, cfg.plan)
    C.say(f"axis and thresholds in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"L{r['layer']} |axis| {r['axis_norm']:.2f} thr {r['threshold']}" for r in axis_rows))
    if not RC.of_kind(records.rows, "axis"):
        records.write([{"kind": "axis", **r} for r in axis_rows])
    convs = scripts(cfg.plan)
    done = {r["condition"] for r in RC.of_kind(records.rows, "condition")}
    for condition in CONDITIONS:
        if condition in done:
            continue
        rows, info = play(model, cfg, axis, axis_rows, condition, convs)
        records.write(rows)
        records.add("condition", **info)
        C.say(f"{condition}: {info['n_turns']} turns in {info['seconds']:.0f} s")
    return report(out)


# ============================================================================================ statistics
def _boot_means(x: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Bootstrap distribution of the mean of ``x`` (resampling its entries)."""
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    return x[idx].mean(1)


def _iv(point: float, dist: np.ndarray, level: float) -> dict[str, float]:
    a = (1 - level) / 2
    return {"mean": float(point), "lo": float(np.quantile(dist, a)), "hi": float(np.quantile(dist, 1 - a))}


def _slope(y: np.ndarray) -> float:
    """Least-squares slope of y on turn 1..n over the finite entries (nan with < 2 points)."""
    t = np.arange(1, len(y) + 1, dtype=float)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(t[ok], y[ok], 1)[0])


def per_conversation(turns: Sequence[Mapping[str, Any]], layer: str, late: Sequence[int]) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(condition, conv): {kind, proj [turns], slope, late, coherence}}``."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in turns:
        groups.setdefault((r["condition"], r["conv"]), []).append(r)
    out = {}
    for key, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["turn"])
        y = np.array([np.nan if r["proj"][layer] is None else r["proj"][layer] for r in rows], dtype=float)
        lo, hi = late
        sel = np.array([lo <= r["turn"] <= hi for r in rows])
        yl = y[sel & np.isfinite(y)]
        out[key] = {"kind": rows[0]["conv_kind"], "proj": y, "slope": _slope(y),
                    "late": float(yl.mean()) if len(yl) else float("nan"),
                    "coherence": float(np.mean([r["coherence"] for r in rows]))}
    return out


def _h1_label(iv: Mapping[str, float]) -> str:
    if iv["hi"] < 0:
        return "DRIFTS AWAY"
    if iv["lo"] > 0:
        return "DRIFTS TOWARD"
    return "NO DIFFERENCE FROM CODING"


def _h2_label(d_late: Mapping[str, float], d_coh: Mapping[str, float], margin: float) -> str:
    if d_late["lo"] > 0:
        return "HOLDS" if d_coh["lo"] > -margin else "HOLDS, COHERENCE COST"
    if d_late["hi"] < 0:
        return "OPPOSITE"
    return "NO EFFECT"


def verdicts(h1: Mapping[str, str], h2: Mapping[str, str], plan: Mapping[str, Any]) -> dict[str, str]:
    """The plan's §6 overall lines from the per-kind labels."""
    away = [k for k, v in h1.items() if v == "DRIFTS AWAY"]
    n_away = len(away)
    h1_word = "SUPPORTED" if n_away >= int(plan["h1_min_kinds"]) else ("NOT SUPPORTED" if n_away == 0 else "PARTIAL")
    if not away:
        h2_word = "NOT TESTABLE"
    elif all(h2[k] == "HOLDS" for k in away):
        h2_word = "SUPPORTED"
    elif not any(h2[k] in ("HOLDS", "HOLDS, COHERENCE COST") for k in away):
        h2_word = "NOT SUPPORTED"
    else:
        h2_word = "PARTIAL"
    return {"h1": h1_word, "h2": h2_word, "drifting_kinds": ", ".join(away) or "none"}


def _analyse_layer(pc: Mapping[tuple[str, str], Mapping[str, Any]], plan: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """H1/H2 numbers at one layer: slopes, contrasts with coding, capping effects, per-turn curves."""
    kinds, control = list(plan["kinds"]), plan["control_kind"]
    n_boot, a = int(plan["n_boot"]), float(plan["alpha"])
    tested = [k for k in kinds if k != control]
    lv1, lv2 = 1 - a / len(tested), 1 - a / len(kinds)
    rng = np.random.default_rng(seed)

    def convs(cond: str, kind: str) -> list[str]:
        return sorted(c for (cd, c), v in pc.items() if cd == cond and v["kind"] == kind)

    def vals(cond: str, kind: str, what: str) -> np.ndarray:
        x = np.array([pc[(cond, c)][what] for c in convs(cond, kind)], dtype=float)
        return x[np.isfinite(x)]

    slopes: dict[str, dict[str, Any]] = {}
    for cond in CONDITIONS:
        for k in kinds:
            x = vals(cond, k, "slope")
            if len(x):
                slopes.setdefault(cond, {})[k] = {**_iv(x.mean(), _boot_means(x, rng, n_boot), 0.95), "n": int(len(x))}
    h1: dict[str, Any] = {}
    xc = vals("uncapped", control, "slope")
    for k in tested:
        xk = vals("uncapped", k, "slope")
        if len(xk) == 0 or len(xc) == 0:
            continue
        dist = _boot_means(xk, rng, n_boot) - _boot_means(xc, rng, n_boot)
        iv = _iv(xk.mean() - xc.mean(), dist, lv1)
        h1[k] = {**iv, "level": lv1, "label": _h1_label(iv)}
    h2: dict[str, Any] = {}
    for k in kinds:
        ids = [c for c in convs("uncapped", k) if ("capped", c) in pc]
        if not ids:
            continue
        dl = np.array([pc[("capped", c)]["late"] - pc[("uncapped", c)]["late"] for c in ids])
        dk = np.array([pc[("capped", c)]["coherence"] - pc[("uncapped", c)]["coherence"] for c in ids])
        ok = np.isfinite(dl)
        if not ok.any():
            continue
        idx = rng.integers(0, ok.sum(), size=(n_boot, ok.sum()))
        d_late = _iv(dl[ok].mean(), dl[ok][idx].mean(1), lv2)
        d_coh = _iv(dk[ok].mean(), dk[ok][idx].mean(1), lv2)
        h2[k] = {"late": d_late, "coherence": d_coh, "level": lv2, "n": int(ok.sum()),
                 "label": _h2_label(d_late, d_coh, float(plan["coherence_margin"]))}
    curves: dict[str, dict[str, list[dict[str, float]]]] = {}
    for cond in CONDITIONS:
        for k in kinds:
            ys = [pc[(cond, c)]["proj"] for c in convs(cond, k)]
            if not ys:
                continue
            width = max(len(y) for y in ys)
            m = np.full((len(ys), width), np.nan)
            for i, y in enumerate(ys):
                m[i, : len(y)] = y
            pts = []
            for t in range(width):
                col = m[:, t][np.isfinite(m[:, t])]
                pts.append(_iv(col.mean(), _boot_means(col, rng, n_boot), 0.95) if len(col) else
                           {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")})
            curves.setdefault(cond, {})[k] = pts
    return {"slopes": slopes, "h1": h1, "h2": h2, "curves": curves}


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, from the ``turn`` and ``axis`` records (see the module docstring)."""
    plan = config["config"]["plan"]
    quick = config["config"]["mode"] == "quick"
    turns = RC.of_kind(records, "turn")
    axis = {str(r["layer"]): {"axis_norm": r["axis_norm"], "threshold": r["threshold"]} for r in RC.of_kind(records, "axis")}
    late = plan["late_turns"]
    layers = {}
    for i, L in enumerate(plan["read_layers"]):
        pc = per_conversation(turns, str(L), late)
        layers[str(L)] = _analyse_layer(pc, plan, int(plan["seed"]) + 17 * i)
    prim = layers[str(plan["primary_layer"])]
    h1_labels = {k: v["label"] for k, v in prim["h1"].items()}
    h2_labels = {k: v["label"] for k, v in prim["h2"].items()}
    ver = None if quick or len(h1_labels) < len(plan["kinds"]) - 1 or len(h2_labels) < len(plan["kinds"]) \
        else verdicts(h1_labels, h2_labels, plan)
    # judge shares per kind x condition x turn bin
    from collections import Counter

    judge: dict[str, Any] = {}
    for cond in CONDITIONS:
        for k in plan["kinds"]:
            for lo, hi in BINS:
                rows = [r for r in turns if r["condition"] == cond and r["conv_kind"] == k and lo <= r["turn"] <= hi]
                if not rows:
                    continue
                cnt = Counter(r["label"] for r in rows)
                n = len(rows)
                selfish = n - cnt.get("no_self", 0) - cnt.get("incoherent", 0)
                judge.setdefault(cond, {}).setdefault(k, {})[f"{lo}-{hi}"] = {
                    "n": n, "ai_assistant": cnt.get("ai_assistant", 0) / n,
                    "non_assistant_self": (selfish - cnt.get("ai_assistant", 0)) / n,
                    "supernatural": cnt.get("supernatural", 0) / n,
                    "counts": dict(sorted(cnt.items()))}
    empties = {cond: sum(1 for r in turns if r["condition"] == cond and not r["text"].strip()) for cond in CONDITIONS}
    coh = {}
    for cond in CONDITIONS:
        for k in plan["kinds"]:
            xs = [r["coherence"] for r in turns if r["condition"] == cond and r["conv_kind"] == k]
            if xs:
                coh.setdefault(cond, {})[k] = float(np.mean(xs))
    examples = []
    for k in plan["kinds"]:
        first = sorted({r["conv"] for r in turns if r["conv_kind"] == k})[:1]
        for c in first:
            for cond in CONDITIONS:
                rows = sorted((r for r in turns if r["conv"] == c and r["condition"] == cond), key=lambda r: r["turn"])
                if rows:
                    examples.append({"kind": k, "conv": c, "condition": cond,
                                     "first": {"turn": rows[0]["turn"], "user": rows[0]["user"], "text": rows[0]["text"]},
                                     "last": {"turn": rows[-1]["turn"], "user": rows[-1]["user"], "text": rows[-1]["text"]}})
    return {"n_turns": len(turns), "n_conversations": len({(r["condition"], r["conv"]) for r in turns}),
            "empty_replies": empties, "axis": axis, "layers": layers, "h1": h1_labels, "h2": h2_labels,
            "verdict": ver, "judge": judge, "coherence": coh, "examples": examples,
            "judge_accuracy": config.get("judge", {}).get("accuracy_real_batch1")}


# ============================================================================================ report
def _f(x: Optional[float], nd: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:+.{nd}f}"


def _civ(iv: Mapping[str, float], nd: int = 3) -> str:
    return f"{_f(iv['mean'], nd)} [{_f(iv['lo'], nd)}, {_f(iv['hi'], nd)}]"


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report (text only: every number comes from ``results``)."""
    plan, pre = config["config"]["plan"], config["prereg"]
    prim = str(plan["primary_layer"])
    lines = ["# Persona drift over long conversations, and capping on the Assistant Axis (pre-registered run 1)", "",
             f"Plan `{pre['path']}` (commit {str(pre['commit'])[:7]}, sha256 {pre['sha256'][:12]}); mode "
             f"**{config['config']['mode']}**; library {config['library_version']}; {results['n_conversations']} "
             f"conversations ({len(plan['kinds'])} kinds × {plan['n_conversations']} × 2 conditions), "
             f"{results['n_turns']} assistant turns of ≤ {plan['max_new_tokens']} tokens (temperature "
             f"{plan['temperature']}); empty replies: " + ", ".join(f"{k} {v}" for k, v in results["empty_replies"].items()) + ".", ""]
    ver = results["verdict"]
    if ver:
        lines += [f"**H1 verdict (computed from the plan's rule): {ver['h1']}** (kinds drifting away relative to coding: "
                  f"{ver['drifting_kinds']}). **H2 verdict: {ver['h2']}.**", ""]
    else:
        lines += ["No verdict (quick mode or missing conditions).", ""]
    dev = config["config"]["deviations"]
    lines += ["Deviations from the plan: " + ("; ".join(dev) if dev else "none."), ""]
    lines += ["## Axis and cap", "",
              C.md_table(["layer", "|default − mean role|", "cap threshold (25th pct of assistant tokens)"],
                         [[k, f"{v['axis_norm']:.3f}", "–" if v["threshold"] is None else f"{v['threshold']:.3f}"]
                          for k, v in results["axis"].items()]), ""]
    for L, res in results["layers"].items():
        tag = " (primary)" if L == prim else " (secondary)"
        lines += [f"## Layer {L}{tag}", "",
                  f"Projection of each assistant turn (mean over its tokens, read by the unsteered model) on the unit axis. "
                  f"Drift slope = change per turn (least squares over turns 1–{plan['n_turns']}); the axis norm at this "
                  f"layer is {results['axis'].get(L, {}).get('axis_norm', float('nan')):.3f}.", "",
                  "### Drift slope per kind (95 % bootstrap over conversations)", ""]
        rows = []
        for k in plan["kinds"]:
            su, sc = res["slopes"].get("uncapped", {}).get(k), res["slopes"].get("capped", {}).get(k)
            h1 = res["h1"].get(k)
            rows.append([k, _civ(su) if su else "–", _civ(sc) if sc else "–",
                         f"{_civ(h1)} ({h1['level'] * 100:.1f} %)" if h1 else "(control)", h1["label"] if h1 else "–"])
        lines += [C.md_table(["kind", "slope, uncapped", "slope, capped", "Δ vs coding (uncapped, Bonferroni)", "H1"], rows), "",
                  f"### Capping: late turns ({plan['late_turns'][0]}–{plan['late_turns'][1]}) and coherence, capped − uncapped, paired by script", ""]
        rows = []
        for k in plan["kinds"]:
            h2 = res["h2"].get(k)
            if h2:
                rows.append([k, h2["n"], _civ(h2["late"]), _civ(h2["coherence"]), f"{h2['level'] * 100:.1f} %", h2["label"]])
        lines += [C.md_table(["kind", "n", "Δ late projection", "Δ coherence", "level", "H2"], rows), "",
                  "### Mean projection per turn (95 % bootstrap over conversations)", ""]
        hdr = ["kind", "condition"] + [f"t{t + 1}" for t in range(int(plan["n_turns"]))]
        rows = []
        for k in plan["kinds"]:
            for cond in CONDITIONS:
                pts = res["curves"].get(cond, {}).get(k)
                if pts:
                    rows.append([k, cond] + [_f(p["mean"], 2) for p in pts])
        lines += [C.md_table(hdr, rows), ""]
    acc = "–" if results["judge_accuracy"] is None else f"{results['judge_accuracy']:.3f}"
    lines += ["## Coherence and the judge (secondary, descriptive)", "",
              f"Mean coherence per turn (unsteered model, 1 = fluent): " + "; ".join(
                  f"{cond}: " + ", ".join(f"{k} {v:.2f}" for k, v in results["coherence"].get(cond, {}).items())
                  for cond in CONDITIONS) + ".", "",
              f"The judge's labels (its held-out accuracy on real SmolLM2 generations is {acc}; "
              "supernatural precision/recall there are low, see `docs/judge_validation.md`): share of turns labelled "
              "`ai_assistant` / any other self-description / `supernatural`, per turn bin.", ""]
    rows = []
    for cond in CONDITIONS:
        for k in plan["kinds"]:
            cells = results["judge"].get(cond, {}).get(k, {})
            rows.append([k, cond] + [f"{v['ai_assistant'] * 100:.0f} / {v['non_assistant_self'] * 100:.0f} / "
                                     f"{v['supernatural'] * 100:.0f} % (n {v['n']})" for v in cells.values()])
    lines += [C.md_table(["kind", "condition"] + [f"turns {a}–{b}" for a, b in BINS], rows), "",
              "## Examples (first script of each kind: turn 1 and the last turn)", ""]
    for e in results["examples"]:
        lines += [f"- **{e['kind']} / {e['conv']} / {e['condition']}** — t{e['first']['turn']} “{C.clip(e['first']['user'], 80)}” → "
                  f"“{C.clip(e['first']['text'], 160)}”; t{e['last']['turn']} “{C.clip(e['last']['user'], 80)}” → "
                  f"“{C.clip(e['last']['text'], 160)}”"]
    lines += ["", "Recompute every number: `python experiments/recompute.py <this run dir>`.", ""]
    return "\n".join(lines)


def figure(results: dict[str, Any], records: list[dict[str, Any]], config: dict[str, Any], path: Path
           ) -> Optional[Path]:
    """Per-turn projection curves per kind (uncapped solid, capped dashed) with 95 % bands, primary layer."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from persona_vectors.plotting.output import write_html

    plan = config["config"]["plan"]
    res = results["layers"][str(plan["primary_layer"])]
    kinds = list(plan["kinds"])
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, subplot_titles=kinds)
    colors = {"uncapped": "#d32f2f", "capped": "#1565c0"}
    for j, k in enumerate(kinds, start=1):
        for cond in CONDITIONS:
            pts = res["curves"].get(cond, {}).get(k)
            if not pts:
                continue
            t = list(range(1, len(pts) + 1))
            fig.add_trace(go.Scatter(x=t + t[::-1], y=[p["hi"] for p in pts] + [p["lo"] for p in pts][::-1],
                                     fill="toself", line=dict(width=0), fillcolor=colors[cond], opacity=0.15,
                                     showlegend=False, hoverinfo="skip"), row=1, col=j)
            fig.add_trace(go.Scatter(x=t, y=[p["mean"] for p in pts], mode="lines+markers", name=cond,
                                     line=dict(color=colors[cond], dash="solid" if cond == "uncapped" else "dash"),
                                     showlegend=j == 1), row=1, col=j)
        fig.update_xaxes(title_text="assistant turn", row=1, col=j)
    fig.update_yaxes(title_text=f"projection on the Assistant Axis (layer {plan['primary_layer']})", row=1, col=1)
    fig.update_layout(template="plotly_white", width=1250, height=460,
                      title="Persona drift per turn (read by the unsteered model; 95 % bands over conversations)")
    return write_html(fig, path)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json, report.md and the figure from the run directory."""
    def headline(r: Mapping[str, Any]) -> str:
        v = r.get("verdict") or {}
        return f"H1 {v.get('h1')}, H2 {v.get('h2')}"

    return R.write_report(out, NAME, summarize, render, headline=headline,
                          figures=[("drift.html", figure)])


def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    return R.main(argv, __doc__, Config.preset, run, report,
                  resume_help="continue a run in --out (finished conditions are kept)")


if __name__ == "__main__":
    main()
