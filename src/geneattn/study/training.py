"""Stages ``pretrain`` (masked gene modelling, or the user's checkpoint) and ``finetune`` (the classifier)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .._atomic import write_json
from .._results import OTHER, REF, Results
from ._stage import ConfigView, StageContext, stage

if TYPE_CHECKING:  # pragma: no cover
    from ..models import FinetuneConfig


def device_of(cfg: ConfigView) -> str | None:
    """The torch device of model stages (None: `geneattn.settings` decides)."""
    return None if cfg.device == "auto" else cfg.device


def pretrained_dir(cfg: ConfigView, results: Results) -> Path:
    """The pretrained model: the user's Geneformer checkpoint, a shipped one, or ``models/pretrained``."""
    if cfg.model is not None:
        return Path(cfg.model)
    if cfg.builtin is not None:
        from ..models import builtin_checkpoint

        return builtin_checkpoint(cfg.builtin)
    return results.model(REF)


@stage("pretrain", deps=("tokenize",), reads=("model", "checkpoint", "preset", "pretrain_epochs", "batch_size", "seed", "device"),
       outputs=("models/pretrained.json",))  # fmt: skip
def pretrain(ctx: StageContext) -> str:
    """Masked gene modelling on the corpus (``models/pretrained``), or record the user's checkpoint."""
    from ..models import PretrainConfig
    from ..models import pretrain as train
    from ..tokenize import load_vocab

    res, cfg = ctx.results, ctx.config
    if cfg.model is not None:
        write_json(res.model_record(REF), {"path": cfg.model, "source": "user checkpoint"})
        return f"using {cfg.model}"
    if cfg.builtin is not None:
        path = pretrained_dir(cfg, res)
        write_json(res.model_record(REF), {"path": str(path), "source": f"shipped checkpoint {cfg.builtin}"})
        return f"using the shipped checkpoint {cfg.builtin} (its recipe: {path / 'RECIPE.md'})"
    pc = PretrainConfig(preset=cfg.preset, epochs=cfg.pretrain_epochs, batch_size=cfg.batch_size,
                        device=device_of(cfg))  # fmt: skip
    out = train(res.corpus_tokens, load_vocab(res.tokens), out=res.model(REF), config=pc, seed=cfg.seed)
    shutil.rmtree(Path(out) / "checkpoints", ignore_errors=True)
    write_json(res.model_record(REF), {"path": str(out), "source": f"pretrained ({cfg.preset})"})
    return f"{cfg.preset} model, {cfg.pretrain_epochs} epoch(s) -> {out}"


#: what every fine-tune of the study reads (the study's own and the control runs)
FINETUNE_READS = (
    "model",
    "checkpoint",
    "finetune_epochs",
    "finetune_lr",
    "finetune_head_lr",
    "pooling",
    "batch_size",
    "seed",
    "groups",
    "device",
)


def finetune_config(cfg: ConfigView, *, baselines: bool = True) -> FinetuneConfig:
    """The study's fine-tuning recipe (`geneattn.models.recipe`), shared by its fine-tune and the control runs.

    ``baselines=False`` (control runs) skips the majority / logistic-regression / length baselines:
    they depend on the split and the labels only, and the study's own fine-tune reports them.
    """
    from ..models import recipe

    return recipe(geneformer=cfg.model is not None, epochs=cfg.finetune_epochs, batch_size=cfg.batch_size,
                  learning_rate=cfg.finetune_lr, head_learning_rate=cfg.finetune_head_lr, pooling=cfg.pooling,
                  baselines=baselines, device=device_of(cfg))  # fmt: skip


@stage("finetune", deps=("tokenize", "pretrain"), reads=FINETUNE_READS,
       outputs=("models/finetuned/config.json", "models/finetuned/metrics.json"))  # fmt: skip
def finetune(ctx: StageContext) -> str:
    """Fine-tune the classifier (``models/finetuned`` with ``metrics.json``, ``splits.parquet``)."""
    from ..io import parse_groups
    from ..models import finetune as train

    res, cfg = ctx.results, ctx.config
    groups = parse_groups(cfg.groups) if cfg.groups else None
    out = res.model(OTHER)
    result = train(res.tokens, model=pretrained_dir(cfg, res), out=out, label_key="label", groups=groups,
                   config=finetune_config(cfg), seed=cfg.seed)  # fmt: skip
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    m = result.metrics
    g = (m.get("groups") or {}).get("accuracy")
    return f"test accuracy {m.get('accuracy', float('nan')):.3f}" + (
        f", groups {g:.3f}" if g is not None else ""
    )
