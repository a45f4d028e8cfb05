"""Sweeps: grid expansion, config parsing, the crash-safe JSONL store, a real SIGKILL + resume, summaries, CLI."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _sweep_child import PROMPTS, build, slow_readout
from persona_vectors.sweep import (
    JsonlStore,
    StoreCorruptError,
    SweepConfig,
    SweepConfigError,
    SweepConfigMismatchError,
    expand_grid,
    run_sweep,
    sidecar_path,
    summarize,
    summary_markdown,
)

CHILD = Path(__file__).with_name("_sweep_child.py")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny-model generation is much faster single-threaded on a busy box
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module", autouse=True)
def sweep_child(tmp_path_factory):
    """The SIGKILL test's child process, started with the module so its ~20 s of imports overlap other tests."""
    out = tmp_path_factory.mktemp("kill") / "killed.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(CHILD), str(out), "0.4", "--wait"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()


@pytest.fixture(scope="module")
def setup(tiny):
    return build(tiny)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ------------------------------------------------------------------------------------------ config, grid


def test_grid_expansion_counts():
    cfg = SweepConfig(vectors={"a": "x", "b": "y"}, alphas=[-1, 0, 1, 2], layers=[3, 5, 7], prompts=["p", "q"],
                      samples=2, seeds=[0, 1], temperature=0.7, batch_size=5)
    batches = expand_grid(cfg)
    rows = [r for b in batches for r in b.rows]
    assert len(rows) == 2 * 3 * 4 * 2 * 2 * 2
    assert len({r["row_id"] for r in rows}) == len(rows)
    assert all(len(b.rows) <= 5 for b in batches)
    # per (vector, layer, seed): 16 rows in batches of 5 -> 4 batches; 2*3*2 groups
    assert len(batches) == 2 * 3 * 2 * 4
    assert all(len({(r["vector"], r["layer"], r["seed"]) for r in b.rows}) == 1 for b in batches)
    assert {r["alpha"] for r in batches[0].rows} == {-1.0, 0.0, 1.0}  # alphas of one prompt share a generate call
    again = expand_grid(cfg)
    assert [r["row_id"] for b in again for r in b.rows] == [r["row_id"] for r in rows]
    assert [b.gen_seed for b in again] == [b.gen_seed for b in batches]
    q = SweepConfig(vectors={"a": "x"}, alphas=[0], layers=[1], questions="evaluation", n_questions=3)
    assert [pid for pid, _ in q.prompt_list()] == [r["prompt_id"] for b in expand_grid(q) for r in b.rows]
    assert len(q.prompt_list()) == 3


def test_from_toml(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('name = "t"\nalphas = [0, 4]\nlayers = [2]\nprompts = ["Who are you?"]\n'
                    'temperature = 0.5\n[vectors]\nv = "vecs/v"\n')
    cfg = SweepConfig.from_toml(good)
    assert cfg.alphas == [0.0, 4.0] and cfg.layers == [2] and cfg.temperature == 0.5
    assert cfg.vectors["v"] == str(tmp_path / "vecs/v")
    cases = {
        'alpha = [1]\nalphas = [0]\nlayers = [1]\nprompts = ["x"]\n[vectors]\nv = "a"\n': "unknown key 'alpha'.*'alphas'",
        'alphas = ["big"]\nlayers = [1]\nprompts = ["x"]\n[vectors]\nv = "a"\n': "'alphas' must hold finite numbers",
        'alphas = [0]\nlayers = [1.5]\nprompts = ["x"]\n[vectors]\nv = "a"\n': "'layers' must hold integers",
        'alphas = [0]\nlayers = [1]\n[vectors]\nv = "a"\n': "'prompts'",
        'alphas = [0]\nlayers = [1]\nprompts = ["x"]\n': "missing key 'vectors'",
        'alphas = [0]\nlayers = [1]\nprompts = ["x"]\npositions = "middle"\n[vectors]\nv = "a"\n': "'positions'",
        'alphas = [0\n': "not valid TOML",
    }
    for i, (text, pattern) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.toml"
        p.write_text(text)
        with pytest.raises(SweepConfigError, match=pattern) as err:
            SweepConfig.from_toml(p)
        assert "\n" not in str(err.value) and str(p) in str(err.value)


# ------------------------------------------------------------------------------------------ store


def test_store_round_trip(tmp_path):
    path = tmp_path / "r.jsonl"
    store = JsonlStore(path)
    rows = [{"row_id": f"id{i}", "text": f"t{i} ünï", "alpha": i * 0.5, "vec": torch.tensor([1.0, 2.0])} for i in range(4)]
    assert store.append(rows[:3]) == 3
    assert store.append(rows[1:]) == 1  # duplicates skipped
    again = JsonlStore(path)
    assert len(again) == 4 and again.row_ids == {f"id{i}" for i in range(4)}
    back = again.rows()
    assert [r["text"] for r in back] == [r["text"] for r in rows]
    assert back[0]["vec"] == [1.0, 2.0]
    assert all(line.endswith("\n") for line in path.read_text().splitlines(keepends=True))


def test_corrupt_trailing_line_dropped(tmp_path):
    path = tmp_path / "r.jsonl"
    JsonlStore(path).append([{"row_id": "a", "x": 1}, {"row_id": "b", "x": 2}])
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"row_id": "c", "x": 3, "te')  # crash mid-write
    with pytest.warns(UserWarning, match="partial trailing line"):
        store = JsonlStore(path)
    assert store.row_ids == {"a", "b"} and path.read_bytes() == good
    store.append([{"row_id": "c", "x": 3}])
    assert [r["row_id"] for r in _lines(path)] == ["a", "b", "c"]
    # a complete but garbled last line is also a crash artefact
    with open(path, "ab") as f:
        f.write(b"\x00\x00garbage\n")
    with pytest.warns(UserWarning):
        assert len(JsonlStore(path)) == 3
    assert len(_lines(path)) == 3
    # corruption in the middle is not: refuse instead of silently dropping rows
    path.write_bytes(good[:5] + b"#" + good[6:] + b'{"row_id": "z"}\n')
    with pytest.raises(StoreCorruptError, match="line 1"):
        JsonlStore(path)


# ------------------------------------------------------------------------------------------ runs


def test_run_sweep_batches_alphas_and_resumes(tiny, setup, tmp_path, monkeypatch):
    _, cfg = setup
    out = tmp_path / "res.jsonl"
    calls = []
    real = tiny.generate_tokens

    def counting(prompts, **kw):
        calls.append(len(prompts))
        return real(prompts, **kw)

    monkeypatch.setattr(tiny, "generate_tokens", counting)
    rep = run_sweep(tiny, cfg, out, progress=False, readouts=[slow_readout(0.0)])
    batches = expand_grid(cfg)
    assert calls == [len(b.rows) for b in batches] and len(calls) == 6  # 3 alphas per prompt in one call
    rows = _lines(out)
    assert rep.rows_written == len(rows) == 2 * 3 * 3
    assert {r["row_id"] for r in rows} == {r["row_id"] for b in batches for r in b.rows}
    assert all(r["batch_rows"] == 3 for r in rows)
    # alpha = 0 rows equal unsteered generation; steering changed some others
    monkeypatch.undo()
    zero = [r for r in rows if r["alpha"] == 0.0 and r["layer"] == 1]
    base = tiny.generate(PROMPTS, max_new_tokens=4)
    assert [r["text"] for r in sorted(zero, key=lambda r: r["prompt_id"])] == base
    assert any(r["text"] != base[PROMPTS.index(r["prompt"])] for r in rows if r["alpha"] == 2.0)
    side = json.loads(sidecar_path(out).read_text())
    assert side["model"]["fingerprint"] == tiny.info.fingerprint and side["config"]["alphas"] == [0.0, 1.0, 2.0]
    assert len(side["config"]["vectors"]["rand"]["sha256"]) == 16
    # resuming a complete sweep writes nothing; a lost half batch is regenerated identically
    assert run_sweep(tiny, cfg, out, progress=False).rows_written == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-2]))
    rep2 = run_sweep(tiny, cfg, out, progress=False, readouts=[slow_readout(0.0)])
    assert rep2.rows_written == 2 and rep2.batches_run == 1
    assert _lines(out) == rows
    # a different config refuses to resume, naming what changed
    changed = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "alphas": [0.0, 1.0, 3.0]})
    with pytest.raises(SweepConfigMismatchError, match="alphas"):
        run_sweep(tiny, changed, out, progress=False)
    assert len(_lines(out)) == len(rows)
    # summary
    s = summarize(out)
    assert s["n_rows"] == 18 and len(s["cells"]) == 6 and all(c["n"] == 3 for c in s["cells"])
    assert s["cells"][0]["means"]["batch_rows"] == 3.0


class FakeJudge:
    """Labels by text length so the shares are deterministic."""

    def classify(self, texts):
        class R:
            def __init__(self, label):
                self.label, self.scores = label, {label: 1.0}

        return [R("ai_assistant" if len(t) % 2 == 0 else "human") for t in texts]


def test_judge_and_summary_table(tiny, setup, tmp_path):
    _, cfg = setup
    cfg = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "layers": [1], "alphas": [0.0, 2.0]})
    out = tmp_path / "j.jsonl"
    coherence = lambda texts, rows: [{"coherence": len(t) / 10} for t in texts]  # noqa: E731
    run_sweep(tiny, cfg, out, judge=FakeJudge(), readouts=[coherence], progress=False)
    rows = _lines(out)
    assert all(r["label"] in ("ai_assistant", "human") for r in rows)
    s = summarize(out)
    cell = s["cells"][0]
    k = sum(1 for r in rows if r["alpha"] == cell["alpha"] and r["label"] == "human")
    assert cell["labels"]["human"]["k"] == k and cell["n"] == 3
    assert cell["labels"]["human"]["low"] <= cell["labels"]["human"]["share"] <= cell["labels"]["human"]["high"]
    assert set(cell["labels"]) >= {"ai_assistant", "human", "supernatural"}  # all archetypes listed
    assert cell["coherence"] == pytest.approx(sum(len(r["text"]) / 10 for r in rows if r["alpha"] == cell["alpha"]) / 3)
    md = summary_markdown(s)
    assert md.startswith("| vector | layer | alpha |") and md.count("\n") == 2 + len(s["cells"])
    assert "coherence" in md and "supernatural" not in md


def test_resume_false_starts_over_and_model_mismatch(tiny, setup, tmp_path):
    from conftest import make_tiny_model

    _, cfg = setup
    cfg = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "layers": [1], "alphas": [1.0],
                         "prompts": ["Hi"]})
    out = tmp_path / "r.jsonl"
    run_sweep(tiny, cfg, out, progress=False)
    assert len(_lines(out)) == 1
    run_sweep(tiny, cfg, out, progress=False, resume=False)
    assert len(_lines(out)) == 1
    other = make_tiny_model(seed=1)
    with pytest.raises(ValueError, match="allow_other_model"):
        run_sweep(other, cfg, out, progress=False)
    sidecar_path(out).unlink()
    with pytest.raises(SweepConfigMismatchError, match="config.json"):
        run_sweep(tiny, cfg, out, progress=False)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_summarize_and_bad_config(tiny, setup, tmp_path):
    from typer.testing import CliRunner

    from persona_vectors.cli import app

    _, cfg = setup
    cfg = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "layers": [1], "alphas": [0.0],
                         "prompts": ["Hi"]})
    out = tmp_path / "c.jsonl"
    run_sweep(tiny, cfg, out, progress=False)
    runner = CliRunner()
    res = runner.invoke(app, ["summarize", str(out)])
    assert res.exit_code == 0 and "| rand | 1 | 0 |" in res.output
    res = runner.invoke(app, ["summarize", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["n_rows"] == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('alphas = [0]\nlayer = [1]\nprompts = ["x"]\n[vectors]\nv = "a"\n')
    res = runner.invoke(app, ["sweep", str(bad)])
    assert res.exit_code == 2 and "unknown key 'layer'" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["steer", "--vector", str(tmp_path / "nope"), "--alpha", "1", "--layer", "1",
                              "--prompt", "Hi"])
    assert res.exit_code == 2 and "No vector at" in res.output


# ------------------------------------------------------------------------------------------ crash (last: the child
# process starts with the module and imports torch/transformers while the tests above run)


def test_sigkill_then_resume_has_every_row_once(tiny, setup, tmp_path, sweep_child):
    """A real crash: SIGKILL the sweep child mid-run, rerun to completion, compare with an uninterrupted run."""
    _, cfg = setup
    proc, out = sweep_child
    total = sum(len(b.rows) for b in expand_grid(cfg))
    deadline = time.time() + 240
    ready = b""
    while b"ready" not in ready:
        if proc.poll() is not None:
            pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            pytest.fail("child did not start in time")
        if select.select([proc.stdout], [], [], 1.0)[0]:
            ready += proc.stdout.readline()
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    while time.time() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    else:
        pytest.fail("child wrote no rows in time")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    n_before = len(JsonlStore(out, repair=False).rows())
    assert 3 <= n_before < total, "the kill should land mid-sweep"
    run_sweep(tiny, cfg, out, readouts=[slow_readout(0.0)], progress=False)
    ids = [r["row_id"] for r in _lines(out)]
    expected = {r["row_id"] for b in expand_grid(cfg) for r in b.rows}
    assert len(ids) == len(set(ids)) == total and set(ids) == expected
    clean = tmp_path / "clean.jsonl"
    run_sweep(tiny, cfg, clean, readouts=[slow_readout(0.0)], progress=False)
    by_id = {r["row_id"]: r["text"] for r in _lines(clean)}
    assert {r["row_id"]: r["text"] for r in _lines(out)} == by_id
