"""``metrics.json`` of a fine-tuning run: test metrics with well-bootstrap CIs, baselines, depth tertiles, flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._evaluate import (
    accuracy_by_tertile,
    bootstrap_scores,
    min_units_per_stratum,
    small_sample_widening,
    unit_bootstrap,
)
from .metrics import OTHER, bag_of_genes, baseline_predictions, classification_metrics, group_metrics

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BertForSequenceClassification

    from ._ftconfig import FinetuneConfig, _Data
    from ._loop import LoopState

__all__ = ["test_metrics"]


def _with_ci(metrics: dict[str, Any], scores: Mapping[str, Any]) -> dict[str, Any]:
    return {**metrics, "accuracy_ci": scores["accuracy_ci"], "macro_f1_ci": scores["macro_f1_ci"]}


def _group_scores(
    y_true: np.ndarray,
    preds: Mapping[str, np.ndarray],
    groups: Mapping[str, Sequence[str]],
    reps: list[np.ndarray],
    widen: float,
) -> dict[str, Any]:
    """Bootstrap scores of the coarse groups on the same replicates (cells of classes in no group dropped)."""
    to_group = {m: g for g, members in groups.items() for m in members}
    keep = np.array([t in to_group for t in y_true], dtype=bool)
    new_index = np.cumsum(keep) - 1
    sub_reps = [new_index[r[keep[r]]] for r in reps]
    gt = np.array([to_group[t] for t in y_true[keep]])
    gp = {
        n: np.array([to_group.get(p, OTHER) for p in np.asarray(v, dtype=str)[keep]])
        for n, v in preds.items()
    }
    return bootstrap_scores(gt, gp, list(groups), sub_reps, widen=widen)


def _flags(metrics: dict[str, Any], best_epoch: int | None, epochs_run: int) -> dict[str, Any]:
    """Warnings a reader needs: epoch 0 kept, and whether the model beats majority / logistic regression."""
    diffs = metrics.get("model_minus", {})

    def beats(name: str) -> bool | None:
        ci = diffs.get(name, {}).get("accuracy_ci")
        return None if ci is None else bool(ci[0] > 0)

    return {
        "best_epoch_zero": best_epoch == 0 and epochs_run > 1,
        "learned": beats("majority"),
        "beats_logreg": beats("logreg"),
        "rule": "learned / beats_logreg: the 95% well-bootstrap interval of the paired accuracy difference is above 0",
    }


def test_metrics(
    clf: BertForSequenceClassification,
    data: _Data,
    cfg: FinetuneConfig,
    *,
    groups: Mapping[str, Sequence[str]] | None,
    state: LoopState,
    seed: int,
) -> dict[str, Any]:
    """The test split's metrics: the model's, the baselines' and their paired differences, with CIs.

    Keys: ``accuracy``, ``macro_f1`` (+ ``_ci``), ``per_class_recall``, ``confusion``, ``groups`` (the
    same on coarse groups), ``baselines`` (``majority``, ``logreg``, ``length``: same metrics),
    ``model_minus`` (paired differences model - baseline, with CIs), ``by_genes_expressed``
    (accuracy per tertile), ``bootstrap`` (unit, replicates), ``n_train``/``n_val``/``n_test``,
    ``n_test_units`` (test wells), ``flags`` (``best_epoch_zero``, ``learned``, ``beats_logreg``),
    ``best_epoch``, ``epochs_run``, ``eval`` (validation per epoch), ``pooling``, ``seed``.
    """
    from ._predict import predict

    test = data.idx("test")
    y_true = data.labels[test].astype(str)
    logits = predict(clf, data.ids[test.tolist()]["input_ids"], batch_size=cfg.eval_batch_size)
    preds = {"model": np.asarray([data.classes[i] for i in logits.argmax(1)])}
    described = {}
    if cfg.baselines:
        x = bag_of_genes(data.ids["input_ids"], clf.config.vocab_size, special_ids=_specials(clf, data))
        fitted = baseline_predictions(x, data.n_genes, data.labels, data.split,
                                      class_weight="balanced" if cfg.class_weights else None, seed=seed)  # fmt: skip
        preds.update({k: v[0] for k, v in fitted.items()})
        described = {k: v[1] for k, v in fitted.items()}
    min_units = min_units_per_stratum(data.units[test], y_true)
    reps = unit_bootstrap(data.units[test], y_true, n_boot=cfg.n_boot, seed=seed) if min_units >= 2 else []
    widen = small_sample_widening(min_units)
    boot = bootstrap_scores(y_true, preds, data.classes, reps, widen=widen)
    gboot = _group_scores(y_true, preds, groups, reps, widen) if groups else None
    out = _with_ci(classification_metrics(y_true, preds["model"], data.classes), boot["scores"]["model"])
    out["groups"] = None
    if groups:
        out["groups"] = _with_ci(group_metrics(y_true, preds["model"], groups), gboot["scores"]["model"])
        out["groups"]["model_minus"] = gboot["model_minus"]
    out["baselines"] = {}
    for name in described:
        b = _with_ci(classification_metrics(y_true, preds[name], data.classes), boot["scores"][name])
        b["features"] = described[name]
        if groups:
            b["groups"] = _with_ci(group_metrics(y_true, preds[name], groups), gboot["scores"][name])
        out["baselines"][name] = b
    out["model_minus"] = boot["model_minus"]
    out["by_genes_expressed"] = accuracy_by_tertile(data.n_genes[test], y_true, preds)
    evals = state.extra.get("eval", [])
    out.update(
        n_train=len(data.idx("train")), n_val=len(data.idx("val")), n_test=len(test),
        n_test_units=int(len(np.unique(data.units[test]))), classes=data.classes, split_grouped_by=data.group_col,
        bootstrap={"unit": data.group_col or "cell", "stratified_by": "class", "n_boot": len(reps), "seed": seed,
                   "min_units_per_class": min_units, "widened_by": round(widen, 4), "note": None if reps else "fewer than 2 test units in a class: no intervals"},
        best_epoch=state.extra.get("best_epoch"), epochs_run=len(evals), eval=evals,
        pooling=getattr(clf.config, "geneattn_pooling", None), seed=seed,
    )  # fmt: skip
    out["flags"] = _flags(out, out["best_epoch"], len(evals))
    return out


def _specials(clf: BertForSequenceClassification, data: _Data) -> list[int]:
    """Token ids left out of the bag of genes: ``<pad>``, ``<mask>`` and constant first/last tokens.

    Built-in and Geneformer vocabularies put ``<pad>`` at 0 and ``<mask>`` at 1; ``<cls>``/``<eos>``
    are found as the tokens every cell starts/ends with (they carry no gene; ``<eos>``'s weight
    would only encode the cell's length).
    """
    from ._predict import edge_tokens

    ids = {clf.config.pad_token_id or 0, 1}
    ids.update(t for t in edge_tokens(data.ids) if t is not None)
    return sorted(ids)
