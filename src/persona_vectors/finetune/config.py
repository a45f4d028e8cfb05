"""What a finetune does: :class:`PreventativeSteering` (a persona vector added or ablated during each
training forward, as a :class:`~persona_vectors.steer.SteerSpec`) and :class:`FinetuneConfig` (optimizer, LoRA,
inoculation prompt, checkpoints, monitoring).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from ..sites import Site, as_sites
from ..vector import PersonaVector


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
        from ..steer import SteerSpec

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
