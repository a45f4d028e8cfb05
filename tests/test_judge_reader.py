"""The judge's reader view (persona_vectors.judge.reader) and the reader variant of EmbeddingJudge, on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from persona_vectors.judge import LABELS, EmbeddingJudge
from persona_vectors.judge.reader import READER_LAYERS, Reader, _layers_for

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["I am a ghost who walks the halls.", "As an AI assistant, I can help you.", "the the the the",
         "I am a teacher at the village school.", "The night is dark and the wind is cold.", "Hi"]


def test_layers_rescale_to_depth() -> None:
    assert _layers_for(30) == READER_LAYERS
    assert _layers_for(4) == (1, 2, 3)
    assert all(1 <= L <= 18 for L in _layers_for(18))


def test_encode_shape_and_batch_invariance(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path))
    reader = Reader(tiny, batch_size=4, cache=False)
    states = reader.encode(TEXTS)
    assert states.shape == (len(TEXTS), reader.width) == (len(TEXTS), len(reader.layers) * tiny.d_model)
    assert states.dtype == np.float32
    one_by_one = np.vstack([Reader(tiny, batch_size=1, cache=False).encode([t]) for t in TEXTS])
    np.testing.assert_allclose(states, one_by_one, atol=1e-4)  # left padding + position ids: no leak
    assert not np.allclose(states[0], states[1])
    assert Reader(tiny, cache=False).encode([]).shape == (0, reader.width)


def test_prompt_truncates_and_strips() -> None:
    p = Reader.prompt("  " + "x" * 5000 + "  ")
    assert "x" * 600 in p and "x" * 601 not in p and '"x' in p


def test_disk_cache_round_trip(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path))
    reader = Reader(tiny)
    first = reader.encode(TEXTS[:3])
    files = list((tmp_path / "judge").glob("reader_v*.npz"))
    assert len(files) == 1
    calls = []
    monkeypatch.setattr(Reader, "_forward", lambda self, texts: calls.append(texts) or None)
    again = Reader(tiny).encode(TEXTS[:3])  # served from disk: no forward pass
    assert calls == []
    np.testing.assert_allclose(again, first, rtol=2e-3, atol=2e-3)  # float16 on disk


def test_unwritable_cache_warns_and_still_reads(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="PERSONA_VECTORS_CACHE"):
        out = Reader(tiny).encode(TEXTS[:2])
    assert out.shape[0] == 2


def test_reader_variant_fits_and_predicts(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path))
    labels = ["supernatural", "ai_assistant", "incoherent", "human", "no_self", "incoherent"]
    judge = EmbeddingJudge(reader=Reader(tiny), C=1.0).fit(TEXTS, labels)
    proba = judge.predict_proba(TEXTS + [""])
    assert proba.shape == (len(TEXTS) + 1, len(LABELS))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert proba[-1, LABELS.index("incoherent")] == 1.0
    assert judge.reader_mean_.shape == (Reader(tiny).width,)
    assert judge.classify(TEXTS[:1])[0].source == "embedding+reader"
    # the reader block is centred on the training mean and each layer scaled to norm 1/sqrt(layers)
    X = judge._design(judge.embedder_.encode(TEXTS), TEXTS)
    Z = judge._reader_transform(X)[:, judge.n_head_:].reshape(len(TEXTS), judge.reader_blocks_, -1)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=2), 1 / np.sqrt(judge.reader_blocks_), rtol=1e-6)
    # without the reader the design is the default one
    plain = EmbeddingJudge(C=1.0).fit(TEXTS, labels)
    assert plain.classify(TEXTS[:1])[0].source == "embedding"
    assert not hasattr(plain, "reader_mean_")


def test_cli_reader_flag_scores_the_reader_variant(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from persona_vectors.cli import app

    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path))
    labels = ["supernatural", "ai_assistant", "incoherent", "human", "no_self", "incoherent"]
    small = EmbeddingJudge(reader=Reader(tiny), C=1.0).fit(TEXTS, labels)
    asked = []
    monkeypatch.setattr(EmbeddingJudge, "default", classmethod(lambda cls, reader=False: asked.append(reader) or small))
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(TEXTS, labels)))
    r = CliRunner().invoke(app, ["judge", "validate", "--labelled", str(f), "--reader"])
    assert r.exit_code == 0, r.output
    assert asked == [True] and "Reader-variant judge" in r.output


def test_save_load_round_trip(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_tiny_model

    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path))
    labels = ["supernatural", "ai_assistant", "incoherent", "human", "no_self", "incoherent"]
    judge = EmbeddingJudge(reader=Reader(tiny), C=1.0, temperature=0.8).fit(TEXTS, labels)
    path = judge.save(tmp_path / "j.npz", training_sha256="abc")
    back = EmbeddingJudge.load(path, reader=Reader(tiny))
    np.testing.assert_allclose(back.predict_proba(TEXTS), judge.predict_proba(TEXTS), atol=1e-12)
    assert back.meta_ == {"training_sha256": "abc"} and back.temperature == 0.8
    with pytest.raises(ValueError, match="refit the judge"):  # another reader model's states
        EmbeddingJudge.load(path, reader=Reader(make_tiny_model(seed=1)))
    plain = EmbeddingJudge(C=1.0).fit(TEXTS, labels)
    np.testing.assert_allclose(EmbeddingJudge.load(plain.save(tmp_path / "p.npz")).predict_proba(TEXTS),
                               plain.predict_proba(TEXTS), atol=1e-12)
    (tmp_path / "junk.npz").write_bytes(b"not a judge")
    with pytest.raises(ValueError, match="not a judge saved by EmbeddingJudge.save"):
        EmbeddingJudge.load(tmp_path / "junk.npz")


def test_shipped_reader_judge_is_current() -> None:
    """The fitted reader judge in the package was fitted on exactly the shipped training data (labels change →
    rerun experiments/judge_validation_report.py, which rewrites it)."""
    import json

    from persona_vectors.judge import embedding as E

    with np.load(E.READER_JUDGE_PATH, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
    assert header["meta"]["training_sha256"] == E.shipped_training_sha256()
    assert header["reader"]["blocks"] == len(READER_LAYERS)
