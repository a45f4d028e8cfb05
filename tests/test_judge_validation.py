"""Judge validation on real text: the crossed grouped split leaks nothing, labelled files are checked, the
confusion-matrix correction recovers a known answer, and `persona-vectors judge validate` reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from persona_vectors.cli import app
from persona_vectors.judge import LABELS
from persona_vectors.judge_validation import (
    LabelledFileError,
    corrected_label_shares,
    crossed_folds,
    evaluate,
    read_labelled_file,
)


def test_crossed_folds_never_share_a_direction_or_a_question() -> None:
    rng = np.random.default_rng(0)
    dirs = [f"d{i % 13}" for i in range(600)]
    qs = [f"q{(i * 7) % 29}" for i in range(600)]
    tested = set()
    for train, test in crossed_folds(dirs, qs, 3, rng):
        assert len(train) and len(test)
        assert not ({dirs[i] for i in train} & {dirs[i] for i in test})
        assert not ({qs[i] for i in train} & {qs[i] for i in test})
        assert not (set(train) & set(test))
        tested |= set(test.tolist())
    assert 0.15 < len(tested) / 600 < 0.6  # items whose direction and question land in the same fold


def test_corrected_shares_recover_a_known_mixture() -> None:
    k = len(LABELS)
    true = np.zeros(k)
    true[LABELS.index("supernatural")], true[LABELS.index("no_self")], true[LABELS.index("ai_assistant")] = 0.2, 0.5, 0.3
    C = np.eye(k) * 80 + 2.0  # every label confused a little with every other
    Cn = C / C.sum(1, keepdims=True)
    observed = true @ Cn  # expected predicted-label distribution
    n = 1000
    proba = np.repeat(observed[None, :], n, axis=0)  # items whose probabilities sum to the observed counts
    res = corrected_label_shares(proba, C)
    got = np.array([res["corrected"][lab] for lab in LABELS])
    assert np.allclose(got, true, atol=1e-6)
    assert res["n"] == n and res["residual"] < 1e-6


def test_evaluate_reports_accuracy_confusion_and_calibration() -> None:
    labels = ["supernatural", "no_self", "ai_assistant", "no_self"]
    proba = np.full((4, len(LABELS)), 0.01)
    for i, lab in enumerate(["supernatural", "no_self", "human", "no_self"]):
        proba[i, LABELS.index(lab)] = 0.9
    proba /= proba.sum(1, keepdims=True)
    res = evaluate(labels, proba)
    assert res["accuracy"] == pytest.approx(0.75) and res["n"] == 4
    cm = np.array(res["confusion_matrix"])
    assert cm[LABELS.index("ai_assistant"), LABELS.index("human")] == 1 and cm.sum() == 4
    assert res["per_label"]["no_self"]["recall"] == 1.0 and 0 <= res["ece"] <= 1


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "holds no labelled texts"),
        ('{"text": "I am a ghost.", "label": "ghostly"}\n', "label 'ghostly' is not one of the judge's labels: ai_assistant"),
        ('[1, 2]\n', "needs a JSON object"),
        ('{"text": "x"\n', "not valid JSON"),
        ('{"label": "human"}\n', "string \"text\""),
    ],
)
def test_bad_labelled_files_are_clear_errors(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "l.jsonl"
    f.write_text(content)
    with pytest.raises(LabelledFileError, match=match):
        read_labelled_file(f)
    r = CliRunner().invoke(app, ["judge", "validate", "--labelled", str(f)])
    assert r.exit_code == 2 and r.output.count("error: ") == 1 and "Traceback" not in r.output


def test_cli_judge_validate_on_a_labelled_file(tmp_path: Path) -> None:
    rows = [("I'm SmolLM, an AI assistant. How can I help you today?", "ai_assistant"),
            ("I am a restless ghost who haunts this house.", "supernatural"),
            ("The night is dark and cold, and the wind whispers through the trees.", "no_self"),
            ("ho ho ho ho ho ho ho ho ho ho ho ho ho", "incoherent")]
    f = tmp_path / "l.jsonl"
    f.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    r = CliRunner().invoke(app, ["judge", "validate", "--labelled", str(f), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["n"] == 4 and 0 <= res["accuracy"] <= 1 and len(res["confusion_matrix"]) == len(LABELS)
    # four texts cannot support a triage threshold (at least 30 must be kept): said, not guessed
    assert res["triage"]["threshold"] is None and "30" in res["triage"]["reason"]
    r = CliRunner().invoke(app, ["judge", "validate", "--labelled", str(f)])
    assert "accuracy" in r.output and "Confusion matrix" in r.output and "Triage: no threshold" in r.output


def test_triage_on_reports_the_threshold_a_labelled_set_supports() -> None:
    from persona_vectors.judge_validation import triage_on

    proba = np.full((100, len(LABELS)), 0.01)
    proba[:, LABELS.index("human")] = 0.95  # confident ...
    labels = ["human"] * 97 + ["no_self"] * 3  # ... and right on 97 of 100
    got = triage_on(proba, labels)
    assert got["threshold"] == 0.3 and got["covered"] == 100 and "curve" not in got
