"""The LoRA shim: which linear layers inside the bridge's blocks get adapters, peft injection on the inner
``nn.Linear`` modules (so every hook point keeps firing), the :class:`Adapter` handle (save, disable, merge,
unload; each bumps the model's weights version) and :func:`load_adapter`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from ..models import PersonaModel
from .config import FinetuneConfig


#: Logical names (last path component, bridge wrappers stripped) of the projections LoRA wraps by default:
#: attention query/value/output and the MLP projections, across common architectures (Llama/Qwen/Mistral/
#: Gemma/Phi-3, GPT-2 ``c_attn``/``c_proj``/``c_fc``, NeoX/Falcon, OPT/Phi ``fc1``/``fc2``). Key projections
#: are left out as in the original LoRA paper. If none of these occur, every linear layer inside the blocks is
#: used (with a warning).
DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    "q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "qkv_proj", "gate_up_proj",
    "c_attn", "c_proj", "c_fc",
    "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h",
    "query", "value", "out_proj", "fc1", "fc2", "fc_in", "fc_out",
)
#: Sidecar written next to a saved adapter: base model id/fingerprint and the training config.
ADAPTER_META = "persona_vectors_adapter.json"
_WRAP = "._original_component"

def _is_linear(mod: torch.nn.Module) -> bool:
    if isinstance(mod, torch.nn.Linear):
        return True
    with contextlib.suppress(Exception):
        from transformers.pytorch_utils import Conv1D

        return isinstance(mod, Conv1D)
    return False


def _block_prefixes(model: PersonaModel) -> list[str]:
    names = {id(m): n for n, m in model.hf.named_modules()}
    blocks = list(getattr(model.bridge, "blocks", []))
    out = [names[id(b)] for b in blocks if id(b) in names]
    if not out:
        raise RuntimeError("Could not locate the transformer blocks inside model.hf")
    return out


def discover_target_modules(model: PersonaModel, targets: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``{logical name: [full module names in model.hf]}`` of the linear layers LoRA will wrap.

    Logical names are module paths inside a block with the bridge's ``_original_component`` wrappers removed
    (``self_attn.q_proj``); a target matches the last component (``"q_proj"``) or a dotted suffix
    (``"mlp.down_proj"``). Only layers inside the transformer blocks are considered (never the embedding or
    unembedding).
    """
    want = tuple(targets) if targets is not None else DEFAULT_TARGET_MODULES
    found: dict[str, list[str]] = {}
    every: dict[str, list[str]] = {}
    for prefix in _block_prefixes(model):
        root = model.hf.get_submodule(prefix)
        for sub, mod in root.named_modules():
            if not sub or not _is_linear(mod) or "lora_" in sub:
                continue
            logical = sub.replace("_original_component.", "").replace("._original_component", "")
            logical = logical.removeprefix("_original_component").strip(".")
            full = f"{prefix}.{sub}"
            every.setdefault(logical, []).append(full)
            leaf = logical.rsplit(".", 1)[-1]
            if leaf in want or any(logical == t or logical.endswith("." + t) for t in want):
                found.setdefault(logical, []).append(full)
    if found:
        return found
    if targets is not None:
        raise ValueError(f"None of target_modules={list(targets)} occurs in the model's blocks; "
                         f"available: {sorted({k.rsplit('.', 1)[-1] for k in every})}")
    warnings.warn("No known projection names in the blocks: LoRA wraps every linear layer inside them", stacklevel=2)
    return every


def _has_lora(model: PersonaModel) -> bool:
    return any("lora_A" in n for n, _ in model.hf.named_modules())


def _weights_changed(model: Any) -> None:
    """Tell the model its weights changed in place, so weight-keyed caches stop serving the old weights
    (:meth:`PersonaModel.bump_weights_version`)."""
    bump = getattr(model, "bump_weights_version", None)
    if bump is not None:
        bump()


def _strip(name: str) -> str:
    return name.replace(_WRAP, "")


class Adapter:
    """A LoRA adapter injected in place into ``model.hf`` (wraps the peft model).

    ``save(dir)`` writes a standard peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``)
    whose module names are the plain Hugging Face ones (the bridge's ``_original_component`` wrappers are
    stripped), so the files also load with ``PeftModel.from_pretrained`` on the unwrapped HF model;
    :func:`load_adapter` maps them back onto a wrapped model.
    """

    def __init__(self, model: PersonaModel, peft_model: Any, logical_targets: Sequence[str],
                 requires_grad: Mapping[str, bool] | None = None, target_names: Sequence[str] = ()) -> None:
        self.model = model
        self.peft = peft_model
        self.target_names = list(target_names)
        self.logical_targets = sorted(set(logical_targets))
        self.state = "active"
        self._requires_grad = dict(requires_grad or {})
        _weights_changed(model)  # the adapter is in the forward now


    def _remove_layers(self, merge: bool) -> None:
        """Put each wrapped ``nn.Linear`` back into its parent (merging the LoRA delta first if asked).

        peft's own ``unload()`` is not used: the bridge's ``LinearBridge`` forwards attribute lookups to the
        wrapped layer, so peft mistakes it for a LoRA layer and replaces the bridge component itself.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        hf = self.model.hf
        with torch.no_grad():
            for full in self.target_names:
                parent_name, _, child = full.rpartition(".")
                parent = hf.get_submodule(parent_name)
                layer = parent._modules.get(child)
                if isinstance(layer, BaseTunerLayer):
                    if merge:
                        layer.merge(safe_merge=True)
                    setattr(parent, child, layer.get_base_layer())
        if "peft_config" in hf.__dict__:
            del hf.__dict__["peft_config"]
        for n, p in hf.named_parameters():
            if n in self._requires_grad:
                p.requires_grad_(self._requires_grad[n])
        _weights_changed(self.model)

    def _check(self) -> None:
        if self.state != "active":
            raise RuntimeError(f"This adapter was already {self.state}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter weights under plain HF module names (peft's key format, adapter name removed)."""
        from peft import get_peft_model_state_dict

        self._check()
        return {_strip(k): v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.peft).items()}

    def save(self, directory: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Save as a peft adapter (safetensors) plus :data:`ADAPTER_META`; returns the directory."""
        from safetensors.torch import save_file

        self._check()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.replace(self.peft.peft_config["default"], target_modules=set(self.logical_targets))
        cfg.base_model_name_or_path = self.model.info.model_id
        cfg.save_pretrained(str(d))
        save_file(self.state_dict(), str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
        meta = {"model_id": self.model.info.model_id, "fingerprint": self.model.info.fingerprint,
                "n_layers": self.model.n_layers, "d_model": self.model.d_model, **dict(extra or {})}
        (d / ADAPTER_META).write_text(json.dumps(meta, indent=1, default=str))
        return d

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base weights temporarily (adapter bypassed) inside the block."""
        self._check()
        with self.peft.disable_adapter():
            _weights_changed(self.model)
            try:
                yield
            finally:
                _weights_changed(self.model)

    def merge(self) -> PersonaModel:
        """Fold the adapter into the base weights (in place) and drop the peft wrapper. The model's stored
        ``info.fingerprint`` stays the base's, so base vectors still apply to it; caches key on
        :meth:`PersonaModel.weights_key`, which follows the merged weights."""
        self._check()
        self._remove_layers(merge=True)
        self.state = "merged"
        return self.model

    def unload(self) -> PersonaModel:
        """Remove the adapter: the model is the base model again."""
        self._check()
        self._remove_layers(merge=False)
        self.state = "unloaded"
        return self.model


def _inject_lora(model: PersonaModel, cfg: FinetuneConfig) -> Adapter:
    from peft import LoraConfig, get_peft_model

    if _has_lora(model):
        raise RuntimeError("model already carries a LoRA adapter: merge() or unload() it before training again")
    targets = discover_target_modules(model, cfg.target_modules)
    full = [n for names in targets.values() for n in names]
    flags = {n: p.requires_grad for n, p in model.hf.named_parameters()}
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules=full, task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(model.hf, lcfg)
    leaves = [k.rsplit(".", 1)[-1] for k in targets]
    return Adapter(model, pm, leaves, flags, full)


def load_adapter(model: PersonaModel, directory: str | os.PathLike, *, allow_other_model: bool = False) -> Adapter:
    """Inject a saved adapter (from :meth:`Adapter.save` / :meth:`FinetuneResult.save_adapter`) into ``model``.

    Raises if the adapter was trained on another base model (weight fingerprint) unless
    ``allow_other_model``. Returns the :class:`Adapter` (``.unload()`` removes it again).
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "adapter_config.json").is_file() or not (d / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{d} does not hold adapter_config.json + adapter_model.safetensors")
    meta_path = d / ADAPTER_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != model.info.fingerprint and not allow_other_model:
            raise ValueError(f"Adapter was trained on {meta.get('model_id')} ({meta.get('fingerprint')}), not on "
                             f"{model.info.model_id} ({model.info.fingerprint}); pass allow_other_model=True")
    if _has_lora(model):
        raise RuntimeError("model already carries a LoRA adapter: merge() or unload() it first")
    saved = LoraConfig.from_pretrained(str(d))
    logical = sorted(saved.target_modules) if not isinstance(saved.target_modules, str) else [saved.target_modules]
    targets = discover_target_modules(model, logical)
    full = [n for names in targets.values() for n in names]
    cfg = dataclasses.replace(saved, target_modules=full)
    cfg.inference_mode = False
    flags = {n: p.requires_grad for n, p in model.hf.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(model.hf, cfg)
    wrapped_keys = {_strip(k): k for k in _peft_keys(pm)}
    state = load_file(str(d / "adapter_model.safetensors"))
    missing = sorted(set(wrapped_keys) - set(state))
    extra = sorted(set(state) - set(wrapped_keys))
    if missing or extra:
        Adapter(model, pm, [], flags, full).unload()
        raise ValueError(f"Adapter in {d} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")
    dev = model.device
    set_peft_model_state_dict(pm, {wrapped_keys[k]: v.to(dev) for k, v in state.items()})
    for n, p in pm.named_parameters():
        if "lora_" in n:
            p.requires_grad_(False)
    model.hf.eval()
    return Adapter(model, pm, [k.rsplit(".", 1)[-1] for k in targets], flags, full)


def _peft_keys(pm: Any) -> list[str]:
    from peft import get_peft_model_state_dict

    return list(get_peft_model_state_dict(pm).keys())
