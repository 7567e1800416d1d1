"""Every training run scored against the TRUE labels, and the run ensemble's accuracy with run-level intervals.

A permuted-label (null) run is trained on labels that should carry no information; scored against
the true labels it must sit at chance (low vs high 50%). A real-label run that did not learn (its
test accuracy not above the majority class, best epoch 0) is a failed run, not a replicate: it is
flagged and left out of the real arm of the run-level null. Quantities that depend on one training
run are reported as the real-label runs' mean with a t-interval over runs (the unit: the training
run, on the study's one split and its test wells).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["score_predictions", "score_runs", "summarise", "run_interval", "failed_runs"]


def score_predictions(
    logits: np.ndarray,
    classes: Sequence[str],
    y_true: np.ndarray,
    groups: Mapping[str, Sequence[str]] | None,
) -> dict[str, float]:
    """Accuracy against ``y_true``: over the classes, over the groups, and within each group.

    Within a group (e.g. 0.1 vs 0.5), the cells of its classes are classified by the largest logit
    among those classes only: how well the model separates the classes of one group.
    """
    classes = [str(c) for c in classes]
    y_true = np.asarray(y_true).astype(str)
    pred = np.asarray(classes)[np.asarray(logits).argmax(1)]
    out = {"accuracy": float((pred == y_true).mean())}
    if not groups:
        return out
    to_group = {m: g for g, members in groups.items() for m in members}
    keep = np.isin(y_true, list(to_group))
    gp = np.array([to_group.get(p, "") for p in pred[keep]])
    out["group_accuracy"] = float((gp == np.array([to_group[t] for t in y_true[keep]])).mean())
    for g, members in groups.items():
        cols = [classes.index(m) for m in members if m in classes]
        rows = np.isin(y_true, members)
        if len(cols) < 2 or not rows.any():
            continue
        sub = np.asarray(classes)[cols][np.asarray(logits)[np.ix_(rows, cols)].argmax(1)]
        out[f"within_{g}_accuracy"] = float((sub == y_true[rows]).mean())
    return out


def score_runs(
    models: Mapping[str, object],
    kinds: Mapping[str, str],
    test: pd.DataFrame,
    *,
    groups: Mapping[str, Sequence[str]] | None,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Table ``run, kind, accuracy[, group_accuracy, within_<group>_accuracy ...]`` against the true test labels.

    Parameters
    ----------
    models
        Run name -> classifier directory.
    kinds
        Run name -> ``"real"`` or ``"permuted"``.
    test
        The test cells: ``input_ids`` and the true ``label``.
    groups
        Coarse groups of classes (e.g. low and high dose).
    batch_size
        Cells per forward pass.
    """
    from ..models import load
    from ..models._predict import predict

    rows = []
    y_true = test["label"].astype(str).to_numpy()
    ids = list(test["input_ids"])
    for name, path in models.items():
        clf = load(path, task="classifier")
        classes = [str(clf.config.id2label[i]) for i in range(clf.config.num_labels)]
        scores = score_predictions(predict(clf, ids, batch_size=batch_size), classes, y_true, groups)
        rows.append({"run": name, "kind": kinds[name], **scores})
    return pd.DataFrame(rows)


def run_interval(
    values: Sequence[float], level: float = 0.95, *, bounds: tuple[float, float] | None = None
) -> dict[str, float | int]:
    """Mean, t-interval over runs and n (the interval is NaN with fewer than 2 runs).

    ``bounds``: clip the interval to the range the quantity can take (e.g. ``(0, 1)`` for an accuracy).
    """
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    out: dict[str, float | int] = {"mean": float(v.mean()) if len(v) else float("nan"), "n_runs": len(v)}
    if len(v) >= 2:
        half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        lo, hi = out["mean"] - half, out["mean"] + half
        if bounds is not None:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        out |= {"ci_low": lo, "ci_high": hi, "sd": float(v.std(ddof=1))}
    else:
        out |= {"ci_low": float("nan"), "ci_high": float("nan"), "sd": float("nan")}
    return out


def failed_runs(run_metrics: Mapping[str, Mapping[str, object]], kinds: Mapping[str, str]) -> list[str]:
    """Real-label runs that did not learn: left out of the real arm, and reported.

    A run failed when `geneattn.models.learned_run` says so (its validation loss never fell below
    0.95 ln K, or it kept epoch 0 with the loss flat: ``flags["failed"]``), or when its test accuracy's
    interval is not above the majority class (``flags["learned"]`` false). ``run_metrics``: each run's
    fine-tuning ``metrics.json`` (its own test labels: the true ones for a real-label run).
    """
    from ..models import learned_run

    bad = []
    for name, m in run_metrics.items():
        if kinds.get(name) != "real":
            continue
        flags = m.get("flags") or {}
        if flags.get("learned") is False or not learned_run(m):
            bad.append(name)
    return bad


def summarise(scores: pd.DataFrame, *, logreg: Mapping[str, float] | None = None,
              failed: Sequence[str] = ()) -> dict[str, object]:  # fmt: skip
    """``metrics["ensemble"]``: per kind and metric, the runs' mean with a run-level interval.

    ``scores``: `score_runs`' table (one row per run).
    ``logreg``: the logistic regression's accuracy on the same split, per metric (``accuracy``,
    ``group_accuracy``): the real runs' paired difference to it is reported with its interval.
    Failed runs are left out of the real-label summaries and listed.
    """
    runs = {str(r.pop("run")): {k: v for k, v in r.items() if pd.notna(v)} for r in scores.to_dict("records")}
    out: dict[str, object] = {"unit": "training run", "failed_runs": list(failed), "runs": runs}
    scores = scores.melt(id_vars=["run", "kind"], var_name="metric", value_name="value").dropna(
        subset=["value"]
    )
    for kind in ("real", "permuted"):
        sub = scores[(scores["kind"] == kind) & ~scores["run"].isin(failed)]
        out[kind] = {m: run_interval(g["value"].tolist(), bounds=(0.0, 1.0))
                     for m, g in sub.groupby("metric", sort=False)}  # fmt: skip
    if logreg:
        real = scores[(scores["kind"] == "real") & ~scores["run"].isin(failed)]
        out["real_minus_logreg"] = {
            m: run_interval((g["value"] - logreg[m]).tolist())
            for m, g in real.groupby("metric", sort=False) if m in logreg
        }  # fmt: skip
    return out
