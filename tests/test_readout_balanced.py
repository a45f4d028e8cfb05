"""Balanced, self-checking identity read-outs (issue 13, deliverable 3): versioned candidate sets, per-token
scoring, unsteered prior and lift, the robustness flag, the user read-out's controls, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from persona_vectors import PersonaVector, Provenance, Site
from persona_vectors.datasets import DataError
from persona_vectors.readout import (
    CandidateSet,
    ControlledUserReadout,
    GroupReadout,
    available_candidate_sets,
    continuation_tokens,
    group_readout,
    identity_readout,
    identity_readout_batch,
    load_candidate_set,
    load_user_controls,
    score_continuations,
    user_readout_with_controls,
)
from persona_vectors.steer import steer

GROUPS_V1 = ("ai", "human", "historical_figure", "supernatural", "nature_cosmic", "animal", "object",
             "fantasy_creature")
QS = ["Who are you?", "What are you?"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs with one torch thread (see conftest.one_thread)."""


def _write(tmp: Path, doc: dict) -> Path:
    p = tmp / "set.json"
    p.write_text(json.dumps(doc))
    return p


def _small_set() -> dict:
    return {"name": "t", "prefix": "I am", "questions": ["Who are you?"],
            "groups": {"a": ["a ghost", "a spirit"], "b": ["the ocean", "the moon"]},
            "distractors": {"d": ["a river", "a star"]}}


# ------------------------------------------------------------------------------------------- candidate sets
def test_v1_is_balanced_and_prefix_free():
    cs = load_candidate_set("v1")
    assert "v1" in available_candidate_sets() and cs.name == "v1"
    assert cs.group_names == GROUPS_V1
    assert {len(c) for c in cs.groups.values()} == {6} and cs.group_size == 6
    assert {len(c) for c in cs.distractors.values()} == {6}
    every = list(cs.candidates) + [c for d in cs.distractors.values() for c in d]
    assert len(every) == len({c.casefold() for c in every})
    assert not [(a, b) for a in every for b in every if a != b and b.casefold().startswith(a.casefold())]
    assert cs.prefix == "I am" and len(cs.questions) == 4
    assert set(cs.token_lengths) == set(every)
    for g, names in list(cs.groups.items()) + list(cs.distractors.items()):
        lens = [cs.token_lengths[c] for c in names]
        assert max(lens) - min(lens) <= 1, g
    assert cs.group_of("a ghost") == "supernatural" and cs.group_of("the sun") == "nature_cosmic_extra"
    assert cs.counts_as == {"nature_cosmic_extra": "nature_cosmic", "supernatural_extra": "supernatural"}
    assert cs.scored_as("nature_cosmic_extra") == "nature_cosmic"
    assert CandidateSet(**{**cs.__dict__}).to_dict()["distractors"]["supernatural_extra"]["counts_as"] == "supernatural"
    assert load_candidate_set(cs.source.replace("persona_vectors/data", str(_data_dir()))).candidates == cs.candidates


def _data_dir() -> Path:
    import persona_vectors

    return Path(persona_vectors.__file__).parent / "data"


def test_v1_token_lengths_match_the_smollm2_tokenizer():
    """The recorded lengths are the SmolLM2 tokenizer's (the cached tokenizer.json; skipped without the cache)."""
    from conftest import smol_cache_dir

    found = smol_cache_dir()
    if found is None:
        pytest.skip("no cached SmolLM2 tokenizer (run load_model() once)")
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(found / "tokenizer.json"))  # the same ids as AutoTokenizer, half the load time
    cs = load_candidate_set("v1")
    got = {c: len(continuation_tokens(tok, "I am", c)[1]) for c in cs.token_lengths}
    assert got == cs.token_lengths


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["groups"]["a"].append("a demon"), r"group sizes differ \(a=3, b=2, d=2\)"),
    (lambda d: d["distractors"].update(d=["a river", "a star", "a tree"]), "group sizes differ"),
    (lambda d: d["groups"]["b"].__setitem__(1, "a ghostly moon"), "'a ghost' is a string prefix of 'a ghostly moon'"),
    (lambda d: d["distractors"].update(d=["The Ocean", "a star"]), "duplicate candidate"),
    (lambda d: d["groups"]["a"].__setitem__(1, " a spirit"), "surrounding whitespace"),
    (lambda d: d["groups"].pop("b"), "at least two groups"),
    (lambda d: d["distractors"].update(a=["x", "y"]), "both a group and a distractor"),
    (lambda d: d.update(token_lengths={"counts": {"a ghost": 2, "a spirit": 4, "the ocean": 2, "the moon": 2,
                                                  "a river": 2, "a star": 2}}), "mixes token lengths 2..4"),
    (lambda d: d.update(token_lengths={"counts": {"a ghost": 2}}), "token_lengths must list exactly"),
    (lambda d: d.update(groups=["a", "b"]), "'groups' must be an object"),
    (lambda d: d["distractors"].update(d={"counts_as": "c", "candidates": ["a river", "a star"]}),
     "counts as 'c', which is not a group"),
    (lambda d: d["distractors"].update(d={"counts_as": "b"}), "must be a list of strings"),
])
def test_loader_rejects_bad_sets(tmp_path, mutate, match):
    doc = _small_set()
    mutate(doc)
    with pytest.raises(DataError, match=match):
        load_candidate_set(_write(tmp_path, doc))


def test_loader_errors_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="unknown candidate set 'v9'; available: v1"):
        load_candidate_set("v9")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_candidate_set(bad)
    with pytest.raises(DataError, match="no such file"):
        load_candidate_set(tmp_path / "missing.json")
    ok = load_candidate_set(_write(tmp_path, _small_set()))
    assert ok.candidates == ("a ghost", "a spirit", "the ocean", "the moon")
    with pytest.raises(DataError, match="group sizes differ"):
        CandidateSet.from_groups({"a": ["x1", "x2", "x3"], "b": ["y1", "y2"]})


# ------------------------------------------------------------------------------------------- scoring
def test_per_token_mean_is_the_default_and_sum_is_available(tiny):
    cands = ["a ghost", "an AI assistant", "Napoleon", "the ocean"]  # 8, 16, 9, 10 char tokens
    mean = identity_readout(tiny, cands)
    total = identity_readout(tiny, cands, scoring="sum")
    assert mean.scoring == "mean" and total.scoring == "sum"
    assert list(mean.logprobs) == pytest.approx([s / n for s, n in zip(total.logprobs, total.n_tokens)], abs=1e-9)
    assert identity_readout(tiny, cands, normalize_length=False).logprobs == total.logprobs
    raw = score_continuations(tiny, ["Who are you?"], cands)[0]  # the primitive keeps the sum
    assert raw.tolist() == pytest.approx(list(total.logprobs), abs=1e-4)
    per_tok = score_continuations(tiny, ["Who are you?"], cands, scoring="mean")[0]
    assert per_tok.tolist() == pytest.approx(list(mean.logprobs), abs=1e-4)
    assert mean.probs != pytest.approx(total.probs, abs=1e-3)  # different lengths: the scorings disagree
    with pytest.raises(ValueError, match="contradicts"):
        identity_readout(tiny, cands, scoring="sum", normalize_length=True)
    with pytest.raises(ValueError, match="scoring must be one of mean, sum"):
        identity_readout_batch(tiny, cands, QS, scoring="max")


# ------------------------------------------------------------------------------------------- prior and lift
def test_prior_is_the_unsteered_readout_under_steering(tiny):
    unsteered = group_readout(tiny, "v1", QS, robust=False)
    assert unsteered.prior_source == "no hooks active" and unsteered.prior == unsteered.mass
    assert all(v["diff"] == 0.0 and v["ratio"] == pytest.approx(1.0) for v in unsteered.lift.values())
    assert unsteered.top_lift_group is None  # no lift to rank
    assert sum(unsteered.mass.values()) == pytest.approx(1.0, abs=1e-12)
    torch.manual_seed(1)
    vec = torch.randn(tiny.d_model) * 3
    with steer(tiny, vec, 4.0, layers=[1]):
        steered = group_readout(tiny, "v1", QS, robust=True)
        given = group_readout(tiny, "v1", QS, prior=unsteered, robust=False)
    assert steered.prior_source == "steering bypassed" and given.prior_source == "given"
    for g in GROUPS_V1:
        # float32 forwards: the bypassed prior equals the unsteered mass up to float32 noise (batching, threads)
        assert steered.prior[g] == pytest.approx(unsteered.mass[g], abs=1e-6)
        # lift is taken against the read-out's own prior (which equals the unsteered mass only up to
        # float32 noise, so the lift is checked against it, not against the unsteered mass)
        assert steered.lift[g]["diff"] == pytest.approx(steered.mass[g] - steered.prior[g], abs=1e-12)
        assert steered.lift[g]["ratio"] == pytest.approx(steered.mass[g] / steered.prior[g], rel=1e-9)
        assert given.mass[g] == pytest.approx(steered.mass[g], abs=1e-6)
        assert given.prior[g] == unsteered.mass[g]  # a given prior is used as it is
    assert max(abs(v["diff"]) for v in steered.lift.values()) > 1e-4  # the steering did act
    assert steered.top_lift_group == max(steered.lift, key=lambda g: steered.lift[g]["diff"])
    assert steered.robustness.top_lift_group == steered.top_lift_group
    d = json.loads(json.dumps(steered.to_dict()))
    assert set(d["groups"]) == set(GROUPS_V1) and d["prior_source"] == "steering bypassed"
    assert d["groups"]["ai"]["prior"] == pytest.approx(unsteered.mass["ai"], abs=1e-6)
    assert len(d["groups"]["ai"]["mass_per_question"]) == 2 and d["robust"] in (True, False)
    with pytest.raises(ValueError, match="differs in questions"):
        group_readout(tiny, "v1", ["Who are you?"], prior=unsteered, robust=False)
    with pytest.raises(ValueError, match="no scores for distractor group"):
        group_readout(tiny, "v1", QS, prior=unsteered, robust=True)
    with pytest.raises(ValueError, match="not a distractor group"):
        group_readout(tiny, "v1", QS, distractors=["nope"])
    none = group_readout(tiny, "v1", QS[:1], prior=None, robust=False)
    assert none.prior is None and none.lift is None and none.robust is None and none.to_dict()["groups"]["ai"]["prior"] is None


# ------------------------------------------------------------------------------------------- robustness
ROB_SET = CandidateSet.from_groups(
    {"supernatural": ["a ghost", "an angel", "a spirit"], "nature": ["the moon", "a river", "a star"]},
    {"nature_extra": ["the sun", "a tree", "the sky"]},
)


def test_robustness_flags_one_dominant_candidate():
    # 'a ghost' alone carries the supernatural group: mass (e^3 + 2) / (e^3 + 5) = 0.87 ...
    scores = torch.tensor([[3.0, 0.0, 0.0, 0.5, 0.5, 0.5]])
    r = GroupReadout.from_scores(ROB_SET, scores, distractor_scores={"nature_extra": torch.full((1, 3), -5.0)})
    assert r.top_group == "supernatural" and r.mass["supernatural"] == pytest.approx(
        (math.exp(3) + 2) / (math.exp(3) + 2 + 3 * math.exp(0.5)))
    # ... but without it, two supernatural candidates at 0 lose to three nature candidates at 0.5
    assert r.robust is False and r.robustness.leave_one_out["a ghost"] == "nature"
    assert r.robustness.leave_one_out["an angel"] == "supernatural"
    assert len(r.robustness.reasons) == 1 and "leaving out 'a ghost'" in r.robustness.reasons[0]
    assert r.to_dict()["robustness"]["robust"] is False


def test_robustness_flags_a_distractor_that_takes_over():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    r = GroupReadout.from_scores(ROB_SET, scores, distractor_scores={"nature_extra": torch.full((1, 3), 2.0)})
    assert r.top_group == "supernatural" and r.robust is False
    assert r.robustness.with_distractor == {"nature_extra": "nature_extra"}
    assert "adding distractor group 'nature_extra' changes" in r.robustness.reasons[0]


def test_robustness_distractor_of_a_rival_kind():
    """The issue's case: supernatural leads a balanced list, but more nature candidates take the lead."""
    cs = CandidateSet.from_groups(dict(ROB_SET.groups), dict(ROB_SET.distractors),
                                  counts_as={"nature_extra": "nature"})
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.2, 0.2, 0.2]])  # 3e vs 3e^0.2; without one ghost still 2e > 3e^0.2
    r = GroupReadout.from_scores(cs, scores, distractor_scores={"nature_extra": torch.full((1, 3), 0.5)})
    assert r.top_group == "supernatural" and r.robust is False and len(r.robustness.reasons) == 1
    assert r.robustness.with_distractor == {"nature_extra": "nature"}
    assert "'nature_extra' (counted as nature) changes the top group from supernatural to nature" in \
        r.robustness.reasons[0]
    # a distractor of the leading kind can only add to the leader: nature leads, nature_extra cannot flip it
    lead = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    r2 = GroupReadout.from_scores(cs, lead, distractor_scores={"nature_extra": torch.full((1, 3), 5.0)})
    assert r2.robust is True and r2.robustness.with_distractor_mass["nature_extra"]["nature"] > 0.99


def test_robustness_passes_a_balanced_result_and_checks_lift():
    scores = torch.tensor([[1.0, 1.2, 0.9, 0.0, 0.1, -0.1], [1.1, 0.8, 1.0, 0.2, 0.0, 0.0]])
    prior = torch.zeros(2, 6)
    dist = {"nature_extra": torch.zeros(2, 3)}
    r = GroupReadout.from_scores(ROB_SET, scores, prior, distractor_scores=dist, distractor_prior_scores=dist,
                                 questions=["q1", "q2"])
    assert r.top_group == "supernatural" and r.robust is True and r.robustness.reasons == ()
    assert r.top_lift_group == "supernatural" and r.robustness.leave_one_out_lift["a ghost"] == "supernatural"
    assert r.prior == pytest.approx({"supernatural": 0.5, "nature": 0.5})
    assert r.lift["supernatural"]["diff"] == pytest.approx(r.mass["supernatural"] - 0.5)
    # the top group by mass is safe, but the gain came from one candidate: the lift check flags it
    lifted = torch.tensor([[4.0, -1.0, -1.0, 0.9, 0.9, 0.9]])
    prior1 = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    r2 = GroupReadout.from_scores(ROB_SET, lifted, prior1)
    assert r2.top_group == "supernatural" and r2.top_lift_group == "supernatural"
    assert r2.robustness.leave_one_out_lift["a ghost"] == "nature"
    assert r2.robust is False and any("by lift" in x for x in r2.robustness.reasons)
    with pytest.raises(ValueError, match="6 candidates"):
        GroupReadout.from_scores(ROB_SET, torch.zeros(1, 5))


def test_group_readout_runs_the_check_on_the_model(tiny):
    r = group_readout(tiny, ROB_SET, ["Who are you?"])
    assert r.robustness is not None and set(r.robustness.leave_one_out) == set(ROB_SET.candidates)
    assert set(r.robustness.with_distractor) == {"nature_extra"}
    assert r.distractor_scores is not None and len(r.distractor_scores["nature_extra"][0]) == 3
    # scoring the distractors in the same forward leaves the group candidates' scores unchanged
    plain = identity_readout(tiny, list(ROB_SET.candidates))
    assert list(r.scores[0]) == pytest.approx(list(plain.logprobs), abs=1e-5)


# ------------------------------------------------------------------------------------------- user read-out + controls
def test_user_readout_with_controls_shape(tiny):
    ctl = load_user_controls("v1")
    assert [q for q, _ in ctl.user][:2] == ["Who am I?", "Who are you talking to?"]
    assert set(ctl.controls) == {"non_self", "third_person"}
    assert ("Who wrote Hamlet?", "Hamlet was written by") in ctl.controls["non_self"]
    u = user_readout_with_controls(tiny, "Adolf Hitler", ["a human", "a robot", "Adolf Hitler"], prior=None)
    assert isinstance(u, ControlledUserReadout) and len(u.items) == len(ctl.items()) == len(u.probs)
    assert u.kinds == ("user", "non_self", "third_person")
    assert all(sum(row) == pytest.approx(1.0) for row in u.probs)
    assert u.difference == pytest.approx(u.p_user - u.p_control)
    assert u.differences["non_self"] == pytest.approx(u.p_user - u.p_controls["non_self"])
    n_ctl = sum(1 for k, _, _ in u.items if k != "user")
    j = u.candidates.index("Adolf Hitler")
    assert u.p_control == pytest.approx(sum(u.probs[i][j] for i, it in enumerate(u.items) if it[0] != "user") / n_ctl)
    assert u.lift_user is None and u.specific_lift is None
    # each item is an identity read-out with its own question and prefix
    hamlet = [i for i, it in enumerate(u.items) if it[1] == "Who wrote Hamlet?"][0]
    ref = identity_readout(tiny, list(u.candidates), question="Who wrote Hamlet?", prefix="Hamlet was written by")
    assert list(u.probs[hamlet]) == pytest.approx(list(ref.probs), abs=1e-6)
    added = user_readout_with_controls(tiny, "a ghost", ["a human", "a robot"], prior=None)
    assert added.candidates == ("a human", "a robot", "a ghost")
    with steer(tiny, torch.randn(tiny.d_model) * 3, 4.0, layers=[1]):
        s = user_readout_with_controls(tiny, "Adolf Hitler", ["a human", "a robot", "Adolf Hitler"])
    assert s.prior_source == "steering bypassed"
    assert s.p("user", prior=True) == pytest.approx(u.p_user, abs=1e-6)  # float32 noise between the two forwards
    assert s.specific_lift == pytest.approx(s.lift_user - s.lift_control)
    d = json.loads(json.dumps(s.to_dict()))
    assert len(d["items"]) == len(u.items) and d["items"][0]["kind"] == "user" and d["p_user_prior"] is not None


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def cli(tiny, monkeypatch):
    import persona_vectors.cli as cli_mod

    monkeypatch.setattr(cli_mod.base, "load_model_arg", lambda model, device="cpu", **kw: tiny)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli_mod.app, ["identity", *args])


def _vec(tmp: Path, tiny) -> Path:
    v = PersonaVector([Site(1)], torch.randn(1, tiny.d_model) * 3,
                      Provenance(model_id=tiny.info.model_id, fingerprint=tiny.info.fingerprint, d_model=tiny.d_model))
    return v.save(tmp / "vec")


def test_cli_candidate_set_prior_lift_and_robust(cli, tiny, tmp_path):
    r = cli("--question", "Who are you?")
    assert r.exit_code == 0, r.output
    assert "candidate set v1 (8 groups x 6), 1 question(s)" in r.output and "prior" not in r.output
    assert "top group:" in r.output and "robust" not in r.output
    vec = _vec(tmp_path, tiny)
    r = cli("--question", "Who are you?", "--vector", str(vec), "--layer", "1", "--alpha", "4", "--robust")
    assert r.exit_code == 0, r.output
    header = [ln for ln in r.output.splitlines() if ln.startswith("group")][0]
    assert header.split() == ["group", "mass", "prior", "lift", "ratio"]
    assert "top group by lift" in r.output and ("robust: yes" in r.output or "robust: NO" in r.output)
    r = cli("--question", "Who are you?", "--json", "--robust", "--scoring", "sum")
    d = json.loads(r.output)
    assert d["scoring"] == "sum" and d["robustness"] is not None and d["prior_source"] == "none"
    r = cli("-c", "a ghost", "-c", "the moon", "--json")
    assert json.loads(r.output)["scoring"] == "mean"
    r = cli("--user", "--target", "Adolf Hitler", "-c", "a human", "-c", "a robot")
    assert r.exit_code == 0, r.output
    assert "user questions:" in r.output and "Who wrote Hamlet?" in r.output


@pytest.mark.parametrize("args, message", [
    (["--candidate-set", "v9"], "unknown candidate set 'v9'"),
    (["--candidate-set", "v1", "-c", "a ghost"], "pass one of them"),
    (["-c", "a ghost", "-c", "the moon", "--robust"], "--robust needs a candidate set"),
    (["--scoring", "max"], "--scoring must be one of mean, sum"),
    (["--scoring", "sum", "--normalize-length"], "contradicts"),
    (["--target", "Adolf Hitler"], "--target needs --user"),
    (["--user", "--candidate-set", "v1"], "--candidate-set reads out the model's own identity"),
])
def test_cli_errors_are_one_line(cli, args, message):
    r = cli(*args)
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in r.output


# ------------------------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
def test_smol_v1_unsteered_is_ai_and_robust(smol):
    """Unsteered SmolLM2 on v1's four questions: the AI group leads (measured 0.735, next fantasy_creature 0.099
    and human 0.089) and survives every leave-one-out and both distractor groups."""
    r = group_readout(smol, "v1")
    assert r.top_group == "ai" and r.mass["ai"] > 0.5 and r.top_candidate == "an AI assistant"
    assert r.robust is True and r.prior_source == "no hooks active"
