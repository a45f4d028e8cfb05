"""The one layer-index convention of the library.

A :class:`Site` names a point in the residual stream: ``Site(layer=L, kind="resid_post")`` is the output
of transformer block ``L`` (0-based), which TransformerLens' bridge exposes as the hook point
``blocks.{L}.hook_out`` (alias ``blocks.{L}.hook_resid_post``). ``resid_pre`` is the block's input,
``blocks.{L}.hook_in`` (alias ``hook_resid_pre``).

Relation to Hugging Face ``output_hidden_states``: ``hidden_states[0]`` is the embedding output and
``hidden_states[L + 1]`` is ``resid_post`` of block ``L`` (so ``resid_pre`` of block ``L`` is
``hidden_states[L]``). Except for the last block: HF applies the final norm to ``hidden_states[-1]``, the
bridge's ``resid_post`` of the last block is before the final norm. Nobody else in the library does
``layer - 1`` arithmetic; they go through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

SiteKind = Literal["resid_post", "resid_pre"]
_HOOK_SUFFIX: dict[str, str] = {"resid_post": "hook_out", "resid_pre": "hook_in"}
_ALIAS_SUFFIX: dict[str, str] = {"resid_post": "hook_resid_post", "resid_pre": "hook_resid_pre"}


@dataclass(frozen=True, order=True)
class Site:
    """A residual-stream read/write point: block ``layer`` (0-based), before or after the block.

    >>> Site(14).hook_name
    'blocks.14.hook_out'
    >>> Site.parse("resid_pre.3")
    Site(layer=3, kind='resid_pre')
    """

    layer: int
    kind: SiteKind = "resid_post"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise ValueError(f"Site layer must be a non-negative int, got {self.layer!r}")
        if self.kind not in _HOOK_SUFFIX:
            raise ValueError(f"Site kind must be one of {sorted(_HOOK_SUFFIX)}, got {self.kind!r}")

    @property
    def hook_name(self) -> str:
        """The TransformerLens bridge hook point name for this site."""
        return f"blocks.{self.layer}.{_HOOK_SUFFIX[self.kind]}"

    @property
    def tl_alias(self) -> str:
        """The HookedTransformer-style alias (``blocks.L.hook_resid_post``)."""
        return f"blocks.{self.layer}.{_ALIAS_SUFFIX[self.kind]}"

    @property
    def hidden_states_index(self) -> int:
        """Index into HF ``output_hidden_states`` holding the same activation (see module docstring)."""
        return self.layer + 1 if self.kind == "resid_post" else self.layer

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}"

    @classmethod
    def parse(cls, text: "str | int | Site") -> "Site":
        """Parse ``14``, ``"14"``, ``"resid_post.14"`` or a TL hook name into a Site."""
        if isinstance(text, Site):
            return text
        if isinstance(text, int):
            return cls(text)
        s = str(text).strip()
        if s.isdigit():
            return cls(int(s))
        if s.startswith("blocks."):
            _, layer, suffix = s.split(".", 2)
            for kind, suf in list(_HOOK_SUFFIX.items()) + list(_ALIAS_SUFFIX.items()):
                if suffix == suf:
                    return cls(int(layer), kind)  # type: ignore[arg-type]
        if "." in s:
            kind, layer = s.rsplit(".", 1)
            if kind in _HOOK_SUFFIX and layer.isdigit():
                return cls(int(layer), kind)  # type: ignore[arg-type]
        raise ValueError(
            f"Cannot parse site {text!r}: use a layer number (14), 'resid_post.14', 'resid_pre.14' "
            "or a hook name such as 'blocks.14.hook_out'"
        )


def as_sites(layers: "Iterable[int | str | Site] | int | str | Site", n_layers: int | None = None) -> tuple[Site, ...]:
    """Normalize a layer spec to a sorted tuple of unique sites, checking range when ``n_layers`` is given.

    ``"all"`` means every block's ``resid_post``.
    """
    if isinstance(layers, str) and layers == "all":
        if n_layers is None:
            raise ValueError("layers='all' needs the model's number of layers")
        return tuple(Site(i) for i in range(n_layers))
    if isinstance(layers, (int, str, Site)):
        layers = [layers]
    sites = tuple(sorted({Site.parse(x) for x in layers}))
    if not sites:
        raise ValueError("No layers given: pass at least one layer, e.g. layers=[14] or layers='all'")
    if n_layers is not None:
        check_sites(sites, n_layers)
    return sites


def check_sites(sites: Sequence[Site], n_layers: int) -> None:
    """Raise a clear error if a site's layer is outside ``[0, n_layers)``."""
    for s in sites:
        if s.layer >= n_layers:
            raise ValueError(
                f"Layer {s.layer} is out of range: this model has {n_layers} layers (valid: 0..{n_layers - 1})"
            )
