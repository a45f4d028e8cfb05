"""Experiment charts: cosine heatmaps, variance explained, and lines with confidence bands.

:func:`line_with_bands` is the shared shape of :func:`share_vs_alpha` (label shares against steering
strength) and :func:`identity_vs_t` (identity read-outs along a mixing path).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np
import plotly.graph_objects as go

from ..space import PersonaSpace, role_matrix
from ..vector import PersonaVector
from ._common import _PALETTE, _as_spaces

__all__ = [
    "cosine_heatmap",
    "identity_vs_t",
    "line_with_bands",
    "share_vs_alpha",
    "variance_explained",
]


def cosine_heatmap(
    vectors: Mapping[str, PersonaVector],
    site: Any = None,
    *,
    categories: Mapping[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Pairwise cosine similarity of the vectors at ``site`` (sorted by category when given)."""
    names, X = role_matrix(vectors, site)
    if categories:
        order = sorted(range(len(names)), key=lambda i: (categories.get(names[i], "other"), names[i]))
        names = [names[i] for i in order]
        X = X[order]
    n = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(n == 0):
        raise ValueError("A zero vector has no cosine similarity; drop it")
    U = X / n
    C = np.clip(U @ U.T, -1.0, 1.0)
    from ..space import _resolve_site

    s = _resolve_site(vectors, site)
    fig = go.Figure(go.Heatmap(z=C, x=names, y=names, zmin=-1, zmax=1, zmid=0, colorscale="RdBu_r",
                               colorbar=dict(title=dict(text="cos")),
                               hovertemplate="%{y} · %{x}<br>cos = %{z:.3f}<extra></extra>"))
    side = max(420, min(1400, 16 * len(names) + 200))
    fig.update_layout(template="plotly_white", title=dict(text=title or f"Cosine similarity at {s}"),
                      width=side + 80, height=side, yaxis=dict(autorange="reversed"))
    return fig


def variance_explained(space: PersonaSpace | Mapping[int, PersonaSpace], *, title: str = "Variance explained") -> go.Figure:
    """One space: bars per component plus the cumulative line. ``{layer: space}``: one line per component."""
    fig = go.Figure()
    if isinstance(space, PersonaSpace):
        r = space.explained_variance_ratio_
        xs = [f"PC{i + 1}" for i in range(len(r))]
        fig.add_trace(go.Bar(x=xs, y=r, name="per component", hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
        fig.add_trace(go.Scatter(x=xs, y=np.cumsum(r), name="cumulative", mode="lines+markers",
                                 hovertemplate="≤%{x}: %{y:.1%}<extra></extra>"))
        fig.update_layout(xaxis_title="component")
    else:
        spaces = _as_spaces(space)
        layers = list(spaces)
        k = max(sp.n_components_ for sp in spaces.values())
        for i in range(k):
            ys = [sp.explained_variance_ratio_[i] if i < sp.n_components_ else None for sp in spaces.values()]
            fig.add_trace(go.Scatter(x=layers, y=ys, name=f"PC{i + 1}", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=layers, y=[float(np.sum(sp.explained_variance_ratio_)) for sp in spaces.values()],
                                 name=f"PC1..{k} cumulative", mode="lines+markers", line=dict(dash="dash", color="#333")))
        fig.update_layout(xaxis_title="layer")
    fig.update_layout(template="plotly_white", title=dict(text=title), yaxis=dict(title=dict(text="share of variance"),
                      tickformat=".0%", rangemode="tozero"))
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def line_with_bands(
    rows: Iterable[Mapping[str, Any]],
    x: str,
    y: str,
    *,
    lo: str = "lo",
    hi: str = "hi",
    group: str = "condition",
    controls: Iterable[str] | None = None,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
    percent: bool = False,
) -> go.Figure:
    """Generic lines (one per ``group`` value) with shaded ``[lo, hi]`` bands.

    Control groups (``controls``; default: names containing "control", "random" or "baseline") are drawn
    grey and dashed; a control with a single row (or no ``x``) becomes a horizontal band across the plot.
    """
    data = [dict(r) for r in rows]
    if not data:
        raise ValueError("No rows to plot")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in data:
        if y not in r:
            raise KeyError(f"Row {r} has no {y!r} field")
        groups.setdefault(str(r.get(group, y)), []).append(r)
    if controls is None:
        ctrl = {g for g in groups if re.search(r"control|random|baseline", g, re.I)}
    else:
        ctrl = set(controls)
    fig = go.Figure()
    ci = 0
    hlines: list[tuple[str, dict[str, Any]]] = []
    for g, rs in groups.items():
        is_ctrl = g in ctrl
        if is_ctrl and (len(rs) == 1 or all(r.get(x) is None for r in rs)):
            hlines.append((g, rs[0]))
            continue
        rs = sorted((r for r in rs if r.get(x) is not None), key=lambda r: float(r[x]))
        xs = [float(r[x]) for r in rs]
        ys = [float(r[y]) for r in rs]
        color = "#7f7f7f" if is_ctrl else _PALETTE[ci % len(_PALETTE)]
        if not is_ctrl:
            ci += 1
        if all(lo in r and hi in r and r[lo] is not None and r[hi] is not None for r in rs):
            los = [float(r[lo]) for r in rs]
            his = [float(r[hi]) for r in rs]
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=his + los[::-1], fill="toself", fillcolor=_rgba(color, 0.18),
                                     line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=g,
                                     name=f"{g} interval"))
        fig.add_trace(go.Scatter(x=xs, y=ys, name=g, legendgroup=g, mode="lines+markers",
                                 line=dict(color=color, dash="dash" if is_ctrl else "solid", width=2),
                                 marker=dict(size=6, color=color)))
    for g, r in hlines:
        v = float(r[y])
        if r.get(lo) is not None and r.get(hi) is not None:
            fig.add_hrect(y0=float(r[lo]), y1=float(r[hi]), fillcolor="rgba(127,127,127,0.15)", line_width=0)
        fig.add_hline(y=v, line=dict(color="#7f7f7f", dash="dot", width=2),
                      annotation_text=g, annotation_position="top left")
    fig.update_layout(template="plotly_white", title=dict(text=title), hovermode="x unified",
                      xaxis=dict(title=dict(text=xlabel or x)),
                      yaxis=dict(title=dict(text=ylabel or y), tickformat=".0%" if percent else None))
    return fig


def share_vs_alpha(
    rows: Iterable[Mapping[str, Any]],
    label: str = "share",
    *,
    controls: Iterable[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Share (with ``lo``/``hi`` interval) vs steering strength ``alpha``, one line per ``condition``."""
    return line_with_bands(rows, "alpha", "share", controls=controls, title=title or f"{label} vs α",
                           xlabel="steering strength α", ylabel=label, percent=True)


def identity_vs_t(
    rows: Iterable[Mapping[str, Any]],
    *,
    y: str | None = None,
    label: str = "identity",
    controls: Iterable[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """A quantity (``identity``/``share``/``value`` field, or ``y=``) vs ``t`` (step, checkpoint, interpolation)."""
    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("No rows to plot")
    if y is None:
        y = next((k for k in ("identity", "share", "value", "score") if k in rows[0]), None)
        if y is None:
            raise KeyError("Rows need an 'identity', 'share', 'value' or 'score' field (or pass y=)")
    vals = [float(r[y]) for r in rows if r.get(y) is not None]
    percent = bool(vals) and all(0.0 <= v <= 1.0 for v in vals) and y in ("share", "identity")
    return line_with_bands(rows, "t", y, controls=controls, title=title or f"{label} vs t", xlabel="t",
                           ylabel=label, percent=percent)
