"""Class order, decided in one place: it fixes label ids, table order and figure order."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["sort_classes"]


def sort_classes(values: Iterable[object]) -> list[str]:
    """Distinct labels as strings, in class order.

    Numeric order when every label is a number (doses "0.1" < "5" < "10"), else alphabetical.
    """
    uniq = sorted({str(v) for v in values})
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq
