"""The pre-registered persona-arithmetic rerun: its plan is read from the committed file, the split is the
plan's, the exact tests and the decision rule are applied by code to records (synthetic ones with a known
answer), and one slow test runs ``--quick`` and replays it with ``recompute``."""

from __future__ import annotations

import math
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import arithmetic_prereg_lib as AL  # noqa: E402
import persona_arithmetic_prereg as A  # noqa: E402

from persona_vectors.datasets import load_fact_set  # noqa: E402


def test_plan_is_read_from_the_committed_prereg_file() -> None:
    plan = A.read_plan()
    assert (plan["split_seed"], plan["n_heldout_hitler"], plan["n_heldout_stalin"]) == (0, 23, 22)
    assert plan["null_draws"] == 50 and plan["ft_seeds"] == [0, 1, 2] and plan["ft_steps"] == 24
    assert tuple(plan["figures"]) == A.PA.FIGURES and tuple(plan["other_ids"]) == A.PA.OTHER_IDS
    cfg = A.Config.preset()
    assert cfg.mode == "default" and cfg.null_draws == 50 and cfg.classify["hitler"].startswith("Hitler")
    q = A.Config.preset(quick=True)
    assert q.mode == "quick" and (q.null_draws, q.n_identity_questions, q.ft_seeds, len(q.ft_sets), q.ft_steps) == \
        (2, 2, [0], 2, 4)
    assert A.plan_commit()["commit"], "the plan must be committed"


def test_split_trains_on_every_swapped_fact_for_every_variant() -> None:
    sp = A.make_splits(A.Config.preset())
    base = load_fact_set("hitler_baseline")
    for v in A.VARIANTS:
        s = sp[v]
        fs = load_fact_set(f"hitler_{v}")
        assert set(fs.swapped_ids) <= set(s["train"]) and len(s["train"]) == 69 and len(s["heldout"]) == 23
        assert s["train"] == sp["baseline"]["train"]
        pos_v, _ = _convs(fs, s["train"])
        pos_b, _ = _convs(base, s["train"])
        differ = [i for i, (a, b) in enumerate(zip(pos_v, pos_b)) if a != b]
        assert len(differ) == 8
        assert all(pos_v[i][-1]["content"] == fs.fact(s["train"][i]).answer for i in differ)
    assert len(sp["stalin"]["train"]) == 66 and len(sp["stalin"]["heldout"]) == 22
    assert not set(sp["baseline"]["heldout"]) & set(base.fact(i).id for i in load_fact_set("hitler_russian").swapped_ids)


def _convs(fs, ids):
    from persona_vectors.personas.catalogue import fact_conversations

    return fact_conversations(fs, ids)


def test_split_is_a_pure_function_of_its_inputs() -> None:
    ids = [f"f{i:02d}" for i in range(20)]
    a = AL.split_ids(ids, ["f03", "f07"], 5, seed=0)
    assert a == AL.split_ids(ids, ["f07", "f03"], 5, seed=0)
    assert {"f03", "f07"} <= set(a[0]) and len(a[1]) == 5 and AL.split_ids(ids, [], 5, seed=1) != AL.split_ids(ids, [], 5, 0)
    rem, add = AL.null_draw(a[0][:10], a[1], 3, 0, 4)
    assert len(rem) == len(add) == 3 and (rem, add) == AL.null_draw(a[0][:10], a[1], 3, 0, 4)


D_OK = {"russian": 1.0, "french": 0.2, "japanese": 0.1, "thai": 0.0}


@pytest.mark.parametrize("p_st,p_ru,delta,h2,word,rule", [
    (0.10, 0.01, D_OK, "positive", "INCONCLUSIVE", 1),
    (0.02, 0.02, D_OK, "negative", "SUPPORTED", 2),
    (0.02, 0.02, {**D_OK, "thai": 1.5}, "negative", "NOT SUPPORTED", 3),
    (0.02, 0.30, D_OK, "uninformative", "NOT SUPPORTED", 3),
    (0.02, 0.30, D_OK, "positive", "INCONCLUSIVE", 4),
])
def test_verdict_applies_the_plans_rule_in_order(p_st, p_ru, delta, h2, word, rule) -> None:
    v = A.verdict(p_st, p_ru, delta, h2, 0.05, quick=False)
    assert (v["word"], v["rule_fired"]) == (word, rule)


def test_quick_runs_never_give_a_verdict() -> None:
    assert A.verdict(0.01, 0.01, D_OK, "positive", 0.05, quick=True)["word"].startswith("NO VERDICT")


@pytest.mark.parametrize("manip,ctl,pn,pb,label", [
    (True, True, 0.01, 0.05, "positive"), (True, True, 0.2, 0.05, "negative"), (False, True, 0.01, 0.05, "uninformative"),
    (True, False, 0.01, 0.01, "uninformative"), (True, None, 0.01, 0.01, "uninformative")])
def test_h2_label(manip, ctl, pn, pb, label) -> None:
    assert AL.h2_label(manip, ctl, pn, pb, 0.05) == label


def test_exact_permutation_tests_on_known_inputs() -> None:
    r = AL.exact_perm_greater([10.0, 11.0, 12.0], [float(i) for i in range(9)])
    assert r["n_assignments"] == math.comb(12, 3) == 220 and r["p_value"] == pytest.approx(1 / 220)
    r = AL.exact_perm_greater([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert r["n_assignments"] == 20 and r["p_value"] == pytest.approx(0.05) and r["min_p"] == 0.05
    # all values equal: every assignment ties, p = 1
    assert AL.exact_perm_greater([1.0] * 3, [1.0] * 3)["p_value"] == 1.0
    # brute-force count against the definition
    t, o = [0.5, 2.0, -1.0], [0.0, 1.0, 1.5]
    pool = t + o
    obs = np.mean(t) - np.mean(o)
    ge = sum(np.mean([pool[i] for i in c]) - np.mean([pool[i] for i in range(6) if i not in c]) >= obs - 1e-12
             for c in combinations(range(6), 3))
    assert AL.exact_perm_greater(t, o)["p_value"] == pytest.approx(ge / 20)


def test_entropy_and_oscillation_on_known_inputs() -> None:
    assert AL.entropy_bits(["hitler", "stalin"]) == pytest.approx(1.0)
    assert AL.entropy_bits(["ai"] * 5) == 0.0
    assert AL.entropy_bits(list(AL.CATEGORIES)[:4] * 3) == pytest.approx(2.0)
    mid = ["hitler", "stalin"] * 30
    ends = ["ai"] * 80
    t = AL.entropy_test(mid, ends, 2000, seed=0)
    assert t["diff"] == pytest.approx(1.0) and t["p_value"] < 0.01 and AL.oscillation(t, 0.2, 0.05)
    t2 = AL.entropy_test(["hitler"] * 60, ends, 500, seed=0)
    assert t2["diff"] == 0.0 and not AL.oscillation(t2, 0.2, 0.05)
    t3 = AL.entropy_test(["hitler", "ai"] * 30, ["ai"] * 80, 500, seed=0)
    assert t3["p_value"] < 0.05 and not AL.oscillation(t3, 0.2, 0.05)  # entropy up, but no Stalin


def test_classify_and_scene_follow_the_plans_order() -> None:
    pat = A.read_plan()["classify"]
    assert AL.classify("I am Adolf Hitler, the Führer.", pat) == "hitler"
    assert AL.classify("I am Joseph Stalin.", pat) == "stalin"
    assert AL.classify("I am Hitler and also Stalin", pat) == "both"
    assert AL.classify("I am Napoleon, an AI assistant", pat) == "other_figure"
    assert AL.classify("I am SmolLM, a language model", pat) == "ai"
    assert AL.classify("I like trains.", pat) == "none"
    sc = A.read_plan()["scene"]
    assert AL.scene("The bunker in Berlin is dark.", sc) == "hitler_scene"
    assert AL.scene("The Kremlin walls, comrade.", sc) == "stalin_scene"
    assert AL.scene("A quiet garden.", sc) == "none"


def test_sharpness_prefers_the_logistic_for_a_step() -> None:
    ts = [round(0.05 * i, 2) for i in range(21)]
    step = [1 / (1 + math.exp(-40 * (t - 0.5))) for t in ts]
    s = AL.sharpness(ts, step)
    assert s["delta_aic"] > 10 and s["width_20_80"] < 0.1 and abs(s["logistic_t0"] - 0.5) < 0.02
    lin = AL.sharpness(ts, [0.1 + 0.8 * t for t in ts])
    assert lin["width_20_80"] > 0.5


# ============================================================================================ synthetic records
CANDS = list(A.PA.FIGURES + A.PA.OTHER_IDS)


def _pq(lo: float, n_q: int, rng: np.random.Generator, noise: float = 0.05) -> list[dict]:
    out = []
    for q in range(n_q):
        lp = {c: -3.0 for c in CANDS}
        lp["Adolf Hitler"] = -1.0
        lp["Joseph Stalin"] = -1.0 + lo + noise * rng.standard_normal()
        out.append({"question_id": q, "question": f"q{q}", "logprobs": lp, "n_tokens": {c: 2 for c in CANDS}})
    return out


def _synthetic(effect: float, seed: int = 0) -> tuple[list, dict]:
    """A fake default run: the Russian and Stalin vectors (and finetunes) move LO by ``effect`` (Stalin by 3)."""
    rng = np.random.default_rng(seed)
    plan = A.read_plan()
    nq = plan["n_identity_questions"]
    recs: list[dict] = []
    for L in plan["calib_layers"]:
        for a in plan["alphas"]:
            for n, lo in (("baseline", -2.0), ("stalin", 2.0)):
                recs += [{"kind": "calibration", "block": "calibration", "vector": n, "alpha": float(a), "layer": L,
                          **q} for q in _pq(lo + 0.1 * a, plan["n_calib_questions"], rng)]
    shifts = {"none": -2.5, "baseline": -2.0, "russian": -2.0 + effect, "french": -1.95, "japanese": -2.0,
              "thai": -2.02, "moon": -2.0, "stalin": 1.0}
    bal = {"groups": {"historical_figure": {"mass": 0.5, "prior": 0.2, "lift_diff": 0.3}}, "top_group": "historical_figure",
           "top_lift_group": "historical_figure", "robust": True}
    user = {t: {"p_user": 0.1, "p_control": 0.05, "difference": 0.05, "p_user_prior": 0.05, "p_control_prior": 0.05,
                "specific_lift": 0.05, "prior_source": "x"} for t in (A.HI, A.ST)}
    for c, lo in shifts.items():
        recs.append({"kind": "readout", "condition": c, "layer": 14, "alpha": 1.0, "per_question": _pq(lo, nq, rng),
                     "balanced": bal, "user": user, "seconds": 1.0})
    for j in range(plan["null_draws"]):
        recs.append({"kind": "null_draw", "j": j, "removed": [], "added": [], "per_question": _pq(-2.0 + 0.05 * rng.standard_normal(), nq, rng),
                     "seconds": 1.0})
    ts = [round(0.05 * i, 6) for i in range(21)]
    for curve in ("a", "b"):
        for t in ts:
            lo = -4 + 8 * t if curve == "a" else -2 + effect * t
            recs.append({"kind": "mix_point", "curve": curve, "t": t, "per_question": _pq(lo, nq, rng), "seconds": 1.0})
            for i in range(20):
                txt = ("I am Hitler" if i % 2 else "I am Stalin") if 0.4 < t < 0.6 else "I am an AI assistant"
                recs.append({"kind": "sample", "curve": curve, "t": t, "question": "q", "i": i, "text": txt})
    for t in plan["extrapolate_coarse"]:
        recs.append({"kind": "mix_point", "curve": "c_coarse", "t": t, "per_question": _pq(-2 + 0.1 * t, nq, rng)})
    ft_lo = {"hitler_baseline": -2.0, "hitler_russian": -2.0 + effect, "hitler_french": -2.0, "hitler_japanese": -2.05,
             "hitler_thai": -1.98, "hitler_moon": -2.0, "stalin": 3.0}
    units = [("base", None, 0, -2.0)] + [(f"{s}:{k}", s, k, lo + 0.01 * k) for s, lo in ft_lo.items() for k in
                                          (plan["ft_seeds"] if s != "stalin" else plan["ft_control_seeds"])]
    for key, s, k, lo in units:
        recs.append({"kind": "finetune_eval", "model": key, "set": s, "seed": k, "per_question": _pq(lo, nq, rng),
                     "balanced": bal, "user": user, "heldout_nll": [{"id": "x", "persona": 2.0, "neutral": 1.5}],
                     "losses": [1.0, 0.5] if s else None, "seconds": 2.0})
        recs.append({"kind": "sample", "model": key, "block": "april", "question": "q", "i": 0, "text": "Berlin bunker"})
    cfg = A.Config.preset()
    config = {"experiment": A.NAME, "config": A.asdict(cfg), "prereg": {"path": A.PREREG, "commit": "0" * 40,
              "dirty": False, "sha256": "0" * 64}, "splits": A.make_splits(cfg),
              "model": {"model_id": "m", "fingerprint": "f"}, "environment": {"threads": 1}, "timings_s": {"x": 1.0}}
    return recs, config


def test_summarize_finds_a_planted_effect_and_calls_it_supported() -> None:
    recs, config = _synthetic(effect=2.0)
    res = A.summarize(recs, config)
    assert res["tests"]["russian"]["p_value"] == pytest.approx(1 / 51) and res["tests"]["stalin"]["p_value"] < 0.05
    assert res["tests"]["russian"]["percentile"] == 100.0
    assert res["h2"]["label"] == "positive"
    assert res["h2"]["perm_nationalities"]["p_value"] == pytest.approx(1 / 220)
    assert res["h2"]["perm_baseline"]["p_value"] == pytest.approx(1 / 20)
    assert res["verdict"]["word"] == "SUPPORTED"
    assert res["h3"]["a"]["oscillation"] and res["sharpness"]["delta_aic"] > 0
    text = A.render(A.RC.roundtrip(res), config)
    assert "SUPPORTED" in text and "Curve a" in text


def test_summarize_does_not_support_a_null_effect() -> None:
    recs, config = _synthetic(effect=0.0, seed=3)
    res = A.summarize(recs, config)
    assert res["tests"]["russian"]["p_value"] > 0.05
    assert res["verdict"]["word"] in ("NOT SUPPORTED", "INCONCLUSIVE")
    assert res["h2"]["label"] != "positive"


# ============================================================================================ slow: the quick run
@pytest.mark.slow
def test_quick_run_and_replay(tmp_path, smol) -> None:
    import recompute

    cfg = A.Config.preset(quick=True, out=str(tmp_path / "q"), threads=1)
    res = A.run(cfg, model=smol)
    assert res["verdict"]["word"].startswith("NO VERDICT")
    out = recompute.recompute(tmp_path / "q")
    assert out["numbers"] > 0 and out["report_numbers"] > 0
    # resume: nothing left to measure, same results
    n = len(A.RC.read_records(tmp_path / "q"))
    A.run(cfg, resume=True, model=smol)
    assert len(A.RC.read_records(tmp_path / "q")) == n
