"""Safe on-disk format for PersonaVectors: ``vector.safetensors`` + ``vector.json``.

- No pickle ever: only safetensors is read; a directory holding ``.pt``/``.bin``/``.pkl`` files instead is
  refused with a message saying how to convert.
- Nothing lost: a save writes exactly two files, ``vector.safetensors`` and ``vector.json``, into the target
  directory and never deletes, moves or changes any other file there. A directory that holds other files but
  no saved vector is refused unless ``overwrite=True`` (``--force`` on the CLI), which writes the two files
  alongside them; a previous vector in the directory is replaced (its two files only) unless
  ``overwrite=False``. See :func:`save_vector`.
- Atomic and concurrent-safe: each file is written to a unique temporary file in the target directory,
  fsynced, and renamed over its final name. Writers hold an exclusive ``flock`` on the target directory
  itself (no lock file) while they swap the two files in, so concurrent saves never interleave; a save
  interrupted by an exception puts the previous tensor back. A reader that finds the pair inconsistent
  (it looked between the two renames) re-reads it under a shared lock, so it gets the old or the new
  vector, never a torn one or a spurious checksum error; if a writer was killed between its two renames,
  the reader finds the previous tensor the writer had hard-linked aside and still returns the old vector.
- Verified on load: the JSON schema (every field's type), the safetensors file's sha256 recorded in the
  JSON, finite values, d_model and the number of sites, and — when a model is given — the weight fingerprint
  (override with ``allow_other_model=True``). Every problem raises :class:`VectorFileError` with a one-line
  message naming the file and the fix; loading never writes anything.

This module is the format's public face; the machinery lives in :mod:`persona_vectors._vector_file`, below
:mod:`persona_vectors.vector`, so ``PersonaVector.save``/``load`` need no import of this module (no cycle).
``atomic_file`` is re-exported from :mod:`persona_vectors._infra.files`, its home.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._infra.files import atomic_file
from ._vector_file import META_FILE, TENSOR_FILE, VectorFileError, check_save_target, save_vector
from .vector import PersonaVector, check_vector_model

__all__ = ["META_FILE", "TENSOR_FILE", "VectorFileError", "atomic_file", "check_save_target", "check_vector_model",
           "load_vector", "save_vector"]


def load_vector(directory: str | Path, model: Any = None, *, allow_other_model: bool = False) -> PersonaVector:
    """Load a vector saved by :func:`save_vector`, verifying it (see the module docstring).

    Raises :class:`VectorFileError` for a missing, damaged, unsafe (pickle) or inconsistent vector, and
    :class:`~persona_vectors.vector.VectorMismatchError` when ``model`` is given and the vector belongs to
    another model (``allow_other_model=True`` accepts another fingerprint of the same architecture).
    Never writes to the directory.
    """
    return PersonaVector.load(directory, model=model, allow_other_model=allow_other_model)
