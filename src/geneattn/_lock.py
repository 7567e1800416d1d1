"""An exclusive lock on a results folder, so that two runs never write the same ``--out``.

The lock is a file in the folder (`LOCK_FILE`) that holds the owner's PID, host and start time,
locked with ``fcntl.flock``: the kernel frees the lock when its owner exits in any way, SIGKILL
included, so a lock file left by a killed run is stale by construction and taken over without a
question. Where the file system has no ``flock`` (some network mounts), the PID and host in the
file decide instead: a lock of a process that is gone on this host is taken over.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import functools
import json
import logging
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import InputError

__all__ = ["LOCK_FILE", "LockInfo", "results_lock", "read_lock", "pid_alive"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".geneattn.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: set[int] = set()  # lock file descriptors of this process (closed in forked children)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts until it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """Who holds a results folder: process id, host name and start time (UTC, ISO 8601)."""

    pid: int
    host: str
    started: str
    command: str = "geneattn run"

    def describe(self) -> str:
        """``"pid 123 on host, started 2026-12-01T10:00:00+00:00"``."""
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"pid {self.pid}{where}, started {self.started}"

    def alive(self) -> bool:
        """Whether the holder still runs (``True`` when it runs on another host: cannot be known)."""
        return self.host != socket.gethostname() or pid_alive(self.pid)


def _close_in_child() -> None:
    """After fork: drop the child's copies of held locks (the lock stays with the parent)."""
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


@functools.cache
def _register_fork_hook() -> None:
    """Once per process: forked children (e.g. data loader workers) must not keep a lock alive."""
    os.register_at_fork(after_in_child=_close_in_child)


def _parse(data: bytes) -> LockInfo | None:
    try:
        obj = json.loads(data.decode("utf-8"))
        return LockInfo(int(obj["pid"]), str(obj["host"]), str(obj["started"]), str(obj.get("command", "")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None  # empty (being written) or not ours


def read_lock(directory: str | os.PathLike[str]) -> LockInfo | None:
    """The holder recorded in ``directory``'s lock file, or ``None`` if there is none (or unreadable)."""
    path = Path(directory) / LOCK_FILE
    if path.is_symlink():  # never ours: we do not follow it
        return None
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _busy(directory: Path, holder: LockInfo | None) -> InputError:
    who = f"{holder.command or 'geneattn'} ({holder.describe()})" if holder else "another geneattn process"
    if holder is not None and not holder.alive():
        return InputError(
            f"{directory} is in use by {who}, which has exited but left a child process holding "
            f"the lock; end that process (fuser -v {directory / LOCK_FILE}) or choose another --out"
        )
    return InputError(f"{directory} is in use by {who}; wait for it to finish or choose another --out")


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` itself (not what a symlink there points to) is the file open as ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except (FileNotFoundError, NotADirectoryError):
        return False


def _not_a_lock_file(path: Path, what: str) -> InputError:
    return InputError(
        f"{path} is {what}, not a geneattn lock file; geneattn never follows or replaces it: "
        "remove it yourself or choose another --out"
    )


def _open_lock(path: Path) -> int:
    """Open (or create) the lock file, never through a symlink, and only a regular file.

    ``O_NOFOLLOW`` refuses a symlink at ``path`` (which could point to another user's file that
    would be truncated); a directory, FIFO or device there is refused too.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as e:
        if path.is_symlink():
            raise _not_a_lock_file(path, "a symbolic link") from e
        if path.is_dir():
            raise _not_a_lock_file(path, "a directory") from e
        msg = f"cannot open the lock file {path}: {(e.strerror or str(e)).lower()}"
        raise InputError(msg) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_lock_file(path, "not a regular file")
    return fd


def _lock_fd(fd: int, directory: Path) -> None:
    """``flock`` ``fd`` at once, or raise the busy error; fall back to the recorded PID without flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(directory, _parse(os.pread(fd, 4096, 0))) from None
    except OSError as e:
        if e.errno not in _NO_FLOCK:
            raise
        holder = _parse(os.pread(fd, 4096, 0))
        if holder is not None and holder.pid != os.getpid() and holder.alive():
            raise _busy(directory, holder) from None
        logger.warning("%s: the file system has no flock; the lock relies on the PID it records", directory)


def _acquire(directory: Path) -> tuple[int, LockInfo | None]:
    """Open and lock the lock file; returns its descriptor and the stale holder it replaces."""
    path = directory / LOCK_FILE
    for _ in range(100):  # retry when a releasing holder removed the file between open and lock
        fd = _open_lock(path)
        try:
            _lock_fd(fd, directory)
            if _same_file(fd, path):
                return fd, _parse(os.pread(fd, 4096, 0))
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    msg = f"could not lock {path}: it keeps being replaced"  # pragma: no cover - pathological
    raise InputError(msg)  # pragma: no cover


@contextlib.contextmanager
def results_lock(path: str | os.PathLike[str], *, command: str = "geneattn run") -> Iterator[LockInfo]:
    """Hold an exclusive lock on the results folder ``path`` (created if needed) for the block.

    A second holder, in this or another process, fails at once; a lock left by a killed run is
    recovered (logged). The lock file is removed on exit.

    Parameters
    ----------
    path
        The results folder.
    command
        What holds the lock, as named to a second holder.

    Yields
    ------
    LockInfo
        This holder (PID, host, start time).

    Raises
    ------
    InputError
        ``"<path> is in use by geneattn run (pid N, started ...); wait for it to finish or choose
        another --out"``.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from ._atomic import output_error

        raise output_error(directory, e) from e
    _register_fork_hook()
    fd, stale = _acquire(directory)
    _held.add(fd)
    try:
        if stale is not None and stale.pid != os.getpid():
            logger.info(
                "recovered the lock of %s, left by %s (no longer running)", directory, stale.describe()
            )
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        info = LockInfo(os.getpid(), socket.gethostname(), now, command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(info)) + "\n").encode(), 0)
        yield info
    finally:
        if _same_file(fd, directory / LOCK_FILE):  # unlink while locked, so no one takes a dead file
            (directory / LOCK_FILE).unlink(missing_ok=True)
        _held.discard(fd)
        os.close(fd)
