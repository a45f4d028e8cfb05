"""Persona maps: roles in persona space, one trace per category, an assistant axis, a layer slider; paths on them.

:func:`persona_map` draws fitted :class:`~persona_vectors.space.PersonaSpace` coordinates (2-D or 3-D),
highlighted personas larger and labelled; :func:`trajectory` / :func:`add_trajectory` draw a path (a steering
sweep, finetune checkpoints) that follows the slider through the traces' ``meta["layer"]``.
"""

from __future__ import annotations

import html
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..space import PersonaSpace
from ..vector import PersonaVector
from ._common import _as_spaces, category_colors

__all__ = [
    "DEFAULT_HIGHLIGHT",
    "add_trajectory",
    "persona_map",
    "trajectory",
]


DEFAULT_HIGHLIGHT: tuple[str, ...] = ("adolf_hitler", "joseph_stalin", "voyager_1", "ai_assistant", "assistant")


_AXIS_COLOR = "#111111"


def _hover_text(text: str | None, width: int = 60, limit: int = 320) -> str:
    if not text:
        return ""
    t = " ".join(str(text).split())
    if len(t) > limit:
        t = t[: limit - 1].rstrip() + "…"
    return "<br>".join(html.escape(line) for line in textwrap.wrap(t, width))


def _pc_label(space: PersonaSpace, i: int) -> str:
    return f"PC{i + 1} ({100 * space.explained_variance_ratio_[i]:.1f}%)"


def _axis_for_layer(axis: Any, layer: int, space: PersonaSpace) -> np.ndarray | None:
    """The axis direction for ``layer``: from a dict, a PersonaVector (at ``space.site_``) or a single array."""
    if axis is None:
        return None
    if isinstance(axis, Mapping):
        if layer not in axis:
            return None
        v = axis[layer]
    else:
        v = axis
    if isinstance(v, PersonaVector):
        from ..sites import Site

        site = space.site_ if space.site_ is not None else Site(layer)
        if site not in v:
            return None
        return np.asarray(v[site].double().numpy())
    from ..space import _to_numpy

    a = _to_numpy(v).reshape(-1)
    return a


def _visible_masks(fig: go.Figure) -> tuple[list[int], dict[int, list[bool]]]:
    layers: list[int] = []
    for tr in fig.data:
        meta = tr.meta if isinstance(tr.meta, dict) else None
        if meta and "layer" in meta and meta["layer"] not in layers:
            layers.append(meta["layer"])
    masks = {}
    for L in layers:
        mask = []
        for tr in fig.data:
            meta = tr.meta if isinstance(tr.meta, dict) else None
            mask.append(True if not meta or "layer" not in meta else meta["layer"] == L)
        masks[L] = mask
    return layers, masks


def _sync_slider(fig: go.Figure) -> None:
    """Recompute the slider steps' visibility masks from the traces' ``meta["layer"]``."""
    layers, masks = _visible_masks(fig)
    if not fig.layout.sliders:
        return
    slider = fig.layout.sliders[0]
    steps = []
    for st in slider.steps:
        L = int(st.value)
        args = list(st.args)
        args[0] = {"visible": masks.get(L, [False] * len(fig.data))}
        steps.append(dict(label=st.label, value=st.value, method=st.method, args=args))
    fig.layout.sliders[0].steps = steps
    active = int(fig.layout.sliders[0].steps[slider.active or 0].value)
    for tr, vis in zip(fig.data, masks.get(active, [])):
        tr.visible = vis


def persona_map(
    space_by_layer: Mapping[int, PersonaSpace] | PersonaSpace,
    categories: Mapping[str, str] | None = None,
    hover: Mapping[str, str] | None = None,
    highlight: Sequence[str] = DEFAULT_HIGHLIGHT,
    axis: Any = None,
    dims: int = 2,
    *,
    title: str = "Persona space",
    layer: int | None = None,
    axis_name: str = "assistant axis",
    display: Mapping[str, str] | None = None,
) -> go.Figure:
    """Scatter of roles in persona space, coloured by category, with a layer slider for several layers.

    Args:
        space_by_layer: ``{layer: fitted PersonaSpace}`` or one fitted space.
        categories: role name → category (missing names → ``"other"``). One trace per category per layer.
        hover: role name → a sample response, shown in the hover label (escaped, wrapped, truncated).
        highlight: role names drawn with larger outlined markers and a text label.
        axis: the assistant axis: ``{layer: vector}``, a PersonaVector, or one vector (single layer). Drawn as
            a line through the origin along its projection onto the plotted components (2-D: with an arrow).
        dims: 2 or 3.
        layer: the initially shown layer (default: the first).
        display: role name → pretty name for labels/hover (default: the name itself).
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    spaces = _as_spaces(space_by_layer)
    for L, sp in spaces.items():
        if sp.n_components_ < dims:
            raise ValueError(f"The space for layer {L} has {sp.n_components_} components; dims={dims} needs {dims}")
    categories = dict(categories or {})
    hover = dict(hover or {})
    display = dict(display or {})
    hi = set(highlight or ())
    all_cats = sorted({categories.get(n, "other") for sp in spaces.values() for n in sp.names_})
    colors = category_colors(all_cats)
    layers = list(spaces)
    start = layers[0] if layer is None else int(layer)
    if start not in spaces:
        raise ValueError(f"layer={start} is not among the map's layers {layers}")

    fig = go.Figure()
    layout_updates: dict[int, dict[str, Any]] = {}
    for L, sp in spaces.items():
        coords = sp.coords_[:, :dims]
        names = sp.names_
        cat_of = [categories.get(n, "other") for n in names]
        for cat in all_cats:
            idx = [i for i, c in enumerate(cat_of) if c == cat]
            idx.sort(key=lambda i: names[i] in hi)  # highlighted last: the legend shows a plain marker
            if not idx:
                continue
            pts = coords[idx]
            nm = [names[i] for i in idx]
            is_hi = [n in hi for n in nm]
            custom = [[display.get(n, n), cat, _hover_text(hover.get(n))] for n in nm]
            marker = dict(
                color=colors[cat],
                size=[15 if h else 8 for h in is_hi],
                line=dict(color=["#000000" if h else "rgba(255,255,255,0.9)" for h in is_hi],
                          width=[2.5 if h else 0.8 for h in is_hi]),
                opacity=0.9,
            )
            text = [display.get(n, n) if h else "" for n, h in zip(nm, is_hi)]
            hovertemplate = ("<b>%{customdata[0]}</b><br>category: %{customdata[1]}<br>"
                             "%{customdata[2]}<extra></extra>")
            common = dict(name=cat, legendgroup=cat, customdata=custom, hovertemplate=hovertemplate,
                          text=text, mode="markers+text" if any(is_hi) else "markers",
                          meta={"layer": L, "kind": "roles", "names": nm}, visible=(L == start))
            if dims == 2:
                fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], marker=marker, textposition="top center",
                                         textfont=dict(size=12, color="#111"), **common))
            else:
                marker3 = dict(marker, size=[9 if h else 4 for h in is_hi])
                marker3["line"] = dict(color="#000000", width=1)
                fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], marker=marker3,
                                           textfont=dict(size=11, color="#111"), **common))

        annotations: list[dict[str, Any]] = []
        a = _axis_for_layer(axis, L, sp)
        if a is not None:
            proj = sp.project_axis(a)[:dims]
            pn = float(np.linalg.norm(proj))
            cos1 = float(sp.axis_alignment(a)[0])
            if pn > 1e-6:
                u = proj / pn
                radius = float(np.max(np.linalg.norm(coords, axis=1))) or 1.0
                end = u * radius * 1.05
                label = f"{axis_name} (cos with PC1 = {cos1:+.2f})"
                line = dict(color=_AXIS_COLOR, width=2, dash="dash")
                common = dict(name=axis_name, legendgroup="__axis__", hoverinfo="skip", showlegend=True,
                              meta={"layer": L, "kind": "axis"}, visible=(L == start))
                if dims == 2:
                    fig.add_trace(go.Scatter(x=[-end[0], end[0]], y=[-end[1], end[1]], mode="lines", line=line,
                                             **common))
                    annotations.append(dict(x=end[0], y=end[1], ax=0, ay=0, xref="x", yref="y", axref="x",
                                            ayref="y", showarrow=True, arrowhead=3, arrowsize=1.5, arrowwidth=2,
                                            arrowcolor=_AXIS_COLOR, text=""))
                    annotations.append(dict(x=end[0], y=end[1], xref="x", yref="y", showarrow=False, text=label,
                                            font=dict(size=12, color=_AXIS_COLOR), xanchor="left", yanchor="bottom",
                                            bgcolor="rgba(255,255,255,0.7)"))
                else:
                    fig.add_trace(go.Scatter3d(x=[-end[0], end[0]], y=[-end[1], end[1]], z=[-end[2], end[2]],
                                               mode="lines+text", text=["", label], line=dict(color=_AXIS_COLOR, width=5),
                                               **common))
        site = f"{sp.site_}" if sp.site_ is not None else f"layer {L}"
        upd: dict[str, Any] = {"title.text": f"{title} — {site} ({len(sp.names_)} roles)"}
        if dims == 2:
            upd.update({"xaxis.title.text": _pc_label(sp, 0), "yaxis.title.text": _pc_label(sp, 1),
                        "xaxis.autorange": True, "yaxis.autorange": True, "annotations": annotations})
        else:
            upd.update({"scene.xaxis.title.text": _pc_label(sp, 0), "scene.yaxis.title.text": _pc_label(sp, 1),
                        "scene.zaxis.title.text": _pc_label(sp, 2)})
        layout_updates[L] = upd

    fig.update_layout(
        template="plotly_white",
        hovermode="closest",
        legend=dict(title=dict(text="category (click to filter)"), itemsizing="constant"),
        margin=dict(l=60, r=20, t=70, b=90 if len(layers) > 1 else 50),
        height=720,
        meta={"persona_map": {"layers": layers, "dims": dims}},
    )
    s0 = layout_updates[start]
    if dims == 2:
        fig.update_layout(title=dict(text=s0["title.text"]), xaxis=dict(title=dict(text=s0["xaxis.title.text"]),
                          zeroline=True), yaxis=dict(title=dict(text=s0["yaxis.title.text"]), zeroline=True),
                          annotations=s0["annotations"])
    else:
        fig.update_layout(title=dict(text=s0["title.text"]), scene=dict(
            xaxis=dict(title=dict(text=s0["scene.xaxis.title.text"])),
            yaxis=dict(title=dict(text=s0["scene.yaxis.title.text"])),
            zaxis=dict(title=dict(text=s0["scene.zaxis.title.text"]))))
    if len(layers) > 1:
        _, masks = _visible_masks(fig)
        steps = [dict(label=str(L), value=str(L), method="update", args=[{"visible": masks[L]}, layout_updates[L]])
                 for L in layers]
        fig.update_layout(sliders=[dict(active=layers.index(start), steps=steps, currentvalue=dict(prefix="layer: "),
                                        pad=dict(t=40), x=0.02, len=0.96)])
    return fig


def _trajectory_coords(space: PersonaSpace, points: Any, labels: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    if isinstance(points, Mapping):
        labels = [str(k) for k in points] if labels is None else list(labels)
        coords = np.stack([np.atleast_1d(space.transform(v)) for v in points.values()])
    else:
        pts = list(points) if not hasattr(points, "shape") or np.ndim(points) != 2 else points
        coords = np.stack([np.atleast_1d(space.transform(v)) for v in pts])
        labels = [str(i) for i in range(len(coords))] if labels is None else [str(x) for x in labels]
    if len(labels) != len(coords):
        raise ValueError(f"{len(labels)} labels for {len(coords)} trajectory points")
    return coords, list(labels)


def trajectory(
    space: PersonaSpace,
    points: Mapping[str, Any] | Sequence[Any] | np.ndarray,
    labels: Sequence[str] | None = None,
    name: str = "trajectory",
    *,
    dims: int = 2,
    color: str = "#000000",
    layer: int | None = None,
) -> go.Scatter | go.Scatter3d:
    """A path trace: ``points`` (``{label: vector [d]}`` or a list/array of vectors) projected into ``space``."""
    coords, labels = _trajectory_coords(space, points, labels)
    if coords.shape[1] < dims:
        raise ValueError(f"The space has {coords.shape[1]} components; dims={dims}")
    L = layer if layer is not None else (space.site_.layer if space.site_ is not None else 0)
    custom = [[name, lab] for lab in labels]
    common = dict(name=name, mode="lines+markers+text", text=labels, customdata=custom,
                  hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<extra></extra>",
                  meta={"layer": L, "kind": "trajectory"})
    if dims == 2:
        return go.Scatter(x=coords[:, 0], y=coords[:, 1], line=dict(color=color, width=2.5),
                          marker=dict(symbol="diamond", size=9, color=color), textposition="bottom right",
                          textfont=dict(size=10, color=color), **common)
    return go.Scatter3d(x=coords[:, 0], y=coords[:, 1], z=coords[:, 2], line=dict(color=color, width=5),
                        marker=dict(symbol="diamond", size=4, color=color), **common)


def add_trajectory(
    fig: go.Figure,
    space: PersonaSpace,
    points: Mapping[str, Any] | Sequence[Any] | np.ndarray,
    labels: Sequence[str] | None = None,
    name: str = "trajectory",
    *,
    color: str = "#000000",
    layer: int | None = None,
) -> go.Figure:
    """Add a :func:`trajectory` to a :func:`persona_map` figure (in place; returns ``fig``).

    ``space`` must be the space of the map's layer the points belong to; the trace follows the layer slider.
    """
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    dims = int(meta.get("persona_map", {}).get("dims", 3 if any(isinstance(t, go.Scatter3d) for t in fig.data) else 2))
    tr = trajectory(space, points, labels, name, dims=dims, color=color, layer=layer)
    fig.add_trace(tr)
    if fig.layout.sliders:
        _sync_slider(fig)
    return fig
