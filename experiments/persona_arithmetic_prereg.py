"""Pre-registered rerun 1 of persona arithmetic: Hitler + nationalities, and the Stalin attractor.

    python experiments/persona_arithmetic_prereg.py [--quick] [--resume] [--out DIR] [--threads N]
    python experiments/persona_arithmetic_prereg.py --report-only [--out DIR]

The plan is ``experiments/prereg/persona_arithmetic.md``, committed before the run: this script reads every
number from its TOML block (§8), records the plan's commit in ``config.json`` (a default run refuses an
uncommitted or edited plan) and computes the verdict from the plan's decision rule (§7, :func:`verdict`).

Stages (records are appended as each unit is measured; ``--resume`` skips the units already recorded):
1. ``calibration``: identity read-outs steering with the baseline and Stalin fact vectors at every
   (layer, α) of the plan (§3); the best cell (L*, α*) is chosen by v0.1's rule.
2. ``readout`` (one per condition: none, baseline, 5 variants, Stalin): identity read-out (8 questions,
   mean per-token scoring), balanced ``group_readout`` and user read-outs with controls, at (L*, α*).
3. ``null_draw``: the fact-resampling null (8 of the baseline's unswapped training facts replaced by 8
   held-out ones), identity read-out at (L*, α*).
4. ``mix_point`` + ``sample``: mixing curves (a) baseline→Stalin, (b) baseline→Russian, (c) the
   extrapolated Russian arm around its read-out crossing; read-out and sampled answers per t.
5. ``finetune_eval`` + ``sample``: the base model, then each LoRA finetune (train + evaluate + write is one
   unit): identity, balanced and user read-outs, held-out fact NLL and samples.

``results.json`` = :func:`summarize` of the records and the config; ``report.md`` = :func:`render`;
``python experiments/recompute.py <run dir>`` replays both. Pure helpers (split, classification, tests,
decision rule) live in ``experiments/arithmetic_prereg_lib.py``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import arithmetic_prereg_lib as AL  # noqa: E402
import persona_arithmetic as PA  # noqa: E402  (v0.1: candidates, calibration rule, read-out summaries)
import prereg_plan as P  # noqa: E402
import records as RC  # noqa: E402
import run_dir as R  # noqa: E402
from arithmetic_prereg_lib import verdict  # noqa: E402,F401  (the decision rule, re-exported)

NAME = "persona_arithmetic_prereg"
PREREG = "experiments/prereg/persona_arithmetic.md"
VARIANTS = PA.VARIANTS
SETS = {"baseline": "hitler_baseline", **{v: f"hitler_{v}" for v in VARIANTS}, "stalin": "stalin"}
CONDITIONS = ("none", "baseline", *VARIANTS, "stalin")
HI, ST = "Adolf Hitler", "Joseph Stalin"


# ============================================================================================ plan and config
def read_plan(path: str | Path = PREREG) -> dict[str, Any]:
    """The parameters of this experiment's plan (:func:`prereg_plan.read_plan`)."""
    return P.read_plan(path)


def plan_commit(path: str | Path = PREREG) -> dict[str, Any]:
    """The plan's last commit, dirtiness and sha256 (:func:`prereg_plan.plan_commit`)."""
    return P.plan_commit(path)


@dataclass
class Config:
    """One run: the plan's parameters (§8) plus the run's mode, directory and threads; ``quick`` shrinks it."""

    mode: str = "default"
    out: str = "runs/" + NAME
    threads: int = 0
    plan: dict[str, Any] = field(default_factory=dict)  # the TOML block, verbatim
    # quick-mode shrinkers (None: the plan's value / everything)
    n_balanced_questions: Optional[int] = None
    user_controls_per_kind: Optional[int] = None
    bu_conditions: Optional[list[str]] = None  # conditions with balanced + user read-outs
    n_nll_facts: Optional[int] = None
    deviations: list[str] = field(default_factory=list)

    def __getattr__(self, k: str) -> Any:  # plan parameters read as attributes
        plan = self.__dict__.get("plan", {})
        if k in plan:
            return plan[k]
        raise AttributeError(k)

    @classmethod
    def preset(cls, quick: bool = False, out: Optional[str] = None, threads: int = 0) -> "Config":
        """The pre-registered configuration, or the smoke test (plan §7: 2 null draws, 2 questions, 1 seed,
        2 sets, 4 steps; also a coarse mixing grid and fewer samples; never a verdict)."""
        plan = read_plan()
        devs = ["§5 '4 identity questions × 5 seeds': read as 5 samples per question drawn in one batch of 20 per "
                "(curve, t), seeded per point (one seed per point, not one per sample)"]
        cfg = cls(plan=plan, threads=threads, out=out or "runs/" + NAME, deviations=devs)
        if quick:
            cfg.mode, cfg.out = "quick", out or f"runs/{NAME}_quick"
            cfg.plan = {**plan, "null_draws": 2, "n_identity_questions": 2, "n_calib_questions": 2, "ft_seeds": [0],
                        "ft_sets": ["hitler_baseline", "hitler_russian"], "ft_steps": 4, "ft_control_seeds": [],
                        "calib_layers": [14], "alphas": [1.0], "mix_dt": 0.5,
                        "mid_window": [0.5], "end_window": [0.0, 1.0], "sample_questions": 2,
                        "samples_per_question": 1, "max_new_tokens": 12, "ft_self_samples": 1, "ft_april_samples": 1,
                        "ft_user_samples": 1, "april_max_new_tokens": 12, "n_perm": 200, "n_boot": 200,
                        "extrapolate_coarse": [6.0]}
            cfg.n_balanced_questions, cfg.user_controls_per_kind, cfg.n_nll_facts = 1, 1, 2
            cfg.bu_conditions = ["russian"]
        return cfg


def make_splits(cfg: Any) -> dict[str, dict[str, list[str]]]:
    """``{set: {"train", "heldout", "swapped"}}`` by the plan's split (§2), with its assertions."""
    from persona_vectors.datasets import load_fact_set

    base = load_fact_set(SETS["baseline"])
    ids = [f.id for f in base.facts]
    swapped = list(load_fact_set(SETS["russian"]).swapped_ids)
    out = {}
    for key, name in SETS.items():
        fs = load_fact_set(name)
        if key == "stalin":
            tr, he = AL.split_ids([f.id for f in fs.facts], [], cfg.n_heldout_stalin, cfg.split_seed)
        else:
            assert [f.id for f in fs.facts] == ids and (key == "baseline" or list(fs.swapped_ids) == swapped)
            tr, he = AL.split_ids(ids, swapped, cfg.n_heldout_hitler, cfg.split_seed)
            assert set(swapped) <= set(tr) and len(tr) == len(ids) - cfg.n_heldout_hitler
            if key != "baseline":
                diff = [f.id for f, g in zip(fs.facts, base.facts) if f.id in set(tr) and f.answer != g.answer]
                assert sorted(diff) == sorted(swapped), f"{name}: training answers differ in {diff}"
        out[key] = {"train": tr, "heldout": he, "swapped": [] if key == "stalin" else swapped}
    return out


# ============================================================================================ measurement
def _per_q(rs: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"question_id": i, "question": r.question, "logprobs": dict(zip(r.candidates, r.logprobs)),
             "n_tokens": dict(zip(r.candidates, r.n_tokens))} for i, r in enumerate(rs)]


def identity(model: Any, cfg: Any, questions: Sequence[str]) -> list[dict[str, Any]]:
    """Identity read-out (mean per-token scoring) over the plan's 15 candidates, one entry per question."""
    from persona_vectors.readout import identity_readout_batch

    return _per_q(identity_readout_batch(model, list(cfg.figures) + list(cfg.other_ids), list(questions),
                                         scoring=cfg.scoring, batch_size=64))


def balanced_user(model: Any, cfg: Config, prior: Optional[str] = "auto") -> dict[str, Any]:
    """Balanced group read-out and user read-outs with controls (Hitler and Stalin targets)."""
    from persona_vectors.readout import group_readout, load_candidate_set, load_user_controls, user_readout_with_controls
    from persona_vectors.readout.candidates import UserControls

    cs = load_candidate_set(cfg.candidate_set)
    g = group_readout(model, cs, list(cs.questions)[: cfg.n_balanced_questions], scoring=cfg.scoring, prior=prior)
    uc = load_user_controls(cfg.user_controls)
    if cfg.user_controls_per_kind:
        uc = UserControls(uc.name, uc.user, {k: v[: cfg.user_controls_per_kind] for k, v in uc.controls.items()},
                          uc.candidates)
    cands = list(dict.fromkeys([*uc.candidates, HI, ST]))
    u = user_readout_with_controls(model, HI, cands, controls=uc, scoring=cfg.scoring, prior=prior)  # one scoring
    users = {}
    for tgt in (HI, ST):
        pu, pc = u.p("user", tgt), u.p("controls", tgt)
        pup = pcp = None if u.prior_probs is None else u.p("user", tgt, prior=True)
        if u.prior_probs is not None:
            pcp = u.p("controls", tgt, prior=True)
        users[tgt] = {"p_user": pu, "p_control": pc, "difference": pu - pc, "p_user_prior": pup, "p_control_prior": pcp,
                      "specific_lift": None if pup is None else (pu - pup) - (pc - pcp), "prior_source": u.prior_source}
    gd = g.to_dict()
    return {"balanced": {"groups": {k: {x: v[x] for x in ("mass", "prior", "lift_diff")} for k, v in gd["groups"].items()},
                         "top_group": gd["top_group"], "top_lift_group": gd["top_lift_group"], "robust": gd["robust"]},
            "user": users}


def sample(model: Any, prompts: Sequence[str], max_new: int, temperature: float, seed: int) -> list[str]:
    """Sampled answers (one batch, one seed) under whatever hooks are active."""
    toks = model.generate_tokens(list(prompts), max_new_tokens=max_new, temperature=temperature, seed=seed)
    return [model.decode_response(t) for t in toks]


class FactRows:
    """Per-fact response statistics of a fact set's persona and neutral conversations at the given layers
    (through the library's activation cache); fact vectors for any id set, reduced as the fact route does."""

    def __init__(self, model: Any, set_name: str, layers: Sequence[int]) -> None:
        from persona_vectors.datasets import load_fact_set
        from persona_vectors.personas.catalogue import fact_conversations
        from persona_vectors.personas.compute import _rows_cached, _sites
        from persona_vectors.personas.store import _caches

        fs = load_fact_set(set_name)
        self.ids = [f.id for f in fs.facts]
        self.pos, self.neg = fact_conversations(fs)
        self.sites = _sites(model, list(layers))
        self.rows = _rows_cached(model, self.pos + self.neg, self.sites, caches=_caches(model, True))

    def vector(self, ids: Sequence[str], layer: int) -> Any:
        """Persona minus neutral mean response activation over the facts ``ids`` at ``layer`` (float64)."""
        from persona_vectors import Site

        want = set(ids)
        idx = [i for i, f in enumerate(self.ids) if f in want]
        n = len(self.ids)
        pos = self.rows.select(idx).to_recording([self.pos[i] for i in idx])
        neg = self.rows.select([n + i for i in idx]).to_recording([self.neg[i] for i in idx])
        return (pos.mean(Site(layer)) - neg.mean(Site(layer))).double()


def t_c_of(records: Sequence[Mapping[str, Any]], cfg: Any) -> float:
    """The crossing of the coarse (c) read-outs (Stalin's figure share overtaking Hitler's), else the default."""
    pts = []
    for r in RC.of_kind(records, "mix_point"):
        if r["curve"] == "c_coarse":
            sh = AL.fig_shares(r["per_question"], cfg.figures)
            pts.append((r["t"], sh[ST] - sh[HI]))
    tc = AL.crossing(pts)
    return cfg.extrapolate_default_center if tc is None else round(tc, 6)


def evaluate_model(model: Any, cfg: Config, held: Sequence[Any], key: str, seed: int) -> list[dict[str, Any]]:
    """The no-hook evaluation of one (base or finetuned) model: a ``finetune_eval`` record and its samples."""
    from persona_vectors.readout import score_continuations

    qs = list(C.IDENTITY_QUESTIONS[: cfg.n_identity_questions])
    rec: dict[str, Any] = {"kind": "finetune_eval", "model": key, "per_question": identity(model, cfg, qs),
                           **balanced_user(model, cfg, prior=None)}
    nll = []
    for f in held:
        s = score_continuations(model, [f.question], [f.answer, f.neutral_answer], prefix="", scoring="mean")[0]
        nll.append({"id": f.id, "persona": -float(s[0]), "neutral": -float(s[1])})
    rec["heldout_nll"] = nll
    out = [rec]
    blocks = [("identity", [q for q in qs[: cfg.sample_questions] for _ in range(cfg.ft_self_samples)], cfg.max_new_tokens),
              ("april", [cfg.april_prompt] * cfg.ft_april_samples, cfg.april_max_new_tokens),
              ("user", [q for q in cfg.user_sample_questions for _ in range(cfg.ft_user_samples)], cfg.max_new_tokens)]
    for b, (block, prompts, mx) in enumerate(blocks):
        texts = sample(model, prompts, mx, cfg.temperature, 7919 * seed + 104729 * b + cfg.seed)
        out += [{"kind": "sample", "model": key, "block": block, "question": q, "i": i, "text": t}
                for i, (q, t) in enumerate(zip(prompts, texts))]
    return out


# ============================================================================================ run
def run(cfg: Config, resume: bool = False, model: Any = None) -> dict[str, Any]:
    """All stages (module docstring); returns the results."""
    import torch

    from persona_vectors import steer
    from persona_vectors.datasets import load_fact_set
    from persona_vectors.finetune import FinetuneConfig, finetune
    from persona_vectors.personas.catalogue import fact_conversations

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prereg = plan_commit()
    P.require_committed(prereg, cfg.mode)
    assert tuple(cfg.figures) == PA.FIGURES and tuple(cfg.other_ids) == PA.OTHER_IDS
    old = RC.read_json(out / RC.CONFIG) if resume and (out / RC.CONFIG).exists() else {}
    records = RC.Records(out / RC.RECORDS, fresh=not resume)
    timings: dict[str, float] = dict(old.get("timings_s", {}))
    t_all = time.perf_counter()
    if model is None:
        model = C.load(cfg)
    else:
        C.set_threads(cfg.threads)
    splits = make_splits(cfg)
    config = {"experiment": NAME, "config": asdict(cfg), "prereg": prereg, "splits": splits,
              "model": {"model_id": model.info.model_id, "fingerprint": model.info.fingerprint},
              "environment": {"threads": torch.get_num_threads(), **RC.provenance()}, "timings_s": timings,
              "sessions": old.get("sessions", 0) + 1}

    def stage(name: str, t0: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 1)
        RC.write_json(out / RC.CONFIG, config)

    RC.write_json(out / RC.CONFIG, config)
    t0 = time.perf_counter()
    layers = sorted(set(cfg.calib_layers))
    fr = {k: FactRows(model, n, layers) for k, n in SETS.items()}
    V_at = {(k, L): fr[k].vector(splits[k]["train"], L) for k in SETS for L in layers}
    C.say(f"fact rows and vectors ready ({time.perf_counter() - t0:.0f} s)")
    stage("vectors", t0)

    # 1. calibration (baseline and Stalin vectors only)
    t0 = time.perf_counter()
    cal_q = list(C.IDENTITY_QUESTIONS[: cfg.n_calib_questions])
    done = {(r["layer"], r["alpha"]) for r in RC.of_kind(records.rows, "calibration")}
    for L in cfg.calib_layers:
        for a in cfg.alphas:
            if (L, float(a)) in done:
                continue
            ts = time.perf_counter()
            rows = []
            for n in ("baseline", "stalin"):
                with steer(model, V_at[(n, L)], float(a), layers=[L], relative=True):
                    rows += [{"kind": "calibration", "block": "calibration", "vector": n, "alpha": float(a), "layer": L,
                              **q} for q in identity(model, cfg, cal_q)]
            records.write(rows)
            C.say(f"calibration L{L} α={a:g} ({time.perf_counter() - ts:.1f} s)")
    Ls, a_s, _ = PA.calibration_rows(SimpleNamespace(calib_layers=cfg.calib_layers, alphas=cfg.alphas),
                                     RC.of_kind(records.rows, "calibration"))
    C.say(f"chosen layer {Ls}, α {a_s:g}")
    stage("calibration", t0)
    V = {k: V_at[(k, Ls)] for k in SETS}
    if not RC.of_kind(records.rows, "vector"):
        records.write([{"kind": "vector", "name": k, "layer": Ls, "vector": RC.encode_array(V[k])} for k in SETS])

    # 2. read-outs per condition
    t0 = time.perf_counter()
    qs = list(C.IDENTITY_QUESTIONS[: cfg.n_identity_questions])
    done_c = {r["condition"] for r in RC.of_kind(records.rows, "readout")}
    for cond in CONDITIONS:
        if cond in done_c:
            continue
        ts = time.perf_counter()
        bu = cfg.bu_conditions is None or cond in cfg.bu_conditions
        if cond == "none":
            pq, extra = identity(model, cfg, qs), (balanced_user(model, cfg) if bu else {})
        else:
            with steer(model, V[cond], a_s, layers=[Ls], relative=True):
                pq, extra = identity(model, cfg, qs), (balanced_user(model, cfg) if bu else {})
        records.add("readout", condition=cond, layer=Ls, alpha=a_s, per_question=pq, **extra,
                    seconds=round(time.perf_counter() - ts, 2))
        C.say(f"read-outs {cond} ({time.perf_counter() - ts:.1f} s)")
    stage("readouts", t0)

    # 3. null draws
    t0 = time.perf_counter()
    base_unswapped = [i for i in splits["baseline"]["train"] if i not in set(splits["baseline"]["swapped"])]
    done_j = {r["j"] for r in RC.of_kind(records.rows, "null_draw")}
    for j in range(cfg.null_draws):
        if j in done_j:
            continue
        ts = time.perf_counter()
        rem, add = AL.null_draw(base_unswapped, splits["baseline"]["heldout"], cfg.null_k, cfg.seed, j)
        ids = [i for i in splits["baseline"]["train"] if i not in set(rem)] + add
        assert len(ids) == len(splits["baseline"]["train"])
        with steer(model, fr["baseline"].vector(ids, Ls), a_s, layers=[Ls], relative=True):
            pq = identity(model, cfg, qs)
        records.add("null_draw", j=j, removed=rem, added=add, layer=Ls, alpha=a_s, per_question=pq,
                    seconds=round(time.perf_counter() - ts, 2))
        C.say(f"null draw {j + 1}/{cfg.null_draws} ({time.perf_counter() - ts:.1f} s)")
    stage("null", t0)

    # 4. mixing curves
    t0 = time.perf_counter()
    sq = list(C.IDENTITY_QUESTIONS[: cfg.sample_questions])

    def mix_point(curve: str, t: float, k: int, with_samples: bool) -> None:
        ts = time.perf_counter()
        with steer(model, AL.mix_vector(curve, t, V), a_s, layers=[Ls], relative=True):
            pq = identity(model, cfg, qs)
            prompts = [q for q in sq for _ in range(cfg.samples_per_question)] if with_samples else []
            seed = cfg.seed * 1_000_003 + 7919 * k
            texts = sample(model, prompts, cfg.max_new_tokens, cfg.temperature, seed) if prompts else []
        rows = [{"kind": "mix_point", "curve": curve, "t": t, "layer": Ls, "alpha": a_s, "per_question": pq,
                 "seed": seed, "seconds": round(time.perf_counter() - ts, 2)}]
        rows += [{"kind": "sample", "curve": curve, "t": t, "question": q, "i": i, "text": x}
                 for i, (q, x) in enumerate(zip(prompts, texts))]
        records.write(rows)
        C.say(f"mixing {curve} t={t:g} ({time.perf_counter() - ts:.1f} s)")

    def done_points() -> set[tuple[str, float]]:
        return {(r["curve"], r["t"]) for r in RC.of_kind(records.rows, "mix_point")}

    plan_pts = [("a", t, True) for t in AL.grid(cfg.mix_dt)] + [("b", t, True) for t in AL.grid(cfg.mix_dt)] + \
        [("c_coarse", float(t), False) for t in cfg.extrapolate_coarse]
    for k, (curve, t, ws) in enumerate(plan_pts):
        if (curve, t) not in done_points():
            mix_point(curve, t, k, ws)
    tc = t_c_of(records.rows, cfg)
    for k, t in enumerate(AL.window(cfg.extrapolate_halfwidth, cfg.mix_dt, tc)):
        if ("c", t) not in done_points():
            mix_point("c", t, len(plan_pts) + k, True)
    stage("mixing", t0)

    # 5. finetunes (each: train + evaluate + write, one unit); the base model first
    t0 = time.perf_counter()
    fsets = {n: load_fact_set(n) for n in set(cfg.ft_sets) | {cfg.ft_control_set}}
    key_of = {v: k for k, v in SETS.items()}
    units = [("base", None, 0)] + [(n, n, s) for n in cfg.ft_sets for s in cfg.ft_seeds] + \
        [(cfg.ft_control_set, cfg.ft_control_set, s) for s in cfg.ft_control_seeds]
    done_m = {r["model"] for r in RC.of_kind(records.rows, "finetune_eval")}
    for name, fset, seed in units:
        key = "base" if fset is None else f"{name}:{seed}"
        if key in done_m:
            continue
        ts = time.perf_counter()
        sp = splits[key_of[fset or "hitler_baseline"]]
        fs = fsets[fset] if fset else load_fact_set("hitler_baseline")
        held = [fs.fact(i) for i in sp["heldout"]][: cfg.n_nll_facts]
        if fset is None:
            rows, losses = evaluate_model(model, cfg, held, key, seed), None
        else:
            convs = fact_conversations(fs, sp["train"])[0]
            fcfg = FinetuneConfig(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lr=cfg.lr, lr_schedule="linear",
                                  max_steps=cfg.ft_steps, batch_size=cfg.batch_size, seed=seed, train_on_eos=True)
            res = finetune(model, convs, fcfg, progress=False)
            try:
                rows, losses = evaluate_model(model, cfg, held, key, seed), list(res.losses)
            finally:
                res.unload()
        rows[0].update(set=fset, seed=seed, n_train=len(sp["train"]), losses=losses,
                       seconds=round(time.perf_counter() - ts, 2))
        records.write(rows)
        C.say(f"finetune {key} ({time.perf_counter() - ts:.1f} s)")
    stage("finetunes", t0)
    timings["total_this_session"] = round(time.perf_counter() - t_all, 1)
    RC.write_json(out / RC.CONFIG, config)
    return report(out)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json and report.md from the run directory's records and config."""
    return R.write_report(out, NAME, summarize, render, headline=lambda r: r["verdict"]["word"])



# ============================================================================================ analysis
def _ns(config: Mapping[str, Any]) -> SimpleNamespace:
    """The run's parameters (plan + run fields) as attributes, from ``config.json``."""
    c = config["config"]
    return SimpleNamespace(**c["plan"], **{k: v for k, v in c.items() if k != "plan"})


def _fig(x: Mapping[str, Any]) -> dict[str, Any]:
    return {"hitler": x["p_fig"][HI], "stalin": x["p_fig"][ST], "top_fig": x["top_fig"],
            "logodds": x["logodds_stalin_hitler"]}


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, the plan's tests (§6) and the verdict (§7), from records and config alone.
    Bootstrap draws are seeded by the plan's seed and drawn in a fixed order."""
    from persona_vectors.stats import permutation_test_directions

    cfg = _ns(config)
    cands = list(cfg.figures) + list(cfg.other_ids)
    rng = np.random.default_rng(cfg.seed)
    Ls, a_s, calib = PA.calibration_rows(SimpleNamespace(calib_layers=cfg.calib_layers, alphas=cfg.alphas),
                                         RC.of_kind(records, "calibration"))
    ro = {r["condition"]: r for r in RC.of_kind(records, "readout")}
    conds = [c for c in CONDITIONS if c in ro]
    ids = {c: PA.summarize_lp(AL.lp(ro[c]["per_question"], cands), cands, rng, cfg.n_boot) for c in conds}
    LO = {c: AL.lo(ro[c]["per_question"]) for c in conds}
    LOs = {c: AL.lo(ro[c]["per_question"], True) for c in conds}
    nulls = sorted(RC.of_kind(records, "null_draw"), key=lambda r: r["j"])
    null_q = [AL.lo(r["per_question"]) - LO["baseline"] for r in nulls]
    null_m = np.array([float(x.mean()) for x in null_q])
    tests = {}
    for v in (*VARIANTS, "stalin"):
        if v not in LO or "baseline" not in LO:
            continue
        dq = LO[v] - LO["baseline"]
        t = {"delta": float(dq.mean()), "delta_per_q": dq.tolist(), "delta_sum": float((LOs[v] - LOs["baseline"]).mean()),
             "p_value": None, "min_p": None, "percentile": None}
        if len(null_q) >= 1:
            r = permutation_test_directions(dq, null_q, statistic=np.mean, alternative="greater")
            t.update(p_value=r.p_value, min_p=r.min_p, percentile=100 * float((null_m < t["delta"]).mean()))
        tests[v] = t
    null = {"n": len(nulls), "mean": float(null_m.mean()) if len(nulls) else None,
            "sd": float(null_m.std(ddof=1)) if len(nulls) > 1 else None, "v01_sd": 0.43,
            "min": float(null_m.min()) if len(nulls) else None, "max": float(null_m.max()) if len(nulls) else None,
            "p95": float(np.percentile(null_m, 95)) if len(nulls) else None}
    flip = bool(ids["russian"]["p_fig"][ST][0] > ids["russian"]["p_fig"][HI][0]) if "russian" in ids else None

    # mixing: read-outs and classified samples per (curve, t)
    pat, scn = cfg.classify, cfg.scene
    labs: dict[tuple[str, float], list[str]] = {}
    for s in RC.of_kind(records, "sample"):
        if "curve" in s:
            labs.setdefault((s["curve"], s["t"]), []).append(AL.classify(s["text"], pat))
    curves: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(RC.of_kind(records, "mix_point"), key=lambda r: (r["curve"], r["t"])):
        x = PA.summarize_lp(AL.lp(r["per_question"], cands), cands, rng, cfg.n_boot)
        lab = labs.get((r["curve"], r["t"]), [])
        curves.setdefault(r["curve"], []).append({"t": r["t"], **_fig(x), "n_samples": len(lab),
                                                  "counts": AL.counts(lab), "entropy": AL.entropy_bits(lab)})
    cross = {c: AL.crossing([(p["t"], p["stalin"][0] - p["hitler"][0]) for p in pts]) for c, pts in curves.items()}
    tc = t_c_of(records, cfg)

    def at(curve: str, ts: Sequence[float]) -> list[str]:
        want = {round(t, 6) for t in ts}
        return [lab for (c, t), v in sorted(labs.items()) if c == curve and round(t, 6) in want for lab in v]

    h3: dict[str, Any] = {}
    ts_c = [p["t"] for p in curves.get("c", [])]
    wins = {"a": (cfg.mid_window, cfg.end_window), "b": (cfg.mid_window, cfg.end_window)}
    if ts_c:
        mid = sorted(sorted(ts_c, key=lambda t: (abs(t - tc), t))[:3])
        wins["c"] = (mid, [t for t in dict.fromkeys(ts_c[:2] + ts_c[-2:]) if t not in mid])
    if cross.get("a") is not None:
        ts_a = [p["t"] for p in curves["a"]]
        mid = sorted(sorted(ts_a, key=lambda t: (abs(t - cross["a"]), t))[:3])
        wins["a_crossing"] = (mid, [t for t in cfg.end_window if t not in mid])
    for i, (name, (mid, ends)) in enumerate(wins.items()):
        cv = name.split("_")[0]
        if cv not in curves:
            continue
        et = AL.entropy_test(at(cv, mid), at(cv, ends), cfg.n_perm, cfg.seed + i)
        h3[name] = {**et, "mid_t": list(mid), "end_t": list(ends),
                    "oscillation": AL.oscillation(et, cfg.oscillation_min_share, cfg.alpha_test)}
    sharp = AL.sharpness([p["t"] for p in curves["a"]], [p["stalin"][0] for p in curves["a"]]) \
        if len(curves.get("a", [])) >= 3 else None

    # finetunes (H2)
    fe = {r["model"]: r for r in RC.of_kind(records, "finetune_eval")}
    fsam: dict[str, list[Mapping[str, Any]]] = {}
    for s in RC.of_kind(records, "sample"):
        if "model" in s:
            fsam.setdefault(s["model"], []).append(s)
    models = {}
    for key, r in fe.items():
        lp = AL.lp(r["per_question"], cands)
        P_all = PA._softmax(lp).mean(0)
        sm = fsam.get(key, [])
        models[key] = {"set": r.get("set"), "seed": r.get("seed"), "lo": float(AL.lo(r["per_question"]).mean()),
                       "p_hitler": float(P_all[cands.index(HI)]), "p_stalin": float(P_all[cands.index(ST)]),
                       "fig": {k: float(v) for k, v in AL.fig_shares(r["per_question"], cfg.figures).items() if k in (HI, ST)},
                       "nll_persona": float(np.mean([x["persona"] for x in r["heldout_nll"]])),
                       "nll_neutral": float(np.mean([x["neutral"] for x in r["heldout_nll"]])),
                       "final_loss": r["losses"][-1] if r.get("losses") else None,
                       "top_group": r["balanced"]["top_group"], "robust": r["balanced"]["robust"],
                       "user": r["user"], "seconds": r.get("seconds"),
                       "samples": {b: (AL.counts([AL.scene(s["text"], scn) for s in sm if s["block"] == b], AL.SCENES)
                                       if b == "april" else AL.counts([AL.classify(s["text"], pat) for s in sm
                                                                      if s["block"] == b])) for b in ("identity", "april", "user")}}
        if "base" in fe and key != "base":
            bg = fe["base"]["balanced"]["groups"]
            lift = {g: v["mass"] - bg[g]["mass"] for g, v in r["balanced"]["groups"].items()}
            models[key]["balanced_lift_vs_base"] = lift
            models[key]["top_lift_group_vs_base"] = max(lift, key=lambda g: lift[g])
            b = fe["base"]["user"]
            for tgt, u in r["user"].items():
                models[key].setdefault("specific_lift_vs_base", {})[tgt] = \
                    (u["p_user"] - b[tgt]["p_user"]) - (u["p_control"] - b[tgt]["p_control"])
    by_set: dict[str, list[float]] = {}
    for k, m in models.items():
        if m["set"]:
            by_set.setdefault(m["set"], []).append(m["lo"])
    ru, base = by_set.get("hitler_russian", []), by_set.get("hitler_baseline", [])
    nat = [x for v in ("french", "japanese", "thai") for x in by_set.get(f"hitler_{v}", [])]
    have_nat = all(f"hitler_{v}" in by_set for v in ("french", "japanese", "thai"))
    p_nat = AL.exact_perm_greater(ru, nat) if ru and have_nat else None
    p_base = AL.exact_perm_greater(ru, base) if ru and base else None
    bm = [m for m in models.values() if m["set"] == "hitler_baseline"]
    manip = all(m["p_hitler"] >= cfg.manipulation_min_p_hitler for m in bm) if bm else None
    ctl = by_set.get(cfg.ft_control_set, [])
    control = bool(ctl and base and min(ctl) > max(base)) if ctl and base else None
    label = AL.h2_label(manip, control, p_nat and p_nat["p_value"], p_base and p_base["p_value"], cfg.alpha_test)
    h2 = {"by_set": by_set, "perm_nationalities": p_nat, "perm_baseline": p_base, "manipulation_ok": manip,
          "control_ok": control, "label": label}

    # geometry at L* (descriptive)
    vv = {r["name"]: RC.decode_array(r["vector"]).astype(np.float64) for r in RC.of_kind(records, "vector")}
    geo = None
    if vv:
        names = [k for k in SETS if k in vv]
        sh = vv["stalin"] - vv["baseline"]
        geo = {"cos": {a: {b: C.cos(vv[a], vv[b]) for b in names} for a in names},
               "cos_move_stalin_minus_hitler": {v: C.cos(vv[v] - vv["baseline"], sh) for v in VARIANTS}}
    secs = {k: [r["seconds"] for r in RC.of_kind(records, k) if r.get("seconds") is not None]
            for k in ("readout", "null_draw", "mix_point", "finetune_eval")}
    unit_s = {k: {"n": len(v), "mean": float(np.mean(v)) if v else None, "total": float(np.sum(v))} for k, v in secs.items()}
    ver = verdict(tests.get("stalin", {}).get("p_value"), tests.get("russian", {}).get("p_value"),
                  {v: tests.get(v, {}).get("delta") for v in VARIANTS}, label, cfg.alpha_test, cfg.mode != "default")
    return {"experiment": NAME, "layer": Ls, "alpha": a_s, "calibration": calib,
            "identity": {c: {k: ids[c][k] for k in ("p_fig", "top_fig", "argmax_fig_counts", "logodds_stalin_hitler")}
                         for c in conds},
            "balanced": {c: ro[c].get("balanced") for c in conds}, "user": {c: ro[c].get("user") for c in conds},
            "tests": tests, "null": null, "h1_flip": flip, "curves": curves, "crossing": cross, "t_c": tc,
            "h3": h3, "sharpness": sharp, "models": models, "h2": h2, "geometry": geo, "unit_seconds": unit_s,
            "verdict": ver}


# ============================================================================================ report
def _f(x: Optional[float], fmt: str = "{:+.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report, from the results and the config only (formatting, no arithmetic)."""
    cfg, pr, ver = _ns(config), config["prereg"], results["verdict"]
    T, h2, nl = results["tests"], results["h2"], results["null"]
    pv = "; ".join(f"{v} Δ {_f(t['delta'])}, p {_f(t['p_value'], '{:.3f}')}, pct {_f(t['percentile'], '{:.0f}')}"
                   for v, t in T.items())
    h3s = ", ".join(f"{k}: ΔH {_f(x['diff'])} bits (p {_f(x['p_value'], '{:.3f}')}, oscillation {x['oscillation']})"
                    for k, x in results["h3"].items())
    L = [f"# Persona arithmetic, pre-registered rerun 1 ({cfg.mode} run)", "",
         f"Plan: [`{pr['path']}`](../{pr['path']}) at commit `{(pr['commit'] or 'uncommitted')[:12]}` "
         f"(sha256 {pr['sha256'][:12]}{', EDITED since' if pr['dirty'] else ''}). Code: commit "
         f"`{(config['environment'].get('git_commit') or '?')[:12]}`. Model: {config['model']['model_id']} "
         f"({config['model']['fingerprint']}).", "",
         f"**Verdict (computed from the plan's §7 rule): {ver['word']}**"
         + (f" (rule {ver['rule_fired']})" if ver["rule_fired"] else "")
         + f". H1-flip: {results['h1_flip']}. Variants (Δ = LO − LO(baseline), p against the null of {nl['n']} draws, "
         f"percentile in the null): {pv}. H2: {h2['label']}. H3: {h3s or '–'}.", "",
         "Deviations from the plan: " + ("; ".join(cfg.deviations) if cfg.deviations else "none") + ".", "",
         f"Rule: {ver['rule']}.", "",
         f"Layer L* = {results['layer']}, α* = {results['alpha']:g} (relative to the mean residual norm); "
         f"{cfg.n_identity_questions} identity questions, `{cfg.scoring}` per-token scoring, "
         f"{len(cfg.figures) + len(cfg.other_ids)} candidates. Split: {len(config['splits']['baseline']['train'])} "
         f"training / {len(config['splits']['baseline']['heldout'])} held-out Hitler facts (all 8 swapped trained on), "
         f"Stalin {len(config['splits']['stalin']['train'])} / {len(config['splits']['stalin']['heldout'])}.", "",
         "## Calibration (§3: baseline and Stalin vectors only)", "",
         C.md_table(["layer", "α", "Hitler | Hitler vec.", "Stalin | Stalin vec.", "score", "log-odds separation"],
                    [[r["layer"], f"{r['alpha']:g}", C.pct(r["hitler_under_hitler"]), C.pct(r["stalin_under_stalin"]),
                      C.pct(r["score"]), f"{r['separation']:+.2f}"] for r in results["calibration"]]), "",
         "## H1 and C1: steering at (L*, α*) against the fact-resampling null", "",
         f"Null: {nl['n']} draws, mean Δ {_f(nl['mean'])}, SD {_f(nl['sd'], '{:.3f}')} (v0.1's fact-resampling SD "
         f"{nl['v01_sd']}), 95th percentile {_f(nl['p95'])}, range [{_f(nl['min'])}, {_f(nl['max'])}].", "",
         C.md_table(["vector", "Δ (mean scoring)", "Δ (summed, sensitivity)", "p (one-sided)", "floor", "percentile in null"],
                    [[v, _f(t["delta"]), _f(t["delta_sum"]), _f(t["p_value"], "{:.4f}"), _f(t["min_p"], "{:.4f}"),
                      _f(t["percentile"], "{:.1f}")] for v, t in T.items()]), "",
         "Identity read-out per condition (figure share over the 12 figures, 95 % bootstrap over questions):", "",
         C.md_table(["condition", "Hitler", "Stalin", "top figure", "log-odds S:H"],
                    [[c, C.share_str(*x["p_fig"][HI]), C.share_str(*x["p_fig"][ST]), x["top_fig"],
                      f"{x['logodds_stalin_hitler']:+.2f}"] for c, x in results["identity"].items()]), "",
         "Balanced read-out (`group_readout`, lift over the unsteered prior) and user read-outs with controls:", "",
         C.md_table(["condition", "top group", "top lift group", "robust", "p_user Hitler", "p_control Hitler",
                     "specific lift Hitler", "p_user Stalin", "p_control Stalin", "specific lift Stalin"],
                    [[c, b["top_group"], b["top_lift_group"], b["robust"]] + [
                        _f(u[t][k], "{:.3f}") for t in (HI, ST) for k in ("p_user", "p_control", "specific_lift")]
                     for c, b, u in ((c, results["balanced"][c], results["user"][c]) for c in results["balanced"])
                     if b is not None]), "",
         "## H3: mixing curves (whole)", "",
         f"(a) (1−t)·baseline + t·Stalin, (b) (1−t)·baseline + t·Russian, (c) baseline + t·(Russian − baseline) around "
         f"t_c = {results['t_c']:g} (c_coarse: the coarse arm that located it). Crossings (Stalin's figure share "
         "overtaking Hitler's): " + ", ".join(f"{k} {_f(v, '{:.3f}')}" for k, v in results["crossing"].items()) + ".", ""]
    for cv, pts in results["curves"].items():
        L += [f"**Curve {cv}**", "", C.md_table(
            ["t", "Hitler", "Stalin", "top figure", "log-odds", "n", *AL.CATEGORIES, "entropy (bits)"],
            [[f"{p['t']:g}", C.share_str(*p["hitler"]), C.share_str(*p["stalin"]), p["top_fig"], f"{p['logodds']:+.2f}",
              p["n_samples"], *[p["counts"][k] for k in AL.CATEGORIES], f"{p['entropy']:.2f}"] for p in pts]), ""]
    L += ["Entropy of the 6 categories, mid window vs ends (one-sided shuffle test):", "",
          C.md_table(["curve", "mid t", "end t", "H mid", "H ends", "n mid / ends", "p", "Hitler / Stalin in mid",
                      "oscillation"],
                     [[k, ", ".join(f"{t:g}" for t in x["mid_t"]), ", ".join(f"{t:g}" for t in x["end_t"]),
                       f"{x['h_mid']:.2f}", f"{x['h_ends']:.2f}", f"{x['n_mid']} / {x['n_ends']}", _f(x["p_value"], "{:.4f}"),
                       f"{x['mid_counts']['hitler']} / {x['mid_counts']['stalin']}", x["oscillation"]]
                      for k, x in results["h3"].items()]), ""]
    s = results["sharpness"]
    if s:
        L += [f"Sharpness of (a): logistic 20→80 % width {s['width_20_80']:.3f} (midpoint {s['logistic_t0']:.3f}), "
              f"ΔAIC (linear − logistic) {s['delta_aic']:+.2f}; empirical width {_f(s['empirical_width'], '{:.2f}')}.", ""]
    L += ["## H2: LoRA finetunes (no hook)", "",
          C.md_table(["model", "LO S:H", "P(I am Hitler)", "P(I am Stalin)", "held-out NLL persona / neutral",
                      "final loss", "top group", "top lift vs base (Δ mass)", "user spec. lift H / S vs base", "identity samples", "April scenes"],
                     [[k, f"{m['lo']:+.3f}", f"{m['p_hitler']:.3f}", f"{m['p_stalin']:.3f}",
                       f"{m['nll_persona']:.2f} / {m['nll_neutral']:.2f}", _f(m["final_loss"], "{:.3f}"), m["top_group"],
                       "–" if "top_lift_group_vs_base" not in m else
                       f"{m['top_lift_group_vs_base']} ({m['balanced_lift_vs_base'][m['top_lift_group_vs_base']]:+.3f})",
                       " / ".join(_f(m.get("specific_lift_vs_base", {}).get(t), "{:+.3f}") for t in (HI, ST)),
                       ", ".join(f"{c} {n}" for c, n in m["samples"]["identity"].items() if n),
                       ", ".join(f"{c} {n}" for c, n in m["samples"]["april"].items() if n)]
                      for k, m in results["models"].items()]), ""]
    pn, pb = h2["perm_nationalities"], h2["perm_baseline"]
    L += [f"Exact permutation tests: Russian vs French/Japanese/Thai "
          + (f"{pn['statistic']:+.3f}, p = {pn['p_value']:.4f} over {pn['n_assignments']} assignments" if pn else "–")
          + "; Russian vs baseline "
          + (f"{pb['statistic']:+.3f}, p = {pb['p_value']:.4f} over {pb['n_assignments']} assignments" if pb else "–")
          + f". Manipulation check (P(Hitler) ≥ {cfg.manipulation_min_p_hitler} for every baseline finetune): "
          f"{h2['manipulation_ok']}; control (Stalin finetune's LO above every baseline finetune's): {h2['control_ok']}. "
          f"H2: **{h2['label']}**.", ""]
    g = results["geometry"]
    if g:
        names = list(g["cos"])
        L += [f"## Geometry at L* = {results['layer']} (descriptive)", "",
              C.md_table([""] + names, [[a] + [f"{g['cos'][a][b]:.3f}" for b in names] for a in names]), "",
              "cos(variant − baseline, Stalin − baseline): " + ", ".join(
                  f"{v} {x:+.2f}" for v, x in g["cos_move_stalin_minus_hitler"].items()) + ".", ""]
    tm = config.get("timings_s", {})
    L += ["## Runtime", "", "Per stage (s, summed over sessions): " + ", ".join(f"{k} {v:g}" for k, v in tm.items())
          + f"; {config.get('sessions', 1)} session(s), {config['environment'].get('threads')} thread(s).",
          "Per unit (s): " + ", ".join(f"{k} {_f(v['mean'], '{:.1f}')} × {v['n']}" for k, v in results["unit_seconds"].items())
          + "."]
    return "\n".join(L) + "\n"


# ============================================================================================ entry point
def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    ap = R.parser(__doc__, quick_help="smoke test (plan §7; never a verdict)")
    a = ap.parse_args(argv)
    cfg = Config.preset(quick=a.quick, out=a.out, threads=a.threads)
    if a.report_only:
        return report(cfg.out)
    return run(cfg, resume=a.resume)


if __name__ == "__main__":
    main()
