"""`evaluate_classifier`: score an already fine-tuned classifier on the split `finetune` would make.

For a classifier trained elsewhere (``geneattn finetune`` on other data, Geneformer's ``Classifier``):
the same test cells, metrics, baselines and intervals as a fine-tune here, without training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .._atomic import atomic_path, write_json
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BertForSequenceClassification

    import datasets

    from ._finetune import FinetuneResult
    from ._ftconfig import FinetuneConfig

__all__ = ["evaluate_classifier", "classifier_labels"]

logger = logging.getLogger(__name__)


def classifier_labels(model: str | os.PathLike[str]) -> list[str]:
    """The class names of a saved classifier (``id2label`` of its ``config.json``, in id order)."""
    import json

    cfg = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    id2label = cfg.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def _in_class_order(clf: BertForSequenceClassification, classes: list[str]) -> None:
    """Permute the head's rows so that output ``i`` is ``classes[i]`` (the study's class order)."""
    import torch

    label2id = {str(v): int(k) for k, v in clf.config.id2label.items()}
    perm = torch.tensor([label2id[c] for c in classes])
    head = clf.classifier
    with torch.no_grad():
        head.weight.copy_(head.weight[perm].clone())
        head.bias.copy_(head.bias[perm].clone())
    clf.config.id2label = dict(enumerate(classes))
    clf.config.label2id = {c: i for i, c in enumerate(classes)}


def evaluate_classifier(
    model: str | os.PathLike[str],
    tokens: datasets.Dataset | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    label_key: str = "label",
    groups: Mapping[str, Sequence[str]] | None = None,
    config: FinetuneConfig | None = None,
    seed: int = 0,
) -> FinetuneResult:
    """Test metrics of a fine-tuned classifier on the split `finetune` would make with ``config`` and ``seed``.

    Parameters
    ----------
    model
        A ``BertForSequenceClassification`` directory whose labels (``id2label``) are the classes of
        ``label_key`` (in any order).
    tokens
        Token dataset (or its directory) with ``input_ids`` and ``label_key``.
    out
        Where ``metrics.json`` and ``splits.parquet`` go (the model is neither copied nor changed);
        ``splits.parquet`` is written even when the labels do not match (an `InputError`).
    label_key, groups, config, seed
        As in `finetune` (the split depends on ``config.test_size``/``val_size``/``group_key`` and ``seed``;
        the pooling is the classifier's own, ``geneattn_pooling`` in its config, else the first token).

    Returns
    -------
    `FinetuneResult` with ``model_dir`` = ``model`` (``best_epoch`` None, no epochs run).
    """
    from ._data import as_dataset, max_token_id
    from ._finetune import FinetuneResult, _pooling, _prepare
    from ._ftconfig import FinetuneConfig
    from ._load import check_lengths, load
    from ._loop import LoopState
    from ._pooling import use_pooling
    from ._report import test_metrics
    from .metrics import check_groups

    cfg = config or FinetuneConfig()
    ds = as_dataset(tokens)
    data = _prepare(ds, label_key, cfg, seed, None)
    splits = pd.DataFrame(
        {"cell_id": data.cell_ids, "split": data.split.astype(str), "label": data.labels.astype(str)}
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "splits.parquet") as tmp:  # the split does not depend on the model
        splits.to_parquet(tmp, index=False)
    have = classifier_labels(model)
    if sorted(have) != sorted(data.classes):
        msg = f"the classifier's labels {have} are not the classes of {label_key!r} {data.classes}"
        raise InputError(msg)
    clf = load(model, task="classifier").eval()
    _in_class_order(clf, data.classes)
    check_lengths(clf, int(data.lengths.max()), max_token_id(ds))
    use_pooling(
        clf, _pooling(clf, data.ids)
    )  # the classifier's own (config's, else first token), never cfg's
    metrics = test_metrics(
        clf, data, cfg, groups=check_groups(groups, data.classes), state=LoopState(), seed=seed
    )
    metrics["evaluated_only"] = {"model": str(model), "trained_here": False}
    write_json(out / "metrics.json", metrics)
    logger.info("evaluated %s on %d test cells: accuracy %.3f", model, metrics["n_test"], metrics["accuracy"])
    return FinetuneResult(model_dir=Path(model), metrics=metrics, splits=splits)
