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
# # Ghost / angel: does steering away from the assistant make ghosts and angels?
#
# The full experiment lives in `experiments/assistant_axis.py` (`Config.preset(quick=...)`, `main(cfg)`).
# With `PV_QUICK=0` (or `PV_RUN_EXPERIMENT=1`) this notebook runs it and shows its report.
# Quick mode (`PV_QUICK=1`, the default) runs a tiny self-contained version of the analysis with library
# calls only: an assistant-vs-roles direction from system prompts, generation steered away from the
# assistant at two strengths, the offline embedding judge, and an identity read-out.

# %%
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import persona_vectors as pv
from persona_vectors import datasets
from persona_vectors.judge import EmbeddingJudge

QUICK = os.environ.get("PV_QUICK", "1") == "1"
RUN_EXPERIMENT = os.environ.get("PV_RUN_EXPERIMENT", "0" if QUICK else "1") == "1"
torch.set_num_threads(int(os.environ.get("PV_THREADS", "2")))
OUT = Path(os.environ.get("PV_OUT") or tempfile.mkdtemp(prefix="pv_ghost_angel_"))
OUT.mkdir(parents=True, exist_ok=True)
print("python:", sys.executable, "| quick:", QUICK, "| run experiment:", RUN_EXPERIMENT, "| out:", OUT)
t0 = time.perf_counter()

# %% [markdown]
# ## The experiment module
# `experiments/` is found relative to the notebook's working directory (`notebooks/` or the repo root).

# %%
exp = None
for d in (Path.cwd() / "experiments", Path.cwd().parent / "experiments"):
    if (d / "assistant_axis.py").exists():
        sys.path.insert(0, str(d))
        break
try:
    import assistant_axis as exp

    cfg = exp.Config.preset(quick=QUICK, out=str(OUT / "assistant_axis"))
    print(cfg)
except Exception as e:  # the notebook's own analysis below does not need it
    print(f"experiments/assistant_axis.py not importable ({type(e).__name__}: {e})")
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
# Direction = mean(role personas) − mean(default assistant); steering with a positive α moves *away* from
# the assistant.

# %%
roles = ["ghost", "pirate_captain"] if QUICK else ["ghost", "pirate_captain", "librarian", "robot"]
n_q, max_new = (2, 12) if QUICK else (6, 40)
role_prompts = [datasets.get_role(r).prompts[0] for r in roles]
questions = [q.text for q in datasets.load_questions("extraction")[:n_q]]
away = pv.extract_system_prompt_vector(model, role_prompts, [None], questions, layers=[14],
                                       name="away_from_assistant", max_new_tokens=max_new, progress=False)
print(away, f"({time.perf_counter() - t0:.0f}s)")

# %%
eval_qs = [q.text for q in datasets.load_questions("evaluation")[: (2 if QUICK else 10)]]
alphas = [0.0, 1.0] if QUICK else [0.0, 0.5, 1.0, 1.5]
judge = EmbeddingJudge.default()
cands = ["an AI assistant", "a ghost", "an angel", "a human"]
rows = []
for a in alphas:
    with pv.steer(model, away, alpha=a, layers=[14], relative=True):
        texts = model.generate(eval_qs, max_new_tokens=max_new)
        ident = pv.identity_readout(model, cands)
    labels = [j.label for j in judge.classify(texts)]
    rows.append({"alpha": a, "texts": texts, "labels": labels, "identity": dict(zip(ident.candidates, ident.probs))})
    print(f"alpha={a}: labels={labels}  P(assistant)={ident.prob('an AI assistant'):.3f} "
          f"P(ghost)={ident.prob('a ghost'):.3f} P(angel)={ident.prob('an angel'):.3f}")
    print("   ", texts[0][:100].replace("\n", " "))

# %%
report = OUT / "ghost_angel_quick.json"
report.write_text(json.dumps(rows, indent=1))
print("report:", report)
print(f"total {time.perf_counter() - t0:.0f}s")
