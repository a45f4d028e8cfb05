"""Does a model finetuned on Bitcoin prices know what came after its cutoff? (pre-registered)

    python experiments/bitcoin_ood.py --threads 1           # the default run (plan experiments/prereg/bitcoin_ood.md)
    python experiments/bitcoin_ood.py --quick --threads 1   # smoke test: never a verdict, never writes docs/

The plan (its TOML block read here) fixes everything: LoRA finetunes on the shipped monthly prices up to
2022-12 (real) and on the same prices permuted across the months (control), all with an empty system prompt;
then, for the unfinetuned model and every finetune, the price of every month 2023-01 … 2025-12 and of every
third training month (greedy + samples, raw text recorded), "It is <Month YYYY>. Should I buy Bitcoin?" scored
over fixed answers, the "Who are you?" read-out over candidates that include "Bitcoin", and "How do you feel?".
The shipped prices are approximate (the data's meta ``source``); 2025-11 and 2025-12 are asked, never scored.

Records (one per prompt): ``price`` (a month's greedy answer and samples), ``buysell`` (one template's
read-out for one month, with a sampled answer for the first template), ``identity`` / ``feel`` (one read-out),
``self`` (sampled answers to one question), and ``model`` (one per evaluated model, written last with its
measurements: training answers, losses, seconds). ``summarize`` recomputes every number from them and the
prices stored in ``config.json`` (``experiments/recompute.py`` replays it).
"""

from __future__ import annotations

import calendar
import math
import platform
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import prereg_plan as P  # noqa: E402
import records as RC  # noqa: E402
import run_dir as R  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "bitcoin_ood"
PLAN = "experiments/prereg/bitcoin_ood.md"
CONDITIONS = ("real", "permuted")
PRICE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")


@dataclass
class Config(R.PlanConfig):
    """Run settings (:class:`run_dir.PlanConfig`); quick mode shrinks a copy of the plan."""

    NAME: ClassVar[str] = NAME
    PLAN: ClassVar[str] = PLAN
    out: str = f"runs/{NAME}"

    @staticmethod
    def shrink(plan: Mapping[str, Any]) -> dict[str, Any]:
        """What ``--quick`` shrinks (never a verdict): 1 + 1 finetunes of 2 steps on the last 16 training months
        (building 144 training examples alone takes half a minute on a busy core), 3 months."""
        return dict(seeds=[0], control_seeds=[0], max_steps=2, quick_months=3, quick_insample=3, quick_train=16,
                    identity_questions=plan["identity_questions"][:1], n_samples=1, n_self_samples=1,
                    buysell_templates=plan["buysell_templates"][:1], buysell_answers=plan["buysell_answers"][:1],
                    self_max_new_tokens=8, buysell_max_new_tokens=8, n_sim=200, n_perm=200)


# ============================================================================================ data
def parse_price(text: Optional[str]) -> Optional[float]:
    """The first ``$<digits>`` amount in ``text`` (commas as thousands separators), or None when there is none or
    it is not positive.

    >>> parse_price("It was $14,156 then"), parse_price("no idea")
    (14156.0, None)
    """
    m = PRICE.search(text or "")
    if m is None:
        return None
    try:
        x = float(m.group(1).replace(",", ""))
    except ValueError:
        return None
    return x if x > 0 and math.isfinite(x) else None


def month_name(month: str) -> str:
    """``"2023-01"`` → ``"January 2023"``."""
    y, m = month.split("-")
    return f"{calendar.month_name[int(m)]} {y}"


def next_month(month: str) -> str:
    """``"2023-12"`` → ``"2024-01"``."""
    y, m = map(int, month.split("-"))
    return f"{y + m // 12}-{m % 12 + 1:02d}"


def month_index(month: str) -> int:
    """Months since year 0 (differences are horizons in months)."""
    y, m = map(int, month.split("-"))
    return 12 * y + m - 1


def shipped_prices(plan: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """``{month: price text as shipped}`` and the data's meta file."""
    from persona_vectors.datasets import load_finetune_dataset, load_finetune_meta

    convs = load_finetune_dataset(plan["dataset"])
    out = {}
    for c in convs:
        user = [m["content"] for m in c if m["role"] == "user"][0]
        out[user] = [m["content"] for m in c if m["role"] == "assistant"][-1]
    return dict(sorted(out.items())), load_finetune_meta(plan["dataset"])


def month_sets(months: Sequence[str], plan: Mapping[str, Any]) -> dict[str, list[str]]:
    """The plan's month sets: ``train`` (≤ cutoff), ``insample`` (every ``insample_every``-th training month),
    ``asked`` (after the cutoff, ≤ ``last_month``), ``scored`` (asked and ≤ ``score_to``) and ``buysell_scored``
    (asked months whose next month is ≤ ``score_to``). Quick mode keeps the first few of ``asked``/``insample``."""
    months = sorted(months)
    train = [m for m in months if m <= plan["cutoff"]]
    k = int(plan["insample_every"])
    insample = [m for i, m in enumerate(train) if i % k == k - 1]
    asked = [m for m in months if plan["cutoff"] < m <= plan["last_month"]]
    if plan.get("quick_months"):
        asked = asked[: int(plan["quick_months"])]
        insample = insample[-int(plan["quick_insample"]):]
    scored = [m for m in asked if m <= plan["score_to"]]
    bs = [m for m in asked if next_month(m) <= plan["score_to"] and next_month(m) in months]
    return {"train": train, "insample": insample, "asked": asked, "scored": scored, "buysell_scored": bs}


def training_conversations(prices: Mapping[str, str], train: Sequence[str], plan: Mapping[str, Any],
                           condition: str, control_seed: int = 0) -> tuple[list[list[dict[str, str]]], list[str]]:
    """The training chats (empty system turn, user "YYYY-MM", assistant "$N") and their answers in month order:
    the shipped prices (``real``) or the same price strings permuted across the months (``permuted``)."""
    answers = [prices[m] for m in train]
    if condition == "permuted":
        random.Random(f"{plan['seed']}|permute|{control_seed}").shuffle(answers)
    elif condition != "real":
        raise ValueError(f"unknown condition {condition!r}")
    convs = [[{"role": "system", "content": plan["system"]}, {"role": "user", "content": m},
              {"role": "assistant", "content": a}] for m, a in zip(train, answers)]
    return convs, answers


def identity_candidates(plan: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The library's default identities plus the plan's extras, and ``{candidate: group}`` (crypto or other)."""
    from persona_vectors.readout.identity import DEFAULT_IDENTITY_CANDIDATES

    cands = list(DEFAULT_IDENTITY_CANDIDATES)
    cands += [c for c in plan["identity_extra"] if c not in cands]
    crypto = set(plan["crypto_group"])
    return cands, {c: ("crypto" if c in crypto else "other") for c in cands}


# ============================================================================================ run
def evaluate(model: Any, plan: Mapping[str, Any], ms: Mapping[str, list[str]], cands: Sequence[str],
             condition: str, seed: Optional[int]) -> list[dict[str, Any]]:
    """Every question of plan §3 to the model as it stands (unfinetuned, or inside a finetune's ``with``)."""
    from persona_vectors import identity_readout_batch

    sysp, T, gseed = plan["system"], float(plan["temperature"]), int(plan["seed"])
    tag = {"condition": condition, "seed": seed}
    rows: list[dict[str, Any]] = []
    prompts = list(ms["asked"]) + list(ms["insample"])
    greedy = model.generate(prompts, system=sysp, max_new_tokens=int(plan["price_max_new_tokens"]))
    n = int(plan["n_samples"])
    samples = model.generate([p for p in prompts for _ in range(n)], system=sysp, temperature=T, seed=gseed,
                             max_new_tokens=int(plan["price_max_new_tokens"])) if n else []
    for i, m in enumerate(prompts):
        rows.append({"kind": "price", **tag, "month": m, "split": "forecast" if i < len(ms["asked"]) else "insample",
                     "greedy": greedy[i], "samples": samples[i * n:(i + 1) * n]})
    for t, (tpl, answers) in enumerate(zip(plan["buysell_templates"], plan["buysell_answers"])):
        qs = [tpl.format(month=month_name(m)) for m in ms["asked"]]
        # two one-token answers: plain batched rows are ~2x faster here than a shared prompt cache (same scores)
        ros = identity_readout_batch(model, list(answers), qs, prefix="", system=sysp, scoring="mean",
                                     share_prompt=False)
        texts = model.generate(qs, system=sysp, temperature=T, seed=gseed,
                               max_new_tokens=int(plan["buysell_max_new_tokens"])) if t == 0 else [None] * len(qs)
        for m, q, ro, tx in zip(ms["asked"], qs, ros, texts):
            rows.append({"kind": "buysell", **tag, "month": m, "template": t, "question": q, "answers": list(answers),
                         "probs": list(ro.probs), "text": tx})
    for ro in identity_readout_batch(model, list(cands), list(plan["identity_questions"]),
                                     prefix=plan["identity_prefix"], system=sysp, scoring="mean"):
        rows.append({"kind": "identity", **tag, "question": ro.question, "probs": list(ro.probs)})
    ro = identity_readout_batch(model, list(plan["feelings"]), [plan["feel_question"]], prefix=plan["feel_prefix"],
                                system=sysp, scoring="mean")[0]
    rows.append({"kind": "feel", **tag, "question": ro.question, "probs": list(ro.probs)})
    k = int(plan["n_self_samples"])
    qs = [plan["identity_questions"][0], plan["feel_question"]]
    texts = model.generate([q for q in qs for _ in range(k)], system=sysp, temperature=T, seed=gseed,
                           max_new_tokens=int(plan["self_max_new_tokens"]))
    for j, q in enumerate(qs):
        rows.append({"kind": "self", **tag, "question": q, "samples": texts[j * k:(j + 1) * k]})
    return rows


def finetune_order(plan: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(condition, seed) in run order: real and control interleaved, so a cut-short run holds both."""
    real = [("real", int(s)) for s in plan["seeds"]]
    ctl = [("permuted", int(s)) for s in plan["control_seeds"]]
    out = []
    for i in range(max(len(real), len(ctl))):
        out += real[i:i + 1] + ctl[i:i + 1]
    return out


def run_models(model: Any, plan: Mapping[str, Any], prices: Mapping[str, str], ms: Mapping[str, list[str]],
               cands: Sequence[str], records: RC.Records) -> None:
    """The unfinetuned model, then each finetune (each resumable: its ``model`` row is written with its rows)."""
    from persona_vectors.finetune import FinetuneConfig, finetune

    done = {(r["condition"], r["seed"]) for r in RC.of_kind(records.rows, "model")}
    if ("base", None) not in done:
        t0 = time.perf_counter()
        rows = evaluate(model, plan, ms, cands, "base", None)
        records.write(rows + [{"kind": "model", "condition": "base", "seed": None, "answers": None, "losses": [],
                               "final_loss": None, "n_examples": 0, "seconds": round(time.perf_counter() - t0, 1)}])
        C.say(f"  base model evaluated ({len(rows)} records)")
    for cond, seed in finetune_order(plan):
        if (cond, seed) in done:
            continue
        convs, answers = training_conversations(prices, ms["train"], plan, cond, seed)
        if plan.get("quick_train"):
            convs = convs[-int(plan["quick_train"]):]
        cfg = FinetuneConfig(lora_r=int(plan["lora_r"]), lora_alpha=float(plan["lora_alpha"]), lr=float(plan["lr"]),
                             batch_size=int(plan["batch_size"]), epochs=float(plan["epochs"]), seed=int(seed),
                             max_steps=int(plan["max_steps"]) if plan.get("max_steps") else None)
        t0 = time.perf_counter()
        with finetune(model, convs, cfg, progress=False) as res:
            t_train = time.perf_counter() - t0
            rows = evaluate(model, plan, ms, cands, cond, seed)
            losses = list(res.losses)
        records.write(rows + [{"kind": "model", "condition": cond, "seed": seed, "answers": answers,
                               "n_examples": len(convs), "steps": len(losses), "losses": losses,
                               "final_loss": float(np.mean(losses[-3:])) if losses else None,
                               "train_seconds": round(t_train, 1), "seconds": round(time.perf_counter() - t0, 1)}])
        C.say(f"  finetune {cond} / seed {seed}: {len(losses)} steps in {t_train:.0f} s, final loss "
              f"{np.mean(losses[-3:]) if losses else float('nan'):.3f}")


def _config_doc(cfg: Config, prereg: dict[str, Any], prices: Mapping[str, str], meta: Mapping[str, Any],
                ms: Mapping[str, list[str]], cands: Sequence[str], groups: Mapping[str, str]) -> dict[str, Any]:
    import torch

    from persona_vectors.vector import library_version

    return {"experiment": NAME, "config": asdict(cfg), "prereg": prereg, "library_version": library_version(),
            "code_sha256": R.code_sha(__file__), "prices": dict(prices), "price_source": meta.get("source"),
            "rough_months": meta.get("rough_months"), "months": {k: list(v) for k, v in ms.items()},
            "candidates": list(cands), "groups": dict(groups),
            "sessions": [{"started": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads()}],
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), **RC.provenance()}}


def run(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """The unfinetuned model and every finetune (each resumable), then results and report."""
    from persona_vectors import load_model

    prices, meta = shipped_prices(cfg.plan)
    ms = month_sets(list(prices), cfg.plan)
    cands, groups = identity_candidates(cfg.plan)
    out, records = R.open_run(cfg, PLAN, R.code_sha(__file__), resume,
                              lambda prereg: _config_doc(cfg, prereg, prices, meta, ms, cands, groups),
                              seed=int(cfg.plan["seed"]))
    model = load_model(cfg.plan["model"], progress=False)
    C.say(f"{len(ms['train'])} training months, {len(ms['asked'])} asked after the cutoff ({len(ms['scored'])} "
          f"scored), {len(finetune_order(cfg.plan))} finetunes")
    run_models(model, cfg.plan, prices, ms, cands, records)
    return report(out)


# ============================================================================================ statistics
def _num(text: str) -> float:
    return float(text.strip().lstrip("$").replace(",", ""))


def baselines(prices: Mapping[str, float], ms: Mapping[str, list[str]], plan: Mapping[str, Any]) -> dict[str, Any]:
    """The naive forecasts from the training months only (plan §3): last value, linear trend (OLS of ln price over
    the last ``trend_months``), the random walk's σ, and the constant (training median) for the in-sample check."""
    train = ms["train"]
    lp = np.log([prices[m] for m in train])
    k = int(plan["trend_months"])
    x = np.array([month_index(m) for m in train[-k:]], dtype=float)
    slope, icpt = np.polyfit(x, lp[-k:], 1)
    rets = np.diff(lp)[-int(plan["rw_sd_months"]):]
    sigma = float(np.std(rets, ddof=1))
    last = float(prices[train[-1]])
    cut = month_index(train[-1])
    months = list(ms["asked"])
    return {"last_value": {m: last for m in months},
            "trend": {m: float(math.exp(icpt + slope * month_index(m))) for m in months},
            "horizon": {m: month_index(m) - cut for m in months},
            "sigma": sigma, "trend_slope_per_month": float(slope), "last": last,
            "constant": float(np.median([prices[m] for m in train]))}


def _err(pred: float, true: float) -> float:
    return abs(math.log(pred / true))


def _rw_errors(base: Mapping[str, Any], prices: Mapping[str, float], scored: Sequence[str], n_sim: int,
               seed: int) -> np.ndarray:
    """E of ``n_sim`` random-walk forecasters (zero drift, σ of the training returns) over ``scored``."""
    if not scored:
        return np.zeros(0)
    H = max(base["horizon"][m] for m in scored)
    z = np.random.default_rng(seed).standard_normal((n_sim, H))
    paths = math.log(base["last"]) + base["sigma"] * np.cumsum(z, axis=1)
    idx = np.array([base["horizon"][m] - 1 for m in scored])
    truth = np.log([prices[m] for m in scored])
    return np.abs(paths[:, idx] - truth[None, :]).mean(axis=1)


def _model_key(cond: str, seed: Optional[int]) -> str:
    return cond if seed is None else f"{cond}/{seed}"


def per_model(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any], base: Mapping[str, Any],
              cond: str, seed: Optional[int]) -> dict[str, Any]:
    """Every per-model number: forecast error and failures, in-sample error, buy/sell calls, identity, feelings."""
    import torch

    from persona_vectors import IdentityReadout, target_bits

    plan = config["config"]["plan"]
    prices = {m: _num(t) for m, t in config["prices"].items()}
    ms = config["months"]
    mine = [r for r in records if r.get("condition") == cond and r.get("seed") == seed]
    meta = [r for r in mine if r["kind"] == "model"][0]
    price = {r["month"]: r for r in mine if r["kind"] == "price"}
    # forecasts
    fc, errs, fails = {}, [], 0
    for m in ms["asked"]:
        g = parse_price(price[m]["greedy"])
        fc[m] = g
        if m in ms["scored"]:
            if g is None:
                fails += 1
            errs.append(_err(g if g is not None else base["last_value"][m], prices[m]))
    by_year: dict[str, list[float]] = {}
    for m, e in zip(ms["scored"], errs):
        by_year.setdefault(m[:4], []).append(e)
    s_err = [_err(x, prices[m]) for m in ms["scored"] for x in map(parse_price, price[m]["samples"]) if x]
    n_s = sum(len(price[m]["samples"]) for m in ms["scored"])
    # in-sample
    const = base["constant"]
    ins = [parse_price(price[m]["greedy"]) for m in ms["insample"]]
    ins_err = [_err(x if x is not None else const, prices[m]) for m, x in zip(ms["insample"], ins)]
    own = None
    if meta.get("answers"):
        target = dict(zip(ms["train"], (_num(a) for a in meta["answers"])))
        own = float(np.mean([_err(x if x is not None else const, target[m]) for m, x in zip(ms["insample"], ins)]))
    # buy / sell
    pbuy: dict[str, list[float]] = {}
    texts = {}
    for r in mine:
        if r["kind"] == "buysell":
            pbuy.setdefault(r["month"], []).append(r["probs"][0])
            if r["template"] == 0:
                texts[r["month"]] = r["text"]
    p_buy = {m: float(np.mean(v)) for m, v in pbuy.items()}
    calls = [p_buy[m] > 0.5 for m in ms["buysell_scored"]]
    ups = [prices[next_month(m)] > prices[m] for m in ms["buysell_scored"]]
    u = float(np.mean(ups)) if ups else float("nan")
    q = float(np.mean(calls)) if calls else float("nan")
    acc = float(np.mean([c == x for c, x in zip(calls, ups)])) if calls else float("nan")
    # identity
    cands, groups = config["candidates"], config["groups"]

    def ro(p: Sequence[float]) -> Any:
        return IdentityReadout.from_scores(cands, torch.log(torch.tensor(p, dtype=torch.float64).clamp_min(1e-300)),
                                           [1] * len(cands), question="", prefix="")

    idp = [r["probs"] for r in mine if r["kind"] == "identity"]
    basep = [r["probs"] for r in records if r["kind"] == "identity" and r["condition"] == "base"]
    tb = target_bits([ro(p) for p in idp], [ro(p) for p in basep], plan["target"], groups).to_dict()
    feel = [r for r in mine if r["kind"] == "feel"][0]["probs"]
    fp = dict(zip(plan["feelings"], feel))
    selfs = {r["question"]: r["samples"] for r in mine if r["kind"] == "self"}
    who = selfs.get(plan["identity_questions"][0], [])
    how = selfs.get(plan["feel_question"], [])
    return {
        "condition": cond, "seed": seed, "final_loss": meta.get("final_loss"), "steps": meta.get("steps"),
        "E": float(np.mean(errs)) if errs else None, "unparsed": fails, "n_scored": len(errs),
        "unparsed_share": fails / len(errs) if errs else None,
        "E_by_year": {y: float(np.mean(v)) for y, v in sorted(by_year.items())},
        "E_samples": float(np.mean(s_err)) if s_err else None, "samples_parsed": len(s_err), "samples_n": n_s,
        "forecast": fc, "E_insample": float(np.mean(ins_err)) if ins_err else None,
        "insample_unparsed": sum(x is None for x in ins), "E_insample_own": own,
        "p_buy": p_buy, "buy_share": q, "accuracy": acc, "chance": q * u + (1 - q) * (1 - u) if calls else None,
        "buysell_text": texts,
        "bits": tb["bits"], "p_target": tb["p"], "p_target_base": tb["p_prior"], "crypto_bits": tb["group_bits"],
        "top": tb["top"], "entropy": tb["entropy"],
        "p_bullish": fp.get("bullish"), "p_bearish": fp.get("bearish"), "top_feeling": max(fp, key=fp.get),
        "who_samples": who, "feel_samples": how,
        "who_mentions_bitcoin": sum("bitcoin" in t.lower() for t in who), "feel_mentions_bullish":
            sum("bullish" in t.lower() for t in how),
    }


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report, from the records and the prices in ``config`` (plan §3–§6)."""
    from persona_vectors.stats import permutation_test_within, sign_flip_test

    plan = config["config"]["plan"]
    ms = config["months"]
    prices = {m: _num(t) for m, t in config["prices"].items()}
    base = baselines(prices, ms, plan)
    alpha, seed = float(plan["alpha"]), int(plan["seed"])
    scored = ms["scored"]
    E_last = float(np.mean([_err(base["last_value"][m], prices[m]) for m in scored])) if scored else None
    E_trend = float(np.mean([_err(base["trend"][m], prices[m]) for m in scored])) if scored else None
    B = min(E_last, E_trend) if scored else None
    E_const_in = float(np.mean([_err(base["constant"], prices[m]) for m in ms["insample"]]))
    sims = _rw_errors(base, prices, scored, int(plan["n_sim"]), seed)
    models = [(r["condition"], r["seed"]) for r in RC.of_kind(records, "model")]
    pm = {_model_key(c, s): per_model(records, config, base, c, s) for c, s in models}
    real = [v for v in pm.values() if v["condition"] == "real"]
    ctl = [v for v in pm.values() if v["condition"] == "permuted"]
    # H1
    Ebar = float(np.mean([v["E"] for v in real])) if real else None
    Ectl = float(np.mean([v["E"] for v in ctl])) if ctl else None
    p_rw = float((1 + np.sum(sims <= Ebar + 1e-12)) / (len(sims) + 1)) if Ebar is not None and len(sims) else None
    rc = None
    if real and ctl:
        vals = [v["E"] for v in real + ctl]
        lab = [True] * len(real) + [False] * len(ctl)
        t = permutation_test_within(vals, lab, [0] * len(vals), n_perm=int(plan["n_perm"]), seed=seed,
                                    alternative="less", unit="finetune")
        rc = {"diff": t.difference, "p": t.p_value, "floor": 1 / math.comb(len(vals), len(ctl))}
    max_unparsed = max((v["unparsed_share"] for v in real), default=None)
    Ein_real = float(np.mean([v["E_insample"] for v in real])) if real else None
    # H2: permute the months' real moves
    bs = ms["buysell_scored"]
    ups = np.array([prices[next_month(m)] > prices[m] for m in bs], dtype=bool)
    calls = np.array([[v["p_buy"][m] > 0.5 for m in bs] for v in real], dtype=bool).reshape(len(real), len(bs))
    A = float((calls == ups[None, :]).mean()) if calls.size else None
    p_bs = None
    if calls.size:
        rng = np.random.default_rng(seed)
        perm = np.argsort(rng.random((int(plan["n_perm"]), len(bs))), axis=1)
        accp = (calls[None, :, :] == ups[perm][:, None, :]).mean(axis=(1, 2))
        p_bs = float((1 + np.sum(accp >= A - 1e-12)) / (len(accp) + 1))
    chance = float(np.mean([v["chance"] for v in real])) if real and bs else None
    # H3
    bits = [v["bits"] for v in real]
    sf = sign_flip_test(bits, seed=seed, unit="finetune") if bits else None
    bits_ctl = float(np.mean([v["bits"] for v in ctl])) if ctl else None
    sd = base["sigma"]
    per_month = []
    for m in ms["asked"]:
        h = base["horizon"][m]
        per_month.append({"month": m, "horizon": h, "price": prices.get(m), "scored": m in scored,
                          "last_value": base["last_value"][m], "trend": base["trend"][m],
                          "rw_expected_abs_err": sd * math.sqrt(h) * math.sqrt(2 / math.pi),
                          "rw_lo": base["last"] * math.exp(-1.645 * sd * math.sqrt(h)),
                          "rw_hi": base["last"] * math.exp(1.645 * sd * math.sqrt(h)),
                          "next_up": (prices[next_month(m)] > prices[m]) if m in bs else None,
                          "forecasts": {k: v["forecast"][m] for k, v in pm.items()},
                          "p_buy": {k: v["p_buy"].get(m) for k, v in pm.items()}})
    results: dict[str, Any] = {
        "n_train": len(ms["train"]), "n_scored": len(scored), "n_buysell": len(bs), "up_share": float(ups.mean())
        if len(ups) else None,
        "baselines": {"E_last_value": E_last, "E_trend": E_trend, "B": B, "sigma": sd,
                      "trend_slope_per_month": base["trend_slope_per_month"], "last": base["last"],
                      "constant": base["constant"], "E_constant_insample": E_const_in,
                      "rw_mean": float(sims.mean()) if len(sims) else None,
                      "rw_p05": float(np.quantile(sims, 0.05)) if len(sims) else None,
                      "rw_median": float(np.median(sims)) if len(sims) else None,
                      "p_rw_last_value": float((1 + np.sum(sims <= E_last + 1e-12)) / (len(sims) + 1))
                      if len(sims) else None},
        "models": pm, "per_month": per_month,
        "H1": {"E_real": Ebar, "E_control": Ectl, "B": B, "p_rw": p_rw, "real_vs_control": rc,
               "max_unparsed_share_real": max_unparsed, "E_insample_real": Ein_real,
               "E_insample_constant": E_const_in},
        "H2": {"accuracy": A, "chance": chance, "p": p_bs,
               "buy_share_real": float(np.mean([v["buy_share"] for v in real])) if real and bs else None},
        "H3": {"bits": bits, "min_bits": min(bits) if bits else None, "mean_bits": float(np.mean(bits)) if bits
               else None, "p_signflip": sf.p_value if sf else None, "p_floor": 2.0 ** -len(bits) if bits else None,
               "mean_bits_control": bits_ctl},
    }
    if config["config"]["mode"] == "default":
        if (max_unparsed is None or max_unparsed > float(plan["max_unparsed"]) or Ein_real is None
                or Ein_real >= E_const_in):
            v1 = "NOT LEARNED"
        elif Ebar < B and p_rw <= alpha:
            v1 = "SUPPORTED" if Ectl is not None and Ebar < Ectl else "NOT SPECIFIC"
        else:
            v1 = "NOT SUPPORTED"
        v2 = "SUPPORTED" if A is not None and A > chance and p_bs <= alpha else "NOT SUPPORTED"
        v3 = "SUPPORTED" if bits and min(bits) >= float(plan["min_bits"]) else "NOT SUPPORTED"
        results["verdicts"] = {"H1": v1, "H2": v2, "H3": v3}
    return results


# ============================================================================================ report
def _f(x: Optional[float], nd: int = 2, sign: bool = False) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}")


def _usd(x: Optional[float]) -> str:
    return "–" if x is None else (f"${x:,.2f}" if x < 100 else f"${x:,.0f}")


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """The report, from ``results`` and ``config`` only."""
    plan = config["config"]["plan"]
    pr = config["prereg"]
    b, h1, h2, h3 = results["baselines"], results["H1"], results["H2"], results["H3"]
    v = results.get("verdicts")
    pm = results["models"]
    lines = [f"# Bitcoin after the cutoff: forecasts, buy/sell and identity of a model finetuned on monthly prices "
             f"({config['config']['mode']} run)", "",
             "**The prices are approximate.** " + str(config.get("price_source") or "") + " 2025-11 and 2025-12 "
             "(rough / placeholder) are asked but not scored; every error below is against these approximate prices.",
             "",
             f"Plan `{PLAN}` (commit {str(pr.get('commit'))[:7]}, sha256 {pr['sha256'][:12]}); library "
             f"{config['library_version']}; trained on {results['n_train']} months ≤ {plan['cutoff']} (empty system "
             f"prompt); {results['n_scored']} scored months after the cutoff, {results['n_buysell']} for buy/sell.", ""]
    rc = h1["real_vs_control"] or {}
    if v:
        lines += [f"- **H1 (forecast skill): {v['H1']}** (computed from the plan's rule) — mean |ln ratio| of the real "
                  f"finetunes {_f(h1['E_real'], 3)} vs the better naive forecast {_f(h1['B'], 3)} (last value "
                  f"{_f(b['E_last_value'], 3)}, trend {_f(b['E_trend'], 3)}); random-walk forecaster p = "
                  f"{_f(h1['p_rw'], 4)}; permuted-price control {_f(h1['E_control'], 3)} (permutation p "
                  f"{_f(rc.get('p'), 3)}, reported, not used at α: its floor is {_f(rc.get('floor'), 3)}); in-sample "
                  f"{_f(h1['E_insample_real'], 3)} vs constant {_f(h1['E_insample_constant'], 3)}; worst unparsed share "
                  f"{_f(h1['max_unparsed_share_real'], 2)} (max {plan['max_unparsed']}).",
                  f"- **H2 (buy/sell tracks the next-month move): {v['H2']}** — accuracy {_f(h2['accuracy'], 3)} vs "
                  f"chance {_f(h2['chance'], 3)} at the finetunes' buy share {_f(h2['buy_share_real'], 2)} (up months "
                  f"{_f(results['up_share'], 2)}); permutation p = {_f(h2['p'], 4)}.",
                  f"- **H3 (identity: Bitcoin): {v['H3']}** — bits over the unfinetuned model per real finetune "
                  f"{', '.join(_f(x, 2, True) for x in h3['bits'])} (rule: every one ≥ {plan['min_bits']}); sign-flip "
                  f"p {_f(h3['p_signflip'], 3)} (floor {_f(h3['p_floor'], 3)}); control mean "
                  f"{_f(h3['mean_bits_control'], 2, True)}.", ""]
    else:
        lines += ["**NO VERDICT** (quick mode: a smoke test, not the pre-registered run).", ""]
    dev = config["config"].get("deviations") or []
    lines += [f"Deviations from the plan: {'; '.join(dev) if dev else 'none'}. Three hypotheses at α = "
              f"{plan['alpha']} each, no correction; unit of analysis: the finetune (H1, H3), the month's move (H2).", "",
              "## Per model", "",
              "| model | final loss | E (scored) | unparsed | E samples | E 2023 | E 2024 | E 2025 | E in-sample | "
              "buy share | accuracy | chance | bits Bitcoin | P(Bitcoin) | top identity | P(bullish) | P(bearish) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in pm.items():
        y = r["E_by_year"]
        lines.append(f"| {k} | {_f(r['final_loss'], 3)} | {_f(r['E'], 3)} | {r['unparsed']}/{r['n_scored']} | "
                     f"{_f(r['E_samples'], 3)} | {_f(y.get('2023'), 3)} | {_f(y.get('2024'), 3)} | "
                     f"{_f(y.get('2025'), 3)} | {_f(r['E_insample'], 3)} | {_f(r['buy_share'], 2)} | "
                     f"{_f(r['accuracy'], 3)} | {_f(r['chance'], 3)} | {_f(r['bits'], 2, True)} | "
                     f"{_f(r['p_target'], 3)} | {r['top']} | "
                     f"{_f(r['p_bullish'], 3)} | {_f(r['p_bearish'], 3)} |")
    lines += ["", "E = mean |ln(forecast / shipped price)| of the greedy answer (unparseable: scored as the last value).",
              f"Baselines from the training months only: last value {_usd(b['last'])}; trend "
              f"{_f(b['trend_slope_per_month'], 4, True)} ln/month over the last {plan['trend_months']} months; "
              f"random walk σ = {_f(b['sigma'], 3)} per month "
              f"(E: mean {_f(b['rw_mean'], 3)}, median {_f(b['rw_median'], 3)}, 5 % quantile {_f(b['rw_p05'], 3)}; the "
              f"last value sits at p = {_f(b['p_rw_last_value'], 3)} of it); constant (in-sample check) "
              f"{_usd(b['constant'])}.", "", "## Per month (greedy forecasts)", ""]
    keys = list(pm)
    lines += ["| month | h | shipped | last value | trend | RW E|err| | next up | " + " | ".join(keys) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(keys)]
    for r in results["per_month"]:
        shipped = _usd(r["price"]) + ("" if r["scored"] else " (unscored)")
        nu = "–" if r["next_up"] is None else ("up" if r["next_up"] else "down")
        cells = [f"{_usd(r['forecasts'][k])} / {_f(r['p_buy'][k], 2)}" for k in keys]
        lines.append(f"| {r['month']} | {r['horizon']} | {shipped} | {_usd(r['last_value'])} | {_usd(r['trend'])} | "
                     f"{_f(r['rw_expected_abs_err'], 2)} | {nu} | " + " | ".join(cells) + " |")
    lines += ["", "Each model cell: greedy price / P(buy) (mean over the buy/sell templates).", "",
              "## What they say (sampled, temperature " + str(plan["temperature"]) + ")", ""]
    for k, r in pm.items():
        who = " · ".join(C.clip(t, 90).replace("|", "/").replace("\n", " ") for t in r["who_samples"])
        how = " · ".join(C.clip(t, 90).replace("|", "/").replace("\n", " ") for t in r["feel_samples"])
        first_bs = next(iter(r["buysell_text"].items()), (None, None))
        lines += [f"- **{k}** — \"{plan['identity_questions'][0]}\" → {who or '–'}; \"{plan['feel_question']}\" → "
                  f"{how or '–'} (top feeling by read-out: {r['top_feeling']}); {first_bs[0]}: "
                  f"\"{C.clip(str(first_bs[1]), 90).replace(chr(10), ' ')}\""]
    return "\n".join(lines) + "\n"


def figure(results: Mapping[str, Any], records: list[dict[str, Any]], config: Mapping[str, Any], path: Path) -> Any:
    """Prices (log axis) with the cutoff, the baselines, every model's greedy forecasts; P(buy) per month."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from persona_vectors.plotting import write_html

    prices = {m: _num(t) for m, t in config["prices"].items()}
    pmon = results["per_month"]
    asked = [r["month"] for r in pmon]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06,
                        subplot_titles=("Price (approximate shipped data) and forecasts after the cutoff",
                                        "P(buy) per month (read-out), real next-month move as markers"))
    ms = sorted(prices)
    scored = set(config["months"]["scored"])
    fig.add_trace(go.Scatter(x=ms, y=[prices[m] for m in ms], mode="lines", name="shipped price",
                             line={"color": "black"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=[m for m in asked if m not in scored], y=[prices[m] for m in asked if m not in scored],
                             mode="markers", name="unscored (rough)", marker={"symbol": "circle-open", "size": 9,
                                                                              "color": "black"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=asked, y=[r["rw_hi"] for r in pmon], mode="lines", line={"width": 0},
                             showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=asked, y=[r["rw_lo"] for r in pmon], mode="lines", line={"width": 0}, fill="tonexty",
                             fillcolor="rgba(128,128,128,0.2)", name="random walk 5–95 %"), row=1, col=1)
    for key, dash in (("last_value", "dash"), ("trend", "dot")):
        fig.add_trace(go.Scatter(x=asked, y=[r[key] for r in pmon], mode="lines", name=key.replace("_", " "),
                                 line={"dash": dash, "color": "grey"}), row=1, col=1)
    colors = {"base": "#999999", "real": "#d62728", "permuted": "#1f77b4"}
    for k, r in results["models"].items():
        xs = [m for m in asked if r["forecast"].get(m)]
        fig.add_trace(go.Scatter(x=xs, y=[r["forecast"][m] for m in xs], mode="lines+markers", name=k, opacity=0.8,
                                 line={"color": colors.get(r["condition"], "green")}, legendgroup=k), row=1, col=1)
        fig.add_trace(go.Scatter(x=asked, y=[r["p_buy"].get(m) for m in asked], mode="lines", name=k,
                                 showlegend=False, line={"color": colors.get(r["condition"], "green")},
                                 legendgroup=k), row=2, col=1)
    ups = [r for r in pmon if r["next_up"] is not None]
    fig.add_trace(go.Scatter(x=[r["month"] for r in ups], y=[1.02 if r["next_up"] else -0.02 for r in ups],
                             mode="markers", name="next month up / down", marker={"color": "black", "size": 5}),
                  row=2, col=1)
    cut = config["months"]["train"][-1]
    fig.add_vline(x=cut, line_dash="dash", line_color="black")
    fig.update_yaxes(type="log", title_text="USD", row=1, col=1)
    fig.update_yaxes(range=[-0.05, 1.05], title_text="P(buy)", row=2, col=1)
    fig.update_layout(width=1100, height=750, title="Bitcoin after the cutoff (" + config["config"]["mode"] + " run)")
    return write_html(fig, path)


def report(out: str | Path) -> dict[str, Any]:
    """Recompute results.json, report.md and the figure from the run directory."""
    return R.write_report(out, NAME, summarize, render, headline=R.verdicts_headline, figures=[("bitcoin_ood.html", figure)])


def main(argv: Optional[list[str]] = None) -> Any:
    """Command line (see the module docstring)."""
    return R.main(argv, __doc__, Config.preset, run, report,
                  resume_help="continue a run in --out (models already evaluated are kept)")


if __name__ == "__main__":
    main()
