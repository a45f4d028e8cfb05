"""Generation settings: validation of sampling arguments with errors that name the valid range, and the
logits processor that samples with an explicit :class:`torch.Generator` (the global RNG is never touched).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


class _GeneratorSampler:
    """Draw each next token with an explicit :class:`torch.Generator` (no global RNG is touched).

    A logits processor for greedy ``generate``: it applies temperature and top-p with transformers' own
    warpers, draws with ``torch.multinomial(..., generator=)`` and returns scores whose argmax is the drawn
    token. Seeded with ``s``, it draws exactly what ``torch.manual_seed(s)`` + transformers' sampling drew.
    """

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.generator = generator
        self.warpers: list[Any] = []
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for w in self.warpers:
            scores = w(input_ids, scores)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        drawn = torch.multinomial(probs, num_samples=1, generator=self.generator)
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(1, drawn, 0.0)

def _check_sampling(max_new_tokens: Any, temperature: Any, top_p: Any, truncate: Any) -> None:
    """Validate generation settings with errors that name the valid range."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus cut), got {top_p!r}")
    if truncate not in (None, "left"):
        raise ValueError(f"truncate must be None (raise on over-length prompts) or 'left', got {truncate!r}")
