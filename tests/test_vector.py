"""PersonaVector values, arithmetic, provenance and safe I/O (no model files needed)."""

import json
import os
from pathlib import Path

import pytest
import torch

from persona_vectors import PersonaVector, Provenance, Site, VectorFileError, VectorMismatchError
from persona_vectors.io import TENSOR_FILE, check_vector_model


def vec(seed=0, fp="abc", sites=(1, 2), d=8, name="v"):
    g = torch.Generator().manual_seed(seed)
    return PersonaVector([Site(s) for s in sites], torch.randn(len(sites), d, generator=g),
                         Provenance(model_id="m", fingerprint=fp, d_model=d, name=name))


def test_arithmetic_returns_new_values():
    a, b = vec(0), vec(1)
    a0 = a.directions
    s = a + b
    assert torch.equal(s[1], a[1] + b[1])
    assert torch.equal((a - b)[2], a[2] - b[2])
    assert torch.allclose((2 * a)[1], a[1] * 2) and torch.allclose((a * 2)[1], 2 * a[1])
    assert torch.allclose((-a)[1], -a[1])
    assert torch.equal(a.directions, a0)  # operands untouched
    n = a.normalized()
    assert all(abs(v - 1) < 1e-6 for v in n.norms().values())
    assert a.cosine(a)[Site(1)] == pytest.approx(1.0)
    assert a.cosine(-a)[Site(2)] == pytest.approx(-1.0)
    mid = PersonaVector.interpolate(a, b, 0.25)
    assert torch.allclose(mid[1], 0.75 * a[1] + 0.25 * b[1])
    assert "(v - v)" in (a - b).provenance.expression


def test_immutable():
    a = vec()
    with pytest.raises(AttributeError):
        a.foo = 1
    d = a.directions
    d += 100
    assert not torch.equal(a.directions, d)
    t = a[1]
    t += 1
    assert not torch.equal(a[1], t)


def test_mixing_models_or_sites_raises():
    with pytest.raises(VectorMismatchError, match="different models"):
        vec(fp="abc") + vec(fp="xyz")
    with pytest.raises(VectorMismatchError, match="different sites"):
        vec(sites=(1, 2)) - vec(sites=(1, 3))
    a = vec(sites=(1, 2, 3))
    assert (a.at([1, 2]) + vec(sites=(1, 2))).sites == (Site(1), Site(2))


def test_projection():
    a = vec(d=4)
    acts = torch.randn(3, 5, 4)
    p = a.project(acts, 1)
    u = a[1] / a[1].norm()
    assert torch.allclose(p, acts @ u)
    with pytest.raises(ValueError, match="width"):
        a.project(torch.randn(2, 5), 1)
    with pytest.raises(KeyError, match="not in this vector"):
        a[9]


def test_nan_rejected_at_construction():
    with pytest.raises(ValueError, match="NaN"):
        PersonaVector([Site(0)], torch.tensor([[float("nan"), 0.0]]), Provenance("m", "f", 2))


def test_save_load_roundtrip_bit_exact(tmp_path):
    a = vec(3, sites=(0, 5, 9))
    out = a.save(tmp_path / "v")
    assert sorted(p.name for p in out.iterdir()) == ["vector.json", "vector.safetensors"]
    b = PersonaVector.load(out)
    assert torch.equal(a.directions, b.directions)
    assert a.sites == b.sites and a.provenance == b.provenance
    meta = json.loads((out / "vector.json").read_text())
    assert meta["schema_version"] == 1 and meta["provenance"]["library_version"]


class FakeModel:
    def __init__(self, fp="abc", d=8, n_layers=12):
        from persona_vectors.models import ModelInfo
        self.info = ModelInfo("m", n_layers, d, fp)


def test_fingerprint_check(tmp_path):
    a = vec(fp="abc")
    a.save(tmp_path / "v")
    PersonaVector.load(tmp_path / "v", model=FakeModel("abc"))
    with pytest.raises(VectorMismatchError, match="allow_other_model=True"):
        PersonaVector.load(tmp_path / "v", model=FakeModel("zzz"))
    PersonaVector.load(tmp_path / "v", model=FakeModel("zzz"), allow_other_model=True)
    with pytest.raises(VectorMismatchError, match="d_model"):
        PersonaVector.load(tmp_path / "v", model=FakeModel("abc", d=16), allow_other_model=True)
    with pytest.raises(VectorMismatchError, match="out of range"):
        check_vector_model(a, FakeModel("abc", n_layers=2))


def test_refuses_pickle(tmp_path):
    torch.save({"x": torch.zeros(3)}, tmp_path / "vector.pt")
    with pytest.raises(VectorFileError, match="never unpickles"):
        PersonaVector.load(tmp_path)
    with pytest.raises(VectorFileError, match="pickle"):
        PersonaVector.load(tmp_path / "vector.pt")


def _tamper(tmp_path, tensor):
    from safetensors.torch import save_file
    a = vec()
    d = a.save(tmp_path / "v")
    save_file({"directions": tensor}, str(d / TENSOR_FILE))
    return d


def test_refuses_corrupt_nan_and_wrong_shape(tmp_path):
    d = _tamper(tmp_path, torch.zeros(2, 8))
    with pytest.raises(VectorFileError, match="checksum"):
        PersonaVector.load(d)
    # a file whose checksum was updated but which holds NaN / wrong width
    import hashlib
    for bad, msg in [(torch.full((2, 8), float("nan")), "NaN"), (torch.zeros(2, 7), "shape")]:
        d = _tamper(tmp_path / msg, bad)
        meta = json.loads((d / "vector.json").read_text())
        meta["tensor_sha256"] = hashlib.sha256((d / TENSOR_FILE).read_bytes()).hexdigest()
        (d / "vector.json").write_text(json.dumps(meta))
        with pytest.raises(VectorFileError, match=msg):
            PersonaVector.load(d)


def test_refuses_other_schema_and_missing(tmp_path):
    d = vec().save(tmp_path / "v")
    meta = json.loads((d / "vector.json").read_text())
    meta["schema_version"] = 99
    (d / "vector.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="upgrade"):
        PersonaVector.load(d)
    with pytest.raises(VectorFileError, match="does not exist"):
        PersonaVector.load(tmp_path / "nope")


def test_interrupted_save_keeps_previous_vector(tmp_path, monkeypatch):
    a, b = vec(0), vec(1)
    a.save(tmp_path / "v")
    calls = {"n": 0}
    real = os.replace

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # crash between moving the old vector away and moving the new one in
            raise KeyboardInterrupt("power cut")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        b.save(tmp_path / "v")
    monkeypatch.setattr(os, "replace", real)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".v.tmp")]
    assert leftovers == []
    # the previous vector is back under its name, complete; no temp or backup directory is left
    assert torch.equal(PersonaVector.load(tmp_path / "v").directions, a.directions)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["vector.json", "vector.safetensors"]


def test_save_refuses_file_target(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(VectorFileError, match="not a directory"):
        vec().save(f)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(VectorFileError, match="overwrite"):
        vec().save(tmp_path / "full", overwrite=False)


def test_atomic_file_keeps_previous_content_on_error(tmp_path):
    from persona_vectors.io import atomic_file

    target = tmp_path / "f.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("one")
    assert target.read_text() == "one"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("interrupted")
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_same_vector_saves_the_same_tensor_bytes_in_every_process(tmp_path):
    """safetensors writes its header in a per-process hash order; the library canonicalises it, so the file and
    its recorded ``tensor_sha256`` do not depend on the process that saved them."""
    import subprocess
    import sys

    code = ("import sys, torch; from persona_vectors import PersonaVector, Provenance, Site; "
            "PersonaVector([Site(1), Site(2), Site(3)], torch.arange(12, dtype=torch.float32).reshape(3, 4), "
            "Provenance('m', 'f', 4)).save(sys.argv[1])")
    files = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"v{seed}"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        files.append((out / TENSOR_FILE).read_bytes())
    assert files[0] == files[1] == files[2]
    v = PersonaVector.load(tmp_path / "v1")
    assert torch.equal(v.directions, torch.arange(12, dtype=torch.float32).reshape(3, 4))
