"""Infrastructure every other module stands on; imports nothing else of the package.

- :mod:`.files` — atomic writes (``atomic_file``), directory locks, fsync helpers.
- :mod:`.jsonl` — the one append-only JSON-lines log and its one torn-line policy.
- :mod:`.cache` — the one cache root (``$PERSONA_VECTORS_CACHE`` honoured) under which every disk cache lives.
- :mod:`.assets` — the registry of models shipped inside packages (the SmolLM2 GGUF, the MiniLM judge), with
  one error type and one message style for a missing one.

Private: the public names stay where users find them (``persona_vectors.io.atomic_file``,
``persona_vectors.models.cache_dir``, ``persona_vectors.models.embedded_gguf_path``).
"""
