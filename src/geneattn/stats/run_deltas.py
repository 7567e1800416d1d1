"""Each training run's change of attention against the pretrained model: the inputs of the run-level null.

All runs (the study's fine-tune, fine-tunes with other seeds, fine-tunes on labels permuted between
wells) and the pretrained model are extracted together on one fixed set of held-out cells, so every
difference below is between networks on identical tokens. One value per run and unit; the units:

* **genes** — by default the largest change over the layers' heads of the gene's mean log fold,
  ``max_h mean_c [lf_run,h(c, g) − lf_pt,h(c, g)]``, over the held-out cells expressing ``g`` (at
  least ``min_cells``; ``lf = log(n_c · a)``); other statistics in `gene_deltas`. Chosen on the
  positive control (``docs/positive-control.md``): the head mean of the log fold, the former
  statistic, hid a gene that one head turned to;
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

__all__ = ["gene_deltas", "head_deltas", "bin_deltas", "gene_means", "RANK_EDGES", "STATISTICS", "run_deltas"]

#: rank-position bin edges of the rank-bin family (log-spaced; the last edge is the longest cell)
RANK_EDGES = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2048, 4096)


#: per-gene statistics of `gene_deltas` (see `gene_means`)
STATISTICS = ("log_mean_fold", "mean_log_fold", "max_head", "per_head")


def _head_mean(store: TokenStore) -> np.ndarray:
    """``[n_tokens]`` log fold averaged over layers and heads."""
    return np.asarray(store.logfold, dtype=np.float64).reshape(len(store.token_ids), -1).mean(1)


def _log_mean_fold(store: TokenStore) -> np.ndarray:
    """``[n_tokens]`` log of the fold averaged over layers and heads: ``log mean_h exp(lf_h)``."""
    lf = np.asarray(store.logfold, dtype=np.float64).reshape(len(store.token_ids), -1)
    top = lf.max(1, keepdims=True)  # stable log-mean-exp
    return top[:, 0] + np.log(np.exp(lf - top).mean(1))


def _per_head(store: TokenStore) -> np.ndarray:
    """``[n_tokens, n_layers · n_heads]`` log fold of every head."""
    return np.asarray(store.logfold, dtype=np.float64).reshape(len(store.token_ids), -1)


def _gene_head_means(store: TokenStore, *, min_cells: int) -> pd.DataFrame:
    """Mean log fold per token id (rows, genes in >= ``min_cells`` cells) and head (``"L{l}H{h}"``)."""
    tok = np.asarray(store.token_ids)
    n = np.bincount(tok)
    keep = np.flatnonzero(n >= min_cells)
    lf = _per_head(store)
    sums = np.stack(
        [np.bincount(tok, weights=lf[:, j], minlength=len(n))[keep] for j in range(lf.shape[1])], 1
    )
    cols = [f"L{la}H{h}" for la in range(store.n_layers) for h in range(store.n_heads)]
    return pd.DataFrame(sums / n[keep, None], index=pd.Index(keep, name="token_id"), columns=cols)


def _check_same(ref: TokenStore, run: TokenStore) -> None:
    if not ref.same_cells(run):
        msg = "the runs and the pretrained model must be extracted on the same cells, in the same order"
        raise InputError(msg)


def gene_means(store: TokenStore, *, min_cells: int = 10, statistic: str = "mean_log_fold") -> pd.Series:
    """Per token id, mean over the cells expressing it (genes in >= ``min_cells`` cells) of one value per token.

    ``"mean_log_fold"``: the log fold averaged over layers and heads; ``"log_mean_fold"``: the log of
    the fold averaged over layers and heads. (The per-head statistics use `_gene_head_means`.)
    """
    values = {"mean_log_fold": _head_mean, "log_mean_fold": _log_mean_fold}[statistic](store)
    tok = np.asarray(store.token_ids)
    n = np.bincount(tok)
    s = np.bincount(tok, weights=values, minlength=len(n))
    keep = np.flatnonzero(n >= min_cells)
    return pd.Series(s[keep] / n[keep], index=pd.Index(keep, name="token_id"))


def gene_deltas(
    ref: TokenStore, run: TokenStore, *, min_cells: int = 10, statistic: str = "max_head"
) -> pd.Series:
    """Per token id (per ``"<token id>|L{l}H{h}"`` for ``"per_head"``): the run's change of attention.

    ``statistic``, each a mean over the held-out cells expressing the gene of ``run − ref``:

    * ``"max_head"`` (default): the largest per-head change ``max_h (mean_c lf_run,h − mean_c lf_ref,h)``:
      a model that reads a gene turns one or a few heads to it (the positive control,
      ``docs/positive-control.md``: the only statistic that separated every learned run from every
      permuted one under both recipes measured);
    * ``"log_mean_fold"``: ``log mean_h fold_h`` (the log of the arithmetic mean fold over the heads);
    * ``"mean_log_fold"``: ``mean_h log fold_h`` (geometric mean over heads; the former default),
      which averages a few heads' large change away;
    * ``"per_head"``: every (gene, head) change as its own unit (24x the units of the family).
    """
    _check_same(ref, run)
    if statistic not in STATISTICS:
        msg = f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}"
        raise InputError(msg)
    if statistic in ("mean_log_fold", "log_mean_fold"):
        return gene_means(run, min_cells=min_cells, statistic=statistic) - gene_means(
            ref, min_cells=min_cells, statistic=statistic
        )
    d = _gene_head_means(run, min_cells=min_cells) - _gene_head_means(ref, min_cells=min_cells)
    if statistic == "max_head":
        return d.max(axis=1)
    long = d.stack()
    long.index = pd.Index([f"{t}|{h}" for t, h in long.index], name="token_id")
    return long


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


def _gene_name(unit: object, gene_map: Mapping[int, str] | pd.Series) -> str:
    """``unit`` (a token id, or ``"<token id>|L{l}H{h}"``) with the token id replaced by its symbol."""
    tok, _, head = str(unit).partition("|")
    name = gene_map.get(int(tok)) if tok.isdigit() else None
    name = tok if name is None or (isinstance(name, float) and np.isnan(name)) else str(name)
    return f"{name}|{head}" if head else name


def run_deltas(
    ref: TokenStore,
    runs: Mapping[str, TokenStore],
    kinds: Mapping[str, str],
    *,
    cell_head: pd.DataFrame,
    ref_name: str,
    gene_map: Mapping[int, str] | pd.Series | None = None,
    min_cells: int = 10,
    statistic: str = "max_head",
) -> pd.DataFrame:
    """The long table ``family, run, kind, unit, value, n_cells`` of every run's change (genes, heads, rank bins).

    ``kinds`` gives ``"real"`` or ``"permuted"`` per run; genes are named through ``gene_map``
    (token id -> symbol) where given; ``statistic`` is the genes' (`gene_deltas`). ``n_cells``: the
    held-out cells a gene is seen in (the same in every run; the covariate of the gene family's
    variance trend), NaN for heads and rank bins.
    """
    seen = np.bincount(np.asarray(ref.token_ids))
    parts = []
    for name, store in runs.items():
        g = gene_deltas(ref, store, min_cells=min_cells, statistic=statistic)
        n_cells = seen[[int(str(u).partition("|")[0]) for u in g.index]]
        if gene_map is not None:
            g.index = pd.Index([_gene_name(u, gene_map) for u in g.index])
        for family, s, n in (("genes", g, n_cells), ("heads", head_deltas(cell_head, ref=ref_name, run=name), np.nan),
                             ("rank_bins", bin_deltas(ref, store), np.nan)):  # fmt: skip
            parts.append(pd.DataFrame({"family": family, "run": name, "kind": kinds[name], "unit": s.index.astype(str),
                                       "value": s.to_numpy(dtype=float), "n_cells": n}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)
