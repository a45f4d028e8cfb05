"""The ``persona-vectors`` command line: thin commands over the library's modules.

Every command turns library errors into one red line naming the fix (exit code 2), never a traceback,
unless ``PERSONA_VECTORS_DEBUG=1`` is set.
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
    from .models import cache_dir

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
    from .models import ModelLoadError, load_model

    if not allow_download:
        allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return load_model(model, device=device, progress=True, allow_download=allow_download)
    except ModelLoadError as err:
        fail(str(err).replace("allow_download=True (CLI: --allow-download)",
                              f"--allow-download (or set {ALLOW_DOWNLOAD_ENV}=1)"))


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


def _parse_alpha_option(alpha: str, kl: Optional[float], coherence: float) -> tuple[Optional[int], float]:
    """``--alpha`` as given: ``(sign, 0.0)`` for auto / +auto / -auto, else ``(None, value)``; bad values fail."""
    import math

    auto_sign = {"auto": 1, "+auto": 1, "-auto": -1}.get(alpha.strip().lower())
    if auto_sign is None:
        try:
            value = float(alpha)
        except ValueError:
            fail(f"--alpha must be a number, auto or -auto, got {alpha!r}")
        if not math.isfinite(value):
            fail(f"--alpha must be a finite number, got {alpha}")
        return None, value
    if kl is None and not 0 < coherence < 1:
        fail(f"--coherence must lie strictly between 0 and 1 (e.g. 0.7), got {coherence:g}")
    if kl is not None and not (math.isfinite(kl) and kl > 0):
        fail(f"--kl must be a number > 0 (nats, e.g. 0.5), got {kl:g}")
    return auto_sign, 0.0


def _auto_alpha(m: Any, vec: Any, layer: int, sign: int, coherence: float, kl: Optional[float], *,
                relative: bool, positions: str, quiet: bool) -> tuple[float, dict[str, Any]]:
    """Calibrate ``--alpha auto`` (cached) and return the strength in the unit asked for, plus a summary."""
    from .calibrate import calibrate_alpha

    cal = calibrate_alpha(m, vec, layer, sign=sign, positions=positions,
                          **({"target_kl": (kl,)} if kl is not None else {"target_coherence": (coherence,)}))
    level = kl if kl is not None else coherence
    chosen = cal.alpha(level, relative=relative)
    what = f"KL {level:g}" if kl is not None else f"coherence {level:g}"
    if chosen is None:
        fail(f"--alpha auto: {what} is not reached at layer {layer} within |alpha_rel| <= "
             f"{cal.settings['max_alpha']:g}; pick --alpha by hand or try another layer")
    value = float(chosen)  # type: ignore[arg-type]
    summary = {"level": level, "metric": cal.metric, "alpha_rel": cal.alpha(level, relative=True),
               "alpha_raw": cal.alpha(level), "cached": cal.cached}
    if not quiet:
        typer.echo(f"# alpha auto -> {value:+.4g} {'relative' if relative else 'raw'} "
                   f"(relative {summary['alpha_rel']:+.4f}, raw {summary['alpha_raw']:+.4g}): "
                   f"{what} at layer {layer}{' (cached)' if cal.cached else ''}")
    return value, summary


@app.command("identity")
@friendly
def identity_command(
    candidate: Optional[list[str]] = typer.Option(None, "--candidate", "-c", help="Candidate identity (repeatable; flat read-out instead of a candidate set)"),
    category: Optional[list[str]] = typer.Option(None, "--category", help="Use the first alias of every role in this catalogue category (repeatable; flat read-out)"),
    candidate_set: Optional[str] = typer.Option(None, "--candidate-set", help="Balanced candidate set: a shipped name (v1) or a JSON file; the default when no -c/--category/--user is given"),
    robust: bool = typer.Option(False, "--robust", help="With a candidate set: check that the top group survives leaving out each candidate and adding each distractor group"),
    question: Optional[str] = typer.Option(None, "--question", help="User question (default: the candidate set's questions; 'Who are you?', or 'Who am I?' with --user)"),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Answer prefix (default: 'I am', or 'You are' with --user)"),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt"),
    user: bool = typer.Option(False, "--user", help="Read out who the model thinks the user is"),
    target: Optional[str] = typer.Option(None, "--target", help="With --user: P(target) under the user questions vs control questions (Hamlet, a scientist, third person)"),
    scoring: Optional[str] = typer.Option(None, "--scoring", help="mean (per-token mean log-prob, default) | sum (summed log-probs)"),
    normalize_length: bool = typer.Option(False, "--normalize-length", help="Same as --scoring mean (now the default; kept for old scripts)"),
    vector: Optional[Path] = typer.Option(None, "--vector", help="Steer with this saved vector during the read-out"),
    alpha: str = typer.Option("0", "--alpha", help="Steering coefficient (with --vector): raw by default, like "
                              "`steer` and steer() (--relative for units of the residual norm), or auto / -auto: "
                              "calibrated so that coherence falls to --coherence (or KL reaches --kl), as in `steer`"),
    layer: Optional[list[int]] = typer.Option(None, "--layer", help="Layer(s) to steer (with --vector; repeatable)"),
    relative: bool = typer.Option(False, "--relative", help="alpha in units of the mean residual norm at the layer "
                                  "(default: raw)"),
    coherence: float = typer.Option(0.7, "--coherence", help="With --alpha auto: the mean coherence to steer down to "
                                    "(0.9 mild, 0.7 strong but readable, 0.5 breaking)"),
    kl: Optional[float] = typer.Option(None, "--kl", help="With --alpha auto: calibrate to this next-token KL (nats) "
                                       "instead of coherence (cheaper)"),
    allow_other_model: bool = typer.Option(False, "--allow-other-model", help="Use a vector of another model (with --vector)"),
    top: int = typer.Option(10, "--top", min=1, help="How many candidates to print"),
    model: Optional[str] = typer.Option(None, "--model", help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub "
                                        "(default: offline, the HF cache only)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Who the model says it is: candidate identities scored by log-prob after 'Who are you?' / 'I am'.

    Without -c/--category: the balanced candidate set v1 by group (mass; prior and lift when steering).

    Scores are per-token mean log-probs unless --scoring sum. --alpha auto (or -auto, against the vector)
    picks the strength with `persona-vectors calibrate` (cached per vector, model and layer) and prints it.
    """
    import contextlib
    import math

    from .readout import (
        DEFAULT_USER_CANDIDATES,
        SCORING_MODES,
        _check_candidates,
        candidate_names,
        group_readout,
        identity_readout,
        load_candidate_set,
        load_user_controls,
        user_readout_with_controls,
    )

    # settings that cannot work fail before the model loads
    if scoring is not None and scoring not in SCORING_MODES:
        fail(f"--scoring must be one of {', '.join(SCORING_MODES)}, got {scoring!r}")
    if normalize_length and scoring == "sum":
        fail("--normalize-length contradicts --scoring sum: pass one of them")
    mode = scoring or "mean"
    flat_given = bool(candidate or category)
    if candidate_set is not None and flat_given:
        fail("--candidate-set and -c/--category are two kinds of read-out: pass one of them")
    if candidate_set is not None and user:
        fail("--candidate-set reads out the model's own identity; with --user pass -c or --target")
    if target is not None and not user:
        fail("--target needs --user (it compares P(target) under the user questions with control questions)")
    if target is not None and (question is not None or prefix is not None):
        fail("--target uses the control file's questions and prefixes: drop --question/--prefix")
    grouped = not flat_given and not user
    if robust and not grouped:
        fail("--robust needs a candidate set (drop -c/--category/--user, or pass --candidate-set)")
    auto_sign, alpha_value = _parse_alpha_option(alpha, kl, coherence)
    if vector is None and (layer or auto_sign is not None or alpha_value):
        fail("--alpha/--layer need --vector")
    if vector is not None and not layer:
        fail("--vector needs --layer (repeat for several layers)")
    if auto_sign is not None and len(layer or ()) != 1:
        fail("--alpha auto calibrates one layer: pass a single --layer")
    cands: list[str] = list(candidate or [])
    if category:
        cands += [c for c in candidate_names(category) if c not in cands]
    cset = load_candidate_set(candidate_set or "v1") if grouped else None  # a bad set fails before the model loads
    controls = load_user_controls("v1") if target is not None else None
    if not cands:
        cands = None  # type: ignore[assignment]
        if user and target is None:
            cands = list(DEFAULT_USER_CANDIDATES)
    if cands is not None:
        _check_candidates(cands + ([target] if target is not None and target not in cands else []))
    vec = None
    if vector is not None:
        from .io import load_vector

        vec = load_vector(vector)
    m = load_model_arg(model, allow_download=allow_download)
    ctx: Any = contextlib.nullcontext()
    calibration = None
    if vec is not None:
        from .io import check_vector_model
        from .steer import steer

        check_vector_model(vec, m, allow_other_model=allow_other_model)  # friendly() names --allow-other-model
        if auto_sign is not None:
            alpha_value, calibration = _auto_alpha(m, vec, layer[0], auto_sign, coherence, kl,  # type: ignore[index]
                                                   relative=relative, positions="all", quiet=as_json)
        ctx = steer(m, vec, alpha_value, layers=layer, relative=relative, allow_other_model=allow_other_model)
    steering = None if vector is None else {"vector": str(vector), "alpha": alpha_value, "layers": layer,
                                            "relative": relative}
    if steering is not None and calibration is not None:
        steering["calibration"] = calibration

    if target is not None:
        with ctx:
            u = user_readout_with_controls(m, target, cands, controls=controls, system=system, scoring=mode,  # type: ignore[arg-type]
                                           prior="auto" if vec is not None else None)
        if as_json:
            d = u.to_dict()
            if steering:
                d["steering"] = steering
            emit_json(d)
            return
        typer.echo(f"# P({target!r}) asked who the user is vs control questions ({mode} scoring, "
                   f"{len(u.candidates)} candidates)")
        ctl = "  ".join(f"{k}={v:.4f}" for k, v in u.p_controls.items())
        typer.echo(f"user questions: {u.p_user:.4f}   controls: {u.p_control:.4f} ({ctl})   "
                   f"difference: {u.difference:+.4f}")
        if u.lift_user is not None:
            typer.echo(f"lift over unsteered: user {u.lift_user:+.4f}, controls {u.lift_control:+.4f}, "
                       f"specific to the user {u.specific_lift:+.4f}")
        for it in u.to_dict()["items"]:
            typer.echo(f"{it['p_target']:8.4f}  [{it['kind']}] {it['question']!r} -> {it['prefix']!r} "
                       f"(top: {it['top']} {it['p_top']:.3f})")
        return

    if grouped:
        qs = [question] if question is not None else None
        with ctx:
            g = group_readout(m, cset, qs, prefix=prefix, system=system, scoring=mode,  # type: ignore[arg-type]
                              prior="auto" if vec is not None else None, robust=robust)
        if as_json:
            d = g.to_dict()
            if steering:
                d["steering"] = steering
            emit_json(d)
            return
        typer.echo(f"# candidate set {g.candidate_set} ({len(g.groups)} groups x {cset.group_size}), "  # type: ignore[union-attr]
                   f"{len(g.questions)} question(s), {g.prefix!r} ..., {mode} scoring")
        mass, prior, lift = g.mass, g.prior, g.lift
        if prior is not None and lift is not None:
            typer.echo(f"{'group':<20}{'mass':>8}{'prior':>8}{'lift':>9}{'ratio':>8}")
            for grp in sorted(g.groups, key=lambda x: -mass[x]):
                r = lift[grp]["ratio"]
                typer.echo(f"{grp:<20}{mass[grp]:8.4f}{prior[grp]:8.4f}{lift[grp]['diff']:+9.4f}"
                           f"{(f'{r:7.2f}x' if math.isfinite(r) else '    inf')}")
        else:
            typer.echo(f"{'group':<20}{'mass':>8}")
            for grp in sorted(g.groups, key=lambda x: -mass[x]):
                typer.echo(f"{grp:<20}{mass[grp]:8.4f}")
        cp = g.candidate_probs
        best = sorted(cp, key=lambda c: -cp[c])[:top]
        typer.echo("top candidates: " + ", ".join(f"{c} {cp[c]:.3f}" for c in best))
        typer.echo(f"top group: {g.top_group}" + (f"; top group by lift: {g.top_lift_group or 'none (no lift)'}" if prior is not None else ""))
        if g.robustness is not None:
            if g.robustness.robust:
                typer.echo("robust: yes (top group unchanged leaving out any candidate and adding "
                           + (", ".join(cset.distractors) or "no distractor groups") + ")")  # type: ignore[union-attr]
            else:
                typer.echo(f"robust: NO ({len(g.robustness.reasons)} change(s))")
                for reason in g.robustness.reasons:
                    typer.echo(f"  - {reason}")
        return

    q = question or ("Who am I?" if user else "Who are you?")
    pre = prefix if prefix is not None else ("You are" if user else "I am")
    with ctx:
        r = identity_readout(m, cands, question=q, prefix=pre, system=system, scoring=mode)
    if as_json:
        d = r.to_dict()
        if steering:
            d["steering"] = steering
        emit_json(d)
        return
    typer.echo(f"# {q!r} -> {pre!r} ...  H = {r.entropy:.3f} bits, identification = {r.bits_of_identification:.3f} "
               f"of {len(r.candidates)} candidates ({mode} scoring)")
    for name, p in r.top(top):
        typer.echo(f"{p:8.4f}  {name}")


@app.command("steer")
@friendly
def steer_command(
    vector: Path = typer.Option(..., "--vector", help="Directory of a saved vector"),
    alpha: str = typer.Option(..., "--alpha", help="Steering coefficient: raw by default (the multiplier on the "
                              "stored direction; --relative for units of the residual norm), or auto / -auto: "
                              "calibrated so that coherence falls to --coherence (or KL reaches --kl)"),
    layer: list[int] = typer.Option(..., "--layer", help="Layer to steer (repeat for several)"),
    coherence: float = typer.Option(0.7, "--coherence", help="With --alpha auto: the mean coherence to steer down to "
                                    "(0.9 mild, 0.7 strong but readable, 0.5 breaking)"),
    kl: Optional[float] = typer.Option(None, "--kl", help="With --alpha auto: calibrate to this next-token KL (nats) "
                                       "instead of coherence (cheaper)"),
    prompt: str = typer.Option("Who are you?", "--prompt", help="User prompt"),
    n: int = typer.Option(1, "--n", min=1, help="Number of generations"),
    relative: bool = typer.Option(False, "--relative", help="alpha in units of the mean residual norm at the layer "
                                  "(default: raw, like steer() in Python)"),
    positions: str = typer.Option("all", "--positions", help="all | prompt | response"),
    operator: str = typer.Option("add", "--operator", help="A registered steering operator: add | ablate | cap "
                                 "(persona_vectors.operators.register_operator adds more)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Projection threshold for --operator cap"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (default 0.7 when --n > 1)"),
    seed: int = typer.Option(0, "--seed"),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt"),
    allow_other_model: bool = typer.Option(False, "--allow-other-model", help="Use a vector of another model"),
    model: Optional[str] = typer.Option(None, "--model", help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub "
                                        "(default: offline, the HF cache only)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Generate with a saved vector added (or ablated / capped) at the given layer(s).

    --alpha is raw unless --relative. --alpha auto (or -auto, against the vector) picks the strength with
    `persona-vectors calibrate` (cached per vector, model and layer) and prints it.
    """
    import math

    from .io import check_vector_model, load_vector
    from .operators import SteerSpecError
    from .steer import SteerSpec, steer

    # settings that cannot work fail before the model loads
    auto_sign = {"auto": 1, "+auto": 1, "-auto": -1}.get(alpha.strip().lower())
    alpha_value = 0.0
    if auto_sign is None:
        try:
            alpha_value = float(alpha)
        except ValueError:
            fail(f"--alpha must be a number, auto or -auto, got {alpha!r}")
        if not math.isfinite(alpha_value):
            fail(f"--alpha must be a finite number, got {alpha}")
    else:
        if operator != "add":
            fail("--alpha auto calibrates an added vector: use it with --operator add")
        if len(layer) != 1:
            fail("--alpha auto calibrates one layer: pass a single --layer")
        if kl is None and not 0 < coherence < 1:
            fail(f"--coherence must lie strictly between 0 and 1 (e.g. 0.7), got {coherence:g}")
        if kl is not None and not (math.isfinite(kl) and kl > 0):
            fail(f"--kl must be a number > 0 (nats, e.g. 0.5), got {kl:g}")
    try:  # the steering rules live in SteerSpec.validate (operators from the registry)
        SteerSpec(None, layers=layer, positions=positions, operator=operator, relative=relative,
                  threshold=threshold).validate()
    except SteerSpecError as err:
        fail(f"--{err.field} must be one of {', '.join(err.choices)}, got {err.value!r}" if err.choices
             else f"--{err.field} {err.reason}")
    if not (math.isfinite(temperature) and temperature >= 0):
        fail(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    vec = load_vector(vector)
    m = load_model_arg(model, allow_download=allow_download)
    check_vector_model(vec, m, allow_other_model=allow_other_model)  # friendly() names --allow-other-model
    temp = temperature if (temperature > 0 or n == 1) else 0.7
    calibration = None
    if auto_sign is not None:
        from .calibrate import calibrate_alpha

        cal = calibrate_alpha(m, vec, layer[0], sign=auto_sign, positions=positions,
                              **({"target_kl": (kl,)} if kl is not None else {"target_coherence": (coherence,)}))
        level = kl if kl is not None else coherence
        chosen = cal.alpha(level, relative=relative)
        what = f"KL {level:g}" if kl is not None else f"coherence {level:g}"
        if chosen is None:
            fail(f"--alpha auto: {what} is not reached at layer {layer[0]} within |alpha_rel| <= "
                 f"{cal.settings['max_alpha']:g}; pick --alpha by hand or try another layer")
        alpha_value = float(chosen)  # type: ignore[arg-type]
        calibration = {"level": level, "metric": cal.metric, "alpha_rel": cal.alpha(level, relative=True),
                       "alpha_raw": cal.alpha(level), "cached": cal.cached}
        if not as_json:
            typer.echo(f"# alpha auto -> {alpha_value:+.4g} {'relative' if relative else 'raw'} "
                       f"(relative {calibration['alpha_rel']:+.4f}, raw {calibration['alpha_raw']:+.4g}): "
                       f"{what} at layer {layer[0]}{' (cached)' if cal.cached else ''}")
    with steer(m, vec, alpha_value, layers=layer, positions=positions, operator=operator, relative=relative,  # type: ignore[arg-type]
               threshold=threshold, allow_other_model=allow_other_model) as h:
        texts = m.generate([prompt] * n, system=system, max_new_tokens=max_new_tokens, temperature=temp, seed=seed)
        report = h.report()
    if as_json:
        d = {"prompt": prompt, "alpha": alpha_value, "relative": relative, "steering": report, "generations": texts}
        if calibration is not None:
            d["calibration"] = calibration
        emit_json(d)
        return
    raw = ", ".join(f"{r['site']}: alpha_raw={r['alpha_raw']:.4g}" for r in report if "alpha_raw" in r)
    typer.echo(f"# {vec!r}  alpha={alpha_value:g}{' (relative)' if relative else ''}  {raw}")
    for i, t in enumerate(texts):
        typer.echo(f"[{i}] {t}")


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
) -> None:
    """Run (or resume) a steering sweep from a TOML config; rows stream to a crash-safe JSONL file.

    The store is locked while the sweep runs (a second sweep on it fails with "in use by PID N"); --no-resume only
    deletes a results file this library wrote, and --out may not be the config. Rows whose steering went
    non-finite are not stored: one error line per failed (vector, layer, alpha), exit code 2 after the rest.
    """
    import warnings

    from .sweep import SweepConfig, SweepRowsNotStoredWarning, check_sweep_output, run_sweep, summarize, summary_markdown

    cfg = SweepConfig.from_toml(config)
    path = out or config.with_suffix(".jsonl")
    check_sweep_output(path, resume=resume, config_path=config)  # before the (slow) model load
    m = load_model_arg(model, allow_download=allow_download)
    j = None
    if judge:
        from .judge import EmbeddingJudge

        j = EmbeddingJudge.default()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepRowsNotStoredWarning)  # printed below as error lines
        rep = run_sweep(m, cfg, path, judge=j, resume=resume, progress=True)
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
) -> None:
    """Per (vector, layer, alpha): n, label shares with Wilson 95 % intervals, mean coherence.

    Label shares need judge labels: a sweep run with --judge stores them; for one run without, pass --judge here
    (otherwise a note says the shares are missing and why).
    """
    from .sweep import summarize, summary_markdown

    j = None
    if judge:
        from .judge import EmbeddingJudge

        j = EmbeddingJudge.default()
    s = summarize(results, judge=j)
    if as_json:
        emit_json(s)
    else:
        typer.echo(summary_markdown(s), nl=False)


@app.command("personas")
@friendly
def personas_command(
    category: Optional[str] = typer.Option(None, "--category", help="A role category, 'card' or 'facts'"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """List the persona catalogue: card personas, fact sets and roles (with the routes each supports)."""
    from .personas import list_personas

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
    route: Optional[str] = typer.Option(None, "--route", help="prompt | facts (default: the persona's first route)"),
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
    from .datasets import load_fact_set
    from .io import VectorFileError, check_save_target
    from .personas import _choose_route, extract_persona, fact_vector, persona_quality, resolve_persona

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
    m = load_model_arg(model, allow_download=allow_download)
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
    model: Optional[str] = typer.Option(None, "--model", help="HF id, local dir or .gguf (default: embedded SmolLM2-135M)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let a HF id download from the Hub "
                                        "(default: offline, the HF cache only)"),
    dims: int = typer.Option(2, "--dims", help="2 or 3"),
) -> None:
    """Interactive persona map: PCA of role vectors per layer, coloured by category, as one HTML file.

    Without --vectors the role vectors are built from the model's own answers (role prompt vs default
    assistant, every layer) and cached on disk: the first full-catalogue run generates ~430 short answers
    (roughly 10-20 minutes on 2 CPU cores), later runs take seconds. The default assistant (every default
    system prompt, the origin of these differences) is drawn as the point 'assistant', and the assistant axis
    is the default assistant minus the mean of the roles (personas.RoleMeans.axis).
    """
    import re

    import torch

    from .plotting import map_from_vectors, overlay_results, write_html
    from .space import load_role_vectors, synthetic_role_vectors
    from .vector import PersonaVector

    if dims not in (2, 3):
        fail("--dims must be 2 or 3")
    check_output_file(out, "--out")
    if results is not None and not results.is_file():
        fail(f"No results file {results}: pass the JSONL written by `persona-vectors sweep`")
    if vectors is not None and demo_synthetic:
        fail("pass at most one of --vectors DIR and --demo-synthetic")
    if vectors is not None:
        role_vectors = load_role_vectors(vectors)
    elif demo_synthetic:
        role_vectors = synthetic_role_vectors(include_assistant=True)
    else:
        from .datasets import DataError, get_role
        from .personas import role_means
        from .plotting import ASSISTANT_NAMES

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
        m = load_model_arg(model, allow_download=allow_download)
        n_roles = len(wanted) if wanted else "all catalogue"
        typer.echo(f"building role vectors ({n_roles} roles, {questions} questions x {prompts} prompts; cached)", err=True)
        rm = role_means(m, wanted or None, n_questions=questions, n_prompts=prompts, layers="all",
                        progress=lambda msg: typer.echo(f"  {msg}", err=True))
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

    from .export import ExportSitesDroppedWarning, export_control_vector_gguf, exportable_sites
    from .vector import PersonaVector

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


judge_app = typer.Typer(no_args_is_help=True, help="The archetype judge: validate it on labelled text.")
app.add_typer(judge_app, name="judge")


@judge_app.command("validate")
@friendly
def judge_validate_command(
    labelled: Optional[Path] = typer.Option(None, "--labelled", help="JSONL of {\"text\", \"label\"} objects (default: "
                                            "the shipped real-generation corpus, by crossed grouped CV)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Accuracy, per-label precision/recall and the confusion matrix of the judge against labelled text.

    With --labelled FILE the shipped judge is scored on your file (e.g. your model's generations, labelled
    under docs/judge_rubric.md). Without it, the judge is cross-validated on the shipped corpus of real
    steered generations, with no direction and no question in both the training and the test folds.
    """
    from .judge_validation import crossed_group_cv, format_validation_markdown, validate_labelled_file

    if labelled is not None:
        if not labelled.is_file():
            fail(f"--labelled {labelled} does not exist: pass a JSONL file of {{\"text\", \"label\"}} objects")
        res = validate_labelled_file(labelled)
        title = f"Judge on {labelled}"
    else:
        res = crossed_group_cv()
        res = {k: v for k, v in res.items() if k not in ("oof_proba", "tested_index", "fold_sizes")}
        title = "Judge on real generations (crossed grouped CV)"
    if as_json:
        emit_json(res)
    else:
        typer.echo(format_validation_markdown(res, title), nl=False)


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

    from .calibrate import _levels, _site, calibrate_alpha, layer_scan
    from .io import check_vector_model, load_vector

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
    m = load_model_arg(model, allow_download=allow_download)
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
