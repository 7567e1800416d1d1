"""`models.learned_run`: a fine-tune whose validation loss never left chance is a failed run."""

from __future__ import annotations

import numpy as np
import pytest

from geneattn.models import learned_run


def _metrics(losses, *, best_epoch, n_classes=2):
    return {
        "eval": [{"epoch": i, "val_loss": v} for i, v in enumerate(losses)],
        "best_epoch": best_epoch,
        "classes": [str(i) for i in range(n_classes)],
    }


@pytest.mark.parametrize(
    ("losses", "best", "k", "want"),
    [
        ([0.6893, 0.688], 1, 2, False),  # the review's seed1: flat at ln 2 every epoch
        ([0.6892, 0.699, 0.693], 0, 2, False),  # best epoch 0, flat
        ([0.7876, 0.7613, 0.9545], 1, 2, False),  # never below chance, rising
        ([0.248, 0.371, 0.286], 0, 2, True),  # learned in the first epoch (best epoch 0, not flat)
        ([0.6973, 0.7045, 0.2136], 2, 2, True),  # escaped the plateau late
        ([1.38, 1.36, 1.30], 2, 4, True),  # 4 classes: 1.30 < 0.95 ln 4 = 1.317
        ([1.38, 1.37, 1.33], 2, 4, False),
    ],
)
def test_the_rule_on_validation_histories(losses, best, k, want):
    assert learned_run(_metrics(losses, best_epoch=best, n_classes=k)) is want
    chance = np.log(k)
    assert want == bool(min(losses) < 0.95 * chance)  # the rule reduces to this on these cases


def test_a_run_without_validation_counts_as_learned():
    assert learned_run({"eval": [], "classes": ["a", "b"], "best_epoch": None})
