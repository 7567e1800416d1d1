"""Well-level PC check of the depth confound vs naive references, on a planted depth axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneattn.errors import InputError
from geneattn.stats import wells as wl
from geneattn.stats.adjust import TokenLayout


def _study(seed=0, n_wells=24, cells=30, n_genes=40, depth_effect=3.0, dose_effect=0.15):
    """Wells of 4 doses; each cell's n_genes varies around its well's depth; attention has a gene-specific
    depth loading (on the cell's log n_genes) and a smaller gene-specific dose loading."""
    rng = np.random.default_rng(seed)
    doses = np.array([0.1, 0.5, 5.0, 10.0])[np.arange(n_wells) % 4]
    # every dose gets the same set of well depths (depth orthogonal to dose by design)
    levels = np.log(400) + np.linspace(-0.6, 0.6, n_wells // 4)
    well_depth = np.empty(n_wells)
    for d in range(4):
        well_depth[d::4] = rng.permutation(levels)
    load_depth, load_dose = rng.normal(0, depth_effect, n_genes), rng.normal(0, dose_effect, n_genes)
    toks, cells_of, vals, n_c, wells, labels = [], [], [], [], [], []
    for w in range(n_wells):
        for _ in range(cells):
            c = len(n_c)
            log_n = well_depth[w] + rng.normal(0, 0.3)
            g = rng.choice(n_genes, size=25, replace=False)
            v = (
                load_depth[g] * (log_n - np.log(400))
                + load_dose[g] * np.log(doses[w])
                + rng.normal(0, 0.2, len(g))
            )
            toks.append(100 + g), cells_of.append(np.full(len(g), c)), vals.append(v)
            n_c.append(np.exp(log_n)), wells.append(f"w{w}"), labels.append(str(doses[w]))
    layout = TokenLayout(np.concatenate(toks), np.concatenate(cells_of), np.array(n_c), np.array(wells))
    return np.concatenate(vals), layout, np.array(labels)


def test_well_gene_matrix_vs_pandas():
    v, layout, _ = _study(n_wells=8, cells=5)
    m, wells, ids = wl.well_gene_matrix(v, layout)
    df = pd.DataFrame({"w": layout.wells[layout.cell_of_token], "g": layout.token_ids, "v": v})
    tab = df.pivot_table(index="w", columns="g", values="v", aggfunc="mean").dropna(axis=1)
    np.testing.assert_allclose(m, tab.loc[wells, ids].to_numpy())
    assert len(ids) == tab.shape[1] < 40  # genes missing from a well are left out


def test_first_component_vs_eigen():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(12, 6)) + np.outer(rng.normal(size=12), rng.normal(size=6)) * 3
    scores, share = wl.first_component(m)
    c = m - m.mean(0)
    evals, evecs = np.linalg.eigh(c.T @ c)
    np.testing.assert_allclose(np.abs(scores), np.abs(c @ evecs[:, -1]))
    assert share == pytest.approx(evals[-1] / evals.sum())


def test_planted_depth_axis_removed_by_n_genes_adjustment():
    v, layout, labels = _study()
    t = wl.well_confound(v, layout, labels, model="m").set_index("adjustment")
    assert list(t.columns) == [c for c in wl.WELL_CONFOUND_COLUMNS if c != "adjustment"]
    before, after = t.loc["none"], t.loc["n_genes"]
    assert before.n_wells == after.n_wells == 24
    # naive reference of the unadjusted row: pandas well means, numpy SVD, scipy-free Spearman via ranks
    df = pd.DataFrame({"w": layout.wells[layout.cell_of_token], "g": layout.token_ids, "v": v})
    tab = df.pivot_table(index="w", columns="g", values="v", aggfunc="mean").dropna(axis=1)
    c = tab.to_numpy() - tab.to_numpy().mean(0)
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    depth = pd.Series(layout.lengths).groupby(layout.wells).median().reindex(tab.index)
    rho = pd.Series(u[:, 0]).corr(pd.Series(depth.to_numpy()), method="spearman")
    assert before.abs_rho_pc1_n_genes == pytest.approx(abs(rho))
    assert before.pc1_share == pytest.approx(s[0] ** 2 / (s**2).sum())
    # the planted depth axis dominates before, is gone after; the dose axis takes its place
    assert before.abs_rho_pc1_n_genes > 0.8 and before.abs_rho_pc1_log_dose < 0.5
    assert after.abs_rho_pc1_n_genes < 0.3 and after.abs_rho_pc1_log_dose > 0.9
    assert (t["unit"] == "well").all()


def test_non_numeric_labels_and_bad_input():
    v, layout, labels = _study(n_wells=8, cells=5)
    t = wl.well_confound(v, layout, np.where(labels == "0.1", "a", "b"), model="m")
    assert t["rho_pc1_log_dose"].isna().all() and t["rho_pc1_n_genes"].notna().all()
    with pytest.raises(InputError, match="labels"):
        wl.well_confound(v, layout, labels[:-1], model="m")
    with pytest.raises(InputError, match="one entry per token"):
        wl.well_gene_matrix(v[:-1], layout)
