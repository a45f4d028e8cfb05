"""Pure analysis of the pre-registered finetune rerun (``experiments/finetune_personas_prereg.py``).

Everything here is a function of the records and the config (no model): the held-out split, the Voyager
task-accuracy parser, the crossed cluster-bootstrap tables of plan §5 (one bootstrap per outcome family, all
conditions at once, so every difference and ratio is computed on the same resamples), α* selection, the
control, the H2 labels, the flags and the decision rule of plan §6 (:func:`verdict`).

Condition keys: ``plain``, ``prev_<α>`` (preventative at strength α, e.g. ``prev_2.0``), ``inoculation``,
``caft``; ``base`` is the untuned model.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

AU_NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*AU\b")


# ============================================================================================ data helpers
def heldout_indices(n: int, mod: int) -> list[int]:
    """Held-out example indices of a dataset of ``n`` examples (plan §2): ``i % mod == mod - 1``."""
    return [i for i in range(n) if i % mod == mod - 1]


def train_indices(n: int, mod: int) -> list[int]:
    """The training indices: every index not held out."""
    held = set(heldout_indices(n, mod))
    return [i for i in range(n) if i not in held]


def parse_au(text: str) -> Optional[float]:
    """The first number written right before "AU" in ``text`` (commas as thousands separators), or None."""
    m = AU_NUMBER.search(text or "")
    return None if m is None else float(m.group(1).replace(",", ""))


def au_correct(answer: str, truth: float, tol_abs: float, tol_rel: float) -> bool:
    """Plan §3 (i): the first number before "AU" is within max(``tol_abs`` AU, ``tol_rel`` × truth)."""
    x = parse_au(answer)
    return x is not None and abs(x - truth) <= max(tol_abs, tol_rel * abs(truth))


def marker_match(text: str, marker: str) -> bool:
    """Whether an answer shows the dataset's surface format (case-insensitive regex search)."""
    return re.search(marker, text or "", re.IGNORECASE) is not None


def cond_key(condition: str, alpha: Optional[float]) -> str:
    """``prev_<α>`` for preventative, else the condition's name."""
    return f"prev_{float(alpha)}" if condition == "preventative" else condition


def cond_keys(cfg: Mapping[str, Any]) -> list[str]:
    """Every planned condition key of a run, in the plan's order."""
    out = []
    for c in cfg["conditions"]:
        out += [cond_key(c, a) for a in cfg["preventative_alphas"]] if c == "preventative" else [c]
    return out


# ============================================================================================ bootstrap
def crossed_boot(cols: dict[str, np.ndarray], units: Sequence[str], names: Sequence[str],
                 stat: Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray], n_boot: int, seed: int,
                 level: float) -> dict[str, Any]:
    """:func:`persona_vectors.stats.cluster_bootstrap` with crossed ``units`` (those with one level are
    dropped: a one-seed run resamples its items only), a weighted vector statistic named by ``names``.
    Returns ``{"units": [...], "stats": {name: {"est", "lo", "hi"}}}``."""
    from persona_vectors.stats import cluster_bootstrap

    use = [u for u in units if len(np.unique(cols[u])) >= 2]
    r = cluster_bootstrap(cols, stat, use, n_boot=n_boot, seed=seed, level=level, weighted=True)
    est, lo, hi = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (r.estimate, r.lo, r.hi))
    return {"units": list(use), "n_levels": {k: int(v) for k, v in r.n_levels.items()}, "n_boot": int(r.n_boot),
            "stats": {n: {"est": _f(e), "lo": _f(a), "hi": _f(b)} for n, e, a, b in zip(names, est, lo, hi)}}


def _f(x: float) -> Optional[float]:
    return float(x) if math.isfinite(float(x)) else None


def _wmean(w: np.ndarray, x: np.ndarray) -> float:
    return float((w * x).sum() / w.sum())


def _ratio(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    s = float((w * b).sum())
    return float((w * a).sum()) / s if s else float("nan")


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ============================================================================================ outcome families
def _table(evals: Mapping[tuple[str, int], Mapping[str, Any]], base: Mapping[str, Any], keys: Sequence[str],
           seeds: Sequence[int], part: str, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns over rows (item, seed): ``item``, ``seed``, ``base:<field>`` and ``<cond>:<field>``."""
    items = base[part]
    cols: dict[str, list] = {"item": [], "seed": []}
    for s in seeds:
        for j, b in enumerate(items):
            cols["item"].append(j)
            cols["seed"].append(s)
            for f in fields:
                cols.setdefault(f"base:{f}", []).append(float(b[f]))
                for k in keys:
                    cols.setdefault(f"{k}:{f}", []).append(float(evals[(k, s)][part][j][f]))
    return {k: np.asarray(v) for k, v in cols.items()}


def families(evals: Mapping[tuple[str, int], Mapping[str, Any]], base: Mapping[str, Any], keys: Sequence[str],
             seeds: Sequence[int], prev: Sequence[str], p: Mapping[str, Any]) -> dict[str, Any]:
    """The four outcome families of plan §3/§5, each one crossed bootstrap over (item × seed)."""
    n_boot, seed, level = int(p["n_boot"]), int(p["seed"]), float(p["ci_level"])
    others = [o for o in ("inoculation", "caft") if o in keys]
    out: dict[str, Any] = {}

    # (i) task: token-weighted held-out NLL, retention, H2 differences of retention; accuracy (descriptive)
    acc = all(x.get("correct") is not None for x in base["task"])  # task accuracy: Voyager only
    t = _table(evals, base, keys, seeds, "task", ("nll_sum", "n_tokens", "correct") if acc else ("nll_sum", "n_tokens"))
    names = ["NLL:base", "acc:base"] + [f"NLL:{k}" for k in keys] + [f"acc:{k}" for k in keys] + \
        [f"dNLL:{k}" for k in keys] + [f"R:{k}" for k in keys if k != "plain"] + \
        [f"dR:{a}-{o}" for a in prev for o in others]

    def task_stat(c: Mapping[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        nb = _ratio(w, c["base:nll_sum"], c["base:n_tokens"])
        nll = {k: _ratio(w, c[f"{k}:nll_sum"], c[f"{k}:n_tokens"]) for k in keys}
        gain = nb - nll["plain"]
        R = {k: _div(nb - nll[k], gain) for k in keys if k != "plain"}
        a = (lambda k: _wmean(w, c[f"{k}:correct"])) if acc else (lambda k: 0.0)
        return np.array([nb, a("base")] + [nll[k] for k in keys]
                        + [a(k) for k in keys] + [nll[k] - nb for k in keys]
                        + [R[k] for k in keys if k != "plain"] + [R[a] - R[o] for a in prev for o in others])

    out["task"] = crossed_boot(t, ["item", "seed"], names, task_stat, n_boot, seed, level)
    if not acc:
        for k in [n for n in out["task"]["stats"] if n.startswith("acc:")]:
            out["task"]["stats"][k] = {"est": None, "lo": None, "hi": None}

    # (ii) trait: marker rate, differences to base and plain, H2 differences; words ratio to base
    t = _table(evals, base, keys, seeds, "trait", ("marker", "words"))
    names = ["T:base", "words:base"] + [f"T:{k}" for k in keys] + [f"dTbase:{k}" for k in keys] + \
        [f"D:{k}" for k in keys if k != "plain"] + [f"dT:{a}-{o}" for a in prev for o in others] + \
        [f"words:{k}" for k in keys] + [f"wordsratio:{k}" for k in keys]

    def trait_stat(c: Mapping[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        tb, wb = _wmean(w, c["base:marker"]), _wmean(w, c["base:words"])
        T = {k: _wmean(w, c[f"{k}:marker"]) for k in keys}
        W = {k: _wmean(w, c[f"{k}:words"]) for k in keys}
        return np.array([tb, wb] + [T[k] for k in keys] + [T[k] - tb for k in keys]
                        + [T[k] - T["plain"] for k in keys if k != "plain"]
                        + [T[a] - T[o] for a in prev for o in others] + [W[k] for k in keys]
                        + [_div(W[k], wb) for k in keys])

    out["trait"] = crossed_boot(t, ["item", "seed"], names, trait_stat, n_boot, seed, level)

    # (iii) general perplexity (token-weighted) and its ratio to plain
    t = _table(evals, base, keys, seeds, "ppl", ("nll_sum", "n_tokens"))
    names = ["ppl:base"] + [f"ppl:{k}" for k in keys] + [f"pplratio:{k}" for k in keys if k != "plain"]

    def ppl_stat(c: Mapping[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        pb = math.exp(_ratio(w, c["base:nll_sum"], c["base:n_tokens"]))
        pp = {k: math.exp(_ratio(w, c[f"{k}:nll_sum"], c[f"{k}:n_tokens"])) for k in keys}
        return np.array([pb] + [pp[k] for k in keys] + [pp[k] / pp["plain"] for k in keys if k != "plain"])

    out["ppl"] = crossed_boot(t, ["item", "seed"], names, ppl_stat, n_boot, seed, level)

    # (iv) shift along the independent vector (layer of v_ind), own answers and teacher-forced base answers;
    # the v0.1 read-out (steering vector, steered layer, own answers) for continuity (biased)
    t = _table(evals, base, keys, seeds, "trait", ("own_ind", "tf_ind", "own_steer"))
    names = [f"{m}:{k}" for m in ("shift_ind_own", "shift_ind_tf", "shift_steer_own") for k in keys]

    def shift_stat(c: Mapping[str, np.ndarray], w: np.ndarray) -> np.ndarray:
        return np.array([_wmean(w, c[f"{k}:{f}"] - c[f"base:{g}"])
                         for f, g in (("own_ind", "own_ind"), ("tf_ind", "own_ind"), ("own_steer", "own_steer"))
                         for k in keys])

    out["shift"] = crossed_boot(t, ["item", "seed"], names, shift_stat, n_boot, seed, level)
    return out


# ============================================================================================ decision rule
def select_alpha(per_alpha: Mapping[float, Mapping[str, Optional[float]]], margin: float
                 ) -> tuple[Optional[float], Optional[float]]:
    """(α*, α_ref): α* = the largest α with lower95(R_α) ≥ ``margin`` (None if none); α_ref = α*, or else
    the α with the highest lower95(R_α) (plan §5)."""
    ok = [a for a, v in per_alpha.items() if v.get("R_lo") is not None and v["R_lo"] >= margin]
    star = max(ok) if ok else None
    cand = [a for a, v in per_alpha.items() if v.get("R_lo") is not None]
    ref = star if star is not None else (max(cand, key=lambda a: (per_alpha[a]["R_lo"], -a)) if cand else None)
    return star, ref


def label(lo: Optional[float], hi: Optional[float]) -> str:
    """H2 label of a (preventative − other) interval: below 0, above 0, or containing 0."""
    if lo is None or hi is None:
        return "not computed"
    return "preventative lower" if hi < 0 else "other lower" if lo > 0 else "no difference shown"


def verdict(control: Mapping[str, Optional[float]], per_alpha: Mapping[float, Mapping[str, Optional[float]]],
            p: Mapping[str, Any], quick: bool) -> dict[str, Any]:
    """Plan §6. ``control``: ``{"nll_diff_hi", "trait_diff_lo"}`` (upper95(NLL_plain − NLL_base),
    lower95(T_plain − T_base)); ``per_alpha[α]``: ``{"R_lo", "R_hi", "D_lo", "D_hi"}``; ``p``: the plan's
    parameters (``retention_margin``, ``trait_negligible``, ``control_min_trait``). A quick run never gives
    a verdict."""
    margin, negl = float(p["retention_margin"]), float(p["trait_negligible"])
    star, ref = select_alpha(per_alpha, margin)
    nd, tl = control.get("nll_diff_hi"), control.get("trait_diff_lo")
    control_ok = nd is not None and tl is not None and nd < 0 and tl >= float(p["control_min_trait"])
    out: dict[str, Any] = {"alpha_star": star, "alpha_ref": ref, "control_ok": control_ok,
                           "rule": "plan §6: INCONCLUSIVE (control failed) if C fails; SUPPORTED if α* exists and "
                                   "upper95(D_α*) < 0; NOT SUPPORTED if for every α upper95(R_α) < margin or "
                                   "lower95(D_α) > −negligible; INCONCLUSIVE otherwise"}
    if quick:
        return {**out, "word": "NO VERDICT (quick mode: a smoke test, not the pre-registered run)"}

    def bad(v: Mapping[str, Optional[float]]) -> bool:
        return (v.get("R_hi") is not None and v["R_hi"] < margin) or (v.get("D_lo") is not None and v["D_lo"] > -negl)

    if not control_ok:
        word = "INCONCLUSIVE (control failed)"
    elif star is not None and per_alpha[star].get("D_hi") is not None and per_alpha[star]["D_hi"] < 0:
        word = "SUPPORTED"
    elif per_alpha and all(bad(v) for v in per_alpha.values()):
        word = "NOT SUPPORTED"
    else:
        word = "INCONCLUSIVE"
    return {**out, "word": word}


def analyse_dataset(evals: Mapping[tuple[str, int], Mapping[str, Any]], base: Mapping[str, Any],
                    p: Mapping[str, Any], quick: bool) -> dict[str, Any]:
    """Every number of one dataset: the bootstrap families, per-condition rows, per-seed descriptives,
    α*, the control, H2 labels, flags and the verdict."""
    seeds = sorted({s for (_, s) in evals if ("plain", s) in evals})
    planned = cond_keys(p)
    keys = [k for k in planned if all((k, s) in evals for s in seeds)]
    missing = [k for k in planned if k not in keys]
    prev = [k for k in keys if k.startswith("prev_")]
    if "plain" not in keys or not seeds:
        return {"error": "no complete plain condition", "missing": missing}
    fam = families(evals, base, keys, seeds, prev, p)
    S = {f: v["stats"] for f, v in fam.items()}

    def iv(fm: str, name: str) -> dict[str, Optional[float]]:
        return S[fm].get(name, {"est": None, "lo": None, "hi": None})

    per_alpha = {float(k[5:]): {"R_lo": iv("task", f"R:{k}")["lo"], "R_hi": iv("task", f"R:{k}")["hi"],
                                "D_lo": iv("trait", f"D:{k}")["lo"], "D_hi": iv("trait", f"D:{k}")["hi"]}
                 for k in prev}
    control = {"nll_diff_hi": iv("task", "dNLL:plain")["hi"], "trait_diff_lo": iv("trait", "dTbase:plain")["lo"]}
    ver = verdict(control, per_alpha, p, quick)
    ref = ver["alpha_ref"]
    rk = None if ref is None else f"prev_{float(ref)}"
    h2 = {}
    for o in ("inoculation", "caft"):
        if rk and o in keys:
            dt, dr = iv("trait", f"dT:{rk}-{o}"), iv("task", f"dR:{rk}-{o}")
            h2[o] = {"trait": {**dt, "label": label(dt["lo"], dt["hi"])},
                     "retention": {**dr, "label": label(dr["lo"], dr["hi"])}}
    rows = {}
    for k in ["base"] + keys:
        r = {"NLL": iv("task", f"NLL:{k}"), "acc": iv("task", f"acc:{k}"), "T": iv("trait", f"T:{k}"),
             "words": iv("trait", f"words:{k}"), "ppl": iv("ppl", f"ppl:{k}")}
        if k != "base":
            r.update({"dNLL": iv("task", f"dNLL:{k}"), "dTbase": iv("trait", f"dTbase:{k}"),
                      "wordsratio": iv("trait", f"wordsratio:{k}"),
                      "shift_ind_own": iv("shift", f"shift_ind_own:{k}"), "shift_ind_tf": iv("shift", f"shift_ind_tf:{k}"),
                      "shift_steer_own": iv("shift", f"shift_steer_own:{k}")})
            r["flags"] = {"general_cost": k != "plain" and (iv("ppl", f"pplratio:{k}")["lo"] or 0) > float(p["ppl_flag_ratio"]),
                          "moves_along_v_ind": _excludes0(r["shift_ind_own"])}
        if k not in ("base", "plain"):
            r.update({"R": iv("task", f"R:{k}"), "D": iv("trait", f"D:{k}"), "pplratio": iv("ppl", f"pplratio:{k}")})
        rows[k] = r
    per_seed = {}
    for s in seeds:
        nb = sum(x["nll_sum"] for x in base["task"]) / sum(x["n_tokens"] for x in base["task"])
        nll = {k: sum(x["nll_sum"] for x in evals[(k, s)]["task"]) / sum(x["n_tokens"] for x in evals[(k, s)]["task"])
               for k in keys}
        per_seed[str(s)] = {k: {"NLL": nll[k], "R": _div(nb - nll[k], nb - nll["plain"]) if k != "plain" else None,
                                "T": float(np.mean([x["marker"] for x in evals[(k, s)]["trait"]]))} for k in keys}
    return {"seeds": seeds, "conditions": keys, "missing_conditions": missing,
            "units": {f: {"units": v["units"], "n_levels": v["n_levels"], "n_boot": v["n_boot"]} for f, v in fam.items()},
            "families": S, "rows": rows, "per_alpha": {str(a): v for a, v in per_alpha.items()},
            "control": {**control, "ok": ver["control_ok"]}, "h2": h2, "per_seed": per_seed, "verdict": ver}


def _excludes0(v: Mapping[str, Optional[float]]) -> bool:
    return v["lo"] is not None and v["hi"] is not None and (v["lo"] > 0 or v["hi"] < 0)
