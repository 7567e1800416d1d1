"""Classification metrics, coarse-group metrics and reference baselines (majority class, logistic regression)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InputError

__all__ = ["classification_metrics", "group_metrics", "bag_of_genes", "baseline_predictions", "check_groups"]

OTHER = "__other__"


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class recall and the confusion matrix (rows true, columns predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

    labels = list(labels)
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    if len(y_true) == 0:
        return {
            "accuracy": None,
            "macro_f1": None,
            "per_class_recall": {},
            "confusion": {"labels": labels, "matrix": []},
        }
    present = [c for c in labels if c in set(y_true)]
    recall = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class_recall": {c: float(r) for c, r in zip(present, recall, strict=True)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def check_groups(
    groups: Mapping[str, Sequence[str]] | None, classes: Sequence[str]
) -> dict[str, list[str]] | None:
    """Validate coarse groups: members must be classes, and no class may be in two groups."""
    if groups is None:
        return None
    out = {str(g): [str(m) for m in members] for g, members in groups.items()}
    if not out:
        return None
    seen: dict[str, str] = {}
    for g, members in out.items():
        unknown = sorted(set(members) - set(classes))
        if unknown:
            msg = f"group {g!r} names classes {unknown} that are not labels (labels: {list(classes)})"
            raise InputError(msg)
        for m in members:
            if m in seen:
                msg = f"class {m!r} is in two groups ({seen[m]!r} and {g!r})"
                raise InputError(msg)
            seen[m] = g
    return out


def group_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], groups: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """The same metrics on coarse groups: fine classes mapped to their group.

    Cells whose true class is in no group are left out; a prediction of a class in no group counts
    as ``__other__`` (wrong).
    """
    to_group = {m: g for g, members in groups.items() for m in members}
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    keep = np.array([t in to_group for t in y_true], dtype=bool)
    gt = [to_group[t] for t in y_true[keep]]
    gp = [to_group.get(p, OTHER) for p in y_pred[keep]]
    labels = list(groups) + ([OTHER] if OTHER in gp else [])
    out = classification_metrics(gt, gp, labels)
    out["n_cells"] = int(keep.sum())
    out["groups"] = {g: list(m) for g, m in groups.items()}
    return out


def bag_of_genes(
    input_ids: Sequence[Sequence[int]], vocab_size: int, special_ids: Sequence[int] = (0, 1)
) -> sp.csr_matrix:
    """Cells x tokens sparse matrix of rank-weighted presence ``1 - position / length`` (specials dropped)."""
    indptr, cols, vals = [0], [], []
    specials = np.asarray(sorted(special_ids))
    for seq in input_ids:
        ids = np.asarray(seq, dtype=np.int64)
        weight = 1.0 - np.arange(len(ids)) / max(1, len(ids))
        keep = ~np.isin(ids, specials)
        cols.append(ids[keep])
        vals.append(weight[keep])
        indptr.append(indptr[-1] + int(keep.sum()))
    data = np.concatenate(vals) if vals else np.zeros(0)
    idx = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    x = sp.csr_matrix((data.astype(np.float32), idx, np.asarray(indptr)), shape=(len(indptr) - 1, vocab_size))
    x.sum_duplicates()
    return x


def baseline_predictions(
    x: sp.csr_matrix,
    n_genes: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    *,
    class_weight: str | None = "balanced",
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, str]]:
    """Reference classifiers trained on ``train`` and applied to ``test``: ``{name: (predictions, features)}``.

    * ``majority``: the most frequent training class;
    * ``logreg``: logistic regression on the bag of genes ``x`` (`bag_of_genes`);
    * ``length``: logistic regression on log genes expressed per cell (``n_genes``; the token count
      when the tokens have no such column), the depth shortcut alone.
    """
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=str)
    train, test = split == "train", split == "test"
    values, counts = np.unique(labels[train], return_counts=True)
    out = {
        "majority": (np.full(int(test.sum()), values[np.argmax(counts)]), "the most frequent training class")
    }
    clf = LogisticRegression(max_iter=1000, class_weight=class_weight, random_state=seed)
    out["logreg"] = (clf.fit(x[train], labels[train]).predict(x[test]), "bag of genes, 1 - rank/length")
    depth = np.log(np.maximum(np.asarray(n_genes, dtype=np.float64), 1.0))[:, None]
    clf = LogisticRegression(max_iter=1000, class_weight=class_weight, random_state=seed)
    out["length"] = (
        clf.fit(depth[train], labels[train]).predict(depth[test]),
        "log genes expressed per cell",
    )
    return out
