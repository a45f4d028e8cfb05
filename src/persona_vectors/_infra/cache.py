"""The one cache root: every disk cache of the library (dequantized weights, source hashes, generations,
activations, vectors, LLM-judge verdicts) lives under :func:`cache_root`."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PERSONA_VECTORS_CACHE"


def cache_root() -> Path:
    """The library's user cache directory; ``$PERSONA_VECTORS_CACHE`` overrides it (read at every call)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("persona_vectors"))
