"""Restricted label permutations whose labels carry no information about the true labels.

A plain random permutation of labels between a handful of wells is correlated with the true labels
by chance: with 3 training wells per dose a permutation's Spearman correlation with dose has an SD of
0.30, and a control fine-tune on such labels learned the dose axis (95% low vs high against the true
labels, measured). The null runs must not carry label information, so the permutation here is
*restricted*: among the permutations of the units' labels it searches for one whose permuted labels
are as close to independent of the true labels as the units allow, at the level of the classes and,
where coarse groups are given (low / high dose), of the groups, in every pairing (true class or group
x permuted class or group). Dependence is the sum of the cell-weighted ``phi² = chi² / N`` of those
contingency tables, the coarser pairings weighted more; 0 means every permuted class draws its cells
evenly from the true classes.

The search is a seeded local search (random starts, swaps of two units' labels while the dependence
falls), so a seed picks one of the (many) near-orthogonal permutations; which wells end up together
is still random.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["dependence", "balanced_permutation"]

#: random starts of the local search, and the most swap proposals per start
N_STARTS = 8
MAX_PROPOSALS = 4000
#: weight of a pairing per coarse (group) level in it: group x group 100, class x group 10, class x class 1
LEVEL_WEIGHT = 10.0


def _phi2(table: np.ndarray) -> float:
    """``chi² / N`` of a contingency table (rows or columns that are all zero ignored)."""
    t = table[table.sum(1) > 0][:, table.sum(0) > 0]
    n = t.sum()
    if n <= 0 or min(t.shape) < 2:
        return 0.0
    expected = np.outer(t.sum(1), t.sum(0)) / n
    return float(((t - expected) ** 2 / expected).sum() / n)


def _indicators(
    labels: np.ndarray, names: np.ndarray, to_group: Mapping[str, str] | None
) -> list[np.ndarray]:
    """``[classes x levels]`` indicator matrices: identity (classes), and classes -> groups."""
    mats = [np.eye(len(names))]
    if to_group:
        gnames = sorted({str(to_group.get(str(c), "")) for c in names})
        if len(gnames) > 1:
            g = np.zeros((len(names), len(gnames)))
            for i, c in enumerate(names):
                g[i, gnames.index(str(to_group.get(str(c), "")))] = 1.0
            mats.append(g)
    return mats


def _score(cross: np.ndarray, mats: list[np.ndarray]) -> float:
    """Weighted sum of phi² over every pairing of levels of a class x class table ``cross`` (true x permuted).

    Coarser pairings weigh more (`LEVEL_WEIGHT` per group level in the pairing): a model that learns
    the true groups must find its permuted group independent of them first, then the classes.
    """
    return sum(
        LEVEL_WEIGHT ** (i + j) * _phi2(a.T @ cross @ b)
        for i, a in enumerate(mats)
        for j, b in enumerate(mats)
    )


def dependence(
    true: np.ndarray,
    permuted: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    to_group: Mapping[str, str] | None = None,
) -> float:
    """Cell-weighted dependence of permuted on true labels: summed ``phi²`` over class and group levels.

    Parameters
    ----------
    true, permuted
        True and permuted label of each unit (or cell).
    weights
        Cells per unit (1 each by default).
    to_group
        Coarse group of each class, e.g. ``{"0.1": "low", "0.5": "low", "5": "high", "10": "high"}``.

    Returns
    -------
    float
        0 for labels independent of the true ones at every level; larger is more dependent.
    """
    true, permuted = np.asarray(true).astype(str), np.asarray(permuted).astype(str)
    w = np.ones(len(true)) if weights is None else np.asarray(weights, dtype=float)
    names = np.unique(np.concatenate([true, permuted]))
    cross = np.zeros((len(names), len(names)))
    np.add.at(cross, (np.searchsorted(names, true), np.searchsorted(names, permuted)), w)
    return _score(cross, _indicators(true, names, to_group))


def _local_search(t: np.ndarray, new: np.ndarray, w: np.ndarray, mats: list[np.ndarray], k: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, float]:  # fmt: skip
    """Swap two units' permuted labels while the dependence falls; ``(labels, score)``."""
    cross = np.zeros((k, k))
    np.add.at(cross, (t, new), w)
    best = _score(cross, mats)
    n = len(t)
    proposals = min(MAX_PROPOSALS, 4 * n * n)
    for _ in range(proposals):
        if best <= 1e-12:
            break
        i, j = rng.integers(n, size=2)
        a, b = new[i], new[j]
        if a == b:
            continue
        cross[t[i], a] -= w[i]
        cross[t[i], b] += w[i]
        cross[t[j], b] -= w[j]
        cross[t[j], a] += w[j]
        s = _score(cross, mats)
        if s < best - 1e-12:
            best, new[i], new[j] = s, b, a
        else:  # undo
            cross[t[i], a] += w[i]
            cross[t[i], b] -= w[i]
            cross[t[j], b] += w[j]
            cross[t[j], a] -= w[j]
    return new, best


def balanced_permutation(
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    rng: np.random.Generator,
    to_group: Mapping[str, str] | None = None,
) -> np.ndarray:
    """A permutation of ``labels`` (one per unit) nearly independent of them (see the module docstring).

    Parameters
    ----------
    labels
        True label of each unit.
    weights
        Cells per unit.
    rng
        Random generator (the seed picks the permutation).
    to_group
        Coarse group of each class (balanced too where given).

    Returns
    -------
    numpy.ndarray
        The permuted label of each unit: a rearrangement of ``labels`` (every label keeps its count).
    """
    labels = np.asarray(labels).astype(str)
    names, t = np.unique(labels, return_inverse=True)
    mats = _indicators(labels, names, to_group)
    w = np.asarray(weights, dtype=float)
    best, best_score = t.copy(), np.inf
    for _ in range(N_STARTS):
        new, score = _local_search(t, rng.permutation(t), w, mats, len(names), rng)
        if score < best_score - 1e-12:
            best, best_score = new, score
    return names[best]
