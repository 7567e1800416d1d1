"""Train / validation / test splits: stratified by label and, where possible, grouped by well."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..errors import InputError

__all__ = ["make_splits", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _nested(
    labels: np.ndarray, groups: np.ndarray, test_size: float, val_size: float, seed: int
) -> np.ndarray:
    """Groups nested in classes (a well holds one dose): per class, whole groups go to test, val, train."""
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype=object)
    for c in np.unique(labels):
        in_c = labels == c
        names, sizes = np.unique(groups[in_c], return_counts=True)
        order = rng.permutation(len(names))
        names, sizes = names[order], sizes[order]
        total, i = sizes.sum(), 0
        for part, frac in (("test", test_size), ("val", val_size)):
            taken = 0
            while i < len(names) - 1 and (taken == 0 or taken < frac * total):
                split[in_c & (groups == names[i])] = part
                taken += sizes[i]
                i += 1
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
    class (sci-Plex wells hold one dose), whole groups of each class are drawn for test and
    validation until each has its fraction of the class's cells (at least one group each, at least
    one left for training); otherwise `sklearn.model_selection.StratifiedGroupKFold` balances labels. Grouping is impossible when a class lives in fewer
    than three groups (it could not appear in all three splits) or there are too few groups; then a
    warning is issued and the split is only stratified by label (Geneformer's default 80/10/10).

    Parameters
    ----------
    labels
        Class of each cell.
    groups
        Group of each cell (None: no grouping).
    test_size, val_size
        Fractions of cells for the test and validation splits.
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
