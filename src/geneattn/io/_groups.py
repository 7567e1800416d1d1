"""Coarse class groups, e.g. ``"low=0.1,0.5;high=5,10"`` -> ``{"low": ["0.1", "0.5"], "high": ["5", "10"]}``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..errors import InputError

__all__ = ["parse_groups", "normalize_dose", "same_class"]

_SYNTAX = "expected 'name=class,class;name=class,...', e.g. 'low=0.1,0.5;high=5,10'"
_NAME = re.compile(r"^[\w.+-]+$")


def normalize_dose(token: object) -> str:
    """Canonical spelling of a dose token: ``'10.0'`` -> ``'10'``, ``'0.10'`` -> ``'0.1'``, ``0`` -> ``'0'``.

    Non-numeric tokens are returned stripped and unchanged.

    Parameters
    ----------
    token
        A dose value or label.

    Returns
    -------
    str
        The normalised token.
    """
    s = str(token).strip()
    try:
        value = float(s)
    except ValueError:
        return s
    if value != value or value in (float("inf"), float("-inf")):  # NaN / inf stay as written
        return s
    return f"{value:.10g}"


def same_class(a: str, b: str) -> bool:
    """Whether two class tokens denote the same class (equal, or the same number: ``'10.0'`` == ``'10'``)."""
    return a == b or normalize_dose(a) == normalize_dose(b)


def _from_string(spec: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    parts = [p for p in spec.split(";") if p.strip()]
    if not parts:
        msg = f"empty groups specification {spec!r}; {_SYNTAX}"
        raise InputError(msg)
    for part in parts:
        if part.count("=") != 1:
            msg = f"bad group {part.strip()!r} in {spec!r}; {_SYNTAX}"
            raise InputError(msg)
        name, members = (s.strip() for s in part.split("="))
        if name in groups:
            msg = f"group {name!r} is defined twice in {spec!r}"
            raise InputError(msg)
        groups[name] = [m.strip() for m in members.split(",")]
    return groups


def parse_groups(
    spec: str | Mapping[str, Sequence[str] | str],
    classes: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Parse and validate coarse groups of classes.

    Parameters
    ----------
    spec
        ``"low=0.1,0.5;high=5,10"`` or a mapping ``{"low": ["0.1", "0.5"], ...}`` (a value may also be
        a comma-separated string).
    classes
        The known classes. When given, every member must name one of them (numbers match numerically,
        ``'10.0'`` == ``'10'``; members are returned in the classes' spelling) and every class must be
        in a group.

    Returns
    -------
    dict[str, list[str]]
        Group name -> member classes, in the order given.

    Raises
    ------
    InputError
        Bad syntax, empty or duplicated names, a class in two groups, unknown classes, or classes left
        out of every group.
    """
    if isinstance(spec, str):
        groups = _from_string(spec)
    elif isinstance(spec, Mapping):
        groups = {}
        for name, members in spec.items():
            items = members.split(",") if isinstance(members, str) else list(members)
            groups[str(name).strip()] = [str(m).strip() for m in items]
    else:
        msg = f"groups must be a string or a mapping, got {type(spec).__name__}; {_SYNTAX}"
        raise InputError(msg)
    if not groups:
        msg = f"no groups given; {_SYNTAX}"
        raise InputError(msg)
    owner: dict[str, str] = {}
    for name, members in groups.items():
        if not name or not _NAME.match(name):
            msg = f"bad group name {name!r}: use letters, digits, '_', '-', '.' or '+'"
            raise InputError(msg)
        if not members or any(not m for m in members):
            msg = f"group {name!r} has an empty class; {_SYNTAX}"
            raise InputError(msg)
        for m in members:
            key = normalize_dose(m)
            if key in owner:
                where = "twice in group" if owner[key] == name else f"in groups {owner[key]!r} and"
                msg = f"class {m!r} is {where} {name!r}; each class belongs to one group"
                raise InputError(msg)
            owner[key] = name
    if classes is None:
        return groups
    known = [str(c) for c in classes]
    resolved: dict[str, list[str]] = {}
    for name, members in groups.items():
        resolved[name] = []
        for m in members:
            match = next((c for c in known if same_class(m, c)), None)
            if match is None:
                msg = f"group {name!r} names unknown class {m!r}; known classes: {known}"
                raise InputError(msg)
            resolved[name].append(match)
    left = [c for c in known if not any(c in ms for ms in resolved.values())]
    if left:
        msg = f"classes {left} are in no group; add them to a group or drop them with classes=[...]"
        raise InputError(msg)
    return resolved
