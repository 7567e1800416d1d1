"""Kruskal-Wallis with a small class among many units: the asymptotic p-value is used, and is valid.

With cells as units (no wells), a gene's smallest class often has fewer than 5 cells among
hundreds. A per-gene permutation null there costs minutes per label shuffle, so above
``max_permutation_units`` units the chi-square p-value is used. These tests check the claim that
makes this safe: on such designs it rejects at most at the nominal rate under the null.
"""

from __future__ import annotations

import numpy as np
import pytest

from geneattn.stats import between_class as bc


def _null_pvalues(
    sizes: tuple[int, ...], n_genes: int, seed: int, max_units: int
) -> tuple[np.ndarray, np.ndarray]:
    """p-values and methods of ``n_genes`` genes with iid unit means (the null) in one design."""
    codes = np.repeat(np.arange(len(sizes)), sizes)
    values = np.random.default_rng(seed).normal(size=(n_genes, len(codes)))
    nulls = bc._Nulls(seed, 199, {}, {}, max_units)
    _, p, meth = bc._between_p(bc._Ranked.of(values), codes, len(sizes), min_asymptotic=5, nulls=nulls)
    return p, meth


@pytest.mark.parametrize("sizes", [(1, 2, 3, 40, 40, 40), (2, 3, 50, 100, 150, 200, 40, 30, 25)])
def test_large_designs_with_a_small_class_use_the_conservative_asymptotic_test(sizes):
    p, meth = _null_pvalues(sizes, 4000, seed=len(sizes), max_units=100)
    assert set(bc._METHODS[meth]) == {"kruskal"}
    se = np.sqrt(0.05 * 0.95 / len(p))
    for alpha in (0.05, 0.01):
        assert np.mean(p < alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / len(p))
    assert np.mean(p < 0.05) > 0.05 - 0.03 - 3 * se  # conservative, not powerless


def test_small_designs_keep_the_permutation_null():
    p, meth = _null_pvalues((2, 3, 4, 6), 50, seed=0, max_units=100)
    assert set(bc._METHODS[meth]) == {"kruskal_permutation"}
    p_big, meth_big = _null_pvalues((2, 3, 4, 6), 50, seed=0, max_units=10)
    assert set(bc._METHODS[meth_big]) == {"kruskal"}
    assert not np.allclose(p, p_big)
