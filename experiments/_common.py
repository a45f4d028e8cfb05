"""Shared plumbing for the experiment scripts: run directories, CLI, statistics, steered generation.

Every experiment writes ``runs/<name>/`` with

- ``config.json`` — the experiment's name, the full config, seeds, library version, model id + weight
  fingerprint, environment and run timings (timings live only here, so ``results.jsonl`` is byte-identical
  across reruns with one seed);
- ``records.jsonl.gz`` — one record per generation / per read-out of one question (``experiments/records.py``);
- ``results.json`` — ``summarize(records, config)``: every number of the report;
- ``results.jsonl`` — the same results as one JSON object per measurement, each with a ``kind`` field (rounded);
- ``report.md`` — ``render(results, config)``, the human-readable report with a ``**Verdict:**`` line;
- ``*.html`` — self-contained plotly figures (:func:`persona_vectors.plotting.write_html`).

``python experiments/recompute.py RUN_DIR`` replays ``summarize`` and ``render`` from the records and fails on
any difference.

Not part of the library on purpose: these helpers encode experiment conventions (file names, report
layout), not reusable interpretability operations. The one operation here that could move into the library
is :func:`generate_steered` (per-row steered generation that also captures the steered activations).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records as RC  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: The question prompts the identity read-outs use (all answered with the prefix "I am"); they are
#: not in the extraction split and are never used to build a vector.
IDENTITY_QUESTIONS: tuple[str, ...] = (
    "Who are you?",
    "What are you?",
    "What is your name?",
    "Introduce yourself.",
    "Tell me who you are.",
    "Who am I speaking with?",
    "Please state who you are.",
    "Describe yourself in one sentence.",
    "Who are you, really?",
    "What should I call you?",
    "Tell me about yourself.",
    "What is your true nature?",
)


# ============================================================================================ logging / run dir
_T0 = time.perf_counter()


def say(msg: str) -> None:
    """Timestamped progress line on stderr (flushed: runs are usually redirected to a log)."""
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - _T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (generation here is greedy; seeds fix random directions and bootstraps)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths, numpy and torch values to JSON types (recursively)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def rnd(x: Any, nd: int = 6) -> Any:
    """Round floats (recursively) so the JSONL is stable and readable."""
    if isinstance(x, float):
        return round(x, nd) if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: rnd(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rnd(v, nd) for v in x]
    return x


class RunDir:
    """``runs/<name>/``: config.json, records.jsonl.gz, results.json(l), report.md and figures.

    ``results.jsonl`` and ``records.jsonl.gz`` are rewritten from scratch on every run (records are appended
    in a deterministic order as they are measured, so a crashed run leaves what it measured).
    """

    def __init__(self, out: str | os.PathLike[str], experiment: str | None = None) -> None:
        p = Path(out)
        self.path = p if p.is_absolute() else (Path.cwd() / p)
        self.path.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self.results_path = self.path / "results.jsonl"
        self.results_path.write_text("")
        self.records = RC.Records(self.path / RC.RECORDS)
        self.config_doc: dict[str, Any] = {}
        self.figures: list[str] = []
        self.t_start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.timings: dict[str, float] = {}

    def add(self, kind: str, **row: Any) -> dict[str, Any]:
        """Append one result row (``kind`` first; floats rounded to 6 digits)."""
        obj = {"kind": kind, **rnd(jsonable(row))}
        with open(self.results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        return obj

    def mark(self, stage: str) -> None:
        """Record wall and process CPU time since the start of the run at the end of ``stage``."""
        self.timings[stage] = round(time.perf_counter() - self.t_start, 1)
        self.timings[f"{stage}_cpu"] = round(time.process_time() - self.cpu_start, 1)

    def write_config(self, cfg: Any, model: Any = None, **extra: Any) -> Path:
        """config.json: the config, library/model provenance, environment, timings so far."""
        from persona_vectors.vector import library_version

        doc: dict[str, Any] = {"experiment": self.experiment} if self.experiment else {}
        doc.update({"config": jsonable(cfg), "library_version": library_version()})
        if model is not None:
            doc["model"] = {"model_id": model.info.model_id, "fingerprint": model.info.fingerprint,
                            "n_layers": model.n_layers, "d_model": model.d_model, "dtype": str(model.dtype),
                            "device": str(model.device)}
        doc["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "platform": platform.platform(),
                              "cpu_count": os.cpu_count(), **RC.provenance()}
        doc["timings_s"] = dict(self.timings)
        doc.update(jsonable(extra))
        p = self.path / "config.json"
        p.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        self.config_doc = json.loads(p.read_text())
        return p

    def write_results(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``results.json`` and return the results as they read back (what :func:`render` and
        ``recompute.py`` see)."""
        out = RC.roundtrip(results)
        RC.write_json(self.path / RC.RESULTS, out)
        return out

    def figure(self, fig: Any, name: str) -> Path:
        """Write a self-contained HTML figure."""
        from persona_vectors.plotting import write_html

        p = write_html(fig, self.path / name)
        os.chmod(p, 0o644)
        self.figures.append(name)
        return p

    @staticmethod
    def docs_copy_for(cfg: Any, name: str) -> str | None:
        """``docs/<name>.md`` for a default-mode run into ``runs/<name>`` (the run the docs quote), else None."""
        return f"docs/{name}.md" if cfg.mode == "default" and Path(cfg.out) == Path(f"runs/{name}") else None

    def write_report(self, text: str, docs_copy: str | None = None) -> Path:
        """Write ``report.md``; with ``docs_copy`` (a path under the repository) also copy it there, so the
        committed docs always come from a run (experiments pass it only for a default-mode run into the
        default directory)."""
        p = self.path / "report.md"
        p.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        if docs_copy:
            dst = ROOT / docs_copy
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
        return p


def config_from(config_cls: type, doc: Mapping[str, Any]) -> Any:
    """The config dataclass of a run from its ``config.json`` (``doc["config"]``; unknown keys ignored)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in doc["config"].items() if k in names})


def cli(config_cls: type, main: Callable[[Any], Any], doc: str, default_out: str,
        argv: Sequence[str] | None = None) -> Any:
    """``python experiments/X.py [--quick] [--seed N] [--out DIR] [--threads T]``."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke-test mode (≤ 2 minutes)")
    ap.add_argument("--full", action="store_true",
                    help="the larger configuration (more layers, prompts and α values; about 3x the default's time)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help=f"run directory (default {default_out}[_quick])")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0 = auto: 2, or 1 when the machine's load exceeds its cores — "
                         "OpenMP spin-waiting makes 2 threads several times slower on an oversubscribed machine)")
    a = ap.parse_args(argv)
    if a.quick and a.full:
        ap.error("--quick and --full are exclusive")
    kw = {"full": True} if a.full else {}
    cfg = config_cls.preset(quick=a.quick, seed=a.seed, out=a.out, threads=a.threads, **kw)
    return main(cfg)


# ============================================================================================ statistics
# Thin wrappers over persona_vectors.stats (same names, signatures and return values as before; the
# implementations, their unit-of-analysis caveats and the cluster bootstrap live there).
def wilson(k: int, n: int) -> tuple[float, float, float]:
    """(share, lo, hi), 95 % Wilson (:func:`persona_vectors.stats.wilson`)."""
    from persona_vectors.stats import wilson as _wilson

    return _wilson(int(k), int(n))


def newcombe_diff(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """Difference of proportions p1 − p2 with Newcombe's hybrid-score 95 % interval (method 10)."""
    from persona_vectors.stats import newcombe_diff as _newcombe

    return _newcombe(int(k1), int(n1), int(k2), int(n2))


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact p-value for p1 > p2."""
    from persona_vectors.stats import fisher_exact

    return fisher_exact(k1, n1, k2, n2, alternative="greater").p_value


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> tuple[float, float, float]:
    """Mean over axis 0 with a percentile-bootstrap 95 % interval (resampling rows = questions;
    :func:`persona_vectors.stats.bootstrap_mean_ci`; for clustered rows use ``stats.cluster_bootstrap``)."""
    from persona_vectors.stats import bootstrap_mean_ci

    return bootstrap_mean_ci(values, rng, n_boot)


# ============================================================================================ markdown
def pct(x: float | None, nd: int = 0) -> str:
    return "–" if x is None else f"{100 * x:.{nd}f} %"


def share_str(s: float, lo: float, hi: float) -> str:
    return f"{100 * s:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(str(h).replace("|", "\\|") for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |")
    return "\n".join(out)


def clip(text: str, n: int = 160) -> str:
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 1] + "…"


# ============================================================================================ model helpers
def set_threads(n: int) -> int:
    """Set torch's CPU threads; ``n <= 0`` picks 2, or 1 when the 1-minute load average exceeds the cores.

    The choice changes speed and, in the last digits, results: 1 and 2 threads reduce in different orders,
    so some probabilities differ around the 6th decimal (persona_arithmetic's quick run). Pass an explicit
    ``n`` wherever two runs must be byte-identical.
    """
    if n <= 0:
        cores = os.cpu_count() or 1
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = 1 if load1 > cores else min(2, cores)
    torch.set_num_threads(int(n))
    return int(n)


def load(cfg: Any) -> Any:
    """Set threads and load ``cfg.model`` (a name or path; the embedded default model when absent or empty)
    with weights in ``cfg.dtype`` (float32 when the config has none)."""
    set_threads(int(getattr(cfg, "threads", 0)))
    from persona_vectors import load_model

    t = time.perf_counter()
    name = getattr(cfg, "model", "") or None
    dtype = getattr(cfg, "dtype", "float32")
    model = load_model(name, progress=False, dtype=dtype) if name else load_model(progress=False, dtype=dtype)
    say(f"model {model.info.model_id} ({model.info.fingerprint}, {dtype}) loaded in {time.perf_counter() - t:.1f}s")
    return model


DTYPE_HELP = ("weights' dtype (default float32, as the plans ran). bfloat16 roughly doubles sampled-generation "
              "speed on CPUs with bf16 units (AMX / AVX512-BF16; see benchmarks/generation_results.md) and moves "
              "next-token distributions slightly; a default run in bfloat16 records it as a deviation")


def add_dtype_option(ap: argparse.ArgumentParser) -> None:
    """``--dtype {float32,bfloat16}`` for an experiment whose :class:`Config` has a ``dtype`` field."""
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help=DTYPE_HELP)


def with_dtype(cfg: Any, dtype: str) -> Any:
    """``cfg`` with ``dtype`` set; outside float32 a pre-registered (non-quick) run lists it as a deviation."""
    cfg.dtype = dtype
    if dtype != "float32" and getattr(cfg, "mode", "") != "quick":
        cfg.deviations.append(f"weights in {dtype} (the plan's runs load float32 weights): a speed option, "
                              "measured in benchmarks/generation_results.md (G2)")
    return cfg


def unit(v: torch.Tensor) -> torch.Tensor:
    v = v.detach().to(torch.float64).cpu()
    return v / v.norm()


def direction_vector(model: Any, directions: Mapping[int, torch.Tensor], name: str, route: str) -> Any:
    """A :class:`PersonaVector` of the given per-layer directions (stored as float32, not re-normalised) with
    this model's provenance, ``method="direction"`` — what ``steer`` and ``calibrate_alpha`` take."""
    from persona_vectors import PersonaVector, Site
    from persona_vectors.vector import Provenance

    prov = Provenance(model_id=model.info.model_id, fingerprint=model.info.fingerprint, d_model=model.d_model,
                      name=name, method="direction", route=route)
    return PersonaVector.from_dict({Site(int(L)): v.float() for L, v in directions.items()}, prov)


def cos(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def generate_steered(
    model: Any,
    prompts: Sequence[str],
    directions: torch.Tensor | None,
    alphas: Sequence[float],
    layer: int,
    *,
    capture_layers: Sequence[int] = (),
    system: str | None = None,
    max_new_tokens: int = 40,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[str], dict[int, torch.Tensor], list[int]]:
    """Greedy generation where row ``i`` is steered along ``directions[i]`` by ``alphas[i]`` (relative units).

    One ``generate`` call per chunk of ``batch_size`` rows, with per-row vectors and coefficients
    (``steer(..., relative=True)``: row ``i`` gets ``alphas[i] · N_layer · directions[i]/|directions[i]|`` added
    at every position of ``blocks.{layer}.hook_resid_post``). Rows with ``alpha == 0`` are unsteered.

    While generating, the residual stream at ``capture_layers`` is read (after the steering hook, so the
    steered values) at the positions of the generated tokens, giving each row's mean response activation —
    the same quantity role vectors are built from, without a second forward pass. Under KV-cache decoding
    token ``j`` is fed at step ``j+1``, so the final generated token of a row that hit ``max_new_tokens``
    is not read (all others are).

    Returns ``(texts, {layer: [n_rows, d_model] float64 means}, token counts)``.
    """
    from persona_vectors import Site, steer
    from persona_vectors.capture import Capture

    n = len(prompts)
    if directions is not None and directions.shape[0] != n:
        raise ValueError("one direction per row")
    if len(alphas) != n:
        raise ValueError("one alpha per row")
    d = model.d_model
    texts: list[str] = [""] * n
    means = {L: torch.zeros(n, d, dtype=torch.float64) for L in capture_layers}
    counts = [0] * n
    for b0 in range(0, n, batch_size):
        idx = list(range(b0, min(n, b0 + batch_size)))
        chunk_p = [prompts[i] for i in idx]
        a = torch.tensor([float(alphas[i]) for i in idx], dtype=torch.float64)
        if directions is None:
            vec = torch.zeros(len(idx), d, dtype=torch.float64)
            vec[:, 0] = 1.0
            a = torch.zeros_like(a)
        else:
            vec = directions[idx].to(torch.float64)
            # rows steered with alpha 0 may carry any direction: give them a valid (non-zero) one
            zero = vec.norm(dim=-1) == 0
            vec[zero, 0] = 1.0
        store: dict[int, list[tuple[int, torch.Tensor]]] = {L: [] for L in capture_layers}

        def sink(site: Any, x: torch.Tensor) -> None:
            window = model.response_window(x.shape[1])  # None outside generation
            if window is not None and window[0] < x.shape[1]:
                k, first = window
                store[site.layer].append((first, x[:, k:].detach().to(torch.float64).cpu()))

        with steer(model, vec, a, layers=[layer], relative=True), \
                Capture(model, [Site(L) for L in capture_layers], sink=sink) if capture_layers else contextlib.nullcontext():
            toks = model.generate_tokens(chunk_p, system=system, max_new_tokens=max_new_tokens, temperature=0.0)
        lens = [len(t) for t in toks]
        for j, i in enumerate(idx):
            texts[i] = model.decode_response(toks[j])
        for L in capture_layers:
            acc = torch.zeros(len(idx), d, dtype=torch.float64)
            cnt = torch.zeros(len(idx), dtype=torch.float64)
            for start, x in store[L]:
                pos = torch.arange(start, start + x.shape[1])
                m = (pos.unsqueeze(0) < torch.tensor(lens).unsqueeze(1)).to(torch.float64)  # [rows, w]
                acc += (x * m.unsqueeze(-1)).sum(1)
                cnt += m.sum(1)
            for j, i in enumerate(idx):
                means[L][i] = acc[j] / max(cnt[j].item(), 1.0)
                counts[i] = int(cnt[j].item())
        if progress is not None:
            progress(f"generated rows {idx[-1] + 1}/{n}")
    return texts, means, counts
