"""The judge's second view of a text: the embedded language model, asked who wrote it.

MiniLM sentence embeddings capture *what a text is about*; the judge's hardest boundaries are about *who is
speaking* (a self-description vs narration with no speaker, a person vs a spirit, repetition vs a terse
answer). :class:`Reader` puts each text into a fixed question for a small instruct model — the embedded
SmolLM2-135M-Instruct by default, **unsteered and private to the reader**, never the model under study — and
returns its residual-stream state at the last prompt token at a few depths. A logistic regression on these
states plus the MiniLM embedding (``EmbeddingJudge(reader=True)``) is the judge's "reader" variant; its
held-out accuracy on real steered generations is in ``docs/judge_validation.md`` beside the default's.

States are cached on disk per (reader version, model fingerprint, text) under the library's cache root, so the
shipped training set is read once per machine (a few minutes on 2 CPU cores) and reused.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["READER_LAYERS", "READER_PROMPT", "Reader"]

READER_PROMPT = ('Here is a reply someone wrote:\n"{text}"\nWho or what does the writer of this reply say they '
                 "are? Answer in one word: The writer is")
"""The question put to the reader model; ``{text}`` is the (stripped, truncated) text being judged."""

READER_LAYERS = (6, 10, 14, 18, 22, 26)
"""Layers (HF ``hidden_states`` indices) read out, for SmolLM2's 30; other models use the same depth fractions."""

READER_VERSION = 1
"""Bumped whenever the prompt, truncation or layer rule changes: cached states of another version are ignored."""

MAX_CHARS = 600


def _layers_for(n_layers: int) -> tuple[int, ...]:
    """``READER_LAYERS`` rescaled to a model of ``n_layers`` blocks (the same fractions of depth)."""
    if n_layers == 30:
        return READER_LAYERS
    return tuple(sorted({max(1, min(n_layers, round(L * n_layers / 30))) for L in READER_LAYERS}))


class Reader:
    """Last-token residual states of a fixed reader model asked who wrote each text.

    Args:
        model: a loaded :class:`~persona_vectors.models.PersonaModel` to read with; by default a private instance
            of the embedded SmolLM2-135M-Instruct, loaded once per process and never steered (steering hooks a
            caller adds to *its own* model cannot reach it).
        batch_size: texts per forward pass.
        cache: keep states on disk under the library cache root (``$PERSONA_VECTORS_CACHE``).

    :meth:`encode` returns an array of shape ``(len(texts), len(layers) * d_model)`` in float32.
    """

    _models: ClassVar[dict[str, Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: Any = None, *, batch_size: int = 16, cache: bool = True) -> None:
        self.model = model
        self.batch_size = int(batch_size)
        self.cache = cache

    # -- model and identity
    def _model(self) -> Any:
        if self.model is not None:
            return self.model
        with Reader._lock:
            if "default" not in Reader._models:
                from ..models import load_model

                Reader._models["default"] = load_model(progress=False)
            return Reader._models["default"]

    @property
    def layers(self) -> tuple[int, ...]:
        """The hidden-state indices read (HF convention: 0 = embeddings, ``L`` = after block ``L - 1``)."""
        return _layers_for(self._model().n_layers)

    @property
    def width(self) -> int:
        """Columns :meth:`encode` returns: ``len(layers) * d_model``."""
        return len(self.layers) * int(self._model().d_model)

    def fingerprint(self) -> str:
        """Identifies the states this reader produces: version, model weights and layers."""
        m = self._model()
        raw = f"{READER_VERSION}|{m.weights_fingerprint()}|{self.layers}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    @staticmethod
    def prompt(text: str) -> str:
        """The reader's prompt for ``text`` (stripped, cut to 600 characters)."""
        return READER_PROMPT.format(text=str(text).strip()[:MAX_CHARS])

    # -- reading
    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        m = self._model()
        rows = [m.with_bos(m.text_ids(self.prompt(t))) for t in texts]
        width = max(len(r) for r in rows)
        pad = m.tokenizer.pad_token_id if m.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=m.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=m.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = m.hf(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
        hs = out.hidden_states
        return torch.cat([hs[L][:, -1].float() for L in self.layers], dim=-1).cpu().numpy()

    def _cache_file(self) -> Path:
        from .._infra.cache import cache_root

        return cache_root() / "judge" / f"reader_v{READER_VERSION}_{self.fingerprint()}.npz"

    def _read_cache(self) -> dict[str, np.ndarray]:
        if not self.cache:
            return {}
        path = self._cache_file()
        try:
            with np.load(path) as z:
                return dict(zip(z["keys"].tolist(), z["states"]))
        except (OSError, ValueError, KeyError):
            return {}

    def _write_cache(self, states: dict[str, np.ndarray]) -> None:
        if not self.cache or not states:
            return
        from .._infra.files import atomic_file

        path = self._cache_file()
        keys = sorted(states)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, keys=np.array(keys), states=np.stack([states[k] for k in keys]).astype(np.float16))
        except OSError as err:
            warnings.warn(f"the judge reader's cache could not be written at {path} ({err}); set "
                          "PERSONA_VECTORS_CACHE to a writable directory to keep it", stacklevel=3)

    @staticmethod
    def key(text: str) -> str:
        """Cache key of a text (sha256 of its stripped, truncated form)."""
        return hashlib.sha256(str(text).strip()[:MAX_CHARS].encode("utf-8")).hexdigest()[:20]

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """The reader's states for ``texts``: shape ``(n, len(layers) * d_model)``, float32."""
        texts = [str(t) for t in texts]
        if not texts:
            m = self._model()
            return np.zeros((0, len(self.layers) * m.d_model), dtype=np.float32)
        cached = self._read_cache()
        keys = [self.key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in cached}.items(), key=lambda kv: len(kv[1]))
        if todo:
            fresh: dict[str, np.ndarray] = {}
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="judge reader", unit="text", disable=not progress)
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i:i + self.batch_size]
                for (k, _), row in zip(chunk, self._forward([t for _, t in chunk])):
                    fresh[k] = row
                bar.update(len(chunk))
            bar.close()
            cached.update(fresh)
            self._write_cache(cached)
        return np.stack([np.asarray(cached[k], dtype=np.float32) for k in keys])
