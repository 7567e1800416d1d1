"""``geneattn stats RESULTS_DIR``: the study's stats stage on an existing results directory."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated

import typer

from ._options import study_options, study_values
from .app import app

logger = logging.getLogger("geneattn.cli")


#: the settings `geneattn stats` may change (the ones its stages read; the rest would re-key upstream stages)
STATS_SETTINGS = ("seed", "top_k", "n_boot", "attribution_cells", "highlight")


def stats(results_dir: Path, **settings: object) -> None:
    """Re-run the statistics of a results directory through the engine (same tables, same metrics.json).

    Settings not given are those of the directory's config.toml; the ones given are written back to it
    and to manifest.json, so `geneattn run --config DIR/config.toml` continues from here.
    """
    from ..study import stats_of_results

    summary = stats_of_results(str(results_dir), **study_values(settings))
    logger.info("stats: %s", summary)


_DIR = inspect.Parameter("results_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[
    Path, typer.Argument(help="A results directory written by `geneattn run` (its config.toml and manifest.json).")])  # fmt: skip
stats.__signature__ = inspect.Signature([_DIR, *study_options(STATS_SETTINGS, note_default=False)])
app.command()(stats)
