"""Reading h5ad files safely: clear errors for missing, truncated or non-h5ad files; never writes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata
import h5py
from anndata import AnnData

from ..errors import InputError, one_line

__all__ = ["read_h5ad"]

logger = logging.getLogger(__name__)

_OTHER_FORMATS = {
    ".csv": "sc.read_csv",
    ".tsv": "sc.read_text",
    ".txt": "sc.read_text",
    ".loom": "sc.read_loom",
    ".mtx": "sc.read_mtx / sc.read_10x_mtx",
    ".h5": "sc.read_10x_h5",
    ".zarr": "anndata.read_zarr",
    ".rds": "an R-to-AnnData converter (e.g. zellkonverter or SeuratDisk)",
}


def _check_file(path: Path) -> None:
    if not path.exists():
        msg = f"file not found: {path}"
        raise InputError(msg)
    if path.is_dir():
        msg = f"{path} is a directory; expected an .h5ad file"
        raise InputError(msg)
    if not os.access(path, os.R_OK):
        msg = f"cannot read {path}: permission denied"
        raise InputError(msg)
    if path.stat().st_size == 0:
        msg = f"{path} is empty (0 bytes); re-download or re-write the file"
        raise InputError(msg)
    if not h5py.is_hdf5(path):
        hint = _OTHER_FORMATS.get(path.suffix.lower())
        fix = (
            f"read it with {hint} and save with adata.write_h5ad()" if hint else "pass an AnnData .h5ad file"
        )
        msg = f"{path} is not an HDF5/h5ad file; {fix}"
        raise InputError(msg)


def read_h5ad(path: str | os.PathLike[str], *, backed: bool = False) -> AnnData:
    """Read an ``.h5ad`` file, in memory or backed (read-only); the file is never modified.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    backed
        Open ``X`` read-only on disk (``backed="r"``) instead of loading it; ``obs``/``var`` are read.
        Close with ``adata.file.close()`` when done. A file without ``X`` (counts in a layer, which
        anndata reads whole in backed mode too) is read into memory.

    Returns
    -------
    AnnData
        The data as stored (not canonicalised; see `geneattn.io.canonicalize`).

    Raises
    ------
    InputError
        Missing, empty, unreadable, truncated or non-h5ad file.
    """
    path = Path(path)
    _check_file(path)
    adata = _read(path, backed=backed)
    if backed and "X" not in adata.file:  # counts only in layers (read whole by anndata anyway)
        adata.file.close()
        logger.info("%s has no X: read into memory instead of backed", path)
        adata, backed = _read(path, backed=False), False
    x_shape = None if adata.X is None else tuple(adata.X.shape)
    if x_shape is not None and x_shape != (len(adata.obs), len(adata.var)):
        if backed:
            adata.file.close()
        msg = (
            f"{path} is inconsistent: X is {x_shape[0]} x {x_shape[1]} but obs has {len(adata.obs)} and var "
            f"{len(adata.var)} rows; the file is corrupt: re-download it or write it again"
        )
        raise InputError(msg)
    logger.info(
        "read %s: %d cells x %d genes%s", path, adata.n_obs, adata.n_vars, " (backed)" if backed else ""
    )
    return adata


def _read(path: Path, *, backed: bool) -> AnnData:
    try:
        return anndata.read_h5ad(path, backed="r" if backed else None)
    except Exception as e:  # noqa: BLE001 - any reader failure (incl. anndata's IORegistryError) is a bad file
        msg = (
            f"cannot read {path} as h5ad ({type(e).__name__}: {one_line(e)}); the file may be truncated or "
            "not written by anndata: re-download it or write it again with adata.write_h5ad()"
        )
        raise InputError(msg) from e
