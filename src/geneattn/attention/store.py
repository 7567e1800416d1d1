"""The per-token log-fold store: its writer (used by `extract`) and its reader (`TokenStore`).

Files in an attention directory: ``token_logfold_<model>.npy`` float32 ``[n_tokens, n_layers,
n_heads]`` (``log(n_c · a)`` per token, cells in dataset order) and ``token_index.npz`` (``offsets``
``[n_cells + 1]``, ``token_ids`` ``[n_tokens]``, ``cell_ids`` ``[n_cells]``). Also the one helper for
quantile bins of cell length, shared by the engine and the statistics.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .._atomic import TMP_PREFIX
from ..errors import InputError

__all__ = [
    "TokenStore",
    "token_store_path",
    "length_bin_edges",
    "length_bins_of",
    "length_bins",
    "open_store",
    "store_batch",
    "StoreFile",
    "barrier",
]

TOKEN_INDEX = "token_index.npz"


def token_store_path(attention_dir: str | os.PathLike[str], model: str) -> Path:
    """``<attention_dir>/token_logfold_<model>.npy``."""
    return Path(attention_dir) / f"token_logfold_{model}.npy"


def length_bin_edges(lengths: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """``n_bins + 1`` quantile edges of cell length (the first and last are the min and max)."""
    return np.quantile(np.asarray(lengths, dtype=float), np.linspace(0, 1, n_bins + 1))


def length_bins_of(lengths: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin ``0 .. len(edges) - 2`` of each length (ties share a bin)."""
    return np.searchsorted(edges[1:-1], np.asarray(lengths, dtype=float), side="right").astype(np.int64)


def length_bins(lengths: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Quantile bins of cell length: bin ``b`` in ``0..n_bins-1`` per cell (ties share a bin)."""
    lengths = np.asarray(lengths, dtype=float)
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    return length_bins_of(lengths, length_bin_edges(lengths, n_bins))


@dataclasses.dataclass
class TokenStore:
    """Per-token log fold attention of one model, in cell order (attention engine's token store).

    Attributes
    ----------
    logfold
        ``[n_tokens, n_layers, n_heads]`` float32, ``log(n_c · a)``.
    offsets
        ``[n_cells + 1]``; cell ``c`` owns tokens ``offsets[c]:offsets[c+1]`` (position = index − offset).
    token_ids
        ``[n_tokens]`` token id of each token.
    cell_ids
        ``[n_cells]`` cell identifiers.
    """

    logfold: np.ndarray
    offsets: np.ndarray
    token_ids: np.ndarray
    cell_ids: np.ndarray

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.token_ids = np.asarray(self.token_ids)
        if self.logfold.ndim == 2:
            self.logfold = self.logfold[:, :, None]
        n_tok = int(self.offsets[-1]) if len(self.offsets) else 0
        if (
            self.logfold.shape[0] != n_tok
            or len(self.token_ids) != n_tok
            or len(self.cell_ids) != len(self.offsets) - 1
        ):
            msg = (
                f"token store is inconsistent: logfold {self.logfold.shape}, token_ids {len(self.token_ids)}, "
                f"offsets end {n_tok}, {len(self.cell_ids)} cells for {len(self.offsets) - 1} offsets"
            )
            raise InputError(msg)

    @classmethod
    def load(cls, attention_dir: str | Path, model: str) -> TokenStore:
        """Read ``token_logfold_<model>.npy`` and ``token_index.npz`` from ``attention_dir``."""
        d = Path(attention_dir)
        lf, ix = token_store_path(d, model), d / TOKEN_INDEX
        if not lf.exists() or not ix.exists():
            msg = f"no token store for model {model!r} in {d} (need {lf.name} and {ix.name}; extract with store_tokens=True)"
            raise InputError(msg)
        with np.load(ix, allow_pickle=False) as z:
            return cls(np.load(lf, allow_pickle=False), z["offsets"], z["token_ids"], z["cell_ids"])

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.offsets) - 1

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return self.logfold.shape[1]

    @property
    def n_heads(self) -> int:
        """Number of heads per layer."""
        return self.logfold.shape[2]

    @property
    def lengths(self) -> np.ndarray:
        """``n_c`` per cell."""
        return np.diff(self.offsets)

    @property
    def cell_of_token(self) -> np.ndarray:
        """Cell index of each token."""
        return np.repeat(np.arange(self.n_cells), self.lengths)

    @property
    def positions(self) -> np.ndarray:
        """Position of each token within its cell (0 = highest rank)."""
        return np.arange(len(self.token_ids)) - np.repeat(self.offsets[:-1], self.lengths)

    def same_cells(self, other: TokenStore) -> bool:
        """True when both stores hold the same cells, tokens and order (paired comparisons)."""
        return (
            np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.token_ids, other.token_ids)
            and np.array_equal(np.asarray(self.cell_ids).astype(str), np.asarray(other.cell_ids).astype(str))
        )


class StoreFile:
    """Write side of ``token_logfold_<model>.npy``: rows go in with ``os.pwrite`` at their offsets.

    Plain file writes, not a memmap: dirty pages of a shared mapping count in the process's RSS, so a
    memmap store made peak memory grow with the number of tokens.

    Parameters
    ----------
    path
        The ``.npy`` file, already created with its header and full size.
    """

    def __init__(self, path: Path) -> None:
        view = np.lib.format.open_memmap(path, mode="r")  # reads the header; touches no data page
        self.path, self.header = path, int(view.offset)
        self.row_bytes = int(np.prod(view.shape[1:], dtype=np.int64)) * view.dtype.itemsize
        del view
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, start: int, values: np.ndarray) -> None:
        """Write ``values`` (float32 ``[n, n_layers, n_heads]``) as token rows ``start .. start+n-1``."""
        data = np.ascontiguousarray(values, dtype=np.float32).tobytes()
        os.pwrite(self.fd, data, self.header + start * self.row_bytes)

    def close(self) -> None:
        """Close the file descriptor."""
        os.close(self.fd)


def open_store(
    out: Path | None, shapes: dict[str, tuple[int, int]], n_tokens: int, rank: int, world: int
) -> dict[str, np.ndarray | StoreFile]:
    """Per model: an in-memory ``[n_tokens, n_layers, n_heads]`` array (``out`` None) or a `StoreFile`."""
    if out is None:
        return {n: np.zeros((n_tokens, nl, nh), np.float32) for n, (nl, nh) in shapes.items()}
    out.mkdir(parents=True, exist_ok=True)
    store = {}
    for n, (nl, nh) in shapes.items():
        tmp = out / f"{TMP_PREFIX}token_logfold_{n}.npy"
        if rank == 0:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_tokens, nl, nh))
        barrier(world)
        store[n] = StoreFile(tmp)
    return store


def store_batch(dest: np.ndarray | StoreFile, lf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
    """Copy the cell-major token rows ``lf`` of one batch to token rows ``starts[i] ..`` of ``dest``.

    Cells whose rows follow each other in the store are written with one call.
    """
    pos = 0
    for lo, hi in _runs(starts, lens):
        n = int(starts[hi - 1] + lens[hi - 1] - starts[lo])
        if isinstance(dest, StoreFile):
            dest.write(int(starts[lo]), lf[pos : pos + n])
        else:
            dest[starts[lo] : starts[lo] + n] = lf[pos : pos + n]
        pos += n


def _runs(starts: np.ndarray, lens: np.ndarray) -> list[tuple[int, int]]:
    """``[lo, hi)`` index ranges of cells that are contiguous in the store (``starts`` increasing)."""
    breaks = np.flatnonzero(starts[1:] != starts[:-1] + lens[:-1]) + 1
    edges = np.concatenate([[0], breaks, [len(starts)]]).tolist()
    return list(zip(edges[:-1], edges[1:], strict=True))


def barrier(world: int) -> None:
    """Wait for every process of a ``torch.distributed`` run of ``world`` processes (no-op for 1)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
