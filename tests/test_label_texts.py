"""The blind labelling script: export hides conditions, shards partition, import validates, passes stay apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import label_texts as L  # noqa: E402


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    texts = [f"I am text number {i}." for i in range(10)] + ["Red flag."]
    rows = [{"id": f"{i:016x}", "text": t, "condition": {"kind": "axis", "alpha": -0.5, "layer": 14}}
            for i, t in enumerate(texts)]
    path = tmp_path / "generations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(L, "CORPUS", path)
    monkeypatch.setattr(L, "LABELS_FILE", tmp_path / "labels.jsonl")
    return path


def test_export_is_blind_shuffled_and_shards_partition(corpus: Path, tmp_path: Path) -> None:
    outs = []
    for k in (1, 2, 3):
        out = tmp_path / f"blind{k}.jsonl"
        L.export_blind(out, shard=f"{k}/3", corpus=corpus)
        rows = L.read_jsonl(out)
        assert all(set(r) == {"id", "text"} for r in rows)  # no condition leaks into the blind file
        outs.append([r["id"] for r in rows])
    flat = [i for o in outs for i in o]
    assert sorted(flat) == sorted(L.corpus_texts(corpus)) and len(flat) == len(set(flat))
    assert flat != sorted(flat)  # shuffled, not in id order
    with pytest.raises(L.LabelFileError, match="K/N"):
        L.export_blind(tmp_path / "x.jsonl", shard="4/3", corpus=corpus)


def test_import_validates_labels_and_ids(corpus: Path) -> None:
    known = set(L.corpus_texts(corpus))
    some_id = sorted(known)[0]
    with pytest.raises(L.LabelFileError, match="label 'ghostly' is not one of .*no_self"):
        L.validate_labels([{"id": some_id, "label": "ghostly"}], known, "f.jsonl")
    with pytest.raises(L.LabelFileError, match="not a text of the corpus"):
        L.validate_labels([{"id": "nope", "label": "human"}], known, "f.jsonl")
    with pytest.raises(L.LabelFileError, match="holds no labels"):
        L.validate_labels([], known, "f.jsonl")


def test_passes_are_stored_apart_and_agreement_is_kappa(corpus: Path) -> None:
    ids = sorted(L.corpus_texts(corpus))
    first = [{"id": i, "label": "human", "note": ""} for i in ids[:6]] + [{"id": ids[6], "label": "no_self", "note": ""}]
    second = [{"id": i, "label": "human", "note": ""} for i in ids[:5]] + [{"id": ids[5], "label": "incoherent", "note": ""},
                                                                          {"id": ids[6], "label": "no_self", "note": ""}]
    L.merge_labels(first, "reader-a", 1)
    L.merge_labels(second, "reader-b", 2)
    L.merge_labels([{"id": ids[0], "label": "animal", "note": "changed my mind"}], "reader-a", 1)  # replaces, same pass
    rows = L.load_labels()
    assert len([r for r in rows if r["pass"] == 1]) == 7 and len([r for r in rows if r["pass"] == 2]) == 7
    ag = L.agreement(1, 2)
    assert ag["n"] == 7 and ag["agreement"] == pytest.approx(5 / 7)
    assert ag["disagreements"] == {"animal / human": 1, "human / incoherent": 1}
    assert -1.0 <= ag["kappa"] < 1.0


def test_cli_import_errors_are_one_line_exit_2(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": sorted(L.corpus_texts(corpus))[0], "label": "robot"}) + "\n")
    assert L.main(["import", str(bad), "--labeller", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label 'robot' is not one of" in err[0]
    assert not (tmp_path / "labels.jsonl").exists()
