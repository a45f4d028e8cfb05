"""Identification in bits (persona_vectors.readout.bits): known answers on constructed read-outs, errors, and the
model path equal to the two read-outs it runs."""

from __future__ import annotations

import math

import pytest
import torch

from persona_vectors import IdentityReadout, TargetBits, identification_bits, identity_readout_batch, target_bits

pytestmark = pytest.mark.usefixtures("one_thread")

CANDS = ("Marie Curie", "Pierre Curie", "Albert Einstein", "Alan Turing")
FIELDS = {"Marie Curie": "chemistry", "Pierre Curie": "chemistry", "Albert Einstein": "physics",
          "Alan Turing": "computing"}


def readout(probs: list[float], cands: tuple[str, ...] = CANDS) -> IdentityReadout:
    return IdentityReadout.from_scores(cands, torch.log(torch.tensor(probs, dtype=torch.float64)), [1] * len(cands),
                                       question="Who are you?", prefix="I am")


def test_known_answer_uniform_prior() -> None:
    tb = target_bits([readout([0.5, 0.25, 0.125, 0.125])], [readout([0.25] * 4)], "Marie Curie", FIELDS)
    assert isinstance(tb, TargetBits)
    assert tb.p == pytest.approx(0.5) and tb.p_prior == pytest.approx(0.25)
    assert tb.bits == pytest.approx(1.0)                    # doubled: one bit
    assert tb.ceiling_bits == pytest.approx(2.0) == tb.log2_candidates
    assert tb.share_of_ceiling == pytest.approx(0.5)
    assert tb.entropy == pytest.approx(1.75) and tb.entropy_prior == pytest.approx(2.0)
    assert tb.top == "Marie Curie"
    assert tb.group == "chemistry" and tb.group_p == pytest.approx(0.75) and tb.group_p_prior == pytest.approx(0.5)
    assert tb.group_bits == pytest.approx(math.log2(1.5))
    assert tb.to_dict()["share_of_ceiling"] == pytest.approx(0.5)


def test_field_without_target_and_negative_bits() -> None:
    # the evidence moves mass to the target's field but onto the wrong member: target bits < 0, field bits > 0
    tb = target_bits([readout([0.1, 0.7, 0.1, 0.1])], [readout([0.2, 0.2, 0.3, 0.3])], "Marie Curie", FIELDS)
    assert tb.bits == pytest.approx(math.log2(0.1 / 0.2)) and tb.bits < 0
    assert tb.group_bits == pytest.approx(math.log2(0.8 / 0.4)) and tb.group_bits > 0
    assert tb.top == "Pierre Curie" and tb.ceiling_bits == pytest.approx(-math.log2(0.2))


def test_prompts_pool_as_a_mixture() -> None:
    tb = target_bits([readout([0.7, 0.1, 0.1, 0.1]), readout([0.1, 0.1, 0.1, 0.7])], [readout([0.25] * 4)] * 3,
                     "Marie Curie")
    assert tb.p == pytest.approx(0.4) and tb.n_prompts == 2 and tb.n_prompts_prior == 3
    assert tb.group is None and tb.group_bits is None


@pytest.mark.parametrize("kwargs, match", [
    ({"evidence": []}, "at least one evidence"),
    ({"baseline": [readout([0.5, 0.5], ("a", "b"))]}, "different candidate lists"),
    ({"evidence": [readout([0.25] * 4), readout([0.5, 0.5], ("a", "b"))]}, "different candidate lists"),
    ({"target": "Isaac Newton"}, "not one of the 4 candidates"),
    ({"groups": {"Marie Curie": "chemistry"}}, "give every candidate a group"),
])
def test_bad_input_is_a_clear_error(kwargs: dict, match: str) -> None:
    args = {"evidence": [readout([0.25] * 4)], "baseline": [readout([0.25] * 4)], "target": "Marie Curie",
            "groups": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        target_bits(**args)


def test_model_path_equals_the_two_readouts(tiny) -> None:
    ev = ["Your coauthors include Pierre Curie. Who are you?", "You wrote papers with Pierre Curie. Who are you?"]
    base = ["Who are you?"]
    tb = identification_bits(tiny, "Marie Curie", list(CANDS), ev, base, groups=FIELDS)
    direct = target_bits(identity_readout_batch(tiny, list(CANDS), ev), identity_readout_batch(tiny, list(CANDS), base),
                         "Marie Curie", FIELDS)
    assert tb == direct
    assert 0 < tb.p < 1 and tb.bits != 0
    summed = identification_bits(tiny, "Marie Curie", list(CANDS), ev, base, scoring="sum")
    assert summed.p != pytest.approx(tb.p)  # the scoring mode reaches the read-out
