"""Safe on-disk format for PersonaVectors: ``vector.safetensors`` + ``vector.json``.

- No pickle ever: only safetensors is read; a directory holding ``.pt``/``.bin``/``.pkl`` files instead is
  refused with a message saying how to convert.
- Atomic: both files are written into a temporary sibling directory, fsynced, and swapped in with renames,
  so an interrupted save never leaves a half-written vector under the final name (the previous vector, if
  any, stays intact until the swap).
- Verified on load: JSON schema version, the safetensors file's sha256 recorded in the JSON, finite values,
  d_model, and — when a model is given — the weight fingerprint (override with ``allow_other_model=True``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .sites import Site
from .vector import SCHEMA_VERSION, PersonaVector, Provenance, VectorMismatchError

TENSOR_FILE = "vector.safetensors"
META_FILE = "vector.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".npy")


class VectorFileError(ValueError):
    """A saved vector is missing, corrupt, unsafe or incompatible; the message names the fix."""


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Any:
    """Write a file atomically: yields a temporary sibling path to write; on success it is fsynced and renamed
    over ``path``, on any error (or interrupt) it is deleted and ``path`` keeps its previous content.

    >>> with atomic_file("out.html") as tmp:   # doctest: +SKIP
    ...     tmp.write_text(text)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result gets the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_vector(vec: PersonaVector, directory: str | Path, overwrite: bool = True) -> Path:
    """Save ``vec`` into ``directory`` (created if needed). Returns the directory path."""
    from safetensors.torch import save_file

    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise VectorFileError(f"{target} exists and is not a directory: choose a directory path for the vector")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise VectorFileError(f"{target} already holds files: pass overwrite=True or choose another directory")
    parent = target.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.tmp-"))
    backup: Path | None = None
    try:
        tensor_path = tmp / TENSOR_FILE
        save_file({"directions": vec.directions.float().contiguous().cpu()}, str(tensor_path),
                  metadata={"format": "persona_vectors", "schema_version": str(SCHEMA_VERSION)})
        digest = hashlib.sha256(tensor_path.read_bytes()).hexdigest()
        meta = {
            "schema_version": SCHEMA_VERSION,
            "sites": [str(s) for s in vec.sites],
            "d_model": vec.d_model,
            "tensor_sha256": digest,
            "provenance": vec.provenance.to_json(),
        }
        with open(tmp / META_FILE, "w") as f:
            json.dump(meta, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        with open(tensor_path, "rb+") as f:
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if target.exists():
            backup = parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, backup)
        os.replace(tmp, target)
        _fsync_dir(parent)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None and backup.exists() and not target.exists():
            os.replace(backup, target)  # put the previous vector back under its name
        raise
    return target


def load_vector(directory: str | Path, model: Any = None, *, allow_other_model: bool = False) -> PersonaVector:
    """Load a vector saved by :func:`save_vector`; see the module docstring for the checks."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory)
    if path.is_file():
        if path.suffix in _PICKLE_SUFFIXES:
            raise VectorFileError(
                f"{path} is a pickle-based file; persona_vectors never unpickles. Load it yourself if you trust it "
                "and save it with PersonaVector(...).save(dir)"
            )
        if path.name in (TENSOR_FILE, META_FILE):
            path = path.parent
        else:
            raise VectorFileError(f"{path} is a file: pass the directory that holds {META_FILE} and {TENSOR_FILE}")
    if not path.is_dir():
        raise VectorFileError(f"No vector at {path}: the directory does not exist")
    meta_path, tensor_path = path / META_FILE, path / TENSOR_FILE
    if not meta_path.is_file() or not tensor_path.is_file():
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        if pickles:
            raise VectorFileError(
                f"{path} holds pickle files ({', '.join(pickles)}) but no {TENSOR_FILE}; persona_vectors never "
                "unpickles: convert with PersonaVector(...).save(dir)"
            )
        raise VectorFileError(f"{path} is not a saved vector: it needs {META_FILE} and {TENSOR_FILE}")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise VectorFileError(f"{meta_path} is not valid JSON ({err}); re-save the vector") from None
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise VectorFileError(
            f"{meta_path} has schema_version {version!r}; this library reads {SCHEMA_VERSION}: upgrade persona_vectors"
        )
    raw = tensor_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != meta.get("tensor_sha256"):
        raise VectorFileError(f"{tensor_path} does not match the checksum in {META_FILE}: the file is corrupt; re-save it")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as err:
        raise VectorFileError(f"{tensor_path} is not a readable safetensors file ({err})") from None
    if set(tensors) != {"directions"}:
        raise VectorFileError(f"{tensor_path} should hold one tensor 'directions', found {sorted(tensors)}")
    dirs = tensors["directions"]
    if not torch.isfinite(dirs).all():
        raise VectorFileError(f"{tensor_path} contains NaN or inf values; re-extract the vector")
    d_model = int(meta.get("d_model", -1))
    if dirs.ndim != 2 or dirs.shape[1] != d_model or dirs.shape[0] != len(meta.get("sites", [])):
        raise VectorFileError(
            f"{tensor_path} has shape {tuple(dirs.shape)} but {META_FILE} says {len(meta.get('sites', []))} sites × d_model {d_model}"
        )
    prov = Provenance.from_json(meta["provenance"])
    vec = PersonaVector([Site.parse(s) for s in meta["sites"]], dirs, prov)
    if model is not None:
        check_vector_model(vec, model, allow_other_model=allow_other_model)
    return vec


def check_vector_model(vec: PersonaVector, model: Any, *, allow_other_model: bool = False) -> None:
    """Raise unless ``vec`` was extracted on ``model`` (same d_model always; same fingerprint unless overridden)."""
    info = model.info
    if vec.d_model != info.d_model:
        raise VectorMismatchError(
            f"Vector has d_model={vec.d_model} but model {info.model_id} has d_model={info.d_model}: "
            "it belongs to another architecture"
        )
    for s in vec.sites:
        if s.layer >= info.n_layers:
            raise VectorMismatchError(f"Vector site {s} is out of range for a model with {info.n_layers} layers")
    if vec.provenance.fingerprint != info.fingerprint and not allow_other_model:
        raise VectorMismatchError(
            f"Vector was extracted on {vec.provenance.model_id} (fingerprint {vec.provenance.fingerprint}), "
            f"not on the given model {info.model_id} ({info.fingerprint}); pass allow_other_model=True to use it anyway"
        )
