"""Atomic writes: modes follow the umask, failed writes leave nothing and say so in one line.

References are plain ``open()``/``mkdir()`` under the same umask (the modes a user expects) and
real processes (a live writer, a killed one, a file size limit) rather than mocks where possible.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from geneattn._atomic import (
    TMP_PREFIX,
    atomic_dir,
    atomic_path,
    clean_tmp,
    tmp_name,
    write_failure,
    write_json,
    write_text,
)
from geneattn.errors import OutputError
from geneattn.io import write_h5ad, write_table

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _plain_modes(tmp: Path) -> tuple[int, int]:
    """What a plain open() and mkdir() create under the current umask."""
    with (tmp / "plain.txt").open("w") as f:
        f.write("x")
    (tmp / "plain_dir").mkdir()
    return _mode(tmp / "plain.txt"), _mode(tmp / "plain_dir")


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                             (0o002, 0o664, 0o775)])  # fmt: skip
def test_modes_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert _plain_modes(tmp_path) == (file_mode, dir_mode)  # the reference: what open()/mkdir() give
    write_text(tmp_path / "new" / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"x": 1})
    with atomic_path(tmp_path / "c.bin") as tmp:
        assert _mode(tmp) == file_mode  # already while being written
        tmp.write_bytes(b"123")
    with atomic_dir(tmp_path / "d") as tmp:
        assert _mode(tmp) == dir_mode
        write_json(tmp / "inner.json", [1])
    write_h5ad(tmp_path / "e.h5ad", ad.AnnData(np.ones((2, 3), np.float32)))
    write_table(tmp_path / "f.parquet", pd.DataFrame({"a": [1, 2]}))
    files = ["new/a.txt", "b.json", "c.bin", "d/inner.json", "e.h5ad", "f.parquet"]
    assert {f: _mode(tmp_path / f) for f in files} == dict.fromkeys(files, file_mode)
    assert _mode(tmp_path / "new") == dir_mode and _mode(tmp_path / "d") == dir_mode
    assert (tmp_path / "c.bin").read_bytes() == b"123" and pd.read_parquet(tmp_path / "f.parquet")[
        "a"
    ].tolist() == [1, 2]
    assert not list(tmp_path.rglob(TMP_PREFIX + "*"))


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_saved_models_follow_the_umask(tmp_path, umask, mask, file_mode):
    """safetensors writes its files 0o600; a saved model's files still get the umask's mode."""
    from transformers import BertConfig, BertForMaskedLM

    from geneattn.models import save_model

    umask(mask)
    cfg = BertConfig(
        vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    out = save_model(BertForMaskedLM(cfg), tmp_path / "m")
    modes = {p.name: _mode(p) for p in out.iterdir()}
    assert {"config.json", "model.safetensors"} <= set(modes)
    assert modes == dict.fromkeys(modes, file_mode)


def _enospc_writer(tmp: Path) -> None:
    tmp.write_bytes(b"half a file")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_enospc_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "table.parquet"
    with pytest.raises(OutputError) as info, atomic_path(target) as tmp:
        _enospc_writer(tmp)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"cannot write {target}: no space left on device")
    assert "free in" in msg and TMP_PREFIX not in msg
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # neither the temporary file nor the folders made for it


def test_failed_write_keeps_the_previous_version(tmp_path):
    write_text(tmp_path / "x.txt", "old")
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "state.json").write_text("old state")
    with pytest.raises(OutputError, match="disk quota exceeded"), atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("new, half")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with (
        pytest.raises(OutputError, match=r"tokens/state.json: no space"),
        atomic_dir(tmp_path / "tokens") as tmp,
    ):
        (tmp / "data.arrow").write_bytes(b"xx")
        with atomic_path(tmp / "state.json") as inner:
            _enospc_writer(inner)
    assert (tmp_path / "x.txt").read_text() == "old"
    assert (tmp_path / "tokens" / "state.json").read_text() == "old state"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["state.json", "tokens", "x.txt"]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        # h5py/HDF5: errno only inside the message
        (
            OSError(
                "Can't write data (file write failed: time = x, errno = 28, error message = "
                "'No space left on device', buf = 0x1, total write size = 4096)"
            ),
            errno.ENOSPC,
        ),  # fmt: skip
        (
            OSError("Error writing bytes to file. Detail: [errno 122] Disk quota exceeded"),
            errno.EDQUOT,
        ),  # Arrow
        (RuntimeError("wrapped"), None),  # gets an ENOSPC cause below
        (OSError(errno.EFBIG, "File too large"), errno.EFBIG),
        (OSError(errno.EROFS, "Read-only file system"), errno.EROFS),
    ],
)
def test_library_reports_of_full_disks_are_recognised(tmp_path, exc, code):
    if code is None:
        exc.__cause__, code = OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC
    assert write_failure(exc) == code
    with pytest.raises(OutputError) as info, atomic_path(tmp_path / "f.h5ad"):
        raise exc
    assert info.value.__cause__ is exc and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "No such file", "input.h5ad"),
        OSError(errno.EIO, "I/O error"),
        ValueError("a bug"),
        OSError("Unable to open object (object 'X' doesn't exist)"),
    ],  # fmt: skip
)
def test_other_errors_pass_through_unchanged(tmp_path, exc):
    """Null: errors that are not a failed write keep their type (reads, bugs), and still leave nothing."""
    assert write_failure(exc) is None
    with pytest.raises(type(exc)) as info, atomic_path(tmp_path / "sub" / "f.txt") as tmp:
        tmp.write_text("partial")
        raise exc
    assert info.value is exc and not isinstance(info.value, OutputError)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(OutputError, match="a parent of the output is a file"),
        atomic_path(tmp_path / "file" / "y"),
    ):
        pass
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(OutputError, match="permission denied"), atomic_path(tmp_path / "ro" / "y"):
            pass


def test_file_size_limit_in_a_real_process(tmp_path):
    """A real failing h5py write (EFBIG under ``ulimit -f``) through the CLI: exit 2, one line, no file."""
    out = tmp_path / "out" / "sim.h5ad"
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        sys.argv = ["geneattn", "-q", "simulate", "--out", {str(out)!r}, "--cells-per-dose", "20",
                    "--n-background-genes", "300"]
        from geneattn.cli import main
        main()
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"Error: cannot write {out}: file too large"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


_DIRECT_HDF5 = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
import geneattn.io
from geneattn._atomic import atomic_path

def direct(path, adata):  # h5py writing the disk itself, as AnnData.write_h5ad does
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)

geneattn.io.write_h5ad = direct
sys.argv = ["geneattn", "-q", "simulate", "--out", sys.argv[1], "--cells-per-dose", "20"]
from geneattn.cli import main
main()
"""


def test_hdf5_failing_mid_file_does_not_crash_the_cli(tmp_path):
    """HDF5 cannot close a file it ran out of space in and crashes at exit (SIGSEGV): the CLI exits 2."""
    out = tmp_path / "out" / "sim.h5ad"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", _DIRECT_HDF5, str(out)], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: cannot write {out}: file too large")
    assert not (tmp_path / "out").exists()


def test_tmp_names_keep_the_suffix_and_name_the_owner():
    name = tmp_name("cells.h5ad")
    assert name.startswith(f"{TMP_PREFIX}{os.getpid()}-") and name.endswith("-cells.h5ad")
    assert tmp_name("cells.h5ad") != name
    long = tmp_name("x" * 300 + ".parquet")
    assert len(long.encode()) < 255 and long.endswith(".parquet")


_HOLD = """
import sys, time
from geneattn._atomic import atomic_dir, atomic_path
with atomic_path(sys.argv[1]) as f, atomic_dir(sys.argv[2]) as d:
    (d / "part.arrow").write_bytes(b"x")
    print(f.name, d.name, flush=True)
    time.sleep(60)
"""


def _writer(tmp_path: Path) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = [sys.executable, "-c", _HOLD, str(tmp_path / "f.parquet"), str(tmp_path / "sub" / "tokens")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    return proc, proc.stdout.readline().split()


def test_clean_tmp_never_deletes_a_live_writers_files(tmp_path):
    proc, (f, d) = _writer(tmp_path)
    try:
        mine = tmp_path / tmp_name("mine.json")
        mine.write_text("{}")
        assert clean_tmp(tmp_path) == 0  # null: a live writer (and this process) keeps everything
        assert (tmp_path / f).is_file() and (tmp_path / "sub" / d / "part.arrow").is_file() and mine.is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    (tmp_path / ".tmp-legacy.txt").write_text("from an older version")  # no owner PID
    (tmp_path / "keep.txt").write_text("results")
    assert clean_tmp(tmp_path) == 3  # the killed writer's file and directory, and the unowned file
    assert {p.name for p in tmp_path.rglob("*")} == {"keep.txt", mine.name, "sub"}
