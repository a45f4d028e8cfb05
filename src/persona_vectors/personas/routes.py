"""The built-in extraction routes and the functions they are made of, registered in
:mod:`persona_vectors.personas.registry` (in this order: a persona's first supported route is its default).

- **System-prompt route** (:class:`PromptRoute`, ``"prompt"``; Persona Vectors style): the model answers the
  *extraction* questions under each of a role's system prompts and under every default-assistant prompt; its
  own response tokens are recorded; the vector is persona minus default (:func:`role_contrast`,
  :func:`role_vector`).
- **Fact route** (:class:`FactRoute`, ``"facts"``): teacher-force a fact set's first-person answers and, as the
  control, the matched neutral answers (no generation, fast); persona minus neutral (:func:`fact_vector`).
- **Assistant Axis** (:class:`AxisRoute`, ``"axis"``): mean over the default-assistant prompts minus the mean
  over roles of each role's mean (:func:`role_means`, :func:`assistant_axis`).

Each builds its conversations here and hands recordings to :func:`persona_vectors.extract.vector_from_recordings`,
the functional core; the disk caches come in through :mod:`.compute` / :mod:`.store`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..aggregators import get_aggregator
from ..datasets import DataError, FactSet, get_role, list_fact_sets, load_fact_set, load_roles
from ..extract import PromptContrast, pick_layer, relative_norms, vector_from_recordings
from ..models import PersonaModel
from ..record import Recording
from ..sites import Site
from ..vector import PersonaVector
from .catalogue import (
    AXIS_PANEL,
    _as_fact_set,
    _first,
    default_system_prompts,
    evaluation_questions,
    extraction_questions,
    fact_conversations,
    fact_split,
)
from .compute import (Layers, ProgressFn, _generate_cached, _progress_fn, _prompt_side, _ray_backend, _ray_connected,
                      _rows_cached, _sites)
from .quality import _quality_from
from .registry import Budget, PersonaQuality, PersonaSpec, register_route
from .store import CacheArg, GenerationCache, _caches, _hash

# ------------------------------------------------------------------------------------------------ prompt route


def role_contrast(
    model: PersonaModel,
    role_name: str,
    *,
    questions: Optional[Sequence[str]] = None,
    n_questions: Optional[int] = None,
    n_prompts: Optional[int] = None,
    baseline_prompts: Optional[Sequence[Optional[str]]] = None,
    layers: Layers = "all",
    max_new_tokens: int = 32,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> PromptContrast:
    """Record the model's answers under a role's system prompts and under the default-assistant prompts.

    The same conversations as :func:`~persona_vectors.extract.record_prompt_contrast` (greedy replies,
    response tokens, per-conversation samples kept), but each side is generated and recorded through the
    disk caches, so the default side is computed once and shared by every role.

    ``questions`` defaults to the extraction split (first ``n_questions``); ``n_prompts`` takes the role's
    first prompts; ``baseline_prompts`` defaults to :func:`default_system_prompts`.
    """
    role = get_role(role_name)
    qs = _first(questions if questions is not None else extraction_questions(), n_questions, "questions")
    prompts = _first(role.prompts, n_prompts, f"prompts of role {role.name!r}")
    base = list(baseline_prompts) if baseline_prompts is not None else default_system_prompts()
    if not base:
        raise DataError("no baseline prompts; pass at least one default-assistant system prompt")
    sites = _sites(model, layers)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    pos, pc = _prompt_side(model, prompts, qs, sites, max_new_tokens=max_new_tokens, caches=caches, progress=pf)
    neg, bc = _prompt_side(model, base, qs, sites, max_new_tokens=max_new_tokens, caches=caches, progress=pf)
    return PromptContrast(pos, neg, pc, bc)


def _paired_baseline(pos: Recording, neg: Recording, n_pos_prompts: int, n_neg_prompts: int, n_q: int) -> Recording:
    """A baseline whose i-th sample is the mean baseline answer to the same question as persona sample i.

    PCA of paired differences needs equal counts; the persona side has (prompt × question) samples, the
    default side a different number of prompts, so each persona sample is paired with its question's mean.
    """
    samples = {}
    for s in neg.sites:
        b = neg.per_sample(s).reshape(n_neg_prompts, n_q, -1).mean(0)
        samples[s] = list(b.repeat(n_pos_prompts, 1).unbind(0))
    return dataclasses.replace(neg, samples=samples, n_conversations=n_pos_prompts * n_q, _stacked={})


def role_vector(
    model: PersonaModel,
    role_name: str,
    *,
    method: str = "mean_diff",
    questions: Optional[Sequence[str]] = None,
    n_questions: Optional[int] = None,
    n_prompts: Optional[int] = None,
    baseline_prompts: Optional[Sequence[Optional[str]]] = None,
    layers: Layers = "all",
    max_new_tokens: int = 32,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
    name: Optional[str] = None,
) -> PersonaVector:
    """System-prompt-route vector: persona answers minus default-assistant answers (see :func:`role_contrast`).

    ``method`` is ``mean_diff`` (default), ``pca`` (persona samples paired with the mean default answer to
    the same question) or ``probe``.
    """
    get_aggregator(method)
    role = get_role(role_name)
    qs = _first(questions if questions is not None else extraction_questions(), n_questions, "questions")
    prompts = _first(role.prompts, n_prompts, f"prompts of role {role.name!r}")
    base = list(baseline_prompts) if baseline_prompts is not None else default_system_prompts()
    c = role_contrast(model, role.name, questions=qs, n_prompts=len(prompts), baseline_prompts=base, layers=layers,
                      max_new_tokens=max_new_tokens, cache=cache, progress=progress)
    neg = c.baseline
    if method == "pca" and c.persona.n_conversations != neg.n_conversations:
        neg = _paired_baseline(c.persona, neg, len(prompts), len(base), len(qs))
    extra = {"role": role.name, "n_prompts": len(prompts), "n_baseline_prompts": len(base),
             "n_questions": len(qs), "questions_hash": _hash(qs), "max_new_tokens": max_new_tokens,
             "baseline_prompts_hash": _hash(base)}
    return vector_from_recordings(model, c.persona, neg, method=method, name=name or role.name, route="prompt",
                                  extra=extra)


# ------------------------------------------------------------------------------------------------ fact route


def fact_contrast(
    model: PersonaModel,
    fact_set: Union[str, FactSet],
    *,
    split: str = "train",
    layers: Layers = "all",
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> tuple[Recording, Recording]:
    """Recordings of persona answers and neutral answers (``split``: ``train``, ``heldout`` or ``all``)."""
    fs = _as_fact_set(fact_set)
    train, held = fact_split(fs)
    ids = {"train": train, "heldout": held, "all": None}
    if split not in ids:
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    pos_c, neg_c = fact_conversations(fs, ids[split])
    sites = _sites(model, layers)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    rows = _rows_cached(model, pos_c + neg_c, sites, caches=caches, progress=pf)
    n = len(pos_c)
    return (rows.select(range(n)).to_recording(pos_c), rows.select(range(n, 2 * n)).to_recording(neg_c))


def fact_vector(
    model: PersonaModel,
    fact_set: Union[str, FactSet],
    *,
    layers: Layers = "all",
    method: str = "mean_diff",
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
    name: Optional[str] = None,
) -> PersonaVector:
    """Fact-route vector from the training facts (75 %): first-person answers minus neutral answers.

    Teacher-forced (no generation): each fact is a user question and the assistant's answer; the response
    tokens are recorded; both sides use the template's default system prompt. The held-out 25 % of facts
    (:func:`fact_split`) is left for :func:`persona_quality`.
    """
    get_aggregator(method)
    fs = _as_fact_set(fact_set)
    train, held = fact_split(fs)
    pos, neg = fact_contrast(model, fs, split="train", layers=layers, cache=cache, progress=progress)
    extra = {"fact_set": fs.name, "identity": fs.identity, "variant": fs.variant, "fact_set_hash": fs.dataset_hash(),
             "n_train_facts": len(train), "heldout_ids": held}
    return vector_from_recordings(model, pos, neg, method=method, name=name or fs.name, route="facts", extra=extra)


# ------------------------------------------------------------------------------------------------ assistant axis


@dataclass
class RoleMeans:
    """Per-role mean response activations and the shared default-assistant mean, per site.

    ``means[role]`` and ``default_mean`` are float32 ``[n_sites, d_model]`` token-weighted means (the
    quantities :func:`~persona_vectors.aggregators.mean_diff` subtracts); ``vectors[role]`` is
    ``role mean − default mean`` as a :class:`PersonaVector`. ``n_samples[role]`` counts conversations.
    """

    sites: tuple[Site, ...]
    default_mean: torch.Tensor
    means: dict[str, torch.Tensor]
    vectors: dict[str, PersonaVector]
    n_samples: dict[str, int]
    n_default_samples: int
    questions: list[str]
    n_prompts: int
    max_new_tokens: int
    default_mean_norm: dict[Site, float] = field(default_factory=dict)

    def stack(self) -> tuple[list[str], torch.Tensor]:
        """(role names, ``[n_roles, n_sites, d_model]`` role means)."""
        names = list(self.means)
        return names, torch.stack([self.means[n] for n in names])

    def save(self, directory: Union[str, "os.PathLike[str]"]) -> Path:
        """Save each role vector as ``<directory>/<role>/`` (the layout ``space.load_role_vectors`` reads)."""
        root = Path(directory)
        for n, v in self.vectors.items():
            v.save(root / n)
        return root

    def axis(self, name: str = "assistant") -> PersonaVector:
        """The Assistant Axis: default mean minus the mean over roles of each role's mean."""
        _, m = self.stack()
        d = self.default_mean - m.mean(0)
        first = next(iter(self.vectors.values()))
        p = first.provenance
        prov = dataclasses.replace(
            p, name=name, method="mean_diff", route="axis", expression="",
            n_samples=min(self.n_default_samples, min(self.n_samples.values())),
            dataset_hash=_hash([p.dataset_hash for p in (v.provenance for v in self.vectors.values())]),
            extra={"roles": list(self.means), "n_prompts": self.n_prompts, "n_questions": len(self.questions),
                   "questions_hash": _hash(self.questions), "max_new_tokens": self.max_new_tokens},
        )
        return PersonaVector(self.sites, d, prov)


def role_means(
    model: PersonaModel,
    roles: Optional[Sequence[str]] = None,
    *,
    questions: Optional[Sequence[str]] = None,
    n_questions: Optional[int] = 8,
    n_prompts: Optional[int] = 3,
    baseline_prompts: Optional[Sequence[Optional[str]]] = None,
    layers: Layers = "all",
    max_new_tokens: int = 32,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
    prompt_index: Optional[int] = None,
    backend: str = "local",
    address: Optional[str] = None,
    num_actors: Optional[int] = None,
    threads: Optional[int] = None,
    model_loader: Optional[Callable[[], Any]] = None,
) -> RoleMeans:
    """Mean response activations per role (first ``n_prompts`` prompts × first ``n_questions`` questions).

    ``prompt_index=k`` uses only each role's prompt ``k`` (0-based) instead of the first ``n_prompts``, e.g. to
    measure how well two prompts of the same roles agree.

    ``roles=None`` is the whole catalogue (137 roles × 24 answers ≈ 3,300 greedy generations: on 2 busy
    CPU cores plan on a couple of hours the first time; every answer and activation is cached, so later
    calls and overlapping role sets are fast). The default side (every default-assistant prompt on the
    same questions) is generated and recorded once and shared by all roles. All missing answers are
    generated in pooled batches of 16.

    ``backend="ray"`` generates those batches on Ray actors that each hold a model replica (the same batches,
    so the same greedy text; activations are then recorded here): ``address`` (``None``: an existing
    ``ray.init`` or ``"auto"``; ``"local"``; ``"HOST:PORT"``), ``num_actors`` (default: the cluster's GPUs, or
    CPUs ÷ ``threads``), ``threads`` (torch threads per CPU actor, default 1), ``model_loader`` (a picklable
    zero-argument callable returning the replica; default: ``load_model`` with ``model.load_args``). This
    process stays the one writer of the answer cache, so a rerun generates only what is missing. See
    :mod:`persona_vectors.sweep.distributed`.

    >>> rm = role_means(load_model(), backend="ray", address="auto")  # doctest: +SKIP  (whole catalogue)
    """
    ray = _ray_backend(model, backend, address, num_actors, threads, model_loader)
    names, qs, base, role_prompts, pairs = _role_pairs(roles, questions, n_questions, n_prompts, baseline_prompts,
                                                       prompt_index)
    sites = _sites(model, layers)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    with _ray_connected(ray):
        _generate_cached(model, pairs, max_new_tokens=max_new_tokens, caches=caches, progress=pf, ray=ray)
    neg, _ = _prompt_side(model, base, qs, sites, max_new_tokens=max_new_tokens, caches=caches, progress=pf)
    default_mean = torch.stack([neg.mean(s) for s in sites])
    means, vectors, counts = {}, {}, {}
    for n in names:
        pos, convs = _prompt_side(model, role_prompts[n], qs, sites, max_new_tokens=max_new_tokens, caches=caches,
                                  progress=pf)
        means[n] = torch.stack([pos.mean(s) for s in sites])
        counts[n] = pos.n_conversations
        sample = f"Q: {qs[0]}  A: {convs[0][-1]['content']}" if convs else ""
        vectors[n] = vector_from_recordings(
            model, pos, neg, method="mean_diff", name=n, route="prompt",
            extra={"role": n, "n_prompts": len(role_prompts[n]), "n_baseline_prompts": len(base),
                   "n_questions": len(qs), "questions_hash": _hash(qs), "max_new_tokens": max_new_tokens,
                   "sample_response": sample})
    return RoleMeans(sites, default_mean, means, vectors, counts, neg.n_conversations, qs,
                     max(len(p) for p in role_prompts.values()) if prompt_index is not None
                     else n_prompts or max(len(p) for p in role_prompts.values()), max_new_tokens,
                     {s: neg.mean_norm(s) for s in sites})


def _role_pairs(roles: Optional[Sequence[str]], questions: Optional[Sequence[str]], n_questions: Optional[int],
                n_prompts: Optional[int], baseline_prompts: Optional[Sequence[Optional[str]]],
                prompt_index: Optional[int]) -> tuple[list[str], list[str], list[Optional[str]], dict[str, list[str]],
                                                      list[tuple[Optional[str], str]]]:
    """What :func:`role_means` reads: (role names, questions, default-side prompts, each role's prompts, and every
    (system prompt, question) pair it answers — the default side first)."""
    names = [get_role(r).name for r in (roles if roles is not None else [r.name for r in load_roles()])]
    if not names:
        raise DataError("no roles given; pass at least one role name")
    names = list(dict.fromkeys(names))
    qs = _first(questions if questions is not None else extraction_questions(), n_questions, "questions")
    base = list(baseline_prompts) if baseline_prompts is not None else default_system_prompts()
    if prompt_index is not None:
        short = [n for n in names if not 0 <= prompt_index < len(get_role(n).prompts)]
        if short:
            raise DataError(f"prompt_index={prompt_index} is out of range for role(s) {', '.join(short[:5])} "
                            f"(they have {min(len(get_role(n).prompts) for n in short)} prompts): pass a smaller index")
        role_prompts = {n: [get_role(n).prompts[prompt_index]] for n in names}
    else:
        role_prompts = {n: _first(get_role(n).prompts, n_prompts, f"prompts of role {n!r}") for n in names}
    pairs = [(s, q) for s in base for q in qs] + [(s, q) for n in names for s in role_prompts[n] for q in qs]
    return names, qs, base, role_prompts, pairs


def missing_answers(
    model: PersonaModel,
    roles: Optional[Sequence[str]] = None,
    *,
    questions: Optional[Sequence[str]] = None,
    n_questions: Optional[int] = 8,
    n_prompts: Optional[int] = 3,
    baseline_prompts: Optional[Sequence[Optional[str]]] = None,
    max_new_tokens: int = 32,
    cache: CacheArg = True,
    prompt_index: Optional[int] = None,
) -> tuple[int, int]:
    """``(missing, total)``: how many of the distinct greedy answers :func:`role_means` would read for these
    arguments are not in the answer cache yet (nothing is generated). ``missing == 0`` means ``role_means`` runs
    from the cache; with ``cache=False`` every answer is missing."""
    *_, pairs = _role_pairs(roles, questions, n_questions, n_prompts, baseline_prompts, prompt_index)
    keys = {GenerationCache.key(s, q, max_new_tokens) for s, q in pairs}
    caches = _caches(model, cache)
    return sum(caches.gen.get(k) is None for k in keys), len(keys)


def assistant_axis(
    model: PersonaModel,
    roles: Optional[Sequence[str]] = None,
    *,
    n_questions: Optional[int] = 8,
    n_prompts: Optional[int] = 3,
    layers: Layers = "all",
    max_new_tokens: int = 32,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
    name: str = "assistant",
    backend: str = "local",
    address: Optional[str] = None,
    num_actors: Optional[int] = None,
    threads: Optional[int] = None,
    model_loader: Optional[Callable[[], Any]] = None,
) -> PersonaVector:
    """The Assistant Axis: mean over default-assistant prompts minus the mean over roles of role means.

    Positive = toward the default assistant. ``roles=None`` uses the whole catalogue (see
    :func:`role_means` for cost, and for ``backend="ray"`` and its options); :func:`get_persona_vector` uses
    :data:`AXIS_PANEL`.
    """
    rm = role_means(model, roles, n_questions=n_questions, n_prompts=n_prompts, layers=layers,
                    max_new_tokens=max_new_tokens, cache=cache, progress=progress, backend=backend,
                    address=address, num_actors=num_actors, threads=threads, model_loader=model_loader)
    return rm.axis(name)


# ------------------------------------------------------------------------------------------------ the routes


class PromptRoute:
    """The system-prompt route: the model's own answers to the extraction questions under a role's system
    prompts minus its answers under the default-assistant prompts; held out: the evaluation questions."""

    name = "prompt"
    aliases: tuple[str, ...] = ()

    def supports(self, spec: PersonaSpec) -> bool:
        return bool(spec.role) and not spec.axis

    def cache_key_data(self, spec: PersonaSpec, budget: Budget) -> tuple[Any, Any]:
        role = get_role(spec.role)  # type: ignore[arg-type]
        return ({"role": role.to_dict(), "default": default_system_prompts()},
                {"q": extraction_questions(budget.n_questions), "p": budget.n_prompts, "m": budget.max_new_tokens})

    def build(self, model: PersonaModel, spec: PersonaSpec, *, method: str, sites: tuple[Site, ...], budget: Budget,
              cache: CacheArg, progress: Union[bool, ProgressFn]) -> PersonaVector:
        return role_vector(model, spec.role, method=method, n_questions=budget.n_questions,  # type: ignore[arg-type]
                           n_prompts=budget.n_prompts, layers=sites, max_new_tokens=budget.max_new_tokens,
                           cache=cache, progress=progress, name=spec.name)

    def spec_from_provenance(self, name: str, extra: dict[str, Any]) -> Optional[PersonaSpec]:
        if extra.get("role") or extra.get("roles"):
            return PersonaSpec(name, extra.get("role"), None)
        return None

    def quality(self, model: PersonaModel, name: str, vector: PersonaVector, spec: PersonaSpec, *,
                n_eval_questions: Optional[int], cache: CacheArg, progress: Union[bool, ProgressFn],
                data: Any = None) -> PersonaQuality:
        """Fresh answers to the evaluation questions under the role's prompts (as many as the vector was built
        with) vs under the default-assistant prompts."""
        extra = dict(vector.provenance.extra)
        mnt = int(extra.get("max_new_tokens", 32))
        caches, pf = _caches(model, cache), _progress_fn(progress)
        qs, base, sites = evaluation_questions(n_eval_questions), default_system_prompts(), vector.sites
        role = get_role(extra.get("role") or spec.role or name)
        prompts = list(role.prompts[: int(extra.get("n_prompts", len(role.prompts)))])
        pos, _ = _prompt_side(model, prompts, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        neg, _ = _prompt_side(model, base, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        return _quality_from(name, self.name, vector, pos, neg,
                             f"{len(qs)} evaluation questions × {len(prompts)} {role.name} prompts vs "
                             f"× {len(base)} default prompts")


class FactRoute:
    """The fact route: teacher-forced first-person answers of a fact set minus the matched neutral answers
    (no generation); held out: 25 % of the facts by id hash (:func:`fact_split`)."""

    name = "facts"
    aliases: tuple[str, ...] = ()

    def supports(self, spec: PersonaSpec) -> bool:
        return bool(spec.fact_set) and not spec.axis

    def cache_key_data(self, spec: PersonaSpec, budget: Budget) -> tuple[Any, Any]:
        fs = load_fact_set(spec.fact_set)  # type: ignore[arg-type]
        return {"fact_set": fs.name, "hash": fs.dataset_hash(), "split": fact_split(fs)[1]}, None

    def build(self, model: PersonaModel, spec: PersonaSpec, *, method: str, sites: tuple[Site, ...], budget: Budget,
              cache: CacheArg, progress: Union[bool, ProgressFn]) -> PersonaVector:
        return fact_vector(model, spec.fact_set, layers=sites, method=method, cache=cache,  # type: ignore[arg-type]
                           progress=progress, name=spec.name)

    def spec_from_provenance(self, name: str, extra: dict[str, Any]) -> Optional[PersonaSpec]:
        if extra.get("fact_set") in list_fact_sets():
            return PersonaSpec(name, None, extra.get("fact_set"))
        return None

    def quality(self, model: PersonaModel, name: str, vector: PersonaVector, spec: PersonaSpec, *,
                n_eval_questions: Optional[int], cache: CacheArg, progress: Union[bool, ProgressFn],
                data: Any = None) -> PersonaQuality:
        """The held-out facts, persona answers vs neutral answers (``data``: a :class:`FactSet` to use instead
        of the spec's)."""
        caches, pf = _caches(model, cache), _progress_fn(progress)
        fs = _as_fact_set(data) if data is not None else load_fact_set(spec.fact_set or name)
        _, held = fact_split(fs)
        pos_c, neg_c = fact_conversations(fs, held)
        rows = _rows_cached(model, pos_c + neg_c, vector.sites, caches=caches, progress=pf)
        n = len(pos_c)
        return _quality_from(name, self.name, vector, rows.select(range(n)).to_recording(pos_c),
                             rows.select(range(n, 2 * n)).to_recording(neg_c),
                             f"{n} held-out facts (25 % by id hash) of {fs.name}: persona vs neutral answers")


class AxisRoute:
    """The Assistant Axis: the default-assistant mean minus the mean over :data:`AXIS_PANEL` roles of each
    role's mean; it answers ``route="prompt"`` for the ``assistant`` persona. Held out: the evaluation questions."""

    name = "axis"
    aliases: tuple[str, ...] = ("prompt",)

    def supports(self, spec: PersonaSpec) -> bool:
        return spec.axis

    def cache_key_data(self, spec: PersonaSpec, budget: Budget) -> tuple[Any, Any]:
        return ({"roles": [get_role(r).to_dict() for r in AXIS_PANEL], "default": default_system_prompts()},
                {"q": extraction_questions(budget.n_questions), "p": budget.axis_prompts, "m": budget.max_new_tokens})

    def build(self, model: PersonaModel, spec: PersonaSpec, *, method: str, sites: tuple[Site, ...], budget: Budget,
              cache: CacheArg, progress: Union[bool, ProgressFn]) -> PersonaVector:
        if method != "mean_diff":
            raise ValueError("the assistant axis is a difference of means: use method='mean_diff'")
        return assistant_axis(model, AXIS_PANEL, n_questions=budget.n_questions, n_prompts=budget.axis_prompts,
                              layers=sites, max_new_tokens=budget.max_new_tokens, cache=cache, progress=progress,
                              name=spec.name)

    def spec_from_provenance(self, name: str, extra: dict[str, Any]) -> Optional[PersonaSpec]:
        if extra.get("role") or extra.get("roles"):
            return PersonaSpec(name, extra.get("role"), None, axis=True)
        return None

    def quality(self, model: PersonaModel, name: str, vector: PersonaVector, spec: PersonaSpec, *,
                n_eval_questions: Optional[int], cache: CacheArg, progress: Union[bool, ProgressFn],
                data: Any = None) -> PersonaQuality:
        """Default-prompt answers (positive) vs the axis roles' answers to the evaluation questions."""
        extra = dict(vector.provenance.extra)
        mnt = int(extra.get("max_new_tokens", 32))
        caches, pf = _caches(model, cache), _progress_fn(progress)
        qs, base, sites = evaluation_questions(n_eval_questions), default_system_prompts(), vector.sites
        roles = list(extra.get("roles") or AXIS_PANEL)
        n_pr = int(extra.get("n_prompts", 3))
        pairs = [(s, q) for s in base for q in qs] + [
            (s, q) for r in roles for s in get_role(r).prompts[:n_pr] for q in qs]
        _generate_cached(model, pairs, max_new_tokens=mnt, caches=caches, progress=pf)
        pos, _ = _prompt_side(model, base, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        role_systems = [s for r in roles for s in get_role(r).prompts[:n_pr]]
        neg, _ = _prompt_side(model, role_systems, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        q = _quality_from(name, self.name, vector, pos, neg,
                          f"{len(qs)} evaluation questions × {len(base)} default prompts vs × {n_pr} prompts of "
                          f"{len(roles)} roles")
        q.rel_norm = relative_norms(vector, pos)
        q.layer = pick_layer(q.auroc, q.rel_norm)
        return q


PROMPT = register_route(PromptRoute())
FACTS = register_route(FactRoute())
AXIS = register_route(AxisRoute())
