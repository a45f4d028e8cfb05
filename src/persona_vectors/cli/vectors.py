"""Commands that make, map and export vectors: ``personas`` (the catalogue), ``extract`` (a persona or fact
vector to disk), ``map`` (the persona-space figure) and ``export-gguf`` (a llama.cpp control vector).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Optional

import typer

from . import base
from .base import app, check_output_file, emit_json, fail, friendly, ray_options


_MAP_RAY = ray_options("Generate the missing answers on Ray actors")


@app.command("personas")
@friendly
def personas_command(
    category: Optional[str] = typer.Option(None, "--category", help="A role category, 'card' or 'facts'"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """List the persona catalogue: card personas, fact sets and roles (with the routes each supports)."""
    from ..personas import list_personas

    rows = list_personas(category)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['name']:24s} {r['kind']:9s} {'/'.join(r['routes']):13s} {r['category']:20s} {r['description']}")


@app.command("extract")
@friendly
def extract_command(
    persona: Optional[str] = typer.Option(None, "--persona", help="Persona name (see `persona-vectors personas`)"),
    out: Path = typer.Option(..., "--out", help="Directory to write the vector into"),
    route: Optional[str] = typer.Option(None, "--route", help="prompt | facts | prompt_only (no generated answers) "
                                        "(default: the persona's first route)"),
    method: str = typer.Option("mean_diff", "--method", help="mean_diff | pca | probe"),
    layers: str = typer.Option("all", "--layers", help="Comma-separated layers (10,14) or 'all'"),
    quick: bool = typer.Option(False, "--quick", help="Small question budget (minutes on CPU)"),
    facts_file: Optional[Path] = typer.Option(None, "--facts-file", help="Your own fact-set JSON (fact route)"),
    model: Optional[str] = typer.Option(None, help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub "
                                        "(default: offline, the HF cache only)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the disk caches"),
    as_json: bool = typer.Option(False, "--json", help="Print per-layer AUROC and relative norm as JSON"),
    force: bool = typer.Option(False, "--force", help="Also write into a non-empty --out that holds no saved vector "
                               "(its other files are kept; nothing is ever deleted)"),
) -> None:
    """Extract a persona vector (cached), measure its held-out quality, and save it to --out.

    --out may be new, empty, or hold a previous vector (whose two files are replaced); a directory with
    other files and no vector needs --force. No file the command did not write is ever deleted.
    """
    from ..datasets import load_fact_set
    from ..io import VectorFileError, check_save_target
    from ..personas import _choose_route, extract_persona, fact_vector, persona_quality, resolve_persona

    if (persona is None) == (facts_file is None):
        fail("pass exactly one of --persona NAME or --facts-file FILE")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file: pass a directory path for the vector")
    overwrite = True if force else None
    try:  # before the model loads: refuse a directory we may not write into
        check_save_target(out, overwrite, fix="--force")
    except VectorFileError as err:
        fail(str(err))
    if layers.strip() != "all":
        try:
            layer_spec: Any = [int(x) for x in layers.split(",") if x.strip()]
        except ValueError:
            fail(f"--layers {layers!r} is not a comma-separated list of layer numbers (e.g. 10,14) or 'all'")
        if not layer_spec:
            fail("--layers is empty: pass e.g. 10,14 or 'all'")
    else:
        layer_spec = "all"
    if persona is not None:  # unknown names, routes and bad files fail before the model loads
        _choose_route(resolve_persona(persona), route)
    if facts_file is not None:
        if route not in (None, "facts"):
            fail("--facts-file uses the fact route: drop --route or pass --route facts")
        fs = load_fact_set(path=facts_file)
    say = lambda msg: typer.echo(f"[extract] {msg}", err=True)  # noqa: E731
    m = base.load_model_arg(model, allow_download=allow_download)
    cache = not no_cache
    if facts_file is not None:
        vec = fact_vector(m, fs, layers=layer_spec, method=method, cache=cache, progress=say)
        q = persona_quality(m, fs.name, vec, "facts", fact_set=fs, cache=cache, progress=say)
    else:
        res = extract_persona(m, persona, route, method=method, layers=layer_spec, quick=quick, cache=cache,  # type: ignore[arg-type]
                              progress=say)
        vec, q = res.vector, res.quality
    qj = q.to_json()
    vec = vec.replace(extra={**dict(vec.provenance.extra), "quality": {
        "layer": qj["layer"], "auroc": qj["auroc"], "rel_norm": qj["rel_norm"], "heldout": qj["heldout"]}})
    try:
        vec.save(out, overwrite=overwrite)
    except VectorFileError as err:  # the directory changed during the extraction
        fail(str(err).replace("overwrite=True", "--force"))
    if as_json:
        emit_json({"persona": q.name, "route": q.route, "method": method, "out": str(out), **qj})
    else:
        typer.echo(f"{q.name} ({q.route}, {method}): layer {qj['layer']}, held-out AUROC {qj['auroc_at_layer']:.3f}, "
                   f"relative norm {qj['rel_norm_at_layer']:.3f}; saved to {out}")


@app.command("map")
@friendly
def map_command(
    out: Path = typer.Option(..., "--out", help="Output HTML file (self-contained, works offline)"),
    layer: Optional[list[int]] = typer.Option(None, "--layer", help="Layer to map (repeatable; default: all common layers, with a slider)"),
    vectors: Optional[Path] = typer.Option(None, "--vectors", help="Directory of saved role vectors, one sub-directory per role (dir name = role name)"),
    results: Optional[Path] = typer.Option(None, "--results", help="Sweep results JSONL; rows with mean_activation (a sweep run with record_activations = true) are drawn as a trajectory"),
    axis_vector: Optional[Path] = typer.Option(None, "--axis", help="Saved vector drawn as the assistant axis (default: the default assistant minus the mean of the roles; with --vectors, needs an 'assistant' sub-directory)"),
    demo_synthetic: bool = typer.Option(False, "--demo-synthetic", help="Map clearly-synthetic vectors for the role catalogue (no model needed)"),
    role: Optional[list[str]] = typer.Option(None, "--role", help="Role to build (repeatable; names from `persona-vectors personas`, e.g. pirate_captain; default: the whole catalogue). The default assistant is always drawn, as 'assistant'. Ignored with --vectors"),
    questions: int = typer.Option(3, "--questions", min=1, help="Extraction questions per role when building role vectors"),
    prompts: int = typer.Option(1, "--prompts", min=1, help="System prompts per role when building role vectors"),
    save_vectors: Optional[Path] = typer.Option(None, "--save-vectors", help="Also save the built role vectors here (reusable with --vectors)"),
    prompt_only: bool = typer.Option(False, "--prompt-only", help="Build the role vectors from the prompts alone "
                                     "(no generated answers: the prompt_only route, ~10x faster; its map "
                                     "approximates the answer-based one: see P11 in the scaling benchmark)"),
    answers: bool = typer.Option(False, "--answers", help="Build the role vectors from the model's answers, "
                                 "generating (and caching) any that are missing. Default: the answers when all are "
                                 "cached, else a prompt-only first draw that says so"),
    model: Optional[str] = typer.Option(None, "--model", help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub "
                                        "(default: offline, the HF cache only)"),
    dims: int = typer.Option(2, "--dims", help="2 or 3"),
    ray_address: Optional[str] = _MAP_RAY[0],
    actors: Optional[int] = _MAP_RAY[1],
    actor_threads: int = _MAP_RAY[2],
) -> None:
    """Interactive persona map: PCA of role vectors per layer, coloured by category, as one HTML file.

    Without --vectors the role vectors come from the model: role prompt vs default assistant, every layer.
    The answer route reads the model's own answers, cached on disk: generating them for the whole catalogue
    (~430 short answers) takes roughly 10-20 minutes on 2 CPU cores once, later maps take seconds. When some
    answers are not cached yet, the default is a *first draw* from the prompts alone (the prompt_only route,
    ~10x faster, no generation) and the command and the map's title say so; --answers generates the answers
    and draws the answer-based map, --prompt-only always reads the prompts. (P11 of the scaling benchmark:
    the two routes' PC1 agree at Spearman 0.94 over SmolLM2 layers 21-29, 0.70-0.85 at 15-20, not below.) The
    default assistant (every default system prompt, the origin of these differences) is drawn as the point
    'assistant', and the assistant axis is the default assistant minus the mean of the roles
    (personas.RoleMeans.axis). --ray generates the missing answers on Ray actors (the same answers; this
    process writes the cache).
    """
    import re

    import torch

    from ..plotting import map_from_vectors, overlay_results, write_html
    from ..space import load_role_vectors, synthetic_role_vectors
    from ..vector import PersonaVector

    if dims not in (2, 3):
        fail("--dims must be 2 or 3")
    check_output_file(out, "--out")
    if results is not None and not results.is_file():
        fail(f"No results file {results}: pass the JSONL written by `persona-vectors sweep`")
    if vectors is not None and demo_synthetic:
        fail("pass at most one of --vectors DIR and --demo-synthetic")
    if ray_address is None and (actors is not None or actor_threads != 1):
        fail("--actors and --actor-threads apply with --ray only: add --ray [ADDRESS]")
    if ray_address is not None and (vectors is not None or demo_synthetic or prompt_only):
        fail("--ray generates answers for the role vectors, and --vectors, --demo-synthetic and --prompt-only "
             "generate none: drop --ray")
    if prompt_only and answers:
        fail("pass at most one of --prompt-only and --answers")
    if answers and (vectors is not None or demo_synthetic):
        fail("--answers builds role vectors from the model; --vectors and --demo-synthetic build none: drop --answers")
    first_draw = False
    if vectors is not None:
        role_vectors = load_role_vectors(vectors)
    elif demo_synthetic:
        role_vectors = synthetic_role_vectors(include_assistant=True)
    else:
        from ..datasets import DataError, get_role
        from ..plotting import ASSISTANT_NAMES

        wanted: list[str] = []
        for r in role or ():  # names fail before the model loads; the assistant side needs no --role
            if r.strip().lower() in ASSISTANT_NAMES:
                typer.echo(f"note: --role {r}: the default assistant is always drawn (as 'assistant'), "
                           "no --role needed", err=True)
                continue
            try:
                wanted.append(get_role(r).name)
            except DataError as err:
                fail(re.sub(r"\s*\(list names with load_roles\(\)\)", "", str(err).splitlines()[0])
                     + " (list them with `persona-vectors personas`)")
        if role and not wanted:
            fail("pass at least one catalogue role with --role (see `persona-vectors personas`), or none for all")
        session: Any = contextlib.nullcontext()
        if ray_address is not None:
            from ..sweep.distributed import ray_session

            session = ray_session(ray_address)  # an unreachable cluster fails here, before the model load
        with session:
            rm, first_draw = _build_role_means(wanted, questions, prompts, prompt_only,
                                               answers or ray_address is not None, model, allow_download,
                                               ray_address is not None, actors, actor_threads)
        role_vectors = dict(rm.vectors)
        first = next(iter(role_vectors.values()))  # the default assistant: role mean - default mean = 0
        role_vectors["assistant"] = PersonaVector(first.sites, torch.zeros_like(first.directions),
                                                  first.provenance).replace(name="assistant", extra={})
        if save_vectors is not None:
            rm.save(save_vectors)
            role_vectors["assistant"].save(save_vectors / "assistant")
            typer.echo(f"saved {len(role_vectors)} role vectors under {save_vectors} (with 'assistant')", err=True)
    axis = PersonaVector.load(axis_vector) if axis_vector is not None else "auto"
    title = "Persona space (SYNTHETIC demo data)" if demo_synthetic else "Persona space"
    if vectors is None and not demo_synthetic and first_draw:
        title += " — first draw from the prompts alone (answers not generated yet; --answers for the answer-based map)"
    fig, spaces = map_from_vectors(role_vectors, layer or None, dims=dims, axis=axis, title=title)
    if results is not None:
        rows = []
        for i, line in enumerate(results.read_text().splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    fail(f"{results}:{i} is not valid JSON: pass a results JSONL written by `persona-vectors sweep`")
                if not isinstance(row, dict):
                    fail(f"{results}:{i} is a JSON {type(row).__name__}, not an object: pass a results JSONL "
                         "written by `persona-vectors sweep` (one JSON object per line)")
                rows.append(row)
        for note in overlay_results(fig, spaces, rows):
            typer.echo(f"note: {note}")
    write_html(fig, out)
    typer.echo(f"wrote {out} ({len(role_vectors)} roles, layers {', '.join(map(str, spaces))})")


def _build_role_means(wanted: list[str], questions: int, prompts: int, prompt_only: bool, answers: bool,
                      model: Optional[str], allow_download: bool, on_ray: bool, actors: Optional[int],
                      actor_threads: int) -> tuple[Any, bool]:
    """The map's role means (``wanted`` roles, or the whole catalogue) and whether they are a prompt-only first
    draw: loads the model, then the answer route (forced by ``answers``; on Ray actors when ``on_ray``, connected
    by the caller), the prompt-only route (``prompt_only``), or by default the answer route when every answer is
    cached and a prompt-only first draw otherwise, with stage messages."""
    from ..personas import missing_answers, prompt_only_role_means, role_means

    m = base.load_model_arg(model, allow_download=allow_download)
    n_roles = len(wanted) if wanted else "all catalogue"
    say = lambda msg: typer.echo(f"  {msg}", err=True)  # noqa: E731
    first_draw = False
    if not prompt_only and not answers:
        missing, total = missing_answers(m, wanted or None, n_questions=questions, n_prompts=prompts)
        if missing:
            first_draw = prompt_only = True
            typer.echo(f"first draw: {missing} of the {total} answers these role vectors read are not generated "
                       "yet, so they come from the prompts alone (route prompt_only, ~10x faster, no generation). "
                       "Its PC1 agrees with the answer route's at Spearman 0.94 over SmolLM2 layers 21-29, "
                       "0.70-0.85 at 15-20 and not below (P11, docs/scaling.md). For the answer-based map run again "
                       "with --answers (generates and caches the answers once).", err=True)
    if prompt_only:
        typer.echo(f"building role vectors from the prompts alone ({n_roles} roles, {questions} questions x "
                   f"{prompts} prompts; no answers generated)", err=True)
        return prompt_only_role_means(m, wanted or None, n_questions=questions, n_prompts=prompts, layers="all",
                                      progress=say), first_draw
    where = "; missing answers generated on Ray" if on_ray else ""
    typer.echo(f"building role vectors ({n_roles} roles, {questions} questions x {prompts} prompts; cached{where})",
               err=True)
    ray_kw: dict[str, Any] = dict(backend="ray", num_actors=actors, threads=actor_threads) if on_ray else {}
    return role_means(m, wanted or None, n_questions=questions, n_prompts=prompts, layers="all", progress=say,
                      **ray_kw), False


@app.command("export-gguf")
@friendly
def export_gguf_command(
    vector: Path = typer.Option(..., "--vector", help="Directory of a saved vector"),
    out: Path = typer.Option(..., "--out", help="Output .gguf file for llama.cpp --control-vector"),
    scale: float = typer.Option(1.0, "--scale", help="Multiply every direction by this"),
    arch: str = typer.Option("llama", "--arch", help="controlvector.model_hint (model architecture)"),
    layer: Optional[list[int]] = typer.Option(None, "--layer", help="Export only these layers (repeatable; default: "
                                              "every layer >= 1, the ones llama.cpp can apply)"),
) -> None:
    """Export a vector as a llama.cpp control vector (resid_post.L -> direction.L).

    Without --layer every site llama.cpp can apply is exported (resid_post at layers >= 1); the others
    (block 0's output, which llama.cpp never steers, and resid_pre sites) are dropped with one note on stderr.
    """
    import warnings

    from ..export import ExportSitesDroppedWarning, export_control_vector_gguf, exportable_sites
    from ..vector import PersonaVector

    check_output_file(out, "--out")
    v = PersonaVector.load(vector)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExportSitesDroppedWarning)
        path = export_control_vector_gguf(v, out, scale=scale, arch=arch, layers=layer or None)
    for w in caught:
        if issubclass(w.category, ExportSitesDroppedWarning):
            typer.echo(f"note: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    n = len(set(layer)) if layer else len(exportable_sites(v)[0])
    typer.echo(f"wrote {path} ({n} layers, scale {scale:g})")
