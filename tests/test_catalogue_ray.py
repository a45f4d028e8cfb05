"""Catalogue extraction (role vectors) with its answers generated on Ray actors, on a local
``ray.init(num_cpus=2)`` cluster (one per module) and a tiny checkpoint the actors reload with ``load_model``: the
same answers and role means as the single-process run, a rerun over an interrupted cache generates only what is
missing, and bad input (no cluster, Ray-only options without Ray) fails in one line. Skipped when Ray is not
installed (``pip install 'persona-vectors[ray]'``; ``make test`` installs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
from conftest import ray_cluster  # noqa: E402

from _ray_helpers import save_tiny_checkpoint  # noqa: E402
from persona_vectors.datasets import load_roles  # noqa: E402
from persona_vectors.personas import default_system_prompts, role_means  # noqa: E402
from persona_vectors.sweep.distributed import RayUnavailableError  # noqa: E402

# one xdist worker owns the module: its local Ray cluster is module-scoped
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("ray")]
ROLES = [r.name for r in load_roles()[:8]]
# 8 default prompts × 3 questions + 8 roles × 1 prompt × 3 questions = 48 answers = 3 batches of 16
KW = dict(n_questions=3, n_prompts=1, layers=[1, 3], max_new_tokens=8)


@pytest.fixture(scope="module")
def cluster():
    """The module's local Ray cluster (conftest.ray_cluster)."""
    with ray_cluster():
        yield


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny checkpoint loaded with load_model: actors reload it from ``model.load_args`` (the CLI's path)."""
    from persona_vectors import load_model

    d = tmp_path_factory.mktemp("ckpt")
    save_tiny_checkpoint(d)
    return load_model(d, progress=False)


@pytest.fixture(scope="module")
def local(model, tmp_path_factory):
    """The single-process run: (role means, answer table, progress messages)."""
    root = tmp_path_factory.mktemp("local-cache")
    said: list[str] = []
    rm = role_means(model, ROLES, **KW, cache=root, progress=said.append)
    return rm, _answers(root, model), said


def _answer_lines(root: Path, model) -> list[dict]:
    path = root / "generations" / f"{model.weights_key()}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _answers(root: Path, model) -> dict[str, str]:
    lines = _answer_lines(root, model)
    keys = [x["k"] for x in lines]
    assert len(keys) == len(set(keys)), "an answer was written twice"
    return {x["k"]: x["r"] for x in lines}


def _assert_same(rm, ref) -> None:
    assert list(rm.means) == list(ref.means) and rm.n_samples == ref.n_samples
    assert torch.equal(rm.default_mean, ref.default_mean)
    for n in ref.means:
        assert torch.equal(rm.means[n], ref.means[n]), n
        assert torch.equal(rm.vectors[n].directions, ref.vectors[n].directions), n
        assert rm.vectors[n].provenance.extra["sample_response"] == ref.vectors[n].provenance.extra["sample_response"]


# -------------------------------------------------------------------------- no cluster: these run before the fixture


def test_unreachable_cluster_is_one_line(model, tmp_path):
    assert not ray.is_initialized()
    with pytest.raises(RayUnavailableError) as err:
        role_means(model, ROLES[:1], **KW, cache=tmp_path, progress=False, backend="ray", address="127.0.0.1:1")
    msg = str(err.value)
    assert "\n" not in msg and "127.0.0.1:1" in msg and "ray start --head" in msg
    assert not (tmp_path / "generations").exists()  # nothing generated or written


def test_cli_map_ray_without_cluster_says_where_and_how(tmp_path, monkeypatch):
    """`map --ray` with no cluster: the sweep's one line, exit 2, before the model loads; bad flag mixes too."""
    from typer.testing import CliRunner

    from persona_vectors.cli import app
    from persona_vectors.cli import base as cli_base
    from persona_vectors.cli.sweeping import bare_ray_flag

    assert bare_ray_flag(["map", "--out", "m.html", "--ray"])[-1] == "auto"
    monkeypatch.setattr(cli_base, "load_model_arg", lambda *a, **k: pytest.fail("the model loaded"))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    out = str(tmp_path / "m.html")
    for args in (["--ray", "auto"], ["--ray", "127.0.0.1:1"]):
        res = CliRunner().invoke(app, ["map", "--out", out, "--role", ROLES[0], *args])
        assert res.exit_code == 2, res.output
        lines = [x for x in res.output.strip().splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.output
        assert "127.0.0.1:1" in lines[0] and "ray start --head" in lines[0]
    res = CliRunner().invoke(app, ["map", "--out", out, "--actors", "2"])
    assert res.exit_code == 2 and "add --ray" in res.output
    res = CliRunner().invoke(app, ["map", "--out", out, "--prompt-only", "--ray", "local"])
    assert res.exit_code == 2 and "drop --ray" in res.output


def test_bad_backend_arguments(model, tmp_path):
    from conftest import make_tiny_model

    with pytest.raises(ValueError, match="backend must be 'local' or 'ray'"):
        role_means(model, ROLES[:1], **KW, cache=tmp_path, progress=False, backend="dask")
    with pytest.raises(ValueError, match="backend='ray' only"):
        role_means(model, ROLES[:1], **KW, cache=tmp_path, progress=False, num_actors=2)
    with pytest.raises(ValueError, match="num_actors must be a positive integer"):
        role_means(model, ROLES[:1], **KW, cache=tmp_path, progress=False, backend="ray", num_actors=0)
    with pytest.raises(ValueError, match="not made by load_model.*model_loader="):
        role_means(make_tiny_model(), ROLES[:1], **KW, cache=tmp_path, progress=False, backend="ray",
                   address="127.0.0.1:1")
    assert not ray.is_initialized()


# -------------------------------------------------------------------------- on the local cluster


def test_ray_answers_and_role_means_equal_local(cluster, model, local, tmp_path):
    """The 3 batches run on 2 actors; the answer cache and every role mean/vector equal the local run's."""
    ref, ref_answers, ref_said = local
    assert len(default_system_prompts()) == 8  # the counts below
    assert sum(m.startswith("generate batch") for m in ref_said) == 3
    said: list[str] = []
    rm = role_means(model, ROLES, **KW, cache=tmp_path, progress=said.append, backend="ray", num_actors=2)
    assert "generate 48 answers in 3 batches on Ray actors (8 new tokens)" in said
    assert sorted(m for m in said if m.startswith("generated batch")) == [
        f"generated batch {b}/3 on Ray (16 answers)" for b in (1, 2, 3)]
    assert _answers(tmp_path, model) == ref_answers and len(ref_answers) == 48
    _assert_same(rm, ref)
    assert ray.is_initialized()  # an existing ray.init is kept, not shut down


def test_rerun_after_interruption_generates_only_what_is_missing(cluster, model, local, tmp_path):
    """An interrupted run left whole batches in the cache (here: the first 20 answers); the Ray rerun generates the
    other 28 only (on one actor), appends each once, and ends with the same answers and role means as the local run."""
    ref, ref_answers, _ = local
    kept = list(ref_answers.items())[:20]
    gen = tmp_path / "generations"
    gen.mkdir()
    (gen / f"{model.weights_key()}.jsonl").write_text("".join(json.dumps({"k": k, "r": r}) + "\n" for k, r in kept))
    said: list[str] = []
    rm = role_means(model, ROLES, **KW, cache=tmp_path, progress=said.append, backend="ray", num_actors=1)
    assert "generate 28 answers in 2 batches on Ray actors (8 new tokens)" in said
    written = _answer_lines(tmp_path, model)
    assert [x["k"] for x in written[:20]] == [k for k, _ in kept] and len(written) == 48
    assert _answers(tmp_path, model) == ref_answers
    _assert_same(rm, ref)
    said.clear()
    role_means(model, ROLES, **KW, cache=tmp_path, progress=said.append, backend="ray")  # all cached: no actors
    assert not any("answers" in m for m in said) and len(_answer_lines(tmp_path, model)) == 48
