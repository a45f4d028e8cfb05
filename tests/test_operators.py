"""Steering operators as registered objects: a toy operator, defined and registered here only, works through
steer(), a sweep config, preventative steering's spec and the CLI; SteerSpec.validate is the one validator."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from persona_vectors.operators import (
    BaseOperator,
    SteerSpecError,
    get_operator,
    operator_names,
    register_operator,
    unregister_operator,
)
from persona_vectors.sites import Site
from persona_vectors.steer import SteerSpec, steer
from persona_vectors.sweep import SweepConfig, SweepConfigError, run_sweep
from persona_vectors.vector import PersonaVector, Provenance


class Scale(BaseOperator):
    """Toy operator: ``h · (1 + α)`` (the vector is ignored except for its sites)."""

    name = "toy_scale"

    def prepare(self, vector, alpha, model, site, ctx):
        factor = (1.0 + alpha).to(model.dtype)
        ctx.info["factor"] = float(factor) if factor.ndim == 0 else factor.reshape(-1).tolist()
        return {"factor": factor.reshape(-1, 1, 1) if factor.ndim else factor}

    def apply(self, h, state):
        return h * state["factor"]


@pytest.fixture(scope="module", autouse=True)
def toy_operator():
    op = register_operator(Scale())
    yield op
    unregister_operator(op.name)


@pytest.fixture(scope="module")
def vec(tiny):
    g = torch.Generator().manual_seed(5)
    prov = Provenance(model_id=tiny.info.model_id, fingerprint=tiny.info.fingerprint, d_model=tiny.d_model, name="v")
    return PersonaVector(range(tiny.n_layers), torch.randn(tiny.n_layers, tiny.d_model, generator=g), prov)


def _resid(model, layer, prompt="Hello there"):
    seen = []
    hp = model.hook_point(Site(layer))
    h = hp.add_hook(lambda x, hook=None: seen.append(x.detach().clone()))
    try:
        model.forward_logits([prompt])
    finally:
        from persona_vectors.record import remove_lens_handle

        remove_lens_handle(hp, h)
    return seen[-1]


def test_registry_lists_toy_operator(toy_operator):
    assert operator_names()[:3] == ("add", "ablate", "cap") and "toy_scale" in operator_names()
    assert get_operator("toy_scale") is toy_operator
    with pytest.raises(ValueError, match="already registered"):
        register_operator(Scale())
    with pytest.raises(SteerSpecError, match="operator must be one of") as err:
        get_operator("nope")
    assert "toy_scale" in err.value.choices


def test_toy_operator_through_steer(tiny, vec):
    base = _resid(tiny, 1)
    with steer(tiny, vec, 1.0, layers=[1], operator="toy_scale") as h:
        doubled = _resid(tiny, 1)  # capture hook registered after steering: reads the steered value
        assert h.report()[0]["operator"] == "toy_scale" and h.report()[0]["factor"] == 2.0
    assert torch.allclose(doubled, 2 * base)
    assert torch.equal(_resid(tiny, 1), base)  # hooks removed
    with steer(tiny, vec, [0.0, 1.0], layers=[1], operator="toy_scale"):  # per-row alpha reaches prepare as [rows, 1]
        texts = tiny.generate(["Hi", "Hi"], max_new_tokens=3)
    assert texts[0] == tiny.generate(["Hi"], max_new_tokens=3)[0]


def test_toy_operator_rules_come_from_the_registry(tiny, vec):
    with pytest.raises(SteerSpecError, match="relative=True only applies to operator='add'"):
        SteerSpec(vec, 1.0, layers=[1], operator="toy_scale", relative=True).validate()
    SteerSpec(vec, 1.0, layers=[1], operator="toy_scale").validate()


def test_toy_operator_through_sweep_config(tiny, vec, tmp_path):
    cfg = SweepConfig(vectors={"v": vec}, alphas=[0.0, 3.0], layers=[1], prompts=["Hi"], max_new_tokens=3,
                      operator="toy_scale")
    assert cfg.steer_spec(vec, 1.0, 1).operator == "toy_scale"
    rep = run_sweep(tiny, cfg, tmp_path / "r.jsonl", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines() if x.strip()]
    assert rep.rows_written == 2
    zero = next(r for r in rows if r["alpha"] == 0.0)
    assert zero["text"] == tiny.generate(["Hi"], max_new_tokens=3)[0]
    unregister_operator("toy_scale")
    try:
        with pytest.raises(SweepConfigError, match="'operator' must be one of 'add', 'ablate', 'cap'"):
            SweepConfig(vectors={"v": vec}, alphas=[0.0], layers=[1], prompts=["Hi"], operator="toy_scale")
    finally:
        register_operator(Scale(), replace=True)


def test_toy_operator_through_preventative_spec(vec):
    from persona_vectors.finetune import PreventativeSteering

    pv = PreventativeSteering(vec, alpha=0.5, layers=[1], operator="toy_scale")
    assert pv.spec().operator == "toy_scale"
    with pytest.raises(ValueError, match="operator must be one of"):
        PreventativeSteering(vec, layers=[1], operator="nope")
    with pytest.raises(ValueError, match="needs threshold="):
        PreventativeSteering(vec, layers=[1], operator="cap")


def test_toy_operator_through_cli(tiny, vec, tmp_path, monkeypatch):
    import persona_vectors.cli as cli_mod

    monkeypatch.setattr(cli_mod.base, "load_model_arg", lambda model=None, device="cpu", **kw: tiny)
    path = str(vec.save(tmp_path / "v"))
    runner = CliRunner()
    res = runner.invoke(cli_mod.app, ["steer", "--vector", path, "--alpha", "1", "--layer", "1", "--operator",
                                      "toy_scale", "--max-new-tokens", "2", "--json"])
    assert res.exit_code == 0, (res.output, res.exception)
    out = json.loads(res.stdout)
    assert out["steering"][0]["operator"] == "toy_scale" and out["steering"][0]["factor"] == 2.0
    res = runner.invoke(cli_mod.app, ["steer", "--vector", path, "--alpha", "1", "--layer", "1", "--operator", "nope"])
    assert res.exit_code == 2 and "--operator must be one of add, ablate, cap, toy_scale" in res.stderr
