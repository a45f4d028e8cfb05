"""Recording on a random-init tiny model: exactness against HF hidden states, padding, streaming, aggregators."""

import pytest
import torch

from conftest import CONVS
from persona_vectors import Site, record
from persona_vectors.aggregators import logistic, mean_diff, pca
from persona_vectors.models import position_ids_from_mask
from persona_vectors.record import Recording, _tokenize_conversation


def _hidden_states(tiny, conv, layer):
    ids, mask = _tokenize_conversation(tiny, conv, "all")
    x = torch.tensor([ids])
    with torch.no_grad():
        out = tiny.hf(input_ids=x, output_hidden_states=True, use_cache=False)
    return out.hidden_states[layer + 1][0], ids


def test_record_matches_hf_hidden_states(tiny):
    conv = CONVS[0]
    hs, ids = _hidden_states(tiny, conv, 1)
    rec = record(tiny, [conv], [1], positions="all", progress=False)
    assert rec.n_tokens == len(ids)
    torch.testing.assert_close(rec.mean(Site(1)), hs.mean(0), rtol=1e-5, atol=1e-5)


def test_position_selection(tiny):
    conv = CONVS[0]
    hs, ids = _hidden_states(tiny, conv, 2)
    ids_r, mask_r = _tokenize_conversation(tiny, conv, "response")
    n_resp = sum(mask_r)
    assert n_resp == len(tiny.tokenizer(conv[-1]["content"], add_special_tokens=False)["input_ids"])
    r = record(tiny, [conv], [2], positions="response", progress=False)
    torch.testing.assert_close(r.mean(Site(2)), hs[-n_resp:].mean(0), rtol=1e-5, atol=1e-5)
    p = record(tiny, [conv], [2], positions="prompt", progress=False)
    torch.testing.assert_close(p.mean(Site(2)), hs[:-n_resp].mean(0), rtol=1e-5, atol=1e-5)
    last = record(tiny, [conv], [2], positions="last_prompt", progress=False)
    torch.testing.assert_close(last.mean(Site(2)), hs[-n_resp - 1], rtol=1e-5, atol=1e-5)
    assert last.n_tokens == 1


def test_left_and_right_padding_agree(tiny):
    a = record(tiny, CONVS, [0, 3], positions="response", padding_side="left", keep_samples=True, progress=False)
    b = record(tiny, CONVS, [0, 3], positions="response", padding_side="right", keep_samples=True, progress=False)
    for s in a.sites:
        torch.testing.assert_close(a.per_sample(s), b.per_sample(s), rtol=1e-4, atol=1e-5)


def test_running_sums_equal_full_stack_and_batching(tiny):
    convs = CONVS * 3
    full = torch.cat([_hidden_states(tiny, c, 1)[0] for c in convs])
    for bs in (1, 5, 32):
        rec = record(tiny, convs, [1], positions="all", batch_size=bs, keep_samples=True, progress=False)
        torch.testing.assert_close(rec.mean(Site(1)), full.mean(0), rtol=1e-5, atol=1e-5)
        assert rec.mean_norm(Site(1)) == pytest.approx(full.norm(dim=-1).mean().item(), rel=1e-5)
        assert rec.per_sample(Site(1)).shape == (len(convs), tiny.d_model)


def test_no_hooks_left_after_record_and_after_error(tiny):
    record(tiny, CONVS, [0, 2], progress=False)
    assert not any(hp.fwd_hooks for hp in tiny.bridge.hook_dict.values())
    with pytest.raises(ValueError, match="assistant message"):
        record(tiny, [[{"role": "user", "content": "no answer"}]], [1], positions="response", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        record(tiny, CONVS, [0, 99], progress=False)
    assert not any(hp.fwd_hooks for hp in tiny.bridge.hook_dict.values())


def test_record_stops_early_but_captures_all_sites(tiny):
    calls = []
    h = tiny.hf.lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        record(tiny, CONVS, [1], progress=False)
    finally:
        h.remove()
    assert calls == []  # the unembedding never ran


def _synthetic(direction, shift, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, direction.numel(), generator=g) + shift * direction
    s = Site(0)
    return Recording((s,), "response", {s: x.double().sum(0)}, {s: float(x.norm(dim=-1).sum())},
                     n_tokens=n, n_conversations=n, samples={s: list(x)})


@pytest.mark.parametrize("agg", [mean_diff, pca, logistic])
def test_planted_direction_recovered(agg):
    d = torch.zeros(64)
    d[7], d[20] = 3.0, -4.0
    u = d / d.norm()
    pos, neg = _synthetic(u, 4.0, 2000, 1), _synthetic(u, 0.0, 2000, 2)
    v = agg(pos, neg, Site(0))
    cos = torch.nn.functional.cosine_similarity(v, u, dim=0)
    assert cos > 0.99, f"{agg.__name__}: cosine {cos:.3f}"


def test_planted_direction_through_the_model(tiny):
    """A direction added to one class's residual stream at layer 1 is recovered at layer 1 by mean_diff."""
    u = torch.randn(tiny.d_model)
    u = u / u.norm() * 5
    hp = tiny.hook_point(Site(1))
    h = hp.add_hook(lambda x, hook: x + u)
    try:
        pos = record(tiny, CONVS, [1], keep_samples=True, progress=False)
    finally:
        from persona_vectors.record import remove_lens_handle
        remove_lens_handle(hp, h)
    neg = record(tiny, CONVS, [1], keep_samples=True, progress=False)
    for agg in (mean_diff, pca):
        v = agg(pos, neg, Site(1))
        assert torch.nn.functional.cosine_similarity(v, u, dim=0) > 0.999


def test_position_ids_ignore_padding():
    m = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(m).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_pick_layer_prefers_best_auroc_then_middle():
    from persona_vectors.extract import pick_layer

    auroc = {Site(i): (1.0 if i >= 8 else 0.7) for i in range(30)}
    assert pick_layer(auroc) == Site(14) or pick_layer(auroc) == Site(15)
    auroc[Site(25)] = 1.0
    auroc.update({Site(i): 0.9 for i in range(8, 25)})
    assert pick_layer(auroc).layer >= 25
    with pytest.raises(ValueError):
        pick_layer({})
