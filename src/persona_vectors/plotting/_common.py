"""What every figure shares: the category palette and the per-layer spaces a figure is given."""

from __future__ import annotations

from typing import Iterable, Mapping

from ..space import PersonaSpace

__all__ = [
    "category_colors",
]


_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
)
_OTHER = "#9e9e9e"


def category_colors(categories: Iterable[str]) -> dict[str, str]:
    """A stable colour per category (sorted order; ``other`` is grey)."""
    cats = sorted(set(categories) - {"other"})
    out = {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(cats)}
    out["other"] = _OTHER
    return out


def _as_spaces(space_by_layer: Mapping[int, PersonaSpace] | PersonaSpace) -> dict[int, PersonaSpace]:
    if isinstance(space_by_layer, PersonaSpace):
        layer = space_by_layer.site_.layer if getattr(space_by_layer, "site_", None) is not None else 0
        spaces = {layer: space_by_layer}
    else:
        spaces = {int(k): v for k, v in dict(space_by_layer).items()}
    if not spaces:
        raise ValueError("persona_map needs at least one fitted PersonaSpace")
    for layer, sp in spaces.items():
        if not hasattr(sp, "components_"):
            raise ValueError(f"The PersonaSpace for layer {layer} is not fitted: call .fit(role_vectors) first")
    return dict(sorted(spaces.items()))
