"""``make demo``: load the embedded model, extract an assistant-vs-role direction at every layer, report quality.

Steps: the model answers extraction questions as a pirate captain (the role's catalogue prompts) and under
default assistant prompts; response tokens are recorded at all 30 layers; the difference of means is the
direction. It is then tested on *evaluation* questions it never saw (held-out projection AUROC), and its
norm is compared with the residual-stream norm at each layer. The vector is saved and its path printed.

Run ``python -m persona_vectors.demo --help`` for knobs (role, question counts).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .datasets import get_role, load_assistant_prompts, load_questions
from .extract import extract_system_prompt_vector, pick_layer, relative_norms, separation_auroc
from .models import load_model
from .record import record_generated


def main(argv: list[str] | None = None) -> Path:
    """Run the demo; returns the directory the vector was saved to."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="pirate_captain", help="catalogue role to contrast with the assistant")
    ap.add_argument("--n-train", type=int, default=12, help="extraction questions used to build the vector")
    ap.add_argument("--n-test", type=int, default=12, help="evaluation questions used for held-out AUROC")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    print("== persona_vectors demo ==")
    print("[1/4] loading the embedded model (SmolLM2-135M-Instruct, offline)…", flush=True)
    model = load_model()
    print(f"      {model}  ({time.perf_counter() - t0:.1f}s)")

    role = get_role(args.role)
    defaults = [p for p in load_assistant_prompts() if p.id in ("model_default", "ai_assistant", "respond_as_yourself")]
    baseline = [p.system_arg for p in defaults]
    train_q = [q.text for q in load_questions("extraction")][: args.n_train]
    test_q = [q.text for q in load_questions("evaluation")][: args.n_test]

    print(f"[2/4] extracting '{role.display}' − assistant at all {model.n_layers} layers "
          f"({len(role.prompts)} role prompts × {len(train_q)} questions vs {len(baseline)} default prompts)…", flush=True)
    vec = extract_system_prompt_vector(model, list(role.prompts), baseline, train_q, layers="all",
                                       name=f"{role.name}-minus-assistant", max_new_tokens=args.max_new_tokens)

    print(f"[3/4] held-out test on {len(test_q)} evaluation questions the vector never saw…", flush=True)
    sites = vec.sites
    pos, pos_convs = record_generated(model, test_q, sites, system=role.prompts[0], max_new_tokens=args.max_new_tokens,
                                      keep_samples=True, progress=True)
    neg, neg_convs = record_generated(model, test_q, sites, system=None, max_new_tokens=args.max_new_tokens,
                                      keep_samples=True, progress=True)
    auroc = separation_auroc(vec, pos, neg)
    rel = relative_norms(vec, neg)
    best = pick_layer(auroc, rel)

    print("\n layer | held-out AUROC | |v| / |resid|")
    print("-------+----------------+--------------")
    for s in sites:
        mark = "  <- picked" if s == best else ""
        print(f"  {s.layer:4d} |     {auroc[s]:.3f}      |    {rel[s]:.3f}{mark}")
    print(f"\n example (role):      {pos_convs[0][-2]['content']!r} -> {pos_convs[0][-1]['content'][:90]!r}")
    print(f" example (assistant): {neg_convs[0][-2]['content']!r} -> {neg_convs[0][-1]['content'][:90]!r}")

    print("[4/4] saving…", flush=True)
    out = vec.save(args.out / role.name)
    print(f"\nsaved {vec!r}\n   -> {out.resolve()}  (vector.safetensors + vector.json)")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return out


if __name__ == "__main__":
    main()
