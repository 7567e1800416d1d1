"""``geneattn run`` (the whole study, cached and resumable) and ``geneattn report`` (rebuild the page)."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from typing import Annotated

import typer

from .app import app

logger = logging.getLogger(__name__)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _default_note(f: dataclasses.Field) -> str:
    """`` (default X)`` for a field with a fixed default (None defaults explain themselves in the help)."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None or isinstance(value, bool):
        return ""
    return f" (default {','.join(value) if isinstance(value, list) else value})"


def _option(f: dataclasses.Field) -> inspect.Parameter:
    """The ``geneattn run`` option of one `StudyConfig` field, from its `setting` metadata."""
    from ..study.config import field_types

    base, meta = field_types()[f.name][0][0], f.metadata
    flag = "--" + f.name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}" if base is bool else flag, *([meta["short"]] if meta["short"] else [])]
    kind = Path if meta["path"] else (str if base is list else base)
    option = typer.Option(*decls, help=meta["help"] + _default_note(f), show_default=False)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, option])  # fmt: skip


def _cli_values(values: dict[str, object]) -> dict[str, object]:
    """Flag values as `StudyConfig` values: comma lists split, paths as strings, None = not given."""
    from ..study.config import field_types

    out = {}
    for name, v in values.items():
        if v is not None and field_types()[name][0][0] is list:
            v = _csv(v)
        out[name] = str(v) if isinstance(v, Path) else v
    return out


def run(config: Path | None = None, force: bool = False, **settings: object) -> None:  # noqa: FBT001, FBT002
    """Run the whole study (data, QC/UMAP/DE, tokens, models, attention, statistics, figures, report).

    Without arguments: the built-in simulated nutlin-3a study into ./results. Finished stages are
    skipped on re-runs; changed parameters re-run only what depends on them; a killed run resumes.
    """
    from ..study import load_toml, merge, run_study

    cfg = merge(load_toml(config) if config is not None else None, _cli_values(settings))
    manifest = run_study(cfg, force=force)
    total = sum(float(s.get("seconds") or 0) for s in manifest["stages"].values())
    logger.info("done: %s/report.html (stages: %.0fs)", cfg.out, total)


def _run_signature() -> inspect.Signature:
    """``--config``, one option per `StudyConfig` field (in field order), ``--force``."""
    from ..study.config import StudyConfig

    config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Path | None, typer.Option("--config", "-c", help="Study config (TOML); flags override it.")])  # fmt: skip
    force = inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option("--force", help="Redo every stage (ignore the cache).")])  # fmt: skip
    return inspect.Signature([config, *map(_option, dataclasses.fields(StudyConfig)), force])


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
