"""What geneattn may write: only inside its output, never over or into one of its inputs.

Every command that writes checks, before its first write, that its output (``--out``) neither is nor
holds one of its inputs, and does not lie inside an input directory (a model, a token dataset, a
dictionaries folder): ``geneattn run --data proj/cells.h5ad --out proj`` would otherwise replace the
user's file with the study's ``cells.h5ad``. Paths are compared after resolving symbolic links, so
a link to an input is caught as well. `check_out_tree` refuses an existing output that holds
symbolic links, through which a write would land outside it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import InputError

__all__ = ["real_path", "check_out_spares_inputs", "check_out_tree", "check_name_lengths"]


def real_path(path: str | os.PathLike[str], *, what: str = "path") -> Path:
    """``path`` with every symbolic link resolved (it need not exist); a link loop is an `InputError`."""
    p = Path(path).expanduser()
    try:
        return Path(os.path.realpath(p, strict=False)) if p.is_symlink() or p.exists() else p.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11's resolve() raises RuntimeError on a loop
        msg = f"{what} {path} cannot be resolved: {_reason(e)}"
        raise InputError(msg) from e


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return "a loop of symbolic links" if "loop" in str(e).lower() else str(e)


def _loop_free(path: Path, what: str) -> None:
    """InputError when ``path`` is (or passes through) a loop of symbolic links."""
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            msg = f"{what} {path} is a loop of symbolic links"
            raise InputError(msg) from e


def check_out_spares_inputs(
    out: str | os.PathLike[str],
    inputs: Mapping[str, str | os.PathLike[str] | Iterable | None],
    *,
    flag: str = "--out",
) -> None:
    """Refuse an output that is, holds or lies inside one of ``inputs`` (``{"--data": path, ...}``).

    An input may be a path, ``None`` (not given) or several paths. Raises `InputError` naming both.
    """
    out_real = real_path(out, what=flag)
    for name, value in inputs.items():
        paths = [] if value is None else ([value] if isinstance(value, str | os.PathLike) else list(value))
        for given in paths:
            _loop_free(Path(given), name)
            p = real_path(given, what=name)
            if p == out_real or out_real in p.parents:
                msg = (
                    f"{flag} {out} holds the input {name} {given}: geneattn would write over it; "
                    f"choose an {flag} that is not the input's folder"
                )
                raise InputError(msg)
            if p.is_dir() and p in out_real.parents:
                msg = (
                    f"{flag} {out} lies inside the input {name} {given}: geneattn writes only into folders "
                    f"it owns; choose an {flag} outside it"
                )
                raise InputError(msg)


def check_name_lengths(path: str | os.PathLike[str], *, flag: str = "--out") -> None:
    """InputError when a component of ``path`` is longer than the file system allows (255 bytes)."""
    for part in Path(path).parts:
        if len(os.fsencode(part)) > 255:
            msg = f"{flag} {str(path)[:60]}...: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; names are limited to 255"
            raise InputError(msg)


def check_out_tree(out: str | os.PathLike[str], *, flag: str = "--out") -> None:
    """Refuse an existing output folder that holds symbolic links (writes through them would land outside).

    geneattn itself never writes links into its outputs, so any link there was put by someone else.
    """
    root = Path(out)
    if not root.is_dir():
        return
    for here, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            p = Path(here) / name
            if p.is_symlink():
                msg = (
                    f"{flag} {out} holds a symbolic link, {p} -> {p.readlink()}; geneattn writes only "
                    "inside its output: remove the link or choose another output"
                )
                raise InputError(msg)
