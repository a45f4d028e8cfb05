"""Plotly figure factories for persona maps and experiment charts.

Every function returns a :class:`plotly.graph_objects.Figure`; nothing is shown or written except by
:func:`write_html`, which writes one self-contained, offline HTML file (plotly.js inlined, no CDN, no MathJax).

- :func:`persona_map` — roles in persona space (2-D or 3-D), one trace per category (the legend filters),
  highlighted personas drawn larger and labelled, the assistant axis as a line through the origin, and a
  layer slider when several layers are given.
- :func:`trajectory` / :func:`add_trajectory` — a path (steering sweep, finetune checkpoints) on a map.
- :func:`cosine_heatmap`, :func:`variance_explained`, :func:`share_vs_alpha`, :func:`identity_vs_t`.

Every trace of a persona map carries ``meta={"layer": L, "kind": ...}``; the slider's steps are rebuilt
from it, so traces added later (e.g. by :func:`add_trajectory`) follow the slider.
"""

from __future__ import annotations

from ._common import (
    category_colors,
)
from .maps import (
    DEFAULT_HIGHLIGHT,
    add_trajectory,
    persona_map,
    trajectory,
)
from .charts import (
    cosine_heatmap,
    identity_vs_t,
    line_with_bands,
    share_vs_alpha,
    variance_explained,
)
from .from_vectors import (
    ASSISTANT_NAMES,
    assistant_axis,
    catalogue_categories,
    map_from_vectors,
    overlay_results,
)
from .output import (
    write_html,
)

__all__ = [
    "DEFAULT_HIGHLIGHT",
    "add_trajectory",
    "assistant_axis",
    "catalogue_categories",
    "category_colors",
    "cosine_heatmap",
    "identity_vs_t",
    "line_with_bands",
    "map_from_vectors",
    "overlay_results",
    "persona_map",
    "share_vs_alpha",
    "trajectory",
    "variance_explained",
    "write_html",
]
