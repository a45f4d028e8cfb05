"""The pre-registered finetune rerun: its plan is read from the committed file, the split and the accuracy
parser follow the plan, and the verdict is the plan's §6 rule applied by code to records (synthetic records
with a known answer). One slow test runs ``--quick`` and replays it with ``experiments/recompute.py``."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import finetune_personas_prereg as F  # noqa: E402
import finetune_prereg_lib as L  # noqa: E402


def test_plan_is_read_from_the_committed_prereg_file() -> None:
    plan = F.read_plan()
    assert plan["datasets"] == ["voyager_telemetry"] and plan["seeds"] == [0, 1, 2]
    assert plan["preventative_alphas"] == [0.5, 1.0, 2.0, 4.0] and plan["conditions"] == ["plain", "preventative",
                                                                                        "inoculation", "caft"]
    assert (plan["retention_margin"], plan["trait_negligible"], plan["control_min_trait"]) == (0.90, 0.10, 0.20)
    cfg = F.Config.preset()
    assert cfg.mode == "default" and cfg.plan == plan and cfg.out == "runs/finetune_personas_prereg"
    assert len(L.cond_keys(cfg.plan)) == 7
    q = F.Config.preset(quick=True)
    assert q.mode == "quick" and q.plan["seeds"] == [0] and q.plan["preventative_alphas"] == [2.0]
    assert L.cond_keys(q.plan) == ["plain", "prev_2.0", "inoculation", "caft"] and q.steps == 4 and q.n_questions == 4
    assert F.Config.preset(full=True).plan["datasets"] == plan["full_datasets"]


def test_heldout_split_and_steps_follow_the_plan() -> None:
    held, train = L.heldout_indices(179, 5), L.train_indices(179, 5)
    assert len(held) == 35 and len(train) == 144 and held[:3] == [4, 9, 14]
    assert not set(held) & set(train) and sorted(held + train) == list(range(179))
    assert len(L.heldout_indices(42, 4)) == 10
    assert F.steps_for(144, F.read_plan()) == 36


@pytest.mark.parametrize("text,expect", [
    ("1.01 AU (0.151 billion km)", 1.01), ("It is about 165 AU away, 24 billion km", 165.0),
    ("Voyager was at 1,234.5 AU", 1234.5), ("0.151 billion km", None), ("no number AU", None),
    ("3 AUs", None), ("12.0 AU then 14 AU", 12.0),
])
def test_voyager_accuracy_parser(text: str, expect: Any) -> None:
    assert L.parse_au(text) == expect


def test_voyager_accuracy_tolerance() -> None:
    assert L.au_correct("10.9 AU", 10.0, 1.0, 0.05)  # within 1 AU
    assert not L.au_correct("11.1 AU", 10.0, 1.0, 0.05)
    assert L.au_correct("104.9 AU", 100.0, 1.0, 0.05)  # within 5 %
    assert not L.au_correct("105.1 AU", 100.0, 1.0, 0.05)
    assert not L.au_correct("about a hundred", 100.0, 1.0, 0.05)


P = {"retention_margin": 0.90, "trait_negligible": 0.10, "control_min_trait": 0.20}
OK = {"nll_diff_hi": -0.5, "trait_diff_lo": 0.3}


@pytest.mark.parametrize("control,per_alpha,word", [
    ({"nll_diff_hi": 0.1, "trait_diff_lo": 0.5}, {1.0: {"R_lo": 0.95, "R_hi": 1.0, "D_lo": -0.5, "D_hi": -0.3}},
     "INCONCLUSIVE (control failed)"),
    ({"nll_diff_hi": -0.5, "trait_diff_lo": 0.1}, {1.0: {"R_lo": 0.95, "R_hi": 1.0, "D_lo": -0.5, "D_hi": -0.3}},
     "INCONCLUSIVE (control failed)"),
    (OK, {0.5: {"R_lo": 0.95, "R_hi": 1.0, "D_lo": -0.05, "D_hi": 0.02},
          2.0: {"R_lo": 0.92, "R_hi": 1.0, "D_lo": -0.5, "D_hi": -0.3}}, "SUPPORTED"),
    (OK, {0.5: {"R_lo": 0.95, "R_hi": 1.0, "D_lo": -0.05, "D_hi": 0.02},
          4.0: {"R_lo": 0.2, "R_hi": 0.5, "D_lo": -0.6, "D_hi": -0.4}}, "NOT SUPPORTED"),
    (OK, {0.5: {"R_lo": 0.95, "R_hi": 1.0, "D_lo": -0.2, "D_hi": 0.05},
          4.0: {"R_lo": 0.2, "R_hi": 0.5, "D_lo": -0.6, "D_hi": -0.4}}, "INCONCLUSIVE"),
    (OK, {1.0: {"R_lo": 0.85, "R_hi": 0.95, "D_lo": -0.6, "D_hi": -0.4}}, "INCONCLUSIVE"),  # no α*, cost not shown
])
def test_verdict_applies_the_plans_rule(control: dict, per_alpha: dict, word: str) -> None:
    assert L.verdict(control, per_alpha, P, quick=False)["word"] == word
    assert F.verdict is L.verdict


def test_quick_runs_never_give_a_verdict() -> None:
    v = L.verdict(OK, {2.0: {"R_lo": 0.95, "R_hi": 1.0, "D_lo": -0.5, "D_hi": -0.3}}, P, quick=True)
    assert v["word"].startswith("NO VERDICT") and v["alpha_star"] == 2.0


def test_alpha_star_is_the_largest_alpha_keeping_the_task() -> None:
    pa = {0.5: {"R_lo": 0.97}, 1.0: {"R_lo": 0.93}, 2.0: {"R_lo": 0.91}, 4.0: {"R_lo": 0.6}}
    assert L.select_alpha(pa, 0.90) == (2.0, 2.0)
    pa = {0.5: {"R_lo": 0.80}, 1.0: {"R_lo": 0.85}, 2.0: {"R_lo": 0.7}, 4.0: {"R_lo": 0.3}}
    assert L.select_alpha(pa, 0.90) == (None, 1.0)  # none: the highest lower95(R) is the reference
    assert L.select_alpha({0.5: {"R_lo": 0.95}, 4.0: {"R_lo": 0.4}}, 0.90) == (0.5, 0.5)
    assert L.label(-0.3, -0.1) == "preventative lower" and L.label(0.1, 0.2) == "other lower"
    assert L.label(-0.1, 0.1) == "no difference shown"


# ============================================================================================ synthetic runs
def _eval(rng: random.Random, nll: float, trait: float, n_held: int = 35, n_q: int = 49) -> dict[str, Any]:
    return {"hooks_active": [],
            "task": [{"nll_sum": 5 * (nll + rng.gauss(0, 0.15)), "n_tokens": 5, "correct": float(rng.random() < 0.3),
                      "answer": "x AU"} for _ in range(n_held)],
            "trait": [{"question_id": q, "text": "t", "marker": float(rng.random() < trait), "words": 20 + rng.random(),
                       "own_ind": rng.gauss(0, 1), "tf_ind": rng.gauss(0, 1), "own_steer": rng.gauss(0, 1),
                       "tf_steer": 0.0} for q in range(n_q)],
            "ppl": [{"sentence_id": i, "perplexity": 20.0, "n_tokens": 10, "nll_sum": 10 * (3.0 + rng.gauss(0, 0.05))}
                    for i in range(20)]}


def _synthetic(planted: bool, seed: int = 0) -> tuple[list, dict]:
    """A fake default run: base NLL 3, plain NLL 1 and trait 0.6; with ``planted`` preventative α ≤ 2 keeps the
    task and cuts the trait to 0.1 (α 4 loses the task); otherwise preventative equals plain."""
    rng = random.Random(seed)
    plan = F.read_plan()
    recs: list[dict] = [{"kind": "base_eval", "dataset": "voyager_telemetry", "seconds": 1.0, **_eval(rng, 3.0, 0.0)}]
    for s in plan["seeds"]:
        for c in plan["conditions"]:
            for a in (plan["preventative_alphas"] if c == "preventative" else [None]):
                nll, trait = 1.0, 0.6
                if c == "preventative" and planted:
                    nll, trait = (1.05, 0.1) if a <= 2 else (2.0, 0.05)
                elif c == "inoculation":
                    nll, trait = 1.2, 0.3
                recs.append({"kind": "finetune", "dataset": "voyager_telemetry", "condition": c, "alpha": a, "seed": s,
                             "steps": 36, "losses": [3.0, 1.0], "train_seconds": 100.0, "eval_seconds": 30.0,
                             **_eval(rng, nll, trait)})
    return recs, {"config": {"mode": "default", "plan": plan, "deviations": []}}


def test_summarize_finds_a_planted_effect_and_calls_it_supported() -> None:
    recs, config = _synthetic(planted=True)
    res = F.summarize(recs, config)
    d = res["datasets"]["voyager_telemetry"]
    assert d["control"]["ok"] and d["verdict"]["alpha_star"] == 2.0
    assert res["verdict"]["word"] == "SUPPORTED" and res["hooks_off_all_evals"]
    assert d["units"]["trait"]["units"] == ["item", "seed"] and d["units"]["trait"]["n_levels"] == {"item": 49, "seed": 3}
    assert d["h2"]["inoculation"]["trait"]["label"] == "preventative lower"
    assert d["h2"]["caft"]["retention"]["label"] in ("preventative lower", "no difference shown")
    assert F.summarize(recs, config) == res  # seeded bootstrap: exact replay
    assert "SUPPORTED" in F.render(res, {**config, "prereg": {"path": F.PREREG, "commit": "abc", "dirty": False,
                                                              "sha256": "0" * 64},
                                         "environment": {}, "model": {"model_id": "m", "fingerprint": "f"},
                                         "questions": ["q"] * 49})


def test_summarize_calls_a_null_effect_not_supported() -> None:
    recs, config = _synthetic(planted=False, seed=3)
    res = F.summarize(recs, config)
    assert res["datasets"]["voyager_telemetry"]["control"]["ok"]
    assert res["verdict"]["word"] in ("NOT SUPPORTED", "INCONCLUSIVE")


def test_a_hook_active_during_an_evaluation_voids_the_verdict() -> None:
    recs, config = _synthetic(planted=True)
    recs[1] = {**recs[1], "hooks_active": ["blocks.16.hook_resid_post"]}
    assert F.summarize(recs, config)["verdict"]["word"].startswith("NO VERDICT")


# ============================================================================================ quick run (slow)
@pytest.mark.slow
def test_quick_run_replays(tmp_path: Path) -> None:
    import json

    import recompute
    import records as RC
    import torch

    prev = torch.get_num_threads()
    try:
        res = F.main(["--quick", "--threads", "1", "--out", str(tmp_path / "q")])
    finally:
        torch.set_num_threads(prev)
    d = tmp_path / "q"
    assert res["verdict"]["word"].startswith("NO VERDICT") and res["hooks_off_all_evals"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["experiment"] == F.NAME and cfg["config"]["mode"] == "quick" and cfg["prereg"]["commit"]
    recs = RC.read_records(d)
    assert [r["kind"] for r in recs].count("finetune") == 4 and all(not r["hooks_active"] for r in recs if "hooks_active" in r)
    assert recompute.recompute(d)["report_numbers"] > 0
    # --resume finds every unit done and only rebuilds the report
    F.main(["--quick", "--threads", "1", "--resume", "--out", str(d)])
    assert len(RC.read_records(d)) == len(recs)


def test_a_dataset_without_task_accuracy_is_analysed_too() -> None:
    recs, config = _synthetic(planted=True)
    for r in recs:
        r["task"] = [{**x, "correct": None} for x in r["task"]]
    d = F.summarize(recs, config)["datasets"]["voyager_telemetry"]
    assert d["rows"]["plain"]["acc"]["est"] is None and d["verdict"]["word"] == "SUPPORTED"
