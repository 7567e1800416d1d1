"""``geneattn run`` (the whole study, cached and resumable) and ``geneattn report`` (rebuild the page)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .app import app

logger = logging.getLogger(__name__)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Study config (TOML); flags override it.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Built-in dataset: nutlin-sim (default) or pbmc68k.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="An .h5ad file (canonical or sci-Plex-2 layout) instead of a built-in dataset."),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(help="With --data: the layer with raw counts when X is normalised, e.g. counts."),
    ] = None,
    perturbation: Annotated[str | None, typer.Option(help="sci-Plex drug to keep, e.g. Nutlin.")] = None,
    label_key: Annotated[
        str | None, typer.Option(help="obs column with the class to predict (default label).")
    ] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated classes, e.g. 0.1,0.5,5,10.")] = None,
    groups: Annotated[str | None, typer.Option(help="Coarse groups, e.g. 'low=0.1,0.5;high=5,10'.")] = None,
    model: Annotated[
        Path | None, typer.Option(help="A Geneformer checkpoint directory (skips pretraining).")
    ] = None,
    dictionaries: Annotated[
        Path | None, typer.Option(help="Directory with the Geneformer dictionaries of --model.")
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            help="Pretrained model without --model: auto (shipped mini-nutlin for nutlin-sim), pretrain, "
            "or mini-nutlin."
        ),  # fmt: skip
    ] = None,
    finetuned: Annotated[
        Path | None,
        typer.Option(
            help="An already fine-tuned classifier of the pretrained model: no fine-tuning, no control runs."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Results directory (default results).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every stochastic step (default 0).")] = None,
    highlight: Annotated[
        str | None, typer.Option(help="Comma-separated genes to highlight (default MDM2).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Model size pretrained without --model (default mini).")
    ] = None,
    cells_per_dose: Annotated[int | None, typer.Option(help="nutlin-sim: cells per dose.")] = None,
    min_cells_per_class: Annotated[
        int | None, typer.Option(help="Classes with fewer cells are an input error (default 10).")
    ] = None,
    pretrain_epochs: Annotated[
        int | None, typer.Option(help="Pretraining epochs (default: the dataset's recipe, 1; pbmc68k 40).")
    ] = None,
    finetune_epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs (default: the dataset's recipe, 4; pbmc68k 25).")
    ] = None,
    finetune_lr: Annotated[
        float | None,
        typer.Option(
            help="Fine-tuning learning rate (default 1e-3 for a mini model, pbmc68k 3e-4, 5e-5 with --model)."
        ),
    ] = None,
    finetune_head_lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate of the classifier head (default: the dataset's recipe, 1e-3; pbmc68k 3e-3)."
        ),
    ] = None,
    pooling: Annotated[
        str | None,
        typer.Option(
            help="Classifier pooling: auto (the checkpoint's <cls> or first gene), cls, first or mean "
            "(default: the dataset's recipe, auto; pbmc68k mean)."
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size (default 16).")] = None,
    attention_batch_size: Annotated[
        int | None, typer.Option(help="Attention batch size (default 16).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Top genes reported and compared with DE (default 20).")
    ] = None,
    n_boot: Annotated[
        int | None, typer.Option(help="Bootstrap resamples of the change-by-rank bands (default 200).")
    ] = None,
    attribution_cells: Annotated[
        int | None, typer.Option(help="Cells for the attribution baselines (0 skips; default 16).")
    ] = None,
    quick: Annotated[
        bool | None,
        typer.Option(
            "--quick/--no-quick",
            help="A quick look: fewer cells (every well kept), shorter inputs for a model pretrained here.",
        ),
    ] = None,
    max_cells_per_class: Annotated[
        int | None, typer.Option(help="Subsample each class to at most this many cells (every well kept).")
    ] = None,
    n_seed_runs: Annotated[
        int | None, typer.Option(help="Real-label fine-tunes of the run-level null (default 2).")
    ] = None,
    n_permuted_runs: Annotated[
        int | None,
        typer.Option(help="Permuted-label fine-tunes of the run-level null (default 2; 0 skips it)."),
    ] = None,
    permute_labels: Annotated[
        bool | None,
        typer.Option(
            "--permute-labels/--no-permute-labels", help="A null study: labels permuted between wells."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage (ignore the cache).")] = False,  # noqa: FBT002
) -> None:
    """Run the whole study (data, QC/UMAP/DE, tokens, models, attention, statistics, figures, report).

    Without arguments: the built-in simulated nutlin-3a study into ./results. Finished stages are
    skipped on re-runs; changed parameters re-run only what depends on them; a killed run resumes.
    """
    from ..study import load_toml, merge, run_study

    cli = {
        "dataset": dataset, "data": None if data is None else str(data), "layer": layer, "perturbation": perturbation,
        "label_key": label_key, "classes": _csv(classes), "groups": groups,
        "model": None if model is None else str(model), "dictionaries": None if dictionaries is None else str(dictionaries),
        "checkpoint": checkpoint, "finetuned": None if finetuned is None else str(finetuned), "out": None if out is None else str(out), "seed": seed, "highlight": _csv(highlight), "preset": preset,
        "cells_per_dose": cells_per_dose, "min_cells_per_class": min_cells_per_class, "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs,
        "finetune_lr": finetune_lr, "finetune_head_lr": finetune_head_lr, "pooling": pooling,
        "batch_size": batch_size, "attention_batch_size": attention_batch_size, "device": device, "top_k": top_k,
        "n_boot": n_boot, "attribution_cells": attribution_cells, "quick": quick, "max_cells_per_class": max_cells_per_class,
        "n_seed_runs": n_seed_runs, "n_permuted_runs": n_permuted_runs, "permute_labels": permute_labels,
    }  # fmt: skip
    cfg = merge(load_toml(config) if config is not None else None, cli)
    manifest = run_study(cfg, force=force)
    total = sum(float(s.get("seconds") or 0) for s in manifest["stages"].values())
    logger.info("done: %s/report.html (stages: %.0fs)", cfg.out, total)


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="A results directory written by `geneattn run`.")],
) -> None:
    """Rebuild the figures and report.html of an existing results directory."""
    from ..study import rebuild_report

    path = rebuild_report(str(results_dir))
    logger.info("wrote %s", path)
