"""Confidence triage (persona_vectors.judge.triage): the threshold rule, the split, the merge and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from persona_vectors.judge import LABELS, Triage, TriagePolicy, choose_threshold, triage
from persona_vectors.judge.labels import wilson_interval


def _proba(top: list[str], conf: list[float]) -> np.ndarray:
    """Rows whose top label is ``top[i]`` with probability ``conf[i]``, the rest spread evenly."""
    out = np.zeros((len(top), len(LABELS)))
    for i, (lab, c) in enumerate(zip(top, conf)):
        out[i] = (1 - c) / (len(LABELS) - 1)
        out[i, LABELS.index(lab)] = c
    return out


class _FixedJudge:
    """A judge whose probabilities are given in advance (one row per text, in call order)."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        assert len(texts) == len(self.proba)
        return self.proba


def test_choose_threshold_is_the_smallest_grid_value_whose_lower_bound_clears_the_target() -> None:
    rng = np.random.default_rng(0)
    n = 600
    conf = rng.uniform(0.2, 1.0, n)
    right = rng.random(n) < conf  # a calibrated judge: right with probability = its confidence
    truth = ["ai_assistant"] * n
    top = ["ai_assistant" if r else "no_self" for r in right]
    proba = _proba(top, list(conf))
    got = choose_threshold(proba, truth, target=0.85)
    # brute force over the same grid
    expected = None
    for t in sorted(p["threshold"] for p in got["curve"]):
        keep = conf >= t
        lo, _ = wilson_interval(int(right[keep].sum()), int(keep.sum()))
        if keep.sum() >= 30 and lo >= 0.85:
            expected = t
            break
    assert expected is not None and got["threshold"] == expected
    keep = conf >= expected
    assert got["covered"] == int(keep.sum()) and got["accuracy"] == pytest.approx(right[keep].mean())
    assert got["accuracy_ci95"][0] >= 0.85
    # the whole curve is reported, with coverage falling as the threshold rises
    cov = [p["coverage"] for p in got["curve"]]
    assert cov == sorted(cov, reverse=True) and len(got["curve"]) == 27


def test_choose_threshold_refuses_an_unreachable_target_and_bad_input() -> None:
    proba = _proba(["human"] * 100, [0.99] * 100)
    with pytest.raises(ValueError, match="no threshold"):
        choose_threshold(proba, ["no_self"] * 100)  # confident and always wrong
    with pytest.raises(ValueError, match="shape"):
        choose_threshold(proba[:, :3], ["no_self"] * 100)
    with pytest.raises(ValueError, match="unknown labels"):
        choose_threshold(proba, ["ghost"] * 100)


def test_triage_keeps_confident_labels_and_merges_readings() -> None:
    proba = _proba(["ai_assistant", "supernatural", "no_self", "human"], [0.95, 0.5, 0.8, 0.3])
    tri = triage(["a", "b", "c", "d"], _FixedJudge(proba), threshold=0.75)
    assert tri.labels == ["ai_assistant", None, "no_self", None]
    assert tri.judge_labels == ["ai_assistant", "supernatural", "no_self", "human"]
    assert tri.to_read == [1, 3] and tri.coverage == 0.5
    assert tri.sources() == ["judge", "reader", "judge", "reader"]
    assert tri.merge({1: "cosmic_nature_object", 3: "incoherent"}) == [
        "ai_assistant", "cosmic_nature_object", "no_self", "incoherent"]
    # a sequence of readings (None where the judge kept its label) works too
    assert tri.merge([None, "animal", None, "human"])[1] == "animal"
    with pytest.raises(ValueError, match="no reading"):
        tri.merge({1: "animal"})
    with pytest.raises(ValueError, match="not judge labels"):
        tri.merge({1: "animal", 3: "ghost"})


def test_triage_refuses_a_foreign_judge_without_a_threshold_and_bad_thresholds() -> None:
    judge = _FixedJudge(_proba(["human"], [0.9]))
    with pytest.raises(ValueError, match="threshold="):
        triage(["x"], judge)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        triage(["x"], judge, threshold=1.5)
    with pytest.raises(TypeError):
        triage("one string", judge, threshold=0.5)
    # a policy not tied to a judge applies to any judge
    assert triage(["x"], judge, policy=TriagePolicy(threshold=0.95)).to_read == [0]
    assert isinstance(triage([], judge, threshold=0.5), Triage)


def test_the_shipped_policy_is_the_rule_applied_to_its_recorded_curve() -> None:
    policy = TriagePolicy.default()
    cal = policy.calibration
    assert policy.target == 0.85 and cal["n"] == 720
    first = next(p for p in cal["curve"] if p["covered"] >= 30 and p["accuracy_ci95"][0] >= policy.target)
    assert first["threshold"] == policy.threshold == cal["threshold"]


@pytest.mark.slow
def test_the_shipped_policy_matches_the_default_judge_and_recomputes(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from persona_vectors.judge import EmbeddingJudge

    assert TriagePolicy.default().matches(EmbeddingJudge.default())
    assert not TriagePolicy.default().matches(EmbeddingJudge())
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    sys.modules.pop("judge_triage", None)
    import judge_triage

    judge_triage.calibrate(check=True)  # raises if triage.json is not what the rule gives today


@pytest.mark.slow
def test_cli_judge_triage_writes_a_blind_shard_and_merges(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from persona_vectors.cli import app

    texts = tmp_path / "texts.jsonl"
    rows = [{"id": "a", "text": "I am an AI assistant here to help you with any question you have."},
            {"id": "b", "text": "Mortal, the glow of my bed, a testament to the nightingale's song and the earth."},
            {"id": "c", "text": "The night is dark and cold, and the wind whispers through the trees."}]
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, shard = tmp_path / "judged.jsonl", tmp_path / "to_read.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["judge", "triage", str(texts), "--out", str(out), "--to-read", str(shard),
                              "--threshold", "0.9999"])
    assert res.exit_code == 0, res.output
    judged = [json.loads(x) for x in out.read_text().splitlines()]
    blind = [json.loads(x) for x in shard.read_text().splitlines()]
    left = {j["id"] for j in judged if j["label"] is None}
    assert {b["id"] for b in blind} == left and all(set(b) == {"id", "text"} for b in blind)
    assert left, "a threshold of 0.9999 must leave texts to a reader"
    # existing outputs are never replaced silently
    res = runner.invoke(app, ["judge", "triage", str(texts), "--out", str(out), "--threshold", "0.9999"])
    assert res.exit_code != 0 and "--force" in res.output
    readings = tmp_path / "readings.jsonl"
    readings.write_text("".join(json.dumps({"id": i, "label": "no_self"}) + "\n" for i in sorted(left)[:-1]))
    res = runner.invoke(app, ["judge", "triage", str(texts), "--out", str(out), "--threshold", "0.9999",
                              "--readings", str(readings), "--force"])
    assert res.exit_code != 0 and "no label" in res.output
    readings.write_text("".join(json.dumps({"id": i, "label": "no_self"}) + "\n" for i in sorted(left)))
    res = runner.invoke(app, ["judge", "triage", str(texts), "--out", str(out), "--threshold", "0.9999",
                              "--readings", str(readings), "--force", "--json"])
    assert res.exit_code == 0, res.output
    merged = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(m["label"] for m in merged)
    assert {m["id"] for m in merged if m["source"] == "reader"} == left
    assert json.loads(res.output)["merged"] is True
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "label": "ghost"}\n')
    res = runner.invoke(app, ["judge", "triage", str(texts), "--out", str(out), "--threshold", "0.9999",
                              "--readings", str(bad), "--force"])
    assert res.exit_code != 0 and "ghost" in res.output


# -- the pre-registered test (experiments/judge_triage.py) ----------------------------------------------------------
def _experiment():  # type: ignore[no-untyped-def]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import judge_triage

    return judge_triage


def test_triage_test_draws_new_text_and_its_plan_agrees() -> None:
    from collections import Counter

    T = _experiment()
    from judge_corpus import text_id

    plan = T.check_plan()
    texts = T.F.read_jsonl(T.TEXTS)
    assert len(texts) == plan["n_ghost_angel"] + plan["n_drift"] == 360
    assert dict(Counter(t["stratum"] for t in texts if t["source"] == "ghost_angel_fp32")) == T.F.GHOST_ANGEL
    used = T.used_ids()
    calibration = {t["id"] for d in T.CALIBRATION_SETS for t in T.F.read_jsonl(d / "texts.jsonl")}
    assert calibration <= used  # the threshold's texts are excluded from the test
    assert all(t["id"] == text_id(t["text"]) and t["id"] not in used for t in texts)
    labels = T.F.read_jsonl(T.LABELS_FILE)
    assert Counter(h["pass"] for h in labels) == {1: 360, 2: 360}
    readers = {p: {h["reader"] for h in labels if h["pass"] == p} for p in (1, 2)}
    assert not readers[1] & readers[2]  # reader B is other readers than reader A


def test_triage_decision_rule() -> None:
    T = _experiment()
    assert T.decide(np.array([True] * 85 + [False] * 15))["verdict"] == "TARGET MET"
    assert T.decide(np.array([True] * 84 + [False] * 16))["verdict"] == "NOT MET"
    d = T.decide(np.array([True] * 950 + [False] * 50))
    assert d["lower_bound_clears"] and d["verdict"] == "TARGET MET"
    assert T.decide(np.array([], dtype=bool))["verdict"] == "NOT MET"


@pytest.mark.slow
def test_triage_results_replay() -> None:
    T = _experiment()
    res = T.score(replay=True)
    assert res["n"] == 360 and res["decision"]["verdict"] in ("TARGET MET", "NOT MET")
    assert f"**Verdict ({res['decision']['rule']}): {res['decision']['verdict']}**" in T.REPORT.read_text()


def _store(tmp_path: Path) -> Path:
    texts = ["I am an AI assistant here to help you.", "The sea is grey tonight.", "I am a ghost of the old mill.",
             "I am a ghost who walks these halls."]
    p = tmp_path / "sweep.jsonl"
    p.write_text("".join(json.dumps({"row_id": f"r{i}", "vector": "v", "layer": 1, "alpha": float(i // 2),
                                     "text": t}) + "\n" for i, t in enumerate(texts)))
    return p


def test_summarize_counts_triage_labels_by_row_id(tmp_path: Path) -> None:
    from persona_vectors.sweep import summarize
    from persona_vectors.sweep.errors import SweepStoreError
    from persona_vectors.sweep.summary import read_label_file

    store = _store(tmp_path)
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": f"r{i}", "label": lab, "source": src}) + "\n" for i, (lab, src) in
                              enumerate([("ai_assistant", "judge"), ("no_self", "reader"), ("supernatural", "reader"),
                                         ("supernatural", "judge")])))
    s = summarize(store, labels=read_label_file(labels))
    assert s["judge"] == "triage" and all(c["corrected"] is None for c in s["cells"])
    by_alpha = {c["alpha"]: c for c in s["cells"]}
    assert by_alpha[0.0]["labels"]["ai_assistant"]["k"] == 1 and by_alpha[0.0]["labels"]["no_self"]["k"] == 1
    assert by_alpha[1.0]["labels"]["supernatural"]["share"] == 1.0
    assert any("counted, not corrected" in n for n in s["notes"])
    # a file that covers only some rows: the rest are left out, with a note
    part = summarize(store, labels={"r0": "ai_assistant"})
    assert any("3 of 4 rows have no label in the labels file" in n for n in part["notes"])
    with pytest.raises(ValueError, match="not both"):
        summarize(store, labels={"r0": "ai_assistant"}, judge=object())
    # an unmerged triage output (texts still left to a reader) is refused, naming the fix
    labels.write_text(json.dumps({"id": "r0", "label": None}) + "\n")
    with pytest.raises(SweepStoreError, match="--readings"):
        read_label_file(labels)
    with pytest.raises(SweepStoreError, match="no labels file"):
        read_label_file(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_triage_to_summary_on_a_sweep_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from persona_vectors.cli import app

    store = _store(tmp_path)
    runner = CliRunner()
    out, shard, merged = tmp_path / "judged.jsonl", tmp_path / "to_read.jsonl", tmp_path / "labels.jsonl"
    res = runner.invoke(app, ["judge", "triage", str(store), "--out", str(out), "--to-read", str(shard),
                              "--threshold", "0.9999"])
    assert res.exit_code == 0, res.output
    assert {json.loads(x)["id"] for x in out.read_text().splitlines()} == {"r0", "r1", "r2", "r3"}  # row_ids
    readings = tmp_path / "read.jsonl"
    readings.write_text("".join(json.dumps({"id": json.loads(x)["id"], "label": "no_self"}) + "\n"
                                for x in shard.read_text().splitlines()))
    res = runner.invoke(app, ["judge", "triage", str(store), "--out", str(merged), "--threshold", "0.9999",
                              "--readings", str(readings)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["summarize", str(store), "--labels", str(merged), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["judge"] == "triage" and sum(c["n"] for c in s["cells"]) == 4
    res = runner.invoke(app, ["summarize", str(store), "--labels", str(merged), "--judge"])
    assert res.exit_code != 0 and "pass one of them" in res.output
