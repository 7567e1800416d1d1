"""`gene_attention`: per-gene attention of one model over the cells of an AnnData (per class with groupby)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from . import _prepare

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from anndata import AnnData

    from ..attention import AttentionResult

__all__ = ["gene_attention", "write_groups"]

logger = logging.getLogger(__name__)


def gene_attention(
    adata: AnnData,
    model: str | os.PathLike[str],
    *,
    groupby: str | None = None,
    dictionaries: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    model_input_size: int | None = None,
    batch_size: int = 16,
    device: str | None = None,
    out: str | os.PathLike[str] | None = None,
    key_added: str = "gene_attention",
    copy: bool = False,
) -> AnnData | None:
    """Mean attention each gene receives from the model, per layer and head (per class with ``groupby``).

    Tokenizes the cells with the model's own settings (`geneattn.models.token_settings`), streams the
    attention statistics (`geneattn.attention.extract`, no attention matrix is kept) and records
    ``fold_mean``: a gene's attention received times the cell's length, averaged over the cells that
    express it (1 = a uniform share). Attention is descriptive; whether a change is real needs the
    control runs of ``geneattn run``.

    Parameters
    ----------
    adata
        Raw counts (``X``, or ``layer``) with ``var["ensembl_id"]`` (else ``var_names`` are matched).
    model
        A shipped checkpoint's name (``"mini-nutlin"``) or path, a model directory of ours (with
        ``vocab.json``), or a Geneformer checkpoint with ``dictionaries``.
    groupby
        ``obs`` column: also per class.
    dictionaries
        Geneformer's dictionaries for a Geneformer checkpoint.
    layer
        Layer with the raw counts (None: ``X``).
    model_input_size
        At most this many tokens per cell (None: the model's own).
    batch_size
        Cells per forward pass.
    device
        Torch device (None: `geneattn.settings`).
    out
        Also keep the extraction there (`geneattn.attention.AttentionResult` tables); None writes nothing.
    key_added
        Where the results go (below).
    copy
        Annotate a copy and return it.

    Returns
    -------
    None, or the annotated copy when ``copy``. Sets, with ``<model>`` the checkpoint's name:

    - ``adata.varm[key_added]``: genes x ``"<model>_L{l}H{h}"`` ``fold_mean`` over all cells (NaN:
      the gene never occurs), column names in ``adata.uns[key_added]["columns"]``;
    - ``adata.var[f"{key_added}_<model>"]``: its mean over layers and heads;
    - with ``groupby``: ``adata.varm[f"{key_added}_groups"]`` (genes x classes x columns), class names
      in ``adata.uns[key_added]["groups"]``, and ``adata.var[f"{key_added}_<model>_<class>"]``;
    - ``adata.uns[key_added]["params"]``: model, tokenizer settings, groupby, batch size, cells.

    Read back with `geneattn.get.gene_attention`.
    """
    from ..attention import extract
    from ..attention import gene_attention as write
    from ..models import token_settings

    adata = adata.copy() if copy else adata
    _prepare.check_groupby(adata, groupby)
    ts = token_settings(model, dictionaries=dictionaries, model_input_size=model_input_size)
    ds = _prepare.tokens(adata, ts, obs_keys=[groupby], layer=layer)
    name = _prepare.model_name(model)
    result = extract({name: ts.path}, ds, ts.vocab, out=out, batch_size=batch_size, label_key=groupby,
                     device=device, store_tokens=False)  # fmt: skip
    write(adata, result, key_added=key_added)  # the study's writer (cells.h5ad): the same values
    if groupby is not None:
        write_groups(adata, result, key_added=key_added)
    adata.uns[key_added]["params"] = _prepare.params(
        ts, **adata.uns[key_added]["params"], groupby=groupby, name=name
    )
    logger.info("added varm[%r], var[%r] and uns[%r]", key_added, f"{key_added}_{name}", key_added)
    return adata if copy else None


def write_groups(adata: AnnData, result: AttentionResult, *, key_added: str) -> list[str]:
    """Per-class ``fold_mean`` into ``varm[f"{key_added}_groups"]`` and ``var`` (after `gene_attention`).

    Returns the classes, in class order (`geneattn.models.sort_classes`).
    """
    from .._classes import sort_classes
    from ..attention.result import gene_matrix

    abg: pd.DataFrame = result.tables["attention_by_gene"]
    groups = sort_classes(g for g in abg["label"].astype(str).unique() if g != "__all__")
    columns = [str(c) for c in adata.uns[key_added]["columns"]]
    mats = [gene_matrix(adata, abg, g).reindex(columns=columns) for g in groups]
    adata.varm[f"{key_added}_groups"] = np.stack([m.to_numpy(dtype=np.float64) for m in mats], axis=1)
    for model in dict.fromkeys(c.rsplit("_L", 1)[0] for c in columns):
        cols = [c for c in columns if c.rsplit("_L", 1)[0] == model]
        for g, m in zip(groups, mats, strict=True):
            adata.var[f"{key_added}_{model}_{g}"] = m[cols].mean(axis=1, skipna=False).to_numpy()
    adata.uns[key_added]["groups"] = np.asarray(groups, dtype=str)
    return groups
