"""Scripted multi-turn conversations and per-turn persona projections (persona drift).

Two halves that compose with the rest of the library:

- :func:`run_scripts` lets the model answer scripted user turns one after another, batched across
  conversations: at turn *t* every conversation that has a *t*-th user turn gets its reply in one batched
  ``generate`` call over the whole history so far. Steering hooks active around the call apply to every
  turn (``with steer(model, axis, layers=[14], operator="cap", threshold=t): run_scripts(...)``), exactly as
  they apply to :meth:`~persona_vectors.models.PersonaModel.generate`.
- :func:`turn_projections` reads every assistant turn of finished conversations: the mean residual-stream
  activation over the turn's content tokens, projected on each unit direction, at each requested layer. A
  causal model's activations at a turn depend only on what precedes it, so one forward over the whole
  conversation gives every turn's value; the tokenization of each turn is checked to be a prefix of the
  whole (else that conversation is read turn by turn). Hooks active around the call apply too — call it
  outside any ``steer`` block to read the text as the unsteered model does (what a finetune or a cap left in
  the *words*, not in the hooked activations).

>>> convs = run_scripts(model, [["Describe your surroundings.", "Go further."]], max_new_tokens=32)  # doctest: +SKIP
>>> tp = turn_projections(model, convs, {"axis": axis}, layers=[14])                                # doctest: +SKIP
>>> tp.matrix("axis", 14)          # [conversations, assistant turns]                                # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Union

import numpy as np
import torch

from .capture import Capture, padded_batches, tokenize_conversation
from .io import check_vector_model
from .sites import Site, as_sites
from .vector import PersonaVector

__all__ = [
    "ConversationReadout",
    "TurnProjections",
    "TurnReadout",
    "assistant_turn_masks",
    "conversation_readout",
    "load_drift_scripts",
    "run_scripts",
    "turn_projections",
]

Messages = list[dict[str, str]]
DirectionsLike = Union[PersonaVector, torch.Tensor, Mapping[str, Union[PersonaVector, torch.Tensor]]]


def _check_scripts(scripts: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(scripts, str) or not isinstance(scripts, Sequence):
        raise TypeError("scripts must be a list of conversations, each a list of user-turn strings")
    out = []
    for i, s in enumerate(scripts):
        if isinstance(s, str) or not isinstance(s, Sequence) or not s:
            raise ValueError(f"script {i} must be a non-empty list of user-turn strings, got {s!r:.80}")
        for j, turn in enumerate(s):
            if not isinstance(turn, str) or not turn.strip():
                raise ValueError(f"script {i}, turn {j}: each user turn must be a non-empty string, got {turn!r:.80}")
        out.append(list(s))
    if not out:
        raise ValueError("No scripts: pass at least one list of user turns")
    return out


def run_scripts(
    model: Any,
    scripts: Sequence[Sequence[str]],
    *,
    system: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    on_turn: Callable[[int, list[Messages]], None] | None = None,
) -> list[Messages]:
    """Play scripted conversations: the model answers each user turn, in order, with the history so far.

    Args:
        model: a :class:`~persona_vectors.models.PersonaModel`.
        scripts: one list of user turns per conversation (lengths may differ).
        system: a system message for every conversation (``None``: the chat template's own default).
        max_new_tokens, temperature, top_p: as for ``generate``, per assistant turn.
        seed: sampling seed; turn *t* uses ``seed + 10_007 * t`` so turns draw independently and a rerun
            with the same scripts, batch and seed gives the same conversations.
        batch_size: rows per ``generate`` call (default: every active conversation at once).
        progress: a progress bar over turns.
        on_turn: called after each turn with ``(turn index, conversations so far)`` (e.g. to checkpoint).

    Returns:
        One message list per script: ``[system?] user, assistant, user, assistant, …`` (an empty reply is kept
        as an empty assistant message; the history the next turn sees contains it as it is).
    """
    scripts = _check_scripts(scripts)
    convs: list[Messages] = [model.to_messages([], system) if system is not None else [] for _ in scripts]
    n_turns = max(len(s) for s in scripts)
    turns: Any = range(n_turns)
    if progress:
        from tqdm.auto import tqdm

        turns = tqdm(turns, desc="turns", unit="turn")
    for t in turns:
        active = [i for i, s in enumerate(scripts) if t < len(s)]
        for i in active:
            convs[i].append({"role": "user", "content": scripts[i][t]})
        prompts = [[dict(m) for m in convs[i]] for i in active]
        replies = model.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 seed=None if seed is None else int(seed) + 10_007 * t, batch_size=batch_size)
        for i, r in zip(active, replies):
            convs[i].append({"role": "assistant", "content": r})
        if on_turn is not None:
            on_turn(t, convs)
    return convs


def assistant_turn_masks(model: Any, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[list[bool]]] | None:
    """Token ids of a whole conversation and, per assistant message, the mask of its content tokens.

    The ids of each assistant turn are those the model saw when it generated it (the history rendered with the
    generation prompt, then the reply's tokens, as :func:`~persona_vectors.capture.tokenize_conversation`
    builds them). Returns ``None`` when an earlier turn's ids are not a prefix of the whole conversation's
    (a template that re-renders history differently): read such a conversation turn by turn instead.
    An empty assistant message gets an all-False mask.
    """
    msgs = [dict(m) for m in messages]
    ends = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not ends:
        raise ValueError("The conversation has no assistant message to read")
    last = ends[-1]
    full, _ = _turn_ids(model, msgs[: last + 1])
    masks: list[list[bool]] = []
    for i in ends:
        ids, sel = _turn_ids(model, msgs[: i + 1])
        if full[: len(ids)] != ids:
            return None
        masks.append(sel + [False] * (len(full) - len(ids)))
    return full, masks


def _turn_ids(model: Any, msgs: Messages) -> tuple[list[int], list[bool]]:
    """ids and response mask of a conversation ending with an assistant message (empty content allowed)."""
    if msgs[-1]["content"].strip():
        return tokenize_conversation(model, msgs, "response")
    ids, _ = tokenize_conversation(model, msgs[:-1], "all")
    return ids, [False] * len(ids)


@dataclass(frozen=True)
class TurnProjections:
    """Per-turn projections of assistant turns on unit directions.

    ``values[(name, site)]`` is one list per conversation of one float per assistant turn (``nan`` for an
    empty reply). ``norms[site]`` holds the turns' mean activation norms (same shape), for scale.
    """

    names: tuple[str, ...]
    sites: tuple[Site, ...]
    values: dict[tuple[str, Site], list[list[float]]]
    norms: dict[Site, list[list[float]]]

    def matrix(self, name: str, site: Site | int | str) -> np.ndarray:
        """``[conversations, max turns]`` array of projections (``nan`` where a conversation has no such turn)."""
        s = Site.parse(site)
        if (name, s) not in self.values:
            raise KeyError(f"no projections for {name!r} at {s}: have names {list(self.names)}, sites "
                           f"{[str(x) for x in self.sites]}")
        rows = self.values[(name, s)]
        width = max((len(r) for r in rows), default=0)
        out = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out


def _directions(model: Any, vectors: DirectionsLike, sites: Sequence[Site], allow_other_model: bool
                ) -> dict[tuple[str, Site], torch.Tensor]:
    named: Mapping[str, Any]
    if isinstance(vectors, (PersonaVector, torch.Tensor)):
        named = {"vector": vectors}
    elif isinstance(vectors, Mapping) and vectors:
        named = vectors
    else:
        raise TypeError("vectors must be a PersonaVector, a tensor, or a non-empty {name: vector} mapping")
    out: dict[tuple[str, Site], torch.Tensor] = {}
    for name, v in named.items():
        for s in sites:
            if isinstance(v, PersonaVector):
                check_vector_model(v, model, allow_other_model=allow_other_model)
                if s not in v.sites:
                    raise KeyError(f"vector {name!r} has no direction at {s} (it has {[str(x) for x in v.sites]}): "
                                   f"extract it at that layer or read other layers")
                d = v[s]
            else:
                d = v
            u = torch.as_tensor(d, dtype=torch.float64).flatten()
            if u.numel() != model.d_model:
                raise ValueError(f"vector {name!r} has width {u.numel()}, the model's d_model is {model.d_model}")
            if not torch.isfinite(u).all() or float(u.norm()) == 0.0:
                raise ValueError(f"vector {name!r} at {s} is zero or not finite: it has no direction to project on")
            out[(str(name), s)] = (u / u.norm()).to(model.device)
    return out


def turn_projections(
    model: Any,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    vectors: DirectionsLike,
    layers: Any,
    *,
    batch_size: int = 8,
    progress: bool = True,
    allow_other_model: bool = False,
) -> TurnProjections:
    """Mean projection of every assistant turn's content tokens on unit ``vectors``, at ``layers``.

    Args:
        model: a :class:`~persona_vectors.models.PersonaModel`.
        conversations: message lists with at least one assistant message (e.g. from :func:`run_scripts`).
        vectors: a direction, or ``{name: direction}``; a :class:`PersonaVector` supplies the direction of each
            layer read, a tensor is used at every layer.
        layers: the sites to read (anything :func:`~persona_vectors.sites.as_sites` takes).
        batch_size: conversations per forward.
        progress: a progress bar over batches.
        allow_other_model: read vectors extracted from another model (widths must still match).

    Hooks active around the call (steering) apply to these forwards.
    """
    if isinstance(conversations, (str, Mapping)) or not conversations:
        raise ValueError("conversations must be a non-empty list of message lists")
    sites = as_sites(layers, model.n_layers)
    units = _directions(model, vectors, sites, allow_other_model)
    names = tuple(dict.fromkeys(n for n, _ in units))
    values: dict[tuple[str, Site], list[list[float]]] = {k: [[] for _ in conversations] for k in units}
    norms: dict[Site, list[list[float]]] = {s: [[] for _ in conversations] for s in sites}

    # one row per (conversation) when its turns are prefixes of the whole, else one row per turn
    rows: list[tuple[list[int], list[bool]]] = []
    owners: list[tuple[int, list[list[bool]]]] = []
    for ci, conv in enumerate(conversations):
        msgs = [dict(m) for m in conv]
        got = assistant_turn_masks(model, msgs)
        if got is not None:
            ids, masks = got
            rows.append((ids, [any(col) for col in zip(*masks)]))
            owners.append((ci, masks))
            continue
        for i, m in enumerate(msgs):
            if m["role"] == "assistant":
                ids, sel = _turn_ids(model, msgs[: i + 1])
                rows.append((ids, sel))
                owners.append((ci, [sel]))
    batches: Any = padded_batches(model, rows, batch_size, padding_side="right")
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="turn projections", unit="batch", total=-(-len(rows) // batch_size), leave=False)
    # results per row, then assembled in conversation/turn order
    per_row: dict[int, tuple[dict[tuple[str, Site], list[float]], dict[Site, list[float]]]] = {}
    with Capture(model, sites, stop=True) as cap:
        for idx, ids, att, _ in batches:
            cap.forward(ids, att)
            for j, r in enumerate(idx):
                masks = owners[r][1]
                vals: dict[tuple[str, Site], list[float]] = {k: [] for k in units}
                nrm: dict[Site, list[float]] = {s: [] for s in sites}
                for mask in masks:
                    m = torch.tensor(mask + [False] * (ids.shape[1] - len(mask)), device=ids.device)
                    for s in sites:
                        x = cap.acts[s][j][m].to(torch.float64)
                        if x.shape[0] == 0:
                            nrm[s].append(float("nan"))
                            for (n, ss) in units:
                                if ss == s:
                                    vals[(n, ss)].append(float("nan"))
                            continue
                        mean = x.mean(0)
                        nrm[s].append(float(x.norm(dim=-1).mean()))
                        for (n, ss), u in units.items():
                            if ss == s:
                                vals[(n, ss)].append(float(mean @ u))
                per_row[r] = (vals, nrm)
    for r in range(len(rows)):
        ci = owners[r][0]
        vals, nrm = per_row[r]
        for k in units:
            values[k][ci].extend(vals[k])
        for s in sites:
            norms[s][ci].extend(nrm[s])
    return TurnProjections(names, tuple(sites), values, norms)


def load_drift_scripts(name: str = "drift_v1") -> dict[str, list[dict[str, Any]]]:
    """The shipped scripted conversations (``data/conversations/<name>.json``): ``{kind: [{id, topic, turns}]}``.

    ``drift_v1``: four kinds (coding help, emotional disclosure, philosophical questions about the model's
    nature, "describe your surroundings" exploration) × 12 conversations × 10 user turns, hand-written.
    """
    base = resources.files("persona_vectors") / "data" / "conversations"
    path = base / f"{name}.json"
    if not path.is_file():
        have = sorted(p.name[:-5] for p in base.iterdir() if p.name.endswith(".json")) if base.is_dir() else []
        raise FileNotFoundError(f"no shipped conversation scripts named {name!r}; available: {have}")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {k: list(v) for k, v in doc["kinds"].items()}


# ============================================================================================ per-turn read-outs
@dataclass(frozen=True)
class TurnReadout:
    """One assistant turn's read-outs: who the model says it is (``self_readout``, a balanced
    :class:`~persona_vectors.readout.GroupReadout` with its unsteered prior) and who it thinks the user is
    (``user_readout``, a :class:`~persona_vectors.readout.ControlledUserReadout` with control questions), each
    asked as the next user turn of the conversation so far (the probe never enters the conversation)."""

    turn: int
    user: str
    reply: str
    self_readout: Any
    user_readout: Any


@dataclass(frozen=True)
class ConversationReadout:
    """Per-turn self and user read-outs of one conversation (:func:`conversation_readout`)."""

    messages: tuple[dict[str, str], ...]
    turns: tuple[TurnReadout, ...]
    steering: tuple[str, ...] = ()

    @property
    def groups(self) -> tuple[str, ...]:
        """The self read-out's candidate groups."""
        return tuple(self.turns[0].self_readout.groups) if self.turns else ()

    @property
    def user_candidates(self) -> tuple[str, ...]:
        """The user read-out's candidates."""
        return tuple(self.turns[0].user_readout.candidates) if self.turns else ()

    def self_mass(self, *, prior: bool = False) -> np.ndarray:
        """``[turns, groups]`` group masses of the self read-out (``prior=True``: with steering bypassed)."""
        rows = []
        for t in self.turns:
            m = t.self_readout.prior if prior else t.self_readout.mass
            if m is None:
                raise ValueError("this read-out has no prior (steering was not active, or prior=None)")
            rows.append([m[g] for g in self.groups])
        return np.array(rows, dtype=float)

    def user_probs(self, kind: str = "user", *, prior: bool = False) -> np.ndarray:
        """``[turns, candidates]`` mean P(candidate) over the user questions (``kind="user"``), a control kind
        (``"non_self"``, ``"third_person"``) or all controls (``"controls"``)."""
        return np.array([[t.user_readout.p(kind, c, prior=prior) for c in self.user_candidates] for t in self.turns],
                        dtype=float)

    def user_attribution(self) -> np.ndarray:
        """``[turns, candidates]`` P(candidate | user questions) − P(candidate | control questions): near 0 for
        an identity that is primed everywhere rather than attributed to the user."""
        return self.user_probs("user") - self.user_probs("controls")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the messages, and per turn both read-outs' ``to_dict()``."""
        return {"messages": [dict(m) for m in self.messages], "steering": list(self.steering),
                "turns": [{"turn": t.turn, "user": t.user, "reply": t.reply, "self": t.self_readout.to_dict(),
                           "user_readout": t.user_readout.to_dict()} for t in self.turns]}

    def figure(self, *, title: str | None = None, top_users: int = 6) -> Any:
        """A plotly figure: self group masses per turn (left) and the user attribution of the ``top_users``
        candidates with the largest mean P under the user questions (right; dashed: the control questions)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        x = [t.turn for t in self.turns]
        fig = make_subplots(rows=1, cols=2, subplot_titles=("Who are you? (group mass)",
                                                            "Who is the user? (solid: user questions, dashed: controls)"))
        mass = self.self_mass()
        for j, g in enumerate(self.groups):
            fig.add_trace(go.Scatter(x=x, y=mass[:, j], mode="lines+markers", name=g, legendgroup="self"), row=1, col=1)
        pu, pc = self.user_probs("user"), self.user_probs("controls")
        order = np.argsort(-pu.mean(0))[:top_users]
        palette = ["#1565c0", "#d32f2f", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#c2185b"]
        for k, j in enumerate(order):
            c, col = self.user_candidates[j], palette[k % len(palette)]
            fig.add_trace(go.Scatter(x=x, y=pu[:, j], mode="lines+markers", name=f"user: {c}", line=dict(color=col),
                                     legendgroup="user"), row=1, col=2)
            fig.add_trace(go.Scatter(x=x, y=pc[:, j], mode="lines", name=f"control: {c}", showlegend=False,
                                     line=dict(color=col, dash="dash"), legendgroup="user"), row=1, col=2)
        for col in (1, 2):
            fig.update_xaxes(title_text="assistant turn", dtick=1, row=1, col=col)
            fig.update_yaxes(title_text="probability", rangemode="tozero", row=1, col=col)
        fig.update_layout(template="plotly_white", width=1200, height=480,
                          title=title or ("Per-turn read-outs" + (f" under {', '.join(self.steering)}" if self.steering else "")))
        return fig


def conversation_readout(
    model: Any,
    conversation: Sequence[str] | Sequence[Mapping[str, str]],
    *,
    self_candidates: Any = "v1",
    user_candidates: Sequence[str] | None = None,
    user_controls: Any = "v1",
    steering: Any = None,
    system: str | None = None,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int | None = None,
    self_questions: Sequence[str] | None = None,
    batch_size: int = 32,
    priors: bool = True,
    robust: bool = True,
    progress: bool = True,
) -> ConversationReadout:
    """Who the model thinks it is, and who it thinks it is talking to, after every turn of a conversation.

    Args:
        model: a :class:`~persona_vectors.models.PersonaModel`.
        conversation: user turns to play (the model answers each, :func:`run_scripts`), or a finished message list.
        self_candidates: the balanced candidate set of the self read-out (a shipped name, path, mapping or
            :class:`~persona_vectors.readout.CandidateSet`), asked with its questions ("Who are you?", …) unless
            ``self_questions`` is given.
        user_candidates: who the user might be (default: the user-controls file's list).
        user_controls: the user questions and their control questions (:func:`~persona_vectors.readout.load_user_controls`).
        steering: a :class:`~persona_vectors.steer.SteerSpec` or a list of them, applied to the played turns and
            to every read-out; each read-out also carries its unsteered prior (same history, steering bypassed).
        system: a system message (``None``: the chat template's default).
        max_new_tokens, temperature, seed: generation of the played turns.
        self_questions: override the self questions.
        batch_size: candidate rows per forward.
        priors: also score every read-out with steering bypassed (the unsteered prior of the same history);
            ``False`` halves the cost when other directions serve as the control.
        robust: run the self read-out's robustness check (leave-one-out and distractor groups,
            :func:`~persona_vectors.readout.group_readout`); ``False`` skips scoring the distractors.
        progress: a progress bar over turns.

    Each probe is asked as the next user turn of the conversation so far and never enters it; controls and priors
    are as in :func:`~persona_vectors.readout.group_readout` and
    :func:`~persona_vectors.readout.user_readout_with_controls`.
    """
    from .readout import group_readout, load_user_controls, user_readout_with_controls
    from .steer import SteerSpec, patch

    specs: list[Any] = []
    if steering is not None:
        specs = [steering] if isinstance(steering, SteerSpec) else list(steering)
        if not all(isinstance(s, SteerSpec) for s in specs):
            raise TypeError("steering must be a SteerSpec or a list of SteerSpec (see persona_vectors.SteerSpec)")
    ctl = load_user_controls(user_controls) if isinstance(user_controls, str) else user_controls
    ucands = list(ctl.candidates if user_candidates is None else user_candidates)
    if not ucands:
        raise ValueError("user_candidates must name at least one candidate")
    handle = patch(model, specs) if specs else None
    try:
        if conversation and all(isinstance(t, str) for t in conversation):
            msgs = run_scripts(model, [list(conversation)], system=system, max_new_tokens=max_new_tokens,
                               temperature=temperature, seed=seed, progress=False)[0]  # type: ignore[arg-type]
        elif conversation and all(isinstance(t, Mapping) for t in conversation):
            msgs = [dict(m) for m in conversation]  # type: ignore[arg-type]
            if system is not None:
                msgs = model.to_messages(msgs, system)
        else:
            raise ValueError("conversation must be a non-empty list of user-turn strings or of {'role', 'content'} messages")
        ends = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        if not ends:
            raise ValueError("the conversation has no assistant turn to read after")
        it: Any = enumerate(ends, start=1)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(list(it), desc="turn read-outs", unit="turn")
        from .readout.candidates import _as_candidate_set

        cs = _as_candidate_set(self_candidates)
        turns = []
        for t, i in it:
            hist = msgs[: i + 1]
            qs = [hist + [{"role": "user", "content": q}] for q in (self_questions or cs.questions)]
            sr = group_readout(model, cs, qs, batch_size=batch_size, prior="auto" if priors else None, robust=robust)
            ur = user_readout_with_controls(model, ucands[0], ucands, controls=ctl, batch_size=batch_size, history=hist,
                                            prior="auto" if priors else None)
            user = next((m["content"] for m in reversed(msgs[:i]) if m["role"] == "user"), "")
            turns.append(TurnReadout(t, user, msgs[i]["content"], sr, ur))
    finally:
        if handle is not None:
            handle.remove()
    return ConversationReadout(tuple(msgs), tuple(turns), tuple(_spec_label(s) for s in specs))


def _spec_label(spec: Any) -> str:
    name = getattr(getattr(spec.vector, "provenance", None), "name", None) or type(spec.vector).__name__
    return f"{name} {spec.operator} α={spec.alpha} L{spec.layers}"
