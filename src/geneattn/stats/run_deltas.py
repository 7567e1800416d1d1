"""Each training run's change of attention against the pretrained model: the inputs of the run-level null.

All runs (the study's fine-tune, fine-tunes with other seeds, fine-tunes on labels permuted between
wells) and the pretrained model are extracted together on one fixed set of held-out cells, so every
difference below is between networks on identical tokens. One value per run and unit; the units:

* **genes** — ``mean_c [lf_run(c, g) − lf_pt(c, g)]`` over held-out cells expressing ``g`` (at least
  ``min_cells``), in the head mean of the log fold (``lf = log(n_c · a)``, averaged over layers and heads);
* **heads** — ``mean_c [log head_out_run(c) − log head_out_pt(c)]`` per layer and head (the norm of
  the head's output, Kobayashi et al. 2020), over cells;
* **rank bins** — ``log(mean fold_run / mean fold_pt)`` over the tokens at rank positions in a bin.

`geneattn.stats.nulls.task_attributable` then compares the real-label runs with the permuted ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..attention.store import TokenStore
from ..errors import InputError

__all__ = ["gene_deltas", "head_deltas", "bin_deltas", "gene_means", "RANK_EDGES", "run_deltas"]

#: rank-position bin edges of the rank-bin family (log-spaced; the last edge is the longest cell)
RANK_EDGES = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2048, 4096)


def _head_mean(store: TokenStore) -> np.ndarray:
    """``[n_tokens]`` log fold averaged over layers and heads."""
    return np.asarray(store.logfold, dtype=np.float64).reshape(len(store.token_ids), -1).mean(1)


def _check_same(ref: TokenStore, run: TokenStore) -> None:
    if not ref.same_cells(run):
        msg = "the runs and the pretrained model must be extracted on the same cells, in the same order"
        raise InputError(msg)


def gene_means(store: TokenStore, *, min_cells: int = 10) -> pd.Series:
    """Mean head-mean log fold per token id over the cells expressing it (genes in >= ``min_cells`` cells)."""
    tok = np.asarray(store.token_ids)
    n = np.bincount(tok)
    s = np.bincount(tok, weights=_head_mean(store), minlength=len(n))
    keep = np.flatnonzero(n >= min_cells)
    return pd.Series(s[keep] / n[keep], index=pd.Index(keep, name="token_id"))


def gene_deltas(ref: TokenStore, run: TokenStore, *, min_cells: int = 10) -> pd.Series:
    """Per token id: the run's mean change of head-mean log fold over the cells expressing the gene."""
    _check_same(ref, run)
    return gene_means(run, min_cells=min_cells) - gene_means(ref, min_cells=min_cells)


def head_deltas(cell_head: pd.DataFrame, *, ref: str, run: str) -> pd.Series:
    """Per ``"L{layer}H{head}"``: mean over cells of ``log head_out_run − log head_out_ref``."""
    ch = cell_head[cell_head["model"].astype(str).isin([ref, run])]
    wide = ch.pivot_table(
        index=["cell_id", "layer", "head"], columns="model", values="head_out", aggfunc="first", observed=True
    )
    if ref not in wide or run not in wide:
        msg = f"cell_head has no rows for model {ref!r} or {run!r}"
        raise InputError(msg)
    d = (np.log(wide[run]) - np.log(wide[ref])).groupby(level=["layer", "head"]).mean()
    d.index = [f"L{int(la)}H{int(h)}" for la, h in d.index]
    return d


def bin_deltas(ref: TokenStore, run: TokenStore, *, edges: Sequence[int] = RANK_EDGES) -> pd.Series:
    """Per rank-position bin ``"lo-hi"``: ``log(mean fold_run / mean fold_ref)`` over its tokens."""
    _check_same(ref, run)
    pos = ref.positions
    e = [x for x in edges if x < int(pos.max()) + 1] + [int(pos.max()) + 1]
    e = np.unique(e)
    b = np.searchsorted(e, pos, side="right") - 1
    fold = [np.bincount(b, weights=np.exp(_head_mean(s)), minlength=len(e) - 1) for s in (ref, run)]
    out = np.log(fold[1] / fold[0])
    return pd.Series(out, index=[f"{lo}-{hi - 1}" for lo, hi in zip(e[:-1], e[1:], strict=True)])


def run_deltas(
    ref: TokenStore,
    runs: Mapping[str, TokenStore],
    kinds: Mapping[str, str],
    *,
    cell_head: pd.DataFrame,
    ref_name: str,
    gene_map: Mapping[int, str] | pd.Series | None = None,
    min_cells: int = 10,
) -> pd.DataFrame:
    """The long table ``family, run, kind, unit, value`` of every run's change (genes, heads, rank bins).

    ``kinds`` gives ``"real"`` or ``"permuted"`` per run; genes are named through ``gene_map``
    (token id -> symbol) where given.
    """
    parts = []
    for name, store in runs.items():
        g = gene_deltas(ref, store, min_cells=min_cells)
        if gene_map is not None:
            g.index = pd.Index(
                pd.Series(g.index).map(gene_map).fillna(pd.Series(g.index).astype(str)).astype(str)
            )
        for family, s in (("genes", g), ("heads", head_deltas(cell_head, ref=ref_name, run=name)),
                          ("rank_bins", bin_deltas(ref, store))):  # fmt: skip
            parts.append(pd.DataFrame({"family": family, "run": name, "kind": kinds[name],
                                       "unit": s.index.astype(str), "value": s.to_numpy(dtype=float)}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)
