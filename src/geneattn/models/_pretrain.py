"""Pretraining: masked gene modelling, as Geneformer was pretrained.

Geneformer's ``pretrainer.py`` uses HF's ``DataCollatorForLanguageModeling`` (15% of genes selected;
of those 80% become ``<mask>``, 10% a random gene, 10% unchanged) with length-grouped batches,
``<pad>``-aware attention and a linear learning-rate schedule with warm-up. geneattn does the same
(the 80/10/10 split is configurable; ``mask_replace_prob=1.0`` gives pure ``<mask>`` replacement).
``<pad>``, ``<mask>``, ``<cls>`` and ``<eos>`` are never selected. The loss is computed on the
selected positions only (the vocabulary projection runs on ~15% of tokens: same loss, 6x less work).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BertForMaskedLM

from .._atomic import write_json
from ..errors import InputError
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
from ._loop import LoopSpec, check_training_args, distributed, run_loop
from ._vocab import mask_id, pad_id, special_ids, vocab_size
from .presets import PRESETS, make_config

__all__ = ["PretrainConfig", "pretrain"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PretrainConfig:
    """Settings for `pretrain` (defaults: the ``mini`` model, ~1-2 min on 2 CPU cores for 3,000 cells).

    Attributes
    ----------
    preset
        Model size (see `geneattn.models.PRESETS`).
    epochs
        Passes over the corpus.
    batch_size
        Cells per step and process (Geneformer used 12 per GPU).
    learning_rate, weight_decay
        AdamW settings (Geneformer: 1e-3 and 0.001).
    warmup_steps, warmup_ratio
        Linear warm-up length (steps, or a fraction of all steps when ``warmup_steps`` is None),
        then linear decay to zero.
    mlm_probability
        Fraction of genes selected for prediction (15%).
    mask_replace_prob, random_replace_prob
        Of the selected genes, the fraction replaced by ``<mask>`` and by a random gene (the
        rest stay unchanged): HF/Geneformer 0.8 / 0.1.
    max_position_embeddings
        Model input size; None: the preset's for released presets, the corpus's longest cell for
        ``mini``.
    max_grad_norm
        Gradient clipping (0 disables).
    save_steps, keep_checkpoints
        Checkpoint every N steps (and at each epoch end) into ``out/checkpoints``; keep the last K.
    device
        Torch device; None uses ``geneattn.settings``.
    config_overrides
        `BertConfig` fields replacing the preset's (e.g. ``{"hidden_size": 32, "num_hidden_layers": 2}``).
    """

    preset: str = "mini"
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.001
    warmup_steps: int | None = None
    warmup_ratio: float = 0.1
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    max_position_embeddings: int | None = None
    max_grad_norm: float = 1.0
    save_steps: int = 100
    keep_checkpoints: int = 2
    device: str | None = None
    config_overrides: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS and self.preset != "Geneformer-V1-10M":
            msg = f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}"
            raise InputError(msg)
        check_training_args(self, ("epochs", "batch_size"))
        if not 0 < self.mlm_probability < 1:
            msg = f"mlm_probability must be in (0, 1), got {self.mlm_probability}"
            raise InputError(msg)
        if not (0 <= self.mask_replace_prob and 0 <= self.random_replace_prob) or (
            self.mask_replace_prob + self.random_replace_prob > 1
        ):
            msg = "mask_replace_prob and random_replace_prob must be >= 0 and sum to <= 1"
            raise InputError(msg)
        if self.save_steps < 0 or self.keep_checkpoints < 1:
            msg = "save_steps must be >= 0 and keep_checkpoints >= 1"
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


def _resolve_config(cfg: PretrainConfig, vocab: Any, longest: int) -> Any:
    size = vocab_size(vocab)
    max_pos = cfg.max_position_embeddings
    if max_pos is None and cfg.preset == "mini":
        max_pos = longest
    config = make_config(cfg.preset, vocab_size=size, max_position_embeddings=max_pos)
    for key, value in (cfg.config_overrides or {}).items():
        if not hasattr(config, key):
            msg = f"config_overrides: {key!r} is not a BertConfig field"
            raise InputError(msg)
        setattr(config, key, value)
    if config.vocab_size != size:
        msg = f"preset {cfg.preset} has vocab_size {config.vocab_size} but the tokenizer's has {size}"
        raise InputError(msg)
    return config


def pretrain(
    tokens: Any,
    vocab: Any,
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
        The tokenizer's vocabulary (`GeneVocab`) or its size (then ``<pad>`` = 0, ``<mask>`` = 1).
    out
        Output directory.
    config
        `PretrainConfig`; defaults to the ``mini`` model.
    seed
        Seed for initialisation, batching, masking and dropout (same seed, same model on CPU).

    Returns
    -------
    Path
        ``out``, holding ``config.json`` + ``model.safetensors`` (`BertForMaskedLM`) and
        ``train_log.json`` (settings, per-step losses, timings).
    """
    cfg = config or PretrainConfig()
    out = Path(out)
    ds = as_dataset(tokens)
    ds = ds.select_columns([c for c in ("input_ids", "length") if c in ds.column_names])
    lengths = lengths_of(ds)
    size = vocab_size(vocab)
    if max_token_id(ds) >= size:
        msg = f"tokens use id {max_token_id(ds)} but the vocabulary has {size:,} tokens: tokens and vocabulary do not match"
        raise InputError(msg)
    model_config = _resolve_config(cfg, vocab, int(lengths.max()))
    check_lengths(model_config, int(lengths.max()))
    specials = special_ids(vocab)
    t0 = time.perf_counter()
    with distributed(cfg.device) as env:
        torch.manual_seed(seed)
        model = BertForMaskedLM(model_config)
        module = _MaskedLMLoss(model)
        all_idx = np.arange(len(ds))

        def batches_for_epoch(epoch: int) -> list[np.ndarray]:
            rng = np.random.default_rng([seed, epoch])
            return shard_batches(
                length_grouped_batches(all_idx, lengths, cfg.batch_size, rng), env.rank, env.world_size
            )

        def step_fn(mod: torch.nn.Module, batch: np.ndarray, gen: torch.Generator) -> torch.Tensor:
            ids, attn = pad_batch(ds[batch.tolist()]["input_ids"], pad_id(vocab))
            inputs, labels = mask_tokens(
                ids,
                attn,
                special_ids=specials,
                mask_id=mask_id(vocab),
                vocab_size=size,
                probability=cfg.mlm_probability,
                replace_prob=cfg.mask_replace_prob,
                random_prob=cfg.random_replace_prob,
                generator=gen,
            )
            return mod(inputs.to(env.device), attn.to(env.device), labels.to(env.device))

        settings_dict = dataclasses.asdict(cfg)
        fingerprint = {
            "kind": "pretrain",
            "config": {
                k: v
                for k, v in settings_dict.items()
                if k not in ("device", "save_steps", "keep_checkpoints")
            },
            "seed": seed,
            "n_cells": len(ds),
            "n_tokens": int(lengths.sum()),
            "vocab_size": size,
            "world_size": env.world_size,
        }
        spec = LoopSpec(
            epochs=cfg.epochs,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps,
            warmup_ratio=cfg.warmup_ratio,
            max_grad_norm=cfg.max_grad_norm,
            save_steps=cfg.save_steps,
            keep_checkpoints=cfg.keep_checkpoints,
            seed=seed,
            desc="pretrain",
        )
        logger.info(
            "pretraining %s (%d layers x %d heads, hidden %d) on %d cells for %d epochs",
            cfg.preset,
            model_config.num_hidden_layers,
            model_config.num_attention_heads,
            model_config.hidden_size,
            len(ds),
            cfg.epochs,
        )
        state = run_loop(
            model,
            module,
            batches_for_epoch=batches_for_epoch,
            step_fn=step_fn,
            spec=spec,
            ckpt_dir=out / "checkpoints",
            env=env,
            fingerprint=fingerprint,
        )
        if env.is_main:
            model.to("cpu")
            save_model(model, out)
            write_json(
                out / "train_log.json",
                {
                    "task": "pretrain",
                    "config": settings_dict,
                    "seed": seed,
                    "n_cells": len(ds),
                    "n_tokens": int(lengths.sum()),
                    "world_size": env.world_size,
                    "steps": state.step,
                    "seconds_this_run": round(time.perf_counter() - t0, 3),
                    "final_loss": float(np.mean([h["loss"] for h in state.history[-20:]]))
                    if state.history
                    else None,
                    "history": state.history,
                },
            )
            logger.info(
                "finished pretraining: wrote %s (config.json, model.safetensors, train_log.json)", out
            )
        env.barrier()
    return out
