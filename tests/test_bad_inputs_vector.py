"""Bad inputs for saving and loading vectors (issue 12: items 1, 10 and the vector.json parts of 12).

One ``test_bad_*`` per named bad input. Each asserts the exact outcome: the error type, that the message
names the file or the fix, exit code 2 and a single ``error: ...`` line for the CLI, and that no file
outside the target changed (a snapshot of paths, hashes and modes before and after). The property-based
tests at the end feed truncated, garbled and re-typed files to the loader: every input either loads (and
equals the saved vector where the tensor is intact) or raises :class:`VectorFileError`, and a load never
writes anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _fs import assert_unchanged, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from persona_vectors import PersonaVector, Provenance, Site, VectorFileError, VectorMismatchError
from persona_vectors.io import META_FILE, TENSOR_FILE, check_save_target

OWN = (META_FILE, TENSOR_FILE)


def vec(seed: int = 0, fp: str = "abc", sites=(1, 2), d: int = 8, name: str = "v") -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector([Site(s) for s in sites], torch.randn(len(sites), d, generator=g),
                         Provenance(model_id="m", fingerprint=fp, d_model=d, name=name))


def same(a: PersonaVector, b: PersonaVector) -> bool:
    return a.sites == b.sites and torch.equal(a.directions, b.directions) and a.provenance == b.provenance


class FakeModel:
    def __init__(self, fp: str = "abc", d: int = 8, n_layers: int = 12) -> None:
        from persona_vectors.models import ModelInfo
        self.info = ModelInfo("m", n_layers, d, fp)


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def _saved(tmp_path: Path, **kw) -> Path:
    return vec(**kw).save(tmp_path / "v")


def _edit_meta(d: Path, fn) -> None:
    meta = json.loads((d / META_FILE).read_text())
    out = fn(meta)
    (d / META_FILE).write_text(json.dumps(meta if out is None else out))


def _load_fails(tmp_path: Path, target: Path, match: str, exc: type = VectorFileError, **kw) -> str:
    """Load ``target``: it must raise exactly ``exc`` with ``match`` in the message and change no file."""
    before = snapshot(tmp_path)
    with pytest.raises(exc, match=match) as info:
        PersonaVector.load(target, **kw)
    assert type(info.value) is exc
    msg = str(info.value)
    assert "\n" not in msg
    assert_unchanged(before, snapshot(tmp_path))
    return msg


# ================================================================================================ saving
def test_bad_save_into_dir_with_user_files_is_refused(tmp_path):
    """The issue's reproduction: ``mkdir -p d/s; echo x > d/s/f; vec.save('d')`` used to delete d/s/f."""
    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    (d / "s" / "f").write_text("x\n")
    before = snapshot(tmp_path)
    with pytest.raises(VectorFileError, match="overwrite=True") as info:
        vec().save(d)
    assert type(info.value) is VectorFileError and "nothing is deleted" in str(info.value)
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_save_into_dir_with_user_files_with_overwrite_keeps_them(tmp_path):
    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    (d / "s" / "f").write_text("x\n")
    (d / "notes.txt").write_text("mine")
    before = snapshot(tmp_path, exclude=[f"d/{n}" for n in OWN])
    a = vec()
    a.save(d, overwrite=True)
    assert_unchanged(before, snapshot(tmp_path, exclude=[f"d/{n}" for n in OWN]))
    assert (d / "s" / "f").read_text() == "x\n"
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "s", *OWN]
    assert same(PersonaVector.load(d), a)


def test_bad_resave_over_vector_dir_replaces_only_its_two_files(tmp_path):
    d = _saved(tmp_path)
    (d / "README.md").write_text("my notes about this vector")
    (d / "plots").mkdir()
    (d / "plots" / "fig.png").write_bytes(b"\x89PNG")
    before = snapshot(tmp_path, exclude=[f"v/{n}" for n in OWN])
    b = vec(1, name="w")
    b.save(d)  # default: a previous vector is replaced, its neighbours are kept
    assert_unchanged(before, snapshot(tmp_path, exclude=[f"v/{n}" for n in OWN]))
    assert same(PersonaVector.load(d), b)
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "plots", *OWN]


def test_bad_save_overwrite_false_refuses_existing_vector(tmp_path):
    d = _saved(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(VectorFileError, match="already holds a saved vector: pass overwrite=True") as info:
        vec(1).save(d, overwrite=False)
    assert type(info.value) is VectorFileError
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_save_target_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    before = snapshot(tmp_path)
    for overwrite in (None, True, False):
        with pytest.raises(VectorFileError, match="is not a directory: choose a directory path") as info:
            vec().save(f, overwrite=overwrite)
        assert type(info.value) is VectorFileError
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_save_foreign_vector_json_is_not_taken_for_a_vector(tmp_path):
    """A ``vector.json`` another tool wrote is not a previous vector: refused by default."""
    d = tmp_path / "d"
    d.mkdir()
    (d / META_FILE).write_text('{"x": [1, 2, 3]}')
    before = snapshot(tmp_path)
    with pytest.raises(VectorFileError, match="holds no saved vector.*overwrite=True") as info:
        vec().save(d)
    assert type(info.value) is VectorFileError
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_save_permissions_follow_umask_not_0700(tmp_path):
    d = vec().save(tmp_path / "new" / "v")
    mask = _umask()
    assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o777 & ~mask
    for n in OWN:
        assert stat.S_IMODE((d / n).stat().st_mode) == 0o666 & ~mask


def test_bad_save_unserializable_provenance_extra_writes_nothing(tmp_path):
    v = vec().replace(extra={"model": object()})
    before = snapshot(tmp_path)
    with pytest.raises(VectorFileError, match="provenance.extra") as info:
        v.save(tmp_path / "v")
    assert type(info.value) is VectorFileError
    assert_unchanged(before, snapshot(tmp_path))
    assert not (tmp_path / "v").exists()


def test_bad_save_interrupted_between_renames_keeps_previous_vector(tmp_path, monkeypatch):
    a = vec(0)
    d = a.save(tmp_path / "v")
    (d / "keep.txt").write_text("k")
    real, calls = os.replace, {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # after the tensor, before the JSON
            raise KeyboardInterrupt("power cut")
        return real(src, dst)

    before = snapshot(tmp_path)
    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        vec(1).save(d)
    monkeypatch.setattr(os, "replace", real)
    assert_unchanged(before, snapshot(tmp_path))  # no temporary file, no backup, previous tensor back
    assert same(PersonaVector.load(d), a)


def test_bad_save_killed_between_renames_still_loads_previous_vector(tmp_path):
    """A save SIGKILLed between its two renames leaves the new tensor with the old JSON and the old tensor
    hard-linked aside; a load returns the old vector whole, and the next save cleans up."""
    a, b = vec(0), vec(1, name="w")
    d = a.save(tmp_path / "v")
    other = b.save(tmp_path / "other")
    os.link(d / TENSOR_FILE, d / f".{TENSOR_FILE}.deadbeefdeadbeef.bak")  # what _swap_in does first
    shutil.copyfile(other / TENSOR_FILE, d / ".vector.safetensors.0123456789abcdef.tmp")
    os.replace(d / ".vector.safetensors.0123456789abcdef.tmp", d / TENSOR_FILE)  # the first rename, then the kill
    before = snapshot(tmp_path)
    assert same(PersonaVector.load(d), a)
    assert_unchanged(before, snapshot(tmp_path))
    b.save(d)
    assert sorted(p.name for p in d.iterdir()) == list(OWN)
    assert same(PersonaVector.load(d), b)


# ================================================================================================ CLI
def _cli(args: list[str]):
    from persona_vectors.cli import app

    return CliRunner().invoke(app, args)


def _one_error_line(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if the CLI tries to load a model (the checks must come first)."""
    import persona_vectors.cli as cli

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the --out check")

    monkeypatch.setattr(cli.base, "load_model_arg", boom)


def test_bad_cli_extract_out_nonempty_without_force(tmp_path, no_model):
    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    (d / "s" / "f").write_text("x\n")
    before = snapshot(tmp_path)
    r = _cli(["extract", "--persona", "hitler", "--out", str(d)])
    _one_error_line(r, str(d), "--force", "nothing is deleted")
    assert "overwrite=True" not in r.output
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_cli_extract_out_is_a_file(tmp_path, no_model):
    f = tmp_path / "f"
    f.write_text("x")
    before = snapshot(tmp_path)
    r = _cli(["extract", "--persona", "hitler", "--out", str(f), "--force"])
    _one_error_line(r, str(f), "directory")
    assert_unchanged(before, snapshot(tmp_path))


def test_bad_cli_extract_force_writes_alongside_user_files(tmp_path, monkeypatch):
    """With --force the vector's two files are written next to the user's files, which are kept."""
    import persona_vectors.cli as cli
    import persona_vectors.personas as personas

    q = SimpleNamespace(name="hitler", route="prompt", to_json=lambda: {
        "layer": 2, "auroc": {}, "rel_norm": {}, "heldout": 0, "auroc_at_layer": 0.9, "rel_norm_at_layer": 0.1})
    monkeypatch.setattr(cli.base, "load_model_arg", lambda *a, **k: object())
    monkeypatch.setattr(personas, "extract_persona", lambda *a, **k: SimpleNamespace(vector=vec(), quality=q))
    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    (d / "s" / "f").write_text("x\n")
    before = snapshot(tmp_path, exclude=[f"d/{n}" for n in OWN])
    r = _cli(["extract", "--persona", "hitler", "--out", str(d), "--force"])
    assert r.exit_code == 0, r.output
    assert_unchanged(before, snapshot(tmp_path, exclude=[f"d/{n}" for n in OWN]))
    assert torch.equal(PersonaVector.load(d).directions, vec().directions)
    r = _cli(["extract", "--persona", "hitler", "--out", str(d)])  # now a vector dir: re-extracting replaces it
    assert r.exit_code == 0, r.output
    assert (d / "s" / "f").read_text() == "x\n"


def test_bad_cli_inspect_damaged_vector_json(tmp_path):
    d = _saved(tmp_path)
    _edit_meta(d, lambda m: [m])
    before = snapshot(tmp_path)
    r = _cli(["inspect", str(d)])
    _one_error_line(r, str(d / META_FILE), "JSON array", "re-save")
    assert_unchanged(before, snapshot(tmp_path))


# ================================================================================================ loading
def test_bad_vector_json_is_an_array(tmp_path):
    d = _saved(tmp_path)
    _edit_meta(d, lambda m: [m])
    msg = _load_fails(tmp_path, d, "expected a JSON object, found a JSON array")
    assert str(d / META_FILE) in msg and "re-save the vector" in msg


def test_bad_vector_json_lacks_provenance(tmp_path):
    d = _saved(tmp_path)
    _edit_meta(d, lambda m: m.pop("provenance") and None)
    _load_fails(tmp_path, d, "missing 'provenance'.*re-save the vector")


def test_bad_vector_json_d_model_is_a_string(tmp_path):
    d = _saved(tmp_path)
    _edit_meta(d, lambda m: m.update(d_model="abc"))
    _load_fails(tmp_path, d, """'d_model' must be a positive integer, found "abc".*re-save""")


@pytest.mark.parametrize("sites, match", [
    ("resid_post.1", "'sites' must be a list"),
    ([1, 2], "'sites' must be a list"),
    (["resid_post.1", "banana"], "bad 'sites' entry .*Cannot parse site 'banana'"),
    (["resid_post.1", "resid_post.1"], "lists a site twice"),
    (["resid_post.2", "resid_post.1"], "out of order"),
    (["resid_post.1", "resid_post.3"], "differ from the sites recorded"),
    (["resid_post.1"], "differ from the sites recorded"),
])
def test_bad_vector_json_sites_malformed(tmp_path, sites, match):
    d = _saved(tmp_path)
    _edit_meta(d, lambda m: m.update(sites=sites))
    _load_fails(tmp_path, d, match)


@pytest.mark.parametrize("prov, match", [
    ("m", "'provenance' must be a JSON object"),
    (None, "'provenance' must be a JSON object"),
    ({"fingerprint": "abc", "d_model": 8}, "provenance lacks 'model_id'"),
    ({"model_id": "m", "fingerprint": "abc", "d_model": "8"}, "'d_model' must be an integer"),
    ({"model_id": "m", "fingerprint": 7, "d_model": 8}, "'fingerprint' must be a string"),
    ({"model_id": "m", "fingerprint": "abc", "d_model": 8, "n_samples": True}, "'n_samples' must be an integer"),
    ({"model_id": "m", "fingerprint": "abc", "d_model": 8, "extra": [1]}, "'extra' must be an object"),
    ({"model_id": "m", "fingerprint": "abc", "d_model": 9}, "'provenance.d_model' is 9"),
])
def test_bad_vector_json_provenance_wrong_type(tmp_path, prov, match):
    d = _saved(tmp_path)
    _edit_meta(d, lambda m: m.update(provenance=prov))
    msg = _load_fails(tmp_path, d, match)
    assert "re-save the vector" in msg


@pytest.mark.parametrize("version, match", [(True, "must be an integer"), ("1", "must be an integer"),
                                            (None, "must be an integer"), (2, "upgrade persona_vectors")])
def test_bad_vector_json_schema_version(tmp_path, version, match):
    d = _saved(tmp_path)
    _edit_meta(d, lambda m: m.update(schema_version=version))
    _load_fails(tmp_path, d, match)


def test_bad_vector_json_not_json(tmp_path):
    d = _saved(tmp_path)
    raw = (d / META_FILE).read_bytes()
    (d / META_FILE).write_bytes(raw[: len(raw) // 2])
    _load_fails(tmp_path, d, "not valid JSON.*re-save the vector")
    (d / META_FILE).write_bytes(b"\xff\xfe\x00garbage")
    _load_fails(tmp_path, d, "not valid UTF-8 JSON")
    (d / META_FILE).write_text("[" * 100_000 + "]" * 100_000)
    _load_fails(tmp_path, d, "nested too deeply|not valid JSON")


def test_bad_checksum_mismatch(tmp_path):
    from safetensors.torch import save_file
    d = _saved(tmp_path)
    save_file({"directions": torch.zeros(2, 8)}, str(d / TENSOR_FILE))
    _load_fails(tmp_path, d, "does not match the checksum.*re-save it")


def _tamper_with_checksum(d: Path, tensors: dict, raw: bytes | None = None) -> None:
    """Replace the tensor file and fix up the recorded checksum (so the later checks are reached)."""
    from safetensors.torch import save
    data = raw if raw is not None else save(tensors)
    (d / TENSOR_FILE).write_bytes(data)
    _edit_meta(d, lambda m: m.update(tensor_sha256=hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_bad_nan_values(tmp_path, value):
    d = _saved(tmp_path)
    _tamper_with_checksum(d, {"directions": torch.full((2, 8), value)})
    _load_fails(tmp_path, d, "NaN or inf.*re-extract")


def test_bad_tensor_wrong_shape_or_dtype_or_keys(tmp_path):
    d = _saved(tmp_path)
    _tamper_with_checksum(d, {"directions": torch.zeros(2, 7)})
    _load_fails(tmp_path, d, r"shape \(2, 7\).*d_model 8")
    _tamper_with_checksum(d, {"directions": torch.zeros(2, 8, dtype=torch.int64)})
    _load_fails(tmp_path, d, "not floats")
    _tamper_with_checksum(d, {"directions": torch.zeros(2, 8), "other": torch.zeros(1)})
    _load_fails(tmp_path, d, "one tensor 'directions'")


def test_bad_tensor_truncated_with_matching_checksum(tmp_path):
    d = _saved(tmp_path)
    raw = (d / TENSOR_FILE).read_bytes()
    _tamper_with_checksum(d, {}, raw=raw[:-5])
    _load_fails(tmp_path, d, "not a readable safetensors file")


def test_bad_only_one_of_the_two_files(tmp_path):
    d = _saved(tmp_path)
    (d / META_FILE).unlink()
    _load_fails(tmp_path, d, "is not a saved vector: it needs vector.json and vector.safetensors")


def test_bad_pickle_files(tmp_path):
    torch.save({"x": torch.zeros(3)}, tmp_path / "vector.pt")
    _load_fails(tmp_path, tmp_path, "never unpickles.*PersonaVector")
    _load_fails(tmp_path, tmp_path / "vector.pt", "pickle-based file")


def test_bad_missing_dir(tmp_path):
    _load_fails(tmp_path, tmp_path / "nope", "does not exist")


def test_bad_file_instead_of_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    _load_fails(tmp_path, tmp_path / "notes.txt", "is a file: pass the directory")
    d = _saved(tmp_path)  # the vector's own files are accepted in place of their directory
    assert same(PersonaVector.load(d / META_FILE), vec())


def test_bad_wrong_d_model_for_the_model(tmp_path):
    d = _saved(tmp_path)
    _load_fails(tmp_path, d, "another architecture", VectorMismatchError, model=FakeModel(d=16), allow_other_model=True)


def test_bad_other_model_vector(tmp_path):
    d = _saved(tmp_path)
    _load_fails(tmp_path, d, "allow_other_model=True", VectorMismatchError, model=FakeModel("zzz"))
    assert same(PersonaVector.load(d, model=FakeModel("zzz"), allow_other_model=True), vec())


def test_bad_site_out_of_range_for_the_model(tmp_path):
    d = _saved(tmp_path, sites=(1, 9))
    _load_fails(tmp_path, d, "out of range", VectorMismatchError, model=FakeModel(n_layers=4))


def test_bad_save_target_checked_without_writing(tmp_path):
    """``check_save_target`` (used by the CLI before extracting) writes nothing and names the given fix."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("x")
    before = snapshot(tmp_path)
    with pytest.raises(VectorFileError, match="--force"):
        check_save_target(d, fix="--force")
    assert check_save_target(d, True) == d and check_save_target(tmp_path / "new") == tmp_path / "new"
    assert_unchanged(before, snapshot(tmp_path))


# ================================================================================================ properties
BASE = vec(3, sites=(0, 5, 9), d=16, name="base")
_base_dir = Path(tempfile.mkdtemp(prefix="pv-base-"))
BASE.save(_base_dir / "v")
BASE_FILES = {n: (_base_dir / "v" / n).read_bytes() for n in OWN}
shutil.rmtree(_base_dir)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=10)


def _load_checked(files: dict[str, bytes]) -> PersonaVector | None:
    """Write ``files`` into a fresh directory and load it: a vector or VectorFileError, never anything else,
    and the directory is byte-for-byte unchanged by the load."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "v"
        d.mkdir()
        for n, data in files.items():
            (d / n).write_bytes(data)
        before = snapshot(tmp)
        try:
            v = PersonaVector.load(d)
        except VectorFileError as err:
            assert type(err) is VectorFileError and "\n" not in str(err)
            v = None
        assert_unchanged(before, snapshot(tmp))
    return v


@PROPS
@given(which=st.sampled_from(OWN), cut=st.floats(0, 1, exclude_max=True))
def test_property_truncated_file(which, cut):
    files = dict(BASE_FILES)
    files[which] = files[which][: int(len(files[which]) * cut)]
    assert _load_checked(files) is None  # a truncated file never loads


@PROPS
@given(which=st.sampled_from(OWN), start=st.floats(0, 1), garbage=st.binary(min_size=1, max_size=64),
       fix_checksum=st.booleans())
def test_property_garbage_bytes(which, start, garbage, fix_checksum):
    files = dict(BASE_FILES)
    raw = files[which]
    i = int(len(raw) * start)
    files[which] = raw[:i] + garbage + raw[i + len(garbage):]
    if fix_checksum and which == TENSOR_FILE:  # get past the checksum: the safetensors parser sees the garbage
        meta = json.loads(files[META_FILE])
        meta["tensor_sha256"] = hashlib.sha256(files[TENSOR_FILE]).hexdigest()
        files[META_FILE] = json.dumps(meta).encode()
    v = _load_checked(files)
    if v is not None:
        if files[which] == raw or which == META_FILE:
            assert v.sites == BASE.sites and torch.equal(v.directions, BASE.directions)
        else:  # a consistent edit of the tensor can load, but only as a valid vector of the recorded shape
            assert v.sites == BASE.sites and v.d_model == BASE.d_model and torch.isfinite(v.directions).all()


TOP_FIELDS = ["schema_version", "sites", "d_model", "tensor_sha256", "provenance"]
PROV_FIELDS = list(BASE.provenance.to_json())


@PROPS
@given(path=st.sampled_from([(k,) for k in TOP_FIELDS] + [("provenance", k) for k in PROV_FIELDS]),
       value=json_values, delete=st.booleans())
def test_property_json_field_replaced(path, value, delete):
    meta = json.loads(BASE_FILES[META_FILE])
    node = meta
    for k in path[:-1]:
        node = node[k]
    if delete:
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    v = _load_checked({TENSOR_FILE: BASE_FILES[TENSOR_FILE], META_FILE: json.dumps(meta).encode()})
    if v is not None:  # the tensor is pinned by its checksum: whatever loads is the saved tensor
        assert v.sites == BASE.sites and torch.equal(v.directions, BASE.directions)
        assert v.provenance.model_id == meta["provenance"]["model_id"]


@PROPS
@given(doc=json_values)
def test_property_json_document_replaced(doc):
    v = _load_checked({TENSOR_FILE: BASE_FILES[TENSOR_FILE], META_FILE: json.dumps(doc).encode()})
    assert v is None
