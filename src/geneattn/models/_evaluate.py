"""Test-set uncertainty: bootstrap over test units (wells), paired comparisons, accuracy by depth.

Cells of one well share its depth and handling, so they are not independent: the unit of
replication is the well. Each bootstrap replicate draws, within every class, as many of that
class's test wells as it has, with replacement, and keeps all cells of a drawn well. The model and
the baselines are scored on the same replicates, so their differences get paired intervals.
Without wells, each cell is its own unit (a stratified cell bootstrap). With few wells per class
the intervals are widened for the small number of units (`small_sample_widening`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "unit_bootstrap",
    "min_units_per_stratum",
    "small_sample_widening",
    "bootstrap_scores",
    "accuracy_by_tertile",
]


def unit_bootstrap(units: np.ndarray, strata: np.ndarray, *, n_boot: int, seed: int) -> list[np.ndarray]:
    """Cell indices of ``n_boot`` replicates: per stratum, its units drawn with replacement."""
    rng = np.random.default_rng(seed)
    units, strata = np.asarray(units, dtype=str), np.asarray(strata, dtype=str)
    blocks = [
        [np.flatnonzero(in_s & (units == u)) for u in np.unique(units[in_s])]
        for in_s in (strata == s for s in np.unique(strata))
    ]
    reps = []
    for _ in range(n_boot):
        parts = [cells[i] for cells in blocks for i in rng.integers(len(cells), size=len(cells))]
        reps.append(np.concatenate(parts))
    return reps


def _encode(values: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Index of each value in ``names`` (``len(names)`` for values not in it)."""
    lookup = {n: i for i, n in enumerate(names)}
    return np.asarray([lookup.get(str(v), len(names)) for v in values], dtype=np.int64)


def _acc_f1(t: np.ndarray, p: np.ndarray, k: int) -> tuple[float, float]:
    """Accuracy and macro-F1 (over the classes present in ``t``) of integer labels (``k`` = other)."""
    cm = np.bincount(t * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)
    tp = np.diag(cm[:, :k]).astype(np.float64)
    support, predicted = cm.sum(axis=1), np.bincount(p, minlength=k + 1)[:k]
    f1 = 2 * tp / np.maximum(support + predicted, 1)
    return float(tp.sum() / max(1, len(t))), float(f1[support > 0].mean())


def min_units_per_stratum(units: np.ndarray, strata: np.ndarray) -> int:
    """The fewest units any stratum has (a bootstrap needs at least 2 in every stratum)."""
    units, strata = np.asarray(units, dtype=str), np.asarray(strata, dtype=str)
    return min(len(np.unique(units[strata == s])) for s in np.unique(strata))


def _ci(values: np.ndarray, point: float, widen: float) -> list[float] | None:
    """95% percentile interval, its distances from ``point`` multiplied by ``widen``."""
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(point + widen * (lo - point)), float(point + widen * (hi - point))]


def small_sample_widening(n_units: int) -> float:
    """``sqrt(n / (n - 1))``: the bootstrap variance of a mean of ``n`` units is ``(n - 1) / n`` of the unbiased one.

    With 2 test wells per class a plain well bootstrap is anticonservative: on a null where each
    well gets a random predicted class, "beats majority" came out in 10% of 40 simulations (cell
    bootstrap: 25%) against a nominal 2.5%; widened, 3% (60 simulations), with full power on a
    planted effect (tests/models/test_evaluate.py).
    """
    return float(np.sqrt(n_units / (n_units - 1))) if n_units > 1 else 1.0


def bootstrap_scores(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    classes: Sequence[str],
    replicates: list[np.ndarray],
    *,
    reference: str = "model",
    widen: float = 1.0,
) -> dict[str, Any]:
    """Accuracy and macro-F1 with 95% percentile intervals for every predictor, on the same replicates.

    No replicates (too few units to resample) give intervals of None. Intervals are widened by
    ``widen`` around the point estimate (`small_sample_widening`).

    Returns ``{"scores": {name: {accuracy, accuracy_ci, macro_f1, macro_f1_ci}}, "vs_<reference>": ...}``:
    for every other predictor, the paired difference ``reference - name`` with its interval.
    """
    k = len(classes)
    t = _encode(y_true, classes)
    coded = {name: _encode(p, classes) for name, p in predictions.items()}
    boot = {
        name: np.array([_acc_f1(t[r], p[r], k) for r in replicates]).reshape(-1, 2)
        for name, p in coded.items()
    }
    scores = {}
    for name, p in coded.items():
        acc, f1 = _acc_f1(t, p, k)
        b = boot[name]
        scores[name] = {
            "accuracy": acc,
            "accuracy_ci": _ci(b[:, 0], acc, widen),
            "macro_f1": f1,
            "macro_f1_ci": _ci(b[:, 1], f1, widen),
        }
    diffs = {}
    for name in coded:
        if name != reference and reference in coded:
            d = boot[reference] - boot[name]
            da = scores[reference]["accuracy"] - scores[name]["accuracy"]
            df = scores[reference]["macro_f1"] - scores[name]["macro_f1"]
            diffs[name] = {
                "accuracy": da, "accuracy_ci": _ci(d[:, 0], da, widen),
                "macro_f1": df, "macro_f1_ci": _ci(d[:, 1], df, widen),
            }  # fmt: skip
    return {"scores": scores, f"{reference}_minus": diffs}


def accuracy_by_tertile(
    n_genes: np.ndarray, y_true: np.ndarray, predictions: Mapping[str, np.ndarray]
) -> list[dict[str, Any]]:
    """Accuracy of every predictor within tertiles of genes expressed per cell (the depth shortcut shows).

    Edges are the test cells' 1/3 and 2/3 quantiles; a tertile holds cells with ``lo <= n_genes <= hi``
    (boundary cells go to the lower tertile).
    """
    n_genes, y_true = np.asarray(n_genes, dtype=np.float64), np.asarray(y_true, dtype=str)
    edges = np.quantile(n_genes, [0.0, 1 / 3, 2 / 3, 1.0])
    which = np.clip(np.searchsorted(edges[1:-1], n_genes, side="left"), 0, 2)
    out = []
    for i in range(3):
        sel = which == i
        row: dict[str, Any] = {"tertile": i + 1, "n_genes": [float(edges[i]), float(edges[i + 1])],
                               "n_cells": int(sel.sum())}  # fmt: skip
        for name, pred in predictions.items():
            row[name] = float(np.mean(np.asarray(pred, dtype=str)[sel] == y_true[sel])) if sel.any() else None
        out.append(row)
    return out
