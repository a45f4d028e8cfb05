"""Bad inputs at the edges the other bad-input files do not own: output paths, OS errors, caches, map
results, GGUF export, and the embedded-model cache's integrity check (issue 12, items 5, 6 and parts of 12).

Every test asserts the exact outcome: the error type or exit code 2 with one ``error:`` line that names the
fix, and that no file outside the command's target changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from _fs import assert_unchanged, snapshot
from persona_vectors import PersonaVector, Provenance, Site
from persona_vectors.cli import app, os_error_message

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(result) -> str:
    """The CLI's single ``error:`` line (asserting there is exactly one and no traceback)."""
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, out
    return errors[0]


def _vector(tmp: Path, d_model: int = 8, value: float = 1.0) -> Path:
    v = PersonaVector([Site(1), Site(2)], torch.full((2, d_model), value), Provenance("toy", "0" * 16, d_model))
    return v.save(tmp / "vec")


def _world_dir() -> Path:
    """A fresh directory every user can enter (for runs as an unprivileged user)."""
    d = Path(tempfile.mkdtemp(prefix="pv-bad-"))
    d.chmod(0o777)
    return d


def _run_unprivileged(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI where permission bits bite: as ``nobody`` when we are root (root ignores them)."""
    cmd = [sys.executable, "-m", "persona_vectors.cli", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a directory unwritable")
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    full_env = {**os.environ, "HOME": str(cwd), "PERSONA_VECTORS_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------ output paths


def test_bad_map_out_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["map", "--demo-synthetic", "--out", str(tmp_path / "d")])
    line = _one_error_line(r)
    assert "is a directory" in line and "pass a file path" in line
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_map_out_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file")
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["map", "--demo-synthetic", "--out", str(tmp_path / "f" / "map.html")])
    line = _one_error_line(r)
    assert "is a file, not a directory" in line and "choose another path" in line
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_map_out_in_read_only_dir() -> None:
    work = _world_dir()
    try:
        ro = work / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        before = snapshot(work)
        r = _run_unprivileged(["map", "--demo-synthetic", "--out", str(ro / "map.html")], cwd=work)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert len(err) == 1 and "not writable" in err[0] and "writable location" in err[0], r.stderr
        assert_unchanged(before, snapshot(work, exclude=("cache",)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_bad_export_gguf_out_in_read_only_dir(tmp_path: Path) -> None:
    work = _world_dir()
    try:
        vec = _vector(work)
        for p in [vec, *vec.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        ro = work / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        before = snapshot(work)
        r = _run_unprivileged(["export-gguf", "--vector", str(vec), "--out", str(ro / "v.gguf")], cwd=work)
        assert r.returncode == 2, r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert len(err) == 1 and "not writable" in err[0], r.stderr
        assert_unchanged(before, snapshot(work, exclude=("cache",)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_bad_export_gguf_out_is_a_directory(tmp_path: Path) -> None:
    vec = _vector(tmp_path)
    (tmp_path / "outdir").mkdir()
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["export-gguf", "--vector", str(vec), "--out", str(tmp_path / "outdir")])
    assert "is a directory" in _one_error_line(r)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_export_gguf_scale_zero(tmp_path: Path) -> None:
    vec = _vector(tmp_path)
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["export-gguf", "--vector", str(vec), "--out", str(tmp_path / "v.gguf"), "--scale", "0"])
    line = _one_error_line(r)
    assert "all-zero" in line and "non-zero --scale" in line
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_export_gguf_scale_overflows_float32(tmp_path: Path) -> None:
    vec = _vector(tmp_path)
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["export-gguf", "--vector", str(vec), "--out", str(tmp_path / "v.gguf"), "--scale", "1e39"])
    line = _one_error_line(r)
    assert "overflows float32" in line and "--scale| below" in line
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_export_gguf_scale_nan_in_python(tmp_path: Path) -> None:
    from persona_vectors.export import export_control_vector_gguf

    vec = PersonaVector.load(_vector(tmp_path))
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="finite.*--scale 1"):
        export_control_vector_gguf(vec, tmp_path / "v.gguf", scale=float("nan"))
    assert_unchanged(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------------------ map --results


@pytest.mark.parametrize("line", ["[1, 2, 3]", '"a string"', "42", "null"])
def test_bad_map_results_line_not_an_object(tmp_path: Path, line: str) -> None:
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps({"vector": "v", "layer": 4, "alpha": 1.0}) + "\n" + line + "\n")
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["map", "--demo-synthetic", "--out", str(tmp_path / "m.html"), "--results", str(res)])
    err = _one_error_line(r)
    assert f"{res}:2" in err and "one JSON object per line" in err
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_map_results_missing_file(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["map", "--demo-synthetic", "--out", str(tmp_path / "m.html"),
                                 "--results", str(tmp_path / "nope.jsonl")])
    assert "No results file" in _one_error_line(r)
    assert_unchanged(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------------------ OSError wording


@pytest.mark.parametrize(
    "err, expect",
    [
        (PermissionError(13, "Permission denied", "/x/out.html"), "writable location"),
        (IsADirectoryError(21, "Is a directory", "/x/dir"), "not a directory"),
        (NotADirectoryError(20, "Not a directory", "/x/f/out"), "component of the path is a file"),
        (OSError(30, "Read-only file system", "/ro/out"), "writable location"),
        (OSError(28, "No space left on device", "/x/out"), "free disk space"),
        (FileNotFoundError("No results file at r.jsonl"), "No results file at r.jsonl"),
    ],
)
def test_bad_os_errors_become_one_line_naming_the_fix(err: OSError, expect: str) -> None:
    msg = os_error_message(err)
    assert "\n" not in msg and expect in msg
    if err.filename:
        assert str(err.filename) in msg


def test_bad_os_error_inside_a_command_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever raises the OSError deep inside, the CLI prints one line and exits 2 (no traceback)."""
    import persona_vectors.plotting as plotting

    def boom(fig, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(plotting, "write_html", boom)
    r = CliRunner().invoke(app, ["map", "--demo-synthetic", "--out", str(tmp_path / "m.html")])
    line = _one_error_line(r)
    assert str(tmp_path / "m.html") in line and "Permission denied" in line


def test_bad_cli_names_the_flag_not_the_python_keyword(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A vector of another model: the CLI hint is --allow-other-model, never allow_other_model=True."""
    from conftest import make_tiny_model

    import persona_vectors.cli as cli

    tiny = make_tiny_model()
    v = PersonaVector([Site(1)], torch.ones(1, tiny.d_model), Provenance("other-model", "f" * 16, tiny.d_model))
    path = v.save(tmp_path / "other")
    monkeypatch.setattr(cli.base, "load_model_arg", lambda model=None, device="cpu", **kw: tiny)
    before = snapshot(tmp_path)
    r = CliRunner().invoke(app, ["steer", "--vector", str(path), "--alpha", "1", "--layer", "1", "--max-new-tokens", "2"])
    line = _one_error_line(r)
    assert "--allow-other-model" in line and "allow_other_model=True" not in line
    assert_unchanged(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------------------ caches


def test_bad_unwritable_persona_cache_extracts_uncached_with_a_warning(tmp_path: Path) -> None:
    """Item 6: an extraction whose cache cannot be written runs to the end (warning) instead of dying."""
    from conftest import make_tiny_model

    from persona_vectors.personas import _WARNED_UNWRITABLE, extract_persona

    tiny = make_tiny_model()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    before = snapshot(tmp_path)
    _WARNED_UNWRITABLE.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = extract_persona(tiny, "pirate", "prompt", quick=True, layers=[1, 2], cache=blocker / "cache")
    assert res.vector.sites == (Site(1), Site(2)) and torch.isfinite(res.vector.directions).all()
    msgs = [str(w.message) for w in caught if "cannot write the" in str(w.message)]
    assert msgs and all("PERSONA_VECTORS_CACHE" in m for m in msgs)
    assert len(msgs) == len({m.split(" cache at ")[0] for m in msgs})  # once per cache kind, not per write
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_model_cache_checksum_detects_edits(tmp_path: Path) -> None:
    """Item 5 on a synthetic cache directory: intact, changed, missing, added, and old-format records."""
    from persona_vectors.models import CACHE_HASH, _cache_checksums, verify_model_cache

    d = tmp_path / "models" / "abc-v2"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(4096))
    (d / "config.json").write_text("{}")
    (d / "DONE").write_text(json.dumps({"hash": CACHE_HASH, "checksums": _cache_checksums(d)}))
    assert verify_model_cache(d) == []
    data = bytearray((d / "model.safetensors").read_bytes())
    data[2048] ^= 0x01  # one flipped bit
    (d / "model.safetensors").write_bytes(bytes(data))
    assert verify_model_cache(d) == ["model.safetensors changed since it was built"]
    (d / "model.safetensors").unlink()
    (d / "extra.bin").write_bytes(b"x")
    assert verify_model_cache(d) == ["model.safetensors missing", "extra.bin not part of the build"]
    (d / "DONE").write_text(json.dumps({"source": "x", "format": 1}))
    assert verify_model_cache(d) == ["no checksums recorded (built by an older version)"]
    (d / "DONE").write_text("[not json")
    assert verify_model_cache(d)[0].startswith("DONE record unreadable")


@pytest.mark.slow
def test_bad_read_only_model_cache_loads_uncached_with_a_warning() -> None:
    """Item 6: a read-only cache dir means a (slower) uncached load and one warning line, not a traceback."""
    work = _world_dir()
    try:
        cache = work / "cache"
        cache.mkdir()
        cache.chmod(0o555)
        before = snapshot(work)
        r = _run_unprivileged(["info", "--json"], cwd=work)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["n_layers"] == 30
        assert "Could not write the model cache" in r.stderr and "PERSONA_VECTORS_CACHE" in r.stderr
        assert "Traceback" not in r.stderr
        assert_unchanged(before, snapshot(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
