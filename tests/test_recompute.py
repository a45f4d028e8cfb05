"""Per-generation records and ``experiments/recompute.py`` (no model needed).

- ``records.py``: exact round trip of records and arrays, deterministic gzip bytes, appending members, the
  leaf-by-leaf comparison (counts exact, floats to a tolerance, missing fields).
- A tiny hand-made assistant-axis run (synthetic generations, identity read-outs and persona-space rows):
  ``summarize`` → ``results.json`` → ``render`` → ``report.md``; recompute reproduces it, and a tampered
  number in ``results.json``, a tampered record (one judge label), a tampered report line and a missing
  results field are each detected and named.
- Every run committed under ``docs/data/`` replays exactly (what CI checks on the committed data), and a
  tampered copy of each fails.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import recompute  # noqa: E402
import records as RC  # noqa: E402

DOCS_DATA = ROOT / "docs" / "data"
COMMITTED = sorted(d for d in DOCS_DATA.iterdir() if (d / RC.CONFIG).is_file()) if DOCS_DATA.is_dir() else []


# ============================================================================================ records.py
def test_records_roundtrip_exact_and_deterministic(tmp_path):
    rows = [{"kind": "generation", "x": 0.1 + 0.2, "tiny": 1e-300, "p": np.float32(0.3), "n": np.int64(3),
             "arr": np.array([1.0, 2.5]), "text": "Ich bin ein Geist — 👻", "inf": float("inf")}]
    (tmp_path / "a").mkdir()
    r1 = RC.Records(tmp_path / "a")  # a directory: a/records.jsonl.gz
    back = r1.write(rows)
    assert back[0]["x"] == 0.1 + 0.2 and back[0]["tiny"] == 1e-300
    assert back[0]["p"] == float(np.float32(0.3)) and back[0]["n"] == 3 and back[0]["arr"] == [1.0, 2.5]
    assert back[0]["inf"] is None  # strict JSON
    assert list(back[0])[0] == "kind"
    r1.add("identity", q=1)
    assert RC.read_records(tmp_path / "a") == r1.rows
    # two gzip members, mtime 0: the same records give the same bytes
    r2 = RC.Records(tmp_path / "b.jsonl.gz")
    r2.write(rows)
    r2.add("identity", q=1)
    assert (tmp_path / "a" / RC.RECORDS).read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    with gzip.open(tmp_path / "b.jsonl.gz", "rt") as f:
        assert len(f.read().splitlines()) == 2
    # reopening without fresh keeps what is there
    assert RC.Records(tmp_path / "b.jsonl.gz", fresh=False).rows == r2.rows
    with pytest.raises(ValueError, match="kind"):
        r2.write([{"x": 1}])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_array_encoding_is_exact(dtype):
    a = (np.random.default_rng(0).standard_normal((3, 5)) * 1e3).astype(dtype)
    d = RC.roundtrip(RC.encode_array(a))
    b = RC.decode_array(d)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_compare_counts_exact_floats_tolerant_fields_strict():
    a = {"n": 3, "p": 0.5, "s": "x", "flag": True, "rows": [{"k": 1.0}, {"k": None}]}
    ok = RC.compare(a, json.loads(json.dumps(a)))
    assert not ok["mismatches"] and ok["n_numbers"] == 3 and ok["n_other"] == 3
    assert not RC.compare(a, {**a, "p": 0.5 * (1 + 1e-12)})["mismatches"]
    assert RC.compare(a, {**a, "p": 0.5 * (1 + 1e-6)})["mismatches"][0][0] == "p"
    assert RC.compare(a, {**a, "n": 4})["mismatches"][0][0] == "n"
    assert RC.compare(a, {**a, "s": "y"})["mismatches"][0][0] == "s"
    assert RC.compare(a, {**a, "flag": 1})["mismatches"][0][0] == "flag"
    assert RC.compare(a, {k: v for k, v in a.items() if k != "s"})["mismatches"][0] == ("s", "x", "<missing>")
    assert RC.compare(a, {**a, "rows": [{"k": 1.0}]})["mismatches"][0][0] == "rows[1].k"
    assert RC.first_text_difference("a\nb\n", "a\nb\n") is None
    assert RC.first_text_difference("a\nb\n", "a\nc\n") == (2, "b", "c")


# ============================================================================================ a hand-made run
def _assistant_axis_fixture(d: Path) -> Path:
    """A tiny assistant-axis run written the way main() writes one, from synthetic records."""
    import assistant_axis as A
    from persona_vectors.judge import LABELS

    rng = np.random.default_rng(7)
    cfg = A.Config(quick=True, mode="quick", out=str(d), layers=[14], alphas=[1.0, -0.5, -1.0], n_questions=6,
                   n_random=2, n_identity_random=1, n_identity_questions=2, n_components=2, n_examples=2)
    run = A.C.RunDir(d, experiment=A.NAME)
    roles = ["ghost", "robot", "librarian", "pirate_captain"]
    cats = {"ghost": "supernatural", "robot": "ai_robot", "librarian": "profession", "pirate_captain": "fiction"}
    for L in range(30):
        ev = sorted(rng.dirichlet(np.ones(3))[: cfg.n_components].tolist(), reverse=True)
        run.records.add("pca_layer", layer=L, explained_variance_ratio=ev, cos_axis_pc=rng.uniform(-1, 1, 2).tolist(),
                        axis_rel_norm=float(rng.uniform(0.1, 1)))
    for L in cfg.layers:
        run.records.add("role_ends", layer=L, pc1_low=[["ghost", -1.5]], pc1_high=[["robot", 2.0]],
                        axis_low=[["ghost", -3.0], ["pirate_captain", -1.0]], axis_high=[["robot", 2.5]],
                        axis_by_category={c: float(rng.normal()) for c in sorted(set(cats.values()))},
                        axis_rank_categories_bottom20={"supernatural": 1, "fiction": 1})
    run.records.add("persona_space", n_layers=30, last_layer=29, n_roles=len(roles), n_default_prompts=2, roles=roles)
    texts = ["I am a ghost who walks the halls at night.", "I'm an AI assistant, happy to help.",
             "The wind whispers over the dark hills.", "Red flag.", "soul soul soul soul soul soul",
             "I am a teacher in a small village."]
    questions = [f"Question {q}?" for q in range(cfg.n_questions)]
    keys = [("none", -1, 0.0, q, 0) for q in range(cfg.n_questions)]
    keys += [(c, L, a, q, q % cfg.n_random if c == "random" else 0)
             for L in cfg.layers for c in ("axis", "random", "pair") for a in cfg.alphas for q in range(cfg.n_questions)]
    gens = []
    for i, (c, L, a, q, k) in enumerate(keys):
        p = rng.dirichlet(np.ones(len(LABELS)) * 0.5)
        if c == "axis" and a < 0 and q % 2 == 0:
            p = np.eye(len(LABELS))[LABELS.index("supernatural")] * 0.6 + p * 0.4
        gens.append({"kind": "generation", "condition": c, "layer": L, "alpha": a, "direction": k,
                     "direction_id": A._dir_id(c, k), "question_id": q, "question": questions[q], "seed": 0,
                     "decoding": "greedy", "text": texts[(i + q) % len(texts)], "label": LABELS[int(p.argmax())],
                     "judge": dict(zip(LABELS, p.tolist())), "coherence": float(rng.uniform(0.2, 1.0)),
                     "perplexity": float(rng.uniform(2, 200)), "repetition_rate": 0.0, "coherence_tokens": 12})
    run.records.write(gens)
    cands = [c for g in A.ID_GROUPS.values() for c in g]
    id_keys = [("none", -1, 0.0, 0)] + [(c, L, a, k) for L in cfg.layers for c, k in (("axis", 0), ("pair", 0))
                                        + tuple(("random", k) for k in range(cfg.n_identity_random)) for a in cfg.alphas]
    for c, L, a, k in id_keys:
        for qi in range(cfg.n_identity_questions):
            p = rng.dirichlet(np.ones(len(cands)))
            run.records.add("identity", condition=c, layer=L, alpha=a, direction=k, direction_id=A._dir_id(c, k),
                            question_id=qi, question=f"Identity {qi}", probs=dict(zip(cands, p.tolist())),
                            logprobs=dict(zip(cands, np.log(p).tolist())))
    for L in cfg.layers:
        for c in ("axis", "random", "pair"):
            for a in cfg.alphas:
                for k in range(cfg.n_random if c == "random" else 1):
                    for R in sorted({L, min(L + cfg.readout_offset, 29)}):
                        cs = rng.uniform(-1, 1, len(roles))
                        run.records.add("nearest_roles", condition=c, layer=L, alpha=a, direction=k, read_layer=R,
                                        top=[[roles[j], float(cs[j])] for j in np.argsort(-cs)],
                                        top10_categories={cats[r]: 1 for r in roles},
                                        mean_cos_by_category={cats[r]: float(cs[j]) for j, r in enumerate(roles)},
                                        shift_rel_norm=float(rng.uniform(0, 2)))
    run.write_config(cfg, runtime={"total": 12.3, "threads": 1, "load_start": 0.5}, judge_note="synthetic judge",
                     identity_groups=A.ID_GROUPS)
    results = run.write_results(A.summarize(run.records.rows, run.config_doc))
    run.write_report(A.render(results, run.config_doc))
    return d


@pytest.fixture()
def tiny_run(tmp_path) -> Path:
    return _assistant_axis_fixture(tmp_path / "aa")


def test_fixture_replays(tiny_run, capsys):
    res = recompute.recompute(tiny_run)
    assert res["experiment"] == "assistant_axis" and res["records"] > 100
    assert res["numbers"] > 500 and res["report_numbers"] > 200
    out = capsys.readouterr().out
    assert "cells" in out and "identical" in out
    assert recompute.main([str(tiny_run)]) == 0
    # a folder of run directories is expanded one level down
    assert recompute.main([str(tiny_run.parent)]) == 0
    rep = (tiny_run / "report.md").read_text()
    assert "**Verdict:**" in rep and "Q1 [" in rep


def test_fixture_counts_are_what_the_records_say(tiny_run):
    """The cell counts in results.json are counts over the generation records (an independent tally)."""
    recs = RC.read_records(tiny_run)
    res = RC.read_json(tiny_run / "results.json")
    cell = next(c for c in res["cells"] if c["condition"] == "axis" and c["alpha"] == -1.0)
    gens = [g for g in recs if g["kind"] == "generation" and g["condition"] == "axis" and g["alpha"] == -1.0]
    assert cell["n"] == len(gens) == 6
    assert cell["k_super"] == sum(g["label"] == "supernatural" for g in gens)
    assert cell["n_coherent"] == sum(g["coherence"] >= 0.5 for g in gens)
    assert cell["labels"] == {k: v for k, v in __import__("collections").Counter(g["label"] for g in gens).items()}


def _tamper_json(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def test_tampered_result_number_is_named(tiny_run, capsys):
    _tamper_json(tiny_run / "results.json", lambda r: r["cells"][1].__setitem__("mean_coherence",
                                                                                  r["cells"][1]["mean_coherence"] * (1 + 1e-7)))
    with pytest.raises(recompute.RecomputeError, match=r"cells\[1\]\.mean_coherence"):
        recompute.recompute(tiny_run)
    assert recompute.main([str(tiny_run)]) == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_tampered_count_is_named(tiny_run):
    _tamper_json(tiny_run / "results.json", lambda r: r["verdict"][0]["pool"]["axis"].__setitem__(
        "k_coh", r["verdict"][0]["pool"]["axis"]["k_coh"] + 1))
    with pytest.raises(recompute.RecomputeError, match=r"verdict\[0\]\.pool\.axis\.k_coh"):
        recompute.recompute(tiny_run)


def test_tampered_record_is_detected(tiny_run):
    recs = RC.read_records(tiny_run)
    g = next(r for r in recs if r["kind"] == "generation" and r["condition"] == "axis" and r["alpha"] == -1.0)
    g["label"] = "supernatural" if g["label"] != "supernatural" else "ai_assistant"
    w = RC.Records(tiny_run / RC.RECORDS)
    w.write(recs)
    with pytest.raises(recompute.RecomputeError, match="results.json field"):
        recompute.recompute(tiny_run)


def test_tampered_report_line_is_named(tiny_run):
    p = tiny_run / "report.md"
    lines = p.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("**Verdict:**"))
    lines[i] = lines[i].replace("%", " %", 1)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(recompute.RecomputeError, match=rf"report.md line {i + 1}"):
        recompute.recompute(tiny_run)


def test_missing_field_and_unknown_experiment(tiny_run, tmp_path, capsys):
    _tamper_json(tiny_run / "results.json", lambda r: r["headline"].pop("bonferroni_p"))
    with pytest.raises(recompute.RecomputeError, match="bonferroni_p.*<missing>"):
        recompute.recompute(tiny_run)
    _tamper_json(tiny_run / "config.json", lambda c: c.__setitem__("experiment", "no_such_experiment"))
    assert recompute.main([str(tiny_run)]) == 2
    assert "unknown experiment 'no_such_experiment'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert recompute.main([str(empty)]) == 2


# ============================================================================================ committed data
def test_docs_data_is_committed():
    names = {d.name for d in COMMITTED}
    # finetune_personas: the default run's base model and its 6 colour datasets (the run was stopped by a SIGTERM
    # during bitcoin_prices; its config.json says so under "interrupted")
    assert {"assistant_axis", "persona_arithmetic", "finetune_personas"} <= names, names
    for d in COMMITTED:
        assert (d / RC.RECORDS).stat().st_size < 5_000_000, f"{d} records over 5 MB"
        assert (d / RC.RESULTS).is_file() and (d / RC.REPORT).is_file()


@pytest.mark.parametrize("run_dir", COMMITTED, ids=[d.name for d in COMMITTED])
def test_committed_run_replays(run_dir, tmp_path):
    """CI: every number of each committed report is recomputed from its records; a tampered copy fails
    (about 1 s per run, so not in the slow tier: ``make test-fast`` checks the committed data too)."""
    res = recompute.recompute(run_dir)
    assert res["numbers"] > 0 and res["report_numbers"] > 0
    cp = tmp_path / run_dir.name
    shutil.copytree(run_dir, cp)
    import re

    text = (cp / RC.RESULTS).read_text()
    obj = json.loads(text)

    def parts_of(path: str) -> list[str] | None:
        """The path's steps, or None when a key holds a '.' (e.g. a KL level "2.0") and the path is ambiguous."""
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        cur = obj
        try:
            for part in parts:
                cur = cur[int(part[1:-1])] if part.startswith("[") else cur[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        return parts

    leaves = [(p, v) for p, v in RC.leaves(RC.read_json(cp / RC.RESULTS))
              if isinstance(v, float) and not isinstance(v, bool) and v != 0.0 and parts_of(p) is not None]
    path, value = leaves[len(leaves) // 2]
    # set that leaf to value * (1 + 1e-6) by walking the path
    parts = parts_of(path)
    cur = obj
    for part in parts[:-1]:
        cur = cur[int(part[1:-1])] if part.startswith("[") else cur[part]
    last = parts[-1]
    if last.startswith("["):
        cur[int(last[1:-1])] = value * (1 + 1e-6)
    else:
        cur[last] = value * (1 + 1e-6)
    (cp / RC.RESULTS).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
    with pytest.raises(recompute.RecomputeError, match=re.escape(path)):
        recompute.recompute(cp)
