"""The exploratory read-outs of the assistant-axis rerun: masses and lifts are rebuilt from stored score
matrices, the anti-axis is ranked among the controls, nearest roles come out in cosine order (synthetic)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import assistant_axis_explore as X  # noqa: E402

from persona_vectors.readout import load_candidate_set  # noqa: E402


def _records(boost: float) -> tuple[list[dict], dict]:
    cs = load_candidate_set("v1")
    nq = len(cs.questions)
    sup = np.array([cs.group_of(c) == "supernatural" for c in cs.candidates])
    rng = np.random.default_rng(0)

    def scores(b: float) -> list[list[float]]:
        return (rng.normal(-3, 0.1, (nq, len(cs.candidates))) + b * sup).tolist()

    dist = {d: rng.normal(-3, 0.1, (nq, len(v))).tolist() for d, v in cs.distractors.items()}
    recs = [{"kind": "group_readout", "direction": "unsteered", "dkind": "unsteered", "level": None,
             "alpha_rel": 0.0, "scores": scores(0), "distractor_scores": dist}]
    dirs = [("anti_axis", "anti_axis", boost), ("pro_axis", "pro_axis", -1.0)] + \
        [(f"random_{i:02d}", "random", 0.0) for i in range(9)]
    for lv in (0.5, 2.0):
        for d, k, b in dirs:
            recs.append({"kind": "group_readout", "direction": d, "dkind": k, "level": lv, "alpha_rel": 0.1,
                         "scores": scores(b), "distractor_scores": dist})
    roles = {"ghost": "supernatural", "angel": "supernatural", "teacher": "profession", "wolf": "animal"}
    for d, k, b in dirs:
        cosv = {"ghost": 0.5 * b, "angel": 0.4 * b, "teacher": -0.3 * b, "wolf": 0.01}
        recs.append({"kind": "role_cosines", "direction": d, "dkind": k, "sign": 1, "cos": cosv})
    for lv in (0.5, 2.0):
        for d, k, b in dirs:
            recs.append({"kind": "judge_share", "direction": d, "level": lv, "n": 10, "k": int(max(b, 0) * 3 + (d[-1] == "3"))})
    return recs, {"config": {"kl_levels": [0.5, 2.0], "mode": "default"}, "role_categories": roles,
                  "prereg_run": {"dir": "x", "plan": {"commit": "abc"}}}


def test_anti_axis_with_planted_supernatural_scores_ranks_first_and_replays_identically() -> None:
    recs, cfg = _records(boost=2.0)
    res = X.summarize(recs, cfg)
    for e in res["per_level"]:
        p = e["anti_axis"]["supernatural_lift_perm"]
        assert p["rank"] == 1 and p["p_value"] == pytest.approx(1 / 10)
        assert e["anti_axis"]["top_lift_group"] == "supernatural"
        assert e["pro_axis"]["lift"]["supernatural"] < 0
    assert [r["role"] for r in res["nearest_roles"]["anti_axis"]][:2] == ["ghost", "angel"]
    assert res["supernatural_geometry"]["anti_axis"]["rank"] == 1
    assert res["readout_vs_judge"]["spearman_rho"] > 0.5
    assert X.summarize(recs, cfg) == res
    assert "exploratory" in X.render(res, cfg).lower()


def test_a_null_anti_axis_is_not_ranked_first() -> None:
    recs, cfg = _records(boost=0.0)
    res = X.summarize(recs, cfg)
    assert all(e["anti_axis"]["supernatural_lift_perm"]["p_value"] > 0.1 for e in res["per_level"])
