"""The persona pipeline's disk caches, per model weight fingerprint, on the library's infrastructure
(:mod:`persona_vectors._infra`: one cache root, one JSON-lines log, atomic writes).

- :class:`GenerationCache` — ``generations/<fp>.jsonl``: greedy replies per (system prompt, question, max_new_tokens);
- :class:`ActivationStore` — ``activations/<fp>/<sites>/``: per-conversation response-token statistics;
- :class:`VectorCache` — ``vectors/<fp>/<key>/``: finished vectors and their quality reports.

A cache is a convenience: a write that fails (read-only directory, full disk) warns once per cache and the
run goes on (:func:`_write_or_warn`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from .._infra.cache import cache_root as _infra_cache_root
from .._infra.files import atomic_file, atomic_write_text
from .._infra.jsonl import JsonlLog
from ..io import VectorFileError
from ..models import PersonaModel
from ..record import Conversation, Recording, conversations_hash
from ..sites import Site, as_sites
from ..vector import PersonaVector, library_version

#: Bump when the meaning of anything cached by this package changes.
CACHE_FORMAT = 1

CacheArg = Union[bool, str, "os.PathLike[str]", None]


def _hash(obj: Any, n: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def cache_root(cache: CacheArg) -> Optional[Path]:
    """Resolve a ``cache=`` argument: ``True`` → the library's one cache root (``$PERSONA_VECTORS_CACHE``
    honoured, see :func:`persona_vectors.models.cache_dir`), a path → itself, ``False`` → None."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return _infra_cache_root()
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


class GenerationCache:
    """Greedy replies per (system prompt, question, max_new_tokens), one JSONL file per model fingerprint.

    With ``root=None`` it is an in-memory dict only. Lines are appended per generated batch, so an
    interrupted run keeps what it generated.
    """

    def __init__(self, root: Optional[Path], fingerprint: str) -> None:
        self.path = None if root is None else root / "generations" / f"{fingerprint}.jsonl"
        self._table: dict[str, str] = {}
        if self.path is not None:
            for obj in JsonlLog(self.path).records():
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
            _write_or_warn("generation", self.path, lambda: JsonlLog(self.path).append_lines(lines))  # type: ignore[arg-type]


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
                for obj in JsonlLog(d / "index.jsonl").records():
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
            JsonlLog(d / "index.jsonl").append([{"shard": shard, "keys": list(keys)}])

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
        path = self.dir / f"{key}.{suffix}.json"
        _write_or_warn("vector", self.dir, lambda: atomic_write_text(path, json.dumps(obj, indent=1, default=str)))


@dataclass
class _Caches:
    gen: GenerationCache
    acts: ActivationStore
    vectors: VectorCache


_CACHE_MEMO: dict[tuple[Optional[str], str], _Caches] = {}


def _caches(model: PersonaModel, cache: CacheArg) -> _Caches:
    """Per-process memo of the caches for (root, model)."""
    root = cache_root(cache)
    fp = model.weights_key()  # follows in-place finetuning: a tuned model never reads the base's entries
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
