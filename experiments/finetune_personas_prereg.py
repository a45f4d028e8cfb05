"""Pre-registered rerun 1 of the finetune experiment: does preventative steering stop a finetuning trait at no
task cost?

    python experiments/finetune_personas_prereg.py [--quick] [--full] [--resume] [--out DIR] [--threads N]
    python experiments/finetune_personas_prereg.py --report-only [--out DIR]

The plan is ``experiments/prereg/finetune_personas.md``, committed before the run: this script reads every
number from the plan's TOML block (§7), records the plan's commit (a default run refuses an uncommitted or
edited plan) and computes the verdict with the plan's decision rule (:func:`finetune_prereg_lib.verdict`).

Default: ``voyager_telemetry`` (train on i % 5 != 4, hold out the 35 others); 7 conditions (plain,
preventative α ∈ {0.5, 1, 2, 4}, inoculation, CAFT) × 3 seeds = 21 LoRA finetunes with v0.1's recipe. Every
model (and the base, once) is evaluated with **no steering hook** (recorded per evaluation): held-out
teacher-forced NLL and greedy task accuracy, the marker rate on the 49 evaluation questions, general
perplexity, and the shift along an independent vector (voyager_1 prompt 4, extraction questions 9–24,
layer 22). ``--full`` adds ``colours_red``, ``colours_green`` and ``bitcoin_prices`` (secondary).

Stages (each resumable with ``--resume``; records are appended as each unit is measured):
1. ``vector`` records: the steering vector and the independent vector of a dataset (norms, cosines).
2. ``base_eval`` records: the base model's evaluation, per dataset.
3. ``finetune`` records: one per (dataset, condition, α, seed): training log and the hook-off evaluation.

``results.json`` = :func:`summarize` of the records and the config; ``report.md`` = :func:`render`;
``python experiments/recompute.py <run dir>`` replays both. A default run into the default directory copies
the report to ``docs/finetune_personas_prereg.md``; ``--quick`` (1 seed, plain / preventative α 2 /
inoculation / CAFT, 4 steps of batch 2 on 8 training examples, 4 questions, 4 held-out dates, 5 general
sentences, shorter answers, quick-budget vectors) never gives a verdict and never writes docs.
"""

from __future__ import annotations

import hashlib
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import finetune_prereg_lib as L  # noqa: E402
import prereg_plan as P  # noqa: E402
import records as RC  # noqa: E402
import run_dir as R  # noqa: E402
from finetune_personas import GENERAL_TEXT  # noqa: E402  (v0.1's 20 general sentences)
from finetune_prereg_lib import verdict  # noqa: E402,F401  (the plan's §6 rule; re-exported)

NAME = "finetune_personas_prereg"
PREREG = "experiments/prereg/finetune_personas.md"


# ============================================================================================ plan and config
def read_plan(path: str | Path = PREREG) -> dict[str, Any]:
    """The parameters of this experiment's plan (:func:`prereg_plan.read_plan`)."""
    return P.read_plan(path)


def plan_commit(path: str | Path = PREREG) -> dict[str, Any]:
    """The plan's last commit, dirtiness and sha256 (:func:`prereg_plan.plan_commit`)."""
    return P.plan_commit(path)


@dataclass
class Config:
    """One run: the plan's parameters (``plan``) plus run settings. ``preset()`` fills it from the plan."""

    mode: str = "default"  # "default", "full" or "quick"
    out: str = "runs/finetune_personas_prereg"
    threads: int = 0
    plan: dict[str, Any] = field(default_factory=dict)
    n_questions: Optional[int] = None  # trait questions (None: the plan's n_trait_questions)
    n_heldout: Optional[int] = None  # held-out examples evaluated (None: all)
    steps: Optional[int] = None  # None: clamp(ceil(epochs × n_train / batch), min, max)
    n_train: Optional[int] = None  # training examples used (None: the whole training split)
    n_sentences: Optional[int] = None  # general sentences (None: all 20)
    deviations: list[str] = field(default_factory=list)

    @classmethod
    def preset(cls, quick: bool = False, full: bool = False, out: Optional[str] = None, threads: int = 0) -> "Config":
        """The pre-registered configuration (``full``: the four datasets) or the smoke test (``quick``)."""
        plan = read_plan()
        cfg = cls(plan=dict(plan), threads=threads)
        if full:
            cfg.mode, cfg.plan["datasets"] = "full", list(plan["full_datasets"])
            cfg.out = "runs/finetune_personas_prereg_full"
        if quick:
            cfg.mode, cfg.out = "quick", "runs/finetune_personas_prereg_quick"
            cfg.plan.update(seeds=plan["seeds"][:1], conditions=list(plan["conditions"]), preventative_alphas=[2.0],
                            vector_budget="quick", ind_questions=[plan["ind_questions"][0], plan["ind_questions"][0] + 2],
                            batch_size=2, max_new_tokens=8, task_max_new_tokens=6)
            cfg.n_questions, cfg.n_heldout, cfg.steps, cfg.n_train, cfg.n_sentences = 4, 4, 4, 8, 5
        cfg.out = out or cfg.out
        cfg.deviations = plan_deviations(cfg.plan)
        return cfg


def plan_deviations(p: Mapping[str, Any]) -> list[str]:
    """Readings of points the plan leaves open (recorded in every run's config so the report lists them)."""
    return [
        "reading (flags, §5): the (iii) 'general cost' and (iv) 'moves along v_ind' flags are computed for every "
        "tuned condition; the verdict line prints those of α_ref (the plan names no condition)",
        "reading (inoculation NLL with its prompt, §3 (i)): recorded per held-out example and reported descriptively "
        "(mean over seeds), without a bootstrap",
        "reading (per-seed R, §3): R is pooled as the ratio of bootstrapped mean NLL differences (§5); per-seed R is "
        "printed as a descriptive column",
    ]


def steps_for(n_train: int, p: Mapping[str, Any]) -> int:
    """Plan §2: clamp(ceil(epochs × n_train / batch), min_steps, max_steps)."""
    return max(int(p["min_steps"]), min(int(p["max_steps"]), math.ceil(p["epochs"] * n_train / p["batch_size"])))


# ============================================================================================ measurement
def active_hooks(model: Any) -> list[str]:
    """Hook points of the model with any hook attached (empty: no steering hook is active)."""
    from persona_vectors.models import active_hook_points

    return active_hook_points(model)


def heldout_nll(model: Any, convs: Sequence[Any], inoculation_prompt: Optional[str] = None,
                batch_size: int = 16) -> list[dict[str, Any]]:
    """Teacher-forced NLL of each conversation's final answer (+ end-of-turn), as the training loss:
    ``[{"nll_sum", "n_tokens"}]`` per conversation."""
    import torch

    from persona_vectors.finetune import build_example, collate

    pad = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
    out = []
    for i in range(0, len(convs), batch_size):
        ex = [build_example(model, c, inoculation_prompt=inoculation_prompt) for c in convs[i: i + batch_size]]
        b = collate(ex, pad, model.device)
        with torch.no_grad():
            logits = model.hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                              use_cache=False).logits[:, :-1].float()
        tgt = b.labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                ignore_index=-100, reduction="none").reshape(tgt.shape)
        mask = tgt != -100
        for j in range(len(ex)):
            out.append({"nll_sum": float(nll[j][mask[j]].double().sum()), "n_tokens": int(mask[j].sum())})
    return out


def evaluate(model: Any, ctx: Mapping[str, Any], base_texts: Optional[list[str]] = None,
             inoculation_prompt: Optional[str] = None) -> dict[str, Any]:
    """The hook-off evaluation of the model as it stands (plan §3): ``task`` (per held-out example), ``trait``
    (per question: answer, marker, words, projections), ``ppl`` (per sentence), and the hooks seen active."""
    import torch

    from persona_vectors import Site
    from persona_vectors.monitor import activation_means
    from persona_vectors.readout import coherence

    p, held = ctx["plan"], ctx["heldout"]
    hooks_before = active_hooks(model)
    task = heldout_nll(model, held)
    answers = model.generate([c[0]["content"] for c in held], max_new_tokens=int(p["task_max_new_tokens"]),
                             temperature=0.0)
    for r, c, a in zip(task, held, answers):
        truth = L.parse_au(c[-1]["content"]) if ctx["accuracy"] else None
        r.update(answer=a, parsed=L.parse_au(a) if ctx["accuracy"] else None,
                 correct=(float(L.au_correct(a, truth, p["acc_tol_abs_au"], p["acc_tol_rel"]))
                          if truth is not None else None))
    out: dict[str, Any] = {"task": task}
    if inoculation_prompt:
        out["task_with_prompt"] = heldout_nll(model, held, inoculation_prompt)
    s16, s22 = Site(int(p["steer_layer"])), Site(int(p["ind_layer"]))
    qs = ctx["questions"]
    am = activation_means(model, qs, [s16, s22], positions=("response",), max_new_tokens=int(p["max_new_tokens"]))
    tf = am if base_texts is None else activation_means(model, qs, [s16, s22], positions=("response",),
                                                        responses=base_texts)

    def proj(a: Any, s: Any, u: Any) -> list[float]:
        return (a.samples["response"][s].to(torch.float64) @ u).tolist()

    oi, os_, ti, ts = (proj(am, s22, ctx["u_ind"]), proj(am, s16, ctx["u_steer"]), proj(tf, s22, ctx["u_ind"]),
                       proj(tf, s16, ctx["u_steer"]))
    out["trait"] = [{"question_id": i, "text": t, "marker": float(L.marker_match(t, ctx["marker"])),
                     "words": len(t.split()), "own_ind": oi[i], "own_steer": os_[i], "tf_ind": ti[i], "tf_steer": ts[i]}
                    for i, t in enumerate(am.responses or [])]
    out["ppl"] = [{"sentence_id": i, "perplexity": r.perplexity, "n_tokens": r.n_tokens,
                   "nll_sum": math.log(r.perplexity) * r.n_tokens} for i, r in enumerate(coherence(model, ctx["sentences"]))]
    out["hooks_active"] = sorted(set(hooks_before) | set(active_hooks(model)))
    return out


def build_vectors(model: Any, dataset: str, p: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(steering vector, independent vector, note): ``extract_persona(persona, "prompt")`` and the
    system-prompt vector of the role's prompt ``ind_prompt_index`` vs the default-assistant prompts on the
    extraction questions ``ind_questions`` (answers and activations through the library's caches)."""
    from persona_vectors.datasets import get_role
    from persona_vectors.extract import vector_from_recordings
    from persona_vectors.personas import extract_persona
    from persona_vectors.personas.catalogue import default_system_prompts, extraction_questions
    from persona_vectors.personas.compute import _prompt_side, _sites
    from persona_vectors.personas.store import _caches

    t0 = time.perf_counter()
    res = extract_persona(model, p["personas"][dataset], "prompt", quick=p["vector_budget"] == "quick", progress=False)
    t1 = time.perf_counter()
    role = get_role(p["roles"][dataset])
    a, b = p["ind_questions"]
    qs = extraction_questions()[a:b]
    sites, caches = _sites(model, "all"), _caches(model, True)
    kw = dict(max_new_tokens=int(p["ind_max_new_tokens"]), caches=caches, progress=None)
    pos, _ = _prompt_side(model, [role.prompts[int(p["ind_prompt_index"])]], qs, sites, **kw)
    neg, _ = _prompt_side(model, default_system_prompts(), qs, sites, **kw)
    ind = vector_from_recordings(model, pos, neg, method="mean_diff", name=f"{role.name}_ind", route="prompt")
    steer = res.vector
    l16, l22 = int(p["steer_layer"]), int(p["ind_layer"])
    note = {"steer": {"source": f"extract_persona({p['personas'][dataset]!r}, 'prompt', quick={p['vector_budget'] == 'quick'})",
                      "cached": res.cached, "quality_layer": res.quality.layer.layer,
                      "norm": {str(l): float(steer[l].norm()) for l in (l16, l22)}, "seconds": t1 - t0},
            "ind": {"source": f"{role.name} prompt {int(p['ind_prompt_index']) + 1} vs default prompts, extraction "
                              f"questions {a + 1}-{b}, {p['ind_max_new_tokens']} tokens",
                    "norm": {str(l): float(ind[l].norm()) for l in (l16, l22)},
                    "seconds": time.perf_counter() - t1},
            "cos_ind_steer": {str(l): C.cos(ind[l], steer[l]) for l in (l16, l22)}}
    return steer, ind, note


def finetune_cfg(p: Mapping[str, Any], dataset: str, cond: str, alpha: Optional[float], seed: int, steps: int,
                 steer: Any) -> Any:
    """The :class:`FinetuneConfig` of one finetune (v0.1's recipe, plan §2)."""
    from persona_vectors.datasets import get_role
    from persona_vectors.finetune import FinetuneConfig, PreventativeSteering

    layer = [int(p["steer_layer"])]
    prev = inoc = None
    if cond == "preventative":
        prev = PreventativeSteering(steer, alpha=float(alpha), layers=layer, operator="add")  # type: ignore[arg-type]
    elif cond == "caft":
        prev = PreventativeSteering(steer, alpha=float(p["caft_alpha"]), layers=layer, operator="ablate")
    elif cond == "inoculation":
        inoc = get_role(p["roles"][dataset]).prompts[int(p["inoculation_prompt_index"])]
    elif cond != "plain":
        raise ValueError(f"unknown condition {cond!r}")
    return FinetuneConfig(lora_r=int(p["lora_r"]), lora_alpha=float(p["lora_alpha"]), lr=float(p["lr"]),
                          max_steps=steps, batch_size=int(p["batch_size"]), seed=seed, preventative=prev,
                          inoculation_prompt=inoc)


# ============================================================================================ run
def _code_sha() -> str:
    h = hashlib.sha256()
    for f in (Path(__file__), Path(L.__file__)):
        h.update(f.read_bytes())
    return h.hexdigest()


def run(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """All stages (see the module docstring); returns the results."""
    from persona_vectors.datasets import load_finetune_dataset, load_questions
    from persona_vectors.finetune import finetune

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prereg = plan_commit()
    P.require_committed(prereg, cfg.mode)
    old = R.carry_resume(out, cfg, _code_sha(), resume)
    records = RC.Records(out / RC.RECORDS, fresh=not resume)
    t0 = time.perf_counter()
    model = C.load(cfg)
    p = cfg.plan
    questions = [q.text for q in load_questions("evaluation")][: cfg.n_questions or int(p["n_trait_questions"])]
    config = _config_doc(cfg, model, prereg, questions)
    if old is not None:
        config["sessions"] = old.get("sessions", []) + config["sessions"]
    RC.write_json(out / RC.CONFIG, config)
    import torch

    from persona_vectors import Site

    for dataset in p["datasets"]:
        convs = load_finetune_dataset(dataset)
        mod = int(p["heldout_mod"][dataset])
        held = [convs[i] for i in L.heldout_indices(len(convs), mod)][: cfg.n_heldout]
        train = [convs[i] for i in L.train_indices(len(convs), mod)]
        steps = cfg.steps or steps_for(len(train), p)
        train = train[: cfg.n_train]
        steer, ind, note = build_vectors(model, dataset, p)
        done_v = [r for r in RC.of_kind(records.rows, "vector") if r["dataset"] == dataset]
        if not done_v:
            records.add("vector", dataset=dataset, **note)
        elif any(abs(done_v[0][k]["norm"][l] - note[k]["norm"][l]) > 1e-6 for k in ("steer", "ind") for l in note[k]["norm"]):
            cfg.deviations.append(f"{dataset}: the vectors rebuilt on resume differ from the recorded ones")
        C.say(f"{dataset}: vectors ({note['steer']['seconds']:.0f} + {note['ind']['seconds']:.0f} s); cos(v_ind, v_steer) "
              + ", ".join(f"L{k} {v:+.3f}" for k, v in note["cos_ind_steer"].items()))
        ctx = {"plan": p, "heldout": held, "sentences": list(GENERAL_TEXT[: cfg.n_sentences]), "questions": questions, "marker": p["markers"][dataset],
               "accuracy": dataset == "voyager_telemetry",
               "u_steer": C.unit(steer[Site(int(p["steer_layer"]))]), "u_ind": C.unit(ind[Site(int(p["ind_layer"]))])}
        base = next((r for r in RC.of_kind(records.rows, "base_eval") if r["dataset"] == dataset), None)
        if base is None:
            t = time.perf_counter()
            ev = evaluate(model, ctx)
            base = records.add("base_eval", dataset=dataset, seconds=time.perf_counter() - t, **ev)
            C.say(f"{dataset}: base evaluated in {base['seconds']:.0f} s")
        base_texts = [r["text"] for r in base["trait"]]
        done = {(r["dataset"], r["condition"], r["alpha"], r["seed"]) for r in RC.of_kind(records.rows, "finetune")}
        units = [(c, a) for c in p["conditions"] for a in (p["preventative_alphas"] if c == "preventative" else [None])]
        for seed in p["seeds"]:
            for cond, alpha in units:
                if (dataset, cond, alpha, seed) in done:
                    continue
                fcfg = finetune_cfg(p, dataset, cond, alpha, seed, steps, steer)
                t = time.perf_counter()
                with finetune(model, train, fcfg, progress=False) as res:
                    t_eval = time.perf_counter()
                    ev = evaluate(model, ctx, base_texts, fcfg.inoculation_prompt)
                    eval_s = time.perf_counter() - t_eval
                if active_hooks(model):
                    raise RuntimeError(f"hooks left active after a finetune: {active_hooks(model)[:3]}")
                records.add("finetune", dataset=dataset, condition=cond, alpha=alpha, seed=seed, steps=res.steps,
                            n_train=len(train), losses=res.losses, step_seconds=res.step_seconds,
                            train_seconds=res.seconds, eval_seconds=eval_s, finetune_config=fcfg.to_json(),
                            preventative_report=res.preventative_report, **ev)
                T = sum(r["marker"] for r in ev["trait"]) / max(1, len(ev["trait"]))
                nll = sum(r["nll_sum"] for r in ev["task"]) / sum(r["n_tokens"] for r in ev["task"])
                C.say(f"{dataset} {L.cond_key(cond, alpha)} seed {seed}: {res.steps} steps, loss {res.losses[0]:.2f}"
                      f"->{res.losses[-1]:.2f}, held-out NLL {nll:.3f}, T {T:.2f} "
                      f"({time.perf_counter() - t:.0f} s: train {res.seconds:.0f}, eval {eval_s:.0f})")
    config["sessions"][-1]["seconds"] = round(time.perf_counter() - t0, 1)
    config["config"]["deviations"] = cfg.deviations
    RC.write_json(out / RC.CONFIG, config)
    return report(out)


def _config_doc(cfg: Config, model: Any, prereg: dict[str, Any], questions: Sequence[str]) -> dict[str, Any]:
    import torch

    from persona_vectors.vector import library_version

    return {"experiment": NAME, "config": asdict(cfg), "prereg": prereg, "library_version": library_version(),
            "code_sha256": _code_sha(),
            "model": {"model_id": model.info.model_id, "fingerprint": model.info.fingerprint,
                      "n_layers": model.n_layers, "d_model": model.d_model},
            "questions": list(questions), "general_sentences": len(GENERAL_TEXT),
            "sessions": [{"started": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads()}],
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), **RC.provenance()}}


# ============================================================================================ analysis
def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, from the records and the config alone (no model). Re-derived from the
    per-item records: NLLs, accuracies, marker rates, words, perplexities, projection shifts and all their
    crossed-bootstrap intervals, α*, the control, H2 labels, flags, verdicts, runtimes. Carried through:
    vector notes (norms, cosines) and training losses."""
    cfg = config["config"]
    p, quick = cfg["plan"], cfg["mode"] == "quick"
    out: dict[str, Any] = {"datasets": {}, "hooks_off_all_evals": True, "n_evaluations": 0}
    for dataset in p["datasets"]:
        base = next((r for r in RC.of_kind(records, "base_eval") if r["dataset"] == dataset), None)
        fts = [r for r in RC.of_kind(records, "finetune") if r["dataset"] == dataset]
        if base is None:
            continue
        evals = {(L.cond_key(r["condition"], r["alpha"]), r["seed"]): r for r in fts}
        for r in [base] + fts:
            out["n_evaluations"] += 1
            out["hooks_off_all_evals"] &= not r["hooks_active"]
        res = L.analyse_dataset(evals, base, p, quick)
        vec = next((r for r in RC.of_kind(records, "vector") if r["dataset"] == dataset), None)
        res["vector"] = None if vec is None else {k: vec[k] for k in ("steer", "ind", "cos_ind_steer")}
        res["training"] = {f"{L.cond_key(r['condition'], r['alpha'])}/seed{r['seed']}": {
            "steps": r["steps"], "first_loss": r["losses"][0], "final_loss": r["losses"][-1],
            "train_seconds": r["train_seconds"], "eval_seconds": r["eval_seconds"],
            "seconds_per_step": r["train_seconds"] / max(1, r["steps"])} for r in fts}
        inoc = [r for r in fts if r["condition"] == "inoculation" and r.get("task_with_prompt")]
        res["inoculation_nll_with_prompt"] = (
            sum(sum(x["nll_sum"] for x in r["task_with_prompt"]) / sum(x["n_tokens"] for x in r["task_with_prompt"])
                for r in inoc) / len(inoc)) if inoc else None
        res["runtime_s"] = {"vectors": (vec["steer"]["seconds"] + vec["ind"]["seconds"]) if vec else None,
                            "base_eval": base["seconds"], "train": sum(r["train_seconds"] for r in fts),
                            "eval": sum(r["eval_seconds"] for r in fts), "n_finetunes": len(fts)}
        if "error" in res:
            out["datasets"][dataset] = res
            continue
        res["samples"] = {k: [t["text"] for t in (base if k == "base" else evals[(k, res["seeds"][0])])["trait"][:3]]
                          for k in ["base"] + res.get("conditions", [])}
        out["datasets"][dataset] = res
    first = p["datasets"][0]
    v = out["datasets"].get(first, {}).get("verdict")
    out["verdict"] = {"dataset": first, **(v or {"word": "NO VERDICT (no complete evaluation)"})}
    if quick:
        out["verdict"]["word"] = "NO VERDICT (quick mode: a smoke test, not the pre-registered run)"
    elif not out["hooks_off_all_evals"]:
        out["verdict"]["word"] = "NO VERDICT (a steering hook was active during an evaluation)"
    return out


# ============================================================================================ report
def _n(x: Optional[float], nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _iv(v: Optional[Mapping[str, Any]], nd: int = 3, pct: bool = False) -> str:
    if not v or v.get("est") is None:
        return "–"
    f = (lambda x: "–" if x is None else f"{100 * x:.{max(0, nd - 2)}f}") if pct else (lambda x: _n(x, nd))
    return f"{f(v['est'])} [{f(v['lo'])}, {f(v['hi'])}]" + (" %" if pct else "")


def verdict_line(res: Mapping[str, Any]) -> str:
    """Plan §6's verdict line: word; α*; R and T of α*, plain, inoculation, CAFT; H2 labels; flags."""
    v, rows = res["verdict"], res["rows"]
    ref = v["alpha_ref"]
    rk = None if ref is None else f"prev_{float(ref)}"
    parts = [f"**{v['word']}**", f"α* = {v['alpha_star'] if v['alpha_star'] is not None else 'none'}"
             + ("" if v["alpha_star"] is not None else f" (α_ref = {ref})")]
    for k in [rk, "plain", "inoculation", "caft"]:
        if k in rows:
            r = rows[k]
            parts.append(f"{k}: R {_iv(r.get('R'), 2) if k != 'plain' else '1 (by definition)'}, "
                         f"T {_iv(r['T'], 2, pct=True)}")
    for o, h in res["h2"].items():
        parts.append(f"vs {o}: trait {h['trait']['label']}, retention {h['retention']['label']}")
    if rk in rows:
        fl = rows[rk]["flags"]
        parts.append("flags: " + (", ".join(n for n, on in (("general cost", fl["general_cost"]),
                                                            ("moves along v_ind", fl["moves_along_v_ind"])) if on)
                                  or "none"))
    return "; ".join(parts) + "."


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report, from the results and the config only."""
    cfg, pr = config["config"], config["prereg"]
    p = cfg["plan"]
    Ls = [f"# Finetune personas, pre-registered rerun 1 ({cfg['mode']} run)", "",
          f"Plan: [`{pr['path']}`](../{pr['path']}) at commit `{(pr['commit'] or 'uncommitted')[:12]}`"
          f"{' (EDITED since)' if pr['dirty'] else ''} (sha256 {pr['sha256'][:12]}). Code: commit "
          f"`{(config['environment'].get('git_commit') or '?')[:12]}`. Model: {config['model']['model_id']} "
          f"({config['model']['fingerprint']}).", "",
          f"**H1 verdict ({results['verdict']['dataset']}, computed from the plan's §6 rule): "
          f"{results['verdict']['word']}.**", "",
          "Deviations and readings of the plan: " + ("; ".join(cfg["deviations"]) if cfg["deviations"] else "none") + ".",
          "", f"Every evaluation ran with no library steering hook active: "
          f"{'yes' if results['hooks_off_all_evals'] else 'NO'} ({results['n_evaluations']} evaluations checked).", "",
          f"Seeds {p['seeds']}; {len(config['questions'])} evaluation questions; intervals: crossed cluster bootstrap "
          f"({p['n_boot']} resamples, percentile, {int(100 * p['ci_level'])} %) over items × seeds.", ""]
    for d, res in results["datasets"].items():
        Ls += [f"## {d}" + ("" if d == results["verdict"]["dataset"] else " (secondary)"), ""]
        if "error" in res:
            Ls += [f"Not analysed: {res['error']}.", ""]
            continue
        Ls += ["Verdict line: " + verdict_line(res), ""]
        c = res["control"]
        Ls += [f"Control C: upper95(NLL_plain − NLL_base) = {_n(c['nll_diff_hi'])} (< 0 needed), lower95(T_plain − "
               f"T_base) = {_n(c['trait_diff_lo'])} (≥ {p['control_min_trait']} needed): "
               f"{'passed' if c['ok'] else 'FAILED'}.", ""]
        if res["missing_conditions"]:
            Ls += [f"Conditions missing or incomplete (left out): {', '.join(res['missing_conditions'])}.", ""]
        u = res["units"]["task"]
        Ls += [f"Bootstrap units: {' × '.join(f'{k} ({n})' for k, n in u['n_levels'].items())}.", "",
               "### Task, trait and general perplexity (hook off)", ""]
        hdr = ["condition", "held-out NLL", "retention R", "accuracy", "trait T", "D = T − T_plain", "words / base",
               "ppl", "ppl / plain"]
        rows = []
        for k, r in res["rows"].items():
            rows.append([k, _iv(r["NLL"]), _iv(r.get("R"), 2), _iv(r["acc"], 2, pct=True) if r["acc"]["est"] is not None
                         else "–", _iv(r["T"], 2, pct=True), _iv(r.get("D"), 2, pct=True),
                         _iv(r.get("wordsratio"), 2), _iv(r["ppl"], 2), _iv(r.get("pplratio"), 3)])
        Ls += [C.md_table(hdr, rows), ""]
        if res["inoculation_nll_with_prompt"] is not None:
            Ls += [f"Inoculation's held-out NLL with its prompt (descriptive): {_n(res['inoculation_nll_with_prompt'])}.", ""]
        Ls += ["### Shifts (tuned − base projection, mean over questions)", "",
               "Independent vector v_ind at layer " + str(p["ind_layer"]) + ": own answers and teacher-forced base "
               "answers; steering vector at layer " + str(p["steer_layer"]) + " (v0.1's read-out, **biased**: it is "
               "the vector added in training).", ""]
        rows = [[k, _iv(r["shift_ind_own"]), _iv(r["shift_ind_tf"]), _iv(r["shift_steer_own"]),
                 ", ".join(n for n, on in r["flags"].items() if on) or "–"]
                for k, r in res["rows"].items() if k != "base"]
        Ls += [C.md_table(["condition", "v_ind own", "v_ind teacher-forced", "v_steer own (biased)", "flags"], rows), ""]
        vec = res["vector"]
        if vec:
            Ls += ["cos(v_ind, v_steer): " + ", ".join(f"layer {k} {v:+.3f}" for k, v in vec["cos_ind_steer"].items())
                   + f". v_ind: {vec['ind']['source']}; v_steer: {vec['steer']['source']}.", ""]
        Ls += ["### Per α (the decision rule's inputs)", "",
               C.md_table(["α", "lower95 R", "upper95 R", "lower95 D", "upper95 D"],
                          [[a, _n(v["R_lo"]), _n(v["R_hi"]), _n(v["D_lo"]), _n(v["D_hi"])]
                           for a, v in res["per_alpha"].items()]), ""]
        if res["h2"]:
            Ls += ["### H2 at α_ref = " + str(res["verdict"]["alpha_ref"]), "",
                   C.md_table(["vs", "T_prev − T_other", "label", "R_prev − R_other", "label"],
                              [[o, _iv(h["trait"], 3), h["trait"]["label"], _iv(h["retention"], 3), h["retention"]["label"]]
                               for o, h in res["h2"].items()]), ""]
        Ls += ["### Per seed (descriptive)", "",
               C.md_table(["seed"] + [f"{k} NLL / R / T" for k in res["conditions"]],
                          [[s] + [f"{_n(v['NLL'])} / {_n(v['R'], 2)} / {_n(v['T'], 2)}" for v in row.values()]
                           for s, row in res["per_seed"].items()]), ""]
        rt = res["runtime_s"]
        Ls += ["### Runtime (measured)", "",
               f"Vectors {_n(rt['vectors'], 0)} s; base evaluation {_n(rt['base_eval'], 0)} s; {rt['n_finetunes']} "
               f"finetunes: training {_n(rt['train'], 0)} s, evaluation {_n(rt['eval'], 0)} s.", "",
               C.md_table(["finetune", "steps", "loss first → last", "train s", "s/step", "eval s"],
                          [[k, t["steps"], f"{t['first_loss']:.2f} → {t['final_loss']:.2f}", f"{t['train_seconds']:.0f}",
                            f"{t['seconds_per_step']:.2f}", f"{t['eval_seconds']:.0f}"] for k, t in res["training"].items()]),
               "", "Sample answers (first seed, first 3 questions):", ""]
        for k, texts in res["samples"].items():
            Ls.append(f"- {k}: " + " | ".join(C.clip(t, 90) for t in texts))
        Ls.append("")
    return "\n".join(Ls).rstrip() + "\n"


def figure(results: Mapping[str, Any], path: Path) -> Optional[Path]:
    """Plan §4's trade-off figure (self-contained HTML): held-out NLL (x) vs trait rate (y) per method, with
    intervals; preventative as a curve over α (0 = plain)."""
    import plotly.graph_objects as go

    from persona_vectors.plotting.output import write_html

    res = results["datasets"].get(results["verdict"]["dataset"])
    if not res or "rows" not in res:
        return None
    rows = res["rows"]

    def pt(k: str) -> dict[str, Any]:
        r = rows[k]
        return {"x": r["NLL"]["est"], "y": r["T"]["est"], "ex": [r["NLL"]["hi"] - r["NLL"]["est"]],
                "exm": [r["NLL"]["est"] - r["NLL"]["lo"]], "ey": [r["T"]["hi"] - r["T"]["est"]],
                "eym": [r["T"]["est"] - r["T"]["lo"]]}

    fig = go.Figure()
    curve = ["plain"] + [k for k in rows if k.startswith("prev_")]
    pts = [pt(k) for k in curve]
    fig.add_trace(go.Scatter(x=[q["x"] for q in pts], y=[q["y"] for q in pts], mode="lines+markers+text",
                             text=["α 0"] + [k[5:] for k in curve[1:]], name="preventative (α)",
                             error_x={"type": "data", "array": [q["ex"][0] for q in pts], "arrayminus": [q["exm"][0] for q in pts]},
                             error_y={"type": "data", "array": [q["ey"][0] for q in pts], "arrayminus": [q["eym"][0] for q in pts]}))
    for k in ("inoculation", "caft", "base"):
        if k in rows:
            q = pt(k)
            fig.add_trace(go.Scatter(x=[q["x"]], y=[q["y"]], mode="markers", name=k,
                                     error_x={"type": "data", "array": q["ex"], "arrayminus": q["exm"]},
                                     error_y={"type": "data", "array": q["ey"], "arrayminus": q["eym"]}))
    fig.update_layout(template="plotly_white", width=760, height=520, xaxis_title="held-out task NLL per token",
                      yaxis_title="trait rate T (marker)", title=f"{results['verdict']['dataset']}: task vs trait (hook off)")
    return write_html(fig, path)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json and report.md (and the trade-off figure) from the run directory."""
    return R.write_report(out, NAME, summarize, render, headline=lambda r: r["verdict"]["word"],
                          figures=[("tradeoff.html", lambda res, rec, cfg, path: figure(res, path))])


# ============================================================================================ entry point
def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    ap = R.parser(__doc__)
    ap.add_argument("--full", action="store_true", help="all four datasets (the extra ones are secondary)")
    a = ap.parse_args(argv)
    cfg = Config.preset(quick=a.quick, full=a.full, out=a.out, threads=a.threads)
    if a.report_only:
        return report(Path(cfg.out))
    return run(cfg, resume=a.resume)


if __name__ == "__main__":
    main()
