"""Integration tests on the embedded SmolLM2-135M-Instruct (real behaviour, offline)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from persona_vectors import PersonaVector, Site, VectorMismatchError, load_model, record_generated, separation_auroc
from persona_vectors.extract import extract_system_prompt_vector, relative_norms
from persona_vectors.models import cache_dir, embedded_gguf_path

pytestmark = pytest.mark.slow

PIRATE = [
    "You are a pirate captain, a swaggering buccaneer commanding a ship of cutthroats on the Caribbean seas.",
    "You are a pirate captain with a wooden leg and a parrot, hunting treasure galleons.",
]
ASSISTANT = [None, "You are an AI assistant."]
TRAIN_Q = ["Who are you?", "What do you do all day?", "What do you want most?", "Where do you live?",
           "What is your greatest fear?", "Tell me about your friends."]
HELD_OUT_Q = ["How do you spend your evenings?", "What are you proud of?", "What would you do with a fortune?",
              "Describe your home.", "What makes you angry?", "Who taught you everything you know?"]


def _smol_cache() -> Path:
    """The SmolLM2 weight cache (the cache may also hold the second embedded model's)."""
    from conftest import smol_cache_dir

    found = smol_cache_dir()
    assert found is not None, "the smol fixture builds the SmolLM2 cache"
    return found


def test_load_metadata_and_tokenizer(smol):
    assert smol.n_layers == 30 and smol.d_model == 576
    assert len(smol.info.fingerprint) == 16
    assert smol.tokenizer.pad_token is not None and smol.tokenizer.padding_side == "left"
    text = smol.chat_text(smol.to_messages("Hi"))
    assert "You are a helpful AI assistant named SmolLM" in text and text.endswith("<|im_start|>assistant\n")
    text = smol.chat_text(smol.to_messages("Hi", system="You are a ghost."))
    assert "SmolLM" not in text and "You are a ghost." in text


def test_kv_cache_generation_matches_unwrapped_hf_and_no_cache(smol):
    """Guards the transformers 5.24 trap: KV-cache generation through the bridge must stay correct."""
    from transformers import AutoModelForCausalLM

    prompt = "Write one sentence about the sea."
    lib_kv = smol.generate_tokens([prompt], max_new_tokens=30, use_cache=True)[0]
    lib_nc = smol.generate_tokens([prompt], max_new_tokens=30, use_cache=False)[0]
    raw = AutoModelForCausalLM.from_pretrained(_smol_cache(), local_files_only=True).eval()
    enc = smol.encode([smol.chat_text(smol.to_messages(prompt))])
    with torch.inference_mode():
        out = raw.generate(**enc, max_new_tokens=30, do_sample=False, eos_token_id=smol.stop_token_ids,
                           pad_token_id=smol.tokenizer.pad_token_id)
    raw_ids = out[0, enc["input_ids"].shape[1]:]
    raw_ids = raw_ids[: len(lib_kv)]
    assert len(lib_kv) >= 10
    assert lib_kv.tolist() == raw_ids.tolist()
    assert lib_kv.tolist() == lib_nc.tolist()
    text = smol.decode_response(lib_kv)
    assert "---" not in text and len(set(text.split())) > 3


def test_generation_batched_matches_single_and_sampling_is_seeded(smol):
    prompts = ["What is the capital of France?", "Name a fruit that is red and sweet, please."]
    batched = smol.generate(prompts, max_new_tokens=12)
    single = [smol.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    a = smol.generate(prompts, max_new_tokens=12, temperature=1.0, seed=7)
    b = smol.generate(prompts, max_new_tokens=12, temperature=1.0, seed=7)
    assert a == b
    with pytest.raises(TypeError, match="list of prompts"):
        smol.generate("Who are you?")


def test_pirate_direction_separates_held_out_questions(smol, tmp_path):
    layers = [6, 15, 24]
    vec = extract_system_prompt_vector(smol, PIRATE, ASSISTANT, TRAIN_Q, layers=layers, name="pirate_captain",
                                       max_new_tokens=24, progress=False)
    assert vec.provenance.route == "prompt" and vec.provenance.n_samples == len(PIRATE) * len(TRAIN_Q)
    pos_rec = record_generated(smol, HELD_OUT_Q, layers, system=PIRATE[0], max_new_tokens=24, keep_samples=True,
                               progress=False)[0]
    neg_rec = record_generated(smol, HELD_OUT_Q, layers, system=None, max_new_tokens=24, keep_samples=True,
                               progress=False)[0]
    auroc = separation_auroc(vec, pos_rec, neg_rec)
    assert auroc[Site(15)] >= 0.9, auroc
    rel = relative_norms(vec, neg_rec)
    assert all(0.01 < r < 5 for r in rel.values()), rel

    out = vec.save(tmp_path / "pirate")
    back = PersonaVector.load(out, model=smol)
    assert torch.equal(back.directions, vec.directions) and back.provenance == vec.provenance


def test_fingerprint_refuses_other_model(smol, tiny, tmp_path):
    v = PersonaVector([Site(1)], torch.ones(1, tiny.d_model),
                      __import__("persona_vectors").Provenance(tiny.info.model_id, tiny.info.fingerprint, tiny.d_model))
    v.save(tmp_path / "t")
    with pytest.raises(VectorMismatchError):
        PersonaVector.load(tmp_path / "t", model=smol)


def test_warm_load_is_identical_and_corrupt_cache_is_rebuilt(smol, tmp_path, monkeypatch):
    """Issue 12.5: 32 changed floats keep the weight fingerprint but fail the checksum; 64 KB of random bytes
    inside a tensor loads silently without the check. Both are caught; the second is rebuilt on load."""
    from persona_vectors.models import verify_model_cache

    src = _smol_cache()
    fresh = tmp_path / "cache"
    (fresh / "models").mkdir(parents=True)
    shutil.copytree(src, fresh / "models" / src.name)
    if (src.parent.parent / "hashes.json").is_file():
        shutil.copy(src.parent.parent / "hashes.json", fresh / "hashes.json")
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(fresh))
    warm = load_model(progress=False)
    assert warm.info.fingerprint == smol.info.fingerprint
    target = fresh / "models" / src.name / "model.safetensors"
    size = target.stat().st_size
    original = target.read_bytes()
    with open(target, "r+b") as f:  # 32 floats in the middle of the weights
        f.seek(size // 2)
        f.write(np.full(32, 0.5, dtype=np.float32).tobytes())
    assert verify_model_cache(target.parent) == ["model.safetensors changed since it was built"]
    target.write_bytes(original)
    assert verify_model_cache(target.parent) == []
    with open(target, "r+b") as f:  # 64 KB of random bytes into one tensor
        f.seek(size // 3)
        f.write(np.random.default_rng(0).bytes(64 * 1024))
    with pytest.warns(UserWarning, match="failed its integrity check.*rebuilding"):
        rebuilt = load_model(progress=False)
    assert rebuilt.info.fingerprint == smol.info.fingerprint
    assert target.stat().st_size > 100_000_000 and verify_model_cache(target.parent) == []
    prompt = ["Name a colour."]
    assert rebuilt.generate(prompt, max_new_tokens=8) == smol.generate(prompt, max_new_tokens=8)
    assert embedded_gguf_path().is_file()
