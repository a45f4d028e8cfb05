#!/usr/bin/env bash
# On a machine with a CUDA device: the GPU-relevant tests and the scale benchmark, on the GPU.
#   benchmarks/gpu_check.sh            # from the repository root, after `make install` (or any venv with the package)
# Without a CUDA device it says so and exits 0 (nothing to check). Exit status: the first failing step's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)')); nothing to check"
    exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.device_count(), "x", torch.cuda.get_device_name(0), "torch", torch.__version__)'
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
# 1. device maps on real devices: the CPU tests, then a single-GPU and (with 2+ GPUs) a split map
"$PY" -m pytest -q tests/test_placement.py
"$PY" - <<'PY'
import torch
from persona_vectors import load_model, steer
single = load_model(dtype="bfloat16", device="cuda:0", progress=False)
n = torch.cuda.device_count()
L = single.n_layers
if n >= 2:
    dm = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 1, "lm_head": 0}  # lm_head is tied to the embedding
    dm.update({f"model.layers.{i}": (0 if i < L // 2 else 1) for i in range(L)})
else:
    dm = {"": 0}
placed = load_model(dtype="bfloat16", device_map=dm, progress=False)
v = torch.randn(single.d_model)
prompts = ["Who are you?", "Tell me about the sea."]
for m in (single, placed):
    with steer(m, v, 4.0, layers=[3, L - 3]):
        m._out = m.forward_logits(prompts).float().cpu()
diff = float((single._out - placed._out).abs().max())
scale = float(single._out.abs().max())
print(f"gpu_check: device map {'split over 2 GPUs' if n >= 2 else 'on one GPU'}: max |Δ steered logits| {diff:.3g} "
      f"(scale {scale:.3g})")
assert diff <= 0.02 * scale, "steered logits differ between the device map and one device"
PY
# 2. the sweep on Ray with one GPU per actor
if "$PY" -c 'import ray' 2>/dev/null; then "$PY" -m pytest -q tests/test_sweep_ray.py; fi
# 3. the rest of the suite and the benchmarks
"$PY" -m pytest -q tests
"$PY" -m benchmarks.scale --out "${OUT:-benchmarks/gpu}"
