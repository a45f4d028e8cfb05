"""Calibrated steering strengths (calibrate_alpha, layer_scan) and the CLI that uses them."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from persona_vectors.calibrate import CalibrationError, _KL, calibrate_alpha, layer_scan
from persona_vectors.cli import app
from persona_vectors.sites import Site
from persona_vectors.vector import PersonaVector, Provenance

KL_LEVELS = (0.001, 0.004)  # the random tiny model's KL saturates near 0.01 nats


@pytest.fixture()
def vec(tiny):
    g = torch.Generator().manual_seed(1)
    d = torch.randn(tiny.n_layers, tiny.d_model, generator=g)
    return PersonaVector(range(tiny.n_layers), d, Provenance(tiny.info.model_id, tiny.info.fingerprint, tiny.d_model,
                                                             name="rand"))


class _Count:
    def __init__(self, model):
        self.n = 0
        self.h = model.hf.register_forward_hook(lambda *a: self._inc())

    def _inc(self):
        self.n += 1

    def close(self):
        self.h.remove()


def test_kl_calibration_monotone_accurate_and_cached(tiny, vec, tmp_path):
    c = _Count(tiny)
    try:
        r = calibrate_alpha(tiny, vec, 2, target_kl=KL_LEVELS, cache=tmp_path, progress=False)
        first = c.n
        values = [v for _, _, v in r.curve]
        assert values[0] == 0.0 and all(b >= a - 1e-9 for a, b in zip(values, values[1:]))  # monotone in |alpha|
        assert r.metric == "kl" and not r.cached and first > 0
        for lv in KL_LEVELS:
            a_rel, a_raw = r.alpha(lv, relative=True), r.alpha(lv)
            assert a_rel is not None and a_rel > 0
            assert a_raw == pytest.approx(a_rel * r.unit)
            f = _KL(tiny, vec, Site(2), list(r.questions), 16, "all", None)
            assert f([a_raw])[0] == pytest.approx(lv, rel=0.1)  # the found strength gives the asked-for KL
        r2 = calibrate_alpha(tiny, vec, 2, target_kl=KL_LEVELS, cache=tmp_path, progress=False)
        assert r2.cached
    finally:
        c.close()


def test_cache_hit_runs_no_forward(tiny, vec, tmp_path):
    calibrate_alpha(tiny, vec, 1, target_kl=KL_LEVELS, cache=tmp_path, progress=False)
    c = _Count(tiny)
    try:
        hit = calibrate_alpha(tiny, vec, 1, target_kl=KL_LEVELS, cache=tmp_path, progress=False)
        assert hit.cached and c.n == 0
        miss = calibrate_alpha(tiny, vec, 1, target_kl=KL_LEVELS, sign=-1, cache=tmp_path, progress=False)
        assert not miss.cached and c.n > 0 and miss.alpha(KL_LEVELS[0]) < 0
    finally:
        c.close()


def test_coherence_calibration_and_unsteered_levels(tiny, vec):
    r = calibrate_alpha(tiny, vec, 2, target_coherence=(0.99, 0.3), sign=-1, max_new_tokens=12, cache=False,
                        progress=False)
    assert r.metric == "coherence" and r.curve[0][0] == 0.0
    assert r.alpha(0.99) == 0.0  # the random model is never that coherent: already there unsteered
    assert "already there" in r.table()
    a = r.alpha(0.3, relative=True)
    assert a is not None and a < 0
    assert json.loads(json.dumps(r.to_dict()))["rows"][1]["alpha_rel"] == a


def test_bad_settings(tiny, vec):
    with pytest.raises(CalibrationError, match="between 0 and 1"):
        calibrate_alpha(tiny, vec, 2, target_coherence=1.5, cache=False)
    with pytest.raises(CalibrationError, match="not both"):
        calibrate_alpha(tiny, vec, 2, target_coherence=0.5, target_kl=1.0, cache=False)
    with pytest.raises(CalibrationError, match="no direction at layer"):
        calibrate_alpha(tiny, vec.at([1]), 2, target_kl=1.0, cache=False)
    with pytest.raises(CalibrationError, match="sign"):
        calibrate_alpha(tiny, vec, 2, target_kl=1.0, sign=2, cache=False)


def test_layer_scan_projection(tiny, vec, tmp_path):
    s = layer_scan(tiny, vec, [1, 2], kl_level=KL_LEVELS[0], cache=tmp_path, progress=False)
    assert [r.layer for r in s.rows] == [1, 2] and s.readout == "projection@3"
    assert all(r.effect is not None and r.alpha_raw is not None for r in s.rows)
    assert s.best in (1, 2) and "effect" in s.table()
    custom = layer_scan(tiny, vec, [2], readout=lambda m: 1.0, kl_level=KL_LEVELS[0], cache=tmp_path, progress=False)
    assert custom.rows[0].effect == 0.0


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture()
def cli_env(tiny, vec, tmp_path, monkeypatch):
    monkeypatch.setattr("persona_vectors.cli.base.load_model_arg", lambda *a, **k: tiny)
    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "vec"
    vec.save(d)
    return d


def test_cli_steer_alpha_auto(cli_env):
    r = CliRunner().invoke(app, ["steer", "--vector", str(cli_env), "--layer", "2", "--alpha", "auto",
                                 "--kl", str(KL_LEVELS[0]), "--max-new-tokens", "4"])
    assert r.exit_code == 0, r.output
    assert "# alpha auto -> +" in r.output and "raw" in r.output
    r = CliRunner().invoke(app, ["steer", "--vector", str(cli_env), "--layer", "2", "--alpha", "-auto",
                                 "--kl", str(KL_LEVELS[1]), "--relative", "--max-new-tokens", "4", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["relative"] and d["alpha"] < 0 and d["alpha"] == d["calibration"]["alpha_rel"]


@pytest.mark.parametrize("args, msg", [
    (["--alpha", "lots"], "--alpha must be a number, auto or -auto"),
    (["--alpha", "auto", "--layer", "1"], "single --layer"),
    (["--alpha", "auto", "--coherence", "2"], "--coherence must lie strictly between 0 and 1"),
    (["--alpha", "auto", "--operator", "ablate"], "--operator add"),
])
def test_cli_steer_auto_errors(cli_env, args, msg):
    r = CliRunner().invoke(app, ["steer", "--vector", str(cli_env), "--layer", "2", *args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_calibrate_table_and_json(cli_env):
    r = CliRunner().invoke(app, ["calibrate", "--vector", str(cli_env), "--layer", "1", "--layer", "2",
                                 "--kl", str(KL_LEVELS[0]), "--kl", str(KL_LEVELS[1])])
    assert r.exit_code == 0, r.output
    assert "# layer 1" in r.output and "# layer 2" in r.output and "alpha_raw" in r.output
    r = CliRunner().invoke(app, ["calibrate", "--vector", str(cli_env), "--layer", "2", "--kl", str(KL_LEVELS[0]),
                                 "--sign", "-", "--readout", "projection", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["metric"] == "kl" and d["layers"][0]["cached"] is False and d["layers"][0]["rows"][0]["alpha_rel"] < 0
    assert d["scan"]["rows"][0]["layer"] == 2


@pytest.mark.parametrize("args, msg", [
    (["--layer", "2", "--coherence", "1.5"], "between 0 and 1"),
    (["--layer", "2", "--coherence", "0.5", "--kl", "1"], "not both"),
    (["--layer", "2", "--kl", "0"], "> 0 nats"),
    (["--layer", "2", "--sign", "x"], "--sign must be + or -"),
    (["--layer", "2", "--readout", "mass"], "--readout must be"),
    (["--layer", "7"], "Layer 7 is out of range"),
])
def test_cli_calibrate_errors(cli_env, args, msg):
    r = CliRunner().invoke(app, ["calibrate", "--vector", str(cli_env), *args])
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_cli_calibrate_missing_vector(cli_env, tmp_path):
    r = CliRunner().invoke(app, ["calibrate", "--vector", str(tmp_path / "nope"), "--layer", "2"])
    assert r.exit_code == 2 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ embedded model


@pytest.mark.slow
def test_smol_kl_calibration(smol, tmp_path):
    """On SmolLM2 a random direction's KL rises with |alpha| and the found strength is near the level."""
    g = torch.Generator().manual_seed(0)
    d = torch.randn(smol.n_layers, smol.d_model, generator=g)
    v = PersonaVector(range(smol.n_layers), d, Provenance(smol.info.model_id, smol.info.fingerprint, smol.d_model))
    r = calibrate_alpha(smol, v, 14, target_kl=(0.5,), cache=tmp_path, progress=False)
    vals = [x for _, _, x in r.curve]
    assert vals == sorted(vals)
    a = r.alpha(0.5, relative=True)
    assert a is not None and 0.05 < a < 16
    f = _KL(smol, v, Site(14), list(r.questions), 16, "all", None)
    assert f([r.alpha(0.5)])[0] == pytest.approx(0.5, rel=0.15)
