"""Fine-tuning: a cell classifier (`BertForSequenceClassification`) on top of a pretrained model.

Knobs follow Geneformer's ``Classifier`` (freeze the first N layers, learning rate, warm-up, epochs,
batch size, weight decay), with separate learning rates for the encoder and the new head, hidden
dropout, class weights for imbalanced classes, and a split by well: whole wells go to
train/validation/test, 2 test wells per class when there are 6, so the test accuracy gets a
bootstrap interval over wells (`geneattn.models._evaluate`). The epoch whose weights are kept is
chosen on the validation wells; ``metrics.json`` flags a kept epoch 0, and a classifier that is not
better than the majority class or the logistic-regression baseline.

Pooling: ``BertForSequenceClassification`` pools the first token. Tokens made with a vocabulary that
has ``<cls>`` (the built-in checkpoint, Geneformer V2) start with it, so the first token is
``<cls>``; Geneformer V1 tokens start with the cell's top-ranked gene. ``FinetuneConfig.pooling =
"mean"`` pools the mean of the last hidden states instead (`geneattn.models._pooling`). The
convention is recorded as ``geneattn_pooling`` (``"cls"``, ``"first"`` or ``"mean"``) in the
model's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from transformers import BertForSequenceClassification, PreTrainedModel

from .._atomic import atomic_path, write_json
from .._classes import sort_classes
from ..errors import InputError
from ._args import fingerprint, write_train_log
from ._data import as_dataset, length_grouped_batches, lengths_of, max_token_id, pad_batch, shard_batches
from ._ftconfig import FinetuneConfig, _Data
from ._load import HEAD_PREFIXES, check_lengths, load, save_model
from ._loop import Dist, LoopSpec, LoopState, distributed, run_loop
from ._pooling import use_pooling
from ._predict import edge_tokens, predict
from .metrics import check_groups, classification_metrics
from .splits import SPLITS, make_splits

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "learned_run", "predict"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns: the model directory, test metrics and the split of every cell."""

    model_dir: Path
    metrics: dict[str, Any]
    splits: pd.DataFrame


def _group_column(ds: datasets.Dataset, group_key: str | None) -> str | None:
    if group_key == "auto":
        return next((c for c in ("well", "replicate") if c in ds.column_names), None)
    if group_key is not None and group_key not in ds.column_names:
        msg = f"group_key {group_key!r} is not a column of the tokens ({ds.column_names})"
        raise InputError(msg)
    return group_key


def _given_split(split: Sequence[str] | np.ndarray | pd.DataFrame, cell_ids: list[str]) -> np.ndarray:
    """A precomputed split: one value per cell, or a table with ``cell_id`` and ``split`` columns."""
    if isinstance(split, pd.DataFrame):
        if not {"cell_id", "split"} <= set(split.columns):
            msg = f"a split table needs 'cell_id' and 'split' columns, got {list(split.columns)}"
            raise InputError(msg)
        table = dict(zip(split["cell_id"].astype(str), split["split"].astype(str), strict=True))
        missing = [c for c in cell_ids if c not in table]
        if missing:
            msg = f"{len(missing)} cells are not in the split table (e.g. {missing[0]})"
            raise InputError(msg)
        values = np.asarray([table[c] for c in cell_ids], dtype=object)
    else:
        values = np.asarray(split, dtype=str).astype(object)
    if len(values) != len(cell_ids) or not set(values) <= set(SPLITS):
        msg = f"split must give one of {SPLITS} for each of the {len(cell_ids)} cells"
        raise InputError(msg)
    return values


def _prepare(
    ds: datasets.Dataset,
    label_key: str,
    cfg: FinetuneConfig,
    seed: int,
    split: Sequence[str] | np.ndarray | pd.DataFrame | None,
) -> _Data:
    if label_key not in ds.column_names:
        msg = f"label column {label_key!r} not in the tokens (columns: {ds.column_names})"
        raise InputError(msg)
    labels = np.asarray([str(v) for v in ds[label_key]], dtype=object)
    classes = sort_classes(labels)
    if len(classes) < 2:
        msg = f"label column {label_key!r} has one class only ({classes}); fine-tuning needs at least two"
        raise InputError(msg)
    lengths = lengths_of(ds)
    cell_ids = (
        [str(c) for c in ds["cell_id"]] if "cell_id" in ds.column_names else [str(i) for i in range(len(ds))]
    )
    group_col = _group_column(ds, cfg.group_key)
    groups = np.asarray([str(v) for v in ds[group_col]]) if group_col else None
    if split is not None:
        parts, grouped = _given_split(split, cell_ids), groups is not None
    else:
        parts, grouped = make_splits(
            labels, groups, test_size=cfg.test_size, val_size=cfg.val_size, seed=seed
        )
    y = np.asarray([classes.index(v) for v in labels], dtype=np.int64)
    missing = [c for i, c in enumerate(classes) if not np.any((parts == "train") & (y == i))]
    if missing:
        msg = f"classes {missing} have no training cells"
        raise InputError(msg)
    n_genes = np.asarray(ds["n_genes"], dtype=np.int64) if "n_genes" in ds.column_names else lengths
    return _Data(
        ids=ds.select_columns(["input_ids"]), labels=labels, classes=classes, y=y, split=parts,
        units=groups if grouped else np.asarray(cell_ids), group_col=group_col if grouped else None,
        lengths=lengths, n_genes=n_genes, cell_ids=cell_ids,
    )  # fmt: skip


def _classifier(
    model: str | os.PathLike[str] | PreTrainedModel, classes: list[str], cfg: FinetuneConfig, seed: int
) -> BertForSequenceClassification:
    """A classifier with a new head (seeded) on the pretrained encoder, with the run's dropout."""
    id2label = dict(enumerate(classes))
    label2id = {c: i for i, c in id2label.items()}
    extra = {} if cfg.hidden_dropout is None else {"hidden_dropout_prob": cfg.hidden_dropout}
    torch.manual_seed(seed)  # the new head's initialisation
    if isinstance(model, (str, os.PathLike)):
        return load(model, task="classifier", id2label=id2label, label2id=label2id, **extra)
    if not isinstance(model, PreTrainedModel) or not hasattr(model, "bert"):
        msg = f"model must be a model directory or a BERT model, got {type(model).__name__}"
        raise InputError(msg)
    config = model.config.__class__.from_dict({**model.config.to_dict(), **extra})
    config.id2label, config.label2id = id2label, label2id
    config.architectures = ["BertForSequenceClassification"]
    clf = BertForSequenceClassification(config)
    clf.bert.load_state_dict(model.bert.state_dict(), strict=False)  # an MLM model has no pooler
    return clf


def _pooling(clf: BertForSequenceClassification, ids: datasets.Dataset) -> str:
    """``"cls"`` when every cell starts with the same token (``<cls>``), else ``"first"`` (a gene)."""
    known = getattr(clf.config, "geneattn_pooling", None)
    if known in ("cls", "first", "mean"):
        return known
    return "cls" if edge_tokens(ids)[0] is not None else "first"


class _FinetuneTask:
    """Batches, the weighted cross-entropy loss and the end-of-epoch validation of one run."""

    def __init__(
        self,
        data: _Data,
        clf: BertForSequenceClassification,
        cfg: FinetuneConfig,
        *,
        seed: int,
        env: Dist,
        out: Path,
    ) -> None:
        self.data, self.clf, self.cfg, self.seed, self.env, self.out = data, clf, cfg, seed, env, out
        self.lengths = data.lengths
        self.train_idx, self.val_idx = data.idx("train"), data.idx("val")
        counts = np.bincount(data.y[self.train_idx], minlength=len(data.classes))
        weight = len(self.train_idx) / (len(data.classes) * counts) if cfg.class_weights else None
        self.weight = None if weight is None else torch.tensor(weight, dtype=torch.float32, device=env.device)
        self.val_ids = data.ids[self.val_idx.tolist()]["input_ids"]
        self.pad = clf.config.pad_token_id or 0

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits.float(), target, weight=self.weight)

    def batches_for_epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = length_grouped_batches(self.train_idx, self.lengths, self.cfg.batch_size, rng)
        return shard_batches(batches, self.env.rank, self.env.world_size)

    def step(self, module: torch.nn.Module, batch: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        dev = self.env.device
        ids, attn = pad_batch(self.data.ids[batch.tolist()]["input_ids"], self.pad)
        logits = module(input_ids=ids.to(dev), attention_mask=attn.to(dev)).logits
        return self.loss(logits, torch.as_tensor(self.data.y[batch], device=dev))

    def on_epoch_end(self, epoch: int, state: LoopState) -> bool:
        d, cfg, ex = self.data, self.cfg, state.extra
        logits = torch.from_numpy(predict(self.clf, self.val_ids, batch_size=cfg.eval_batch_size))
        val_loss = float(
            self.loss(logits.to(self.env.device), torch.as_tensor(d.y[self.val_idx], device=self.env.device))
        )
        m = classification_metrics(
            d.labels[self.val_idx], [d.classes[i] for i in logits.argmax(1).tolist()], d.classes
        )
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
        # lower is better: the loss, minus macro-F1, or minus the epoch (keep the last)
        score = {"loss": val_loss, "macro_f1": -m["macro_f1"], "last": -float(epoch)}[cfg.select_by]
        if score < ex.get("best_score", float("inf")) - (cfg.min_delta if "best_score" in ex else 0.0):
            ex.update(best_score=score, best_val_loss=val_loss, best_epoch=epoch, bad_epochs=0)
            if self.env.is_main:
                save_model(self.clf, self.out / "checkpoints" / "best")
            self.env.barrier()
            return False
        ex["bad_epochs"] = ex.get("bad_epochs", 0) + 1
        return cfg.patience > 0 and ex["bad_epochs"] >= cfg.patience


def _freeze(clf: BertForSequenceClassification, n_layers: int) -> None:
    if n_layers > clf.config.num_hidden_layers:
        msg = f"freeze_layers={n_layers} but the model has {clf.config.num_hidden_layers} layers"
        raise InputError(msg)
    for layer in clf.bert.encoder.layer[:n_layers]:  # as Geneformer: embeddings stay trainable
        layer.requires_grad_(requires_grad=False)


def finetune(
    tokens: datasets.Dataset | str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | PreTrainedModel,
    out: str | os.PathLike[str],
    label_key: str = "label",
    groups: Mapping[str, Sequence[str]] | None = None,
    config: FinetuneConfig | None = None,
    seed: int = 0,
    split: Sequence[str] | np.ndarray | pd.DataFrame | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained Geneformer-style model to classify cells.

    Parameters
    ----------
    tokens
        Token dataset (or its directory) with ``input_ids`` and a ``label_key`` column; optional
        ``cell_id``, ``well``/``replicate`` (splits grouped by them) and ``n_genes`` (genes
        expressed per cell, for the depth baseline and tertiles; else the token count).
    model
        Pretrained model directory (e.g. from `pretrain`, `builtin_checkpoint`, or a Geneformer
        checkpoint) or a BERT model.
    out
        Output directory: an HF model directory (``id2label``/``label2id`` and ``geneattn_pooling``
        in ``config.json``) plus ``metrics.json``, ``splits.parquet`` (cell_id, split, label) and
        ``train_log.json``.
    label_key
        Column with the class of each cell.
    groups
        Coarse groups of classes for extra metrics, e.g. ``{"low": ["0.1", "0.5"], "high": ["5", "10"]}``.
    config
        `FinetuneConfig`.
    seed
        Seed for the split, head initialisation, batching, dropout and the bootstrap.
    split
        A precomputed split (``"train"/"val"/"test"`` per cell, or a table with ``cell_id`` and
        ``split``, e.g. another run's ``splits.parquet``), so control runs share held-out cells.

    Returns
    -------
    FinetuneResult
        ``model_dir``, ``metrics`` (see `geneattn.models._report.test_metrics`) and ``splits``.
    """
    from ._report import test_metrics

    cfg = config or FinetuneConfig()
    out = Path(out)
    ds = as_dataset(tokens)
    data = _prepare(ds, label_key, cfg, seed, split)
    groups = check_groups(groups, data.classes)
    clf = _classifier(model, data.classes, cfg, seed)
    check_lengths(clf, int(data.lengths.max()), max_token_id(ds))
    _freeze(clf, cfg.freeze_layers)
    use_pooling(clf, _pooling(clf, data.ids) if cfg.pooling == "auto" else cfg.pooling)
    t0 = time.perf_counter()
    with distributed(cfg.device) as env:
        task = _FinetuneTask(data, clf, cfg, seed=seed, env=env, out=out)
        spec = LoopSpec.from_args(cfg, seed=seed, desc="finetune", rates=_rates(cfg))
        fp = fingerprint("finetune", cfg, seed=seed, world_size=env.world_size, n_cells=len(ds), classes=data.classes,
                         label_key=label_key, split=_split_digest(data.split),
                         model=str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__)  # fmt: skip
        logger.info(
            "fine-tuning on %d/%d/%d train/val/test cells (%d test units), %d classes, split grouped by %s, pooling %s",
            *(len(data.idx(s)) for s in SPLITS), len(np.unique(data.units[data.idx("test")])), len(data.classes),
            data.group_col, clf.config.geneattn_pooling,
        )  # fmt: skip
        state = run_loop(clf, clf, task, spec=spec, ckpt_dir=out / "checkpoints", env=env, fingerprint=fp)
        _restore_best(clf, out)
        metrics = test_metrics(clf, data, cfg, groups=groups, state=state, seed=seed)
        metrics["flags"]["failed"] = not learned_run(metrics)
        if metrics["flags"]["failed"]:
            logger.warning(
                "this run did not learn its labels (validation loss flat near ln %d)", len(data.classes)
            )
        splits = pd.DataFrame(
            {"cell_id": data.cell_ids, "split": data.split.astype(str), "label": data.labels.astype(str)}
        )
        if env.is_main:
            _save_outputs(
                out, clf, cfg, splits, metrics, state, seed=seed, t0=t0, label_key=label_key, env=env
            )
        env.barrier()
    return FinetuneResult(model_dir=out, metrics=metrics, splits=splits)


#: a run failed when its validation loss never fell this far below the loss of chance (``ln K``)
FAILED_LOSS_MARGIN = 0.05


def learned_run(metrics: Mapping[str, object]) -> bool:
    """Whether a fine-tune learned its labels at all, from its ``metrics.json`` (``eval``, ``classes``).

    Rule: a run **failed** (returns False) when its validation loss never fell below
    ``(1 − FAILED_LOSS_MARGIN) · ln K`` (K classes; ``ln K`` is the class-weighted cross-entropy of
    a prediction that ignores the cell), or when it kept epoch 0 while its validation loss stayed
    flat (range over epochs below ``FAILED_LOSS_MARGIN · ln K``). Such a run is not a replicate of
    the real-label arm: report it as failed and leave it out. A run without validation history
    counts as learned (nothing to judge it by).
    """
    evals = list(metrics.get("eval") or [])  # type: ignore[arg-type]
    losses = [float(e["val_loss"]) for e in evals if e.get("val_loss") is not None]
    if not losses:
        return True
    chance = float(np.log(max(len(metrics.get("classes") or ()), 2)))
    never_below = min(losses) >= (1 - FAILED_LOSS_MARGIN) * chance
    flat_at_zero = (
        metrics.get("best_epoch") == 0 and (max(losses) - min(losses)) < FAILED_LOSS_MARGIN * chance
    )
    return not (never_below or flat_at_zero)


def _rates(cfg: FinetuneConfig) -> tuple[tuple[str, float], ...]:
    """Per-parameter learning rates: the new head's and the gene embeddings' (`LoopSpec.rates`)."""
    head = [(prefix, cfg.head_learning_rate) for prefix in HEAD_PREFIXES[1:]]  # pooler, classifier
    emb = [("bert.embeddings.word_embeddings.", cfg.embedding_learning_rate)]
    return tuple((p, r) for p, r in (*head, *emb) if r is not None)


def _split_digest(split: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256("\x00".join(split.astype(str)).encode()).hexdigest()[:16]


def _restore_best(clf: BertForSequenceClassification, out: Path) -> None:
    best = out / "checkpoints" / "best" / "model.safetensors"
    if best.is_file():
        from safetensors.torch import load_file

        clf.load_state_dict(load_file(best), strict=False)


def _save_outputs(
    out: Path,
    clf: BertForSequenceClassification,
    cfg: FinetuneConfig,
    splits: pd.DataFrame,
    metrics: dict[str, Any],
    state: LoopState,
    *,
    seed: int,
    t0: float,
    label_key: str,
    env: Dist,
) -> None:
    clf.to("cpu")
    save_model(clf, out)
    with atomic_path(out / "splits.parquet") as tmp:
        splits.to_parquet(tmp, index=False)
    write_train_log(out, "finetune", cfg, seed=seed, world_size=env.world_size, started=t0, state=state,
                    label_key=label_key, eval=state.extra.get("eval", []))  # fmt: skip
    write_json(out / "metrics.json", metrics)
    ci = metrics["accuracy_ci"]
    logger.info(
        "finished fine-tuning: test accuracy %.3f %s over %d test units, macro-F1 %.3f; wrote %s",
        metrics["accuracy"], f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "(no interval)", metrics["n_test_units"],
        metrics["macro_f1"], out,
    )  # fmt: skip
