"""`AttentionResult`: the tables of `extract`, saved as Parquet, plus the per-token store; AnnData helper."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._atomic import atomic_path, write_json
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

__all__ = ["AttentionResult", "TokenIndex", "gene_attention", "TABLES"]

logger = logging.getLogger(__name__)

TABLES = (
    "attention_by_gene",
    "attention_by_position",
    "attention_by_position_length",
    "head_norms",
    "cell_head",
)

_PARQUET_ROWS = 1 << 17  # rows per row group when a table is written piecewise


class TokenIndex(Mapping[str, np.ndarray]):
    """``token_index`` whose ``token_ids`` (one per token) are not held in memory until first accessed.

    Keys ``offsets``, ``token_ids``, ``cell_ids`` as in ``token_index.npz``. ``token_ids`` come from
    ``blocks()`` (int32 pieces in dataset order) or, after `use_file`, from the ``.npz``.

    Parameters
    ----------
    offsets
        ``[n_cells+1]`` token offset of each cell.
    cell_ids
        ``[n_cells]`` cell ids.
    n_tokens
        Total number of tokens.
    blocks
        Callable returning an iterator over the token ids in int32 pieces.
    path
        ``token_index.npz`` to read ``token_ids`` from.
    """

    def __init__(
        self, offsets: np.ndarray, cell_ids: np.ndarray, n_tokens: int, *,
        blocks: Callable[[], Iterable[np.ndarray]] | None = None, path: Path | None = None,
    ) -> None:  # fmt: skip
        self._arrays: dict[str, np.ndarray | None] = {
            "offsets": offsets,
            "token_ids": None,
            "cell_ids": cell_ids,
        }
        self.n_tokens, self._blocks, self._path = int(n_tokens), blocks, path

    def use_file(self, path: Path) -> None:
        """Read ``token_ids`` from ``path`` from now on (drops the block source)."""
        self._path, self._blocks = Path(path), None

    def token_blocks(self) -> Iterator[np.ndarray]:
        """``token_ids`` in int32 pieces (the loaded array as one piece when already in memory)."""
        arr = self._arrays["token_ids"]
        if arr is not None or self._blocks is None:
            yield self["token_ids"]
            return
        for block in self._blocks():
            yield np.asarray(block, dtype=np.int32)

    def __getitem__(self, key: str) -> np.ndarray:
        arr = self._arrays[key]
        if arr is None:
            if self._blocks is not None:
                arr = np.empty(self.n_tokens, np.int32)
                pos = 0
                for block in self._blocks():
                    arr[pos : pos + len(block)] = block
                    pos += len(block)
            elif self._path is not None:
                with np.load(self._path, allow_pickle=False) as z:
                    arr = z["token_ids"]
            else:  # pragma: no cover - constructed without a source
                raise KeyError(key)
            self._arrays[key] = arr
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def write_npz(self, fh: Any) -> None:
        """Write the ``.npz`` (same members and bytes layout as ``np.savez``), ``token_ids`` piece by piece."""
        fmt = np.lib.format
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in self._arrays:
                with zf.open(f"{key}.npy", "w", force_zip64=True) as fid:
                    if key != "token_ids":
                        fmt.write_array(fid, np.asanyarray(self[key]), allow_pickle=False)
                        continue
                    header = {"descr": fmt.dtype_to_descr(np.dtype(np.int32)), "fortran_order": False,
                              "shape": (self.n_tokens,)}  # fmt: skip
                    fmt.write_array_header_1_0(fid, header)
                    for block in self.token_blocks():
                        fid.write(np.ascontiguousarray(block, dtype=np.int32).tobytes())


def _to_parquet(df: pd.DataFrame, path: Path) -> None:
    """``df.to_parquet(path, index=False)``; frames with Categorical columns are written in row groups.

    Categorical columns go to disk as their values (strings) and integer columns as int64, so what
    ``pd.read_parquet`` returns does not depend on the compact in-memory dtypes.
    """
    if df.empty or not any(isinstance(t, pd.CategoricalDtype) for t in df.dtypes):
        df.to_parquet(path, index=False)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    def plain(part: pd.DataFrame) -> pd.DataFrame:
        cols = {}
        for c in part.columns:
            s = part[c]
            if isinstance(s.dtype, pd.CategoricalDtype):
                s = s.astype(object)
            elif s.dtype.kind in "iu":
                s = s.astype(np.int64)
            cols[c] = s.to_numpy()
        return pd.DataFrame(cols)

    writer = None
    try:
        for lo in range(0, len(df), _PARQUET_ROWS):
            part = plain(df.iloc[lo : lo + _PARQUET_ROWS])
            if writer is None:
                table = pa.Table.from_pandas(part, preserve_index=False)
                writer = pq.ParquetWriter(path, table.schema)
            else:
                table = pa.Table.from_pandas(part, schema=writer.schema, preserve_index=False)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def compact_cell_head(df: pd.DataFrame) -> pd.DataFrame:
    """``cell_head`` as read from Parquet, converted to the compact in-memory dtypes of `extract`.

    Categorical ``model`` (order of appearance), ``cell_id`` and ``label`` (sorted categories),
    int32 ``length``, int16 ``layer``/``head``.
    """
    if df.empty:
        return df
    out = {}
    for c in df.columns:
        s = df[c]
        if c == "model" and s.dtype == object:
            s = pd.Categorical(s.to_numpy(), categories=pd.Index(pd.unique(s.to_numpy()), dtype=object))
        elif c in ("cell_id", "label") and s.dtype == object:
            v = s.to_numpy().astype(str)
            uniq, inv = np.unique(v, return_inverse=True)
            s = pd.Categorical.from_codes(
                inv.reshape(-1).astype(np.int32), categories=pd.Index(uniq.astype(object), dtype=object)
            )
        elif c == "length" and s.dtype.kind in "iu":
            s = s.to_numpy().astype(np.int32)
        elif c in ("layer", "head") and s.dtype.kind in "iu":
            s = s.to_numpy().astype(np.int16)
        out[c] = s
    return pd.DataFrame(out)


@dataclass
class AttentionResult:
    """Tables produced by `geneattn.attention.extract`.

    Attributes
    ----------
    tables
        ``attention_by_gene``, ``attention_by_position``, ``attention_by_position_length``,
        ``head_norms``, ``cell_head`` (schemas: module docstring of `geneattn.attention`).
    params
        Parameters of the run (models, batch_size, n_cells, length bin edges, ...).
    token_logfold
        Per model ``[n_tokens, n_layers, n_heads]`` float32 log fold (memmap when saved), or empty.
    token_index
        ``offsets`` ``[n_cells+1]``, ``token_ids`` ``[n_tokens]``, ``cell_ids`` ``[n_cells]``, or empty.
    """

    tables: dict[str, pd.DataFrame]
    params: dict[str, Any] = field(default_factory=dict)
    token_logfold: dict[str, np.ndarray] = field(default_factory=dict)
    token_index: Mapping[str, np.ndarray] = field(default_factory=dict)

    def save(self, out: str | os.PathLike[str]) -> Path:
        """Write every table as ``out/<name>.parquet``, ``params.json`` and the token store (atomic files)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in self.tables.items():
            with atomic_path(out / f"{name}.parquet") as tmp:
                _to_parquet(df, tmp)
        for model, arr in self.token_logfold.items():
            path = out / f"token_logfold_{model}.npy"
            if isinstance(arr, np.memmap) and Path(arr.filename).resolve() == path.resolve():
                arr.flush()
                continue
            with atomic_path(path) as tmp:
                np.save(tmp, np.asarray(arr))
        if self.token_index:
            with atomic_path(out / "token_index.npz") as tmp, tmp.open("wb") as fh:
                if isinstance(self.token_index, TokenIndex):
                    self.token_index.write_npz(fh)
                else:
                    np.savez(fh, **self.token_index)
        write_json(out / "params.json", self.params)
        return out

    @classmethod
    def load(cls, out: str | os.PathLike[str]) -> AttentionResult:
        """Read a directory written by `save` (the token store is memory-mapped read-only)."""
        out = Path(out)
        if not (out / "attention_by_gene.parquet").is_file():
            msg = f"{out} holds no attention results (attention_by_gene.parquet missing)"
            raise InputError(msg)
        tables = {
            n: pd.read_parquet(out / f"{n}.parquet") for n in TABLES if (out / f"{n}.parquet").is_file()
        }
        if "cell_head" in tables:
            tables["cell_head"] = compact_cell_head(tables["cell_head"])
        params = json.loads((out / "params.json").read_text()) if (out / "params.json").is_file() else {}
        store = {
            p.name[len("token_logfold_") : -len(".npy")]: np.load(p, mmap_mode="r")
            for p in sorted(out.glob("token_logfold_*.npy"))
        }
        index: Mapping[str, np.ndarray] = {}
        if (out / "token_index.npz").is_file():
            with np.load(out / "token_index.npz", allow_pickle=False) as z:
                if set(z.files) == {"offsets", "token_ids", "cell_ids"}:  # token_ids read on first access
                    off = z["offsets"]
                    index = TokenIndex(off, z["cell_ids"], int(off[-1]), path=out / "token_index.npz")
                else:
                    index = {k: z[k] for k in z.files}
        return cls(tables, params, store, index)

    def token_values(self, model: str, cell: int) -> np.ndarray:
        """``[n_c, n_layers, n_heads]`` log fold of dataset row ``cell`` (needs the token store)."""
        if model not in self.token_logfold:
            msg = f"no token store for model {model!r} (extract(..., store_tokens=True))"
            raise InputError(msg)
        off = self.token_index["offsets"]
        return np.asarray(self.token_logfold[model][off[cell] : off[cell + 1]])


def _column_order(column: str) -> tuple[str, int, int]:
    model, lh = column.rsplit("_L", 1)
    layer, head = lh.split("H")
    return model, int(layer), int(head)


def gene_matrix(
    adata: AnnData, abg: pd.DataFrame, label: str = "__all__", *, value: str = "fold_mean", by: str = "model"
) -> pd.DataFrame:
    """``value`` of ``attention_by_gene`` for ``label``: one row per ``adata`` gene, one column per head.

    Columns ``"<by>_L{l}H{h}"`` (sorted by ``by``, layer, head; ``by`` is the model, or e.g. the metric
    of a ``gene_change`` table); NaN where the gene never occurs.
    Genes are matched on ``var["ensembl_id"]`` when present, else on ``var_names`` vs gene symbols.
    """
    genes = abg[abg["label"].astype(str) == label] if "label" in abg else abg
    if genes.empty:
        msg = f"no attention_by_gene rows for label {label!r}"
        raise InputError(msg)
    genes = genes.assign(
        column=genes[by].astype(str) + "_L" + genes["layer"].astype(str) + "H" + genes["head"].astype(str)
    )
    use_ens = "ensembl_id" in adata.var.columns
    key = "ensembl_id" if use_ens else "gene"
    wide = genes.pivot_table(index=key, columns="column", values=value, aggfunc="first")
    columns = sorted(wide.columns, key=_column_order)
    ids = (
        adata.var["ensembl_id"].astype(str).to_numpy() if use_ens else np.asarray(adata.var_names, dtype=str)
    )
    return wide.reindex(index=ids, columns=columns)


def gene_attention(
    adata: AnnData,
    result: AttentionResult,
    *,
    key_added: str = "gene_attention",
    label: str = "__all__",
    copy: bool = False,
) -> AnnData | None:
    """Record per-gene attention in ``adata`` (scanpy style: in place, or on a copy).

    Sets ``adata.varm[key_added]`` (genes x ``"<model>_L{l}H{h}"``: ``fold_mean`` of `attention_by_gene`
    for ``label``, NaN where the gene never occurs), ``adata.var[f"{key_added}_{model}"]`` (the mean of
    those columns over layers and heads, one per model) and ``adata.uns[key_added]`` =
    ``{"columns": [...], "params": {"models", "batch_size", "n_cells", "label", "value"}}``. Genes are
    matched on ``var["ensembl_id"]`` when present, else on ``var_names`` vs gene symbols.

    Returns
    -------
    The annotated copy when ``copy``, else None.
    """
    adata = adata.copy() if copy else adata
    mat = gene_matrix(adata, result.tables["attention_by_gene"], label)
    columns = list(mat.columns)
    adata.varm[key_added] = mat.to_numpy(dtype=np.float64)
    models = list(dict.fromkeys(c.rsplit("_L", 1)[0] for c in columns))
    for model in models:
        cols = [c for c in columns if c.rsplit("_L", 1)[0] == model]
        adata.var[f"{key_added}_{model}"] = mat[cols].mean(axis=1, skipna=False).to_numpy()
    p = result.params
    adata.uns[key_added] = {
        "columns": np.asarray(columns, dtype=str),
        "params": {
            "models": np.asarray(models, dtype=str),
            "batch_size": int(p.get("batch_size", 0)),
            "n_cells": int(p.get("n_cells", 0)),
            "label": label,
            "value": "fold_mean",
        },
    }
    return adata if copy else None
