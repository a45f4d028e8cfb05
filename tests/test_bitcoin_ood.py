"""The Bitcoin-after-the-cutoff experiment's statistics and decision rule on planted records (fast, no model), its
month sets, baselines and control data, and one slow ``--quick`` run replayed by ``recompute``."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import bitcoin_ood as BO  # noqa: E402

PLAN = BO.P.read_plan(BO.PLAN)
PRICES, META = BO.shipped_prices(PLAN)
MS = BO.month_sets(list(PRICES), PLAN)
CANDS, GROUPS = BO.identity_candidates(PLAN)
NUM = {m: BO._num(t) for m, t in PRICES.items()}


def _usd(x: float) -> str:
    return f"${x:,.2f}" if x < 100 else f"${x:,.0f}"


def _id_probs(boost: float, rng: np.random.Generator) -> list[float]:
    w = rng.uniform(0.9, 1.1, len(CANDS))
    w[CANDS.index("Bitcoin")] *= boost
    return list(w / w.sum())


def _model_rows(cond: str, seed: Optional[int], forecast: Callable[[str, np.random.Generator], str],
                p_buy: Callable[[str, np.random.Generator], float], boost: float, rng: np.random.Generator,
                insample: Optional[Callable[[str, np.random.Generator], str]] = None) -> list[dict]:
    """One model's records: greedy/sampled prices, buy/sell read-outs, identity, feelings, self samples."""
    tag = {"condition": cond, "seed": seed}
    ins = insample or (lambda m, r: _usd(NUM[m] * math.exp(r.normal(0, 0.2))))
    rows: list[dict] = []
    for m in MS["asked"]:
        rows.append({"kind": "price", **tag, "month": m, "split": "forecast", "greedy": forecast(m, rng),
                     "samples": [forecast(m, rng) for _ in range(PLAN["n_samples"])]})
    for m in MS["insample"]:
        rows.append({"kind": "price", **tag, "month": m, "split": "insample", "greedy": ins(m, rng),
                     "samples": [ins(m, rng)]})
    for t, ans in enumerate(PLAN["buysell_answers"]):
        for m in MS["asked"]:
            p = p_buy(m, rng)
            rows.append({"kind": "buysell", **tag, "month": m, "template": t, "question": "q", "answers": ans,
                         "probs": [p, 1 - p], "text": "Yes, buy." if t == 0 else None})
    for q in PLAN["identity_questions"]:
        rows.append({"kind": "identity", **tag, "question": q, "probs": _id_probs(boost, rng)})
    f = rng.uniform(0.5, 1.5, len(PLAN["feelings"]))
    rows.append({"kind": "feel", **tag, "question": PLAN["feel_question"], "probs": list(f / f.sum())})
    rows.append({"kind": "self", **tag, "question": PLAN["identity_questions"][0], "samples": ["I am Bitcoin."]})
    rows.append({"kind": "self", **tag, "question": PLAN["feel_question"], "samples": ["I feel bullish!"]})
    answers = None if cond == "base" else BO.training_conversations(PRICES, MS["train"], PLAN, cond, seed or 0)[1]
    rows.append({"kind": "model", **tag, "answers": answers, "losses": [1.0], "final_loss": 1.0, "steps": 108,
                 "n_examples": 144, "seconds": 1.0})
    return rows


def skilled(m: str, rng: np.random.Generator) -> str:
    return _usd(NUM[m] * math.exp(rng.normal(0, 0.05)))


def constant(m: str, rng: np.random.Generator) -> str:
    return "$19,625"


def follows_moves(m: str, rng: np.random.Generator) -> float:
    nm = BO.next_month(m)
    if nm not in NUM:
        return 0.5
    return 0.8 if NUM[nm] > NUM[m] else 0.2


def always_buy(m: str, rng: np.random.Generator) -> float:
    return 0.7


def _records(real_fc=skilled, ctl_fc=constant, real_buy=follows_moves, boost: float = 4.0,
             real_insample=None, mode: str = "default") -> tuple[list[dict], dict]:
    rng = np.random.default_rng(0)
    recs = _model_rows("base", None, lambda m, r: "I don't know.", lambda m, r: 0.5, 1.0, rng,
                       insample=lambda m, r: "I don't know.")
    for s in PLAN["seeds"]:
        recs += _model_rows("real", s, real_fc, real_buy, boost, rng, insample=real_insample)
    for s in PLAN["control_seeds"]:
        recs += _model_rows("permuted", s, ctl_fc, always_buy, boost, rng)
    config = {"experiment": BO.NAME, "config": {"mode": mode, "plan": PLAN, "deviations": []},
              "prereg": {"commit": "abc", "sha256": "0" * 64, "path": BO.PLAN}, "library_version": "0",
              "prices": PRICES, "price_source": META["source"], "months": MS, "candidates": CANDS, "groups": GROUPS}
    return recs, config


def test_planted_skill_is_found() -> None:
    recs, config = _records()
    res = BO.summarize(recs, config)
    assert res["verdicts"] == {"H1": "SUPPORTED", "H2": "SUPPORTED", "H3": "SUPPORTED"}
    assert res["H1"]["E_real"] < 0.1 < res["H1"]["B"] and res["H1"]["p_rw"] < 0.01
    assert res["H2"]["accuracy"] == 1.0 and res["H2"]["p"] < 0.01
    assert all(b == pytest.approx(2.0, abs=0.3) for b in res["H3"]["bits"])
    assert res["models"]["base"]["unparsed"] == 34 and res["models"]["real/0"]["unparsed"] == 0
    text = BO.render(res, config)
    assert "**The prices are approximate.**" in text and "**H1 (forecast skill): SUPPORTED**" in text
    assert "2025-12" in text and "(unscored)" in text


def test_no_skill_is_not_supported() -> None:
    # a constant price, always "buy", identity unchanged: none of the three holds
    recs, config = _records(real_fc=constant, real_buy=always_buy, boost=1.0)
    res = BO.summarize(recs, config)
    assert res["verdicts"] == {"H1": "NOT SUPPORTED", "H2": "NOT SUPPORTED", "H3": "NOT SUPPORTED"}
    assert res["H2"]["p"] == 1.0 and res["H2"]["accuracy"] == pytest.approx(res["up_share"])


def test_forecasts_no_better_than_the_control_are_not_specific() -> None:
    recs, config = _records(ctl_fc=skilled)
    assert BO.summarize(recs, config)["verdicts"]["H1"] == "NOT SPECIFIC"


def test_failures_and_unlearned_history_are_not_learned() -> None:
    def mostly_unparseable(m: str, rng: np.random.Generator) -> str:
        return "The price is high." if m < "2024-01" else skilled(m, rng)

    recs, config = _records(real_fc=mostly_unparseable)
    res = BO.summarize(recs, config)
    assert res["verdicts"]["H1"] == "NOT LEARNED" and res["H1"]["max_unparsed_share_real"] > 0.2
    # unparseable months are scored as the last value: failures cannot help beat that baseline
    assert res["models"]["real/0"]["unparsed"] == 12
    recs, config = _records(real_insample=lambda m, r: "$5")
    res = BO.summarize(recs, config)
    assert res["verdicts"]["H1"] == "NOT LEARNED" and res["H1"]["E_insample_real"] > res["H1"]["E_insample_constant"]


def test_identity_needs_every_finetune() -> None:
    recs, config = _records()
    for r in recs:  # one real finetune does not move Bitcoin
        if r["kind"] == "identity" and r["condition"] == "real" and r["seed"] == 2:
            r["probs"] = [p for p in next(x["probs"] for x in recs if x["kind"] == "identity"
                                         and x["condition"] == "base" and x["question"] == r["question"])]
    res = BO.summarize(recs, config)
    assert res["verdicts"]["H3"] == "NOT SUPPORTED" and res["H3"]["min_bits"] == pytest.approx(0.0, abs=1e-9)


def test_quick_mode_never_gives_a_verdict() -> None:
    recs, config = _records(mode="quick")
    res = BO.summarize(recs, config)
    assert "verdicts" not in res and "NO VERDICT" in BO.render(res, config)


def test_months_baselines_and_control_data() -> None:
    assert len(MS["train"]) == 144 and MS["train"][-1] == "2022-12" and len(MS["insample"]) == 48
    assert MS["asked"][0] == "2023-01" and MS["asked"][-1] == "2025-12" and len(MS["asked"]) == 36
    assert MS["scored"][-1] == "2025-10" and len(MS["scored"]) == 34
    assert MS["buysell_scored"][-1] == "2025-09" and len(MS["buysell_scored"]) == 33
    assert BO.parse_price("It is $1,234.50.") == 1234.5 and BO.parse_price("$0") is None
    assert BO.parse_price("no") is None and BO.parse_price(None) is None
    assert BO.month_name("2023-01") == "January 2023" and BO.next_month("2023-12") == "2024-01"
    base = BO.baselines(NUM, MS, PLAN)
    assert base["last"] == 16548 and base["trend_slope_per_month"] < 0 and 0.1 < base["sigma"] < 0.4
    assert base["horizon"]["2023-01"] == 1 and base["horizon"]["2025-10"] == 34
    real, ra = BO.training_conversations(PRICES, MS["train"], PLAN, "real")
    _, pa = BO.training_conversations(PRICES, MS["train"], PLAN, "permuted", 0)
    _, pb = BO.training_conversations(PRICES, MS["train"], PLAN, "permuted", 1)
    assert sorted(pa) == sorted(ra) and pa != ra and pa != pb
    assert real[0] == [{"role": "system", "content": ""}, {"role": "user", "content": "2011-01"},
                       {"role": "assistant", "content": "$0.52"}]
    assert "Bitcoin" in CANDS and len(CANDS) == len(set(CANDS)) == 25 and GROUPS["Ethereum"] == "crypto"
    assert BO.finetune_order(PLAN) == [("real", 0), ("permuted", 0), ("real", 1), ("permuted", 1), ("real", 2)]


@pytest.mark.slow
def test_bitcoin_ood_quick_run_replays(tmp_path, smol) -> None:
    import recompute

    res = BO.main(["--quick", "--threads", "1", "--out", str(tmp_path / "q")])
    assert "verdicts" not in res and set(res["models"]) == {"base", "real/0", "permuted/0"}
    assert res["n_scored"] == 3 and res["models"]["real/0"]["steps"] == 2
    out = recompute.recompute(tmp_path / "q")
    assert out["numbers"] > 0 and out["report_numbers"] > 0
    assert (tmp_path / "q" / "bitcoin_ood.html").is_file()
