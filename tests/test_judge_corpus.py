"""Batch 3 of the judge corpus: texts drawn from an experiment's committed records, never by the judge."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import judge_corpus as J  # noqa: E402

from persona_vectors.judge_validation import load_real_corpus  # noqa: E402


def _gen(text: str, direction: str, dkind: str, q: int) -> dict:
    return {"kind": "generation", "direction": direction, "dkind": dkind, "level": 1.0, "alpha_rel": -0.2,
            "question_id": f"ev_{q:03d}", "question": f"question {q}", "topic": "identity", "sample": 0,
            "batch": 3, "seed": 7, "text": text}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    run = tmp_path / "run"
    run.mkdir()
    texts = ([f"I am a restless ghost number {i}." for i in range(6)]
             + [f"The weather is fine on day {i}." for i in range(10)])
    gens = [_gen(t, f"random_{i:02d}", "random", i) for i, t in enumerate(texts)]
    gens += [_gen("I am the assistant's opposite.", "anti_axis", "anti_axis", 20),
             _gen("Hello, how can I help?", "unsteered", "unsteered", 21),
             _gen("Already in the corpus.", "pro_axis", "pro_axis", 22)]
    hand = [{"kind": "hand_label", "id": J.text_id("I am the assistant's opposite."), "label": "no_self",
             "labeller": "reader X", "note": ""}]
    with gzip.open(run / "records.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in gens + hand))
    (run / "config.json").write_text(json.dumps({"config": {"layer": 14, "temperature": 0.8}}))
    corpus = tmp_path / "judge_real" / "generations.jsonl"
    corpus.parent.mkdir()
    old = {"id": J.text_id("Already in the corpus."), "text": "Already in the corpus.",
           "condition": {"kind": "axis", "direction": "axis", "question_id": "ev_001"}}
    corpus.write_text(json.dumps(old) + "\n")
    return run, corpus, texts


def test_batch3_draws_by_word_list_and_uniformly_and_keeps_old_lines(setup) -> None:
    run, corpus, _ = setup
    before = corpus.read_text()
    J.from_records(run, corpus, n_keyword=3, n_random=4, seed=0)
    after = corpus.read_text()
    assert after.startswith(before)  # existing lines byte for byte
    rows = [json.loads(line) for line in after.splitlines()[1:]]
    drawn = [r["condition"]["drawn"] for r in rows]
    assert drawn.count("keyword") == 3 and drawn.count("random") == 4 and drawn.count("hand_check") == 1
    assert all(r["condition"]["batch"] == 3 for r in rows)
    for r in rows:
        hit = J.SUPERNATURAL_WORDS.search(r["text"]) is not None
        if r["condition"]["drawn"] == "keyword":
            assert hit
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) and J.text_id("Already in the corpus.") not in ids
    dirs = {r["text"]: r["condition"]["direction"] for r in rows}
    assert dirs["I am the assistant's opposite."] == "axis"  # the axis keeps batch 1's unit
    assert all(d == "axis" or d is None or d.startswith("aa_bf16:") for d in dirs.values())
    hand = [json.loads(line) for line in (corpus.parent / "hand_labels_batch3.jsonl").read_text().splitlines()]
    assert hand == [{"id": J.text_id("I am the assistant's opposite."), "label": "no_self", "note": "",
                     "labeller": "reader X"}]
    meta = json.loads(corpus.with_suffix(".meta.json").read_text())
    assert meta["batch3"]["drawn"] == {"keyword": 3, "random": 4, "hand_check": 1}


def test_batch3_is_seeded_and_refuses_to_append_twice(setup, tmp_path: Path) -> None:
    run, corpus, _ = setup
    twin = tmp_path / "twin" / "generations.jsonl"
    twin.parent.mkdir()
    twin.write_text(corpus.read_text())
    J.from_records(run, corpus, n_keyword=3, n_random=4, seed=0)
    J.from_records(run, twin, n_keyword=3, n_random=4, seed=0)
    assert corpus.read_text() == twin.read_text()
    with pytest.raises(SystemExit, match="already holds batch 3"):
        J.from_records(run, corpus, n_keyword=3, n_random=4, seed=0)


def test_batch3_units_reach_the_grouped_split(setup) -> None:
    run, corpus, _ = setup
    J.from_records(run, corpus, n_keyword=3, n_random=4, seed=0)
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    (corpus.parent / "labels.jsonl").write_text("".join(
        json.dumps({"id": r["id"], "label": "no_self", "labeller": "t", "pass": 1, "note": ""}) + "\n" for r in rows))
    c = load_real_corpus(corpus.parent)
    assert len(c) == len(rows)
    assert "unsteered" in c.directions or all(r["condition"]["kind"] != "unsteered" for r in rows)
    assert all(q.startswith("ev_") for q in c.questions)


def test_validation_subsets_include_batch3_uniform() -> None:
    import numpy as np

    import judge_validation_report as V

    batch = np.array([1, 1, 2, 3, 3, 3])
    drawn = np.array(["", "", "", "keyword", "random", "hand_check"])
    tested = np.array([0, 2, 3, 4, 5])
    masks = V.subsets(batch, tested, drawn)
    assert sorted(masks, key=str) == [1, 2, 3, "3u"]
    assert masks[3].tolist() == [False, False, True, True, True]
    assert masks["3u"].tolist() == [False, False, False, True, False]  # only the uniformly drawn batch-3 text
    assert V.subsets(np.array([1, 2]), np.array([0, 1]), np.array(["", ""])).keys() == {1, 2}


def test_batch3_from_another_experiments_records_is_a_clear_error(setup, tmp_path: Path) -> None:
    _, corpus, _ = setup
    other = tmp_path / "other"
    other.mkdir()
    with gzip.open(other / "records.jsonl.gz", "wt") as f:
        f.write(json.dumps({"kind": "readout", "question": "Who are you?"}) + "\n")
    (other / "config.json").write_text(json.dumps({"config": {}}))
    before = corpus.read_text()
    with pytest.raises(SystemExit, match="assistant_axis_prereg run's folder"):
        J.from_records(other, corpus, n_keyword=1, n_random=1, seed=0)
    assert corpus.read_text() == before
