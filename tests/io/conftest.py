"""Tiny fake sci-Plex-2 files in the two real layouts (scPerturb/pertpy and Kaggle)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

DOSES = ["0", "0.1", "0.5", "5", "10"]
GENES = [f"G{i}" for i in range(20)]
IDS = [f"ENSG{i:011d}" for i in range(20)]


def _counts(n_cells: int, n_genes: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = rng.poisson(1.0, size=(n_cells, n_genes)).astype(np.float32)
    X[:, 0] += 1  # no empty cells
    return sp.csr_matrix(X)


def scperturb_adata(seed: int = 0) -> AnnData:
    """scPerturb/pertpy layout: Nutlin and Dex x 5 doses x 2 wells x 6 cells, plus 7 un-hashed controls."""
    rows = []
    for drug in ("Nutlin", "Dex"):
        for i, dose in enumerate(DOSES):
            for well in (f"A{'ABCDE'[i]}{4:02d}", f"B{'ABCDE'[i]}{8:02d}"):  # col 04 -> rep1, col 08 -> rep2
                rows += [
                    {
                        "perturbation": drug,
                        "dose_value": dose,
                        "well": well,
                        "top_oligo": f"{drug}_{dose}_{well}",
                    }
                ] * 6
    rows += [{"perturbation": "control", "dose_value": np.nan, "well": np.nan, "top_oligo": np.nan}] * 7
    obs = pd.DataFrame(rows)
    obs.index = [f"cell{i}" for i in range(len(obs))]
    genes = [*GENES, "PARGENE"]  # a PAR_Y-like copy: same id as G3 after version stripping, never counted
    X = _counts(len(obs), len(genes), seed).tolil()
    X[:, len(genes) - 1] = 0
    X = sp.csr_matrix(X)
    obs["ncounts"] = np.asarray(X.sum(axis=1)).ravel()
    obs["ngenes"] = np.diff(X.indptr)
    obs["cell_line"] = "A549"
    var = pd.DataFrame(
        {"ensembl_id": [*IDS, IDS[3]], "ncounts": np.asarray(X.sum(axis=0)).ravel()}, index=genes
    )
    var.index.name = "gene_symbol"
    return AnnData(X=X, obs=obs, var=var)


def kaggle_adata(seed: int = 1) -> AnnData:
    """Kaggle layout: 'drug', 'dose' like '10.0', 'n.umi'; duplicated symbols; versioned 'Ensemble Id'."""
    rows = []
    for drug in ("Nutlin", "SAHA"):
        for dose in DOSES:
            rows += [{"drug": drug, "dose": f"{float(dose):.1f}"}] * 12
    rows += [{"drug": "NAN", "dose": "NAN"}] * 5
    obs = pd.DataFrame(rows)
    obs.index = [f"bc{i}" for i in range(len(obs))]
    X = _counts(len(obs), len(GENES), seed)
    obs["n.umi"] = np.asarray(X.sum(axis=1)).ravel() + 100  # totals before the file's gene filter
    obs["count genes expressed"] = np.diff(X.indptr)
    obs["Size_Factor"] = 1.0
    obs["i"] = np.arange(len(obs))
    symbols = list(GENES)
    symbols[5] = symbols[6] = "MATR3"  # same symbol, two Ensembl ids (as in the real file)
    var = pd.DataFrame({"Ensemble Id": [f"{g}.{i % 3 + 1}" for i, g in enumerate(IDS)]}, index=symbols)
    with warnings.catch_warnings():  # anndata warns about the non-unique var_names, as with the real file
        warnings.simplefilter("ignore", UserWarning)
        return AnnData(X=X, obs=obs, var=var)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def sha256():
    """Hash of a file's bytes (to show that reading never modifies the input)."""
    return _sha256


@pytest.fixture
def scperturb() -> AnnData:
    return scperturb_adata()


@pytest.fixture
def kaggle() -> AnnData:
    return kaggle_adata()


@pytest.fixture
def scperturb_file(tmp_path: Path) -> Path:
    path = tmp_path / "srivatsan_2020_sciplex2.h5ad"
    scperturb_adata().write_h5ad(path)
    return path
