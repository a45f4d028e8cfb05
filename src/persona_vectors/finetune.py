"""Finetuning shim: LoRA (or full) finetuning of a :class:`PersonaModel` on chat data, with preventative
steering, inoculation prompts, checkpoints and in-loop persona-shift monitoring.

The model is trained **in place**: with LoRA, peft injects adapter layers into the ``nn.Linear`` modules
inside the bridge's blocks (the bridge keeps the HF projections wrapped in ``LinearBridge`` components; the
adapter goes on the inner ``nn.Linear``), so every residual-stream hook point keeps firing and all of the
library (recording, steering, read-outs) works on the tuned model unchanged. ``result.unload()`` (alias
``result.restore()``, or leaving ``with finetune(...) as result:``) restores the base weights exactly,
``with result.base_weights():`` disables the adapter temporarily, ``result.merge()`` folds it in.

Loss: next-token cross-entropy on the **final assistant message only**: its content tokens plus the
end-of-turn token that follows it in the chat template (so the model still learns to stop; set
``train_on_eos=False`` to drop it). Every other position (system prompt, inoculation prompt, user turns,
template tokens such as ``<|im_start|>assistant\\n``, padding) has label −100. The logits are only computed at
positions that predict a labelled token (``logits_to_keep``), which saves the 49k-vocabulary unembedding on
prompt tokens.

Preventative steering (Persona Vectors, Chen et al. 2025): during each training forward the persona vector is
added (``operator="add"``, ``alpha`` in RAW vector units: ``h + alpha·v`` with ``v`` the stored mean-difference
vector, so ``alpha = 1`` adds the full persona-vs-assistant gap; "a few times the vector" is alpha 2-5), or
the component along it is projected out (``operator="ablate"``, CAFT-style; ``alpha = 1`` removes it fully).
The hooks come from :func:`persona_vectors.steer.patch`, registered right before the step's forward and removed
in ``finally`` after its backward: they are never active during monitoring, evaluation or after training.

Inoculation prompting: ``inoculation_prompt`` is put into the system message of every TRAINING example only
(prepended to an existing system message, or as the system message); evaluation uses the normal prompts.

>>> cfg = FinetuneConfig(epochs=1, lr=2e-4, preventative=PreventativeSteering(vec, alpha=4.0, layers=[12]))  # doctest: +SKIP
>>> result = finetune(model, load_finetune_dataset("voyager_telemetry"), cfg)                               # doctest: +SKIP
>>> result.save_adapter("runs/voyager-lora"); result.unload()                                                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import torch

from .models import PersonaModel
from .record import Conversation
from .sites import Site, as_sites
from .vector import PersonaVector

log = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_META",
    "Adapter",
    "Batch",
    "DEFAULT_TARGET_MODULES",
    "FinetuneConfig",
    "FinetuneResult",
    "PreventativeSteering",
    "TrainExample",
    "Trainer",
    "build_example",
    "collate",
    "discover_target_modules",
    "finetune",
    "load_adapter",
    "training_messages",
]

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


# ================================================================================================ config
@dataclass
class PreventativeSteering:
    """Steering applied inside every training forward pass, and nowhere else.

    Attributes:
        vector: the persona direction (extracted on the base model).
        alpha: ``"add"``: coefficient in RAW vector units (``h + alpha·v``); ``"ablate"``: fraction of the
            component along ``v/|v|`` removed (1 = all of it).
        layers: layers to steer at (must be among the vector's sites). ``None``: the vector's site closest to
            60 % depth (the Persona Vectors paper steers one mid-to-late layer).
        operator: ``"add"`` (preventative steering), ``"ablate"`` (CAFT-style projection removal), or any
            registered operator (:mod:`persona_vectors.operators`; ``"cap"`` with ``threshold``).
        positions: forwarded to :func:`persona_vectors.steer.patch`; training forwards are plain forwards, so
            ``"all"`` (default) steers every token.
        allow_other_model: accept a vector whose fingerprint differs from the model's.
        threshold / cap: for ``operator="cap"``, as in :func:`persona_vectors.steer.steer`.

    The settings are checked by :meth:`persona_vectors.steer.SteerSpec.validate` when the object is built.
    """

    vector: PersonaVector
    alpha: float = 4.0
    layers: Sequence[int] | int | None = None
    operator: str = "add"
    positions: str = "all"
    allow_other_model: bool = False
    threshold: Any = None
    cap: str = "min"

    def __post_init__(self) -> None:
        self.spec().validate()

    def spec(self, sites: Sequence[Site] | None = None) -> Any:
        """The :class:`~persona_vectors.steer.SteerSpec` applied in training forwards (at ``sites`` when given)."""
        from .steer import SteerSpec

        return SteerSpec(self.vector, self.alpha, layers=self.layers if sites is None else list(sites),
                         positions=self.positions, operator=self.operator, threshold=self.threshold, cap=self.cap,
                         allow_other_model=self.allow_other_model)

    def resolved_layers(self, n_layers: int) -> tuple[Site, ...]:
        """The sites that will be steered."""
        if self.layers is None:
            target = 0.6 * (n_layers - 1)
            return (min(self.vector.sites, key=lambda s: (abs(s.layer - target), s.layer)),)
        sites = as_sites(self.layers, n_layers)  # type: ignore[arg-type]
        missing = [s for s in sites if s not in self.vector]
        if missing:
            raise ValueError(f"preventative layers {[str(s) for s in missing]} are not among the vector's sites")
        return sites

    def to_json(self) -> dict[str, Any]:
        """JSON summary (the vector by name and norm)."""
        p = self.vector.provenance
        return {"vector": p.name or p.expression, "fingerprint": p.fingerprint, "alpha": self.alpha,
                "layers": None if self.layers is None else [s.layer for s in as_sites(self.layers)],  # type: ignore[arg-type]
                "operator": self.operator, "positions": self.positions}


@dataclass
class FinetuneConfig:
    """Everything :func:`finetune` needs besides the model and the data.

    Attributes:
        lora: LoRA adapters (default) or, with ``False``, full finetuning of every parameter (meant for tiny
            models; the original weights are kept on CPU so :meth:`FinetuneResult.unload` can restore them).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout.
        target_modules: logical module names to wrap (see :data:`DEFAULT_TARGET_MODULES`; ``None`` = those).
        lr, weight_decay, lr_schedule, warmup_steps, max_grad_norm: AdamW and its schedule (``"linear"`` decays
            to 0 after warmup, ``"constant"`` keeps ``lr``); gradient-norm clipping (``None`` = off).
        epochs, max_steps: passes over the data (fractional allowed) unless ``max_steps`` caps the step count.
        batch_size: conversations per optimizer step. ``max_len``: tokens per example (longer ones are cut at
            the end, with a warning).
        seed: seeds LoRA initialisation and the data order (same seed, data and model: identical runs).
        shuffle: reshuffle the data every epoch.
        train_on_eos: also train the end-of-turn token after the response.
        checkpoint_every, out_dir: save the adapter (or full weights) every N steps to
            ``out_dir/checkpoint-NNNNNN`` (safetensors) and the final one to ``out_dir/final``.
        preventative: :class:`PreventativeSteering` active only inside training forwards.
        inoculation_prompt: system prompt present in the training inputs only.
        monitor_every, monitor_vectors, monitor_prompts, monitor_layer: every N steps (and at step 0 and the
            end) project the mean last-prompt-token activation on the given vectors (default prompts: 8
            held-out evaluation questions) — see :class:`persona_vectors.monitor.TrainingMonitor`.
    """

    lora: bool = True
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: Sequence[str] | None = None
    lr: float = 2e-4
    weight_decay: float = 0.0
    lr_schedule: Literal["linear", "constant"] = "linear"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    seed: int = 0
    shuffle: bool = True
    max_len: int = 256
    train_on_eos: bool = True
    checkpoint_every: int | None = None
    out_dir: str | os.PathLike | None = None
    preventative: PreventativeSteering | None = None
    inoculation_prompt: str | None = None
    monitor_every: int | None = None
    monitor_vectors: Mapping[str, PersonaVector] | Sequence[PersonaVector] | PersonaVector | None = None
    monitor_prompts: Sequence[str] | None = None
    monitor_layer: int | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError("epochs must be > 0 (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.lr_schedule not in ("linear", "constant"):
            raise ValueError(f"lr_schedule must be 'linear' or 'constant', got {self.lr_schedule!r}")
        if self.checkpoint_every is not None and self.out_dir is None:
            raise ValueError("checkpoint_every needs out_dir")
        if self.monitor_every is not None and not self.monitor_vectors:
            raise ValueError("monitor_every needs monitor_vectors")
        if self.preventative is not None:
            self.preventative.spec().validate()

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable summary (vectors by name)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "preventative":
                v = None if v is None else v.to_json()
            elif f.name == "monitor_vectors":
                if v is None:
                    v = None
                elif isinstance(v, PersonaVector):
                    v = [v.provenance.name or v.provenance.expression]
                elif isinstance(v, Mapping):
                    v = sorted(v)
                else:
                    v = [x.provenance.name or x.provenance.expression for x in v]
            elif isinstance(v, (Path, os.PathLike)):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d


# ================================================================================================ data
def training_messages(conversation: Conversation, inoculation_prompt: str | None = None) -> list[dict[str, str]]:
    """The messages a training example is built from: ``inoculation_prompt`` prepended to the system message
    (``"prompt\\n\\nexisting system"``) or added as one; unchanged without an inoculation prompt."""
    msgs = [dict(m) for m in conversation]
    if not inoculation_prompt:
        return msgs
    if msgs and msgs[0]["role"] == "system":
        msgs[0] = {"role": "system", "content": f"{inoculation_prompt}\n\n{msgs[0]['content']}"}
        return msgs
    return [{"role": "system", "content": inoculation_prompt}] + msgs


@dataclass(frozen=True)
class TrainExample:
    """One tokenized training example: ``labels[i]`` is ``input_ids[i]`` where trained, −100 elsewhere."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    n_prompt: int
    truncated: bool = False


def _end_of_turn_ids(model: PersonaModel, messages: list[dict[str, str]], prompt_text: str, response: str) -> list[int]:
    """Token(s) the chat template puts right after the assistant's content (the end-of-turn marker)."""
    try:
        full = model.chat_text(messages, add_generation_prompt=False)
    except Exception:  # templates that refuse a trailing assistant turn
        full = ""
    head = prompt_text + response
    if full.startswith(head):
        tail_ids = model.tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]
        if tail_ids and int(tail_ids[0]) in set(model.stop_token_ids):
            return [int(tail_ids[0])]
    eos = model.tokenizer.eos_token_id
    if eos is not None:
        return [int(eos)]
    return [int(model.stop_token_ids[0])] if model.stop_token_ids else []


def build_example(
    model: PersonaModel,
    conversation: Conversation,
    *,
    inoculation_prompt: str | None = None,
    max_len: int = 256,
    train_on_eos: bool = True,
) -> TrainExample:
    """Tokenize one conversation for training (see the module docstring for what is labelled).

    The ids are ``tokens(prompt rendered with the generation prompt) + tokens(response) [+ end of turn]``:
    exactly what the model sees when it generates that response, as in :func:`persona_vectors.record.record`.
    """
    msgs = training_messages(conversation, inoculation_prompt)
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError("Training conversations must end with an assistant message")
    response = msgs[-1]["content"]
    if not response.strip():
        raise ValueError("Training conversations need a non-empty final assistant message")
    prompt_text = model.chat_text(msgs[:-1], add_generation_prompt=True)
    p = model.text_ids(prompt_text)
    r = model.content_ids(response)  # special-token strings inside a training answer stay plain text
    if train_on_eos:
        r += _end_of_turn_ids(model, msgs, prompt_text, response)
    ids = p + r
    labels = [-100] * len(p) + r
    truncated = len(ids) > max_len
    if truncated:
        ids, labels = ids[:max_len], labels[:max_len]
    return TrainExample(tuple(int(i) for i in ids), tuple(int(x) for x in labels), len(p), truncated)


@dataclass
class Batch:
    """A right-padded training batch. ``keep``: positions whose logits predict a labelled token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    keep: torch.Tensor
    n_tokens: int


def collate(examples: Sequence[TrainExample], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Right-pad examples into a :class:`Batch` (position ids ignore padding)."""
    if not examples:
        raise ValueError("Empty batch")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), int(pad_id), dtype=torch.long)
    lab = torch.full((len(examples), width), -100, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        lab[i, :n] = torch.tensor(e.labels)
        att[i, :n] = 1
    pos = (att.cumsum(-1) - 1).clamp_min(0)
    target = lab[:, 1:] != -100
    keep = torch.nonzero(target.any(0)).reshape(-1)
    n_tok = int(target.sum())
    return Batch(ids.to(device), att.to(device), pos.to(device), lab.to(device), keep.to(device), n_tok)


# ================================================================================================ adapter
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


# ================================================================================================ result
@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: the trained model: the same object that was passed in, trained **in place** (no hooks attached).
            ``unload()`` / ``restore()`` (or leaving ``with finetune(...) as res:``) makes it the base model again.
        config: the config used.
        losses: mean training loss of every optimizer step.
        monitor: ``[(step, {vector: shift})]``: last-prompt-token projection on each monitor vector's unit
            direction minus its step-0 value, at ``monitor_layer[vector]``; ``monitor_per_layer`` has every layer.
        checkpoints: directories written during training.
        steps, seconds, n_examples, n_label_tokens: bookkeeping. ``step_seconds``: wall time of every step.
        adapter: the :class:`Adapter` (LoRA) or ``None`` (full finetune).
        preventative_report: what the steering hooks did (``SteeringHandle.report()`` of the first step).
    """

    model: PersonaModel
    config: FinetuneConfig
    losses: list[float]
    monitor: list[tuple[int, dict[str, float]]]
    monitor_per_layer: list[tuple[int, dict[str, dict[int, float]]]]
    monitor_layer: dict[str, int]
    checkpoints: list[Path]
    steps: int
    seconds: float
    n_examples: int
    n_label_tokens: int
    step_seconds: list[float] = field(default_factory=list)
    adapter: Adapter | None = None
    preventative_report: list[dict[str, Any]] = field(default_factory=list)
    _original_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def save_adapter(self, directory: str | os.PathLike) -> Path:
        """Save the LoRA adapter (peft format, safetensors) — or, after a full finetune, ``model.safetensors``
        with the trained parameters under the wrapped model's names."""
        d = Path(directory)
        if self.adapter is not None:
            return self.adapter.save(d, extra={"config": self.config.to_json(), "steps": self.steps})
        from safetensors.torch import save_model

        d.mkdir(parents=True, exist_ok=True)
        save_model(self.model.hf, str(d / "model.safetensors"), metadata={"format": "pt"})
        (d / ADAPTER_META).write_text(json.dumps({"model_id": self.model.info.model_id, "full_finetune": True,
                                                  "fingerprint": self.model.info.fingerprint,
                                                  "config": self.config.to_json()}, indent=1, default=str))
        return d

    @contextlib.contextmanager
    def base_weights(self) -> Iterator[PersonaModel]:
        """Temporarily run the base model (LoRA: adapter disabled; full finetune: original weights swapped in)."""
        if self.adapter is not None:
            with self.adapter.disabled():
                yield self.model
            return
        if self._original_state is None:
            raise RuntimeError("The original weights were not kept")
        trained = {k: v.detach().clone() for k, v in self.model.hf.state_dict().items()}
        self.model.hf.load_state_dict(self._original_state, strict=False)
        _weights_changed(self.model)
        try:
            yield self.model
        finally:
            self.model.hf.load_state_dict(trained, strict=False)
            _weights_changed(self.model)

    def merge(self) -> PersonaModel:
        """Fold the LoRA adapter into the weights (no-op after a full finetune)."""
        if self.adapter is not None:
            self.adapter.merge()
        return self.model

    def unload(self) -> PersonaModel:
        """Restore the base model (remove the adapter, or reload the original weights after a full finetune).

        Afterwards the model computes exactly what it did before :func:`finetune` (bit-identical logits).
        Idempotent. Raises ``RuntimeError`` after :meth:`merge`, which folded the adapter into the weights.
        """
        if self.adapter is not None:
            if self.adapter.state == "merged":
                raise RuntimeError("the LoRA adapter was merged into the weights, so the base model can no longer be "
                                   "restored in place: reload it with load_model()")
            if self.adapter.state == "active":
                self.adapter.unload()
        elif self._original_state is not None:
            self.model.hf.load_state_dict(self._original_state, strict=False)
            _weights_changed(self.model)
        return self.model

    restore = unload  # the same: ``result.restore()`` reads as what it does to the model passed in

    def __enter__(self) -> "FinetuneResult":
        return self

    def __exit__(self, *exc: Any) -> None:
        """``with finetune(model, ...) as res:`` — the tuned model inside the block, the base model after it
        (unless the adapter was merged inside the block, which keeps the change)."""
        if self.adapter is not None and self.adapter.state == "merged":
            return None
        self.unload()
        return None

    def to_json(self) -> dict[str, Any]:
        """JSON-serializable summary (no tensors)."""
        return {
            "config": self.config.to_json(), "losses": self.losses, "steps": self.steps, "seconds": self.seconds,
            "n_examples": self.n_examples, "n_label_tokens": self.n_label_tokens,
            "monitor": [[s, d] for s, d in self.monitor],
            "monitor_per_layer": [[s, {k: {str(layer): x for layer, x in v.items()} for k, v in d.items()}]
                                  for s, d in self.monitor_per_layer],
            "monitor_layer": self.monitor_layer, "checkpoints": [str(c) for c in self.checkpoints],
            "step_seconds": self.step_seconds, "preventative_report": self.preventative_report,
        }


# ================================================================================================ trainer
class Trainer:
    """One finetuning run, step by step. :func:`finetune` is ``Trainer(...).run()``.

    Construction seeds torch, tokenizes the data, injects the adapter (or unfreezes all weights), builds AdamW
    and the schedule, and records the monitor baseline. :meth:`train_step` runs one optimizer step on a
    :class:`Batch` (preventative hooks only inside it), so a benchmark can time plain and preventative steps
    on the same batch: ``trainer.train_step(b, preventative=False)`` vs ``trainer.train_step(b)``.
    """

    def __init__(self, model: PersonaModel, conversations: Sequence[Conversation], cfg: FinetuneConfig,
                 *, progress: bool = True) -> None:
        if not conversations:
            raise ValueError("No training conversations")
        self.model, self.cfg, self.progress = model, cfg, progress
        self._check_no_hooks()
        torch.manual_seed(cfg.seed)
        self.examples = [build_example(model, c, inoculation_prompt=cfg.inoculation_prompt, max_len=cfg.max_len,
                                       train_on_eos=cfg.train_on_eos) for c in conversations]
        n_trunc = sum(e.truncated for e in self.examples)
        if n_trunc:
            warnings.warn(f"{n_trunc} of {len(self.examples)} examples were longer than max_len={cfg.max_len} "
                          "and were cut", stacklevel=3)
        empty = [i for i, e in enumerate(self.examples) if all(x == -100 for x in e.labels)]
        if empty:
            raise ValueError(f"{len(empty)} examples have no trainable token left after truncation to "
                             f"max_len={cfg.max_len} (e.g. #{empty[0]}): raise max_len")
        self.pad_id = int(model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0)
        self.monitor = None
        if cfg.monitor_vectors:
            from .monitor import TrainingMonitor

            self.monitor = TrainingMonitor(model, cfg.monitor_vectors, cfg.monitor_prompts, layer=cfg.monitor_layer)
        self._original_state: dict[str, torch.Tensor] | None = None
        self.adapter: Adapter | None = None
        torch.manual_seed(cfg.seed)
        if cfg.lora:
            self.adapter = _inject_lora(model, cfg)
            params = [p for n, p in model.hf.named_parameters() if p.requires_grad]
        else:
            n_params = sum(p.numel() for p in model.hf.parameters())
            if n_params > 200_000_000:
                warnings.warn(f"Full finetuning of {n_params / 1e6:.0f}M parameters: meant for tiny models", stacklevel=3)
            self._original_state = {k: v.detach().to("cpu", copy=True) for k, v in model.hf.state_dict().items()}
            self._flags = {n: p.requires_grad for n, p in model.hf.named_parameters()}
            for p in model.hf.parameters():
                p.requires_grad_(True)
            params = list(model.hf.parameters())
        if not params:
            raise RuntimeError("No trainable parameters")
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(self.examples) / cfg.batch_size)
        self.total_steps = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self._logits_to_keep_ok = True
        self._prev_sites = cfg.preventative.resolved_layers(model.n_layers) if cfg.preventative else ()
        self.preventative_report: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------- pieces
    def _restore_flags(self) -> None:
        """After training: base parameters get their original ``requires_grad``; adapter weights are frozen."""
        flags = getattr(self, "_flags", None)
        for n, p in self.model.hf.named_parameters():
            if "lora_" in n:
                p.requires_grad_(False)
            elif flags is not None and n in flags:
                p.requires_grad_(flags[n])

    def _check_no_hooks(self) -> None:
        active = [n for n, hp in self.model.bridge.hook_dict.items() if hp.fwd_hooks]
        if active:
            raise RuntimeError(f"Hooks are active on {active[0]} (and {len(active) - 1} more): finetune outside any "
                               "steering context (use cfg.preventative for steering during training)")

    def _lr_factor(self, step: int) -> float:
        w = self.cfg.warmup_steps
        if w and step < w:
            return (step + 1) / w
        if self.cfg.lr_schedule == "constant":
            return 1.0
        rest = max(1, self.total_steps - w)
        return max(0.0, 1.0 - (step - w) / rest)

    def batches(self) -> Iterator[Batch]:
        """The run's batches in order (``total_steps`` of them, reshuffled every epoch when ``shuffle``)."""
        n, bs = len(self.examples), self.cfg.batch_size
        made = 0
        while made < self.total_steps:
            order = torch.randperm(n, generator=self.generator).tolist() if self.cfg.shuffle else list(range(n))
            for i in range(0, n, bs):
                if made >= self.total_steps:
                    return
                yield collate([self.examples[j] for j in order[i : i + bs]], self.pad_id, self.model.device)
                made += 1

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled tokens of the batch (graph attached)."""
        kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                  use_cache=False)
        keep = batch.keep
        logits = None
        if self._logits_to_keep_ok:
            try:
                logits = self.model.hf(**kw, logits_to_keep=keep).logits
                if logits.shape[1] != keep.numel():
                    raise TypeError("logits_to_keep ignored")
            except TypeError:
                self._logits_to_keep_ok = False
                logits = None
        if logits is None:
            logits = self.model.hf(**kw).logits[:, keep]
        targets = batch.labels[:, keep + 1]
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100)

    def _patch(self) -> Any:
        from .steer import patch

        pv = self.cfg.preventative
        assert pv is not None
        return patch(self.model, pv.spec(self._prev_sites))

    def train_step(self, batch: Batch, *, preventative: bool | None = None) -> float:
        """One optimizer step on ``batch``; returns its loss.

        ``preventative``: ``None`` follows the config; ``False`` forces a plain step, ``True`` requires
        ``cfg.preventative``. The steering hooks exist only between the start of the forward and the end of
        the backward of this step.
        """
        use = self.cfg.preventative is not None if preventative is None else preventative
        if use and self.cfg.preventative is None:
            raise ValueError("preventative=True but cfg.preventative is None")
        hf = self.model.hf
        hf.train()
        handle = None
        try:
            if use:
                handle = self._patch()
                if not self.preventative_report:
                    self.preventative_report = handle.report()
            loss = self.loss(batch)
            loss.backward()
        finally:
            if handle is not None:
                handle.remove()
            hf.eval()
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        _weights_changed(self.model)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss.detach())

    def _checkpoint(self, name: str) -> Path:
        assert self.cfg.out_dir is not None
        d = Path(self.cfg.out_dir) / name
        tmp = FinetuneResult(self.model, self.cfg, [], [], [], {}, [], self.step, 0.0, 0, 0, adapter=self.adapter)
        tmp.save_adapter(d)
        (d / "trainer_state.json").write_text(json.dumps({"step": self.step, "total_steps": self.total_steps}))
        return d

    def abort(self) -> None:
        """Undo the run: remove the adapter (or restore the original weights) and parameter flags.

        Called when :meth:`run` fails or is interrupted, so the model is the base model again."""
        try:
            if self.adapter is not None and self.adapter.state == "active":
                self.adapter.unload()
            elif self._original_state is not None:
                self.model.hf.load_state_dict(self._original_state, strict=False)
                _weights_changed(self.model)
        finally:
            self._restore_flags()
            self.model.hf.eval()

    # ------------------------------------------------------------------------------------------- loop
    def run(self) -> FinetuneResult:
        """Train for ``total_steps`` steps; monitor, checkpoint; return the :class:`FinetuneResult`."""
        cfg = self.cfg
        losses: list[float] = []
        step_s: list[float] = []
        monitor: list[tuple[int, dict[str, float]]] = []
        per_layer: list[tuple[int, dict[str, dict[int, float]]]] = []
        checkpoints: list[Path] = []
        n_tok = 0

        def measure() -> None:
            if self.monitor is None:
                return
            scalar, layers = self.monitor.measure()
            monitor.append((self.step, scalar))
            per_layer.append((self.step, layers))

        measure()
        bar: Any = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, desc="finetune", unit="step")
        t0 = time.perf_counter()
        try:
            for batch in self.batches():
                ts = time.perf_counter()
                losses.append(self.train_step(batch))
                step_s.append(time.perf_counter() - ts)
                n_tok += batch.n_tokens
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if not math.isfinite(losses[-1]):
                    raise FloatingPointError(f"loss is {losses[-1]} at step {self.step}: lower lr (or alpha)")
                if cfg.monitor_every and self.step % cfg.monitor_every == 0 and self.step < self.total_steps:
                    measure()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    checkpoints.append(self._checkpoint(f"checkpoint-{self.step:06d}"))
        except BaseException:
            self.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
            self.model.hf.eval()
        seconds = time.perf_counter() - t0
        if self.monitor is not None and (not monitor or monitor[-1][0] != self.step):
            measure()
        self._restore_flags()
        if cfg.out_dir is not None:
            checkpoints.append(self._checkpoint("final"))
        self._check_no_hooks()
        result = FinetuneResult(
            self.model, cfg, losses, monitor, per_layer, dict(self.monitor.layer) if self.monitor else {},
            checkpoints, self.step, seconds, len(self.examples), n_tok, step_s, self.adapter,
            self.preventative_report, self._original_state,
        )
        if cfg.out_dir is not None:
            (Path(cfg.out_dir) / "finetune_result.json").write_text(json.dumps(result.to_json(), indent=1, default=str))
        return result


def finetune(model: PersonaModel, conversations: Sequence[Conversation], cfg: FinetuneConfig | None = None,
             *, progress: bool = True) -> FinetuneResult:
    """Finetune ``model`` on chat ``conversations`` (each ending with the assistant turn to learn).

    **Trains in place**: ``model`` itself changes (LoRA adapter injected, or its weights updated), so after the
    call it answers as the tuned model. Returns a :class:`FinetuneResult` whose ``model`` is that same object;
    ``result.unload()`` (alias ``result.restore()``) makes it the base model again, bit for bit, and the
    context-manager form does so on exit::

        with finetune(model, convs, cfg) as res:
            tuned_answer = model.generate(["Who are you?"])   # the tuned model
        base_answer = model.generate(["Who are you?"])        # the base model again

    See the module docstring for the loss mask, preventative steering and inoculation prompts, and
    :class:`FinetuneConfig` for the options.
    """
    return Trainer(model, conversations, cfg or FinetuneConfig(), progress=progress).run()
