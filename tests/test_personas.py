"""Personas: system-prompt semantics, name resolution, the fact split, both routes on the embedded model, caches.

The embedded-model tests share one temporary cache root (module scope) so later tests reuse earlier
recordings, and run torch with one thread: on oversubscribed shared cores that was ~7x faster than two.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from persona_vectors import personas as P
from persona_vectors.datasets import AssistantPrompt, DataError, load_fact_set
from persona_vectors.sites import Site


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    P.clear_memory_caches()
    yield tmp_path_factory.mktemp("persona_cache")
    P.clear_memory_caches()


@pytest.fixture(scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------ no model


def test_system_for_semantics():
    assert P.system_for(AssistantPrompt("d", None, use_model_default=True)) is None
    assert P.system_for(AssistantPrompt("n", None, use_model_default=False)) == ""
    assert P.system_for(AssistantPrompt("t", "You are an AI assistant.")) == "You are an AI assistant."
    defaults = P.default_system_prompts()
    assert None in defaults and "" in defaults and len(defaults) == 8


def test_unknown_persona_suggests_close_match():
    with pytest.raises(DataError, match="did you mean 'hitler'") as e:
        P.resolve_persona("hitlr")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="voyager"):
        P.resolve_persona("voyagr")


def test_resolution_and_route_errors():
    assert P.resolve_persona("Adolf Hitler").name == "hitler"  # alias of a card persona's role
    assert P.resolve_persona("adolf_hitler").routes == ("prompt", "facts", "prompt_only")
    assert P.resolve_persona("ghost").routes == ("prompt", "prompt_only")
    assert P.resolve_persona("hitler_moon").routes == ("facts",)
    assert P.resolve_persona("assistant").routes == ("axis",)
    with pytest.raises(DataError, match="no facts route"):
        P._choose_route(P.resolve_persona("voyager"), "facts")
    with pytest.raises(ValueError, match="route must be"):
        P._choose_route(P.resolve_persona("voyager"), "telepathy")


def test_fact_split_is_fixed_and_shared_by_variants():
    base, var = load_fact_set("hitler_baseline"), load_fact_set("hitler_russian")
    train, held = P.fact_split(base)
    assert len(held) == 23 and len(train) == 69 and not set(train) & set(held)
    assert P.fact_split(var) == (train, held)
    assert P.fact_split(base) == (train, held)


def test_catalogue_lists_cards_roles_and_fact_sets():
    rows = P.list_personas()
    names = {r["name"] for r in rows}
    assert {"hitler", "assistant", "colour_red", "hitler_thai", "ghost", "stalin"} <= names
    assert all(r["category"] == "animal" for r in P.list_personas("animal"))
    with pytest.raises(DataError, match="unknown category"):
        P.list_personas("martians")


def test_cli_unknown_persona_is_one_line_error():
    from typer.testing import CliRunner

    from persona_vectors.cli import app

    r = CliRunner().invoke(app, ["extract", "--persona", "hitlr", "--out", "unused"])
    assert r.exit_code == 2
    out = r.output.strip()
    assert "did you mean 'hitler'" in out and len(out.splitlines()) == 1
    r = CliRunner().invoke(app, ["personas", "--category", "card", "--json"])
    assert r.exit_code == 0 and {x["name"] for x in json.loads(r.output)} >= {"hitler", "voyager"}


# ------------------------------------------------------------------------------------------ embedded model


@pytest.mark.slow
def test_fact_route_heldout_auroc(smol, cache_root, one_thread):
    vec = P.fact_vector(smol, "hitler_baseline", layers=[4, 10], cache=cache_root)
    p = vec.provenance
    assert vec.sites == (Site(4), Site(10)) and p.route == "facts" and p.name == "hitler_baseline"
    assert p.n_samples == 69 and p.extra["heldout_ids"] == P.fact_split(load_fact_set("hitler_baseline"))[1]
    q = P.persona_quality(smol, "hitler", vec, cache=cache_root)
    assert q.route == "facts" and q.n_persona == q.n_baseline == 23
    # Measured 0.932 at layer 10 (0.94 at 12; 0.64 at layer 4) on the embedded model.
    assert q.auroc[Site(10)] >= 0.9
    assert q.layer == Site(10)
    assert 0.01 < q.rel_norm[Site(10)] < 1.0


@pytest.mark.slow
def test_vector_cache_hit_does_no_work(smol, cache_root, one_thread, monkeypatch):
    v1 = P.get_persona_vector(smol, "hitler", route="facts", layers=[4, 10], cache=cache_root)
    P.clear_memory_caches()

    def boom(*a, **k):
        raise AssertionError("a cache hit must not record or generate")

    monkeypatch.setattr(P, "_record_rows", boom)
    monkeypatch.setattr(smol, "generate", boom)
    t0 = time.perf_counter()
    v2 = P.get_persona_vector(smol, "hitler", route="facts", layers=[4, 10], cache=cache_root)
    assert time.perf_counter() - t0 < 5
    assert torch.equal(v1.directions, v2.directions) and v2.provenance.extra["cache_key"]


@pytest.mark.slow
def test_prompt_route_small(smol, cache_root, one_thread, monkeypatch):
    kw = dict(n_questions=4, n_prompts=1, baseline_prompts=[None], layers=[4, 10], max_new_tokens=12,
              cache=cache_root)
    vec = P.role_vector(smol, "voyager_1", **kw)
    p = vec.provenance
    assert vec.sites == (Site(4), Site(10)) and p.route == "prompt" and p.method == "mean_diff"
    assert p.n_samples == 4 and p.extra["role"] == "voyager_1" and p.extra["n_prompts"] == 1
    assert p.fingerprint == smol.info.fingerprint and p.positions == "response"
    assert all(n > 0 for n in vec.norms().values())

    # Second call from a fresh process-level cache: answers and activations come from disk.
    P.clear_memory_caches()

    def boom(*a, **k):
        raise AssertionError("cached answers must not be regenerated")

    monkeypatch.setattr(smol, "generate", boom)
    vec2 = P.role_vector(smol, "voyager_1", **kw)
    assert torch.allclose(vec.directions, vec2.directions)
    c = P.role_contrast(smol, "voyager_1", **kw)
    assert c.persona.n_conversations == 4 and c.persona.per_sample(Site(4)).shape == (4, smol.d_model)
    assert c.baseline_conversations[0][0]["role"] == "user"  # system=None: template default, no system message
