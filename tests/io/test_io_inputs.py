"""Inputs the probe of issue #13 found: no X, float16 counts, counts in a layer, versioned Ensembl ids.

Each is read both in memory (`canonicalize`) and backed from a file (`load`), and compared with the
same cells given the plain way (float32 counts in X) rather than with hard-coded numbers.
"""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from geneattn.errors import InputError
from geneattn.io import canonicalize, load, strip_ensembl_version

N, G = 40, 12


def _plain(seed: int = 0, max_count: int = 6) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, max_count, (N, G)).astype(np.float32)
    X[:, 0] += 1
    obs = pd.DataFrame({"label": pd.Categorical(["a", "b"] * (N // 2))}, index=[f"c{i}" for i in range(N)])
    var = pd.DataFrame({"ensembl_id": [f"ENSG{i:011d}" for i in range(G)]}, index=[f"G{i}" for i in range(G)])
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)


def _same(a: ad.AnnData, b: ad.AnnData) -> None:
    assert (a.X != b.X).nnz == 0 and a.X.dtype == b.X.dtype == np.float32
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)


def _both(adata: ad.AnnData, path, **kw):
    """canonicalize in memory and load backed from a file: (result or InputError) for each."""
    adata.write_h5ad(path)
    out = []
    for f in (
        lambda: canonicalize(adata, min_cells_per_class=1, **kw),
        lambda: load(path, min_cells_per_class=1, **kw),
    ):
        try:
            out.append(f())
        except InputError as e:
            out.append(e)
    return out


def test_no_x_is_one_clear_error_naming_the_layers(tmp_path):
    plain = _plain()
    bare = ad.AnnData(obs=plain.obs, var=plain.var)
    for err in _both(bare, tmp_path / "bare.h5ad"):
        assert isinstance(err, InputError) and "no X matrix" in str(err) and "no layers" in str(err)
    bare.layers["counts"] = plain.X.copy()
    for err in _both(bare, tmp_path / "layer.h5ad"):
        assert isinstance(err, InputError) and "layer='counts' (CLI --layer)" in str(err)
    ref = canonicalize(plain, min_cells_per_class=1)
    for got in _both(bare, tmp_path / "layer.h5ad", layer="counts"):
        _same(got, ref)


def test_counts_layer_beside_normalised_x(tmp_path):
    plain = _plain(1)
    adata = plain.copy()
    adata.layers["counts"] = plain.X.copy()
    adata.X = sp.csr_matrix(np.log1p(plain.X.toarray()))
    for err in _both(adata, tmp_path / "a.h5ad"):
        assert isinstance(err, InputError) and "log-normalised" in str(err)
        assert "layer='counts' (CLI --layer counts)" in str(err)  # the hint names a real option
    ref = canonicalize(plain, min_cells_per_class=1)
    for got in _both(adata, tmp_path / "a.h5ad", layer="counts"):
        _same(got, ref)
        assert got.uns["canonicalize"]["params"]["layer"] == "counts"


@pytest.mark.parametrize("top", [7, 2048])
def test_dense_float16_counts_read_exactly(tmp_path, top):
    plain = _plain(2)
    plain.X[0, 1] = top
    half = plain.copy()
    half.X = plain.X.toarray().astype(np.float16)
    ref = canonicalize(plain, min_cells_per_class=1)
    for got in _both(half, tmp_path / "h.h5ad"):
        _same(got, ref)


def test_float16_beyond_2048_is_refused(tmp_path):
    half = _plain(3)
    dense = half.X.toarray()
    dense[5, 2] = 2050  # float16 stores 2049 as 2048: the file cannot hold exact counts
    half.X = dense.astype(np.float16)
    for err in _both(half, tmp_path / "h.h5ad"):
        assert isinstance(err, InputError) and "float16" in str(err) and "2050" in str(err)


def _naive_strip(i: object) -> object:
    """Reference: drop '.<digits>' right after an 'ENS<letters ending in G><6+ digits>' prefix, by hand."""
    if not isinstance(i, str) or not i[:3].upper() == "ENS":
        return i
    j = 3
    while j < len(i) and i[j].isalpha():
        j += 1
    if j == 3 or i[j - 1].upper() != "G":
        return i
    k = j
    while k < len(i) and i[k].isdigit():
        k += 1
    if k - j < 6 or k >= len(i) or i[k] != "." or k + 1 >= len(i) or not i[k + 1].isdigit():
        return i
    e = k + 1
    while e < len(i) and i[e].isdigit():
        e += 1
    return i[:k] + i[e:]


def test_strip_ensembl_version_matches_a_naive_reference():
    rng = np.random.default_rng(0)
    stems = ["ENSG00000141510", "ENSMUSG00000059552", "ensg00000141510", "ENSG123", "RP11-34P13", "MT-CO1",
             "ENSGALG00000000003", "ENST00000269305"]  # fmt: skip
    tails = ["", ".12", ".1_PAR_Y", ".x", ".", "_1.2"]
    ids = [rng.choice(stems) + rng.choice(tails) for _ in range(300)] + [None, np.nan]
    got = strip_ensembl_version(ids)
    assert got.dtype == object and len(got) == len(ids)
    assert list(got[:-2]) == [_naive_strip(i) for i in ids[:-2]]
    assert got[-2] is None and got[-1] is ids[-1]
    assert sum(g != i for g, i in zip(got[:-2], ids[:-2], strict=True)) > 20  # planted versions are removed
    assert all(g == i for g, i in zip(got[:-2], ids[:-2], strict=True) if not i.upper().startswith("ENS"))


def test_canonicalize_has_no_do_nothing_copy_parameter():
    assert "copy" not in inspect.signature(canonicalize).parameters
    with pytest.raises(TypeError, match="copy"):
        canonicalize(_plain(), copy=True)


def test_versioned_ids_are_stripped_in_canonical_var(tmp_path):
    adata = _plain(4)
    adata.var["ensembl_id"] = [f"{g}.{i + 1}" for i, g in enumerate(adata.var["ensembl_id"])]
    for got in _both(adata, tmp_path / "v.h5ad"):
        assert list(got.var["ensembl_id"]) == [f"ENSG{i:011d}" for i in range(G)]
