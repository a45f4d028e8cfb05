"""The base-model ghost/angel test (cross_model.md §8): its settings come from the plans, its blind-reader sample
is the pre-registered shape, and its primary outcome follows §8's rule (synthetic records with a known answer)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import cross_model_ghost_angel as G  # noqa: E402
import records as RC  # noqa: E402
from judge_corpus import text_id  # noqa: E402
from test_prereg import _synthetic  # noqa: E402


def test_preset_is_the_assistant_axis_design_with_section_8s_reductions() -> None:
    cfg = G.preset()
    assert (cfg.model, cfg.layer, cfg.n_random, cfg.n_role_pairs, cfg.kl_levels) == ("gemma-3-270m", 8, 10, 5, [1.0])
    assert cfg.samples_per_question == 2 and cfg.n_questions is None and cfg.hand_check_n == 120
    assert cfg.mode == "default" and cfg.out == "runs/cross_model_ghost_angel"
    q = G.preset(quick=True)
    assert q.mode == "quick" and q.model == "gemma-3-270m" and q.out.endswith("_quick")


@pytest.mark.parametrize("agreement,anti,ctrl,primary,word", [
    (0.80, (30, 98), (5, 142), "judge", "the judge's verdict stands"),
    (0.60, (30, 98), (5, 142), "reader", "SUPPORTED"),
    (0.60, (8, 98), (11, 142), "reader", "NOT SUPPORTED"),
    (None, (30, 98), (5, 142), "pending", "PENDING"),
])
def test_reader_rule_is_section_8(agreement, anti, ctrl, primary, word) -> None:
    r = G.reader_rule(agreement, anti, ctrl, quick=False)
    assert r["primary"] == primary and r["word"].startswith(word)
    assert G.reader_rule(0.5, anti, ctrl, quick=True)["word"].startswith("NO VERDICT")


def _run(tmp_path: Path, anti_rate: float = 0.3) -> tuple[list, dict]:
    recs, config = _synthetic(anti_rate=anti_rate, n_random=6, n_q=20)
    config["config"]["kl_levels"] = [0.5]
    recs = [r for r in recs if r.get("level", 0.5) in (0.5, None) or r["kind"] == "calibration"]
    return recs, config


def test_reader_sample_holds_the_hand_check_then_every_anti_axis_answer_then_spread_controls(tmp_path) -> None:
    recs, config = _run(tmp_path)
    config["config"]["hand_check_n"] = 60  # 2 x 60 = 120 > the 40 anti-axis answers at level 0.5
    hand = G.A.hand_check_sample(recs, config)
    s = G.reader_sample(recs, config)
    ids = [text_id(g["text"]) for g in s]
    assert len(s) == 120 and len(set(ids)) == 120
    assert ids[: len(hand)] == [text_id(g["text"]) for g in hand]
    assert sum(g["dkind"] == "anti_axis" for g in s) == 40  # all of them
    per = {}
    for g in s:
        if g["dkind"] != "anti_axis":
            per[g["direction"]] = per.get(g["direction"], 0) + 1
    assert max(per.values()) - min(per.values()) <= 5  # spread across the control directions
    assert G.reader_sample(recs, config) == s  # seeded


def _label(recs, config, reader_super_anti: float, agree: bool) -> list:
    """Hand labels for the whole reader sample: the judge's own label (agree) or a reader who sees supernatural
    in a share of anti-axis answers and in no control."""
    out = []
    for i, g in enumerate(G.reader_sample(recs, config)):
        judge = next(r["label"] for r in recs if r["kind"] == "score" and r["direction"] == g["direction"]
                     and r["question_id"] == g["question_id"] and r["sample"] == g["sample"] and r["level"] == g["level"])
        lab = judge if agree else ("supernatural" if g["dkind"] == "anti_axis" and (i % 10) < 10 * reader_super_anti
                                   else "human")
        out.append({"kind": "hand_label", "id": text_id(g["text"]), "label": lab, "labeller": "test"})
    return out


def test_summarize_makes_the_reader_primary_below_the_agreement_bar(tmp_path) -> None:
    recs, config = _run(tmp_path, anti_rate=0.05)
    config["config"]["hand_check_n"] = 20
    res = G.summarize(recs + _label(recs, config, 0.6, agree=False), config)
    rd = res["reader"]
    assert rd["labelled_n"] == rd["sample_n"] == 40
    assert rd["rule"]["primary"] == "reader" and rd["rule"]["word"] == "SUPPORTED"
    assert res["hand_check"]["agreement"] < G.AGREEMENT_MIN
    res2 = G.summarize(recs + _label(recs, config, 0.0, agree=True), config)
    assert res2["hand_check"]["agreement"] == 1.0 and res2["reader"]["rule"]["primary"] == "judge"
    pending = G.summarize(recs, config)["reader"]["rule"]
    assert pending["primary"] == "pending"
    assert "§8 primary outcome" in G.render(res, {**config, "prereg": {"path": G.PLAN, "commit": "abc", "sha256": "0" * 64,
                                                                         "design": {"path": "x", "commit": "d"}},
                                                  "model": {"model_id": "m", "fingerprint": "f"},
                                                  "environment": {},
                                                  "config": {**config["config"], "layer": 8, "n_random": 6,
                                                             "n_role_pairs": 0, "samples_per_question": 2,
                                                             "temperature": 0.8, "max_new_tokens": 40,
                                                             "deviations": []},
                                                  "judge": {**config["judge"], "accuracy_batch1": 0.8}})


def test_import_refuses_a_text_outside_the_blind_sample(tmp_path) -> None:
    recs, config = _run(tmp_path)
    RC.Records(tmp_path / RC.RECORDS, fresh=True).write(recs)
    RC.write_json(tmp_path / RC.CONFIG, config)
    bad = tmp_path / "labels.jsonl"
    bad.write_text(json.dumps({"id": "0" * 16, "label": "human"}) + "\n")
    with pytest.raises(SystemExit, match="not in this run's blind sample"):
        G.import_labels(tmp_path, bad, "test")
    n = G.export_blind(tmp_path, tmp_path / "blind.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "blind.jsonl").read_text().splitlines()]
    assert n == len(rows) == 2 * config["config"]["hand_check_n"] and set(rows[0]) == {"id", "text"}


@pytest.mark.slow
def test_quick_run_on_the_base_model_writes_records_without_a_verdict_and_replays(tmp_path: Path, gemma) -> None:
    import recompute

    cfg = G.preset(quick=True, threads=1)
    cfg.out = str(tmp_path / "ga")
    res = G.run(cfg, model=gemma)  # the session's Gemma (the run loads the same one otherwise)
    assert res["reader"]["rule"]["word"].startswith("NO VERDICT") and res["verdict"]["h1"].startswith("NO VERDICT")
    config = RC.read_json(tmp_path / "ga" / RC.CONFIG)
    assert config["experiment"] == "cross_model_ghost_angel" and config["model"]["model_id"].startswith("google/gemma-3")
    assert config["prereg"]["path"] == G.PLAN and config["prereg"]["design"]["path"] == G.A.PREREG
    n = G.export_blind(tmp_path / "ga", tmp_path / "blind.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "blind.jsonl").read_text().splitlines()]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": r["id"], "label": "no_self"}) + "\n" for r in rows))
    assert G.import_labels(tmp_path / "ga", labels, "test") == n
    out = recompute.recompute(tmp_path / "ga")
    assert out["numbers"] > 0
    assert RC.read_json(tmp_path / "ga" / RC.RESULTS)["reader"]["labelled_n"] == n


def test_a_second_reader_gives_kappa_and_never_enters_the_rule(tmp_path) -> None:
    recs, config = _run(tmp_path, anti_rate=0.05)
    config["config"]["hand_check_n"] = 20
    first = _label(recs, config, 0.6, agree=False)
    second = [{**r, "kind": "hand_label_second", "labeller": "b",
               "label": r["label"] if i % 4 else "no_self"} for i, r in enumerate(first)]
    res = G.summarize(recs + first + second, config)
    k = res["reader"]["second_reader"]
    assert k["n"] == 40 and k["raw_agreement"] == pytest.approx(0.75) and 0 < k["kappa"] < 1
    assert res["reader"]["rule"] == G.summarize(recs + first, config)["reader"]["rule"]
