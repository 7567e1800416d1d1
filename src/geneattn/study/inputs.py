"""`StudyInputs`: what the statistics of a study read from its results directory, read once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import ENSEMBL_ID, PLANTED
from .._results import Results
from ..attention.store import TokenStore, token_store_path
from ..stats.confounds import gene_scores

__all__ = ["StudyInputs", "load_inputs"]


@dataclasses.dataclass
class StudyInputs:
    """``cells.h5ad``, the attention tables and the per-token stores of one results directory.

    Attributes
    ----------
    results
        The results directory.
    adata
        ``cells.h5ad`` (raw counts in ``X``, ``obs`` with ``label``/``well``, ``var`` with ``planted``).
    stores
        Model name -> token store (per-token log fold).
    tables
        Attention tables (``attention_by_gene``, ``cell_head``, ...).
    gene_map
        Token id -> gene symbol (``var_names``).
    """

    results: Results
    adata: AnnData
    stores: dict[str, TokenStore]
    tables: dict[str, pd.DataFrame]
    gene_map: pd.Series
    _gene_scores: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict, repr=False)

    def gene_scores(self, model: str) -> pd.DataFrame:
        """`geneattn.stats.confounds.gene_scores` of one model's token store (computed once)."""
        if model not in self._gene_scores:
            self._gene_scores[model] = gene_scores(self.stores[model], gene_map=self.gene_map)
        return self._gene_scores[model]

    @property
    def planted(self) -> pd.Series | None:
        """``var["planted"]`` (simulated data) or None."""
        v = self.adata.var
        return v[PLANTED].astype(bool) if PLANTED in v else None

    def cell_obs(self, store: TokenStore, key: str) -> np.ndarray | None:
        """``obs[key]`` in the order of the token store's cells (None when missing or ids don't match)."""
        obs = self.adata.obs
        ids = pd.Index(np.asarray(store.cell_ids).astype(str))
        if key not in obs or not ids.isin(obs.index.astype(str)).all():
            return None
        col = obs[key].astype(str)
        col.index = obs.index.astype(str)
        return col.reindex(ids).to_numpy()


def _gene_map(adata: AnnData, abg: pd.DataFrame | None) -> pd.Series:
    """Token id -> gene symbol of ``adata`` (matched on Ensembl ids where both have them)."""
    if abg is None or abg.empty:
        return pd.Series(dtype=str)
    tok = abg.drop_duplicates("token_id").set_index("token_id")
    names = tok["gene"].astype(str)
    if ENSEMBL_ID in adata.var and "ensembl_id" in tok:
        ens2sym = pd.Series(adata.var_names, index=adata.var[ENSEMBL_ID].astype(str).to_numpy())
        ens2sym = ens2sym[~ens2sym.index.duplicated()]
        names = tok["ensembl_id"].astype(str).map(ens2sym).fillna(names)
    return names


def load_inputs(results: Results) -> StudyInputs:
    """Read ``cells.h5ad``, the attention tables and the token stores of ``results``."""
    adata = results.read_cells()
    att = results.attention
    tables = {p.stem: pd.read_parquet(p) for p in sorted(att.glob("*.parquet"))} if att.is_dir() else {}
    names = [
        p.name.removeprefix("token_logfold_").removesuffix(".npy")
        for p in sorted(att.glob("token_logfold_*.npy"))
    ]
    stores = {n: TokenStore.load(att, n) for n in names if token_store_path(att, n).is_file()}
    return StudyInputs(results, adata, stores, tables, _gene_map(adata, tables.get("attention_by_gene")))
