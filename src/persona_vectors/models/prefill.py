"""Shared prefill: rows that share one prompt and are steered only on their response prefill that prompt once.

An α-sweep asks one prompt K times, each row steered with its own coefficient. When every active hook steers
*response* positions only, the prompt's forward is the same for every row (no hook touches it), so
:meth:`PersonaModel.generate_tokens` with ``shared_prefill=True`` (or ``"auto"``) runs it once, at batch 1,
repeats its KV cache along the batch and lets the K rows decode from there. The prompt's last token is left
out of the shared prefill and runs with the rows' first decoding step (at batch K, still unsteered: it is a
prompt position), because HF ``generate`` needs at least one uncached input token.

What qualifies (:func:`shared_prefill_blocker` returns ``None``): at least two rows, the KV cache on, every row's
token ids identical (so no padding either), and every hook on the model's modules either the position tracker
or a library steering hook with ``positions="response"``. A steering hook on ``"all"`` or ``"prompt"``
positions, a capture or any other hook (it would see one prefill row instead of K) blocks it.

>>> with steer(model, vec, [-8, -4, 0, 4, 8], layers=[14], positions="response", relative=True):  # doctest: +SKIP
...     toks = model.generate_tokens([long_chat] * 5, max_new_tokens=32, shared_prefill=True)
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from .positions import steering_bypassed


class SharedPrefillError(ValueError):
    """``shared_prefill=True`` was asked for rows that cannot share one prefill (the message says why and the fix)."""


def _steering_positions(fn: Any) -> str | None:
    """The positions of a library steering hook (``None`` for any other function)."""
    if not getattr(fn, "_pv_steering", False):
        return None
    return getattr(fn, "_pv_positions", None)


def _bridge_internal(fn: Any) -> bool:
    """The bridge's own wiring (e.g. the pre-hooks that feed ``hook_mlp_in``): it only calls hook points, whose user
    hooks are checked where they are registered."""
    return str(getattr(fn, "__module__", "")).startswith("transformer_lens.")


def hook_blocker(model: Any) -> str | None:
    """Why the hooks active on ``model`` now could see a shared prefill differently from K prefills, or ``None``.

    Walks every module of the HF model and of the bridge: the only hooks allowed are the model's position
    tracker, the bridge's internal wiring, and library steering hooks restricted to ``positions="response"``.
    """
    tracker = getattr(getattr(model, "positions", None), "handle", None)
    tracker_id = getattr(tracker, "id", None)
    seen: set[int] = set()
    for prefix, root in (("", model.bridge), ("hf.", model.hf)):
        for name, mod in root.named_modules():
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            where = prefix + name if name or prefix else "the model"
            for key, fn in mod._forward_pre_hooks.items():
                if not (mod is model.hf and key == tracker_id) and not _bridge_internal(fn):
                    return f"a forward pre-hook on {where} (not a library steering hook)"
            if not mod._forward_hooks:
                continue
            lens = {h.hook.id: h.user_hook for h in getattr(mod, "fwd_hooks", ()) if hasattr(h, "hook")}
            for key, fn in mod._forward_hooks.items():
                if key not in lens and _bridge_internal(fn):
                    continue
                positions = _steering_positions(lens.get(key))
                if positions is None:
                    return f"a hook on {where} that is not a library steering hook (a capture or a user hook)"
                if positions != "response":
                    return f"steering at {where} with positions={positions!r}, which changes the prompt's forward"
    return None


def shared_prefill_blocker(model: Any, rows: Sequence[Sequence[int]], use_cache: bool = True) -> str | None:
    """Why the token ``rows`` cannot share one prefill under the hooks active now, or ``None`` when they can.

    >>> shared_prefill_blocker(model, [ids] * 8)   # doctest: +SKIP
    """
    if not use_cache:
        return "use_cache=False (there is no KV cache to share)"
    if len(rows) < 2:
        return "a single row (nothing to share)"
    first = list(rows[0])
    if len(first) < 2:
        return "a prompt of fewer than 2 tokens"
    if any(list(r) != first for r in rows[1:]):
        return "the rows' prompts differ"
    return hook_blocker(model)


def shared_prefill_cache(model: Any, ids: Sequence[int], n_rows: int) -> Any:
    """The KV cache of ``ids[:-1]`` computed once at batch 1 and repeated ``n_rows`` times along the batch.

    Runs with steering bypassed: only response-only steering may be active (see :func:`hook_blocker`), which
    leaves prompt positions untouched anyway.
    """
    from transformers import DynamicCache

    prefix = torch.tensor([list(ids[:-1])], dtype=torch.long, device=model.device)
    cache = DynamicCache(config=model.hf.config)
    kw: dict[str, Any] = {}
    if "logits_to_keep" in inspect.signature(model.hf.forward).parameters:
        kw["logits_to_keep"] = 1  # the prefix's logits are never read: skip the unembedding of all but one position
    with steering_bypassed(), torch.inference_mode():
        model.hf(input_ids=prefix, attention_mask=torch.ones_like(prefix), past_key_values=cache, use_cache=True, **kw)
    cache.batch_repeat_interleave(n_rows)
    return cache


__all__ = ["SharedPrefillError", "hook_blocker", "shared_prefill_blocker", "shared_prefill_cache"]
