"""Positions during a forward: the tracker that knows which absolute positions a window covers and where
the prompt ends (a context, never a shared attribute), padding-aware position ids, and the context in which
steering hooks stand aside (``steering_bypassed``).
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Any, Iterator

import torch


class _PositionTracker:
    """Knows, during a forward, which absolute positions the current window covers and where the prompt ends.

    A forward pre-hook on the HF module (its handle is kept in :attr:`handle`) reads ``past_key_values`` to get
    the cache length, the ``offset`` of the current window: under KV-cache decoding a hook sees one position at
    offset ``t``; without a cache it sees the whole sequence from 0. Where the prompt ends is *not* stored
    here: it is a context (:meth:`PersonaModel.response_region`), so concurrent or nested callers cannot see
    each other's value; :attr:`prompt_len` reads it (``None`` for plain forwards: every position is prompt).
    """

    def __init__(self) -> None:
        self.offset = 0
        self.handle: Any = None
        self._prompt_len: contextvars.ContextVar[int | None] = contextvars.ContextVar(
            f"persona_vectors_prompt_len_{id(self):x}", default=None)

    @property
    def prompt_len(self) -> int | None:
        """The prompt length of the response region active in this context (``None`` outside one)."""
        return self._prompt_len.get()

    @prompt_len.setter
    def prompt_len(self, value: int | None) -> None:
        warnings.warn("Setting model.positions.prompt_len is deprecated: use `with model.response_region(n):`",
                      DeprecationWarning, stacklevel=2)
        self._prompt_len.set(value)

    def pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        past = kwargs.get("past_key_values")
        offset = 0
        if past is not None and hasattr(past, "get_seq_length"):
            with contextlib.suppress(Exception):
                offset = int(past.get_seq_length())
        self.offset = offset

    @contextlib.contextmanager
    def region(self, prompt_len: int | None) -> Iterator[None]:
        token = self._prompt_len.set(prompt_len)
        try:
            yield
        finally:
            self._prompt_len.reset(token)
            self.offset = 0

    def prompt_end(self, width: int) -> int:
        """Window positions ``[0, k)`` of the current forward (``width`` wide) are prompt; returns ``k``."""
        pl = self._prompt_len.get()
        return width if pl is None else min(max(pl - self.offset, 0), width)

    def response_mask(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """Boolean [seq_len] mask of positions in the current window that are generated (response) tokens."""
        mask = torch.zeros(seq_len, dtype=torch.bool, device=device)
        mask[self.prompt_end(seq_len):] = True
        return mask


#: How a residual norm is measured (``(model, site, positions) -> float``), installed by
#: :mod:`persona_vectors.record` when it is imported (the package's ``__init__`` imports it). The model owns the
#: Set while :meth:`PersonaModel.residual_norm` measures its unit: steering hooks skip themselves then.
_STEERING_BYPASSED: contextvars.ContextVar[bool] = contextvars.ContextVar("persona_vectors_steering_bypassed",
                                                                           default=False)


@contextlib.contextmanager
def steering_bypassed() -> Iterator[None]:
    """Inside this block (in this thread/context) the library's steering hooks leave activations untouched.

    Used to measure reference quantities (the residual norms that are the unit of relative steering) on the
    unsteered model even when called inside a :func:`~persona_vectors.steer.steer` context.
    """
    token = _STEERING_BYPASSED.set(True)
    try:
        yield
    finally:
        _STEERING_BYPASSED.reset(token)


def steering_is_bypassed() -> bool:
    """Whether :func:`steering_bypassed` is active in the current context (checked by every steering hook)."""
    return _STEERING_BYPASSED.get()

def active_hook_points(model: Any) -> list[str]:
    """Names of the bridge's hook points that carry any hook now (the library's steering or capture hooks, or a
    user's): empty means the model computes its plain forward. Used to refuse measurements that must see the
    unsteered model (coherence, finetuning) and to record that an evaluation ran hook-free."""
    active = []
    for name, hp in model.bridge.hook_dict.items():
        if getattr(hp, "fwd_hooks", None) or getattr(hp, "_forward_hooks", None) or getattr(hp, "_forward_pre_hooks", None):
            active.append(name)
    return active


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding, so left- and right-padded rows see the same positions."""
    pos = mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)
