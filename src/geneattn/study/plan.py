"""Stage ``plan``: what the run will do and how long each heavy stage will take, before they start.

After tokenization the cells, tokens per cell and the model are known. The plan times a few real
training steps and forward passes of the study's own model configuration on batches of the study's
own cells (random weights: same cost), then scales them by the work of each stage: pretraining and
fine-tuning steps, control runs, attention passes, ablations and attributions. The runner logs the
plan within the first minute, writes it into ``manifest.json`` and updates the estimate of what is
left after every stage; the report shows estimates beside actual times.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .._atomic import write_json
from ._stage import ConfigView, StageContext, stage
from .training import device_of, pretrained_dir

__all__ = ["measure", "estimate", "format_plan"]

logger = logging.getLogger(__name__)

#: share of cells a fine-tune trains on (grouped splits: 1/2 of each class's wells) and the fraction selected by MLM
_TRAIN_SHARE, _MLM_SHARE = 0.5, 0.15
#: forward-pass equivalents per cell, measured on the default study (estimate / actual 1.0 on 2 CPU
#: cores): head ablation (25 configurations over cached layers) and attribution (rollout, gradient x
#: input, integrated gradients with 4 points: backward passes cost ~2 forward ones, and deletion)
_ABLATION_PASSES, _ATTRIBUTION_PASSES = 15.0, 28.0
_WARMUP, _TIMED = 1, 3


def _config(cfg: ConfigView, res: object, vocab_size: int, max_len: int) -> object:
    """The BertConfig of the model the study will train (its preset, or the given checkpoint's)."""
    from transformers import BertConfig

    from ..models.presets import make_config

    src = pretrained_dir(cfg, res)
    if (src / "config.json").is_file():
        return BertConfig.from_pretrained(src, local_files_only=True)
    return make_config(cfg.preset, vocab_size=vocab_size, max_position_embeddings=max(max_len, 8))


def _batches(lengths: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    from ..models._data import length_grouped_batches

    rng = np.random.default_rng(seed)
    return length_grouped_batches(np.arange(len(lengths)), lengths, batch_size, rng)


def _timed_model(config: object, task: str, device: torch.device) -> torch.nn.Module:
    """The module whose steps are timed: the classifier, or masked gene modelling (as `pretrain`)."""
    from transformers import BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(0)
    if task == "mlm":
        from ..models._pretrain import _MaskedLMLoss

        return _MaskedLMLoss(BertForMaskedLM(config)).to(device).train()
    config.num_labels = max(getattr(config, "num_labels", 2), 2)
    return BertForSequenceClassification(config).to(device).train(task == "train")


def _one_step(
    model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, task: str
) -> torch.Tensor | None:
    """One forward (and backward for training tasks); returns the loss or None."""
    if task == "forward":
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=attn)
        return None
    if task == "mlm":  # the selected ~15 % of real tokens carry the loss, as in `pretrain`
        gen = torch.Generator().manual_seed(0)
        pick = (torch.rand(ids.shape, generator=gen) < _MLM_SHARE).to(ids.device) & attn.bool()
        return model(ids, attn, torch.where(pick, ids, torch.full_like(ids, -100)))
    return model(
        input_ids=ids, attention_mask=attn, labels=torch.zeros(len(ids), dtype=torch.long, device=ids.device)
    ).loss


def _step_seconds(
    config: object, ds: object, batches: list[np.ndarray], *, task: str, device: torch.device
) -> float:
    """Median seconds of a step: ``"train"`` (classifier), ``"mlm"`` (pretraining) or ``"forward"``."""
    from ..models._data import pad_batch

    model = _timed_model(config, task, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for b in batches[: _WARMUP + _TIMED]:
        ids, attn = pad_batch(ds[b.tolist()]["input_ids"], config.pad_token_id or 0)
        ids, attn = ids.to(device), attn.to(device)
        t = time.perf_counter()
        loss = _one_step(model, ids, attn, task)
        if loss is not None:
            loss.backward()
            opt.step()
            opt.zero_grad()
        times.append(time.perf_counter() - t)
    return float(np.median(times[_WARMUP:])) if len(times) > _WARMUP else float(times[-1])


def _save_seconds(config: object) -> tuple[float, int]:
    """Seconds to save a model of this size (checkpoints, final model) and its number of parameters."""
    from transformers import BertForMaskedLM

    from ..models import save_model

    model = BertForMaskedLM(config)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        save_model(model, Path(tmp))
        torch.save(torch.optim.AdamW(model.parameters()).state_dict(), Path(tmp) / "optimizer.pt")
        return time.perf_counter() - t, int(sum(p.numel() for p in model.parameters()))


def measure(cfg: ConfigView, res: object, *, pretraining: bool) -> dict[str, float | None]:
    """Throughput of the study's model on its own cells: seconds per training step and per forward cell.

    With ``pretraining``, also seconds per masked-gene-modelling step (``mlm_step_s``): its output
    layer spans the whole vocabulary, which dominates for large vocabularies.
    """
    from ..tokenize import load_tokens, load_vocab

    ds = load_tokens(res.tokens)
    lengths = np.asarray(ds["length"], dtype=np.int64)
    config = _config(cfg, res, load_vocab(res.tokens).size, int(lengths.max()))
    dev = torch.device(device_of(cfg) or "cpu")
    batches = _batches(lengths, cfg.batch_size, cfg.seed)
    fwd = _batches(lengths, cfg.attention_batch_size, cfg.seed + 1)
    fwd_s = _step_seconds(config, ds, fwd, task="forward", device=dev)
    step_s = _step_seconds(config, ds, batches, task="train", device=dev)
    mlm_s = _step_seconds(config, ds, batches, task="mlm", device=dev) if pretraining else None
    save_s, n_params = _save_seconds(config)
    return {"mlm_step_s": mlm_s, "n_cells": len(ds), "median_tokens": float(np.median(lengths)), "step_s": step_s,
            "forward_cell_s": fwd_s / cfg.attention_batch_size, "save_s": save_s, "n_parameters": n_params,
            "layers": config.num_hidden_layers, "heads": config.num_attention_heads, "hidden": config.hidden_size}  # fmt: skip


def _finetune_s(cfg: ConfigView, t: dict[str, float]) -> float:
    steps = math.ceil(_TRAIN_SHARE * t["n_cells"] / cfg.batch_size) * cfg.finetune_epochs
    evals = (
        (cfg.finetune_epochs * 0.2 + 0.35) * t["n_cells"] * t["forward_cell_s"]
    )  # validation per epoch + test
    return steps * t["step_s"] + evals + (cfg.finetune_epochs + 1) * t["save_s"]


def estimate(
    cfg: ConfigView, t: dict[str, float], *, corpus_cells: int, pretraining: bool
) -> dict[str, float]:
    """Estimated seconds of each heavy stage from the measured throughput ``t`` (`measure`)."""
    n = t["n_cells"]
    out: dict[str, float] = {}
    if pretraining:
        steps = math.ceil(corpus_cells / cfg.batch_size) * cfg.pretrain_epochs
        mlm = t.get("mlm_step_s") or t["step_s"]
        held = min(512, corpus_cells // 10) * cfg.pretrain_epochs * t["forward_cell_s"]  # held-out evaluation
        out["pretrain"] = steps * mlm + held + (cfg.pretrain_epochs + 1) * t["save_s"]
    out["finetune"] = _finetune_s(cfg, t)
    n_runs = cfg.n_seed_runs - 1 + cfg.n_permuted_runs
    held = (1 - _TRAIN_SHARE) * n
    if cfg.n_permuted_runs:
        out["controls"] = n_runs * _finetune_s(cfg, t) + 2.5 * (n_runs + 2) * held * t["forward_cell_s"]
    out["attention"] = (
        2.5 * 2 * n * t["forward_cell_s"]
    )  # two passes of the fused kernel + statistics, 2 models
    out["ablation"] = _ABLATION_PASSES * (held / 2) * t["forward_cell_s"]
    out["attribution"] = (
        min(cfg.attribution_cells, held / 2) * _ATTRIBUTION_PASSES * t["forward_cell_s"]
        + 320 * t["forward_cell_s"]
    )
    return {k: round(v, 1) for k, v in out.items()}


def format_plan(plan: dict) -> str:
    """One line per planned stage, for the log."""
    t = plan["throughput"]
    head = (f"plan: {t['n_cells']} cells, median {t['median_tokens']:.0f} tokens per cell; model {t['layers']} layers x "
            f"{t['heads']} heads, hidden {t['hidden']} ({t['n_parameters'] / 1e6:.2f} M parameters) on {plan['device']}; "
            f"measured {t['step_s']:.3f} s per training step, {1e3 * t['forward_cell_s']:.1f} ms per cell forward")  # fmt: skip
    lines = [head] + [f"  {k:<12} ~{v:8.0f} s" for k, v in plan["stages"].items()]
    lines.append(f"  {'total':<12} ~{sum(plan['stages'].values()):8.0f} s of the heavy stages")
    return "\n".join(lines)


@stage("plan", deps=("tokenize",), reads=("model", "checkpoint", "preset", "pretrain_epochs", "finetune_epochs", "batch_size",
       "attention_batch_size", "device", "seed", "n_seed_runs", "n_permuted_runs", "attribution_cells"),
       outputs=("plan.json",))  # fmt: skip
def plan(ctx: StageContext) -> str:
    """Time the model on the study's cells and estimate every heavy stage: ``plan.json``."""
    from ..tokenize import load_tokens

    res, cfg = ctx.results, ctx.config
    pretraining = (
        cfg.model is None and cfg.builtin is None and not (pretrained_dir(cfg, res) / "config.json").is_file()
    )
    t = measure(cfg, res, pretraining=pretraining)
    corpus = len(load_tokens(res.corpus_tokens)) if res.corpus_tokens.is_dir() else t["n_cells"]
    stages = estimate(cfg, t, corpus_cells=corpus, pretraining=pretraining)
    out = {"throughput": t, "device": device_of(cfg) or "cpu", "stages": stages,
           "summary": f"Planned {sum(stages.values()):.0f} s for the heavy stages ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())})."}  # fmt: skip
    total = sum(stages.values())
    if pretraining and out["device"] == "cpu" and total > 900:
        out["advice"] = (f"This run pretrains a {cfg.preset} model from scratch on a CPU (~{total / 60:.0f} min in all). "
                         "A real Geneformer checkpoint (--model with --dictionaries) skips pretraining; --device cuda "
                         "uses a GPU; --quick gives a first answer in minutes. The shipped checkpoint covers only the "
                         "simulator's gene vocabulary, so it is not used for other data.")  # fmt: skip
        logger.warning("%s", out["advice"])
    write_json(res.plan, out)
    return out["summary"]
