"""P11 fidelity, layer by layer: which generation-free read reproduces the answer route's persona map, and how
well the answer route reproduces itself.

``benchmarks/scale.py`` (P11) times the ``prompt_only`` route against the answer route and reports one PC1
agreement per layer. This script asks the question behind the fidelity goal (|Spearman ρ| ≥ 0.9 between the two
routes' PC1 coordinates of the 137 catalogue roles):

* **the reads**: the answer route's role vectors vs the ``prompt_only`` route read at the last prompt token
  (``last_prompt``), over the whole prompt (``prompt``), and at the last prompt token plus a teacher-forced
  ``"I am"`` (``opener``);
* **the ceiling**: the answer route against itself with other questions and with another prompt of each role. A
  read cannot be expected to agree with the reference better than the reference agrees with itself; where that
  self-agreement is low (SmolLM2's early layers) no read can reach ρ 0.9.
* **three splits**: ``explore`` (each role's prompt 1, extraction questions 1–3: the data on which the ``opener``
  read was chosen among ten variants), ``heldout`` (prompt 2, questions 4–6: looked at only after the choice, with
  rule 1 written first) and ``confirm`` (prompt 3, questions 7–9: computed only after rule 2 was committed, see
  ``RULES``). Rule 1 asked for an absolute median ≥ 0.9 at layers 21–29 and failed (0.863), although the opener
  read beat ``last_prompt`` at 14 of 15 layers: on that split the answer route agrees with *itself* under the other
  prompt at only 0.806 there, so no read could pass. Rule 2 measures the read against that ceiling instead, on
  fresh data; both results are reported.

Every role vector is built with the library's public functions (``role_means``, ``prompt_only_role_means``); the
answer route reads the user's cache and generates what is missing (≈ 4 minutes per split on 2 CPU cores).
Writes ``p11_fidelity.json`` / ``.md`` next to this file (or ``--out``)::

    python -m benchmarks.p11_fidelity            # both splits, ≈ 12 min from a cold cache, ≈ 3 min warm
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .scale import _pc1_spearman

HERE = Path(__file__).resolve().parent
#: The reads compared (label → ``prompt_only_role_means`` positions).
READS = {"last_prompt": "last_prompt", "prompt": "prompt", "opener 'I am'": "opener"}
#: split → (role prompt index, questions as a slice of ``extraction_questions()``, the answer route's self-agreement
#: reference: (its prompt index, question slice), what that reference varies).
SPLITS = {"explore": (0, slice(0, 3), (0, slice(3, 6)), "other questions"),
          "heldout": (1, slice(3, 6), (0, slice(3, 6)), "other prompt"),
          "confirm": (2, slice(6, 9), (0, slice(6, 9)), "other prompt")}
#: The decision rules, each written (rule 2: committed) before its split was computed.
RULES = {
    "heldout": "rule 1 (written before the held-out split was computed): adopt the opener read as the default if "
               "its |ρ| ≥ last_prompt's at ≥ 8 of layers 15–29 and its median over layers 21–29 is ≥ 0.9",
    "confirm": "rule 2 (committed before the confirm split was computed, after rule 1 failed on its absolute "
               "threshold): adopt the opener read as the default if its |ρ| ≥ last_prompt's at ≥ 10 of layers 15–29 "
               "and its median over layers 21–29 is ≥ the answer route's self-agreement median there minus 0.05",
}
#: Bands reported: every layer; the upper half; the layers where the answer route agrees with itself at ≥ 0.89.
BANDS = {"all layers": (0, 30), "layers 15–29": (15, 30), "layers 21–29": (21, 30)}


def pc1_rho(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """P11's agreement (:func:`benchmarks.scale._pc1_spearman`: |Spearman ρ| of the roles' PC1 coordinates) as a
    list over the vectors' sites, in site order."""
    return list(_pc1_spearman(a, b).values())


def _bands(rho: list[float]) -> dict[str, float]:
    return {k: float(np.median(rho[lo:hi])) for k, (lo, hi) in BANDS.items() if hi <= len(rho)}


def run(model: Any, splits: tuple[str, ...] = tuple(SPLITS), roles: list[str] | None = None,
        max_new_tokens: int = 32) -> dict[str, Any]:
    """The comparison on ``splits`` (see the module docstring) over ``roles`` (``None``: the catalogue); returns
    the JSON-able result."""
    from persona_vectors.personas import extraction_questions, prompt_only_role_means, role_means

    qall = extraction_questions()
    res: dict[str, Any] = {"rules": RULES, "threads": torch.get_num_threads(), "splits": {}, "decisions": {}}
    for split in splits:
        idx, qsl, (self_idx, self_qsl), varies = SPLITS[split]
        qs = qall[qsl]
        t0 = time.perf_counter()
        ref = role_means(model, roles, questions=qs, n_questions=None, prompt_index=idx, progress=False,
                         max_new_tokens=max_new_tokens).vectors
        out: dict[str, Any] = {"prompt_index": idx, "questions": qs, "answer_route_s": time.perf_counter() - t0,
                               "n_roles": len(ref), "rows": {}}
        other = role_means(model, roles, questions=qall[self_qsl], n_questions=None, prompt_index=self_idx,
                           progress=False, max_new_tokens=max_new_tokens).vectors
        rho = pc1_rho(ref, other)
        out["rows"][f"answer route vs itself, {varies}"] = {"rho": rho, **_bands(rho)}
        for label, positions in READS.items():
            t0 = time.perf_counter()
            fast = prompt_only_role_means(model, roles, questions=qs, n_questions=None, prompt_index=idx,
                                          positions=positions, progress=False).vectors
            rho = pc1_rho(ref, fast)
            out["rows"][label] = {"rho": rho, "read_s": time.perf_counter() - t0, **_bands(rho)}
            print(f"P11 fidelity {split} {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in _bands(rho).items()),
                  file=sys.stderr, flush=True)
        res["splits"][split] = out
        if split in RULES:
            res["decisions"][split] = decide(split, out["rows"])
    return res


def decide(split: str, rows: dict[str, Any]) -> dict[str, Any]:
    """The verdict of ``RULES[split]`` computed from the split's rows."""
    op, lp = rows["opener 'I am'"]["rho"], rows["last_prompt"]["rho"]
    own = next(v for k, v in rows.items() if k.startswith("answer route vs itself"))["rho"]
    wins = sum(a >= b for a, b in zip(op[15:30], lp[15:30]))
    deep = len(op) >= 30  # the rules are written for SmolLM2's 30 layers; a shallower model never passes them
    med = float(np.median(op[21:30])) if deep else float("nan")
    ceiling = float(np.median(own[21:30])) if deep else float("nan")
    if split == "heldout":
        adopt = wins >= 8 and med >= 0.9
    elif split == "confirm":
        adopt = wins >= 10 and med >= ceiling - 0.05
    else:
        raise KeyError(f"no decision rule for split {split!r}")
    return {"opener_wins_15_29": wins, "opener_median_21_29": med, "self_median_21_29": ceiling,
            "adopt_opener": bool(adopt)}


def render(r: dict[str, Any]) -> str:
    """Markdown: one summary table per split and the per-layer table."""
    lines = ["# P11 fidelity: generation-free reads vs the answer route, layer by layer", "",
             "Generated by `python -m benchmarks.p11_fidelity` (`benchmarks/p11_fidelity.py`, whose docstring says what "
             "is compared). |Spearman ρ| between the PC1 coordinates of the 137 catalogue roles built two ways, per "
             "layer of SmolLM2-135M-Instruct; medians over the bands below. The *answer route vs itself* rows are the "
             "ceiling: the reference against itself with other questions or another prompt. Read times are single "
             "runs beside whatever else the machine did; `benchmarks/scale.py` (P11) is where the reads are timed.", ""]
    for split, out in r["splits"].items():
        lines += [f"## {split}: role prompt {out['prompt_index'] + 1}, questions: " + "; ".join(out["questions"]), "",
                  "| read | " + " | ".join(BANDS) + " | whole-catalogue read (s, one untimed run) |",
                  "|---|" + "---:|" * (len(BANDS) + 1)]
        for label, row in out["rows"].items():
            t = f"{row['read_s']:.0f}" if "read_s" in row else "–"
            lines.append(f"| {label} | " + " | ".join(f"{row[k]:.3f}" for k in BANDS if k in row) + f" | {t} |")
        lines += ["", "| layer | " + " | ".join(out["rows"]) + " |", "|---:|" + "---:|" * len(out["rows"])]
        n = len(next(iter(out["rows"].values()))["rho"])
        for layer in range(n):
            lines.append(f"| {layer} | " + " | ".join(f"{row['rho'][layer]:.2f}" for row in out["rows"].values()) + " |")
        lines.append("")
    if r.get("decisions"):
        lines += ["## Decisions", ""]
        for split, d in r["decisions"].items():
            lines += [f"- **{split}**, {r['rules'][split]}: the opener read is at least as close as `last_prompt` at "
                      f"{d['opener_wins_15_29']} of the 15 layers 15–29; its median over layers 21–29 is "
                      f"{d['opener_median_21_29']:.3f} (the answer route vs itself: {d['self_median_21_29']:.3f}) → "
                      + ("**adopt** the opener read." if d["adopt_opener"] else "**keep** `last_prompt`.")]
        lines.append("")
    lines.append(f"Machine: {platform.machine()}, torch {torch.__version__}, {r['threads']} threads.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison on the embedded model; write p11_fidelity.json/md next to this file (or ``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", nargs="*", default=list(SPLITS), choices=list(SPLITS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--render", action="store_true", help="only re-render p11_fidelity.md from p11_fidelity.json")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads((args.out / "p11_fidelity.json").read_text())
        (args.out / "p11_fidelity.md").write_text(render(res))
        return res
    from persona_vectors.models import load_model

    torch.set_num_threads(args.threads)
    res = run(load_model(), tuple(args.splits))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "p11_fidelity.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "p11_fidelity.md").write_text(render(res))
    return res


if __name__ == "__main__":
    main()
