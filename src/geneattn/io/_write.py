"""Writing AnnData and tables atomically: the old file or the new one, never half of one."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from anndata import AnnData

from .._atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import h5py

__all__ = ["write_h5ad", "write_table"]

_CHUNK = 64 * 2**20


def write_h5ad(path: str | os.PathLike[str], adata: AnnData) -> Path:
    """Write ``adata`` to ``path`` atomically (mode ``0o666 & ~umask``, as a plain write).

    The HDF5 file is built in memory (as much memory as the file's size) and then written out
    by Python: HDF5 that runs out of disk space in the middle of a file cannot close it and
    crashes the process at exit, so a full disk must fail in our own write instead. As
    ``AnnData.write_h5ad``, string columns of ``obs``/``var`` become categoricals in place.

    Raises
    ------
    OutputError
        No space, quota, file size limit, read-only or forbidden folder; nothing is left behind.
    """
    import h5py

    if adata.is_view or adata.isbacked:
        adata = adata.to_memory() if adata.isbacked else adata.copy()
    adata.strings_to_categoricals()
    if adata.raw is not None:
        adata.strings_to_categoricals(adata.raw.var)
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        _write_elements(f, adata)
    with atomic_path(path) as tmp, tmp.open("wb") as out, image.getbuffer() as view:
        for start in range(0, len(view), _CHUNK):
            out.write(view[start : start + _CHUNK])
    return Path(path)


def _write_elements(f: h5py.File, adata: AnnData) -> None:
    """What ``AnnData.write_h5ad`` writes (anndata 0.12), into an open HDF5 file."""
    from anndata.io import write_elem

    f.attrs["encoding-type"] = "anndata"
    f.attrs["encoding-version"] = "0.1.0"
    if adata.X is not None:
        write_elem(f, "X", adata.X)
    if adata.raw is not None:
        write_elem(f, "raw", adata.raw)
    write_elem(f, "obs", adata.obs)
    write_elem(f, "var", adata.var)
    for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
        write_elem(f, key, dict(getattr(adata, key)))


def write_table(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write ``df`` to Parquet at ``path`` atomically, without its index (errors as `write_h5ad`)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)
