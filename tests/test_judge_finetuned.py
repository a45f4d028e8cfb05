"""The fine-tuned judge (LoRA on MiniLM + head): it learns, it is deterministic, it saves and loads exactly, bad
input and bad files fail with the fix, the shipped judge is current, and the pre-registered comparison's split and
rule do what the plan says."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from persona_vectors.judge import LABELS, FinetunedJudge, FinetuneSettings, load_labelled

ROOT = Path(__file__).resolve().parents[1]
QUICK = FinetuneSettings(epochs=4, batch_size=8, lr=3e-3)


@pytest.fixture(scope="module")
def tiny() -> tuple[list[str], list[str]]:
    """Four hand-written texts of each of four labels."""
    texts, labels = load_labelled()
    keep = ("ai_assistant", "supernatural", "animal", "incoherent")
    out: tuple[list[str], list[str]] = ([], [])
    for lab in keep:
        picked = [t for t, v in zip(texts, labels) if v == lab][:4]
        out[0].extend(picked)
        out[1].extend([lab] * len(picked))
    return out


@pytest.fixture(scope="module")
def fitted(tiny: tuple[list[str], list[str]]) -> FinetunedJudge:
    torch.set_num_threads(1)
    return FinetunedJudge(QUICK).fit(*tiny)


def test_learns_its_training_texts_and_returns_label_ordered_probabilities(
        fitted: FinetunedJudge, tiny: tuple[list[str], list[str]]) -> None:
    proba = fitted.predict_proba(tiny[0])
    assert proba.shape == (len(tiny[0]), len(LABELS))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    pred = fitted.predict(tiny[0])
    assert np.mean([p == y for p, y in zip(pred, tiny[1])]) >= 0.75  # 4 labels: chance is 0.25
    res = fitted.classify(tiny[0][:2] + ["   "])
    assert res[0].source == "finetuned" and res[0].label == LABELS[int(proba[0].argmax())]
    assert res[2].label == "incoherent" and res[2].source == "empty-input"


def test_same_seed_same_judge(tiny: tuple[list[str], list[str]], fitted: FinetunedJudge) -> None:
    torch.set_num_threads(1)
    again = FinetunedJudge(QUICK).fit(*tiny)
    np.testing.assert_allclose(again.predict_proba(tiny[0]), fitted.predict_proba(tiny[0]), atol=1e-6)


def test_save_load_round_trip_and_bad_files(fitted: FinetunedJudge, tiny: tuple[list[str], list[str]],
                                            tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "j.safetensors", note="test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.safetensors"]  # no temporary left behind
    assert path.stat().st_size < 3_000_000  # adapters and head only, not the encoder
    loaded = FinetunedJudge.load(path)
    assert loaded.meta_ == {"note": "test"} and loaded.settings == QUICK
    np.testing.assert_array_equal(loaded.predict_proba(tiny[0]), fitted.predict_proba(tiny[0]))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a judge")
    with pytest.raises(ValueError, match="refit and save it"):
        FinetunedJudge.load(bad)
    with pytest.raises(ValueError, match="refit and save it"):
        FinetunedJudge.load(tmp_path / "missing.safetensors")


def test_temperature_flattens_probabilities(fitted: FinetunedJudge, tiny: tuple[list[str], list[str]],
                                            tmp_path: Path) -> None:
    hot = FinetunedJudge.load(fitted.save(tmp_path / "j.safetensors"))
    hot.temperature = 3.0
    assert hot.predict_proba(tiny[0]).max(axis=1).mean() < fitted.predict_proba(tiny[0]).max(axis=1).mean()
    assert hot.predict(tiny[0]) == fitted.predict(tiny[0])  # a temperature never changes the argmax


def test_bad_input_names_the_fix() -> None:
    with pytest.raises(ValueError, match="unknown labels"):
        FinetunedJudge(QUICK).fit(["a ghost"], ["ghost"])
    with pytest.raises(ValueError, match="1 texts but 2 labels"):
        FinetunedJudge(QUICK).fit(["a ghost"], ["supernatural", "human"])
    with pytest.raises(ValueError, match="no training texts"):
        FinetunedJudge(QUICK).fit([], [])
    with pytest.raises(RuntimeError, match="not fitted"):
        FinetunedJudge().predict_proba(["hello"])


def test_shipped_judge_is_current_and_classifies() -> None:
    judge = FinetunedJudge.default()
    assert FinetunedJudge.default() is judge
    res = judge.classify(["As an AI language model, I am here to help you with your questions."])
    assert res[0].label == "ai_assistant" and res[0].source == "finetuned"
    assert judge.temperature != 1.0  # calibrated on held-out predictions by the validation run


def test_stored_validation_matches_the_report() -> None:
    from persona_vectors.judge.finetuned import FINETUNED_VALIDATION_PATH, stored_validation

    res = stored_validation()
    full = json.loads(FINETUNED_VALIDATION_PATH.read_text())
    assert res["complete"] and res["decision"]["verdict"] in ("ADOPT", "KEEP")
    report = (ROOT / "docs" / "judge_finetuned.md").read_text()
    assert f"| accuracy, real text (pooled) | {full['default']['real']['accuracy']:.3f} | {res['accuracy']:.3f} |" in report


def test_replay_recomputes_every_stored_number_and_fails_on_a_change(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "experiments"))
    import judge_finetuned_cv as J

    from persona_vectors.judge.finetuned import FINETUNED_VALIDATION_PATH

    out = tmp_path / "r.md"
    res = J.main(["--replay", "--out", str(out)])  # compares with the shipped JSON; writes nothing
    assert res["decision"]["verdict"] == "ADOPT" and not out.exists()
    stored = json.loads(FINETUNED_VALIDATION_PATH.read_text())
    stored["finetuned"]["real"]["accuracy"] += 0.001
    edited = tmp_path / "v.json"
    edited.write_text(json.dumps(stored))
    with pytest.raises(SystemExit) as err:
        J.main(["--replay", "--json", str(edited), "--out", str(out)])
    assert err.value.code == 1 and not out.exists()
    J.main(["--replay", "--json", str(edited), "--out", str(out), "--write"])  # --write rewrites both
    assert json.loads(edited.read_text()) == json.loads(FINETUNED_VALIDATION_PATH.read_text())
    assert out.read_text() == (ROOT / "docs" / "judge_finetuned.md").read_text()


def test_comparison_split_has_no_leak_and_matches_the_validation_folds() -> None:
    sys.path.insert(0, str(ROOT / "experiments"))
    import judge_finetuned_cv as J

    from persona_vectors.judge_validation import crossed_folds, load_real_corpus

    corpus = load_real_corpus()
    _, hl = load_labelled()
    plan = J.folds_for(corpus, hl, 3, 2, 0)
    assert len(plan) == 6
    dirs, qs = np.asarray(corpus.directions), np.asarray(corpus.questions)
    for f in plan:
        assert not set(dirs[f["real_train"]]) & set(dirs[f["real_test"]])
        assert not set(qs[f["real_train"]]) & set(qs[f["real_test"]])
        assert not set(f["hand_train"]) & set(f["hand_test"])
    for r in range(2):  # each repeat's hand-written test folds partition the hand-written set
        held = sorted(i for f in plan if f["repeat"] == r for i in f["hand_test"])
        assert held == list(range(len(hl)))
    rng = np.random.default_rng(0)  # the same rng sequence as crossed_group_cv(seed=0)
    first = crossed_folds(corpus.directions, corpus.questions, 3, rng)
    assert [f["real_test"] for f in plan[:3]] == [t.tolist() for _, t in first]


def test_decision_rule() -> None:
    sys.path.insert(0, str(ROOT / "experiments"))
    import judge_finetuned_cv as J

    assert J.decide(0.73, 0.76, 0.82, 0.82)["verdict"] == "ADOPT"  # gain exactly the margin, hand equal
    assert J.decide(0.73, 0.759, 0.82, 0.90)["verdict"] == "KEEP"
    assert J.decide(0.73, 0.90, 0.82, 0.81)["verdict"] == "KEEP"


def test_cli_scores_the_default_judge_and_the_finetuned_one_on_request(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from persona_vectors.cli import app
    from persona_vectors.judge import EmbeddingJudge

    f = tmp_path / "l.jsonl"
    f.write_text(json.dumps({"text": "I am a restless ghost who haunts this house.", "label": "supernatural"}) + "\n")
    r = CliRunner().invoke(app, ["judge", "validate", "--labelled", str(f), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["n"] == 1
    r = CliRunner().invoke(app, ["judge", "validate"])
    assert r.exit_code == 0 and "Embedding judge (default)" in r.output and "Confusion matrix" in r.output
    assert "stored crossed grouped CV, validation.json" in r.output
    r = CliRunner().invoke(app, ["judge", "validate", "--finetuned"])
    assert r.exit_code == 0 and "Fine-tuned judge" in r.output and "finetuned_validation.json" in r.output
    stored = json.loads(CliRunner().invoke(app, ["judge", "validate", "--finetuned", "--json"]).output)
    assert stored["accuracy"] == pytest.approx(0.769, abs=5e-4)
    asked = []
    monkeypatch.setattr(FinetunedJudge, "default", classmethod(lambda cls: asked.append("ft") or EmbeddingJudge.default()))
    r = CliRunner().invoke(app, ["judge", "validate", "--labelled", str(f), "--finetuned"])
    assert r.exit_code == 0 and asked == ["ft"] and "Fine-tuned judge on" in r.output
    r = CliRunner().invoke(app, ["judge", "validate", "--finetuned", "--reader"])
    assert r.exit_code == 2 and "pass at most one of them" in r.output
    r = CliRunner().invoke(app, ["judge", "validate", "--finetuned", "--recompute"])
    assert r.exit_code == 2 and "--recompute" in r.output


def _judged_sweep_rows(tmp_path: Path, judge: Any) -> list[dict[str, Any]]:
    """The rows of a one-cell sweep of the tiny model, labelled by ``judge``."""
    from conftest import make_tiny_model

    from persona_vectors import SweepConfig, run_sweep
    from persona_vectors.vector import PersonaVector, Provenance

    model = make_tiny_model()
    vec = PersonaVector([1], torch.ones(1, model.d_model),
                        Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name="v"))
    cfg = SweepConfig(vectors={"v": vec}, layers=[1], alphas=[0.0], prompts=["Who are you?"], max_new_tokens=3)
    run_sweep(model, cfg, tmp_path / "s.jsonl", judge=judge, progress=False)
    return [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]


def test_default_judge_is_the_shipped_frozen_judge_by_the_fresh_test_and_sweeps_record_it(tmp_path: Path) -> None:
    from persona_vectors.judge import DEFAULT_JUDGE_HISTORY, EmbeddingJudge, default_judge

    j = default_judge()
    assert isinstance(j, EmbeddingJudge) and j is EmbeddingJudge.default() and j._reader() is None
    # the rule that made it the default, as committed
    res = json.loads((ROOT / "docs" / "data" / "judge_fresh2" / "results.json").read_text())
    assert res["decision"]["default"] == "frozen" and DEFAULT_JUDGE_HISTORY[-1][1] == "EmbeddingJudge"
    assert "judge_fresh_test2.md" in DEFAULT_JUDGE_HISTORY[-1][2]
    rows = _judged_sweep_rows(tmp_path, j)
    assert rows and all(r["label_source"] == "embedding" and r["label"] in LABELS for r in rows)


def test_finetuned_judge_labels_rows_with_its_name(tmp_path: Path) -> None:
    from persona_vectors.judge.finetuned import stored_validation

    j = FinetunedJudge.default()
    assert stored_validation()["decision"]["verdict"] == "ADOPT"  # the corpus CV's verdict, kept as it was
    rows = _judged_sweep_rows(tmp_path, j)
    assert rows and all(r["label_source"] == "finetuned" and r["label"] in LABELS for r in rows)


def test_summaries_correct_shares_with_the_labelling_judges_held_out_confusion(tmp_path: Path) -> None:
    from conftest import make_tiny_model

    from persona_vectors import SweepConfig, run_sweep
    from persona_vectors.judge_validation import corrected_label_shares, held_out_confusion
    from persona_vectors.sweep import summarize, summary_markdown
    from persona_vectors.vector import PersonaVector, Provenance

    model = make_tiny_model()
    vec = PersonaVector([1], torch.ones(1, model.d_model),
                        Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name="v"))
    cfg = SweepConfig(vectors={"v": vec}, layers=[1], alphas=[0.0, 2.0], prompts=["Who are you?", "Hi"],
                      max_new_tokens=4)
    out = tmp_path / "s.jsonl"
    run_sweep(model, cfg, out, progress=False)  # no judge: rows carry no labels
    plain = summarize(out)
    assert all(c["corrected"] is None for c in plain["cells"]) and plain["judge"] is None
    s = summarize(out, judge=FinetunedJudge.default())  # labelled in memory, with probabilities and the judge's name
    assert s["judge"] == "finetuned" and len(s["cells"]) == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for c in s["cells"]:
        texts = [r["text"] for r in rows if r["alpha"] == c["alpha"]]
        ref = corrected_label_shares(FinetunedJudge.default().predict_proba(texts), held_out_confusion("finetuned"))
        assert c["corrected"] == pytest.approx(ref["corrected"]) and sum(c["corrected"].values()) == pytest.approx(1)
    assert "→" in summary_markdown(s) and "held-out confusion matrix" in summary_markdown(s)
    # rows labelled by two judges: no correction, and a note that says why
    mixed = tmp_path / "mixed.jsonl"
    res = FinetunedJudge.default().classify([r["text"] for r in rows])
    lines = []
    for i, (r, j) in enumerate(zip(rows, res)):
        lines.append(json.dumps({**r, "label": j.label, "label_scores": dict(j.scores),
                                 "label_source": "finetuned" if i % 2 else "embedding"}))
    mixed.write_text("\n".join(lines) + "\n")
    m = summarize(mixed)
    assert all(c["corrected"] is None for c in m["cells"])
    assert any("several judges (embedding, finetuned)" in n for n in m["notes"])
    assert held_out_confusion("llm") is None and len(held_out_confusion("embedding")) == len(LABELS)
