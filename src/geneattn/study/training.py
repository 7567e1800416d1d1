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


def finetuned_dir(cfg: ConfigView, results: Results) -> Path:
    """The fine-tuned classifier: the user's (``finetuned``, used where it is) or ``models/finetuned``."""
    return Path(cfg.finetuned) if cfg.finetuned is not None else results.model(OTHER)


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
    "finetuned",
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


def _finetune_outputs(cfg: ConfigView) -> tuple[str, ...]:
    if cfg.finetuned is not None:  # the user's classifier stays where it is: only its record and metrics
        return ("models/finetuned.json", "models/finetuned/metrics.json")
    return ("models/finetuned/config.json", "models/finetuned/metrics.json")


@stage("finetune", deps=("tokenize", "pretrain"), reads=FINETUNE_READS, outputs=_finetune_outputs)
def finetune(ctx: StageContext) -> str:
    """Fine-tune the classifier (``models/finetuned`` with ``metrics.json``, ``splits.parquet``).

    With ``finetuned`` (the user's classifier): no training; the classifier is recorded in
    ``models/finetuned.json`` and evaluated on the study's split (``models/finetuned/metrics.json``)
    when its labels are the study's classes.
    """
    from ..io import parse_groups
    from ..models import finetune as train

    res, cfg = ctx.results, ctx.config
    groups = parse_groups(cfg.groups) if cfg.groups else None
    if cfg.finetuned is not None:
        return _bring_your_own(ctx, groups)
    out = res.model(OTHER)
    result = train(res.tokens, model=pretrained_dir(cfg, res), out=out, label_key="label", groups=groups,
                   config=finetune_config(cfg), seed=cfg.seed)  # fmt: skip
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return _summary(result.metrics)


def _summary(m: dict) -> str:
    g = (m.get("groups") or {}).get("accuracy")
    return f"test accuracy {m.get('accuracy', float('nan')):.3f}" + (
        f", groups {g:.3f}" if g is not None else ""
    )


#: what a study with the user's fine-tuned classifier does not run, and why
NEEDS_TRAINING = {
    "controls": "the run-level null needs control fine-tunes (other seeds, permuted labels) of the same "
    "recipe; with --finetuned nothing is trained here",
}


def skipped_by_user_model(results: Results) -> dict[str, str]:
    """Stage -> why it was not run, for a study of the user's fine-tuned classifier (else empty)."""
    path = results.model_record(OTHER)
    return dict(results.read_json(path).get("skipped") or {}) if path.is_file() else {}


def _bring_your_own(ctx: StageContext, groups: dict | None) -> str:
    """Record the user's classifier and evaluate it on the study's split (when its labels match)."""
    from ..errors import InputError
    from ..models import classifier_labels, evaluate_classifier

    res, cfg = ctx.results, ctx.config
    record = {"path": cfg.finetuned, "source": "user fine-tuned classifier", "labels": classifier_labels(cfg.finetuned),
              "skipped": dict(NEEDS_TRAINING)}  # fmt: skip
    out = res.model(OTHER)
    try:
        result = evaluate_classifier(cfg.finetuned, res.tokens, out=out, label_key="label", groups=groups,
                                     config=finetune_config(cfg), seed=cfg.seed)  # fmt: skip
    except InputError as e:  # labels that are not the study's: no test metrics, say why
        record["evaluated"], record["reason"] = False, str(e)
        record["skipped"]["ablation"] = f"head ablation scores the study's labels: {e}"
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", {"evaluated": False, "reason": str(e)})
        write_json(res.model_record(OTHER), record)
        return f"using {cfg.finetuned}, not evaluated: {e}"
    record["evaluated"] = True
    write_json(res.model_record(OTHER), record)
    return f"using {cfg.finetuned} (not trained here); {_summary(result.metrics)}"
