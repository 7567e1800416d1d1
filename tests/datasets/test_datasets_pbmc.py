"""pbmc68k(): real counts recovered from scanpy's packaged pbmc68k_reduced."""

from __future__ import annotations

import numpy as np
import scanpy as sc

from geneattn.datasets import pbmc68k
from geneattn.io import validate_canonical


def test_pbmc68k_counts_labels_and_ids():
    a = pbmc68k()
    validate_canonical(a)
    src = sc.datasets.pbmc68k_reduced()
    assert a.shape == (700, 765) and list(a.var_names) == list(src.raw.var_names)
    assert len(a.obs["label"].cat.categories) == 10
    assert (a.obs["label"].astype(str).to_numpy() == src.obs["bulk_labels"].astype(str).to_numpy()).all()
    # the counts reproduce the packaged log1p(CP10k) with the full-transcriptome n_counts
    relog = a.X.multiply(1e4 / a.obs["n_counts"].to_numpy()[:, None]).toarray()
    np.testing.assert_allclose(np.log1p(relog), src.raw.X.toarray(), atol=2e-3)
    assert a.X.max() == 259
    assert (a.obs["n_counts"].to_numpy() > np.asarray(a.X.sum(axis=1)).ravel()).all()
    assert a.var["ensembl_mapped"].mean() > 0.9
    assert a.var.loc["HES4", "ensembl_id"] == "ENSG00000188290"
    unmapped = a.var.loc[~a.var["ensembl_mapped"]]
    assert (unmapped["ensembl_id"] == unmapped.index).all()
