"""Big models across devices: checking a ``device_map`` before any weight is read, and where inputs go.

:func:`~persona_vectors.models.load_model` hands ``device_map`` (``"auto"`` or an explicit
``{module name: device}``) to transformers, which places the weights through accelerate: whole blocks on
GPUs, on the CPU, or offloaded to disk (parameters on the ``meta`` device, loaded into their block for its
forward and dropped afterwards). The TransformerLens bridge then wraps the dispatched model as it is.

This module owns the two things the rest of the library needs from that:

- :func:`check_device_map`: the map's mistakes in one line each, naming the fix, before any weight is read
  (an unknown module name, modules left unplaced, a GPU that does not exist, ``meta`` targets, or GPUs mixed
  with CPU/disk offload, which the bridge refuses);
- :func:`input_device`: the device input ids must be on (the input embedding's execution device; under disk
  offload the embedding's parameters themselves sit on ``meta``).

Hooks do not need more: steering hooks move their operator state to each hooked activation's device and
dtype (cached per pair), and :class:`~persona_vectors.capture.Capture` hands activations to its reducers on
:func:`input_device`, so sums over layers living on different GPUs add up on one device.

>>> model = load_model("Qwen/Qwen2.5-7B-Instruct", device_map="auto", dtype="bfloat16")      # doctest: +SKIP
>>> model = load_model("path/to/model", device_map={"model.embed_tokens": 0, "model.layers.0": 0,
...                    "model.layers.1": 1, "model.norm": 1, "lm_head": 1})                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

#: The device-map strategies transformers / accelerate compute for you.
DEVICE_MAP_STRATEGIES: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")
_OFFLOAD = ("cpu", "disk")


class DeviceMapError(ValueError):
    """A ``device_map`` that cannot place the model; the message names the fix."""


def _target(value: Any, key: str, n_gpus: int) -> str:
    """One device-map value in canonical form (``"cpu"``, ``"disk"``, ``"cuda:N"``, ``"mps"``) or a clear error."""
    if isinstance(value, torch.device):
        value = str(value) if value.index is not None or value.type != "cuda" else "cuda:0"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DeviceMapError(f"device_map[{key!r}] is {value!r}: use a GPU index (0, 1, ...), 'cuda:N', 'cpu' or "
                             "'disk'")
    if isinstance(value, int):
        if value < 0:
            raise DeviceMapError(f"device_map[{key!r}] is {value}: GPU indices start at 0")
        value = f"cuda:{value}"
    v = value.strip().lower()
    if v == "cuda":
        v = "cuda:0"
    if v == "meta":
        raise DeviceMapError(f"device_map[{key!r}] is 'meta', which holds no weights: use 'disk' to offload that "
                             "module (its weights are read from disk for each forward) or 'cpu'")
    if v.startswith("cuda:"):
        idx = v[5:]
        if not idx.isdigit():
            raise DeviceMapError(f"device_map[{key!r}] is {value!r}: write a GPU as 'cuda:N' or N")
        if int(idx) >= n_gpus:
            have = f"{n_gpus} CUDA device{'s' if n_gpus != 1 else ''}" + (f" (0..{n_gpus - 1})" if n_gpus else "")
            raise DeviceMapError(f"device_map[{key!r}] places it on {v}, but this machine has {have}: use an existing "
                                 "GPU, 'cpu' or 'disk', or device_map='auto' to let accelerate choose")
        return v
    if v in _OFFLOAD or v == "mps":
        return v
    raise DeviceMapError(f"device_map[{key!r}] is {value!r}: use a GPU index (0, 1, ...), 'cuda:N', 'cpu' or 'disk'")


def _placeable_names(config: Any) -> tuple[list[str], list[str]]:
    """(every module name, the names of modules holding parameters or persistent buffers) of the model
    ``config`` describes, from a skeleton on the meta device (no memory, no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config)
    modules = [n for n, _ in skeleton.named_modules() if n]
    tensors = [n for n, _ in skeleton.named_parameters()] + [n for n, _ in skeleton.named_buffers()
                                                            if "inv_freq" not in n]
    return modules, tensors


def _covered(name: str, keys: Any) -> bool:
    return any(k == "" or name == k or name.startswith(k + ".") for k in keys)


def _summarise(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_device_map(device_map: str | Mapping[str, Any], config: Any) -> str | dict[str, Any]:
    """Validate ``device_map`` against the model ``config`` describes; return it in the form transformers takes.

    A strategy string must be one of :data:`DEVICE_MAP_STRATEGIES`. An explicit map must name modules of the
    model (``""`` is the whole model), place every parameter, use existing GPUs, ``"cpu"`` or ``"disk"``, and
    not mix GPUs with CPU/disk offload (the TransformerLens bridge refuses that mix). Every mistake raises
    :class:`DeviceMapError` in one line naming the fix. No weights are read.
    """
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise DeviceMapError(f"device_map={device_map!r} is not a strategy: use one of "
                                 f"{', '.join(map(repr, DEVICE_MAP_STRATEGIES))} or a dict {{module name: device}}")
        return device_map
    if not isinstance(device_map, Mapping) or not device_map:
        raise DeviceMapError(f"device_map must be 'auto' or a non-empty dict {{module name: device}}, got {device_map!r}")
    placed = {str(k): _target(v, str(k), n_gpus) for k, v in device_map.items()}
    modules, tensors = _placeable_names(config)
    known = set(modules)
    unknown = [k for k in placed if k and k not in known]
    if unknown:
        top = sorted({m for m in modules if m.count(".") <= 1 or m.rsplit(".", 1)[-1].isdigit()
                      and m.count(".") <= 2})
        raise DeviceMapError(f"device_map names {_summarise(unknown)}, not module{'s' if len(unknown) > 1 else ''} of "
                             f"this {type(config).__name__.removesuffix('Config')} model: its placeable modules are "
                             f"{_summarise(top, 12)} (or pass device_map='auto')")
    missing = sorted({t.rsplit(".", 1)[0] for t in tensors if not _covered(t, placed)})
    if missing:
        raise DeviceMapError(f"device_map leaves {_summarise(missing)} unplaced: add {'them' if len(missing) > 1 else 'it'}"
                             " to the map (a parent module's name places all its children), or pass device_map='auto'")
    values = set(placed.values())
    gpus = sorted(v for v in values if v.startswith("cuda"))
    offload = sorted(values & set(_OFFLOAD))
    if gpus and offload:
        raise DeviceMapError(f"device_map mixes GPUs ({', '.join(gpus)}) with {' and '.join(offload)} offload, which "
                             "the TransformerLens bridge does not run: put every module on GPUs (several GPUs are fine), "
                             "or every module on 'cpu'/'disk'")
    return {k: (int(v[5:]) if v.startswith("cuda:") else v) for k, v in placed.items()}


def _hook_device(module: Any) -> torch.device | None:
    """The execution device accelerate's hook on ``module`` moves inputs to, if it has one."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device("cuda", dev) if isinstance(dev, int) else torch.device(dev)
    return None


def input_device(hf_model: Any) -> torch.device:
    """The device input ids go to: the input embedding's execution device under a device map (its parameters
    may sit on ``meta`` when offloaded to disk), else the device of the first parameter not on ``meta``."""
    if getattr(hf_model, "hf_device_map", None):
        emb = hf_model.get_input_embeddings()
        for m in emb.modules():
            dev = _hook_device(m)
            if dev is not None:
                return dev
        for p in emb.parameters():
            if p.device.type != "meta":
                return p.device
    for p in hf_model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def is_dispatched(hf_model: Any) -> bool:
    """Whether ``hf_model`` was placed by a device map (accelerate hooks route activations between devices)."""
    return bool(getattr(hf_model, "hf_device_map", None))


__all__ = ["DEVICE_MAP_STRATEGIES", "DeviceMapError", "check_device_map", "input_device", "is_dispatched"]
