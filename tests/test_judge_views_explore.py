"""The judge-views exploration: its committed report is what its committed results give, and the CV helpers split
as the module says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import judge_views_explore as E  # noqa: E402


def test_committed_report_is_the_report_of_the_committed_results() -> None:
    res = json.loads(E.RESULTS.read_text(encoding="utf-8"))
    assert E.REPORT.read_text(encoding="utf-8") == E.report(res)
    # every design's held-out figures are accuracies over the texts the folds tested
    for d in res["designs"].values():
        assert 0 < d["transfer_fresh"] < 1 and d["crossed_with_fresh"]["n_fresh"] <= res["n"]["fresh"]


def test_fresh_items_use_the_conversation_as_the_drift_unit() -> None:
    rows = E.fresh_items("judge_fresh")
    drift = [r for r in rows if r["dir"].startswith("drift:")]
    assert len(rows) == 360 and len(drift) == 120
    assert all(r["q"] == "drift-q:" + r["dir"].split(":", 1)[1] for r in drift)
