"""The ``serve`` command: an OpenAI-compatible steering server with a steered-chat page (needs the ``serve``
extra: FastAPI and uvicorn). See :mod:`persona_vectors.serve` and docs/serve.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from . import base
from .base import app, fail, friendly


@app.command("serve")
@friendly
def serve_command(
    model: Optional[str] = typer.Option(None, "--model", help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    vectors: Optional[Path] = typer.Option(None, "--vectors", help="Directory of saved vectors (one per sub-directory, "
                                           "served under the sub-directory's name)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default loopback only; anything else "
                             "exposes the model to the network: set --token)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    token: Optional[str] = typer.Option(None, "--token", envvar="PERSONA_VECTORS_SERVE_TOKEN",
                                        help="Require 'Authorization: Bearer TOKEN' on /v1/*"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch intra-op threads (default: torch's)"),
    catalogue: str = typer.Option("cached", "--catalogue", help="Catalogue personas: cached (only vectors already "
                                  "built on disk) | build (build on first use; slow) | off"),
    axis: str = typer.Option("assistant_axis", "--axis", help="Vector reported as persona_projection.axis and capped by "
                             "the page's stabilise toggle ('' for none)"),
    layer: Optional[int] = typer.Option(None, "--layer", help="Default steering/read-out layer (default: middle layer)"),
    window_ms: float = typer.Option(10.0, "--batch-window-ms", min=0.0, help="How long to gather concurrent requests"),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Most rows in one batched generate"),
    max_tokens: int = typer.Option(256, "--max-tokens-limit", min=1, help="Largest max_tokens a request may ask"),
    max_pending: int = typer.Option(64, "--max-pending", min=1, help="Most completions waiting before 429"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub"),
    allow_other_model: bool = typer.Option(False, "--allow-other-model", help="Serve vectors of another model"),
) -> None:
    """Serve the model over HTTP: /v1/chat/completions and /v1/completions with per-request `steering`,
    dynamic batching, persona_projection in every response, and a steered-chat page at /."""
    if catalogue not in ("cached", "build", "off"):
        fail(f"--catalogue must be one of cached, build, off; got {catalogue!r}")
    if vectors is not None and not vectors.is_dir():
        fail(f"--vectors {vectors}: not a directory; pass a directory of saved vectors")
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        typer.secho(f"warning: binding {host} without --token: anyone who can reach it can use the model",
                    fg=typer.colors.YELLOW, err=True)
    try:
        from ..serve import Limits, create_app, serve_forever
    except ImportError as err:
        fail(f"serve needs FastAPI and uvicorn ({err.name} is missing): pip install 'persona-vectors[serve]'")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    m = base.load_model_arg(model, allow_download=allow_download)
    if layer is not None and not 0 <= layer < m.n_layers:
        fail(f"--layer {layer} is out of range: this model has layers 0..{m.n_layers - 1}")
    limits = Limits(max_tokens=max_tokens, max_batch=max_batch, max_pending=max_pending)
    application = create_app(m, vectors_dir=vectors, catalogue=catalogue, axis=axis or None,  # type: ignore[arg-type]
                             token=token, limits=limits, window_ms=window_ms, default_layer=layer)
    typer.echo(f"# serving {m.info.model_id} on http://{host}:{port}/ (page at /, API at /v1)", err=True)
    serve_forever(application, host=host, port=port, log_level=os.environ.get("PERSONA_VECTORS_LOG", "info"))
