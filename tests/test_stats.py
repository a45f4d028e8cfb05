"""persona_vectors.stats: known answers, the re-exports, and the cluster bootstrap's coverage."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from persona_vectors import stats as S
from persona_vectors.judge import wilson_interval

ROOT = Path(__file__).resolve().parents[1]


# ============================================================================================ proportions
@pytest.mark.parametrize(
    "k,n,lo,hi",
    [  # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_published_values(k: int, n: int, lo: float, hi: float) -> None:
    p, l, h = S.wilson(k, n)
    assert p == pytest.approx(k / n)
    assert l == pytest.approx(lo, abs=1e-4) and h == pytest.approx(hi, abs=1e-4)


def test_wilson_edges_and_errors() -> None:
    assert S.wilson(0, 0) == (0.0, 0.0, 1.0)
    assert S.wilson(0, 7).lo == 0.0 and S.wilson(7, 7).hi == 1.0
    r = S.wilson(3, 10)
    assert (r.estimate, r.lo, r.hi) == tuple(r)
    for k, n in [(3, 2), (-1, 2), (1, -1)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            S.wilson(k, n)


@pytest.mark.parametrize(
    "k1,n1,k2,n2,lo,hi",
    [  # Newcombe (1998), "Interval estimation for the difference between independent proportions",
        # Table II, method 10 (hybrid score), examples (a)-(h)
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0),
        (10, 10, 0, 10, 0.6075, 1.0),
    ],
)
def test_newcombe_published_values(k1: int, n1: int, k2: int, n2: int, lo: float, hi: float) -> None:
    d, l, h = S.newcombe_diff(k1, n1, k2, n2)
    assert d == pytest.approx(k1 / n1 - k2 / n2)
    assert l == pytest.approx(lo, abs=2e-4) and h == pytest.approx(hi, abs=2e-4)


def test_newcombe_errors_name_the_sample() -> None:
    with pytest.raises(ValueError, match="second sample"):
        S.newcombe_diff(1, 2, 5, 3)


@pytest.mark.parametrize("table", [(9, 10, 3, 10), (0, 5, 5, 5), (3, 40, 1, 40), (12, 30, 12, 30)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_fisher_matches_scipy(table: tuple[int, int, int, int], alternative: str) -> None:
    k1, n1, k2, n2 = table
    ref = scipy.stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative=alternative)
    got = S.fisher_exact(k1, n1, k2, n2, alternative=alternative)
    assert got.p_value == pytest.approx(float(ref[1]), rel=1e-12)
    assert got.odds_ratio == pytest.approx(float(ref[0])) or (math.isinf(got.odds_ratio) and math.isinf(ref[0]))


@pytest.mark.parametrize("bc", [(10, 2), (40, 51), (0, 5), (1, 0), (0, 0)])
def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs(bc: tuple[int, int]) -> None:
    b, c = bc
    ref = float(scipy.stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    assert S.mcnemar_exact(b, c) == ref and S.mcnemar_exact(c, b) == pytest.approx(ref)
    with pytest.raises(ValueError):
        S.mcnemar_exact(-1, 3)


def test_fisher_bad_alternative() -> None:
    with pytest.raises(ValueError, match="two-sided"):
        S.fisher_exact(1, 2, 1, 2, alternative="bigger")  # type: ignore[arg-type]


# ============================================================================================ re-exports
def _old_wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The pre-stats implementation (judge.wilson_interval), kept here as the reference."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def test_judge_wilson_interval_unchanged() -> None:
    for n in range(0, 41):
        for k in range(n + 1):
            for z in (1.0, 1.96, 2.576):
                assert wilson_interval(k, n, z) == _old_wilson_interval(k, n, z)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(3, 2)


def test_experiment_helpers_unchanged() -> None:
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import _common as C
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    for k1, n1, k2, n2 in [(3, 10, 1, 12), (0, 5, 0, 9), (7, 7, 2, 30), (0, 0, 1, 4)]:
        assert C.wilson(k1, n1) == (k1 / n1 if n1 else 0.0, *_old_wilson_interval(k1, n1))
        p1, l1, u1 = C.wilson(k1, n1)
        p2, l2, u2 = C.wilson(k2, n2)
        d = p1 - p2
        old = (d, max(-1.0, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
               min(1.0, d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))
        assert C.newcombe_diff(k1, n1, k2, n2) == old
        if n1 and n2:
            ref = scipy.stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")[1]
            assert C.fisher_greater(k1, n1, k2, n2) == float(ref)
    v = np.random.default_rng(0).normal(size=(15, 3))
    m, lo, hi = C.bootstrap_ci(v, np.random.default_rng(1), 300)
    rng = np.random.default_rng(1)  # the old implementation, same draws
    boots = v[rng.integers(0, 15, size=(300, 15))].mean(1)
    np.testing.assert_array_equal(m, v.mean(0))
    np.testing.assert_array_equal(lo, np.percentile(boots, 2.5, axis=0))
    np.testing.assert_array_equal(hi, np.percentile(boots, 97.5, axis=0))


# ============================================================================================ cluster bootstrap
def _crossed(Q: int = 8, D: int = 5, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=Q), rng.normal(size=D)
    return [{"question_id": f"q{q}", "direction_id": d, "y": float(a[q] + b[d] + rng.normal())}
            for q in range(Q) for d in range(D) for _ in range(2)]


def test_cluster_bootstrap_inputs_agree() -> None:
    recs = _crossed()
    cols = {k: np.array([r[k] for r in recs]) for k in recs[0]}
    kw = dict(clusters=["question_id", "direction_id"], n_boot=300, seed=3)
    r1 = S.cluster_bootstrap(recs, "y", **kw)
    r2 = S.cluster_bootstrap(cols, "y", **kw)
    r3 = S.cluster_bootstrap(recs, lambda d: d["y"].mean(), **kw)
    r4 = S.cluster_bootstrap(recs, lambda d, w: np.average(d["y"], weights=w), weighted=True, **kw)
    assert r1.estimate == pytest.approx(np.mean(cols["y"]))
    for r in (r2, r3, r4):  # same seed -> same multiplicities -> same replicates
        assert r.estimate == pytest.approx(r1.estimate)
        np.testing.assert_allclose(r.replicates, r1.replicates, rtol=1e-10)
    assert r1.units == ("question_id", "direction_id")
    assert r1.n_levels == {"question_id": 8, "direction_id": 5}
    assert r1.n_boot == 300 and r1.lo < r1.estimate < r1.hi and r1.se > 0


def test_cluster_bootstrap_multiway_weights() -> None:
    """Each replicate keeps a row with multiplicity = product of its levels' draw counts."""
    rng = np.random.default_rng(0)
    codes = [(np.array([0, 0, 1, 1, 2, 2]), 3), (np.array([0, 1, 0, 1, 0, 1]), 2)]
    w = S._multiway_weights(rng, codes, 6, 50)
    rng = np.random.default_rng(0)
    cq = rng.multinomial(3, np.full(3, 1 / 3), size=50)
    cd = rng.multinomial(2, np.full(2, 1 / 2), size=50)
    np.testing.assert_array_equal(w, cq[:, codes[0][0]] * cd[:, codes[1][0]])
    assert np.all(cq.sum(1) == 3) and np.all(cd.sum(1) == 2)


def test_cluster_bootstrap_vector_bca_and_rows() -> None:
    recs = _crossed(Q=20, D=3, seed=1)
    r = S.cluster_bootstrap(recs, lambda d: np.array([d["y"].mean(), d["y"].std()]), "question_id",
                            n_boot=300, seed=0)
    assert r.estimate.shape == (2,) and r.lo.shape == (2,) and r.replicates.shape == (300, 2)
    assert np.all(r.lo <= r.estimate) and np.all(r.estimate <= r.hi)
    b = S.cluster_bootstrap(recs, "y", "question_id", n_boot=500, seed=0, method="bca")
    assert b.method == "bca" and b.lo < b.estimate < b.hi
    naive = S.cluster_bootstrap(recs, "y", [], n_boot=300, seed=0)
    assert naive.units == ("row",) and naive.n_levels == {"row": len(recs)}


def test_cluster_bootstrap_errors() -> None:
    recs = _crossed()
    with pytest.raises(ValueError, match="not in the data"):
        S.cluster_bootstrap(recs, "y", "prompt_id")
    with pytest.raises(ValueError, match="not in the data"):
        S.cluster_bootstrap(recs, "score", "question_id")
    with pytest.raises(ValueError, match="single level"):
        S.cluster_bootstrap([{"q": 1, "y": 1.0}, {"q": 1, "y": 0.0}], "y", "q")
    with pytest.raises(ValueError, match="exactly one cluster column"):
        S.cluster_bootstrap(recs, "y", ["question_id", "direction_id"], method="bca")
    with pytest.raises(ValueError, match="same fields"):
        S.cluster_bootstrap([{"q": 1, "y": 1.0}, {"q": 2}], "y", "q")
    with pytest.raises(ValueError, match="equal length"):
        S.cluster_bootstrap({"q": [1, 2, 3], "y": [1.0, 2.0]}, "y", "q")
    with pytest.raises(ValueError, match="not numeric"):
        S.cluster_bootstrap(recs, "question_id", "direction_id")


# ============================================================================================ permutation tests
def test_direction_permutation_minimum_p() -> None:
    ctrl = np.random.default_rng(0).normal(size=(5, 12))
    r = S.permutation_test_directions(np.full(12, 10.0), ctrl)
    assert r.p_value == pytest.approx(1 / 6) and r.min_p == pytest.approx(1 / 6)
    assert r.rank == 1 and r.n_controls == 5 and r.unit == "direction" and r.z > 3
    low = S.permutation_test_directions(np.full(12, -10.0), ctrl)
    assert low.p_value == 1.0 and low.rank == 6
    assert S.permutation_test_directions(np.full(12, -10.0), ctrl, alternative="less").p_value == pytest.approx(1 / 6)
    assert S.permutation_test_directions(np.full(12, 10.0), ctrl, alternative="two-sided").p_value == pytest.approx(2 / 6)
    # 19 controls is the least that can reach p = 0.05; a mapping of direction ids works too
    many = {f"rand{i}": v for i, v in enumerate(np.random.default_rng(1).normal(size=(19, 4)))}
    r19 = S.permutation_test_directions([5.0, 5, 5, 5], many)
    assert r19.p_value == pytest.approx(0.05) and r19.min_p == pytest.approx(0.05)
    # ties count against the target
    assert S.permutation_test_directions([1.0], [[1.0], [0.0], [2.0]]).p_value == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="no control directions"):
        S.permutation_test_directions([1.0], [])


def test_within_question_permutation() -> None:
    rng = np.random.default_rng(0)
    # 30 questions with very different baselines; the condition is unbalanced across questions (hard
    # questions got mostly condition 1), and has no effect. The raw difference of means is confounded;
    # permuting within question accounts for that, an unstratified permutation does not.
    q = np.repeat(np.arange(30), 6)
    base = np.where(np.arange(30) < 15, 0.0, 3.0)[q]
    cond = np.where(q < 15, np.tile([0, 0, 0, 0, 0, 1], 30), np.tile([1, 1, 1, 1, 1, 0], 30))
    y = base + rng.normal(0, 0.5, len(q))
    within = S.permutation_test_within(y, cond, q, n_perm=999, seed=0)
    naive = S.permutation_test_within(y, cond, np.zeros_like(q), n_perm=999, seed=0)
    assert abs(within.difference) > 1.0  # confounded raw difference
    assert naive.p_value == pytest.approx(1 / 1000)
    assert within.p_value > 0.05 and within.n_strata == 30 and within.unit == "generation within question"
    # a planted effect is found
    eff = S.permutation_test_within(y + 0.8 * cond, cond, q, n_perm=999, seed=0, alternative="greater")
    assert eff.p_value <= 0.01


# ============================================================================================ clustered logistic
def _marginal_clustered(n_q: int, m: int, p0: float, p1: float, rho: float, seed: int):
    """Binary data with *marginal* P(y=1 | x) = p_x exactly and within-question correlation: with prob rho a
    generation copies its question's shared draw (a shared uniform thresholded at p_x)."""
    rng = np.random.default_rng(seed)
    q = np.repeat(np.arange(n_q), m)
    x = np.tile(np.arange(m) % 2, n_q)
    px = np.where(x == 1, p1, p0)
    shared = rng.random(n_q)[:, None] < np.array([p0, p1])  # one uniform per question: both conditions share it
    own = rng.random(len(q)) < px
    y = np.where(rng.random(len(q)) < rho, shared[q, x], own).astype(int)
    return y, x, q


def test_gee_recovers_planted_effect() -> None:
    p0, p1 = 0.2, 0.5
    true = math.log(p1 / (1 - p1)) - math.log(p0 / (1 - p0))  # 1.386
    y, x, q = _marginal_clustered(120, 10, p0, p1, rho=0.6, seed=0)
    r = S.gee_logistic(y, {"steered": x}, q)
    assert r.term == "steered" and r.unit == "question" and r.n_groups == 120 and r.n_obs == 1200
    assert r.lo < true < r.hi and r.p_value < 1e-6
    assert r.odds_ratio == pytest.approx(math.exp(r.coef)) and r.extra["working_correlation"] > 0.15
    # the same data treated as independent: a narrower interval (what the clustering costs)
    naive = S.gee_logistic(y, {"steered": x}, q, cov_struct="independence", cov_type="naive")
    assert (naive.hi - naive.lo) < 0.85 * (r.hi - r.lo)
    # no effect -> no significance
    y0, x0, q0 = _marginal_clustered(120, 10, 0.3, 0.3, rho=0.6, seed=1)
    assert S.gee_logistic(y0, x0, q0, names=["steered"]).p_value > 0.05


def test_mixed_logistic_recovers_conditional_effect() -> None:
    rng = np.random.default_rng(0)
    n_q, m, beta = 40, 10, 1.2
    q = np.repeat(np.arange(n_q), m)
    x = np.tile(np.arange(m) % 2, n_q)
    eta = -0.7 + beta * x + rng.normal(0, 1.0, n_q)[q]
    y = (rng.random(len(q)) < 1 / (1 + np.exp(-eta))).astype(int)
    r = S.mixed_logistic(y, x, q, names=["steered"])
    assert r.lo < beta < r.hi and r.p_value < 1e-4
    assert 0.4 < r.extra["random_intercept_sd"] < 2.0


def test_logistic_errors() -> None:
    q = np.repeat(np.arange(5), 4)
    x = np.tile([0, 1], 10)
    with pytest.raises(ValueError, match="binary"):
        S.gee_logistic(np.full(20, 0.5), x, q)
    with pytest.raises(ValueError, match="constant"):
        S.gee_logistic(np.zeros(20), x, q)
    with pytest.raises(ValueError, match="same number of rows"):
        S.gee_logistic(np.tile([0, 1], 10), x[:-1], q)
    with pytest.raises(ValueError, match="collinear"):
        S.gee_logistic(np.tile([0, 1], 10), np.column_stack([x, x]), q)
    with pytest.raises(ValueError, match="not a design column"):
        S.gee_logistic(np.tile([0, 1], 10), {"steered": x}, q, term="alpha")


# ============================================================================================ calibration
def test_ece_calibrated_and_overconfident() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert S.ece(p, y) < 0.02
    over = np.where(p > 0.5, 1 - (1 - p) ** 3, p ** 3)  # pushed towards 0 and 1
    assert S.ece(over, y) > 0.08
    # multi-class top-label: confidence 0.9, right 60 % of the time -> ECE 0.3
    n, K = 5000, 4
    P = np.full((n, K), 0.1 / 3)
    P[:, 0] = 0.9
    labels = np.where(rng.random(n) < 0.6, 0, rng.integers(1, K, n))
    assert S.ece(P, labels) == pytest.approx(0.3, abs=0.03)
    names = ["ai", "human", "supernatural", "incoherent"]
    assert S.ece(P, [names[i] for i in labels], classes=names) == pytest.approx(S.ece(P, labels))


def test_reliability_curve_bins() -> None:
    c = S.reliability_curve([0.05, 0.15, 0.95, 1.0, 0.97], [0, 1, 1, 1, 0], n_bins=10)
    assert c.count.sum() == 5 and c.count[0] == 1 and c.count[1] == 1 and c.count[9] == 3
    assert np.isnan(c.confidence[5]) and c.accuracy[9] == pytest.approx(2 / 3)
    recs = c.as_records()
    assert len(recs) == 3 and all(r["acc_lo"] <= r["accuracy"] <= r["acc_hi"] for r in recs)
    q = S.reliability_curve(np.linspace(0, 1, 100), np.arange(100) % 2, n_bins=4, strategy="quantile")
    assert q.count.tolist() == [25, 25, 25, 25]
    with pytest.raises(ValueError, match="one label per row"):
        S.ece([0.2, 0.3], [1])
    with pytest.raises(ValueError, match="sum to 1"):
        S.ece([[0.2, 0.3]], [0])
    with pytest.raises(ValueError, match="not in classes"):
        S.ece([[0.5, 0.5]], ["ghost"], classes=["ai", "human"])


# ============================================================================================ corrected shares
def test_corrected_shares_recovers_known_truth() -> None:
    labels = ["ai", "human", "supernatural", "incoherent"]
    confusion = np.array([  # true x predicted, held-out counts
        [80, 5, 12, 3],
        [6, 70, 4, 0],
        [5, 2, 40, 3],
        [1, 0, 9, 30],
    ])
    C = confusion / confusion.sum(1, keepdims=True)
    true = np.array([0.55, 0.20, 0.05, 0.20])
    observed = C.T @ true
    r = S.corrected_shares(observed * 400, confusion, labels=labels)
    np.testing.assert_allclose(r.shares, true, atol=1e-6)
    np.testing.assert_allclose(r.counts, true * 400, atol=1e-3)
    assert r.residual < 1e-6 and set(r.as_dict()) == set(labels)
    # the raw observed share of "supernatural" is inflated by misread AI answers
    assert observed[2] > 2 * true[2]
    # per-item probabilities and label lists are accepted
    P = np.tile(observed, (10, 1))
    np.testing.assert_allclose(S.corrected_shares(P, confusion).shares, true, atol=1e-6)
    preds = ["ai"] * 6 + ["supernatural"] * 4
    s = S.corrected_shares(preds, np.eye(4) * 10, labels=labels)
    np.testing.assert_allclose(s.shares, [0.6, 0, 0.4, 0], atol=1e-9)


def test_corrected_shares_stays_on_simplex() -> None:
    C = np.array([[0.9, 0.1], [0.3, 0.7]])
    # observed 95 % label 0 is beyond what C can produce (max 90 %): the plain inverse gives a negative share
    inv = np.linalg.solve(C.T, np.array([0.95, 0.05]))
    assert inv.min() < 0
    r = S.corrected_shares([95, 5], C)
    assert np.all(r.shares >= 0) and r.shares.sum() == pytest.approx(1.0)
    assert r.shares[0] == pytest.approx(1.0) and r.residual > 0


def test_corrected_shares_errors() -> None:
    with pytest.raises(ValueError, match=r"true label \['human'\]"):
        S.corrected_shares([3, 4], [[5, 1], [0, 0]], labels=["ai", "human"])
    with pytest.raises(ValueError, match="square"):
        S.corrected_shares([3, 4], [[5, 1, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="not in labels"):
        S.corrected_shares(["ghost"], np.eye(2), labels=["ai", "human"])
    with pytest.raises(ValueError, match="pass labels"):
        S.corrected_shares(["ai"], np.eye(2))


def test_corrected_shares_in_a_cluster_bootstrap() -> None:
    rng = np.random.default_rng(0)
    recs = [{"question_id": q, "probs": rng.dirichlet([5, 1, 1])} for q in range(20) for _ in range(5)]
    conf = np.array([[50, 5, 5], [5, 40, 5], [2, 3, 45]])
    r = S.cluster_bootstrap(recs, lambda d: S.corrected_shares(d["probs"], conf).shares, "question_id",
                            n_boot=200, seed=0)
    assert r.estimate.shape == (3,) and np.all(r.lo <= r.estimate) and np.all(r.estimate <= r.hi)


# ============================================================================================ agreement
def test_cohen_kappa() -> None:
    from sklearn.metrics import cohen_kappa_score

    a = ["ai", "ai", "human", "supernatural", "ai", "human", "no_self", "ai"]
    b = ["ai", "human", "human", "supernatural", "ai", "ai", "no_self", "ai"]
    assert S.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert S.cohen_kappa(a, a) == 1.0
    assert math.isnan(S.cohen_kappa(["ai"] * 3, ["ai"] * 3))
    with pytest.raises(ValueError, match="same items"):
        S.cohen_kappa(a, b[:-1])
    with pytest.raises(ValueError, match="not in the label set"):
        S.cohen_kappa(a, b, labels=["ai", "human"])


# ============================================================================================ coverage (slow)
@pytest.mark.slow
def test_cluster_bootstrap_coverage() -> None:
    """Nominal-95 % intervals on simulated clustered data: the cluster bootstrap covers the true mean in
    >= 90 % of 200 simulations; resampling rows (or only questions, when directions also vary) does not."""
    n_sim, n_boot = 200, 400
    rng = np.random.default_rng(20240613)

    # (1) generations nested in questions: 50 questions x 6 generations, random question effect (ICC 0.5)
    G, m = 50, 6
    q = np.repeat(np.arange(G), m)
    hit = {"cluster": 0, "rows": 0}
    for _ in range(n_sim):
        y = rng.normal(0, 1, G)[q] + rng.normal(0, 1, G * m)  # true mean 0
        for name, cl in (("cluster", ["q"]), ("rows", [])):
            r = S.cluster_bootstrap({"q": q, "y": y}, "y", cl, n_boot=n_boot, seed=rng)
            hit[name] += r.lo <= 0.0 <= r.hi
    cov1 = {k: v / n_sim for k, v in hit.items()}

    # (2) crossed: 30 questions x 20 directions, random question and direction effects
    Q, D = 30, 20
    qq, dd = (a.ravel() for a in np.meshgrid(np.arange(Q), np.arange(D), indexing="ij"))
    hit = {"questions+directions": 0, "questions only": 0, "rows": 0}
    for _ in range(n_sim):
        y = rng.normal(0, 1, Q)[qq] + rng.normal(0, 1, D)[dd] + rng.normal(0, 1, Q * D)
        data = {"q": qq, "d": dd, "y": y}
        for name, cl in (("questions+directions", ["q", "d"]), ("questions only", ["q"]), ("rows", [])):
            r = S.cluster_bootstrap(data, "y", cl, n_boot=n_boot, seed=rng)
            hit[name] += r.lo <= 0.0 <= r.hi
    cov2 = {k: v / n_sim for k, v in hit.items()}
    print(f"coverage nested: {cov1}; crossed: {cov2}")

    assert cov1["cluster"] >= 0.90
    assert cov1["rows"] < cov1["cluster"] - 0.15
    assert cov2["questions+directions"] >= 0.90
    assert cov2["questions only"] < cov2["questions+directions"] - 0.10
    assert cov2["rows"] < cov2["questions only"]


def test_sign_flip_exact_known_answers() -> None:
    from persona_vectors.stats import sign_flip_test

    r = sign_flip_test([1.0, 2.0, 3.0])  # only the all-positive assignment reaches the observed mean
    assert r.exact and r.p_value == pytest.approx(1 / 8) and r.min_p == pytest.approx(1 / 8) and r.mean == 2.0
    r = sign_flip_test([1.0, -1.0, 2.0, -2.0], alternative="two-sided")
    assert r.p_value == 1.0  # mean 0: every assignment is at least as extreme
    assert sign_flip_test([-1.0, -2.0], alternative="less").p_value == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least one"):
        sign_flip_test([])
    with pytest.raises(ValueError, match="non-finite"):
        sign_flip_test([1.0, float("nan")])


def test_sign_flip_random_matches_exact_and_holds_size() -> None:
    from persona_vectors.stats import sign_flip_test

    rng = np.random.default_rng(3)
    d = rng.normal(0.3, 1.0, size=14)
    exact = sign_flip_test(d).p_value
    approx_p = sign_flip_test(d, exact_max_n=0, n_perm=40000, seed=1).p_value
    assert abs(exact - approx_p) < 0.01
    # under the null, p <= 0.05 about 5 % of the time
    hits = sum(sign_flip_test(rng.normal(0, 1, size=10)).p_value <= 0.05 for _ in range(400))
    assert 8 <= hits <= 36
