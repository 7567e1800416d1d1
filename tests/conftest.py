"""Suite-wide test configuration: single-threaded numerics, no progress bars, shared-data paths."""

from __future__ import annotations

import os
from pathlib import Path

# one thread per test worker: `make test` runs two xdist workers on a 2-core machine
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from _shared_data import skip_or_fail  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    from geneattn import settings

    settings.progress = False


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository (Geneformer's real dictionaries and golden tokens)."""
    if not SHARED.is_dir():
        skip_or_fail(f"{SHARED} not present (Geneformer dictionaries live there)")
    return SHARED
