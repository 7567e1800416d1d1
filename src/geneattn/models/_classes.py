"""Class order: the one rule every table, figure and label id follows."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["sort_classes"]


def sort_classes(values: Iterable[object]) -> list[str]:
    """Distinct labels as strings, numeric order when every label is a number ("0.1" < "5" < "10").

    Otherwise alphabetical. The class order decides label ids (``id2label``) and every per-class
    table, so all code that orders classes uses this one function.
    """
    uniq = sorted({str(v) for v in values})
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq
