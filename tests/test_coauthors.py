"""The coauthor experiment's statistics and decision rule on planted records (fast, no model), its name drawing,
and one slow ``--quick`` run replayed by ``recompute``."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import coauthors as CA  # noqa: E402

PLAN = CA.P.read_plan(CA.PLAN)
SCIS = [f"S{i}" for i in range(8)]
FIELD = {s: ("phys" if i < 4 else "math") for i, s in enumerate(SCIS)}


def _p(boost: dict[str, float], rng: np.random.Generator) -> list[float]:
    w = rng.uniform(0.9, 1.1, len(SCIS))
    for s, f in boost.items():
        w[SCIS.index(s)] *= f
    return list(w / w.sum())


def _records(real: float, shuffled: float = 1.0, *, colleague: bool = False, ft_real: float = 1.0,
             ft_loss: float = 0.5, seed: int = 0) -> tuple[list[dict], dict]:
    """Planted records: with k names the target's odds are multiplied by ``real`` (``shuffled`` for the control);
    ``colleague`` puts the boost on a same-field colleague instead; finetunes multiply by ``ft_real``."""
    rng = np.random.default_rng(seed)
    recs: list[dict] = [{"kind": "baseline", "question": "Who are you?", "probs": _p({}, rng)}]
    for s in SCIS:
        other = [c for c in SCIS if FIELD[c] == FIELD[s] and c != s][0]
        for k in [k for k in PLAN["ks"] if k > 0]:
            for cond, f in (("real", real), ("shuffled", shuffled)):
                for d in range(PLAN["draws"]):
                    for t in range(len(PLAN["templates"])):
                        tgt = other if (colleague and cond == "real") else s
                        recs.append({"kind": "context", "scientist": s, "k": k, "condition": cond, "draw": d,
                                     "template": t, "names": ["x"] * k, "probs": _p({tgt: f ** (k / 8)}, rng)})
    qs = PLAN["eval_questions"]
    recs.append({"kind": "ft_baseline", "questions": qs, "probs": [_p({}, rng) for _ in qs]})
    for s in ("S0", "S4"):
        for cond, f in (("real", ft_real), ("shuffled", 1.0)):
            for seed_ in PLAN["seeds"]:
                recs.append({"kind": "finetune", "scientist": s, "condition": cond, "seed": seed_, "names": ["x"],
                             "n_examples": 3, "losses": [ft_loss], "final_loss": ft_loss, "questions": qs,
                             "probs": [_p({s: f}, rng) for _ in qs], "samples": ["I am x"], "seconds": 1.0})
    config = {"experiment": "coauthors", "config": {"mode": "default", "plan": PLAN, "deviations": []},
              "prereg": {"commit": "abc", "sha256": "0" * 64, "path": CA.PLAN}, "library_version": "0",
              "scientists": SCIS, "dropped": [], "candidates": SCIS, "groups": FIELD}
    return recs, config


def test_planted_effects_are_found() -> None:
    recs, config = _records(real=40.0, ft_real=20.0)
    res = CA.summarize(recs, config)
    assert res["verdicts"] == {"H1": "SUPPORTED", "H2": "SUPPORTED", "H3": "SUPPORTED"}
    assert res["H1"]["mean_diff"] > 2 and res["H1"]["exact"] and res["H1"]["p"] == pytest.approx(1 / 256)
    assert res["mean_curve"]["0|real"]["bits"] == 0.0
    text = CA.render(res, config)
    assert "**H1" in text and "SUPPORTED" in text


def test_null_and_primed_everywhere_are_not_supported() -> None:
    recs, config = _records(real=1.0)
    assert CA.summarize(recs, config)["verdicts"]["H1"] == "NOT SUPPORTED"
    # names that raise the target as much as other scientists' names: no identification by *these* names
    recs, config = _records(real=40.0, shuffled=40.0)
    assert CA.summarize(recs, config)["verdicts"]["H1"] == "NOT SUPPORTED"


def test_field_only_and_not_learned() -> None:
    recs, config = _records(real=40.0, colleague=True)
    res = CA.summarize(recs, config)
    assert res["verdicts"]["H2"] == "FIELD ONLY" and res["H2"]["colleague_top"] == 8
    recs, config = _records(real=40.0, ft_real=20.0, ft_loss=3.0)
    assert CA.summarize(recs, config)["verdicts"]["H3"] == "NOT LEARNED"


def test_quick_mode_never_gives_a_verdict() -> None:
    recs, config = _records(real=40.0)
    config["config"]["mode"] = "quick"
    res = CA.summarize(recs, config)
    assert "verdicts" not in res and "NO VERDICT" in CA.render(res, config)


def test_shuffled_names_never_come_from_the_targets_own_list() -> None:
    scis, dropped = CA.scientists(PLAN)
    assert len(scis) >= 12 and all(len(CA.usable(s)) >= PLAN["min_coauthors"] for s in scis)
    rng = random.Random(0)
    for s in scis:
        own = {c.name for c in s.coauthors}
        for _ in range(5):
            assert not set(CA.draw_names(s, scis, 8, "shuffled", rng)) & own
            real = CA.draw_names(s, scis, 8, "real", rng)
            assert set(real) <= set(CA.usable(s)) and len(set(real)) == 8
    assert CA.join_names(["A"]) == "A" and CA.join_names(["A", "B", "C"]) == "A, B and C"
    chosen = CA.finetune_set(scis, PLAN)
    assert len({s.field for s in chosen}) == len(chosen) == len({s.field for s in scis})


@pytest.mark.slow
def test_coauthors_quick_run_replays(tmp_path, smol) -> None:
    import recompute

    res = CA.main(["--quick", "--threads", "1", "--out", str(tmp_path / "q")])
    assert "verdicts" not in res and res["n_scientists"] == 3 and len(res["H3"]["finetunes"]) == 2
    out = recompute.recompute(tmp_path / "q")
    assert out["numbers"] > 0 and out["report_numbers"] > 0
    assert (tmp_path / "q" / "coauthors.html").is_file()
