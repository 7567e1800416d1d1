"""Stages ``data`` (load or simulate the cells, select the classes) and ``qc`` (QC, UMAP, DE)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys as K
from ..errors import InputError
from ._stage import StageContext, stage
from .preflight import check_study

logger = logging.getLogger(__name__)

_DATA_READS = ("dataset", "data", "layer", "perturbation", "label_key", "classes", "groups", "min_cells_per_class",
               "seed", "cells_per_dose", "model", "dictionaries", "checkpoint", "permute_labels",
               "max_cells_per_class")  # fmt: skip


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
    kw = {"perturbation": cfg.perturbation, "label_key": cfg.label_key, "layer": cfg.layer}
    study = io.load(cfg.data, classes=cfg.classes, groups=cfg.groups,
                    min_cells_per_class=cfg.min_cells_per_class, **kw)  # fmt: skip
    corpus = None
    if cfg.classes is not None and cfg.model is None:
        corpus = io.load(cfg.data, classes=None, groups=None, min_cells_per_class=1, **kw)
    return study, corpus


def subsample_within_wells(adata: AnnData, max_cells: int, *, seed: int) -> AnnData:
    """At most ``max_cells`` cells per class, drawn evenly within each of its wells (every well kept).

    Without wells (nor replicates), cells are drawn at random within each class.
    """
    obs = adata.obs
    unit_key = next((k for k in (K.WELL, K.REPLICATE) if k in obs), None)
    units = obs[unit_key].astype(str) if unit_key else pd.Series("all", index=obs.index)
    rng = np.random.default_rng(seed)
    keep = np.zeros(adata.n_obs, dtype=bool)
    labels = obs[K.LABEL].astype(str).to_numpy()
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        share = min(1.0, max_cells / len(idx))
        for _, where in pd.Series(idx).groupby(units.to_numpy()[idx]):
            n = max(1, round(share * len(where)))
            keep[rng.choice(where.to_numpy(), size=min(n, len(where)), replace=False)] = True
    out = adata[keep].copy()
    out.uns["subsample"] = {"params": {"max_cells_per_class": max_cells, "unit": unit_key or "cell", "seed": seed,
                                       "n_cells_before": int(adata.n_obs), "n_cells_after": int(out.n_obs)}}  # fmt: skip
    return out


def permute_between_wells(study: AnnData, groups: str | None, *, seed: int) -> AnnData:
    """A null study: each well keeps its cells and takes another well's label (``group`` follows).

    The permutation is restricted so that the new labels carry no information about the true classes
    and groups (`geneattn.models.permute_labels`). Without wells (nor replicates) labels are permuted
    between cells.
    """
    from ..io import parse_groups
    from ..models.splits import permute_labels

    obs = study.obs
    unit_key = next((k for k in (K.WELL, K.REPLICATE) if k in obs), None)
    units = obs[unit_key].astype(str).to_numpy() if unit_key else obs.index.astype(str).to_numpy()
    to_group = {m: g for g, members in parse_groups(groups).items() for m in members} if groups else None
    labels = permute_labels(obs[K.LABEL].astype(str).to_numpy(), units, seed=seed, to_group=to_group)
    out = study.copy()
    out.obs[K.LABEL] = pd.Categorical(labels, categories=obs[K.LABEL].cat.categories)
    if to_group:
        out.obs[K.GROUP] = pd.Categorical(
            [to_group.get(v) for v in labels], categories=list(parse_groups(groups))
        )
    out.uns["permuted_labels"] = {"params": {"unit": unit_key or "cell", "seed": seed, "balanced": True}}
    return out


@stage("data", reads=_DATA_READS, outputs=("data/study.h5ad",))
def data(ctx: StageContext) -> str:
    """Load the dataset and select the classes: ``data/study.h5ad`` (+ ``data/corpus.h5ad``)."""
    study, corpus = _load(ctx)
    if ctx.config.max_cells_per_class is not None:
        n0 = study.n_obs
        study = subsample_within_wells(study, ctx.config.max_cells_per_class, seed=ctx.config.seed)
        corpus = None if corpus is None else subsample_within_wells(corpus, ctx.config.max_cells_per_class,
                                                                    seed=ctx.config.seed + 1)  # fmt: skip
        logger.info("subsampled %d -> %d cells (at most %d per class, every well kept)", n0, study.n_obs,
                    ctx.config.max_cells_per_class)  # fmt: skip
    if ctx.config.permute_labels:
        study = permute_between_wells(study, ctx.config.groups, seed=ctx.config.seed + 104729)
        logger.warning("null study: labels permuted between wells; no model should learn them")
    labels = study.obs[K.LABEL]
    if labels.nunique() < 2:
        msg = (
            f"the study needs at least two classes to tell apart, found {labels.nunique()} "
            f"({', '.join(map(str, labels.unique()))}) in {ctx.config.label_key!r}; choose another label column or classes"
        )
        raise InputError(msg)
    check_study(study, ctx.config)  # what later stages need, before the first write
    res = ctx.results
    res.write_h5ad(res.study_h5ad, study)
    if corpus is not None and ctx.config.model is None and ctx.config.builtin is None:
        res.write_h5ad(res.corpus_h5ad, corpus)
    else:
        res.corpus_h5ad.unlink(missing_ok=True)
    counts = labels.value_counts(sort=False)
    return f"{study.n_obs} cells x {study.n_vars} genes; classes " + ", ".join(
        f"{k} ({v})" for k, v in counts.items()
    )


@stage(
    "qc",
    deps=("data",),
    reads=("seed",),
    outputs=("data/qc.h5ad", "tables/de.parquet", "tables/umap.parquet"),
)
def qc(ctx: StageContext) -> str:
    """QC, log-normalisation, UMAP and Wilcoxon DE: ``data/qc.h5ad``, ``tables/{de,umap}.parquet``."""
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
    res.write_h5ad(res.qc_h5ad, adata)
    n_sig = int((de[de["method"] == "wilcoxon"]["pval_adj"] < 0.05).sum())
    return f"UMAP of {adata.n_obs} cells; {n_sig} (gene, class) Wilcoxon tests with adjusted p < 0.05 (cells as units)"
