"""Steering on the random-init tiny model: exact sums, operators, positions with/without KV cache, per-row
coefficients and vectors, relative units, hook hygiene on every exit path; one integration test on SmolLM2."""

from __future__ import annotations

import contextlib

import pytest
import torch

from persona_vectors import PersonaVector, Provenance, Site, VectorMismatchError
from persona_vectors.record import remove_lens_handle
from persona_vectors.steer import (
    SteeringBatchError,
    SteerSpec,
    effective_alpha,
    patch,
    projection_threshold,
    relative_alpha,
    steer,
    token_projections,
)

PROMPT = "Who are you?"
N_NEW = 6


def n_hooks(model) -> int:
    """Forward hooks on the bridge's hook points (hook_dict lists some points under two names)."""
    unique = {id(hp): hp for hp in model.bridge.hook_dict.values()}
    return sum(len(hp.fwd_hooks) for hp in unique.values())


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Measured on the busy 2-core box: tiny-model generation ran 5-20x slower with 2 torch threads than with 1
    (and SmolLM2 generation was not faster with 2)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield prev
    torch.set_num_threads(prev)


@contextlib.contextmanager
def capture(model, layer):
    """Record the activation at ``resid_post.layer`` (registered last, so it sees steering already applied)."""
    hp = model.hook_point(Site(layer))
    out: list[torch.Tensor] = []
    h = hp.add_hook(lambda x, hook=None: out.append(x.detach().clone()))
    try:
        yield out
    finally:
        remove_lens_handle(hp, h)


@contextlib.contextmanager
def prompt_len(model, k):
    """Pretend, for a plain forward, that the first ``k`` positions are the prompt."""
    with model.response_region(k):
        yield


def resid(model, layer, prompt=PROMPT):
    with capture(model, layer) as out:
        logits = model.forward_logits([prompt])
    return out[-1][0], logits


@pytest.fixture(scope="module")
def norms(tiny):
    return {L: tiny.residual_norm(Site(L)) for L in range(tiny.n_layers)}


@pytest.fixture(scope="module")
def vec(tiny, norms):
    g = torch.Generator().manual_seed(1)
    d = torch.randn(tiny.n_layers, tiny.d_model, generator=g)
    d = d / d.norm(dim=-1, keepdim=True) * torch.tensor([norms[L] for L in range(tiny.n_layers)]).unsqueeze(-1)
    return PersonaVector(range(tiny.n_layers), d, Provenance(model_id=tiny.info.model_id,
                                                             fingerprint=tiny.info.fingerprint, d_model=tiny.d_model,
                                                             name="rand"))


@pytest.fixture(autouse=True)
def _no_leaks(tiny):
    assert n_hooks(tiny) == 0
    yield
    assert n_hooks(tiny) == 0, "a test leaked hooks"


# ------------------------------------------------------------------------------------------ exact sums


def test_alpha_zero_is_identity(tiny, vec):
    base = tiny.forward_logits([PROMPT, "Hi"])
    with steer(tiny, vec, 0.0):
        assert torch.equal(tiny.forward_logits([PROMPT, "Hi"]), base)
    with steer(tiny, vec, 1.0, layers=[1]):
        assert not torch.equal(tiny.forward_logits([PROMPT, "Hi"]), base)


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_exact_sum_at_selected_positions(tiny, vec, positions):
    layer, alpha, k = 2, 3.0, 7
    with prompt_len(tiny, k):
        base, _ = resid(tiny, layer)
        with steer(tiny, vec, alpha, layers=[layer], positions=positions):
            steered, _ = resid(tiny, layer)
    diff = steered - base
    n = diff.shape[0]
    sel = torch.zeros(n, dtype=torch.bool)
    sel[{"all": slice(None), "prompt": slice(0, k), "response": slice(k, None)}[positions]] = True
    expected = (alpha * vec[layer]).expand(int(sel.sum()), -1)
    torch.testing.assert_close(diff[sel], expected, atol=1e-6, rtol=0)
    assert torch.equal(diff[~sel], torch.zeros_like(diff[~sel]))


def test_plain_forward_counts_every_position_as_prompt(tiny, vec):
    base, base_logits = resid(tiny, 1)
    with steer(tiny, vec, 2.0, layers=[1], positions="response"):
        s, logits = resid(tiny, 1)
    assert torch.equal(s, base) and torch.equal(logits, base_logits)
    with steer(tiny, vec, 2.0, layers=[1], positions="prompt"):
        s, _ = resid(tiny, 1)
    torch.testing.assert_close(s - base, (2.0 * vec[1]).expand_as(s), atol=1e-6, rtol=0)


def test_several_specs_same_site_add_up(tiny, vec):
    base, _ = resid(tiny, 1)
    w = torch.randn(tiny.d_model) * 0.1
    with steer(tiny, [SteerSpec(vec, 2.0, layers=[1]), SteerSpec(w, -1.0, layers=[1]),
                      SteerSpec(vec, 1.0, layers=[3])]) as h:
        assert h.n_hooks == 3
        s, _ = resid(tiny, 1)
    torch.testing.assert_close(s - base, (2.0 * vec[1] - w).expand_as(s), atol=1e-6, rtol=0)


def test_ablate_removes_component(tiny, vec):
    u = vec[2] / vec[2].norm()
    base, _ = resid(tiny, 2)
    assert (base @ u).abs().max() > 1e-3
    with steer(tiny, vec, 1.0, layers=[2], operator="ablate"):
        s, _ = resid(tiny, 2)
    torch.testing.assert_close(s @ u, torch.zeros(s.shape[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(s, base - (base @ u)[:, None] * u, atol=1e-6, rtol=0)
    with steer(tiny, vec, 0.5, layers=[2], operator="ablate"):
        half, _ = resid(tiny, 2)
    torch.testing.assert_close(half @ u, 0.5 * (base @ u), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_cap_clamps_projection(tiny, vec, mode):
    u = vec[2] / vec[2].norm()
    base, _ = resid(tiny, 2)
    p = base @ u
    srt = p.sort().values
    thr = float(srt[len(srt) // 2 - 1] + srt[len(srt) // 2]) / 2  # strictly between two tokens' projections
    with steer(tiny, vec, layers=[2], operator="cap", threshold={2: thr}, cap=mode):
        s, _ = resid(tiny, 2)
    q = s @ u
    untouched = p >= thr if mode == "min" else p <= thr
    assert 0 < int(untouched.sum()) < p.numel()
    torch.testing.assert_close(q[~untouched], torch.full_like(q[~untouched], thr), atol=1e-6, rtol=0)
    assert torch.equal(s[untouched], base[untouched])
    # the orthogonal part never moves
    torch.testing.assert_close(s - q[:, None] * u, base - p[:, None] * u, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="threshold"):
        with steer(tiny, vec, layers=[2], operator="cap"):
            pass


def test_projection_threshold_is_percentile_of_token_projections(tiny, vec):
    from conftest import CONVS

    proj = token_projections(tiny, vec, 2, CONVS)
    ref = []
    for conv in CONVS:
        from persona_vectors.record import _tokenize_conversation

        ids, mask = _tokenize_conversation(tiny, conv, "response")
        with torch.no_grad():
            hs = tiny.hf(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False).hidden_states[3][0]
        ref.append(hs[torch.tensor(mask)].double() @ (vec[2] / vec[2].norm()).double())
    ref = torch.cat(ref)
    torch.testing.assert_close(proj, ref, atol=1e-5, rtol=1e-5)
    t = projection_threshold(tiny, vec, 2, CONVS, percentile=25)
    assert t == pytest.approx(float(torch.quantile(ref, 0.25)), abs=1e-5)
    # default conversations: the model's own answers under the shipped assistant conditions
    t_default = projection_threshold(tiny, vec, 2, n_questions=1, max_new_tokens=4)
    assert isinstance(t_default, float)


# ------------------------------------------------------------------------------------------ KV cache


def test_kv_cache_steering_matches_no_cache(tiny, vec):
    base = tiny.generate_tokens([PROMPT, "Hi"], max_new_tokens=N_NEW)
    changed = []
    for positions in ("all", "prompt", "response"):
        with steer(tiny, vec, 4.0, layers=[1], positions=positions):
            cached = tiny.generate_tokens([PROMPT, "Hi"], max_new_tokens=N_NEW, use_cache=True)
            uncached = tiny.generate_tokens([PROMPT, "Hi"], max_new_tokens=N_NEW, use_cache=False)
        assert all(torch.equal(a, b) for a, b in zip(cached, uncached)), positions
        changed.append(any(not torch.equal(a, b) for a, b in zip(cached, base)))
    assert all(changed), f"steering at alpha=4 should change greedy output for every position mode: {changed}"


def test_response_steering_leaves_prefill_logits(tiny, vec):
    seen: list[torch.Tensor] = []
    h = tiny.hf.register_forward_hook(lambda mod, args, out: seen.append(out.logits.detach().clone()))
    try:
        tiny.generate_tokens([PROMPT], max_new_tokens=2)
        base_prefill = seen[0]
        seen.clear()
        with steer(tiny, vec, 4.0, layers=[1], positions="response"):
            tiny.generate_tokens([PROMPT], max_new_tokens=2)
        assert torch.equal(seen[0], base_prefill)
        seen.clear()
        with steer(tiny, vec, 4.0, layers=[1], positions="all"):
            tiny.generate_tokens([PROMPT], max_new_tokens=2)
        assert not torch.equal(seen[0], base_prefill)
    finally:
        h.remove()


# ------------------------------------------------------------------------------------------ per row


def test_per_row_alpha_equals_separate_calls(tiny, vec):
    alphas = [0.0, 2.0, 4.0]
    with steer(tiny, vec, alphas, layers=[1]) as h:
        batched = tiny.generate_tokens([PROMPT] * 3, max_new_tokens=N_NEW)
        assert h.report()[0]["alpha_raw"] == alphas
    single = []
    for a in alphas:
        with steer(tiny, vec, a, layers=[1]):
            single.append(tiny.generate_tokens([PROMPT], max_new_tokens=N_NEW)[0])
    assert all(torch.equal(b, s) for b, s in zip(batched, single))
    assert not torch.equal(single[0], single[2]), "coefficients should produce different outputs"
    assert torch.equal(single[0], tiny.generate_tokens([PROMPT], max_new_tokens=N_NEW)[0])


def test_per_row_vectors(tiny, vec):
    g = torch.Generator().manual_seed(5)
    rows = torch.randn(3, tiny.d_model, generator=g) * vec.norms()[Site(1)] * 4
    base, _ = resid(tiny, 1)
    with steer(tiny, rows, 1.0, layers=[1]):
        with capture(tiny, 1) as out:
            tiny.forward_logits([PROMPT] * 3)
    for b in range(3):
        torch.testing.assert_close(out[-1][b] - base, rows[b].expand_as(base), atol=1e-6, rtol=0)
    with steer(tiny, rows, [1.0, 0.0, 2.0], layers=[1]):
        with capture(tiny, 1) as out:
            tiny.forward_logits([PROMPT] * 3)
    torch.testing.assert_close(out[-1][2] - base, (2 * rows[2]).expand_as(base), atol=1e-6, rtol=0)
    assert torch.equal(out[-1][1], base)
    # a sequence of PersonaVectors steers row b with vector b; generation matches separate calls
    vecs = [vec, -1.0 * vec]
    with steer(tiny, vecs, 4.0, layers=[1]):
        batched = tiny.generate_tokens([PROMPT] * 2, max_new_tokens=N_NEW)
    for v, b in zip(vecs, batched):
        with steer(tiny, v, 4.0, layers=[1]):
            assert torch.equal(tiny.generate_tokens([PROMPT], max_new_tokens=N_NEW)[0], b)


def test_per_row_batch_mismatch_raises(tiny, vec):
    with steer(tiny, vec, [0.0, 1.0, 2.0], layers=[1]):
        with pytest.raises(SteeringBatchError, match="3 rows but the forward has batch 2"):
            tiny.generate_tokens([PROMPT] * 2, max_new_tokens=2)
    with pytest.raises(ValueError, match="per-row"):
        with steer(tiny, [vec, vec], [0.0, 1.0, 2.0], layers=[1]):
            pass


# ------------------------------------------------------------------------------------------ units, checks


def test_relative_units_scale_by_residual_norm(tiny, vec, norms):
    base, _ = resid(tiny, 2)
    with steer(tiny, 3.0 * vec, 0.5, layers=[2], relative=True) as h:
        s, _ = resid(tiny, 2)
    expected = 0.5 * norms[2] * vec[2] / vec[2].norm()
    torch.testing.assert_close(s - base, expected.expand_as(s), atol=1e-6, rtol=0)
    rep = h.report()[0]
    assert rep["relative"] is True and rep["residual_norm"] == pytest.approx(norms[2])
    raw = effective_alpha(tiny, 3.0 * vec, 0.5, 2)
    assert rep["alpha_raw"] == pytest.approx(raw)
    assert raw * (3.0 * vec[2]).norm().item() == pytest.approx(0.5 * norms[2])
    assert relative_alpha(tiny, 3.0 * vec, raw, 2) == pytest.approx(0.5)
    assert effective_alpha(tiny, vec, [1.0, 2.0], 2, relative=False) == [1.0, 2.0]


def test_validation_errors(tiny, vec):
    other = PersonaVector(vec.sites, vec.directions,
                          Provenance(model_id="other", fingerprint="0123456789abcdef", d_model=tiny.d_model))
    with pytest.raises(VectorMismatchError, match="allow_other_model"):
        with steer(tiny, other, 1.0):
            pass
    with steer(tiny, other, 0.0, layers=[1], allow_other_model=True) as h:
        assert h.n_hooks == 1
    with pytest.raises(ValueError, match=r"valid: 0\.\.3"):
        patch(tiny, vec, 1.0, layers=[7])
    with pytest.raises(ValueError, match="needs layers"):
        patch(tiny, torch.ones(tiny.d_model))
    with pytest.raises(ValueError, match="d_model"):
        patch(tiny, torch.ones(7), layers=[1])
    with pytest.raises(ValueError, match="not among the vector's sites"):
        patch(tiny, vec.at([1]), layers=[2])
    with pytest.raises(ValueError, match="operator"):
        patch(tiny, vec, operator="scale")
    with pytest.raises(ValueError, match="inside each SteerSpec"):
        patch(tiny, [SteerSpec(vec, 1.0)], alpha=2.0)


# ------------------------------------------------------------------------------------------ hygiene


def test_hooks_removed_on_normal_exit_and_exception(tiny, vec):
    base = tiny.forward_logits([PROMPT])
    with steer(tiny, vec, 2.0) as h:
        assert h.active and n_hooks(tiny) == tiny.n_layers
        assert not torch.equal(tiny.forward_logits([PROMPT]), base)
    assert not h.active and n_hooks(tiny) == 0
    assert torch.equal(tiny.forward_logits([PROMPT]), base)
    h.remove()  # idempotent
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, vec, 2.0):
            raise RuntimeError("boom")
    assert n_hooks(tiny) == 0
    assert torch.equal(tiny.forward_logits([PROMPT]), base)


def test_setup_failure_removes_hooks_and_raises_real_error(tiny, vec, monkeypatch):
    base = tiny.forward_logits([PROMPT])
    with pytest.raises(ValueError, match="out of range"):
        with steer(tiny, [SteerSpec(vec, 2.0, layers=[1]), SteerSpec(torch.ones(tiny.d_model), 2.0, layers=[1, 9])]):
            pass
    assert n_hooks(tiny) == 0
    assert torch.equal(tiny.forward_logits([PROMPT]), base)

    class Injected(Exception):
        pass

    real = tiny.hook_point
    calls = {"n": 0}

    def failing(site):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Injected("third hook point unavailable")
        return real(site)

    monkeypatch.setattr(tiny, "hook_point", failing)
    with pytest.raises(Injected, match="third hook point"):
        with steer(tiny, vec, 2.0):
            pass
    monkeypatch.undo()
    assert calls["n"] == 3, "two hooks were registered before the failure"
    assert n_hooks(tiny) == 0
    assert torch.equal(tiny.forward_logits([PROMPT]), base)


def test_nested_contexts_remove_only_their_own(tiny, vec):
    base = tiny.forward_logits([PROMPT])
    hp = tiny.hook_point(Site(1))
    with steer(tiny, vec, 1.0, layers=[1]):
        outer_only = tiny.forward_logits([PROMPT])
        with steer(tiny, vec, 1.0, layers=[1, 2]) as inner:
            assert len(hp.fwd_hooks) == 2 and n_hooks(tiny) == 3
            both = tiny.forward_logits([PROMPT])
        assert not inner.active and len(hp.fwd_hooks) == 1 and n_hooks(tiny) == 1
        assert not torch.equal(both, outer_only)
        assert torch.equal(tiny.forward_logits([PROMPT]), outer_only)
    assert torch.equal(tiny.forward_logits([PROMPT]), base)


def test_patch_handle_for_training_loops(tiny, vec):
    base = tiny.forward_logits([PROMPT])
    h = patch(tiny, vec, 2.0, layers=[1])
    try:
        assert h.active and "resid_post.1" in repr(h)
        steered = tiny.forward_logits([PROMPT])
    finally:
        h.remove()
        h.remove()
    assert not torch.equal(steered, base)
    with patch(tiny, vec, 2.0, layers=[1]) as h2:
        assert torch.equal(tiny.forward_logits([PROMPT]), steered)
    assert not h2.active
    # gradients flow through the steered residual (preventative steering during finetuning)
    emb = tiny.hf.get_input_embeddings().weight
    with patch(tiny, vec, 2.0, layers=[1]):
        ids = tiny.encode([tiny.chat_text(tiny.to_messages(PROMPT))])["input_ids"]
        loss = tiny.hf(input_ids=ids, use_cache=False).logits.float().logsumexp(-1).mean()
        loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()
    tiny.hf.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------------ integration


@pytest.mark.slow
def test_smol_random_direction_changes_output(smol):
    prompt = ["Who are you?"]
    torch.manual_seed(0)
    direction = torch.randn(smol.d_model)
    base = smol.generate_tokens(prompt, max_new_tokens=8)[0]
    with steer(smol, direction, [0.0, 8.0], layers=[10], relative=True) as h:
        zero, far = smol.generate_tokens(prompt * 2, max_new_tokens=8)
        assert h.report()[0]["residual_norm"] > 0
    assert torch.equal(zero, base)
    assert not torch.equal(far, base)
    assert not any(hp.fwd_hooks for hp in smol.bridge.hook_dict.values())
