"""Smoke tests of the experiment scripts in --quick mode (embedded model; slow).

Each runs ``main(cfg)`` into ``tmp_path`` and checks the run directory: config.json (experiment, config, seed,
library version, model fingerprint), records.jsonl.gz (one record per generation / read-out), results.json,
results.jsonl, report.md with a verdict line, self-contained HTML figures — and replays the run with
``experiments/recompute.py`` (every number of results.json and the report text from the records). The
persona-arithmetic run is repeated with the same seed to check the results are identical (it is cheap:
teacher-forced read-outs only, no generation once the role answers are cached).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

pytestmark = pytest.mark.slow


def _replay(d: Path, experiment: str) -> dict:
    import recompute
    import records as RC

    cfg = json.loads((d / "config.json").read_text())
    assert cfg["experiment"] == experiment
    assert RC.read_records(d), "records.jsonl.gz is empty"
    out = recompute.recompute(d)
    assert out["numbers"] > 0 and out["report_numbers"] > 0
    return out


def _check_run_dir(d: Path, kinds: set[str]) -> list[dict]:
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["config"]["quick"] is True
    assert cfg["config"]["seed"] == 0
    assert cfg["library_version"]
    assert cfg["model"]["fingerprint"] and cfg["model"]["model_id"]
    assert "total" in cfg["timings_s"]
    rows = [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines() if line.strip()]
    assert rows, "results.jsonl is empty"
    assert kinds <= {r["kind"] for r in rows}
    report = (d / "report.md").read_text()
    assert "**Verdict:**" in report
    htmls = sorted(d.glob("*.html"))
    assert htmls, "no HTML figures"
    for h in htmls:
        text = h.read_text()
        assert "<html" in text.lower() and "plotly" in text.lower()
        # plotly.js is inline: no <script src=...> pointing at a server (the bundle itself mentions
        # cdn.plot.ly as a topojson default, which a map never fetches)
        assert not re.search(r"<script[^>]*src=[\"']?(https?:)?//", text, re.I)
    return rows


def _stable(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] != "timing"]


def test_assistant_axis_quick(tmp_path, smol):
    import assistant_axis as A

    cfg = A.Config.preset(quick=True, out=str(tmp_path / "aa"))
    out = A.main(cfg, model=smol)
    rows = _check_run_dir(tmp_path / "aa", {"pca_layer", "role_ends", "generation", "cell", "identity",
                                             "nearest_roles", "verdict"})
    assert out["runtime_s"] > 0
    gens = [r for r in rows if r["kind"] == "generation"]
    n_cells = 1 + len(cfg.layers) * 3 * len(cfg.alphas)
    assert len(gens) == n_cells * cfg.n_questions
    assert all(r["label"] for r in gens)
    assert (tmp_path / "aa" / "persona_map.html").is_file()
    assert (tmp_path / "aa" / "share_vs_alpha.html").is_file()
    pca = [r for r in rows if r["kind"] == "pca_layer"]
    assert len(pca) == 30
    assert all(0 < r["explained_variance_ratio"][0] <= 1 for r in pca)
    import records as RC

    recs = RC.read_records(tmp_path / "aa")
    gen = [r for r in recs if r["kind"] == "generation"]
    assert len(gen) == len(gens)
    assert all(set(r["judge"]) >= {"supernatural", "no_self"} and r["label"] == max(r["judge"], key=r["judge"].get)
               for r in gen)
    ids = [r for r in recs if r["kind"] == "identity"]
    assert len(ids) == (1 + len(cfg.layers) * (2 + cfg.n_identity_random) * len(cfg.alphas)) * cfg.n_identity_questions
    _replay(tmp_path / "aa", "assistant_axis")


def test_persona_arithmetic_quick_deterministic(tmp_path, smol):
    import persona_arithmetic as B

    # pin the thread count: threads=0 picks 1 or 2 from the load average, and 1 vs 2 threads differ in the
    # 6th decimal of some probabilities (seen in CI under xdist, where the load moves between the two runs)
    threads = torch.get_num_threads()
    cfg1 = B.Config.preset(quick=True, out=str(tmp_path / "pa1"), threads=threads)
    B.main(cfg1, model=smol)
    rows1 = _check_run_dir(tmp_path / "pa1", {"geometry", "identity", "mixing", "user", "verdict"})
    cfg2 = B.Config.preset(quick=True, out=str(tmp_path / "pa2"), threads=threads)
    B.main(cfg2, model=smol)
    rows2 = _check_run_dir(tmp_path / "pa2", {"geometry", "identity", "mixing", "user", "verdict"})
    assert _stable(rows1) == _stable(rows2)
    ver = [r for r in rows1 if r["kind"] == "verdict"][0]
    assert ver["word"]
    # same seed, same records (gzip with mtime 0: same bytes) and same results
    assert (tmp_path / "pa1" / "records.jsonl.gz").read_bytes() == (tmp_path / "pa2" / "records.jsonl.gz").read_bytes()
    assert (tmp_path / "pa1" / "results.json").read_text() == (tmp_path / "pa2" / "results.json").read_text()
    _replay(tmp_path / "pa1", "persona_arithmetic")


def test_finetune_personas_quick(tmp_path):
    import finetune_personas as F

    cfg = F.quick_config(out_dir=str(tmp_path / "ft"))
    summary = F.main(cfg)
    assert summary["n_runs"] == 3 and summary["datasets"] == ["colours_red"]
    base, screens, runs = F.load_results(tmp_path / "ft")
    assert base is not None and "colours_red" in screens
    assert set(runs) == {("colours_red", c) for c in F.CONDITIONS}
    for r in runs.values():
        assert r["steps"] == 4 and len(r["losses"]) == 4
        assert all(math.isfinite(x) for x in r["losses"])
        assert r["ppl_general"] > 1 and 0 <= r["empty_rate"] <= 1
        assert set(r["shift_last_prompt"]) >= {"shift", "ci_low", "ci_high"}
    prev = runs[("colours_red", "preventative")]
    assert prev["preventative_report"], "preventative condition recorded no steering"
    assert runs[("colours_red", "plain")]["preventative_report"] in (None, {}, [])
    report = (tmp_path / "ft" / "report.md").read_text()
    assert "| colours_red | preventative |" in report
    html = (tmp_path / "ft" / "figures.html").read_text()
    assert not re.search(r"<script[^>]*src=[\"']?(https?:)?//", html, re.I)
    # the quick run never touches the committed docs
    assert cfg.docs_path is None
    import records as RC

    ans = [r for r in RC.read_records(tmp_path / "ft") if r["kind"] == "answer"]
    assert len(ans) == cfg.n_eval_questions * (1 + len(runs))
    assert all(len(r["proj_tuned"]["last_prompt"]) == 30 for r in ans if r["model"] != "base")
    _replay(tmp_path / "ft", "finetune_personas")
    # --report-only rebuilds the same report from the records
    before = (tmp_path / "ft" / "report.md").read_text()
    F.main(F.quick_config(out_dir=str(tmp_path / "ft"), report_only=True))
    assert (tmp_path / "ft" / "report.md").read_text() == before
