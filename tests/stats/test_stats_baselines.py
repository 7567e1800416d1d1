"""Gene-level baselines: every covariate against a naive per-gene loop; the label-use register."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from geneattn.errors import InputError
from geneattn.stats.agreement import auroc
from geneattn.stats.baselines import COVARIATE_COLUMNS, FIELD_COVARIATES, gene_covariates, uses_labels


def _adata(n_cells=80, n_genes=30, seed=0, n_variable=3):
    """Poisson genes over a range of means; the first `n_variable` are on/off (extra variance)."""
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(np.log(0.05), np.log(20), size=n_genes))
    size = rng.lognormal(0, 0.3, size=n_cells)[:, None]
    lam = size * mu[None, :]
    lam[:, :n_variable] *= np.where(rng.random((n_cells, 1)) < 0.3, 3.0, 1 / 7 * 1.0)
    x = rng.poisson(lam).astype(np.float32)
    x[:, -1] = 0  # a never-detected gene
    return AnnData(X=sp.csr_matrix(x), var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))


def _naive(x: np.ndarray, target_sum: float = 1e4) -> pd.DataFrame:
    n, g = x.shape
    rows = []
    norm = np.zeros_like(x, dtype=float)
    for c in range(n):
        total = x[c].sum()
        norm[c] = x[c] / total * target_sum if total > 0 else 0.0
    for j in range(g):
        col = x[:, j]
        k = sum(1 for v in col if v > 0)
        logn = [np.log1p(v) for v in norm[:, j]]
        m_log = sum(logn) / n
        rows.append(
            {
                "mean_count": col.sum() / n,
                "detection": k / n,
                "logit_detection": np.log((k + 0.5) / (n - k + 0.5)),
                "variance": sum((v - m_log) ** 2 for v in logn) / (n - 1),
                "norm_mean": norm[:, j].mean(),
                "norm_var": norm[:, j].var(ddof=1),
            }
        )
    out = pd.DataFrame(rows)
    out["log_mean"] = np.log(out["mean_count"] + 0.5 / n)
    pos = out["variance"][out["variance"] > 0]
    out["log_variance"] = np.log(np.maximum(out["variance"], pos.min() / 2))
    ok = out["norm_var"] > 0
    lm, lv = np.log(out.loc[ok, "norm_mean"]), np.log(out.loc[ok, "norm_var"])
    design = np.column_stack([np.ones(ok.sum()), lm, lm**2])
    beta = np.linalg.lstsq(design, lv, rcond=None)[0]
    out["hvg_residual"] = 0.0
    out.loc[ok, "hvg_residual"] = lv - design @ beta
    return out


def test_gene_covariates_match_a_naive_loop():
    ad = _adata()
    got = gene_covariates(ad)
    assert list(got.columns) == COVARIATE_COLUMNS and list(got.index) == list(ad.var_names)
    ref = _naive(ad.X.toarray().astype(float))
    for col in COVARIATE_COLUMNS:
        np.testing.assert_allclose(
            got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-9, atol=1e-10, err_msg=col
        )
    assert got.loc["G29", "hvg_residual"] == 0 and got.loc["G29", "detection"] == 0
    assert np.isfinite(got.to_numpy()).all()


def test_layer_dense_and_bad_input():
    ad = _adata(seed=1)
    ref = gene_covariates(ad)
    dense = AnnData(X=np.zeros(ad.shape, np.float32), var=ad.var.copy(), layers={"counts": ad.X.toarray()})
    pd.testing.assert_frame_equal(gene_covariates(dense, layer="counts"), ref)
    with pytest.raises(InputError, match="layers has no"):
        gene_covariates(ad, layer="raw")
    bad = ad.copy()
    bad.X = -bad.X
    with pytest.raises(InputError, match="non-negative"):
        gene_covariates(bad)


def test_hvg_residual_finds_extra_variance_and_nothing_on_a_null():
    found, null_rho = [], []
    for seed in range(6):
        cov = gene_covariates(_adata(n_cells=300, n_genes=60, seed=seed))
        found.append(auroc(cov["hvg_residual"].to_numpy(), np.arange(60) < 3))
        # Poisson genes only: the residual is unrelated to the mean (the trend is removed)
        cov_null = gene_covariates(_adata(n_cells=300, n_genes=60, seed=seed, n_variable=0)).iloc[:-1]
        null_rho.append(stats.spearmanr(cov_null["hvg_residual"], cov_null["log_mean"]).statistic)
    assert np.mean(found) > 0.9
    assert abs(np.mean(null_rho)) < 0.15


def test_uses_labels_register():
    t = uses_labels()
    assert t.loc["de", "uses_labels"] and t.loc["attention", "uses_labels"]
    assert not t.loc[list(COVARIATE_COLUMNS), "uses_labels"].any()
    assert not t.loc["attention_pretrained", "uses_labels"] and not t.loc["mean_rank", "uses_labels"]
    assert set(FIELD_COVARIATES) <= set(COVARIATE_COLUMNS)
    assert list(uses_labels(["de", "detection"]).index) == ["de", "detection"]
    with pytest.raises(InputError, match="no label-use entry"):
        uses_labels(["magic"])
