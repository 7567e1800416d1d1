"""``geneattn stats RESULTS_DIR``: the study's stats stage on an existing results directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .app import app

logger = logging.getLogger("geneattn.cli")


@app.command()
def stats(
    results_dir: Annotated[
        Path,
        typer.Argument(
            help="A results directory written by `geneattn run` (its config.toml and manifest.json)."
        ),
    ],
    seed: Annotated[int | None, typer.Option(help="Seed of subsamples, bootstrap and permutations.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Top genes reported and compared with DE.")] = None,
    n_boot: Annotated[int | None, typer.Option(help="Bootstrap resamples.")] = None,
    attribution_cells: Annotated[
        int | None, typer.Option(help="Cells for the attribution baselines (0: skip them).")
    ] = None,
    highlight: Annotated[str | None, typer.Option(help="Comma-separated genes to highlight.")] = None,
) -> None:
    """Re-run the statistics of a results directory through the engine (same tables, same metrics.json).

    Settings not given are those of the directory's config.toml; the ones given are written back to it
    and to manifest.json, so `geneattn run --config DIR/config.toml` continues from here.
    """
    from ..study import stats_of_results

    hl = None if highlight is None else [h.strip() for h in highlight.split(",") if h.strip()]
    summary = stats_of_results(str(results_dir), seed=seed, top_k=top_k, n_boot=n_boot,
                               attribution_cells=attribution_cells, highlight=hl)  # fmt: skip
    logger.info("stats: %s", summary)
