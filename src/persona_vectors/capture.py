"""The one activation-capture primitive: hooks that read chosen sites, owned by a context manager.

:class:`Capture` registers one TransformerLens hook per site, removes all of them when the block ends (on
every exit path, also when registering fails halfway), and either keeps each forward's activations in
``cap.acts`` or hands them to a callback (for streaming reads during generation). With ``stop=True`` the
forward stops right after the deepest site has been read, so later blocks and the unembedding never run.
Everything that reads activations is a reducer on top of it: :func:`persona_vectors.record.record`
(streaming means, norms, per-conversation means), :func:`persona_vectors.steer.token_projections`, the
persona store's recorder and the experiments' read-outs during steered generation.

>>> with Capture(model, [Site(8), Site(14)], stop=True) as cap:        # doctest: +SKIP
...     for idx, ids, att, mask in padded_batches(model, rows, 16):
...         cap.forward(ids, att)
...         means = {s: cap.acts[s][mask].mean(0) for s in cap.sites}

Hooks active around a capture (steering) apply: a capture entered inside a ``steer`` block reads the steered
residual stream, because its hooks are registered after the steering hooks.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence, Union

import torch

from .sites import Site, as_sites

log = logging.getLogger(__name__)

Sink = Callable[[Site, torch.Tensor], None]
Positions = Literal["response", "prompt", "last_prompt", "all"]
POSITIONS: tuple[str, ...] = ("response", "prompt", "last_prompt", "all")
Conversation = Union[str, Sequence[Mapping[str, str]]]


class StopForward(Exception):
    """Raised by the deepest capture hook so the rest of the network does not run (caught by :meth:`Capture.forward`)."""


def remove_lens_handle(hook_point: Any, handle: Any) -> None:
    """Remove one TransformerLens hook (idempotent): the torch handle and its entry in the HookPoint's list."""
    handle.hook.remove()
    for lst in (hook_point.fwd_hooks, hook_point.bwd_hooks):
        if handle in lst:
            lst.remove(handle)


class HookSet:
    """Hooks registered on TransformerLens hook points, removed together (``remove()`` is idempotent).

    ``add(hook_point, fn)`` registers and remembers; ``remove()`` removes all of them, continuing past a
    failing removal and re-raising the first error at the end. Use as a context manager.
    """

    def __init__(self) -> None:
        self._handles: list[tuple[Any, Any]] = []

    def add(self, hook_point: Any, fn: Callable[..., Any]) -> Any:
        handle = hook_point.add_hook(fn)
        self._handles.append((hook_point, handle))
        return handle

    def __len__(self) -> int:
        return len(self._handles)

    def remove(self) -> None:
        first: BaseException | None = None
        while self._handles:
            hp, h = self._handles.pop()
            try:
                remove_lens_handle(hp, h)
            except Exception as err:  # keep removing the others
                first = first or err
        if first is not None:
            raise first

    def __enter__(self) -> "HookSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class Capture:
    """Record the residual stream at ``sites`` during forwards of ``model`` (a context manager).

    Args:
        model: a :class:`~persona_vectors.models.PersonaModel`.
        sites: sites / layers (anything :func:`~persona_vectors.sites.as_sites` takes).
        stop: stop each forward right after the deepest site is read (run forwards through :meth:`forward`,
            which swallows the stop). Only for forwards whose output is not needed.
        sink: ``sink(site, activation)`` called for every hook call instead of keeping ``acts`` (streaming
            reads, e.g. each decoding step of ``generate``).

    ``acts[site]`` holds the latest forward's activation ``[batch, pos, d_model]`` at each site (cleared by
    :meth:`forward` before each run). Activations reach ``acts`` and ``sink`` on the model's input device
    (``model.device``): under a device map that spreads blocks over GPUs, a block's activation is moved there,
    so reducers combine sites and masks on one device.
    """

    def __init__(self, model: Any, sites: Any, *, stop: bool = False, sink: Sink | None = None) -> None:
        self.model = model
        self.sites: tuple[Site, ...] = as_sites(sites, model.n_layers)
        self.acts: dict[Site, torch.Tensor] = {}
        self.sink = sink
        self.stop = stop
        deepest = max(s.layer for s in self.sites)
        self._stop_site = max((s for s in self.sites if s.layer == deepest), key=lambda s: s.kind == "resid_post")
        self._hooks = HookSet()
        self._device = torch.device(model.device)

    def _hook(self, site: Site) -> Callable[..., None]:
        acts, sink, n, dev = self.acts, self.sink, len(self.sites), self._device
        stop = self.stop and site == self._stop_site

        def hook(x: torch.Tensor, hook: Any = None) -> None:
            if x.device != dev:
                x = x.to(dev)
            if sink is not None:
                sink(site, x)
            else:
                acts[site] = x
            if stop and (sink is not None or len(acts) == n):
                raise StopForward
        return hook

    def __enter__(self) -> "Capture":
        try:
            for s in self.sites:
                self._hooks.add(self.model.hook_point(s), self._hook(s))
        except BaseException:
            try:
                self._hooks.remove()
            except Exception as cleanup_err:  # never mask the real error
                log.error("removing partially registered capture hooks failed: %r", cleanup_err)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.acts.clear()
        self._hooks.remove()

    @property
    def active(self) -> bool:
        """Whether the capture hooks are registered."""
        return len(self._hooks) > 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        """One forward of the wrapped HF model (no KV cache, position ids from the mask, inference mode).

        Returns the model output, or ``None`` when the capture stopped it.
        """
        from .models import position_ids_from_mask

        self.acts.clear()
        kwargs.setdefault("use_cache", False)
        with torch.inference_mode():
            try:
                return self.model.hf(input_ids=input_ids, attention_mask=attention_mask,
                                     position_ids=position_ids_from_mask(attention_mask), **kwargs)
            except StopForward:
                return None


def tokenize_conversation(model: Any, conv: Conversation, positions: str) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and the mask of positions to read (see :mod:`persona_vectors.record`).

    The ids are ``tokens(prompt rendered with generation prompt) + tokens(response content)``: exactly the
    sequence the model sees when it generates that response. A plain string is raw text, all of it prompt.
    """
    if isinstance(conv, str):  # raw text, no chat template: it is all prompt
        p, r = model.text_ids(conv), []
    else:
        msgs = list(conv)
        if msgs and msgs[-1]["role"] == "assistant":
            prompt_text = model.chat_text(msgs[:-1], add_generation_prompt=True)
            response = msgs[-1]["content"]
        else:
            prompt_text = model.chat_text(msgs, add_generation_prompt=True)
            response = ""
        p, r = model.text_ids(prompt_text), model.response_ids(response)  # special tokens in contents stay text
    model.check_length(len(p) + len(r), what="conversation")
    return select_positions(p, r, positions)


def select_positions(p: Sequence[int], r: Sequence[int], positions: str) -> tuple[list[int], list[bool]]:
    """Concatenate prompt and response ids and build the mask of positions to read."""
    ids = list(p) + list(r)
    if positions == "response":
        if not r:
            raise ValueError(
                "positions='response' needs conversations that end with a non-empty assistant message; "
                "use record_generated() to let the model write them, or positions='last_prompt'"
            )
        mask = [False] * len(p) + [True] * len(r)
    elif positions == "prompt":
        mask = [True] * len(p) + [False] * len(r)
    elif positions == "last_prompt":
        mask = [False] * len(ids)
        mask[len(p) - 1] = True
    elif positions == "all":
        mask = [True] * len(ids)
    else:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    return ids, mask


def pad_rows(rows: Sequence[Sequence[Any]], value: Any, side: str) -> list[list[Any]]:
    """Pad lists to a common width on the ``"left"`` or ``"right"``."""
    width = max(len(r) for r in rows)
    if side == "left":
        return [[value] * (width - len(r)) + list(r) for r in rows]
    return [list(r) + [value] * (width - len(r)) for r in rows]


def padded_batches(
    model: Any, rows: Sequence[tuple[Sequence[int], Sequence[bool]]], batch_size: int, *,
    padding_side: str = "right", sort: bool = True,
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of ``(ids, mask)`` rows as ``(row indices, input_ids, attention_mask, position mask)`` tensors.

    ``sort=True`` groups rows of similar length (less padding); the indices say which rows a batch holds.
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0])) if sort else list(range(len(rows)))
    pad, dev = model.tokenizer.pad_token_id, model.device
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids = torch.tensor(pad_rows([rows[i][0] for i in idx], pad, padding_side), device=dev)
        att = torch.tensor(pad_rows([[1] * len(rows[i][0]) for i in idx], 0, padding_side), device=dev)
        sel = torch.tensor(pad_rows([rows[i][1] for i in idx], False, padding_side), device=dev)
        yield idx, ids, att, sel


@contextlib.contextmanager
def capture(model: Any, sites: Any, *, stop: bool = False, sink: Sink | None = None) -> Iterator[Capture]:
    """Function form of :class:`Capture`: ``with capture(model, [14]) as cap: cap.forward(ids, att)``."""
    with Capture(model, sites, stop=stop, sink=sink) as cap:
        yield cap


__all__ = [
    "Capture", "HookSet", "POSITIONS", "StopForward", "capture", "pad_rows", "padded_batches", "remove_lens_handle",
    "select_positions", "tokenize_conversation",
]
