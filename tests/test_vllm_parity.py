"""Parity of a vLLM-served forward with the HF bridge's, for the steering the library does (docs/scaling.md, "A vLLM
backend"). vLLM's decoder layers pass ``(mlp_delta, residual)`` separately (the residual add is fused into the next
layer's norm), so "the residual stream after layer L" is a sum there; TransformerLens' vLLM source materialises it
at ``blocks.L.hook_out`` and applies declarative interventions (``{"op": "add", "value": ...}``) inside the
compiled forward. A vLLM backend is only correct if that stream and that add are ours: this test pins both.

Needs vLLM and a CUDA GPU: skipped otherwise (it has not run on this project's CPU machines).
"""

from __future__ import annotations

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="the vLLM parity test needs vLLM (pip install vllm) and a CUDA GPU")
if not torch.cuda.is_available():
    pytest.skip("the vLLM parity test needs a CUDA GPU", allow_module_level=True)

pytestmark = pytest.mark.slow

LAYER, ALPHA = 14, 4.0


@pytest.fixture(scope="module")
def pair():
    """The embedded SmolLM2 as HF bridge (our library, fp32, cuda) and as vLLM bridge (TransformerLens' boot_vllm)
    on the same safetensors (the library's dequantized weight cache)."""
    from transformer_lens.model_bridge.sources.vllm import boot_vllm

    from persona_vectors import load_model
    from persona_vectors.models import cached_model_dir, embedded_gguf_path

    load_model(progress=False)  # builds the weight cache on first use
    src = cached_model_dir(embedded_gguf_path())
    ours = load_model(str(src), device="cuda", dtype=torch.float32, progress=False)
    theirs = boot_vllm(str(src), dtype=torch.float32, gpu_memory_utilization=0.3, enforce_eager=True)
    try:
        yield ours, theirs
    finally:
        getattr(theirs, "close", lambda: None)()


def _ids(model):
    return model.encode([model.chat_text(model.to_messages("Who are you?"))])["input_ids"]


def test_unsteered_logits_match(pair):
    ours, theirs = pair
    ids = _ids(ours)
    a = ours.hf(input_ids=ids).logits.float().cpu()[0]
    b = theirs.forward(ids.cpu()).float().cpu().reshape(a.shape)
    assert float((a - b).abs().max()) <= 1e-2 * float(a.abs().max())


def test_add_at_resid_post_matches_steer(pair):
    from persona_vectors import steer

    ours, theirs = pair
    ids = _ids(ours)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(ours.d_model, generator=g)
    base = ours.hf(input_ids=ids).logits.float().cpu()[0]
    with steer(ours, v, ALPHA, layers=[LAYER]):
        a = ours.hf(input_ids=ids).logits.float().cpu()[0]
    b = theirs.forward(ids.cpu(), intervene={f"blocks.{LAYER}.hook_out": {"op": "add", "value": ALPHA * v}})
    b = b.float().cpu().reshape(a.shape)
    assert float((a - b).abs().max()) <= 1e-2 * float(a.abs().max())
    effect_ours, effect_vllm = (a - base).flatten(), (b - base).flatten()
    assert float(torch.nn.functional.cosine_similarity(effect_ours, effect_vllm, dim=0)) >= 0.999
    assert torch.equal(a.argmax(-1), b.argmax(-1))
