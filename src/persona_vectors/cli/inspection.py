"""Commands that look at things without changing them: ``info`` (a model's metadata) and ``inspect``
(a saved vector's provenance and norms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import base
from .base import app, emit_json, friendly


@app.command()
@friendly
def info(
    model: Optional[str] = typer.Option(None, help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Load a model and print its metadata (layers, width, weight fingerprint)."""
    m = base.load_model_arg(model)
    d = {"model_id": m.info.model_id, "n_layers": m.n_layers, "d_model": m.d_model, "fingerprint": m.info.fingerprint}
    if as_json:
        emit_json(d)
    else:
        for k, v in d.items():
            typer.echo(f"{k:12s} {v}")


@app.command()
@friendly
def inspect(
    vector: Path = typer.Argument(..., help="Directory of a saved vector"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print a saved vector's provenance and per-site norms."""
    from ..vector import PersonaVector

    v = PersonaVector.load(vector)
    d = {"provenance": v.provenance.to_json(), "norms": {str(s): n for s, n in v.norms().items()}}
    if as_json:
        emit_json(d)
    else:
        typer.echo(repr(v))
        for s, n in v.norms().items():
            typer.echo(f"  {str(s):16s} |v| = {n:.3f}")
