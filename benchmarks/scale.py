"""``make bench`` (second part): throughput of the sweep engine against its limits (issue #18), as ratios.

| id | measure | target |
|----|---------|--------|
| P8 | heterogeneous steering: batch of 64 rows with K distinct (vector, α) pairs (K = 1, 8, 64), tokens/s ÷ the same batch unsteered | ≥ 0.95 at K = 64 |
| P9 | scale-out: a 2-actor Ray sweep with 1 torch thread per actor ÷ one process with 2 threads, cells/s | ≥ 0.9 |
| P9′ | the same Ray sweep ÷ twice one process with 1 thread (parallel efficiency; no target) | — |
| P10 | shared prefill: an α-sweep of K = 8 rows steering only response positions over a ~1,000-token conversation, prefilling it once (``shared_prefill=True``) ÷ prefilling each row, wall time; identical tokens | ≥ 2 |
| P11 | generation-free catalogue: role vectors from prompt-only activations (route ``prompt_only``) ÷ the answer-generation route, wall time; Spearman ρ of the roles' PC1 loadings between the two routes | ≥ 10, ρ ≥ 0.9 |

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

P10 builds a multi-turn chat of ~``--p10-tokens`` tokens (shipped fact-set questions with their neutral answers), asks
it K = 8 times with relative α from −4 to 4 at layer 14 on response positions only, ``--new`` tokens forced, and
times ``generate_tokens(..., shared_prefill=False)`` against ``shared_prefill=True`` (alternating, medians of
``--p10-reps`` after a warm-up on a short chat); the two calls' greedy tokens must be identical.

P11 builds the map's role vectors (3 extraction questions × 1 prompt per role, every layer, as ``persona-vectors map``
does) both ways. Wall time: both routes from nothing (a fresh cache directory) on ``--p11-roles`` roles spread over
the catalogue plus the shared default-assistant side (0 = the whole catalogue: the answer route then generates
~430 answers, tens of minutes on 2 CPU cores). Agreement: both routes over the whole catalogue (the answer route
reads its answers from the user's cache when ``persona-vectors map`` has already generated them there; missing
answers are generated), PCA of the 137 role vectors per layer (``PersonaSpace``), Spearman ρ between the routes'
PC1 coordinates (PC1's sign is arbitrary, so |ρ|), reported per layer, at the middle layer and as the median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
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


def long_chat(model: Any, n_tokens: int) -> list[dict[str, str]]:
    """A multi-turn chat of at least ``n_tokens`` tokens (fact-set questions, neutral answers), ending on a question."""
    from persona_vectors.datasets import load_fact_set

    facts = load_fact_set("hitler_baseline").facts
    msgs: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful assistant."}]
    i = 0
    while len(model.chat_ids(msgs + [{"role": "user", "content": "Who are you?"}])) < n_tokens:
        f = facts[i % len(facts)]
        msgs += [{"role": "user", "content": f.question}, {"role": "assistant", "content": f.neutral_answer}]
        i += 1
    return msgs + [{"role": "user", "content": "Who are you?"}]


def bench_shared_prefill(model: Any, reps: int, new: int, n_tokens: int = 1000, k: int = 8, layer: int = 14
                         ) -> dict[str, Any]:
    """P10: K rows of one long chat, response-only per-row steering: shared prefill ÷ per-row prefill (wall time)."""
    from persona_vectors.steer import steer

    chat = long_chat(model, n_tokens)
    g = torch.Generator().manual_seed(10)
    v = torch.randn(model.d_model, generator=g)
    alphas = torch.linspace(-4.0, 4.0, k).tolist()
    out_tokens: dict[bool, list[list[int]]] = {}

    def run(share: bool, prompt: Any = chat) -> None:
        with steer(model, v, alphas, layers=[layer], relative=True, positions="response"):
            toks = model.generate_tokens([prompt] * k, max_new_tokens=new, min_new_tokens=new, shared_prefill=share)
        if prompt is chat:
            out_tokens[share] = [t.tolist() for t in toks]

    run(False, "Who are you?")  # warm-up on a short chat
    run(True, "Who are you?")
    t_row, t_shared = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        run(False)
        t_row.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run(True)
        t_shared.append(time.perf_counter() - t0)
    med_row, med_shared = sorted(t_row)[len(t_row) // 2], sorted(t_shared)[len(t_shared) // 2]
    res = {"rows": k, "prompt_tokens": len(model.chat_ids(chat)), "new_tokens": new, "layer": layer, "reps": reps,
           "threads": torch.get_num_threads(),
           "per_row_s": med_row, "shared_s": med_shared, "ratio": med_row / med_shared,
           "same_tokens": out_tokens[False] == out_tokens[True],
           "distinct_rows": len({tuple(t) for t in out_tokens[True]})}
    print(f"P10: {res['ratio']:.2f} ({med_row:.1f} s vs {med_shared:.1f} s; same tokens {res['same_tokens']})",
          file=sys.stderr, flush=True)
    return res


def _pc1_spearman(a: dict[str, Any], b: dict[str, Any]) -> dict[int, float]:
    """|Spearman ρ| between the PC1 coordinates of the same roles in two sets of role vectors, per common layer."""
    from scipy.stats import spearmanr

    from persona_vectors.space import PersonaSpace

    names = sorted(set(a) & set(b))
    out: dict[int, float] = {}
    for site in next(iter(a.values())).sites:
        pa = PersonaSpace(1).fit({n: a[n] for n in names}, site=site)
        pb = PersonaSpace(1).fit({n: b[n] for n in names}, site=site)
        rho = spearmanr(pa.coords_[:, 0], pb.coords_[:, 0]).statistic
        out[site.layer] = abs(float(rho))
    return out


def bench_generation_free(model: Any, n_roles: int, variants: tuple[str, ...] = ("opener:3",), reps: int = 3
                          ) -> dict[str, Any]:
    """P11: the map's role vectors without generation ÷ with generated answers (wall time), and PC1 agreement.

    ``variants``: prompt-only reads as ``POSITIONS:QUESTIONS`` (``opener:3``, the route's default read, and
    ``last_prompt:3`` read the same 3 questions as the answer route; ``last_prompt:1`` reads only the first, a third
    of the forwards). ``benchmarks/p11_fidelity.py`` compares the reads layer by layer with the answer route's
    agreement with itself.
    """
    from persona_vectors.datasets import get_role, load_roles
    from persona_vectors.personas import default_system_prompts, extraction_questions, prompt_only_role_means, role_means
    from persona_vectors.personas.prompt_only import prompt_conversations, prompt_only_recordings
    from persona_vectors.personas.store import clear_memory_caches
    from persona_vectors.sites import as_sites

    sites = as_sites("all", model.n_layers)

    kw = dict(n_prompts=1, layers="all", progress=False)
    every = [r.name for r in load_roles()]
    subset = every if n_roles <= 0 else [every[round(i * len(every) / n_roles)] for i in range(n_roles)]
    reads = [(v, v.partition(":")[0], int(v.partition(":")[2] or 3)) for v in variants]
    t_answers: list[float] = []
    t_fast: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(reps):  # interleaved: each repetition times the answer route, then every read, on the subset
        tmp = Path(tempfile.mkdtemp(prefix="pv-p11-"))
        clear_memory_caches()
        t0 = time.perf_counter()
        role_means(model, subset, n_questions=3, cache=tmp, **kw)
        t_answers.append(time.perf_counter() - t0)
        shutil.rmtree(tmp, ignore_errors=True)
        for variant, read, n_q in reads:
            t0 = time.perf_counter()
            prompt_only_role_means(model, subset, n_questions=n_q, positions=read, **kw)
            t_fast[variant].append(time.perf_counter() - t0)
        print(f"P11 repetition {rep + 1}/{reps}: answer route on {len(subset)} roles from an empty cache "
              f"{t_answers[-1]:.0f} s; " + ", ".join(f"{v} {t_fast[v][-1]:.1f} s" for v in variants),
              file=sys.stderr, flush=True)
    answers_s = float(np.median(t_answers))
    clear_memory_caches()
    t0 = time.perf_counter()
    full_answers = role_means(model, None, n_questions=3, **kw).vectors  # the user's cache: answers `map` generated
    t_full_answers = time.perf_counter() - t0
    res: dict[str, Any] = {"roles_timed": len(subset), "answers_s": answers_s, "answers_s_all": t_answers,
                           "reps": reps, "catalogue_roles": len(every), "threads": torch.get_num_threads(),
                           "catalogue_answers_from_cache_s": t_full_answers, "variants": {}}
    t0 = time.perf_counter()
    prompt_only_recordings(model, [prompt_conversations(model, [*default_system_prompts(), *(get_role(n).prompts[0] for n in subset)],
                                                        extraction_questions(3))], sites, positions="last_prompt",
                           share_prefixes=False)
    res["last_prompt_whole_forwards_s"] = time.perf_counter() - t0  # the same read without shared prefixes
    for variant, read, n_q in reads:
        fast_s = float(np.median(t_fast[variant]))
        t0 = time.perf_counter()
        fast = prompt_only_role_means(model, None, n_questions=n_q, positions=read, **kw).vectors
        t_read = time.perf_counter() - t0
        rho = _pc1_spearman(full_answers, fast)
        layers = sorted(rho)
        mid = layers[len(layers) // 2]
        res["variants"][variant] = {
            "positions": read, "questions": n_q, "prompt_only_s": fast_s, "prompt_only_s_all": t_fast[variant],
            "ratio": answers_s / fast_s, "ratios_per_rep": [a / f for a, f in zip(t_answers, t_fast[variant])],
            "catalogue_s": t_read, "rho_per_layer": rho, "rho_median": float(np.median(list(rho.values()))),
            "rho_mid": rho[mid], "mid_layer": mid, "rho_min": min(rho.values()),
            "rho_median_21_29": float(np.median([rho[k] for k in layers if 21 <= k <= 29]))}
        v = res["variants"][variant]
        print(f"P11 {variant}: {v['ratio']:.1f}x (median {fast_s:.1f} s on the subset, {t_read:.0f} s for the "
              f"catalogue), PC1 rho median {v['rho_median']:.3f}, layers 21-29 {v['rho_median_21_29']:.3f}",
              file=sys.stderr, flush=True)
    first = res["variants"][variants[0]]
    res["ratio"], res["rho_median"] = first["ratio"], first["rho_median"]
    return res


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
    p10 = r.get("P10")
    if p10:
        lines.append(f"| P10 | shared prefill: α-sweep of {p10['rows']} rows over a {p10['prompt_tokens']}-token chat, "
                     f"{p10['new_tokens']} new tokens, response-only steering at layer {p10['layer']}: per-row prefill "
                     f"÷ one shared prefill, wall time | {p10['ratio']:.2f} ({p10['per_row_s']:.1f} s vs "
                     f"{p10['shared_s']:.1f} s, upper medians of {p10['reps']}; identical tokens: {p10['same_tokens']}, "
                     f"{p10['distinct_rows']} distinct rows) | ≥ 2, identical tokens | "
                     f"{mark(p10['ratio'] >= 2 and p10['same_tokens'])} |")
    p11 = r.get("P11")
    if p11:
        for name, v in p11["variants"].items():
            ok = v["ratio"] >= 10 and v["rho_median"] >= 0.9
            lines.append(
                f"| P11 ({v['positions']}, {v['questions']} q) | generation-free catalogue: the map's role vectors "
                f"(1 prompt per role, every layer) from the answer route (3 questions) ÷ the `prompt_only` route "
                f"({v['questions']} question(s), read at {v['positions']}), wall time from an empty cache on "
                f"{p11['roles_timed']} of {p11['catalogue_roles']} roles + the default side; unsigned Spearman ρ of "
                f"the {p11['catalogue_roles']} roles' PC1 coordinates between the routes, per layer | "
                f"{v['ratio']:.1f}× ({p11['answers_s']:.0f} s vs {v['prompt_only_s']:.1f} s"
                + (f", medians of {p11['reps']} interleaved repetitions, per repetition "
                   + " / ".join(f"{x:.1f}×" for x in v["ratios_per_rep"]) if p11.get("reps", 1) > 1 else "")
                + f"; whole catalogue prompt-only {v['catalogue_s']:.0f} s); ρ median {v['rho_median']:.3f} over "
                f"{len(v['rho_per_layer'])} layers"
                + (f", {v['rho_median_21_29']:.3f} over layers 21–29" if "rho_median_21_29" in v else "")
                + f", {v['rho_mid']:.3f} at layer {v['mid_layer']}, min {v['rho_min']:.3f} | ≥ 10×, ρ ≥ 0.9 | "
                f"{mark(ok)} |")
        if "last_prompt_whole_forwards_s" in p11:
            lines.append(f"| P11′ | the `last_prompt` read (3 q) on the same roles with every conversation run whole "
                         f"(no shared system-prompt prefixes) | {p11['last_prompt_whole_forwards_s']:.1f} s | — | — |")
    m = r.get("machine", {})
    loads = r.get("load_at_start") or {}
    load = ("1/5/15-min load average when each benchmark started: " + "; ".join(f"{k} {v}" for k, v in sorted(loads.items()))
            + (" (the others ran in earlier invocations, beside other jobs)" if len(loads) < 4 else "")
            if loads else f"load average {m.get('loadavg')} at the start")
    lines += ["", f"Machine: {m.get('cpu')}, {m.get('cores')} cores ({load}), Python {m.get('python')}, "
              f"torch {m.get('torch')}, ray {m.get('ray')}; "
              f"P8 medians of {r.get('reps')} interleaved repetitions after warm-up; P8, P10 and P11 with "
              f"{m.get('threads')} torch threads."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P8–P11 on the embedded model; write scale_results.md/json next to this file (or ``--out``)."""
    from importlib.metadata import version

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new", type=int, default=16, help="new tokens per row")
    ap.add_argument("--only", nargs="*", default=None, help="subset: P8 P9 P10 P11")
    ap.add_argument("--p10-tokens", type=int, default=1000, help="P10: length of the shared chat in tokens")
    ap.add_argument("--p10-reps", type=int, default=3, help="P10: alternating repetitions (medians)")
    ap.add_argument("--p11-roles", type=int, default=24, help="P11: roles timed both ways (0: the whole catalogue)")
    ap.add_argument("--p11-variants", nargs="+", default=["opener:3", "last_prompt:3", "prompt:3", "last_prompt:1"],
                    help="P11: prompt-only reads as POSITIONS:QUESTIONS (positions opener, last_prompt or prompt; "
                         "the first is the headline)")
    ap.add_argument("--p11-reps", type=int, default=3,
                    help="P11: interleaved repetitions of the timed answer route and reads (medians)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for P8 (P9 fixes its own: 2 local, 1 per actor)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import persona_vectors as pv

    only = set(args.only or ["P8", "P9", "P10", "P11"])
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
    loads = results.setdefault("load_at_start", {})

    def started(key: str) -> None:
        loads[key] = " ".join(f"{x:.1f}" for x in os.getloadavg())

    if "P8" in only:
        started("P8")
        results["P8"] = bench_heterogeneous(model, args.reps, args.new)
    if "P9" in only:
        started("P9")
        if ray_version is None:
            results["P9"] = None
            print("P9 skipped: ray is not installed (pip install 'persona-vectors[ray]')", file=sys.stderr)
        else:
            results["P9"] = bench_scale_out(model, args.new)
    if "P10" in only:
        started("P10")
        results["P10"] = bench_shared_prefill(model, args.p10_reps, args.new, args.p10_tokens)
    if "P11" in only:
        started("P11")
        results["P11"] = bench_generation_free(model, args.p11_roles, tuple(args.p11_variants), args.p11_reps)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    (args.out / "scale_results.md").write_text(render(results))
    print(render(results))
    return results


if __name__ == "__main__":
    main()
