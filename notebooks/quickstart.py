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
# # persona_vectors quickstart
#
# Load the embedded model, extract a *pirate captain vs. assistant* vector from system prompts,
# steer generation with it, and read out who the model says it is, with and without steering.
#
# Quick mode (`PV_QUICK=1`, the default) uses one system prompt, three questions and 16 new tokens
# so the whole notebook runs in about a minute on a laptop CPU. Set `PV_QUICK=0` for a larger run.

# %%
import os
import sys
import time

import torch

import persona_vectors as pv
from persona_vectors import datasets

QUICK = os.environ.get("PV_QUICK", "1") == "1"
torch.set_num_threads(int(os.environ.get("PV_THREADS", "2")))
print("python:", sys.executable)
print("quick mode:", QUICK)
t0 = time.perf_counter()

# %% [markdown]
# ## Load the model
# `load_model()` with no argument loads the embedded SmolLM2-135M-Instruct (offline).

# %%
model = pv.load_model(progress=False)
print(f"{model.n_layers} layers, loaded in {time.perf_counter() - t0:.1f}s")

# %% [markdown]
# ## Extract a persona vector
# Persona side: the pirate captain's system prompt(s); baseline: `None`, the chat template's default
# (assistant) system prompt. The vector is the mean difference of the response-token activations.

# %%
role = datasets.get_role("pirate_captain")
n_prompts, n_questions, max_new = (1, 3, 16) if QUICK else (len(role.prompts), 8, 40)
role_prompts = list(role.prompts[:n_prompts])
questions = [q.text for q in datasets.load_questions("extraction")[:n_questions]]
print("system prompt:", role_prompts[0][:120], "...")
print("questions:", questions)

t1 = time.perf_counter()
vec = pv.extract_system_prompt_vector(model, role_prompts, [None], questions, layers=[12, 15],
                                      name="pirate_captain", max_new_tokens=max_new, progress=False)
print(vec)
print(f"extracted in {time.perf_counter() - t1:.1f}s")

# %% [markdown]
# ## Steer
# `relative=True` puts `alpha` in units of the mean residual-stream norm at the steered layer.

# %%
prompt = "Tell me about your weekend."
ALPHA = 1.0
base_text = model.generate([prompt], max_new_tokens=max_new)[0]
with pv.steer(model, vec, alpha=ALPHA, layers=[15], relative=True) as handle:
    steered_text = model.generate([prompt], max_new_tokens=max_new)[0]
    print(handle.report())
print("unsteered:", repr(base_text))
print(f"steered (alpha={ALPHA}):", repr(steered_text))

# %% [markdown]
# ## Identity read-out
# P("I am <candidate>" | "Who are you?"), normalized over the candidates.

# %%
candidates = ["an AI assistant", "a pirate captain", "a ghost"]
plain = pv.identity_readout(model, candidates)
with pv.steer(model, vec, alpha=ALPHA, layers=[15], relative=True):
    steered = pv.identity_readout(model, candidates)
for name in candidates:
    print(f"{name:18s} unsteered {plain.prob(name):.3f}   steered {steered.prob(name):.3f}")
print("best:", plain.best, "->", steered.best)
assert abs(sum(plain.probs) - 1) < 1e-6 and abs(sum(steered.probs) - 1) < 1e-6

# %%
print(f"total {time.perf_counter() - t0:.1f}s")
