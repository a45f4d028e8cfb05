"""The package's face: one ``__all__`` whose every name resolves, the version from package metadata, and the
instruments (judge, statistics) exported beside the rest."""

from __future__ import annotations

import importlib.metadata

import persona_vectors as pv
from persona_vectors.vector import library_version


def test_all_is_one_list_of_real_names():
    assert len(pv.__all__) == len(set(pv.__all__))
    assert [n for n in pv.__all__ if not hasattr(pv, n)] == []


def test_version_comes_from_the_package_metadata(monkeypatch):
    assert pv.__version__ == importlib.metadata.version("persona-vectors")

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert library_version() == "0+unknown"  # an uninstalled tree still imports


def test_judge_stats_and_routes_are_exported():
    for name in ("EmbeddingJudge", "LLMJudge", "JudgeResult", "JudgeModelMissingError", "JUDGE_LABELS", "stats",
                 "wilson", "cluster_bootstrap", "Route", "register_route", "get_persona_vector"):
        assert name in pv.__all__, name
