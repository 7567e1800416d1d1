"""Length/well adjustment of attention: per-gene regression reference, length-only genes, kept dose effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneattn.errors import InputError
from geneattn.stats.adjust import ADJUSTED_COLUMNS, TokenLayout, adjusted_gene_scores, length_adjust

N_LEN, N_DOSE, N_NULL = 10, 10, 100


def _tokens(seed=0, cells_per_well=60, dose_effect=0.3):
    """Two classes with 4 wells each; class-1 wells are deeper (longer cells).

    Genes 0..9 depend on length only, 10..19 on the class only, the rest on nothing.
    """
    rng = np.random.default_rng(seed)
    offsets = {0: [-0.3, -0.15, 0.0, 0.1], 1: [0.1, 0.2, 0.35, 0.45]}
    wells, cls, log_n = [], [], []
    for c, offs in offsets.items():
        for w, o in enumerate(offs):
            wells += [f"{c}w{w}"] * cells_per_well
            cls += [c] * cells_per_well
            log_n.append(np.log(300) + o + rng.normal(0, 0.3, cells_per_well))
    lengths = np.round(np.exp(np.concatenate(log_n))).astype(np.int64)
    cls = np.array(cls)
    n_genes = N_LEN + N_DOSE + N_NULL
    expressed = rng.random((len(lengths), n_genes)) < 0.6
    cell_of_token, token_ids = np.nonzero(expressed)
    x = np.log(lengths)[cell_of_token]
    gamma = np.r_[rng.uniform(-1, 1, N_LEN), np.zeros(n_genes - N_LEN)]
    beta = np.r_[np.zeros(N_LEN), np.full(N_DOSE, dose_effect), np.zeros(N_NULL)]
    values = (
        gamma[token_ids] * (x - x.mean()) + beta[token_ids] * cls[cell_of_token] + rng.normal(0, 0.2, len(x))
    )
    return values, token_ids + 100, cell_of_token, lengths, np.array(wells), cls


def _class_diff(v, token_ids, cell_of_token, cls, gene):
    m = token_ids == gene
    a, b = v[m & (cls[cell_of_token] == 1)], v[m & (cls[cell_of_token] == 0)]
    return a.mean() - b.mean(), np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


def test_slopes_and_adjusted_values_match_per_gene_ols():
    import statsmodels.formula.api as smf

    values, token_ids, cell_of_token, lengths, wells, _ = _tokens()
    table = adjusted_gene_scores(values, TokenLayout(token_ids, cell_of_token, lengths, wells))
    assert list(table.columns) == ADJUSTED_COLUMNS and not table["pooled_slope"].any()
    adj = length_adjust(values, TokenLayout(token_ids, cell_of_token, lengths, wells))
    x_ref = np.log(lengths).mean()
    for gene in (100, 105, 112, 150):
        m = token_ids == gene
        df = pd.DataFrame(
            {"v": values[m], "x": np.log(lengths)[cell_of_token[m]], "well": wells[cell_of_token[m]]}
        )
        slope = smf.ols("v ~ x + C(well)", data=df).fit().params["x"]
        row = table.set_index("token_id").loc[gene]
        assert row["slope"] == pytest.approx(slope, rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(adj[m], df["v"] - slope * (df["x"] - x_ref), atol=1e-10)
        assert row["adjusted"] == pytest.approx((df["v"] - slope * (df["x"] - x_ref)).mean())
        assert row["mean"] == pytest.approx(df["v"].mean()) and row["n_cells"] == m.sum()
        assert row["n_wells"] == df["well"].nunique()


def test_length_only_genes_lose_their_class_effect_dose_genes_keep_it():
    values, token_ids, cell_of_token, lengths, wells, cls = _tokens(seed=1)
    adj = length_adjust(values, TokenLayout(token_ids, cell_of_token, lengths, wells))
    raw_t, adj_t = [], []
    for gene in range(100, 100 + N_LEN):
        d_raw, se_raw = _class_diff(values, token_ids, cell_of_token, cls, gene)
        d_adj, se_adj = _class_diff(adj, token_ids, cell_of_token, cls, gene)
        raw_t.append(d_raw / se_raw)
        adj_t.append(d_adj / se_adj)
    assert np.mean(np.abs(raw_t) > 3) >= 0.5  # classes differ in length, so raw attention differs
    assert np.all(np.abs(adj_t) < 3)  # adjusted: no class effect left
    # dose genes keep their effect (a per-gene well fixed-effect residual would remove it)
    for gene in range(100 + N_LEN, 100 + N_LEN + N_DOSE):
        d_adj, se_adj = _class_diff(adj, token_ids, cell_of_token, cls, gene)
        assert abs(d_adj - 0.3) < 3 * se_adj and d_adj / se_adj > 5


def test_null_genes_stay_null():
    values, token_ids, cell_of_token, lengths, wells, cls = _tokens(seed=2)
    adj = length_adjust(values, TokenLayout(token_ids, cell_of_token, lengths, wells))
    t = np.array(
        [
            np.divide(*_class_diff(adj, token_ids, cell_of_token, cls, g))
            for g in range(100 + N_LEN + N_DOSE, 100 + N_LEN + N_DOSE + N_NULL)
        ]
    )
    assert np.mean(np.abs(t) > 1.96) <= 0.12 and abs(t.mean()) < 0.3


def test_pooled_slope_columns_and_errors():
    values, token_ids, cell_of_token, lengths, wells, _ = _tokens(seed=3, cells_per_well=20)
    rare = np.flatnonzero(token_ids == 100)[:5]  # gene 999: 5 tokens only
    token_ids = token_ids.copy()
    token_ids[rare] = 999
    layout = TokenLayout(token_ids, cell_of_token, lengths, wells)
    table = adjusted_gene_scores(values, layout, min_cells=10).set_index("token_id")
    assert table.loc[999, "pooled_slope"] and table["pooled_slope"].sum() == 1
    others = table.drop(index=999)
    assert table.loc[999, "slope"] != 0 and table.loc[999, "slope"] not in set(others["slope"])
    two = np.column_stack([values, -2 * values])
    both = length_adjust(two, layout)
    np.testing.assert_allclose(both[:, 0], length_adjust(values, layout))
    np.testing.assert_allclose(both[:, 1], -2 * both[:, 0])
    with pytest.raises(InputError, match="one entry per token"):
        length_adjust(values[:-1], layout)
    with pytest.raises(InputError, match="index the"):
        TokenLayout(token_ids, cell_of_token + 10**6, lengths, wells)
    with pytest.raises(InputError, match="one entry per token"):
        TokenLayout(token_ids[:-1], cell_of_token, lengths, wells)
    with pytest.raises(InputError, match="one value per token"):
        adjusted_gene_scores(two, layout)
