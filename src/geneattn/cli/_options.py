"""Command options made from `StudyConfig`'s field metadata (`geneattn.study.config.setting`).

``geneattn run`` has one option per field and ``geneattn stats`` one per statistics setting; both take
their flag, type and help from the field, so a setting is declared in one place.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from ..study.config import StudyConfig, field_types

__all__ = ["study_options", "study_values"]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _default_note(f: dataclasses.Field) -> str:
    """`` (default X)`` for a field with a fixed default (None defaults explain themselves in the help)."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None or isinstance(value, bool):
        return ""
    return f" (default {','.join(value) if isinstance(value, list) else value})"


def _option(f: dataclasses.Field, *, note_default: bool) -> inspect.Parameter:
    """The option of one `StudyConfig` field: ``--<name-with-dashes>`` (``--x/--no-x`` for a flag)."""
    base, meta = field_types()[f.name][0][0], f.metadata
    flag = "--" + f.name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}" if base is bool else flag, *([meta["short"]] if meta["short"] else [])]
    kind = Path if meta["path"] else (str if base is list else base)
    text = meta["help"] + (_default_note(f) if note_default else "")
    option = typer.Option(*decls, help=text, show_default=False)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, option])  # fmt: skip


def study_options(
    names: Iterable[str] | None = None, *, note_default: bool = True
) -> list[inspect.Parameter]:
    """Options of the `StudyConfig` fields ``names`` (all, in field order, when None).

    ``note_default`` appends the field's default to the help (``geneattn stats`` instead keeps the
    results directory's saved value).
    """
    fields = {f.name: f for f in dataclasses.fields(StudyConfig)}
    return [_option(fields[n], note_default=note_default) for n in (names or fields)]


def study_values(values: dict[str, object]) -> dict[str, object]:
    """Option values as `StudyConfig` values: comma lists split, paths as strings, None = not given."""
    out = {}
    for name, v in values.items():
        if v is not None and field_types()[name][0][0] is list:
            v = _csv(str(v))
        out[name] = str(v) if isinstance(v, Path) else v
    return out
