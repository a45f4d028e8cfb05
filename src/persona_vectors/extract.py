"""High-level extraction: conversations (or system prompts) in, a :class:`PersonaVector` out, plus quality.

Two entry points:

- :func:`extract_vector` — from two sets of conversations you already have (persona vs baseline), e.g.
  teacher-forced fact answers vs neutral answers.
- :func:`extract_system_prompt_vector` — Persona Vectors style: the model answers the same questions under
  persona system prompts and under baseline system prompts; its own response tokens are recorded.

:func:`separation_auroc` measures how well a vector's projection separates held-out persona samples from
baseline samples, per site (1.0 = perfect; 0.5 = chance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .aggregators import get_aggregator, needs_samples
from .models import PersonaModel
from .record import Conversation, Recording, record, record_generated
from .sites import Site, as_sites
from .vector import PersonaVector, Provenance


def vector_from_recordings(
    model: PersonaModel,
    pos: Recording,
    neg: Recording,
    *,
    method: str = "mean_diff",
    name: str = "",
    route: str = "",
    extra: dict | None = None,
) -> PersonaVector:
    """Aggregate two recordings into a PersonaVector with full provenance."""
    agg = get_aggregator(method)
    sites = tuple(s for s in pos.sites if s in neg.sites)
    dirs = torch.stack([agg(pos, neg, s) for s in sites])
    prov = Provenance(
        model_id=model.info.model_id,
        fingerprint=model.info.fingerprint,
        d_model=model.d_model,
        name=name,
        method=method,
        positions=pos.positions,
        n_samples=min(pos.n_conversations, neg.n_conversations),
        dataset_hash=f"{pos.dataset_hash}-{neg.dataset_hash}",
        route=route,
        extra=dict(extra or {}),
    )
    return PersonaVector(sites, dirs, prov)


def extract_vector(
    model: PersonaModel,
    persona: Sequence[Conversation],
    baseline: Sequence[Conversation],
    *,
    layers: "Sequence[int | Site] | str" = "all",
    method: str = "mean_diff",
    positions: str = "response",
    name: str = "",
    route: str = "conversations",
    batch_size: int = 16,
    progress: bool = True,
) -> PersonaVector:
    """Record both conversation sets at ``layers`` and aggregate (``mean_diff``, ``pca`` or ``probe``)."""
    if not persona or not baseline:
        raise ValueError("Both the persona and the baseline conversation sets must be non-empty")
    sites = as_sites(layers, model.n_layers)
    keep = needs_samples(method)
    pos = record(model, persona, sites, positions=positions, keep_samples=keep, batch_size=batch_size,  # type: ignore[arg-type]
                 progress=progress, desc=f"record {name or 'persona'}")
    neg = record(model, baseline, sites, positions=positions, keep_samples=keep, batch_size=batch_size,  # type: ignore[arg-type]
                 progress=progress, desc="record baseline")
    return vector_from_recordings(model, pos, neg, method=method, name=name, route=route)


@dataclass
class PromptContrast:
    """Recordings of the model's own answers under persona vs baseline system prompts."""

    persona: Recording
    baseline: Recording
    persona_conversations: list
    baseline_conversations: list


def record_prompt_contrast(
    model: PersonaModel,
    persona_prompts: Sequence[str],
    baseline_prompts: Sequence[str | None],
    questions: Sequence[str],
    *,
    layers: "Sequence[int | Site] | str" = "all",
    max_new_tokens: int = 40,
    keep_samples: bool = True,
    progress: bool = True,
    seed: int = 0,
) -> PromptContrast:
    """Generate answers to every (system prompt, question) pair for both sides and record response tokens.

    Each side's (prompt, question) pairs are generated in one batched pass per prompt. A baseline prompt of
    ``None`` means the chat template's default behaviour.
    """
    sites = as_sites(layers, model.n_layers)

    def side(prompts: Sequence[str | None], label: str) -> tuple[Recording, list]:
        convs: list = []
        for sp in prompts:
            replies = model.generate(list(questions), system=sp, max_new_tokens=max_new_tokens, seed=seed,
                                     batch_size=16)
            for q, r in zip(questions, replies):
                convs.append(model.to_messages(q, sp) + [{"role": "assistant", "content": r if r.strip() else "..."}])
        rec = record(model, convs, sites, positions="response", keep_samples=keep_samples, progress=progress,
                     desc=f"record {label}")
        return rec, convs

    pos, pc = side(persona_prompts, "persona")
    neg, bc = side(baseline_prompts, "baseline")
    return PromptContrast(pos, neg, pc, bc)


def extract_system_prompt_vector(
    model: PersonaModel,
    persona_prompts: Sequence[str],
    baseline_prompts: Sequence[str | None],
    questions: Sequence[str],
    *,
    layers: "Sequence[int | Site] | str" = "all",
    method: str = "mean_diff",
    name: str = "",
    max_new_tokens: int = 40,
    progress: bool = True,
) -> PersonaVector:
    """Persona-Vectors-style extraction from system prompts (see :func:`record_prompt_contrast`)."""
    if not persona_prompts or not baseline_prompts or not questions:
        raise ValueError("Need at least one persona prompt, one baseline prompt and one question")
    c = record_prompt_contrast(model, persona_prompts, baseline_prompts, questions, layers=layers,
                               max_new_tokens=max_new_tokens, keep_samples=needs_samples(method), progress=progress)
    return vector_from_recordings(model, c.persona, c.baseline, method=method, name=name, route="prompt")


def separation_auroc(vec: PersonaVector, persona: Recording, baseline: Recording) -> dict[Site, float]:
    """Per-site AUROC of the projection onto ``vec`` separating persona samples from baseline samples.

    Both recordings need ``keep_samples=True`` and should come from data the vector never saw.
    """
    from sklearn.metrics import roc_auc_score

    out: dict[Site, float] = {}
    for s in vec.sites:
        a = vec.project(persona.per_sample(s), s)
        b = vec.project(baseline.per_sample(s), s)
        y = [1] * len(a) + [0] * len(b)
        out[s] = float(roc_auc_score(y, torch.cat([a, b]).double().numpy()))
    return out


def relative_norms(vec: PersonaVector, recording: Recording) -> dict[Site, float]:
    """Norm of each site's direction divided by the mean residual norm recorded there."""
    return {s: float(vec[s].norm()) / recording.mean_norm(s) for s in vec.sites if s in recording.sites}


def pick_layer(auroc: dict[Site, float], rel_norm: dict[Site, float] | None = None, min_depth: float = 0.25) -> Site:
    """Choose a site: the best held-out AUROC (to 2 decimals), ties broken toward the middle of the network.

    Early layers often separate trivially on surface tokens of the prompt, so ``min_depth`` (fraction of the
    deepest layer seen) excludes them. Persona directions often separate perfectly from the middle to the
    last block; the last blocks sit just before the final norm and steer poorly, so among equally good
    layers the one nearest the middle wins, then the larger relative norm.
    """
    if not auroc:
        raise ValueError("No AUROC values to pick a layer from")
    deepest = max(s.layer for s in auroc)
    eligible = [s for s in auroc if s.layer >= min_depth * deepest] or list(auroc)
    rn = rel_norm or {}
    return max(eligible, key=lambda s: (round(auroc[s], 2), -abs(s.layer - deepest / 2), rn.get(s, 0.0)))


__all__ = [
    "PromptContrast",
    "extract_system_prompt_vector",
    "extract_vector",
    "pick_layer",
    "record_prompt_contrast",
    "relative_norms",
    "separation_auroc",
    "vector_from_recordings",
]
