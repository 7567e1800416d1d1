"""Restricted permutations: permuted labels that carry no information about the true labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from geneattn.models import make_splits, permute_labels
from geneattn.models._permute import dependence

GROUPS = {"0.1": "low", "0.5": "low", "5": "high", "10": "high"}


def _design(cells_per_well: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The default study's layout: 4 doses x 6 wells, split 3 / 1 / 2 wells per dose by well."""
    rng = np.random.default_rng(seed)
    labels, wells = [], []
    for c in GROUPS:
        for w in range(6):
            n = cells_per_well or int(rng.integers(40, 80))
            labels += [c] * n
            wells += [f"{c}_w{w}"] * n
    labels, wells = np.array(labels), np.array(wells)
    split, grouped = make_splits(labels, wells, test_size=1 / 3, val_size=1 / 6, seed=seed)
    assert grouped
    return labels, wells, split


def _oracle_group_accuracy(labels, new, split) -> float:
    """A model that learned the true class perfectly and predicts the permuted labels it saw for that class
    in training, in their proportions: its expected low-vs-high accuracy against the TRUE test labels."""
    train, test = split == "train", split == "test"
    acc = []
    for c in labels[test]:
        seen = new[train & (labels == c)]
        acc.append(np.mean([GROUPS[x] == GROUPS[c] for x in seen]))
    return float(np.mean(acc))


def _naive_phi2(a: np.ndarray, b: np.ndarray) -> float:
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    t = np.zeros((len(ua), len(ub)))
    np.add.at(t, (ia, ib), 1)
    if min(t.shape) < 2:
        return 0.0
    return chi2_contingency(t, correction=False)[0] / t.sum()


def test_dependence_matches_chi_square_at_every_level():
    rng = np.random.default_rng(3)
    true = rng.choice(list(GROUPS), 300)
    perm = rng.permutation(true)
    g = np.vectorize(GROUPS.get)
    want = (_naive_phi2(true, perm) + 100 * _naive_phi2(g(true), g(perm)) + 10 * _naive_phi2(true, g(perm))
            + 10 * _naive_phi2(g(true), perm))  # fmt: skip
    assert dependence(true, perm, to_group=GROUPS) == pytest.approx(want, rel=1e-9)
    assert dependence(true, true) > 0.9  # identical labels: maximal dependence
    independent = np.tile(list(GROUPS), 24)
    assert dependence(np.repeat(list(GROUPS), 24), independent, to_group=GROUPS) == pytest.approx(
        0.0, abs=1e-12
    )


@pytest.mark.parametrize("seed", range(12))
def test_balanced_null_labels_carry_no_dose_information(seed):
    labels, wells, split = _design(seed=seed)
    new = permute_labels(labels, wells, seed=seed, strata=split, to_group=GROUPS)
    for w in np.unique(wells):  # a well keeps one label
        assert len(set(new[wells == w])) == 1
    for s in ("train", "val", "test"):  # each split keeps its class balance (in wells)
        assert sorted(
            {w: n for w, n in zip(wells[split == s], new[split == s], strict=True)}.values()
        ) == sorted({w: c for w, c in zip(wells[split == s], labels[split == s], strict=True)}.values())
    g = np.vectorize(GROUPS.get)
    for s in ("train", "test"):  # each permuted group draws about half its cells from each true group
        m = split == s
        for grp in ("low", "high"):
            mine = g(labels[m & (g(new) == grp)])
            assert abs((mine == "low").mean() - 0.5) <= 0.1, (s, grp)
    # even a model that learned the true doses perfectly scores 50% +- 10 low vs high against the truth
    assert abs(_oracle_group_accuracy(labels, new, split) - 0.5) <= 0.1
    assert (g(new) != g(labels)).any()


def test_unrestricted_permutation_leaks_the_dose():
    """Why the restriction: plain permutations of 3 training wells per dose often carry the dose."""
    leaks = []
    for seed in range(40):
        labels, wells, split = _design(cells_per_well=50, seed=seed)
        new = permute_labels(labels, wells, seed=seed, strata=split, balanced=False)
        leaks.append(abs(_oracle_group_accuracy(labels, new, split) - 0.5))
    assert max(leaks) >= 0.3
    assert np.mean(np.array(leaks) > 0.1) > 0.3


def test_balanced_permutation_is_seeded_and_varies():
    labels, wells, split = _design(seed=1)
    a = permute_labels(labels, wells, seed=5, strata=split, to_group=GROUPS)
    assert np.array_equal(a, permute_labels(labels, wells, seed=5, strata=split, to_group=GROUPS))
    outs = {tuple(permute_labels(labels, wells, seed=s, strata=split, to_group=GROUPS)) for s in range(10)}
    assert len(outs) >= 5


def test_balanced_without_wells_cells_as_units():
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b", "c"], 500)
    new = permute_labels(labels, np.arange(500).astype(str), seed=0)
    assert sorted(new) == sorted(labels)
    assert dependence(labels, new) < 0.01
