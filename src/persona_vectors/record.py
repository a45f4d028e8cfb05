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
from typing import Any, Literal, Sequence

import torch

from .models import Message, PersonaModel, PromptLike, position_ids_from_mask
from .sites import Site, as_sites

Positions = Literal["response", "prompt", "last_prompt", "all"]
POSITIONS: tuple[str, ...] = ("response", "prompt", "last_prompt", "all")
Conversation = Sequence[Message]


class _StopForward(Exception):
    """Raised by the deepest capture hook so the rest of the network does not run."""


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


def _tokenize_conversation(model: PersonaModel, conv: Conversation, positions: str) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and the mask of positions to read.

    The ids are ``tokens(prompt rendered with generation prompt) + tokens(response content)``: exactly the
    sequence the model sees when it generates that response.
    """
    if isinstance(conv, str):  # raw text, no chat template: it is all prompt
        p, r = model.text_ids(conv), []
    else:
        msgs = list(conv)
        if msgs and msgs[-1]["role"] == "assistant":
            prompt_text = model.chat_text(msgs[:-1], add_generation_prompt=True)
            response = msgs[-1]["content"]
        else:
            prompt_text = model.chat_text(msgs, add_generation_prompt=True)
            response = ""
        p, r = model.text_ids(prompt_text), model.content_ids(response)  # special tokens in contents stay text
    model.check_length(len(p) + len(r), what="conversation")
    return _select(p, r, positions)


def _select(p: list[int], r: list[int], positions: str) -> tuple[list[int], list[bool]]:
    """Concatenate prompt and response ids and build the mask of positions to read."""
    ids = list(p) + list(r)
    if positions == "response":
        if not r:
            raise ValueError(
                "positions='response' needs conversations that end with a non-empty assistant message; "
                "use record_generated() to let the model write them, or positions='last_prompt'"
            )
        mask = [False] * len(p) + [True] * len(r)
    elif positions == "prompt":
        mask = [True] * len(p) + [False] * len(r)
    elif positions == "last_prompt":
        mask = [False] * len(ids)
        mask[len(p) - 1] = True
    elif positions == "all":
        mask = [True] * len(ids)
    else:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    return ids, mask


def _pad(rows: list[list[Any]], value: Any, side: str) -> list[list[Any]]:
    width = max(len(r) for r in rows)
    if side == "left":
        return [[value] * (width - len(r)) + r for r in rows]
    return [r + [value] * (width - len(r)) for r in rows]


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
    deepest = max(s.layer for s in site_t)
    dev = model.device
    sums = {s: torch.zeros(model.d_model, dtype=torch.float64, device=dev) for s in site_t}
    norm_sums = {s: 0.0 for s in site_t}
    samples: dict[Site, list[torch.Tensor]] | None = {s: [None] * len(conversations) for s in site_t} if keep_samples else None  # type: ignore[misc]
    rec = Recording(site_t, positions, sums, norm_sums, samples=samples, dataset_hash=conversations_hash(conversations))

    tokenized = [_tokenize_conversation(model, c, positions) for c in conversations]
    order = sorted(range(len(tokenized)), key=lambda i: len(tokenized[i][0]))
    captured: dict[Site, torch.Tensor] = {}
    stop_site = max((s for s in site_t if s.layer == deepest), key=lambda s: s.kind == "resid_post")

    def make_hook(site: Site):
        def hook(x: torch.Tensor, hook: Any = None) -> None:
            captured[site] = x
            if site == stop_site and len(captured) == len(site_t):
                raise _StopForward
        return hook

    handles = []
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    it: Any = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc=desc, unit="batch", leave=False)
    try:
        for s in site_t:
            hp = model.hook_point(s)
            handles.append((hp, hp.add_hook(make_hook(s))))
        for idx in it:
            ids = _pad([tokenized[i][0] for i in idx], model.tokenizer.pad_token_id, padding_side)
            sel = _pad([tokenized[i][1] for i in idx], False, padding_side)
            att = _pad([[1] * len(tokenized[i][0]) for i in idx], 0, padding_side)
            input_ids = torch.tensor(ids, device=dev)
            attention = torch.tensor(att, device=dev)
            mask = torch.tensor(sel, device=dev)
            captured.clear()
            with torch.inference_mode():
                try:
                    model.hf(input_ids=input_ids, attention_mask=attention,
                             position_ids=position_ids_from_mask(attention), use_cache=False)
                except _StopForward:
                    pass
            m = mask.unsqueeze(-1).to(torch.float64)
            per_row = mask.sum(1)
            for s in site_t:
                x = captured[s].to(torch.float64)
                xm = x * m
                sums[s] += xm.sum((0, 1))
                norm_sums[s] += float((x.norm(dim=-1) * mask).sum())
                if samples is not None:
                    row_means = (xm.sum(1) / per_row.clamp_min(1).unsqueeze(-1)).float().cpu()
                    for j, i in enumerate(idx):
                        samples[s][i] = row_means[j]
            rec.n_tokens += int(per_row.sum())
            rec.n_conversations += len(idx)
    finally:
        for hp, h in handles:
            remove_lens_handle(hp, h)
        captured.clear()
    return rec


def remove_lens_handle(hook_point: Any, handle: Any) -> None:
    """Remove one TransformerLens hook (idempotent): the torch handle and its entry in the HookPoint's list."""
    handle.hook.remove()
    for lst in (hook_point.fwd_hooks, hook_point.bwd_hooks):
        if handle in lst:
            lst.remove(handle)


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
