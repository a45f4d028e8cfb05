"""The cross-model experiment's statistics and decision rule on synthetic per-role records (fast, no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import cross_model as X  # noqa: E402

PLAN = X.P.read_plan(X.PLAN)
CATS = ["supernatural", "animal", "profession", "ai_robot"]


def _records(rho_models: float, rho_prompts: float, n: int = 80, seed: int = 0) -> tuple[list[dict], dict]:
    """Two models whose role projections correlate ~rho_models; each model's two prompts ~rho_prompts."""
    rng = np.random.default_rng(seed)
    roles = [f"role{i}" for i in range(n)]
    truth = rng.normal(size=n)
    recs = []
    for k, m in enumerate(PLAN["models"]):
        own = rho_models ** 0.5 * truth + (1 - rho_models) ** 0.5 * rng.normal(size=n)
        for L in (pair[k] for pair in PLAN["layer_pairs"]):
            prompts = [rho_prompts ** 0.5 * own + (1 - rho_prompts) ** 0.5 * rng.normal(size=n) for _ in range(2)]
            pooled = (prompts[0] + prompts[1]) / 2
            recs.append({"kind": "layer", "model": m, "layer": L, "n_layers": 30 if m == PLAN["models"][0] else 18,
                         "roles": roles, "proj": pooled.tolist(), "proj_prompt": [x.tolist() for x in prompts],
                         "pc1": (pooled + 0.1 * rng.normal(size=n)).tolist(), "evr": [0.3, 0.1, 0.05],
                         "cos_pc1_axis": 0.8, "axis_norm": 1.0, "default_norm": 1.0})
        recs.append({"kind": "model", "model": m, "model_id": m, "fingerprint": "f", "n_layers": 30, "d_model": 8,
                     "load_seconds": 1.0, "seconds": 2.0, "samples": {"role0": "I am a ghost."}})
    config = {"experiment": "cross_model", "config": {"mode": "default", "plan": PLAN, "deviations": []},
              "prereg": {"commit": "abc", "sha256": "0" * 64, "path": X.PLAN}, "code_sha256": "0" * 64,
              "categories": {r: CATS[i % 4] for i, r in enumerate(roles)}}
    return recs, config


def test_spearman_matches_scipy_and_perm_p_is_small_only_for_real_agreement() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert X.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert X.perm_p(a, a + 0.1 * rng.normal(size=50), 2000, 0) < 0.01
    assert X.perm_p(a, b, 2000, 0) > 0.05


@pytest.mark.parametrize("rho_models,rho_prompts,word", [
    (0.95, 0.95, "REPLICATES"),
    (0.0, 0.95, "DOES NOT REPLICATE"),
    (0.9, 0.02, "INCONCLUSIVE (reliability)"),
])
def test_verdicts_from_planted_geometry(rho_models, rho_prompts, word) -> None:
    recs, config = _records(rho_models, rho_prompts, n=120)
    res = X.summarize(recs, config)
    assert res["verdict"]["word"] == word
    prim = next(p for p in res["pairs"] if p["primary"])
    assert prim["pair"] == PLAN["primary_pair"] and len(res["pairs"]) == 4
    assert prim["rho_axis"]["lo"] <= prim["rho_axis"]["est"] <= prim["rho_axis"]["hi"]
    text = X.render(X.RC.roundtrip(res), config)
    assert word in text and "r > 0.92" in text


def test_partial_and_label_rule() -> None:
    plan = PLAN
    assert X.label({"est": 0.45, "lo": 0.2, "hi": 0.6}, plan["replicates_lower"], plan["fails_upper"]) == "PARTIAL"
    assert X.label({"est": 0.1, "lo": -0.1, "hi": 0.35}, plan["replicates_lower"], plan["fails_upper"]) == "INCONCLUSIVE"
    rel = {"a": {"lo": 0.5}, "b": {"lo": 0.29}}
    assert X.verdict({"est": 0.9, "lo": 0.8, "hi": 0.95}, rel, plan) == "INCONCLUSIVE (reliability)"


def test_summary_is_deterministic_and_categories_are_reported() -> None:
    recs, config = _records(0.8, 0.9)
    a, b = X.RC.roundtrip(X.summarize(recs, config)), X.RC.roundtrip(X.summarize(recs, config))
    assert a == b
    assert set(a["categories"]) == set(CATS) and all(a["categories"][c]["n"] == 20 for c in CATS)
    assert -1 <= a["category_rho"] <= 1


def test_rerun2_plan_and_question_halves_are_reported_and_pc1_is_unsigned() -> None:
    plan2 = X.P.read_plan(X.Rerun2.PLAN)
    assert plan2["questions"] == [0, 6] and plan2["halves"] == [[0, 3], [3, 6]]
    assert {k: v for k, v in plan2.items() if k not in ("questions", "halves", "full_ghost_angel")} == \
        {k: v for k, v in PLAN.items() if k not in ("questions", "halves", "full_ghost_angel")}  # run 1's rule
    q = X.Rerun2.preset(quick=True)
    assert q.plan["halves"] == [[0, 1], [1, 2]] and q.out == "runs/cross_model_rerun2_quick"
    recs, config = _records(0.8, 0.9)
    rng = np.random.default_rng(5)
    for r in recs:
        if r["kind"] == "layer":
            base = np.asarray(r["proj"])
            halves = [base + 0.3 * rng.normal(size=len(base)) for _ in range(2)]
            r["proj_half"] = [h.tolist() for h in halves]
            r["pc1_half"] = [halves[0].tolist(), (-halves[1]).tolist()]  # a flipped PC1 sign on one half
    config = {**config, "name": "cross_model_rerun2", "config": {**config["config"], "plan": {**PLAN, **plan2}}}
    res = X.RC.roundtrip(X.summarize(recs, config))
    for m, rows in res["halves"].items():
        assert len(rows) == 4
        for r in rows:
            assert r["rho_half"]["est"] > 0.6 and r["rho_half_pc1"]["est"] == pytest.approx(r["rho_half"]["est"])
            assert r["rho_half_pc1"]["lo"] <= r["rho_half_pc1"]["est"] <= r["rho_half_pc1"]["hi"]
    text = X.render(res, config)
    assert "rerun 2" in text and "split-half" in text
    assert "split-half" not in X.render(X.RC.roundtrip(X.summarize(*_records(0.8, 0.9))), _records(0.8, 0.9)[1])
