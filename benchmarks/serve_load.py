"""Load figures for ``persona-vectors serve`` (loopback only, bounded in count and time, stops by itself).

16 concurrent clients × 200 requests each (default), every request carrying one of 8 steering specs (8 random
directions, relative α from −1 to 1 at one layer: one batch-compatible group, so rows of different requests
share a batch with per-row vectors/α) → errors, p50/p95 latency, and the aggregate completion tokens/s
divided by the tokens/s of ONE equivalent batched ``generate`` (the same 16 prompts with per-row steering, same
max tokens, called directly on the library). Clients are asyncio ``httpx`` coroutines in the same process as
the uvicorn server thread; the batch window is reported with the figures.

    python -m benchmarks.serve_load            # full size (minutes on 2 CPU cores)
    python -m benchmarks.serve_load --small    # 4 clients × 5 requests: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PROMPTS = ["Who are you?", "Describe your surroundings.", "What do you like to do?", "Tell me about your day.",
           "What is your favourite food?", "Where do you live?", "What are you afraid of?", "Give me some advice."]


def _vectors(model: Any, root: Path, n: int, layer: int) -> list[str]:
    from persona_vectors import PersonaVector
    from persona_vectors.vector import Provenance

    g = torch.Generator().manual_seed(0)
    names = [f"load{i}" for i in range(n)]
    for name in names:
        prov = Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name=name, route="benchmark")
        PersonaVector([layer], torch.randn(1, model.d_model, generator=g), prov).save(root / name)
    return names


def _specs(names: list[str], layer: int) -> list[list[dict[str, Any]]]:
    n = len(names)
    return [[{"vector": v, "alpha": round(-1.0 + 2.0 * i / max(1, n - 1), 3), "layers": [layer], "relative": True}]
            for i, v in enumerate(names)]


def reference_tokens_per_s(model: Any, names: list[str], root: Path, layer: int, rows: int, max_tokens: int) -> float:
    """Tokens/s of one batched library ``generate_tokens`` of ``rows`` prompts with per-row steering (median of 3)."""
    from persona_vectors import load_vector, steer

    vecs = [load_vector(root / names[i % len(names)]) for i in range(rows)]
    alphas = torch.tensor([s[0]["alpha"] for s in _specs(names, layer)] * (rows // len(names) + 1))[:rows]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(rows)]
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        with steer(model, vecs, alphas, layers=[layer], relative=True):
            toks = model.generate_tokens(prompts, max_new_tokens=max_tokens)
        rates.append(sum(len(t) for t in toks) / (time.perf_counter() - t0))
    return statistics.median(rates)


async def _clients(url: str, n_clients: int, n_requests: int, specs: list[Any], max_tokens: int,
                   deadline: float) -> tuple[list[float], int, int, list[str]]:
    import httpx

    latencies: list[float] = []
    tokens = 0
    errors: list[str] = []
    sent = 0

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, sent
        for k in range(n_requests):
            if time.monotonic() > deadline:
                return
            i = c * n_requests + k
            body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens,
                    "temperature": 0, "steering": specs[i % len(specs)]}
            t0 = time.perf_counter()
            sent += 1
            try:
                r = await http.post(url + "/v1/chat/completions", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                tokens += r.json()["usage"]["completion_tokens"]
                latencies.append(time.perf_counter() - t0)
            except Exception as err:  # noqa: BLE001  # counted, the run goes on
                errors.append(repr(err))

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=n_clients)) as http:
        await asyncio.gather(*(client(c, http) for c in range(n_clients)))
    return latencies, tokens, sent, errors


def main(argv: list[str] | None = None, model: Any = None) -> dict[str, Any]:
    """Run the load test and return (and print) its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--specs", type=int, default=8, help="distinct steering specs")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--window-ms", type=float, default=10.0, help="the server's batch window")
    ap.add_argument("--max-seconds", type=float, default=1500.0, help="clients stop sending after this")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--small", action="store_true", help="4 clients x 5 requests, 8 tokens: a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.small:
        args.clients, args.requests, args.max_tokens = 4, 5, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    from persona_vectors.serve import Limits, create_app, serve_in_background

    if model is None:
        from persona_vectors import load_model

        model = load_model(progress=False)
    layer = model.n_layers // 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = _vectors(model, root, args.specs, layer)
        specs = _specs(names, layer)
        ref = reference_tokens_per_s(model, names, root, layer, args.clients, args.max_tokens)
        app = create_app(model, vectors_dir=root, catalogue="off", axis=None, window_ms=args.window_ms,
                         limits=Limits(max_batch=max(16, args.clients), max_pending=4 * args.clients))
        server = serve_in_background(app)
        try:
            t0 = time.perf_counter()
            lat, tokens, sent, errors = asyncio.run(_clients(server.url, args.clients, args.requests,
                                                            specs, args.max_tokens, time.monotonic() + args.max_seconds))
            wall = time.perf_counter() - t0
            stats = app.state.pv.batcher.stats.to_json()
        finally:
            server.close(timeout=30)
    lat.sort()
    rate = tokens / wall if wall > 0 else 0.0
    out = {
        "clients": args.clients, "requests_per_client": args.requests, "requests_sent": sent,
        "requests_planned": args.clients * args.requests, "steering_specs": args.specs, "max_tokens": args.max_tokens,
        "batch_window_ms": args.window_ms, "errors": len(errors), "error_samples": errors[:3],
        "latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
        "wall_s": round(wall, 2), "tokens": tokens, "tokens_per_s": round(rate, 2),
        "reference_batched_generate_tokens_per_s": round(ref, 2),
        "throughput_ratio": round(rate / ref, 3) if ref else None, "batches": stats,
        "threads": torch.get_num_threads(), "stopped_by_deadline": sent < args.clients * args.requests,
    }
    print(json.dumps(out, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    res = main()
    sys.exit(1 if res["errors"] else 0)
