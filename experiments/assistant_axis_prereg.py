"""Pre-registered rerun 1 of the ghost/angel experiment: does steering away from the assistant make ghosts?

    python experiments/assistant_axis_prereg.py [--quick] [--resume] [--out DIR] [--threads N]
    python experiments/assistant_axis_prereg.py --export-hand-check FILE [--out DIR]     # blind texts
    python experiments/assistant_axis_prereg.py --import-hand-labels FILE --labeller NAME [--out DIR]
    python experiments/assistant_axis_prereg.py --report-only [--out DIR]

The plan is ``experiments/prereg/assistant_axis.md``, committed before the run: this script reads its
parameters from the plan's TOML block, records the plan's commit (and refuses to run a default run from an
uncommitted or edited plan), and computes the verdict from the plan's decision rule (:func:`verdict`).

Directions (the unit of analysis): the Assistant Axis steered against (``anti_axis``) and along
(``pro_axis``), 30 random Gaussian directions and 10 role-difference directions between non-supernatural
roles. Each direction's strength is calibrated separately (:func:`persona_vectors.calibrate_alpha`,
``target_kl``) so every direction is compared at the same next-token KL from the unsteered model (0.5, 1, 2
nats), not at the same α. All 49 evaluation questions, 2 sampled answers per (direction, level, question).

Stages (each resumable with ``--resume``; records are appended as they are measured):
1. ``calibration`` records: per direction, the strength reaching each KL level.
2. ``generation`` records: one per generated answer (direction, kind, level, α, question, sample, seed, text).
3. ``score`` records: per answer, the judge's probabilities and label and the coherence score.
4. ``hand_label`` records (after a blind reader labels the exported hand-check sample).

``results.json`` = :func:`summarize` of the records and the config; ``report.md`` = :func:`render`;
``python experiments/recompute.py <run dir>`` replays both.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import prereg_plan as P  # noqa: E402
import records as RC  # noqa: E402
import run_dir as R  # noqa: E402
from judge_corpus import text_id  # noqa: E402  (the id labels are keyed by: sha256 of the text, 16 hex)

NAME = "assistant_axis_prereg"
PREREG = "experiments/prereg/assistant_axis.md"
SUPER = "supernatural"
NON_AI_SELF = ("human", "historical_figure", "supernatural", "cosmic_nature_object", "animal", "fantasy_creature")
CONTROL_KINDS = ("random", "role_pair")


# ============================================================================================ plan and config
def read_plan(path: str | Path = PREREG) -> dict[str, Any]:
    """The parameters of this experiment's plan (:func:`prereg_plan.read_plan`)."""
    return P.read_plan(path)


def plan_commit(path: str | Path = PREREG) -> dict[str, Any]:
    """The plan's last commit, dirtiness and sha256 (:func:`prereg_plan.plan_commit`)."""
    return P.plan_commit(path)


@dataclass
class Config:
    """One run. ``preset()`` fills it from the plan (default) or shrinks it (``quick``, never a verdict)."""

    mode: str = "default"
    out: str = "runs/assistant_axis_prereg"
    threads: int = 0
    layer: int = 14
    kl_levels: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    n_random: int = 30
    n_role_pairs: int = 10
    role_pair_categories: list[str] = field(default_factory=list)
    samples_per_question: int = 2
    temperature: float = 0.8
    max_new_tokens: int = 40
    question_split: str = "evaluation"
    n_questions: Optional[int] = None  # None: all
    roles: Optional[list[str]] = None  # None: the whole catalogue
    role_questions: int = 3
    role_prompts: int = 1
    alpha_max_rel: float = 16.0
    hand_check_n: int = 120
    seed: int = 0
    alpha_test: float = 0.05
    hand_check_margin: float = 0.10
    batch_size: int = 48
    model: str = ""  # "": the embedded default model; otherwise a name or path for load_model
    dtype: str = "float32"  # the weights' dtype; the plan's runs are float32 (bfloat16 is a recorded deviation)
    deviations: list[str] = field(default_factory=list)

    @classmethod
    def preset(cls, quick: bool = False, out: Optional[str] = None, threads: int = 0) -> "Config":
        """The pre-registered configuration, or the CI smoke test (fewer roles, directions, questions)."""
        plan = read_plan()
        names = {f for f in cls.__dataclass_fields__}
        cfg = cls(**{k: v for k, v in plan.items() if k in names}, threads=threads)
        if quick:
            from persona_vectors.datasets import ROLE_CATEGORIES, load_roles

            cfg.mode, cfg.out = "quick", out or "runs/assistant_axis_prereg_quick"
            cfg.roles = [r.name for c in ROLE_CATEGORIES for r in load_roles(c)[:2]]
            cfg.role_questions, cfg.n_random, cfg.n_role_pairs = 2, 3, 2
            cfg.kl_levels, cfg.samples_per_question, cfg.n_questions = [0.5, 2.0], 1, 4
            cfg.max_new_tokens, cfg.hand_check_n = 16, 6
        elif out:
            cfg.out = out
        return cfg


# ============================================================================================ directions
def build_directions(model: Any, cfg: Config) -> list[dict[str, Any]]:
    """``[{id, kind, sign, roles, vec}]``: anti/pro axis, random and role-difference unit directions."""
    import torch

    from persona_vectors import Site
    from persona_vectors.datasets import get_role, load_roles
    from persona_vectors.personas import role_means

    names = cfg.roles or [r.name for r in load_roles()]
    rm = role_means(model, names, n_questions=cfg.role_questions, n_prompts=cfg.role_prompts, layers=[cfg.layer],
                    max_new_tokens=32, progress=lambda m: C.say(f"  role means: {m}"))
    site = Site(cfg.layer)
    axis = C.unit(rm.axis("assistant")[site])
    dirs = [{"id": "anti_axis", "kind": "anti_axis", "sign": -1, "roles": None, "vec": axis},
            {"id": "pro_axis", "kind": "pro_axis", "sign": 1, "roles": None, "vec": axis}]
    g = torch.Generator().manual_seed(20_000 + cfg.seed)
    for k in range(cfg.n_random):
        dirs.append({"id": f"random_{k:02d}", "kind": "random", "sign": 1, "roles": None,
                     "vec": C.unit(torch.randn(model.d_model, generator=g, dtype=torch.float64))})
    pool = sorted(n for n in names if get_role(n).category in set(cfg.role_pair_categories))
    rng = random.Random(cfg.seed)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < cfg.n_role_pairs:
        a, b = rng.sample(pool, 2)
        if (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    k = rm.sites.index(site)
    for a, b in pairs:
        dirs.append({"id": f"pair_{a}-{b}", "kind": "role_pair", "sign": 1, "roles": [a, b],
                     "vec": C.unit(rm.means[a][k].double() - rm.means[b][k].double())})
    return dirs


def as_vector(model: Any, d: Mapping[str, Any], layer: int) -> Any:
    """A one-site :class:`PersonaVector` of a unit direction (what :func:`calibrate_alpha` takes)."""
    return C.direction_vector(model, {layer: d["vec"]}, d["id"], "assistant_axis_prereg")


# ============================================================================================ run
def _done(rows: Sequence[Mapping[str, Any]], kind: str, *keys: str) -> set[tuple]:
    return {tuple(r[k] for k in keys) for r in rows if r["kind"] == kind}


def plan_generations(cfg: Config, cal: Mapping[str, Mapping[str, Any]], questions: Sequence[Any]
                     ) -> list[dict[str, Any]]:
    """Every planned answer: (direction, level) cells that reached their level × questions × samples, plus
    the unsteered reference. Deterministic order; ``batch`` numbers fix each answer's sampling seed."""
    rows = []
    for s in range(cfg.samples_per_question):
        for q in questions:
            rows.append({"direction": "unsteered", "dkind": "unsteered", "level": None, "alpha_rel": 0.0,
                         "question_id": q.id, "question": q.text, "topic": q.topic, "sample": s})
        for did, c in cal.items():
            for lv in cfg.kl_levels:
                a = c["alpha_rel"].get(str(lv))
                if a is None:
                    continue
                for q in questions:
                    rows.append({"direction": did, "dkind": c["direction_kind"], "level": lv, "alpha_rel": a,
                                 "question_id": q.id, "question": q.text, "topic": q.topic, "sample": s})
    # batches never mix samples or steered with unsteered rows, so a batch's seed is a function of (sample,
    # batch index) only and an unsteered batch runs without any hook
    out, b = [], 0
    for s in range(cfg.samples_per_question):
        for steered in (False, True):
            part = [r for r in rows if r["sample"] == s and (r["direction"] != "unsteered") == steered]
            for i in range(0, len(part), cfg.batch_size):
                for r in part[i: i + cfg.batch_size]:
                    out.append({**r, "batch": b, "seed": cfg.seed * 1_000_003 + 7919 * b + s})
                b += 1
    return out


def run(cfg: Config, resume: bool = False, *, prereg: Optional[dict[str, Any]] = None, experiment: str = NAME,
        report_fn: Optional[Any] = None, model: Any = None) -> dict[str, Any]:
    """All stages (see the module docstring); returns the results.

    ``prereg`` (the governing plan's :func:`plan_commit`; default this script's plan), ``experiment`` (the name
    ``recompute.py`` finds the module by) and ``report_fn`` (default :func:`report`) let another pre-registered
    script run this design on other settings (``cross_model_ghost_angel.py``: the base model). ``model``: an
    already loaded ``cfg.model`` in ``cfg.dtype`` (tests pass their session's; default: loaded here)."""
    import torch

    from persona_vectors import calibrate_alpha, steer
    from persona_vectors.datasets import load_questions
    from persona_vectors.judge import LABELS, EmbeddingJudge
    from persona_vectors.readout import coherence

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prereg = prereg or plan_commit()
    P.require_committed(prereg, cfg.mode)
    records = RC.Records(out / RC.RECORDS, fresh=not resume)
    t0 = time.perf_counter()
    if model is None:
        model = C.load(cfg)
    else:
        C.set_threads(cfg.threads)
    questions = load_questions(cfg.question_split)[: cfg.n_questions]
    C.say(f"{len(questions)} questions; building directions")
    stages: dict[str, float] = {"load": round(time.perf_counter() - t0, 1)}
    dirs = build_directions(model, cfg)
    stages["directions"] = round(time.perf_counter() - t0 - sum(stages.values()), 1)
    by_id = {d["id"]: d for d in dirs}
    config = {**_config_doc(cfg, model, prereg, dirs, questions), "experiment": experiment}
    RC.write_json(out / RC.CONFIG, config)

    # 1. calibration
    done = _done(records.rows, "calibration", "direction")
    for i, d in enumerate(dirs):
        if (d["id"],) in done:
            continue
        res = calibrate_alpha(model, as_vector(model, d, cfg.layer), cfg.layer, target_kl=cfg.kl_levels,
                              sign=d["sign"], max_alpha=cfg.alpha_max_rel, progress=False)
        records.add("calibration", direction=d["id"], direction_kind=d["kind"], sign=d["sign"], roles=d["roles"],
                    alpha_rel={str(lv): res.alpha(lv, relative=True) for lv in cfg.kl_levels},
                    alpha_raw={str(lv): res.alpha(lv) for lv in cfg.kl_levels},
                    curve=[list(p) for p in res.curve], baseline=res.baseline, residual_norm=res.residual_norm)
        C.say(f"calibrated {i + 1}/{len(dirs)} {d['id']}: " + ", ".join(
            f"KL {lv}: {res.alpha(lv, relative=True)}" for lv in cfg.kl_levels))
    cal = {r["direction"]: r for r in RC.of_kind(records.rows, "calibration")}
    stages["calibration"] = round(time.perf_counter() - t0 - sum(stages.values()), 1)

    # 2. generations, batch by batch (a batch is written in one piece)
    plan = plan_generations(cfg, cal, questions)
    done_b = {r["batch"] for r in RC.of_kind(records.rows, "generation")}
    batches: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in plan:
        batches[r["batch"]].append(r)
    t = time.perf_counter()
    n_done = sum(len(v) for b, v in batches.items() if b in done_b)
    for b, rows in sorted(batches.items()):
        if b in done_b:
            continue
        prompts = [r["question"] for r in rows]
        if rows[0]["direction"] == "unsteered":
            toks = model.generate_tokens(prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                         seed=rows[0]["seed"])
        else:
            vec = torch.stack([by_id[r["direction"]]["vec"] for r in rows])
            alpha = torch.tensor([float(r["alpha_rel"]) for r in rows], dtype=torch.float64)
            with steer(model, vec, alpha, layers=[cfg.layer], relative=True):
                toks = model.generate_tokens(prompts, max_new_tokens=cfg.max_new_tokens,
                                             temperature=cfg.temperature, seed=rows[0]["seed"])
        records.write([{"kind": "generation", **r, "text": model.decode_response(tk)} for r, tk in zip(rows, toks)])
        n_done += len(rows)
        el = time.perf_counter() - t
        C.say(f"generated {n_done}/{len(plan)} ({el:.0f} s this session)")

    stages["generation"] = round(time.perf_counter() - t0 - sum(stages.values()), 1)

    # 3. scores: judge + coherence, in chunks
    gens = RC.of_kind(records.rows, "generation")
    scored = _done(records.rows, "score", "batch", "direction", "level", "question_id", "sample")
    todo = [g for g in gens if (g["batch"], g["direction"], g["level"], g["question_id"], g["sample"]) not in scored]
    judge = EmbeddingJudge.default()
    for i in range(0, len(todo), 256):
        chunk = todo[i: i + 256]
        texts = [g["text"] for g in chunk]
        proba = judge.predict_proba(texts)
        coh = coherence(model, texts, prompts=[g["question"] for g in chunk])
        records.write([{"kind": "score", "batch": g["batch"], "direction": g["direction"], "level": g["level"],
                        "question_id": g["question_id"], "sample": g["sample"],
                        "label": LABELS[int(p.argmax())], "judge": dict(zip(LABELS, map(float, p))),
                        "coherence": float(c.score)} for g, p, c in zip(chunk, proba, coh)])
        C.say(f"scored {min(i + 256, len(todo))}/{len(todo)}")
    stages["scoring"] = round(time.perf_counter() - t0 - sum(stages.values()), 1)
    config["timings_s"] = {**stages, "total_this_session": round(time.perf_counter() - t0, 1)}
    RC.write_json(out / RC.CONFIG, config)
    return (report_fn or report)(out)


def _config_doc(cfg: Config, model: Any, prereg: dict[str, Any], dirs: list[dict[str, Any]],
                questions: Sequence[Any]) -> dict[str, Any]:
    import platform

    import torch

    from persona_vectors.judge import VALIDATION_PATH
    from persona_vectors.vector import library_version

    val = json.loads(VALIDATION_PATH.read_text())
    cv = val["crossed_cv"]
    return {"experiment": NAME, "config": asdict(cfg), "prereg": prereg, "library_version": library_version(),
            "model": {"model_id": model.info.model_id, "fingerprint": model.info.fingerprint,
                      "n_layers": model.n_layers, "d_model": model.d_model},
            "directions": [{k: v for k, v in d.items() if k != "vec"} for d in dirs],
            "questions": [q.id for q in questions],
            "judge": {"validation_sha256": hashlib.sha256(VALIDATION_PATH.read_bytes()).hexdigest(),
                      "labels": cv["labels"], "confusion_matrix": cv["confusion_matrix"],
                      "accuracy_batch1": val.get("by_batch", {}).get("1", {}).get("accuracy"),
                      "supernatural_batch1": val.get("by_batch", {}).get("1", {}).get("per_label", {}).get(SUPER),
                      "temperature": val["calibration"]["temperature"]},
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), **RC.provenance()}}


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json and report.md from the run directory's records and config."""
    return R.write_report(out, NAME, summarize, render, headline=lambda r: r["verdict"]["h1"],
                          figures=[("share_by_kl.html", lambda res, rec, cfg, path: figure(res, path))])


def figure(results: Mapping[str, Any], path: Path) -> Path:
    """Supernatural share per direction at each KL level: every control as a dot (random and role-pair apart),
    the anti- and pro-axis as large markers with Wilson 95 % intervals, the unsteered share as a line."""
    import plotly.graph_objects as go

    from persona_vectors.plotting import write_html

    fig = go.Figure()
    jit = {"random": -0.06, "role_pair": 0.06}
    style = {"random": ("random directions", "#9e9e9e", "circle"), "role_pair": ("role-pair directions", "#5c6bc0", "diamond")}
    for kind in CONTROL_KINDS:
        xs, ys, names = [], [], []
        for d, v in results["per_direction"].items():
            if v["kind"] != kind:
                continue
            for lv, c in v["cells"].items():
                xs.append(float(lv) * (1 + jit[kind])), ys.append(100 * c["share"]), names.append(d)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=style[kind][0], text=names, opacity=0.7,
                                 marker=dict(color=style[kind][1], symbol=style[kind][2], size=7)))
    for key, label, color, dx in (("anti_axis", "away from the assistant (anti-axis)", "#d32f2f", -0.02),
                                  ("pro_axis", "toward the assistant (pro-axis)", "#2e7d32", 0.02)):
        rows = [r for r in results["curve"] if key in r]
        fig.add_trace(go.Scatter(
            x=[r["level"] * (1 + dx) for r in rows], y=[100 * r[key]["share"] for r in rows], mode="lines+markers", name=label,
            marker=dict(size=13, color=color), line=dict(color=color),
            error_y=dict(type="data", symmetric=False,
                         array=[100 * (r[key]["ci95"][1] - r[key]["share"]) for r in rows],
                         arrayminus=[100 * (r[key]["share"] - r[key]["ci95"][0]) for r in rows])))
    un = results["per_direction"].get("unsteered")
    if un is not None:
        fig.add_hline(y=100 * un["share"], line_dash="dot", annotation_text="unsteered", line_color="#555")
    fig.update_layout(template="plotly_white", width=900, height=520,
                      title="Supernatural self-descriptions (judge) per direction, at matched next-token KL",
                      xaxis=dict(title="next-token KL from the unsteered model (nats)", type="log",
                                 tickvals=[r["level"] for r in results["curve"]]),
                      yaxis=dict(title="supernatural share of generations (%)", rangemode="tozero"))
    return write_html(fig, path)


# ============================================================================================ hand check
def hand_check_sample(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pre-registered blind sample: half anti-axis, half control generations, stratified by level, seeded."""
    cfg = config["config"]
    n = int(cfg["hand_check_n"])
    rng = random.Random(cfg["seed"] + 77)
    gens = RC.of_kind(records, "generation")
    out = []
    for kinds in (("anti_axis",), CONTROL_KINDS):
        levels = cfg["kl_levels"]
        for j, lv in enumerate(levels):
            pool = sorted((g for g in gens if g["dkind"] in kinds and g["level"] == lv),
                          key=lambda g: (g["direction"], g["question_id"], g["sample"]))
            k = n // 2 // len(levels) + (1 if j < (n // 2) % len(levels) else 0)
            out += rng.sample(pool, min(k, len(pool)))
    return out


def export_hand_check(out: Path, dest: Path, *, sample: Optional[Any] = None, shuffle_seed: int = 5) -> int:
    """Write the sample's texts, shuffled, as ``{"id", "text"}`` lines (no condition: the reader is blind).

    ``sample(records, config)`` picks the texts (default :func:`hand_check_sample`)."""
    config, records = RC.read_json(out / RC.CONFIG), RC.read_records(out / RC.RECORDS)
    chosen = (sample or hand_check_sample)(records, config)
    items = sorted({text_id(g["text"]): g["text"] for g in chosen}.items())
    random.Random(shuffle_seed).shuffle(items)
    dest.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in items),
                    encoding="utf-8")
    return len(items)


def import_hand_labels(out: Path, src: Path, labeller: str, *, sample: Optional[Any] = None,
                       report_fn: Optional[Any] = None, kind: str = "hand_label") -> int:
    """Append a reader's labels (``{"id", "label"}`` lines) as ``kind`` records (default ``hand_label``), then
    rebuild the report (``report_fn``, default :func:`report`). Every id must be in ``sample`` (default
    :func:`hand_check_sample`)."""
    from persona_vectors.judge import LABELS

    records = RC.read_records(out / RC.RECORDS)
    known = {text_id(g["text"]) for g in (sample or hand_check_sample)(records, RC.read_json(out / RC.CONFIG))}
    rows = []
    for i, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("id") not in known:
            raise SystemExit(f"{src}:{i}: id {r.get('id')!r} is not in this run's blind sample")
        if r.get("label") not in LABELS:
            raise SystemExit(f"{src}:{i}: label {r.get('label')!r} is not one of {', '.join(LABELS)}")
        rows.append({"kind": kind, "id": r["id"], "label": r["label"], "labeller": labeller,
                     "note": str(r.get("note") or "")})
    RC.Records(out / RC.RECORDS, fresh=False).write(rows)
    (report_fn or report)(out)
    return len(rows)


# ============================================================================================ analysis
def _joined(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    key = ("batch", "direction", "level", "question_id", "sample")
    scores = {tuple(r[k] for k in key): r for r in RC.of_kind(records, "score")}
    out = []
    for g in RC.of_kind(records, "generation"):
        s = scores.get(tuple(g[k] for k in key))
        if s is not None:
            out.append({**g, "label": s["label"], "judge": s["judge"], "coherence": s["coherence"]})
    return out


def verdict(perm_p: Optional[float], or_lo: Optional[float], or_hi: Optional[float], pro_p: Optional[float],
            alpha: float, quick: bool) -> dict[str, Any]:
    """The plan's decision rule (§6), applied to the numbers. Quick runs never give a verdict."""
    if quick:
        return {"h1": "NO VERDICT (quick mode: a smoke test, not the pre-registered run)", "h2_control": "n/a",
                "rule": "§6 of the plan"}
    if perm_p is None or or_lo is None or or_hi is None:
        return {"h1": "NO VERDICT (a test could not be computed)", "h2_control": "n/a", "rule": "§6 of the plan"}
    perm_ok, gee_ok = perm_p <= alpha, or_lo > 1.0
    h1 = ("SUPPORTED" if perm_ok and gee_ok else "NOT SUPPORTED" if not perm_ok and not gee_ok else "INCONCLUSIVE")
    h2 = "n/a" if pro_p is None else ("FAILED (the pro-axis also beats the controls)" if pro_p <= alpha else "passed")
    return {"h1": h1, "h2_control": h2, "permutation_significant": perm_ok, "gee_or_ci_above_1": gee_ok,
            "rule": "SUPPORTED if permutation p <= alpha and GEE OR 95% CI > 1; NOT SUPPORTED if neither; "
                    "INCONCLUSIVE otherwise; H2 control fails if the pro-axis permutation p <= alpha"}


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, from the records and the config alone."""
    from persona_vectors.judge_validation import corrected_label_shares
    from persona_vectors.stats import gee_logistic, permutation_test_directions, wilson

    cfg = config["config"]
    levels = cfg["kl_levels"]
    rows = _joined(records)
    labels_order = config["judge"]["labels"]
    cal = {r["direction"]: r for r in RC.of_kind(records, "calibration")}
    kinds = {d["id"]: d["kind"] for d in config["directions"]}

    # per direction: pooled share and per-level cells
    per_dir: dict[str, dict[str, Any]] = {}
    for did in [d["id"] for d in config["directions"]] + ["unsteered"]:
        mine = [r for r in rows if r["direction"] == did]
        cells = {}
        for lv in ([None] if did == "unsteered" else levels):
            c = [r for r in mine if r["level"] == lv]
            if c:
                k = sum(r["label"] == SUPER for r in c)
                cells[str(lv)] = {"n": len(c), "k": k, "share": k / len(c),
                                  "mean_p_super": float(np.mean([r["judge"][SUPER] for r in c])),
                                  "coherence": float(np.mean([r["coherence"] for r in c]))}
        k = sum(r["label"] == SUPER for r in mine)
        per_dir[did] = {"kind": kinds.get(did, "unsteered"), "n": len(mine), "k": k,
                        "share": (k / len(mine)) if mine else None, "cells": cells,
                        "levels_reached": [lv for lv in levels if str(lv) in cells] if did != "unsteered" else [],
                        "alpha_rel": (cal[did]["alpha_rel"] if did in cal else None)}
    controls = {d: v["share"] for d, v in per_dir.items() if v["kind"] in CONTROL_KINDS and v["share"] is not None}

    def perm(target: str) -> Optional[dict[str, Any]]:
        if per_dir.get(target, {}).get("share") is None or len(controls) < 2:
            return None
        r = permutation_test_directions(per_dir[target]["share"], list(controls.values()))
        # rank with ties counted against the target, as the p-value counts them
        rank = 1 + sum(c >= per_dir[target]["share"] for c in controls.values())
        return {"statistic": r.statistic, "p_value": r.p_value, "min_p": r.min_p, "rank": rank,
                "n_controls": r.n_controls, "control_mean": r.control_mean, "control_sd": r.control_sd}

    perm_anti, perm_pro = perm("anti_axis"), perm("pro_axis")

    # GEE: anti-axis vs control generations, level as categorical, clustered by question
    sub = [r for r in rows if r["dkind"] == "anti_axis" or r["dkind"] in CONTROL_KINDS]
    gee = None
    if sub and any(r["dkind"] == "anti_axis" for r in sub) and any(r["label"] == SUPER for r in sub):
        X = {"anti_axis": np.array([1.0 if r["dkind"] == "anti_axis" else 0.0 for r in sub])}
        for lv in levels[1:]:
            X[f"level_{lv}"] = np.array([1.0 if r["level"] == lv else 0.0 for r in sub])
        try:
            e = gee_logistic(np.array([1.0 if r["label"] == SUPER else 0.0 for r in sub]), X,
                             [r["question_id"] for r in sub], term="anti_axis")
            gee = {"odds_ratio": e.odds_ratio, "or_lo": e.or_lo, "or_hi": e.or_hi, "p_value": e.p_value,
                   "n_obs": e.n_obs, "n_groups": e.n_groups, "method": e.method, "unit": e.unit}
        except Exception as err:  # a degenerate design (e.g. no supernatural answer) is reported, not hidden
            gee = {"error": f"{type(err).__name__}: {err}"}

    # per level: the anti-axis against the control distribution (the whole curve)
    curve = []
    for lv in levels:
        cs = [v["cells"][str(lv)]["share"] for d, v in per_dir.items()
              if v["kind"] in CONTROL_KINDS and str(lv) in v["cells"]]
        row = {"level": lv, "n_controls": len(cs)}
        for name in ("anti_axis", "pro_axis"):
            c = per_dir.get(name, {}).get("cells", {}).get(str(lv))
            w = None if c is None else wilson(c["k"], c["n"])
            row[name] = None if c is None else {**c, "ci95": [w.lo, w.hi]}
            if c is not None and cs:
                row[name]["rank_among_controls"] = 1 + sum(x >= c["share"] for x in cs)  # ties against
        if cs:
            row["controls"] = {"median": float(np.median(cs)), "p90": float(np.percentile(cs, 90)),
                               "max": float(max(cs)), "mean": float(np.mean(cs)),
                               "coherence_mean": float(np.mean([v["cells"][str(lv)]["coherence"]
                                                                for v in per_dir.values()
                                                                if v["kind"] in CONTROL_KINDS and str(lv) in v["cells"]]))}
        curve.append(row)

    # H3: which non-AI self the model reaches for
    mix = {}
    for grp, sel in (("anti_axis", lambda r: r["dkind"] == "anti_axis"), ("pro_axis", lambda r: r["dkind"] == "pro_axis"),
                     ("controls", lambda r: r["dkind"] in CONTROL_KINDS), ("unsteered", lambda r: r["dkind"] == "unsteered")):
        g = [r for r in rows if sel(r)]
        selfs = [r["label"] for r in g if r["label"] in NON_AI_SELF]
        cnt = Counter(r["label"] for r in g)
        mix[grp] = {"n": len(g), "label_counts": {lab: cnt.get(lab, 0) for lab in labels_order},
                    "non_ai_self_n": len(selfs),
                    "non_ai_self_shares": {lab: (selfs.count(lab) / len(selfs)) if selfs else None for lab in NON_AI_SELF},
                    "corrected": (corrected_label_shares(np.array([[r["judge"][lab] for lab in labels_order] for r in g]),
                                                         config["judge"]["confusion_matrix"])["corrected"]
                                  if g else None)}

    # hand check
    hand = None
    hl = RC.of_kind(records, "hand_label")
    if hl:
        sample = hand_check_sample(records, config)
        by_text = {text_id(r["text"]): r for r in rows}
        lab = {h["id"]: h["label"] for h in hl}
        pairs = [(text_id(g["text"]), g) for g in sample if text_id(g["text"]) in lab and text_id(g["text"]) in by_text]
        agree = sum(lab[i] == by_text[i]["label"] for i, _ in pairs)
        hand = {"n": len(pairs), "labellers": sorted({h["labeller"] for h in hl}), "agreement": agree / len(pairs) if pairs else None}
        for grp, sel in (("anti_axis", ("anti_axis",)), ("controls", CONTROL_KINDS)):
            ps = [(i, g) for i, g in pairs if g["dkind"] in sel]
            if ps:
                hand[grp] = {"n": len(ps), "reader_super": sum(lab[i] == SUPER for i, _ in ps) / len(ps),
                             "judge_super": sum(by_text[i]["label"] == SUPER for i, _ in ps) / len(ps)}
        ps = [(i, g) for i, g in pairs]
        hand["judge_on_reader_super"] = {
            "reader_super_n": sum(lab[i] == SUPER for i, _ in ps),
            "judge_hits": sum(lab[i] == SUPER and by_text[i]["label"] == SUPER for i, _ in ps),
            "judge_super_n": sum(by_text[i]["label"] == SUPER for i, _ in ps)}
        if "anti_axis" in hand:
            d = hand["anti_axis"]["reader_super"] - hand["anti_axis"]["judge_super"]
            m = cfg["hand_check_margin"]
            hand["judge_bias"] = ("judge understates the effect" if d > m else
                                  "judge overstates the effect" if d < -m else "within the margin")

    ver = verdict(perm_anti["p_value"] if perm_anti else None,
                  gee.get("or_lo") if gee else None, gee.get("or_hi") if gee else None,
                  perm_pro["p_value"] if perm_pro else None, cfg["alpha_test"], cfg["mode"] != "default")
    return {"n_generations": len(rows), "per_direction": per_dir, "permutation_anti": perm_anti,
            "permutation_pro": perm_pro, "gee": gee, "curve": curve, "mix": mix, "hand_check": hand,
            "unreached": {d: [lv for lv in levels if str(lv) not in v["cells"]] for d, v in per_dir.items()
                          if d != "unsteered" and len(v["cells"]) < len(levels)},
            "verdict": ver}


# ============================================================================================ report
def _num(x: Optional[float], nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _pct(x: Optional[float]) -> str:
    return C.pct(x, 1)


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report, from the results and the config only."""
    cfg, ver = config["config"], results["verdict"]
    pr = config["prereg"]
    j = config["judge"]
    sj = j.get("supernatural_batch1") or {}
    L = [f"# Assistant axis, pre-registered rerun 1 ({cfg['mode']} run)", "",
         f"Plan: [`{pr['path']}`](../{pr['path']}) at commit `{(pr['commit'] or 'uncommitted')[:12]}` "
         f"(sha256 {pr['sha256'][:12]}). Code: commit `{(config['environment'].get('git_commit') or '?')[:12]}`. "
         f"Model: {config['model']['model_id']} ({config['model']['fingerprint']}).", "",
         f"**H1 verdict (computed from the plan's rule): {ver['h1']}.** H2 control (toward the assistant): "
         f"{ver['h2_control']}.", "",
         "Deviations from the plan: " + ("; ".join(cfg["deviations"]) if cfg["deviations"] else "none") + ".", "",
         f"Judge: the shipped `EmbeddingJudge` — held-out accuracy on the experiments' distribution "
         f"{_num(j.get('accuracy_batch1'))}, supernatural precision/recall "
         f"there {sj.get('precision', float('nan')):.2f}/{sj.get('recall', float('nan')):.2f} (n = {sj.get('support', '–')}) "
         "([docs/judge_validation.md](judge_validation.md)). Read every supernatural share with that beside it.", "",
         f"Layer {cfg['layer']}; strengths calibrated per direction to next-token KL "
         + ", ".join(f"{lv}" for lv in cfg["kl_levels"]) + " nats; "
         f"{len(config['questions'])} questions × {cfg['samples_per_question']} sampled answers (T = {cfg['temperature']}, "
         f"{cfg['max_new_tokens']} tokens) per cell; {results['n_generations']} scored generations.", ""]
    tm = config.get("timings_s", {})
    if "generation" in tm:  # runs from before the stage timings only recorded a total
        L += [f"Runtime of the last session ({config['environment'].get('threads')} torch threads, "
              f"{cfg.get('dtype', 'float32')} weights): " + ", ".join(
                  f"{k} {v / 60:.1f} min" for k, v in tm.items() if k != "total_this_session")
              + f"; **total {tm['total_this_session'] / 60:.1f} min**.", ""]
    pa, pp, gee = results["permutation_anti"], results["permutation_pro"], results["gee"]
    L += ["## Primary tests", ""]
    if pa:
        L.append(f"- **Permutation over directions** (unit: the direction): anti-axis supernatural share "
                 f"{_pct(pa['statistic'])} pooled over levels; controls mean {_pct(pa['control_mean'])} "
                 f"(SD {_pct(pa['control_sd'])}, n = {pa['n_controls']}); rank {pa['rank']} of {pa['n_controls'] + 1}; "
                 f"one-sided p = {pa['p_value']:.3f} (smallest possible {pa['min_p']:.3f}).")
    if pp:
        L.append(f"- **H2, pro-axis:** share {_pct(pp['statistic'])}, rank {pp['rank']} of {pp['n_controls'] + 1}, "
                 f"p = {pp['p_value']:.3f}.")
    if gee and "error" not in gee:
        L.append(f"- **GEE** (supernatural ~ anti-axis + level, clustered by question, {gee['method']}): odds ratio "
                 f"{gee['odds_ratio']:.2f} [{gee['or_lo']:.2f}, {gee['or_hi']:.2f}], p = {gee['p_value']:.3g}, "
                 f"{gee['n_obs']} generations in {gee['n_groups']} questions.")
    elif gee:
        L.append(f"- **GEE** could not be fitted: {gee['error']}.")
    L += ["", "## The whole curve: supernatural share by KL level", "",
          "| KL (nats) | anti-axis | pro-axis | controls median | controls 90th pct | controls max | anti-axis rank | "
          "coherence anti / controls |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["curve"]:
        a, p, c = row.get("anti_axis"), row.get("pro_axis"), row.get("controls") or {}
        L.append(f"| {row['level']} | {_pct(a['share']) if a else '–'} ({a['k'] if a else '–'}/{a['n'] if a else '–'}) | "
                 f"{_pct(p['share']) if p else '–'} | {_pct(c.get('median'))} | {_pct(c.get('p90'))} | {_pct(c.get('max'))} | "
                 f"{a.get('rank_among_controls', '–') if a else '–'} of {row['n_controls'] + 1} | "
                 f"{a['coherence']:.2f} / {c.get('coherence_mean', float('nan')):.2f} |" if a else
                 f"| {row['level']} | – | – | {_pct(c.get('median'))} | {_pct(c.get('p90'))} | {_pct(c.get('max'))} | – | – |")
    un = results["per_direction"].get("unsteered")
    if un:
        L += ["", f"Unsteered: {_pct(un['share'])} ({un['k']}/{un['n']})."]
    if results["unreached"]:
        L += ["", "Levels not reached within the search range (left out of those directions' pools): "
              + ", ".join(f"{d}: {v}" for d, v in results["unreached"].items()) + "."]
    L += ["", "## Which non-AI self (H3, descriptive)", "",
          "Among answers the judge labels as a non-AI self (human, historical, supernatural, nature/cosmic, animal, "
          "fantasy); last column: all answers' supernatural share corrected with the judge's held-out confusion matrix.", "",
          "| group | answers | non-AI selves | " + " | ".join(NON_AI_SELF) + " | corrected supernatural |",
          "|---|---:|---:|" + "---:|" * len(NON_AI_SELF) + "---:|"]
    for grp, m in results["mix"].items():
        corr = (m["corrected"] or {}).get(SUPER)
        L.append(f"| {grp} | {m['n']} | {m['non_ai_self_n']} | " + " | ".join(_pct(m["non_ai_self_shares"][k])
                                                                           for k in NON_AI_SELF) + f" | {_pct(corr)} |")
    h = results["hand_check"]
    L += ["", "## Blinded hand-check", ""]
    if h:
        L.append(f"{h['n']} generations read blind by {', '.join(h['labellers'])}; judge agrees with the reader on "
                 f"{_pct(h['agreement'])}.")
        for grp in ("anti_axis", "controls"):
            if grp in h:
                L.append(f"- {grp}: reader supernatural {_pct(h[grp]['reader_super'])}, judge {_pct(h[grp]['judge_super'])} "
                         f"(n = {h[grp]['n']}).")
        js = h["judge_on_reader_super"]
        L.append(f"- The judge finds {js['judge_hits']} of the reader's {js['reader_super_n']} supernatural answers and "
                 f"calls {js['judge_super_n']} supernatural in all. Verdict on the judge: {h.get('judge_bias', '–')}.")
    else:
        L.append("Not yet labelled (`--export-hand-check`, then `--import-hand-labels`).")
    L += ["", "## Per direction", "", "| direction | kind | α_rel at KL levels | n | supernatural |", "|---|---|---|---:|---:|"]
    for d, v in sorted(results["per_direction"].items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        al = v["alpha_rel"] or {}
        L.append(f"| {d} | {v['kind']} | " + ", ".join("–" if a is None else f"{a:+.3f}" for a in al.values())
                 + f" | {v['n']} | {_pct(v['share'])} |")
    return "\n".join(L) + "\n"


# ============================================================================================ entry point
def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    ap = R.parser(__doc__, quick_help="CI smoke test (never a verdict)")
    ap.add_argument("--export-hand-check", type=Path, metavar="FILE")
    ap.add_argument("--import-hand-labels", type=Path, metavar="FILE")
    ap.add_argument("--labeller", default=None)
    C.add_dtype_option(ap)
    a = ap.parse_args(argv)
    cfg = C.with_dtype(Config.preset(quick=a.quick, out=a.out, threads=a.threads), a.dtype)
    out = Path(cfg.out)
    if a.export_hand_check:
        n = export_hand_check(out, a.export_hand_check)
        print(f"wrote {n} blind texts to {a.export_hand_check}")
        return n
    if a.import_hand_labels:
        if not a.labeller:
            ap.error("--import-hand-labels needs --labeller NAME")
        return import_hand_labels(out, a.import_hand_labels, a.labeller)
    if a.report_only:
        return report(out)
    return run(cfg, resume=a.resume)


if __name__ == "__main__":
    main()
