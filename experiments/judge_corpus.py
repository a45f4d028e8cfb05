"""Build the corpus of *real* generations the archetype judge is validated on (issue 13, deliverable 1).

    python experiments/judge_corpus.py [--out src/persona_vectors/data/judge_real/generations.jsonl]
                                       [--quick] [--no-finetune] [--seed 0]
    python experiments/judge_corpus.py --enrich     # append batch 2 (rare archetypes), see below

Every text is produced by the library's own machinery on the embedded SmolLM2-135M-Instruct, under the
conditions the experiments use — and past them:

- the Assistant Axis (default-assistant mean − mean of role means over a 40-role panel) and its negation;
- 20 random Gaussian directions (same relative strengths);
- 10 role-difference directions (role mean − role mean);
- role system prompts (unsteered) and the plain model (unsteered);
- answers of three small LoRA finetunes on the shipped data (one-word colour answers, Bitcoin prices,
  Voyager telemetry);

at relative strengths from mild to past the coherence cliff, at layers 8, 14 and 20, greedy and sampled
(T = 0.8, seeded), on identity questions and open questions of the evaluation split.

**Batch 2 (``--enrich``)** appends generations aimed at the archetypes that are rare in batch 1 (17
supernatural, 14 cosmic, 13 fantasy, 8 animal texts of 848), so the judge can be trained and its per-label
precision/recall measured on more than a handful of items: role system prompts of every supernatural,
cosmic/nature, animal and fictional role of the catalogue (and a few historical, profession, object and AI
roles), and steering along each of those roles' ``role mean − default mean`` directions at layers 8 and 14
and mild-to-strong relative strengths. Its rows carry ``"batch": 2``; a steered row's direction id is
``role:<name>``, the same unit as that role's system prompt, so the grouped split never puts one role's
prompt and its direction on opposite sides. It is *enriched*, not representative: the validation report
gives figures on batch 1 alone beside the pooled ones.

One JSON line per generation: ``id`` (sha256 of the text, 16 hex — the key labels are stored under),
``text`` and ``condition`` (kind, direction id, layer, alpha, temperature, seed, question id and text,
system prompt or finetune dataset). Texts that repeat exactly (e.g. the same greedy answer under two
weak conditions) keep one line per generation; labels are per text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DEFAULT_OUT = "src/persona_vectors/data/judge_real/generations.jsonl"
LAYERS = (8, 14, 20)
AXIS_ALPHAS = (0.5, -0.25, -0.5, -0.75, -1.0, -1.5)
RANDOM_ALPHAS = (-0.25, -0.5, -1.0, -1.5)
PAIR_ALPHAS = (0.25, 0.5, 1.0, -0.5)
FINETUNES = ("colours_red", "bitcoin_prices", "voyager_telemetry")


def text_id(text: str) -> str:
    """The key a text's labels are stored under: sha256 of the exact text, 16 hex characters."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def panel_roles(per_category: int = 5) -> list[str]:
    """A fixed role panel: the first ``per_category`` roles of every catalogue category but nationality."""
    from persona_vectors.datasets import ROLE_CATEGORIES, load_roles

    return [r.name for c in ROLE_CATEGORIES if c != "nationality_culture" for r in load_roles(c)[:per_category]]


def plan_rows(rm: Any, questions: list[Any], rng: random.Random, d_model: int, seed: int,
              quick: bool) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """The generation plan: one dict per generation (condition only) and the directions by id ([n_layers, d])."""
    from persona_vectors import Site

    layers = LAYERS[1:2] if quick else LAYERS
    sites = [Site(L) for L in layers]
    axis = rm.axis("assistant")
    dirs: dict[str, torch.Tensor] = {"axis": torch.stack([axis[s].double() for s in sites])}
    gen = torch.Generator().manual_seed(seed)
    n_random, n_pairs = (3, 2) if quick else (20, 10)
    for k in range(n_random):
        dirs[f"random_{k:02d}"] = torch.randn(len(sites), d_model, generator=gen, dtype=torch.float64)
    names = list(rm.vectors)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n_pairs:
        a, b = rng.sample(names, 2)
        if (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    for a, b in pairs:
        dirs[f"pair_{a}-{b}"] = torch.stack([(rm.vectors[a][s] - rm.vectors[b][s]).double() for s in sites])
    ident = [q for q in questions if q.topic == "identity"]
    other = [q for q in questions if q.topic != "identity"]

    def question(i: int) -> Any:  # alternate identity and open questions, cycling through each list
        return ident[(i // 2) % len(ident)] if i % 2 == 0 else other[(i // 2) % len(other)]

    rows: list[dict[str, Any]] = []

    def add(kind: str, direction: Optional[str], layer: Optional[int], alpha: float, n: int, **extra: Any) -> None:
        for _ in range(n):
            i = len(rows)
            q = question(i + rng.randrange(1000))
            sampled = rng.random() < 0.5
            rows.append({"kind": kind, "direction": direction, "layer": layer, "alpha": alpha,
                         "temperature": 0.8 if sampled else 0.0, "seed": seed + i if sampled else None,
                         "question_id": q.id, "question": q.text, **extra})

    per_axis = 3 if quick else 14
    for L in layers:
        for a in AXIS_ALPHAS:
            add("axis", "axis", L, a, per_axis)
        for k in range(n_random):
            for a in RANDOM_ALPHAS:
                add("random", f"random_{k:02d}", L, a, 1)
        for a_, b_ in pairs:
            for a in PAIR_ALPHAS:
                add("role_pair", f"pair_{a_}-{b_}", L, a, 1)
    from persona_vectors.datasets import get_role

    role_pool = names if not quick else names[:6]
    for r in (role_pool * 2)[: (6 if quick else 70)]:
        add("role_prompt", None, None, 0.0, 1, system=get_role(r).prompts[0], role=r)
    add("unsteered", None, None, 0.0, 6 if quick else 70, system=None)
    return rows, dirs


ENRICH_ROLES = {"supernatural": 19, "cosmic_nature": 15, "animal": 12, "fictional_character": 12,
                "historical_figure": 8, "profession": 6, "object_concept": 6, "ai_robot": 4}
"""Batch 2: how many roles of each catalogue category (first N, catalogue order)."""
ENRICH_PROMPTS = {"supernatural": 4, "cosmic_nature": 2, "animal": 2, "fictional_character": 2}
"""Batch 2: role-prompt generations per role (1 for categories not listed)."""
ENRICH_STEER = ("supernatural", "cosmic_nature", "animal", "fictional_character")
ENRICH_ALPHAS = (0.25, 0.5, 1.0)
ENRICH_LAYERS = (8, 14)


def enrich_roles() -> list[str]:
    """The batch-2 role list (see :data:`ENRICH_ROLES`)."""
    from persona_vectors.datasets import load_roles

    return [r.name for c, n in ENRICH_ROLES.items() for r in load_roles(c)[:n]]


def plan_enrichment(rm: Any, questions: list[Any], rng: random.Random, seed: int
                    ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Batch-2 plan: role prompts and role-direction steering, mostly on identity questions."""
    from persona_vectors import Site
    from persona_vectors.datasets import get_role, load_roles

    ident = [q for q in questions if q.topic == "identity"]
    other = [q for q in questions if q.topic != "identity"]
    sites = [Site(L) for L in ENRICH_LAYERS]
    rows: list[dict[str, Any]] = []
    dirs: dict[str, torch.Tensor] = {}

    def add(**cond: Any) -> None:
        i = len(rows)
        q = rng.choice(ident) if rng.random() < 0.75 else rng.choice(other)
        sampled = rng.random() < 0.5
        rows.append({"batch": 2, "temperature": 0.8 if sampled else 0.0, "seed": seed + 10_000 + i if sampled else None,
                     "question_id": q.id, "question": q.text, **cond})

    for cat, n in ENRICH_ROLES.items():
        for r in load_roles(cat)[:n]:
            prompts = get_role(r.name).prompts
            for j in range(ENRICH_PROMPTS.get(cat, 1)):
                add(kind="role_prompt", direction=None, layer=None, alpha=0.0, system=prompts[j % len(prompts)],
                    role=r.name)
            if cat in ENRICH_STEER:
                did = f"role:{r.name}"
                dirs[did] = torch.stack([rm.vectors[r.name][s].double() for s in sites])
                for a in ENRICH_ALPHAS:
                    add(kind="role_steer", direction=did, layer=rng.choice(ENRICH_LAYERS), alpha=a, system=None,
                        role=r.name)
    return rows, dirs


def generate(model: Any, rows: list[dict[str, Any]], dirs: dict[str, torch.Tensor], layers: tuple[int, ...],
             max_new_tokens: int, batch_size: int) -> None:
    """Fill ``row["text"]`` for every planned row: per-row directions and relative alphas, one call per batch."""
    from persona_vectors import steer

    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["layer"], r["temperature"]), []).append(i)

    def prompt(r: dict[str, Any]) -> Any:  # a role's system prompt travels in the messages, so roles share batches
        sys_prompt = r.get("system")
        return r["question"] if sys_prompt is None else [{"role": "system", "content": sys_prompt},
                                                         {"role": "user", "content": r["question"]}]

    done = 0
    t0 = time.perf_counter()
    for (layer, temp), idx in sorted(groups.items(), key=lambda kv: str(kv[0])):
        for b0 in range(0, len(idx), batch_size):
            chunk = idx[b0: b0 + batch_size]
            prompts = [prompt(rows[i]) for i in chunk]
            seed = rows[chunk[0]]["seed"]
            for i in chunk:  # rows of one sampled batch share its seed: record the one actually used
                if rows[i]["seed"] is not None:
                    rows[i]["seed"] = seed
            if layer is None:
                toks = model.generate_tokens(prompts, max_new_tokens=max_new_tokens, temperature=temp, seed=seed)
            else:
                li = layers.index(layer)
                vec = torch.stack([dirs[rows[i]["direction"]][li] for i in chunk])
                alpha = torch.tensor([rows[i]["alpha"] for i in chunk], dtype=torch.float64)
                with steer(model, vec, alpha, layers=[layer], relative=True):
                    toks = model.generate_tokens(prompts, max_new_tokens=max_new_tokens, temperature=temp, seed=seed)
            for i, t in zip(chunk, toks):
                rows[i]["text"] = model.decode_response(t)
            done += len(chunk)
            C.say(f"{done}/{len(rows)} generations ({time.perf_counter() - t0:.0f} s)")


def finetuned_rows(model: Any, questions: list[Any], seed: int, quick: bool, max_new_tokens: int) -> list[dict[str, Any]]:
    """Answers of small LoRA finetunes on the shipped datasets (greedy and sampled), the base model restored after."""
    from persona_vectors import FinetuneConfig, finetune
    from persona_vectors.datasets import load_finetune_dataset

    out: list[dict[str, Any]] = []
    qs = questions[:: 2][: (4 if quick else 16)]
    for name in FINETUNES[:1] if quick else FINETUNES:
        convs = load_finetune_dataset(name)
        cfg = FinetuneConfig(lora_r=8, lora_alpha=16.0, lr=1e-3, batch_size=8, max_steps=4 if quick else 30,
                             seed=seed)
        C.say(f"finetuning on {name} ({cfg.max_steps} steps)")
        res = finetune(model, convs, cfg, progress=False)
        try:
            for temp in (0.0, 0.8):
                texts = model.generate([q.text for q in qs], max_new_tokens=max_new_tokens, temperature=temp,
                                       seed=seed if temp else None)
                for q, t in zip(qs, texts):
                    out.append({"kind": "finetuned", "direction": None, "layer": None, "alpha": 0.0,
                                "temperature": temp, "seed": seed if temp else None, "question_id": q.id,
                                "question": q.text, "system": None, "finetune": name, "steps": res.steps, "text": t})
        finally:
            res.unload()
    return out


def main(argv: Optional[list[str]] = None) -> Path:
    """Generate the corpus and write it (atomically) to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a few dozen generations (smoke test)")
    ap.add_argument("--no-finetune", action="store_true", help="skip the finetuned-model answers")
    ap.add_argument("--enrich", action="store_true",
                    help="append batch 2 (rare archetypes: role prompts and role directions) to --out")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    C.set_threads(args.threads)
    C.seed_everything(args.seed)
    import persona_vectors as pv
    from persona_vectors.datasets import load_questions
    from persona_vectors.io import atomic_file

    t0 = time.perf_counter()
    model = pv.load_model(progress=True)
    questions = load_questions("evaluation")
    if args.enrich:
        return _enrich(model, questions, Path(args.out), args, t0)
    roles = panel_roles(2 if args.quick else 5)
    C.say(f"role means for {len(roles)} roles (cached)")
    rm = pv.role_means(model, roles, n_questions=2 if args.quick else 3, n_prompts=1, layers=list(LAYERS),
                       max_new_tokens=32, progress=C.say)
    rng = random.Random(args.seed)
    rows, dirs = plan_rows(rm, questions, rng, model.d_model, args.seed, args.quick)
    layers = LAYERS[1:2] if args.quick else LAYERS
    generate(model, rows, dirs, layers, args.max_new_tokens, args.batch_size)
    if not args.no_finetune:
        rows += finetuned_rows(model, questions, args.seed, args.quick, args.max_new_tokens)
    for r in rows:
        r.setdefault("system", None)
    records = [{"id": text_id(r["text"]), "text": r["text"],
                "condition": {k: v for k, v in r.items() if k != "text"}} for r in rows]
    out = Path(args.out)
    with atomic_file(out) as tmp:
        tmp.write_text("".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records), encoding="utf-8")
    meta = {"n": len(records), "n_unique_texts": len({r["id"] for r in records}), "seed": args.seed,
            "model": model.info.model_id, "fingerprint": model.info.fingerprint, "roles": roles,
            "layers": list(layers), "max_new_tokens": args.max_new_tokens, "quick": args.quick,
            "seconds": round(time.perf_counter() - t0, 1), "library_version": pv.__version__}
    with atomic_file(out.with_suffix(".meta.json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    C.say(f"wrote {len(records)} generations ({meta['n_unique_texts']} distinct texts) to {out} in {meta['seconds']} s")
    return out


def _enrich(model: Any, questions: list[Any], out: Path, args: argparse.Namespace, t0: float) -> Path:
    """Append batch 2 to an existing corpus file (atomic rewrite; batch-1 lines are kept byte for byte)."""
    import persona_vectors as pv
    from persona_vectors.io import atomic_file

    if not out.is_file():
        raise SystemExit(f"--enrich appends to {out}, which does not exist: build batch 1 first")
    old = out.read_text(encoding="utf-8")
    if any(json.loads(line)["condition"].get("batch") == 2 for line in old.splitlines() if line.strip()):
        raise SystemExit(f"{out} already holds batch 2; nothing to do")
    roles = enrich_roles()
    C.say(f"role means for {len(roles)} batch-2 roles (cached)")
    rm = pv.role_means(model, roles, n_questions=3, n_prompts=1, layers=list(ENRICH_LAYERS), max_new_tokens=32,
                       progress=C.say)
    rows, dirs = plan_enrichment(rm, questions, random.Random(args.seed + 2), args.seed)
    generate(model, rows, dirs, ENRICH_LAYERS, args.max_new_tokens, args.batch_size)
    new = "".join(json.dumps({"id": text_id(r["text"]), "text": r["text"],
                              "condition": {k: v for k, v in r.items() if k != "text"}}, ensure_ascii=False) + "\n"
                  for r in rows)
    with atomic_file(out) as tmp:
        tmp.write_text(old + new, encoding="utf-8")
    meta_path = out.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta["batch2"] = {"n": len(rows), "roles": roles, "layers": list(ENRICH_LAYERS), "alphas": list(ENRICH_ALPHAS),
                      "seconds": round(time.perf_counter() - t0, 1), "library_version": pv.__version__}
    with atomic_file(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    C.say(f"appended {len(rows)} batch-2 generations to {out} in {meta['batch2']['seconds']} s")
    return out


if __name__ == "__main__":
    main()
