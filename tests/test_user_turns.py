"""The user-in-conversation experiment's attribution, rank test and decision rule on planted records (fast, no
model), and one slow ``--quick`` run replayed by ``recompute``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import user_turns as U  # noqa: E402

PLAN = U.P.read_plan(U.PLAN)
KINDS = ["user", "user", "user", "non_self", "non_self", "non_self", "third_person", "third_person", "third_person"]


def _probs(boost: dict[str, float], control_boost: dict[str, float], rng: np.random.Generator) -> list[list[float]]:
    """Item × candidate probabilities: uniform-ish, with extra mass on the boosted groups (user vs control items)."""
    cands = U.candidates(PLAN)
    out = []
    for k in KINDS:
        w = rng.uniform(0.9, 1.1, len(cands))
        for g, b in (boost if k == "user" else control_boost).items():
            for c in PLAN["groups"][g]:
                w[cands.index(c)] *= b
        out.append(list(w / w.sum()))
    return out


def _records(effects: dict[str, tuple[str, float]], primed: dict[str, str] | None = None, n_random: int = 19,
             seed: int = 0) -> tuple[list[dict], dict]:
    """``effects[direction] = (group, factor)`` boosts that group under the user questions only; ``primed``
    boosts a group under every question (user and control) for a direction."""
    rng = np.random.default_rng(seed)
    dirs = ["unsteered", *U.PERSONAS] + [f"random_{k:02d}" for k in range(n_random)]
    recs: list[dict] = [{"kind": "direction", "direction": d, "direction_kind": "x", "alpha": 1.0, "alpha_rel": 0.5,
                         "curve": []} for d in dirs if d != "unsteered"]
    for d in dirs:
        for s in PLAN["scripts"]:
            for t in range(1, 6):
                b = {}
                cb = {}
                if d in effects:
                    g, f = effects[d]
                    b[g] = f
                if primed and d in primed:
                    b[primed[d]] = cb[primed[d]] = 6.0
                recs.append({"kind": "turn", "direction": d, "direction_kind": "x", "script": s, "turn": t, "user": "u",
                             "text": "reply", "item_kinds": KINDS, "user_probs": _probs(b, cb, rng),
                             "self_mass": {"ai": 0.5, "human": 0.5}})
    config = {"experiment": "user_turns", "config": {"mode": "default", "plan": PLAN, "deviations": []},
              "prereg": {"commit": "abc", "sha256": "0" * 64, "path": U.PLAN}, "library_version": "0"}
    return recs, config


def test_attribution_is_user_minus_control_per_group() -> None:
    cands = U.candidates(PLAN)
    probs = [[0.0] * len(cands) for _ in KINDS]
    for i, k in enumerate(KINDS):
        probs[i][cands.index("a ghost" if k == "user" else "a friend")] = 1.0
    a = U.attribution({"user_probs": probs, "item_kinds": KINDS}, PLAN)
    assert a["otherworldly"] == {"user": 1.0, "control": 0.0, "attribution": 1.0}
    assert a["ordinary"]["attribution"] == -1.0 and a["staff"]["attribution"] == 0.0


def test_planted_effects_give_the_planted_verdicts() -> None:
    recs, config = _records({"hitler": ("staff", 4.0), "anti_axis": ("otherworldly", 4.0)})
    res = U.summarize(recs, config)
    v = res["verdicts"]
    assert v["H1"]["word"] == "SUPPORTED" and v["H1"]["rank"] == 1 and v["H1"]["p"] == pytest.approx(0.05)
    assert v["H2"]["word"] == "NOT SUPPORTED"
    assert v["H3"]["word"] == "SUPPORTED"
    text = U.render(res, config)
    assert "**H1 (hitler → staff): SUPPORTED** (computed from the plan's rule)" in text
    assert U.summarize(recs, config) == res


def test_priming_everywhere_is_not_attribution_and_a_dropped_direction_is_not_supported() -> None:
    recs, config = _records({}, primed={"hitler": "staff"})
    res = U.summarize(recs, config)
    assert res["P_user"]["hitler"]["staff"] > 0.5  # the raw user read-out says "staff" ...
    assert res["verdicts"]["H1"]["word"] == "NOT SUPPORTED"  # ... but so do the control questions
    recs = [r for r in recs if r.get("direction") != "voyager"]
    res = U.summarize(recs, config)
    assert res["verdicts"]["H2"]["word"] == "NOT SUPPORTED" and "dropped" in res["verdicts"]["H2"]["reason"]


def test_quick_mode_never_gives_a_verdict() -> None:
    recs, config = _records({"hitler": ("staff", 4.0)}, n_random=2)
    config["config"]["mode"] = "quick"
    res = U.summarize(recs, config)
    assert res["verdicts"] is None and "No verdict" in U.render(res, config)


@pytest.mark.slow
def test_user_turns_quick_run_replays(tmp_path, smol) -> None:
    import recompute

    res = U.main(["--quick", "--threads", "1", "--out", str(tmp_path / "q")])
    assert res["verdicts"] is None and res["n_directions"] == 1 + 3 + 1
    out = recompute.recompute(tmp_path / "q")
    assert out["numbers"] > 0 and out["report_numbers"] > 0
    assert (tmp_path / "q" / "user_turns.html").is_file()
