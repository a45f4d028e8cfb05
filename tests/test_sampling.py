"""The inverse-CDF token draw: right frequencies, never a zero-probability token, reproducible per generator."""

from __future__ import annotations

import torch

from persona_vectors.models.sampling import draw


def test_draw_frequencies_match_the_probabilities() -> None:
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0]).repeat(40_000, 1)
    got = draw(probs, torch.Generator().manual_seed(0))
    assert got.shape == (40_000, 1) and got.dtype == torch.int64
    freq = torch.bincount(got.flatten(), minlength=5).double() / 40_000
    # binomial SD at p = 0.6 is 0.0024: 5 SD of slack, and the zero-probability tokens are never drawn
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0], dtype=torch.float64), atol=0.012)
    assert freq[1] == 0 and freq[4] == 0


def test_draw_takes_unnormalised_rows_and_a_tail_token_after_many_zeros() -> None:
    vocab = 50_000
    probs = torch.zeros(2, vocab)
    probs[0, -1] = 3.0  # all mass on the last entry, unnormalised
    probs[1, 7] = 1e-3
    probs[1, vocab - 2] = 1e-3
    got = draw(probs, torch.Generator().manual_seed(1)).flatten().tolist()
    assert got[0] == vocab - 1 and got[1] in (7, vocab - 2)


def test_draw_is_reproducible_per_generator_and_differs_between_seeds() -> None:
    probs = torch.softmax(torch.randn(64, 1000, generator=torch.Generator().manual_seed(2)), -1)
    a = draw(probs, torch.Generator().manual_seed(5))
    b = draw(probs, torch.Generator().manual_seed(5))
    c = draw(probs, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_seedless_sampling_follows_the_global_rng(tiny) -> None:
    """``seed=None`` takes its seed from torch's global RNG: ``torch.manual_seed`` makes it reproducible."""
    torch.manual_seed(3)
    a = tiny.generate(["Hi", "Who are you?"], temperature=1.0, max_new_tokens=6)
    torch.manual_seed(3)
    assert a == tiny.generate(["Hi", "Who are you?"], temperature=1.0, max_new_tokens=6)
