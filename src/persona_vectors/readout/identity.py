"""Identity read-outs over a flat candidate list: "Who are you?" (and "Who am I?") answered by log-probs.

:func:`identity_readout` / :func:`identity_readout_batch` turn candidate scores into a distribution over the
candidates (:class:`IdentityReadout`); :func:`user_identity_readout` asks who the user is;
:func:`candidate_names` draws candidates from the role catalogue. The curated default lists live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..models import PersonaModel, PromptLike
from .scoring import _continuation_rows, _resolve_scoring, _score_rows

__all__ = [
    "DEFAULT_IDENTITY_CANDIDATES",
    "DEFAULT_USER_CANDIDATES",
    "IdentityReadout",
    "candidate_names",
    "identity_readout",
    "identity_readout_batch",
    "user_identity_readout",
]


#: The original curated candidate list (unbalanced: 8 historical figures, 5 supernatural, 3 AI, 1 nature
#: candidate; kept for the experiments that use it). For group-level claims use the balanced, versioned set
#: ``load_candidate_set("v1")`` with :func:`group_readout`: with this list the supernatural group's share
#: under anti-assistant steering depends on how many nature candidates compete with it. Phrased to follow "I am".
DEFAULT_IDENTITY_CANDIDATES: tuple[str, ...] = (
    "an AI assistant",
    "SmolLM",
    "a chatbot",
    "a ghost",
    "an angel",
    "a spirit",
    "a soul",
    "a demon",
    "Adolf Hitler",
    "Joseph Stalin",
    "Napoleon",
    "Lenin",
    "Peter the Great",
    "Oda Nobunaga",
    "Neil Armstrong",
    "Winston Churchill",
    "Voyager 1",
    "Bitcoin",
    "the ocean",
    "a human",
)


#: Default candidates for "Who am I?" → "You are ...": who the model thinks its interlocutor is.
DEFAULT_USER_CANDIDATES: tuple[str, ...] = (
    "a human",
    "a user",
    "a student",
    "a child",
    "a friend",
    "an AI",
    "a robot",
    "a ghost",
    "my creator",
    "Napoleon",
)


# =============================================================================================== readout
@dataclass(frozen=True)
class IdentityReadout:
    """A distribution over candidate identities for one prompt.

    ``logprobs`` are the candidate scores — per-token mean log-probs (``scoring == "mean"``, the default,
    stored as ``normalize_length=True``) or summed log-probs (``"sum"``) — and ``probs`` their softmax: the
    model's preference *within this candidate set*. ``n_tokens`` is each candidate's scored token count
    (long names pay for every token in the summed score).
    """

    candidates: tuple[str, ...]
    logprobs: tuple[float, ...]
    probs: tuple[float, ...]
    n_tokens: tuple[int, ...]
    question: str
    prefix: str
    system: str | None = None
    normalize_length: bool = False

    @classmethod
    def from_scores(
        cls,
        candidates: Sequence[str],
        scores: torch.Tensor,
        n_tokens: Sequence[int],
        *,
        question: str,
        prefix: str,
        system: str | None = None,
        normalize_length: bool = False,
    ) -> "IdentityReadout":
        """Build a read-out from raw candidate scores (softmax-normalized here)."""
        s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
        p = torch.softmax(s, dim=0)
        return cls(tuple(candidates), tuple(float(x) for x in s), tuple(float(x) for x in p),
                   tuple(int(x) for x in n_tokens), question, prefix, system, normalize_length)

    @property
    def scoring(self) -> str:
        """``"mean"`` (per-token mean log-prob) or ``"sum"``."""
        return "mean" if self.normalize_length else "sum"

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable candidates as (name, probability), most probable first."""
        order = sorted(range(len(self.candidates)), key=lambda i: -self.probs[i])
        return [(self.candidates[i], self.probs[i]) for i in order[:k]]

    @property
    def best(self) -> str:
        """The most probable candidate."""
        return self.top(1)[0][0]

    def prob(self, candidate: str) -> float:
        """Probability of one candidate (KeyError if it is not in the set)."""
        try:
            return self.probs[self.candidates.index(candidate)]
        except ValueError:
            raise KeyError(f"{candidate!r} is not a candidate of this read-out") from None

    @property
    def entropy(self) -> float:
        """Shannon entropy of ``probs`` in bits (0·log 0 = 0)."""
        return float(-sum(p * math.log2(p) for p in self.probs if p > 0))

    @property
    def bits_of_identification(self) -> float:
        """``log2 N - H``: information the read-out carries relative to a uniform guess over N candidates."""
        return math.log2(len(self.candidates)) - self.entropy

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (candidates sorted by probability)."""
        order = sorted(range(len(self.candidates)), key=lambda i: -self.probs[i])
        return {
            "question": self.question,
            "prefix": self.prefix,
            "system": self.system,
            "normalize_length": self.normalize_length,
            "scoring": self.scoring,
            "entropy_bits": self.entropy,
            "bits_of_identification": self.bits_of_identification,
            "candidates": [
                {"name": self.candidates[i], "prob": self.probs[i], "logprob": self.logprobs[i],
                 "n_tokens": self.n_tokens[i]}
                for i in order
            ],
        }


def _check_candidates(candidates: Sequence[str]) -> list[str]:
    """Candidates as a list: at least two, all strings, none empty, no two the same after stripping whitespace.

    The answer is ``prefix + " " + candidate.strip()``, so candidates differing only by surrounding whitespace
    would be scored as the same text and split its probability: that is an error, not a silent merge.
    """
    if isinstance(candidates, str):
        raise TypeError("candidates must be a list of names, not one string")
    c = list(candidates)
    bad = [x for x in c if not isinstance(x, str)]
    if bad:
        raise TypeError(f"candidates must be strings, got {bad[0]!r}")
    if len(c) < 2:
        raise ValueError("An identity read-out needs at least two candidates")
    dup = sorted({x for x in c if c.count(x) > 1})
    if dup:
        raise ValueError(f"Duplicate candidates: {dup}: pass each candidate once")
    groups: dict[str, list[str]] = {}
    for x in c:
        groups.setdefault(x.strip(), []).append(x)
    same = [g for g in groups.values() if len(g) > 1]
    if same:
        shown = "; ".join(" and ".join(repr(x) for x in g) for g in same)
        raise ValueError(f"Candidates differ only by surrounding whitespace ({shown}): they are scored as the same "
                         "answer; keep one of each")
    return c


def identity_readout_batch(
    model: PersonaModel,
    candidates: Sequence[str] | None,
    questions: Sequence[PromptLike],
    *,
    prefix: str = "I am",
    system: str | None = None,
    batch_size: int = 32,
    normalize_length: bool | None = None,
    share_prompt: bool = True,
    scoring: str | None = None,
) -> list[IdentityReadout]:
    """One :class:`IdentityReadout` per question, scoring all (question × candidate) rows in batched forwards.

    Rows follow :func:`score_continuations`'s order (question-major) in chunks of ``batch_size``. By default
    each question's prompt runs once into a KV cache shared by its candidates (``share_prompt``, see
    :func:`score_continuations`): position-wise steering hooks apply identically either way; pass
    ``share_prompt=False`` when a hook depends on the batch layout (per-row coefficients).
    ``candidates=None`` uses :data:`DEFAULT_IDENTITY_CANDIDATES`. Scores are per-token means by default
    (``scoring="mean"``); ``scoring="sum"`` or ``normalize_length=False`` sums the token log-probs (the
    default before balanced candidate sets).
    """
    mode = _resolve_scoring(scoring, normalize_length)
    normalize = mode == "mean"
    cands = _check_candidates(DEFAULT_IDENTITY_CANDIDATES if candidates is None else candidates)
    rows, starts, plens = _continuation_rows(model, questions, cands, prefix, system)
    sums, counts = _score_rows(model, rows, starts, batch_size, len(cands) if share_prompt else None, plens)
    scores = sums / counts.clamp_min(1) if normalize else sums
    nc = len(cands)
    out = []
    for i, q in enumerate(questions):
        sl = slice(i * nc, (i + 1) * nc)
        out.append(IdentityReadout.from_scores(
            cands, scores[sl], counts[sl].tolist(), question=q if isinstance(q, str) else str(list(q)),
            prefix=prefix, system=system, normalize_length=normalize,
        ))
    return out


def identity_readout(
    model: PersonaModel,
    candidates: Sequence[str] | None = None,
    *,
    question: PromptLike = "Who are you?",
    prefix: str = "I am",
    system: str | None = None,
    batch_size: int = 32,
    normalize_length: bool | None = None,
    share_prompt: bool = True,
    scoring: str | None = None,
) -> IdentityReadout:
    """Who the model says it is: P(candidate | chat(question), "I am") normalized over the candidates.

    Each candidate is scored by the MEAN of its token log-probs by default (``scoring="mean"``), so names
    of different token lengths compete on per-token likelihood; ``scoring="sum"`` (or
    ``normalize_length=False``) uses the full-string log-likelihood, which charges every extra token — the
    default before the balanced candidate sets. With summed scores a candidate that is a string prefix of
    another ("Napoleon" vs "Napoleon Bonaparte") always scores at least as high, and with mean scores the
    two share their first tokens' evidence: pick candidate sets without such overlaps
    (:func:`load_candidate_set` enforces it).
    ``system=None`` keeps the chat template's default (SmolLM2 inserts its assistant system prompt).
    """
    return identity_readout_batch(model, candidates, [question], prefix=prefix, system=system,
                                  batch_size=batch_size, normalize_length=normalize_length,
                                  share_prompt=share_prompt, scoring=scoring)[0]


def user_identity_readout(
    model: PersonaModel,
    candidates: Sequence[str] | None = None,
    *,
    question: PromptLike = "Who am I?",
    prefix: str = "You are",
    system: str | None = None,
    batch_size: int = 32,
    normalize_length: bool | None = None,
    share_prompt: bool = True,
    scoring: str | None = None,
) -> IdentityReadout:
    """Who the model thinks the *user* is: P(candidate | chat("Who am I?"), "You are").

    ``candidates=None`` uses :data:`DEFAULT_USER_CANDIDATES`. On its own this cannot tell "the model thinks
    the user is X" from "X is primed everywhere" (a steered-in identity can also win "Who wrote Hamlet?"):
    use :func:`user_readout_with_controls` for claims about the user.
    """
    cands = DEFAULT_USER_CANDIDATES if candidates is None else candidates
    return identity_readout(model, cands, question=question, prefix=prefix, system=system,
                            batch_size=batch_size, normalize_length=normalize_length, share_prompt=share_prompt,
                            scoring=scoring)


def candidate_names(categories: Sequence[str] | str | None = None, roles: Sequence[str] | None = None) -> list[str]:
    """Identity candidates from the role catalogue: the first alias of each role, deduplicated, in file order.

    ``categories`` filters by :data:`~persona_vectors.datasets.ROLE_CATEGORIES`; ``roles`` picks roles by
    name (matched like :func:`~persona_vectors.datasets.get_role`). With neither, every role is used. The
    first alias is the catalogue's canonical short name; some are bare nouns ("ghost"), which read a little
    less naturally after "I am" than "a ghost" — the same for every such candidate, but keep it in mind
    when comparing against curated lists like :data:`DEFAULT_IDENTITY_CANDIDATES`.
    """
    from ..datasets import get_role, load_roles

    if isinstance(categories, str):
        categories = [categories]
    selected = []
    if roles is not None:
        selected.extend(get_role(r) for r in roles)
    if categories is not None:
        for c in categories:
            selected.extend(load_roles(c))
    if roles is None and categories is None:
        selected = load_roles()
    names: list[str] = []
    for r in selected:
        name = r.aliases[0] if r.aliases else r.display
        if name not in names:
            names.append(name)
    return names
