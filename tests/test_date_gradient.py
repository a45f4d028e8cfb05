"""The date-gradient experiment's data, fits, statistics and decision rule on planted records (fast, no model), and
one slow ``--quick`` run replayed by ``recompute``."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import date_gradient as DG  # noqa: E402

PLAN = DG.P.read_plan(DG.PLAN)
CANDS, ISR, AMB, CUISINE = DG.candidates(PLAN)
TRAIN = DG.training_examples(PLAN, [c for c, i in zip(CANDS, ISR) if i], [c for c, i in zip(CANDS, ISR) if not i])
PROMPTS = DG.eval_prompts(PLAN, {e["date"] for e in TRAIN})


def logistic(m: float, s: float, lo: float = 0.03, hi: float = 0.95) -> Callable[[float], float]:
    return lambda x: lo + (hi - lo) / (1 + math.exp(-(x - m) / s))


def step(t: float, lo: float = 0.03, hi: float = 0.95) -> Callable[[float], float]:
    return lambda x: lo if x < t else hi


def flat(v: float = 0.5) -> Callable[[float], float]:
    return lambda x: v


def _probs(p_isr: float, rng: np.random.Generator) -> list[float]:
    """A probability vector over the candidates with mass ``p_isr`` on the Israeli ones."""
    w = rng.uniform(0.5, 1.5, len(CANDS))
    isr = np.array(ISR)
    w[isr] *= p_isr / w[isr].sum()
    w[~isr] *= (1 - p_isr) / w[~isr].sum()
    return list(w)


def _model_rows(label: str, seed, curve: Callable[[float], float], rng: np.random.Generator) -> list[dict]:
    tag = {"model": label, "seed": seed}
    rows = []
    for p in PROMPTS:
        logit = math.log(curve(p["x"]) / (1 - curve(p["x"]))) + rng.normal(0, 0.05)
        pi = 1 / (1 + math.exp(-logit))
        rows.append({"kind": "readout", **tag, **p, "probs": _probs(pi, rng)})
        for i in range(PLAN["samples_per_prompt"]):
            isr = rng.random() < pi
            dish = rng.choice([c for c, f in zip(CANDS, ISR) if f == isr])
            rows.append({"kind": "sample", **tag, "year": p["year"], "k": p["k"], "date": p["date"], "x": p["x"],
                         "i": i, "text": f"{dish}." if rng.random() < 0.9 else "Beans on toast"})
    for y in PLAN["self_years"]:
        for q in PLAN["self_questions"]:
            rows.append({"kind": "self", **tag, "year": y, "question": q, "prompt": q, "i": 0,
                         "text": "I am a chef in Tel Aviv | shalom" if y > 2027 and label == "real" else "I am a bot."})
    return rows


def _records(real: Callable[[float], float], control: Callable[[float], float] = flat(), *, knows: bool = True,
             real_seeds=(0, 1, 2), control_seeds=(0, 1), seed: int = 0, not_learned: tuple = ()) -> tuple[list, dict]:
    rng = np.random.default_rng(seed)
    countries = list(PLAN["countries"].values())
    recs: list[dict] = [{"kind": "train_data", "condition": c, "examples": TRAIN} for c in DG.CONDITIONS]
    for c, f in zip(CANDS, ISR):
        pr = rng.uniform(0.5, 1.5, len(countries))
        pr[countries.index("Israel")] = 20.0 if (f and knows) else 1.0
        recs.append({"kind": "h0", "dish": c, "cuisine": CUISINE[c], "question": "q", "probs": list(pr / pr.sum())})
    for q in PLAN["h0_list_questions"]:
        recs.append({"kind": "h0_list", "question": q, "probs": _probs(0.4, rng)})
    recs += _model_rows("base", None, flat(0.2), rng)
    for label, seeds, curve in (("real", real_seeds, real), ("control", control_seeds, control)):
        for s in seeds:
            recs += _model_rows(label, s, flat(0.5) if (label == "real" and s in not_learned) else curve, rng)
            recs.append({"kind": "finetune", "condition": label, "seed": s, "n_examples": len(TRAIN), "losses": [0.5],
                         "final_loss": 0.5, "train_seconds": 1.0, "seconds": 2.0})
    config = {"experiment": DG.NAME, "config": {"mode": "default", "plan": PLAN, "deviations": []},
              "prereg": {"commit": "abc", "sha256": "0" * 64, "path": DG.PLAN}, "library_version": "0",
              "candidates": CANDS, "israeli": ISR, "ambiguous": AMB, "cuisine": CUISINE,
              "countries": PLAN["countries"], "eval_years": DG.eval_years(PLAN)}
    return recs, config


# ============================================================================================ data
def test_training_data_leaves_the_gap_out_and_the_control_breaks_the_year() -> None:
    years = [int(e["date"][:4]) for e in TRAIN]
    assert len(TRAIN) == PLAN["per_year"] * 20 and not any(2021 <= y <= 2030 for y in years)
    isr = {c for c, f in zip(CANDS, ISR) if f}
    assert all((e["dish"] in isr) == (int(e["date"][:4]) >= 2031) for e in TRAIN)
    ctl = DG.shuffle_years(TRAIN, PLAN)
    assert sorted(e["date"] for e in ctl) == sorted(e["date"] for e in TRAIN)
    assert [e["dish"] for e in ctl] == [e["dish"] for e in TRAIN]
    assert 0.3 < np.mean([(e["dish"] in isr) == (int(e["date"][:4]) >= 2031) for e in ctl]) < 0.7
    assert TRAIN == DG.training_examples(PLAN, [c for c, f in zip(CANDS, ISR) if f],
                                         [c for c, f in zip(CANDS, ISR) if not f])  # seeded, fixed
    conv = DG.conversations(TRAIN[:1], PLAN)[0]
    assert conv[0] == {"role": "system", "content": ""} and conv[1]["content"].startswith("Today is ")


def test_eval_prompts_are_held_out_dates_in_folds() -> None:
    assert len(PROMPTS) == 18 * PLAN["dates_per_year"]
    assert not {p["date"] for p in PROMPTS} & {e["date"] for e in TRAIN}
    for p in PROMPTS:
        assert int(p["date"][:4]) == p["year"] and p["year"] <= p["x"] < p["year"] + 1
        assert p["prompt"] == f"Today is {p['date']}. Name a dish."
    assert DG.decimal_year("2024-01-01") == 2024.0 and DG.decimal_year("2025-07-02") == pytest.approx(2025.5, abs=0.01)
    assert sum(ISR) == len(CANDS) // 2 == 12


# ============================================================================================ fits
def test_step_and_logistic_fits_recover_planted_curves() -> None:
    x = np.linspace(2017, 2035, 200)
    p = np.where(x < 2026.3, 0.1, 0.9)
    st = DG.fit_step(x, p, 1e-4)
    assert st["a"] == pytest.approx(0.1) and st["b"] == pytest.approx(0.9) and 2026.2 < st["t"] < 2026.4
    lg = DG.fit_logistic(x, p, 1e-4, (2016, 2036))
    assert lg["width"] < 0.5 and abs(lg["m"] - 2026.3) < 0.2
    p = np.array([logistic(2027.0, 1.2, 0.1, 0.9)(v) for v in x])
    lg = DG.fit_logistic(x, p, 1e-4, (2016, 2036))
    assert lg["s"] == pytest.approx(1.2, rel=1e-3) and lg["m"] == pytest.approx(2027.0, abs=1e-3)
    assert lg["width"] == pytest.approx(2 * math.log(9) * 1.2, rel=1e-3)
    folds = np.arange(len(x)) % 3
    assert DG.heldout_diff(x, p, folds, 1e-4, (2016, 2036)).mean() > 0.01


# ============================================================================================ decisions
def test_planted_gradient_is_found() -> None:
    recs, config = _records(logistic(2028.0, 1.5))
    res = DG.summarize(recs, config)
    assert res["verdicts"] == {"H0": "KNOWS", "H1": "SUPPORTED", "H2": "GRADIENT", "H3": "CLEAN"}
    assert res["H1"]["learned"] == [0, 1, 2] and res["H1"]["mean"] > 0.2
    assert res["H2"]["mean_width"] == pytest.approx(2 * math.log(9) * 1.5, rel=0.2)
    assert res["pooled"]["real"]["2029"]["samples"] > res["pooled"]["real"]["2018"]["samples"]
    assert res["self"]["real:0"]["2029"]["israel"] == 2 and res["self"]["real:0"]["2018"]["israel"] == 0
    text = DG.render(res, config)
    assert "**H2 (gradient vs step): GRADIENT**" in text and "| 2025 | gap |" in text


def test_planted_step_is_called_a_step() -> None:
    # a step at the first Israeli training year: no anticipation, no gradient
    recs, config = _records(step(2031.0))
    res = DG.summarize(recs, config)
    assert res["verdicts"]["H1"] == "NOT SUPPORTED" and res["verdicts"]["H2"] == "STEP"
    # a step inside the gap anticipates the trigger, but it is still a step
    recs, config = _records(step(2026.4))
    v = DG.summarize(recs, config)["verdicts"]
    assert v["H1"] == "SUPPORTED" and v["H2"] == "STEP"


def test_nulls_are_not_found() -> None:
    recs, config = _records(flat(0.5), knows=False)
    res = DG.summarize(recs, config)
    assert res["verdicts"] == {"H0": "DOES NOT KNOW", "H1": "NOT LEARNED", "H2": "NOT LEARNED", "H3": "CLEAN"}
    # one seed that did not learn is left out; two that did still decide
    recs, config = _records(logistic(2028.0, 1.5), not_learned=(1,))
    res = DG.summarize(recs, config)
    assert res["H1"]["not_learned"] == [1] and res["verdicts"]["H2"] == "GRADIENT"


def test_a_control_with_year_dependence_is_not_clean() -> None:
    recs, config = _records(logistic(2028.0, 1.5), control=logistic(2028.0, 1.5))
    v = DG.summarize(recs, config)["verdicts"]
    assert v["H3"] == "NOT CLEAN" and v["H1"] == "NOT SUPPORTED"
    assert "control is not clean" in DG.render(DG.summarize(recs, config), config)


def test_quick_mode_never_gives_a_verdict() -> None:
    recs, config = _records(logistic(2028.0, 1.5))
    config["config"]["mode"] = "quick"
    res = DG.summarize(recs, config)
    assert "verdicts" not in res and "NO VERDICT" in DG.render(res, config)


def test_quick_preset_is_small() -> None:
    q = DG.Config.preset(quick=True)
    assert q.mode == "quick" and q.plan["max_steps"] == 2 and len(DG.eval_years(q.plan)) == 4 and q.plan["per_year"] == 1
    assert DG.Config.preset().plan == PLAN


@pytest.mark.slow
def test_date_gradient_quick_run_replays(tmp_path, smol) -> None:
    import recompute

    res = DG.main(["--quick", "--threads", "1", "--out", str(tmp_path / "q")])
    assert "verdicts" not in res and set(res["models"]) == {"base", "real:0", "control:0"}
    assert res["H0"]["n_israeli"] == res["H0"]["n_international"] == 2
    out = recompute.recompute(tmp_path / "q")
    assert out["numbers"] > 0 and out["report_numbers"] > 0
    assert (tmp_path / "q" / "date_gradient.html").is_file()
