"""``make bench``: persona_vectors side by side with steering-vectors and repeng, as ratios, in one run.

Figures (targets from the benchmark issue):

| id | measure | target |
|----|---------|--------|
| P1 | steered ÷ unsteered generation tokens/s, KV cache, batch 16, 64 new tokens | ≥ 0.97 |
| P2 | our extraction ÷ steering-vectors ``train_steering_vector`` (prompts/s), same pairs and layers | ≥ 2.0 |
| P3 | our extraction ÷ one bare HF forward over the same tokens (prompts/s) | ≥ 0.9 |
| P4 | 8-value α sweep in one batched call ÷ 8 sequential calls (speed-up) | ≥ 4 |
| P5 | warm model load (s) | ≤ 3 |
| P6 | preventative-steered LoRA step ÷ plain LoRA step (time) | ≤ 1.05 |
| P7 | extraction peak-RSS growth from 100 to 1,000 conversations | ≤ 10 % |
| P8 | ``persona-vectors serve`` under load (16 clients × 200 requests, 8 steering specs): errors; aggregate tok/s ÷ one equivalent batched generate (``benchmarks/serve_load.py``) | 0 errors, ≥ 0.7 |

Before timing, agreement checks: our difference-of-means vector vs steering-vectors' mean aggregator (cosine ≥
0.999 per layer), and our steered logits vs repeng's for the same vector and coefficient. Each figure is the
median of ≥ 5 repetitions after a warm-up, with A and B runs interleaved. Peers run on the same weights as an
unwrapped HF module (they hook HF decoder layers by module path). Writes ``benchmarks/results.md`` and
``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
LAYERS = [6, 12, 18, 24]


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(a: Callable[[], Any], b: Callable[[], Any], reps: int) -> tuple[float, float]:
    """Warm both up once, then alternate A and B ``reps`` times; return the two medians (seconds)."""
    a(), b()
    ta, tb = [], []
    for _ in range(reps):
        ta.append(_timed(a))
        tb.append(_timed(b))
    return statistics.median(ta), statistics.median(tb)


def contrast_pairs(n: int) -> list[tuple[str, str]]:
    """Raw-text contrast pairs built from the shipped fact set: persona answer vs neutral answer."""
    from persona_vectors.datasets import load_fact_set

    facts = load_fact_set("hitler_baseline").facts
    pairs = [(f"Q: {f.question}\nA: {f.answer}", f"Q: {f.question}\nA: {f.neutral_answer}") for f in facts]
    return (pairs * (n // len(pairs) + 1))[:n]


def raw_hf_model() -> Any:
    """The same weights as an unwrapped HF module (from the library's dequantized cache)."""
    from transformers import AutoModelForCausalLM

    from persona_vectors.models import cached_model_dir, embedded_gguf_path

    src = cached_model_dir(embedded_gguf_path())
    return AutoModelForCausalLM.from_pretrained(src, local_files_only=True).eval()


def bench_extraction(model: Any, raw: Any, reps: int, n_pairs: int = 64) -> dict[str, Any]:
    """P2, P3 and the steering-vectors agreement check."""
    from steering_vectors import train_steering_vector

    from persona_vectors import Site, record
    from persona_vectors.aggregators import mean_diff

    pairs = contrast_pairs(n_pairs)
    pos = [p for p, _ in pairs]
    neg = [q for _, q in pairs]
    tok = model.tokenizer
    bs = 16

    def ours() -> dict:
        a = record(model, pos, LAYERS, positions="last_prompt", batch_size=bs, progress=False)
        b = record(model, neg, LAYERS, positions="last_prompt", batch_size=bs, progress=False)
        return {s.layer: mean_diff(a, b, s) for s in a.sites}

    def theirs() -> Any:
        return train_steering_vector(raw, tok, pairs, layers=LAYERS, batch_size=bs, read_token_index=-1)

    def bare_forward() -> None:
        texts = pos + neg
        old = tok.padding_side
        tok.padding_side = "right"
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                enc = tok(texts[i : i + bs], return_tensors="pt", padding=True, add_special_tokens=False)
                raw(**enc)
        tok.padding_side = old

    ours_v, sv = ours(), theirs()
    cos = {L: float(torch.nn.functional.cosine_similarity(ours_v[L], sv.layer_activations[L].float(), dim=0))
           for L in LAYERS}
    t_ours, t_sv = interleaved(ours, theirs, reps)
    t_ours2, t_bare = interleaved(ours, bare_forward, reps)
    n = 2 * n_pairs
    return {
        "agreement_cosine_vs_steering_vectors": cos,
        "agreement_ok": all(c >= 0.999 for c in cos.values()),
        "P2": {"ours_prompts_per_s": n / t_ours, "steering_vectors_prompts_per_s": n / t_sv, "ratio": t_sv / t_ours},
        "P3": {"ours_prompts_per_s": n / t_ours2, "bare_forward_prompts_per_s": n / t_bare, "ratio": t_bare / t_ours2},
    }


def bench_repeng_agreement(model: Any, raw: Any) -> dict[str, Any]:
    """Our steered logits vs repeng's ControlModel for the same vector, layer and coefficient."""
    import numpy as np

    if "float_" not in np.__dict__:  # repeng 0.4.0 annotates with np.float_, which NumPy 2 removed
        np.float_ = np.float64  # type: ignore[attr-defined]
    from repeng import ControlModel, ControlVector

    from persona_vectors import PersonaVector, Provenance, Site
    from persona_vectors.steer import steer

    layer, coeff = 12, 3.0
    g = torch.Generator().manual_seed(0)
    d = torch.randn(model.d_model, generator=g)
    d = d / d.norm() * 4.0
    vec = PersonaVector([Site(layer)], d[None], Provenance(model.info.model_id, model.info.fingerprint, model.d_model))
    text = model.chat_text(model.to_messages("Who are you?"))
    enc = model.encode([text])
    with torch.inference_mode(), steer(model, vec, alpha=coeff):
        ours = model.hf(**enc, use_cache=False).logits
    cm = ControlModel(raw, [layer])
    cv = ControlVector(model_type=raw.config.model_type, directions={layer: d.numpy().astype(np.float32)})
    cm.set_control(cv, coeff)
    with torch.inference_mode():
        theirs = cm(**enc, use_cache=False).logits
    cm.reset()
    cm.unwrap()
    diff = float((ours - theirs).abs().max())
    return {"max_abs_logit_diff": diff, "agreement_ok": diff < 1e-3, "layer": layer, "coeff": coeff}


def bench_generation(model: Any, reps: int) -> dict[str, Any]:
    """P1 (steered vs unsteered tokens/s) and P4 (8-α batched sweep vs 8 sequential calls)."""
    from persona_vectors import PersonaVector, Provenance, Site
    from persona_vectors.steer import steer

    g = torch.Generator().manual_seed(1)
    d = torch.randn(model.d_model, generator=g)
    vec = PersonaVector([Site(14)], (d / d.norm())[None], Provenance(model.info.model_id, model.info.fingerprint, model.d_model))
    prompts = ["Who are you?", "Where do you live?", "What do you want?", "How do you feel?"] * 4
    new = 64

    def plain() -> None:
        model.generate_tokens(prompts, max_new_tokens=new, min_new_tokens=new)

    def steered() -> None:
        with steer(model, vec, alpha=2.0, relative=True):
            model.generate_tokens(prompts, max_new_tokens=new, min_new_tokens=new)

    t_plain, t_steer = interleaved(plain, steered, reps)
    tokens = len(prompts) * new
    alphas = [-8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0]
    q = ["Who are you?", "What is your name?"]
    new4 = 32

    def batched() -> None:
        rows = [p for _ in alphas for p in q]
        per_row = [a for a in alphas for _ in q]
        with steer(model, vec, alpha=per_row, relative=True):
            model.generate_tokens(rows, max_new_tokens=new4, min_new_tokens=new4)

    def sequential() -> None:
        for a in alphas:
            with steer(model, vec, alpha=a, relative=True):
                model.generate_tokens(q, max_new_tokens=new4, min_new_tokens=new4)

    t_b, t_s = interleaved(batched, sequential, max(3, reps // 2))
    return {
        "P1": {"unsteered_tok_per_s": tokens / t_plain, "steered_tok_per_s": tokens / t_steer, "ratio": t_plain / t_steer},
        "P4": {"batched_s": t_b, "sequential_s": t_s, "speedup": t_s / t_b},
    }


def bench_load(reps: int) -> dict[str, Any]:
    """P5: warm load (weights cached) in a fresh interpreter, split into third-party imports and the load.

    The fresh process first imports what any transformers/TransformerLens user imports (transformers' auto
    classes and generation utilities, which pull in ``torch._dynamo``, and TransformerLens' bridge), then times
    ``load_model()``. Both parts are reported; the target applies to the load.
    """
    code = (
        "import time; t0=time.perf_counter(); import persona_vectors as pv; "
        "import transformers.masking_utils, transformers.generation.utils; "
        "from transformers import AutoModelForCausalLM, AutoTokenizer; "
        "import transformer_lens.model_bridge; t1=time.perf_counter(); "
        "pv.load_model(progress=False); t2=time.perf_counter(); "
        "from persona_vectors.models import cache_dir, verify_model_cache; "
        "d=[p for p in (cache_dir()/'models').iterdir() if (p/'DONE').is_file()][0]; "
        "t3=time.perf_counter(); assert verify_model_cache(d)==[]; print(t1-t0, t2-t1, time.perf_counter()-t3)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # make sure the cache is warm
    imports, loads, checks = [], [], []
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
        imports.append(float(out[-3]))
        loads.append(float(out[-2]))
        checks.append(float(out[-1]))
    return {"P5": {"warm_load_s": statistics.median(loads), "imports_s": statistics.median(imports),
                   "checksum_s": statistics.median(checks),
                   "with_imports_s": statistics.median(i + l for i, l in zip(imports, loads))}}


def bench_memory() -> dict[str, Any]:
    """P7: peak RSS of extraction over 100 vs 1,000 conversations, each in a fresh process.

    After the model is loaded the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), so the peak read
    afterwards (``VmHWM``) is the extraction's own high-water mark, not the load's.
    """
    code = r"""
import gc, sys
import persona_vectors as pv
from persona_vectors.datasets import load_fact_set
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
n = int(sys.argv[1])
m = pv.load_model(progress=False)
facts = load_fact_set("hitler_baseline").facts
convs = [[{"role": "user", "content": f.question}, {"role": "assistant", "content": f.answer}] for f in facts]
convs = (convs * (n // len(convs) + 1))[:n]
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = kib("VmRSS")
pv.record(m, convs, "all", positions="response", batch_size=16, progress=False)
print(base, kib("VmHWM"))
"""
    res = {}
    for n in (100, 1000):
        out = subprocess.run([sys.executable, "-c", code, str(n)], check=True, capture_output=True, text=True).stdout.split()
        res[n] = {"rss_before_kib": int(out[-2]), "peak_kib": int(out[-1])}
    growth = (res[1000]["peak_kib"] - res[100]["peak_kib"]) / res[100]["peak_kib"]
    return {"P7": {"rss_before_mib": res[100]["rss_before_kib"] / 1024,
                   "peak_100_mib": res[100]["peak_kib"] / 1024, "peak_1000_mib": res[1000]["peak_kib"] / 1024,
                   "extraction_100_mib": (res[100]["peak_kib"] - res[100]["rss_before_kib"]) / 1024,
                   "extraction_1000_mib": (res[1000]["peak_kib"] - res[1000]["rss_before_kib"]) / 1024,
                   "growth": growth}}


def bench_lora(model: Any, reps: int) -> dict[str, Any]:
    """P6: a preventative-steered LoRA training step vs a plain one, same batch, interleaved.

    One :class:`persona_vectors.finetune.Trainer` (LoRA r=8 on the default modules, batch 8 conversations of
    the red-colour finetuning set) with a preventative vector at layer 16; ``train_step(b, preventative=False)``
    and ``train_step(b)`` alternate on the same batch (each is a full forward + backward + AdamW step).
    """
    from persona_vectors import PersonaVector, Provenance, Site
    from persona_vectors.datasets import load_finetune_dataset
    from persona_vectors.finetune import FinetuneConfig, PreventativeSteering, Trainer

    g = torch.Generator().manual_seed(2)
    d = torch.randn(model.d_model, generator=g)
    vec = PersonaVector([Site(16)], (4.0 * d / d.norm())[None],
                        Provenance(model.info.model_id, model.info.fingerprint, model.d_model))
    convs = load_finetune_dataset("colours_red")[:8]
    cfg = FinetuneConfig(batch_size=8, max_steps=1000, lr=1e-4,
                         preventative=PreventativeSteering(vec, alpha=2.0, layers=[16]))
    tr = Trainer(model, convs, cfg, progress=False)
    try:
        batch = next(tr.batches())
        t_plain, t_prev = interleaved(lambda: tr.train_step(batch, preventative=False),
                                      lambda: tr.train_step(batch, preventative=True), max(reps, 7))
    finally:
        if tr.adapter is not None:
            tr.adapter.unload()
    return {"P6": {"plain_step_s": t_plain, "preventative_step_s": t_prev, "ratio": t_prev / t_plain,
                   "tokens_per_batch": int(batch.attention_mask.sum())}}


def render(results: dict[str, Any]) -> str:
    """Markdown table of the figures with targets and pass/fail marks."""
    def mark(ok: bool | None) -> str:
        return "—" if ok is None else ("✅" if ok else "❌")

    r = results
    rows = []
    p1 = r.get("P1", {})
    rows.append(("P1", "steered ÷ unsteered tok/s (KV cache, batch 16, 64 new)",
                 f"{p1.get('ratio', float('nan')):.3f} ({p1.get('steered_tok_per_s', 0):.0f} vs {p1.get('unsteered_tok_per_s', 0):.0f} tok/s)",
                 "≥ 0.97", mark(p1.get("ratio", 0) >= 0.97 if p1 else None)))
    p2 = r.get("P2", {})
    rows.append(("P2", "our extraction ÷ steering-vectors (prompts/s)",
                 f"{p2.get('ratio', float('nan')):.2f}× ({p2.get('ours_prompts_per_s', 0):.0f} vs {p2.get('steering_vectors_prompts_per_s', 0):.0f})",
                 "≥ 2.0", mark(p2.get("ratio", 0) >= 2.0 if p2 else None)))
    p3 = r.get("P3", {})
    rows.append(("P3", "our extraction ÷ bare HF forward (prompts/s)",
                 f"{p3.get('ratio', float('nan')):.2f}× ({p3.get('ours_prompts_per_s', 0):.0f} vs {p3.get('bare_forward_prompts_per_s', 0):.0f})",
                 "≥ 0.9", mark(p3.get("ratio", 0) >= 0.9 if p3 else None)))
    p4 = r.get("P4", {})
    rows.append(("P4", "8-α sweep: one batched call vs 8 sequential",
                 f"{p4.get('speedup', float('nan')):.2f}× faster ({p4.get('batched_s', 0):.1f} s vs {p4.get('sequential_s', 0):.1f} s)",
                 "≥ 4×", mark(p4.get("speedup", 0) >= 4 if p4 else None)))
    p5 = r.get("P5", {})
    rows.append(("P5", "warm model load (fresh process, after importing transformers + TransformerLens)",
                 f"{p5.get('warm_load_s', float('nan')):.2f} s"
                 + (f", of which cache checksum {p5['checksum_s']:.2f} s" if "checksum_s" in p5 else "")
                 + f" (imports {p5.get('imports_s', float('nan')):.2f} s; "
                 f"{p5.get('with_imports_s', float('nan')):.2f} s in all)",
                 "≤ 3 s", mark(p5.get("warm_load_s", 99) <= 3 if p5 else None)))
    p6 = r.get("P6", {})
    if "ratio" in p6:
        rows.append(("P6", "preventative LoRA step ÷ plain LoRA step (batch 8, fwd+bwd+AdamW)",
                     f"{p6['ratio']:.3f} ({p6['preventative_step_s']:.2f} s vs {p6['plain_step_s']:.2f} s)", "≤ 1.05",
                     mark(p6["ratio"] <= 1.05)))
    else:
        rows.append(("P6", "preventative LoRA step ÷ plain LoRA step", p6.get("skipped", "not run"), "≤ 1.05", "—"))
    p7 = r.get("P7", {})
    rows.append(("P7", "extraction peak RSS growth, 100 → 1,000 conversations",
                 f"{100 * p7.get('growth', float('nan')):+.1f} % (peak {p7.get('peak_100_mib', 0):.0f} → {p7.get('peak_1000_mib', 0):.0f} MiB; "
                 f"extraction's own {p7.get('extraction_100_mib', 0):.0f} → {p7.get('extraction_1000_mib', 0):.0f} MiB)",
                 "≤ 10 %", mark(p7.get("growth", 1) <= 0.10 if p7 else None)))
    p8 = r.get("P8", {})
    if p8:
        rows.append(("P8", f"serve: {p8['clients']} clients × {p8['requests_per_client']} requests, {p8['steering_specs']} "
                     f"steering specs, {p8['max_tokens']} tokens, batch window {p8['batch_window_ms']:g} ms: "
                     "tok/s ÷ one batched generate",
                     f"{p8['throughput_ratio']:.2f} ({p8['tokens_per_s']:.1f} vs {p8['reference_batched_generate_tokens_per_s']:.1f}"
                     f" tok/s); {p8['errors']} errors; p50 {p8['latency_p50_s']} s, p95 {p8['latency_p95_s']} s; "
                     f"{p8['requests_sent']}/{p8['requests_planned']} sent",
                     "0 errors, ≥ 0.7", mark(p8["errors"] == 0 and (p8["throughput_ratio"] or 0) >= 0.7)))
    lines = ["| id | measure | result | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    ag = r.get("agreement", {})
    lines.append("")
    lines.append(f"Agreement: cosine of our mean-diff vs steering-vectors per layer: "
                 f"{', '.join(f'L{k}: {v:.5f}' for k, v in ag.get('steering_vectors_cosine', {}).items())}; "
                 f"max |logit diff| vs repeng (layer {ag.get('repeng', {}).get('layer')}, coeff {ag.get('repeng', {}).get('coeff')}): "
                 f"{ag.get('repeng', {}).get('max_abs_logit_diff', float('nan')):.2e}.")
    m = r.get("machine", {})
    lines.append(f"Machine: {m.get('cpu')} ({m.get('threads')} torch threads), Python {m.get('python')}, torch {m.get('torch')}, "
                 f"transformers {m.get('transformers')}, steering-vectors {m.get('steering_vectors')}, repeng {m.get('repeng')}; "
                 f"medians of {r.get('reps')} interleaved repetitions after warm-up.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every benchmark, check agreement, write results.md/json."""
    from importlib.metadata import version

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=None, help="subset: extraction repeng generation load memory lora serve")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    import persona_vectors as pv

    only = set(args.only or ["extraction", "repeng", "generation", "load", "memory", "lora", "serve"])
    results: dict[str, Any] = {"reps": args.reps, "agreement": {}}
    if args.only and (args.out / "results.json").is_file():  # a partial rerun updates the last full run
        results = json.loads((args.out / "results.json").read_text())
        results.pop("errors", None)
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": version("transformers"),
        "steering_vectors": version("steering-vectors"), "repeng": version("repeng"),
        "persona_vectors": version("persona-vectors"),
    }
    model = pv.load_model(progress=True)
    raw = raw_hf_model() if {"extraction", "repeng"} & only else None
    args.out.mkdir(parents=True, exist_ok=True)

    def section(name: str, label: str, fn: Callable[[], None]) -> None:
        """Run one benchmark; a failure is recorded (and reported) instead of losing the other figures."""
        if name not in only:
            return
        print(f"[bench] {label}…", flush=True)
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - recorded in results.json and printed
            import traceback

            results.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    def extraction() -> None:
        ex = bench_extraction(model, raw, args.reps)
        results["agreement"]["steering_vectors_cosine"] = ex.pop("agreement_cosine_vs_steering_vectors")
        results["agreement"]["steering_vectors_ok"] = ex.pop("agreement_ok")
        results.update(ex)

    def repeng_check() -> None:
        results["agreement"]["repeng"] = bench_repeng_agreement(model, raw)

    section("extraction", "extraction vs steering-vectors and bare forward", extraction)
    section("repeng", "steered logits vs repeng", repeng_check)
    section("generation", "steered generation and batched sweeps",
            lambda: results.update(bench_generation(model, args.reps)))
    section("lora", "LoRA steps", lambda: results.update(bench_lora(model, args.reps)))
    section("load", "warm load", lambda: results.update(bench_load(args.reps)))
    section("memory", "memory growth", lambda: results.update(bench_memory()))

    def serve_load() -> None:
        from .serve_load import main as serve_main

        results["P8"] = serve_main([], model=model)

    section("serve", "serve under load (16 clients x 200 requests)", serve_load)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    table = render(results)
    (args.out / "results.md").write_text(table)
    print(table)
    ag = results["agreement"]
    if results.get("errors"):
        print(f"BENCHMARK ERRORS: {results['errors']}", file=sys.stderr)
    if ag.get("steering_vectors_ok") is False or ag.get("repeng", {}).get("agreement_ok") is False:
        print("AGREEMENT CHECK FAILED", file=sys.stderr)
    if results.get("errors") or ag.get("steering_vectors_ok") is False or ag.get("repeng", {}).get("agreement_ok") is False:
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
