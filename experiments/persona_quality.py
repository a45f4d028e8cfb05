"""Extract the card personas on the embedded model and report their held-out quality.

    python experiments/persona_quality.py [--quick] [--threads 1]

Extracts, at every layer of SmolLM2-135M-Instruct: Hitler (system-prompt and fact routes), Stalin (both
routes), Voyager 1, the AI-assistant axis, Bitcoin, the six colours (system-prompt route) and the five
Hitler fact-set variants (fact route). Everything goes through ``persona_vectors.personas`` and its disk
caches, so a rerun is instant and an interrupted run resumes. Writes ``docs/persona_quality.md`` and
``docs/persona_quality.json`` (``--quick`` writes ``*_quick.*`` instead, unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]

#: (persona, route) in run order: fact routes first (no generation), then the system-prompt routes.
RUNS: list[tuple[str, str]] = [
    ("hitler", "facts"), ("stalin", "facts"),
    *[(f"hitler_{v}", "facts") for v in ("russian", "french", "japanese", "thai", "moon")],
    ("hitler", "prompt"), ("stalin", "prompt"), ("voyager", "prompt"), ("bitcoin", "prompt"),
    *[(f"colour_{c}", "prompt") for c in ("red", "blue", "white", "black", "green", "yellow")],
    ("assistant", "axis"),
]
#: The card personas compared in the cosine table (label → (persona, route)).
CARD: dict[str, tuple[str, str]] = {
    "hitler (prompt)": ("hitler", "prompt"), "hitler (facts)": ("hitler", "facts"),
    "stalin (prompt)": ("stalin", "prompt"), "stalin (facts)": ("stalin", "facts"),
    "voyager": ("voyager", "prompt"), "assistant": ("assistant", "axis"), "bitcoin": ("bitcoin", "prompt"),
}
TARGETS = ("hitler", "stalin", "voyager", "assistant")


@dataclass
class Config:
    """Run settings."""

    quick: bool = False
    threads: int = 1
    method: str = "mean_diff"
    out: Optional[Path] = None
    only: list[str] = field(default_factory=list)
    note: str = ""
    render_only: bool = False


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(cfg: Config) -> dict[str, Any]:
    """Run every extraction, write the Markdown and JSON reports, return the JSON document."""
    out = cfg.out or (ROOT / "docs" / ("persona_quality_quick" if cfg.quick else "persona_quality"))
    if cfg.render_only:
        doc = json.loads(out.with_suffix(".json").read_text())
        if cfg.note:
            doc["note"] = cfg.note
            out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        out.with_suffix(".md").write_text(render_markdown(doc))
        return doc
    torch.set_num_threads(cfg.threads)
    from persona_vectors import load_model
    from persona_vectors.personas import AXIS_PANEL, budget_for, extract_persona

    t_start = time.perf_counter()
    model = load_model(progress=True)
    t_load = time.perf_counter() - t_start
    budget = budget_for(cfg.quick)
    rows: list[dict[str, Any]] = []
    vectors: dict[tuple[str, str], Any] = {}
    for persona, route in RUNS:
        if cfg.only and persona not in cfg.only:
            continue
        _say(f"{persona} ({route}) ...")
        t0 = time.perf_counter()
        res = extract_persona(model, persona, route, method=cfg.method, quick=cfg.quick,
                              progress=lambda m: _say(f"  {m}"))
        dt = time.perf_counter() - t0
        q = res.quality.to_json()
        best = max(res.quality.auroc, key=lambda s: res.quality.auroc[s])
        rows.append({"persona": persona, "route": route, "layer": q["layer"], "auroc": q["auroc_at_layer"],
                     "rel_norm": q["rel_norm_at_layer"], "best_layer": best.layer,
                     "best_auroc": res.quality.auroc[best], "n_persona": q["n_persona"],
                     "n_baseline": q["n_baseline"], "heldout": q["heldout"], "seconds": round(dt, 1),
                     "vector_cached": res.cached, "n_samples": res.vector.provenance.n_samples,
                     "auroc_per_layer": q["auroc"], "rel_norm_per_layer": q["rel_norm"]})
        vectors[(persona, route)] = res.vector
        _say(f"{persona} ({route}): layer {q['layer']} AUROC {q['auroc_at_layer']:.3f} "
             f"rel.norm {q['rel_norm_at_layer']:.3f} [{dt:.0f}s]")

    chosen = {lab: next(r["layer"] for r in rows if (r["persona"], r["route"]) == pr)
              for lab, pr in CARD.items() if pr in vectors}
    cos: dict[str, dict[str, float]] = {}
    common = None
    if chosen:
        common = int(statistics.median_low(sorted(chosen.values())))
        for a, pa in CARD.items():
            if pa not in vectors:
                continue
            cos[a] = {}
            for b, pb in CARD.items():
                if pb in vectors:
                    cos[a][b] = float(torch.nn.functional.cosine_similarity(
                        vectors[pa][common].double(), vectors[pb][common].double(), dim=0))
    # The Hitler/Stalin/Voyager comparison at every layer, so the answer does not hinge on one layer.
    per_layer: dict[str, list[float]] = {}
    trio = {"hitler-stalin": (("hitler", "prompt"), ("stalin", "prompt")),
            "hitler-voyager": (("hitler", "prompt"), ("voyager", "prompt")),
            "stalin-voyager": (("stalin", "prompt"), ("voyager", "prompt"))}
    for lab, (pa, pb) in trio.items():
        if pa in vectors and pb in vectors:
            per_layer[lab] = [round(v, 4) for v in vectors[pa].cosine(vectors[pb]).values()]
    total = time.perf_counter() - t_start
    prev = _previous(out.with_suffix(".json"))
    earlier = prev.get("history") or ([{"date": prev.get("date", "earlier"), "runtime_s": prev["runtime_s"]}]
                                      if "runtime_s" in prev else [])
    n_cached = sum(r["vector_cached"] for r in rows)
    history = list(earlier) + [{
        "date": time.strftime("%Y-%m-%d %H:%M"), "runtime_s": round(total, 1),
        "load_average_5min": round(os.getloadavg()[1], 1),
        "note": f"{n_cached} of {len(rows)} vectors served from the vector cache"}]
    prev_rows = {(r["persona"], r["route"]): r for r in prev.get("rows", [])}
    for r in rows:
        old = prev_rows.get((r["persona"], r["route"]))
        r["seconds_first_run"] = old.get("seconds_first_run", old["seconds"]) if old else r["seconds"]
        r["cached_first_run"] = old.get("cached_first_run", old["vector_cached"]) if old else r["vector_cached"]
    variant_cos: dict[str, float] = {}
    if ("hitler", "facts") in vectors:
        base = vectors[("hitler", "facts")]
        at = next(r["layer"] for r in rows if (r["persona"], r["route"]) == ("hitler", "facts"))
        for (pn, rt), v in vectors.items():
            if rt == "facts" and pn != "hitler":
                variant_cos[pn] = round(float(torch.nn.functional.cosine_similarity(
                    base[at].double(), v[at].double(), dim=0)), 4)
    doc = {
        "model": model.info.model_id, "fingerprint": model.info.fingerprint, "n_layers": model.n_layers,
        "quick": cfg.quick, "method": cfg.method, "budget": asdict(budget), "axis_panel": list(AXIS_PANEL),
        "runtime_s": round(total, 1), "model_load_s": round(t_load, 1), "threads": cfg.threads,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), python {platform.python_version()}",
        "rows": rows, "cosine_layer": common, "cosine": cos, "cosine_per_layer": per_layer,
        "fact_cosine_to_hitler_baseline": variant_cos,
        "history": history, "note": cfg.note or prev.get("note", ""),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(render_markdown(doc))
    _say(f"wrote {out.with_suffix('.md')} and .json in {total:.0f}s")
    return doc


def _previous(path: Path) -> dict[str, Any]:
    """The previous report (same budget) if there is one, else {}."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _ranges(layers: list[int]) -> str:
    """``[3,4,5,9]`` → ``"3–5, 9"``."""
    out: list[str] = []
    for x in sorted(layers):
        if out and int(out[-1].split("–")[-1]) == x - 1:
            out[-1] = f"{out[-1].split('–')[0]}–{x}"
        else:
            out.append(str(x))
    return ", ".join(out) or "none"


def _verdict(doc: dict[str, Any]) -> list[str]:
    lines = []
    for name in TARGETS:
        for r in doc["rows"]:
            if r["persona"] == name:
                ok = "meets" if r["auroc"] >= 0.95 else "MISSES"
                lines.append(f"- {name} ({r['route']}): AUROC {r['auroc']:.3f} at layer {r['layer']} — {ok} the 0.95 target")
    return lines


def _closeness(doc: dict[str, Any]) -> str:
    c = doc["cosine"]
    h, s, v = "hitler (prompt)", "stalin (prompt)", "voyager"
    if not all(k in c for k in (h, s, v)):
        return ""
    hs, hv, sv = c[h][s], c[h][v], c[s][v]
    closer = hs > hv and hs > sv
    line = (f"At layer {doc['cosine_layer']} (prompt route), cos(Hitler, Stalin) = {hs:.3f}, cos(Hitler, Voyager) = "
            f"{hv:.3f}, cos(Stalin, Voyager) = {sv:.3f}: Hitler and Stalin are "
            f"{'closer to each other than either is to Voyager' if closer else 'NOT closer to each other than to Voyager'}.")
    hf, sf = "hitler (facts)", "stalin (facts)"
    if hf in c and sf in c:
        line += (f" Fact route: cos(Hitler, Stalin) = {c[hf][sf]:.3f}; across routes cos(Hitler prompt, Hitler facts) = "
                 f"{c[h][hf]:.3f}.")
    pl = doc.get("cosine_per_layer") or {}
    if {"hitler-stalin", "hitler-voyager", "stalin-voyager"} <= set(pl):
        n = len(pl["hitler-stalin"])
        wins = [i for i in range(n) if pl["hitler-stalin"][i] > max(pl["hitler-voyager"][i], pl["stalin-voyager"][i])]
        line += (f" Over all {n} layers (prompt route), Hitler–Stalin is the closest of the three pairs at "
                 f"{len(wins)} layers ({_ranges(wins)}).")
    return line


def render_markdown(doc: dict[str, Any]) -> str:
    """The human-readable report."""
    b = doc["budget"]
    out = [
        "# Persona vector quality on the embedded model" + (" (quick run)" if doc["quick"] else ""),
        "",
        f"Model: {doc['model']} (fingerprint `{doc['fingerprint']}`, {doc['n_layers']} layers). "
        f"Method: `{doc['method']}`, response-token means, every layer (`resid_post`). "
        f"Generated by `python experiments/persona_quality.py{' --quick' if doc['quick'] else ''}`; "
        f"numbers below are copied from `{'persona_quality_quick' if doc['quick'] else 'persona_quality'}.json`.",
        "",
        "## How it was measured",
        "",
        f"- **System-prompt route** (`prompt`): the model answers the first {b['n_questions']} of the 70 *extraction* "
        f"questions under each of the role's first {b['n_prompts'] or 'all'} system prompts and under the 8 "
        f"default-assistant conditions "
        f"(greedy, {b['max_new_tokens']} new tokens); vector = mean response activation (persona) − mean (default).",
        f"- **Fact route** (`facts`): teacher-forced first-person answers of the fact set vs the matched neutral answers, "
        f"default system prompt on both sides, from 75 % of the facts.",
        f"- **Assistant axis** (`axis`): mean over the 8 default conditions − mean over {len(doc['axis_panel'])} panel "
        f"roles ({', '.join(doc['axis_panel'])}; first {b['axis_prompts']} prompts each) of each role's mean, same questions.",
        f"- **Held-out AUROC**: prompt and axis routes: new answers to the first {b['n_eval_questions']} of the 49 "
        f"*evaluation* questions (disjoint from the extraction split, never used to build or choose anything but the "
        f"layer) under the same persona prompts (positive) vs the 8 default conditions; the axis: default conditions "
        f"(positive) vs the panel roles. Fact route: the fixed 25 % of facts held out by sha256 of the fact id "
        f"(23 of 92 for Hitler and its variants — the same ids for all variants — 22 of 88 for Stalin), persona "
        f"answers (positive) vs neutral answers. AUROC of the projection of per-answer mean activations onto the "
        f"vector, per layer.",
        "- **Layer**: `pick_layer` = highest held-out AUROC (rounded to 3 decimals) outside the first quarter of "
        "the network, ties broken by larger relative norm. The layer is chosen on the held-out numbers it reports, "
        "so the AUROC at the chosen layer is optimistic by the choice; the per-layer curves are in the JSON.",
        "- **Relative norm**: direction norm / mean residual-stream norm of the held-out baseline answers at that layer.",
        "- Budget reduction: the system-prompt routes use "
        f"{b['n_questions']} extraction and {b['n_eval_questions']} evaluation questions (not all 70/49) to fit "
        "about 40 minutes on two shared CPU cores; nothing was tuned on the evaluation questions.",
        "",
        "## Results",
        "",
        "| persona | route | layer | AUROC there | rel. norm | layers with AUROC ≥ 0.95 | held-out n (persona/baseline) | time (s) |",
        "|---|---|---:|---:|---:|---|---|---:|",
    ]
    for r in doc["rows"]:
        good = [int(k) for k, v in r["auroc_per_layer"].items() if v >= 0.95]
        out.append(f"| {r['persona']} | {r['route']} | {r['layer']} | {r['auroc']:.3f} | {r['rel_norm']:.3f} | "
                   f"{_ranges(good)} | {r['n_persona']}/{r['n_baseline']} | "
                   f"{r.get('seconds_first_run', r['seconds']):.0f}{' (cached)' if r.get('cached_first_run') else ''} |")
    out += ["", "Target AUROC ≥ 0.95 at the chosen layer:", "", *_verdict(doc), ""]
    if doc["cosine"]:
        labels = list(doc["cosine"])
        out += [f"## Cosine similarity between card personas at layer {doc['cosine_layer']}", "",
                f"Common layer = median (lower) of the card personas' chosen layers.", "",
                "| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for a in labels:
            out.append(f"| {a} | " + " | ".join(f"{doc['cosine'][a][b]:.2f}" for b in labels) + " |")
        out += ["", _closeness(doc), "",
                "All system-prompt vectors share a 'not the default assistant' component (each is persona − the same "
                "default mean), which inflates their mutual cosines; the assistant axis points the other way by "
                "construction.", ""]
    vc = doc.get("fact_cosine_to_hitler_baseline") or {}
    if vc:
        hl = next(r["layer"] for r in doc["rows"] if (r["persona"], r["route"]) == ("hitler", "facts"))
        var = {k: v for k, v in vc.items() if k.startswith("hitler_")}
        other = {k: v for k, v in vc.items() if k not in var}
        out += ["## Fact-set variants", "",
                f"Cosine with the hitler_baseline fact vector at its layer {hl}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in var.items())
                + ". The variants share 84 of 92 persona answers and every neutral answer with the baseline, so "
                "their vectors are nearly the baseline's; differences between variants live in the 8 swapped "
                "cultural facts."
                + "".join(f" For comparison, the {k} fact vector: {v:.3f} (a different person, but the same "
                          "'specific first-person biography vs generic answer' contrast)." for k, v in other.items()),
                ""]
    chosen = [r["layer"] for r in doc["rows"] if r["route"] != "facts"]
    if chosen and sum(c >= doc["n_layers"] - 2 for c in chosen) > len(chosen) / 2:
        out += ["## Caveat: the chosen layer", "",
                "For the system-prompt routes the held-out AUROC saturates (1.000 over most of the depth), so "
                "`pick_layer` falls through to its tie-breaker, the larger relative norm, which grows with depth: "
                "it picks the last block or the one before (pre-final-norm). Any layer in the '≥ 0.95' column "
                "separates as well; for steering, a middle layer from that range is the more usual choice. The "
                "cosine table uses the median chosen layer and therefore also sits at the end of the network; "
                "the per-layer Hitler/Stalin/Voyager cosines in the JSON show the ordering holds at every layer.",
                ""]
    hist = doc.get("history") or [{"date": "", "runtime_s": doc["runtime_s"], "note": "this run"}]
    out += ["## Runtime", "",
            f"On {doc['machine']}, with other jobs sharing the two cores. "
            "Time per persona (column above) is from the first run that computed it and includes generation, "
            "recording and evaluation; later personas reuse the cached default-assistant answers, so the first "
            "system-prompt persona is the slowest. Reruns are served from the disk cache "
            "(`~/.cache/persona_vectors/{generations,activations,vectors}`).", "",
            *[f"- {h['date']}: {h['runtime_s']:.0f} s ({h['runtime_s'] / 60:.1f} min), 5-min load average "
              f"{h.get('load_average_5min', '?')} — {h['note']}" for h in hist], ""]
    if doc.get("note"):
        out += ["Note: " + doc["note"].removeprefix("Notes on this run: "), ""]
    return "\n".join(out)


def parse_args(argv: Optional[list[str]] = None) -> Config:
    """Command-line arguments → :class:`Config`."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small question budget (QUICK)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on shared, oversubscribed cores)")
    p.add_argument("--method", default="mean_diff", choices=["mean_diff", "pca", "probe"])
    p.add_argument("--out", type=Path, default=None, help="output path stem (writes .md and .json)")
    p.add_argument("--only", nargs="*", default=[], help="restrict to these persona names")
    p.add_argument("--note", default="", help="free-text note appended to the report")
    p.add_argument("--render", action="store_true", help="only re-render the .md from the existing .json")
    a = p.parse_args(argv)
    return Config(quick=a.quick, threads=a.threads, method=a.method, out=a.out, only=a.only, note=a.note,
                  render_only=a.render)


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
