"""The vector file format's machinery, below :mod:`persona_vectors.vector` (which it never imports).

Writing and reading the two files ``vector.safetensors`` + ``vector.json`` atomically, under directory locks,
with every check the format promises; the rules are stated in :mod:`persona_vectors.io`, the public face
of this module. It knows a vector only by its attributes (``sites``, ``directions``, ``d_model``,
``provenance.to_json()``) and builds one through the constructors :meth:`PersonaVector.load` passes in, so
:mod:`persona_vectors.vector` can offer ``save``/``load`` without an import cycle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ._infra.files import dir_lock as _dir_lock
from ._infra.files import fsync_dir as _fsync_dir
from ._infra.files import write_temp as _write_temp
from .sites import Site

SCHEMA_VERSION = 1
TENSOR_FILE = "vector.safetensors"
META_FILE = "vector.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".npy")
# our own temporary files (``.tmp``: a save in progress; ``.bak``: the previous tensor during the swap)
_OWN_TEMP = re.compile(r"^\.vector\.(json|safetensors)\.[A-Za-z0-9_-]+\.(tmp|bak)$")
_STALE_TEMP_S = 3600.0  # a temporary file this old belongs to a save that was killed
_SNIFF_LIMIT = 1 << 20  # bytes read to recognize a vector.json / safetensors header as ours
_FORCE_HINT = "overwrite=True"


class VectorFileError(ValueError):
    """A saved vector is missing, corrupt, unsafe or incompatible, or a save target is unsuitable; the
    message names the file and the fix."""


# ------------------------------------------------------------------------------------------------ save
def _sniff_json(path: Path) -> bool:
    """Whether ``path`` looks like a ``vector.json`` written by this library."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_SNIFF_LIMIT + 1)
        if len(raw) > _SNIFF_LIMIT:
            return False
        obj = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and "tensor_sha256" in obj and "schema_version" in obj and "provenance" in obj


def _sniff_tensor(path: Path) -> bool:
    """Whether ``path`` looks like a ``vector.safetensors`` written by this library (its header metadata)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= _SNIFF_LIMIT:
                return False
            header = json.loads(f.read(n))
    except (OSError, ValueError, RecursionError):
        return False
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(meta, dict) and meta.get("format") == "persona_vectors"


def _own_temp_files(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if _OWN_TEMP.match(p.name)]
    except OSError:
        return []


def check_save_target(directory: str | os.PathLike[str], overwrite: bool | None = None, *,
                      fix: str = _FORCE_HINT) -> Path:
    """Raise :class:`VectorFileError` unless a vector may be saved into ``directory`` under ``overwrite``;
    returns the path. Writes nothing, so callers can check before expensive work.

    The rules (``overwrite`` as in :func:`save_vector`):

    - missing, or an empty directory: always allowed;
    - a directory holding a saved vector (possibly with other files): allowed unless ``overwrite=False``
      (only the vector's own two files get replaced);
    - a non-empty directory with no saved vector: allowed only with ``overwrite=True`` (the two files are
      written alongside the others; nothing is deleted);
    - an existing file: always refused.

    ``fix`` is how the message spells the way out (``"--force"`` for the CLI).
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise VectorFileError(f"{target} exists and is not a directory: choose a directory path for the vector")
    if not target.exists():
        return target
    try:
        names = sorted(p.name for p in target.iterdir() if not _OWN_TEMP.match(p.name))
    except OSError as err:
        raise VectorFileError(f"cannot list {target} ({err.strerror or err}): check its permissions") from None
    if not names:
        return target
    is_vector = (META_FILE in names and _sniff_json(target / META_FILE)) or (
        TENSOR_FILE in names and _sniff_tensor(target / TENSOR_FILE))
    others = [n for n in names if n not in (META_FILE, TENSOR_FILE)]
    shown = ", ".join(others[:5] or names[:5]) + (", …" if len(others or names) > 5 else "")
    if overwrite is False:
        what = "a saved vector" if is_vector else f"files ({shown})"
        raise VectorFileError(
            f"{target} already holds {what}: pass {fix} to write the vector there (only {META_FILE} and "
            f"{TENSOR_FILE} are replaced, other files are kept) or choose another directory")
    if not is_vector and overwrite is not True:
        raise VectorFileError(
            f"{target} is not empty ({shown}) and holds no saved vector: choose a new or empty directory, or pass "
            f"{fix} to write {META_FILE} and {TENSOR_FILE} alongside the existing files (nothing is deleted)")
    return target


def _canonical_safetensors(raw: bytes) -> bytes:
    """``raw`` with its JSON header re-written with sorted keys: safetensors writes the header's entries (and the
    ``__metadata__`` map) in a per-process hash order, so the same tensors saved by two processes would differ in
    bytes and in ``tensor_sha256``. The header stays padded to 8 bytes as the format asks; the data is unchanged."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def _encode(vec: Any) -> tuple[bytes, bytes]:
    """The two files' bytes: (safetensors, json); the same vector gives the same bytes in every process."""
    from safetensors.torch import save as st_save

    tensor = _canonical_safetensors(st_save({"directions": vec.directions.float().contiguous().cpu()},
                     metadata={"format": "persona_vectors", "schema_version": str(SCHEMA_VERSION),
                               "sites": ",".join(str(s) for s in vec.sites)}))
    meta = {
        "schema_version": SCHEMA_VERSION,
        "sites": [str(s) for s in vec.sites],
        "d_model": vec.d_model,
        "tensor_sha256": hashlib.sha256(tensor).hexdigest(),
        "provenance": vec.provenance.to_json(),
    }
    try:
        text = json.dumps(meta, indent=2)
    except (TypeError, ValueError) as err:
        raise VectorFileError(
            f"the vector's provenance cannot be written as JSON ({err}): keep provenance.extra to JSON values "
            "(str, numbers, bools, lists, dicts)") from None
    return tensor, text.encode()


def save_vector(vec: Any, directory: str | Path, overwrite: bool | None = None) -> Path:
    """Save ``vec`` as ``directory/vector.safetensors`` + ``directory/vector.json``; returns the directory.

    Never deletes a file it did not write. ``overwrite``:

    - ``None`` (default): write into a new or empty directory, or replace a previous saved vector there
      (its two files only); refuse a non-empty directory that holds no saved vector.
    - ``True``: also write into a non-empty directory that holds no saved vector (other files are kept).
    - ``False``: refuse any non-empty directory.

    The directory is created if missing (with the usual umask permissions). The write is atomic and safe
    against concurrent saves and loads of the same directory (see :mod:`persona_vectors.io`).
    """
    target = check_save_target(directory, overwrite)
    tensor_bytes, meta_bytes = _encode(vec)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise VectorFileError(f"{target} exists and is not a directory: choose a directory path for the vector") from None
    tmp_tensor = _write_temp(target, TENSOR_FILE, tensor_bytes)
    tmp_meta: Path | None = None
    try:
        tmp_meta = _write_temp(target, META_FILE, meta_bytes)
        with _dir_lock(target, exclusive=True) as held:
            check_save_target(target, overwrite)  # again, now that no other save can change the directory
            _swap_in(target, tmp_tensor, tmp_meta)
            if held:
                _remove_stale_temps(target)
        _fsync_dir(target)
    except BaseException:
        for p in (tmp_tensor, tmp_meta):
            if p is not None:
                with contextlib.suppress(OSError):
                    os.unlink(p)
        raise
    return target


def _swap_in(target: Path, tmp_tensor: Path, tmp_meta: Path) -> None:
    """Rename the two temporary files over the vector's files: tensor first, then the JSON that names its
    checksum. The previous tensor is hard-linked aside first, so an exception between the two renames puts
    it back, and a reader can still find it if the process is killed there."""
    tensor, backup = target / TENSOR_FILE, None
    if tensor.exists():
        backup = target / f".{TENSOR_FILE}.{secrets.token_hex(8)}.bak"
        try:
            os.link(tensor, backup)
        except OSError:  # no hard links here: no rollback, the window is two renames wide
            backup = None
    had_tensor = tensor.exists()
    try:
        os.replace(tmp_tensor, tensor)
        try:
            os.replace(tmp_meta, target / META_FILE)
        except BaseException:
            if backup is not None:
                os.replace(backup, tensor)  # the previous vector is whole again
                backup = None
            elif not had_tensor:
                with contextlib.suppress(OSError):
                    os.unlink(tensor)  # ours, just written: leave no tensor without its JSON
            raise
    finally:
        if backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(backup)


def _remove_stale_temps(target: Path) -> None:
    """Under the exclusive lock: delete our own temporary files left by killed saves (backups at once, since
    both files were just replaced; ``.tmp`` files only when old, since another save may be writing one)."""
    now = time.time()
    for p in _own_temp_files(target):
        with contextlib.suppress(OSError):
            if p.name.endswith(".bak") or now - p.stat().st_mtime > _STALE_TEMP_S:
                p.unlink()


# ------------------------------------------------------------------------------------------------ load
def _bad(meta_path: Path, problem: str) -> VectorFileError:
    return VectorFileError(
        f"{meta_path}: {problem}; the file is damaged or was edited by hand: restore it or re-save the vector "
        "with PersonaVector.save")


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as err:
        raise VectorFileError(f"cannot read {path} ({err.strerror or err}): check its permissions") from None


def _recorded_sha(meta_raw: bytes | None) -> Any:
    if meta_raw is None:
        return None
    try:
        obj = json.loads(meta_raw)
    except (ValueError, RecursionError):
        return None
    return obj.get("tensor_sha256") if isinstance(obj, dict) else None


def _consistent(meta_raw: bytes | None, tensor_raw: bytes | None) -> bool:
    return (meta_raw is not None and tensor_raw is not None
            and hashlib.sha256(tensor_raw).hexdigest() == _recorded_sha(meta_raw))


def _read_pair(path: Path) -> tuple[bytes | None, bytes | None]:
    """Both files' bytes, as one consistent pair whenever the directory holds one.

    A first read takes no lock. If the pair does not match (a save swapped the files in between), it is
    read again under a shared lock, which waits for the save to finish; if it still does not match and a
    killed save left the previous tensor aside, that tensor is used when it matches the JSON.
    """
    meta_path, tensor_path = path / META_FILE, path / TENSOR_FILE
    meta_raw, tensor_raw = _read_file(meta_path), _read_file(tensor_path)
    if _consistent(meta_raw, tensor_raw) or (meta_raw is None and tensor_raw is None):
        return meta_raw, tensor_raw
    with _dir_lock(path, exclusive=False) as held:
        for attempt in range(1 if held else 20):  # unlocked: retry while a save may be in its rename window
            if attempt:
                time.sleep(0.005 * attempt)
            meta_raw, tensor_raw = _read_file(meta_path), _read_file(tensor_path)
            if _consistent(meta_raw, tensor_raw):
                return meta_raw, tensor_raw
        want = _recorded_sha(meta_raw)
        for p in _own_temp_files(path):
            if p.name.startswith(f".{TENSOR_FILE}.") and p.name.endswith(".bak"):
                raw = _read_file(p)
                if raw is not None and hashlib.sha256(raw).hexdigest() == want:
                    return meta_raw, raw
    return meta_raw, tensor_raw


def _header_metadata(tensor_raw: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file's header (empty when absent or unreadable)."""
    n = int.from_bytes(tensor_raw[:8], "little")
    try:
        header = json.loads(tensor_raw[8:8 + n]) if 2 <= n <= len(tensor_raw) - 8 else {}
    except (ValueError, RecursionError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_meta(meta_path: Path, meta_raw: bytes, provenance_from_json: Callable[[dict], Any]
                ) -> tuple[list[Site], int, str, Any]:
    """Validate ``vector.json``: (sites, d_model, tensor_sha256, provenance)."""
    try:
        meta = json.loads(meta_raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(meta_path, "not valid UTF-8 JSON") from None
    except ValueError as err:
        raise _bad(meta_path, f"not valid JSON ({err})") from None
    except RecursionError:
        raise _bad(meta_path, "JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise _bad(meta_path, f"expected a JSON object, found a JSON {_json_type(meta)}")
    version = meta.get("schema_version")
    if not _is_int(version):
        raise _bad(meta_path, f"'schema_version' must be an integer, found {_show(version)}")
    if version != SCHEMA_VERSION:
        raise VectorFileError(
            f"{meta_path} has schema_version {version!r}; this library reads {SCHEMA_VERSION}: upgrade persona_vectors"
        )
    missing = [k for k in ("sites", "d_model", "tensor_sha256", "provenance") if k not in meta]
    if missing:
        raise _bad(meta_path, f"missing {', '.join(repr(k) for k in missing)}")
    sha = meta["tensor_sha256"]
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise _bad(meta_path, f"'tensor_sha256' must be 64 lowercase hex digits, found {_show(sha)}")
    d_model = meta["d_model"]
    if not _is_int(d_model) or d_model <= 0:
        raise _bad(meta_path, f"'d_model' must be a positive integer, found {_show(d_model)}")
    raw_sites = meta["sites"]
    if not isinstance(raw_sites, list) or not all(isinstance(s, str) for s in raw_sites):
        raise _bad(meta_path, f"'sites' must be a list of site names like 'resid_post.14', found {_show(raw_sites)}")
    try:
        sites = [Site.parse(s) for s in raw_sites]
    except ValueError as err:
        raise _bad(meta_path, f"bad 'sites' entry ({str(err).splitlines()[0]})") from None
    if len(set(sites)) != len(sites):
        raise _bad(meta_path, "'sites' lists a site twice")
    if sites != sorted(sites):
        raise _bad(meta_path, "'sites' are out of order (a save writes them sorted, aligned with the tensor's rows)")
    prov_raw = meta["provenance"]
    if not isinstance(prov_raw, dict):
        raise _bad(meta_path, f"'provenance' must be a JSON object, found {_show(prov_raw)}")
    try:
        prov = provenance_from_json(prov_raw)
    except (ValueError, TypeError) as err:
        raise _bad(meta_path, f"bad 'provenance' ({str(err).splitlines()[0]})") from None
    if prov.d_model != d_model:
        raise _bad(meta_path, f"'d_model' is {d_model} but 'provenance.d_model' is {prov.d_model}")
    return sites, d_model, sha, prov


def _json_type(x: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null", dict: "object"}.get(
        type(x), "number")


def _show(x: Any) -> str:
    try:
        text = json.dumps(x) if not isinstance(x, float) or x == x else "NaN"
    except (ValueError, TypeError, RecursionError):
        text = f"a JSON {_json_type(x)}"
    return text if len(text) <= 60 else text[:57] + "..."


def read_vector(directory: str | Path, *, build: Callable[[list[Site], torch.Tensor, Any], Any],
                provenance_from_json: Callable[[dict], Any]) -> Any:
    """Read and verify a vector saved by :func:`save_vector` (see :mod:`persona_vectors.io`); ``build(sites,
    directions, provenance)`` makes the vector, ``provenance_from_json`` its provenance. Never writes.

    Raises :class:`VectorFileError` for a missing, damaged, unsafe (pickle) or inconsistent vector.
    """
    from safetensors.torch import load as st_load

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
    meta_raw, tensor_raw = _read_pair(path)
    if meta_raw is None or tensor_raw is None:
        try:
            pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        except OSError:
            pickles = []
        if pickles:
            raise VectorFileError(
                f"{path} holds pickle files ({', '.join(pickles)}) but no {TENSOR_FILE}; persona_vectors never "
                "unpickles: convert with PersonaVector(...).save(dir)"
            )
        raise VectorFileError(f"{path} is not a saved vector: it needs {META_FILE} and {TENSOR_FILE}")
    sites, d_model, sha, prov = _parse_meta(meta_path, meta_raw, provenance_from_json)
    if hashlib.sha256(tensor_raw).hexdigest() != sha:
        raise VectorFileError(f"{tensor_path} does not match the checksum in {META_FILE}: the file is corrupt; re-save it")
    try:
        tensors = st_load(tensor_raw)
    except Exception as err:  # noqa: BLE001 - any failure to parse untrusted bytes is a bad file
        msg = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise VectorFileError(f"{tensor_path} is not a readable safetensors file ({msg}); re-save the vector") from None
    recorded = _header_metadata(tensor_raw).get("sites")
    if isinstance(recorded, str) and recorded != ",".join(str(s) for s in sites):
        raise _bad(meta_path, f"'sites' differ from the sites recorded in {TENSOR_FILE} ({recorded})")
    if set(tensors) != {"directions"}:
        raise VectorFileError(f"{tensor_path} should hold one tensor 'directions', found {sorted(tensors)}; re-save the vector")
    dirs = tensors["directions"]
    if not dirs.is_floating_point():
        raise VectorFileError(f"{tensor_path} holds {dirs.dtype} values, not floats; re-save the vector")
    dirs = dirs.float()
    if not torch.isfinite(dirs).all():
        raise VectorFileError(f"{tensor_path} contains NaN or inf values; re-extract the vector")
    if dirs.ndim != 2 or dirs.shape[1] != d_model or dirs.shape[0] != len(sites):
        raise VectorFileError(
            f"{tensor_path} has shape {tuple(dirs.shape)} but {META_FILE} says {len(sites)} sites × d_model {d_model}; "
            "re-save the vector"
        )
    try:
        return build(sites, dirs, prov)
    except ValueError as err:  # pragma: no cover - everything it checks was checked above
        raise _bad(meta_path, str(err)) from None

