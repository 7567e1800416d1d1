"""Atomic outputs: write to a temporary sibling, then rename over the target.

A run killed at any moment leaves either the old complete file/directory or the new complete
one, never a half-written one. Temporary siblings are named ``.tmp-<pid>-<random>-<name>``
(`tmp_name`): readers of results directories ignore them, and `clean_tmp` removes those whose
owning process is gone.

Temporary files and directories are created as a plain ``open()``/``mkdir()`` would create the
target, with the process umask applied (files ``0o666 & ~umask``, directories
``0o777 & ~umask``), so a group can read the results. A write that fails for lack of space,
a quota, a file size limit or a read-only file system raises `OutputError` (one line, the OS
error chained) and leaves nothing behind: no temporary sibling and no folder created for it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._lock import pid_alive
from .errors import OutputError, one_line

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_json",
    "write_text",
    "TMP_PREFIX",
    "tmp_name",
    "clean_tmp",
    "write_failure",
    "output_error",
    "hdf5_left_unclean",
]

TMP_PREFIX = ".tmp-"
_OWNED = re.compile(r"^\.tmp-(?P<pid>\d+)-[0-9a-f]{8}-(?P<name>.*)$", re.DOTALL)
_MAX_NAME = 200  # file names are limited to 255 bytes; keep room for the prefix
_unclean_hdf5: list[bool] = []  # a failed write left HDF5 objects it cannot close (see hdf5_left_unclean)

# errors of a write itself (the temporary file exists and is ours): reported as OutputError
_WRITE_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space in your quota or write elsewhere"),
    errno.EFBIG: ("file too large for the file size limit", "raise the limit (ulimit -f) or write elsewhere"),
    errno.EROFS: ("read-only file system", "write to a writable folder"),
}
# errors creating or renaming the temporary sibling: any OSError, these with a fix
_CREATE_FIXES = {
    errno.EACCES: "write to a folder you can write to",
    errno.EPERM: "write to a folder you can write to",
    errno.ENOTDIR: "a parent of the output is a file: choose another output path",
    errno.EEXIST: "a parent of the output is a file: choose another output path",
    errno.EISDIR: "the output is a directory: choose another output path",
}


def tmp_name(name: str) -> str:
    """A fresh name for a temporary sibling of ``name``: ``.tmp-<pid>-<random>-<name>``.

    The owner's PID lets `clean_tmp` tell a live writer's files from a killed run's; ``name``
    comes last, so writers that infer the format from the suffix (``.h5ad``, ``.parquet``) work.
    """
    if len(name) > _MAX_NAME:
        suffix = Path(name).suffix[:20]
        name = name[: _MAX_NAME - len(suffix)] + suffix
    return f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}"


def _display(path: Path) -> Path:
    """``path`` with temporary components replaced by the names they stand for (for messages)."""
    parts = [m.group("name") if (m := _OWNED.match(p)) else p for p in path.parts]
    return Path(*parts) if parts else path


def write_failure(exc: BaseException) -> int | None:
    """The errno of a failed write (no space, quota, file size limit, read-only) in ``exc`` or its causes.

    Libraries report these differently: Python and numpy set ``OSError.errno``; HDF5 (h5py) and
    Arrow put ``errno = 28`` or ``[errno 28]`` into the message. Returns ``None`` for any other error.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            return int(e.errno)
        text = str(e)
        for m in re.finditer(r"errno\W{0,3}(\d+)", text, flags=re.IGNORECASE):
            if int(m.group(1)) in _WRITE_ERRNOS:
                return int(m.group(1))
        for code in _WRITE_ERRNOS:
            if os.strerror(code).lower() in text.lower():
                return code
        e = e.__cause__ or e.__context__
    return None


def _free_space(directory: Path) -> str:
    p = directory.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return ""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if free >= size:
            return f" ({free / size:.1f} {unit} free in {p})"
    return f" ({free} bytes free in {p})"


def output_error(path: str | os.PathLike[str], exc: BaseException) -> OutputError:
    """A one-line `OutputError` for a failed write of ``path`` (raise it ``from exc``)."""
    path = _display(Path(path))
    code = write_failure(exc)
    if code is not None:
        reason, fix = _WRITE_ERRNOS[code]
        free = _free_space(path.parent) if code in (errno.ENOSPC, errno.EDQUOT) else ""
        return OutputError(f"cannot write {path}: {reason}{free}; {fix}")
    if isinstance(exc, OSError) and exc.errno in _CREATE_FIXES:
        reason = (exc.strerror or "").lower() or one_line(exc)
        return OutputError(f"cannot write {path}: {reason}; {_CREATE_FIXES[exc.errno]}")
    reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)).lower()
    return OutputError(f"cannot write {path}: {reason}")


def _missing_parents(path: Path) -> list[Path]:
    """Folders above ``path`` that do not exist yet, deepest first."""
    missing = []
    p = path.parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first; stop at the first one another writer has filled meanwhile
        try:
            d.rmdir()
        except OSError:
            return


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - no /proc
        pass
    mask = os.umask(0o022)  # pragma: no cover
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def follow_umask(*paths: Path) -> None:
    """Give files written by other libraries (safetensors writes ``0o600``) the mode open() would."""
    mode = 0o666 & ~current_umask()
    for p in paths:
        if p.is_file():
            p.chmod(mode)


def _new_file(path: Path) -> Path:
    """Create an empty temporary sibling of ``path`` with mode ``0o666 & ~umask`` (as open())."""
    while True:
        tmp = path.parent / tmp_name(path.name)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        os.close(fd)
        return tmp


def _new_dir(path: Path) -> Path:
    """Create a temporary sibling directory of ``path`` with mode ``0o777 & ~umask`` (as mkdir)."""
    while True:
        tmp = path.parent / tmp_name(path.name)
        try:
            tmp.mkdir(mode=0o777)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return tmp


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace directory ``path`` by ``tmp`` (the old one is moved aside, then removed)."""
    if not path.exists():
        tmp.replace(path)
        return
    old = path.parent / tmp_name("old-" + path.name)
    path.replace(old)
    try:
        tmp.replace(path)
    except OSError:
        old.replace(path)  # put the previous complete version back
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _atomic(
    path: Path, make_tmp: Callable[[Path], Path], publish: Callable[[Path, Path], None]
) -> Iterator[Path]:
    """Yield a new temporary sibling of ``path``; publish it on success, remove all trace on failure."""
    created = _missing_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_tmp(path)
    except OSError as e:
        _remove_empty(created)
        raise output_error(path, e) from e
    done = False
    try:
        yield tmp
        try:
            publish(tmp, path)
        except OSError as e:
            raise output_error(path, e) from e
        done = True
    except OutputError:
        raise
    except Exception as e:
        if write_failure(e) is None:
            raise
        _note_hdf5(tmp)
        raise output_error(path, e) from e
    finally:
        if not done:
            _remove(tmp)
            _remove_empty(created)


def _note_hdf5(tmp: Path) -> None:
    """Remember when a failed write left HDF5 objects open (h5py writing ``tmp`` ran out of space)."""
    h5py = sys.modules.get("h5py")
    if h5py is not None and tmp.suffix in (".h5ad", ".h5", ".hdf5") and h5py.h5f.get_obj_ids():
        _unclean_hdf5.append(True)


def hdf5_left_unclean() -> bool:
    """Whether a failed write left HDF5 objects that cannot be closed.

    HDF5 that runs out of space in the middle of a file keeps objects it cannot flush, and the
    HDF5 library crashes (SIGSEGV) when it tries again at interpreter exit; the command-line
    entry point then ends the process with ``os._exit`` after reporting the error.
    `geneattn.io.write_h5ad` avoids this by building the file in memory.
    """
    return bool(_unclean_hdf5)


def atomic_path(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary file path next to ``path``; on success rename it onto ``path``.

    The temporary file exists (empty, mode ``0o666 & ~umask``) and keeps the target's suffix,
    so writers that infer the format from the suffix (``.h5ad``, ``.parquet``, ``.png``) work.

    Raises
    ------
    OutputError
        The folder cannot be created or written, or the write ran out of space or quota, hit a
        file size limit or a read-only file system. The temporary file and any folder created
        for it are removed.
    """
    return _atomic(Path(path), _new_file, lambda tmp, target: tmp.replace(target))


def atomic_dir(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary directory next to ``path``; on success swap it in place of ``path``.

    The directory has mode ``0o777 & ~umask``. Errors as in `atomic_path`; on failure a previous
    ``path`` is left as it was.
    """
    return _atomic(Path(path), _new_dir, _swap_in)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy scalars become Python numbers)."""

    def _default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        msg = f"not JSON serialisable: {type(o).__name__}"
        raise TypeError(msg)

    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def _stale(name: str) -> bool:
    """Whether a temporary sibling may be removed: its owner is gone, or it names no owner."""
    m = _OWNED.match(name)
    if m is None:
        return True
    pid = int(m.group("pid"))
    return pid != os.getpid() and not pid_alive(pid)  # our own writers clean up after themselves


def clean_tmp(directory: str | os.PathLike[str]) -> int:
    """Remove leftover temporary siblings (of killed runs) under ``directory``; return how many.

    A temporary sibling named by `tmp_name` is removed only when the process that created it is
    gone, so a live writer's files are never deleted (the PID is checked on this host). Siblings
    without an owner PID (``.tmp-<name>``, written by older versions) are always removed: call
    this only while holding `geneattn._lock.results_lock` on ``directory``, which also covers
    writers on other hosts sharing the folder. Temporary directories are removed whole and not
    searched.
    """
    n = 0
    for root, dirs, files in os.walk(directory):
        for name in [*files, *dirs]:
            if name.startswith(TMP_PREFIX) and _stale(name):
                _remove(Path(root) / name)
                n += 1
        dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
    return n
