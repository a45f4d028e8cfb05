"""Read out who a model thinks it is (by log-probs), and how coherent its text is.

**Identity read-out.** Instead of sampling an answer to "Who are you?" and classifying it, we ask the model
for its probability of each candidate identity directly: the chat prompt (rendered with the chat template
and the generation prompt) is followed by an answer prefix ("I am") and each candidate (" Napoleon
Bonaparte"), and the candidate's tokens are scored teacher-forced. The candidate scores (mean token
log-probs by default) are turned into a distribution over the candidate set (softmax), so the read-out is
deterministic and cheap (the prompt runs once into a KV cache, then one batched forward per chunk of
candidates; no sampling noise). It works under steering: hooks active around the call apply to every
forward, and the answer tokens count as *response* positions for position-aware steering, as they would if
the model generated them.

**Scoring** (changed default): a candidate's score is the MEAN log-prob per scored token (``scoring="mean"``)
so that a three-token name is not penalised against a one-token one; ``scoring="sum"`` (or the older
``normalize_length=False``) gives the full-string log-likelihood, which the read-outs used by default before
the balanced candidate sets. :func:`score_continuations`, the raw primitive, still returns sums by default.

**Grouped read-outs** (:func:`group_readout`) score a versioned, balanced candidate set
(:func:`load_candidate_set`, ``data/identity/candidates_v1.json``: 8 groups of 6 — ai, human,
historical_figure, supernatural, nature_cosmic, animal, object, fantasy_creature) and report per group the
probability mass, the *unsteered prior* (the same read-out with the library's steering hooks bypassed) and
the lift over it; a robustness check recomputes the masses leaving each candidate out and adding held-back
distractor groups and flags a result whose top group changes. :func:`user_readout_with_controls` asks who the
user is next to control questions about other people, so "the model thinks the user is X" can be told
apart from "X is primed".

The read-out is *relative to the candidate set*: probabilities only compare the candidates given (which is
why groups must be balanced and results checked for robustness to the set), and
``bits_of_identification = log2 N - H`` says how far the distribution is from uniform (0 bits: no
preference; log2 N bits: all mass on one candidate). :func:`identification_bits` measures what a piece of
evidence buys toward one target: log2 P(target | evidence) − log2 P(target | no evidence), beside its ceiling,
the entropies and the same for the target's group (:mod:`.bits`).

**Coherence.** Steering far enough breaks a model's language. :func:`coherence` scores texts by their
per-token perplexity under the *unsteered* model plus word-level repetition, combined into one number in
[0, 1] so sweeps can drop degenerate samples (:func:`is_coherent`).

>>> r = identity_readout(model, ["an AI assistant", "Napoleon Bonaparte"], system="You are Napoleon.")  # doctest: +SKIP
>>> r.top(1)                                                                                          # doctest: +SKIP
[('Napoleon Bonaparte', 0.97)]
"""

from __future__ import annotations

from .scoring import (
    SCORING_MODES,
    SteeringActiveError,
    continuation_tokens,
    score_continuations,
)
from .identity import (
    DEFAULT_IDENTITY_CANDIDATES,
    DEFAULT_USER_CANDIDATES,
    IdentityReadout,
    _check_candidates,
    candidate_names,
    identity_readout,
    identity_readout_batch,
    user_identity_readout,
)
from .candidates import (
    CandidateSet,
    UserControls,
    available_candidate_sets,
    load_candidate_set,
    load_user_controls,
)
from .groups import (
    GroupReadout,
    RobustnessCheck,
    group_readout,
)
from .user import (
    ControlledUserReadout,
    user_readout_with_controls,
)
from .bits import TargetBits, identification_bits, target_bits
from .coherence import (
    COHERENCE_PPL_HIGH,
    COHERENCE_PPL_LOW,
    CoherenceScore,
    coherence,
    coherence_score,
    distinct_1,
    is_coherent,
    repetition_rate,
)

__all__ = [
    "COHERENCE_PPL_HIGH",
    "COHERENCE_PPL_LOW",
    "SCORING_MODES",
    "CandidateSet",
    "CoherenceScore",
    "ControlledUserReadout",
    "DEFAULT_IDENTITY_CANDIDATES",
    "DEFAULT_USER_CANDIDATES",
    "GroupReadout",
    "IdentityReadout",
    "RobustnessCheck",
    "SteeringActiveError",
    "TargetBits",
    "UserControls",
    "available_candidate_sets",
    "candidate_names",
    "coherence",
    "continuation_tokens",
    "group_readout",
    "identification_bits",
    "identity_readout",
    "identity_readout_batch",
    "is_coherent",
    "load_candidate_set",
    "load_user_controls",
    "score_continuations",
    "target_bits",
    "user_identity_readout",
    "user_readout_with_controls",
]
