"""read_h5ad and load: unreadable files, backed reading, the input file is never modified."""

from __future__ import annotations

import numpy as np
import pytest

from geneattn.errors import InputError
from geneattn.io import canonicalize, load, read_h5ad


def test_missing_empty_directory_and_non_h5ad(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_h5ad(tmp_path / "nope.h5ad")
    with pytest.raises(InputError, match="directory"):
        read_h5ad(tmp_path)
    (tmp_path / "empty.h5ad").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_h5ad(tmp_path / "empty.h5ad")
    (tmp_path / "cells.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not an HDF5.*sc.read_csv"):
        read_h5ad(tmp_path / "cells.csv")


def test_truncated_file(scperturb_file):
    data = scperturb_file.read_bytes()
    bad = scperturb_file.with_name("truncated.h5ad")
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_h5ad(bad)


@pytest.mark.filterwarnings("ignore:Element")
def test_hdf5_that_is_not_anndata(tmp_path):
    import h5py

    path = tmp_path / "other.h5ad"
    with h5py.File(path, "w") as f:
        f["something"] = np.arange(3)
    with pytest.raises(InputError, match="cannot read"):
        read_h5ad(path)


def test_backed_read_and_load_leave_the_file_untouched(scperturb_file, scperturb, sha256):
    before = sha256(scperturb_file)
    backed = read_h5ad(scperturb_file, backed=True)
    assert backed.isbacked and backed.shape == scperturb.shape
    backed.file.close()
    got = load(scperturb_file, perturbation="Nutlin", classes=["0.1", "10"], min_cells_per_class=5)
    in_memory = canonicalize(
        read_h5ad(scperturb_file), perturbation="Nutlin", classes=["0.1", "10"], min_cells_per_class=5
    )
    assert sha256(scperturb_file) == before
    assert (got.X != in_memory.X).nnz == 0
    assert got.obs_names.equals(in_memory.obs_names) and got.var_names.equals(in_memory.var_names)
    assert list(got.obs["label"].cat.categories) == ["0.1", "10"]
