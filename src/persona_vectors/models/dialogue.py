"""The conversation format for models without a chat template (base models such as Gemma 3 270M).

A conversation is rendered as a plain-text dialogue::

    {system content}            <- only when there is a non-empty system message (no default: a base model
                                   has no built-in assistant persona, so "none" and "model default" coincide)
    <blank line>
    User: {user content}
    Assistant: {assistant content}
    User: ...
    Assistant:                  <- the generation prompt

Every turn ends with a newline. The model's answer follows ``"Assistant:"`` after one space, so the *response*
positions (what steering with ``positions="response"``, response read-outs and teacher-forced scoring use) are
exactly the tokens of ``" " + content``: :data:`RESPONSE_LEAD` is that space, the same text the model writes
itself when it generates after the prompt. Generation stops at the end-of-sequence token or when the model
starts the next turn (:data:`STOP_STRINGS`); :func:`cut_at_stop` removes such a turn from the tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

#: Speaker labels of the plain dialogue.
USER, ASSISTANT = "User:", "Assistant:"
#: What separates ``"Assistant:"`` from the answer's content (part of the response tokens).
RESPONSE_LEAD = " "
#: Where a generated answer ends when the model goes on to write the next turn itself.
STOP_STRINGS: tuple[str, ...] = ("\n" + USER, "\n" + ASSISTANT)

_LABELS = {"user": USER, "assistant": ASSISTANT}


def render_plain_dialogue(messages: Sequence[Any], add_generation_prompt: bool = True) -> str:
    """Render chat messages as the plain-text dialogue described in this module's docstring.

    A system message is allowed only first (it becomes the preamble); roles other than system/user/assistant
    raise with the list of roles the format knows.
    """
    out: list[str] = []
    for i, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if role == "system":
            if i != 0:
                raise ValueError("The plain-dialogue format takes a system message only as the first message")
            if content:  # an empty system message (the catalogue's "none" condition) adds nothing
                out.append(f"{content}\n\n")
        elif role in _LABELS:
            out.append(f"{_LABELS[role]}{RESPONSE_LEAD}{content}\n")
        else:
            raise ValueError(f"Unknown chat role {role!r} for the plain-dialogue format: use system, user or assistant")
    if add_generation_prompt:
        out.append(ASSISTANT)
    return "".join(out)


def cut_at_stop(tokenizer: Any, ids: Sequence[int], stops: Sequence[str] = STOP_STRINGS) -> list[int]:
    """The generated ``ids`` up to (not including) the first token that starts a stop string's text.

    The decoded text is searched for the earliest stop string; the longest token prefix whose text ends at or
    before it is kept (a token straddling the boundary, e.g. ``".\\n"``, is dropped with the stop).
    """
    ids = list(ids)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    hits = [k for k in (text.find(s) for s in stops) if k >= 0]
    if not hits:
        return ids
    cut_at = min(hits)
    keep = 0
    for j in range(1, len(ids) + 1):
        if len(tokenizer.decode(ids[:j], skip_special_tokens=False)) <= cut_at:
            keep = j
        else:
            break
    return ids[:keep]
