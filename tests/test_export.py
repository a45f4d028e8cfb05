"""llama.cpp control-vector export: file format, layer-index mapping, errors, atomicity, CLI."""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from persona_vectors import PersonaVector, Provenance, Site, export
from persona_vectors.cli import app
from persona_vectors.export import export_control_vector_gguf, read_control_vector_gguf

D = 32


def make_vec(layers=(3, 7, 11), kind="resid_post", seed=0) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector([Site(L, kind) for L in layers], torch.randn(len(layers), D, generator=g),
                         Provenance("org/tiny", "fp123", D, name="pirate"))


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def test_roundtrip_with_gguf_reader(tmp_path):
    v = make_vec()
    path = export_control_vector_gguf(v, tmp_path / "pirate.gguf", scale=2.5, arch="llama")
    r = gguf.GGUFReader(str(path))
    assert field(r, "general.architecture") == "controlvector"
    assert field(r, "controlvector.model_hint") == "llama"
    assert field(r, "controlvector.layer_count") == 3
    assert r.fields["controlvector.layer_count"].types == [gguf.GGUFValueType.UINT32]  # as repeng writes it
    assert field(r, "persona_vectors.fingerprint") == "fp123"
    assert [t.name for t in r.tensors] == ["direction.3", "direction.7", "direction.11"]
    for t, s in zip(r.tensors, v.sites):
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(x) for x in t.shape] == [D]
        np.testing.assert_allclose(np.asarray(t.data), (v[s] * 2.5).numpy(), rtol=1e-6)
    dirs, meta = read_control_vector_gguf(path)
    assert list(dirs) == list(v.sites) and meta["persona_vectors.scale"] == pytest.approx(2.5)


def test_layer_index_mapping_resid_post_L_is_direction_L(tmp_path):
    """Site(L, resid_post) → direction.L (llama.cpp adds direction.L to block L's output, 0-based)."""
    v = make_vec(layers=(1, 14))
    export_control_vector_gguf(v, tmp_path / "v.gguf")
    names = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "v.gguf")).tensors}
    assert set(names) == {"direction.1", "direction.14"}
    np.testing.assert_allclose(names["direction.14"], v[Site(14)].numpy())
    # only a subset
    export_control_vector_gguf(make_vec(), tmp_path / "sub.gguf", layers=[7])
    assert [t.name for t in gguf.GGUFReader(str(tmp_path / "sub.gguf")).tensors] == ["direction.7"]


def test_direction_L_is_hf_layer_L_output():
    """The HF side of the mapping. llama.cpp adds ``direction.L`` to block L's output (its ``l_out``), which is
    HF ``model.layers[L]``'s output: that output is ``hidden_states[L + 1]`` = ``Site(L).hidden_states_index``,
    and adding d there shifts the next block's input by exactly d."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=D, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    L = 2
    d = torch.randn(D)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    seen: dict[str, torch.Tensor] = {}

    def capture(_m, _inp, out):
        seen["out"] = first(out).clone()

    def add(_m, _inp, out):
        return (out[0] + d,) + tuple(out[1:]) if isinstance(out, tuple) else out + d

    def next_input(_m, args, kwargs):
        seen["next_in"] = (args[0] if args else kwargs["hidden_states"]).clone()

    with torch.no_grad():
        h = model.model.layers[L].register_forward_hook(capture)
        base = model(ids, output_hidden_states=True).hidden_states
        h.remove()
        assert Site(L).hidden_states_index == L + 1
        torch.testing.assert_close(seen["out"], base[Site(L).hidden_states_index])
        hooks = [model.model.layers[L].register_forward_hook(add),
                 model.model.layers[L + 1].register_forward_pre_hook(next_input, with_kwargs=True)]
        try:
            model(ids)
        finally:
            for h in hooks:
                h.remove()
    torch.testing.assert_close(seen["next_in"] - base[L + 1], d.expand_as(base[L + 1]), atol=1e-5, rtol=0)


def test_refuses_what_llama_cpp_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="resid_post"):
        export_control_vector_gguf(make_vec(kind="resid_pre"), tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="block 0"):
        export_control_vector_gguf(make_vec(layers=(0, 4)), tmp_path / "b.gguf", layers=[0, 4])
    export_control_vector_gguf(make_vec(layers=(0, 4)), tmp_path / "b.gguf", layers=[4])  # explicit subset is fine
    with pytest.raises(KeyError):
        export_control_vector_gguf(make_vec(), tmp_path / "c.gguf", layers=[5])
    with pytest.raises(ValueError, match="finite"):
        export_control_vector_gguf(make_vec(), tmp_path / "d.gguf", scale=float("nan"))
    assert sorted(os.listdir(tmp_path)) == ["b.gguf"]


def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    path = export_control_vector_gguf(make_vec(seed=1), tmp_path / "v.gguf")
    before = path.read_bytes()

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError):
        export_control_vector_gguf(make_vec(seed=2), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["v.gguf"]


def test_cli_export_gguf(tmp_path):
    make_vec().save(tmp_path / "vec")
    runner = CliRunner()
    res = runner.invoke(app, ["export-gguf", "--vector", str(tmp_path / "vec"), "--out", str(tmp_path / "o.gguf"),
                              "--scale", "-1.5"])
    assert res.exit_code == 0, res.output
    dirs, meta = read_control_vector_gguf(tmp_path / "o.gguf")
    np.testing.assert_allclose(dirs[Site(7)], -1.5 * make_vec()[7].numpy(), rtol=1e-6)
    assert meta["controlvector.model_hint"] == "llama"
    make_vec(kind="resid_pre").save(tmp_path / "pre")
    res = runner.invoke(app, ["export-gguf", "--vector", str(tmp_path / "pre"), "--out", str(tmp_path / "p.gguf")])
    assert res.exit_code == 2 and "resid_post" in res.output and "Traceback" not in res.output
    assert export.ARCH == "controlvector"


def test_all_layer_vector_drops_block_0_with_a_warning(tmp_path):
    from persona_vectors.export import ExportSitesDroppedWarning

    with pytest.warns(ExportSitesDroppedWarning, match=r"dropped resid_post\.0 .*block 0"):
        export_control_vector_gguf(make_vec(layers=(0, 1, 4)), tmp_path / "a.gguf")
    dirs, meta = read_control_vector_gguf(tmp_path / "a.gguf")
    assert list(dirs) == [Site(1), Site(4)] and meta["controlvector.layer_count"] == 2
    with pytest.raises(ValueError, match="block 0"):  # an explicit request for layer 0 is still refused
        export_control_vector_gguf(make_vec(layers=(0, 4)), tmp_path / "b.gguf", layers=[0, 4])
    with pytest.raises(ValueError, match="no other layer"):
        export_control_vector_gguf(make_vec(layers=(0,)), tmp_path / "c.gguf")


def test_cli_export_gguf_of_an_all_layer_vector(tmp_path):
    make_vec(layers=(0, 1, 2, 3)).save(tmp_path / "vec")
    res = CliRunner().invoke(app, ["export-gguf", "--vector", str(tmp_path / "vec"),
                                   "--out", str(tmp_path / "o.gguf")])
    assert res.exit_code == 0, res.output
    assert "(3 layers" in res.stdout
    assert res.stderr.count("\n") == 1 and "dropped resid_post.0" in res.stderr
    assert list(read_control_vector_gguf(tmp_path / "o.gguf")[0]) == [Site(1), Site(2), Site(3)]
