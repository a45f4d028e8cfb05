"""The shipped dish table (issue 19, part 1), its loader's validation and the answer classifier; fast, no model."""

from __future__ import annotations

import copy
import doctest
import json
from pathlib import Path

import pytest

from persona_vectors.datasets import DataError
from persona_vectors.datasets import dishes as D
from persona_vectors.datasets._reading import _data_root


@pytest.fixture(scope="module")
def dishes() -> list[D.Dish]:
    return D.load_dishes()


def _raw() -> dict:
    return json.loads(_data_root().joinpath("dishes", "dishes_v1.json").read_text(encoding="utf-8"))


def _write(tmp_path: Path, obj: dict) -> Path:
    p = tmp_path / "d.json"
    p.write_text(json.dumps(obj), encoding="utf-8")
    return p


def test_shipped_table_is_balanced_and_documented(dishes) -> None:
    assert "v1" in D.list_dish_versions() and D.load_dishes("v1") == dishes
    isr, intl = D.read_out_candidates(dishes)
    assert len(isr) == len(intl) >= 12
    assert len(set(isr) | set(intl)) == 2 * len(isr)
    # one international candidate per cuisine, none of them Israeli-adjacent
    cuis = [d.cuisine for d in dishes if d.candidate and not d.israeli]
    assert len(set(cuis)) == len(cuis) and not {"Levantine", "Jewish", "Middle Eastern"} & set(cuis)
    # contested attributions are flagged with a reason; the famous shared dishes among them
    amb = {d.name for d in dishes if d.ambiguous}
    assert {"Hummus", "Falafel", "Shakshuka"} <= amb
    assert all(d.note for d in dishes if d.ambiguous or d.israeli)
    # the sensitivity list keeps only the unambiguous Israeli candidates
    strict, _ = D.read_out_candidates(dishes, include_ambiguous=False)
    assert set(strict) < set(isr) and "Ptitim" in strict and "Hummus" not in strict
    # no candidate name gives the cuisine away
    assert not any("israel" in n.lower() for n in isr + intl)


@pytest.mark.parametrize("text, cuisine, name", [
    ("Sure! Try a spicy shakshouka.", "Israeli", "Shakshuka"),
    ("FALAFEL in a pita", "Israeli", "Falafel"),
    ("Israeli couscous with herbs", "Israeli", "Ptitim"),       # longest match beats "couscous"
    ("couscous with herbs", "Maghrebi", "Couscous"),
    ("Jerusalem kugel", "Israeli", "Jerusalem kugel"),
    ("a sweet kugel", "Jewish", "Kugel"),
    ("Thai green curry", "Thai", "Green curry"),                # longest match beats "curry"
    ("Pizza or sushi?", "Italian", "Pizza"),                    # equal length: the earliest
    ("Fish & chips", "British", "Fish and chips"),
    ("crêpe", "French", "Crêpes"),
    ("Schnitzel", "Austrian", "Wiener schnitzel"),
    ("Beans on toast", D.UNKNOWN, None),
    ("a phone call", D.UNKNOWN, None),                          # whole words only: not "pho"
    ("", D.UNKNOWN, None),
])
def test_classifier(dishes, text: str, cuisine: str, name: str | None) -> None:
    assert D.classify_cuisine(text, dishes) == cuisine
    hit = D.classify_dish(text, dishes)
    assert (hit.name if hit else None) == name
    assert D.classify_cuisine(text) == cuisine  # default table


def test_every_name_classifies_as_its_own_dish(dishes) -> None:
    for d in dishes:
        for n in d.names:
            assert D.classify_dish(f"I would say {n.upper()}!", dishes) == d, n


def test_fold_text() -> None:
    assert D.fold_text("  Crêpes & Fish-n-Chips! ") == "crepes fish n chips"
    assert D.fold_text("Shepherd's_pie") == "shepherd s pie"


@pytest.mark.parametrize("edit, message", [
    (lambda o: o["dishes"].append({**o["dishes"][0], "name": "Shakshouka", "aliases": []}), "already a name"),
    (lambda o: o["dishes"][0].update(note=None), "without a \"note\""),
    (lambda o: o["dishes"][0].update(cuisine="Isreali"), "did you mean"),
    (lambda o: o["dishes"][0].update(candidate=False), "balanced"),
    (lambda o: o["dishes"][0].update(candidate="yes"), "true or false"),
    (lambda o: o.update(cuisines=[c for c in o["cuisines"] if c != "Israeli"]), "Israeli"),
    (lambda o: o.update(schema_version=2), "schema"),
])
def test_invalid_tables_are_refused(tmp_path, edit, message: str) -> None:
    obj = copy.deepcopy(_raw())
    edit(obj)
    with pytest.raises(DataError, match=message):
        D.load_dishes(path=_write(tmp_path, obj))


def test_user_file_and_unknown_version(tmp_path) -> None:
    assert D.load_dishes(path=_write(tmp_path, _raw())) == D.load_dishes()
    with pytest.raises(DataError, match="no dish table version"):
        D.load_dishes("v9")


def test_docstring_examples() -> None:
    assert doctest.testmod(D).failed == 0
