"""The generation-free ``prompt_only`` route (issue #18, P11): role vectors read from the unanswered prompt.

Checked against the library's own ``record`` on the same conversations (so the read is the advertised one), with
generation forbidden, through the registry/public API, and its bad inputs.
"""

from __future__ import annotations

import pytest
import torch

import persona_vectors.personas as P
from persona_vectors.datasets import get_role
from persona_vectors.record import record
from persona_vectors.sites import Site

pytestmark = pytest.mark.usefixtures("one_thread")

ROLES = ["ghost", "pirate_captain", "librarian"]
QS = ["Who are you?", "What do you do all day?"]
BASE = [None, "You are a helpful assistant."]


@pytest.fixture
def no_generation(tiny, monkeypatch):  # type: ignore[no-untyped-def]
    def refuse(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the prompt_only route generated text")

    monkeypatch.setattr(tiny, "generate", refuse)
    monkeypatch.setattr(tiny, "generate_tokens", refuse)
    return tiny


def _convs(model, systems):  # type: ignore[no-untyped-def]
    return [model.to_messages(q, s) for s in systems for q in QS]


@pytest.mark.parametrize("positions", ["last_prompt", "prompt"])
def test_role_means_equal_record_on_the_prompts(no_generation, positions) -> None:  # type: ignore[no-untyped-def]
    tiny = no_generation
    rm = P.prompt_only_role_means(tiny, ROLES, questions=QS, n_prompts=1, baseline_prompts=BASE, layers=[1, 3],
                                  positions=positions, progress=False)
    base = record(tiny, _convs(tiny, BASE), [1, 3], positions=positions, progress=False)
    assert rm.sites == (Site(1), Site(3)) and rm.max_new_tokens == 0 and list(rm.vectors) == ROLES
    for name in ROLES:
        ref = record(tiny, _convs(tiny, get_role(name).prompts[:1]), [1, 3], positions=positions, progress=False)
        for k, s in enumerate(rm.sites):
            assert torch.allclose(rm.means[name][k], ref.mean(s), atol=1e-5)
            assert torch.allclose(rm.vectors[name][s], ref.mean(s) - base.mean(s), atol=1e-5)
        prov = rm.vectors[name].provenance
        assert prov.route == "prompt_only" and prov.positions == positions
        assert prov.extra["generation_free"] and prov.extra["prompt_positions"] == positions
    assert rm.n_samples == {n: len(QS) for n in ROLES} and rm.n_default_samples == len(BASE) * len(QS)
    assert rm.axis().directions.norm() > 0


def test_the_two_reads_differ(no_generation) -> None:  # type: ignore[no-untyped-def]
    kw = dict(questions=QS, n_prompts=1, baseline_prompts=BASE, layers=[2], progress=False)
    last = P.prompt_only_role_means(no_generation, ROLES[:2], positions="last_prompt", **kw)
    whole = P.prompt_only_role_means(no_generation, ROLES[:2], positions="prompt", **kw)
    assert not torch.allclose(last.vectors["ghost"].directions, whole.vectors["ghost"].directions)


def test_registered_route_through_the_public_api(no_generation, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tiny = no_generation
    spec = P.resolve_persona("pirate_captain")
    assert spec.routes[0] == "prompt" and "prompt_only" in spec.routes  # the default route is unchanged
    assert "prompt_only" not in P.resolve_persona("assistant").routes
    res = P.extract_persona(tiny, "pirate_captain", "prompt_only", layers=[1, 2], quick=True, cache=tmp_path,
                            progress=False)
    direct = P.prompt_only_role_vector(tiny, "pirate_captain", n_questions=P.QUICK.n_questions,
                                       n_prompts=P.QUICK.n_prompts, layers=[1, 2], progress=False)
    assert torch.allclose(res.vector.directions, direct.directions, atol=1e-6)
    assert res.vector.provenance.route == "prompt_only" and res.quality.route == "prompt_only"
    assert set(res.quality.auroc) == {Site(1), Site(2)} and "no generation" in res.quality.heldout
    again = P.get_persona_vector(tiny, "pirate_captain", "prompt_only", layers=[1, 2], quick=True, cache=tmp_path,
                                 progress=False)
    assert torch.equal(again.directions, res.vector.directions)


def test_bad_inputs_name_the_fix(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="'last_prompt', 'prompt'"):
        P.prompt_only_role_means(tiny, ["ghost"], positions="response", progress=False)
    with pytest.raises(ValueError, match="route='prompt' for PCA"):
        P.prompt_only_role_vector(tiny, "ghost", method="pca", progress=False)
    with pytest.raises(Exception, match="no baseline prompts"):
        P.prompt_only_role_means(tiny, ["ghost"], baseline_prompts=[], progress=False)


def test_map_prompt_only_flag(no_generation, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    import persona_vectors.cli as cli

    monkeypatch.setattr(cli.base, "load_model_arg", lambda model=None, device="cpu", **kw: no_generation)
    args = ["map", "--prompt-only", "--questions", "1", "--layer", "2", "--out", str(tmp_path / "m.html"),
            "--save-vectors", str(tmp_path / "saved")]
    for r in ROLES:
        args += ["--role", r]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 0, res.output
    assert "from the prompts alone" in res.output and "3 roles" in res.output
    from persona_vectors.space import load_role_vectors

    saved = load_role_vectors(tmp_path / "saved")
    assert saved["ghost"].provenance.route == "prompt_only" and sorted(saved) == sorted(ROLES + ["assistant"])


def test_shared_prefixes_read_what_whole_forwards_read(tiny) -> None:  # type: ignore[no-untyped-def]
    from persona_vectors.personas.compute import _record_rows
    from persona_vectors.personas.prompt_only import _last_prompt_rows, prompt_conversations
    from persona_vectors.sites import as_sites

    systems = BASE + ["", *(get_role(r).prompts[0] for r in ROLES)]
    convs = prompt_conversations(tiny, systems, QS + ["Why?"]) + [tiny.to_messages("A lonely question")]
    convs.append(tiny.to_messages("Answered?") + [{"role": "assistant", "content": "Yes, answered."}])
    sites = as_sites([0, 2, 3], tiny.n_layers)
    whole = _record_rows(tiny, convs, sites, positions="last_prompt")
    for batch_size in (1, 5, 32):  # one prefix per forward, several, all
        shared = _last_prompt_rows(tiny, convs, sites, batch_size=batch_size)
        assert torch.allclose(shared.means, whole.means, atol=1e-5)
        assert torch.allclose(shared.norm_sums, whole.norm_sums, atol=1e-4)
        assert torch.equal(shared.n_tokens, whole.n_tokens)


def test_missing_answers_counts_what_role_means_would_generate(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    kw = dict(n_questions=2, n_prompts=1, max_new_tokens=4, cache=cache)
    missing, total = P.missing_answers(tiny, ["ghost", "pirate_captain"], **kw)
    assert missing == total > 0  # a cold cache: every distinct answer is missing (default side included)
    P.role_means(tiny, ["ghost"], layers=[1], progress=False, **kw)
    m2, t2 = P.missing_answers(tiny, ["ghost", "pirate_captain"], **kw)
    assert t2 == total and 0 < m2 < total  # the ghost's answers and the shared default side are cached now
    P.role_means(tiny, ["ghost", "pirate_captain"], layers=[1], progress=False, **kw)
    assert P.missing_answers(tiny, ["ghost", "pirate_captain"], **kw) == (0, total)
    assert P.missing_answers(tiny, ["ghost"], n_questions=2, n_prompts=1, max_new_tokens=4, cache=False)[0] > 0


def test_opener_read_is_the_last_prompt_token_and_the_teacher_forced_opener(no_generation) -> None:  # type: ignore[no-untyped-def]
    """The default read: last prompt token + "I am" (equal weight per token), equal to record() on the same tokens."""
    tiny = no_generation
    assert P.prompt_only.DEFAULT_PROMPT_POSITIONS == "opener" and P.prompt_only.DEFAULT_OPENER == "I am"
    n_op = len(tiny.response_ids(P.prompt_only.DEFAULT_OPENER))
    rm = P.prompt_only_role_means(tiny, ROLES[:2], questions=QS, n_prompts=1, baseline_prompts=BASE, layers=[1, 3],
                                  positions="opener", progress=False)

    def expected(systems):  # type: ignore[no-untyped-def]
        plain = _convs(tiny, systems)
        forced = [c + [{"role": "assistant", "content": P.prompt_only.DEFAULT_OPENER}] for c in plain]
        last = record(tiny, plain, [1, 3], positions="last_prompt", progress=False)
        op = record(tiny, forced, [1, 3], positions="response", progress=False)
        return {s: (last.mean(s) + n_op * op.mean(s)) / (1 + n_op) for s in (Site(1), Site(3))}

    base = expected(BASE)
    for name in ROLES[:2]:
        role = expected(get_role(name).prompts[:1])
        for s in rm.sites:
            assert torch.allclose(rm.vectors[name][s], role[s] - base[s], atol=1e-5)
        extra = rm.vectors[name].provenance.extra
        assert extra["prompt_positions"] == "opener" and extra["prompt_opener"] == "I am"
    other = P.prompt_only_role_means(tiny, ROLES[:1], questions=QS, n_prompts=1, baseline_prompts=BASE, layers=[3],
                                     positions="opener", opener="As a", progress=False)
    assert not torch.allclose(other.vectors[ROLES[0]].directions, rm.vectors[ROLES[0]].at([3]).directions)
    assert other.vectors[ROLES[0]].provenance.extra["prompt_opener"] == "As a"
    with pytest.raises(ValueError, match="non-empty opener"):
        P.prompt_only_role_means(tiny, ["ghost"], positions="opener", opener="", progress=False)


def test_opener_shared_prefixes_read_what_whole_forwards_read(tiny) -> None:  # type: ignore[no-untyped-def]
    from persona_vectors.personas.prompt_only import prompt_conversations, prompt_only_recordings
    from persona_vectors.sites import as_sites

    # one system asked one question: its common prefix must stop before the last prompt token and the opener
    groups = [prompt_conversations(tiny, BASE, QS), prompt_conversations(tiny, [get_role("ghost").prompts[0]], QS[:1])]
    sites = as_sites([0, 2], tiny.n_layers)
    for batch_size in (1, 32):
        shared = prompt_only_recordings(tiny, groups, sites, positions="opener", batch_size=batch_size)
        whole = prompt_only_recordings(tiny, groups, sites, positions="opener", share_prefixes=False)
        for a, b in zip(shared, whole):
            assert a.n_tokens == b.n_tokens == a.n_conversations * (1 + len(tiny.response_ids("I am")))
            for s in sites:
                assert torch.allclose(a.mean(s), b.mean(s), atol=1e-5)
                assert abs(a.mean_norm(s) - b.mean_norm(s)) < 1e-3


def test_prompt_index_reads_one_prompt_per_role(no_generation) -> None:  # type: ignore[no-untyped-def]
    kw = dict(questions=QS, baseline_prompts=BASE, layers=[2], positions="last_prompt", progress=False)
    second = P.prompt_only_role_means(no_generation, ROLES[:2], prompt_index=1, **kw)
    base = record(no_generation, _convs(no_generation, BASE), [2], positions="last_prompt", progress=False)
    for name in ROLES[:2]:
        ref = record(no_generation, _convs(no_generation, get_role(name).prompts[1:2]), [2], positions="last_prompt",
                     progress=False)
        assert torch.allclose(second.vectors[name][2], ref.mean(Site(2)) - base.mean(Site(2)), atol=1e-5)
    with pytest.raises(Exception, match="prompt_index=99 is out of range"):
        P.prompt_only_role_means(no_generation, ROLES[:1], prompt_index=99, **kw)
