"""``make bench`` (third part): sampled-generation throughput on CPU, what limits it, and what the fixes cost.

The experiments spend most of their time sampling answers (the ghost/angel design alone samples ~12,400
answers of 40 tokens). Measured at their settings: the embedded SmolLM2-135M-Instruct, identity questions,
temperature 0.8, top-p 1, batch ``--batch``, KV cache, every row forced to ``--new`` tokens (so both arms of a
comparison do the same work whatever their samplers draw).

| id | measure | target |
|----|---------|--------|
| G1 | our inverse-CDF sampler (``models.sampling.draw``) ÷ ``torch.multinomial`` (the sampler before; also what transformers' own sampling calls), sampled tokens/s, fp32 | ≥ 1.2 |
| G2 | bfloat16 weights ÷ float32 weights, sampled tokens/s (both with our sampler); how far bf16 moves the next-token distribution (KL from fp32, top-1 agreement) unsteered and steered | report |
| G3 | the ghost/angel pre-registered design's pure generation time at the measured rates (its answers × 40 token slots ÷ tokens/s; fp32 at the slower of G1's and G2's two fp32 measurements of the same arm) | ≤ 60 min |

``torch.multinomial`` draws one exponential per vocabulary entry (49,152 here) per row per step; on this CPU that
is ~130 ms per step at batch 96, a fifth of the step. The inverse-CDF draw needs one uniform per row. bf16 runs
the matmuls on the CPU's bf16 units where it has them (AMX / AVX512-BF16); without them bf16 may be *slower*, so
the machine's flags are reported with the figures. Timings alternate the two arms; medians of ``--reps`` after
a warm-up. Writes ``benchmarks/generation_results.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUESTIONS = ["Who are you, really?", "Describe yourself in one sentence.", "What do you feel right now?",
             "Where do you come from?", "What is your name?", "What do you want most?"]


def _rate(model: Any, prompts: list[str], new: int, seed: int) -> tuple[float, int]:
    """(seconds, tokens) of one sampled batch; every row generates exactly ``new`` tokens (``min_new_tokens``),
    so two arms whose samplers draw different texts still do the same work."""
    t = time.perf_counter()
    model.generate_tokens(prompts, max_new_tokens=new, min_new_tokens=new, temperature=0.8, seed=seed)
    return time.perf_counter() - t, len(prompts) * new


def alternate(arms: dict[str, Any], reps: int) -> dict[str, dict[str, float]]:
    """Warm each arm once, then run them in turn ``reps`` times; medians of seconds and tokens/s per arm."""
    for fn in arms.values():
        fn(0)
    runs: dict[str, list[tuple[float, int]]] = {k: [] for k in arms}
    for r in range(reps):
        for k, fn in arms.items():
            runs[k].append(fn(r + 1))
    return {k: {"seconds": round(statistics.median(s for s, _ in v), 3),
                "tok_s": round(statistics.median(n / s for s, n in v), 1)} for k, v in runs.items()}


def bench_sampler(model: Any, prompts: list[str], new: int, reps: int) -> dict[str, Any]:
    """G1: the same sampled batch with ``torch.multinomial`` and with the inverse-CDF draw (fp32)."""
    from persona_vectors.models import sampling

    def multinomial(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # the draw before G1
        return torch.multinomial(probs, 1, generator=generator)

    def old(seed: int) -> tuple[float, int]:
        with mock.patch.object(sampling, "draw", multinomial):
            return _rate(model, prompts, new, seed)

    res = alternate({"multinomial": old, "inverse_cdf": lambda s: _rate(model, prompts, new, s)}, reps)
    return {**res, "ratio": round(res["inverse_cdf"]["tok_s"] / res["multinomial"]["tok_s"], 3)}


def next_token_drift(fp32: Any, bf16: Any, prompts: list[str], alpha_rel: float) -> dict[str, float]:
    """KL(fp32 ‖ bf16) of the next-token distribution after each prompt (mean, max) and top-1 agreement;
    ``alpha_rel`` ≠ 0 steers both models at layer 14 along the same random unit direction."""
    from persona_vectors import steer

    g = torch.Generator().manual_seed(3)
    v = torch.randn(fp32.d_model, generator=g)
    v = (v / v.norm()).unsqueeze(0).expand(len(prompts), -1)

    def logits(model: Any) -> torch.Tensor:
        if alpha_rel == 0:
            return model.forward_logits(prompts)[:, -1].float()
        with steer(model, v, torch.full((len(prompts),), alpha_rel, dtype=torch.float64), layers=[14], relative=True):
            return model.forward_logits(prompts)[:, -1].float()

    a, b = torch.log_softmax(logits(fp32), -1), torch.log_softmax(logits(bf16), -1)
    kl = (a.exp() * (a - b)).sum(-1)
    return {"kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1_agree": float((a.argmax(-1) == b.argmax(-1)).float().mean())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run G1–G3 on the embedded model; write generation_results.md/json next to this file (or ``--out``)."""
    import persona_vectors as pv

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--new", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = set()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    res: dict[str, Any] = {"batch": args.batch, "new_tokens": args.new, "reps": args.reps, "machine": {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
        "torch": torch.__version__, "bf16_units": sorted(flags & {"amx_bf16", "avx512_bf16"}),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg())}}
    prompts = (QUESTIONS * (args.batch // len(QUESTIONS) + 1))[: args.batch]
    fp32 = pv.load_model(progress=False)
    print("G1: sampler", flush=True)
    res["G1"] = bench_sampler(fp32, prompts, args.new, args.reps)
    print(json.dumps(res["G1"]), flush=True)
    print("G2: bfloat16", flush=True)
    bf16 = pv.load_model(dtype="bfloat16", progress=False)
    speed = alternate({"float32": lambda s: _rate(fp32, prompts, args.new, s),
                       "bfloat16": lambda s: _rate(bf16, prompts, args.new, s)}, args.reps)
    res["G2"] = {**speed, "ratio": round(speed["bfloat16"]["tok_s"] / speed["float32"]["tok_s"], 3),
                 "unsteered": next_token_drift(fp32, bf16, QUESTIONS, 0.0),
                 "steered_rel4": next_token_drift(fp32, bf16, QUESTIONS, 4.0)}
    print(json.dumps(res["G2"]), flush=True)
    path = ROOT / "docs/data/assistant_axis_prereg/records.jsonl.gz"
    texts = [r["text"] for r in map(json.loads, gzip.open(path, "rt")) if r.get("kind") == "generation"]
    n_tok = len(texts) * 40  # the plan's max_new_tokens: a batch runs until its longest answer stops
    res["G3"] = {"answers": len(texts), "tokens": n_tok, "minutes": {
        "multinomial fp32": round(n_tok / res["G1"]["multinomial"]["tok_s"] / 60, 1),
        "inverse_cdf fp32": round(n_tok / min(res["G1"]["inverse_cdf"]["tok_s"], res["G2"]["float32"]["tok_s"]) / 60, 1),
        "inverse_cdf bf16": round(n_tok / res["G2"]["bfloat16"]["tok_s"] / 60, 1)}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generation_results.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "generation_results.md").write_text(render(res))
    print(render(res))
    return res


def render(res: dict[str, Any]) -> str:
    """The results table (markdown)."""
    g1, g2, g3 = res["G1"], res["G2"], res["G3"]
    m = res["machine"]
    mins = g3["minutes"]
    rows = [
        "| id | measure | result | target | met |", "|---|---|---|---|---|",
        f"| G1 | inverse-CDF ÷ multinomial sampler, sampled tok/s (fp32, batch {res['batch']}, {res['new_tokens']} new) "
        f"| {g1['ratio']:.2f}× ({g1['inverse_cdf']['tok_s']:.0f} vs {g1['multinomial']['tok_s']:.0f} tok/s) | ≥ 1.2 "
        f"| {'✅' if g1['ratio'] >= 1.2 else '❌'} |",
        f"| G2 | bfloat16 ÷ float32 weights, sampled tok/s | {g2['ratio']:.2f}× ({g2['bfloat16']['tok_s']:.0f} vs "
        f"{g2['float32']['tok_s']:.0f} tok/s); next-token KL from fp32 mean {g2['unsteered']['kl_mean']:.4f} "
        f"(max {g2['unsteered']['kl_max']:.4f}) nats, top-1 agreement {g2['unsteered']['top1_agree']:.0%}; steered "
        f"(α_rel 4, layer 14) KL {g2['steered_rel4']['kl_mean']:.4f}, top-1 {g2['steered_rel4']['top1_agree']:.0%} "
        "| report | — |",
        f"| G3 | ghost/angel design ({g3['answers']:,} answers × 40 tokens = {g3['tokens']:,} slots): pure generation time "
        f"| multinomial fp32 {mins['multinomial fp32']} min; inverse-CDF fp32 {mins['inverse_cdf fp32']} min; "
        f"inverse-CDF bf16 {mins['inverse_cdf bf16']} min | ≤ 60 min "
        f"| {'✅' if mins['inverse_cdf fp32'] <= 60 else '❌'} fp32, generation alone (the whole run adds "
        "role means, calibration and scoring: see the experiment's report) |",
    ]
    units = ", ".join(m["bf16_units"]) or "none"
    return ("\n".join(rows) + f"\n\nMachine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch "
            f"{m['torch']}, bf16 units: {units}; load average at start {m['loadavg']}. Medians of {res['reps']} "
            "alternating repetitions after a warm-up.\n")


if __name__ == "__main__":
    main()
