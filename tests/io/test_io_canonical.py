"""canonicalize on generic AnnData: labels, classes, gene ids, duplicates, empty cells, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from geneattn.errors import InputError
from geneattn.io import canonicalize, validate_canonical


def make(n_cells: int = 40, seed: int = 0, **obs) -> AnnData:
    rng = np.random.default_rng(seed)
    X = rng.poisson(1.5, size=(n_cells, 12)).astype(np.float64)
    X[:, 0] += 1
    cell_type = np.array(["B", "T", "NK", "T"] * (n_cells // 4))
    var = pd.DataFrame(
        {"gene_ids": [f"ENSG{i:011d}.{i % 4 + 1}" for i in range(12)]}, index=[f"GENE{i}" for i in range(12)]
    )
    return AnnData(
        X=X,
        obs=pd.DataFrame({"cell_type": cell_type, **obs}, index=[f"c{i}" for i in range(n_cells)]),
        var=var,
    )


def test_generic_canonical_output():
    a = make()
    a.obs["n_counts"] = -1.0  # a stale/wrong total is not trusted
    out = canonicalize(a, label_key="cell_type")
    validate_canonical(out)
    assert out.X.dtype == np.float32 and sp.isspmatrix_csr(out.X)
    assert list(out.obs["label"].cat.categories) == ["B", "NK", "T"]
    assert out.var["ensembl_id"].iloc[3] == "ENSG00000000003"
    np.testing.assert_array_equal(out.obs["n_counts"], np.asarray(a.X.sum(axis=1)).ravel())
    np.testing.assert_array_equal(out.obs["n_genes"], (a.X > 0).sum(axis=1))
    assert out.uns["canonicalize"]["params"]["label_key"] == "cell_type"
    assert a.X.dtype == np.float64 and "label" not in a.obs  # input untouched


def test_missing_label_column_suggests_close_matches():
    with pytest.raises(InputError, match=r"'celltype' not found.*Did you mean \['cell_type'\]"):
        canonicalize(make(), label_key="celltype")


def test_unknown_class_and_too_few_cells():
    with pytest.raises(InputError, match=r"class 'DC' not found.*\['B', 'NK', 'T'\]"):
        canonicalize(make(), label_key="cell_type", classes=["B", "DC"])
    with pytest.raises(InputError, match=r"fewer than 15 cells \('B': 10, 'NK': 10\)"):
        canonicalize(make(), label_key="cell_type", min_cells_per_class=15)
    out = canonicalize(make(), label_key="cell_type", classes=["T", "B"])
    assert list(out.obs["label"].cat.categories) == ["T", "B"] and out.n_obs == 30


def test_empty_cells_are_dropped_and_logged(caplog):
    a = make()
    a.X[[1, 5, 9]] = 0
    with caplog.at_level(logging.WARNING, logger="geneattn"):
        out = canonicalize(a, label_key="cell_type", min_cells_per_class=1)
    assert out.n_obs == 37 and "dropped 3 of 40 cells with zero counts" in caplog.text
    a.X[:] = 0
    with pytest.raises(InputError, match="only zeros"):
        canonicalize(a, label_key="cell_type")


def test_all_selected_cells_empty_is_an_error():
    a = make()
    a.X[a.obs["cell_type"].to_numpy() == "B"] = 0
    with pytest.raises(InputError, match="only zeros"):
        canonicalize(a, label_key="cell_type", classes=["B"])


@pytest.mark.parametrize(
    ("transform", "match"),
    [(np.log1p, "log-normalised"), (lambda x: -x, "negative"), (lambda x: x + 0.25, "non-integer")],
)
def test_non_count_data_rejected(transform, match):
    a = make()
    a.X = transform(a.X)
    with pytest.raises(InputError, match=match):
        canonicalize(a, label_key="cell_type")


def test_counts_from_layer_and_missing_labels_dropped():
    a = make()
    a.layers["counts"] = a.X.copy()
    a.X = np.log1p(a.X)
    a.obs.loc["c0", "cell_type"] = None
    out = canonicalize(a, label_key="cell_type", layer="counts", min_cells_per_class=5)
    assert out.n_obs == 39 and "c0" not in out.obs_names
    np.testing.assert_array_equal(out.X.toarray(), a.layers["counts"][1:])


def test_duplicated_gene_ids():
    a = make()
    a.var["gene_ids"] = a.var["gene_ids"].str.split(".").str[0]
    a.var.iloc[7, 0] = a.var.iloc[2, 0]  # two genes with counts share an id
    with pytest.raises(InputError, match=r"1 Ensembl ids are duplicated.*GENE2/GENE7.*duplicate_ids='sum'"):
        canonicalize(a, label_key="cell_type")
    summed = canonicalize(a, label_key="cell_type", duplicate_ids="sum")
    assert summed.n_vars == 11 and "GENE7" not in summed.var_names
    np.testing.assert_array_equal(summed[:, "GENE2"].X.toarray().ravel(), a.X[:, 2] + a.X[:, 7])
    first = canonicalize(a, label_key="cell_type", duplicate_ids="first")
    np.testing.assert_array_equal(first[:, "GENE2"].X.toarray().ravel(), a.X[:, 2])


def test_ensembl_ids_as_var_names_with_symbol_column():
    a = make()
    a.var = pd.DataFrame(
        {"gene_symbols": ["A", "B", "A", *[f"S{i}" for i in range(9)]]}, index=a.var["gene_ids"].to_numpy()
    )
    out = canonicalize(a, label_key="cell_type")
    assert list(out.var_names[:3]) == ["A", "B", "A-1"]
    assert out.var["ensembl_id"].iloc[2] == "ENSG00000000002"


def test_groups_and_bad_parameters():
    out = canonicalize(make(), label_key="cell_type", groups={"lymph": ["B", "T"], "innate": ["NK"]})
    assert (out.obs["group"].astype(str) == np.where(out.obs["label"] == "NK", "innate", "lymph")).all()
    with pytest.raises(InputError, match="unknown layout"):
        canonicalize(make(), label_key="cell_type", layout="loom")
    with pytest.raises(InputError, match="no 'perturbation' or 'drug' column"):
        canonicalize(make(), label_key="cell_type", perturbation="Nutlin")
