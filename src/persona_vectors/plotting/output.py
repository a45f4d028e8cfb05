"""Writing a figure: one self-contained, offline HTML file (plotly.js inlined, no CDN, no MathJax), atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path

import plotly.graph_objects as go

__all__ = [
    "write_html",
]


_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//", re.I)


def write_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as one self-contained offline HTML file (atomic: temp file + ``os.replace``).

    plotly.js is inlined (``include_plotlyjs=True``), MathJax is off, the plotly logo link is hidden; the
    result is checked to load no remote script.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = fig.to_html(include_plotlyjs=True, full_html=True, include_mathjax=False,
                       config={"displaylogo": False, "responsive": True})
    if _REMOTE_SCRIPT.search(text):
        raise RuntimeError("The generated HTML would load a remote script; refusing to write it")
    from .._infra.files import atomic_file

    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
