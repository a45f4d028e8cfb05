"""``python -m persona_vectors.judge``: the cross-validation report or ad-hoc judging (see :func:`main`)."""

from .crossval import main

if __name__ == "__main__":
    raise SystemExit(main())
