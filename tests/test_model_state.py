"""Model state that cannot go stale: weights version and cache keys, the norm cache, response regions by
context, seeded sampling through an explicit generator, logging levels left alone."""

from __future__ import annotations

import logging
import threading

import torch
from conftest import make_tiny_model

from persona_vectors import personas as P
from persona_vectors.capture import Capture
from persona_vectors.finetune import FinetuneConfig, finetune
from persona_vectors.sites import Site

DATA = [[{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"Arr, answer {i}!"}]
        for i in range(8)]


def _extract(model, cache):
    return P.get_persona_vector(model, "hitler", route="facts", layers=[1, 2], quick=True, cache=cache, progress=False)


def test_finetune_in_place_then_extract_never_hits_the_base_cache(tmp_path, monkeypatch):
    from persona_vectors.personas import compute

    model = make_tiny_model(seed=11)
    P.clear_memory_caches()
    calls: list[int] = []
    real = compute._record_rows

    def counting(model, convs, *a, **kw):
        calls.append(len(convs))
        return real(model, convs, *a, **kw)

    monkeypatch.setattr(compute, "_record_rows", counting)
    base_key = model.weights_key()
    assert base_key == model.info.fingerprint and model.weights_version == 0
    base = _extract(model, tmp_path)
    assert calls, "the first extraction records activations"
    calls.clear()
    P.clear_memory_caches()  # the disk cache, not the in-process memo, must serve it
    assert torch.equal(_extract(model, tmp_path).directions, base.directions) and not calls

    with finetune(model, DATA, FinetuneConfig(lr=5e-2, max_steps=3, batch_size=4, seed=0), progress=False):
        assert model.weights_version > 0 and model.info.fingerprint == base_key  # base vectors still apply
        assert model.weights_key() != base_key
        tuned = _extract(model, tmp_path)
        assert calls, "the tuned model recorded its own activations instead of reading the base model's"
        assert not torch.equal(tuned.directions, base.directions)
    # restored bit for bit: the base entries serve again, without new work
    assert model.weights_key() == base_key
    calls.clear()
    assert torch.equal(_extract(model, tmp_path).directions, base.directions) and not calls
    P.clear_memory_caches()


def test_norm_cache_is_public_and_invalidatable():
    model = make_tiny_model(seed=12)
    n1 = model.residual_norm(Site(1))
    model.residual_norm(Site(2))
    assert len(model.norm_cache) == 2 and model.cached_residual_norm(Site(1)) == n1
    model.norm_cache.invalidate(Site(1))
    assert model.cached_residual_norm(Site(1)) is None and model.cached_residual_norm(Site(2)) is not None
    model.norm_cache.clear()
    assert len(model.norm_cache) == 0 and model.residual_norm(Site(1)) == n1


def test_response_region_is_a_context_not_shared_state(tiny):
    assert tiny.positions.prompt_len is None and tiny.response_window(4) is None
    seen = {}

    def other_thread():
        seen["other"] = tiny.positions.prompt_len

    with tiny.response_region(3):
        assert tiny.positions.prompt_len == 3 and tiny.response_window(5) == (3, 0)
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        with tiny.response_region(None):
            assert tiny.positions.prompt_len is None
        assert tiny.positions.prompt_len == 3
    assert seen["other"] is None and tiny.positions.prompt_len is None
    assert tiny.positions.handle is not None  # the position tracker's pre-hook can be removed


def test_seeded_sampling_leaves_the_global_rng_alone(tiny):
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    a = tiny.generate(["Hi", "Who are you?"], temperature=0.9, top_p=0.95, seed=5, max_new_tokens=6)
    assert torch.equal(torch.rand(3), expected)
    assert a == tiny.generate(["Hi", "Who are you?"], temperature=0.9, top_p=0.95, seed=5, max_new_tokens=6)


def test_loading_does_not_touch_the_root_logger_level(tiny):
    root = logging.getLogger()
    before, filters = root.level, list(root.filters)
    root.setLevel(logging.DEBUG)
    try:
        from persona_vectors.models import _quiet

        with _quiet():
            assert root.level == logging.DEBUG
        assert root.filters == filters
    finally:
        root.setLevel(before)


def test_capture_stops_after_the_deepest_site_and_removes_its_hooks(tiny):
    from persona_vectors.capture import padded_batches, tokenize_conversation

    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    rows = [tokenize_conversation(tiny, conv, "response")]
    unique = {id(hp): hp for hp in tiny.bridge.hook_dict.values()}
    before = sum(len(hp.fwd_hooks) for hp in unique.values())
    with Capture(tiny, [Site(0), Site(1)], stop=True) as cap:
        for _, ids, att, _mask in padded_batches(tiny, rows, 4):
            assert cap.forward(ids, att) is None  # stopped after block 1
            assert set(cap.acts) == {Site(0), Site(1)}
    assert sum(len(hp.fwd_hooks) for hp in unique.values()) == before and not cap.active


def test_sweep_does_not_resume_across_in_place_finetuning(tmp_path):
    from persona_vectors.sweep import SweepConfig, SweepConfigMismatchError, run_sweep
    from persona_vectors.vector import PersonaVector, Provenance

    model = make_tiny_model(seed=13)
    prov = Provenance(model.info.model_id, model.info.fingerprint, model.d_model, name="v")
    vec = PersonaVector([1], torch.randn(1, model.d_model), prov)
    cfg = SweepConfig(vectors={"v": vec}, alphas=[0.0], layers=[1], prompts=["Hi", "Yo"], max_new_tokens=2)
    out = tmp_path / "r.jsonl"
    run_sweep(model, cfg, out, progress=False)
    out.write_text(out.read_text().splitlines(keepends=True)[0])  # half done
    with finetune(model, DATA, FinetuneConfig(lr=5e-2, max_steps=1, batch_size=4, seed=0), progress=False):
        try:
            run_sweep(model, cfg, out, progress=False)
        except SweepConfigMismatchError as err:
            assert "other weights" in str(err)
        else:
            raise AssertionError("resumed base-model results with the tuned model")
    assert run_sweep(model, cfg, out, progress=False).rows_written == 1  # restored: resumes
