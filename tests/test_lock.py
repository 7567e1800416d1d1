"""results_lock: a second holder fails at once naming the first; a killed holder's lock is recovered.

Holders are real processes (killed with SIGKILL, which no Python code can intercept), so the
tests show what the kernel's flock gives, not what a mock promises.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geneattn import _lock
from geneattn._lock import LOCK_FILE, read_lock, results_lock
from geneattn.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src"

_HOLDER = """
import os, sys, time
from geneattn._lock import results_lock
with results_lock(sys.argv[1]):
    if sys.argv[2] == "fork":
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # a worker process (as a DataLoader's) outliving its parent
            os.write(w, b"x")  # running: the fork hooks have run
            time.sleep(60)
            os._exit(0)
        os.read(r, 1)
        print(child, flush=True)
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(directory: Path, mode: str = "plain") -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-c", _HOLDER, str(directory), mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines = [proc.stdout.readline().strip()]
    while lines[-1] != "locked":
        assert lines[-1], f"holder ended early: {proc.wait()}"
        lines.append(proc.stdout.readline().strip())
    return proc, lines


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


def test_second_run_fails_at_once_and_a_killed_runs_lock_is_recovered(tmp_path, caplog):
    out = tmp_path / "results"
    proc, _ = _holder(out)
    try:
        t0 = time.monotonic()
        with pytest.raises(InputError) as info, results_lock(out):
            pass
        assert time.monotonic() - t0 < 1.0  # at once, no waiting
        msg = str(info.value)
        assert f"{out} is in use by geneattn run (pid {proc.pid}, started " in msg and "\n" not in msg
        assert "wait for it to finish or choose another --out" in msg
        assert read_lock(out).pid == proc.pid
    finally:
        _kill(proc)
    assert read_lock(out).pid == proc.pid  # the killed run left its lock file behind
    with caplog.at_level(logging.INFO, logger="geneattn"), results_lock(out) as me:
        assert me.pid == os.getpid() and read_lock(out) == me
    assert f"left by pid {proc.pid}" in caplog.text
    assert not (out / LOCK_FILE).exists()  # released: removed


def test_one_process_cannot_hold_it_twice_and_an_error_releases_it(tmp_path):
    with (
        results_lock(tmp_path),
        pytest.raises(InputError, match=f"pid {os.getpid()}"),
        results_lock(tmp_path),
    ):
        pass
    with pytest.raises(ZeroDivisionError), results_lock(tmp_path):
        1 / 0  # noqa: B018
    with results_lock(tmp_path / "sub" / "new") as info:  # creates the folder
        assert info.host == socket.gethostname()
    with results_lock(tmp_path):  # free again after the error
        pass


def test_a_forked_child_does_not_inherit_the_lock(tmp_path):
    proc, lines = _holder(tmp_path, "fork")
    child = int(lines[0])
    try:
        with pytest.raises(InputError, match="in use"), results_lock(tmp_path):  # null: the parent holds it
            pass
        _kill(proc)
        os.kill(child, 0)  # the child still runs...
        with results_lock(tmp_path):  # ...but the lock died with its holder
            pass
    finally:
        if proc.poll() is None:
            _kill(proc)
        os.kill(child, signal.SIGKILL)


def test_lock_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with results_lock(tmp_path / "r"):
            assert stat.S_IMODE((tmp_path / "r" / LOCK_FILE).stat().st_mode) == 0o644
            assert stat.S_IMODE((tmp_path / "r").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def _no_flock(fd: int, op: int) -> None:
    raise OSError(errno.ENOLCK, "No locks available")


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch):
    """Network mounts without flock: a live holder's lock holds, a dead or foreign-host one is judged by its PID."""
    monkeypatch.setattr(_lock.fcntl, "flock", _no_flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for pid, host, busy in [(sleeper.pid, socket.gethostname(), True), (dead.pid, socket.gethostname(), False),
                                (dead.pid, "another-host", True)]:  # fmt: skip
            info = {
                "pid": pid,
                "host": host,
                "started": "2026-12-01T10:00:00+00:00",
                "command": "geneattn run",
            }
            (tmp_path / LOCK_FILE).write_text(json.dumps(info))
            if busy:
                with pytest.raises(InputError, match=f"pid {pid}"), results_lock(tmp_path):
                    pass
            else:
                with results_lock(tmp_path) as me:
                    assert read_lock(tmp_path) == me
    finally:
        sleeper.kill()
        sleeper.wait()
