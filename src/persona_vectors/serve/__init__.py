"""``persona-vectors serve``: an OpenAI-compatible HTTP server with per-request steering and a steered-chat page.

Needs the ``serve`` extra (``pip install persona-vectors[serve]``: FastAPI and uvicorn); ``import
persona_vectors`` never imports this package. See docs/serve.md.

>>> from persona_vectors.serve import create_app, serve_forever   # doctest: +SKIP
>>> serve_forever(create_app(model, vectors_dir="vectors/"), port=8000)
>>> with serve_in_background(create_app(model)) as server:   # doctest: +SKIP
...     print(server.url)                                       # a free loopback port
"""

from __future__ import annotations

from typing import Any

from .app import create_app, error_response
from .background import BackgroundServer, serve_in_background
from .schema import Limits, RequestError, SteeringItem


def serve_forever(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted (binds to 127.0.0.1 unless told otherwise)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["BackgroundServer", "Limits", "RequestError", "SteeringItem", "create_app", "error_response",
           "serve_forever", "serve_in_background"]
