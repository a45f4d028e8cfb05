"""The fresh-text test of the judges: its plan and script agree, the draw is what the plan says, labels are
validated on import, the decision rule does what the plan says, and the committed results replay."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import judge_fresh_test as J  # noqa: E402


def test_plan_and_script_agree_and_the_draw_is_the_planned_one() -> None:
    plan = J.check_plan()
    texts = J.read_jsonl(J.TEXTS)
    assert len(texts) == plan["n_ghost_angel"] + plan["n_drift"] and len({t["id"] for t in texts}) == len(texts)
    strata = Counter(t["stratum"] for t in texts if t["source"] == "ghost_angel_fp32")
    assert dict(strata) == J.GHOST_ANGEL
    assert Counter(t["source"] for t in texts)["drift"] == plan["n_drift"]
    # no drawn text is in the judge's training corpus or the hand-written set
    from judge_corpus import text_id

    from persona_vectors.judge import load_labelled
    from persona_vectors.judge_validation import REAL_DIR

    corpus = {g["id"] for g in J.read_jsonl(REAL_DIR / "generations.jsonl")}
    corpus |= {text_id(t) for t in load_labelled()[0]}
    assert all(t["id"] == text_id(t["text"]) and t["id"] not in corpus for t in texts)


def test_decision_rule() -> None:
    a = np.array([True] * 30 + [False] * 5 + [True] * 65)
    b = np.array([False] * 30 + [True] * 5 + [True] * 65)
    assert J.decide(a, b)["verdict"] == "CONFIRMED" and J.decide(b, a)["verdict"] == "REVERSED"
    assert J.decide(a[30:], b[30:])["verdict"] == "NOT CONFIRMED"  # 0 vs 5 discordant: p = 0.0625
    d = J.decide(a[29:], b[29:])
    assert d["verdict"] == "NOT CONFIRMED" and d["finetuned_only_right"] == 1 and d["frozen_only_right"] == 5
    assert J.decide(a[35:], b[35:])["verdict"] == "NOT CONFIRMED" and J.decide(a[35:], b[35:])["p"] == 1.0


def test_import_validates_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"id": "a1", "text": "I am a ghost."}) + "\n" + json.dumps({"id": "b2", "text": "x"}) + "\n")
    monkeypatch.setattr(J, "TEXTS", texts)
    monkeypatch.setattr(J, "LABELS_FILE", tmp_path / "labels.jsonl")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "a1", "label": "supernatural", "note": "ghost"}) + "\n")
    assert J.import_labels(good, "r1", 1) == 1
    with pytest.raises(SystemExit, match="already has a pass-1 label"):
        J.import_labels(good, "r1", 1)
    assert J.import_labels(good, "r2", 2) == 1  # a second pass is stored beside the first
    for row, msg in (({"id": "zz", "label": "human"}, "not one of the drawn texts"),
                     ({"id": "b2", "label": "ghostly"}, "not one of")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(row) + "\n")
        with pytest.raises(SystemExit, match=msg):
            J.import_labels(bad, "r1", 1)
    stored = J.read_jsonl(tmp_path / "labels.jsonl")
    assert [(s["id"], s["pass"], s["reader"]) for s in stored] == [("a1", 1, "r1"), ("a1", 2, "r2")]


@pytest.mark.skipif(not J.RESULTS.is_file(), reason="the fresh-text test has not been scored yet")
def test_committed_results_replay() -> None:
    res = J.score(replay=True)
    assert res["n"] == 360 and res["decision"]["verdict"] in ("CONFIRMED", "REVERSED", "NOT CONFIRMED")
    assert f"**Verdict ({res['decision']['rule']}): {res['decision']['verdict']}**" in J.REPORT.read_text()
