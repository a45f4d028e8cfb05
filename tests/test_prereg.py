"""The pre-registered assistant-axis rerun: its plan is read from the committed file, and its verdict is the
plan's decision rule applied by code to records (synthetic records with a known answer)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import assistant_axis_prereg as A  # noqa: E402

from persona_vectors.judge import LABELS  # noqa: E402


def test_plan_is_read_from_the_committed_prereg_file() -> None:
    plan = A.read_plan()
    assert plan["layer"] == 14 and plan["kl_levels"] == [0.5, 1.0, 2.0]
    assert plan["n_random"] >= 30 and plan["n_role_pairs"] >= 10 and plan["samples_per_question"] >= 2
    cfg = A.Config.preset()
    assert (cfg.n_random, cfg.n_role_pairs, cfg.alpha_test) == (plan["n_random"], plan["n_role_pairs"], plan["alpha_test"])
    assert cfg.mode == "default" and A.Config.preset(quick=True).mode == "quick"


@pytest.mark.parametrize("p,lo,hi,pro,expect,h2", [
    (0.02, 1.3, 2.0, 0.5, "SUPPORTED", "passed"),
    (0.30, 0.8, 1.5, 0.5, "NOT SUPPORTED", "passed"),
    (0.02, 0.9, 1.5, 0.5, "INCONCLUSIVE", "passed"),
    (0.30, 1.1, 1.5, 0.5, "INCONCLUSIVE", "passed"),
    (0.02, 1.3, 2.0, 0.02, "SUPPORTED", "FAILED (the pro-axis also beats the controls)"),
])
def test_verdict_applies_the_plans_rule(p: float, lo: float, hi: float, pro: float, expect: str, h2: str) -> None:
    v = A.verdict(p, lo, hi, pro, 0.05, quick=False)
    assert v["h1"] == expect and v["h2_control"] == h2


def test_quick_runs_never_give_a_verdict() -> None:
    assert A.verdict(0.01, 2.0, 3.0, 0.9, 0.05, quick=True)["h1"].startswith("NO VERDICT")


def _synthetic(anti_rate: float, n_random: int = 20, n_q: int = 30, seed: int = 0) -> tuple[list, dict]:
    """Records of a fake run: the anti-axis answers 'supernatural' at ``anti_rate``, controls at 5 %."""
    rng = random.Random(seed)
    levels = [0.5, 2.0]
    dirs = [{"id": "anti_axis", "kind": "anti_axis"}, {"id": "pro_axis", "kind": "pro_axis"}] + \
        [{"id": f"random_{k:02d}", "kind": "random"} for k in range(n_random)]
    recs: list[dict] = []
    b = 0
    for d in dirs:
        recs.append({"kind": "calibration", "direction": d["id"], "direction_kind": d["kind"],
                     "alpha_rel": {str(lv): 0.1 * (i + 1) for i, lv in enumerate(levels)}})
        for lv in levels:
            for q in range(n_q):
                for s in range(2):
                    rate = anti_rate if d["kind"] == "anti_axis" else 0.05
                    lab = "supernatural" if rng.random() < rate else rng.choice(["no_self", "human", "incoherent"])
                    key = {"batch": b, "direction": d["id"], "level": lv, "question_id": f"q{q}", "sample": s}
                    recs.append({"kind": "generation", **key, "dkind": d["kind"], "text": f"{d['id']} {lv} {q} {s}",
                                 "question": f"question {q}", "alpha_rel": 0.1})
                    recs.append({"kind": "score", **key, "label": lab,
                                 "judge": {x: (0.9 if x == lab else 0.1 / 8) for x in LABELS}, "coherence": 0.7})
            b += 1
    config = {"config": {"kl_levels": levels, "mode": "default", "alpha_test": 0.05, "hand_check_n": 8,
                         "hand_check_margin": 0.1, "seed": 0},
              "directions": dirs, "questions": [f"q{q}" for q in range(n_q)],
              "judge": {"labels": list(LABELS), "confusion_matrix": (np.eye(len(LABELS), dtype=int) * 10).tolist()}}
    return recs, config


def test_summarize_finds_a_planted_effect_and_calls_it_supported() -> None:
    recs, config = _synthetic(anti_rate=0.5)
    res = A.summarize(recs, config)
    assert res["permutation_anti"]["rank"] == 1
    assert res["permutation_anti"]["p_value"] == pytest.approx(1 / 21)
    assert res["gee"]["or_lo"] > 1
    assert res["verdict"]["h1"] == "SUPPORTED"
    assert [row["level"] for row in res["curve"]] == [0.5, 2.0]


def test_summarize_calls_a_null_direction_not_supported() -> None:
    recs, config = _synthetic(anti_rate=0.05, seed=3)
    res = A.summarize(recs, config)
    assert res["permutation_anti"]["p_value"] > 0.05
    assert res["verdict"]["h1"] in ("NOT SUPPORTED", "INCONCLUSIVE")
    assert "SUPPORTED" != res["verdict"]["h1"]


def test_hand_check_sample_is_half_axis_half_controls_and_stratified() -> None:
    recs, config = _synthetic(anti_rate=0.3)
    sample = A.hand_check_sample(recs, config)
    assert len(sample) == 8
    assert sum(g["dkind"] == "anti_axis" for g in sample) == 4
    assert sorted(g["level"] for g in sample if g["dkind"] == "anti_axis") == [0.5, 0.5, 2.0, 2.0]
    assert A.hand_check_sample(recs, config) == sample  # seeded


@pytest.mark.slow
def test_quick_run_writes_records_a_report_without_verdict_and_replays(tmp_path: Path, smol) -> None:
    import recompute
    import records as RC

    doc = Path(A.ROOT) / "docs" / "assistant_axis_prereg.md"
    before = doc.stat().st_mtime_ns if doc.exists() else None
    cfg = A.Config.preset(quick=True, out=str(tmp_path / "aa"), threads=1)
    res = A.run(cfg, model=smol)  # the session's SmolLM2 (the run loads the same one otherwise)
    assert res["verdict"]["h1"].startswith("NO VERDICT")
    recs = RC.read_records(tmp_path / "aa")
    kinds = {r["kind"] for r in recs}
    assert {"calibration", "generation", "score"} <= kinds
    n_dirs = len(RC.read_json(tmp_path / "aa" / RC.CONFIG)["directions"])
    assert sum(r["kind"] == "calibration" for r in recs) == n_dirs
    gens = RC.of_kind(recs, "generation")
    assert len(gens) == sum(r["kind"] == "score" for r in recs) and all(isinstance(g["text"], str) for g in gens)
    assert (doc.stat().st_mtime_ns if doc.exists() else None) == before  # a quick run never writes docs/
    out = recompute.recompute(tmp_path / "aa")
    assert out["numbers"] > 0 and out["report_numbers"] > 0
