"""The typer application: one command per stage plus ``run`` for the whole study.

Each command lives in its own module (``_data.py``, ``_models.py``, ...) and is a short
read -> call library -> write. User-fixable errors (`geneattn.InputError` and its `OutputError`,
missing files, a write that ran out of space) become one ``Error:`` line on stderr and exit
code 2, without a traceback; the rest of a multi-line message and the chained library errors
are logged under ``--verbose``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from .._atomic import hdf5_left_unclean, output_error, write_failure
from .._settings import settings
from ..errors import InputError, one_line

__all__ = ["app", "main"]

logger = logging.getLogger("geneattn.cli")


class _Group(TyperGroup):
    """Typer group that maps library input errors to exit code 2 with one clear message."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as e:
            _fail(str(e), e)
        except FileNotFoundError as e:
            _fail(f"file not found: {e.filename or e}", e)
        except OSError as e:  # any other OS error (a name too long, a link loop, a folder where a file goes)
            if write_failure(e) is not None:  # a write outside the atomic helpers ran out of space or quota
                _fail(str(output_error(e.filename or "an output", e)), e)
            _fail(os_error_line(e), e)
        except RuntimeError as e:  # Python 3.11's Path.resolve() on a loop of symbolic links
            if "symlink loop" not in str(e).lower():
                raise
            _fail(f"{one_line(e)}: a loop of symbolic links", e)
        except KeyboardInterrupt:
            typer.echo("interrupted; re-run the same command to resume", err=True)
            raise typer.Exit(code=130) from None


def os_error_line(e: OSError) -> str:
    """One line for an OS error: what failed, on which path(s)."""
    reason = (e.strerror or one_line(e) or type(e).__name__).lower()
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    return f"{reason}: {paths}" if paths else reason


def _fail(message: str, exc: BaseException) -> NoReturn:
    """Report a user error as one line on stderr and exit with code 2 (no traceback).

    A message of several lines (another library's explanation) is cut to its first line; the
    full text and the traceback with its chained exceptions are logged at debug level
    (``geneattn --verbose``).
    """
    line = one_line(message, limit=1000)
    logger.debug("full error: %s\n%s", message, "".join(traceback.format_exception(exc)).rstrip())
    if line != message.strip():
        line += " (more with --verbose)"
    typer.echo(f"Error: {line}", err=True)
    raise typer.Exit(code=2)


app = typer.Typer(
    cls=_Group,
    name="geneattn",
    help="Find the genes a single-cell foundation model (Geneformer) attends to, and test whether the signal is real.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _configure_logging(level: int) -> None:
    from rich.logging import RichHandler

    root = logging.getLogger("geneattn")
    root.handlers.clear()
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


@app.callback()
def _root(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Command-line interface of geneattn."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    settings.progress = not quiet and sys.stderr.isatty() or (not quiet and verbose)
    _configure_logging(level)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as e:
        if e.code == 2 and hdf5_left_unclean():  # HDF5 would crash at exit on the failed file
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        raise


# command modules register themselves on `app`; imported last to avoid a cycle
from . import _commands  # noqa: E402, F401
