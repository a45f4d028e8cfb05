"""What a sweep is: :class:`SweepConfig` (the TOML schema, its validation and JSON form), the deterministic
``row_id`` of a generation, and :func:`expand_grid`, which cuts the grid into the batches the runner generates.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..operators import SteerSpecError
from ..steer import SteerSpec
from ..vector import PersonaVector
from .errors import SweepConfigError


def _is_number(v: Any) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` in Python, never a valid count or coefficient)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:
        return False

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
        from ..datasets import load_questions

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
