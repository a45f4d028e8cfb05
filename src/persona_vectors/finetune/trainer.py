"""The training loop: :class:`Trainer` (batches, masked loss, one step with the preventative hooks active only
around its forward and backward, checkpoints, abort restoring the base weights) and :func:`finetune`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..models import PersonaModel
from ..record import Conversation
from .adapter import Adapter, _inject_lora, _weights_changed
from .config import FinetuneConfig
from .data import Batch, build_example, collate
from .result import FinetuneResult


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
            from ..monitor import TrainingMonitor

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
        from ..models import active_hook_points

        active = active_hook_points(self.model)
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
        from ..steer import patch

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

    See the :mod:`persona_vectors.finetune` docstring for the loss mask, preventative steering and inoculation
    prompts, and :class:`FinetuneConfig` for the options.
    """
    return Trainer(model, conversations, cfg or FinetuneConfig(), progress=progress).run()
