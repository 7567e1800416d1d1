"""Data commands: ``geneattn simulate`` (built-in nutlin-3a simulation) and ``geneattn inspect`` (check a file)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .app import app

logger = logging.getLogger(__name__)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .h5ad file (written atomically).")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    cells_per_dose: Annotated[
        int | None,
        typer.Option(
            help="Cells at every dose; default: the real Nutlin cells per dose x 0.4 (~2,300 cells)."
        ),
    ] = None,
    n_background_genes: Annotated[int, typer.Option(help="Unplanted background genes (0-4000).")] = 2500,
) -> None:
    """Simulate a sci-Plex-2-like nutlin-3a dose response (see `geneattn.datasets.nutlin_sim`)."""
    from ..datasets import nutlin_sim
    from ..io import write_h5ad

    adata = nutlin_sim(seed=seed, cells_per_dose=cells_per_dose, n_background_genes=n_background_genes)
    write_h5ad(out, adata)
    logger.info("wrote %s (%d cells x %d genes)", out, adata.n_obs, adata.n_vars)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="An .h5ad file (opened read-only, never modified).")],
    perturbation: Annotated[str | None, typer.Option(help="sci-Plex drug to select, e.g. Nutlin.")] = None,
    label_key: Annotated[str, typer.Option(help="obs column with the class to predict.")] = "label",
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated classes to keep, e.g. 0.1,0.5,5,10.")
    ] = None,
    groups: Annotated[str | None, typer.Option(help="Coarse groups, e.g. 'low=0.1,0.5;high=5,10'.")] = None,
    min_cells_per_class: Annotated[int, typer.Option(help="Minimum cells per class.")] = 10,
    layer: Annotated[
        str | None,
        typer.Option(help="Layer with the raw counts, e.g. 'counts' ('raw' for adata.raw); default X."),
    ] = None,
) -> None:
    """Check that a file can be used: layout, raw counts, labels and classes (exit 2 with the reason if not)."""
    from ..io import canonicalize, detect_layout, read_h5ad

    adata = read_h5ad(path, backed=True)
    try:
        layout = detect_layout(adata)
        typer.echo(f"{path}: {adata.n_obs} cells x {adata.n_vars} genes, layout {layout}")
        class_list = [c for c in classes.split(",") if c.strip()] if classes else None
        canon = canonicalize(
            adata,
            label_key=label_key,
            perturbation=perturbation,
            classes=class_list,
            groups=groups,
            min_cells_per_class=min_cells_per_class,
            layer=layer,
        )
    finally:
        adata.file.close()
    typer.echo(
        f"canonical: {canon.n_obs} cells x {canon.n_vars} genes; "
        f"median {int(canon.obs['n_genes'].median())} genes and {int(canon.obs['n_counts'].median())} counts per cell"
    )
    for label, n in canon.obs["label"].value_counts(sort=False).items():
        typer.echo(f"  label {label}: {n} cells")
    if "group" in canon.obs:
        for group, n in canon.obs["group"].value_counts(sort=False).items():
            typer.echo(f"  group {group}: {n} cells")
