"""Errors a user can fix.

`InputError` is a `ValueError` whose message names the problem and, where possible, the fix.
`OutputError` (a kind of `InputError`) says that a result could not be written: a full disk, a
quota, a read-only or forbidden folder; nothing half-written is left behind. The CLI turns both
into one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InputError", "OutputError", "one_line"]

#: longest explanation of another library kept inside one of our messages
_MAX_DETAIL = 200


class InputError(ValueError):
    """Bad input: a file, a column, a parameter or a configuration the user can correct."""


class OutputError(InputError):
    """A result could not be written (no space, quota, read-only or permission); nothing partial is left.

    A subclass of `InputError`, so that every handler of user-fixable errors (the CLI's one
    ``Error:`` line and exit code 2, the study's clean-up of a new results folder) treats it alike.
    The operating system's error is chained as ``__cause__``.
    """


def one_line(detail: BaseException | str, limit: int = _MAX_DETAIL) -> str:
    """The first line of another library's explanation, shortened to ``limit`` characters.

    Messages of geneattn are one line; a library's multi-line explanation embedded in one is cut
    to its first non-empty line (the full text stays in the chained exception, which the CLI
    shows under ``--verbose``).

    Parameters
    ----------
    detail
        An exception (its ``str``) or a text.
    limit
        Maximum length; longer lines end with ``"..."``.

    Returns
    -------
    str
        One line without surrounding whitespace (the exception's type name if it has no text).
    """
    text = str(detail)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first and isinstance(detail, BaseException):
        first = type(detail).__name__
    if len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return first
