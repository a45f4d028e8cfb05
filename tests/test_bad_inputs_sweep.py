"""Bad inputs to sweeps (TOML config, output path, results files, non-finite steering): one test per input.

Each test asserts the exact outcome: the library's error type, that the message names the fix, exit code 2 with a
single ``error: ...`` line for the CLI, and that no file outside the command's target changed.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from _fs import assert_unchanged, snapshot
from _sweep_child import build
from persona_vectors import PersonaVector
from persona_vectors.cli import app
from persona_vectors.sweep import (
    JsonlStore,
    StoreCorruptError,
    SweepConfig,
    SweepConfigError,
    SweepConfigMismatchError,
    SweepStoreError,
    SweepStoreLockedError,
    check_sweep_output,
    lock_path,
    lock_store,
    run_sweep,
    sidecar_path,
    summarize,
)

GOOD = 'name = "t"\nalphas = [0, 1]\nlayers = [1]\nprompts = ["Hi", "Who are you?"]\nmax_new_tokens = 3\n'


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs with one torch thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def setup(tiny):
    return build(tiny)


@pytest.fixture(scope="module")
def vec_dir(setup, tmp_path_factory) -> Path:
    """The test vector saved on disk (outside each test's tmp_path, which the snapshots cover)."""
    _, cfg = setup
    d = tmp_path_factory.mktemp("vec") / "rand"
    cfg.vectors["rand"].save(d)
    return d


@pytest.fixture
def cli(tiny, monkeypatch):
    """Run the CLI on the tiny model; returns ``invoke(*args)``."""
    monkeypatch.setattr("persona_vectors.cli.base.load_model_arg", lambda *a, **k: tiny)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def _toml(tmp_path: Path, vec_dir: Path, extra: str = "", name: str = "s.toml", body: str = GOOD) -> Path:
    p = tmp_path / name
    p.write_text(body + extra + f'[vectors]\nrand = "{vec_dir}"\n')
    return p


def _one_error_line(res) -> str:
    """Exit code 2, no traceback, exactly one ``error:`` line; returns it."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    return errors[0]


def _cfg_error(tmp_path: Path, vec_dir: Path, text: str, cli, *, match: str) -> str:
    """The config file ``text`` fails in the library and in the CLI (before any model load), changing nothing."""
    p = tmp_path / "bad.toml"
    p.write_text(text.replace("VEC", str(vec_dir)))
    before = snapshot(tmp_path)
    with pytest.raises(SweepConfigError, match=match) as err:
        SweepConfig.from_toml(p)
    msg = str(err.value)
    assert "\n" not in msg and str(p) in msg
    line = _one_error_line(cli("sweep", p))
    assert re.search(match, line) and str(p) in line
    assert_unchanged(before, snapshot(tmp_path))
    return msg


BASE = 'alphas = [0]\nlayers = [1]\nprompts = ["x"]\n'
VEC = '[vectors]\nv = "VEC"\n'

# ------------------------------------------------------------------------------------------ TOML config


def test_bad_toml_malformed(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, "alphas = [0\n", cli, match="not valid TOML")


def test_bad_toml_unknown_key(tmp_path, vec_dir, cli):
    msg = _cfg_error(tmp_path, vec_dir, BASE.replace("layers", "layer") + VEC, cli, match="unknown key 'layer'")
    assert "did you mean 'layers'" in msg


def test_bad_toml_unknown_key_lists_known_keys(tmp_path, vec_dir, cli):
    msg = _cfg_error(tmp_path, vec_dir, BASE + "zzz = 1\n" + VEC, cli, match="unknown key 'zzz'")
    assert "known keys:" in msg and "alphas" in msg


def test_bad_toml_top_p_out_of_range(tmp_path, vec_dir, cli):
    msg = _cfg_error(tmp_path, vec_dir, BASE + "top_p = 7.0\n" + VEC, cli, match="'top_p' must be a number in")
    assert "(0, 1]" in msg and "7.0" in msg


def test_bad_toml_bool_where_integer_expected(tmp_path, vec_dir, cli):
    text = 'alphas = [0]\nlayers = [1]\nquestions = "evaluation"\nn_questions = true\n' + VEC
    msg = _cfg_error(tmp_path, vec_dir, text, cli, match="'n_questions' must be a positive integer")
    assert ">= 1" in msg and "True" in msg


def test_bad_toml_bool_in_integer_list(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE.replace("[1]", "[true]") + VEC, cli, match="'layers' must hold integers")


def test_bad_toml_bool_samples(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE + "samples = true\n" + VEC, cli, match="'samples' must be a positive integer")


def test_bad_toml_negative_temperature(tmp_path, vec_dir, cli):
    msg = _cfg_error(tmp_path, vec_dir, BASE + "temperature = -0.5\n" + VEC, cli, match="'temperature' must be")
    assert ">= 0" in msg and "0 = greedy" in msg


def test_bad_toml_nan_temperature(tmp_path, vec_dir, cli):
    msg = _cfg_error(tmp_path, vec_dir, BASE + "temperature = nan\n" + VEC, cli, match="'temperature' must be a finite")
    assert "nan" in msg


def test_bad_toml_nan_alpha(tmp_path, vec_dir, cli):
    msg = _cfg_error(tmp_path, vec_dir, BASE.replace("[0]", "[0, nan]") + VEC, cli,
                     match="'alphas' must hold finite numbers")
    assert "nan" in msg


def test_bad_toml_inf_alpha(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE.replace("[0]", "[-inf]") + VEC, cli, match="'alphas' must hold finite numbers")


def test_bad_toml_nan_threshold(tmp_path, vec_dir, cli):
    text = BASE + 'operator = "cap"\nthreshold = nan\n' + VEC
    _cfg_error(tmp_path, vec_dir, text, cli, match="'threshold' must be a finite number")


def test_bad_toml_inf_threshold(tmp_path, vec_dir, cli):
    text = BASE + 'operator = "cap"\nthreshold = inf\n' + VEC
    _cfg_error(tmp_path, vec_dir, text, cli, match="'threshold' must be a finite number")


def test_bad_toml_cap_without_threshold(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE + 'operator = "cap"\n' + VEC, cli, match="'threshold' is required")


def test_bad_toml_unknown_operator(tmp_path, vec_dir, cli):
    msg = _cfg_error(tmp_path, vec_dir, BASE + 'operator = "multiply"\n' + VEC, cli, match="'operator' must be one of")
    assert "'add'" in msg and "'multiply'" in msg


def test_bad_toml_wrong_type_in_prompts(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE.replace('["x"]', '["x", 3]') + VEC, cli,
               match="'prompts' must be a list of strings")


def test_bad_toml_wrong_type_in_alphas(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE.replace("[0]", '[0, "big"]') + VEC, cli, match="'alphas' must hold finite numbers")


def test_bad_toml_string_for_boolean(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE + 'relative = "yes"\n' + VEC, cli, match="'relative' must be true or false")


def test_bad_toml_vector_entry_not_a_path(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE + "[vectors]\nv = 3\n", cli, match="'vectors' entry 'v' must be a vector directory")


def test_bad_toml_missing_vectors(tmp_path, vec_dir, cli):
    _cfg_error(tmp_path, vec_dir, BASE, cli, match="missing key 'vectors'")


def test_bad_toml_not_utf8(tmp_path, vec_dir, cli):
    p = tmp_path / "bad.toml"
    p.write_bytes(b"alphas = [0]\n\xff\xfe\x00garbage")
    before = snapshot(tmp_path)
    with pytest.raises(SweepConfigError, match="not UTF-8 text.*pass a TOML file"):
        SweepConfig.from_toml(p)
    assert "not UTF-8" in _one_error_line(cli("sweep", p))
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_toml_config_is_a_directory(tmp_path, cli):
    d = tmp_path / "conf.toml"
    d.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(SweepConfigError, match="is a directory.*pass the TOML file"):
        SweepConfig.from_toml(d)
    assert "is a directory" in _one_error_line(cli("sweep", d))
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_toml_missing_file(tmp_path, cli):
    before = snapshot(tmp_path)
    with pytest.raises(SweepConfigError, match="no such config file"):
        SweepConfig.from_toml(tmp_path / "nope.toml")
    assert "no such config file" in _one_error_line(cli("sweep", tmp_path / "nope.toml"))
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_python_config_huge_int_and_wrong_types():
    """Built in Python (not TOML): the same checks, never a TypeError/OverflowError."""
    base = dict(vectors={"v": "x"}, alphas=[0.0], layers=[1], prompts=["p"])
    for key, value, match in [
        ("alphas", [10**400], "'alphas' must hold finite numbers"),
        ("n_questions", "3", "'n_questions' must be a positive integer"),
        ("temperature", "hot", "'temperature' must be a finite number"),
        ("top_p", 0, r"'top_p' must be a number in \(0, 1\]"),
        ("positions", ["all"], "'positions' must be one of"),
        ("layers", [-1], "'layers' must be non-negative"),
        ("seeds", [1, 1], "'seeds' has duplicates"),
    ]:
        with pytest.raises(SweepConfigError, match=match):
            SweepConfig(**{**base, key: value})
    with pytest.raises(SweepConfigError, match="'n_questions' only applies with 'questions'"):
        SweepConfig(**base, n_questions=2)


# ------------------------------------------------------------------------------------------ output path


def test_bad_out_is_the_config_no_resume(tmp_path, vec_dir, cli):
    """Issue item 2: `sweep X.toml --out X.toml --no-resume` used to overwrite the config with results."""
    cfg = _toml(tmp_path, vec_dir)
    before = snapshot(tmp_path)
    line = _one_error_line(cli("sweep", cfg, "--out", cfg, "--no-resume"))
    assert "is the sweep config itself" in line and "pass another --out" in line and "s.results.jsonl" in line
    # the same file under another spelling, and through the library
    other = tmp_path / "sub" / ".." / "s.toml"
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path)
    assert "is the sweep config itself" in _one_error_line(cli("sweep", cfg, "--out", other, "--no-resume"))
    with pytest.raises(SweepStoreError, match="is the sweep config itself"):
        check_sweep_output(other, resume=False, config_path=cfg)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_out_is_the_config_run_sweep(tiny, tmp_path, vec_dir):
    """run_sweep knows where a TOML config came from and refuses to write over it, in both modes."""
    cfg_path = _toml(tmp_path, vec_dir)
    cfg = SweepConfig.from_toml(cfg_path)
    assert cfg.source == cfg_path
    before = snapshot(tmp_path)
    for resume in (True, False):
        with pytest.raises(SweepStoreError, match="is the sweep config itself"):
            run_sweep(tiny, cfg, cfg_path, resume=resume, progress=False)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_out_is_a_directory(tmp_path, vec_dir, cli):
    cfg = _toml(tmp_path, vec_dir)
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    line = _one_error_line(cli("sweep", cfg, "--out", tmp_path / "outdir", "--no-resume"))
    assert "is a directory" in line and "results.jsonl" in line
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_no_resume_on_foreign_file(tmp_path, vec_dir, cli, tiny, setup):
    """--no-resume deletes only a results file this library wrote."""
    cfg = _toml(tmp_path, vec_dir)
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"my": "data"}\n{"more": 1}\n')
    before = snapshot(tmp_path)
    line = _one_error_line(cli("sweep", cfg, "--out", notes, "--no-resume"))
    assert "is not a results file of persona-vectors" in line and "pass another --out" in line
    assert "--no-resume would delete it" in line
    with pytest.raises(SweepStoreError, match="not a results file"):
        run_sweep(tiny, setup[1], notes, resume=False, progress=False)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_resume_on_one_line_foreign_file(tmp_path, tiny, setup):
    """A one-line file used to be 'repaired' (truncated to nothing) as a crash artefact when resumed."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my only line of notes\n")
    before = snapshot(tmp_path)
    with pytest.raises(SweepStoreError, match="not a results file.*pass another --out"):
        run_sweep(tiny, setup[1], notes, progress=False)
    with pytest.raises(StoreCorruptError, match="line 1 is not a results row"):
        JsonlStore(notes)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_foreign_sidecar(tmp_path, tiny, setup):
    """results.config.json that is not a sweep sidecar would be overwritten: refused."""
    out = tmp_path / "results.jsonl"
    sidecar_path(out).write_text('{"learning_rate": 0.1}\n')
    before = snapshot(tmp_path)
    with pytest.raises(SweepStoreError, match="is not a sweep sidecar.*move it away or pass another --out"):
        run_sweep(tiny, setup[1], out, progress=False)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_foreign_lock_path(tmp_path, tiny, setup):
    out = tmp_path / "results.jsonl"
    lock_path(out).write_text("someone else's file\n")
    before = snapshot(tmp_path)
    with pytest.raises(SweepStoreError, match="is not a sweep lock file.*pass another --out"):
        run_sweep(tiny, setup[1], out, progress=False)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_store_in_use(tmp_path, vec_dir, cli):
    """Issue item 4: a second sweep on a locked store fails at once, naming the holder's PID."""
    cfg = _toml(tmp_path, vec_dir)
    out = tmp_path / "s.jsonl"
    with lock_store(out) as lk:
        assert lock_path(out) == lk and lk.read_text().startswith("persona-vectors sweep lock\npid: ")
        before = snapshot(tmp_path)
        line = _one_error_line(cli("sweep", cfg))
        assert f"results store {out} is in use by PID {os.getpid()} (another sweep is running)" in line
        assert "wait for it or pass another --out" in line
        with pytest.raises(SweepStoreLockedError, match=f"in use by PID {os.getpid()}"):
            with lock_store(out):
                pass
        assert_unchanged(before, snapshot(tmp_path))
    assert not lk.exists(), "the lock file is removed when the holder is done"


def test_bad_resume_with_different_config(tmp_path, vec_dir, cli):
    cfg = _toml(tmp_path, vec_dir)
    res = cli("sweep", cfg)
    assert res.exit_code == 0, res.output
    assert not lock_path(tmp_path / "s.jsonl").exists()
    _toml(tmp_path, vec_dir, body=GOOD.replace("[0, 1]", "[0, 2]"))
    before = snapshot(tmp_path)
    line = _one_error_line(cli("sweep", cfg))
    assert "different config (alphas: [0.0, 1.0] -> [0.0, 2.0])" in line and "another output path" in line
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_resume_with_different_model(tmp_path, setup):
    from conftest import make_tiny_model

    tiny, cfg = setup
    cfg = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "layers": [1], "alphas": [1.0],
                         "prompts": ["Hi"], "allow_other_model": True})
    out = tmp_path / "r.jsonl"
    run_sweep(tiny, cfg, out, progress=False)
    before = snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the vector is another model's (allowed here)
        with pytest.raises(SweepConfigMismatchError, match="was written with model tiny-llama-seed0.*resume=False"):
            run_sweep(make_tiny_model(seed=1), cfg, out, progress=False)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_layer_not_in_vector(tmp_path, vec_dir, cli):
    cfg = _toml(tmp_path, vec_dir, body=GOOD.replace("layers = [1]", "layers = [9]"))
    before = snapshot(tmp_path)
    line = _one_error_line(cli("sweep", cfg))
    assert "no direction at layer(s) [9]" in line and "change 'layers'" in line
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_vector_path_missing(tmp_path, cli):
    cfg = tmp_path / "s.toml"
    cfg.write_text(GOOD + '[vectors]\nrand = "no/such/vector"\n')
    before = snapshot(tmp_path)
    line = _one_error_line(cli("sweep", cfg))
    assert "no/such/vector" in line
    assert_unchanged(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------------------ non-finite steering


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_bad_alpha_overflows_in_sweep(tmp_path, vec_dir, cli):
    """Issue item 3: alpha 1e39 overflows the model's float32; such rows are never stored, the others are."""
    cfg = _toml(tmp_path, vec_dir, body=GOOD.replace("[0, 1]", "[0, 1, 1e39]"))
    out = tmp_path / "s.jsonl"
    before = snapshot(tmp_path, exclude=(out, sidecar_path(out)))
    res = cli("sweep", cfg)
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 row(s) of vector 'rand', layer 1, alpha 1e+39 not stored" in errors[0]
    assert "non-finite" in errors[0] and "smaller" in errors[0]
    rows = _rows(out)
    assert sorted(r["alpha"] for r in rows) == [0.0, 0.0, 1.0, 1.0]
    assert all(r["text"] is not None for r in rows)
    assert_unchanged(before, snapshot(tmp_path, exclude=(out, sidecar_path(out))))  # and no lock file left
    # a resume retries only the failed rows (and fails on them again, storing nothing twice)
    assert cli("sweep", cfg).exit_code == 2
    assert len(_rows(out)) == 4


def test_bad_vector_of_huge_values(tmp_path, setup):
    """A vector of 1e37s: every steered row is refused (alpha 0 rows are stored), with a warning per cell."""
    tiny, cfg = setup
    vec = cfg.vectors["rand"]
    big = PersonaVector(vec.sites, torch.full_like(vec.directions, 1e37), vec.provenance)
    cfg = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "vectors": {"big": big},
                         "layers": [2], "alphas": [0.0, 1.0]})
    out = tmp_path / "r.jsonl"
    with pytest.warns(UserWarning, match="3 row.*'big', layer 2, alpha 1 not stored"):
        rep = run_sweep(tiny, cfg, out, progress=False)
    assert rep.rows_written == 3 and rep.rows_failed == 3 and not rep.ok
    assert {f.alpha for f in rep.failures} == {1.0} and all("non-finite" in f.reason for f in rep.failures)
    assert {r["alpha"] for r in _rows(out)} == {0.0}
    assert len(rep.failure_lines()) == 1


def test_bad_nonfinite_residual_in_one_row(tmp_path, setup, monkeypatch):
    """The sweep's own guard (last layer) drops exactly the rows that go non-finite and regenerates the others,
    whether or not steering raised SteeringError itself."""
    tiny, cfg = setup
    cfg = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "layers": [1]})
    from persona_vectors.sites import Site

    hp = tiny.hook_point(Site(tiny.n_layers - 1))

    def poison(x, hook=None):  # row 1 of every 3-row batch (alpha 1.0) becomes NaN; single-row retries stay clean
        if x.shape[0] == 3:
            x = x.clone()
            x[1] = float("nan")
            return x
        return None

    from persona_vectors.record import remove_lens_handle

    h = hp.add_hook(poison)
    try:
        out = tmp_path / "r.jsonl"
        with pytest.warns(UserWarning, match="3 row.*alpha 1 not stored: non-finite residual stream at resid_post.3"):
            rep = run_sweep(tiny, cfg, out, progress=False)
    finally:
        remove_lens_handle(hp, h)
    assert rep.rows_failed == 3 and {f.alpha for f in rep.failures} == {1.0}
    rows = _rows(out)
    assert sorted({r["alpha"] for r in rows}) == [0.0, 2.0] and len(rows) == 6
    assert not any(hp.fwd_hooks for hp in tiny.bridge.hook_dict.values()), "guard hooks are removed"


def test_bad_readout_returns_nan(tmp_path, setup):
    tiny, cfg = setup
    cfg = SweepConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "layers": [1],
                         "prompts": ["Hi"]})

    def coherence(texts, rows):
        return [{"coherence": math.nan if r["alpha"] == 2.0 else 0.5} for r in rows]

    out = tmp_path / "r.jsonl"
    with pytest.warns(UserWarning, match="field 'coherence' is non-finite"):
        rep = run_sweep(tiny, cfg, out, readouts=[coherence], progress=False)
    assert rep.rows_failed == 1 and rep.failures[0].alpha == 2.0
    assert [r["coherence"] for r in _rows(out)] == [0.5, 0.5]


# ------------------------------------------------------------------------------------------ results files


def _results(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "r.jsonl"
    p.write_text("".join(x + "\n" for x in lines))
    return p


def _row(i: int, **kw) -> str:
    return json.dumps({"row_id": f"id{i}", "vector": "v", "layer": 1, "alpha": 0.0, "text": "t", **kw})


def _summarize_error(tmp_path: Path, p: Path, *, match: str) -> str:
    before = snapshot(tmp_path)
    with pytest.raises(StoreCorruptError, match=match) as err:
        summarize(p)
    line = _one_error_line(CliRunner().invoke(app, ["summarize", str(p)]))
    assert str(p) in line and re.search(match, line)
    assert_unchanged(before, snapshot(tmp_path))
    return str(err.value)


def test_bad_results_row_missing_alpha(tmp_path):
    p = _results(tmp_path, [_row(0), json.dumps({"row_id": "id1", "vector": "v", "layer": 1})])
    msg = _summarize_error(tmp_path, p, match=f"{p}:2: row lacks 'alpha'")
    assert "fix or delete that line" in msg


def test_bad_results_mixed_alpha_types(tmp_path):
    p = _results(tmp_path, [_row(0), _row(1, alpha="1.0"), _row(2, alpha=1)])
    msg = _summarize_error(tmp_path, p, match=f"{p}:2: 'alpha' must be a finite number, got '1.0'")
    assert "rerun the sweep into a new --out" in msg


def test_bad_results_layer_not_integer(tmp_path):
    p = _results(tmp_path, [_row(0, layer=[1])])
    _summarize_error(tmp_path, p, match=f"{p}:1: 'layer' must be an integer")


def test_bad_results_unhashable_label(tmp_path):
    p = _results(tmp_path, [_row(0, label=["ai_assistant"])])
    _summarize_error(tmp_path, p, match=f"{p}:1: 'label' must be a string")


def test_bad_results_corrupt_middle_line(tmp_path):
    p = _results(tmp_path, [_row(0), "{garbage", _row(2)])
    msg = _summarize_error(tmp_path, p, match="line 2 is corrupt and is not the last line")
    assert "inspect the file" in msg


def test_bad_results_json_array_line(tmp_path):
    p = _results(tmp_path, [_row(0), "[1, 2, 3]", _row(2)])
    _summarize_error(tmp_path, p, match="line 2 is corrupt")


def test_bad_results_not_a_results_file(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('alphas = [0]\n')
    _summarize_error(tmp_path, p, match="line 1 is not a results row.*not a results file of persona-vectors")


def test_bad_results_is_a_directory(tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(SweepStoreError, match="is a directory.*results .jsonl"):
        summarize(tmp_path)
    assert "is a directory" in _one_error_line(CliRunner().invoke(app, ["summarize", str(tmp_path)]))
    assert_unchanged(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------------------ property-based
# Untrusted files: every input either loads correctly or raises the library's own error type, and never writes
# (or, for the store's crash repair, only cuts a trailing partial line).

import tempfile  # noqa: E402

from hypothesis import HealthCheck, assume, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = list(SweepConfig.__dataclass_fields__)

scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(["evaluation", "extraction", "add", "cap", "all", "min", "max"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=8)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(_toml_value, v)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


numbers = st.one_of(st.integers(-3, 40), st.floats(-1e3, 1e3), st.sampled_from([math.nan, math.inf, 1e39, 7.0, 0.0]),
                    st.booleans())
PLAUSIBLE = {
    "alphas": st.lists(numbers, max_size=4), "layers": st.lists(numbers, max_size=3),
    "seeds": st.lists(numbers, max_size=3), "prompts": st.lists(st.one_of(st.text(max_size=6), numbers), max_size=3),
    "vectors": st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=6), numbers), max_size=2),
    "questions": st.sampled_from(["evaluation", "extraction", "other"]),
    "operator": st.sampled_from(["add", "ablate", "cap", "multiply"]),
    "positions": st.sampled_from(["all", "prompt", "response", "middle"]), "cap": st.sampled_from(["min", "max", "mid"]),
    "name": st.text(max_size=5), "system": st.text(max_size=5),
    **{k: numbers for k in ("n_questions", "samples", "max_new_tokens", "batch_size", "temperature", "top_p",
                            "threshold", "relative", "allow_other_model")},
}


@st.composite
def toml_texts(draw) -> str:
    data = {"alphas": [0, 1], "layers": [1], "prompts": ["x"], "vectors": {"v": "vecs/v"}}
    for key in draw(st.lists(st.sampled_from(KNOWN + ["alpha", "layer", "zzz"]), max_size=3)):
        data[key] = draw(st.one_of(PLAUSIBLE[key], values) if key in PLAUSIBLE else values)
    for key in draw(st.lists(st.sampled_from(["alphas", "layers", "prompts", "vectors"]), max_size=1)):
        data.pop(key, None)
    vectors = data.pop("vectors", None)  # a table must come last in TOML
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items())
    if vectors is not None:
        text += "[vectors]\n" + "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in vectors.items()) \
            if isinstance(vectors, dict) else f"vectors = {_toml_value(vectors)}\n"
    if draw(st.integers(0, 4)) == 0:  # damage the text
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=6)) + text[cut + draw(st.integers(0, 4)):]
    return text


@PROPERTY
@given(text=toml_texts(), raw=st.one_of(st.none(), st.none(), st.none(), st.none(), st.binary(max_size=40)))
def test_property_toml_config_loads_or_raises_sweep_config_error(text, raw):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.toml"
        if raw is not None:
            p.write_bytes(text.encode("utf-8", "surrogatepass")[: len(raw)] + raw)
        else:
            p.write_bytes(text.encode("utf-8", "surrogatepass"))
        before = snapshot(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cfg = SweepConfig.from_toml(p)
            except SweepConfigError as err:
                event("config error: " + str(err).split(": ", 1)[1][:14])
                assert str(p) in str(err) and "\n" not in str(err)
            else:
                event("config loaded")  # loaded: every field holds a valid value
                assert cfg.alphas and all(isinstance(a, float) and math.isfinite(a) for a in cfg.alphas)
                assert cfg.layers and all(type(x) is int and x >= 0 for x in cfg.layers)
                assert all(type(x) is int for x in cfg.seeds) and len(set(cfg.seeds)) == len(cfg.seeds)
                assert 0 < cfg.top_p <= 1 and math.isfinite(cfg.temperature) and cfg.temperature >= 0
                for key in ("samples", "max_new_tokens", "batch_size"):
                    assert type(getattr(cfg, key)) is int and getattr(cfg, key) >= 1
                assert cfg.n_questions is None or (type(cfg.n_questions) is int and cfg.n_questions >= 1)
                assert cfg.threshold is None or math.isfinite(cfg.threshold)
                assert all(isinstance(v, str) and v for v in cfg.vectors.values())
                assert type(cfg.relative) is bool and type(cfg.allow_other_model) is bool
        assert_unchanged(before, snapshot(d))


def _valid_row(i: int, alpha: float, layer: int) -> dict:
    return {"row_id": f"id{i}", "vector": "v", "layer": layer, "alpha": alpha, "prompt_id": "p0", "text": "t",
            "coherence": 0.5, "label": "ai_assistant"}


@st.composite
def results_lines(draw) -> tuple[list[bytes], bool]:
    """Lines of a results file: valid rows, rows with wrong types / missing keys, garbage; and whether all valid."""
    lines: list[bytes] = []
    all_valid = True
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["row", "row", "row", "wrong", "missing", "garbage", "array", "blank"]))
        row = _valid_row(draw(st.integers(0, 4)), draw(st.sampled_from([0.0, 1.0, 2, -4.5])), draw(st.integers(0, 3)))
        if kind == "wrong":
            row[draw(st.sampled_from(["alpha", "layer", "vector", "label", "row_id"]))] = draw(values)
        elif kind == "missing":
            row.pop(draw(st.sampled_from(["alpha", "layer", "vector", "row_id"])))
        if kind in ("row", "wrong", "missing"):
            line = json.dumps(row, allow_nan=True).encode()
        elif kind == "garbage":
            line = draw(st.binary(max_size=30)).replace(b"\n", b"")
        elif kind == "array":
            line = b"[1, 2, 3]"
        else:
            line = b""
        all_valid &= kind in ("row", "blank")
        lines.append(line)
    return lines, all_valid


@PROPERTY
@given(spec=results_lines(), cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_property_results_reader_loads_or_raises_store_error(spec, cut):
    lines, all_valid = spec
    data = b"".join(x + b"\n" for x in lines)
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.jsonl"
        p.write_bytes(data)
        before = snapshot(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # read-only consumers: a summary or the library's error, and not one byte written
            try:
                s = summarize(p)
            except SweepStoreError as err:
                event(f"summarize: {type(err).__name__}")
                assert not (all_valid and cut is None), "a file of valid rows must summarize"
            else:
                event("summarize: ok")
                assert s["n_rows"] == sum(c["n"] for c in s["cells"])
                if all_valid and cut is None:
                    ids = {json.loads(x)["row_id"] for x in lines if x}
                    assert s["n_rows"] == len(ids)
            try:
                rows = JsonlStore(p, repair=False).rows()
            except SweepStoreError:
                pass
            else:
                assert all(isinstance(r, dict) and isinstance(r["row_id"], str) for r in rows)
            try:
                check_sweep_output(p, resume=False)
            except SweepStoreError:
                pass
            else:  # would be deleted by --no-resume: only a results file of this library
                assert data == b"" or json.loads(data.split(b"\n", 1)[0])["row_id"]
            assert_unchanged(before, snapshot(d))
            # the writer's crash repair may only cut a trailing partial line
            try:
                store = JsonlStore(p)
            except SweepStoreError:
                assert p.read_bytes() == data
            else:
                after = p.read_bytes()
                assert data.startswith(after) and after.count(b"\n") >= data.count(b"\n") - 1
                assert len(JsonlStore(p)) == len(store) and p.read_bytes() == after  # repaired once, for good
        assert sorted(os.listdir(d)) == ["r.jsonl"]


@PROPERTY
@given(lines=st.lists(st.sampled_from([b'{"row_id": "a", "x": 1}', b"not json", b"", b"[]", b'{"row_id": 5}']),
                      max_size=5),
       tail=st.binary(max_size=20))
def test_property_check_sweep_output_never_accepts_a_foreign_file(lines, tail):
    """--no-resume deletes only files whose first line is a stored row (or empty files)."""
    data = b"".join(x + b"\n" for x in lines) + tail
    assume(b"\n" in data or not data.startswith(b'{"row_id": "'))  # a partial first row needs its sidecar
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.jsonl"
        p.write_bytes(data)
        first_is_row = data.split(b"\n", 1)[0] == b'{"row_id": "a", "x": 1}' and b"\n" in data
        try:
            check_sweep_output(p, resume=False)
        except SweepStoreError as err:
            assert "pass another --out" in str(err) and not first_is_row
        else:
            assert first_is_row or data == b""
