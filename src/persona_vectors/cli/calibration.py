"""The ``calibrate`` command: steering strengths at which coherence falls to given levels (or next-token KL
reaches them), optionally with a layer scan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from . import base
from .base import app, emit_json, fail, friendly


@app.command("calibrate")
@friendly
def calibrate_command(
    vector: Path = typer.Option(..., "--vector", help="Directory of a saved vector"),
    layer: list[int] = typer.Option(..., "--layer", help="Layer to calibrate (repeat for several)"),
    coherence: Optional[list[float]] = typer.Option(None, "--coherence", help="Mean-coherence level(s) in (0, 1) "
                                                    "(repeatable; default 0.9 0.7 0.5)"),
    kl: Optional[list[float]] = typer.Option(None, "--kl", help="Next-token KL level(s) in nats instead of coherence "
                                             "(repeatable; cheaper and smoother)"),
    sign: str = typer.Option("+", "--sign", help="+ (along the vector) or - (against it)"),
    readout: Optional[str] = typer.Option(None, "--readout", help="Also scan the layers: projection | group:NAME "
                                          "(effect on that read-out at the first level)"),
    max_alpha: float = typer.Option(16.0, "--max-alpha", help="Largest |alpha| tried, relative units"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the calibration cache"),
    allow_other_model: bool = typer.Option(False, "--allow-other-model", help="Use a vector of another model"),
    model: Optional[str] = typer.Option(None, "--model", help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub "
                                        "(default: offline, the HF cache only)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Find the steering strengths at which coherence falls to given levels (or next-token KL reaches them).

    Greedy answers to a small fixed question set; cached per vector, model weights, layer and settings.
    Prints relative and raw alphas: `steer --alpha` takes the raw one (or the relative one with --relative).
    """
    import math

    from ..calibrate import _levels, _site, calibrate_alpha, layer_scan
    from ..io import check_vector_model, load_vector

    # settings that cannot work fail before the model loads
    if coherence and kl:
        fail("pass --coherence or --kl, not both")
    sgn = {"+": 1, "+1": 1, "1": 1, "-": -1, "-1": -1}.get(sign.strip())
    if sgn is None:
        fail(f"--sign must be + or -, got {sign!r}")
    if not (math.isfinite(max_alpha) and max_alpha > 0):
        fail(f"--max-alpha must be a number > 0, got {max_alpha:g}")
    kw: dict[str, Any] = {"target_kl": tuple(kl)} if kl else {"target_coherence": tuple(coherence) if coherence else None}
    metric, levels = _levels(kw.get("target_coherence"), kw.get("target_kl"))  # one-line errors via friendly()
    if readout is not None and readout != "projection" and not readout.startswith("group:"):
        fail(f"--readout must be projection or group:NAME, got {readout!r}")
    vec = load_vector(vector)
    m = base.load_model_arg(model, allow_download=allow_download)
    check_vector_model(vec, m, allow_other_model=allow_other_model)  # friendly() names --allow-other-model
    for L in layer:
        _site(vec, L, m.n_layers)
    cache = not no_cache
    results = [calibrate_alpha(m, vec, L, sign=sgn, max_alpha=max_alpha, cache=cache, **kw) for L in layer]
    scan = None
    if readout is not None:
        lv = levels[0]
        scan = layer_scan(m, vec, layer, readout=readout, sign=sgn, max_alpha=max_alpha, cache=cache,
                          **({"kl_level": lv} if metric == "kl" else {"coherence_level": lv}))
    if as_json:
        d: dict[str, Any] = {"vector": str(vector), "metric": metric, "levels": list(levels),
                             "layers": [r.to_dict() for r in results]}
        if scan is not None:
            d["scan"] = scan.to_dict()
        emit_json(d)
        return
    for r in results:
        typer.echo(r.table())
    if scan is not None:
        typer.echo(scan.table())
        typer.echo(f"best layer: {scan.best if scan.best is not None else 'none (level not reached)'}")
