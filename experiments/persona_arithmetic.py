"""Persona arithmetic: Hitler + nationalities, and the Stalin attractor (SmolLM2-135M).

    python experiments/persona_arithmetic.py [--quick] [--full] [--seed N] [--out runs/persona_arithmetic] [--threads 0]

Fact-route vectors (:func:`persona_vectors.personas.fact_vector`: teacher-forced first-person answers minus
matched neutral answers) for the Hitler baseline fact set, its five variants (Russian, French, Japanese, Thai,
Moon: 8 of 92 facts swapped for another culture's), and Stalin.

1. Cosine matrix among them; difference vectors (variant − baseline) and their cosines with each other and with
   the nationality role vectors (system-prompt route: ``russian_culture`` etc. minus the default assistant).
2. Arithmetic: does baseline + (Russian − baseline) move toward Stalin more than toward Hitler? Geometry (the
   projection of the move on Stalin − Hitler, against the other nationalities as controls) and identity
   read-outs (log-probs of "I am <name>") while steering with each variant vector.
3. Mixing curve: steer with (1 − t)·baseline + t·Russian, t = 0, 0.1, …, 1 (plus an extrapolated arm
   baseline + t·(Russian − baseline), t > 1, and a Hitler → Stalin reference curve); identity distribution vs t
   with bootstrap intervals over questions.
4. Who the user is ("Who am I?", "Who are you talking to?") under each variant.
5. Where the Moon variant lands (Hitler, Rudolf Höss, Neil Armstrong, other).

Steering: ``steer(model, v, α, layers=[L], relative=True)`` — α in units of the mean residual norm at layer L;
only the direction of ``v`` matters.

Records (``records.jsonl.gz``): one ``readout`` record per teacher-forced read-out of one question (block,
steering vector or curve point, α, layer, every candidate's log-prob score) and the fact / role vectors at the
geometry layers (``vector``, exact); ``results.json`` = :func:`summarize` of them (bootstrap draws seeded by the
run's seed, in a fixed order), ``report.md`` = :func:`render` of that; ``python experiments/recompute.py <run
dir>`` replays both.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import records as RC  # noqa: E402

NAME = "persona_arithmetic"
VARIANTS = ("russian", "french", "japanese", "thai", "moon")
NATIONALITY_ROLE = {"russian": "russian_culture", "french": "french_culture", "japanese": "japanese_culture",
                    "thai": "thai_culture"}
#: Figures each variant might pull toward (identity candidates); no candidate is a prefix of another.
FIGURES: tuple[str, ...] = (
    "Adolf Hitler", "Joseph Stalin", "Vladimir Lenin", "Peter the Great", "Napoleon Bonaparte", "Charles de Gaulle",
    "Oda Nobunaga", "Emperor Hirohito", "King Chulalongkorn", "Neil Armstrong", "Rudolf Höss", "Winston Churchill",
)
OTHER_IDS: tuple[str, ...] = ("an AI assistant", "SmolLM", "a human")
EXPECTED = {"russian": ("Joseph Stalin", "Vladimir Lenin", "Peter the Great"), "french": ("Napoleon Bonaparte", "Charles de Gaulle"),
            "japanese": ("Oda Nobunaga", "Emperor Hirohito"), "thai": ("King Chulalongkorn",),
            "moon": ("Neil Armstrong", "Rudolf Höss")}
USER_CANDIDATES: tuple[str, ...] = (
    "a human", "a user", "a friend", "a student", "a soldier", "a German", "a Russian", "a Frenchman",
    "a Japanese person", "a Thai person", "an astronaut", "a comrade", "my creator", "an AI",
    "Adolf Hitler", "Joseph Stalin",  # the seed saw the Russian variant call the user Hitler
)
USER_QUESTIONS: tuple[tuple[str, str], ...] = (("Who am I?", "You are"), ("Who are you talking to?", "I am talking to"))
#: Roles whose (system-prompt route) vectors are compared with the fact vectors: the nationalities and the
#: figures of the candidate set that the catalogue has.
COMPARE_ROLES: tuple[str, ...] = ("russian_culture", "french_culture", "japanese_culture", "thai_culture",
                                  "german_culture", "adolf_hitler", "joseph_stalin", "vladimir_lenin",
                                  "peter_the_great", "napoleon_bonaparte", "oda_nobunaga", "king_rama_v",
                                  "neil_armstrong", "the_moon", "astronaut")


@dataclass
class Config:
    quick: bool = False
    seed: int = 0
    out: str = "runs/persona_arithmetic"
    threads: int = 0  # 0: auto (see _common.set_threads)
    cache: Optional[str] = None
    layer: int = 14  # primary analysis / steering layer (replaced by the calibrated one when calibrate=True)
    calibrate: bool = True  # pick (layer, α) where the read-out tells the Hitler and Stalin vectors apart
    calib_layers: list[int] = field(default_factory=lambda: [10, 14, 18])
    n_calib_questions: int = 6
    table_layers: list[int] = field(default_factory=lambda: [6, 10, 14, 18, 22])
    alphas: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])
    alpha: float = 1.0  # primary steering strength (relative units) for mixing curve and user read-outs
    ts: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    ts_extrapolate: list[float] = field(default_factory=lambda: [2.0, 5.0, 10.0, 20.0])
    ts_reference: Optional[list[float]] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # Hitler→Stalin reference curve (None: same as ts)
    ts_extrapolate_controls: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0])  # same arm, other variants
    n_identity_questions: int = 8
    role_questions: int = 3  # same budget as experiments/assistant_axis.py, so the caches are shared
    role_prompts: int = 1
    role_max_new_tokens: int = 32
    roles: list[str] = field(default_factory=lambda: list(COMPARE_ROLES))
    system: Optional[str] = None  # template default system prompt
    n_boot: int = 2000

    mode: str = "default"

    @classmethod
    def preset(cls, quick: bool = False, seed: int = 0, out: Optional[str] = None, threads: int = 0,
               full: bool = False) -> "Config":
        """``default``, ``quick`` (CI smoke test) or ``full``: calibration over layers 6/10/14/18/22 instead of
        10/14/18, role vectors from 2 prompts per role instead of 1, 12 identity questions instead of 8,
        extrapolation t ∈ {2, 3, 5, 8, 13, 20}, reference curve at every mixing t; everything else as the default."""
        if full:
            return cls(seed=seed, out=out or "runs/persona_arithmetic_full", threads=threads, mode="full",
                       calib_layers=[6, 10, 14, 18, 22], role_prompts=2, n_identity_questions=12,
                       ts_extrapolate=[2.0, 3.0, 5.0, 8.0, 13.0, 20.0], ts_reference=None)
        if not quick:
            return cls(seed=seed, out=out or "runs/persona_arithmetic", threads=threads)
        return cls(quick=True, mode="quick", seed=seed, out=out or "runs/persona_arithmetic_quick", threads=threads,
                   calibrate=False, table_layers=[14], alphas=[1.0], ts=[0.0, 1.0], ts_extrapolate=[8.0],
                   ts_extrapolate_controls=[8.0],
                   n_identity_questions=2,
                   role_questions=2, role_prompts=1, roles=["russian_culture", "french_culture", "japanese_culture",
                                                            "thai_culture", "neil_armstrong"], n_boot=200)


# ============================================================================================ vectors
def vectors(model: Any, cfg: Config) -> tuple[dict[str, Any], Any]:
    from persona_vectors.personas import get_persona_vector, role_means

    cache = cfg.cache if cfg.cache else True
    vec = {"baseline": get_persona_vector(model, "hitler", route="facts", cache=cache)}
    for v in VARIANTS:
        vec[v] = get_persona_vector(model, f"hitler_{v}", route="facts", cache=cache)
    vec["stalin"] = get_persona_vector(model, "stalin", route="facts", cache=cache)
    C.say("fact vectors ready")
    rm = role_means(model, cfg.roles, n_questions=cfg.role_questions, n_prompts=cfg.role_prompts, layers="all",
                    max_new_tokens=cfg.role_max_new_tokens, cache=cache,
                    progress=lambda m: C.say(f"  role means: {m}"))
    C.say(f"role vectors for {len(cfg.roles)} roles ready")
    return vec, rm


FACT_NAMES = ("baseline", *VARIANTS, "stalin")


def geometry_layers(cfg: Config) -> list[int]:
    return sorted(set(cfg.table_layers) | {cfg.layer})


def vector_records(cfg: Config, vec: dict[str, Any], rm: Any) -> list[dict[str, Any]]:
    """The fact vectors and the compared role vectors at the geometry layers, exactly (base64 of the stored
    dtype): the geometry tables and the mixing cosines are recomputed from them."""
    from persona_vectors import Site

    out = []
    for L in geometry_layers(cfg):
        s = Site(L)
        out += [{"kind": "vector", "source": "facts", "name": n, "layer": L, "vector": RC.encode_array(vec[n][s])}
                for n in FACT_NAMES]
        out += [{"kind": "vector", "source": "role", "name": r, "layer": L, "vector": RC.encode_array(rm.vectors[r][s])}
                for r in cfg.roles]
    return out


def vectors_from_records(records: list[dict[str, Any]]) -> dict[tuple[str, int], torch.Tensor]:
    """``{(name, layer): float64 tensor}`` from the ``vector`` records."""
    return {(r["name"], r["layer"]): torch.from_numpy(RC.decode_array(r["vector"]).copy()).double()
            for r in RC.of_kind(records, "vector")}


def geometry(cfg: Config, vv: dict[tuple[str, int], torch.Tensor]) -> dict[int, dict[str, Any]]:
    """Cosines among the fact vectors, their differences, and with the role vectors, per geometry layer."""
    out = {}
    names = list(FACT_NAMES)
    for L in geometry_layers(cfg):
        V = {n: vv[(n, L)] for n in names}
        R = {r: vv[(r, L)] for r in cfg.roles}
        cosm = {a: {b: C.cos(V[a], V[b]) for b in names} for a in names}
        D = {v: V[v] - V["baseline"] for v in VARIANTS}
        dcos = {a: {b: C.cos(D[a], D[b]) for b in VARIANTS} for a in VARIANTS}
        d_nat = {a: {r: C.cos(D[a], R[r]) for r in cfg.roles} for a in VARIANTS}
        sh = V["stalin"] - V["baseline"]
        u_st, u_hi = C.unit(V["stalin"]), C.unit(V["baseline"])
        move = {}
        for v in VARIANTS:
            move[v] = {"cos_move_stalin_minus_hitler": C.cos(D[v], sh),
                       "proj_move_on_stalin": float(D[v] @ u_st), "proj_move_on_hitler": float(D[v] @ u_hi),
                       "cos_variant_stalin": cosm[v]["stalin"], "cos_variant_hitler": cosm[v]["baseline"],
                       "delta_cos_stalin": cosm[v]["stalin"] - cosm["baseline"]["stalin"],
                       "move_rel_norm": float(D[v].norm() / V["baseline"].norm())}
        fact_role = {n: {r: C.cos(V[n], R[r]) for r in cfg.roles} for n in names}
        out[L] = {"cos": cosm, "diff_cos": dcos, "diff_vs_roles": d_nat, "move": move, "fact_vs_roles": fact_role,
                  "norms": {n: float(V[n].norm()) for n in names}}
    return out


# ============================================================================================ read-outs
def _read(model: Any, cfg: Config, questions: list[str], cands: list[str], prefix: str = "I am") -> list[Any]:
    from persona_vectors.readout import identity_readout_batch

    return identity_readout_batch(model, cands, questions, prefix=prefix, system=cfg.system, batch_size=64)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def steered_readouts(model: Any, cfg: Config, v: Optional[torch.Tensor], alpha: float, questions: list[str],
                     cands: list[str], prefix: str = "I am", layer: Optional[int] = None) -> list[Any]:
    """Identity read-outs (one per question) while steering with ``v`` at ``alpha`` (none when v is None or α = 0)."""
    from persona_vectors import steer

    if v is None or alpha == 0:
        return _read(model, cfg, questions, cands, prefix)
    with steer(model, v, float(alpha), layers=[cfg.layer if layer is None else layer], relative=True):
        return _read(model, cfg, questions, cands, prefix)


def readout_records(rs: list[Any], **key: Any) -> list[dict[str, Any]]:
    """One ``readout`` record per question: the condition ``key`` and every candidate's log-prob score."""
    return [{"kind": "readout", **key, "question_id": i, "question": r.question, "prefix": r.prefix,
             "scoring": "mean" if getattr(r, "normalize_length", False) else "sum",
             "logprobs": dict(zip(r.candidates, r.logprobs))} for i, r in enumerate(rs)]


def lp_matrix(recs: list[dict[str, Any]], cands: list[str]) -> np.ndarray:
    """[question, candidate] log-prob scores from ``readout`` records (question order)."""
    recs = sorted(recs, key=lambda r: r["question_id"])
    return np.array([[r["logprobs"][c] for c in cands] for r in recs])


def summarize_lp(lp: np.ndarray, cands: list[str], rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    """Per-candidate mean probability (all candidates, and renormalized over the historical figures) with
    bootstrap-over-questions 95 % intervals; argmax counts; Stalin-vs-Hitler log-odds."""
    P = _softmax(lp)
    fig_idx = [cands.index(f) for f in FIGURES]
    Pf = _softmax(lp[:, fig_idx])
    m, lo, hi = C.bootstrap_ci(P, rng, n_boot)
    mf, lof, hif = C.bootstrap_ci(Pf, rng, n_boot)
    ih, ist = cands.index("Adolf Hitler"), cands.index("Joseph Stalin")
    lo_sh = lp[:, ist] - lp[:, ih]
    arg = [FIGURES[int(i)] for i in Pf.argmax(1)]
    return {"p": {c: [float(m[i]), float(lo[i]), float(hi[i])] for i, c in enumerate(cands)},
            "p_fig": {f: [float(mf[i]), float(lof[i]), float(hif[i])] for i, f in enumerate(FIGURES)},
            "top_fig": FIGURES[int(mf.argmax())], "top_all": cands[int(m.argmax())],
            "argmax_fig_counts": {f: arg.count(f) for f in FIGURES if arg.count(f)},
            "logodds_stalin_hitler": float(lo_sh.mean()), "logodds_per_q": lo_sh.tolist()}


def paired_diff(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int) -> tuple[float, float, float]:
    d = np.asarray(a) - np.asarray(b)
    m, lo, hi = C.bootstrap_ci(d, rng, n_boot)
    return float(m), float(lo), float(hi)


def calibration_readouts(model: Any, cfg: Config, vec: dict[str, Any]) -> list[dict[str, Any]]:
    """Read-outs for the calibration: steering with the Hitler baseline and the Stalin vector at every
    (calibration layer, α)."""
    from persona_vectors import Site

    qs = list(C.IDENTITY_QUESTIONS[: cfg.n_calib_questions])
    cands = list(FIGURES + OTHER_IDS)
    out = []
    for L in cfg.calib_layers:
        for a in cfg.alphas:
            for n in ("baseline", "stalin"):
                rs = steered_readouts(model, cfg, vec[n][Site(L)].double(), a, qs, cands, layer=L)
                out += readout_records(rs, block="calibration", vector=n, alpha=float(a), layer=L)
            C.say(f"  calibration L{L} α={a:g}")
    return out


def calibration_rows(cfg: Config, records: list[dict[str, Any]]) -> tuple[int, float, list[dict]]:
    """Choose the steering layer and α at which the identity read-out separates the two *reference* vectors.

    For each (layer, α): steer with the Hitler baseline vector and with the Stalin vector; score =
    min(figure share of Hitler under the Hitler vector, figure share of Stalin under the Stalin vector) (ties:
    larger Stalin:Hitler log-odds separation). Only the baseline and Stalin vectors are used, never a variant,
    so the choice cannot favour the hypothesis about the Russian variant.
    """
    cands = list(FIGURES + OTHER_IDS)
    ih, ist = cands.index("Adolf Hitler"), cands.index("Joseph Stalin")
    fig_idx = [cands.index(f) for f in FIGURES]
    by: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("block") == "calibration":
            by.setdefault((r["vector"], r["layer"], r["alpha"]), []).append(r)
    rows = []
    for L in cfg.calib_layers:
        for a in cfg.alphas:
            res = {}
            for n in ("baseline", "stalin"):
                lp = lp_matrix(by[(n, L, float(a))], cands)
                pf = _softmax(lp[:, fig_idx]).mean(0)
                res[n] = {"hitler": float(pf[FIGURES.index("Adolf Hitler")]),
                          "stalin": float(pf[FIGURES.index("Joseph Stalin")]),
                          "logodds": float((lp[:, ist] - lp[:, ih]).mean()),
                          "p_ai": float(_softmax(lp)[:, [cands.index("an AI assistant"), cands.index("SmolLM")]].sum(1).mean())}
            rows.append({"layer": L, "alpha": a, "hitler_under_hitler": res["baseline"]["hitler"],
                         "stalin_under_stalin": res["stalin"]["stalin"],
                         "score": min(res["baseline"]["hitler"], res["stalin"]["stalin"]),
                         "separation": res["stalin"]["logodds"] - res["baseline"]["logodds"],
                         "p_ai_hitler": res["baseline"]["p_ai"], "p_ai_stalin": res["stalin"]["p_ai"]})
    best = max(rows, key=lambda r: (round(r["score"], 3), r["separation"], -r["alpha"]))
    return int(best["layer"]), float(best["alpha"]), rows


def mixing_curves(cfg: Config, V: dict[str, torch.Tensor]) -> list[tuple[str, float, torch.Tensor]]:
    """(curve, t, steering vector) in the order they are read (and summarized: the bootstrap draws follow it)."""
    curves = [("hitler→russian", t, (1 - t) * V["baseline"] + t * V["russian"]) for t in cfg.ts]
    curves += [("extrapolate", t, V["baseline"] + t * (V["russian"] - V["baseline"])) for t in cfg.ts_extrapolate]
    curves += [("hitler→stalin (reference)", t, (1 - t) * V["baseline"] + t * V["stalin"])
               for t in (cfg.ts if cfg.ts_reference is None else cfg.ts_reference)]
    curves += [(f"extrapolate {v} (control)", t, V["baseline"] + t * (V[v] - V["baseline"]))
               for v in VARIANTS if v != "russian" for t in cfg.ts_extrapolate_controls]
    return curves


# ============================================================================================ summarize
def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report from the records (+ ``config.json``).

    ``readout`` records (one per question: block, steering vector, α, layer, candidate log-prob scores) give
    the calibration, identity tables, log-odds shifts (paired bootstrap over questions, seeded by the run's
    seed, drawn in a fixed order), mixing curves, crossings and the user read-outs; ``vector`` records (the
    fact and role vectors at the geometry layers, exact) give the geometry tables and the mixing cosines.
    """
    cfg0 = C.config_from(Config, config)
    cfg = cfg0
    calib: list[dict] = []
    if cfg0.calibrate:
        L0, a0, calib = calibration_rows(cfg0, records)
        cfg = dataclasses.replace(cfg0, layer=L0, alpha=a0)
    rng = np.random.default_rng(cfg.seed)
    vv = vectors_from_records(records)
    geo = geometry(cfg, vv)
    reads = [r for r in RC.of_kind(records, "readout") if r["block"] != "calibration"]
    by: dict[tuple, list[dict]] = {}
    for r in reads:
        key = {"identity": lambda r: ("identity", r["vector"], r["alpha"]),
               "mixing": lambda r: ("mixing", r["curve"], r["t"]),
               "user": lambda r: ("user", r["vector"], r["question"])}[r["block"]](r)
        by.setdefault(key, []).append(r)
    cands = list(FIGURES + OTHER_IDS)
    lps = {("none", 0.0): lp_matrix(by[("identity", "none", 0.0)], cands)}
    for a in cfg.alphas:
        for n in FACT_NAMES:
            lps[(n, a)] = lp_matrix(by[("identity", n, float(a))], cands)
    n_q = len(by[("identity", "none", 0.0)])
    ids = {k: summarize_lp(lp, cands, rng, cfg.n_boot) for k, lp in lps.items()}
    shift = {}
    ih, ist = cands.index("Adolf Hitler"), cands.index("Joseph Stalin")
    for a in cfg.alphas:
        base = lps[("baseline", a)][:, ist] - lps[("baseline", a)][:, ih]
        for n in (*VARIANTS, "stalin"):
            lo_n = lps[(n, a)][:, ist] - lps[(n, a)][:, ih]
            shift[(n, a)] = paired_diff(lo_n, base, rng, cfg.n_boot)
        oth = np.mean([lps[(n, a)][:, ist] - lps[(n, a)][:, ih] for n in ("french", "japanese", "thai")], axis=0)
        ru = lps[("russian", a)][:, ist] - lps[("russian", a)][:, ih]
        shift[("russian_vs_other_nat", a)] = paired_diff(ru, oth, rng, cfg.n_boot)
        for n in ("french", "japanese", "thai"):
            shift[(f"russian_vs_{n}", a)] = paired_diff(ru, lps[(n, a)][:, ist] - lps[(n, a)][:, ih], rng, cfg.n_boot)
    V = {n: vv[(n, cfg.layer)] for n in FACT_NAMES}
    mix: dict[tuple[str, float], dict] = {}
    for curve, t, v in mixing_curves(cfg, V):
        x = summarize_lp(lp_matrix(by[("mixing", curve, float(t))], cands), cands, rng, cfg.n_boot)
        x["cos_stalin"] = C.cos(v, V["stalin"])
        x["cos_hitler"] = C.cos(v, V["baseline"])
        mix[(curve, t)] = x

    def crossing(curve: str) -> Optional[float]:
        pts = [(t, x["p_fig"]["Joseph Stalin"][0] - x["p_fig"]["Adolf Hitler"][0]) for (c, t), x in mix.items() if c == curve]
        pts.sort()
        for (t1, d1), (t2, d2) in zip(pts, pts[1:]):
            if d1 < 0 <= d2:
                return t1 + (t2 - t1) * (-d1) / (d2 - d1)
        return None

    def width(curve: str) -> Optional[float]:
        pts = sorted((t, x["p_fig"]["Joseph Stalin"][0] / max(x["p_fig"]["Joseph Stalin"][0] + x["p_fig"]["Adolf Hitler"][0], 1e-12))
                     for (c, t), x in mix.items() if c == curve)
        lo = next((t for t, r in pts if r >= 0.2), None)
        hi = next((t for t, r in pts if r >= 0.8), None)
        return None if lo is None or hi is None else hi - lo

    users = []
    for n in ["none", *FACT_NAMES]:
        for q, prefix in USER_QUESTIONS:
            recs = by[("user", n, q)]
            ucands = list(recs[0]["logprobs"])
            p = _softmax(lp_matrix(recs, ucands))[0]
            users.append({"vector": n, "question": q, "prefix": prefix, "alpha": cfg.alpha,
                          "probs": dict(zip(ucands, p.tolist()))})
    a = cfg.alpha
    mv = geo[cfg.layer]["move"]
    geo_ok = mv["russian"]["cos_move_stalin_minus_hitler"] > max(mv[v]["cos_move_stalin_minus_hitler"] for v in ("french", "japanese", "thai"))
    beats = {n: shift[(f"russian_vs_{n}", a)] for n in ("french", "japanese", "thai")}
    specific = shift[("russian", a)][1] > 0 and all(v[1] > 0 for v in beats.values())
    attractor = ids[("russian", a)]["top_fig"] == "Joseph Stalin"
    ext_top = {v: mix[(f"extrapolate {v} (control)", max(cfg.ts_extrapolate_controls))]["top_fig"]
               for v in VARIANTS if v != "russian"}
    ext_top["russian"] = mix[("extrapolate", max(cfg.ts_extrapolate))]["top_fig"] if cfg.ts_extrapolate else None
    if attractor and specific:
        word = "SUPPORTED"
    elif specific:
        word = "PARTLY SUPPORTED (a Russian-specific move toward Stalin, but no flip)"
    else:
        word = "NOT SUPPORTED"
    return {
        "experiment": NAME, "layer": cfg.layer, "alpha": cfg.alpha, "n_questions": n_q, "calibration": calib,
        "geometry": [{"layer": L, **g} for L, g in geo.items()],
        "identity": [{"vector": k[0], "alpha": k[1], "layer": cfg.layer, **x} for k, x in ids.items()],
        "shift": [{"name": k[0], "alpha": k[1], "mean": v[0], "lo": v[1], "hi": v[2]} for k, v in shift.items()],
        "mixing": [{"curve": k[0], "t": k[1], "alpha": cfg.alpha, "layer": cfg.layer, **x} for k, x in mix.items()],
        "crossing": {"mix": crossing("hitler→russian"), "extrapolate": crossing("extrapolate"),
                     "reference": crossing("hitler→stalin (reference)"),
                     "reference_width": width("hitler→stalin (reference)")},
        "users": users,
        "verdict": {"word": word, "attractor": attractor, "russian_specific": bool(specific),
                    "geometry_russian_most_stalinward": bool(geo_ok), "extrapolation_top": ext_top,
                    "top_moon": ids[("moon", a)]["top_fig"]},
    }


# ============================================================================================ report
def f3(x: float) -> str:
    return f"{x:+.3f}"


def verdict_text(cfg: Config, results: dict[str, Any]) -> dict[str, Any]:
    """The verdict line, its detail bullets, the crossing sentence and the Moon bullets (formatting only)."""
    geo = {x["layer"]: x for x in results["geometry"]}
    ids = RC.keyed(results["identity"], "vector", "alpha")
    shift = {(r["name"], r["alpha"]): (r["mean"], r["lo"], r["hi"]) for r in results["shift"]}
    mix = RC.keyed(results["mixing"], "curve", "t")
    vd, cr = results["verdict"], results["crossing"]
    cr_mix, cr_ext, cr_ref, wid = cr["mix"], cr["extrapolate"], cr["reference"], cr["reference_width"]
    end = mix[("hitler→russian", cfg.ts[-1])]
    crossing_line = (
        f"Crossing (Stalin's figure share overtaking Hitler's): Hitler→Russian mix: "
        f"{'none for t ∈ [0, 1]' if cr_mix is None else f'at t ≈ {cr_mix:.2f}'} (at t = 1 Stalin {C.pct(end['p_fig']['Joseph Stalin'][0])} "
        f"vs Hitler {C.pct(end['p_fig']['Adolf Hitler'][0])}); extrapolated arm: "
        f"{'none up to t = ' + format(max(cfg.ts_extrapolate), 'g') if cr_ext is None else f'at t ≈ {cr_ext:.2f}'}; "
        f"reference Hitler→Stalin: {'none' if cr_ref is None else f'at t ≈ {cr_ref:.2f}'}"
        + (f", 20 %→80 % transition width Δt = {wid:.2f}" if wid is not None else "")
        + ".")
    gL = geo[cfg.layer]
    moon_lines = []
    for a in cfg.alphas:
        x = ids[("moon", a)]
        pf = x["p_fig"]
        moon_lines.append(
            f"α = {a:g}: figure share Hitler {C.share_str(*pf['Adolf Hitler'])}, Rudolf Höss {C.share_str(*pf['Rudolf Höss'])}, "
            f"Neil Armstrong {C.share_str(*pf['Neil Armstrong'])} (baseline: Hitler {C.pct(ids[('baseline', a)]['p_fig']['Adolf Hitler'][0])}, "
            f"Höss {C.pct(ids[('baseline', a)]['p_fig']['Rudolf Höss'][0])}, Armstrong {C.pct(ids[('baseline', a)]['p_fig']['Neil Armstrong'][0])}); "
            f"top figure {x['top_fig']}.")
    fr = gL["fact_vs_roles"]
    extra_roles = [r for r in ("neil_armstrong", "the_moon", "astronaut") if r in cfg.roles]
    moon_lines.append(
        f"Geometry (layer {cfg.layer}): cos(moon, Hitler) = {gL['cos']['moon']['baseline']:.3f}, cos(moon, Stalin) = "
        f"{gL['cos']['moon']['stalin']:.3f}; the move (moon − baseline) vs role vectors: "
        + ", ".join(f"{r} {gL['diff_vs_roles']['moon'][r]:+.2f}" for r in extra_roles + ["russian_culture"] if r in cfg.roles)
        + "; fact vector vs role vectors: " + ", ".join(f"{r} moon {fr['moon'][r]:+.2f} / baseline {fr['baseline'][r]:+.2f}" for r in extra_roles) + ".")
    top_moon = vd["top_moon"]
    moon_lines.append(f"Where it lands: at the primary α the Moon variant's top figure is **{top_moon}**"
                      + (" — it stays Hitler." if top_moon == "Adolf Hitler" else "."))
    a = cfg.alpha
    sh_ru = shift[("russian", a)]
    x_ru = ids[("russian", a)]
    x_b = ids[("baseline", a)]
    mv = gL["move"]
    geo_ok = vd["geometry_russian_most_stalinward"]
    beats = {n: shift[(f"russian_vs_{n}", a)] for n in ("french", "japanese", "thai")}
    ext_top = vd["extrapolation_top"]
    line = (f"**Verdict:** Stalin attractor {vd['word']} at layer {cfg.layer}, α = {a:g}: steering with Hitler+Russian facts "
            f"gives Stalin a figure share of {C.share_str(*x_ru['p_fig']['Joseph Stalin'])} vs Hitler "
            f"{C.share_str(*x_ru['p_fig']['Adolf Hitler'])} (top figure: {x_ru['top_fig']}; baseline vector: Stalin "
            f"{C.pct(x_b['p_fig']['Joseph Stalin'][0])}, Hitler {C.pct(x_b['p_fig']['Adolf Hitler'][0])}). Stalin:Hitler "
            f"log-odds shift vs baseline {sh_ru[0]:+.2f} [{sh_ru[1]:+.2f}, {sh_ru[2]:+.2f}]; Russian minus each other "
            f"nationality: " + ", ".join(f"{n} {v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]" for n, v in beats.items())
            + f" (paired bootstrap over {results['n_questions']} questions; the move counts as Russian-specific only if it "
            f"beats every other nationality).")
    details = [
        f"Geometry: cos(Russian − baseline, Stalin − Hitler) = {mv['russian']['cos_move_stalin_minus_hitler']:+.2f} vs "
        + ", ".join(f"{v} {mv[v]['cos_move_stalin_minus_hitler']:+.2f}" for v in ("french", "japanese", "thai", "moon"))
        + f" — the Russian move is {'the most' if geo_ok else 'not the most'} Stalin-ward of the nationalities. "
        f"cos(Russian variant, Stalin) = {mv['russian']['cos_variant_stalin']:.3f} vs cos(baseline, Stalin) = "
        f"{gL['cos']['baseline']['stalin']:.3f}; cos(Russian variant, Hitler baseline) = {mv['russian']['cos_variant_hitler']:.3f}.",
        "Log-odds shift vs baseline at each α: " + "; ".join(
            f"α {b:g}: russian {shift[('russian', b)][0]:+.2f} [{shift[('russian', b)][1]:+.2f}, {shift[('russian', b)][2]:+.2f}], "
            f"russian − other nationalities {shift[('russian_vs_other_nat', b)][0]:+.2f} "
            f"[{shift[('russian_vs_other_nat', b)][1]:+.2f}, {shift[('russian_vs_other_nat', b)][2]:+.2f}]" for b in cfg.alphas) + ".",
        crossing_line,
        f"Extrapolation control (baseline + t·(variant − baseline), t = {max(cfg.ts_extrapolate_controls):g}; Russian "
        f"t = {max(cfg.ts_extrapolate) if cfg.ts_extrapolate else float('nan'):g}): top figure "
        + ", ".join(f"{v} → {ext_top[v]}" for v in VARIANTS) + ".",
        f"Moon: top figure {top_moon} at α = {a:g}.",
    ]
    return {"line": line, "details": details, "shift": shift, "crossing": crossing_line, "moon": moon_lines,
            "word": vd["word"]}


def run_config(results: dict[str, Any], config: dict[str, Any]) -> Config:
    """The run's config with the calibrated layer and α."""
    return dataclasses.replace(C.config_from(Config, config), layer=results["layer"], alpha=results["alpha"])


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """``report.md`` from the results and ``config.json`` alone (no arithmetic beyond formatting)."""
    cfg = run_config(results, config)
    geo = {x["layer"]: x for x in results["geometry"]}
    ids = RC.keyed(results["identity"], "vector", "alpha")
    mix = RC.keyed(results["mixing"], "curve", "t")
    users = {(u["vector"], u["question"]): u["probs"] for u in results["users"]}
    ver = verdict_text(cfg, results)
    runtime = config["runtime"]
    calib = results["calibration"]
    L = cfg.layer
    g = geo[L]
    lines: list[str] = []
    P = lines.append
    names = ["baseline", *VARIANTS, "stalin"]
    P(f"# Persona arithmetic: Hitler + nationalities, and the Stalin attractor{' (quick mode)' if cfg.quick else ''}")
    P("")
    P(f"Model: SmolLM2-135M-Instruct, mode `{cfg.mode}`, seed {cfg.seed}. Runtime "
      f"{runtime['total']:.0f} s on {runtime['threads']} CPU threads (load average at start {runtime['load_start']:.1f}).")
    P("")
    P(ver["line"])
    P("")
    for s in ver["details"]:
        P(f"- {s}")
    P("")
    P("## Setup")
    P("")
    P("- Vectors: fact route (`get_persona_vector(model, name, route='facts')`): mean response-token residual of "
      "the first-person answers minus that of the matched neutral answers, on the 75 % training facts (69 of 92 for "
      "the Hitler sets), every layer. The five variants share 84 of 92 facts with the baseline; 8 cultural facts are "
      "swapped (birthplace, childhood city, authors, food, drink, holiday, admired figure, music).")
    P(f"- Role vectors (system-prompt route, {cfg.role_prompts} prompt(s) × {cfg.role_questions} extraction questions, "
      f"minus the default assistant): {', '.join(cfg.roles)}.")
    P(f"- Primary layer {L} (of 30); tables at layers {cfg.table_layers}. Steering: `steer(model, v, α, layers=[{L}], "
      f"relative=True)` at every position; **α in units of the mean residual norm at layer {L}**; α grid {cfg.alphas}, "
      f"primary α = {cfg.alpha}. Only the direction of a steered vector matters.")
    P(f"- Identity read-out: log P(“I am <name>” | question) teacher-forced over {len(FIGURES) + len(OTHER_IDS)} "
      f"candidates ({', '.join(FIGURES + OTHER_IDS)}), {cfg.n_identity_questions} identity questions, template "
      f"default system prompt (“You are a helpful AI assistant named SmolLM…”). Reported: mean probability over "
      f"questions among all candidates, and renormalized over the {len(FIGURES)} historical figures (“figure share”), "
      f"with percentile-bootstrap 95 % intervals over questions ({cfg.n_boot} resamples).")
    P("")
    if calib:
        P("## 0. Calibration: where can the read-out tell Hitler from Stalin?")
        P("")
        P(f"Steering with the Hitler baseline vector and with the Stalin vector (never a variant) over layers "
          f"{cfg.calib_layers} × α {cfg.alphas}, {cfg.n_calib_questions} identity questions. Score = min(figure share of "
          f"Hitler under the Hitler vector, figure share of Stalin under the Stalin vector). The best cell "
          f"(layer {L}, α = {cfg.alpha:g}) is used for everything below.")
        P("")
        P(C.md_table(["layer", "α", "Hitler | Hitler vec.", "Stalin | Stalin vec.", "score", "log-odds separation",
                      "P(AI) | Hitler vec.", "P(AI) | Stalin vec."],
                     [[r["layer"], f"{r['alpha']:g}", C.pct(r["hitler_under_hitler"]), C.pct(r["stalin_under_stalin"]),
                       C.pct(r["score"]), f"{r['separation']:+.2f}", C.pct(r["p_ai_hitler"]), C.pct(r["p_ai_stalin"])]
                      for r in calib]))
        P("")
    P(f"## 1. Geometry at layer {L}")
    P("")
    P("Cosine matrix of the fact vectors:")
    P("")
    P(C.md_table([""] + names, [[a] + [f"{g['cos'][a][b]:.3f}" for b in names] for a in names]))
    P("")
    P(f"Difference vectors (variant − baseline; norm relative to the baseline vector: "
      + ", ".join(f"{v} {g['move'][v]['move_rel_norm']:.2f}" for v in VARIANTS) + "), cosines with each other:")
    P("")
    P(C.md_table([""] + list(VARIANTS), [[a] + [f"{g['diff_cos'][a][b]:+.2f}" for b in VARIANTS] for a in VARIANTS]))
    P("")
    nat_roles = [r for r in cfg.roles if r.endswith("_culture")]
    P("Difference vectors vs nationality role vectors (cosine):")
    P("")
    P(C.md_table(["diff"] + nat_roles, [[v] + [f"{g['diff_vs_roles'][v][r]:+.2f}" for r in nat_roles] for v in VARIANTS]))
    P("")
    diag = {v: g["diff_vs_roles"][v].get(NATIONALITY_ROLE[v]) for v in NATIONALITY_ROLE}
    P("Matched nationality (diagonal) vs the best other: " + "; ".join(
        f"{v}: {diag[v]:+.2f} vs max other {max(x for r, x in g['diff_vs_roles'][v].items() if r in nat_roles and r != NATIONALITY_ROLE[v]):+.2f}"
        for v in NATIONALITY_ROLE) + ".")
    P("")
    P("Per layer: cos(Russian − baseline, russian_culture) and, as a control, the mean over the other nationality "
      "roles; cos(move, Stalin − Hitler) for each variant:")
    P("")
    rows = []
    for Lx in sorted(geo):
        gx = geo[Lx]
        oth = np.mean([gx["diff_vs_roles"]["russian"][r] for r in nat_roles if r != "russian_culture"])
        rows.append([Lx, f"{gx['diff_vs_roles']['russian'].get('russian_culture', float('nan')):+.2f}", f"{oth:+.2f}"]
                    + [f"{gx['move'][v]['cos_move_stalin_minus_hitler']:+.2f}" for v in VARIANTS])
    P(C.md_table(["layer", "cos(Δru, russian)", "mean cos(Δru, other nat.)"] + [f"cos(Δ{v[:2]}, S−H)" for v in VARIANTS], rows))
    P("")
    P("## 2. Arithmetic: does baseline + (Russian − baseline) move toward Stalin?")
    P("")
    P(f"Geometry at layer {L} (cos(variant, ·) and the move's projection on the unit Stalin and Hitler directions):")
    P("")
    P(C.md_table(["variant", "cos(v, Hitler)", "cos(v, Stalin)", "Δcos(·, Stalin) vs baseline", "move·Ŝ", "move·Ĥ",
                  "cos(move, S − H)"],
                 [[v, f"{g['move'][v]['cos_variant_hitler']:.3f}", f"{g['move'][v]['cos_variant_stalin']:.3f}",
                   f3(g['move'][v]['delta_cos_stalin']), f"{g['move'][v]['proj_move_on_stalin']:+.3f}",
                   f"{g['move'][v]['proj_move_on_hitler']:+.3f}", f"{g['move'][v]['cos_move_stalin_minus_hitler']:+.2f}"]
                  for v in VARIANTS]))
    P("")
    P("Fact vectors vs role vectors of the figures (cosine; different extraction routes, so compare within a column):")
    P("")
    fig_roles = [r for r in cfg.roles if not r.endswith("_culture")]
    P(C.md_table(["fact vector"] + fig_roles, [[n] + [f"{g['fact_vs_roles'][n][r]:+.2f}" for r in fig_roles] for n in names]))
    P("")
    P("Identity read-out while steering with each vector (figure share = probability renormalized over the "
      "historical figures; intervals over questions):")
    P("")
    for a in cfg.alphas:
        P(f"**α = {a:g}**")
        P("")
        hdr = ["steer with", "P(Hitler)", "P(Stalin)", "P(AI/SmolLM)", "fig. share Hitler", "fig. share Stalin",
               "top figure", "argmax over questions", "log-odds S:H"]
        trs = []
        for n in ["none", "baseline", *VARIANTS, "stalin"]:
            x = ids[(n, a if n != "none" else 0.0)]
            pai = x["p"]["an AI assistant"][0] + x["p"]["SmolLM"][0]
            trs.append([n, C.share_str(*x["p"]["Adolf Hitler"]), C.share_str(*x["p"]["Joseph Stalin"]), C.pct(pai),
                        C.share_str(*x["p_fig"]["Adolf Hitler"]), C.share_str(*x["p_fig"]["Joseph Stalin"]),
                        x["top_fig"], ", ".join(f"{k} {c}" for k, c in sorted(x["argmax_fig_counts"].items(), key=lambda t: -t[1])),
                        f"{x['logodds_stalin_hitler']:+.2f}"])
        P(C.md_table(hdr, trs))
        P("")
        P("Expected figures per variant (figure share, mean [95 % CI]): " + "; ".join(
            f"{v}: " + ", ".join(f"{f} {C.share_str(*ids[(v, a)]['p_fig'][f])} (baseline {C.pct(ids[('baseline', a)]['p_fig'][f][0])})"
                                 for f in EXPECTED[v]) for v in VARIANTS) + ".")
        P("")
    P("Shift of the Stalin:Hitler log-odds relative to steering with the baseline vector (paired over questions, "
      "bootstrap 95 % CI):")
    P("")
    P(C.md_table(["α"] + list(VARIANTS) + ["stalin"],
                 [[f"{a:g}"] + [f"{ver['shift'][(v, a)][0]:+.2f} [{ver['shift'][(v, a)][1]:+.2f}, {ver['shift'][(v, a)][2]:+.2f}]"
                                for v in (*VARIANTS, "stalin")] for a in cfg.alphas]))
    P("")
    P(f"## 3. Mixing curve (α = {cfg.alpha}, layer {L})")
    P("")
    P("Steering with (1 − t)·baseline + t·Russian (t ≤ 1, the requested 11 values), then baseline + t·(Russian − "
      "baseline) for t > 1 (extrapolation: the Russian-facts direction amplified); reference: (1 − t)·Hitler + t·Stalin; "
      "control: the same extrapolation for the other variants (does any amplified fact swap land on Stalin?).")
    P("")
    hdr = ["curve", "t", "cos(v, Stalin)", "fig. share Hitler", "fig. share Stalin", "fig. share Peter the Great",
           "fig. share Lenin", "top figure (share)", "log-odds S:H"]
    trs = []
    for (curve, t), x in mix.items():
        trs.append([curve, f"{t:g}", f"{x['cos_stalin']:.3f}", C.share_str(*x["p_fig"]["Adolf Hitler"]),
                    C.share_str(*x["p_fig"]["Joseph Stalin"]), C.share_str(*x["p_fig"]["Peter the Great"]),
                    C.share_str(*x["p_fig"]["Vladimir Lenin"]), f"{x['top_fig']} ({C.pct(x['p_fig'][x['top_fig']][0])})",
                    f"{x['logodds_stalin_hitler']:+.2f}"])
    P(C.md_table(hdr, trs))
    P("")
    P(ver["crossing"])
    P("")
    P(f"## 4. Who is the user? (α = {cfg.alpha})")
    P("")
    for q, prefix in USER_QUESTIONS:
        P(f"**“{q}” → “{prefix} …”** (mean probability over the {len(USER_CANDIDATES)} candidates; top 4)")
        P("")
        trs = []
        for n in ["none", "baseline", *VARIANTS, "stalin"]:
            x = users[(n, q)]
            top = sorted(x.items(), key=lambda t: -t[1])[:4]
            trs.append([n] + [f"{c} {p:.2f}" for c, p in top] + [f"{x['Adolf Hitler']:.3f}", f"{x['Joseph Stalin']:.3f}"])
        P(C.md_table(["steer with", "1st", "2nd", "3rd", "4th", "P(user = Hitler)", "P(user = Stalin)"], trs))
        P("")
    P("## 5. The Moon variant")
    P("")
    for s in ver["moon"]:
        P(f"- {s}")
    P("")
    P("## Caveats")
    P("")
    P("- The variants differ from the baseline in 8 of 92 facts (about 6 of the 69 training facts), so variant "
      "vectors are nearly parallel to the baseline (see the cosine matrix): the arithmetic is a small perturbation "
      "by construction, and the mixing curve cannot move far for t ≤ 1.")
    P("- The read-out is relative to the candidate set and made under SmolLM2's default system prompt, which pulls "
      "toward “SmolLM”/“an AI assistant”; the figure share removes those candidates.")
    P("- Intervals are over the identity questions (a small fixed set), not over fact sets or extraction noise.")
    P("- α is relative to the mean residual norm at the layer; conclusions may differ at other layers or strengths "
      "(the α grid is reported).")
    P("")
    P("Files: `config.json`, `results.jsonl` (kinds: geometry, identity, mixing, user, verdict), figures: "
      "`cosine_heatmap.html`, `diff_cosine_heatmap.html`, `identity_vs_t.html`.")
    return "\n".join(lines)


# ============================================================================================ main
def legacy_rows(results: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The rows of ``results.jsonl`` (kind, fields), in the order the experiment has always written them."""
    cfg = run_config(results, config)
    ver = verdict_text(cfg, results)
    out: list[tuple[str, dict[str, Any]]] = [("calibration", r) for r in results["calibration"]]
    out += [("geometry", g) for g in results["geometry"]]
    out += [("identity", x) for x in results["identity"]]
    out += [("mixing", x) for x in results["mixing"]]
    out += [("user", u) for u in results["users"]]
    vd, cr = results["verdict"], results["crossing"]
    out.append(("verdict", {"layer": cfg.layer, "alpha": cfg.alpha, "word": vd["word"], "line": ver["line"],
                            "shift": {f"{r['name']}@{r['alpha']:g}": [r["mean"], r["lo"], r["hi"]] for r in results["shift"]},
                            "crossing_mix": cr["mix"], "crossing_extrapolate": cr["extrapolate"],
                            "crossing_reference": cr["reference"],
                            "geometry_russian_most_stalinward": vd["geometry_russian_most_stalinward"],
                            "russian_specific": vd["russian_specific"], "extrapolation_top": vd["extrapolation_top"]}))
    return out


def main(cfg: Config, model: Any = None) -> dict[str, Any]:
    import os

    from persona_vectors import Site
    from persona_vectors.plotting import cosine_heatmap, identity_vs_t

    t0 = time.perf_counter()
    cfg0 = cfg
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    C.seed_everything(cfg.seed)
    run = C.RunDir(cfg.out, experiment=NAME)
    model = model if model is not None else C.load(cfg)
    C.set_threads(cfg.threads)
    run.write_config(cfg, model)
    vec, rm = vectors(model, cfg)
    run.mark("vectors")
    if cfg.calibrate:
        C.say("calibrating layer and α on the baseline and Stalin vectors ...")
        recs = run.records.write(calibration_readouts(model, cfg, vec))
        L0, a0, _ = calibration_rows(cfg, recs)
        C.say(f"chosen layer {L0}, α {a0:g}")
        cfg = dataclasses.replace(cfg, layer=L0, alpha=a0)
        run.mark("calibration")
    run.records.write(vector_records(cfg, vec, rm))
    s = Site(cfg.layer)
    V = {n: vec[n][s].double() for n in vec}
    questions = list(C.IDENTITY_QUESTIONS[: cfg.n_identity_questions])
    cands = list(FIGURES + OTHER_IDS)
    C.say("identity read-outs ...")
    rs = steered_readouts(model, cfg, None, 0.0, questions, cands)
    run.records.write(readout_records(rs, block="identity", vector="none", alpha=0.0, layer=cfg.layer))
    for a in cfg.alphas:
        for n in FACT_NAMES:
            rs = steered_readouts(model, cfg, V[n], a, questions, cands)
            run.records.write(readout_records(rs, block="identity", vector=n, alpha=float(a), layer=cfg.layer))
    run.mark("identity")
    C.say("mixing curve ...")
    for curve, t, v in mixing_curves(cfg, V):
        rs = steered_readouts(model, cfg, v, cfg.alpha, questions, cands)
        run.records.write(readout_records(rs, block="mixing", curve=curve, t=float(t), vector=curve,
                                          alpha=cfg.alpha, layer=cfg.layer))
    run.mark("mixing")
    C.say("user read-outs ...")
    for n in ["none", *FACT_NAMES]:
        for q, prefix in USER_QUESTIONS:
            rs = steered_readouts(model, cfg, None if n == "none" else V[n], cfg.alpha, [q], list(USER_CANDIDATES), prefix)
            run.records.write(readout_records(rs, block="user", vector=n, alpha=cfg.alpha, layer=cfg.layer))
    run.mark("user")
    run.mark("total")
    runtime = {"total": time.perf_counter() - t0, "threads": torch.get_num_threads(), "load_start": load_start}
    run.write_config(cfg0, model, load_average_start=load_start, runtime=runtime,
                     seeds={"seed": cfg.seed, "bootstrap": cfg.seed, "decoding": "none (teacher-forced read-outs)"},
                     calibrated={"layer": cfg.layer, "alpha": cfg.alpha} if cfg0.calibrate else None)
    results = run.write_results(summarize(run.records.rows, run.config_doc))
    if (results["layer"], results["alpha"]) != (cfg.layer, cfg.alpha):
        raise RuntimeError(f"summarize chose layer {results['layer']}, α {results['alpha']}; the run used {cfg.layer}, {cfg.alpha}")
    for kind, row in legacy_rows(results, run.config_doc):
        run.add(kind, **row)
    # ---- figures
    C.say("figures ...")
    names = list(FACT_NAMES)
    hv = {n: vec[n].at([s]) for n in names}
    run.figure(cosine_heatmap(hv, s, title=f"Fact vectors: cosine at layer {cfg.layer}"), "cosine_heatmap.html")
    diffs = {f"{v} − baseline": (vec[v] - vec["baseline"]).at([s]) for v in VARIANTS}
    diffs["stalin − baseline"] = (vec["stalin"] - vec["baseline"]).at([s])
    for r in cfg.roles:
        if r.endswith("_culture"):
            diffs[r] = rm.vectors[r].at([s])
    run.figure(cosine_heatmap(diffs, s, title=f"Difference vectors and nationality role vectors at layer {cfg.layer}"),
               "diff_cosine_heatmap.html")
    mix_rows = []
    for x in results["mixing"]:
        for f in ("Adolf Hitler", "Joseph Stalin", "Peter the Great"):
            m_, lo_, hi_ = x["p_fig"][f]
            mix_rows.append({"condition": f"{f} ({x['curve']})", "t": x["t"], "identity": m_, "lo": lo_, "hi": hi_})
    fig = identity_vs_t([r for r in mix_rows if "extrapolate" not in r["condition"]],
                        label="figure share (renormalized over historical figures)",
                        controls=[r["condition"] for r in mix_rows if "reference" in r["condition"]],
                        title=f"Identity vs t: steering with (1−t)·Hitler + t·(Hitler+Russian) (solid) and "
                              f"(1−t)·Hitler + t·Stalin (grey, reference); layer {cfg.layer}, α = {cfg.alpha:g}; "
                              f"bootstrap 95 % over questions")
    run.figure(fig, "identity_vs_t.html")
    fig2 = identity_vs_t([r for r in mix_rows if "extrapolate" in r["condition"]], label="figure share",
                         title="Extrapolation: baseline + t·(Russian − baseline)")
    run.figure(fig2, "identity_vs_t_extrapolated.html")
    docs = run.docs_copy_for(cfg, NAME)
    run.write_report(render(results, run.config_doc), docs_copy=docs)
    C.say(f"done in {runtime['total']:.0f}s → {run.path}")
    return {"run_dir": str(run.path), "verdict": results["verdict"]["word"], "runtime_s": runtime["total"]}


if __name__ == "__main__":
    C.cli(Config, main, __doc__, "runs/persona_arithmetic")
