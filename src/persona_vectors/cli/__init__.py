"""The ``persona-vectors`` command line: thin commands over the library's modules.

Every command turns library errors into one red line naming the fix (exit code 2), never a traceback,
unless ``PERSONA_VECTORS_DEBUG=1`` is set.

One module per command group, each registering its commands on the shared Typer ``app`` when imported:
:mod:`.base` (the app, error policy, ``load_model_arg``), :mod:`.inspection` (``info``, ``inspect``),
:mod:`.steering` (``identity``, ``steer``), :mod:`.sweeping` (``sweep``, ``summarize``), :mod:`.vectors`
(``personas``, ``extract``, ``map``, ``export-gguf``), :mod:`.judging` (``judge validate``),
:mod:`.calibration` (``calibrate``) and :mod:`.serving` (``serve``). The import order below is the order
``--help`` lists them in.

Tests that replace model loading patch ``persona_vectors.cli.base.load_model_arg`` (the commands look it up
there at call time); patching the name re-exported here has no effect on the commands.
"""

from __future__ import annotations

from .base import (
    ALLOW_DOWNLOAD_ENV,
    USER_ERRORS,
    _cli_wording,
    app,
    check_output_file,
    emit_json,
    fail,
    friendly,
    load_model_arg,
    os_error_message,
)
from .inspection import info, inspect
from .steering import _auto_alpha, _parse_alpha_option, identity_command, steer_command
from .sweeping import summarize_command, sweep_command
from .vectors import export_gguf_command, extract_command, map_command, personas_command
from .judging import judge_app, judge_triage_command, judge_validate_command
from .calibration import calibrate_command
from .serving import serve_command

__all__ = [
    "ALLOW_DOWNLOAD_ENV", "USER_ERRORS", "app", "calibrate_command", "check_output_file", "emit_json",
    "export_gguf_command", "extract_command", "fail", "friendly", "identity_command", "info", "inspect",
    "judge_app", "judge_triage_command", "judge_validate_command", "load_model_arg", "main", "map_command", "os_error_message",
    "personas_command", "serve_command", "steer_command", "summarize_command", "sweep_command",
]


def main() -> None:
    """Console-script entry point (a bare ``--ray`` means ``--ray auto``, see :func:`.sweeping.bare_ray_flag`)."""
    import sys

    from .sweeping import bare_ray_flag

    app(args=bare_ray_flag(sys.argv[1:]))
