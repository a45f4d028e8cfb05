"""Sweeps sharded over Ray actors on a local ``ray.init(num_cpus=2)`` cluster (one per module) with the tiny
model: the same rows as the single-process run (greedy), an actor killed mid-run loses and duplicates nothing,
an actor that keeps dying stops the sweep with the cell and the store intact, bad input fails in one line.
Skipped when Ray is not installed (``pip install 'persona-vectors[ray]'``; ``make test`` installs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from conftest import ray_cluster  # noqa: E402

from _ray_helpers import DieAt, DieOnce, save_tiny_checkpoint, tiny_replica  # noqa: E402
from _sweep_child import build  # noqa: E402
from persona_vectors.sweep import JsonlStore, run_sweep  # noqa: E402
from persona_vectors.sweep.distributed import RayUnavailableError, SweepWorkerError, connect  # noqa: E402

# one xdist worker owns the module: its local Ray cluster is module-scoped
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def cluster():
    """The module's local Ray cluster (conftest.ray_cluster)."""
    with ray_cluster():
        yield


@pytest.fixture(scope="module")
def setup(tiny):
    return build(tiny)


@pytest.fixture(scope="module")
def local_rows(setup, tmp_path_factory):
    model, cfg = setup
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    run_sweep(model, cfg, out, progress=False)
    return _by_id(out)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(model, cfg, single-process rows) for a checkpoint directory loaded with load_model: actors reload it from
    ``model.load_args``, the path the CLI takes."""
    from persona_vectors import load_model

    d = tmp_path_factory.mktemp("ckpt")
    save_tiny_checkpoint(d)
    model, cfg = build(load_model(d, progress=False))
    out = tmp_path_factory.mktemp("local-ckpt") / "local.jsonl"
    run_sweep(model, cfg, out, progress=False)
    return model, cfg, _by_id(out)


def _by_id(path: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    ids = [r["row_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicated rows"
    return {r["row_id"]: r for r in rows}


def test_unreachable_address_is_one_line(tmp_path):
    assert not ray.is_initialized()
    with pytest.raises(RayUnavailableError) as err:
        connect("127.0.0.1:1")
    msg = str(err.value)
    assert "\n" not in msg and "127.0.0.1:1" in msg and "ray start --head" in msg


def test_cli_ray_without_cluster_says_where_and_how(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from persona_vectors.cli import app
    from persona_vectors.cli.sweeping import bare_ray_flag

    assert bare_ray_flag(["sweep", "c.toml", "--ray"]) == ["sweep", "c.toml", "--ray", "auto"]
    assert bare_ray_flag(["sweep", "--ray", "c.toml"]) == ["sweep", "--ray", "auto", "c.toml"]
    assert bare_ray_flag(["sweep", "c.toml", "--ray", "10.0.0.5:6379"]) == ["sweep", "c.toml", "--ray", "10.0.0.5:6379"]
    assert bare_ray_flag(["sweep", "c.toml", "--ray", "--actors", "2"])[3] == "auto"
    cfg_path = tmp_path / "s.toml"
    cfg_path.write_text('vectors = {a = "a.safetensors"}\nalphas = [1.0]\nlayers = [1]\nprompts = ["Hi"]\n')
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    for args in (["--ray", "auto"], ["--ray", "127.0.0.1:1"]):
        res = CliRunner().invoke(app, ["sweep", str(cfg_path), *args])
        assert res.exit_code == 2, res.output
        lines = [x for x in res.output.strip().splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.output
        assert "127.0.0.1:1" in lines[0] and "ray start --head" in lines[0]
    res = CliRunner().invoke(app, ["sweep", str(cfg_path), "--actors", "2"])
    assert res.exit_code == 2 and "add --ray" in res.output


@pytest.mark.slow  # ~20 s: two actors import torch and the library, one of them twice
def test_killed_actor_run_equals_single_process(cluster, loaded, tmp_path):
    """Greedy rows equal to the single-process run although an actor dies mid-batch: Ray restarts it and retries
    its batch; the one writer stores every row once (0 lost, 0 duplicated). Actors load their replicas with
    load_model and the driver model's load_args."""
    model, cfg, local_rows = loaded
    assert model.load_args["name_or_path"]
    out, marker = tmp_path / "killed.jsonl", tmp_path / "died"
    rep = run_sweep(model, cfg, out, backend="ray", readouts=[DieOnce(str(marker))], num_actors=2, progress=False)
    assert marker.exists(), "no actor died: the test did not test anything"
    assert rep.ok and rep.rows_written == rep.rows_total == len(local_rows) == 18
    assert _by_id(out) == local_rows
    again = run_sweep(model, cfg, out, progress=False)  # the store resumes like any other: nothing left to run
    assert again.rows_written == 0 and again.rows_skipped == 18 and again.batches_run == 0


@pytest.mark.slow  # ~12 s: one actor start
def test_actor_dying_for_good_stops_with_the_cell_and_keeps_rows(cluster, setup, local_rows, tmp_path):
    """An actor that dies on every try of one batch (no restarts left) stops the sweep with that batch named; the
    batches finished before are stored, and a resume completes the grid to the single-process rows."""
    model, cfg = setup
    out = tmp_path / "dies.jsonl"
    with pytest.raises(SweepWorkerError, match=r"stopped at vector 'rand', layer 1, seed 0, batch 2: .*Died.*resume"):
        run_sweep(model, cfg, out, backend="ray", model_loader=tiny_replica, readouts=[DieAt("Name a colour.")],
                  num_actors=1, max_restarts=0, progress=False)
    stored = _by_id(out)  # the store opens cleanly: no torn line
    assert len(stored) == 6 and all(local_rows[k] == v for k, v in stored.items())  # batches 0 and 1 of layer 1
    rep = run_sweep(model, cfg, out, progress=False)
    assert rep.rows_skipped == 6 and rep.rows_written == 12
    assert _by_id(out) == local_rows


def test_bad_ray_input(setup, tmp_path):
    model, cfg = setup
    with pytest.raises(ValueError, match="not made by load_model.*model_loader="):
        run_sweep(model, cfg, tmp_path / "b.jsonl", backend="ray", ray_address="127.0.0.1:1")
    with pytest.raises(ValueError, match="backend='ray' only"):
        run_sweep(model, cfg, tmp_path / "a.jsonl", num_actors=2)
    with pytest.raises(ValueError, match="backend must be 'local' or 'ray'"):
        run_sweep(model, cfg, tmp_path / "a.jsonl", backend="dask")


def test_persona_vector_pickles(setup):
    import pickle

    import torch

    vec = setup[1].vectors["rand"]
    back = pickle.loads(pickle.dumps(vec))
    assert back.sites == vec.sites and torch.equal(back.directions, vec.directions)
    assert back.provenance == vec.provenance


def test_replica_goes_to_the_actors_gpu(monkeypatch):
    """A driver model on the CPU (the CLI loads there) gives replicas on the GPU Ray assigns the actor."""
    import torch

    import persona_vectors.models as models
    from persona_vectors.sweep.distributed import replica_loader

    seen = []
    monkeypatch.setattr(models, "load_model", lambda **kw: seen.append(kw))

    class Driver:
        load_args = {"name_or_path": "x", "device": "cpu", "dtype": "float32"}

    loader = replica_loader(Driver(), None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loader()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader()
    Driver.load_args = {"name_or_path": "x", "device_map": "auto"}
    replica_loader(Driver(), None)()
    assert [kw.get("device") for kw in seen] == ["cpu", "cuda", None]
    assert all(kw["progress"] is False for kw in seen)
