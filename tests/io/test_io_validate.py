"""validate_counts: raw counts only, with a diagnosis of what else was passed; backed data in chunks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

from geneattn.errors import InputError
from geneattn.io import read_h5ad, validate_canonical, validate_counts
from geneattn.io._validate import _chunks


@pytest.fixture
def counts() -> AnnData:
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(50, 30)).astype(np.float32)
    X[:, 0] += 1
    return AnnData(X=sp.csr_matrix(X))


def test_raw_counts_pass(counts):
    validate_counts(counts)
    counts.X = counts.X.toarray()  # dense works too
    validate_counts(counts, chunk_size=7)


def test_log_normalised_is_named(counts):
    counts.layers["counts"] = counts.X.copy()
    counts.X = counts.X.multiply(1e4 / counts.X.sum(axis=1)).tocsr()
    counts.X.data = np.log1p(counts.X.data)
    with pytest.raises(InputError, match=r"log-normalised.*layer='counts'"):
        validate_counts(counts)
    validate_counts(counts, layer="counts")


def test_fixed_total_and_scaled_are_named(counts):
    cp10k = counts.X.multiply(1e4 / counts.X.sum(axis=1)).tocsr()
    with pytest.raises(InputError, match="normalised to a fixed total"):
        validate_counts(AnnData(X=cp10k))
    dense = counts.X.toarray()
    scaled = (dense - dense.mean(0)) / dense.std(0)
    with pytest.raises(InputError, match="scaled"):
        validate_counts(AnnData(X=scaled.astype(np.float32)))


@pytest.mark.parametrize(("value", "match"), [(np.nan, "1 NaN"), (np.inf, "1 infinite"), (-3.0, "negative")])
def test_nan_inf_negative(counts, value, match):
    X = counts.X.toarray()
    X[4, 2] = value
    with pytest.raises(InputError, match=match):
        validate_counts(AnnData(X=X))


def test_empty_and_all_zero():
    with pytest.raises(InputError, match="empty"):
        validate_counts(AnnData(X=np.zeros((0, 5), np.float32)))
    with pytest.raises(InputError, match="only zeros"):
        validate_counts(AnnData(X=sp.csr_matrix((4, 5), dtype=np.float32)))


def test_missing_layer_and_raw(counts):
    with pytest.raises(InputError, match="layer 'counts' not found"):
        validate_counts(counts, layer="counts")
    with pytest.raises(InputError, match="adata.raw is empty"):
        validate_counts(counts, layer="raw")


def test_backed_file_is_checked_in_row_chunks(tmp_path, counts):
    X = counts.X.toarray()
    X[-1, -1] = 0.5  # the only bad value sits in the last chunk
    path = tmp_path / "bad.h5ad"
    AnnData(X=sp.csr_matrix(X)).write_h5ad(path)
    backed = read_h5ad(path, backed=True)
    with pytest.raises(InputError, match="not raw counts"):
        validate_counts(backed, chunk_size=8)
    backed.file.close()


def test_chunks_never_read_more_than_chunk_size_rows():
    class Recorder:
        shape = (25, 3)
        dtype = np.dtype(np.float32)

        def __init__(self):
            self.rows = []

        def __getitem__(self, key):
            start, stop = key.start, min(key.stop, self.shape[0])
            self.rows.append(stop - start)
            return np.ones((stop - start, 3), np.float32)

    rec = Recorder()
    blocks = list(_chunks(rec, 10))
    assert rec.rows == [10, 10, 5] and len(blocks) == 3


def test_validate_canonical_names_the_violation(counts):
    with pytest.raises(
        InputError, match=r"var\['ensembl_id'\] is missing.*obs\['label'\] must be categorical"
    ):
        validate_canonical(counts)
