"""Progress reporting of extraction and catalogue builds: tqdm bars by default, silent with progress=False."""

from __future__ import annotations

import pytest

from persona_vectors import personas


@pytest.fixture()
def fresh_cache(tmp_path):
    personas.clear_memory_caches()
    yield tmp_path
    personas.clear_memory_caches()


def _build(model, cache, **kw):
    return personas.role_vector(model, "pirate_captain", n_questions=2, n_prompts=1, layers=[1, 2],
                                max_new_tokens=3, cache=cache, **kw)


def test_extraction_shows_bars_by_default(tiny, fresh_cache, capsys):
    _build(tiny, fresh_cache)
    err = capsys.readouterr().err
    assert "generate answers" in err and "record activations" in err
    # a second call is served from the caches: no work, no bars
    _build(tiny, fresh_cache)
    assert capsys.readouterr().err == ""


def test_progress_false_is_silent(tiny, fresh_cache, capsys):
    _build(tiny, fresh_cache, progress=False)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""


def test_progress_callable_gets_messages_and_no_bars(tiny, fresh_cache, capsys):
    msgs: list[str] = []
    personas.role_means(tiny, ["pirate_captain", "cat"], n_questions=2, n_prompts=1, layers=[1],
                        max_new_tokens=3, cache=fresh_cache, progress=msgs.append)
    assert any(m.startswith("generate batch") for m in msgs) and any(m.startswith("record") for m in msgs)
    assert "generate answers" not in capsys.readouterr().err


def test_fact_vector_bar(tiny, fresh_cache, capsys):
    personas.fact_vector(tiny, "stalin", layers=[1], cache=fresh_cache)
    assert "record activations" in capsys.readouterr().err


def test_bad_progress_value(tiny, fresh_cache):
    with pytest.raises(TypeError, match="progress must be"):
        _build(tiny, fresh_cache, progress="yes")
