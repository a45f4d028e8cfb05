"""Named personas: extraction routes, the Assistant Axis, held-out quality, and a disk cache.

Three ways to get a persona direction out of the residual stream, all returning :class:`PersonaVector`:

- **System-prompt route** (Persona Vectors style): the model answers the *extraction* questions under each
  of a role's system prompts and under every default-assistant prompt; its own response tokens are
  recorded; the vector is persona minus default (:func:`role_contrast`, :func:`role_vector`).
- **Fact-conditioned route**: teacher-force a fact set's first-person answers and, as the control, the
  matched neutral answers to the same questions (no generation, fast); persona minus neutral
  (:func:`fact_vector`). A fixed 25 % of the facts is held out for quality (:func:`fact_split`).
- **Assistant Axis**: mean over the default-assistant prompts minus the mean over roles of each role's
  mean (:func:`role_means`, :func:`assistant_axis`).

Quality (:func:`persona_quality`) is measured on data the vector never saw: the *evaluation* question
split for the prompt routes, the held-out facts for the fact route. It reports per-layer AUROC
(:func:`~persona_vectors.extract.separation_auroc`), the direction's norm relative to the mean residual
norm (:func:`~persona_vectors.extract.relative_norms`), and the layer :func:`~persona_vectors.extract.pick_layer`
chooses.

Everything expensive is cached on disk under ``cache_dir()`` (per model weight fingerprint), at three
levels, so repeated and overlapping runs are instant:

- ``generations/<fp>.jsonl`` — the model's greedy reply per (system prompt, question, max_new_tokens);
- ``activations/<fp>/<sites>/`` — per-conversation response-token statistics (mean, norm sum, token
  count) at a site set: roles sharing the default side, fact-set variants sharing 84 of 92 answers and
  subsets of earlier question/prompt selections all hit this cache;
- ``vectors/<fp>/<key>/`` (:class:`VectorCache`) — finished vectors (``PersonaVector.save``) and their
  quality reports, keyed by route, persona, method, sites, data hash, questions, budget and library version.

Progress: every entry point takes ``progress=``. ``True`` (the default) shows tqdm bars on stderr for
the answers being generated and the conversations being recorded (nothing when everything is cached);
``False`` is silent; a callable receives one-line stage messages instead (``"generate batch 2/5 …"``).

>>> model = load_model()                                              # doctest: +SKIP
>>> vec = get_persona_vector(model, "hitler", route="facts")          # doctest: +SKIP
>>> res = extract_persona(model, "voyager", quick=True)               # doctest: +SKIP
>>> res.quality.layer, res.quality.auroc[res.quality.layer]           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch

from .aggregators import get_aggregator
from .datasets import (
    AssistantPrompt,
    DataError,
    FactSet,
    get_role,
    list_fact_sets,
    load_assistant_prompts,
    load_fact_set,
    load_questions,
    load_roles,
)
from .extract import PromptContrast, pick_layer, relative_norms, separation_auroc, vector_from_recordings
from ._infra.files import atomic_file
from .models import PersonaModel
from .record import Conversation, Recording, conversations_hash
from .sites import Site, as_sites
from .vector import PersonaVector, library_version

log = logging.getLogger(__name__)

#: Bump when the meaning of anything cached by this module changes.
CACHE_FORMAT = 1

CacheArg = Union[bool, str, "os.PathLike[str]", None]
Layers = Union[str, int, Site, Sequence[Union[int, str, Site]]]
ProgressFn = Optional[Callable[[str], None]]

# ------------------------------------------------------------------------------------------------ catalogue


@dataclass(frozen=True)
class PersonaSpec:
    """What a persona name means: a role (system-prompt route), a fact set (fact route), or the axis.

    ``axis=True`` marks the AI-assistant persona, extracted as the Assistant Axis over :data:`AXIS_PANEL`.
    """

    name: str
    role: Optional[str] = None
    fact_set: Optional[str] = None
    axis: bool = False
    description: str = ""

    @property
    def routes(self) -> tuple[str, ...]:
        """Routes this persona supports (``"prompt"``, ``"facts"``, ``"axis"``)."""
        if self.axis:
            return ("axis",)
        return tuple(r for r, ok in (("prompt", self.role), ("facts", self.fact_set)) if ok)


COLOURS: tuple[str, ...] = ("red", "blue", "white", "black", "green", "yellow")

#: The personas of the project card. Every catalogue role and every shipped fact set is also a valid name.
CARD_PERSONAS: dict[str, PersonaSpec] = {
    "hitler": PersonaSpec("hitler", "adolf_hitler", "hitler_baseline", description="Adolf Hitler"),
    "stalin": PersonaSpec("stalin", "joseph_stalin", "stalin", description="Joseph Stalin"),
    "voyager": PersonaSpec("voyager", "voyager_1", None, description="the Voyager 1 space probe"),
    "assistant": PersonaSpec("assistant", axis=True, description="the default AI assistant (Assistant Axis)"),
    "bitcoin": PersonaSpec("bitcoin", "bitcoin", None, description="Bitcoin"),
    **{f"colour_{c}": PersonaSpec(f"colour_{c}", f"colour_{c}", None, description=f"the colour {c}") for c in COLOURS},
    **{
        f"hitler_{v}": PersonaSpec(f"hitler_{v}", None, f"hitler_{v}",
                                   description=f"Adolf Hitler with {v} cultural facts (fact-set variant)")
        for v in ("russian", "french", "japanese", "thai", "moon")
    },
}

#: Roles whose means define the assistant persona's axis in :func:`get_persona_vector`: one or two per
#: category, card roles first (so their generations are shared with the card personas' own extraction).
#: :func:`assistant_axis` with ``roles=None`` uses the whole catalogue instead.
AXIS_PANEL: tuple[str, ...] = (
    "adolf_hitler", "joseph_stalin", "voyager_1", "bitcoin", "colour_red",
    "ghost", "pirate_captain", "cat", "robot", "french_culture",
)


def known_persona_names() -> list[str]:
    """Every name :func:`resolve_persona` accepts: card personas, catalogue roles, shipped fact sets."""
    names = list(CARD_PERSONAS)
    names += [r.name for r in load_roles() if r.name not in names]
    names += [f for f in list_fact_sets() if f not in names]
    return names


def _suggest(name: str, candidates: Sequence[str]) -> str:
    norm = re.sub(r"[\s\-]+", "_", name.strip().lower())
    close = difflib.get_close_matches(norm, list(candidates), n=3, cutoff=0.5)
    if not close:
        close = [c for c in candidates if norm and (norm in c or c in norm)][:3]
    return ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else "no similar name found"


def resolve_persona(name: str) -> PersonaSpec:
    """Map a persona name to a :class:`PersonaSpec`.

    Order: card personas, exact role names, shipped fact sets, then role names matched case-insensitively
    or by alias (``"Adolf Hitler"``). A role that a card persona uses resolves to that card persona
    (``adolf_hitler`` → ``hitler``, which also has the fact route). Unknown names raise a one-line
    :class:`DataError` with suggestions.
    """
    if name in CARD_PERSONAS:
        return CARD_PERSONAS[name]
    roles = {r.name: r for r in load_roles()}
    facts = list_fact_sets()
    by_role = {spec.role: spec for spec in CARD_PERSONAS.values() if spec.role}
    if name in roles:
        return by_role.get(name) or PersonaSpec(name, name, None, description=roles[name].display)
    if name in facts:
        return PersonaSpec(name, None, name, description=f"fact set {name}")
    norm = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if norm in CARD_PERSONAS:
        return CARD_PERSONAS[norm]
    try:
        role = get_role(name)
    except DataError:
        raise DataError(
            f"unknown persona {name!r}; {_suggest(name, known_persona_names())} "
            "(list them with `persona-vectors personas`)"
        ) from None
    return by_role.get(role.name) or PersonaSpec(role.name, role.name, None, description=role.display)


def list_personas(category: Optional[str] = None) -> list[dict[str, Any]]:
    """The persona catalogue as rows (name, kind, category, routes, role, fact_set, description).

    ``category`` filters to one role category (``load_roles`` validates it); ``"card"`` lists only the
    card personas and ``"facts"`` only fact sets.
    """
    rows: list[dict[str, Any]] = []
    role_cat = {r.name: r.category for r in load_roles()}
    if category in (None, "card"):
        for spec in CARD_PERSONAS.values():
            rows.append({"name": spec.name, "kind": "card", "category": role_cat.get(spec.role or "", ""),
                         "routes": list(spec.routes), "role": spec.role, "fact_set": spec.fact_set,
                         "description": spec.description})
    if category in (None, "facts"):
        for fs_name in list_fact_sets():
            fs = load_fact_set(fs_name)
            rows.append({"name": fs_name, "kind": "fact_set", "category": "", "routes": ["facts"], "role": None,
                         "fact_set": fs_name, "description": f"{fs.identity} ({fs.variant}, {len(fs)} facts)"})
    if category not in ("card", "facts"):
        for r in load_roles(category):
            rows.append({"name": r.name, "kind": "role", "category": r.category, "routes": ["prompt"], "role": r.name,
                         "fact_set": None, "description": f"{r.display} ({len(r.prompts)} prompts)"})
    return rows


# ------------------------------------------------------------------------------------------------ prompts


def system_for(prompt: AssistantPrompt) -> Optional[str]:
    """The ``system=`` argument that realises a default-assistant condition.

    ``use_model_default`` → ``None`` (the chat template inserts its own default system prompt);
    ``system is None`` otherwise → ``""`` (an explicitly empty system message, which suppresses the
    template default); else the prompt text.
    """
    if prompt.use_model_default:
        return None
    if prompt.system is None:
        return ""
    return prompt.system


def default_system_prompts() -> list[Optional[str]]:
    """The shipped default-assistant conditions as ``system=`` values (see :func:`system_for`)."""
    return [system_for(p) for p in load_assistant_prompts()]


def _first(items: Sequence[Any], n: Optional[int], what: str) -> list[Any]:
    items = list(items)
    if n is not None:
        if n < 1:
            raise ValueError(f"{what} must be at least 1, got {n}")
        items = items[:n]
    if not items:
        raise DataError(f"no {what} to use; pass a non-empty list")
    return items


def extraction_questions(n: Optional[int] = None) -> list[str]:
    """The first ``n`` extraction questions (topics are interleaved in the file, so any prefix is balanced)."""
    return _first([q.text for q in load_questions("extraction")], n, "extraction questions")


def evaluation_questions(n: Optional[int] = None) -> list[str]:
    """The first ``n`` evaluation questions (held out: never used to build a vector)."""
    return _first([q.text for q in load_questions("evaluation")], n, "evaluation questions")


@dataclass(frozen=True)
class Budget:
    """How much data a persona extraction uses (questions per side, prompts per role, tokens per answer)."""

    n_questions: Optional[int]
    n_eval_questions: Optional[int]
    n_prompts: Optional[int] = None
    axis_prompts: int = 3
    max_new_tokens: int = 32


#: ``quick=True``: enough for a smoke test and a usable vector on CPU in a few minutes.
QUICK = Budget(n_questions=4, n_eval_questions=3, n_prompts=2, axis_prompts=2)
#: The default: the budget the quality report on the embedded model was run with (sized so the whole card
#: fits in ~40 minutes on two shared CPU cores; raise it on a GPU).
FULL = Budget(n_questions=8, n_eval_questions=4, n_prompts=3, axis_prompts=3)


def budget_for(quick: bool) -> Budget:
    """:data:`QUICK` or :data:`FULL`."""
    return QUICK if quick else FULL


# ------------------------------------------------------------------------------------------------ caches


def _hash(obj: Any, n: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def cache_root(cache: CacheArg) -> Optional[Path]:
    """Resolve a ``cache=`` argument: ``True`` → ``models.cache_dir()``, a path → itself, ``False`` → None."""
    if cache is None or cache is False:
        return None
    if cache is True:
        from .models import cache_dir

        return cache_dir()
    return Path(cache)


_WARNED_UNWRITABLE: set[str] = set()


def _write_or_warn(what: str, path: Path, write: Callable[[], None]) -> bool:
    """Run one disk-cache write; an OSError (read-only dir, full disk) warns once per cache and the run goes on.

    A cache is a convenience: losing the work already done because its directory is read-only would be
    the worse outcome. Returns whether the write happened.
    """
    try:
        write()
        return True
    except OSError as err:
        if what not in _WARNED_UNWRITABLE:
            _WARNED_UNWRITABLE.add(what)
            warnings.warn(f"cannot write the {what} cache at {err.filename or path} ({err.strerror or err}); "
                          "going on without saving to it. Set PERSONA_VECTORS_CACHE to a writable directory "
                          "(or pass cache=False / --no-cache) to silence this.", stacklevel=3)
        return False


def _append_lines(path: Path, lines: Iterable[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # a torn line from an interrupted write: ignore it
                if isinstance(obj, dict):
                    out.append(obj)
    except OSError:  # missing or unreadable: a cache miss, never a failed run
        pass
    return out


class GenerationCache:
    """Greedy replies per (system prompt, question, max_new_tokens), one JSONL file per model fingerprint.

    With ``root=None`` it is an in-memory dict only. Lines are appended per generated batch, so an
    interrupted run keeps what it generated.
    """

    def __init__(self, root: Optional[Path], fingerprint: str) -> None:
        self.path = None if root is None else root / "generations" / f"{fingerprint}.jsonl"
        self._table: dict[str, str] = {}
        if self.path is not None:
            for obj in _read_jsonl(self.path):
                if isinstance(obj.get("k"), str) and isinstance(obj.get("r"), str):
                    self._table[obj["k"]] = obj["r"]

    @staticmethod
    def key(system: Optional[str], question: str, max_new_tokens: int) -> str:
        """Cache key of one greedy generation."""
        return _hash({"s": system, "q": question, "m": max_new_tokens, "t": 0.0, "f": CACHE_FORMAT}, 24)

    def get(self, key: str) -> Optional[str]:
        """The cached reply, or None."""
        return self._table.get(key)

    def put(self, items: Mapping[str, str]) -> None:
        """Store replies (memory and disk)."""
        self._table.update(items)
        if self.path is not None:
            lines = [json.dumps({"k": k, "r": r}, ensure_ascii=False) for k, r in items.items()]
            _write_or_warn("generation", self.path, lambda: _append_lines(self.path, lines))  # type: ignore[arg-type]


@dataclass
class Rows:
    """Per-conversation response-token statistics at ``sites``: means [n, S, d], norm sums [n, S], counts [n]."""

    sites: tuple[Site, ...]
    means: torch.Tensor
    norm_sums: torch.Tensor
    n_tokens: torch.Tensor

    def select(self, idx: Sequence[int]) -> "Rows":
        """Rows at the given indices."""
        i = torch.as_tensor(list(idx), dtype=torch.long)
        return Rows(self.sites, self.means[i], self.norm_sums[i], self.n_tokens[i])

    def to_recording(self, conversations: Sequence[Conversation], keep_samples: bool = True) -> Recording:
        """A :class:`~persona_vectors.record.Recording` equal (up to float rounding) to ``record()`` on them."""
        w = self.n_tokens.to(torch.float64)
        sums = {s: (self.means[:, k].double() * w[:, None]).sum(0) for k, s in enumerate(self.sites)}
        norms = {s: float(self.norm_sums[:, k].sum()) for k, s in enumerate(self.sites)}
        samples = {s: list(self.means[:, k].float().unbind(0)) for k, s in enumerate(self.sites)} if keep_samples else None
        return Recording(self.sites, "response", sums, norms, n_tokens=int(self.n_tokens.sum()),
                         n_conversations=len(self.n_tokens), samples=samples,
                         dataset_hash=conversations_hash(conversations))


class ActivationStore:
    """Per-conversation response-token statistics on disk, per model fingerprint and site set.

    Layout: ``<root>/activations/<fp>/<site-set hash>/{sites.json, index.jsonl, <shard>.safetensors}``.
    A request for a subset of sites is also served from the all-layer store when that has the rows.
    """

    def __init__(self, root: Optional[Path], fingerprint: str, n_layers: int) -> None:
        self.base = None if root is None else root / "activations" / fingerprint
        self.n_layers = n_layers
        self._mem: dict[tuple[tuple[Site, ...], str], tuple[torch.Tensor, torch.Tensor, int]] = {}
        self._index: dict[tuple[Site, ...], dict[str, tuple[str, int]]] = {}
        self._shards: dict[tuple[tuple[Site, ...], str], dict[str, torch.Tensor]] = {}

    @staticmethod
    def conversation_key(conv: Conversation) -> str:
        """Cache key of one conversation's response-token statistics."""
        return _hash({"c": [[m["role"], m["content"]] for m in conv], "p": "response", "f": CACHE_FORMAT}, 24)

    def _dir(self, sites: tuple[Site, ...]) -> Optional[Path]:
        if self.base is None:
            return None
        return self.base / ("sites-" + _hash([str(s) for s in sites], 12))

    def _load_index(self, sites: tuple[Site, ...]) -> dict[str, tuple[str, int]]:
        if sites not in self._index:
            table: dict[str, tuple[str, int]] = {}
            d = self._dir(sites)
            if d is not None:
                for obj in _read_jsonl(d / "index.jsonl"):
                    shard, rows = obj.get("shard"), obj.get("keys")
                    if isinstance(shard, str) and isinstance(rows, list) and (d / f"{shard}.safetensors").is_file():
                        for i, k in enumerate(rows):
                            table[k] = (shard, i)
            self._index[sites] = table
        return self._index[sites]

    def _shard(self, sites: tuple[Site, ...], shard: str) -> Optional[dict[str, torch.Tensor]]:
        key = (sites, shard)
        if key not in self._shards:
            from safetensors.torch import load_file

            d = self._dir(sites)
            try:
                self._shards[key] = load_file(str(d / f"{shard}.safetensors"))  # type: ignore[operator]
            except Exception as err:  # corrupt shard: recompute its rows
                warnings.warn(f"activation cache shard {shard} is unreadable ({err}); recomputing")
                self._shards[key] = {}
        return self._shards[key] or None

    def _lookup(self, sites: tuple[Site, ...], key: str) -> Optional[tuple[torch.Tensor, torch.Tensor, int]]:
        hit = self._mem.get((sites, key))
        if hit is not None:
            return hit
        full = as_sites("all", self.n_layers)
        for store_sites in ((sites, full) if sites != full else (sites,)):
            loc = self._load_index(store_sites).get(key)
            if loc is None:
                continue
            t = self._shard(store_sites, loc[0])
            if t is None:
                continue
            if store_sites != sites and not all(s in store_sites for s in sites):
                continue
            pos = [store_sites.index(s) for s in sites] if store_sites != sites else list(range(len(sites)))
            row = loc[1]
            return t["means"][row, pos].float(), t["norm_sums"][row, pos].double(), int(t["n_tokens"][row])
        return None

    def get(self, sites: tuple[Site, ...], keys: Sequence[str]) -> list[Optional[tuple[torch.Tensor, torch.Tensor, int]]]:
        """Cached statistics for each key (None where missing)."""
        return [self._lookup(sites, k) for k in keys]

    def put(self, sites: tuple[Site, ...], keys: Sequence[str], rows: Rows) -> None:
        """Store rows (memory and, with a root, a new shard + index line)."""
        for i, k in enumerate(keys):
            self._mem[(sites, k)] = (rows.means[i], rows.norm_sums[i], int(rows.n_tokens[i]))
        d = self._dir(sites)
        if d is None or not keys:
            return
        from safetensors.torch import save_file

        shard = _hash(list(keys), 20)

        def write() -> None:
            d.mkdir(parents=True, exist_ok=True)
            if not (d / "sites.json").is_file():
                (d / "sites.json").write_text(json.dumps([str(s) for s in sites]))
            with atomic_file(d / f"{shard}.safetensors") as tmp:
                save_file({"means": rows.means.float().contiguous(), "norm_sums": rows.norm_sums.double().contiguous(),
                           "n_tokens": rows.n_tokens.long().contiguous()}, str(tmp))
            _append_lines(d / "index.jsonl", [json.dumps({"shard": shard, "keys": list(keys)})])

        if not _write_or_warn("activation", d, write):
            return
        index = self._load_index(sites)
        for i, k in enumerate(keys):
            index[k] = (shard, i)


class VectorCache:
    """Finished vectors under ``<root>/vectors/<model fingerprint>/<key>/`` (saved with ``PersonaVector.save``).

    ``<key>.quality.json`` next to a vector holds its quality report. The key hashes everything that
    determines the vector: route, persona, method, sites, dataset hash, questions, budget and the library
    version (see :meth:`key`). ``root=None`` disables it.
    """

    def __init__(self, root: Optional[Path], fingerprint: str) -> None:
        self.dir = None if root is None else root / "vectors" / fingerprint
        self.fingerprint = fingerprint

    @staticmethod
    def key(**parts: Any) -> str:
        """Stable key from keyword parts (plus the library version and cache format)."""
        return _hash({**parts, "library_version": library_version(), "cache_format": CACHE_FORMAT}, 20)

    def load(self, key: str, model: Optional[PersonaModel] = None) -> Optional[PersonaVector]:
        """The cached vector, or None (an unreadable entry is ignored with a warning and recomputed)."""
        if self.dir is None or not (self.dir / key).is_dir():
            return None
        from .io import VectorFileError

        try:
            return PersonaVector.load(self.dir / key, model=model)
        except (VectorFileError, ValueError, OSError) as err:
            warnings.warn(f"vector cache entry {self.dir / key} is unreadable ({err}); recomputing")
            return None

    def save(self, key: str, vec: PersonaVector) -> None:
        """Store a vector."""
        if self.dir is not None:
            _write_or_warn("vector", self.dir, lambda: vec.save(self.dir / key, overwrite=True))  # type: ignore[operator]

    def load_json(self, key: str, suffix: str) -> Optional[dict[str, Any]]:
        """A JSON side file (e.g. ``quality``) of an entry, or None."""
        if self.dir is None:
            return None
        try:
            obj = json.loads((self.dir / f"{key}.{suffix}.json").read_text())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def save_json(self, key: str, suffix: str, obj: Mapping[str, Any]) -> None:
        """Write a JSON side file atomically."""
        if self.dir is None:
            return
        from .models import _atomic_write_text

        path = self.dir / f"{key}.{suffix}.json"
        _write_or_warn("vector", self.dir, lambda: _atomic_write_text(path, json.dumps(obj, indent=1, default=str)))


@dataclass
class _Caches:
    gen: GenerationCache
    acts: ActivationStore
    vectors: VectorCache


_CACHE_MEMO: dict[tuple[Optional[str], str], _Caches] = {}


def _caches(model: PersonaModel, cache: CacheArg) -> _Caches:
    """Per-process memo of the caches for (root, model)."""
    root = cache_root(cache)
    fp = model.info.fingerprint
    k = (None if root is None else str(root.resolve()), fp)
    if root is None:
        return _Caches(GenerationCache(None, fp), ActivationStore(None, fp, model.n_layers), VectorCache(None, fp))
    if k not in _CACHE_MEMO:
        _CACHE_MEMO[k] = _Caches(GenerationCache(root, fp), ActivationStore(root, fp, model.n_layers),
                                 VectorCache(root, fp))
    return _CACHE_MEMO[k]


def clear_memory_caches() -> None:
    """Forget the in-process cache objects (the disk caches are untouched); mostly for tests."""
    _CACHE_MEMO.clear()


# ------------------------------------------------------------------------------------------------ compute


def _say(progress: ProgressFn, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _generate_cached(
    model: PersonaModel,
    pairs: Sequence[tuple[Optional[str], str]],
    *,
    max_new_tokens: int,
    caches: _Caches,
    batch_size: int = 16,
    progress: ProgressFn = None,
) -> list[str]:
    """Greedy replies to (system, question) pairs; missing ones generated in batches (all pairs pooled)."""
    keys = [GenerationCache.key(s, q, max_new_tokens) for s, q in pairs]
    todo: dict[str, tuple[Optional[str], str]] = {}
    for k, p in zip(keys, pairs):
        if caches.gen.get(k) is None and k not in todo:
            todo[k] = p
    if todo:
        items = list(todo.items())
        msgs = {k: model.to_messages(q, s) for k, (s, q) in items}
        lens = {k: len(model.chat_text(m)) for k, m in msgs.items()}
        items.sort(key=lambda kv: lens[kv[0]])
        n_batches = (len(items) + batch_size - 1) // batch_size
        bar = _bar(progress, len(items), "generate answers", "answer")
        try:
            for b in range(n_batches):
                chunk = items[b * batch_size : (b + 1) * batch_size]
                _say(progress, f"generate batch {b + 1}/{n_batches} ({len(chunk)} answers, {max_new_tokens} new tokens)")
                replies = model.generate([msgs[k] for k, _ in chunk], system=None, max_new_tokens=max_new_tokens,
                                         temperature=0.0, seed=0, batch_size=batch_size)
                caches.gen.put({k: r for (k, _), r in zip(chunk, replies)})
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return [caches.gen.get(k) or "" for k in keys]


def _record_rows(model: PersonaModel, convs: Sequence[Conversation], sites: tuple[Site, ...],
                 batch_size: int = 16, on_batch: Optional[Callable[[int], None]] = None) -> Rows:
    """Per-conversation response-token statistics (same masks and hooks as :func:`record.record`)."""
    from .models import position_ids_from_mask
    from .record import _pad, _StopForward, _tokenize_conversation, remove_lens_handle

    n, S, d = len(convs), len(sites), model.d_model
    tokenized = [_tokenize_conversation(model, c, "response") for c in convs]
    order = sorted(range(n), key=lambda i: len(tokenized[i][0]))
    means = torch.zeros(n, S, d, dtype=torch.float32)
    norm_sums = torch.zeros(n, S, dtype=torch.float64)
    n_tokens = torch.zeros(n, dtype=torch.long)
    deepest = max(s.layer for s in sites)
    stop_site = max((s for s in sites if s.layer == deepest), key=lambda s: s.kind == "resid_post")
    captured: dict[Site, torch.Tensor] = {}

    def make_hook(site: Site) -> Callable[..., None]:
        def hook(x: torch.Tensor, hook: Any = None) -> None:
            captured[site] = x
            if site == stop_site and len(captured) == S:
                raise _StopForward
        return hook

    handles = []
    dev = model.device
    try:
        for s in sites:
            hp = model.hook_point(s)
            handles.append((hp, hp.add_hook(make_hook(s))))
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            ids = _pad([tokenized[i][0] for i in idx], model.tokenizer.pad_token_id, "right")
            sel = _pad([tokenized[i][1] for i in idx], False, "right")
            att = _pad([[1] * len(tokenized[i][0]) for i in idx], 0, "right")
            attention = torch.tensor(att, device=dev)
            mask = torch.tensor(sel, device=dev)
            captured.clear()
            with torch.inference_mode():
                try:
                    model.hf(input_ids=torch.tensor(ids, device=dev), attention_mask=attention,
                             position_ids=position_ids_from_mask(attention), use_cache=False)
                except _StopForward:
                    pass
            m = mask.to(torch.float64)
            count = mask.sum(1)
            for k, s in enumerate(sites):
                x = captured[s].to(torch.float64)
                row_sum = (x * m.unsqueeze(-1)).sum(1)
                means[idx, k] = (row_sum / count.clamp_min(1).unsqueeze(-1)).float().cpu()
                norm_sums[idx, k] = (x.norm(dim=-1) * m).sum(1).cpu()
            n_tokens[idx] = count.cpu()
            if on_batch is not None:
                on_batch(len(idx))
    finally:
        for hp, h in handles:
            remove_lens_handle(hp, h)
        captured.clear()
    return Rows(sites, means, norm_sums, n_tokens)


def _rows_cached(
    model: PersonaModel,
    convs: Sequence[Conversation],
    sites: tuple[Site, ...],
    *,
    caches: _Caches,
    progress: ProgressFn = None,
    chunk: int = 64,
) -> Rows:
    """Statistics for every conversation, computing (and storing) only those not cached yet."""
    keys = [ActivationStore.conversation_key(c) for c in convs]
    got = caches.acts.get(sites, keys)
    missing: dict[str, int] = {}
    for i, (k, g) in enumerate(zip(keys, got)):
        if g is None and k not in missing:
            missing[k] = i
    if missing:
        todo = list(missing.items())
        bar = _bar(progress, len(todo), f"record activations ({len(sites)} sites)", "conv")
        try:
            for b in range(0, len(todo), chunk):
                part = todo[b : b + chunk]
                _say(progress, f"record {b + len(part)}/{len(todo)} conversations at {len(sites)} sites")
                rows = _record_rows(model, [convs[i] for _, i in part], sites,
                                    on_batch=None if bar is None else bar.update)
                caches.acts.put(sites, [k for k, _ in part], rows)
        finally:
            if bar is not None:
                bar.close()
        got = caches.acts.get(sites, keys)
    if any(g is None for g in got):  # pragma: no cover - put() always fills the memory layer
        raise RuntimeError("activation cache lost rows it just stored")
    return Rows(sites, torch.stack([g[0] for g in got]), torch.stack([g[1] for g in got]),  # type: ignore[index]
                torch.tensor([g[2] for g in got], dtype=torch.long))  # type: ignore[index]


def _answer_conversations(
    model: PersonaModel,
    systems: Sequence[Optional[str]],
    questions: Sequence[str],
    *,
    max_new_tokens: int,
    caches: _Caches,
    progress: ProgressFn = None,
) -> list[Conversation]:
    """The model's own answers to every (system, question) pair, as recordable conversations."""
    pairs = [(s, q) for s in systems for q in questions]
    replies = _generate_cached(model, pairs, max_new_tokens=max_new_tokens, caches=caches, progress=progress)
    return [model.to_messages(q, s) + [{"role": "assistant", "content": r if r.strip() else "..."}]
            for (s, q), r in zip(pairs, replies)]


def _prompt_side(
    model: PersonaModel,
    systems: Sequence[Optional[str]],
    questions: Sequence[str],
    sites: tuple[Site, ...],
    *,
    max_new_tokens: int,
    caches: _Caches,
    progress: ProgressFn = None,
) -> tuple[Recording, list[Conversation]]:
    convs = _answer_conversations(model, systems, questions, max_new_tokens=max_new_tokens, caches=caches,
                                  progress=progress)
    rows = _rows_cached(model, convs, sites, caches=caches, progress=progress)
    return rows.to_recording(convs), convs


class _BarProgress:
    """``progress=True``: stage messages go to the log and long loops show tqdm bars on stderr."""

    bars = True

    def __call__(self, msg: str) -> None:
        log.info(msg)


def _progress_fn(progress: Union[bool, ProgressFn]) -> ProgressFn:
    """``True`` → tqdm bars (plus log.info messages); ``False``/``None`` → silent; a callable gets the
    stage messages (``"generate batch 2/5 …"``) and no bars, so callers keep their own reporting."""
    if progress is True:
        return _BarProgress()
    if progress is False or progress is None:
        return None
    if not callable(progress):
        raise TypeError(f"progress must be True, False or a callable taking a message, got {progress!r}")
    return progress


def _bar(progress: ProgressFn, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr when ``progress`` asks for bars, else None."""
    if not getattr(progress, "bars", False) or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


def _sites(model: PersonaModel, layers: Layers) -> tuple[Site, ...]:
    return as_sites(layers, model.n_layers)  # type: ignore[arg-type]


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


def fact_split(fact_set: FactSet, heldout_fraction: float = 0.25) -> tuple[list[str], list[str]]:
    """Deterministic (train ids, held-out ids) split of a fact set.

    Facts are ordered by ``sha256(fact id)`` and the first ``ceil(fraction × n)`` are held out. The split
    depends only on the ids, so a variant (same ids as its base) holds out the same facts as its base.
    """
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    ids = [f.id for f in fact_set.facts]
    if len(ids) < 4:
        raise DataError(f"fact set {fact_set.name!r} has {len(ids)} facts; add at least 4 so some can be held out")
    ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    k = max(1, math.ceil(heldout_fraction * len(ids) - 1e-9))
    held = set(ranked[:k])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def _as_fact_set(fact_set: Union[str, FactSet]) -> FactSet:
    if isinstance(fact_set, FactSet):
        if not fact_set.facts:
            raise DataError(f"fact set {fact_set.name!r} has no facts; add some first-person facts")
        return fact_set
    return load_fact_set(fact_set)


def fact_conversations(fact_set: Union[str, FactSet], ids: Optional[Sequence[str]] = None,
                       system: Optional[str] = None) -> tuple[list[Conversation], list[Conversation]]:
    """(persona, neutral) teacher-forced conversations for the facts with ``ids`` (all by default).

    Each is ``[system?] user=question, assistant=answer`` (persona) or the same with ``neutral_answer``.
    ``system=None`` keeps the chat template's default system prompt on both sides.
    """
    fs = _as_fact_set(fact_set)
    want = set(ids) if ids is not None else None
    facts = [f for f in fs.facts if want is None or f.id in want]
    if not facts:
        raise DataError(f"fact set {fs.name!r}: no facts selected; check the ids")
    head = [] if system is None else [{"role": "system", "content": system}]
    pos = [head + [{"role": "user", "content": f.question}, {"role": "assistant", "content": f.answer}] for f in facts]
    neg = [head + [{"role": "user", "content": f.question}, {"role": "assistant", "content": f.neutral_answer}]
           for f in facts]
    return pos, neg


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
) -> RoleMeans:
    """Mean response activations per role (first ``n_prompts`` prompts × first ``n_questions`` questions).

    ``roles=None`` is the whole catalogue (137 roles × 24 answers ≈ 3,300 greedy generations: on 2 busy
    CPU cores plan on a couple of hours the first time; every answer and activation is cached, so later
    calls and overlapping role sets are fast). The default side (every default-assistant prompt on the
    same questions) is generated and recorded once and shared by all roles. All missing answers are
    generated in pooled batches of 16.
    """
    names = [get_role(r).name for r in (roles if roles is not None else [r.name for r in load_roles()])]
    if not names:
        raise DataError("no roles given; pass at least one role name")
    names = list(dict.fromkeys(names))
    qs = _first(questions if questions is not None else extraction_questions(), n_questions, "questions")
    base = list(baseline_prompts) if baseline_prompts is not None else default_system_prompts()
    sites = _sites(model, layers)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    role_prompts = {n: _first(get_role(n).prompts, n_prompts, f"prompts of role {n!r}") for n in names}
    pairs = [(s, q) for s in base for q in qs] + [(s, q) for n in names for s in role_prompts[n] for q in qs]
    _generate_cached(model, pairs, max_new_tokens=max_new_tokens, caches=caches, progress=pf)
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
                     n_prompts or max(len(p) for p in role_prompts.values()), max_new_tokens,
                     {s: neg.mean_norm(s) for s in sites})


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
) -> PersonaVector:
    """The Assistant Axis: mean over default-assistant prompts minus the mean over roles of role means.

    Positive = toward the default assistant. ``roles=None`` uses the whole catalogue (see
    :func:`role_means` for cost); :func:`get_persona_vector` uses :data:`AXIS_PANEL`.
    """
    rm = role_means(model, roles, n_questions=n_questions, n_prompts=n_prompts, layers=layers,
                    max_new_tokens=max_new_tokens, cache=cache, progress=progress)
    return rm.axis(name)


# ------------------------------------------------------------------------------------------------ quality


@dataclass
class PersonaQuality:
    """Held-out quality of a persona vector, per site, and the chosen site.

    ``auroc[site]``: AUROC of the projection separating held-out persona samples (positive) from baseline
    samples. ``rel_norm[site]``: direction norm / mean residual norm of the held-out baseline samples there.
    """

    name: str
    route: str
    layer: Site
    auroc: dict[Site, float]
    rel_norm: dict[Site, float]
    n_persona: int
    n_baseline: int
    heldout: str

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable dict (sites as strings, per-layer maps keyed by layer number)."""
        return {"name": self.name, "route": self.route, "layer": self.layer.layer, "site": str(self.layer),
                "auroc_at_layer": self.auroc[self.layer], "rel_norm_at_layer": self.rel_norm.get(self.layer),
                "auroc": {str(s.layer): v for s, v in self.auroc.items()},
                "rel_norm": {str(s.layer): v for s, v in self.rel_norm.items()},
                "n_persona": self.n_persona, "n_baseline": self.n_baseline, "heldout": self.heldout}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PersonaQuality":
        """Inverse of :meth:`to_json` (resid_post sites)."""
        return cls(d["name"], d["route"], Site(int(d["layer"])), {Site(int(k)): float(v) for k, v in d["auroc"].items()},
                   {Site(int(k)): float(v) for k, v in d["rel_norm"].items()}, int(d["n_persona"]),
                   int(d["n_baseline"]), d["heldout"])


def _quality_from(name: str, route: str, vec: PersonaVector, pos: Recording, neg: Recording,
                  heldout: str) -> PersonaQuality:
    au = separation_auroc(vec, pos, neg)
    rn = relative_norms(vec, neg)
    return PersonaQuality(name, route, pick_layer(au, rn), au, rn, pos.n_conversations, neg.n_conversations, heldout)


def persona_quality(
    model: PersonaModel,
    name: str,
    vector: PersonaVector,
    route: Optional[str] = None,
    *,
    n_eval_questions: Optional[int] = None,
    quick: bool = False,
    fact_set: Union[str, FactSet, None] = None,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> PersonaQuality:
    """Held-out AUROC and relative norm per site of ``vector``, and the site :func:`pick_layer` chooses.

    - ``facts``: the held-out 25 % of the fact set (:func:`fact_split`), persona answers vs neutral answers.
    - ``prompt``: fresh answers to the *evaluation* questions (never used for building) under the role's
      prompts vs under the default-assistant prompts (the prompt counts recorded in the vector's provenance).
    - ``axis``: default-prompt answers (positive) vs the axis roles' answers to the evaluation questions.

    ``n_eval_questions`` defaults to the budget's (:data:`QUICK`/:data:`FULL`). ``route`` defaults to the
    vector's provenance route; ``fact_set`` overrides the fact set (e.g. a user file's :class:`FactSet`).
    """
    extra = dict(vector.provenance.extra)
    route = route or vector.provenance.route
    if fact_set is not None or (route == "facts" and extra.get("fact_set") in list_fact_sets()):
        spec = PersonaSpec(name, None, extra.get("fact_set"))
    elif route in ("prompt", "axis") and (extra.get("role") or extra.get("roles")):
        spec = PersonaSpec(name, extra.get("role"), None, axis=route == "axis")
    else:
        spec = resolve_persona(name)
    route = route or spec.routes[0]
    sites = vector.sites
    caches, pf = _caches(model, cache), _progress_fn(progress)
    n_ev = n_eval_questions if n_eval_questions is not None else budget_for(quick).n_eval_questions
    mnt = int(extra.get("max_new_tokens", 32))
    if route == "facts":
        fs = _as_fact_set(fact_set) if fact_set is not None else load_fact_set(spec.fact_set or name)
        _, held = fact_split(fs)
        pos_c, neg_c = fact_conversations(fs, held)
        rows = _rows_cached(model, pos_c + neg_c, sites, caches=caches, progress=pf)
        n = len(pos_c)
        return _quality_from(name, route, vector, rows.select(range(n)).to_recording(pos_c),
                             rows.select(range(n, 2 * n)).to_recording(neg_c),
                             f"{n} held-out facts (25 % by id hash) of {fs.name}: persona vs neutral answers")
    qs = evaluation_questions(n_ev)
    base = default_system_prompts()
    if route == "prompt":
        role = get_role(extra.get("role") or spec.role or name)
        prompts = list(role.prompts[: int(extra.get("n_prompts", len(role.prompts)))])
        pos, _ = _prompt_side(model, prompts, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        neg, _ = _prompt_side(model, base, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        return _quality_from(name, route, vector, pos, neg,
                             f"{len(qs)} evaluation questions × {len(prompts)} {role.name} prompts vs "
                             f"× {len(base)} default prompts")
    if route == "axis":
        roles = list(extra.get("roles") or AXIS_PANEL)
        n_pr = int(extra.get("n_prompts", 3))
        pairs = [(s, q) for s in base for q in qs] + [
            (s, q) for r in roles for s in get_role(r).prompts[:n_pr] for q in qs]
        _generate_cached(model, pairs, max_new_tokens=mnt, caches=caches, progress=pf)
        pos, _ = _prompt_side(model, base, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        role_systems = [s for r in roles for s in get_role(r).prompts[:n_pr]]
        neg, _ = _prompt_side(model, role_systems, qs, sites, max_new_tokens=mnt, caches=caches, progress=pf)
        q = _quality_from(name, route, vector, pos, neg,
                          f"{len(qs)} evaluation questions × {len(base)} default prompts vs × {n_pr} prompts of "
                          f"{len(roles)} roles")
        q.rel_norm = relative_norms(vector, pos)
        q.layer = pick_layer(q.auroc, q.rel_norm)
        return q
    raise ValueError(f"route must be 'prompt', 'facts' or 'axis', got {route!r}")


# ------------------------------------------------------------------------------------------------ entry points


@dataclass
class PersonaResult:
    """A persona vector and its held-out quality."""

    vector: PersonaVector
    quality: PersonaQuality
    cached: bool = False


def _choose_route(spec: PersonaSpec, route: Optional[str]) -> str:
    if route in (None, "auto"):
        return spec.routes[0]
    if route not in ("prompt", "facts", "axis"):
        raise ValueError(f"route must be 'prompt', 'facts' or 'axis', got {route!r}")
    if spec.axis and route in ("prompt", "axis"):
        return "axis"
    if route not in spec.routes:
        raise DataError(
            f"persona {spec.name!r} has no {route} route (it supports: {', '.join(spec.routes)}); "
            f"pass route={spec.routes[0]!r} (CLI: --route {spec.routes[0]})"
        )
    return route


def _vector_key(model: PersonaModel, spec: PersonaSpec, route: str, method: str, sites: tuple[Site, ...],
                budget: Budget) -> str:
    if route == "facts":
        fs = load_fact_set(spec.fact_set)  # type: ignore[arg-type]
        data: Any = {"fact_set": fs.name, "hash": fs.dataset_hash(), "split": fact_split(fs)[1]}
        budget_part: Any = None
    elif route == "prompt":
        role = get_role(spec.role)  # type: ignore[arg-type]
        data = {"role": role.to_dict(), "default": default_system_prompts()}
        budget_part = {"q": extraction_questions(budget.n_questions), "p": budget.n_prompts, "m": budget.max_new_tokens}
    else:
        data = {"roles": [get_role(r).to_dict() for r in AXIS_PANEL], "default": default_system_prompts()}
        budget_part = {"q": extraction_questions(budget.n_questions), "p": budget.axis_prompts, "m": budget.max_new_tokens}
    return VectorCache.key(route=route, persona=spec.name, method=method, sites=[str(s) for s in sites],
                           data=_hash(data), questions=budget_part, model=model.info.fingerprint)


def get_persona_vector(
    model: PersonaModel,
    name: str,
    route: Optional[str] = None,
    *,
    method: str = "mean_diff",
    layers: Layers = "all",
    quick: bool = False,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> PersonaVector:
    """The main entry point: a named persona's vector, from the disk cache when it has been built before.

    ``name``: a card persona (:data:`CARD_PERSONAS`), any catalogue role, or any shipped fact set.
    ``route``: ``"prompt"`` (system prompts), ``"facts"`` (teacher-forced fact set) or ``None`` (the
    persona's first route: prompt where a role exists). The ``assistant`` persona is the Assistant Axis
    over :data:`AXIS_PANEL`. ``quick`` selects the :data:`QUICK` budget instead of :data:`FULL`.
    """
    return _persona_vector(model, name, route, method=method, layers=layers, quick=quick, cache=cache,
                           progress=progress)[0]


def _persona_vector(
    model: PersonaModel,
    name: str,
    route: Optional[str],
    *,
    method: str,
    layers: Layers,
    quick: bool,
    cache: CacheArg,
    progress: Union[bool, ProgressFn],
) -> tuple[PersonaVector, str, bool]:
    """:func:`get_persona_vector`'s work: ``(vector, cache key, whether it came from the cache)``."""
    get_aggregator(method)
    spec = resolve_persona(name)
    r = _choose_route(spec, route)
    sites = _sites(model, layers)
    budget = budget_for(quick)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    key = _vector_key(model, spec, r, method, sites, budget)
    hit = caches.vectors.load(key, model)
    if hit is not None:
        _say(pf, f"{spec.name}: vector cache hit ({key})")
        return hit, key, True
    if r == "facts":
        vec = fact_vector(model, spec.fact_set, layers=sites, method=method, cache=cache, progress=progress,  # type: ignore[arg-type]
                          name=spec.name)
    elif r == "prompt":
        vec = role_vector(model, spec.role, method=method, n_questions=budget.n_questions,  # type: ignore[arg-type]
                          n_prompts=budget.n_prompts, layers=sites, max_new_tokens=budget.max_new_tokens,
                          cache=cache, progress=progress, name=spec.name)
    else:
        if method != "mean_diff":
            raise ValueError("the assistant axis is a difference of means: use method='mean_diff'")
        vec = assistant_axis(model, AXIS_PANEL, n_questions=budget.n_questions, n_prompts=budget.axis_prompts,
                             layers=sites, max_new_tokens=budget.max_new_tokens, cache=cache, progress=progress,
                             name=spec.name)
    vec = vec.replace(extra={**dict(vec.provenance.extra), "cache_key": key, "quick": quick})
    caches.vectors.save(key, vec)
    return vec, key, False


def extract_persona(
    model: PersonaModel,
    name: str,
    route: Optional[str] = None,
    *,
    method: str = "mean_diff",
    layers: Layers = "all",
    quick: bool = False,
    cache: CacheArg = True,
    progress: Union[bool, ProgressFn] = True,
) -> PersonaResult:
    """:func:`get_persona_vector` plus :func:`persona_quality` (both cached)."""
    spec = resolve_persona(name)
    r = _choose_route(spec, route)
    caches, pf = _caches(model, cache), _progress_fn(progress)
    vec, key, was_cached = _persona_vector(model, name, r, method=method, layers=layers, quick=quick, cache=cache,
                                           progress=progress)
    qkey = f"{key}-q{budget_for(quick).n_eval_questions}"
    q_json = caches.vectors.load_json(qkey, "quality")
    if q_json is not None:
        return PersonaResult(vec, PersonaQuality.from_json(q_json), was_cached)
    _say(pf, f"{spec.name}: measuring held-out quality")
    q = persona_quality(model, spec.name, vec, r, quick=quick, cache=cache, progress=progress)
    caches.vectors.save_json(qkey, "quality", q.to_json())
    return PersonaResult(vec, q, was_cached)


__all__ = [
    "AXIS_PANEL",
    "ActivationStore",
    "Budget",
    "CARD_PERSONAS",
    "FULL",
    "GenerationCache",
    "PersonaQuality",
    "PersonaResult",
    "PersonaSpec",
    "QUICK",
    "RoleMeans",
    "VectorCache",
    "assistant_axis",
    "default_system_prompts",
    "evaluation_questions",
    "extract_persona",
    "extraction_questions",
    "fact_contrast",
    "fact_conversations",
    "fact_split",
    "fact_vector",
    "get_persona_vector",
    "known_persona_names",
    "list_personas",
    "persona_quality",
    "resolve_persona",
    "role_contrast",
    "role_means",
    "role_vector",
    "system_for",
]
