"""The shipped coauthor dataset (issue 19, part 2) and its loader's validation; fast, no model."""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from persona_vectors.datasets import (
    Coauthor,
    DataError,
    MIN_COAUTHORS,
    Scientist,
    list_coauthor_versions,
    load_coauthors,
)
from persona_vectors.datasets._reading import _data_root


def _fold(s: str) -> str:
    d = unicodedata.normalize("NFKD", s)
    return "".join(c for c in d if not unicodedata.combining(c)).lower()


def _surnames(sc: Scientist) -> set[str]:
    """The target's surname(s): the last word of the name and of every variant, accents folded."""
    out = set()
    for v in (sc.name,) + sc.name_variants:
        words = re.findall(r"[\w']+", _fold(v))
        if words:
            out.add(words[-1])
    return out


@pytest.fixture(scope="module")
def scientists() -> list[Scientist]:
    return load_coauthors()


def test_shipped_file_loads_with_typed_records(scientists):
    assert "v1" in list_coauthor_versions()
    assert all(isinstance(s, Scientist) for s in scientists)
    assert all(isinstance(c, Coauthor) for s in scientists for c in s.coauthors)
    assert all(isinstance(s.name_variants, tuple) and isinstance(s.coauthors, tuple) for s in scientists)
    assert all(s.name in s.name_variants for s in scientists)
    assert load_coauthors("v1") == scientists
    assert load_coauthors() is not scientists  # a fresh list each call


def test_counts(scientists):
    assert len(scientists) >= 16
    per_field = Counter(s.field for s in scientists)
    assert sum(1 for n in per_field.values() if n >= 3) >= 4, per_field
    assert all(len(s.coauthors) >= MIN_COAUTHORS >= 10 for s in scientists)
    pairs = [c for s in scientists for c in s.coauthors]
    assert sum(c.certain for c in pairs) / len(pairs) >= 0.8


def test_top_level_metadata():
    obj = json.loads(_data_root().joinpath("coauthors", "coauthors_v1.json").read_text(encoding="utf-8"))
    assert obj["version"] == "v1"
    assert obj["description"].strip()
    assert "memory" in json.dumps(obj["sources"]).lower()  # the caveat is stated
    assert set(obj["fields"]) == {s["field"] for s in obj["scientists"]}


def test_every_pair_has_evidence_or_a_reason(scientists):
    for s in scientists:
        for c in s.coauthors:
            if c.certain:
                assert c.work and c.year, (s.name, c.name)
            else:
                assert c.note, (s.name, c.name)
            if c.gives_away:
                assert c.note, (s.name, c.name)


def test_no_coauthor_carries_the_target_surname_unless_flagged(scientists):
    for s in scientists:
        pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in _surnames(s)) + r")\b")
        for c in s.coauthors:
            if not c.gives_away:
                assert not pattern.search(_fold(c.name)), (s.name, c.name)


def test_most_coauthors_do_not_give_the_target_away(scientists):
    for s in scientists:
        assert sum(not c.gives_away for c in s.coauthors) >= MIN_COAUTHORS // 2, s.name


# --- malformed files ---------------------------------------------------------------------------------


def _coauthor(name: str, **kw) -> dict:
    d = {"name": name, "work": f"A Joint Paper with {name}", "year": 1950, "certain": True,
         "gives_away": False, "note": None, "checked": None}
    d.update(kw)
    return d


def _good() -> dict:
    return {
        "schema_version": 1,
        "version": "v1",
        "description": "test",
        "sources": {"basis": "test"},
        "fields": ["physics"],
        "scientists": [
            {"name": "Ada Example", "field": "physics", "name_variants": ["Ada Example", "Example"],
             "coauthors": [_coauthor(f"Coauthor Number{i}") for i in range(10)]},
        ],
    }


def _write(tmp_path: Path, obj: dict) -> Path:
    p = tmp_path / "coauthors_bad.json"
    p.write_text(json.dumps(obj), encoding="utf-8")
    return p


def _err(tmp_path: Path, obj: dict) -> str:
    p = _write(tmp_path, obj)
    with pytest.raises(ValueError) as ei:
        load_coauthors(path=p)
    assert isinstance(ei.value, DataError)
    msg = str(ei.value)
    assert str(p) in msg
    return msg


def test_good_user_file_loads(tmp_path):
    out = load_coauthors(path=_write(tmp_path, _good()))
    assert out[0].name == "Ada Example" and len(out[0].coauthors) == 10


def test_missing_field(tmp_path):
    obj = _good()
    del obj["scientists"][0]["field"]
    msg = _err(tmp_path, obj)
    assert "Ada Example" in msg and '"field"' in msg


def test_missing_coauthor_key(tmp_path):
    obj = _good()
    del obj["scientists"][0]["coauthors"][3]["certain"]
    msg = _err(tmp_path, obj)
    assert "Ada Example" in msg and "Coauthor Number3" in msg and '"certain"' in msg


def test_missing_top_level_key(tmp_path):
    obj = _good()
    del obj["sources"]
    assert '"sources"' in _err(tmp_path, obj)


def test_too_few_coauthors(tmp_path):
    obj = _good()
    obj["scientists"][0]["coauthors"] = obj["scientists"][0]["coauthors"][:9]
    msg = _err(tmp_path, obj)
    assert "Ada Example" in msg and "9 coauthor" in msg and "at least 10" in msg


def test_duplicate_coauthor(tmp_path):
    obj = _good()
    obj["scientists"][0]["coauthors"].append(_coauthor("coauthor  number4"))
    msg = _err(tmp_path, obj)
    assert "Ada Example" in msg and "twice" in msg


def test_coauthor_is_the_scientist(tmp_path):
    obj = _good()
    obj["scientists"][0]["coauthors"].append(_coauthor("Example"))
    msg = _err(tmp_path, obj)
    assert "Ada Example" in msg and "own name variant" in msg


def test_unknown_field(tmp_path):
    obj = _good()
    obj["scientists"][0]["field"] = "physic"
    msg = _err(tmp_path, obj)
    assert "Ada Example" in msg and "physic" in msg


def test_certain_without_work_and_uncertain_without_note(tmp_path):
    obj = _good()
    obj["scientists"][0]["coauthors"][0]["work"] = None
    assert '"certain": true' in _err(tmp_path, obj)
    obj = _good()
    obj["scientists"][0]["coauthors"][0]["certain"] = False
    assert '"note"' in _err(tmp_path, obj)
    obj = copy.deepcopy(obj)
    obj["scientists"][0]["coauthors"][0]["note"] = "title not remembered"
    obj["scientists"][0]["coauthors"][0]["work"] = None
    obj["scientists"][0]["coauthors"][0]["year"] = None
    assert not load_coauthors(path=_write(tmp_path, obj))[0].coauthors[0].certain


def test_bad_year_and_bad_json(tmp_path):
    obj = _good()
    obj["scientists"][0]["coauthors"][0]["year"] = "1950"
    assert '"year"' in _err(tmp_path, obj)
    p = tmp_path / "broken.json"
    p.write_text('{"schema_version": 1,', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        load_coauthors(path=p)


def test_unknown_version():
    with pytest.raises(DataError, match="no coauthor dataset version"):
        load_coauthors("v99")
