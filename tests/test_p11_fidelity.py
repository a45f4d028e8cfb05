"""benchmarks/p11_fidelity.py: the decision rules computed by code, the report, and a run on the tiny model."""

from __future__ import annotations

import pytest

from benchmarks import p11_fidelity as F


def _rows(opener: list[float], last: list[float], self_: list[float]) -> dict:
    return {"answer route vs itself, other prompt": {"rho": self_}, "last_prompt": {"rho": last},
            "opener 'I am'": {"rho": opener}}


def test_rules_are_computed_from_the_rows() -> None:
    # better everywhere, 0.86 at 21-29 with a ceiling of 0.80: rule 1 (absolute 0.9) keeps, rule 2 adopts
    rows = _rows([0.86] * 30, [0.7] * 30, [0.8] * 30)
    assert F.decide("heldout", rows)["adopt_opener"] is False
    d = F.decide("confirm", rows)
    assert d["adopt_opener"] is True and d["opener_wins_15_29"] == 15 and d["self_median_21_29"] == pytest.approx(0.8)
    # below the ceiling by more than 0.05: rule 2 keeps; too few wins: keeps
    assert F.decide("confirm", _rows([0.70] * 30, [0.6] * 30, [0.8] * 30))["adopt_opener"] is False
    assert F.decide("confirm", _rows([0.9] * 21 + [0.9] * 9, [0.95] * 21 + [0.8] * 9, [0.8] * 30))["adopt_opener"] is False
    assert F.decide("heldout", _rows([0.95] * 30, [0.9] * 30, [0.8] * 30))["adopt_opener"] is True
    with pytest.raises(KeyError, match="no decision rule"):
        F.decide("explore", rows)


@pytest.mark.slow
def test_run_and_render_on_the_tiny_model(tiny, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path))
    res = F.run(tiny, ("heldout",), roles=["ghost", "pirate_captain", "librarian", "robot"], max_new_tokens=3)
    rows = res["splits"]["heldout"]["rows"]
    assert set(rows) == {"answer route vs itself, other prompt", *F.READS}
    assert all(len(r["rho"]) == tiny.n_layers and all(0 <= x <= 1 for x in r["rho"]) for r in rows.values())
    got, again = res["decisions"]["heldout"], F.decide("heldout", rows)  # the tiny model has no layers 21-29: NaN medians
    assert got["adopt_opener"] is again["adopt_opener"] is False and got["opener_wins_15_29"] == again["opener_wins_15_29"]
    md = F.render(res)
    assert "## heldout: role prompt 2" in md and "rule 1" in md and ("**adopt**" in md or "**keep**" in md)


def test_render_only_rewrites_the_report_from_the_json(tmp_path) -> None:
    import json

    rows = {k: {**v, **F._bands(v["rho"])} for k, v in _rows([0.86] * 30, [0.7] * 30, [0.8] * 30).items()}
    res = {"rules": F.RULES, "threads": 2, "decisions": {"confirm": F.decide("confirm", rows)},
           "splits": {"confirm": {"prompt_index": 2, "questions": ["q7", "q8", "q9"], "rows": rows}}}
    (tmp_path / "p11_fidelity.json").write_text(json.dumps(res))
    F.main(["--render", "--out", str(tmp_path)])
    md = (tmp_path / "p11_fidelity.md").read_text()
    assert "## confirm: role prompt 3, questions: q7; q8; q9" in md and "**adopt** the opener read" in md
    assert "| opener 'I am' | 0.860 | 0.860 | 0.860 |" in md
