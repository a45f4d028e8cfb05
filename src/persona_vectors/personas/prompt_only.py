"""Generation-free role vectors (issue #18, P11): read the prompt instead of the model's answers.

The system-prompt route (:class:`~persona_vectors.personas.routes.PromptRoute`) lets the model answer each
extraction question under each role prompt and reads its response tokens: the answers cost one generation each
(the first full-catalogue ``persona-vectors map`` spends most of its time there). This route reads the same
conversations *before* any answer: the activations at the end of the rendered prompt (``"last_prompt"``: the
last token of the generation prompt, where the model is about to answer in the role), over the whole prompt
(``"prompt"``), or (``"opener"``, the default) at the last prompt token and a fixed, role-neutral opener of the
answer that is teacher-forced, not generated (:data:`DEFAULT_OPENER`, ``"I am"``): the first tokens in which the
model speaks as the role. One forward per conversation, stopped after the deepest site, no generation:
``benchmarks/scale.py`` (P11) measures how much faster it is over the whole catalogue and how well its map agrees
with the answer route (Spearman correlation of the roles' PC1 loadings), and ``benchmarks/p11_fidelity.py``
compares the reads layer by layer with the answer route's agreement with itself, so users can choose speed or
fidelity knowingly.

>>> rm = prompt_only_role_means(model)                                      # doctest: +SKIP  (whole catalogue)
>>> vec = get_persona_vector(model, "pirate_captain", route="prompt_only")  # doctest: +SKIP

Prompt-only reads are not written to the activation store (they are cheap to recompute); finished vectors of
:func:`~persona_vectors.personas.get_persona_vector` are cached as for every route.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Optional, Sequence, Union

import torch

from ..datasets import DataError, get_role
from ..extract import vector_from_recordings
from ..models import PersonaModel
from ..record import Conversation, Recording
from ..sites import Site
from ..vector import PersonaVector
from .catalogue import _first, default_system_prompts, evaluation_questions, extraction_questions
from .compute import Layers, ProgressFn, _bar, _progress_fn, _record_rows, _say, _sites
from .quality import _quality_from
from .registry import Budget, PersonaQuality, PersonaSpec, register_route
from .routes import RoleMeans, _role_pairs
from .store import CacheArg, Rows, _hash

#: Where a prompt-only read looks: the generation prompt's last token; every prompt token; or the last prompt
#: token plus a teacher-forced opener of the answer (equal weight per token).
PROMPT_ONLY_POSITIONS: tuple[str, ...] = ("last_prompt", "prompt", "opener")
#: The default read: ``benchmarks/p11_fidelity.md`` compares the three with the answer route, layer by layer, on three
#: splits of roles' prompts and questions (the opener read was chosen on the first; rule 2 adopted it on the third).
DEFAULT_PROMPT_POSITIONS = "opener"
#: The opener the ``"opener"`` read teacher-forces after the generation prompt: role-neutral, first person.
DEFAULT_OPENER = "I am"


def _check_positions(positions: str) -> str:
    if positions not in PROMPT_ONLY_POSITIONS:
        raise ValueError(f"positions must be one of {', '.join(map(repr, PROMPT_ONLY_POSITIONS))} for a "
                         f"prompt-only read, got {positions!r}")
    return positions


def prompt_conversations(model: PersonaModel, systems: Sequence[Optional[str]],
                         questions: Sequence[str]) -> list[Conversation]:
    """The unanswered conversations of every (system, question) pair, system-major (``None``: the template's
    default system prompt, as in the answer route)."""
    return [model.to_messages(q, s) for s in systems for q in questions]


def _common_prefix(rows: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Length of the longest common prefix of token rows, leaving every row at least its last ``keep`` tokens."""
    n = min(len(r) for r in rows) - keep
    first = rows[0]
    for k in range(max(n, 0)):
        if any(r[k] != first[k] for r in rows[1:]):
            return k
    return max(n, 0)


def _opener_ids(model: PersonaModel, positions: str, opener: str) -> list[int]:
    """The teacher-forced tokens of an ``"opener"`` read (none for the other reads); an empty opener is refused."""
    if positions != "opener":
        return []
    ids = list(model.response_ids(opener)) if isinstance(opener, str) else []
    if not ids:
        raise ValueError(f"positions='opener' needs a non-empty opener text (e.g. {DEFAULT_OPENER!r}), got {opener!r}; "
                         "or read positions='last_prompt'")
    return ids


def _prompt_rows(model: PersonaModel, convs: Sequence[Conversation], opener_ids: Sequence[int] = ()
                 ) -> list[tuple[list[int], list[bool]]]:
    """Each conversation's prompt tokens up to its last prompt token, plus the opener; mask = the positions read
    (the last prompt token and every opener token). Anything after the prompt (e.g. an answer) is dropped."""
    from ..capture import tokenize_conversation

    out = []
    for c in convs:  # a causal read at the last prompt token needs nothing after it (e.g. an answer)
        row, mask = tokenize_conversation(model, c, "last_prompt")
        ids = row[: mask.index(True) + 1] + list(opener_ids)
        out.append((ids, [False] * (len(ids) - 1 - len(opener_ids)) + [True] * (1 + len(opener_ids))))
    return out


def _last_prompt_rows(model: PersonaModel, convs: Sequence[Conversation], sites: tuple[Site, ...],
                      batch_size: int = 16, on_batch: Optional[Any] = None, opener_ids: Sequence[int] = ()) -> Rows:
    """Per-conversation activations at the last prompt token (and the teacher-forced ``opener_ids`` after it,
    averaged with equal weight per token), each shared prefix run once.

    Conversations that differ only in their last message (one system prompt, several questions) share every token
    up to that message: the prefixes run once per group (left padded, KV cache kept), then each conversation's
    remaining tokens run on its group's cache (right padded, positions continuing the prefix). The activations equal
    :func:`~persona_vectors.personas.compute._record_rows` with ``positions="last_prompt"`` up to float rounding.
    """
    from transformers import DynamicCache

    from ..capture import Capture, StopForward

    n_read = 1 + len(opener_ids)
    ids = [row for row, _ in _prompt_rows(model, convs, opener_ids)]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(convs):
        groups.setdefault(_hash([dict(m) for m in c[:-1]] if not isinstance(c, str) else c), []).append(i)
    plan = []
    for members in groups.values():
        k = _common_prefix([ids[i] for i in members], keep=n_read)
        plan.append((k, members))
    plan.sort(key=lambda g: g[0])
    S, d, dev = len(sites), model.d_model, model.device
    means = torch.zeros(len(convs), S, d, dtype=torch.float32)
    norm_sums = torch.zeros(len(convs), S, dtype=torch.float64)
    pad = int(model.tokenizer.pad_token_id or 0)
    per_chunk = max(1, batch_size // max(1, max(len(m) for _, m in plan)))
    with Capture(model, sites, stop=True) as cap, torch.inference_mode():
        for b in range(0, len(plan), per_chunk):
            chunk = plan[b : b + per_chunk]
            width = max(max(k for k, _ in chunk), 1)
            pre_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            pre_att = torch.zeros((len(chunk), width), dtype=torch.long)
            for g, (k, members) in enumerate(chunk):
                if k:
                    pre_ids[g, width - k :] = torch.tensor(ids[members[0]][:k])
                    pre_att[g, width - k :] = 1
            cache = DynamicCache(config=model.hf.config)
            cap.acts.clear()
            with contextlib.suppress(StopForward):
                model.hf(input_ids=pre_ids.to(dev), attention_mask=pre_att.to(dev), use_cache=True,
                         past_key_values=cache, position_ids=(pre_att.cumsum(-1) - 1).clamp_min(0).to(dev))
            rows = [(g, i) for g, (_, members) in enumerate(chunk) for i in members]
            tails = [ids[i][chunk[g][0]:] for g, i in rows]
            tw = max(len(t) for t in tails)
            suf_ids = torch.full((len(rows), tw), pad, dtype=torch.long)
            suf_att = torch.zeros((len(rows), tw), dtype=torch.long)
            for r, t in enumerate(tails):
                suf_ids[r, : len(t)] = torch.tensor(t)
                suf_att[r, : len(t)] = 1
            owner = torch.tensor([g for g, _ in rows])
            cache.batch_select_indices(owner.to(dev))
            att = torch.cat([pre_att[owner], suf_att], dim=1)
            pos = pre_att[owner].sum(1, keepdim=True) + torch.arange(tw).unsqueeze(0)
            cap.acts.clear()
            with contextlib.suppress(StopForward):
                model.hf(input_ids=suf_ids.to(dev), attention_mask=att.to(dev), use_cache=True,
                         past_key_values=cache, position_ids=pos.to(dev))
            # the last n_read positions of each (right-padded) tail: the last prompt token and the opener
            read = torch.tensor([len(t) - n_read for t in tails]).unsqueeze(1) + torch.arange(n_read).unsqueeze(0)
            rix = torch.arange(len(rows)).unsqueeze(1).expand_as(read)
            idx = [i for _, i in rows]
            for j, site in enumerate(sites):
                x = cap.acts[site][rix.to(dev), read.to(dev)].to(torch.float64)  # [rows, n_read, d]
                means[idx, j] = x.mean(1).float().cpu()
                norm_sums[idx, j] = x.norm(dim=-1).sum(1).cpu()
            if on_batch is not None:
                on_batch(len(rows))
    return Rows(sites, means, norm_sums, torch.full((len(convs),), n_read, dtype=torch.long))


def prompt_only_recordings(
    model: PersonaModel,
    groups: Sequence[Sequence[Conversation]],
    sites: tuple[Site, ...],
    *,
    positions: str = DEFAULT_PROMPT_POSITIONS,
    batch_size: int = 32,
    progress: ProgressFn = None,
    share_prefixes: bool = True,
    opener: str = DEFAULT_OPENER,
) -> list[Recording]:
    """One :class:`~persona_vectors.record.Recording` per group of unanswered conversations, read at
    ``positions`` of each prompt (per-conversation samples kept).

    All groups are recorded together, so a whole catalogue costs one pass. With ``share_prefixes`` (default) a
    ``"last_prompt"`` or ``"opener"`` read runs the tokens that conversations share up to their last message (a
    system prompt asked several questions) once per prefix; ``False`` runs every conversation whole
    (length-sorted batches). ``opener``: the text teacher-forced after the prompt by the ``"opener"`` read.
    """
    _check_positions(positions)
    opener_ids = _opener_ids(model, positions, opener)
    flat = [c for g in groups for c in g]
    if not flat:
        raise DataError("no conversations to read: pass at least one system prompt and one question")
    what = f"{positions} {opener!r}" if positions == "opener" else positions
    _say(progress, f"read {len(flat)} prompts at {len(sites)} sites ({what}, no generation)")
    bar = _bar(progress, len(flat), f"read prompts ({len(sites)} sites)", "conv")
    try:
        step = None if bar is None else bar.update
        if positions in ("last_prompt", "opener") and share_prefixes:
            rows = _last_prompt_rows(model, flat, sites, batch_size=batch_size, on_batch=step, opener_ids=opener_ids)
        elif positions == "opener":
            rows = _record_rows(model, flat, sites, batch_size=batch_size, on_batch=step,
                                tokenized=_prompt_rows(model, flat, opener_ids))
        else:
            rows = _record_rows(model, flat, sites, batch_size=batch_size, positions=positions, on_batch=step)
    finally:
        if bar is not None:
            bar.close()
    out, start = [], 0
    for g in groups:
        rec = rows.select(range(start, start + len(g))).to_recording(g)
        out.append(dataclasses.replace(rec, positions=positions))
        start += len(g)
    return out


def _extra(role: str, n_prompts: int, base: Sequence[Optional[str]], qs: Sequence[str], positions: str,
           opener: str) -> dict[str, Any]:
    out = {"role": role, "n_prompts": n_prompts, "n_baseline_prompts": len(base), "n_questions": len(qs),
           "questions_hash": _hash(list(qs)), "baseline_prompts_hash": _hash(list(base)),
           "prompt_positions": positions, "generation_free": True}
    if positions == "opener":
        out["prompt_opener"] = opener
    return out


def prompt_only_role_means(
    model: PersonaModel,
    roles: Optional[Sequence[str]] = None,
    *,
    questions: Optional[Sequence[str]] = None,
    n_questions: Optional[int] = 8,
    n_prompts: Optional[int] = 3,
    baseline_prompts: Optional[Sequence[Optional[str]]] = None,
    layers: Layers = "all",
    positions: str = DEFAULT_PROMPT_POSITIONS,
    opener: str = DEFAULT_OPENER,
    prompt_index: Optional[int] = None,
    batch_size: int = 32,
    progress: Union[bool, ProgressFn] = True,
) -> RoleMeans:
    """:func:`~persona_vectors.personas.role_means` without generating answers: each role's mean activation at
    ``positions`` of its (role prompt × question) conversations, minus the default-assistant prompts' mean.

    Same arguments and result type as ``role_means`` (``max_new_tokens`` is 0: nothing is generated); the
    vectors' provenance says ``route="prompt_only"``, ``positions`` and (for ``"opener"``) the ``opener`` text.
    ``roles=None`` is the whole catalogue; ``prompt_index=k`` reads only each role's prompt ``k`` (as in
    ``role_means``).
    """
    _check_positions(positions)
    names, qs, base, role_prompts, _ = _role_pairs(roles, questions, n_questions, n_prompts, baseline_prompts,
                                                   prompt_index)
    if not base:
        raise DataError("no baseline prompts; pass at least one default-assistant system prompt")
    sites = _sites(model, layers)
    groups = [prompt_conversations(model, base, qs)] + [prompt_conversations(model, role_prompts[n], qs) for n in names]
    recs = prompt_only_recordings(model, groups, sites, positions=positions, batch_size=batch_size,
                                  progress=_progress_fn(progress), opener=opener)
    neg = recs[0]
    means, vectors, counts = {}, {}, {}
    for n, pos in zip(names, recs[1:]):
        means[n] = torch.stack([pos.mean(s) for s in sites])
        counts[n] = pos.n_conversations
        vectors[n] = vector_from_recordings(model, pos, neg, method="mean_diff", name=n, route="prompt_only",
                                            extra=_extra(n, len(role_prompts[n]), base, qs, positions, opener))
    return RoleMeans(sites, torch.stack([neg.mean(s) for s in sites]), means, vectors, counts, neg.n_conversations,
                     qs, max(len(p) for p in role_prompts.values()) if prompt_index is not None or not n_prompts
                     else n_prompts, 0,
                     {s: neg.mean_norm(s) for s in sites})


def prompt_only_role_vector(
    model: PersonaModel,
    role_name: str,
    *,
    method: str = "mean_diff",
    questions: Optional[Sequence[str]] = None,
    n_questions: Optional[int] = None,
    n_prompts: Optional[int] = None,
    baseline_prompts: Optional[Sequence[Optional[str]]] = None,
    layers: Layers = "all",
    positions: str = DEFAULT_PROMPT_POSITIONS,
    opener: str = DEFAULT_OPENER,
    progress: Union[bool, ProgressFn] = True,
    name: Optional[str] = None,
) -> PersonaVector:
    """One role's generation-free vector: role prompts minus default-assistant prompts, read at ``positions``
    (``opener``: the text teacher-forced by the ``"opener"`` read).

    ``method``: ``mean_diff`` (default) or ``probe``; ``pca`` needs paired samples and is refused (the two
    sides have different prompt counts): use the answer route (``route="prompt"``) for it.
    """
    if method == "pca":
        raise ValueError("method='pca' needs paired samples, which a prompt-only read does not have: use "
                         "method='mean_diff' or 'probe', or route='prompt' for PCA")
    role = get_role(role_name)
    qs = _first(questions if questions is not None else extraction_questions(), n_questions, "questions")
    prompts = _first(role.prompts, n_prompts, f"prompts of role {role.name!r}")
    base = list(baseline_prompts) if baseline_prompts is not None else default_system_prompts()
    if not base:
        raise DataError("no baseline prompts; pass at least one default-assistant system prompt")
    pos, neg = prompt_only_recordings(model, [prompt_conversations(model, prompts, qs),
                                              prompt_conversations(model, base, qs)],
                                      _sites(model, layers), positions=positions, progress=_progress_fn(progress),
                                      opener=opener)
    return vector_from_recordings(model, pos, neg, method=method, name=name or role.name, route="prompt_only",
                                  extra=_extra(role.name, len(prompts), base, qs, positions, opener))


class PromptOnlyRoute:
    """Role vectors with no generated answers: role prompts minus default-assistant prompts, read at the end of
    the rendered prompt and a teacher-forced opener (:data:`DEFAULT_PROMPT_POSITIONS`, :data:`DEFAULT_OPENER`). Held out: the evaluation questions, read the same way."""

    name = "prompt_only"
    aliases: tuple[str, ...] = ()

    def supports(self, spec: PersonaSpec) -> bool:
        """Every catalogue role (not the Assistant Axis, not fact sets)."""
        return bool(spec.role) and not spec.axis

    def cache_key_data(self, spec: PersonaSpec, budget: Budget) -> tuple[Any, Any]:
        """The role, the default prompts and the read positions; the budget's questions and prompt count."""
        role = get_role(spec.role)  # type: ignore[arg-type]
        return ({"role": role.to_dict(), "default": default_system_prompts(), "positions": DEFAULT_PROMPT_POSITIONS,
                 "opener": DEFAULT_OPENER},
                {"q": extraction_questions(budget.n_questions), "p": budget.n_prompts})

    def build(self, model: PersonaModel, spec: PersonaSpec, *, method: str, sites: tuple[Site, ...], budget: Budget,
              cache: CacheArg, progress: Union[bool, ProgressFn]) -> PersonaVector:
        """:func:`prompt_only_role_vector` with the budget's questions and prompts."""
        return prompt_only_role_vector(model, spec.role, method=method,  # type: ignore[arg-type]
                                       n_questions=budget.n_questions, n_prompts=budget.n_prompts, layers=sites,
                                       progress=progress, name=spec.name)

    def spec_from_provenance(self, name: str, extra: dict[str, Any]) -> Optional[PersonaSpec]:
        """The role recorded in the vector's provenance."""
        return PersonaSpec(name, extra["role"], None) if extra.get("role") else None

    def quality(self, model: PersonaModel, name: str, vector: PersonaVector, spec: PersonaSpec, *,
                n_eval_questions: Optional[int], cache: CacheArg, progress: Union[bool, ProgressFn],
                data: Any = None) -> PersonaQuality:
        """The evaluation questions under the role's prompts vs under the default prompts, read like the vector."""
        extra = dict(vector.provenance.extra)
        positions = _check_positions(str(extra.get("prompt_positions", DEFAULT_PROMPT_POSITIONS)))
        opener = str(extra.get("prompt_opener", DEFAULT_OPENER))
        qs, base = evaluation_questions(n_eval_questions), default_system_prompts()
        role = get_role(extra.get("role") or spec.role or name)
        prompts = list(role.prompts[: int(extra.get("n_prompts", len(role.prompts)))])
        pos, neg = prompt_only_recordings(model, [prompt_conversations(model, prompts, qs),
                                                  prompt_conversations(model, base, qs)],
                                          vector.sites, positions=positions, progress=_progress_fn(progress),
                                          opener=opener)
        read = f"{positions} {opener!r}" if positions == "opener" else positions
        return _quality_from(name, self.name, vector, pos, neg,
                             f"{len(qs)} evaluation questions × {len(prompts)} {role.name} prompts vs × {len(base)} "
                             f"default prompts, read at {read} (no generation)")


PROMPT_ONLY = register_route(PromptOnlyRoute())

__all__ = ["DEFAULT_OPENER", "DEFAULT_PROMPT_POSITIONS", "PROMPT_ONLY_POSITIONS", "PromptOnlyRoute", "prompt_conversations",
           "prompt_only_recordings", "prompt_only_role_means", "prompt_only_role_vector"]
