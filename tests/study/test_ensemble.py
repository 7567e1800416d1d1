"""Every run scored against the true labels; the ensemble's run-level intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geneattn.study.ensemble import failed_runs, run_interval, score_predictions, summarise

GROUPS = {"low": ["0.1", "0.5"], "high": ["5", "10"]}
CLASSES = ["0.1", "0.5", "5", "10"]


def test_score_predictions_matches_a_naive_count():
    rng = np.random.default_rng(0)
    y = rng.choice(CLASSES, 200)
    logits = rng.normal(size=(200, 4))
    got = score_predictions(logits, CLASSES, y, GROUPS)
    pred = [CLASSES[i] for i in logits.argmax(1)]
    grp = {c: g for g, cs in GROUPS.items() for c in cs}
    assert got["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(pred, y, strict=True)]))
    assert got["group_accuracy"] == pytest.approx(
        np.mean([grp[p] == grp[t] for p, t in zip(pred, y, strict=True)])
    )
    for g, members in GROUPS.items():  # within a group: argmax over that group's classes only
        hits = []
        for row, t in zip(logits, y, strict=True):
            if t in members:
                best = max(members, key=lambda c: row[CLASSES.index(c)])
                hits.append(best == t)
        assert got[f"within_{g}_accuracy"] == pytest.approx(np.mean(hits))


def test_within_group_accuracy_sees_what_four_class_accuracy_hides():
    """A model that knows low vs high perfectly but guesses within low."""
    rng = np.random.default_rng(1)
    y = np.repeat(CLASSES, 100)
    logits = np.zeros((400, 4))
    for i, t in enumerate(y):
        if t in GROUPS["high"]:
            logits[i, CLASSES.index(t)] = 5
        else:
            logits[i, rng.integers(2)] = 5
    got = score_predictions(logits, CLASSES, y, GROUPS)
    assert got["group_accuracy"] == 1.0
    assert got["within_high_accuracy"] == 1.0
    assert abs(got["within_low_accuracy"] - 0.5) < 0.1


def test_run_interval_is_the_t_interval():
    v = [0.6, 0.55, 0.62, 0.58]
    got = run_interval(v)
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(v), scale=stats.sem(v))
    assert got["mean"] == pytest.approx(np.mean(v))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((lo, hi))
    assert np.isnan(run_interval([0.5])["ci_low"])


def test_failed_runs_and_summary_leave_them_out():
    metrics = {
        "finetuned": {"flags": {"learned": True}, "epochs_run": 4},
        "seed1": {"flags": {"learned": False}, "epochs_run": 4},
        "seed2": {
            "flags": {"learned": True},
            "best_epoch": 0,
            "classes": ["a", "b"],  # flat at ln 2
            "eval": [{"val_loss": 0.693}, {"val_loss": 0.692}, {"val_loss": 0.694}],
        },
        "permuted1": {"flags": {"learned": False}, "epochs_run": 4},
    }
    kinds = {"finetuned": "real", "seed1": "real", "seed2": "real", "permuted1": "permuted"}
    bad = failed_runs(metrics, kinds)
    assert bad == ["seed1", "seed2"]  # null runs are never "failed": they should not learn
    scores = pd.DataFrame(
        [
            (r, kinds[r], a)
            for r, a in [("finetuned", 0.6), ("seed1", 0.3), ("seed2", 0.3), ("permuted1", 0.25)]
        ],
        columns=["run", "kind", "accuracy"],
    )
    s = summarise(scores, logreg={"accuracy": 0.5}, failed=bad)
    assert s["real"]["accuracy"]["n_runs"] == 1 and s["real"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert s["real_minus_logreg"]["accuracy"]["mean"] == pytest.approx(0.1)
    assert s["runs"]["seed1"]["accuracy"] == 0.3 and s["failed_runs"] == bad
