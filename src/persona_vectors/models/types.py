"""Value types shared by the model rooms: prompt/message aliases, :class:`ModelInfo` (what travels into a
vector's provenance), :class:`ChatText` (a rendered chat that remembers its message contents) and the loading
and prompt-length errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

from .._infra.assets import AssetMissingError


Message = Mapping[str, str]
Messages = Sequence[Message]
PromptLike = Union[str, Messages]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says how to fix it."""


class EmbeddedModelMissingError(AssetMissingError, ModelLoadError):
    """The embedded model's package is not installed or its GGUF is missing (an :class:`AssetMissingError`
    that is also a :class:`ModelLoadError`)."""

@dataclass(frozen=True)
class ModelInfo:
    """Metadata that travels into every vector's provenance."""

    model_id: str
    n_layers: int
    d_model: int
    fingerprint: str

class PromptTooLongError(ValueError):
    """A prompt (plus the tokens to generate) does not fit the model's context window.

    Raised before any forward; the message names the token count and the model's context length.
    """

class ChatText(str):
    """A chat rendered by :meth:`PersonaModel.chat_text`: a ``str`` that remembers which parts are message content.

    ``segments`` is ``None`` when no message content contains a special-token string (then the text tokenizes
    safely as a whole, exactly as any string); otherwise a tuple of ``(piece, is_content)`` whose concatenation
    is the text, so :meth:`PersonaModel.text_ids` / :meth:`PersonaModel.encode` can tokenize the contents with
    special tokens split (as plain text) and the template's own pieces normally. String operations (slicing,
    concatenation) return a plain ``str`` and lose this information.
    """

    segments: tuple[tuple[str, bool], ...] | None

    def __new__(cls, text: str, segments: tuple[tuple[str, bool], ...] | None = None) -> "ChatText":
        obj = super().__new__(cls, text)
        obj.segments = segments
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChatText, (str(self), self.segments))
