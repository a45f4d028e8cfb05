"""``make bench`` (second part): throughput of the sweep engine against its limits (issue #18), as ratios.

| id | measure | target |
|----|---------|--------|
| P8 | heterogeneous steering: batch of 64 rows with K distinct (vector, α) pairs (K = 1, 8, 64), tokens/s ÷ the same batch unsteered | ≥ 0.95 at K = 64 |
| P9 | scale-out: a 2-actor Ray sweep with 1 torch thread per actor ÷ one process with 2 threads, cells/s | ≥ 0.9 |
| P9′ | the same Ray sweep ÷ twice one process with 1 thread (parallel efficiency; no target) | — |

(Issue #18 numbers these P8–P11; ``benchmarks/run.py`` already uses P8 for the serve load test, so the files stay
apart: ``benchmarks/scale_results.md`` / ``.json``.)

P8 runs the embedded SmolLM2-135M-Instruct, 64 rows × ``--new`` tokens forced (``min_new_tokens``), KV cache, per-row
vectors at layer 14 with relative α (one steering hook whatever K is: K only changes how many distinct rows the
``[64, d]`` delta holds). Unsteered and steered calls alternate; medians of ``--reps`` after a warm-up.

P9 runs the same sweep (1 vector, 2 layers, 4 α, 8 prompts, batch 4: 16 cells) locally with 2 torch threads and
on a local Ray cluster (``ray.init(num_cpus=2)``) with 2 actors of 1 thread each. A read-out stamps each batch's
completion time where it runs, so the ratio is the *steady-state* cells/s (cells after the first ÷ time from the
first finished cell to the last): actor start-up (imports + model load, reported separately) is paid once per
sweep and does not scale with the grid. End-to-end wall times are reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .run import interleaved

HERE = Path(__file__).resolve().parent
QUESTIONS = ["Who are you?", "Where do you live?", "What do you want?", "How do you feel?",
             "What is your name?", "What do you do all day?", "What scares you?", "What do you love?"]




def bench_heterogeneous(model: Any, reps: int, new: int, ks: tuple[int, ...] = (1, 8, 64)) -> dict[str, Any]:
    """P8: 64 rows steered with K distinct (vector, α) pairs vs the same 64 rows unsteered (tokens/s ratio)."""
    from persona_vectors.steer import steer

    rows = 64
    prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(rows)]
    g = torch.Generator().manual_seed(8)
    pool = torch.randn(max(ks), model.d_model, generator=g)
    alphas_pool = torch.linspace(-1.0, 1.0, max(ks)).tolist()

    def plain() -> None:
        model.generate_tokens(prompts, max_new_tokens=new, min_new_tokens=new)

    out: dict[str, Any] = {"rows": rows, "new_tokens": new, "layer": 14, "per_k": {}}
    for k in ks:
        idx = [i % k for i in range(rows)]
        vecs, alphas = pool[idx], [alphas_pool[j] for j in idx]

        def steered(vecs: torch.Tensor = vecs, alphas: list[float] = alphas) -> None:
            with steer(model, vecs, alphas, layers=[14], relative=True):
                model.generate_tokens(prompts, max_new_tokens=new, min_new_tokens=new)

        t_plain, t_steer = interleaved(plain, steered, reps)
        tokens = rows * new
        out["per_k"][k] = {"unsteered_tok_per_s": tokens / t_plain, "steered_tok_per_s": tokens / t_steer,
                           "ratio": t_plain / t_steer}
        print(f"P8 K={k}: {t_plain / t_steer:.3f}", file=sys.stderr, flush=True)
    out["ratio_at_max_k"] = out["per_k"][max(ks)]["ratio"]
    return out


class _Stamp:
    """A sweep read-out recording when each batch finished, in the process that ran it (picklable for Ray)."""

    def __call__(self, texts: list[str], rows: list[dict]) -> list[dict]:
        t = time.time()
        return [{"t_done": t, "pid": os.getpid()} for _ in texts]


def _steady_cells_per_s(path: Path) -> tuple[float, int]:
    stamps = sorted({(r["t_done"], r["pid"]) for r in map(json.loads, path.read_text().splitlines())})
    cells = len(stamps)
    return (cells - 1) / (stamps[-1][0] - stamps[0][0]), len({p for _, p in stamps})


def bench_scale_out(model: Any, new: int) -> dict[str, Any]:
    """P9: one process with 2 threads vs a 2-actor Ray sweep with 1 thread each (steady-state cells/s)."""
    import ray

    from persona_vectors import PersonaVector, Provenance, Site
    from persona_vectors.sweep import SweepConfig, run_sweep

    g = torch.Generator().manual_seed(9)
    d = torch.randn(2, model.d_model, generator=g)
    vec = PersonaVector([Site(10), Site(14)], d / d.norm(dim=-1, keepdim=True),
                        Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name="rand"))
    cfg = SweepConfig(vectors={"rand": vec}, alphas=[-4.0, -2.0, 2.0, 4.0], layers=[10, 14], prompts=list(QUESTIONS),
                      max_new_tokens=new, batch_size=4, relative=True, name="p9")
    tmp = Path(tempfile.mkdtemp(prefix="pv-p9-"))
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    local = run_sweep(model, cfg, tmp / "local.jsonl", readouts=[_Stamp()], progress=False)
    local_wall = time.perf_counter() - t0
    torch.set_num_threads(prev)
    local_rate, _ = _steady_cells_per_s(tmp / "local.jsonl")
    torch.set_num_threads(1)  # the same process with one thread: what each actor has
    run_sweep(model, cfg, tmp / "local1.jsonl", readouts=[_Stamp()], progress=False)
    torch.set_num_threads(prev)
    local1_rate, _ = _steady_cells_per_s(tmp / "local1.jsonl")
    src = str(HERE.parent / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), src, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        t0, wall0 = time.perf_counter(), time.time()
        rep = run_sweep(model, cfg, tmp / "ray.jsonl", readouts=[_Stamp()], backend="ray", num_actors=2,
                        actor_threads=1, progress=False)
        ray_wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    ray_rate, n_pids = _steady_cells_per_s(tmp / "ray.jsonl")
    first = min(json.loads(x)["t_done"] for x in (tmp / "ray.jsonl").read_text().splitlines())
    same = ({json.loads(x)["row_id"]: json.loads(x)["text"] for x in (tmp / "local.jsonl").read_text().splitlines()}
            == {json.loads(x)["row_id"]: json.loads(x)["text"] for x in (tmp / "ray.jsonl").read_text().splitlines()})
    return {"cells": rep.batches_run, "rows": rep.rows_total, "new_tokens": new,
            "local_cells_per_s": local_rate, "ray_cells_per_s": ray_rate, "ratio": ray_rate / local_rate,
            "local_1_thread_cells_per_s": local1_rate, "efficiency": ray_rate / (2 * local1_rate),
            "local_wall_s": local_wall, "ray_wall_s": ray_wall, "ray_actors_seen": n_pids,
            "ray_first_cell_s": first - wall0,
            "same_texts": same}


def render(r: dict[str, Any]) -> str:
    """Markdown table of the figures with their targets."""
    def mark(ok: bool) -> str:
        return "✅" if ok else "❌"

    lines = ["| id | measure | result | target | met |", "|---|---|---|---|---|"]
    p8 = r.get("P8")
    if p8:
        per = ", ".join(f"K={k}: {v['ratio']:.3f}" for k, v in p8["per_k"].items())
        top = p8["per_k"][max(p8["per_k"], key=int)]
        lines.append(f"| P8 | heterogeneous steering, {p8['rows']} rows × {p8['new_tokens']} new tokens, K distinct "
                     f"(vector, α) pairs: steered ÷ unsteered tok/s | {per} ({top['steered_tok_per_s']:.0f} vs "
                     f"{top['unsteered_tok_per_s']:.0f} tok/s at the largest K) | ≥ 0.95 at K = 64 | "
                     f"{mark(p8['ratio_at_max_k'] >= 0.95)} |")
    p9 = r.get("P9")
    if p9:
        lines.append(f"| P9 | scale-out: 2 Ray actors × 1 thread ÷ 1 process × 2 threads, steady-state cells/s "
                     f"({p9['cells']} cells of 4 rows × {p9['new_tokens']} tokens) | {p9['ratio']:.2f} "
                     f"({p9['ray_cells_per_s']:.3f} vs {p9['local_cells_per_s']:.3f} cells/s; end to end "
                     f"{p9['ray_wall_s']:.0f} s vs {p9['local_wall_s']:.0f} s, the first Ray cell after "
                     f"{p9['ray_first_cell_s']:.0f} s of actor start-up; same texts: "
                     f"{p9['same_texts']}) | ≥ 0.9 | {mark(p9['ratio'] >= 0.9)} |")
        lines.append(f"| P9′ | scale-out efficiency: 2 Ray actors × 1 thread ÷ 2 × (1 process × 1 thread), steady-state "
                     f"cells/s | {p9['efficiency']:.2f} ({p9['ray_cells_per_s']:.3f} vs 2 × "
                     f"{p9['local_1_thread_cells_per_s']:.3f} cells/s) | — (1.0 is perfect scaling) | — |")
    m = r.get("machine", {})
    lines += ["", f"Machine: {m.get('cpu')}, {m.get('cores')} cores (load average {m.get('loadavg')} at the start: "
              f"shared with other jobs), Python {m.get('python')}, torch {m.get('torch')}, ray {m.get('ray')}; "
              f"P8 medians of {r.get('reps')} interleaved repetitions after warm-up with {m.get('threads')} torch "
              "threads."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P8 and P9 on the embedded model; write scale_results.md/json next to this file (or ``--out``)."""
    from importlib.metadata import version

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new", type=int, default=16, help="new tokens per row")
    ap.add_argument("--only", nargs="*", default=None, help="subset: P8 P9")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for P8 (P9 fixes its own: 2 local, 1 per actor)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import persona_vectors as pv

    only = set(args.only or ["P8", "P9"])
    results: dict[str, Any] = {"reps": args.reps}
    path = args.out / "scale_results.json"
    if args.only and path.is_file():
        results = {**json.loads(path.read_text()), "reps": args.reps}
    try:
        ray_version = version("ray")
    except Exception:  # noqa: BLE001 - P9 is skipped without ray
        ray_version = None
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "python": platform.python_version(),
                          "torch": torch.__version__, "ray": ray_version,
                          "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    model = pv.load_model(progress=True)
    if "P8" in only:
        results["P8"] = bench_heterogeneous(model, args.reps, args.new)
    if "P9" in only:
        if ray_version is None:
            results["P9"] = None
            print("P9 skipped: ray is not installed (pip install 'persona-vectors[ray]')", file=sys.stderr)
        else:
            results["P9"] = bench_scale_out(model, args.new)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    (args.out / "scale_results.md").write_text(render(results))
    print(render(results))
    return results


if __name__ == "__main__":
    main()
