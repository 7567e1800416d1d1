"""`AttentionResult`: the tables of `extract`, saved as Parquet, plus the per-token store; AnnData helper."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import atomic_path, write_json
from ..errors import InputError

__all__ = ["AttentionResult", "annotate_adata", "TABLES"]

logger = logging.getLogger(__name__)

TABLES = (
    "attention_by_gene",
    "attention_by_position",
    "attention_by_position_length",
    "head_norms",
    "cell_head",
)


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
    token_index: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, out: str | os.PathLike[str]) -> Path:
        """Write every table as ``out/<name>.parquet``, ``params.json`` and the token store (atomic files)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in self.tables.items():
            with atomic_path(out / f"{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        for model, arr in self.token_logfold.items():
            path = out / f"token_logfold_{model}.npy"
            if isinstance(arr, np.memmap) and Path(arr.filename).resolve() == path.resolve():
                arr.flush()
                continue
            with atomic_path(path) as tmp:
                np.save(tmp, np.asarray(arr))
        if self.token_index:
            with atomic_path(out / "token_index.npz") as tmp, tmp.open("wb") as fh:
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
        params = json.loads((out / "params.json").read_text()) if (out / "params.json").is_file() else {}
        store = {
            p.name[len("token_logfold_") : -len(".npy")]: np.load(p, mmap_mode="r")
            for p in sorted(out.glob("token_logfold_*.npy"))
        }
        index = {}
        if (out / "token_index.npz").is_file():
            with np.load(out / "token_index.npz", allow_pickle=False) as z:
                index = {k: z[k] for k in z.files}
        return cls(tables, params, store, index)

    def token_values(self, model: str, cell: int) -> np.ndarray:
        """``[n_c, n_layers, n_heads]`` log fold of dataset row ``cell`` (needs the token store)."""
        if model not in self.token_logfold:
            msg = f"no token store for model {model!r} (extract(..., store_tokens=True))"
            raise InputError(msg)
        off = self.token_index["offsets"]
        return np.asarray(self.token_logfold[model][off[cell] : off[cell + 1]])


def annotate_adata(
    adata: Any, result: AttentionResult, *, key_added: str = "gene_attention", label: str = "__all__"
) -> None:
    """Record per-gene attention in ``adata``.

    Sets ``adata.varm[key_added]`` (genes x ``"<model>_L{l}H{h}"``, ``fold_mean`` of `attention_by_gene`
    for ``label``, NaN where the gene never occurs) and ``adata.uns[key_added]`` =
    ``{"columns": [...], "params": {"models", "batch_size", "n_cells", "label", "value"}}``. Genes are
    matched on ``var["ensembl_id"]`` when present, else on ``var_names`` vs gene symbols.
    """
    genes = result.tables["attention_by_gene"]
    genes = genes[genes["label"] == label]
    if genes.empty:
        msg = f"no attention_by_gene rows for label {label!r}"
        raise InputError(msg)
    genes = genes.assign(
        column=genes["model"] + "_L" + genes["layer"].astype(str) + "H" + genes["head"].astype(str)
    )
    use_ens = "ensembl_id" in adata.var.columns
    key = "ensembl_id" if use_ens else "gene"
    wide = genes.pivot_table(index=key, columns="column", values="fold_mean", aggfunc="first")
    columns = sorted(
        wide.columns, key=lambda c: (c.rsplit("_L", 1)[0], *map(int, c.rsplit("_L", 1)[1].split("H")))
    )
    ids = (
        adata.var["ensembl_id"].astype(str).to_numpy() if use_ens else np.asarray(adata.var_names, dtype=str)
    )
    mat = wide.reindex(index=ids, columns=columns).to_numpy(dtype=np.float64)
    adata.varm[key_added] = mat
    p = result.params
    adata.uns[key_added] = {
        "columns": np.asarray(columns, dtype=str),
        "params": {
            "models": np.asarray(list(p.get("models", {})), dtype=str),
            "batch_size": int(p.get("batch_size", 0)),
            "n_cells": int(p.get("n_cells", 0)),
            "label": label,
            "value": "fold_mean",
        },
    }
