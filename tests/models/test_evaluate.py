from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from geneattn.models._evaluate import (
    _acc_f1,
    accuracy_by_tertile,
    bootstrap_scores,
    small_sample_widening,
    unit_bootstrap,
)

CLASSES = ["a", "b", "c", "d"]


def _wells(seed, n_wells=2, cells=50, planted=0.0):
    """Test cells of 4 classes x ``n_wells`` wells. The "model" gives each well one random class
    (a well-level artefact: its errors are shared by a well's cells), and the true class to a
    ``planted`` fraction of cells; the majority baseline always says "a"."""
    rng = np.random.default_rng(seed)
    y = np.repeat(CLASSES, n_wells * cells)
    wells = np.array([f"{c}{i // cells}" for c in CLASSES for i in range(n_wells * cells)])
    pred = y.copy()
    for w in np.unique(wells):
        sel = wells == w
        pred[sel] = np.where(rng.random(sel.sum()) < 0.7, rng.choice(CLASSES), rng.choice(CLASSES, sel.sum()))
    hit = rng.random(len(y)) < planted
    pred[hit] = y[hit]
    return y, wells, pred, np.full(len(y), "a")


def test_fast_scores_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 4, 60)
        t[t == 3] = 2  # a class never true
        p = rng.integers(0, 5, 60)  # 4 = a prediction outside the classes
        acc, f1 = _acc_f1(t, p, 4)
        present = sorted(set(t.tolist()))
        assert acc == pytest.approx(accuracy_score(t, p))
        assert f1 == pytest.approx(f1_score(t, p, labels=present, average="macro", zero_division=0))


def test_unit_bootstrap_keeps_wells_whole_and_strata_sized():
    y, wells, _, _ = _wells(0, n_wells=3, cells=7)
    for r in unit_bootstrap(wells, y, n_boot=50, seed=1):
        drawn = wells[r]
        for c in CLASSES:
            in_c = drawn[y[r] == c]
            assert len(in_c) == 21  # 3 wells of 7 cells drawn per class
            names, counts = np.unique(in_c, return_counts=True)
            assert (counts % 7 == 0).all()  # whole wells, possibly repeated


def test_intervals_match_a_naive_loop():
    y, wells, pred, maj = _wells(3, n_wells=3)
    reps = unit_bootstrap(wells, y, n_boot=200, seed=0)
    out = bootstrap_scores(y, {"model": pred, "majority": maj}, CLASSES, reps, widen=1.0)
    naive = np.array([accuracy_score(y[r], pred[r]) - accuracy_score(y[r], maj[r]) for r in reps])
    assert out["model_minus"]["majority"]["accuracy_ci"] == pytest.approx(np.percentile(naive, [2.5, 97.5]))
    f1 = np.array([f1_score(y[r], pred[r], labels=CLASSES, average="macro", zero_division=0) for r in reps])
    assert out["scores"]["model"]["macro_f1_ci"] == pytest.approx(np.percentile(f1, [2.5, 97.5]))
    wide = bootstrap_scores(y, {"model": pred}, CLASSES, reps, widen=2.0)["scores"]["model"]
    point, (lo, hi) = wide["accuracy"], out["scores"]["model"]["accuracy_ci"]
    assert wide["accuracy_ci"] == pytest.approx([point + 2 * (lo - point), point + 2 * (hi - point)])


@pytest.mark.parametrize(("planted", "max_rate", "min_rate"), [(0.0, 0.1, 0.0), (0.4, 1.0, 0.9)])
def test_beats_majority_on_null_and_planted_wells(planted, max_rate, min_rate):
    """2 test wells per class: the widened well bootstrap rarely claims a win on a well-artefact null,
    and finds a planted effect."""
    wins = 0
    for s in range(40):
        y, wells, pred, maj = _wells(s, planted=planted)
        reps = unit_bootstrap(wells, y, n_boot=200, seed=s)
        out = bootstrap_scores(
            y, {"model": pred, "majority": maj}, CLASSES, reps, widen=small_sample_widening(2)
        )
        wins += out["model_minus"]["majority"]["accuracy_ci"][0] > 0
    assert min_rate <= wins / 40 <= max_rate


def test_accuracy_by_tertile_matches_naive():
    rng = np.random.default_rng(0)
    n = rng.integers(100, 1000, 90)
    y = rng.choice(CLASSES, 90)
    pred = np.where(n > 600, y, "a")  # right only in deep cells
    rows = accuracy_by_tertile(n, y, {"model": pred})
    edges = np.quantile(n, [1 / 3, 2 / 3])
    bins = [n <= edges[0], (n > edges[0]) & (n <= edges[1]), n > edges[1]]
    assert [r["n_cells"] for r in rows] == [int(b.sum()) for b in bins]
    assert [r["model"] for r in rows] == pytest.approx([np.mean(pred[b] == y[b]) for b in bins])
    assert rows[2]["model"] > rows[0]["model"]
