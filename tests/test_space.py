"""PersonaSpace: scikit-learn conventions, planted structure, deterministic signs, helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from persona_vectors import PersonaVector, Provenance, Site, VectorMismatchError
from persona_vectors.space import PersonaSpace, load_role_vectors, role_matrix, synthetic_role_vectors


def planted(n: int = 60, d: int = 50, noise: float = 0.01, seed: int = 0):
    """Rows on a 2-D plane (spanned by orthonormal B) plus tiny noise, with an offset."""
    rng = np.random.default_rng(seed)
    B, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    Z = rng.normal(size=(n, 2)) * np.array([5.0, 2.0])
    X = Z @ B.T + rng.normal(size=(n, d)) * noise + rng.normal(size=d) * 3
    return X, B.T


def vectors_from(X: np.ndarray, fingerprint: str = "fp", layers=(3, 5)) -> dict[str, PersonaVector]:
    out = {}
    for i, row in enumerate(X):
        dirs = torch.tensor(np.stack([row * (1 + j) for j in range(len(layers))]), dtype=torch.float32)
        out[f"r{i:02d}"] = PersonaVector([Site(L) for L in layers], dirs, Provenance("m", fingerprint, X.shape[1], name=f"r{i}"))
    return out


def test_fit_returns_self_and_attributes_only_after_fit():
    X, _ = planted()
    sp = PersonaSpace(n_components=3)
    for attr in ("components_", "explained_variance_ratio_", "mean_", "names_", "site_", "coords_"):
        assert not hasattr(sp, attr)
    with pytest.raises(NotFittedError):
        sp.transform(X)
    assert sp.fit(X) is sp
    assert sp.components_.shape == (3, 50)
    assert sp.coords_.shape == (60, 3)
    assert sp.mean_.shape == (50,)
    assert sp.names_ == [f"role_{i}" for i in range(60)]
    assert sp.site_ is None
    np.testing.assert_allclose(np.linalg.norm(sp.components_, axis=1), 1.0, atol=1e-12)
    # sklearn estimator conventions: params round-trip, clone gives an unfitted copy
    assert sp.get_params() == {"n_components": 3, "center": True, "normalize": False}
    c = clone(sp)
    assert not hasattr(c, "components_") and c.get_params() == sp.get_params()


def test_explained_variance_ratio_and_planted_plane():
    X, B = planted()
    sp = PersonaSpace(n_components=4).fit(X)
    r = sp.explained_variance_ratio_
    assert r.sum() <= 1 + 1e-12
    assert np.all(np.diff(r) <= 1e-12)
    assert r[:2].sum() > 0.99
    # PC1/PC2 lie in the planted plane: projecting them onto it keeps (almost) all their length
    for c in sp.components_[:2]:
        assert np.linalg.norm(B @ c) > 0.999
    # and PC1 is the high-variance planted direction
    assert abs(sp.components_[0] @ B[0]) > 0.99


def test_transform_of_training_data_equals_coords_and_input_kinds():
    X, _ = planted()
    sp = PersonaSpace().fit(X, names=[f"n{i}" for i in range(len(X))])
    np.testing.assert_allclose(sp.transform(X), sp.coords_, atol=1e-10)
    np.testing.assert_allclose(sp.transform(torch.tensor(X)), sp.coords_, atol=1e-10)
    one = sp.transform(X[4])
    assert one.shape == (3,)
    np.testing.assert_allclose(one, sp.coords_[4], atol=1e-10)
    np.testing.assert_allclose(sp.fit_transform(X), sp.coords_)
    with pytest.raises(ValueError, match="width"):
        sp.transform(np.zeros(7))


def test_fit_on_persona_vectors_at_site():
    X, _ = planted(n=20, d=16)
    vecs = vectors_from(X)
    with pytest.raises(ValueError, match="pass site="):
        PersonaSpace().fit(vecs)
    sp = PersonaSpace().fit(vecs, site=5)
    assert sp.site_ == Site(5) and sp.names_ == list(vecs)
    assert sp.fingerprint_ == "fp"
    np.testing.assert_allclose(sp.transform(vecs), sp.coords_, atol=1e-5)
    np.testing.assert_allclose(sp.transform(vecs["r03"]), sp.coords_[3], atol=1e-5)
    # a single-site mapping needs no site
    single = {k: v.at([3]) for k, v in vecs.items()}
    assert PersonaSpace().fit(single).site_ == Site(3)
    # a vector of another model is refused
    other = vectors_from(X[:1], fingerprint="other")["r00"]
    with pytest.raises(VectorMismatchError):
        sp.transform(other)


def test_sign_convention_is_deterministic():
    X, _ = planted()
    a = PersonaSpace(n_components=3).fit(X)
    for c in a.components_:
        assert c[np.argmax(np.abs(c))] > 0
    perm = np.random.default_rng(1).permutation(len(X))
    b = PersonaSpace(n_components=3).fit(X[perm])
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-8)
    c = PersonaSpace(n_components=3).fit(-X)  # same axes up to sign: the rule picks the same signs
    np.testing.assert_allclose(a.components_, c.components_, atol=1e-8)
    np.testing.assert_allclose(a.coords_, -c.coords_, atol=1e-8)
    # anchor: PC1 oriented so the anchor projects positively, whichever way it points
    for s in (1.0, -1.0):
        anchor = s * a.components_[0] + 0.1 * a.components_[1]
        sp = PersonaSpace().fit(X, anchor=anchor)
        assert sp.components_[0] @ anchor > 0
        assert sp.axis_alignment(anchor)[0] > 0


def test_center_false_and_normalize():
    X, _ = planted(n=30, d=12)
    sp = PersonaSpace(n_components=3, center=False).fit(X)
    np.testing.assert_array_equal(sp.mean_, np.zeros(12))
    _, S, Vt = np.linalg.svd(X, full_matrices=False)
    for c, v in zip(sp.components_, Vt[:3]):
        assert abs(abs(c @ v) - 1) < 1e-8
    np.testing.assert_allclose(sp.explained_variance_ratio_, S[:3] ** 2 / (S ** 2).sum(), atol=1e-10)
    assert sp.explained_variance_ratio_.sum() <= 1 + 1e-12
    # normalize=True: rescaling a role does not move it
    scales = np.random.default_rng(0).uniform(0.5, 5, size=(30, 1))
    n1 = PersonaSpace(normalize=True).fit(X)
    n2 = PersonaSpace(normalize=True).fit(X * scales)
    np.testing.assert_allclose(n1.coords_, n2.coords_, atol=1e-8)
    np.testing.assert_allclose(n1.transform(X[0] * 7), n1.coords_[0], atol=1e-8)


def test_axis_alignment_and_extremes():
    X, _ = planted()
    sp = PersonaSpace(n_components=3).fit(X, names=[f"n{i}" for i in range(len(X))])
    np.testing.assert_allclose(sp.axis_alignment(sp.components_[1] * 4), [0, 1, 0], atol=1e-10)
    ex = sp.extremes(k=3, component=0)
    c = sp.coords_[:, 0]
    assert [n for n, _ in ex["high"]] == [f"n{i}" for i in np.argsort(-c)[:3]]
    assert [n for n, _ in ex["low"]] == [f"n{i}" for i in np.argsort(c)[:3]]
    assert ex["high"][0][1] == pytest.approx(c.max())
    with pytest.raises(ValueError):
        sp.extremes(component=5)


def test_validation():
    X, _ = planted(n=5, d=4)
    assert PersonaSpace(n_components=10).fit(X).n_components_ == 4  # clamped to min(n, d)
    with pytest.raises(ValueError, match="at least 2"):
        PersonaSpace().fit(X[:1])
    with pytest.raises(ValueError, match="n_components"):
        PersonaSpace(n_components=0).fit(X)
    with pytest.raises(ValueError, match="names"):
        PersonaSpace().fit(X, names=["a", "b"])


def test_role_matrix_and_mixed_models(tmp_path):
    X, _ = planted(n=4, d=8)
    vecs = vectors_from(X)
    names, M = role_matrix(vecs, Site(3))
    assert names == list(vecs) and M.shape == (4, 8) and M.dtype == np.float64
    np.testing.assert_allclose(M, X, atol=1e-5)
    mixed = dict(vecs)
    mixed["alien"] = vectors_from(X[:1], fingerprint="zzz")["r00"]
    with pytest.raises(VectorMismatchError, match="different models"):
        role_matrix(mixed, 3)
    with pytest.raises(KeyError, match="missing"):
        role_matrix(vecs, 9)
    with pytest.raises(ValueError):
        role_matrix({}, 3)
    # load_role_vectors: one sub-directory per role
    for n, v in vecs.items():
        v.save(tmp_path / "roles" / n)
    (tmp_path / "roles" / "not_a_vector").mkdir()
    loaded = load_role_vectors(tmp_path / "roles")
    assert list(loaded) == sorted(vecs)
    mixed["alien"].save(tmp_path / "roles" / "alien")
    with pytest.raises(VectorMismatchError):
        load_role_vectors(tmp_path / "roles")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no saved role vectors"):
        load_role_vectors(tmp_path / "empty")


def test_synthetic_role_vectors_have_category_structure():
    names = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]
    cats = {n: n[0] for n in names}
    vecs = synthetic_role_vectors(names, cats, layers=(2, 4), d_model=32, include_assistant=True)
    assert set(vecs) == set(names) | {"ai_assistant"}
    assert vecs["a0"].provenance.method == "synthetic"
    sp = PersonaSpace().fit({n: vecs[n] for n in names}, site=4)
    # the two categories separate along some PC (mean gap > 1 std)
    sep = max(abs(sp.coords_[:10, k].mean() - sp.coords_[10:, k].mean()) / sp.coords_[:, k].std() for k in range(3))
    assert sep > 1.0
