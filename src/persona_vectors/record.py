"""Recording residual-stream activations over chat conversations.

Batched, padded forward passes through the bridge-wrapped model; TransformerLens hook points capture the
requested sites; a boolean mask per row picks the token positions to read:

- ``"response"``: the tokens of the final assistant message's content (what the model says);
- ``"prompt"``: every token before the response, template tokens included (padding excluded);
- ``"last_prompt"``: the last prompt token (the position that predicts the first response token);
- ``"all"``: every non-padding token.

Memory does not grow with the number of conversations: per site we keep running sums (float64) of the
selected activations and of their norms. ``keep_samples=True`` additionally keeps one mean vector per
conversation (needed by the PCA and probe aggregators and for held-out AUROC). The forward stops at the
deepest requested block (a hook raises once it has what it needs), so neither later blocks nor the
49k-vocabulary unembedding run.

>>> rec = record(model, convs, sites=[Site(14)], positions="response")  # doctest: +SKIP
>>> rec.mean(Site(14)).shape                                               # doctest: +SKIP
torch.Size([576])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .capture import (
    POSITIONS,
    Capture,
    Conversation,
    Positions,
    StopForward as _StopForward,
    pad_rows as _pad,
    padded_batches,
    remove_lens_handle,
    select_positions as _select,
    tokenize_conversation,
)
from .models import PersonaModel, PromptLike, set_norm_measure
from .sites import Site, as_sites

_tokenize_conversation = tokenize_conversation  # the older private name (tests and callers outside use it)


@dataclass
class Recording:
    """Streaming statistics of activations at a set of sites.

    ``sums[site]`` (float64 [d_model]) and ``norm_sums[site]`` accumulate over selected tokens; ``n_tokens``
    counts them. With ``keep_samples``, ``samples[site]`` is a float32 [n_conversations, d_model] stack of
    per-conversation mean activations (in input order).
    """

    sites: tuple[Site, ...]
    positions: str
    sums: dict[Site, torch.Tensor]
    norm_sums: dict[Site, float]
    n_tokens: int = 0
    n_conversations: int = 0
    samples: dict[Site, list[torch.Tensor]] | None = None
    dataset_hash: str = ""
    _stacked: dict[Site, torch.Tensor] = field(default_factory=dict, repr=False)

    def mean(self, site: Site) -> torch.Tensor:
        """Mean selected activation at ``site`` over all tokens of all conversations (float32)."""
        if self.n_tokens == 0:
            raise ValueError("This recording holds no tokens: the conversations selected no positions")
        return (self.sums[site] / self.n_tokens).float()

    def sample_mean(self, site: Site) -> torch.Tensor:
        """Mean over conversations of per-conversation means (each conversation weighs the same)."""
        return self.per_sample(site).mean(0)

    def mean_norm(self, site: Site) -> float:
        """Mean L2 norm of the selected activations at ``site``."""
        if self.n_tokens == 0:
            raise ValueError("This recording holds no tokens")
        return self.norm_sums[site] / self.n_tokens

    def per_sample(self, site: Site) -> torch.Tensor:
        """Per-conversation mean activations [n, d_model]; needs ``keep_samples=True`` at record time."""
        if self.samples is None:
            raise ValueError("Per-conversation samples were not kept: call record(..., keep_samples=True)")
        if site not in self._stacked:
            self._stacked[site] = torch.stack(self.samples[site]) if self.samples[site] else torch.empty(0)
        return self._stacked[site]


def conversations_hash(conversations: Sequence[Conversation]) -> str:
    """sha256 of the canonical JSON of the conversations (dataset provenance)."""
    canon = [c if isinstance(c, str) else [dict(m) for m in c] for c in conversations]
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def record(
    model: PersonaModel,
    conversations: Sequence[Conversation],
    sites: "Sequence[Site | int | str] | str | int",
    *,
    positions: Positions = "response",
    batch_size: int = 16,
    keep_samples: bool = False,
    padding_side: str = "right",
    progress: bool = True,
    desc: str = "record",
) -> Recording:
    """Run the conversations through the model and accumulate activations at ``sites``.

    Conversations are lists of ``{"role", "content"}`` messages; for ``positions="response"`` the last one
    must be the assistant's. A plain string is taken as raw text (no chat template), all of it prompt, so
    ``positions="last_prompt"`` reads its last token (the convention of steering-vectors and repeng). Batches are sorted by length to cut padding; outputs keep input order.
    """
    if not conversations:
        raise ValueError("No conversations to record: pass at least one")
    site_t = as_sites(sites, model.n_layers)
    dev = model.device
    sums = {s: torch.zeros(model.d_model, dtype=torch.float64, device=dev) for s in site_t}
    norm_sums = {s: 0.0 for s in site_t}
    samples: dict[Site, list[torch.Tensor]] | None = {s: [None] * len(conversations) for s in site_t} if keep_samples else None  # type: ignore[misc]
    rec = Recording(site_t, positions, sums, norm_sums, samples=samples, dataset_hash=conversations_hash(conversations))

    tokenized = [tokenize_conversation(model, c, positions) for c in conversations]
    batches: Any = padded_batches(model, tokenized, batch_size, padding_side=padding_side)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", leave=False, total=-(-len(tokenized) // batch_size))
    with Capture(model, site_t, stop=True) as cap:
        for idx, input_ids, attention, mask in batches:
            cap.forward(input_ids, attention)
            m = mask.unsqueeze(-1).to(torch.float64)
            per_row = mask.sum(1)
            for s in site_t:
                x = cap.acts[s].to(torch.float64)
                xm = x * m
                sums[s] += xm.sum((0, 1))
                norm_sums[s] += float((x.norm(dim=-1) * mask).sum())
                if samples is not None:
                    row_means = (xm.sum(1) / per_row.clamp_min(1).unsqueeze(-1)).float().cpu()
                    for j, i in enumerate(idx):
                        samples[s][i] = row_means[j]
            rec.n_tokens += int(per_row.sum())
            rec.n_conversations += len(idx)
    return rec


def record_generated(
    model: PersonaModel,
    prompts: Sequence[PromptLike],
    sites: "Sequence[Site | int | str] | str | int",
    *,
    system: str | None = None,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int | None = 0,
    gen_batch_size: int = 16,
    keep_samples: bool = False,
    progress: bool = True,
) -> tuple[Recording, list[list[dict[str, str]]]]:
    """Let the model answer the prompts (under ``system``), then record its response tokens.

    This is Persona-Vectors-style extraction: the activations are read on the model's own words. Returns
    the recording and the conversations (prompt + generated answer), so callers can reuse or inspect them.
    """
    replies = model.generate(
        prompts, system=system, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
        batch_size=gen_batch_size, progress=progress,
    )
    convs = []
    for p, r in zip(prompts, replies):
        msgs = model.to_messages(p, system)
        convs.append(msgs + [{"role": "assistant", "content": r if r.strip() else "..."}])
    rec = record(model, convs, sites, positions="response", keep_samples=keep_samples, progress=progress)
    return rec, convs


_NEUTRAL = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("Can you suggest a name for a cat?", "How about Whiskers? It is a classic name for a cat."),
    ("What is two plus three?", "Two plus three equals five."),
    ("Describe the colour of the sky on a clear day.", "On a clear day the sky is a bright, pale blue."),
    ("Give me a tip for sleeping better.", "Try to go to bed at the same time every night and avoid screens before sleep."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
]


def neutral_norm_conversations() -> list[list[dict[str, str]]]:
    """A fixed set of plain question/answer turns used to measure typical residual-stream norms."""
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in _NEUTRAL]


def measure_residual_norm(model: PersonaModel, site: Site, positions: str = "response") -> float:
    """Mean L2 norm of the residual stream at ``site`` over :func:`neutral_norm_conversations` (uncached: use
    :meth:`PersonaModel.residual_norm <persona_vectors.models.PersonaModel.residual_norm>`, which caches it per
    weights and measures on the unsteered model)."""
    rec = record(model, neutral_norm_conversations(), [site], positions=positions, progress=False)  # type: ignore[arg-type]
    return float(rec.mean_norm(site))


set_norm_measure(measure_residual_norm)
