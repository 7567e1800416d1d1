"""`attention_change`: where fine-tuning moved attention, per head x rank bin and per gene."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._results import OTHER, REF
from . import _prepare

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

__all__ = ["attention_change"]

logger = logging.getLogger(__name__)


def attention_change(
    adata: AnnData,
    pretrained: str | os.PathLike[str],
    finetuned: str | os.PathLike[str],
    *,
    groupby: str | None = None,
    dictionaries: str | os.PathLike[str] | None = None,
    bins: int | Sequence[int] = 25,
    metrics: Sequence[str] = ("fold", "norm"),
    layer: str | None = None,
    model_input_size: int | None = None,
    batch_size: int = 16,
    device: str | None = None,
    out: str | os.PathLike[str] | None = None,
    key_added: str = "attention_change",
    copy: bool = False,
) -> AnnData | None:
    """Percentage change ``100 * (finetuned / pretrained - 1)`` of attention, by head x rank bin and by gene.

    Both models run over the same tokens (the pretrained model's tokenizer settings, same order and
    batches); the comparison is `geneattn.attention.compare`. These are descriptive numbers over the
    cells: whether a change exceeds what fine-tuning on permuted labels gives needs the run-level null
    of ``geneattn run``.

    Parameters
    ----------
    adata
        Raw counts (``X``, or ``layer``).
    pretrained
        The pretrained model (a shipped checkpoint's name or path, a model of ours, or a Geneformer
        checkpoint with ``dictionaries``); its tokenizer is used.
    finetuned
        The fine-tuned classifier (e.g. `geneattn.tl.finetune`'s ``model_dir``).
    groupby
        ``obs`` column: the head x bin change also per class.
    dictionaries
        Geneformer's dictionaries for a Geneformer checkpoint.
    bins
        Rank-position bins: a width or explicit edges.
    metrics
        Any of ``fold``, ``norm``, ``recv``, ``logfold``.
    layer, model_input_size, batch_size, device
        As in `geneattn.tl.gene_attention`.
    out
        Also keep the extraction there; None writes nothing.
    key_added
        Where the results go (below).
    copy
        Annotate a copy and return it.

    Returns
    -------
    None, or the annotated copy when ``copy``. Sets:

    - ``adata.uns[key_added]["head_change"]``: tidy ``group, layer, head, bin_start, bin_end, metric,
      n_tokens, ref_mean, other_mean, pct_change`` (group ``"__all__"``: all cells);
    - ``adata.varm[key_added]``: genes x ``"<metric>_L{l}H{h}"`` percentage change over all cells, column
      names in ``adata.uns[key_added]["columns"]``;
    - ``adata.var[f"{key_added}_<metric>"]``: per gene ``100 * (mean finetuned / mean pretrained - 1)``
      with means over layers and heads;
    - ``adata.uns[key_added]["params"]``: both models, tokenizer settings, bins, groupby, cells.

    Read back with `geneattn.get.attention_change`.
    """
    from ..attention import compare, extract
    from ..models import resolve_checkpoint, token_settings

    adata = adata.copy() if copy else adata
    _prepare.check_groupby(adata, groupby)
    ts = token_settings(pretrained, dictionaries=dictionaries, model_input_size=model_input_size)
    ds = _prepare.tokens(adata, ts, obs_keys=[groupby], layer=layer)
    ft = resolve_checkpoint(finetuned)
    result = extract({REF: ts.path, OTHER: ft}, ds, ts.vocab, out=out, batch_size=batch_size,
                     label_key=groupby, device=device, store_tokens=False)  # fmt: skip
    labels = ["__all__", *_groups(result.tables["attention_by_gene"])]
    tables = {
        g: compare(result, reference=REF, other=OTHER, bins=bins, label=g, metrics=metrics) for g in labels
    }
    head = pd.concat([t["head_change"].assign(group=g) for g, t in tables.items()], ignore_index=True)
    head = head[["group", *(c for c in head.columns if c != "group")]]
    _write_genes(adata, tables["__all__"]["gene_change"], key_added)
    adata.uns[key_added]["head_change"] = head
    adata.uns[key_added]["params"] = _prepare.params(
        ts, pretrained=str(ts.path), finetuned=str(ft), groupby=groupby, metrics=list(metrics),
        bins=bins if isinstance(bins, int) else list(bins), batch_size=int(batch_size),
        n_cells=int(result.params.get("n_cells", len(ds))),
    )  # fmt: skip
    logger.info("added uns[%r] (head_change), varm[%r] and var[%r_*]", key_added, key_added, key_added)
    return adata if copy else None


def _groups(abg: pd.DataFrame) -> list[str]:
    from .._classes import sort_classes

    return sort_classes(g for g in abg["label"].astype(str).unique() if g != "__all__")


def _write_genes(adata: AnnData, gene_change: pd.DataFrame, key_added: str) -> None:
    """Per gene and head percentage change into ``varm``; per gene over heads into ``var``."""
    from ..attention.result import gene_matrix

    mat = gene_matrix(adata, gene_change, value="pct_change", by="metric")
    adata.varm[key_added] = mat.to_numpy(dtype=np.float64)
    key = "ensembl_id" if "ensembl_id" in adata.var.columns else "gene"
    ids = adata.var[key].astype(str) if key == "ensembl_id" else adata.var_names.astype(str)
    means = gene_change.groupby(["metric", key], observed=True)[["ref_mean", "other_mean"]].mean()
    for metric in gene_change["metric"].unique():
        m = means.loc[metric].reindex(ids.to_numpy())
        adata.var[f"{key_added}_{metric}"] = (100 * (m["other_mean"] / m["ref_mean"] - 1)).to_numpy()
    adata.uns[key_added] = {"columns": np.asarray(list(mat.columns), dtype=str)}
