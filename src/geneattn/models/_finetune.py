"""Fine-tuning: a cell classifier (`BertForSequenceClassification`) on top of a pretrained model.

Knobs follow Geneformer's ``Classifier`` (freeze the first N layers, learning rate, warm-up, epochs,
batch size, weight decay; 80/10/10 train/validation/test), with CPU defaults, class weights for
imbalanced classes, early stopping on validation loss and the best epoch's weights kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import BertForSequenceClassification, PreTrainedModel

from .._atomic import atomic_path, write_json
from ..errors import InputError
from ._data import as_dataset, length_grouped_batches, lengths_of, max_token_id, pad_batch, shard_batches
from ._load import check_lengths, load, save_model
from ._loop import LoopSpec, LoopState, check_training_args, distributed, run_loop
from .metrics import bag_of_genes, baselines, check_groups, classification_metrics, group_metrics
from .splits import make_splits

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "predict", "sort_labels"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneConfig:
    """Settings for `finetune` (Geneformer ``Classifier`` defaults in brackets).

    Attributes
    ----------
    epochs
        Maximum epochs [10]; early stopping may end sooner.
    batch_size
        Cells per step and process [12].
    learning_rate
        Peak AdamW learning rate [5e-5 for 6-layer models]; the CPU default 1e-4 suits the small
        models pretrained here.
    weight_decay
        [0.001].
    warmup_steps, warmup_ratio
        Linear warm-up [500 steps]; None uses ``warmup_ratio`` of all steps, then linear decay.
    freeze_layers
        Freeze the first N encoder layers [0].
    patience
        Stop after this many epochs without a better validation score (0 disables early stopping).
    select_by
        Validation score for early stopping and for the epoch whose weights are kept: ``"loss"``
        (lower is better; HF ``Trainer``'s default) or ``"macro_f1"`` (higher is better; what
        Geneformer's hyper-parameter search maximises). A small model trained briefly often becomes
        over-confident (validation loss rising) while its validation accuracy still improves.
    class_weights
        Weight the loss by inverse class frequency in the training split.
    test_size, val_size
        Split fractions [0.1, 0.1].
    group_key
        Column whose values must not straddle splits: ``"auto"`` (``well``, else ``replicate``,
        if present), a column name, or None.
    eval_batch_size
        Cells per forward pass at evaluation.
    max_grad_norm
        Gradient clipping (0 disables).
    keep_checkpoints
        Checkpoints kept in ``out/checkpoints`` (one per epoch; the run resumes from the newest).
    baselines
        Compute the majority-class and logistic-regression baselines.
    device
        Torch device; None uses ``geneattn.settings``.
    """

    epochs: int = 3
    batch_size: int = 12
    learning_rate: float = 1e-4
    weight_decay: float = 0.001
    warmup_steps: int | None = None
    warmup_ratio: float = 0.1
    freeze_layers: int = 0
    patience: int = 2
    select_by: str = "loss"
    class_weights: bool = True
    test_size: float = 0.1
    val_size: float = 0.1
    group_key: str | None = "auto"
    eval_batch_size: int = 32
    max_grad_norm: float = 1.0
    keep_checkpoints: int = 1
    baselines: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        check_training_args(self, ("epochs", "batch_size", "eval_batch_size", "keep_checkpoints"))
        if self.select_by not in ("loss", "macro_f1"):
            msg = f"select_by must be 'loss' or 'macro_f1', got {self.select_by!r}"
            raise InputError(msg)
        if self.freeze_layers < 0 or self.patience < 0:
            msg = "freeze_layers and patience must be >= 0"
            raise InputError(msg)


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns: the model directory, test metrics and the split of every cell."""

    model_dir: Path
    metrics: dict[str, Any]
    splits: pd.DataFrame


def sort_labels(values: Sequence[str]) -> list[str]:
    """Class order: numeric when every label is a number (doses "0" < "0.1" < "10"), else alphabetical."""
    uniq = sorted({str(v) for v in values})
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def _classifier(model: Any, classes: list[str], seed: int) -> BertForSequenceClassification:
    id2label = dict(enumerate(classes))
    label2id = {c: i for i, c in id2label.items()}
    torch.manual_seed(seed)  # the new head's initialisation
    if isinstance(model, (str, os.PathLike)):
        return load(model, task="classifier", id2label=id2label, label2id=label2id)
    if not isinstance(model, PreTrainedModel) or not hasattr(model, "bert"):
        msg = f"model must be a model directory or a BERT model, got {type(model).__name__}"
        raise InputError(msg)
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.id2label, config.label2id = id2label, label2id
    config.architectures = ["BertForSequenceClassification"]
    clf = BertForSequenceClassification(config)
    clf.bert.load_state_dict(model.bert.state_dict(), strict=False)  # an MLM model has no pooler
    return clf


def predict(
    model: PreTrainedModel, input_ids: Sequence[Sequence[int]], *, batch_size: int = 32
) -> np.ndarray:
    """Class logits ``[n_cells, n_labels]`` (batches sorted by length to limit padding)."""
    device = next(model.parameters()).device
    pad = model.config.pad_token_id or 0
    order = np.argsort([-len(s) for s in input_ids], kind="stable")
    logits = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, attn = pad_batch([input_ids[i] for i in idx], pad)
            out = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
            logits[idx] = out.float().cpu().numpy()
    model.train(was_training)
    return logits


def _group_column(ds: Any, group_key: str | None) -> str | None:
    if group_key == "auto":
        return next((c for c in ("well", "replicate") if c in ds.column_names), None)
    if group_key is not None and group_key not in ds.column_names:
        msg = f"group_key {group_key!r} is not a column of the tokens ({ds.column_names})"
        raise InputError(msg)
    return group_key


def finetune(
    tokens: Any,
    *,
    model: str | os.PathLike[str] | PreTrainedModel,
    out: str | os.PathLike[str],
    label_key: str = "label",
    groups: Mapping[str, Sequence[str]] | None = None,
    config: FinetuneConfig | None = None,
    seed: int = 0,
) -> FinetuneResult:
    """Fine-tune a pretrained Geneformer-style model to classify cells.

    Parameters
    ----------
    tokens
        Token dataset (or its directory) with ``input_ids`` and a ``label_key`` column; optional
        ``cell_id``, ``well``/``replicate`` (splits grouped by them).
    model
        Pretrained model directory (e.g. from `pretrain`, or a Geneformer checkpoint) or a BERT model.
    out
        Output directory: an HF model directory (``id2label``/``label2id`` in ``config.json``) plus
        ``metrics.json``, ``splits.parquet`` (cell_id, split, label) and ``train_log.json``.
    label_key
        Column with the class of each cell.
    groups
        Coarse groups of classes for extra metrics, e.g. ``{"low": ["0.1", "0.5"], "high": ["5", "10"]}``.
    config
        `FinetuneConfig`.
    seed
        Seed for the split, head initialisation, batching and dropout.

    Returns
    -------
    FinetuneResult
        ``model_dir``, ``metrics`` (test split: ``accuracy``, ``macro_f1``, ``per_class_recall``,
        ``confusion``, ``groups``, ``baselines``, ``n_train``/``n_val``/``n_test``,
        ``split_grouped_by``, ...) and ``splits``.
    """
    cfg = config or FinetuneConfig()
    out = Path(out)
    ds = as_dataset(tokens)
    if label_key not in ds.column_names:
        msg = f"label column {label_key!r} not in the tokens (columns: {ds.column_names})"
        raise InputError(msg)
    labels = np.asarray([str(v) for v in ds[label_key]], dtype=object)
    classes = sort_labels(labels)
    if len(classes) < 2:
        msg = f"label column {label_key!r} has one class only ({classes}); fine-tuning needs at least two"
        raise InputError(msg)
    groups = check_groups(groups, classes)
    lengths = lengths_of(ds)
    group_col = _group_column(ds, cfg.group_key)
    group_values = np.asarray([str(v) for v in ds[group_col]]) if group_col else None
    split, grouped = make_splits(
        labels, group_values, test_size=cfg.test_size, val_size=cfg.val_size, seed=seed
    )
    clf = _classifier(model, classes, seed)
    check_lengths(clf, int(lengths.max()), max_token_id(ds))
    n_layers = clf.config.num_hidden_layers
    if cfg.freeze_layers > n_layers:
        msg = f"freeze_layers={cfg.freeze_layers} but the model has {n_layers} layers"
        raise InputError(msg)
    for layer in clf.bert.encoder.layer[: cfg.freeze_layers]:  # as Geneformer: embeddings stay trainable
        layer.requires_grad_(requires_grad=False)
    y = np.asarray([classes.index(v) for v in labels], dtype=np.int64)
    train_idx, val_idx, test_idx = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    counts = np.bincount(y[train_idx], minlength=len(classes))
    if (counts == 0).any():
        msg = f"classes {[c for c, n in zip(classes, counts, strict=True) if n == 0]} have no training cells"
        raise InputError(msg)
    weight = (
        torch.tensor(len(train_idx) / (len(classes) * counts), dtype=torch.float32)
        if cfg.class_weights
        else None
    )
    ids_col = ds.select_columns(["input_ids"])
    t0 = time.perf_counter()
    with distributed(cfg.device) as env:
        loss_weight = weight.to(env.device) if weight is not None else None

        def loss_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(logits.float(), target, weight=loss_weight)

        def batches_for_epoch(epoch: int) -> list[np.ndarray]:
            rng = np.random.default_rng([seed, epoch])
            batches = length_grouped_batches(train_idx, lengths, cfg.batch_size, rng)
            return shard_batches(batches, env.rank, env.world_size)

        def step_fn(mod: torch.nn.Module, batch: np.ndarray, gen: torch.Generator) -> torch.Tensor:
            ids, attn = pad_batch(ids_col[batch.tolist()]["input_ids"], clf.config.pad_token_id or 0)
            logits = mod(input_ids=ids.to(env.device), attention_mask=attn.to(env.device)).logits
            return loss_of(logits, torch.as_tensor(y[batch], device=env.device))

        val_ids = ids_col[val_idx.tolist()]["input_ids"]

        def on_epoch_end(epoch: int, state: LoopState) -> bool:
            logits = torch.from_numpy(predict(clf, val_ids, batch_size=cfg.eval_batch_size))
            val_loss = float(loss_of(logits.to(env.device), torch.as_tensor(y[val_idx], device=env.device)))
            pred = [classes[i] for i in logits.argmax(1).tolist()]
            m = classification_metrics(labels[val_idx], pred, classes)
            ex = state.extra
            ex.setdefault("eval", []).append(
                {
                    "epoch": epoch,
                    "val_loss": val_loss,
                    "val_accuracy": m["accuracy"],
                    "val_macro_f1": m["macro_f1"],
                }
            )
            logger.info(
                "epoch %d: val loss %.4f, accuracy %.3f, macro-F1 %.3f",
                epoch,
                val_loss,
                m["accuracy"],
                m["macro_f1"],
            )
            # lower is better: the loss, or minus macro-F1
            score = val_loss if cfg.select_by == "loss" else -m["macro_f1"]
            if score < ex.get("best_score", float("inf")):
                ex.update(best_score=score, best_val_loss=val_loss, best_epoch=epoch, bad_epochs=0)
                if env.is_main:
                    save_model(clf, out / "checkpoints" / "best")
                env.barrier()
                return False
            ex["bad_epochs"] = ex.get("bad_epochs", 0) + 1
            return cfg.patience > 0 and ex["bad_epochs"] >= cfg.patience

        settings_dict = dataclasses.asdict(cfg)
        fingerprint = {
            "kind": "finetune",
            "config": {
                k: v
                for k, v in settings_dict.items()
                if k not in ("device", "keep_checkpoints", "eval_batch_size")
            },
            "seed": seed,
            "n_cells": len(ds),
            "classes": classes,
            "label_key": label_key,
            "model": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__,
            "world_size": env.world_size,
        }
        spec = LoopSpec(
            epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps,
            warmup_ratio=cfg.warmup_ratio,
            max_grad_norm=cfg.max_grad_norm,
            save_steps=0,
            keep_checkpoints=cfg.keep_checkpoints,
            seed=seed,
            desc="finetune",
        )
        logger.info(
            "fine-tuning on %d/%d/%d train/val/test cells, %d classes, split grouped by %s",
            len(train_idx),
            len(val_idx),
            len(test_idx),
            len(classes),
            group_col if grouped else None,
        )
        state = run_loop(
            clf,
            clf,
            batches_for_epoch=batches_for_epoch,
            step_fn=step_fn,
            spec=spec,
            ckpt_dir=out / "checkpoints",
            env=env,
            fingerprint=fingerprint,
            on_epoch_end=on_epoch_end,
        )
        best = out / "checkpoints" / "best" / "model.safetensors"
        if best.is_file():
            from safetensors.torch import load_file

            clf.load_state_dict(load_file(best), strict=False)
        test_ids = ids_col[test_idx.tolist()]["input_ids"]
        pred = [classes[i] for i in predict(clf, test_ids, batch_size=cfg.eval_batch_size).argmax(1).tolist()]
        metrics = classification_metrics(labels[test_idx], pred, classes)
        metrics["groups"] = group_metrics(labels[test_idx], pred, groups) if groups else None
        if cfg.baselines:
            x = bag_of_genes(ds["input_ids"], clf.config.vocab_size)
            metrics["baselines"] = baselines(
                x,
                labels,
                split,
                classes,
                groups=groups,
                class_weight="balanced" if cfg.class_weights else None,
                seed=seed,
            )
        metrics.update(
            n_train=len(train_idx),
            n_val=len(val_idx),
            n_test=len(test_idx),
            classes=classes,
            split_grouped_by=group_col if grouped else None,
            best_epoch=state.extra.get("best_epoch"),
            epochs_run=len(state.extra.get("eval", [])),
            eval=state.extra.get("eval", []),
            seed=seed,
        )
        cell_ids = (
            [str(c) for c in ds["cell_id"]]
            if "cell_id" in ds.column_names
            else [str(i) for i in range(len(ds))]
        )
        splits = pd.DataFrame({"cell_id": cell_ids, "split": split.astype(str), "label": labels.astype(str)})
        if env.is_main:
            clf.to("cpu")
            save_model(clf, out)
            with atomic_path(out / "splits.parquet") as tmp:
                splits.to_parquet(tmp, index=False)
            write_json(
                out / "train_log.json",
                {
                    "task": "finetune",
                    "config": settings_dict,
                    "seed": seed,
                    "label_key": label_key,
                    "world_size": env.world_size,
                    "steps": state.step,
                    "seconds_this_run": round(time.perf_counter() - t0, 3),
                    "history": state.history,
                },
            )
            write_json(out / "metrics.json", metrics)
            logger.info(
                "finished fine-tuning: test accuracy %.3f, macro-F1 %.3f; wrote %s (model, metrics.json, splits.parquet)",
                metrics["accuracy"],
                metrics["macro_f1"],
                out,
            )
        env.barrier()
    return FinetuneResult(model_dir=out, metrics=metrics, splits=splits)
