from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(__file__).with_name("_ddp_smoke.py")),
        str(tmp_path),
    ]
    if shutil.which("timeout"):
        cmd = ["timeout", "90", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((tmp_path / "pt" / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 6  # 96 cells / 8 per step / 2 processes
    assert log["throughput"]["cells_per_s"] > 0
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["n_test"] > 0
    leftovers = [p.name for p in (tmp_path / "ft").iterdir() if p.name.startswith(".tmp-")]
    assert not leftovers
