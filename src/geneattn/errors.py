"""Errors a user can fix.

`InputError` is a `ValueError` whose message names the problem and, where possible, the fix.
The CLI turns it into one line on stderr and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: a file, a column, a parameter or a configuration the user can correct."""
