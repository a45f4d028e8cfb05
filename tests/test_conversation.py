"""Scripted multi-turn conversations and per-turn projections (tiny random model, fast), the drift experiment's
decision rule on planted records (no model), and one slow ``--quick`` run replayed by ``recompute``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from persona_vectors import steer
from persona_vectors.conversation import (
    assistant_turn_masks,
    load_drift_scripts,
    run_scripts,
    turn_projections,
)
from persona_vectors.steer import token_projections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import drift as D  # noqa: E402

SCRIPTS = [["Hello there.", "Tell me more.", "And then?"], ["Write code.", "Fix it."]]


def test_run_scripts_plays_ragged_scripts_in_order_and_reproducibly(tiny) -> None:
    a = run_scripts(tiny, SCRIPTS, max_new_tokens=6, temperature=1.0, seed=3, progress=False)
    b = run_scripts(tiny, SCRIPTS, max_new_tokens=6, temperature=1.0, seed=3, progress=False)
    assert a == b
    assert [len(c) for c in a] == [6, 4]
    for conv, script in zip(a, SCRIPTS):
        assert [m["role"] for m in conv] == ["user", "assistant"] * len(script)
        assert [m["content"] for m in conv if m["role"] == "user"] == script
    seen = []
    run_scripts(tiny, SCRIPTS, max_new_tokens=2, progress=False, on_turn=lambda t, convs: seen.append((t, len(convs[0]))))
    assert seen == [(0, 2), (1, 4), (2, 6)]
    with_system = run_scripts(tiny, SCRIPTS[:1], system="Be brief.", max_new_tokens=2, progress=False)
    assert with_system[0][0] == {"role": "system", "content": "Be brief."}


def test_run_scripts_applies_active_steering(tiny) -> None:
    plain = run_scripts(tiny, SCRIPTS, max_new_tokens=8, progress=False)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(tiny.d_model, generator=g)
    with steer(tiny, v, 40.0, layers=[1]):
        steered = run_scripts(tiny, SCRIPTS, max_new_tokens=8, progress=False)
    assert steered != plain


def test_turn_projections_equal_turn_by_turn_reads(tiny, monkeypatch) -> None:
    convs = run_scripts(tiny, SCRIPTS, max_new_tokens=6, temperature=1.0, seed=0, progress=False)
    g = torch.Generator().manual_seed(2)
    vecs = {"a": torch.randn(tiny.d_model, generator=g), "b": torch.randn(tiny.d_model, generator=g)}
    assert all(assistant_turn_masks(tiny, c) is not None for c in convs)  # ChatML: turns are prefixes
    tp = turn_projections(tiny, convs, vecs, [1, 3], progress=False)
    for name, v in vecs.items():
        for layer in (1, 3):
            m = tp.matrix(name, layer)
            assert m.shape == (2, 3) and math.isnan(m[1, 2])
            for ci, conv in enumerate(convs):
                ends = [i for i, x in enumerate(conv) if x["role"] == "assistant"]
                for t, i in enumerate(ends):
                    if not conv[i]["content"].strip():
                        assert math.isnan(m[ci, t])
                        continue
                    ref = float(token_projections(tiny, v, layer, [conv[: i + 1]]).mean())
                    assert m[ci, t] == pytest.approx(ref, abs=1e-4)
    # a template whose history is not a prefix: read turn by turn, same values
    import persona_vectors.conversation as conv_mod

    monkeypatch.setattr(conv_mod, "assistant_turn_masks", lambda model, msgs: None)
    again = turn_projections(tiny, convs, vecs, [1, 3], progress=False)
    np.testing.assert_allclose(again.matrix("a", 3), tp.matrix("a", 3), atol=1e-4)


def test_empty_reply_is_a_missing_value_and_bad_inputs_name_the_fix(tiny) -> None:
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""},
            {"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Yes, here."}]
    v = torch.ones(tiny.d_model)
    m = turn_projections(tiny, [conv], v, [2], progress=False).matrix("vector", 2)
    assert math.isnan(m[0, 0]) and math.isfinite(m[0, 1])
    with pytest.raises(TypeError, match="list of conversations"):
        run_scripts(tiny, "Hello", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        run_scripts(tiny, [["Hi", "  "]], progress=False)
    with pytest.raises(ValueError, match="at least one"):
        run_scripts(tiny, [], progress=False)
    with pytest.raises(ValueError, match="d_model"):
        turn_projections(tiny, [conv], torch.ones(7), [2], progress=False)
    with pytest.raises(ValueError, match="zero or not finite"):
        turn_projections(tiny, [conv], torch.zeros(tiny.d_model), [2], progress=False)
    with pytest.raises(ValueError, match="no assistant message"):
        turn_projections(tiny, [conv[:1]], v, [2], progress=False)
    with pytest.raises(KeyError, match="have names"):
        turn_projections(tiny, [conv], v, [2], progress=False).matrix("other", 2)


def test_shipped_drift_scripts() -> None:
    doc = load_drift_scripts()
    assert sorted(doc) == ["coding", "emotional", "philosophical", "surroundings"]
    for kind, convs in doc.items():
        assert len(convs) == 12 and len({c["id"] for c in convs}) == 12
        assert all(len(c["turns"]) == 10 and all(t.strip() for t in c["turns"]) for c in convs)
    with pytest.raises(FileNotFoundError, match="drift_v1"):
        load_drift_scripts("nope")


# ------------------------------------------------------------------------------------------- the experiment
PLAN = D.P.read_plan(D.PLAN)


def _records(slopes: dict[str, float], cap_lift: dict[str, float], coh_cost: float = 0.0, seed: int = 0
             ) -> tuple[list[dict], dict]:
    """Planted turn records: projection = 10 + slope·t + noise; capping adds ``cap_lift`` to turns ≥ 4."""
    rng = np.random.default_rng(seed)
    recs: list[dict] = [{"kind": "axis", "layer": L, "axis_norm": 20.0, "threshold": 5.0 if L != 20 else None,
                         "default_norm": 30.0} for L in (12, 13, 14, 15, 20)]
    for kind in PLAN["kinds"]:
        for c in range(PLAN["n_conversations"]):
            base = rng.normal(0, 1)
            for cond in D.CONDITIONS:
                for t in range(1, PLAN["n_turns"] + 1):
                    lift = cap_lift[kind] if cond == "capped" and t >= 4 else 0.0
                    p = 10 + base + slopes[kind] * t + lift + rng.normal(0, 0.3)
                    recs.append({"kind": "turn", "condition": cond, "conv_kind": kind, "conv": f"{kind}_{c:02d}",
                                 "turn": t, "user": "u", "text": "I am here.", "proj": {"14": p, "20": 2 * p},
                                 "act_norm": {"14": 30.0, "20": 60.0},
                                 "coherence": 0.8 - (coh_cost if cond == "capped" else 0.0) + rng.normal(0, 0.01),
                                 "perplexity": 10.0, "repetition": 0.0, "label": "ai_assistant",
                                 "judge": {"ai_assistant": 1.0}})
    config = {"experiment": "drift", "config": {"mode": "default", "plan": PLAN, "deviations": []},
              "prereg": {"commit": "abc", "sha256": "0" * 64, "path": D.PLAN}, "library_version": "0",
              "judge": {"accuracy_real_batch1": 0.796}}
    return recs, config


@pytest.mark.parametrize("slopes,lift,cost,h1,h2", [
    ({"coding": 0.0, "emotional": -1.0, "philosophical": -1.0, "surroundings": 0.0}, 5.0, 0.0, "SUPPORTED", "SUPPORTED"),
    ({"coding": 0.0, "emotional": -1.0, "philosophical": 0.0, "surroundings": 0.0}, 5.0, 0.2, "PARTIAL", "PARTIAL"),
    ({"coding": -1.0, "emotional": -1.0, "philosophical": -1.0, "surroundings": -1.0}, 0.0, 0.0, "NOT SUPPORTED", "NOT TESTABLE"),
    ({"coding": 0.0, "emotional": -1.0, "philosophical": -1.0, "surroundings": -1.0}, 0.0, 0.0, "SUPPORTED", "NOT SUPPORTED"),
])
def test_drift_verdicts_from_planted_records(slopes, lift, cost, h1, h2) -> None:
    recs, config = _records(slopes, {k: lift for k in PLAN["kinds"]}, coh_cost=cost)
    res = D.summarize(recs, config)
    assert res["verdict"]["h1"] == h1 and res["verdict"]["h2"] == h2
    prim = res["layers"]["14"]
    for k, s in slopes.items():
        assert prim["slopes"]["uncapped"][k]["lo"] < s < prim["slopes"]["uncapped"][k]["hi"] + 1e-9 or abs(
            prim["slopes"]["uncapped"][k]["mean"] - s) < 0.05
    if cost:  # capping lifts but costs coherence: the label says so
        assert res["h2"]["emotional"] == "HOLDS, COHERENCE COST"
    text = D.render(res, config)
    assert f"H1 verdict (computed from the plan's rule): {h1}" in text
    assert D.summarize(recs, config) == res  # deterministic


def test_drift_quick_mode_never_gives_a_verdict() -> None:
    recs, config = _records({k: -1.0 for k in PLAN["kinds"]}, {k: 1.0 for k in PLAN["kinds"]})
    config["config"]["mode"] = "quick"
    res = D.summarize(recs, config)
    assert res["verdict"] is None and "No verdict" in D.render(res, config)


@pytest.mark.slow
def test_drift_quick_run_replays(tmp_path, smol) -> None:
    import recompute

    res = D.main(["--quick", "--threads", "1", "--out", str(tmp_path / "q")])
    assert res["verdict"] is None and res["n_turns"] == 2 * 4 * 3
    out = recompute.recompute(tmp_path / "q")
    assert out["numbers"] > 0 and out["report_numbers"] > 0
    assert (tmp_path / "q" / "drift.html").is_file()


# ------------------------------------------------------------------------------------------- per-turn read-outs
def test_conversation_readout_per_turn_with_priors_and_controls(tiny) -> None:
    from persona_vectors import SteerSpec
    from persona_vectors.conversation import conversation_readout
    from persona_vectors.readout import group_readout, user_readout_with_controls

    users = ["Describe your surroundings.", "Who are you talking to?"]
    cands = ["a ghost", "a journalist", "a friend"]
    r = conversation_readout(tiny, users, user_candidates=cands, max_new_tokens=4, progress=False,
                             self_questions=["Who are you?"])
    assert [t.turn for t in r.turns] == [1, 2] and [t.user for t in r.turns] == users
    assert len(r.messages) == 4 and r.turns[1].reply == r.messages[3]["content"]
    m = r.self_mass()
    assert m.shape == (2, len(r.groups)) and np.allclose(m.sum(1), 1.0)
    assert r.user_probs().shape == (2, 3) and np.allclose(r.user_probs().sum(1), 1.0)
    assert r.user_attribution().shape == (2, 3)
    # each turn equals the read-outs asked directly as the next user turn of the history
    hist = list(r.messages[:2])
    direct = group_readout(tiny, "v1", [hist + [{"role": "user", "content": "Who are you?"}]])
    assert r.turns[0].self_readout.mass == pytest.approx(direct.mass)
    du = user_readout_with_controls(tiny, cands[0], cands, history=hist)
    assert r.user_probs()[0] == pytest.approx([du.p("user", c) for c in cands])
    # a finished conversation is read as it is; steering applies and carries its unsteered prior
    g = torch.Generator().manual_seed(4)
    spec = SteerSpec(torch.randn(tiny.d_model, generator=g), 20.0, layers=[1])
    s = conversation_readout(tiny, list(r.messages), steering=spec, user_candidates=cands, progress=False,
                             self_questions=["Who are you?"])
    assert s.messages == r.messages and s.steering
    assert s.self_mass(prior=True) == pytest.approx(r.self_mass())  # the prior = the same history unsteered
    assert not np.allclose(s.self_mass(), r.self_mass())
    assert s.to_dict()["turns"][1]["turn"] == 2
    fig = s.figure()
    assert len(fig.data) == len(s.groups) + 2 * 3
    from persona_vectors.models import active_hook_points

    assert active_hook_points(tiny) == []


def test_conversation_readout_bad_inputs(tiny) -> None:
    from persona_vectors.conversation import conversation_readout

    with pytest.raises(ValueError, match="non-empty list"):
        conversation_readout(tiny, [], progress=False)
    with pytest.raises(ValueError, match="no assistant turn"):
        conversation_readout(tiny, [{"role": "user", "content": "Hi"}], progress=False)
    with pytest.raises(TypeError, match="SteerSpec"):
        conversation_readout(tiny, ["Hi"], steering=[torch.ones(tiny.d_model)], progress=False)
    with pytest.raises(ValueError, match="history already starts with a system"):
        from persona_vectors.readout import user_readout_with_controls

        user_readout_with_controls(tiny, "a ghost", ["a ghost", "a friend"], system="x",
                                   history=[{"role": "system", "content": "y"}])
