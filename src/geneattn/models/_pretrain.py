"""Pretraining: masked gene modelling, as Geneformer was pretrained.

Geneformer's ``pretrainer.py`` uses HF's ``DataCollatorForLanguageModeling`` (15% of genes selected;
of those 80% become ``<mask>``, 10% a random gene, 10% unchanged) with length-grouped batches,
``<pad>``-aware attention and a linear learning-rate schedule with warm-up. geneattn does the same
(the 80/10/10 split is configurable; ``mask_replace_prob=1.0`` gives pure ``<mask>`` replacement).
``<pad>``, ``<mask>``, ``<cls>`` and ``<eos>`` are never selected. The loss is computed on the
selected positions only (the vocabulary projection runs on ~15% of tokens: same loss, 6x less work).

A held-out slice of the corpus (``eval_cells``) is masked once and scored after every epoch: MLM
loss and masked-gene top-1/top-10 accuracy, beside the gene-frequency (unigram) baselines
(`geneattn.models._mlm_eval`), all in ``train_log.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM

from ..errors import InputError
from ._args import TrainArgs, fingerprint, write_train_log
from ._data import (
    as_dataset,
    length_grouped_batches,
    lengths_of,
    mask_tokens,
    max_token_id,
    pad_batch,
    shard_batches,
)
from ._load import check_lengths, save_model
from ._loop import Dist, LoopSpec, LoopState, distributed, run_loop
from ._mlm_eval import HeldOut, evaluate_mlm, held_out
from ._vocab import require_vocab, special_ids
from .presets import PRESETS, make_config

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from ..tokenize import GeneVocab

__all__ = ["PretrainConfig", "pretrain"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PretrainConfig(TrainArgs):
    """Settings for `pretrain`: the `TrainArgs` fields (defaults below) and the masking and model.

    Attributes
    ----------
    preset
        Model size (see `geneattn.models.PRESETS`).
    epochs, batch_size, learning_rate, weight_decay, warmup_steps, warmup_ratio, max_grad_norm, keep_checkpoints, device
        As in `TrainArgs` (Geneformer: learning rate 1e-3, weight decay 0.001, 12 cells per GPU).
    mlm_probability
        Fraction of genes selected for prediction (15%).
    mask_replace_prob, random_replace_prob
        Of the selected genes, the fraction replaced by ``<mask>`` and by a random gene (the
        rest stay unchanged): HF/Geneformer 0.8 / 0.1.
    max_position_embeddings
        Model input size; None: the preset's for released presets, the corpus's longest cell for
        ``mini``.
    save_steps
        Checkpoint every N steps (and at each epoch end) into ``out/checkpoints``.
    eval_cells
        Cells held out of training and scored after every epoch (at most a tenth of the corpus;
        0 disables the evaluation).
    config_overrides
        `BertConfig` fields replacing the preset's (e.g. ``{"hidden_size": 32, "num_hidden_layers": 2}``).
    """

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.001
    keep_checkpoints: int = 2
    preset: str = "mini"
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    max_position_embeddings: int | None = None
    save_steps: int = 100
    eval_cells: int = 512
    config_overrides: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in PRESETS and self.preset != "Geneformer-V1-10M":
            msg = f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}"
            raise InputError(msg)
        if not 0 < self.mlm_probability < 1:
            msg = f"mlm_probability must be in (0, 1), got {self.mlm_probability}"
            raise InputError(msg)
        if not (0 <= self.mask_replace_prob and 0 <= self.random_replace_prob) or (
            self.mask_replace_prob + self.random_replace_prob > 1
        ):
            msg = "mask_replace_prob and random_replace_prob must be >= 0 and sum to <= 1"
            raise InputError(msg)
        if self.save_steps < 0 or self.eval_cells < 0:
            msg = "save_steps and eval_cells must be >= 0"
            raise InputError(msg)


class _MaskedLMLoss(torch.nn.Module):
    """Wraps `BertForMaskedLM` so DDP sees one forward: MLM loss on the selected positions only."""

    def __init__(self, model: BertForMaskedLM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        selected = labels != -100
        logits = self.model.cls(hidden[selected])  # [n_selected, vocab]
        return torch.nn.functional.cross_entropy(logits.float(), labels[selected])


def _resolve_config(cfg: PretrainConfig, vocab: GeneVocab, longest: int) -> BertConfig:
    max_pos = cfg.max_position_embeddings
    if max_pos is None and cfg.preset == "mini":
        max_pos = longest
    config = make_config(cfg.preset, vocab_size=vocab.size, max_position_embeddings=max_pos)
    for key, value in (cfg.config_overrides or {}).items():
        if not hasattr(config, key):
            msg = f"config_overrides: {key!r} is not a BertConfig field"
            raise InputError(msg)
        setattr(config, key, value)
    if config.vocab_size != vocab.size:
        msg = f"preset {cfg.preset} has vocab_size {config.vocab_size} but the tokenizer's has {vocab.size}"
        raise InputError(msg)
    # the fine-tuning convention: pool <cls> when the vocabulary has one (tokens start with it)
    config.geneattn_pooling = "cls" if vocab.cls_id is not None else "first"
    return config


class _PretrainTask:
    """Batches, masked-gene loss and the held-out evaluation of one pretraining run."""

    def __init__(
        self,
        ds: datasets.Dataset,
        train_idx: np.ndarray,
        lengths: np.ndarray,
        vocab: GeneVocab,
        cfg: PretrainConfig,
        *,
        seed: int,
        env: Dist,
    ) -> None:
        self.ds, self.train_idx, self.lengths, self.vocab, self.cfg = ds, train_idx, lengths, vocab, cfg
        self.seed, self.env, self.specials = seed, env, special_ids(vocab)
        self.model: BertForMaskedLM | None = None
        self.held: HeldOut | None = None

    def batches_for_epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = length_grouped_batches(self.train_idx, self.lengths, self.cfg.batch_size, rng)
        return shard_batches(batches, self.env.rank, self.env.world_size)

    def step(self, module: torch.nn.Module, batch: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        cfg, dev = self.cfg, self.env.device
        ids, attn = pad_batch(self.ds[batch.tolist()]["input_ids"], self.vocab.pad_id)
        inputs, labels = mask_tokens(
            ids, attn, special_ids=self.specials, mask_id=self.vocab.mask_id, vocab_size=self.vocab.size,
            probability=cfg.mlm_probability, replace_prob=cfg.mask_replace_prob,
            random_prob=cfg.random_replace_prob, generator=generator,
        )  # fmt: skip
        return module(inputs.to(dev), attn.to(dev), labels.to(dev))

    def on_epoch_end(self, epoch: int, state: LoopState) -> bool:
        if self.held is not None and self.model is not None and self.env.is_main:
            scores = {
                "epoch": epoch,
                "step": state.step,
                **evaluate_mlm(self.model, self.held, self.env.device),
            }
            state.extra.setdefault("eval", []).append(scores)
            uni = self.held.baselines["unigram"]
            logger.info(
                "epoch %d: held-out masked-gene loss %.3f (unigram %.3f), top-1 %.3f (%.3f), top-10 %.3f (%.3f)",
                epoch, scores["loss"], uni["loss"], scores["top1"], uni["top1"], scores["top10"], uni["top10"],
            )  # fmt: skip
        return False


def _split_held_out(n: int, eval_cells: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) cell indices: ``eval_cells`` at random, at most a tenth of the corpus."""
    k = min(eval_cells, n // 10)
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _prepare(
    tokens: datasets.Dataset | str | os.PathLike[str], vocab: GeneVocab
) -> tuple[datasets.Dataset, np.ndarray]:
    ds = as_dataset(tokens)
    ds = ds.select_columns([c for c in ("input_ids", "length") if c in ds.column_names])
    lengths = lengths_of(ds)
    top = max_token_id(ds)
    if top >= vocab.size:
        msg = f"tokens use id {top} but the vocabulary has {vocab.size:,} tokens: tokens and vocabulary do not match"
        raise InputError(msg)
    return ds, lengths


def pretrain(
    tokens: datasets.Dataset | str | os.PathLike[str],
    vocab: GeneVocab,
    *,
    out: str | os.PathLike[str],
    config: PretrainConfig | None = None,
    seed: int = 0,
) -> Path:
    """Pretrain a Geneformer-style `BertForMaskedLM` by masked gene modelling.

    Resumable: checkpoints go to ``out/checkpoints/`` every ``config.save_steps`` steps and at each
    epoch end; calling again with the same arguments continues from the newest one. Runs unchanged
    under ``torchrun --nproc_per_node N`` (only rank 0 writes).

    Parameters
    ----------
    tokens
        Token dataset (`datasets.Dataset` with ``input_ids``, ``length``) or its directory.
    vocab
        The tokenizer's `GeneVocab` (saved into ``out/vocab.json``).
    out
        Output directory.
    config
        `PretrainConfig`; defaults to the ``mini`` model.
    seed
        Seed for initialisation, the held-out slice, batching, masking and dropout (same seed,
        same model on CPU).

    Returns
    -------
    Path
        ``out``, holding ``config.json`` + ``model.safetensors`` (`BertForMaskedLM`; the config
        records ``geneattn_pooling``), ``vocab.json`` and ``train_log.json`` (settings, per-step
        losses, throughput, held-out masked-gene metrics per epoch and the baselines).
    """
    cfg = config or PretrainConfig()
    out = Path(out)
    vocab = require_vocab(vocab)
    ds, lengths = _prepare(tokens, vocab)
    model_config = _resolve_config(cfg, vocab, int(lengths.max()))
    check_lengths(model_config, int(lengths.max()))
    train_idx, eval_idx = _split_held_out(len(ds), cfg.eval_cells, seed)
    t0 = time.perf_counter()
    with distributed(cfg.device) as env:
        torch.manual_seed(seed)
        task = _PretrainTask(ds, train_idx, lengths, vocab, cfg, seed=seed, env=env)
        task.model = BertForMaskedLM(model_config)
        if len(eval_idx) and env.is_main:
            task.held = held_out(
                ds, eval_idx, train_idx, special_ids=task.specials, mask_id=vocab.mask_id, pad_id=vocab.pad_id,
                vocab_size=vocab.size, probability=cfg.mlm_probability, batch_size=cfg.batch_size, seed=seed,
            )  # fmt: skip
        logger.info(
            "pretraining %s (%d layers x %d heads, hidden %d) on %d cells (%d held out) for %d epochs",
            cfg.preset, model_config.num_hidden_layers, model_config.num_attention_heads,
            model_config.hidden_size, len(train_idx), len(eval_idx), cfg.epochs,
        )  # fmt: skip
        fp = fingerprint("pretrain", cfg, seed=seed, world_size=env.world_size, n_cells=len(ds),
                         n_tokens=int(lengths.sum()), vocab=vocab.fingerprint)  # fmt: skip
        state = run_loop(task.model, _MaskedLMLoss(task.model), task,
                         spec=LoopSpec.from_args(cfg, seed=seed, desc="pretrain", save_steps=cfg.save_steps),
                         ckpt_dir=out / "checkpoints", env=env, fingerprint=fp)  # fmt: skip
        if env.is_main:
            _save_outputs(out, task, cfg, state, seed=seed, t0=t0, n_tokens=int(lengths[train_idx].sum()))
        env.barrier()
    return out


def _save_outputs(
    out: Path,
    task: _PretrainTask,
    cfg: PretrainConfig,
    state: LoopState,
    *,
    seed: int,
    t0: float,
    n_tokens: int,
) -> None:
    task.model.to("cpu")
    save_model(task.model, out)
    task.vocab.to_json(out / "vocab.json")
    held = task.held
    evals = state.extra.get("eval", [])
    masked = None
    if held is not None:
        masked = {"model": evals[-1] if evals else None, **held.baselines,
                  "n_cells": held.n_cells, "n_masked": held.n_masked, "masking": "every selected gene -> <mask>"}  # fmt: skip
    losses = [h["loss"] for h in state.history[-20:]]
    write_train_log(out, "pretrain", cfg, seed=seed, world_size=task.env.world_size, started=t0, state=state,
                    n_cells=len(task.train_idx), n_tokens=n_tokens, final_loss=float(np.mean(losses)) if losses else None,
                    masked_gene=masked, eval=evals)  # fmt: skip
    logger.info(
        "finished pretraining: wrote %s (config.json, model.safetensors, vocab.json, train_log.json)", out
    )
