"""Does steering away from the AI assistant make ghosts and angels? (Assistant Axis replication on SmolLM2-135M)

    python experiments/assistant_axis.py [--quick] [--full] [--seed N] [--out runs/assistant_axis] [--threads 0]

Claim under test: outside robots/AIs/sci-fi archetypes, models reach for immaterial spiritual beings (ghosts,
souls, angels), and steering away from the AI-assistant direction produces ghost/angel archetypes.

1. **Persona space.** Role vectors (role mean − default-assistant mean of the response-token residual stream)
   for the role catalogue at every layer (:func:`persona_vectors.personas.role_means`); the Assistant Axis
   (default mean − mean of role means); PCA per layer (:class:`persona_vectors.PersonaSpace`): variance
   explained, cos(axis, PC1), which roles sit at each end of PC1 and of the axis.
2. **Steering sweep** at a few layers: relative coefficients α (units of the mean residual norm at the layer,
   ``steer(..., relative=True)``) from toward the assistant (α > 0) to far away (α < 0), on *evaluation*
   questions only, greedy, one generation per (question, cell). Per-row α and per-row directions: one
   ``generate`` call covers many cells.
3. **Controls** at the same α and layers: ``n_random`` random Gaussian directions (question ``i`` uses random
   direction ``i mod n_random``, so each cell pools all of them), the difference of two non-assistant role
   means, and no steering.
4. **Read-outs per cell:** archetype shares (offline :class:`~persona_vectors.judge.EmbeddingJudge`) with
   Wilson 95 % intervals, coherence under the unsteered model, identity read-out (log-probs of "I am <name>"
   over a candidate set with ghost/angel/spirit/soul/demon), nearest-role read-out (cosine of the mean steered
   response activation, relative to the unsteered cell, to every role vector — at the steered layer and
   ``readout_offset`` layers downstream).
5. **Verdict:** supernatural share among coherent generations under anti-assistant steering vs the random
   controls over the same α (matched norm; coherence-matched by restricting to coherent texts, and per α to
   the random cell of nearest mean coherence), with Newcombe 95 % intervals on the difference.

Records (``records.jsonl.gz``): one ``generation`` record per generated answer (condition, layer, α, direction,
question, text, judge label and probabilities, coherence) and one ``identity`` record per (cell, question);
``results.json`` = :func:`summarize` of them, ``report.md`` = :func:`render` of that;
``python experiments/recompute.py <run dir>`` replays both.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import records as RC  # noqa: E402

NAME = "assistant_axis"

#: Identity read-out candidates (follow "I am"), grouped. No candidate is a string prefix of another.
ID_GROUPS: dict[str, tuple[str, ...]] = {
    "ai_assistant": ("an AI assistant", "SmolLM", "a chatbot", "a language model", "a robot"),
    "supernatural": ("a ghost", "an angel", "a spirit", "a soul", "a demon", "a phantom"),
    "human": ("a human", "a person", "a teacher"),
    "other": ("an animal", "the ocean", "a star", "Napoleon", "a dragon"),
}
SUPERNATURAL = "supernatural"
#: A transparent cross-check on the judge: does the text name a spiritual being or the afterlife?
SUPER_LEXICON = re.compile(
    r"\b(ghosts?|spirits?|souls?|angels?|angelic|heaven(ly)?|afterlife|divine|demons?|phantoms?|spectres?|specters?|"
    r"wraiths?|haunt(ed|ing|s)?|undead|immortal|ethereal|celestial being|god(dess)?|holy|the dead)\b", re.I)
JUDGE_GROUPS = ("supernatural", "ai_assistant", "human", "incoherent", "other")


@dataclass
class Config:
    """Settings of one run (``preset(quick=...)`` gives the two documented modes)."""

    quick: bool = False
    seed: int = 0
    out: str = "runs/assistant_axis"
    threads: int = 0  # 0: auto (see _common.set_threads)
    cache: Optional[str] = None  # persona_vectors disk cache root (None: the library default)
    # --- persona space
    roles: Optional[list[str]] = None  # None: every catalogue role
    role_questions: int = 3  # first N extraction questions per role
    role_prompts: int = 1  # first N system prompts per role
    role_max_new_tokens: int = 32
    n_components: int = 5
    # --- steering sweep
    layers: list[int] = field(default_factory=lambda: [14, 20])
    alphas: list[float] = field(default_factory=lambda: [1.0, -0.25, -0.5, -0.75, -1.0])
    n_questions: int = 30  # evaluation questions = generations per cell (greedy)
    n_random: int = 5
    n_identity_random: int = 2  # random directions that also get an identity read-out (each is a full cell)
    pair: tuple[str, str] = ("pirate_captain", "librarian")  # control direction: mean(pair[0]) − mean(pair[1])
    max_new_tokens: int = 32
    batch_size: int = 64
    system: Optional[str] = None  # None: SmolLM2's template default system prompt ("...named SmolLM...")
    readout_offset: int = 4  # nearest-role read-out also this many layers below the steered layer
    coherence_threshold: float = 0.5
    n_identity_questions: int = 4
    n_examples: int = 3

    mode: str = "default"

    @classmethod
    def preset(cls, quick: bool = False, seed: int = 0, out: Optional[str] = None, threads: int = 0,
               full: bool = False) -> "Config":
        """``default`` (≤ 20 min on 2 idle cores), ``quick`` (CI smoke test) or ``full``.

        ``default``: every catalogue role (1 prompt × 3 questions), layers 14 and 20, α ∈ {+1, −0.25, −0.5,
        −0.75, −1}, 32 new tokens, n = 30 per cell, 5 random directions (2 with identity read-outs).
        ``full`` (about an hour on 2 cores): 2 prompts per role, layers 8/14/20, 7 α values down to −1.5,
        40 new tokens, identity read-outs for all 5 random directions.
        """
        if full:
            return cls(seed=seed, out=out or "runs/assistant_axis_full", threads=threads, mode="full", role_prompts=2,
                       layers=[8, 14, 20], alphas=[1.0, 0.5, -0.25, -0.5, -0.75, -1.0, -1.5], max_new_tokens=40,
                       n_identity_random=5)
        if not quick:
            return cls(seed=seed, out=out or "runs/assistant_axis", threads=threads)
        from persona_vectors.datasets import ROLE_CATEGORIES, load_roles

        roles = [r.name for c in ROLE_CATEGORIES for r in load_roles(c)[:2]]
        return cls(quick=True, mode="quick", seed=seed, out=out or "runs/assistant_axis_quick", threads=threads, roles=roles,
                   role_questions=2, role_prompts=1, layers=[14], alphas=[1.0, -0.5, -1.0], n_questions=6,
                   n_random=2, n_identity_random=1, max_new_tokens=20, n_identity_questions=2, n_components=3,
                   n_examples=1)


# ============================================================================================ persona space
def persona_space(model: Any, cfg: Config, run: C.RunDir) -> dict[str, Any]:
    from persona_vectors import PersonaSpace, Site
    from persona_vectors.datasets import get_role, load_roles
    from persona_vectors.personas import role_means

    names = list(dict.fromkeys((cfg.roles or [r.name for r in load_roles()]) + list(cfg.pair)))
    t = time.perf_counter()
    rm = role_means(model, names, n_questions=cfg.role_questions, n_prompts=cfg.role_prompts, layers="all",
                    max_new_tokens=cfg.role_max_new_tokens, cache=cfg.cache if cfg.cache else True,
                    progress=lambda m: C.say(f"  role means: {m}"))
    C.say(f"role means for {len(names)} roles in {time.perf_counter() - t:.0f}s")
    axis = rm.axis("assistant_axis")
    cats = {n: get_role(n).category for n in names}
    spaces: dict[int, Any] = {}
    layer_rows = []
    for s in rm.sites:
        L = s.layer
        sp = PersonaSpace(n_components=cfg.n_components).fit(rm.vectors, site=s, anchor=axis[s])
        spaces[L] = sp
        al = sp.axis_alignment(axis)
        row = run.records.add("pca_layer", layer=L, explained_variance_ratio=sp.explained_variance_ratio_.tolist(),
                              cos_axis_pc=al.tolist(), axis_rel_norm=float(axis[s].norm()) / rm.default_mean_norm[s]
                              if rm.default_mean_norm.get(s) else None)
        layer_rows.append(row)
    # roles along PC1 and along the axis at the steering layers (and the readout layers)
    ends = {}
    for L in sorted(set(cfg.layers)):
        sp = spaces[L]
        a = C.unit(axis[Site(L)])
        proj = {n: float(rm.vectors[n][Site(L)].double() @ a) for n in names}
        order = sorted(names, key=lambda n: proj[n])
        cat_mean = defaultdict(list)
        for n in names:
            cat_mean[cats[n]].append(proj[n])
        ex = sp.extremes(k=8, component=0)
        ends[L] = {"pc1_low": ex["low"], "pc1_high": ex["high"],
                   "axis_low": [(n, proj[n]) for n in order[:8]], "axis_high": [(n, proj[n]) for n in order[::-1][:8]],
                   "axis_by_category": {c: float(np.mean(v)) for c, v in sorted(cat_mean.items())},
                   "axis_rank_categories_bottom20": dict(Counter(cats[n] for n in order[:20]))}
        run.records.add("role_ends", layer=L, **ends[L])
    run.records.add("persona_space", n_layers=rm.sites[-1].layer + 1, last_layer=rm.sites[-1].layer, n_roles=len(names),
                    n_default_prompts=rm.n_default_samples // max(len(rm.questions), 1), roles=names)
    return {"rm": rm, "axis": axis, "spaces": spaces, "cats": cats, "names": names, "ends": ends,
            "layer_rows": layer_rows}


# ============================================================================================ sweep
@dataclass
class Row:
    condition: str  # axis | random | pair | none
    layer: int  # steered layer (none: -1)
    alpha: float
    q: int  # question index
    direction: int = 0  # random direction index


def _directions(model: Any, cfg: Config, ps: dict[str, Any]) -> dict[tuple[str, int, int], torch.Tensor]:
    from persona_vectors import Site

    rm, axis = ps["rm"], ps["axis"]
    g = torch.Generator().manual_seed(10_000 + cfg.seed)
    rand = [torch.randn(model.d_model, generator=g, dtype=torch.float64) for _ in range(cfg.n_random)]
    a, b = cfg.pair
    out = {}
    for L in cfg.layers:
        s = Site(L)
        k = rm.sites.index(s)
        out[("axis", L, 0)] = C.unit(axis[s])
        out[("pair", L, 0)] = C.unit(rm.means[a][k].double() - rm.means[b][k].double())
        for i, r in enumerate(rand):
            out[("random", L, i)] = C.unit(r)
    return out


def sweep(model: Any, cfg: Config, ps: dict[str, Any], questions: list[str]) -> tuple[list[Row], list[str], dict[int, torch.Tensor]]:
    dirs = _directions(model, cfg, ps)
    rows: list[Row] = [Row("none", -1, 0.0, q) for q in range(len(questions))]
    for L in cfg.layers:
        for cond in ("axis", "random", "pair"):
            for a in cfg.alphas:
                for q in range(len(questions)):
                    rows.append(Row(cond, L, float(a), q, q % cfg.n_random if cond == "random" else 0))
    capture = sorted({L for L in cfg.layers} | {min(L + cfg.readout_offset, model.n_layers - 1) for L in cfg.layers})
    texts: list[str] = []
    means: dict[int, list[torch.Tensor]] = {L: [] for L in capture}
    # one generate call per chunk; steered layer differs between groups, so group rows by layer
    by_layer: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_layer[r.layer].append(i)
    texts = [""] * len(rows)
    acts = {L: torch.zeros(len(rows), model.d_model, dtype=torch.float64) for L in capture}
    for L, idx in by_layer.items():
        steer_layer = L if L >= 0 else cfg.layers[0]
        prompts = [questions[rows[i].q] for i in idx]
        D = torch.stack([dirs[(rows[i].condition, L, rows[i].direction)] if L >= 0 else torch.zeros(model.d_model,
                         dtype=torch.float64) for i in idx])
        al = [rows[i].alpha for i in idx]
        t = time.perf_counter()
        tx, mm, _ = C.generate_steered(model, prompts, D if L >= 0 else None, al, steer_layer, capture_layers=capture,
                                       system=cfg.system, max_new_tokens=cfg.max_new_tokens,
                                       batch_size=cfg.batch_size, progress=lambda m: C.say(f"  layer {L}: {m}"))
        C.say(f"sweep layer {L}: {len(idx)} generations in {time.perf_counter() - t:.0f}s")
        for j, i in enumerate(idx):
            texts[i] = tx[j]
            for c in capture:
                acts[c][i] = mm[c][j]
    return rows, texts, acts


def _dir_id(cond: str, k: int) -> str:
    return f"random{k}" if cond == "random" else cond


def identity_records(model: Any, cfg: Config, dirs: dict, questions: list[str]) -> list[dict[str, Any]]:
    """Identity read-out per cell / random direction: one record per (cell, question) with the probability of
    every candidate (normalized over the candidate set) and its log-prob score."""
    from persona_vectors import steer
    from persona_vectors.readout import identity_readout_batch

    cands = [c for g in ID_GROUPS.values() for c in g]

    def read(cond: str, L: int, a: float, k: int) -> list[dict[str, Any]]:
        rs = identity_readout_batch(model, cands, questions, system=cfg.system, batch_size=64)
        return [{"kind": "identity", "condition": cond, "layer": L, "alpha": a, "direction": k,
                 "direction_id": _dir_id(cond, k), "question_id": qi, "question": q,
                 "scoring": "mean" if getattr(r, "normalize_length", False) else "sum",
                 "probs": dict(zip(cands, r.probs)), "logprobs": dict(zip(cands, r.logprobs))}
                for qi, (q, r) in enumerate(zip(questions, rs))]

    out = read("none", -1, 0.0, 0)
    for (cond, L, k), v in dirs.items():
        if cond == "random" and k >= cfg.n_identity_random:
            continue
        for a in cfg.alphas:
            with steer(model, v, float(a), layers=[L], relative=True):
                out += read(cond, L, float(a), k)
    return out


def identity_summary(recs: list[dict[str, Any]], groups: dict[str, list[str]]) -> dict[str, Any]:
    """Mean over questions of the candidate distribution, the group masses (and per question), the top one."""
    cands = list(recs[0]["probs"])
    P = np.array([[r["probs"][c] for c in cands] for r in recs])  # [q, c]
    gm = {g: P[:, [cands.index(c) for c in cs]].sum(1) for g, cs in groups.items()}
    return {"probs": dict(zip(cands, P.mean(0).tolist())),
            "groups": {g: float(v.mean()) for g, v in gm.items()},
            "groups_per_q": {g: v.tolist() for g, v in gm.items()},
            "top": cands[int(P.mean(0).argmax())]}


# ============================================================================================ analysis
N_LAYERS = 30  # SmolLM2-135M


def primary_layer(cfg: Config) -> int:
    """The steering layer the verdict is about: the one closest to the middle of the network (fixed in advance)."""
    return min(cfg.layers, key=lambda L: (abs(L - N_LAYERS / 2), L))


def _group(label: str) -> str:
    return label if label in JUDGE_GROUPS else "other"


def analyse(cfg: Config, rows: list[Row], texts: list[str], labels: list[str], coh: list[float]) -> dict[tuple, dict]:
    """Per cell (condition, layer, alpha): shares (all / coherent-only), mean coherence."""
    cells: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        cells[(r.condition, r.layer, r.alpha)].append(i)
    out = {}
    for key, idx in cells.items():
        n = len(idx)
        coherent = [i for i in idx if coh[i] >= cfg.coherence_threshold]
        shares = {}
        for g in JUDGE_GROUPS:
            k = sum(_group(labels[i]) == g for i in idx)
            shares[g] = C.wilson(k, n) + (k,)
        k_sup_coh = sum(labels[i] == SUPERNATURAL for i in coherent)
        k_lex = sum(bool(SUPER_LEXICON.search(texts[i])) for i in idx)
        out[key] = {"n": n, "shares": shares, "mean_coherence": float(np.mean([coh[i] for i in idx])),
                    "n_coherent": len(coherent), "k_super": shares[SUPERNATURAL][3],
                    "k_super_coherent": k_sup_coh, "super_coherent": C.wilson(k_sup_coh, len(coherent)),
                    "k_lexicon": k_lex, "lexicon": C.wilson(k_lex, n),
                    "labels": dict(Counter(labels[i] for i in idx))}
    return out


def nearest_roles(cfg: Config, ps: dict[str, Any], rows: list[Row], acts: dict[int, torch.Tensor]) -> dict[tuple, dict]:
    """Cosine of (mean steered activation − mean unsteered activation, same questions) to every role vector."""
    from persona_vectors import Site

    rm, cats, names = ps["rm"], ps["cats"], ps["names"]
    none_idx = {r.q: i for i, r in enumerate(rows) if r.condition == "none"}
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r.condition != "none":
            groups[(r.condition, r.layer, r.alpha, r.direction if r.condition == "random" else 0)].append(i)
    out = {}
    for key, idx in groups.items():
        cond, L, a, k = key
        res = {}
        for R in sorted({L, min(L + cfg.readout_offset, rm.sites[-1].layer)}):
            s = Site(R)
            kk = rm.sites.index(s)
            shift = acts[R][idx].mean(0) - acts[R][[none_idx[rows[i].q] for i in idx]].mean(0)
            V = torch.stack([rm.vectors[n][s].double() for n in names])
            cs = (V @ shift) / (V.norm(dim=1) * shift.norm()).clamp_min(1e-30)
            order = torch.argsort(cs, descending=True).tolist()
            by_cat = defaultdict(list)
            for j, n in enumerate(names):
                by_cat[cats[n]].append(float(cs[j]))
            res[R] = {"top": [(names[j], float(cs[j])) for j in order[:5]],
                      "top10_categories": dict(Counter(cats[names[j]] for j in order[:10])),
                      "mean_cos_by_category": {c: float(np.mean(v)) for c, v in sorted(by_cat.items())},
                      "shift_rel_norm": float(shift.norm()) / float(rm.default_mean_norm.get(s) or 1.0),
                      "shift": shift}
        out[key] = res
    return out


def _newcombe_row(k1: int, n1: int, k2: int, n2: int) -> dict[str, float]:
    d, lo, hi = C.newcombe_diff(k1, n1, k2, n2)
    return {"diff": d, "lo": lo, "hi": hi, "p_fisher_greater": C.fisher_greater(k1, n1, k2, n2) if n1 and n2 else 1.0}


def verdicts(cfg: Config, cells: dict[tuple, dict]) -> dict[int, dict]:
    neg = [a for a in cfg.alphas if a < 0]
    out = {}
    for L in cfg.layers:
        pool = {}
        for cond in ("axis", "random", "pair"):
            cs = [cells[(cond, L, a)] for a in neg]
            pool[cond] = {"k_coh": sum(c["k_super_coherent"] for c in cs), "n_coh": sum(c["n_coherent"] for c in cs),
                          "k_lex": sum(c["k_lexicon"] for c in cs),
                          "k_all": sum(c["k_super"] for c in cs), "n_all": sum(c["n"] for c in cs),
                          "mean_coherence": float(np.mean([c["mean_coherence"] for c in cs]))}
        ax, rd, pr = pool["axis"], pool["random"], pool["pair"]
        matched = []
        rand_cells = [(a, cells[("random", L, a)]) for a in cfg.alphas] + [(0.0, cells[("none", -1, 0.0)])]
        for a in neg:
            c = cells[("axis", L, a)]
            ra, rc = min(rand_cells, key=lambda t: abs(t[1]["mean_coherence"] - c["mean_coherence"]))
            matched.append({"alpha": a, "axis_k": c["k_super"], "axis_n": c["n"], "axis_coherence": c["mean_coherence"],
                            "random_alpha": ra, "random_k": rc["k_super"], "random_n": rc["n"],
                            "random_coherence": rc["mean_coherence"],
                            **_newcombe_row(c["k_super"], c["n"], rc["k_super"], rc["n"])})
        out[L] = {"pool": pool,
                  "coherent_vs_random": _newcombe_row(ax["k_coh"], ax["n_coh"], rd["k_coh"], rd["n_coh"]),
                  "coherent_vs_pair": _newcombe_row(ax["k_coh"], ax["n_coh"], pr["k_coh"], pr["n_coh"]),
                  "all_vs_random": _newcombe_row(ax["k_all"], ax["n_all"], rd["k_all"], rd["n_all"]),
                  "lexicon_vs_random": _newcombe_row(ax["k_lex"], ax["n_all"], rd["k_lex"], rd["n_all"]),
                  "coherence_matched": matched}
    return out


def headline(cfg: Config, ver: dict[int, dict]) -> dict[str, Any]:
    """The verdict word at the primary layer (the decision rule): SUPPORTED when the Newcombe lower bound of
    (axis − random, coherent generations, α < 0) is above 0; "weakly" when it is below 2 points or another
    steered layer does not replicate it."""
    L_mid = primary_layer(cfg)
    vm = ver[L_mid]["coherent_vs_random"]
    supported = vm["lo"] > 0
    others_null = [L for L in cfg.layers if L != L_mid and ver[L]["coherent_vs_random"]["lo"] <= 0]
    weak = supported and (vm["lo"] < 0.02 or bool(others_null))
    word = ("SUPPORTED, weakly" if weak else "SUPPORTED") if supported else "NOT SUPPORTED"
    return {"layer": L_mid, "word": word, "supported": supported, "weak": weak, "others_null": others_null,
            "bonferroni_p": min(1.0, len(cfg.layers) * vm["p_fisher_greater"])}


# ============================================================================================ summarize
#: What :func:`summarize` carries through from the records instead of re-deriving (inputs: role vectors and
#: steered activations, ~20 MB, are not kept).
CARRIED = ("persona_space", "nearest_roles")


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Every number of the report from the records (+ ``config.json``): archetype cells and verdicts from
    the ``generation`` records (judge label, coherence, text), identity read-outs from the per-question
    ``identity`` records, examples from the texts. Persona-space PCA and the nearest-role cosines are
    measurements of vectors that the records carry (kinds ``pca_layer``, ``role_ends``, ``persona_space``,
    ``nearest_roles``); they are passed through, not re-derived."""
    cfg = C.config_from(Config, config)
    groups = config.get("identity_groups") or {g: list(cs) for g, cs in ID_GROUPS.items()}
    gens = RC.of_kind(records, "generation")
    rows = [Row(g["condition"], g["layer"], g["alpha"], g["question_id"], g["direction"]) for g in gens]
    texts = [g["text"] for g in gens]
    labels = [g["label"] for g in gens]
    coh = [g["coherence"] for g in gens]
    qtext = {g["question_id"]: g["question"] for g in gens}
    questions = [qtext[q] for q in sorted(qtext)]
    cells = analyse(cfg, rows, texts, labels, coh)
    cell_rows = [{"condition": cond, "layer": L, "alpha": a, **c}
                 for (cond, L, a), c in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0], -kv[0][2]))]
    by_id: dict[tuple, list[dict]] = {}
    for r in RC.of_kind(records, "identity"):
        by_id.setdefault((r["condition"], r["layer"], r["alpha"], r["direction"]), []).append(r)
    ident = [{"condition": k[0], "layer": k[1], "alpha": k[2], "direction": k[3], "n_questions": len(v),
              **identity_summary(sorted(v, key=lambda r: r["question_id"]), groups)} for k, v in by_id.items()]
    ver = verdicts(cfg, cells)
    near = [{k: v for k, v in r.items() if k != "kind"} for r in RC.of_kind(records, "nearest_roles")]
    meta = RC.of_kind(records, "persona_space")[0]
    persona = {**{k: v for k, v in meta.items() if k != "kind"},
               "pca_layers": [{k: v for k, v in r.items() if k != "kind"} for r in RC.of_kind(records, "pca_layer")],
               "role_ends": [{k: v for k, v in r.items() if k != "kind"} for r in RC.of_kind(records, "role_ends")]}
    ex_q = set(range(min(cfg.n_examples, cfg.n_questions)))
    examples = [{"condition": r.condition, "layer": r.layer, "alpha": r.alpha, "question_id": r.q,
                 "label": labels[i], "coherence": coh[i], "text": texts[i]}
                for i, r in enumerate(rows) if r.q in ex_q]
    return {"experiment": NAME, "n_generations": len(gens), "questions": questions,
            "headline": headline(cfg, ver), "verdict": [{"layer": L, **v} for L, v in ver.items()],
            "cells": cell_rows, "identity": ident, "nearest_roles": near, "persona_space": persona,
            "examples": examples}


def legacy_rows(records: list[dict[str, Any]], results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The rows of ``results.jsonl`` (kind, fields), in the order the experiment has always written them."""
    out: list[tuple[str, dict[str, Any]]] = []
    drop = {"kind"}
    out += [("pca_layer", {k: v for k, v in r.items() if k not in drop}) for r in RC.of_kind(records, "pca_layer")]
    out += [("role_ends", {k: v for k, v in r.items() if k not in drop}) for r in RC.of_kind(records, "role_ends")]
    for g in RC.of_kind(records, "generation"):
        out.append(("generation", {"condition": g["condition"], "layer": g["layer"], "alpha": g["alpha"],
                                   "question": g["question"], "direction": g["direction"], "text": g["text"],
                                   "label": g["label"], "coherence": g["coherence"],
                                   "p_supernatural": g["judge"].get("supernatural")}))
    out += [("cell", c) for c in results["cells"]]
    out += [("identity", {k: x[k] for k in ("condition", "layer", "alpha", "direction", "groups", "top", "probs")})
            for x in results["identity"]]
    out += [("nearest_roles", r) for r in results["nearest_roles"]]
    out += [("verdict", v) for v in results["verdict"]]
    return out


# ============================================================================================ report
def _fmt_cell(c: dict, g: str) -> str:
    s, lo, hi, _ = c["shares"][g]
    return C.share_str(s, lo, hi)


def render(results: dict[str, Any], config: dict[str, Any]) -> str:
    """``report.md`` from the results and ``config.json`` alone (no arithmetic beyond formatting)."""
    cfg = C.config_from(Config, config)
    cells = RC.keyed(results["cells"], "condition", "layer", "alpha")
    ver = {v["layer"]: v for v in results["verdict"]}
    ident = RC.keyed(results["identity"], "condition", "layer", "alpha", "direction")
    near: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in results["nearest_roles"]:
        near[(r["condition"], r["layer"], r["alpha"], r["direction"])][r["read_layer"]] = r
    psr = results["persona_space"]
    questions = results["questions"]
    runtime = config["runtime"]
    judge_note = config["judge_note"]
    id_groups = config.get("identity_groups") or ID_GROUPS
    hd = results["headline"]
    L_mid = hd["layer"]
    vm = ver[L_mid]["coherent_vs_random"]
    pool = ver[L_mid]["pool"]
    others_null, weak, word = hd["others_null"], hd["weak"], hd["word"]
    caveat = ""
    if weak:
        caveat = (f" The lower bound is {100 * vm['lo']:+.1f} points"
                  + (f", and layer(s) {', '.join(map(str, others_null))} do not replicate it" if others_null else "")
                  + f"; with {len(cfg.layers)} layers tested, a Bonferroni-adjusted p would be "
                  f"{hd['bonferroni_p']:.2g}.")
    lines: list[str] = []
    P = lines.append
    P(f"# Assistant Axis: does steering away from the assistant make ghosts and angels?{' (quick mode)' if cfg.quick else ''}")
    P("")
    P(f"Model: SmolLM2-135M-Instruct ({psr['n_layers']} layers), mode `{cfg.mode}`, "
      f"seed {cfg.seed}. Runtime {runtime['total']:.0f} s on {runtime['threads']} CPU threads "
      f"(load average at start {runtime['load_start']:.1f}).")
    P("")
    P("**Claim tested.** Outside robots/AIs/sci-fi archetypes, models reach for immaterial spiritual beings, and "
      "steering away from the AI-assistant direction produces ghost/angel archetypes.")
    P("")
    verdict = (f"**Verdict:** {word} at layer {L_mid} (the steered layer nearest the "
               f"middle of the network, fixed in advance): among coherent "
               f"generations under anti-assistant steering (α ∈ {{{', '.join(f'{a:g}' for a in cfg.alphas if a < 0)}}}), "
               f"the supernatural share is {C.pct(pool['axis']['k_coh'] / max(pool['axis']['n_coh'], 1))} "
               f"({pool['axis']['k_coh']}/{pool['axis']['n_coh']}) vs {C.pct(pool['random']['k_coh'] / max(pool['random']['n_coh'], 1))} "
               f"({pool['random']['k_coh']}/{pool['random']['n_coh']}) for {cfg.n_random} random directions at the same α; "
               f"difference {100 * vm['diff']:+.0f} points, 95 % CI [{100 * vm['lo']:+.0f}, {100 * vm['hi']:+.0f}] "
               f"(Newcombe), one-sided Fisher p = {vm['p_fisher_greater']:.2g}.{caveat}")
    P(verdict)
    P("")
    others = []
    for L in cfg.layers:
        if L == L_mid:
            continue
        v = ver[L]["coherent_vs_random"]
        p = ver[L]["pool"]
        others.append(f"layer {L}: {p['axis']['k_coh']}/{p['axis']['n_coh']} vs {p['random']['k_coh']}/{p['random']['n_coh']}, "
                      f"difference {100 * v['diff']:+.0f} points [{100 * v['lo']:+.0f}, {100 * v['hi']:+.0f}]")
    if others:
        P("Other layers (same test): " + "; ".join(others) + ".")
        P("")
    c0 = cells[("none", -1, 0.0)]
    P(f"Judge base rate: {c0['k_super']}/{c0['n']} unsteered answers are labelled supernatural (the judge's "
      "false-positive rate on this model's ordinary answers; every comparison above is against controls judged the same way).")
    P("")
    P("Evidence beyond the judge (same cells, α < 0):")
    P("")
    nrand = min(cfg.n_random, cfg.n_identity_random)
    for L in cfg.layers:
        lv = ver[L]["lexicon_vs_random"]
        p = ver[L]["pool"]
        ida = [ident[("axis", L, a, 0)]["groups"]["supernatural"] for a in cfg.alphas if a < 0]
        idr = [float(np.mean([ident[("random", L, a, k)]["groups"]["supernatural"] for k in range(nrand)]))
               for a in cfg.alphas if a < 0]
        P(f"- Layer {L}: texts naming a spiritual being / the afterlife (lexicon): axis {p['axis']['k_lex']}/{p['axis']['n_all']} "
          f"vs random {p['random']['k_lex']}/{p['random']['n_all']}, difference {100 * lv['diff']:+.0f} points "
          f"[{100 * lv['lo']:+.0f}, {100 * lv['hi']:+.0f}]. Identity read-out P(supernatural candidates) at "
          f"α = {', '.join(f'{a:g}' for a in cfg.alphas if a < 0)}: axis {', '.join(f'{x:.2f}' for x in ida)}; "
          f"random (mean of {nrand}) {', '.join(f'{x:.2f}' for x in idr)} (unsteered {ident[('none', -1, 0.0, 0)]['groups']['supernatural']:.2f}).")
    P("")
    P("## Setup")
    P("")
    P(f"- Persona space: {psr['n_roles']} catalogue roles{' (all)' if cfg.roles is None else ' (a subset)'}, "
      f"first {cfg.role_prompts} system prompt(s) × first {cfg.role_questions} extraction questions per role, greedy "
      f"answers of ≤ {cfg.role_max_new_tokens} tokens; default side: all {psr['n_default_prompts']} "
      f"default-assistant prompts × the same questions. Role vector = mean response-token residual (role) − mean "
      f"(default), at every layer. Assistant Axis = default mean − mean over roles of the role means.")
    P(f"- Steering: `steer(model, direction, α, layers=[L], relative=True)`, added at every position (prompt and "
      f"response) of `blocks.L.hook_resid_post`; **α is in units of the mean residual norm at layer L** "
      f"(α = −1 adds a vector as long as a typical residual). α grid {cfg.alphas} (α > 0 toward the assistant), "
      f"layers {cfg.layers}, {cfg.n_questions} evaluation questions (never used for extraction), one greedy "
      f"generation of ≤ {cfg.max_new_tokens} tokens per (question, cell) → n = {cfg.n_questions} per cell. System "
      f"prompt: {'the template default (SmolLM2 inserts “You are a helpful AI assistant named SmolLM, trained by Hugging Face”)' if cfg.system is None else repr(cfg.system)}.")
    P(f"- Controls at the same layers and α: {cfg.n_random} random Gaussian directions (question i uses direction "
      f"i mod {cfg.n_random}); the role-difference direction mean({cfg.pair[0]}) − mean({cfg.pair[1]}); no steering "
      f"(one shared cell).")
    P(f"- Archetype judge: {judge_note}. Coherence: `readout.coherence` under the unsteered model (perplexity and "
      f"repetition → [0, 1]); “coherent” = score ≥ {cfg.coherence_threshold}.")
    P(f"- Identity read-out: P(“I am <candidate>”) normalized over {sum(len(v) for v in id_groups.values())} candidates, "
      f"averaged over {cfg.n_identity_questions} identity questions; groups: "
      + "; ".join(f"{g}: {', '.join(cs)}" for g, cs in id_groups.items()) + ".")
    P(f"- Nearest-role read-out: mean steered response activation minus the unsteered mean on the same questions, "
      f"cosine with every role vector, at the steered layer and {cfg.readout_offset} layers below it.")
    P("")
    # ---------------------------------------------------------------- persona space
    P("## 1. Persona space")
    P("")
    P("Variance explained by the first principal components of the role vectors (PCA over roles, centred), and the "
      "cosine between the Assistant Axis and PC1 (PC1's sign is fixed so the axis projects positively). The Assistant "
      "Axis paper reports PC1 = 48.8 % on Gemma-2-27B at layer 22.")
    P("")
    hdr = ["layer"] + [f"PC{i + 1}" for i in range(cfg.n_components)] + [f"PC1..{cfg.n_components}", "cos(axis, PC1)",
                                                                          "axis norm / residual norm"]
    trs = []
    for r in psr["pca_layers"]:
        ev = r["explained_variance_ratio"]
        trs.append([r["layer"]] + [C.pct(x, 1) for x in ev] + [C.pct(sum(ev), 1), f"{r['cos_axis_pc'][0]:+.2f}",
                   f"{r['axis_rel_norm']:.2f}" if r["axis_rel_norm"] is not None else "–"])
    P(C.md_table(hdr, trs))
    P("")
    best = max(psr["pca_layers"], key=lambda r: r["explained_variance_ratio"][0])
    P(f"PC1 explains at most {C.pct(best['explained_variance_ratio'][0], 1)} (layer {best['layer']}); "
      f"|cos(axis, PC1)| ranges {min(abs(r['cos_axis_pc'][0]) for r in psr['pca_layers']):.2f}–"
      f"{max(abs(r['cos_axis_pc'][0]) for r in psr['pca_layers']):.2f} over layers.")
    P("")
    for L in cfg.layers:
        e = {r["layer"]: r for r in psr["role_ends"]}[L]
        P(f"**Layer {L}.** PC1 low end: {', '.join(n for n, _ in e['pc1_low'])}. PC1 high (assistant) end: "
          f"{', '.join(n for n, _ in e['pc1_high'])}.")
        P(f"Axis, most anti-assistant roles: {', '.join(f'{n} ({v:+.1f})' for n, v in e['axis_low'])}; most "
          f"assistant-like: {', '.join(f'{n} ({v:+.1f})' for n, v in e['axis_high'])}. Categories among the 20 most "
          f"anti-assistant roles: {', '.join(f'{c} {k}' for c, k in sorted(e['axis_rank_categories_bottom20'].items(), key=lambda t: -t[1]))}.")
        P("Mean projection on the axis by category (more negative = farther from the assistant): "
          + ", ".join(f"{c} {v:+.2f}" for c, v in sorted(e["axis_by_category"].items(), key=lambda t: t[1])) + ".")
        P("")
    # ---------------------------------------------------------------- sweep tables
    P("## 2–4. Steering sweep")
    P("")
    P("Archetype shares (judge labels, Wilson 95 % intervals, n per cell in the table), mean coherence, supernatural "
      "share among coherent generations, and the identity read-out's probability mass on the supernatural and AI "
      "candidates. Random = pooled over the random directions.")
    P("")
    none = cells[("none", -1, 0.0)]
    idn = ident[("none", -1, 0.0, 0)]
    for L in cfg.layers:
        P(f"### Layer {L}")
        P("")
        hdr = ["condition", "α", "n", "supernatural", "ai_assistant", "human", "incoherent", "coherence",
               "supern. among coherent", "lexicon supern.", "ID P(supern.)", "ID P(AI)", "ID top"]
        trs = [["none", "0", none["n"], _fmt_cell(none, "supernatural"), _fmt_cell(none, "ai_assistant"),
                _fmt_cell(none, "human"), _fmt_cell(none, "incoherent"), f"{none['mean_coherence']:.2f}",
                f"{none['k_super_coherent']}/{none['n_coherent']}", f"{none['k_lexicon']}/{none['n']}",
                f"{idn['groups']['supernatural']:.2f}",
                f"{idn['groups']['ai_assistant']:.2f}", idn["top"]]]
        for cond in ("axis", "random", "pair"):
            for a in sorted(cfg.alphas, reverse=True):
                c = cells[(cond, L, a)]
                if cond == "random":
                    ids = [ident[("random", L, a, k)] for k in range(min(cfg.n_random, cfg.n_identity_random))]
                    ps_sup = float(np.mean([x["groups"]["supernatural"] for x in ids]))
                    ps_ai = float(np.mean([x["groups"]["ai_assistant"] for x in ids]))
                    top = Counter(x["top"] for x in ids).most_common(1)[0][0]
                else:
                    x = ident[(cond, L, a, 0)]
                    ps_sup, ps_ai, top = x["groups"]["supernatural"], x["groups"]["ai_assistant"], x["top"]
                trs.append([cond, f"{a:+g}", c["n"], _fmt_cell(c, "supernatural"), _fmt_cell(c, "ai_assistant"),
                            _fmt_cell(c, "human"), _fmt_cell(c, "incoherent"), f"{c['mean_coherence']:.2f}",
                            f"{c['k_super_coherent']}/{c['n_coherent']}", f"{c['k_lexicon']}/{c['n']}",
                            f"{ps_sup:.2f}", f"{ps_ai:.2f}", top])
        P(C.md_table(hdr, trs))
        P("")
        m = ver[L]["coherence_matched"]
        P(f"Coherence-matched comparison at layer {L} (each anti-assistant axis cell vs the random cell — any α, or no "
          f"steering — with the nearest mean coherence; all generations):")
        P("")
        P(C.md_table(["axis α", "axis supern.", "axis coh.", "random α", "random supern.", "random coh.",
                      "difference [95 % CI]"],
                     [[f"{r['alpha']:+g}", f"{r['axis_k']}/{r['axis_n']}", f"{r['axis_coherence']:.2f}",
                       f"{r['random_alpha']:+g}", f"{r['random_k']}/{r['random_n']}", f"{r['random_coherence']:.2f}",
                       f"{100 * r['diff']:+.0f} [{100 * r['lo']:+.0f}, {100 * r['hi']:+.0f}]"] for r in m]))
        P("")
        pv = ver[L]["coherent_vs_pair"]
        P(f"Axis vs the role-pair control (coherent generations, α < 0): {100 * pv['diff']:+.0f} points "
          f"[{100 * pv['lo']:+.0f}, {100 * pv['hi']:+.0f}]. All generations (not only coherent) vs random: "
          f"{100 * ver[L]['all_vs_random']['diff']:+.0f} points [{100 * ver[L]['all_vs_random']['lo']:+.0f}, "
          f"{100 * ver[L]['all_vs_random']['hi']:+.0f}].")
        P("")
        # nearest roles
        P(f"Nearest roles (cos of the activation shift with role vectors; top 3, and mean cos with supernatural / "
          f"ai_robot roles) — read at layer {L} (steered) and {min(L + cfg.readout_offset, psr['last_layer'])}:")
        P("")
        nr_rows = []
        for cond in ("axis", "random", "pair"):
            for a in sorted(cfg.alphas, reverse=True):
                keys = [(cond, L, a, k) for k in (range(cfg.n_random) if cond == "random" else [0])]
                for R in sorted(near[keys[0]].keys()):
                    items = [near[k][R] for k in keys]
                    if cond == "random":
                        top = f"(per direction) {'; '.join(it['top'][0][0] for it in items)}"
                    else:
                        top = ", ".join(f"{n} {v:+.2f}" for n, v in items[0]["top"][:3])
                    sup = float(np.mean([it["mean_cos_by_category"].get("supernatural", float("nan")) for it in items]))
                    air = float(np.mean([it["mean_cos_by_category"].get("ai_robot", float("nan")) for it in items]))
                    nr_rows.append([cond, f"{a:+g}", R, top, f"{sup:+.2f}", f"{air:+.2f}"])
        P(C.md_table(["condition", "α", "read layer", "nearest roles", "cos supernatural", "cos ai_robot"], nr_rows))
        P("")
    # ---------------------------------------------------------------- examples
    P("## Example generations")
    P("")
    P(f"The first {cfg.n_examples} questions of each cell (same questions in every cell; judge label, coherence).")
    P("")
    ex_q = list(range(min(cfg.n_examples, cfg.n_questions)))
    P(f"Questions: " + "; ".join(f"Q{q + 1} “{questions[q]}”" for q in ex_q))
    P("")
    by_cell = RC.keyed(results["examples"], "condition", "layer", "alpha", "question_id")
    order = [("none", -1, 0.0)] + [(c, L, a) for L in cfg.layers for c in ("axis", "random", "pair")
                                   for a in sorted(cfg.alphas, reverse=True)]
    for key in order:
        cond, L, a = key
        head = "no steering" if cond == "none" else f"{cond}, layer {L}, α = {a:+g}"
        P(f"- **{head}**")
        for q in ex_q:
            x = by_cell[(*key, q)]
            P(f"  - Q{q + 1} [{x['label']}, {x['coherence']:.2f}] {C.clip(x['text'], 170)}")
    P("")
    P("## Caveats")
    P("")
    P("- The model is a 135M-parameter chat model; its “persona space” is built from few answers per role "
      f"({cfg.role_prompts} prompt(s) × {cfg.role_questions} questions), so role vectors are noisy, especially for "
      "roles whose prompts the model largely ignores.")
    P("- Archetype labels come from an offline embedding classifier trained on a small hand-written set; it can "
      "call poetic or mystical text “supernatural” without any ghost being named, and vice versa. Example "
      "generations are listed so a reader can check.")
    P("- Greedy decoding: each cell's n generations are n different questions, so intervals reflect variation over "
      "questions, not sampling noise. Cells share questions, so the controls are paired by question.")
    P("- α is relative to the *mean* residual norm at the layer; the same α means a different raw norm at each layer.")
    P("- Runtime figures are wall-clock on shared CPUs and vary with machine load.")
    P("")
    P("Files: `config.json`, `results.jsonl` (kinds: pca_layer, role_ends, generation, cell, identity, nearest_roles, "
      "verdict), figures: " + ", ".join(f"`{f}`" for f in ["share_vs_alpha.html", "persona_map.html",
                                                            "variance_explained.html"]) + ".")
    return "\n".join(lines)


# ============================================================================================ figures
def share_figure(cfg: Config, L: int, cells: dict, ident: dict) -> Any:
    """Three panels vs α at layer L: judge supernatural share, judge ai_assistant share (Wilson 95 % bands), and
    the identity read-out's P(supernatural candidates) (random: mean with min–max band over directions).

    Drawn here rather than with ``plotting.line_with_bands`` so the three conditions keep distinct colours in
    every panel (that helper greys out all controls alike, and its band traces also show stray markers).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = {"axis": "#1f4e9c", "random": "#7f7f7f", "pair": "#d62728"}
    names = {"axis": "assistant axis", "random": f"random directions (n={cfg.n_random}, pooled)",
             "pair": f"role pair {cfg.pair[0]} − {cfg.pair[1]}"}
    dash = {"axis": "solid", "random": "dash", "pair": "dot"}
    alphas = sorted(set(cfg.alphas) | {0.0})
    nrand = min(cfg.n_random, cfg.n_identity_random)
    fig = make_subplots(rows=1, cols=3, shared_xaxes=True, horizontal_spacing=0.07,
                        subplot_titles=("judge: supernatural share", "judge: ai_assistant share",
                                        "identity read-out: P(ghost/angel/spirit/soul/demon/phantom)"))

    def rgba(h: str, a: float) -> str:
        h = h.lstrip("#")
        return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{a})"

    for cond in ("axis", "random", "pair"):
        for col, g in ((1, "supernatural"), (2, "ai_assistant"), (3, None)):
            ys, los, his = [], [], []
            for a in alphas:
                if g is not None:
                    c = cells[(cond, L, a)] if a != 0.0 else cells[("none", -1, 0.0)]
                    sh, lo, hi, _ = c["shares"][g]
                else:
                    if a == 0.0:
                        v = [ident[("none", -1, 0.0, 0)]["groups"]["supernatural"]]
                    elif cond == "random":
                        v = [ident[("random", L, a, k)]["groups"]["supernatural"] for k in range(nrand)]
                    else:
                        v = [ident[(cond, L, a, 0)]["groups"]["supernatural"]]
                    sh, lo, hi = float(np.mean(v)), float(np.min(v)), float(np.max(v))
                ys.append(sh)
                los.append(lo)
                his.append(hi)
            fig.add_trace(go.Scatter(x=alphas + alphas[::-1], y=his + los[::-1], fill="toself", mode="lines",
                                     line=dict(width=0), fillcolor=rgba(colors[cond], 0.15), hoverinfo="skip",
                                     showlegend=False, legendgroup=cond), row=1, col=col)
            fig.add_trace(go.Scatter(x=alphas, y=ys, mode="lines+markers", name=names[cond], legendgroup=cond,
                                     showlegend=col == 1, line=dict(color=colors[cond], dash=dash[cond], width=2.5),
                                     marker=dict(size=7, color=colors[cond]),
                                     customdata=np.stack([los, his], axis=1),
                                     hovertemplate="α=%{x}<br>%{y:.0%} [%{customdata[0]:.0%}, %{customdata[1]:.0%}]"
                                                   f"<extra>{names[cond]}</extra>"), row=1, col=col)
    for col in (1, 2, 3):
        fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=col)
        fig.update_xaxes(title_text="α (× mean residual norm; > 0 toward the assistant)", row=1, col=col)
    fig.update_layout(template="plotly_white", height=480, width=1500,
                      title=dict(text=f"Steering at layer {L}: archetypes vs α (n = {cfg.n_questions} generations per "
                                      f"point, Wilson 95 % bands; identity: mean over {cfg.n_identity_questions} "
                                      f"questions, random band = min–max over {nrand} directions)"),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def figures(cfg: Config, run: C.RunDir, ps: dict, results: dict, near: dict) -> None:
    """The HTML figures: share curves from the results; the persona map from the live role spaces and
    activation shifts (not kept in the records)."""
    from persona_vectors.plotting import add_trajectory, persona_map, variance_explained

    cells = RC.keyed(results["cells"], "condition", "layer", "alpha")
    ident = RC.keyed(results["identity"], "condition", "layer", "alpha", "direction")

    for L in cfg.layers:
        run.figure(share_figure(cfg, L, cells, ident), f"share_vs_alpha_L{L}.html")
    L_mid = primary_layer(cfg)
    import shutil

    shutil.copyfile(run.path / f"share_vs_alpha_L{L_mid}.html", run.path / "share_vs_alpha.html")
    run.figures.append("share_vs_alpha.html")
    # persona map with trajectories at the steered layers and the read-out layers
    from persona_vectors import Site

    rm = ps["rm"]
    map_layers = sorted({L for L in cfg.layers} | {min(L + cfg.readout_offset, rm.sites[-1].layer) for L in cfg.layers})
    spaces = {L: ps["spaces"][L] for L in map_layers}
    axis = {L: ps["axis"][Site(L)].double().numpy() for L in map_layers}
    model_d = ps["axis"].d_model
    start = min(primary_layer(cfg) + cfg.readout_offset, rm.sites[-1].layer)
    fig = persona_map(spaces, ps["cats"], highlight=("ghost", "angel", "spirit", "soul", "robot", "chatbot"),
                      axis=axis, layer=start if start in spaces else None,
                      title="Persona space (role vectors) with steering trajectories (slider: layer read)")
    colors = {"axis": "#000000", "random": "#7f7f7f", "pair": "#d62728"}
    for L in cfg.layers:
        for R in sorted({L, min(L + cfg.readout_offset, rm.sites[-1].layer)}):
            for cond, k in (("axis", 0), ("random", 0), ("pair", 0)):
                # role vectors are (role − default assistant), so the unsteered cell (shift 0) sits where the
                # default assistant sits on the map; points are ordered by α so the path is monotone
                pts, labs = [], []
                for a in sorted(set(cfg.alphas) | {0.0}):
                    pts.append(np.zeros(model_d) if a == 0.0 else near[(cond, L, a, k)][R]["shift"].numpy())
                    labs.append("α=0 (unsteered)" if a == 0.0 else f"α={a:+g}")
                add_trajectory(fig, spaces[R], pts, labs, name=f"{cond}{'#0' if cond == 'random' else ''} steered at L{L} (read L{R})",
                               color=colors[cond], layer=R)
    run.figure(fig, "persona_map.html")
    run.figure(variance_explained({L: ps["spaces"][L] for L in sorted(ps["spaces"])},
                                  title="Persona space: variance explained by PC1..PCk per layer"),
               "variance_explained.html")


# ============================================================================================ main
def main(cfg: Config, model: Any = None) -> dict[str, Any]:
    """Run the experiment; returns a summary dict (also written to results.jsonl as the ``verdict`` row)."""
    import os

    from persona_vectors.personas import evaluation_questions

    t0 = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    C.seed_everything(cfg.seed)
    run = C.RunDir(cfg.out, experiment=NAME)
    model = model if model is not None else C.load(cfg)
    C.set_threads(cfg.threads)
    run.write_config(cfg, model)
    C.say("persona space ...")
    ps = persona_space(model, cfg, run)
    run.mark("persona_space")
    questions = evaluation_questions(cfg.n_questions)
    C.say(f"steering sweep: {len(cfg.layers)} layers × 3 conditions × {len(cfg.alphas)} α × {len(questions)} questions ...")
    rows, texts, acts = sweep(model, cfg, ps, questions)
    run.mark("sweep_generation")
    C.say("coherence ...")
    from persona_vectors.readout import coherence

    coh = coherence(model, texts, [questions[r.q] for r in rows], system=cfg.system, batch_size=32)
    run.mark("coherence")
    C.say("judge ...")
    from persona_vectors.judge import LABELS, EmbeddingJudge

    judged = EmbeddingJudge.default().classify(texts)
    other = [lab for lab in LABELS if lab not in JUDGE_GROUPS]
    judge_note = ("offline EmbeddingJudge (MiniLM embeddings + logistic regression on the shipped hand-labelled set); "
                  f"labels {', '.join(LABELS)} ({', '.join(other)} grouped as “other”)")
    run.mark("judge")
    run.records.write({"kind": "generation", "condition": r.condition, "layer": r.layer, "alpha": r.alpha,
                       "direction": r.direction, "direction_id": _dir_id(r.condition, r.direction),
                       "question_id": r.q, "question": questions[r.q], "seed": cfg.seed, "decoding": "greedy",
                       "text": texts[i], "label": judged[i].label, "judge": judged[i].scores,
                       "coherence": coh[i].score, "perplexity": coh[i].perplexity,
                       "repetition_rate": coh[i].repetition_rate, "coherence_tokens": coh[i].n_tokens}
                      for i, r in enumerate(rows))
    C.say("identity read-outs ...")
    dirs = _directions(model, cfg, ps)
    run.records.write(identity_records(model, cfg, dirs, list(C.IDENTITY_QUESTIONS[: cfg.n_identity_questions])))
    run.mark("identity")
    near = nearest_roles(cfg, ps, rows, acts)
    run.records.write({"kind": "nearest_roles", "condition": cond, "layer": L, "alpha": a, "direction": k,
                       "read_layer": Rl, **{kk: v for kk, v in x.items() if kk != "shift"}}
                      for (cond, L, a, k), res in near.items() for Rl, x in res.items())
    run.mark("total")
    runtime = {"total": time.perf_counter() - t0, "threads": torch.get_num_threads(), "load_start": load_start}
    run.write_config(cfg, model, timings_note="seconds since the start of the run at the end of each stage (wall; *_cpu: "
                     "process CPU time)", load_average_start=load_start, runtime=runtime, judge_note=judge_note,
                     identity_groups=ID_GROUPS,
                     seeds={"seed": cfg.seed, "random_directions": 10_000 + cfg.seed, "decoding": "greedy"})
    results = run.write_results(summarize(run.records.rows, run.config_doc))
    for kind, row in legacy_rows(run.records.rows, results):
        run.add(kind, **row)
    C.say("figures ...")
    figures(cfg, run, ps, results, near)
    rep = render(results, run.config_doc)
    docs = run.docs_copy_for(cfg, NAME)
    run.write_report(rep, docs_copy=docs)
    C.say(f"done in {runtime['total']:.0f}s → {run.path}")
    L_mid = results["headline"]["layer"]
    return {"run_dir": str(run.path), "verdict": {k: v for k, v in {v["layer"]: v for v in results["verdict"]}[L_mid].items()
                                                  if k != "layer"}, "runtime_s": runtime["total"]}


if __name__ == "__main__":
    C.cli(Config, main, __doc__, "runs/assistant_axis")
