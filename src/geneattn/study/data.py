"""Stages ``data`` (load or simulate the cells, select the classes) and ``qc`` (QC, UMAP, DE)."""

from __future__ import annotations

import logging

import pandas as pd
from anndata import AnnData

from .. import _keys as K
from ..errors import InputError
from ._stage import StageContext, stage

logger = logging.getLogger(__name__)

_DATA_READS = ("dataset", "data", "perturbation", "label_key", "classes", "groups", "min_cells_per_class",
               "seed", "cells_per_dose", "model")  # fmt: skip


def _builtin_classes(full: AnnData, min_cells: int) -> list[str]:
    """A built-in dataset's classes with enough cells; says which are dropped."""
    counts = full.obs[K.LABEL].value_counts()
    dropped = {str(c): int(counts[c]) for c in counts.index if counts[c] < min_cells}
    if dropped:
        logger.info("dropped classes with < %d cells: %s", min_cells, dropped)
    return [str(c) for c in counts.index if counts[c] >= min_cells]


def _load(ctx: StageContext) -> tuple[AnnData, AnnData | None]:
    """The study's cells and the pretraining corpus (None when no model is pretrained here)."""
    from .. import io

    cfg = ctx.config
    if cfg.source == "nutlin-sim":
        from ..datasets import nutlin_sim

        full = nutlin_sim(seed=cfg.seed, cells_per_dose=cfg.cells_per_dose)
        study = io.canonicalize(full, classes=cfg.classes, groups=cfg.groups,
                                min_cells_per_class=cfg.min_cells_per_class)  # fmt: skip
        return study, full  # pretrain on every dose's cells, as Geneformer is pretrained on a broad corpus
    if cfg.source == "pbmc68k":
        from ..datasets import pbmc68k

        full = pbmc68k()
        classes = cfg.classes if cfg.classes is not None else _builtin_classes(full, cfg.min_cells_per_class)
        study = io.canonicalize(full, classes=classes, groups=cfg.groups,
                                min_cells_per_class=cfg.min_cells_per_class)  # fmt: skip
        return study, (full if study.n_obs != full.n_obs else None)
    kw = {"perturbation": cfg.perturbation, "label_key": cfg.label_key}
    study = io.load(cfg.data, classes=cfg.classes, groups=cfg.groups,
                    min_cells_per_class=cfg.min_cells_per_class, **kw)  # fmt: skip
    corpus = None
    if cfg.classes is not None and cfg.model is None:
        corpus = io.load(cfg.data, classes=None, groups=None, min_cells_per_class=1, **kw)
    return study, corpus


@stage("data", reads=_DATA_READS, outputs=("data/study.h5ad",))
def data(ctx: StageContext) -> str:
    """Load the dataset and select the classes: ``data/study.h5ad`` (+ ``data/corpus.h5ad``)."""
    study, corpus = _load(ctx)
    labels = study.obs[K.LABEL]
    if labels.nunique() < 2:
        msg = (
            f"the study needs at least two classes to tell apart, found {labels.nunique()} "
            f"({', '.join(map(str, labels.unique()))}) in {ctx.config.label_key!r}; choose another label column or classes"
        )
        raise InputError(msg)
    res = ctx.results
    res.write_h5ad(res.study_h5ad, study)
    if corpus is not None and ctx.config.model is None:
        res.write_h5ad(res.corpus_h5ad, corpus)
    else:
        res.corpus_h5ad.unlink(missing_ok=True)
    counts = labels.value_counts(sort=False)
    return f"{study.n_obs} cells x {study.n_vars} genes; classes " + ", ".join(
        f"{k} ({v})" for k, v in counts.items()
    )


@stage(
    "qc", deps=("data",), reads=("seed",), outputs=("cells.h5ad", "tables/de.parquet", "tables/umap.parquet")
)
def qc(ctx: StageContext) -> str:
    """QC, log-normalisation, UMAP and Wilcoxon DE: ``cells.h5ad``, ``tables/{de,umap}.parquet``."""
    import anndata as ad

    from ..stats import de as de_mod

    res = ctx.results
    adata = ad.read_h5ad(res.study_h5ad)
    de = de_mod.study_de(adata)
    de_mod.umap(adata, seed=ctx.config.seed)
    xy = adata.obsm["X_umap"]
    umap = pd.DataFrame({"cell_id": adata.obs_names.astype(str), "umap1": xy[:, 0], "umap2": xy[:, 1],
                         "label": adata.obs[K.LABEL].astype(str).to_numpy(),
                         "n_genes": adata.obs[K.N_GENES].to_numpy()})  # fmt: skip
    ctx.write_table("de", de)
    ctx.write_table("umap", umap)
    res.write_h5ad(res.cells, adata)
    n_sig = int((de[de["method"] == "wilcoxon"]["pval_adj"] < 0.05).sum())
    return f"UMAP of {adata.n_obs} cells; {n_sig} (gene, class) Wilcoxon tests with adjusted p < 0.05 (cells as units)"
