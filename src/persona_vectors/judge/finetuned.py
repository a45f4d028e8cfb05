"""A judge fine-tuned end to end: LoRA adapters on MiniLM plus a linear head, trained on labelled texts.

:class:`EmbeddingJudge` reads a *frozen* sentence embedding, which captures what a text is about but not who is
speaking in it; its errors on real steered text sit on exactly that (narration with no speaker vs a
self-description, a person vs a spirit). :class:`FinetunedJudge` lets the encoder itself learn the boundary:
low-rank adapters (:mod:`peft`) on every linear layer of the packaged all-MiniLM-L6-v2, mean pooling, and a
linear head over :data:`~persona_vectors.judge.labels.LABELS`, trained with class-balanced cross-entropy.

Only the adapters and the head are stored (:meth:`FinetunedJudge.save`: one ``.safetensors`` file, about 1 MB);
the encoder is the fixed packaged asset. Its held-out accuracy on real generations, measured under the same
crossed grouped split as the default judge, is in ``docs/judge_finetuned.md``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import apply_temperature
from .features import _model_dir
from .labels import LABELS, VALIDATION_PATH, JudgeResult, _empty_result

__all__ = ["FINETUNED_JUDGE_PATH", "FINETUNED_VALIDATION_PATH", "FinetuneSettings", "FinetunedJudge",
           "default_judge", "stored_validation"]

FINETUNED_JUDGE_PATH: Path = VALIDATION_PATH.with_name("finetuned_judge.safetensors")
"""The shipped, fitted :class:`FinetunedJudge` (written by ``experiments/judge_finetuned_cv.py --ship``)."""

FINETUNED_VALIDATION_PATH: Path = VALIDATION_PATH.with_name("finetuned_validation.json")
"""Every number of the fine-tuned judge's held-out validation (written by ``experiments/judge_finetuned_cv.py``)."""


def stored_validation() -> dict[str, Any]:
    """The fine-tuned judge's held-out figures on real generations, as stored by its validation run (an
    :func:`~persona_vectors.judge_validation.evaluate` result plus ``decision``, ``complete`` and ``hand_written``
    accuracy). Recomputing them trains 6 judges (~45 min on 2 CPU cores), so the CLI reads them instead."""
    res = json.loads(FINETUNED_VALIDATION_PATH.read_text(encoding="utf-8"))
    out = dict(res["finetuned"]["real"])
    out.update({"decision": res["decision"], "complete": res["complete"],
                "hand_written_accuracy": res["finetuned"]["hand_written"]["accuracy"]})
    return out

FILE_VERSION = 1

_LORA_TARGETS = ("query", "key", "value", "dense")
"""Every linear layer of a BERT block (``dense`` names the attention output, intermediate and output layers)."""


@dataclass(frozen=True)
class FinetuneSettings:
    """Training settings of a :class:`FinetunedJudge` (stored in its file, so a loaded judge says how it was made).

    Attributes:
        rank: LoRA rank of every adapter.
        alpha: LoRA scaling numerator (the update is ``alpha / rank * B @ A``).
        dropout: dropout on the adapters' input and on the pooled embedding before the head.
        lr: peak AdamW learning rate (adapters and head), reached after ``warmup`` of the steps, then linear decay.
        epochs: passes over the training set.
        batch_size: texts per step.
        weight_decay: AdamW weight decay.
        warmup: fraction of steps with a linear learning-rate warm-up.
        max_length: tokens kept per text (the judged texts are ~40 tokens; longer ones are truncated).
        class_weight: ``"balanced"`` (loss weights ``n / (k * count)``, as in scikit-learn) or ``None``.
        seed: seeds the head's initialisation, dropout and the order of the batches.
    """

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.1
    lr: float = 2e-3
    epochs: int = 10
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_length: int = 128
    class_weight: str | None = "balanced"
    seed: int = 0


class _Classifier:
    """The encoder with adapters, mean pooling and the head (torch modules built lazily, one per judge)."""

    def __init__(self, settings: FinetuneSettings) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        model_dir = _model_dir()
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            base = AutoModel.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        torch.manual_seed(settings.seed)
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=list(_LORA_TARGETS), bias="none")
        self.encoder = get_peft_model(base, config)
        self.head = torch.nn.Linear(int(base.config.hidden_size), len(LABELS))
        self.drop = torch.nn.Dropout(settings.dropout)
        self.settings = settings

    def modules(self) -> list[Any]:
        return [self.encoder, self.head, self.drop]

    def train(self, mode: bool = True) -> None:
        for m in self.modules():
            m.train(mode)

    def logits(self, texts: Sequence[str]) -> Any:
        import torch

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.settings.max_length,
                             return_tensors="pt")
        hidden = self.encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return self.head(self.drop(pooled))

    def trainable(self) -> list[Any]:
        return [p for p in self.encoder.parameters() if p.requires_grad] + list(self.head.parameters())

    def state(self) -> dict[str, Any]:
        from peft import get_peft_model_state_dict

        tensors = {f"adapter.{k}": v.detach().contiguous() for k, v in get_peft_model_state_dict(self.encoder).items()}
        tensors.update({f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()})
        return tensors

    def load_state(self, tensors: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        adapter = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
        head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        result = set_peft_model_state_dict(self.encoder, adapter)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected or not adapter:
            raise ValueError(f"adapter weights do not fit this encoder (unexpected {list(unexpected)[:3]})")
        self.head.load_state_dict(head)


def _class_weights(labels: Sequence[str], mode: str | None) -> np.ndarray:
    """Loss weight per label in :data:`LABELS` order: scikit-learn's ``balanced`` rule over the labels present."""
    w = np.ones(len(LABELS))
    if mode is None:
        return w
    if mode != "balanced":
        raise ValueError(f"class_weight must be 'balanced' or None, not {mode!r}")
    counts = np.array([sum(1 for v in labels if v == lab) for lab in LABELS], dtype=float)
    present = counts > 0
    w[present] = len(labels) / (present.sum() * counts[present])
    return w


class FinetunedJudge:
    """Offline judge fine-tuned end to end on labelled texts (LoRA on MiniLM + a linear head).

    Same interface as :class:`~persona_vectors.judge.EmbeddingJudge`: :meth:`fit`, :meth:`predict_proba`
    (columns in :data:`LABELS` order), :meth:`predict`, :meth:`classify` (the :class:`Judge` protocol),
    :meth:`save` / :meth:`load`, and :meth:`default` for the shipped instance.

    Args:
        settings: training settings (:class:`FinetuneSettings`; the defaults are the ones the validation used).
        temperature: divides the log-probabilities before renormalising (calibration; 1 = the model's own).
        progress: show a progress bar while training.
    """

    def __init__(self, settings: FinetuneSettings | None = None, *, temperature: float = 1.0,
                 progress: bool = False) -> None:
        self.settings = settings or FinetuneSettings()
        self.temperature = temperature
        self.progress = progress

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> FinetunedJudge:
        """Train adapters and head on ``texts`` / ``labels`` (labels from :data:`LABELS`); returns ``self``.

        Deterministic for a given seed and thread count (CPU). Cost: about one second per 16 texts per epoch
        on two CPU cores for ~40-token texts.
        """
        import torch

        texts = [str(t) for t in texts]
        labels = [str(v) for v in labels]
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if not texts:
            raise ValueError("no training texts: pass at least one labelled text per label you want predicted")
        bad = sorted(set(labels) - set(LABELS))
        if bad:
            raise ValueError(f"unknown labels {bad}; expected a subset of {list(LABELS)}")
        s = self.settings
        clf = _Classifier(s)
        y = torch.tensor([LABELS.index(v) for v in labels])
        weight = torch.tensor(_class_weights(labels, s.class_weight), dtype=torch.float32)
        opt = torch.optim.AdamW(clf.trainable(), lr=s.lr, weight_decay=s.weight_decay)
        steps_per_epoch = -(-len(texts) // s.batch_size)
        total = steps_per_epoch * s.epochs
        warm = max(1, int(round(s.warmup * total)))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: (k + 1) / warm if k < warm else max(0.0, (total - k) / max(1, total - warm)))
        gen = torch.Generator().manual_seed(s.seed)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="fine-tuning judge", unit="step")
        clf.train(True)
        try:
            for _ in range(s.epochs):
                order = torch.randperm(len(texts), generator=gen).tolist()
                for start in range(0, len(order), s.batch_size):
                    idx = order[start:start + s.batch_size]
                    loss = torch.nn.functional.cross_entropy(clf.logits([texts[i] for i in idx]), y[idx],
                                                             weight=weight)
                    loss.backward()
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss.item():.3f}")
        finally:
            if bar is not None:
                bar.close()
        clf.train(False)
        self.classifier_ = clf
        self.n_train_ = len(texts)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise RuntimeError("FinetunedJudge is not fitted; call fit(), load() or FinetunedJudge.default()")

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape ``(len(texts), len(LABELS))``, columns in :data:`LABELS` order.

        Empty/whitespace texts get probability 1 on ``incoherent`` without a forward pass.
        """
        import torch

        self._check_fitted()
        if isinstance(texts, str):
            raise TypeError("predict_proba() takes a sequence of strings, not a single string")
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float64)
        live = [i for i, t in enumerate(texts) if t.strip()]
        out[[i for i, t in enumerate(texts) if not t.strip()], LABELS.index("incoherent")] = 1.0
        live.sort(key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(live), batch_size):
                idx = live[start:start + batch_size]
                p = torch.softmax(self.classifier_.logits([texts[i] for i in idx]).double(), dim=1).numpy()
                out[idx] = apply_temperature(p, self.temperature) if self.temperature != 1.0 else p
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Most probable label per text."""
        return [LABELS[int(k)] for k in self.predict_proba(texts).argmax(axis=1)]

    def classify(self, texts: Sequence[str]) -> list[JudgeResult]:
        """Judge texts (the :class:`Judge` protocol); ``source="finetuned"``, empty texts as in the default judge."""
        texts = [str(t) for t in texts]
        proba = self.predict_proba(texts)
        return [_empty_result() if not t.strip() else
                JudgeResult(LABELS[int(row.argmax())], {lab: float(p) for lab, p in zip(LABELS, row)}, "finetuned")
                for t, row in zip(texts, proba)]

    def save(self, path: str | os.PathLike[str], **meta: Any) -> Path:
        """Write adapters, head, settings, temperature and ``meta`` (JSON-serialisable) to one ``.safetensors``
        file, atomically. The encoder is not stored: it is the packaged all-MiniLM-L6-v2."""
        from safetensors.torch import save_file

        from .._infra.files import atomic_file

        self._check_fitted()
        header = {"version": FILE_VERSION, "settings": asdict(self.settings), "temperature": self.temperature,
                  "labels": list(LABELS), "meta": meta}
        target = Path(path)
        with atomic_file(target) as tmp:
            save_file(self.classifier_.state(), str(tmp), metadata={"persona_vectors_judge": json.dumps(header)})
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FinetunedJudge:
        """A judge written by :meth:`save`, ready to classify.

        Raises:
            ValueError: the file is missing, is not a saved fine-tuned judge, was written by another file
                version, or has another label set (refit it with :meth:`fit` and save it again).
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = json.loads((fh.metadata() or {})["persona_vectors_judge"])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
            raise ValueError(f"{path} is not a judge saved by FinetunedJudge.save ({err}); refit and save it") from None
        if header.get("version") != FILE_VERSION:
            raise ValueError(f"{path} has fine-tuned judge file version {header.get('version')!r}; this library "
                             f"reads version {FILE_VERSION}: refit and save it")
        if header.get("labels") != list(LABELS):
            raise ValueError(f"{path} was trained on labels {header.get('labels')}, not {list(LABELS)}: refit it")
        judge = cls(FinetuneSettings(**header["settings"]), temperature=float(header["temperature"]))
        clf = _Classifier(judge.settings)
        clf.load_state(tensors)
        clf.train(False)
        judge.classifier_ = clf
        judge.meta_ = header.get("meta", {})
        return judge

    @classmethod
    def default(cls) -> FinetunedJudge:
        """The shipped fine-tuned judge (``data/judge_real/finetuned_judge.safetensors``), loaded once per process.

        It was fitted on the hand-written set plus every labelled real generation, with the temperature fitted
        on held-out predictions (``experiments/judge_finetuned_cv.py``). If the shipped training data changed
        since (its sha256 differs), the file is stale and this raises instead of silently judging with it.

        Raises:
            FileNotFoundError / ValueError: the file is absent or stale; the message names the command that
                rebuilds it.
        """
        from .embedding import shipped_training_sha256

        with _DEFAULT_LOCK:
            if _DEFAULT[0] is None:
                if not FINETUNED_JUDGE_PATH.is_file():
                    raise FileNotFoundError(f"{FINETUNED_JUDGE_PATH} is missing: rebuild it with "
                                            "`python experiments/judge_finetuned_cv.py --ship`")
                judge = cls.load(FINETUNED_JUDGE_PATH)
                if judge.meta_.get("training_sha256") != shipped_training_sha256():
                    raise ValueError(f"{FINETUNED_JUDGE_PATH} was fitted on other training data than the shipped "
                                     "corpus: rebuild it with `python experiments/judge_finetuned_cv.py --ship`")
                _DEFAULT[0] = judge
            return _DEFAULT[0]


_DEFAULT: list[FinetunedJudge | None] = [None]


_DEFAULT_LOCK = threading.Lock()
