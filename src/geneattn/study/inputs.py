"""`StudyInputs`: what the statistics of a study read from its results directory, read once."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import ENSEMBL_ID, LABEL, N_GENES, PLANTED, WELL
from .._results import Results
from ..attention.store import TokenStore, token_store_path
from ..stats.adjust import TokenLayout, adjusted_gene_scores
from ..stats.baselines import gene_covariates
from ..stats.confounds import gene_scores
from ..stats.incremental import expression_strata
from ..stats.wells import WELL_CONFOUND_COLUMNS, well_confound

__all__ = ["StudyInputs", "load_inputs", "gene_map_of"]


@dataclasses.dataclass
class StudyInputs:
    """The study's cells (``data/qc.h5ad``), the attention tables and the per-token stores of one results directory.

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

    @functools.cached_property
    def covariates(self) -> pd.DataFrame:
        """Gene-level covariates of the study's counts (`geneattn.stats.baselines.gene_covariates`)."""
        return gene_covariates(self.adata)

    @property
    def strata(self) -> pd.Series:
        """Expression stratum per gene: the simulation's ``var["stratum"]``, else deciles of log mean."""
        if "stratum" in self.adata.var:
            return self.adata.var["stratum"].astype(str)
        return expression_strata(self.covariates["log_mean"])

    def n_genes(self, store: TokenStore) -> np.ndarray | None:
        """Genes expressed per cell before truncation (``obs["n_genes"]``), in the store's cell order.

        None when ``obs`` has no ``n_genes`` or the store's cells are not all in ``obs``.
        """
        col = self.cell_obs(store, N_GENES)
        return None if col is None else col.astype(np.float64)

    def expressed(self, store: TokenStore, genes: Sequence[str]) -> dict[str, np.ndarray]:
        """Per gene of ``genes`` in ``var_names``: whether each of the store's cells expresses it (count > 0)."""
        ids = pd.Index(np.asarray(store.cell_ids).astype(str))
        rows = pd.Index(self.adata.obs_names.astype(str)).get_indexer(ids)
        genes = [g for g in genes if g in self.adata.var_names]
        if not genes or (rows < 0).any():
            return {}
        x = self.adata[:, genes].X
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        return {g: x[rows, j] > 0 for j, g in enumerate(genes)}

    def adjusted_scores(self, model: str) -> pd.Series:
        """Per gene: head-mean log fold adjusted within wells for genes expressed before truncation.

        The length is ``obs["n_genes"]`` (`geneattn.stats.adjust`), the token count only when the
        study AnnData has none.
        """
        store = self.stores[model]
        wells = self.cell_obs(store, WELL)
        wells = wells if wells is not None else np.asarray(store.cell_ids).astype(str)
        n_genes = self.n_genes(store)
        lengths = n_genes if n_genes is not None else store.lengths
        layout = TokenLayout(store.token_ids, store.cell_of_token, lengths, wells)
        values = np.asarray(store.logfold, dtype=np.float64).reshape(len(store.token_ids), -1).mean(1)
        g = adjusted_gene_scores(values, layout)
        return pd.Series(
            g["adjusted"].to_numpy(), index=g["token_id"].map(self.gene_map).fillna(g["token_id"].astype(str))
        )

    def well_confounds(self) -> pd.DataFrame:
        """Per model: PC1 of well-level attention vs well median ``n_genes`` and dose (`geneattn.stats.wells`).

        Empty without wells, labels or ``n_genes``.
        """
        parts = []
        for model, store in self.stores.items():
            wells, labels, n_genes = (
                self.cell_obs(store, WELL),
                self.cell_obs(store, LABEL),
                self.n_genes(store),
            )
            if wells is None or labels is None or n_genes is None:
                continue
            layout = TokenLayout(store.token_ids, store.cell_of_token, n_genes, wells)
            values = np.asarray(store.logfold, dtype=np.float64).reshape(len(store.token_ids), -1).mean(1)
            parts.append(well_confound(values, layout, labels, model=model))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=WELL_CONFOUND_COLUMNS)

    @property
    def attention_seconds_per_cell(self) -> float:
        """Seconds per cell and model of the attention stage (from its params and the manifest)."""
        res = self.results
        params = res.read_json_or_empty(res.attention_params)
        manifest = res.read_json(res.manifest) if res.manifest.is_file() else {}
        seconds = (manifest.get("stages", {}).get("attention") or {}).get("seconds")
        n = params.get("n_cells")
        return float(seconds) / float(n) / max(1, len(self.stores)) if seconds and n else float("nan")

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


def gene_map_of(adata: AnnData, abg: pd.DataFrame | None) -> pd.Series:
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
    """Read ``data/qc.h5ad``, the attention tables and the token stores of ``results``."""
    adata = results.read_qc()
    att = results.attention
    tables = {p.stem: pd.read_parquet(p) for p in sorted(att.glob("*.parquet"))} if att.is_dir() else {}
    names = [
        p.name.removeprefix("token_logfold_").removesuffix(".npy")
        for p in sorted(att.glob("token_logfold_*.npy"))
    ]
    stores = {n: TokenStore.load(att, n) for n in names if token_store_path(att, n).is_file()}
    return StudyInputs(results, adata, stores, tables, gene_map_of(adata, tables.get("attention_by_gene")))
