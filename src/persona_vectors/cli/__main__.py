"""``python -m persona_vectors.cli``: the same command line as the ``persona-vectors`` console script."""

from __future__ import annotations

from . import main

main()
