"""The command line's shared plumbing: the Typer ``app`` every command registers on, the error policy
(``friendly``: library errors and OSErrors become one red line naming the fix, exit 2), output helpers and
``load_model_arg`` — the one place a command loads ``--model``, and the seam tests patch
(``persona_vectors.cli.base.load_model_arg``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Activation-space persona arithmetic for LMs.")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, RuntimeError)


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def os_error_message(err: OSError) -> str:
    """One line for a failed read or write: the path, what went wrong, and what to do about it."""
    import errno

    if err.filename is None:  # raised by the library with its own message
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    path = err.filename
    what = err.strerror or type(err).__name__
    if isinstance(err, FileNotFoundError):
        fix = "check the path"
    elif isinstance(err, IsADirectoryError):
        fix = "pass a file path, not a directory"
    elif isinstance(err, NotADirectoryError):
        fix = "a component of the path is a file: choose another path"
    elif isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a writable location (another --out) or fix the permissions"
    elif err.errno == errno.ENOSPC:
        fix = "free disk space or choose another location"
    else:
        fix = "check the path and its permissions"
    from ..models import cache_dir

    with contextlib.suppress(Exception):
        if Path(str(path)).resolve().is_relative_to(cache_dir().resolve()):
            fix = "set PERSONA_VECTORS_CACHE to a writable directory"
    return f"{path}: {what}; {fix}"


def _cli_wording(msg: str) -> str:
    """Library hints name Python keywords; on the command line the same fix is a flag."""
    return msg.replace("pass allow_other_model=True", "pass --allow-other-model").replace(
        "allow_other_model=True", "--allow-other-model")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: library errors and OSErrors become one-line messages naming the fix, exit 2
    (set PERSONA_VECTORS_DEBUG=1 for tracebacks)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except OSError as err:
            if os.environ.get("PERSONA_VECTORS_DEBUG"):
                raise
            fail(os_error_message(err))
        except USER_ERRORS as err:
            if os.environ.get("PERSONA_VECTORS_DEBUG"):
                raise
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, KeyError):
                msg = msg.strip("'\"")
            fail(_cli_wording(msg))

    return wrapper


def check_output_file(path: Path, flag: str) -> None:
    """Fail early (before any model work) when an output file path cannot be written as a file."""
    if path.is_dir():
        fail(f"{flag} {path} is a directory: pass a file path inside it, e.g. {path / 'out'}{path.suffix}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        fail(f"{flag} {path}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{flag} {path}: {parent} is not writable; choose a writable location or fix its permissions")


def emit_json(obj: Any) -> None:
    """Print a JSON document to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


ALLOW_DOWNLOAD_ENV = "PERSONA_VECTORS_ALLOW_DOWNLOAD"


def load_model_arg(model: Optional[str], device: str = "cpu", allow_download: bool = False) -> Any:
    """Load ``--model`` (None → embedded default). Offline unless ``--allow-download`` (or
    ``PERSONA_VECTORS_ALLOW_DOWNLOAD=1``, which every command honours) lets a hub id download."""
    from ..models import ModelLoadError, load_model

    if not allow_download:
        allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return load_model(model, device=device, progress=True, allow_download=allow_download)
    except ModelLoadError as err:
        fail(str(err).replace("allow_download=True (CLI: --allow-download)",
                              f"--allow-download (or set {ALLOW_DOWNLOAD_ENV}=1)"))


def ray_options(what: str) -> tuple[Any, Any, Any]:
    """The ``--ray [ADDRESS]``, ``--actors`` and ``--actor-threads`` options shared by ``sweep`` and ``map``
    (``what``: the work the actors do, e.g. "Shard the batches over Ray actors")."""
    return (
        typer.Option(None, "--ray", metavar="[ADDRESS]",
                     help=f"{what}, one model replica each: a cluster's HOST:PORT, 'auto' (or nothing) for RAY_ADDRESS "
                     "or the one running here, or 'local' to start one for this run (needs persona-vectors[ray])"),
        typer.Option(None, "--actors", min=1, help="With --ray: number of actors (default: the cluster's GPUs, or its "
                     "CPUs / --actor-threads)"),
        typer.Option(1, "--actor-threads", min=1, help="With --ray: torch threads per CPU actor"),
    )

