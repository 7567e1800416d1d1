"""Writing AnnData and tables atomically: the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from anndata import AnnData

from .._atomic import atomic_path

__all__ = ["write_h5ad", "write_table"]


def write_h5ad(path: str | os.PathLike[str], adata: AnnData) -> Path:
    """Write ``adata`` to ``path`` atomically (mode ``0o666 & ~umask``, as a plain write).

    Raises
    ------
    OutputError
        No space, quota, file size limit, read-only or forbidden folder; nothing is left behind.
    """
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


def write_table(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write ``df`` to Parquet at ``path`` atomically, without its index (errors as `write_h5ad`)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)
