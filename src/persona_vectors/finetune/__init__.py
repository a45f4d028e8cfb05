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

The package's rooms: :mod:`.config` (:class:`PreventativeSteering`, :class:`FinetuneConfig`), :mod:`.data`
(training messages, examples with masked labels, batches), :mod:`.adapter` (the LoRA shim: target discovery,
injection, :class:`Adapter`, :func:`load_adapter`), :mod:`.result` (:class:`FinetuneResult`: save, base weights,
merge, restore) and :mod:`.trainer` (:class:`Trainer`, :func:`finetune`).
"""

from __future__ import annotations

from .adapter import (
    ADAPTER_META,
    DEFAULT_TARGET_MODULES,
    Adapter,
    _has_lora,
    _inject_lora,
    _weights_changed,
    discover_target_modules,
    load_adapter,
)
from .config import FinetuneConfig, PreventativeSteering
from .data import Batch, TrainExample, build_example, collate, training_messages
from .result import FinetuneResult
from .trainer import Trainer, finetune

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
