"""One tiny `geneattn run` per test session (simulated nutlin-3a, CPU, ~3 min), shared by the report-contract
and the stats-door tests; a test that changes it works on a copy (`copy_of`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

GENEATTN = Path(sys.executable).parent / "geneattn"
TINY = """
data = "{data}"
classes = ["0.1", "0.5", "5", "10"]
groups = "low=0.1,0.5;high=5,10"
pretrain_epochs = 1
finetune_epochs = 1
n_boot = 10
attribution_cells = 0
min_cells_per_class = 5
model_input_size = 64
top_k = 10
device = "cpu"
"""
_DONE: dict[str, Path] = {}


def env() -> dict[str, str]:
    """A quiet, single-threaded, offline environment for the CLI."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def geneattn(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the ``geneattn`` CLI (quiet); returns the finished process."""
    return subprocess.run(
        [str(GENEATTN), "-q", *args], env=env(), capture_output=True, text=True, timeout=timeout
    )


def tiny_study(tmp_path_factory) -> Path:
    """The session's tiny results directory (made on first use; do not modify it, copy it)."""
    if "root" not in _DONE:
        from geneattn.datasets import nutlin_sim

        root = tmp_path_factory.mktemp("tiny_study")
        data = root / "sim.h5ad"
        nutlin_sim(seed=0, cells_per_dose=15, n_background_genes=200).write_h5ad(data)
        (root / "tiny.toml").write_text(TINY.format(data=data))
        done = geneattn("run", "--config", str(root / "tiny.toml"), "--out", str(root / "results"))
        assert done.returncode == 0, done.stderr[-3000:]
        _DONE["root"] = root / "results"
    return _DONE["root"]


def copy_of(results: Path, where: Path) -> Path:
    """A copy of a results directory (its config.toml names ``out``, which run_part replaces)."""
    return Path(shutil.copytree(results, where / results.name))
