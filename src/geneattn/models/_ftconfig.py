"""The settings of a fine-tuning run (`FinetuneConfig`) and the cells it trains on (`_Data`)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ._args import TrainArgs
from ._pooling import POOLINGS

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = ["FinetuneConfig"]


@dataclasses.dataclass
class FinetuneConfig(TrainArgs):
    """Settings for `finetune`: the `TrainArgs` fields (defaults below) and the task's own.

    Attributes
    ----------
    epochs, batch_size, learning_rate, weight_decay, warmup_steps, warmup_ratio, max_grad_norm, keep_checkpoints, device
        As in `TrainArgs`; ``learning_rate`` is the encoder's (Geneformer: 5e-5).
    head_learning_rate
        Learning rate of the new pooler and classifier (None: ``learning_rate``).
    embedding_learning_rate
        Learning rate of the token (gene) embeddings (None: ``learning_rate``). A gene's signal
        reaches ``<cls>`` through attention over ~250 tokens, so at the encoder's rate a few
        epochs barely move it; a higher rate lets the dose-responsive genes' embeddings move first.
    hidden_dropout
        Hidden dropout while fine-tuning (None keeps the checkpoint's); attention dropout is kept.
    pooling
        ``"auto"`` (the checkpoint's convention: ``<cls>`` when the tokens start with it, else the
        first gene), ``"cls"``, ``"first"`` or ``"mean"`` (masked mean of the last hidden states,
        `geneattn.models._pooling`).
    freeze_layers
        Freeze the first N encoder layers (Geneformer: embeddings stay trainable).
    patience
        Stop after this many epochs without a better validation score (0 disables early stopping).
    select_by
        Validation score that picks the epoch whose weights are kept: ``"loss"`` (lower is
        better), ``"macro_f1"`` (higher is better) or ``"last"`` (keep the last epoch).
    min_delta
        A later epoch replaces the kept one only if it improves the score by more than this.
    class_weights
        Weight the loss by inverse class frequency in the training split.
    test_size, val_size
        Split fractions: of each class's wells when wells are nested in classes (1/3 and 1/6: 2
        test wells and 1 validation well of 6), else of cells.
    group_key
        Column whose values must not straddle splits: ``"auto"`` (``well``, else ``replicate``,
        if present), a column name, or None.
    eval_batch_size
        Cells per forward pass at evaluation.
    baselines
        Compute the baselines (majority class, logistic regression, genes expressed alone).
    n_boot
        Bootstrap replicates (over test wells) for the confidence intervals.
    """

    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 2e-4
    head_learning_rate: float | None = 1e-3
    embedding_learning_rate: float | None = 1e-2
    hidden_dropout: float | None = 0.1
    pooling: str = "auto"
    freeze_layers: int = 0
    patience: int = 0
    select_by: str = "loss"
    min_delta: float = 0.0
    class_weights: bool = True
    test_size: float = 1 / 3
    val_size: float = 1 / 6
    group_key: str | None = "auto"
    eval_batch_size: int = 64
    baselines: bool = True
    n_boot: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in POOLINGS:
            msg = f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"
            raise InputError(msg)
        if self.select_by not in ("loss", "macro_f1", "last"):
            msg = f"select_by must be 'loss', 'macro_f1' or 'last', got {self.select_by!r}"
            raise InputError(msg)
        if self.freeze_layers < 0 or self.patience < 0 or self.min_delta < 0 or self.n_boot < 1:
            msg = "freeze_layers, patience and min_delta must be >= 0 and n_boot >= 1"
            raise InputError(msg)
        for name in ("head_learning_rate", "embedding_learning_rate"):
            lr = getattr(self, name)
            if lr is not None and not (math.isfinite(lr) and lr > 0):
                msg = f"{name} must be a finite number > 0, got {lr!r}"
                raise InputError(msg)
        if self.hidden_dropout is not None and not 0 <= self.hidden_dropout < 1:
            msg = f"hidden_dropout must be in [0, 1), got {self.hidden_dropout}"
            raise InputError(msg)
        if self.eval_batch_size < 1:
            msg = f"eval_batch_size must be >= 1, got {self.eval_batch_size}"
            raise InputError(msg)


@dataclasses.dataclass
class _Data:
    """The cells of a fine-tuning run: tokens, labels, split and the columns evaluation needs."""

    ids: datasets.Dataset  # input_ids only
    labels: np.ndarray  # str per cell
    classes: list[str]
    y: np.ndarray  # class index per cell
    split: np.ndarray  # "train" / "val" / "test"
    units: np.ndarray  # group (well) of each cell, or the cell id without groups
    group_col: str | None  # the column the split is grouped by (None: not grouped)
    lengths: np.ndarray
    n_genes: np.ndarray
    cell_ids: list[str]

    def idx(self, part: str) -> np.ndarray:
        """Cell indices of one split."""
        return np.flatnonzero(self.split == part)
