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
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from .steer import CAP_MODES, OPERATORS, STEER_POSITIONS, steer
from .vector import PersonaVector, library_version

log = logging.getLogger(__name__)

Readout = Callable[[list[str], list[dict]], list[dict]]
CONFIG_SUFFIX = ".config.json"
STORE_FORMAT = 1


class SweepConfigError(ValueError):
    """A sweep config is malformed; the message names the key."""


class SweepConfigMismatchError(ValueError):
    """An existing results file was written by a different config or model."""


class StoreCorruptError(ValueError):
    """A results file has a corrupt line that is not the last one (not a crash artefact)."""


# ------------------------------------------------------------------------------------------------ config


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
    name: str = ""

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> SweepConfigError:
            return SweepConfigError(f"sweep config: {key!r} {why}")

        if not isinstance(self.vectors, Mapping) or not self.vectors:
            raise bad("vectors", "must be a non-empty table of name = vector directory")
        for k, v in self.vectors.items():
            if not isinstance(k, str) or not k:
                raise bad("vectors", f"has a bad name {k!r}")
            if not isinstance(v, (str, os.PathLike, PersonaVector)):
                raise bad("vectors", f"entry {k!r} must be a directory path, got {type(v).__name__}")
        self.vectors = dict(self.vectors)
        self.alphas = self._numbers("alphas", self.alphas, float)
        self.layers = self._numbers("layers", self.layers, int)
        if any(x < 0 for x in self.layers):
            raise bad("layers", "must be non-negative layer indices")
        self.seeds = self._numbers("seeds", self.seeds, int)
        if not isinstance(self.prompts, (list, tuple)) or not all(isinstance(p, str) for p in self.prompts):
            raise bad("prompts", "must be a list of strings")
        self.prompts = list(self.prompts)
        if self.questions is not None and self.questions not in ("evaluation", "extraction"):
            raise bad("questions", "must be 'evaluation' or 'extraction'")
        if bool(self.prompts) == (self.questions is not None):
            raise bad("prompts", "or 'questions' must be given (exactly one of them)")
        for key in ("samples", "max_new_tokens", "batch_size"):
            val = getattr(self, key)
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise bad(key, f"must be a positive integer, got {val!r}")
        if self.n_questions is not None and (not isinstance(self.n_questions, int) or self.n_questions < 1):
            raise bad("n_questions", f"must be a positive integer, got {self.n_questions!r}")
        for key in ("temperature", "top_p"):
            val = getattr(self, key)
            if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0 or not math.isfinite(val):
                raise bad(key, f"must be a non-negative number, got {val!r}")
            setattr(self, key, float(val))
        if self.positions not in STEER_POSITIONS:
            raise bad("positions", f"must be one of {STEER_POSITIONS}, got {self.positions!r}")
        if self.operator not in OPERATORS:
            raise bad("operator", f"must be one of {OPERATORS}, got {self.operator!r}")
        if self.cap not in CAP_MODES:
            raise bad("cap", f"must be 'min' or 'max', got {self.cap!r}")
        if self.operator == "cap" and self.threshold is None:
            raise bad("threshold", "is required with operator = 'cap'")
        if self.threshold is not None:
            if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool):
                raise bad("threshold", f"must be a number, got {self.threshold!r}")
            self.threshold = float(self.threshold)
        if self.relative and self.operator != "add":
            raise bad("relative", "only applies to operator = 'add'")
        for key in ("relative", "allow_other_model"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, f"must be true or false, got {getattr(self, key)!r}")
        if self.system is not None and not isinstance(self.system, str):
            raise bad("system", "must be a string")
        if not isinstance(self.name, str):
            raise bad("name", "must be a string")
        if self.samples > 1 and self.temperature == 0:
            warnings.warn("samples > 1 with temperature = 0 gives identical greedy generations", stacklevel=3)

    @staticmethod
    def _numbers(key: str, values: Any, kind: type) -> list:
        if isinstance(values, (int, float)) and not isinstance(values, bool):
            values = [values]
        if not isinstance(values, (list, tuple)) or not values:
            raise SweepConfigError(f"sweep config: {key!r} must be a non-empty list of numbers")
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
                raise SweepConfigError(f"sweep config: {key!r} must hold {'integers' if kind is int else 'numbers'}, got {v!r}")
            if not math.isfinite(float(v)):
                raise SweepConfigError(f"sweep config: {key!r} holds a non-finite value")
            out.append(kind(v))
        if len(set(out)) != len(out):
            raise SweepConfigError(f"sweep config: {key!r} has duplicates: {values}")
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
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise SweepConfigError(f"{p}: no such config file") from None
        except tomllib.TOMLDecodeError as err:
            raise SweepConfigError(f"{p}: not valid TOML ({err})") from None
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
                if not isinstance(v, str):
                    raise SweepConfigError(f"{p}: 'vectors' entry {k!r} must be a directory path string")
                vp = Path(v).expanduser()
                resolved[k] = str(vp if vp.is_absolute() else (p.parent / vp))
            data["vectors"] = resolved
        try:
            return cls(**data)
        except SweepConfigError as err:
            raise SweepConfigError(f"{p}: {str(err).removeprefix('sweep config: ')}") from None
        except TypeError as err:
            raise SweepConfigError(f"{p}: {err}") from None

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
        self._n = 0
        self._scan(repair)

    def _scan(self, repair: bool) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        bad_at: int | None = None
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl + 1
            line = data[pos:end]
            try:
                if nl < 0:
                    raise ValueError("no newline")
                obj = json.loads(line)
                if not isinstance(obj, dict) or "row_id" not in obj:
                    raise ValueError("not a row")
            except ValueError:
                if line.strip() == b"" and nl >= 0:
                    pos = end
                    good_end = end
                    continue
                bad_at = pos
                break
            self._ids.add(obj["row_id"])
            self._n += 1
            good_end = end
            pos = end
        if bad_at is None:
            return
        rest = data[bad_at:]
        if rest.count(b"\n") > 1 or (rest.count(b"\n") == 1 and not rest.endswith(b"\n")):
            line_no = data[:bad_at].count(b"\n") + 1
            raise StoreCorruptError(
                f"{self.path}: line {line_no} is corrupt and is not the last line; this is not a crash artefact: "
                "inspect the file (or start over with resume=False)"
            )
        self.dropped_bytes = len(data) - good_end
        msg = (f"{self.path}: dropped a partial trailing line ({self.dropped_bytes} bytes) left by an "
               "interrupted run; its rows will be regenerated")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
        if repair:
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

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
        blob = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n" for r in new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(blob.encode())
            f.flush()
            os.fsync(f.fileno())
        for r in new:
            self._ids.add(r["row_id"])
        self._n += len(new)
        return len(new)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Stored rows, in file order (a partial trailing line is skipped)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n") or not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict) and "row_id" in obj:
                    yield obj

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
    from .models import _atomic_write_text

    _atomic_write_text(path, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------ run


@dataclass
class SweepReport:
    """What :func:`run_sweep` did."""

    path: Path
    rows_total: int
    rows_written: int
    rows_skipped: int
    batches_run: int
    seconds: float


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
        out_path: results file (JSONL); its sidecar ``<stem>.config.json`` records config, version, model.
        judge: optional object with ``classify(texts)`` returning results with ``.label`` and ``.scores``
            (e.g. :class:`persona_vectors.judge.EmbeddingJudge`): adds ``label`` and ``label_scores``.
        readouts: callables ``(texts, rows) -> list[dict]`` (one dict per row) whose fields are added to the
            rows, e.g. coherence or identity read-outs. The judge and read-outs run after the batch's steering
            hooks are removed (on the unsteered model), e.g.
            ``lambda texts, rows: [{"coherence": c.score} for c in readout.coherence(model, texts,
            [r["prompt"] for r in rows], system=cfg.system)]``.
        resume: keep stored rows and skip them (the config and model must match the sidecar);
            ``False`` deletes existing results and starts over.
        progress: show a tqdm bar with ETA.

    Each row holds: ``row_id, vector, layer, alpha, prompt_id, prompt, sample, seed`` (the coordinates),
    ``operator, positions, relative, alpha_raw`` (the raw-equivalent coefficient on the stored vector),
    ``system, temperature, text, n_tokens``, plus judge/read-out fields.
    """
    out = Path(out_path)
    t0 = time.perf_counter()
    vectors = load_sweep_vectors(model, cfg)
    batches = expand_grid(cfg)
    cfg_json = cfg.to_json(vectors)
    meta = {
        "format": STORE_FORMAT,
        "config": cfg_json,
        "config_hash": _config_hash(cfg_json),
        "library_version": library_version(),
        "model": {"model_id": model.info.model_id, "fingerprint": model.info.fingerprint,
                  "n_layers": model.n_layers, "d_model": model.d_model},
    }
    side = sidecar_path(out)
    if not resume:
        out.unlink(missing_ok=True)
    store = JsonlStore(out)
    if len(store) and resume:
        if not side.is_file():
            raise SweepConfigMismatchError(
                f"{out} holds results but no {side.name}: cannot check they come from this config; "
                "use another output path or resume=False to start over"
            )
        old = json.loads(side.read_text())
        if old.get("model", {}).get("fingerprint") != model.info.fingerprint:
            raise SweepConfigMismatchError(
                f"{out} was written with model {old.get('model', {}).get('model_id')} "
                f"({old.get('model', {}).get('fingerprint')}), not {model.info.model_id} ({model.info.fingerprint}); "
                "use another output path or resume=False"
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
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=skipped, unit="row", desc=cfg.name or "sweep", dynamic_ncols=True)
    try:
        for batch in batches:
            todo = [r for r in batch.rows if r["row_id"] not in done_ids]
            if not todo:
                continue
            rows = _run_batch(model, cfg, vectors[batch.vector], batch, judge, readouts)
            n = store.append([r for r in rows if r["row_id"] not in done_ids])
            written += n
            ran += 1
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    return SweepReport(out, total, written, skipped, ran, time.perf_counter() - t0)


def _run_batch(
    model: Any, cfg: SweepConfig, vec: PersonaVector, batch: SweepBatch, judge: Any, readouts: Sequence[Readout],
) -> list[dict[str, Any]]:
    """Generate one batch (one call, per-row alphas) and attach read-outs."""
    alphas = [r["alpha"] for r in batch.rows]
    with steer(model, vec, alphas, layers=[batch.layer], positions=cfg.positions, operator=cfg.operator,  # type: ignore[arg-type]
               relative=cfg.relative, threshold=cfg.threshold, cap=cfg.cap,  # type: ignore[arg-type]
               allow_other_model=cfg.allow_other_model) as handle:
        toks = model.generate_tokens(
            [r["prompt"] for r in batch.rows], system=cfg.system, max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature, top_p=cfg.top_p, seed=batch.gen_seed,
        )
        info = handle.report()[0]
    raw = info.get("alpha_raw", info["alpha"])
    raw_list = raw if isinstance(raw, list) else [raw] * len(batch.rows)
    texts = [model.decode_response(t) for t in toks]
    rows = []
    for r, text, t, a_raw in zip(batch.rows, texts, toks, raw_list):
        rows.append({
            **r, "operator": cfg.operator, "positions": cfg.positions, "relative": cfg.relative,
            "alpha_raw": a_raw, "system": cfg.system, "temperature": cfg.temperature,
            "text": text, "n_tokens": int(t.numel()),
        })
    if judge is not None:
        results = judge.classify(texts)
        if len(results) != len(rows):
            raise ValueError(f"judge returned {len(results)} results for {len(rows)} texts")
        for row, res in zip(rows, results):
            row["label"] = res.label
            row["label_scores"] = {k: float(v) for k, v in dict(res.scores).items()}
    for fn in readouts:
        extra = fn(list(texts), [dict(r) for r in rows])
        if len(extra) != len(rows):
            raise ValueError(f"read-out {getattr(fn, '__name__', fn)!r} returned {len(extra)} dicts for {len(rows)} rows")
        for row, add in zip(rows, extra):
            clash = set(add) & {"row_id", "vector", "layer", "alpha", "prompt_id", "prompt", "sample", "seed", "text"}
            if clash:
                raise ValueError(f"read-out {getattr(fn, '__name__', fn)!r} may not overwrite coordinates {sorted(clash)}")
            row.update(add)
    return rows


# ------------------------------------------------------------------------------------------------ summary

_COORDS = {"row_id", "vector", "layer", "alpha", "prompt_id", "prompt", "sample", "seed", "alpha_raw", "relative",
           "temperature", "text", "label", "label_scores", "operator", "positions", "system"}


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """Per cell (vector, layer, alpha): n, label shares with Wilson 95 % intervals, mean coherence and other means.

    Returns ``{"path", "n_rows", "labels", "cells": [{"vector", "layer", "alpha", "alpha_raw", "n",
    "labels": {label: {"k", "share", "low", "high"}}, "coherence": float | None, "means": {field: float}}]}``.
    Label rows use :func:`persona_vectors.judge.label_shares` (all archetypes listed) when every label is a known
    archetype, else the observed labels.
    """
    from .judge import LABELS, label_shares, wilson_interval

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"No results file at {p}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = JsonlStore(p, repair=False).rows()
    cells: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["vector"], r["layer"], r["alpha"]), []).append(r)
    observed = sorted({r["label"] for r in rows if "label" in r})
    use_archetypes = bool(observed) and set(observed) <= set(LABELS)
    label_names = list(LABELS) if use_archetypes else observed
    out_cells = []
    for (vname, layer, alpha), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        labels = [r["label"] for r in rs if "label" in r]
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
    return {"path": str(p), "n_rows": len(rows), "labels": label_names, "cells": out_cells}


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
    return "\n".join(lines) + "\n"


__all__ = [
    "JsonlStore",
    "StoreCorruptError",
    "SweepBatch",
    "SweepConfig",
    "SweepConfigError",
    "SweepConfigMismatchError",
    "SweepReport",
    "expand_grid",
    "load_sweep_vectors",
    "row_id",
    "run_sweep",
    "sidecar_path",
    "summarize",
    "summary_markdown",
]
