"""Plotly figure factories: structure of the persona map, slider, hover, trajectories, charts, write_html."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from typer.testing import CliRunner

from persona_vectors import plotting
from persona_vectors.cli import app
from persona_vectors.plotting import (
    add_trajectory,
    cosine_heatmap,
    identity_vs_t,
    map_from_vectors,
    overlay_results,
    persona_map,
    share_vs_alpha,
    trajectory,
    variance_explained,
    write_html,
)
from persona_vectors.space import PersonaSpace, synthetic_role_vectors

LAYERS = (2, 5, 9)
CATS = ("animal", "historical_figure", "ai_robot", "object_concept", "supernatural")


@pytest.fixture(scope="module")
def roles():
    names = [f"{c}_{i}" for c in CATS for i in range(8)]
    names[8] = "adolf_hitler"  # a highlighted persona (category historical_figure)
    cats = {n: c for c in CATS for n in names if n.startswith(c)}
    cats["adolf_hitler"] = "historical_figure"
    vecs = synthetic_role_vectors(names, cats, layers=LAYERS, d_model=24, seed=3, include_assistant=True)
    cats["ai_assistant"] = "assistant"
    return vecs, cats


@pytest.fixture(scope="module")
def spaces(roles):
    vecs, _ = roles
    return {L: PersonaSpace().fit(vecs, site=L) for L in LAYERS}


def role_traces(fig, layer=None):
    return [t for t in fig.data if t.meta and t.meta.get("kind") == "roles" and (layer is None or t.meta["layer"] == layer)]


def test_persona_map_traces_per_category_and_layer(roles, spaces):
    vecs, cats = roles
    fig = persona_map(spaces, cats)
    assert isinstance(fig, go.Figure)
    n_cats = len(set(cats.values()))
    for L in LAYERS:
        trs = role_traces(fig, L)
        assert len(trs) == n_cats  # one trace per category → the legend filters categories
        assert sorted(t.name for t in trs) == sorted(set(cats.values()))
        assert sum(len(t.x) for t in trs) == len(vecs)
        for t in trs:  # every point in its category's trace
            assert {cats[n] for n in t.meta["names"]} == {t.name}
    # only the first layer is visible initially
    assert all(t.visible for t in role_traces(fig, LAYERS[0]))
    assert not any(t.visible for t in role_traces(fig, LAYERS[1]))
    # same category, same colour, on every layer
    col = {}
    for t in role_traces(fig):
        assert col.setdefault(t.name, t.marker.color) == t.marker.color


def test_slider_steps_switch_layers(roles, spaces):
    _, cats = roles
    fig = persona_map(spaces, cats)
    (slider,) = fig.layout.sliders
    assert len(slider.steps) == len(LAYERS)
    assert [s.label for s in slider.steps] == [str(L) for L in LAYERS]
    for step, L in zip(slider.steps, LAYERS):
        assert step.method == "update"
        vis = step.args[0]["visible"]
        assert len(vis) == len(fig.data)
        for t, v in zip(fig.data, vis):
            assert v == (t.meta["layer"] == L)
        assert f"resid_post.{L}" in step.args[1]["title.text"]
        assert step.args[1]["xaxis.title.text"].startswith("PC1 (")
    single = persona_map(spaces[5], cats)
    assert not single.layout.sliders and len(role_traces(single)) == len(set(cats.values()))


def test_hover_and_highlight(roles, spaces):
    _, cats = roles
    fig = persona_map(spaces, cats, hover={"animal_1": "I <am> a cat & I purr " + "x" * 500})
    for t in role_traces(fig):
        assert "%{customdata[0]}" in t.hovertemplate and "%{customdata[1]}" in t.hovertemplate
        for name, cd in zip(t.meta["names"], t.customdata):
            assert cd[0] == name and cd[1] == t.name
    (animal,) = [t for t in role_traces(fig, 2) if t.name == "animal"]
    sample = animal.customdata[list(animal.meta["names"]).index("animal_1")][2]
    assert "&lt;am&gt;" in sample and "&amp;" in sample and len(sample) < 420  # escaped, truncated
    (hist,) = [t for t in role_traces(fig, 2) if t.name == "historical_figure"]
    i = list(hist.meta["names"]).index("adolf_hitler")
    assert hist.marker.size[i] > hist.marker.size[0] and hist.text[i] == "adolf_hitler"
    assert hist.mode == "markers+text"
    assert hist.marker.size[0] == min(hist.marker.size)  # legend shows a plain marker
    (asst,) = [t for t in role_traces(fig, 2) if t.name == "assistant"]
    assert list(asst.text) == ["ai_assistant"]


def test_assistant_axis_line_through_origin(roles):
    vecs, cats = roles
    fig, spaces = map_from_vectors(vecs, categories=cats)
    axes = [t for t in fig.data if t.meta.get("kind") == "axis"]
    assert len(axes) == len(LAYERS)
    for t in axes:
        assert t.x[0] == pytest.approx(-t.x[1]) and t.y[0] == pytest.approx(-t.y[1])
    # PC1 oriented so the axis projects positively (anchor), and the arrow annotation points that way
    for L, sp in spaces.items():
        a = plotting.assistant_axis(vecs, [L])[L]
        assert sp.axis_alignment(a)[0] > 0
    step_ann = fig.layout.sliders[0].steps[1].args[1]["annotations"]
    assert any("assistant axis" in a.get("text", "") for a in step_ann)


def test_axis_from_a_persona_vector(roles):
    from persona_vectors import VectorMismatchError

    vecs, cats = roles
    ax = vecs["ai_robot_0"] * -1.0
    fig, spaces = map_from_vectors(vecs, categories=cats, axis=ax)
    for L, sp in spaces.items():
        assert sp.axis_alignment(ax[L].numpy())[0] > 0
    assert sum(t.meta.get("kind") == "axis" for t in fig.data) == len(LAYERS)
    alien = synthetic_role_vectors(["q"], {}, layers=LAYERS, d_model=24, seed=42)["q"]
    with pytest.raises(VectorMismatchError):
        map_from_vectors(vecs, categories=cats, axis=alien)


def test_dims_3(roles, spaces):
    _, cats = roles
    fig = persona_map(spaces, cats, dims=3, axis={L: np.ones(24) for L in LAYERS})
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    assert len(fig.layout.sliders[0].steps) == len(LAYERS)
    assert "scene.zaxis.title.text" in fig.layout.sliders[0].steps[0].args[1]
    with pytest.raises(ValueError, match="dims"):
        persona_map(spaces, cats, dims=4)


def test_trajectory_follows_slider(roles, spaces):
    vecs, cats = roles
    fig = persona_map(spaces, cats)
    n = len(fig.data)
    pts = {f"α={a}": vecs["animal_2"][5].numpy() * a for a in (0.0, 0.5, 1.0)}
    add_trajectory(fig, spaces[5], pts, name="sweep")
    assert len(fig.data) == n + 1
    tr = fig.data[-1]
    assert tr.meta == {"layer": 5, "kind": "trajectory"} and list(tr.text) == list(pts)
    np.testing.assert_allclose([tr.x[2], tr.y[2]], spaces[5].transform(pts["α=1.0"])[:2], atol=1e-6)
    steps = fig.layout.sliders[0].steps
    assert [s.args[0]["visible"][-1] for s in steps] == [L == 5 for L in LAYERS]
    assert tr.visible is False  # layer 2 is shown first
    t2 = trajectory(spaces[2], [np.zeros(24), np.ones(24)], labels=["a", "b"], name="x")
    assert isinstance(t2, go.Scatter) and len(t2.x) == 2


def test_overlay_results(roles):
    vecs, cats = roles
    fig, spaces = map_from_vectors(vecs, [5, 9], categories=cats)
    n = len(fig.data)
    d = 24
    rows = [{"alpha": a, "condition": "steer", "mean_activation": {"resid_post.5": [a] * d, "9": [a] * d}} for a in (2, 0, 1)]
    rows += [{"alpha": 1, "condition": "bad", "mean_activation": [0.0] * 3, "layer": 5}]
    notes = overlay_results(fig, spaces, rows)
    assert len(fig.data) == n + 2
    assert any("skipped 1" in x for x in notes)
    tr = fig.data[-2]
    assert list(tr.text) == ["α=0", "α=1", "α=2"]  # sorted by alpha
    (note,) = overlay_results(fig, spaces, [{"alpha": 1, "share": 0.3}])
    assert note.startswith("no trajectory: none of the 1 result rows has a mean_activation field")
    assert "record_activations = true" in note  # says how to get one


def test_cosine_heatmap_and_variance(roles, spaces):
    vecs, cats = roles
    fig = cosine_heatmap(vecs, 5, categories=cats)
    z = np.array(fig.data[0].z)
    assert z.shape == (len(vecs), len(vecs))
    np.testing.assert_allclose(np.diag(z), 1.0, atol=1e-6)
    np.testing.assert_allclose(z, z.T, atol=1e-9)
    assert list(fig.data[0].x)[0].startswith("ai_robot")  # sorted by category
    v1 = variance_explained(spaces[5])
    assert [t.type for t in v1.data] == ["bar", "scatter"]
    assert v1.data[1].y[-1] == pytest.approx(spaces[5].explained_variance_ratio_.sum())
    v2 = variance_explained(spaces)
    assert len(v2.data) == 3 + 1 and list(v2.data[0].x) == list(LAYERS)


def test_share_vs_alpha_and_identity_vs_t():
    rows = [dict(alpha=a, share=0.1 * a, lo=0.08 * a, hi=0.12 * a, condition=c) for c in ("hitler", "stalin")
            for a in (0, 1, 2, 4)]
    rows += [dict(alpha=None, share=0.05, lo=0.02, hi=0.08, condition="random control")]
    rows += [dict(alpha=a, share=0.05, lo=0.01, hi=0.09, condition="shuffled control") for a in (0, 4)]
    fig = share_vs_alpha(rows, "Hitler share")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert sorted(t.name for t in lines) == ["hitler", "shuffled control", "stalin"]
    assert len(bands) == 3
    assert [t for t in lines if t.name == "shuffled control"][0].line.dash == "dash"
    assert list(lines[0].x) == [0, 1, 2, 4]
    assert len(fig.layout.shapes) == 2  # the single-row control: band + line across the plot
    idt = identity_vs_t([dict(t=t, identity=t / 4, lo=0, hi=1, condition="ckpt") for t in range(5)])
    assert idt.data[-1].name == "ckpt" and idt.layout.yaxis.tickformat == ".0%"
    with pytest.raises(ValueError):
        share_vs_alpha([])


def test_write_html_self_contained_and_atomic(tmp_path, roles, spaces, monkeypatch):
    _, cats = roles
    fig = persona_map(spaces, cats)
    out = write_html(fig, tmp_path / "sub" / "map.html")
    text = out.read_text()
    assert text.lstrip().lower().startswith("<html") or text.lstrip().lower().startswith("<!doctype")
    assert not re.search(r"<script[^>]*src=[\"']?(https?:)?//", text, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)  # no external script of any kind
    assert "MathJaxConfig: 'local'" in text  # plotly's own flag: never fetch MathJax
    assert "https://" not in text.split("</script>")[-2].split("newPlot")[-1]  # the figure script loads nothing
    assert len(text) > 1_000_000  # plotly.js inlined
    assert '"displaylogo": false' in text
    assert os.listdir(out.parent) == ["map.html"]
    # a failing write leaves the previous file intact and no temp files behind
    before = out.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)  # the atomic write in plotting.output goes through os.replace
    with pytest.raises(OSError):
        write_html(go.Figure(), out)
    assert out.read_bytes() == before
    assert os.listdir(out.parent) == ["map.html"]


def test_cli_map(tmp_path, roles):
    vecs, _ = roles
    runner = CliRunner()
    for n in list(vecs)[:12]:
        vecs[n].save(tmp_path / "roles" / n)
    rows = [{"alpha": a, "mean_activation": {"5": [float(a)] * 24}} for a in (0, 1)]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = runner.invoke(app, ["map", "--vectors", str(tmp_path / "roles"), "--layer", "5", "--layer", "9",
                              "--results", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "m.html")])
    assert res.exit_code == 0, res.output
    assert "trajectory" in res.output and (tmp_path / "m.html").stat().st_size > 1_000_000
    res = runner.invoke(app, ["map", "--vectors", str(tmp_path / "roles"), "--results", str(tmp_path / "m.html"),
                              "--out", str(tmp_path / "m2.html")])
    assert res.exit_code == 2 and "not valid JSON" in res.output
    # mixed models → one line, exit 2
    other = synthetic_role_vectors(["x", "y"], {}, layers=LAYERS, d_model=24, seed=9)["x"]
    other.save(tmp_path / "roles" / "zz_other")
    res = runner.invoke(app, ["map", "--vectors", str(tmp_path / "roles"), "--out", str(tmp_path / "m3.html")])
    assert res.exit_code == 2 and "different models" in res.output and "Traceback" not in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["map", "--vectors", str(tmp_path / "empty"), "--out", str(tmp_path / "m4.html")])
    assert res.exit_code == 2 and "no saved role vectors" in res.output
    res = runner.invoke(app, ["map", "--vectors", str(tmp_path / "roles"), "--demo-synthetic",
                              "--out", str(tmp_path / "m5.html")])
    assert res.exit_code == 2 and "at most one" in res.output


@pytest.mark.slow
def test_cli_map_builds_role_vectors_from_the_model(tmp_path, smol, monkeypatch):
    """No --vectors: the command builds role vectors itself (cached), maps them and can save them."""
    from persona_vectors import cli

    monkeypatch.setattr(cli.base, "load_model_arg", lambda model, device="cpu", **kw: smol)
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path / "cache"))
    roles = ["ghost", "pirate_captain", "librarian"]
    base = ["map", "--questions", "1", "--layer", "12"]
    for r in roles:
        base += ["--role", r]
    # a cold cache: the default is a prompt-only first draw, and both the command and the map say so
    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "first.html")])
    assert res.exit_code == 0, res.output
    assert "first draw:" in res.output and "--answers" in res.output and "3 roles" in res.output
    first = (tmp_path / "first.html").read_text()
    assert "first draw from the prompts alone" in first and "Q: " not in first
    # --answers generates (and caches) the answers and draws the answer-based map
    res = CliRunner().invoke(app, base + ["--answers", "--save-vectors", str(tmp_path / "saved"),
                                          "--out", str(tmp_path / "built.html")])
    assert res.exit_code == 0, res.output
    assert "3 roles" in res.output and "layers 12" in res.output and "first draw" not in res.output
    text = (tmp_path / "built.html").read_text()
    assert "pirate_captain" in text and "Q: " in text and "first draw" not in text  # hover carries a sample answer
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(roles + ["assistant"])
    assert any((tmp_path / "cache").rglob("*")), "answers/activations were not cached"
    # with every answer cached, the default is the answer route
    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "again.html")])
    assert res.exit_code == 0 and "first draw" not in res.output, res.output
    assert "Q: " in (tmp_path / "again.html").read_text()
    res = CliRunner().invoke(app, base + ["--answers", "--prompt-only", "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "at most one of --prompt-only and --answers" in res.output


def test_cli_map_demo(tmp_path):
    res = CliRunner().invoke(app, ["map", "--demo-synthetic", "--dims", "3", "--out", str(tmp_path / "d.html")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "d.html").read_text()
    assert "SYNTHETIC" in text and "scatter3d" in text


def test_map_from_vectors_layer_errors(roles):
    vecs, cats = roles
    with pytest.raises(ValueError, match="common layers"):
        map_from_vectors(vecs, [3], categories=cats)
    with pytest.raises(ValueError, match="at least 2"):
        map_from_vectors({"a": vecs["animal_0"]})


def test_catalogue_categories():
    c = plotting.catalogue_categories(["adolf_hitler", "ghost", "ai_assistant", "not_a_role_xyz"])
    assert c == {"adolf_hitler": "historical_figure", "ghost": "supernatural", "ai_assistant": "assistant",
                 "not_a_role_xyz": "other"}
    assert torch.is_tensor(torch.zeros(1))
