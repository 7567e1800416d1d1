"""io.write_h5ad writes the file AnnData.write_h5ad writes (HDF5 tree, attributes and values), atomically."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from geneattn.io import write_h5ad, write_table


def _tree(path) -> dict:
    """Every group and dataset: attributes, dtype, shape and values."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: str(v) for k, v in f.attrs.items()}

        def visit(name, obj):
            attrs = {k: str(v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = (attrs, str(obj.dtype), obj.shape, np.asarray(obj[()]).tolist())
            else:
                out[name] = (attrs, "group")

        f.visititems(visit)
    return out


def _adata(*, raw: bool, x: bool = True) -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = sp.random(30, 12, density=0.3, format="csr", dtype=np.float32, random_state=1)
    obs = pd.DataFrame(
        {"s": rng.choice(["x", "y"], 30), "v": rng.random(30)}, index=[f"c{i}" for i in range(30)]
    )
    var = pd.DataFrame(
        {"ensembl_id": [f"ENSG{i:011d}" for i in range(12)]}, index=[f"g{i}" for i in range(12)]
    )
    a = ad.AnnData(X=X if x else None, obs=obs, var=var)
    a.layers["counts"] = X.copy()
    a.obsm["X_umap"] = rng.random((30, 2))
    a.uns["params"] = {"seed": 0, "classes": ["a", "b"]}
    if raw:
        a.raw = a
    return a


@pytest.mark.parametrize(("raw", "x"), [(False, True), (True, True), (False, False)])
def test_same_file_as_anndata(tmp_path, raw, x):
    _adata(raw=raw, x=x).write_h5ad(tmp_path / "ref.h5ad")
    write_h5ad(tmp_path / "ours.h5ad", _adata(raw=raw, x=x))
    assert _tree(tmp_path / "ours.h5ad") == _tree(tmp_path / "ref.h5ad")
    back = ad.read_h5ad(tmp_path / "ours.h5ad")
    assert (back.raw is None) == (not raw) and (back.X is None) == (not x)


def test_views_and_backed_inputs(tmp_path):
    a = _adata(raw=False)
    write_h5ad(tmp_path / "view.h5ad", a[:10])
    assert ad.read_h5ad(tmp_path / "view.h5ad").n_obs == 10
    backed = ad.read_h5ad(tmp_path / "view.h5ad", backed="r")
    write_h5ad(tmp_path / "copy.h5ad", backed)
    assert _tree(tmp_path / "copy.h5ad") == _tree(tmp_path / "view.h5ad")
    backed.file.close()


def test_write_table_round_trip(tmp_path):
    df = pd.DataFrame({"gene": ["a", "b"], "score": [0.5, 1.5]}, index=[7, 8])
    write_table(tmp_path / "t.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df.reset_index(drop=True))
