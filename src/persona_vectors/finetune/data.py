"""Training data: the messages of a training example (with the inoculation prompt), tokenization with
labels on the final assistant message only (plus its end-of-turn token), and collation into padded batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models import PersonaModel
from ..record import Conversation


def training_messages(conversation: Conversation, inoculation_prompt: str | None = None) -> list[dict[str, str]]:
    """The messages a training example is built from: ``inoculation_prompt`` prepended to the system message
    (``"prompt\\n\\nexisting system"``) or added as one; unchanged without an inoculation prompt."""
    msgs = [dict(m) for m in conversation]
    if not inoculation_prompt:
        return msgs
    if msgs and msgs[0]["role"] == "system":
        msgs[0] = {"role": "system", "content": f"{inoculation_prompt}\n\n{msgs[0]['content']}"}
        return msgs
    return [{"role": "system", "content": inoculation_prompt}] + msgs


@dataclass(frozen=True)
class TrainExample:
    """One tokenized training example: ``labels[i]`` is ``input_ids[i]`` where trained, −100 elsewhere."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    n_prompt: int
    truncated: bool = False


def _end_of_turn_ids(model: PersonaModel, messages: list[dict[str, str]], prompt_text: str, response: str) -> list[int]:
    """Token(s) the chat template puts right after the assistant's content (the end-of-turn marker)."""
    try:
        full = model.chat_text(messages, add_generation_prompt=False)
    except Exception:  # templates that refuse a trailing assistant turn
        full = ""
    head = prompt_text + model.response_prefix + response
    if full.startswith(head):
        tail_ids = model.tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]
        if tail_ids and int(tail_ids[0]) in set(model.stop_token_ids):
            return [int(tail_ids[0])]
    eos = model.tokenizer.eos_token_id
    if eos is not None:
        return [int(eos)]
    return [int(model.stop_token_ids[0])] if model.stop_token_ids else []


def build_example(
    model: PersonaModel,
    conversation: Conversation,
    *,
    inoculation_prompt: str | None = None,
    max_len: int = 256,
    train_on_eos: bool = True,
) -> TrainExample:
    """Tokenize one conversation for training (see :mod:`persona_vectors.finetune` for what is labelled).

    The ids are ``tokens(prompt rendered with the generation prompt) + tokens(response) [+ end of turn]``:
    exactly what the model sees when it generates that response, as in :func:`persona_vectors.record.record`.
    """
    msgs = training_messages(conversation, inoculation_prompt)
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError("Training conversations must end with an assistant message")
    response = msgs[-1]["content"]
    if not response.strip():
        raise ValueError("Training conversations need a non-empty final assistant message")
    prompt_text = model.chat_text(msgs[:-1], add_generation_prompt=True)
    p = model.text_ids(prompt_text)
    r = model.response_ids(response)  # special-token strings inside a training answer stay plain text
    if train_on_eos:
        r += _end_of_turn_ids(model, msgs, prompt_text, response)
    ids = p + r
    labels = [-100] * len(p) + r
    truncated = len(ids) > max_len
    if truncated:
        ids, labels = ids[:max_len], labels[:max_len]
    return TrainExample(tuple(int(i) for i in ids), tuple(int(x) for x in labels), len(p), truncated)


@dataclass
class Batch:
    """A right-padded training batch. ``keep``: positions whose logits predict a labelled token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    keep: torch.Tensor
    n_tokens: int


def collate(examples: Sequence[TrainExample], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Right-pad examples into a :class:`Batch` (position ids ignore padding)."""
    if not examples:
        raise ValueError("Empty batch")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), int(pad_id), dtype=torch.long)
    lab = torch.full((len(examples), width), -100, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        lab[i, :n] = torch.tensor(e.labels)
        att[i, :n] = 1
    pos = (att.cumsum(-1) - 1).clamp_min(0)
    target = lab[:, 1:] != -100
    keep = torch.nonzero(target.any(0)).reshape(-1)
    n_tok = int(target.sum())
    return Batch(ids.to(device), att.to(device), pos.to(device), lab.to(device), keep.to(device), n_tok)
