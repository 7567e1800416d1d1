"""``geneattn run`` (the whole study, cached and resumable) and ``geneattn report`` (rebuild the page)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated

import typer

from ._options import study_options, study_values
from .app import app

logger = logging.getLogger(__name__)


def run(config: Path | None = None, force: bool = False, **settings: object) -> None:  # noqa: FBT001, FBT002
    """Run the whole study (data, QC/UMAP/DE, tokens, models, attention, statistics, figures, report).

    Without arguments: the built-in simulated nutlin-3a study into ./results. Finished stages are
    skipped on re-runs; changed parameters re-run only what depends on them; a killed run resumes.
    """
    from ..study import load_toml, merge, run_study

    cfg = merge(load_toml(config) if config is not None else None, study_values(settings))
    manifest = run_study(cfg, force=force)
    total = sum(float(s.get("seconds") or 0) for s in manifest["stages"].values())
    logger.info("done: %s/report.html (stages: %.0fs)", cfg.out, total)


def _run_signature() -> inspect.Signature:
    """``--config``, one option per `StudyConfig` field (in field order), ``--force``."""
    config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Path | None, typer.Option("--config", "-c", help="Study config (TOML); flags override it.")])  # fmt: skip
    force = inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option("--force", help="Redo every stage (ignore the cache).")])  # fmt: skip
    return inspect.Signature([config, *study_options(), force])


run.__signature__ = _run_signature()  # typer reads the options from the signature
app.command()(run)


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="A results directory written by `geneattn run`.")],
) -> None:
    """Rebuild the figures and report.html of an existing results directory."""
    from ..study import rebuild_report

    path = rebuild_report(str(results_dir))
    logger.info("wrote %s", path)
