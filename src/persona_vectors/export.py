"""Export a PersonaVector as a llama.cpp control vector (``--control-vector FILE.gguf``).

File format (what repeng's ``ControlVector.export_gguf`` and llama.cpp's ``cvector-generator`` write):
``general.architecture = "controlvector"``, ``controlvector.model_hint`` (an architecture string such as
``"llama"``), ``controlvector.layer_count`` (uint32, number of direction tensors) and one float32 tensor
``direction.{N}`` of shape ``[d_model]`` per layer. We add informational ``persona_vectors.*`` keys
(name, model id, fingerprint, scale), which llama.cpp ignores.

Layer index mapping — ``Site(L, "resid_post")`` is written as ``direction.L``:

- llama.cpp (``common_control_vector_load_one``) parses ``direction.N`` and stores it at row ``N - 1`` of a
  buffer that "does not store data for layer 0"; ``llama_control_vector_apply`` copies row ``il - 1`` into
  ``cvec.tensors[il]`` for ``il = 1 .. n_layer - 1`` (``tensors[0]`` is always null: "there's never a tensor
  for layer 0"); each model's graph calls ``cvec.apply_to(cur, il)`` right after block ``il``'s residual add
  (the ``l_out`` tensor) in its 0-based ``for il in 0..n_layer-1`` loop. So ``direction.N`` is added to the
  **output of block N (0-based)**, which is our ``Site(N, "resid_post")`` (= HF ``hidden_states[N + 1]``).
- repeng agrees: its layer ``i`` reads ``hidden_states[i + 1]`` and steers ``model.layers[i]``'s output, and
  it writes ``direction.{i}`` unchanged.
- Consequence: block 0's output cannot be steered by llama.cpp, and its loader rejects a ``direction.0``
  tensor (the whole file is then skipped), so ``resid_post.0`` is never written: left out (with a warning)
  when exporting all of a vector's sites, refused when asked for explicitly; ``resid_pre`` sites likewise (``resid_pre.L`` equals
  ``resid_post.(L-1)``: convert explicitly if you mean that).

``scale`` multiplies every direction (llama.cpp's ``--control-vector-scaled FILE S`` scales again at load).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .sites import Site
from .vector import PersonaVector

__all__ = ["ExportSitesDroppedWarning", "export_control_vector_gguf", "exportable_sites", "read_control_vector_gguf"]

ARCH = "controlvector"


class ExportSitesDroppedWarning(UserWarning):
    """Some of the vector's sites cannot be applied by llama.cpp and were left out of the export."""


def exportable_sites(vector: PersonaVector) -> tuple[list[Site], list[Site]]:
    """``(kept, dropped)``: the vector's sites llama.cpp can apply (``resid_post.L`` with ``L >= 1``) and the rest."""
    keep = [s for s in vector.sites if s.kind == "resid_post" and s.layer >= 1]
    return sorted(keep), [s for s in vector.sites if s not in keep]


def _select_sites(vector: PersonaVector, layers: Iterable[int | str | Site] | None) -> tuple[list[Site], list[Site]]:
    """The sites to export and (when ``layers`` is None) the ones dropped because llama.cpp cannot apply them."""
    dropped: list[Site] = []
    if layers is None:
        sites, dropped = exportable_sites(vector)
        if not sites:
            bad = [str(s) for s in vector.sites if s.kind != "resid_post"]
            if bad:
                raise ValueError(
                    "Only resid_post sites can be exported as a llama.cpp control vector (it adds to each block's "
                    f"output); this vector has {', '.join(bad)}")
            raise ValueError("llama.cpp never steers block 0's output and this vector has no other layer: "
                             "extract it at layers >= 1")
        return sites, dropped
    want = [Site.parse(x) for x in layers]
    missing = [str(s) for s in want if s not in vector]
    if missing:
        raise KeyError(f"Sites {', '.join(missing)} are not in the vector (it has {', '.join(map(str, vector.sites))})")
    sites = sorted(set(want))
    if not sites:
        raise ValueError("No layers to export")
    bad = [str(s) for s in sites if s.kind != "resid_post"]
    if bad:
        raise ValueError(
            f"Only resid_post sites can be exported as a llama.cpp control vector (it adds to each block's output); "
            f"this vector has {', '.join(bad)}"
        )
    if any(s.layer == 0 for s in sites):
        keep = [str(s.layer) for s in sites if s.layer != 0]
        raise ValueError(
            "llama.cpp never steers block 0's output and rejects a direction.0 tensor; export without layer 0 "
            f"(layers={keep or '[...]'} / --layer), or leave the layers out to export every site it can apply"
        )
    return sites, dropped


def dropped_sites_message(dropped: Iterable[Site]) -> str:
    """One line naming the sites left out of an export and why."""
    dropped = list(dropped)
    why = []
    if any(s.kind == "resid_post" and s.layer == 0 for s in dropped):
        why.append("llama.cpp never steers block 0's output")
    if any(s.kind != "resid_post" for s in dropped):
        why.append("only resid_post sites map to llama.cpp's control vectors")
    return f"dropped {', '.join(map(str, dropped))} ({'; '.join(why)}); pass layers / --layer to choose the sites"


def export_control_vector_gguf(
    vector: PersonaVector,
    path: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    arch: str = "llama",
    layers: Iterable[int | str | Site] | None = None,
) -> Path:
    """Write ``vector`` (times ``scale``) as a llama.cpp control-vector GGUF at ``path``, atomically.

    ``resid_post.L`` becomes tensor ``direction.L`` (see the module docstring for the evidence).
    ``arch`` is stored as ``controlvector.model_hint``. ``layers=None`` exports every site llama.cpp can
    apply (``resid_post`` at layers >= 1) and drops the others (block 0's output, ``resid_pre``) with an
    :class:`ExportSitesDroppedWarning` naming them; an explicit ``layers`` list is exported exactly (or refused).
    Returns the path.
    """
    import gguf

    if not isinstance(vector, PersonaVector):
        raise TypeError(f"Expected a PersonaVector, got {type(vector).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}: pass e.g. --scale 1 (or scale=1.0)")
    if scale == 0:
        raise ValueError("scale 0 would export an all-zero control vector that steers nothing: pass a non-zero --scale")
    if not arch or not isinstance(arch, str):
        raise ValueError("arch must be a non-empty architecture string such as 'llama'")
    sites, dropped = _select_sites(vector, layers)
    scaled = {s: (vector[s].double() * scale).float().cpu().numpy() for s in sites}
    bad = [str(s) for s, d in scaled.items() if not np.isfinite(d).all()]
    if bad:
        biggest = max(float(np.abs(vector[s].double().numpy()).max()) for s in sites)
        raise ValueError(f"scale {scale:g} overflows float32 at {', '.join(bad)} (largest |value| {biggest:.3g}): "
                         f"pass a |--scale| below {3.4e38 / max(biggest, 1e-30):.3g}")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a directory: pass a file path such as {target / 'vector.gguf'}")
    target.parent.mkdir(parents=True, exist_ok=True)
    prov = vector.provenance
    from ._infra.files import atomic_file

    with atomic_file(target) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", arch)
        writer.add_uint32(f"{ARCH}.layer_count", len(sites))
        writer.add_string("persona_vectors.name", prov.name or prov.expression or "")
        writer.add_string("persona_vectors.model_id", prov.model_id)
        writer.add_string("persona_vectors.fingerprint", prov.fingerprint)
        writer.add_string("persona_vectors.sites", ",".join(str(s) for s in sites))
        writer.add_float32("persona_vectors.scale", scale)
        for s in sites:
            writer.add_tensor(f"direction.{s.layer}", np.ascontiguousarray(scaled[s], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    if dropped:
        import warnings

        warnings.warn(dropped_sites_message(dropped), ExportSitesDroppedWarning, stacklevel=2)
    return target


def read_control_vector_gguf(path: str | os.PathLike[str]) -> tuple[dict[Site, np.ndarray], dict[str, Any]]:
    """Read a control-vector GGUF back: ``({Site(N): direction [d]}, metadata)`` (``direction.N`` → ``Site(N)``)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    meta: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            meta[name] = field.contents()
        except Exception:  # pragma: no cover - exotic field types
            continue
    if meta.get("general.architecture") != ARCH:
        raise ValueError(f"{path} is not a control vector (general.architecture={meta.get('general.architecture')!r})")
    dirs: dict[Site, np.ndarray] = {}
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            continue
        dirs[Site(int(t.name.split(".", 1)[1]))] = np.array(t.data, dtype=np.float32).reshape(-1)
    return dict(sorted(dirs.items())), meta
