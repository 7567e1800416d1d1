from __future__ import annotations

import numpy as np
import pytest

from geneattn import InputError
from geneattn.models import make_splits, permute_labels, sort_classes


def _wells(n_classes=4, wells=6, cells=10):
    labels = np.repeat([f"c{i}" for i in range(n_classes)], wells * cells)
    groups = np.array([f"{lab}-w{(j // cells)}" for j, lab in enumerate(labels)])
    return labels, groups


def test_nested_split_counts_wells_per_class():
    labels, groups = _wells()
    split, grouped = make_splits(labels, groups, test_size=1 / 3, val_size=1 / 6, seed=3)
    assert grouped
    for c in np.unique(labels):
        in_c = labels == c
        per_split = {s: len(np.unique(groups[in_c & (split == s)])) for s in ("train", "val", "test")}
        assert per_split == {"train": 3, "val": 1, "test": 2}
    for g in np.unique(groups):  # no well straddles splits
        assert len(set(split[groups == g])) == 1
    # three wells per class still give one of each
    labels3, groups3 = _wells(wells=3)
    split3, _ = make_splits(labels3, groups3, test_size=1 / 3, val_size=1 / 6, seed=0)
    assert all(
        len(np.unique(groups3[(labels3 == "c0") & (split3 == s)])) == 1 for s in ("train", "val", "test")
    )


def test_permute_labels_moves_whole_wells_within_strata():
    labels, groups = _wells()
    split, _ = make_splits(labels, groups, test_size=1 / 3, val_size=1 / 6, seed=0)
    new = permute_labels(labels, groups, seed=1, strata=split)
    assert new.shape == labels.shape
    for g in np.unique(groups):
        assert len(set(new[groups == g])) == 1  # a well keeps one label
    for s in ("train", "val", "test"):  # each split keeps its class balance
        assert sorted(new[split == s]) == sorted(labels[split == s])
    assert (new != labels).mean() > 0.3  # labels did move
    assert np.array_equal(new, permute_labels(labels, groups, seed=1, strata=split))
    # unstratified: the overall balance is kept, and across seeds every well sees other labels
    seen = {permute_labels(labels, groups, seed=s)[0] for s in range(30)}
    assert len(seen) == 4


def test_permute_labels_refuses_mixed_wells():
    labels, groups = _wells()
    labels[0] = "c3"
    with pytest.raises(InputError, match="more than one label"):
        permute_labels(labels, groups, seed=0)


def test_sort_classes_numeric_then_alphabetical():
    assert sort_classes(["10", "0.5", "5", "0.1", "5"]) == ["0.1", "0.5", "5", "10"]
    assert sort_classes(["b", "a", "10"]) == ["10", "a", "b"]
    assert sort_classes([1, 0.5]) == ["0.5", "1"]
