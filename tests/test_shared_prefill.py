"""Shared prefill (issue #18, P10): K rows of one prompt steered only on their response prefill it once.

The shared path must give the per-row path's tokens (greedy and seeded sampling), must actually run (one batch-1
prefill), and must refuse (``True``) or fall back (``"auto"``) whenever a hook could see the prompt differently.
"""

from __future__ import annotations

import pytest
import torch

from persona_vectors.capture import Capture
from persona_vectors.models import SharedPrefillError, shared_prefill_blocker
from persona_vectors.models import wrapper as wrapper_mod
from persona_vectors.sites import Site
from persona_vectors.steer import steer

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT = [{"role": "user", "content": "Tell me about the sea, the sky and the ships that sail between them. " * 4}]
ALPHAS = [-12.0, -6.0, 0.0, 6.0, 12.0]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts shared prefills (the batch each was repeated to)."""
    seen: list[int] = []
    real = wrapper_mod.shared_prefill_cache

    def counting(model, ids, n_rows):  # type: ignore[no-untyped-def]
        seen.append(n_rows)
        return real(model, ids, n_rows)

    monkeypatch.setattr(wrapper_mod, "shared_prefill_cache", counting)
    return seen


def _direction(tiny) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(3))


def _gen(tiny, share, **kw):  # type: ignore[no-untyped-def]
    return tiny.generate_tokens([CHAT] * len(ALPHAS), max_new_tokens=12, min_new_tokens=12, shared_prefill=share, **kw)


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 7}], ids=["greedy", "seeded"])
def test_shared_prefill_gives_the_per_row_tokens(tiny, calls, sampling) -> None:  # type: ignore[no-untyped-def]
    with steer(tiny, _direction(tiny), ALPHAS, layers=[2], positions="response"):
        per_row = _gen(tiny, False, **sampling)
        assert calls == []
        shared = _gen(tiny, True, **sampling)
    assert calls == [len(ALPHAS)]
    assert [t.tolist() for t in shared] == [t.tolist() for t in per_row]
    assert len({tuple(t.tolist()) for t in per_row}) > 1  # the α really changed the rows


def test_shared_prefill_without_hooks_and_through_generate(tiny, calls) -> None:  # type: ignore[no-untyped-def]
    texts = tiny.generate([CHAT] * 3, max_new_tokens=8)
    assert tiny.generate([CHAT] * 3, max_new_tokens=8, shared_prefill=True) == texts
    assert calls == [3]


@pytest.mark.parametrize("positions", ["all", "prompt"])
def test_steering_the_prompt_refuses_or_falls_back(tiny, calls, positions) -> None:  # type: ignore[no-untyped-def]
    with steer(tiny, _direction(tiny), ALPHAS, layers=[2], positions=positions):
        with pytest.raises(SharedPrefillError, match=f"positions='{positions}'.*positions='response'"):
            _gen(tiny, True)
        auto = _gen(tiny, "auto")
        per_row = _gen(tiny, False)
    assert calls == []
    assert [t.tolist() for t in auto] == [t.tolist() for t in per_row]


def test_auto_shares_when_it_can(tiny, calls) -> None:  # type: ignore[no-untyped-def]
    with steer(tiny, _direction(tiny), ALPHAS, layers=[2], positions="response"):
        auto = _gen(tiny, "auto")
        per_row = _gen(tiny, False)
    assert calls == [len(ALPHAS)]
    assert [t.tolist() for t in auto] == [t.tolist() for t in per_row]


def test_blockers_name_the_reason(tiny) -> None:  # type: ignore[no-untyped-def]
    ids = tiny.chat_ids(tiny.to_messages(CHAT))
    assert shared_prefill_blocker(tiny, [ids] * 4) is None
    assert "differ" in shared_prefill_blocker(tiny, [ids, ids[:-1] + [5]])
    assert "single row" in shared_prefill_blocker(tiny, [ids])
    assert "use_cache" in shared_prefill_blocker(tiny, [ids] * 2, use_cache=False)
    with Capture(tiny, [Site(1)]):
        assert "not a library steering hook" in shared_prefill_blocker(tiny, [ids] * 2)
        with pytest.raises(SharedPrefillError, match="blocks.1.hook_out"):
            tiny.generate_tokens([CHAT] * 2, max_new_tokens=2, shared_prefill=True)
    with steer(tiny, _direction(tiny), 1.0, layers=[1], positions="response"):
        assert shared_prefill_blocker(tiny, [ids] * 2) is None
    assert shared_prefill_blocker(tiny, [ids] * 4) is None  # every hook removed again
    with pytest.raises(SharedPrefillError, match="prompts differ"):
        tiny.generate_tokens([CHAT, "hi"], max_new_tokens=2, shared_prefill=True)
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        tiny.generate_tokens([CHAT] * 2, max_new_tokens=2, shared_prefill="yes")
