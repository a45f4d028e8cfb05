"""The ``persona-vectors`` command line: thin commands over the library's modules.

Every command turns library errors into one red line naming the fix (exit code 2), never a traceback,
unless ``PERSONA_VECTORS_DEBUG=1`` is set.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Activation-space persona arithmetic for LMs.")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, RuntimeError)


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: library errors become one-line messages (set PERSONA_VECTORS_DEBUG=1 for tracebacks)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except USER_ERRORS as err:
            if os.environ.get("PERSONA_VECTORS_DEBUG"):
                raise
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, KeyError):
                msg = msg.strip("'\"")
            fail(msg)

    return wrapper


def emit_json(obj: Any) -> None:
    """Print a JSON document to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def load_model_arg(model: Optional[str], device: str = "cpu") -> Any:
    """Load ``--model`` (None → embedded default)."""
    from .models import load_model

    return load_model(model, device=device, progress=True)


@app.command()
@friendly
def info(
    model: Optional[str] = typer.Option(None, help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Load a model and print its metadata (layers, width, weight fingerprint)."""
    m = load_model_arg(model)
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
    from .vector import PersonaVector

    v = PersonaVector.load(vector)
    d = {"provenance": v.provenance.to_json(), "norms": {str(s): n for s, n in v.norms().items()}}
    if as_json:
        emit_json(d)
    else:
        typer.echo(repr(v))
        for s, n in v.norms().items():
            typer.echo(f"  {str(s):16s} |v| = {n:.3f}")


# ---- commands added by other modules go below this line (keep one block per command) ----


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
