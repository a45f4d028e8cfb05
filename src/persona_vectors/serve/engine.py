"""One batched generate for rows of different requests: per-row steering, sampling, streaming and projections.

Rows that share every steering setting except the vector and alpha (:meth:`ResolvedSpec.group_key`) run as
one forward batch: each spec slot becomes one :class:`~persona_vectors.steer.SteerSpec` with a per-row list of
vectors and a per-row alpha tensor (the library's per-row steering). A row without steering joins a steered
batch with alpha 0 for every slot, which adds exactly zero. Sampling is per row: a logits processor draws each
sampled row with its own seeded :class:`torch.Generator` (temperature / top_p per row) and leaves greedy rows'
scores untouched, so a row's tokens do not depend on what else is in the batch (up to the batch's floating
point numerics, see docs/serve.md).

``persona_projection``: during the same generate, a read-only hook at each needed layer (registered after
the steering hooks, so it sees the steered residual) keeps the last position of every forward: the residual
that predicted each new token. A row's projection on a direction is the mean of ``h·v/|v|`` over the steps
that produced its response tokens.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from ..capture import HookSet
from ..models.sampling import draw, warpers
from ..sites import Site
from .resolve import ResolvedSpec


@dataclass
class Row:
    """One completion to generate (a request with ``n`` > 1 gives ``n`` rows)."""

    ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: Optional[int]
    stops: list[str]
    specs: list[ResolvedSpec]
    axis_sites: tuple[Site, ...] = ()
    axis_vector: Any = None  # the assistant axis (a PersonaVector) read at axis_sites, or None
    on_text: Optional[Callable[[str], None]] = None  # streaming: called (worker thread) with each new text piece

    def group_key(self) -> tuple[Any, ...]:
        """Steering compatibility: rows with equal keys share one batch."""
        return tuple(s.group_key() for s in self.specs)


@dataclass
class RowResult:
    """What one row produced."""

    text: str
    n_tokens: int
    finish_reason: str
    projection: dict[str, Any] = field(default_factory=dict)


class _RowSampler:
    """Logits processor: per-row temperature / top_p / generator; greedy rows (temperature 0) untouched."""

    def __init__(self, rows: Sequence[Row], device: torch.device, on_step: Callable[[torch.Tensor], None]) -> None:
        self.items: list[tuple[int, list[Any], torch.Generator]] = []
        for b, r in enumerate(rows):
            if r.temperature > 0:
                seed = r.seed if r.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
                self.items.append((b, warpers(r.temperature, r.top_p),
                                   torch.Generator(device=device).manual_seed(int(seed))))
        self.on_step = on_step
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.calls > 0:
            self.on_step(input_ids[:, -1])
        self.calls += 1
        for b, warpers, gen in self.items:
            s = scores[b:b + 1]
            for w in warpers:
                s = w(input_ids[b:b + 1], s)
            drawn = draw(torch.nn.functional.softmax(s.float(), dim=-1), gen)
            row = torch.full_like(scores[b], -math.inf)
            row[drawn[0, 0]] = 0.0
            scores[b] = row
        return scores


def _steer_specs(rows: Sequence[Row]) -> list[Any]:
    """One per-row SteerSpec per slot; rows without steering get alpha 0 on the group's vectors."""
    from ..steer import SteerSpec

    template = next((r.specs for r in rows if r.specs), [])
    out = []
    for k, t in enumerate(template):
        vecs = [(r.specs[k].vector if r.specs else t.vector) for r in rows]
        alphas = torch.tensor([(r.specs[k].alpha if r.specs else 0.0) for r in rows], dtype=torch.float64)
        out.append(SteerSpec(vecs, alphas, layers=list(t.sites), positions=t.positions, operator=t.operator,
                             relative=t.relative, threshold=t.threshold, cap=t.cap, allow_other_model=True))
    return out


class _Streamer:
    """Turns each step's new tokens into text pieces per row (stop at end of turn, stop strings, max_tokens)."""

    def __init__(self, model: Any, rows: Sequence[Row], tok_lock: threading.Lock) -> None:
        self.model, self.rows, self.lock = model, rows, tok_lock
        self.stop_ids = set(model.stop_token_ids) | {model.tokenizer.pad_token_id}
        self.ids: list[list[int]] = [[] for _ in rows]
        self.done = [False] * len(rows)
        self.sent = [""] * len(rows)
        self.finish = ["length"] * len(rows)
        self.text = [""] * len(rows)

    def step(self, tokens: torch.Tensor) -> None:
        for b, t in enumerate(tokens.tolist()):
            if self.done[b]:
                continue
            if t in self.stop_ids:
                self.done[b], self.finish[b] = True, "stop"
                continue
            self.ids[b].append(int(t))
            self._update(b, final=False)
            if len(self.ids[b]) >= self.rows[b].max_tokens and not self.done[b]:
                self.done[b] = True

    def _update(self, b: int, final: bool) -> None:
        row = self.rows[b]
        with self.lock:
            text = self.model.tokenizer.decode(self.ids[b], skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in row.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, self.done[b], self.finish[b] = text[:cut], True, "stop"
            final = True
        self.text[b] = text
        # hold back a possible partial stop string and an incomplete multi-byte character
        hold = 0 if final else max([len(s) - 1 for s in row.stops] + [0])
        if not final and text.endswith("\ufffd"):
            hold = max(hold, 1)
        ready = text[: max(len(self.sent[b]), len(text) - hold)]
        if row.on_text is not None and len(ready) > len(self.sent[b]) and ready.startswith(self.sent[b]):
            row.on_text(ready[len(self.sent[b]):])
            self.sent[b] = ready

    def finish_all(self) -> None:
        for b in range(len(self.rows)):
            self._update(b, final=True)


def generate_rows(model: Any, rows: Sequence[Row], tok_lock: threading.Lock) -> list[RowResult]:
    """Generate all ``rows`` in one batched ``generate`` (they must share :meth:`Row.group_key`, or be unsteered)."""
    from transformers import LogitsProcessorList

    from ..steer import steer

    n = len(rows)
    width = max(len(r.ids) for r in rows)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((n, width), int(pad), dtype=torch.long)
    att = torch.zeros((n, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r.ids):] = torch.tensor(r.ids, dtype=torch.long)
        att[i, width - len(r.ids):] = 1
    max_new = max(r.max_tokens for r in rows)
    streamer = _Streamer(model, rows, tok_lock)
    sampler = _RowSampler(rows, model.device, streamer.step)

    # projection read-out sites: every steering site and axis site any row asks for
    sites = sorted({s for r in rows for s in r.axis_sites} | {s for r in rows for sp in r.specs for s in sp.sites},
                   key=lambda s: (s.layer, str(s)))
    lasts: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}

    def reader(site: Site) -> Callable[..., None]:
        def hook(x: torch.Tensor, hook: Any = None) -> None:
            lasts[site].append(x[:, -1, :].detach().to("cpu", torch.float32))
        return hook

    specs = _steer_specs(rows)
    reads = HookSet()
    ctx: Any = steer(model, specs) if specs else _null()
    with ctx:
        try:
            for s in sites:
                reads.add(model.hook_point(s), reader(s))
            with model.response_region(width), torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seqs = model.hf.generate(
                    input_ids=ids.to(model.device), attention_mask=att.to(model.device), max_new_tokens=max_new,
                    do_sample=False, use_cache=True, eos_token_id=model.stop_token_ids, pad_token_id=pad,
                    temperature=None, top_p=None, top_k=None, logits_processor=LogitsProcessorList([sampler]))
        finally:
            reads.remove()
    new = seqs[:, width:]
    if new.shape[1] > 0 and new.shape[1] == sampler.calls:
        streamer.step(new[:, -1])  # the last token is never fed back to the processor
    streamer.finish_all()
    stacked = {s: torch.stack(v, dim=1) if v else None for s, v in lasts.items()}  # [batch, steps, d]
    out = []
    for b, r in enumerate(rows):
        k = max(1, len(streamer.ids[b]))
        out.append(RowResult(streamer.text[b], len(streamer.ids[b]), streamer.finish[b],
                             _projections(r, stacked, b, k)))
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v.to(torch.float32)
    return v / v.norm().clamp_min(1e-12)


def _projections(row: Row, stacked: dict[Site, Optional[torch.Tensor]], b: int, k: int) -> dict[str, Any]:
    """``{"axis": {"L12": p}, "vectors": {name: {"L12": p}}, "n_steps": k}`` for row ``b`` (first ``k`` steps)."""
    def mean_proj(site: Site, vec: Any) -> Optional[float]:
        h = stacked.get(site)
        if h is None or site not in vec.sites:
            return None
        steps = h[b, :k]
        return round(float((steps @ _unit(vec[site])).mean()), 5)

    out: dict[str, Any] = {"vectors": {}, "n_steps": k}
    axis = row.axis_vector
    if axis is not None:
        out["axis"] = {f"L{s.layer}": mean_proj(s, axis) for s in row.axis_sites}
    for sp in row.specs:
        out["vectors"][sp.name] = {f"L{s.layer}": mean_proj(s, sp.vector) for s in sp.sites}
    return out
