"""The handle a finetune returns: :class:`FinetuneResult` (losses, monitoring, the adapter), with
``save_adapter``, ``base_weights()``, ``merge()`` and ``unload()``/``restore()`` (also on leaving ``with``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..models import PersonaModel
from .adapter import ADAPTER_META, Adapter, _weights_changed
from .config import FinetuneConfig


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
