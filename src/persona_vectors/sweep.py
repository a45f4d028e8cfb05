"""Resumable steering sweeps: a grid of (vector × layer × alpha × prompt × sample × seed) generations.

>>> cfg = SweepConfig.from_toml("sweeps/assistant.toml")       # doctest: +SKIP
>>> run_sweep(model, cfg, "runs/assistant.jsonl", judge=EmbeddingJudge.default())  # doctest: +SKIP
>>> print(summary_markdown(summarize("runs/assistant.jsonl")))  # doctest: +SKIP

Batching: for each (vector, layer, seed) the rows (prompt × alpha × sample, in that order) are cut into batches of
``batch_size`` rows; each batch is ONE ``generate`` call with per-row coefficients (see :mod:`.steer`). The batch
composition is a pure function of the config, so a rerun reproduces it (and, for sampling, the same texts on the
same hardware): each batch is seeded from ``(seed, vector, layer, batch index)``.

Store: one JSON object per line, one line per generation, with every coordinate and a deterministic ``row_id``
(hash of the coordinates). Each batch is appended with one write, ``flush`` and ``os.fsync``. On reopening, a
partial or corrupt trailing line (a crash mid-write) is reported, and truncated away; rows whose ``row_id`` is
already stored are skipped, a partially stored batch is regenerated and only its missing rows written, so an
interrupted sweep resumes with no lost and no duplicated rows. The sidecar ``<out>.config.json`` records the
config (with a hash of every vector's tensor), the library version and the model fingerprint; resuming with a
different config or model raises :class:`SweepConfigMismatchError`.

Safety of the output path (checked by :func:`check_sweep_output` before any model work, and again under the lock):
``out`` must not be the sweep config itself, a directory, or an existing file that is not a results file of this
library (its first line must be a stored row, or, after a crash in the very first write, the start of one next to a
valid sidecar); an existing ``<stem>.config.json`` must be a sweep sidecar. ``resume=False`` (``--no-resume``)
therefore only ever deletes a results file this library wrote. Refusals raise :class:`SweepStoreError`.

Lock: while :func:`run_sweep` works on a store it holds an exclusive ``flock`` (via :mod:`filelock`) on the sibling
file ``<out>.lock`` (e.g. ``results.jsonl.lock``), which names the PID, host and start time of the holder; a second
sweep on the same store fails at once with :class:`SweepStoreLockedError` ("results store X is in use by PID N").
The lock file is removed when the sweep ends. A process killed with SIGKILL leaves it behind, but the kernel has
released the ``flock``: a stale lock file never blocks a resume, and it is safe to delete when no sweep is running.

Non-finite steering: a generation whose residual stream became non-finite (at the steered site or at the last
layer; NaN, inf, or a mean square that overflows like an RMSNorm would), or that raised
:class:`persona_vectors.steer.SteeringError`, or whose judge / read-out values are non-finite, is never stored. The
other rows of its batch are regenerated without it (a batch that raises ``SteeringError`` is bisected down to the
failing rows), the sweep goes on, and :attr:`SweepReport.failures` lists the rows that were not stored (a warning per
(vector, layer, alpha) cell; the CLI prints one ``error:`` line per cell and exits 2 after storing the good rows).
Resuming retries only those rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from ._infra.jsonl import JsonlLog
from .operators import SteerSpecError
from .steer import SteeringError, SteerSpec, steer
from .vector import PersonaVector, library_version

log = logging.getLogger(__name__)

Readout = Callable[[list[str], list[dict]], list[dict]]
CONFIG_SUFFIX = ".config.json"
LOCK_SUFFIX = ".lock"
STORE_FORMAT = 1
_ROW_SIGNATURE = b'{"row_id": "'  # every row run_sweep writes starts with these bytes
_LOCK_HEADER = "persona-vectors sweep lock"


class SweepConfigError(ValueError):
    """A sweep config is malformed; the message names the key."""


class SweepConfigMismatchError(ValueError):
    """An existing results file was written by a different config or model."""


class SweepStoreError(ValueError):
    """A results path cannot be used as a store (it is the config, a directory, or a file this library did not
    write); the message names the path and the fix. Nothing was written or deleted."""


class StoreCorruptError(SweepStoreError):
    """A results file has a corrupt line that is not the last one (not a crash artefact), or a row that lacks a
    coordinate or holds one of the wrong type; the message names ``file:line``."""


class SweepStoreLockedError(SweepStoreError):
    """Another process holds the lock of this results store (another sweep is running)."""


class SweepRowsNotStoredWarning(UserWarning):
    """Some rows of a sweep were not stored because their steered generation went non-finite (one per cell)."""


# ------------------------------------------------------------------------------------------------ config


def _is_number(v: Any) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` in Python, never a valid count or coefficient)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _vector_digest(vec: PersonaVector) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([str(s) for s in vec.sites]).encode())
    h.update(vec.directions.float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class SweepConfig:
    """A sweep grid. Cells are vectors × layers × alphas × prompts × samples × seeds.

    Attributes:
        vectors: name → vector directory (or an in-memory :class:`PersonaVector`).
        alphas: steering coefficients (rows of one prompt batch differ only in alpha: one generate call).
        layers: layers to steer, one at a time (each must be among every vector's sites).
        prompts: user prompts; or leave empty and set ``questions``.
        questions: a shipped question split (``"evaluation"`` / ``"extraction"``), first ``n_questions`` of it.
        samples: generations per prompt and cell (use ``temperature > 0`` for them to differ).
        seeds: seeds; each is a grid coordinate.
        operator / positions / relative / threshold / cap: as in :func:`persona_vectors.steer.steer`.
        system: system prompt for every generation (``None``: the chat template's default).
        batch_size: rows per generate call.
        allow_other_model: accept vectors whose fingerprint differs from the model's.
        record_activations: also store each row's ``mean_activation`` (the mean, over the generated response
            tokens, of the steered residual stream at the steered layer, as the model saw it while generating;
            ``d_model`` numbers a row, 5 significant digits), which ``persona-vectors map --results`` draws as a
            trajectory on the persona map.

    >>> cfg = SweepConfig(vectors={"assistant": "vectors/assistant"}, alphas=[-8, 0, 8], layers=[14],
    ...                   prompts=["Who are you?"])
    """

    vectors: dict[str, Any]
    alphas: list[float]
    layers: list[int]
    prompts: list[str] = field(default_factory=list)
    questions: str | None = None
    n_questions: int | None = None
    samples: int = 1
    seeds: list[int] = field(default_factory=lambda: [0])
    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    positions: str = "all"
    operator: str = "add"
    relative: bool = False
    threshold: float | None = None
    cap: str = "min"
    system: str | None = None
    batch_size: int = 32
    allow_other_model: bool = False
    record_activations: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> SweepConfigError:
            return SweepConfigError(f"sweep config: {key!r} {why}")

        self._source: Path | None = None
        if not isinstance(self.vectors, Mapping) or not self.vectors:
            raise bad("vectors", "must be a non-empty table of name = vector directory, e.g. [vectors] a = \"vecs/a\"")
        for k, v in self.vectors.items():
            if not isinstance(k, str) or not k:
                raise bad("vectors", f"has a bad name {k!r} (names are non-empty strings)")
            if not isinstance(v, (str, os.PathLike, PersonaVector)) or (isinstance(v, str) and not v.strip()):
                raise bad("vectors", f"entry {k!r} must be a vector directory path, got {v!r}")
        self.vectors = dict(self.vectors)
        self.alphas = self._numbers("alphas", self.alphas, float)
        self.layers = self._numbers("layers", self.layers, int)
        if any(x < 0 for x in self.layers):
            raise bad("layers", f"must be non-negative layer indices, got {self.layers}")
        self.seeds = self._numbers("seeds", self.seeds, int)
        if not isinstance(self.prompts, (list, tuple)) or not all(isinstance(p, str) for p in self.prompts):
            raise bad("prompts", "must be a list of strings, e.g. prompts = [\"Who are you?\"]")
        self.prompts = list(self.prompts)
        if self.questions is not None and (not isinstance(self.questions, str)
                                           or self.questions not in ("evaluation", "extraction")):
            raise bad("questions", f"must be 'evaluation' or 'extraction', got {self.questions!r}")
        if bool(self.prompts) == (self.questions is not None):
            raise bad("prompts", "or 'questions' must be given (exactly one of them)")
        for key in ("samples", "max_new_tokens", "batch_size"):
            val = getattr(self, key)
            if not _is_int(val) or val < 1:
                raise bad(key, f"must be a positive integer (>= 1), got {val!r}")
        if self.n_questions is not None:
            if not _is_int(self.n_questions) or self.n_questions < 1:
                raise bad("n_questions", f"must be a positive integer (>= 1), got {self.n_questions!r}")
            if self.questions is None:
                raise bad("n_questions", "only applies with 'questions' (it takes the first n of that split)")
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise bad("temperature", f"must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        self.temperature = float(self.temperature)
        if not _is_number(self.top_p) or not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", f"must be a number in (0, 1] (1 = no nucleus cut), got {self.top_p!r}")
        self.top_p = float(self.top_p)
        for key in ("relative", "allow_other_model", "record_activations"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, f"must be true or false, got {getattr(self, key)!r}")
        if self.threshold is not None and not _is_number(self.threshold):
            raise bad("threshold", f"must be a finite number (one threshold for every layer), got {self.threshold!r}")
        try:  # the steering rules live in SteerSpec.validate (operators from the registry)
            self.steer_spec(None).validate()
        except SteerSpecError as err:
            raise bad(err.field, err.reason) from None
        if self.threshold is not None:
            self.threshold = float(self.threshold)
        if self.system is not None and not isinstance(self.system, str):
            raise bad("system", f"must be a string, got {self.system!r}")
        if not isinstance(self.name, str):
            raise bad("name", f"must be a string, got {self.name!r}")
        if self.samples > 1 and self.temperature == 0:
            warnings.warn("samples > 1 with temperature = 0 gives identical greedy generations", stacklevel=3)

    def steer_spec(self, vector: Any, alpha: Any = 1.0, layer: int | None = None) -> SteerSpec:
        """The :class:`~persona_vectors.steer.SteerSpec` of one cell: this config's steering settings."""
        return SteerSpec(vector, alpha, layers=self.layers if layer is None else [layer], positions=self.positions,
                         operator=self.operator, relative=self.relative, threshold=self.threshold, cap=self.cap,
                         allow_other_model=self.allow_other_model)

    @property
    def source(self) -> Path | None:
        """The TOML file this config was loaded from (``None`` when built in Python)."""
        return getattr(self, "_source", None)

    @staticmethod
    def _numbers(key: str, values: Any, kind: type) -> list:
        what = "integers" if kind is int else "finite numbers"
        if _is_number(values):
            values = [values]
        if not isinstance(values, (list, tuple)) or not values:
            raise SweepConfigError(f"sweep config: {key!r} must be a non-empty list of {what}, got {values!r}")
        out = []
        for v in values:
            if not _is_number(v):
                raise SweepConfigError(f"sweep config: {key!r} must hold {what}, got {v!r}")
            if isinstance(v, int):
                finite, integral = kind is int or _finite(v), True  # an int too big for a float is not finite
            else:
                finite, integral = math.isfinite(v), math.isfinite(v) and v.is_integer()
            if not finite:
                raise SweepConfigError(f"sweep config: {key!r} must hold {what}, got a non-finite value {v!r}")
            if kind is int and not integral:
                raise SweepConfigError(f"sweep config: {key!r} must hold integers, got {v!r}")
            out.append(kind(v))
        if len(set(out)) != len(out):
            raise SweepConfigError(f"sweep config: {key!r} has duplicates: {list(values)} (list each value once)")
        return out

    # ------------------------------------------------------------------------------------------ io
    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "SweepConfig":
        """Load a config from TOML; vector paths are relative to the TOML file's directory.

        Malformed files raise :class:`SweepConfigError` with a one-line message naming the bad key.

        .. code-block:: toml

            name = "assistant-axis"
            alphas = [-8, -4, 0, 4, 8]
            layers = [14]
            questions = "evaluation"
            n_questions = 10
            temperature = 0.7
            samples = 2
            [vectors]
            assistant = "vectors/assistant"
        """
        import tomllib

        p = Path(path)
        try:
            text = p.read_bytes().decode("utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError:
            raise SweepConfigError(f"{p}: no such config file") from None
        except IsADirectoryError:
            raise SweepConfigError(f"{p}: is a directory, not a sweep config: pass the TOML file") from None
        except OSError as err:
            raise SweepConfigError(f"{p}: cannot read the config ({err.strerror or err})") from None
        except UnicodeDecodeError as err:
            raise SweepConfigError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start}): pass a TOML file") from None
        except tomllib.TOMLDecodeError as err:
            raise SweepConfigError(f"{p}: not valid TOML ({err})") from None
        except RecursionError:
            raise SweepConfigError(f"{p}: not valid TOML (nested too deeply)") from None
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
                raise SweepConfigError(f"{p}: unknown key {key!r}{hint}")
        for key in ("vectors", "alphas", "layers"):
            if key not in data:
                raise SweepConfigError(f"{p}: missing key {key!r}")
        vectors = data.get("vectors")
        if isinstance(vectors, Mapping):
            resolved: dict[str, Any] = {}
            for k, v in vectors.items():
                if not isinstance(v, str) or not v.strip() or "\x00" in v:
                    raise SweepConfigError(f"{p}: 'vectors' entry {k!r} must be a vector directory path string, "
                                           f"got {v!r}")
                vp = Path(v).expanduser()
                resolved[k] = str(vp if vp.is_absolute() else (p.parent / vp))
            data["vectors"] = resolved
        try:
            cfg = cls(**data)
        except SweepConfigError as err:
            raise SweepConfigError(f"{p}: {str(err).removeprefix('sweep config: ')}") from None
        except TypeError as err:
            raise SweepConfigError(f"{p}: {err}") from None
        cfg._source = p
        return cfg

    def to_json(self, vectors: Mapping[str, PersonaVector] | None = None) -> dict[str, Any]:
        """JSON-serializable dict. With loaded ``vectors``, each entry also records its tensor's hash."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()}
        vec_info: dict[str, Any] = {}
        for k, v in self.vectors.items():
            entry: dict[str, Any] = {"source": "<in-memory>" if isinstance(v, PersonaVector) else str(v)}
            loaded = (vectors or {}).get(k, v if isinstance(v, PersonaVector) else None)
            if loaded is not None:
                entry.update(sha256=_vector_digest(loaded), fingerprint=loaded.provenance.fingerprint)
            vec_info[k] = entry
        d["vectors"] = vec_info
        if not d.get("record_activations"):  # absent when off: stores written before the key existed still resume
            d.pop("record_activations", None)
        return d

    def prompt_list(self) -> list[tuple[str, str]]:
        """``(prompt_id, text)`` pairs: ``p0, p1, …`` for ``prompts``, question ids for ``questions``."""
        if self.prompts:
            return [(f"p{i}", t) for i, t in enumerate(self.prompts)]
        from .datasets import load_questions

        qs = load_questions(self.questions)  # type: ignore[arg-type]
        if self.n_questions is not None:
            qs = qs[: self.n_questions]
        return [(q.id, q.text) for q in qs]


# ------------------------------------------------------------------------------------------------ grid


def row_id(vector: str, layer: int, alpha: float, prompt_id: str, prompt: str, sample: int, seed: int) -> str:
    """Deterministic id of one generation from its coordinates."""
    key = json.dumps([vector, int(layer), float(alpha), prompt_id, prompt, int(sample), int(seed)], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class SweepBatch:
    """Rows generated together in one ``generate`` call (same vector, layer and seed)."""

    vector: str
    layer: int
    seed: int
    index: int
    rows: tuple[dict[str, Any], ...]

    @property
    def gen_seed(self) -> int:
        """Seed of this batch's generate call, derived from its position in the grid."""
        h = hashlib.sha256(f"{self.seed}|{self.vector}|{self.layer}|{self.index}".encode()).hexdigest()
        return int(h[:8], 16)


def expand_grid(cfg: SweepConfig) -> list[SweepBatch]:
    """All batches of the sweep, in run order: vector → layer → seed → (prompt → alpha → sample) chunks."""
    prompts = cfg.prompt_list()
    batches: list[SweepBatch] = []
    for vname in cfg.vectors:
        for layer in cfg.layers:
            for seed in cfg.seeds:
                rows = [
                    {
                        "row_id": row_id(vname, layer, a, pid, text, s, seed),
                        "vector": vname, "layer": layer, "alpha": a, "prompt_id": pid, "prompt": text,
                        "sample": s, "seed": seed,
                    }
                    for pid, text in prompts for a in cfg.alphas for s in range(cfg.samples)
                ]
                for i in range(0, len(rows), cfg.batch_size):
                    batches.append(SweepBatch(vname, layer, seed, i // cfg.batch_size, tuple(rows[i : i + cfg.batch_size])))
    return batches


# ------------------------------------------------------------------------------------------------ store


class JsonlStore:
    """Append-only JSON-lines results file keyed by ``row_id``; crash-safe (see the module docstring).

    ``repair=True`` (default) truncates a partial/corrupt trailing line on open (with a warning);
    ``repair=False`` only skips it when reading (for read-only consumers such as :func:`summarize`).
    """

    def __init__(self, path: str | os.PathLike, *, repair: bool = True) -> None:
        self.path = Path(path)
        self.dropped_bytes = 0
        self._ids: set[str] = set()
        self._log = JsonlLog(self.path, _parse_row)
        self._n = 0
        self._scan(repair)

    def _scan(self, repair: bool) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise SweepStoreError(f"{self.path} is not a file (a directory?): pass a results file path such as "
                                  f"{self.path / 'results.jsonl'}")
        scan = self._log.scan()
        problems = scan.problems
        first_bad = problems[0] if problems else None
        for line_no, obj in scan.entries:
            if first_bad is not None and line_no > first_bad[0]:
                break
            self._ids.add(obj["row_id"])
            self._n += 1
        if first_bad is None:
            return
        line_no, bad_at, bad_end = first_bad
        if len(problems) > 1 or bad_end != scan.size:  # only the very last line may be a crash artefact
            raise StoreCorruptError(
                f"{self.path}: line {line_no} is corrupt and is not the last line; this is not a crash artefact: "
                "inspect the file (or start over with resume=False)"
            )
        first_line = scan.first_line
        if bad_at == 0 and not (first_line.startswith(_ROW_SIGNATURE) or _ROW_SIGNATURE.startswith(first_line)):
            raise StoreCorruptError(
                f"{self.path}: line 1 is not a results row: this is not a results file of persona-vectors (nothing "
                "was changed); pass another results path"
            )
        self.dropped_bytes = scan.size - bad_at
        msg = (f"{self.path}: dropped a partial trailing line ({self.dropped_bytes} bytes) left by an "
               "interrupted run; its rows will be regenerated")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
        if repair:
            self._log.truncate(bad_at)

    @property
    def row_ids(self) -> set[str]:
        """Ids of the stored rows."""
        return set(self._ids)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, rid: object) -> bool:
        return rid in self._ids

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append rows whose ``row_id`` is not stored yet (one write + fsync); returns how many were written."""
        new = []
        batch_ids: set[str] = set()
        for r in rows:
            rid = r.get("row_id")
            if not isinstance(rid, str):
                raise ValueError("every row needs a string 'row_id'")
            if rid in self._ids or rid in batch_ids:
                continue
            batch_ids.add(rid)
            new.append(r)
        if not new:
            return 0
        self._log.append(new, fsync=True, allow_nan=False, default=_json_default)
        for r in new:
            self._ids.add(r["row_id"])
        self._n += len(new)
        return len(new)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Stored rows, in file order (a partial trailing line is skipped)."""
        for _, obj in self.numbered_rows():
            yield obj

    def numbered_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, row)`` of the stored rows, in file order (1-based; for error messages)."""
        if not self.path.is_file():
            return
        yield from self._log.scan().entries

    def rows(self) -> list[dict[str, Any]]:
        """All stored rows (first occurrence of each ``row_id``)."""
        seen: set[str] = set()
        out = []
        for r in self:
            if r["row_id"] not in seen:
                seen.add(r["row_id"])
                out.append(r)
        return out

    def reset(self) -> None:
        """Delete all rows (start over)."""
        if self.path.exists():
            self.path.unlink()
        self._ids.clear()
        self._n = 0


def _parse_row(line: bytes) -> dict[str, Any]:
    """One stored line as a row dict with a string ``row_id``; ``ValueError`` for anything else."""
    try:
        obj = json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("row_id"), str):
        raise ValueError("not a row")
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def sidecar_path(out_path: str | os.PathLike) -> Path:
    """``results.jsonl`` → ``results.config.json``."""
    return Path(out_path).with_suffix(CONFIG_SUFFIX)


def _config_hash(cfg_json: Mapping[str, Any]) -> str:
    d = {k: v for k, v in cfg_json.items() if k != "name"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _diff_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        if k == "name" or old.get(k) == new.get(k):
            continue
        if k == "vectors" and isinstance(old.get(k), Mapping) and isinstance(new.get(k), Mapping):
            for vk in sorted(set(old[k]) | set(new[k])):
                if old[k].get(vk) != new[k].get(vk):
                    out.append(f"vectors.{vk}")
            continue
        out.append(f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}")
    return out


def _write_sidecar(path: Path, meta: Mapping[str, Any]) -> None:
    from ._infra.files import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's content when ``path`` is a sweep sidecar written by this library, else ``None``."""
    try:
        d = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(d, dict) or d.get("format") != STORE_FORMAT or not isinstance(d.get("config_hash"), str):
        return None
    if not isinstance(d.get("config"), dict) or not isinstance(d.get("model", {}), dict):
        return None
    return d


def _is_store_file(path: Path, side: Path) -> bool:
    """Whether ``path`` (an existing file) is a results file this library wrote (so it may be resumed or removed).

    Empty files qualify; otherwise the first line must be a stored row, or (a crash during the very first write)
    the start of one, next to a valid sidecar.
    """
    with open(path, "rb") as f:
        first = f.readline(1 << 24)
    if not first:
        return True
    if first.endswith(b"\n"):
        try:
            _parse_row(first)
        except ValueError:
            return False
        return True
    partial = first.startswith(_ROW_SIGNATURE) or _ROW_SIGNATURE.startswith(first)
    return partial and _read_sidecar(side) is not None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def lock_path(out_path: str | os.PathLike) -> Path:
    """``results.jsonl`` → ``results.jsonl.lock``: the file :func:`run_sweep` locks while it writes the store."""
    p = Path(out_path)
    return p.with_name(p.name + LOCK_SUFFIX)


def check_sweep_output(
    out_path: str | os.PathLike, *, resume: bool = True, config_path: str | os.PathLike | None = None,
) -> None:
    """Refuse an output path that a sweep would damage; raises :class:`SweepStoreError` naming the fix.

    Refused: ``out`` equal to (or the same file as) ``config_path``; ``out`` a directory or another non-file;
    an existing non-empty ``out`` that is not a results file of this library (resuming would truncate or append
    to it, ``resume=False`` would delete it); an existing ``<stem>.config.json`` that is not a sweep sidecar (it
    would be overwritten); an existing ``<out>.lock`` that is not a sweep lock file. Nothing is written.
    """
    out = Path(out_path)
    action = "--resume would append to it" if resume else "--no-resume would delete it"
    if config_path is not None and _same_file(out, Path(config_path)):
        cfgp = Path(config_path)
        raise SweepStoreError(
            f"--out {out} is the sweep config itself: the results would overwrite it; pass another --out, e.g. "
            f"{cfgp.with_name(cfgp.stem + '.results.jsonl')}"
        )
    if out.is_dir():
        raise SweepStoreError(f"--out {out} is a directory: pass a results file path, e.g. {out / 'results.jsonl'}")
    if out.exists() and not out.is_file():
        raise SweepStoreError(f"--out {out} is not a regular file: pass a results file path (e.g. results.jsonl)")
    side = sidecar_path(out)
    if side.exists() and (not side.is_file() or _read_sidecar(side) is None):
        raise SweepStoreError(
            f"{side} exists and is not a sweep sidecar (a sweep writing {out.name} would overwrite it): "
            "move it away or pass another --out"
        )
    if out.is_file() and not _is_store_file(out, side):
        raise SweepStoreError(
            f"{out} exists and is not a results file of persona-vectors (its first line is not a sweep row); "
            f"{action}: pass another --out, or move {out.name} away"
        )
    lk = lock_path(out)
    if lk.exists() or lk.is_symlink():
        foreign = not lk.is_file() or lk.is_symlink()
        if not foreign:
            with open(lk, "rb") as f:
                head = f.read(len(_LOCK_HEADER))
            foreign = bool(head) and head != _LOCK_HEADER.encode()
        if foreign:
            raise SweepStoreError(
                f"{lk} exists and is not a sweep lock file (a sweep on {out.name} locks that path): "
                "move it away or pass another --out"
            )


def _lock_holder(lk: Path) -> str:
    """``"PID 123"`` (``"PID 123 on host"`` for another host) from a lock file, or ``"another process"``."""
    try:
        text = lk.read_text(errors="replace")
    except OSError:
        return "another process"
    info = dict(line.split(": ", 1) for line in text.splitlines()[1:4] if ": " in line)
    pid = info.get("pid", "").strip()
    if not pid.isdigit():
        return "another process"
    host = info.get("host", "").strip()
    return f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


@contextlib.contextmanager
def lock_store(out_path: str | os.PathLike, *, timeout: float = 1.0) -> Iterator[Path]:
    """Hold the exclusive lock of a results store for the ``with`` block; yields the lock file's path.

    Uses :class:`filelock.FileLock` (``flock``) on :func:`lock_path`; the file names the holder's PID, host and
    start time, and is removed on exit. After a SIGKILL the kernel drops the ``flock``, so a leftover lock file
    never blocks the next run. Raises :class:`SweepStoreLockedError` when another process holds the lock
    (after waiting ``timeout`` seconds), :class:`SweepStoreError` when the lock file cannot be created.
    """
    from filelock import FileLock, Timeout

    out = Path(out_path)
    lk = lock_path(out)
    held: dict[str, tuple[int, int]] = {}

    def announce(fd: int) -> None:
        st = os.fstat(fd)
        held["inode"] = (st.st_dev, st.st_ino)
        text = (f"{_LOCK_HEADER}\npid: {os.getpid()}\nhost: {socket.gethostname()}\n"
                f"started: {time.strftime('%Y-%m-%dT%H:%M:%S')}\nstore: {out.resolve()}\n"
                "This file marks a running sweep on the store and is removed when it ends. After a crash it is left "
                "behind but blocks nothing (the OS released the lock); it is safe to delete when no sweep runs.\n")
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)

    lock = FileLock(str(lk), timeout=timeout, on_acquired=announce)
    try:
        lock.acquire()
    except Timeout:
        raise SweepStoreLockedError(
            f"results store {out} is in use by {_lock_holder(lk)} (another sweep is running); "
            "wait for it or pass another --out"
        ) from None
    except OSError as err:
        raise SweepStoreError(
            f"cannot create the lock file {lk} ({err.strerror or err}): pass an --out in a writable directory"
        ) from None
    try:
        yield lk
    finally:
        try:
            st = os.stat(lk)
            if (st.st_dev, st.st_ino) == held.get("inode"):
                lk.unlink()  # while still holding it: filelock's waiters notice the unlinked inode and retry
        except OSError:
            pass
        finally:
            lock.release()


# ------------------------------------------------------------------------------------------------ run


@dataclass(frozen=True)
class SweepFailure:
    """One grid row that was not stored (its generation or read-outs were non-finite), and why."""

    row_id: str
    vector: str
    layer: int
    alpha: float
    prompt_id: str
    sample: int
    seed: int
    reason: str


@dataclass
class SweepReport:
    """What :func:`run_sweep` did. ``failures`` lists the rows that were not stored (see the module docstring)."""

    path: Path
    rows_total: int
    rows_written: int
    rows_skipped: int
    batches_run: int
    seconds: float
    failures: list[SweepFailure] = field(default_factory=list)

    @property
    def rows_failed(self) -> int:
        """Number of rows not stored in this run."""
        return len(self.failures)

    @property
    def ok(self) -> bool:
        """True when every row of the grid is stored."""
        return not self.failures

    def failure_lines(self) -> list[str]:
        """One line per failed (vector, layer, alpha) cell: how many rows were not stored, why, and the fix."""
        groups: dict[tuple[str, int, float], list[SweepFailure]] = {}
        for f in self.failures:
            groups.setdefault((f.vector, f.layer, f.alpha), []).append(f)
        lines = []
        for (vname, layer, alpha), fs in groups.items():
            lines.append(
                f"{len(fs)} row(s) of vector {vname!r}, layer {layer}, alpha {alpha:g} not stored: {fs[0].reason} "
                "(the other rows are stored; a resume retries only the missing ones)"
            )
        return lines


def load_sweep_vectors(model: Any, cfg: SweepConfig) -> dict[str, PersonaVector]:
    """Load (and check against ``model``) every vector of the config."""
    from .io import check_vector_model, load_vector

    out: dict[str, PersonaVector] = {}
    for name, v in cfg.vectors.items():
        vec = v if isinstance(v, PersonaVector) else load_vector(v)
        check_vector_model(vec, model, allow_other_model=cfg.allow_other_model)
        missing = [L for L in cfg.layers if L not in vec.layers]
        if missing:
            raise ValueError(
                f"vector {name!r} has no direction at layer(s) {missing} (its layers: {list(vec.layers)}); "
                "change 'layers' or re-extract the vector"
            )
        out[name] = vec
    return out


def run_sweep(
    model: Any,
    cfg: SweepConfig,
    out_path: str | os.PathLike,
    *,
    judge: Any = None,
    readouts: Sequence[Readout] = (),
    resume: bool = True,
    progress: bool = True,
) -> SweepReport:
    """Run (or resume) the sweep, streaming one JSON line per generation to ``out_path``.

    Args:
        model: a :class:`PersonaModel`.
        cfg: the grid.
        out_path: results file (JSONL); its sidecar ``<stem>.config.json`` records config, version, model. It is
            checked by :func:`check_sweep_output` first, and locked (``<out>.lock``) while the sweep runs.
        judge: optional object with ``classify(texts)`` returning results with ``.label`` and ``.scores``
            (e.g. :class:`persona_vectors.judge.EmbeddingJudge`): adds ``label`` and ``label_scores``.
        readouts: callables ``(texts, rows) -> list[dict]`` (one dict per row) whose fields are added to the
            rows, e.g. coherence or identity read-outs. The judge and read-outs run after the batch's steering
            hooks are removed (on the unsteered model), e.g.
            ``lambda texts, rows: [{"coherence": c.score} for c in readout.coherence(model, texts,
            [r["prompt"] for r in rows], system=cfg.system)]``.
        resume: keep stored rows and skip them (the config and model must match the sidecar);
            ``False`` deletes the existing results (only a results file this library wrote) and starts over.
        progress: show a tqdm bar with ETA.

    Each row holds: ``row_id, vector, layer, alpha, prompt_id, prompt, sample, seed`` (the coordinates),
    ``operator, positions, relative, alpha_raw`` (the raw-equivalent coefficient on the stored vector),
    ``system, temperature, text, n_tokens``, plus judge/read-out fields, plus ``mean_activation`` (a list of
    ``d_model`` floats at the row's steered layer) when ``cfg.record_activations``.

    Rows whose steered generation became non-finite are not stored; they are listed in
    :attr:`SweepReport.failures` and reported with a warning per (vector, layer, alpha) cell.

    Raises:
        SweepStoreError: ``out_path`` is unusable (see :func:`check_sweep_output`).
        SweepStoreLockedError: another process is running a sweep on the same store.
        SweepConfigMismatchError: resuming a store written by another config or model.
    """
    out = Path(out_path)
    t0 = time.perf_counter()
    check_sweep_output(out, resume=resume, config_path=cfg.source)
    vectors = load_sweep_vectors(model, cfg)
    batches = expand_grid(cfg)
    cfg_json = cfg.to_json(vectors)
    meta = {
        "format": STORE_FORMAT,
        "config": cfg_json,
        "config_hash": _config_hash(cfg_json),
        "library_version": library_version(),
        "model": {"model_id": model.info.model_id, "fingerprint": model.info.fingerprint,
                  "weights": model.weights_key(), "n_layers": model.n_layers, "d_model": model.d_model},
    }
    side = sidecar_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepStoreError(f"cannot create the directory of {out} ({err.strerror or err}): "
                              "pass an --out in a writable directory") from None
    with lock_store(out):
        check_sweep_output(out, resume=resume, config_path=cfg.source)  # again, now that nobody else can write
        if not resume:
            out.unlink(missing_ok=True)  # a results file of this library (checked above)
        store = JsonlStore(out)
        if len(store) and resume:
            old = _read_sidecar(side)
            if old is None:
                raise SweepConfigMismatchError(
                    f"{out} holds results but no {side.name}: cannot check they come from this config; "
                    "use another output path or resume=False to start over"
                )
            if old.get("model", {}).get("fingerprint") != model.info.fingerprint:
                raise SweepConfigMismatchError(
                    f"{out} was written with model {old.get('model', {}).get('model_id')} "
                    f"({old.get('model', {}).get('fingerprint')}), not {model.info.model_id} "
                    f"({model.info.fingerprint}); use another output path or resume=False"
                )
            old_weights = old.get("model", {}).get("weights", old.get("model", {}).get("fingerprint"))
            if old_weights != meta["model"]["weights"]:
                raise SweepConfigMismatchError(
                    f"{out} was written with other weights of {model.info.model_id} ({old_weights}, e.g. before "
                    f"finetuning in place), not the current ones ({meta['model']['weights']}); use another output "
                    "path or resume=False"
                )
            if old.get("config_hash") != meta["config_hash"]:
                diff = _diff_keys(old.get("config", {}), cfg_json)
                raise SweepConfigMismatchError(
                    f"{out} was written with a different config ({'; '.join(diff) or 'details differ'}); "
                    "use another output path or resume=False to start over"
                )
            meta["created"] = old.get("created")
            meta["resumed"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        else:
            meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _write_sidecar(side, meta)

        total = sum(len(b.rows) for b in batches)
        done_ids = store.row_ids
        wanted = {r["row_id"] for b in batches for r in b.rows}
        skipped = len(done_ids & wanted)
        written = 0
        ran = 0
        failures: list[SweepFailure] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=skipped, unit="row", desc=cfg.name or "sweep", dynamic_ncols=True)
        try:
            for batch in batches:
                todo = [r for r in batch.rows if r["row_id"] not in done_ids]
                if not todo:
                    continue
                rows, failed = _run_batch(model, cfg, vectors[batch.vector], batch, judge, readouts)
                n = store.append([r for r in rows if r["row_id"] not in done_ids])
                failed = [f for f in failed if f.row_id not in done_ids]
                failures.extend(failed)
                written += n
                ran += 1
                if bar is not None:
                    bar.update(n + len(failed))
        finally:
            if bar is not None:
                bar.close()
    report = SweepReport(out, total, written, skipped, ran, time.perf_counter() - t0, failures)
    for line in report.failure_lines():
        msg = f"sweep {out}: {line}"
        warnings.warn(msg, SweepRowsNotStoredWarning, stacklevel=2)
        log.warning(msg)
    return report


class _NonFiniteRows(Exception):
    """Raised inside a forward by the sweep's guard hook: these batch rows have a non-finite residual."""

    def __init__(self, rows: list[int], site: str) -> None:
        super().__init__(f"non-finite residual stream at {site}")
        self.rows = rows


def _guard_hook(site_name: str) -> Callable[..., None]:
    """A read-only hook: raise :class:`_NonFiniteRows` when a row's residual (or its mean square, as an RMSNorm
    computes it) is non-finite. It sits at the last block, downstream of the steered site (which
    :mod:`persona_vectors.steer` checks itself), so overflow that builds up later is caught too."""

    def hook(x: Any, hook: Any = None) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            return None
        ok = torch.isfinite(x.float().pow(2).mean(-1)).reshape(x.shape[0], -1).all(-1)
        if not bool(ok.all()):
            raise _NonFiniteRows(torch.nonzero(~ok).flatten().tolist(), site_name)
        return None

    return hook


def _activation_hook(steps: list[torch.Tensor]) -> Callable[..., None]:
    """A capture sink collecting, per forward call after the prefill, the newest position ``[batch, d]``:
    call ``k >= 1`` of a generation reads response token ``k - 1`` (with or without the KV cache)."""
    calls = [0]

    def hook(site: Any, x: Any) -> None:
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            if calls[0] > 0:
                steps.append(x[:, -1, :].detach().to(torch.float64).cpu())
            calls[0] += 1
        return None

    return hook


def _mean_activations(steps: list[torch.Tensor], toks: Sequence[torch.Tensor]) -> list[list[float] | None]:
    """Per row: the mean of the collected activations over that row's response tokens (None for an empty one)."""
    out: list[list[float] | None] = []
    for i, t in enumerate(toks):
        n = min(int(t.numel()), len(steps))
        if n == 0:
            out.append(None)
            continue
        m = torch.stack([steps[j][i] for j in range(n)]).mean(0)
        out.append([float(f"{v:.5g}") for v in m.tolist()])
    return out


def _generate_guarded(
    model: Any, cfg: SweepConfig, vec: PersonaVector, layer: int, rows: Sequence[dict[str, Any]], seed: int,
) -> tuple[list[torch.Tensor], list[Any], list[Any]]:
    """One steered generate call for ``rows`` (per-row alphas) with non-finite guards;
    (tokens, alpha_raw, mean activations at the steered layer or Nones)."""
    from .capture import Capture, HookSet
    from .sites import Site

    alphas = torch.tensor([float(r["alpha"]) for r in rows], dtype=torch.float64)  # exact, even beyond float32
    steps: list[torch.Tensor] = []
    last = Site(model.n_layers - 1)
    with steer(model, cfg.steer_spec(vec, alphas, layer)) as handle, HookSet() as guards, \
            (Capture(model, [Site(layer)], sink=_activation_hook(steps)) if cfg.record_activations
             else contextlib.nullcontext()):  # entered after the steering hook: it reads the steered residual
        info = handle.report()[0]
        guards.add(model.hook_point(last), _guard_hook(str(last)))
        toks = model.generate_tokens(
            [r["prompt"] for r in rows], system=cfg.system, max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature, top_p=cfg.top_p, seed=seed,
        )
    raw = info.get("alpha_raw", info["alpha"])
    raw_list = raw if isinstance(raw, list) else [raw] * len(rows)
    acts = _mean_activations(steps, toks) if cfg.record_activations else [None] * len(rows)
    return toks, raw_list, acts


def _spec_text(cfg: SweepConfig, alpha: float) -> str:
    s = f"operator {cfg.operator}, alpha {alpha:g}{' (relative)' if cfg.relative else ''}"
    if cfg.threshold is not None:
        s += f", threshold {cfg.threshold:g}"
    return s


def _generate_rows(
    model: Any, cfg: SweepConfig, vec: PersonaVector, batch: SweepBatch,
) -> tuple[list[tuple[dict[str, Any], torch.Tensor, Any, Any]], list[tuple[dict[str, Any], str]]]:
    """Generate the batch; rows that go non-finite are dropped (and the rest regenerated without them)."""
    done: list[tuple[dict[str, Any], torch.Tensor, Any, Any]] = []
    failed: list[tuple[dict[str, Any], str]] = []
    pending: list[list[dict[str, Any]]] = [list(batch.rows)]
    while pending:
        part = pending.pop(0)
        try:
            toks, raws, acts = _generate_guarded(model, cfg, vec, batch.layer, part, batch.gen_seed)
        except (_NonFiniteRows, SteeringError) as err:
            bad = {i for i in (err.rows or ()) if 0 <= i < len(part)} or set(range(len(part)))
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, _NonFiniteRows):  # SteeringError's own message names the spec and the fix
                why += "; use a smaller |alpha| (or check the vector / threshold)"
            for i in sorted(bad):
                failed.append((part[i], f"{why} [this row: {_spec_text(cfg, part[i]['alpha'])}]"))
            rest = [r for i, r in enumerate(part) if i not in bad]
            if rest:
                pending.insert(0, rest)
            continue
        done.extend(zip(part, toks, raws, acts))
    order = {r["row_id"]: i for i, r in enumerate(batch.rows)}
    done.sort(key=lambda t: order[t[0]["row_id"]])
    failed.sort(key=lambda t: order[t[0]["row_id"]])
    return done, failed


def _nonfinite_field(value: Any, path: str) -> str | None:
    """The path of the first non-finite number inside a row value, or ``None``."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, torch.Tensor):
        return None if not value.is_floating_point() or bool(torch.isfinite(value).all()) else path
    if isinstance(value, Mapping):
        for k, v in value.items():
            hit = _nonfinite_field(v, f"{path}.{k}")
            if hit:
                return hit
        return None
    if isinstance(value, (list, tuple, set)):
        for i, v in enumerate(value):
            hit = _nonfinite_field(v, f"{path}[{i}]")
            if hit:
                return hit
        return None
    if hasattr(value, "item") and getattr(value, "shape", ()) == ():
        try:
            return _nonfinite_field(value.item(), path)
        except (TypeError, ValueError):
            return None
    return None


def _failure(row: Mapping[str, Any], reason: str) -> SweepFailure:
    return SweepFailure(row["row_id"], row["vector"], row["layer"], row["alpha"], row["prompt_id"], row["sample"],
                        row["seed"], reason)


def _run_batch(
    model: Any, cfg: SweepConfig, vec: PersonaVector, batch: SweepBatch, judge: Any, readouts: Sequence[Readout],
) -> tuple[list[dict[str, Any]], list[SweepFailure]]:
    """Generate one batch (one call, per-row alphas) and attach read-outs; (rows to store, rows not stored)."""
    done, failed = _generate_rows(model, cfg, vec, batch)
    failures = [_failure(r, why) for r, why in failed]
    texts = [model.decode_response(t) for _, t, _, _ in done]
    rows = []
    for (r, t, a_raw, act), text in zip(done, texts):
        rows.append({
            **r, "operator": cfg.operator, "positions": cfg.positions, "relative": cfg.relative,
            "alpha_raw": a_raw, "system": cfg.system, "temperature": cfg.temperature,
            "text": text, "n_tokens": int(t.numel()),
        })
        if cfg.record_activations:
            rows[-1]["mean_activation"] = act
    if rows and judge is not None:
        results = judge.classify(texts)
        if len(results) != len(rows):
            raise ValueError(f"judge returned {len(results)} results for {len(rows)} texts")
        for row, res in zip(rows, results):
            row["label"] = res.label
            row["label_scores"] = {k: float(v) for k, v in dict(res.scores).items()}
    for fn in readouts if rows else ():
        extra = fn(list(texts), [dict(r) for r in rows])
        if len(extra) != len(rows):
            raise ValueError(f"read-out {getattr(fn, '__name__', fn)!r} returned {len(extra)} dicts for {len(rows)} rows")
        for row, add in zip(rows, extra):
            clash = set(add) & {"row_id", "vector", "layer", "alpha", "prompt_id", "prompt", "sample", "seed", "text",
                                "mean_activation"}
            if clash:
                raise ValueError(f"read-out {getattr(fn, '__name__', fn)!r} may not overwrite coordinates {sorted(clash)}")
            row.update(add)
    good = []
    for row in rows:
        hit = next((h for k, v in row.items() if (h := _nonfinite_field(v, k))), None)
        if hit:
            failures.append(_failure(row, f"field {hit!r} is non-finite (from the judge or a read-out, or an "
                                          "overflowing alpha_raw); fix the read-out or use a smaller |alpha|"))
        else:
            good.append(row)
    return good, failures


# ------------------------------------------------------------------------------------------------ summary

_COORDS = {"row_id", "vector", "layer", "alpha", "prompt_id", "prompt", "sample", "seed", "alpha_raw", "relative",
           "temperature", "text", "label", "label_scores", "operator", "positions", "system"}


def _check_row(path: Path, line_no: int, r: Mapping[str, Any]) -> None:
    """Raise :class:`StoreCorruptError` naming ``file:line`` when a row lacks a coordinate or has a wrong type."""
    fix = "fix or delete that line (or rerun the sweep into a new --out)"
    missing = [k for k in ("vector", "layer", "alpha") if k not in r]
    if missing:
        raise StoreCorruptError(f"{path}:{line_no}: row lacks {', '.join(map(repr, missing))}; {fix}")
    checks = (
        ("vector", isinstance(r["vector"], str), "a string"),
        ("layer", _is_int(r["layer"]), "an integer"),
        ("alpha", _is_number(r["alpha"]) and _finite(r["alpha"]), "a finite number"),
        ("label", r.get("label") is None or isinstance(r.get("label"), str), "a string"),
    )
    for key, good, what in checks:
        if not good:
            raise StoreCorruptError(f"{path}:{line_no}: {key!r} must be {what}, got {r.get(key)!r}; {fix}")


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def summarize(path: str | os.PathLike, *, judge: Any = None) -> dict[str, Any]:
    """Per cell (vector, layer, alpha): n, label shares with Wilson 95 % intervals, mean coherence and other means.

    Returns ``{"path", "n_rows", "n_labelled", "labels", "notes", "cells": [{"vector", "layer", "alpha",
    "alpha_raw", "n", "labels": {label: {"k", "share", "low", "high"}}, "coherence": float | None,
    "means": {field: float}}]}``.
    Label rows use :func:`persona_vectors.judge.label_shares` (all archetypes listed) when every label is a known
    archetype, else the observed labels. Shares need judge labels: rows stored without them (a sweep run
    without ``--judge``) are labelled here, in memory, when ``judge`` is given (an object with ``classify``,
    e.g. ``EmbeddingJudge.default()``; CLI ``summarize --judge``); otherwise ``notes`` says how to get them.
    """
    from .judge import LABELS, label_shares, wilson_interval

    p = Path(path)
    if p.is_dir():
        raise SweepStoreError(f"{p} is a directory: pass the results .jsonl file written by `persona-vectors sweep`")
    if not p.is_file():
        raise FileNotFoundError(f"No results file at {p}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = JsonlStore(p, repair=False)
        rows = []
        seen: set[str] = set()
        for line_no, r in store.numbered_rows():
            if r["row_id"] in seen:
                continue
            seen.add(r["row_id"])
            _check_row(p, line_no, r)
            rows.append(r)
    unlabelled = [r for r in rows if r.get("label") is None and isinstance(r.get("text"), str)]
    if judge is not None and unlabelled:
        results = judge.classify([r["text"] for r in unlabelled])
        if len(results) != len(unlabelled):
            raise ValueError(f"judge returned {len(results)} results for {len(unlabelled)} texts")
        for r, res in zip(unlabelled, results):
            r["label"] = res.label
    n_labelled = sum(1 for r in rows if r.get("label") is not None)
    notes: list[str] = []
    if rows and n_labelled == 0:
        notes.append(f"no label shares: none of the {len(rows)} rows has a judge label (the sweep ran without "
                     "--judge); run `persona-vectors summarize {p} --judge` to label them now, or sweep with --judge")
    elif n_labelled < len(rows):
        notes.append(f"{len(rows) - n_labelled} of {len(rows)} rows have no judge label and are left out of the "
                     f"shares; `persona-vectors summarize {p} --judge` labels them")
    cells: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["vector"], r["layer"], r["alpha"]), []).append(r)
    observed = sorted({r["label"] for r in rows if r.get("label") is not None})
    use_archetypes = bool(observed) and set(observed) <= set(LABELS)
    label_names = list(LABELS) if use_archetypes else observed
    out_cells = []
    for (vname, layer, alpha), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        labels = [r["label"] for r in rs if r.get("label") is not None]
        lab: dict[str, dict[str, float]] = {}
        if labels:
            if use_archetypes:
                shares = label_shares(labels)
                for name, (share, lo, hi) in shares.items():
                    lab[name] = {"k": sum(1 for x in labels if x == name), "share": share, "low": lo, "high": hi}
            else:
                for name in label_names:
                    k = sum(1 for x in labels if x == name)
                    lo, hi = wilson_interval(k, len(labels))
                    lab[name] = {"k": k, "share": k / len(labels), "low": lo, "high": hi}
        means: dict[str, float] = {}
        numeric_keys = sorted({k for r in rs for k, v in r.items()
                               if k not in _COORDS and isinstance(v, (int, float)) and not isinstance(v, bool)})
        for k in numeric_keys:
            vals = [float(r[k]) for r in rs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                means[k] = sum(vals) / len(vals)
        out_cells.append({
            "vector": vname, "layer": layer, "alpha": alpha, "alpha_raw": rs[0].get("alpha_raw"),
            "relative": rs[0].get("relative"), "n": len(rs), "n_labelled": len(labels), "labels": lab,
            "coherence": means.get("coherence"), "means": means,
        })
    return {"path": str(p), "n_rows": len(rows), "n_labelled": n_labelled, "labels": label_names, "notes": notes,
            "cells": out_cells}


def summary_markdown(summary: Mapping[str, Any], *, min_share: float = 0.0) -> str:
    """Render :func:`summarize`'s output as a Markdown table (``share [low, high]`` per label).

    Labels whose share never exceeds ``min_share`` in any cell are left out to keep the table narrow.
    """
    cells = summary["cells"]
    labels = [lab for lab in summary.get("labels", [])
              if any(c["labels"].get(lab, {}).get("share", 0.0) > min_share for c in cells)]
    has_coh = any(c.get("coherence") is not None for c in cells)
    relative = any(c.get("relative") for c in cells)
    head = ["vector", "layer", "alpha" + (" (rel.)" if relative else ""), "alpha_raw", "n"] + labels
    if has_coh:
        head.append("coherence")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in cells:
        raw = c.get("alpha_raw")
        cols = [str(c["vector"]), str(c["layer"]), f"{c['alpha']:g}",
                f"{raw:.4g}" if isinstance(raw, (int, float)) else "", str(c["n"])]
        for lab in labels:
            s = c["labels"].get(lab)
            cols.append(f"{s['share']:.2f} [{s['low']:.2f}, {s['high']:.2f}]" if s else "")
        if has_coh:
            coh = c.get("coherence")
            cols.append(f"{coh:.3f}" if coh is not None else "")
        lines.append("| " + " | ".join(cols) + " |")
    lines += [f"\nnote: {n}" for n in summary.get("notes", ())]
    return "\n".join(lines) + "\n"


__all__ = [
    "JsonlStore",
    "StoreCorruptError",
    "SweepBatch",
    "SweepConfig",
    "SweepConfigError",
    "SweepConfigMismatchError",
    "SweepFailure",
    "SweepReport",
    "SweepRowsNotStoredWarning",
    "SweepStoreError",
    "SweepStoreLockedError",
    "check_sweep_output",
    "expand_grid",
    "load_sweep_vectors",
    "lock_path",
    "lock_store",
    "row_id",
    "run_sweep",
    "sidecar_path",
    "summarize",
    "summary_markdown",
]
