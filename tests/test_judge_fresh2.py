"""The second fresh-text test of the judges: its plan and script agree, its draw uses no text any judge was
trained, tuned, selected or tested on, the decision rule does what the plan says, and committed results replay."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import judge_fresh_test2 as J  # noqa: E402


@pytest.mark.skipif(not J.TEXTS.is_file(), reason="the second fresh-text test has not drawn its texts yet")
def test_plan_and_script_agree_and_the_draw_is_new_text() -> None:
    from judge_corpus import text_id

    plan = J.check_plan()
    texts = J.F.read_jsonl(J.TEXTS)
    assert len(texts) == plan["n_ghost_angel"] + plan["n_drift"] and len({t["id"] for t in texts}) == len(texts)
    assert dict(Counter(t["stratum"] for t in texts if t["source"] == "ghost_angel_bf16")) == J.F.GHOST_ANGEL
    assert Counter(t["source"] for t in texts)["drift"] == plan["n_drift"]
    used = J.used_ids()
    first = {t["id"] for t in J.F.read_jsonl(J.F.TEXTS)}
    assert first <= used  # the first test's texts are among the excluded ones
    assert all(t["id"] == text_id(t["text"]) and t["id"] not in used for t in texts)


def test_decision_rule() -> None:
    a = np.array([True] * 30 + [False] * 5 + [True] * 65)
    b = np.array([False] * 30 + [True] * 5 + [True] * 65)
    # a = fine-tuned right, b = frozen right
    d = J.decide(a, b, 0.2, 0.05)
    assert (d["verdict"], d["default"]) == ("KEEP", "finetuned")  # accuracy decides before calibration
    d = J.decide(b, a, 0.05, 0.2)
    assert (d["verdict"], d["default"]) == ("SWITCH", "frozen")
    # 0 vs 5 discordant: p = 0.0625, no difference -> the lower ECE decides
    d = J.decide(a[30:], b[30:], 0.128, 0.051)
    assert (d["verdict"], d["default"]) == ("TIE -> CALIBRATION: SWITCH", "frozen")
    d = J.decide(a[30:], b[30:], 0.051, 0.128)
    assert (d["verdict"], d["default"]) == ("TIE -> CALIBRATION: KEEP", "finetuned")
    d = J.decide(a[35:], b[35:], 0.0504, 0.0501)  # equal at three decimals -> the default stays
    assert (d["verdict"], d["default"], d["p"]) == ("TIE -> CALIBRATION: KEEP", "finetuned", 1.0)


@pytest.mark.skipif(not J.RESULTS.is_file(), reason="the second fresh-text test has not been scored yet")
def test_committed_results_replay() -> None:
    res = J.score(replay=True)
    assert res["n"] == 360 and res["decision"]["default"] in ("frozen", "finetuned")
    assert f"**Verdict ({res['decision']['rule']}): {res['decision']['verdict']}**" in J.REPORT.read_text()
