"""Request bodies of the server (pydantic models) and the limits they are checked against.

Every field error becomes a 400 JSON error naming the field and the fix (see :mod:`.app`). The steering
rules themselves are the library's: each ``steering`` item becomes a :class:`persona_vectors.steer.SteerSpec`
and is checked by :meth:`SteerSpec.validate` (see :mod:`.resolve`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Vector names: a file name without any path separator, dot-dot, or leading dot.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the server answers 400/413/429 past these."""

    max_body_bytes: int = 256 * 1024
    max_tokens: int = 256
    max_n: int = 8
    max_prompt_tokens: int = 1536
    max_steering: int = 4
    max_batch: int = 16
    max_pending: int = 64
    max_stop: int = 4


class RequestError(ValueError):
    """A bad request: ``field`` names the setting, ``message`` says what is wrong and the fix."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class SteeringItem(BaseModel):
    """One steering spec in a request (the JSON schema of an item of ``steering``)."""

    model_config = ConfigDict(extra="forbid")

    vector: str = Field(description="A name from GET /v1/steering/vectors (served directory or catalogue); never a path")
    alpha: float = Field(1.0, description="Coefficient (finite); for cap: the blend, 1 = full cap")
    layers: Optional[list[int]] = Field(None, description="Layers to steer (default: the vector's only layer, "
                                        "else the server's default layer)")
    relative: bool = Field(False, description="alpha in units of the mean residual norm at the layer (add only)")
    operator: str = Field("add", description="A registered operator: add | ablate | cap")
    threshold: Optional[Union[float, str]] = Field(None, description="cap: the projection threshold, or 'auto' "
                                                   "(25th percentile of the model's own assistant answers)")
    cap: str = Field("min", description="cap: 'min' keeps projection >= threshold, 'max' keeps it <= threshold")
    positions: str = Field("all", description="all | prompt | response")

    @field_validator("alpha")
    @classmethod
    def _finite_alpha(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number (NaN and inf are refused), e.g. 4.0")
        return v

    @field_validator("vector")
    @classmethod
    def _name_only(cls, v: str) -> str:
        if not NAME_RE.match(v) or ".." in v:
            raise ValueError(f"{v!r} is not a vector name: pass a name listed by GET /v1/steering/vectors, not a path")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            raise ValueError(f"must be a finite number or 'auto', got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number or 'auto' (NaN and inf are refused)")
        return v


class _Sampling(BaseModel):
    """Fields shared by both endpoints."""

    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    n: int = Field(1, ge=1)
    stream: bool = False
    steering: Optional[list[SteeringItem]] = None
    system: Optional[str] = Field(None, description="Extension: a system prompt (chat only)")

    @field_validator("temperature", "top_p")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def stops(self) -> list[str]:
        """``stop`` as a list of non-empty strings."""
        if self.stop is None:
            return []
        items = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in items if s]

    def new_tokens(self, default: int) -> int:
        """``max_completion_tokens`` or ``max_tokens`` or ``default``."""
        return self.max_completion_tokens or self.max_tokens or default


class ChatMessage(BaseModel):
    """One chat message (string content, or a list of ``{"type": "text", "text": ...}`` parts)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: Union[str, list[dict[str, Any]]]

    def text(self) -> str:
        """The content as one string (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for p in self.content:
            if p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise RequestError("messages.content", "only text parts ({'type': 'text', 'text': ...}) are supported")
            parts.append(p["text"])
        return "".join(parts)


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (the prompt is continued as raw text, no chat template)."""

    prompt: Union[str, list[str]]


def check_limits(req: _Sampling, limits: Limits, default_tokens: int) -> None:
    """Raise :class:`RequestError` for a request past the server's limits."""
    if req.new_tokens(default_tokens) > limits.max_tokens:
        raise RequestError("max_tokens", f"must be <= {limits.max_tokens} on this server, got "
                           f"{req.new_tokens(default_tokens)}: ask for fewer tokens")
    if req.n > limits.max_n:
        raise RequestError("n", f"must be <= {limits.max_n} on this server, got {req.n}: send several requests")
    if len(req.stops()) > limits.max_stop:
        raise RequestError("stop", f"at most {limits.max_stop} stop strings, got {len(req.stops())}")
    if req.steering is not None and len(req.steering) > limits.max_steering:
        raise RequestError("steering", f"at most {limits.max_steering} specs per request, got {len(req.steering)}")


def pydantic_error(err: Any) -> RequestError:
    """The first error of a pydantic ``ValidationError`` as a :class:`RequestError` naming the field."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = "is required"
    elif first.get("type") == "extra_forbidden":
        msg = "is not a known field (see docs/serve.md for the steering schema)"
    return RequestError(loc, msg)
