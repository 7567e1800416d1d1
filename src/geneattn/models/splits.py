"""Train / validation / test splits: stratified by label and, where possible, grouped by well."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import numpy as np

from ..errors import InputError

__all__ = ["make_splits", "permute_labels", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _nested(
    labels: np.ndarray, groups: np.ndarray, test_size: float, val_size: float, seed: int
) -> np.ndarray:
    """Groups nested in classes (a well holds one dose): per class, whole groups go to test, val, train.

    A class with ``g`` groups gets ``round(test_size * g)`` test and ``round(val_size * g)``
    validation groups, at least one each, and keeps at least one for training.
    """
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype=object)
    for c in np.unique(labels):
        in_c = labels == c
        names = rng.permutation(np.unique(groups[in_c]))
        n_test = max(1, round(test_size * len(names)))
        n_val = max(1, round(val_size * len(names)))
        while n_test + n_val > len(names) - 1 and max(n_test, n_val) > 1:
            n_test, n_val = (n_test - 1, n_val) if n_test >= n_val else (n_test, n_val - 1)
        split[in_c & np.isin(groups, names[:n_test])] = "test"
        split[in_c & np.isin(groups, names[n_test : n_test + n_val])] = "val"
    return split


def _grouped(
    labels: np.ndarray, groups: np.ndarray, test_size: float, val_size: float, seed: int
) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

    split = np.full(len(labels), "train", dtype=object)
    k_test = max(2, round(1 / test_size))
    cv = StratifiedGroupKFold(n_splits=k_test, shuffle=True, random_state=seed)
    _, test_idx = next(cv.split(np.zeros(len(labels)), labels, groups))
    split[test_idx] = "test"
    rest = np.flatnonzero(split == "train")
    k_val = max(2, round((1 - test_size) / val_size))
    cv = StratifiedGroupKFold(n_splits=k_val, shuffle=True, random_state=seed + 1)
    _, val_idx = next(cv.split(np.zeros(len(rest)), labels[rest], groups[rest]))
    split[rest[val_idx]] = "val"
    return split


def _stratified(labels: np.ndarray, test_size: float, val_size: float, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        rest, test = train_test_split(idx, test_size=test_size, stratify=labels, random_state=seed)
        train, val = train_test_split(
            rest, test_size=val_size / (1 - test_size), stratify=labels[rest], random_state=seed + 1
        )
    except ValueError as e:  # a class too small to appear in every split
        warnings.warn(f"cannot stratify the split ({e}); splitting at random", UserWarning, stacklevel=3)
        rest, test = train_test_split(idx, test_size=test_size, random_state=seed)
        train, val = train_test_split(rest, test_size=val_size / (1 - test_size), random_state=seed + 1)
    split = np.full(len(labels), "train", dtype=object)
    split[val], split[test] = "val", "test"
    return split


def make_splits(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    test_size: float = 0.1,
    val_size: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, bool]:
    """Assign each cell to ``train``, ``val`` or ``test``.

    With ``groups`` (e.g. wells), all cells of a group stay on one side. When every group holds one
    class (sci-Plex wells hold one dose), the fractions count each class's groups: a class with 6
    wells and ``test_size=1/3``, ``val_size=1/6`` gets 2 test wells, 1 validation well and 3
    training wells (at least one of each). Otherwise `sklearn.model_selection.StratifiedGroupKFold`
    balances labels. Grouping is impossible when a class lives in fewer than three groups (it could
    not appear in all three splits) or there are too few groups; then a warning is issued and the
    split is only stratified by label.

    Parameters
    ----------
    labels
        Class of each cell.
    groups
        Group of each cell (None: no grouping).
    test_size, val_size
        Fractions of the test and validation splits: of each class's groups when groups are
        nested in classes, else of cells.
    seed
        Random seed.

    Returns
    -------
    tuple
        ``(split, grouped)``: an array of ``"train"/"val"/"test"`` and whether grouping held.
    """
    labels = np.asarray(labels).astype(str)
    if not (0 < test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
        msg = f"test_size and val_size must be in (0, 1) with sum < 1, got {test_size}, {val_size}"
        raise InputError(msg)
    classes = np.unique(labels)
    if len(classes) < 2:
        msg = f"need at least two classes to fine-tune, got {classes.tolist()}"
        raise InputError(msg)
    if len(labels) < 10:
        msg = f"need at least 10 cells for train/validation/test splits, got {len(labels)}"
        raise InputError(msg)
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        per_class = {c: len(np.unique(groups[labels == c])) for c in classes}
        few = [c for c, n in per_class.items() if n < 3]
        reason = f"classes {few} have fewer than 3 groups" if few else None
        if reason is None:
            nested = all(len(np.unique(labels[groups == g])) == 1 for g in np.unique(groups))
            try:
                split = (_nested if nested else _grouped)(labels, groups, test_size, val_size, seed)
            except ValueError as e:
                reason = str(e)
            else:
                missing = [
                    (s, c) for s in SPLITS for c in classes if not np.any((split == s) & (labels == c))
                ]
                if not missing:
                    return split, True
                reason = f"a grouped split leaves {missing[:3]} empty"
        warnings.warn(
            f"cannot split by group ({reason}); falling back to a split stratified by label only, "
            "so cells of one group may sit in both training and test data",
            UserWarning,
            stacklevel=2,
        )
    return _stratified(labels, test_size, val_size, seed), False


def permute_labels(
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int,
    strata: np.ndarray | None = None,
    to_group: Mapping[str, str] | None = None,
    balanced: bool = True,
) -> np.ndarray:
    """Permute labels between groups: each group keeps its cells and takes another group's label.

    The null of a control fine-tune: labels no longer follow the cells' biology, while every group
    (well) stays intact. With ``balanced`` (the default) the permutation is restricted so that the
    permuted labels carry no information about the true ones: each permuted class draws its cells as
    evenly as the groups allow from every true class and, with ``to_group``, from every coarse group
    (`geneattn.models._permute`). A plain random permutation of a few wells is correlated with the
    true labels by chance, and a model trained on it learns them (95% low vs high against the true
    labels, measured). With ``strata`` (one value per cell, constant within each group, e.g. the
    train/val/test split), labels are permuted only among the groups of a stratum, so every stratum
    keeps its class balance.

    Parameters
    ----------
    labels, groups
        Label and group of each cell; every group must hold one label.
    seed
        Seed of the permutation.
    strata
        Optional stratum of each cell.
    to_group
        Coarse group of each class (e.g. low / high dose), balanced as well.
    balanced
        Restricted, near-orthogonal permutation (True) or a uniform random one (False).

    Returns
    -------
    numpy.ndarray
        The permuted label of each cell (``str``).
    """
    from ._permute import balanced_permutation

    labels, groups = np.asarray(labels).astype(str), np.asarray(groups).astype(str)
    strata = np.zeros(len(labels), dtype=str) if strata is None else np.asarray(strata).astype(str)
    if not len(labels) == len(groups) == len(strata):
        msg = f"labels, groups and strata must have one value per cell ({len(labels)}, {len(groups)}, {len(strata)})"
        raise InputError(msg)
    names, first, sizes = np.unique(groups, return_index=True, return_counts=True)
    for what, values in (("label", labels), ("stratum", strata)):
        mixed = [g for g in names if np.unique(values[groups == g]).size > 1]
        if mixed:
            msg = f"groups {mixed[:3]} hold more than one {what}; labels can only be permuted between groups"
            raise InputError(msg)
    group_label = labels[first]
    rng = np.random.default_rng(seed)
    new = group_label.copy()
    for s in np.unique(strata[first]):
        idx = np.flatnonzero(strata[first] == s)
        if balanced:
            new[idx] = balanced_permutation(group_label[idx], sizes[idx], rng=rng, to_group=to_group)
        else:
            new[idx] = group_label[rng.permutation(idx)]
    return new[np.searchsorted(names, groups)]
