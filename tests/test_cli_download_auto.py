"""`--allow-download` on every model-loading command, and `identity --alpha auto` (issue 20)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from persona_vectors.cli import app
from persona_vectors.vector import PersonaVector, Provenance

UNKNOWN_HUB_ID = "persona-vectors-test-org/no-such-model-xyz"
KL_LEVELS = (0.001, 0.004)  # the random tiny model's KL saturates near 0.01 nats


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("PERSONA_VECTORS_ALLOW_DOWNLOAD", raising=False)


@pytest.fixture()
def vec(tiny):
    g = torch.Generator().manual_seed(1)
    d = torch.randn(tiny.n_layers, tiny.d_model, generator=g)
    return PersonaVector(range(tiny.n_layers), d, Provenance(tiny.info.model_id, tiny.info.fingerprint, tiny.d_model,
                                                             name="rand"))


def _args(command: str, vector_dir: str, out_dir: str) -> list[str]:
    return {
        "steer": ["steer", "--vector", vector_dir, "--alpha", "0.1", "--layer", "1"],
        "extract": ["extract", "--persona", "hitler", "--out", out_dir],
        "identity": ["identity"],
        "calibrate": ["calibrate", "--vector", vector_dir, "--layer", "1"],
    }[command]


@pytest.mark.parametrize("command", ["steer", "extract", "identity", "calibrate"])
def test_allow_download_reaches_load_model(command, offline, vec, tmp_path, monkeypatch):
    """The flag (or PERSONA_VECTORS_ALLOW_DOWNLOAD=1) reaches load_model(allow_download=True); the default is
    offline, and the offline error names the flag."""
    import persona_vectors.models as models

    seen: list[bool] = []
    real = models.load_model

    def spy(model_id=None, *a, allow_download=False, **kw):
        seen.append(allow_download)
        if allow_download:  # stop here: a real attempt would wait on the network
            raise models.ModelLoadError("stopped by the test with downloads allowed")
        return real(model_id, *a, allow_download=False, **kw)

    monkeypatch.setattr(models, "load_model", spy)
    d = str(vec.save(tmp_path / "v"))
    args = _args(command, d, str(tmp_path / "out")) + ["--model", UNKNOWN_HUB_ID]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "--allow-download" in r.output and "allow_download=True" not in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, args + ["--allow-download"])
    assert r.exit_code == 2 and "stopped by the test with downloads allowed" in r.output, r.output
    monkeypatch.setenv("PERSONA_VECTORS_ALLOW_DOWNLOAD", "1")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "stopped by the test" in r.output, r.output
    assert seen == [False, True, True]


@pytest.mark.parametrize("command", ["steer", "extract", "identity", "calibrate", "sweep", "map"])
def test_allow_download_is_in_help(command):
    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert r.exit_code == 0 and "--allow-download" in r.output


@pytest.fixture()
def cli_env(tiny, vec, tmp_path, monkeypatch):
    monkeypatch.setattr("persona_vectors.cli.base.load_model_arg", lambda *a, **k: tiny)
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path / "cache"))
    return str(vec.save(tmp_path / "vec"))


def test_identity_alpha_auto(cli_env):
    base = ["identity", "--vector", cli_env, "--layer", "2", "-c", "a ghost", "-c", "a human"]
    r = CliRunner().invoke(app, base + ["--alpha", "auto", "--kl", str(KL_LEVELS[0])])
    assert r.exit_code == 0, r.output
    assert "# alpha auto -> +" in r.output and "raw" in r.output and "KL 0.001 at layer 2" in r.output
    r = CliRunner().invoke(app, base + ["--alpha", "-auto", "--kl", str(KL_LEVELS[1]), "--relative", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    s = d["steering"]
    assert s["relative"] and s["alpha"] < 0 and s["alpha"] == s["calibration"]["alpha_rel"]
    assert s["calibration"]["metric"] == "kl" and s["calibration"]["level"] == KL_LEVELS[1]
    # the same calibration is what `steer --alpha -auto` picks (one cache, one convention)
    r2 = CliRunner().invoke(app, ["steer", "--vector", cli_env, "--layer", "2", "--alpha", "-auto", "--kl",
                                  str(KL_LEVELS[1]), "--relative", "--max-new-tokens", "2", "--json"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout)["alpha"] == s["alpha"] and json.loads(r2.stdout)["calibration"]["cached"]


@pytest.mark.parametrize("args, msg", [
    (["--alpha", "lots"], "--alpha must be a number, auto or -auto"),
    (["--alpha", "nan"], "--alpha must be a finite number"),
    (["--alpha", "auto", "--layer", "1"], "single --layer"),
    (["--alpha", "auto", "--coherence", "2"], "--coherence must lie strictly between 0 and 1"),
    (["--alpha", "auto", "--kl", "-1"], "--kl must be a number > 0"),
])
def test_identity_alpha_auto_errors(cli_env, args, msg):
    r = CliRunner().invoke(app, ["identity", "--vector", cli_env, "--layer", "2", *args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_identity_alpha_without_vector_fails():
    for alpha in ("auto", "0.5"):
        r = CliRunner().invoke(app, ["identity", "--alpha", alpha])
        assert r.exit_code == 2 and "--alpha/--layer need --vector" in r.output
