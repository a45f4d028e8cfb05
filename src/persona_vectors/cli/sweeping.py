"""Commands for grids of steering runs: ``sweep`` (run or resume a TOML-configured sweep) and ``summarize``
(tables from a sweep's results store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import base
from .base import app, emit_json, fail, friendly, ray_options


def bare_ray_flag(argv: list[str]) -> list[str]:
    """``argv`` with a bare ``--ray`` (last, or followed by something that is not a Ray address) given the value
    ``auto``, so ``sweep CONFIG --ray`` works as ``--ray auto``; Typer options cannot take an optional value.

    A following token is the address when it is ``auto``, ``local``, ``HOST:PORT`` or ``ray://...``.
    """
    out: list[str] = []
    for i, a in enumerate(argv):
        out.append(a)
        if a == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or not (nxt in ("auto", "local") or nxt.startswith("ray://")
                                   or (":" in nxt and not nxt.startswith("-") and nxt.rsplit(":", 1)[1].isdigit())):
                out.append("auto")
    return out


_SWEEP_RAY = ray_options("Shard the batches over Ray actors")


@app.command("sweep")
@friendly
def sweep_command(
    config: Path = typer.Argument(..., help="Sweep config (TOML)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Results JSONL (default: CONFIG with .jsonl suffix)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip rows already stored (or start over)"),
    judge: bool = typer.Option(False, "--judge/--no-judge", help="Label generations with the offline archetype judge"),
    model: Optional[str] = typer.Option(None, "--model", help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub "
                                        "(default: offline, the HF cache only)"),
    ray_address: Optional[str] = _SWEEP_RAY[0],
    actors: Optional[int] = _SWEEP_RAY[1],
    actor_threads: int = _SWEEP_RAY[2],
) -> None:
    """Run (or resume) a steering sweep from a TOML config; rows stream to a crash-safe JSONL file.

    The store is locked while the sweep runs (a second sweep on it fails with "in use by PID N"); --no-resume only
    deletes a results file this library wrote, and --out may not be the config. Rows whose steering went
    non-finite are not stored: one error line per failed (vector, layer, alpha), exit code 2 after the rest.

    With --ray the batches run on Ray actors that each load the same model; this process writes the store.
    """
    import warnings

    from ..sweep import SweepConfig, SweepRowsNotStoredWarning, check_sweep_output, run_sweep, summarize, summary_markdown

    cfg = SweepConfig.from_toml(config)
    path = out or config.with_suffix(".jsonl")
    check_sweep_output(path, resume=resume, config_path=config)  # before the (slow) model load
    if ray_address is None and (actors is not None or actor_threads != 1):
        base.fail("--actors and --actor-threads apply with --ray only: add --ray [ADDRESS]")
    started = False
    if ray_address is not None:
        from ..sweep.distributed import connect

        started = connect(ray_address)  # an unreachable cluster fails here, before the model load
    try:
        m = base.load_model_arg(model, allow_download=allow_download)
        j = None
        if judge:
            from ..judge import default_judge

            j = default_judge()
        ray_kw = dict(backend="ray", num_actors=actors, actor_threads=actor_threads) if ray_address is not None else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SweepRowsNotStoredWarning)  # printed below as error lines
            rep = run_sweep(m, cfg, path, judge=j, resume=resume, progress=True, **ray_kw)
    finally:
        if started:
            import ray

            ray.shutdown()
    typer.echo(f"{rep.rows_written} rows written, {rep.rows_skipped} already stored, {rep.rows_total} total"
               f"{f', {rep.rows_failed} failed' if rep.rows_failed else ''} ({rep.seconds:.1f}s) -> {path}")
    if path.is_file() and path.stat().st_size:
        typer.echo(summary_markdown(summarize(path)))
    if rep.failures:
        for line in rep.failure_lines():
            typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)


@app.command("summarize")
@friendly
def summarize_command(
    results: Path = typer.Argument(..., help="Results JSONL written by `persona-vectors sweep`"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
    judge: bool = typer.Option(False, "--judge", help="Label rows stored without a judge label with the offline "
                               "archetype judge (in memory; the file is not changed)"),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Count these labels instead: the merged JSONL of "
                                          "`judge triage --readings` (judge where it is sure, a blind reader "
                                          "elsewhere), keyed by row_id"),
) -> None:
    """Per (vector, layer, alpha): n, label shares with Wilson 95 % intervals, mean coherence.

    Label shares need judge labels: a sweep run with --judge stores them; for one run without, pass --judge here
    (otherwise a note says the shares are missing and why).
    """
    from ..sweep import summarize, summary_markdown
    from ..sweep.summary import read_label_file

    if judge and labels is not None:
        fail("--judge labels rows with the judge alone and --labels gives every row's label: pass one of them")
    j = None
    if judge:
        from ..judge import default_judge

        j = default_judge()
    s = summarize(results, judge=j, labels=read_label_file(labels) if labels is not None else None)
    if as_json:
        emit_json(s)
    else:
        typer.echo(summary_markdown(s), nl=False)
