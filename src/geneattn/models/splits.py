"""Train / validation / test splits: stratified by label and, where possible, grouped by well."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..errors import InputError

__all__ = ["make_splits", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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

    With ``groups`` (e.g. wells), `sklearn.model_selection.StratifiedGroupKFold` keeps all cells of a
    group on one side while balancing labels. Grouping is impossible when a class lives in fewer
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
            try:
                split = _grouped(labels, groups, test_size, val_size, seed)
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
