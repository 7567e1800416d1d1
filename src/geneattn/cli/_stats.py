"""``geneattn stats RESULTS_DIR``: DE, agreement, confounds, significance and baseline methods."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app


@app.command()
def stats(
    results_dir: Annotated[
        Path,
        typer.Argument(
            help="Results directory of the earlier stages (cells.h5ad, tokens/, models/, attention/)."
        ),
    ],
    seed: Annotated[int, typer.Option(help="Seed of UMAP, subsamples, bootstrap and permutations.")] = 0,
    k: Annotated[int, typer.Option(help="Top-k genes for overlaps with DE.")] = 20,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the change-by-rank bands.")] = 200,
    attribution_cells: Annotated[
        int, typer.Option(help="Cells for rollout / gradient x input / integrated gradients (0: skip).")
    ] = 16,
    deletion_cells: Annotated[int, typer.Option(help="Cells for in-silico deletion.")] = 8,
    deletion_top_k: Annotated[int, typer.Option(help="Top-ranked genes deleted per cell.")] = 20,
    ig_steps: Annotated[int, typer.Option(help="Integrated-gradients steps.")] = 16,
    umap: Annotated[bool, typer.Option("--umap/--no-umap", help="Compute the UMAP table.")] = True,  # noqa: FBT002
    paired_heads: Annotated[
        str, typer.Option(help="Paired pt-vs-ft gene tests: 'layers' (head means) or 'all' heads.")
    ] = "layers",
    annotate: Annotated[  # noqa: FBT002
        bool, typer.Option("--annotate/--no-annotate", help="Write DE/UMAP results into cells.h5ad.")
    ] = False,
) -> None:
    """Statistics of a results directory (see `geneattn.stats.run_stats`).

    Writes tables/{de,agreement,confounds,significance,methods,change_ci,umap}.parquet and updates metrics.json.
    """
    from ..errors import InputError
    from ..stats.run import run_stats

    if not results_dir.is_dir():
        msg = f"results directory {results_dir} does not exist"
        raise InputError(msg)
    out = run_stats(results_dir, seed=seed, k=k, n_boot=n_boot, attribution_cells=attribution_cells,
                    deletion_cells=deletion_cells, deletion_top_k=deletion_top_k, ig_steps=ig_steps, umap=umap,
                    paired_heads=paired_heads, annotate=annotate)  # fmt: skip
    typer.echo(f"wrote {len(out)} tables to {results_dir / 'tables'}")
