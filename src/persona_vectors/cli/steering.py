"""Commands that steer a model with a saved vector and read the effect: ``identity`` (identity read-outs,
optionally under steering) and ``steer`` (generate under steering), with ``--alpha auto`` calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from . import base
from .base import app, emit_json, fail, friendly


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
    from ..calibrate import calibrate_alpha

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

    from ..readout import (
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
        from ..io import load_vector

        vec = load_vector(vector)
    m = base.load_model_arg(model, allow_download=allow_download)
    ctx: Any = contextlib.nullcontext()
    calibration = None
    if vec is not None:
        from ..io import check_vector_model
        from ..steer import steer

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

    from ..io import check_vector_model, load_vector
    from ..operators import SteerSpecError
    from ..steer import SteerSpec, steer

    # settings that cannot work fail before the model loads
    auto_sign, alpha_value = _parse_alpha_option(alpha, kl, coherence)
    if auto_sign is not None:
        if operator != "add":
            fail("--alpha auto calibrates an added vector: use it with --operator add")
        if len(layer) != 1:
            fail("--alpha auto calibrates one layer: pass a single --layer")
    try:  # the steering rules live in SteerSpec.validate (operators from the registry)
        SteerSpec(None, layers=layer, positions=positions, operator=operator, relative=relative,
                  threshold=threshold).validate()
    except SteerSpecError as err:
        fail(f"--{err.field} must be one of {', '.join(err.choices)}, got {err.value!r}" if err.choices
             else f"--{err.field} {err.reason}")
    if not (math.isfinite(temperature) and temperature >= 0):
        fail(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    vec = load_vector(vector)
    m = base.load_model_arg(model, allow_download=allow_download)
    check_vector_model(vec, m, allow_other_model=allow_other_model)  # friendly() names --allow-other-model
    temp = temperature if (temperature > 0 or n == 1) else 0.7
    calibration = None
    if auto_sign is not None:
        alpha_value, calibration = _auto_alpha(m, vec, layer[0], auto_sign, coherence, kl, relative=relative,
                                               positions=positions, quiet=as_json)
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
