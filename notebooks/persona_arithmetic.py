# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Persona arithmetic: Hitler, and Hitler with Russian cultural facts
#
# The full experiment lives in `experiments/persona_arithmetic.py` (`Config.preset(quick=...)`, `main(cfg)`).
# With `PV_QUICK=0` (or `PV_RUN_EXPERIMENT=1`) this notebook runs it and shows its report.
# Quick mode (`PV_QUICK=1`, the default) runs a tiny self-contained version with library calls only:
# two fact vectors, their cosine, and identity read-outs while steering with each and with their difference.

# %%
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import persona_vectors as pv
from persona_vectors.personas import get_persona_vector

QUICK = os.environ.get("PV_QUICK", "1") == "1"
RUN_EXPERIMENT = os.environ.get("PV_RUN_EXPERIMENT", "0" if QUICK else "1") == "1"
torch.set_num_threads(int(os.environ.get("PV_THREADS", "2")))
OUT = Path(os.environ.get("PV_OUT") or tempfile.mkdtemp(prefix="pv_persona_arithmetic_"))
OUT.mkdir(parents=True, exist_ok=True)
print("python:", sys.executable, "| quick:", QUICK, "| run experiment:", RUN_EXPERIMENT, "| out:", OUT)
t0 = time.perf_counter()

# %% [markdown]
# ## The experiment module
# `experiments/` is found relative to the notebook's working directory (`notebooks/` or the repo root).

# %%
exp = None
for d in (Path.cwd() / "experiments", Path.cwd().parent / "experiments"):
    if (d / "persona_arithmetic.py").exists():
        sys.path.insert(0, str(d))
        break
try:
    import persona_arithmetic as exp

    cfg = exp.Config.preset(quick=QUICK, out=str(OUT / "persona_arithmetic"))
    print(cfg)
except Exception as e:  # the notebook's own analysis below does not need it
    print(f"experiments/persona_arithmetic.py not importable ({type(e).__name__}: {e})")
    RUN_EXPERIMENT = False

# %%
model = pv.load_model(progress=False)
if RUN_EXPERIMENT:
    summary = exp.main(cfg, model=model)
    print(json.dumps(summary, indent=1, default=str)[:2000])
    report = Path(summary["run_dir"]) / "report.md"
    print("report:", report)
    if report.exists():
        print(report.read_text()[:3000])

# %% [markdown]
# ## Quick self-contained analysis
# Fact vectors (teacher-forced fact sets, no generation) for `hitler` and the variant `hitler_russian`.

# %%
L = 12
cache = str(OUT / "cache")  # a fresh cache: the notebook measures a cold run
hitler = get_persona_vector(model, "hitler", route="facts", quick=QUICK, layers=[L], cache=cache)
russian = get_persona_vector(model, "hitler_russian", route="facts", quick=QUICK, layers=[L], cache=cache)
site = hitler.sites[0]
h, r = hitler[site].float(), russian[site].float()
cos = float(torch.nn.functional.cosine_similarity(h, r, dim=0))
diff = r - h
print(f"layer {L}: |hitler|={h.norm():.2f} |hitler_russian|={r.norm():.2f} cos={cos:.3f} |diff|={diff.norm():.2f}")

# %%
cands = ["an AI assistant", "Adolf Hitler", "Joseph Stalin", "Peter the Great", "Napoleon"]
ALPHA = 1.0
results = {"none": pv.identity_readout(model, cands)}
for name, v in (("hitler", h), ("hitler_russian", r), ("russian_minus_hitler", diff)):
    with pv.steer(model, v, alpha=ALPHA, layers=[L], relative=True):
        results[name] = pv.identity_readout(model, cands)
for name, ro in results.items():
    print(f"{name:22s}", "  ".join(f"{c}={p:.3f}" for c, p in ro.top(3)))

# %%
report = OUT / "persona_arithmetic_quick.json"
report.write_text(json.dumps({"layer": L, "cosine": cos, "alpha": ALPHA,
                              "readouts": {k: v.to_dict() for k, v in results.items()}}, indent=1))
print("report:", report)
print(f"total {time.perf_counter() - t0:.0f}s")
