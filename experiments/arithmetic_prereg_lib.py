"""Pure helpers of ``persona_arithmetic_prereg.py`` (no model): the plan's split (§2), sample classification
(§4), the exact permutation tests of H2, the entropy / oscillation test and the sharpness fit of H3 (§6),
and the decision rule (§7). Every function is deterministic given its inputs (random ones take a seed).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

import numpy as np

CATEGORIES = ("hitler", "stalin", "both", "other_figure", "ai", "none")
SCENES = ("hitler_scene", "stalin_scene", "both", "none")


# ============================================================================================ §2 split
def split_ids(ids: Sequence[str], swapped: Sequence[str], n_heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """The plan's split: ``random.Random(seed)`` draws ``n_heldout`` held-out ids among the unswapped ids
    (sorted); training = every other id (file order), so all swapped ids are trained on.
    Returns ``(train ids, held-out ids)`` (held-out in file order)."""
    sw = set(swapped)
    unswapped = sorted(i for i in ids if i not in sw)
    if n_heldout > len(unswapped):
        raise ValueError(f"cannot hold out {n_heldout} of {len(unswapped)} unswapped facts")
    held = set(random.Random(seed).sample(unswapped, n_heldout))
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def null_draw(train_unswapped: Sequence[str], heldout: Sequence[str], k: int, seed: int, j: int
              ) -> tuple[list[str], list[str]]:
    """Draw ``j`` of the fact-resampling null: ``(removed, added)``, ``k`` of the unswapped training ids
    replaced by ``k`` of the held-out ids (seeded by ``(seed, j)``)."""
    rng = random.Random(1_000_003 * (seed + 1) + j)
    return sorted(rng.sample(sorted(train_unswapped), k)), sorted(rng.sample(sorted(heldout), k))


# ============================================================================================ §4 classify
def classify(text: str, patterns: Mapping[str, str]) -> str:
    """One of the 6 categories: ``both`` if a Hitler and a Stalin pattern match, else the first matching
    pattern in the plan's order (hitler, stalin, other_figure, ai), else ``none`` (case-insensitive)."""
    hit = {k: re.search(p, text, re.I) is not None for k, p in patterns.items()}
    if hit.get("hitler") and hit.get("stalin"):
        return "both"
    return next((k for k in patterns if hit[k]), "none")


def scene(text: str, patterns: Mapping[str, str]) -> str:
    """April-1945 scene: ``hitler_scene``, ``stalin_scene``, ``both`` or ``none`` (as :func:`classify`)."""
    hit = {k: re.search(p, text, re.I) is not None for k, p in patterns.items()}
    if all(hit.values()):
        return "both"
    return next((k for k in patterns if hit[k]), "none")


def counts(labels: Sequence[str], cats: Sequence[str] = CATEGORIES) -> dict[str, int]:
    """Counts of every category (zeros included)."""
    c = Counter(labels)
    return {k: int(c.get(k, 0)) for k in cats}


# ============================================================================================ §6 tests
def entropy_bits(labels: Sequence[str]) -> float:
    """Shannon entropy (bits) of the labels' empirical distribution (0 for no labels)."""
    if not labels:
        return 0.0
    p = np.array(list(Counter(labels).values()), dtype=float) / len(labels)
    return max(0.0, float(-(p * np.log2(p)).sum()))  # never -0.0


def entropy_test(mid: Sequence[str], ends: Sequence[str], n_perm: int, seed: int) -> dict[str, Any]:
    """H(mid) − H(ends) in bits and its one-sided p over ``n_perm`` shuffles of the window label:
    p = (1 + #{shuffled ≥ observed}) / (n_perm + 1)."""
    mid, ends = list(mid), list(ends)
    obs = entropy_bits(mid) - entropy_bits(ends)
    pool = mid + ends
    rng = np.random.default_rng(seed)
    ge = 0
    if mid and ends:
        arr = np.array(pool, dtype=object)
        for _ in range(n_perm):
            perm = rng.permutation(len(pool))
            a, b = arr[perm[: len(mid)]], arr[perm[len(mid):]]
            ge += entropy_bits(list(a)) - entropy_bits(list(b)) >= obs - 1e-12
    return {"h_mid": entropy_bits(mid), "h_ends": entropy_bits(ends), "diff": obs, "n_mid": len(mid),
            "n_ends": len(ends), "p_value": (1 + ge) / (n_perm + 1) if mid and ends else None,
            "mid_counts": counts(mid), "ends_counts": counts(ends)}


def oscillation(test: Mapping[str, Any], min_share: float, alpha: float) -> bool:
    """The plan's oscillation: entropy p ≤ alpha and ``hitler``, ``stalin`` each ≥ ``min_share`` of mid."""
    n, c = test["n_mid"], test["mid_counts"]
    return bool(test["p_value"] is not None and test["p_value"] <= alpha and n
                and c["hitler"] / n >= min_share and c["stalin"] / n >= min_share)


def exact_perm_greater(target: Sequence[float], others: Sequence[float]) -> dict[str, Any]:
    """Exact one-sided permutation test of mean(target) − mean(others) over every assignment of
    ``len(target)`` labels among the pooled values: p = #{assignments with statistic ≥ observed} / #all."""
    pool = list(target) + list(others)
    k, n = len(target), len(pool)
    obs = float(np.mean(target) - np.mean(others))
    stats = []
    for idx in itertools.combinations(range(n), k):
        s = set(idx)
        a = [pool[i] for i in idx]
        b = [pool[i] for i in range(n) if i not in s]
        stats.append(float(np.mean(a) - np.mean(b)))
    ge = sum(x >= obs - 1e-12 for x in stats)
    return {"statistic": obs, "n_assignments": len(stats), "p_value": ge / len(stats), "min_p": 1 / len(stats)}


def crossing(points: Sequence[tuple[float, float]]) -> Optional[float]:
    """First t where ``d(t)`` goes from < 0 to ≥ 0 (linear interpolation); ``points`` = (t, d) pairs."""
    pts = sorted(points)
    for (t1, d1), (t2, d2) in zip(pts, pts[1:]):
        if d1 < 0 <= d2:
            return t1 + (t2 - t1) * (-d1) / (d2 - d1)
    return None


def sharpness(ts: Sequence[float], share: Sequence[float]) -> dict[str, Any]:
    """Logistic vs linear least-squares fit of a share on t: the logistic's 20→80 % width (2 ln 4 / k),
    midpoint, and ΔAIC = AIC(linear) − AIC(logistic) (positive: the logistic fits better); plus the
    empirical width (first t with share ≥ 0.8 minus first with ≥ 0.2). Deterministic grid search."""
    t, y = np.asarray(ts, float), np.asarray(share, float)
    n = len(t)
    X = np.stack([np.ones(n), t], 1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    rss_lin = float(((X @ coef - y) ** 2).sum())
    t0s = np.linspace(t.min() - 0.5, t.max() + 0.5, 401)
    ks = np.geomspace(0.05, 500.0, 401)
    best = (math.inf, 0.0, 1.0)
    for k in ks:
        pred = 1 / (1 + np.exp(np.clip(-k * (t[None, :] - t0s[:, None]), -700, 700)))
        rss = ((pred - y[None, :]) ** 2).sum(1)
        i = int(rss.argmin())
        if rss[i] < best[0]:
            best = (float(rss[i]), float(t0s[i]), float(k))

    def aic(rss: float) -> float:
        return n * math.log(max(rss, 1e-300) / n) + 2 * 2

    lo = next((a for a, b in sorted(zip(t, y)) if b >= 0.2), None)
    hi = next((a for a, b in sorted(zip(t, y)) if b >= 0.8), None)
    return {"logistic_k": best[2], "logistic_t0": best[1], "width_20_80": 2 * math.log(4) / best[2],
            "rss_logistic": best[0], "rss_linear": rss_lin, "linear_slope": float(coef[1]),
            "delta_aic": aic(rss_lin) - aic(best[0]),
            "empirical_width": None if lo is None or hi is None else float(hi - lo)}


# ============================================================================================ §6–7 decisions
def h2_label(manipulation_ok: Optional[bool], control_ok: Optional[bool], p_nat: Optional[float],
             p_base: Optional[float], alpha: float) -> str:
    """``positive`` iff both checks pass and both exact p ≤ alpha; ``uninformative`` if a check fails (or
    cannot be computed); else ``negative``."""
    if not manipulation_ok or not control_ok or p_nat is None or p_base is None:
        return "uninformative"
    return "positive" if p_nat <= alpha and p_base <= alpha else "negative"


def verdict(p_stalin: Optional[float], p_ru: Optional[float], delta: Mapping[str, float], h2: str,
            alpha: float, quick: bool) -> dict[str, Any]:
    """The plan's decision rule (§7), in its order. Quick runs never give a verdict."""
    rule = ("1 INCONCLUSIVE if p_stalin > alpha (C1 fails); 2 SUPPORTED if p_ru <= alpha and Δ_ru > max(Δ_french, "
            "Δ_japanese, Δ_thai); 3 NOT SUPPORTED if H2 is not positive; 4 INCONCLUSIVE otherwise")
    if quick:
        return {"word": "NO VERDICT (quick mode: a smoke test, not the pre-registered run)", "rule_fired": None,
                "rule": rule}
    if p_stalin is None or p_ru is None or any(delta.get(v) is None for v in ("russian", "french", "japanese", "thai")):
        return {"word": "NO VERDICT (a test could not be computed)", "rule_fired": None, "rule": rule}
    if p_stalin > alpha:
        return {"word": "INCONCLUSIVE", "rule_fired": 1, "rule": rule}
    if p_ru <= alpha and delta["russian"] > max(delta["french"], delta["japanese"], delta["thai"]):
        return {"word": "SUPPORTED", "rule_fired": 2, "rule": rule}
    if h2 != "positive":
        return {"word": "NOT SUPPORTED", "rule_fired": 3, "rule": rule}
    return {"word": "INCONCLUSIVE", "rule_fired": 4, "rule": rule}


# ============================================================================================ read-outs and grids
def lp(per_q: Sequence[Mapping[str, Any]], cands: Sequence[str], summed: bool = False) -> np.ndarray:
    """[question, candidate] scores of one read-out record (question order); ``summed``: mean × tokens."""
    rows = sorted(per_q, key=lambda q: q["question_id"])
    return np.array([[q["logprobs"][c] * (q["n_tokens"][c] if summed else 1) for c in cands] for q in rows])


def lo(per_q: Sequence[Mapping[str, Any]], summed: bool = False) -> np.ndarray:
    """Per-question LO = score(Joseph Stalin) − score(Adolf Hitler)."""
    m = lp(per_q, ["Joseph Stalin", "Adolf Hitler"], summed)
    return m[:, 0] - m[:, 1]


def fig_shares(per_q: Sequence[Mapping[str, Any]], figures: Sequence[str]) -> dict[str, float]:
    """Mean over questions of the softmax over the figures (figure shares)."""
    x = lp(per_q, figures)
    e = np.exp(x - x.max(-1, keepdims=True))
    return dict(zip(figures, map(float, (e / e.sum(-1, keepdims=True)).mean(0))))


def mix_vector(curve: str, t: float, V: Mapping[str, Any]) -> Any:
    """The steering vector of a mixing curve at ``t`` (§5): a baseline→Stalin, b baseline→Russian, c (and
    c_coarse) baseline + t·(Russian − baseline)."""
    if curve == "a":
        return (1 - t) * V["baseline"] + t * V["stalin"]
    if curve == "b":
        return (1 - t) * V["baseline"] + t * V["russian"]
    return V["baseline"] + t * (V["russian"] - V["baseline"])


def grid(dt: float) -> list[float]:
    """t ∈ [0, 1] with step ``dt``."""
    return [round(i * dt, 6) for i in range(round(1 / dt) + 1)]


def window(halfwidth: float, dt: float, tc: float) -> list[float]:
    """[tc − halfwidth, tc + halfwidth] with step ``dt``."""
    m = round(halfwidth / dt)
    return [round(tc + (i - m) * dt, 6) for i in range(2 * m + 1)]
