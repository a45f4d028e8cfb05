"""Big models across devices on CPU: ``load_model(dir, device_map=..., dtype=...)`` through accelerate under the
bridge — an explicit per-layer map, layers offloaded to disk (parameters on ``meta`` between forwards) and
bfloat16 weights — against the same checkpoint on one device; bad maps fail before any weight is read.

Tolerance for bfloat16: steered logits within 2 % of the largest fp32 logit (|Δ| ≤ 0.02·max|logit|), and the
steering effect (steered − unsteered logits) at cosine ≥ 0.99 with the fp32 one.
"""

from __future__ import annotations

import pytest
import torch

from conftest import CONVS, make_tiny_tokenizer, tiny_llama_config
from persona_vectors import load_model, steer
from persona_vectors.models.placement import DeviceMapError, check_device_map, input_device
from persona_vectors.record import record

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["hi there", "Tell me about the sea."]
LAYERS = [1, 2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random Llama saved as a HF checkpoint directory (config, safetensors, tokenizer)."""
    from transformers import LlamaForCausalLM

    tok = make_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_llama_config(tok)
    d = tmp_path_factory.mktemp("tiny-ckpt")
    LlamaForCausalLM(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def single(ckpt):
    return load_model(ckpt, progress=False)


def _per_layer_map(override: dict[str, str] | None = None) -> dict[str, str]:
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" for i in range(4)})
    dm.update(override or {})
    return dm


def _steered(model, vec, operator="add", alpha=4.0, **kw):
    with steer(model, vec, alpha, layers=LAYERS, operator=operator, **kw):
        logits = model.forward_logits(PROMPTS)
        text = model.generate(PROMPTS[:1], max_new_tokens=6)
    return logits, text


@pytest.fixture(scope="module")
def offloaded(ckpt, tmp_path_factory):
    """Embedding and the two steered layers offloaded to disk; the rest placed on the CPU, one entry per layer."""
    dm = _per_layer_map({"model.embed_tokens": "disk", "model.layers.1": "disk", "model.layers.2": "disk"})
    return load_model(ckpt, device_map=dm, offload_folder=tmp_path_factory.mktemp("offload"), progress=False)


def test_explicit_map_places_layers_and_steers_equal(ckpt, single):
    placed = load_model(ckpt, device_map=_per_layer_map(), progress=False)
    assert placed.device_map is None or set(placed.device_map.values()) <= {"cpu"}
    assert placed.info.fingerprint == single.info.fingerprint
    vec = torch.randn(32)
    for op in ("add", "ablate"):
        a, ta = _steered(single, vec, op)
        b, tb = _steered(placed, vec, op)
        assert torch.equal(a, b), op
        assert ta == tb


def test_disk_offload_steers_capture_and_read_equal(single, offloaded):
    hf = offloaded.hf
    assert offloaded.device_map["model.layers.1"] == "disk"
    assert any(p.device.type == "meta" for p in hf.parameters())  # really offloaded between forwards
    assert offloaded.device == torch.device("cpu") == input_device(hf)
    assert offloaded.info.fingerprint == single.info.fingerprint  # vectors move between the two without allow_other_model
    vec = torch.randn(32)
    assert torch.equal(single.forward_logits(PROMPTS), offloaded.forward_logits(PROMPTS))
    for op, kw in (("add", {}), ("ablate", {}), ("cap", {"threshold": 0.5})):
        a, ta = _steered(single, vec, op, **kw)
        b, tb = _steered(offloaded, vec, op, **kw)
        assert torch.equal(a, b), op
        assert ta == tb
    unsteered = single.forward_logits(PROMPTS)
    assert not torch.equal(unsteered, _steered(single, vec)[0])  # the comparison can fail
    r1, r2 = (record(m, CONVS, LAYERS, progress=False) for m in (single, offloaded))
    for s in r1.sites:
        assert torch.equal(r1.sums[s], r2.sums[s])


def test_per_row_steering_under_offload(single, offloaded):
    vecs = torch.randn(2, 32)
    outs = []
    for m in (single, offloaded):
        with steer(m, vecs, [2.0, -3.0], layers=[1]):
            outs.append(m.forward_logits(PROMPTS))
    assert torch.equal(*outs)


def test_bfloat16_offloaded_close_to_fp32(ckpt, single):
    dm = _per_layer_map({"model.layers.2": "disk"})
    bf = load_model(ckpt, device_map=dm, dtype="bfloat16", progress=False)
    assert bf.dtype == torch.bfloat16
    vec = torch.randn(32)
    base32, base16 = single.forward_logits(PROMPTS), bf.forward_logits(PROMPTS).float()
    a, _ = _steered(single, vec)
    b, _ = _steered(bf, vec)
    b = b.float()
    scale = float(a.abs().max())
    assert float((a - b).abs().max()) <= 0.02 * scale
    effect32, effect16 = (a - base32).flatten(), (b - base16).flatten()
    assert float(torch.nn.functional.cosine_similarity(effect32, effect16, dim=0)) >= 0.99


@pytest.mark.parametrize("device_map, words", [
    ("everywhere", ["not a strategy", "'auto'"]),
    ({}, ["non-empty dict"]),
    ({"model.layerz.0": "cpu", "": "cpu"}, ["model.layerz.0", "placeable modules", "model.layers.0"]),
    ({"model.embed_tokens": "cpu", "model.layers.0": "cpu"}, ["unplaced", "model.layers.1", "device_map='auto'"]),
    ({"": "meta"}, ["'meta'", "'disk'"]),
    ({"": "cuda:3"}, ["cuda:3", "this machine has", "device_map='auto'"]),
    ({"": 1.5}, ["GPU index"]),
])
def test_bad_device_maps_name_the_fix(ckpt, device_map, words):
    with pytest.raises(DeviceMapError) as err:
        load_model(ckpt, device_map=device_map, progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_gpus_mixed_with_offload_refused(ckpt, monkeypatch):
    from transformers import AutoConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = AutoConfig.from_pretrained(ckpt)
    assert check_device_map({"": 1}, cfg) == {"": 1}
    with pytest.raises(DeviceMapError, match=r"mixes GPUs \(cuda:0\) with cpu and disk offload.*every module on GPUs"):
        check_device_map(_per_layer_map({"model.layers.0": "cuda:0", "model.layers.1": "disk"}), cfg)


def test_device_and_device_map_conflicts(ckpt):
    with pytest.raises(ValueError, match="either device='cpu'.*or device_map="):
        load_model(ckpt, device="cpu", device_map="auto", progress=False)
    with pytest.raises(ValueError, match="only apply with device_map="):
        load_model(ckpt, offload_folder="/tmp/x", progress=False)
    with pytest.raises(ValueError, match="floating torch dtype"):
        load_model(ckpt, dtype="int8", progress=False)
