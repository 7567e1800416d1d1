"""The sequence-length and rank-position confound of attention, and its mitigations (methods §7.1–7.2).

Attention received by a token, averaged over queries, is ``a = 1/n_c`` under uniform attention,
so raw attention per gene scales with ``1/n_c`` (the number of genes in the cell's input). The
confound checks (`length_dependence`) correlate scores with the genes a cell expresses *before* the
input is cut to the model's size (``obs["n_genes"]``), since the token count is capped.
Mitigations:

* ``fold = n_c · a`` (uniform attention → 1): length-normalised attention;
* ``residual = log fold − E(rank, length bin)``: position-matched residual, where ``E`` is the
  mean log fold of all tokens at that rank position in cells of that length bin (Geneformer V1:
  position == expression rank). The gene score is ``S(g) = mean_c residual(c, g)`` over the
  cells expressing ``g``.

Everything here reads the attention engine's token store (``token_logfold_<model>.npy``
``[n_tokens, n_layers, n_heads]`` + ``token_index.npz``), which gives exact per-token values.
Layer and head columns of the tables are strings so that ``"mean"`` (average over heads of a
layer, or over all layers and heads) fits beside the indices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..attention.store import TokenStore, length_bins
from ..errors import InputError
from .agreement import auprc, auroc, spearman, topk_overlap

__all__ = [
    "position_expectation",
    "position_residual",
    "gene_means",
    "iter_columns",
    "gene_scores",
    "residual_from_tables",
    "length_dependence",
    "confounds_table",
    "SCORE_TYPES",
    "CONFOUND_COLUMNS",
]

SCORE_TYPES = ("raw", "fold", "residual")
CONFOUND_COLUMNS = [
    "model",
    "layer",
    "head",
    "score_type",
    "n_genes",
    "length_variable",
    "spearman_vs_length",
    "loglength_slope",
    "spearman_vs_tokens",
    "spearman_vs_position",
    "cell_mean_raw_vs_tokens",
    "spearman_vs_mean_rank",
    "auroc_planted",
    "auprc_planted",
    "spearman_vs_de",
    "topk_overlap_de",
    "hypergeom_p",
    "top_genes",
]


def position_expectation(
    values: np.ndarray, positions: np.ndarray, bins: np.ndarray, *, n_bins: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per (position, length bin).

    Parameters
    ----------
    values
        ``[n_tokens]`` or ``[n_tokens, K]`` per-token values (e.g. log fold).
    positions
        ``[n_tokens]`` position within the cell.
    bins
        ``[n_tokens]`` length bin of the token's cell.

    Returns
    -------
    ``(E, n)``: ``E [n_pos, n_bins(, K)]`` means (NaN where empty) and ``n [n_pos, n_bins]`` counts.
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v = v[:, None] if squeeze else v
    n_pos = int(positions.max()) + 1 if len(positions) else 0
    nb = int(n_bins if n_bins is not None else (bins.max() + 1 if len(bins) else 0))
    key = positions.astype(np.int64) * nb + bins.astype(np.int64)
    n = np.bincount(key, minlength=n_pos * nb)
    sums = np.stack(
        [np.bincount(key, weights=v[:, k], minlength=n_pos * nb) for k in range(v.shape[1])], axis=-1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        e = sums / n[:, None]
    e = e.reshape(n_pos, nb, v.shape[1])
    return (e[..., 0] if squeeze else e), n.reshape(n_pos, nb)


def position_residual(values: np.ndarray, positions: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """``values − E(position, length bin)`` per token (same shape as ``values``)."""
    e, _ = position_expectation(values, positions, bins)
    return np.asarray(values, dtype=np.float64) - e[positions, bins]


def gene_means(values: np.ndarray, token_ids: np.ndarray) -> pd.DataFrame:
    """Mean, sd and count of per-token ``values`` (``[n_tokens]``) per token id (a gene appears once per cell)."""
    uniq, inv = np.unique(token_ids, return_inverse=True)
    v = np.asarray(values, dtype=np.float64)
    n = np.bincount(inv, minlength=len(uniq))
    s1 = np.bincount(inv, weights=v, minlength=len(uniq))
    s2 = np.bincount(inv, weights=v * v, minlength=len(uniq))
    mean = s1 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.maximum(s2 - n * mean**2, 0) / (n - 1))
    return pd.DataFrame({"token_id": uniq, "n_cells": n, "mean": mean, "sd": sd})


def iter_columns(store: TokenStore, *, mean_heads: bool = True) -> Iterator[tuple[str, str, np.ndarray]]:
    """Yield ``(layer, head, logfold[n_tokens])`` for each head (and head means).

    With ``mean_heads``: also head ``"mean"`` per layer and ``("mean", "mean")`` over all layers and heads.
    """
    lf = store.logfold
    for layer in range(store.n_layers):
        for head in range(store.n_heads):
            yield str(layer), str(head), np.asarray(lf[:, layer, head], dtype=np.float64)
        if mean_heads and store.n_heads > 1:
            yield str(layer), "mean", np.asarray(lf[:, layer, :], dtype=np.float64).mean(axis=1)
    if mean_heads and store.n_layers * store.n_heads > 1:
        yield "mean", "mean", np.asarray(lf, dtype=np.float64).reshape(len(lf), -1).mean(axis=1)


@dataclasses.dataclass
class _Index:
    """Per-store groupings computed once: (position, length bin) cells and genes."""

    pos: np.ndarray
    n_tok: np.ndarray  # n_c of each token's cell
    key: np.ndarray  # position * n_bins + bin
    key_n: np.ndarray
    gene_inv: np.ndarray
    genes: np.ndarray
    gene_n: np.ndarray

    @classmethod
    def build(cls, store: TokenStore, cell_bins: np.ndarray) -> _Index:
        pos = store.positions
        nb = int(cell_bins.max()) + 1 if len(cell_bins) else 1
        key = pos * nb + np.repeat(cell_bins, store.lengths)
        genes, inv = np.unique(store.token_ids, return_inverse=True)
        return cls(
            pos,
            np.repeat(store.lengths, store.lengths).astype(np.float64),
            key,
            np.bincount(key),
            inv,
            genes,
            np.bincount(inv, minlength=len(genes)),
        )

    def residual(self, v: np.ndarray) -> np.ndarray:
        return (
            v
            - (np.bincount(self.key, weights=v, minlength=len(self.key_n)) / np.maximum(self.key_n, 1))[
                self.key
            ]
        )

    def gene_mean(self, v: np.ndarray) -> np.ndarray:
        return np.bincount(self.gene_inv, weights=v, minlength=len(self.genes)) / self.gene_n

    def gene_sd(self, v: np.ndarray, mean: np.ndarray) -> np.ndarray:
        s2 = np.bincount(self.gene_inv, weights=v * v, minlength=len(self.genes))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.maximum(s2 - self.gene_n * mean**2, 0) / (self.gene_n - 1))


def _cell_bins(store: TokenStore, n_length_bins: int, cell_bins: np.ndarray | None) -> np.ndarray:
    if cell_bins is None:
        return length_bins(store.lengths, n_length_bins)
    return np.asarray(cell_bins, dtype=np.int64)


def _scores_for(lf: np.ndarray, ix: _Index) -> dict[str, np.ndarray]:
    fold = np.exp(lf)
    return {"raw": fold / ix.n_tok, "fold": fold, "logfold": lf, "residual": ix.residual(lf)}


def gene_scores(
    store: TokenStore,
    *,
    n_length_bins: int = 10,
    cell_bins: np.ndarray | None = None,
    gene_map: Mapping[int, str] | pd.Series | None = None,
    mean_heads: bool = True,
) -> pd.DataFrame:
    """Gene scores of every layer/head from a token store: raw, fold, log fold and residual.

    Parameters
    ----------
    store
        Token store of one model.
    n_length_bins
        Quantile bins of ``n_c`` for the position expectation (ignored with ``cell_bins``).
    cell_bins
        Explicit length bin per cell (to match another table's binning).
    gene_map
        token id → gene symbol (column ``gene``; token id as string when missing).
    mean_heads
        Add head ``"mean"`` rows (see `iter_columns`).

    Returns
    -------
    Long DataFrame: ``layer, head, token_id, gene, n_cells, mean_position, raw, fold, logfold,
    expected, residual, residual_sd`` where each score is the mean over the cells expressing the
    gene and ``residual = logfold − expected`` (exactly, per gene).
    """
    ix = _Index.build(store, _cell_bins(store, n_length_bins, cell_bins))
    base = pd.DataFrame({"token_id": ix.genes, "n_cells": ix.gene_n, "mean_position": ix.gene_mean(ix.pos)})
    out = []
    for layer, head, lf in iter_columns(store, mean_heads=mean_heads):
        sc = _scores_for(lf, ix)
        df = base.copy()
        for name in ("raw", "fold", "logfold"):
            df[name] = ix.gene_mean(sc[name])
        df["residual"] = ix.gene_mean(sc["residual"])
        df["residual_sd"] = ix.gene_sd(sc["residual"], df["residual"].to_numpy())
        df["expected"] = df["logfold"] - df["residual"]
        df.insert(0, "head", head)
        df.insert(0, "layer", layer)
        out.append(df)
    res_df = pd.concat(out, ignore_index=True)
    res_df.insert(3, "gene", _genes(res_df["token_id"], gene_map))
    return res_df


def _genes(token_ids: pd.Series, gene_map: Mapping[int, str] | pd.Series | None) -> np.ndarray:
    if gene_map is None:
        return token_ids.astype(str).to_numpy()
    m = pd.Series(gene_map) if not isinstance(gene_map, pd.Series) else gene_map
    m = m[~m.index.duplicated()]
    return token_ids.map(m).fillna(token_ids.astype(str)).astype(str).to_numpy()


def residual_from_tables(
    attention_by_gene: pd.DataFrame,
    attention_by_position_length: pd.DataFrame,
    *,
    offsets: np.ndarray,
    token_ids: np.ndarray,
    cell_bins: np.ndarray,
    model: str,
) -> pd.DataFrame:
    """Residual gene score from the attention tables instead of the token store.

    ``S(g) = logfold_mean(g) − mean_c E(rank_c(g), nbin_c)``: the first term from
    ``attention_by_gene`` (label ``"__all__"``), the second from the token positions and the
    ``attention_by_position_length`` table. Equals `gene_scores`' ``residual`` when both use the
    same length bins.

    Returns
    -------
    DataFrame ``layer, head, token_id, n_cells, logfold, expected, residual`` (layer/head as str).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    tbin = np.repeat(np.asarray(cell_bins, dtype=np.int64), lengths)
    e_tab = attention_by_position_length[attention_by_position_length["model"] == model]
    g_tab = attention_by_gene[
        (attention_by_gene["model"] == model) & (attention_by_gene["label"].astype(str) == "__all__")
    ]
    if e_tab.empty or g_tab.empty:
        msg = f"attention tables have no rows for model {model!r}"
        raise InputError(msg)
    n_pos = int(max(pos.max() + 1, e_tab["position"].max() + 1))
    n_bins = int(max(tbin.max() + 1, e_tab["length_bin"].max() + 1))
    out = []
    for (layer, head), e_lh in e_tab.groupby(["layer", "head"], sort=True):
        e = np.full((n_pos, n_bins), np.nan)
        e[e_lh["position"].to_numpy(int), e_lh["length_bin"].to_numpy(int)] = e_lh["logfold_mean"].to_numpy(
            float
        )
        exp_g = gene_means(e[pos, tbin], token_ids)
        g = g_tab[(g_tab["layer"] == layer) & (g_tab["head"] == head)].set_index("token_id")["logfold_mean"]
        df = exp_g.rename(columns={"mean": "expected"}).drop(columns="sd")
        df["logfold"] = g.reindex(df["token_id"]).to_numpy(float)
        df["residual"] = df["logfold"] - df["expected"]
        df.insert(0, "head", str(head))
        df.insert(0, "layer", str(layer))
        out.append(df)
    return pd.concat(out, ignore_index=True)


def _subsample(n: int, max_n: int, seed: int) -> np.ndarray:
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))


def _cell_lengths(store: TokenStore, n_genes: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Genes expressed per cell before truncation (``n_genes``), else the token count, and its name."""
    if n_genes is None:
        return np.asarray(store.lengths, dtype=np.float64), "tokens"
    n = np.asarray(n_genes, dtype=np.float64)
    if n.shape != (store.n_cells,) or not np.all(np.isfinite(n)) or np.any(n < 1):
        msg = f"n_genes needs one finite value >= 1 per cell of the store ({store.n_cells}), got shape {n.shape}"
        raise InputError(msg)
    return n, "n_genes"


def length_dependence(
    store: TokenStore,
    *,
    n_genes: np.ndarray | None = None,
    max_tokens: int = 100_000,
    seed: int = 0,
    n_length_bins: int = 10,
) -> pd.DataFrame:
    """How attention depends on the genes a cell expresses and on rank position, per layer/head and score.

    The confound variable is ``n_genes``, the genes expressed per cell *before* the input was cut to
    the model's size: the token count is capped (at 254 genes for 93 % of the default study's cells),
    so a correlation with it is ≈ 0 whatever attention does. Token level (a seeded subsample of
    ``max_tokens`` tokens): Spearman of each per-token score with ``n_genes`` (``spearman_vs_length``),
    with the token count (``spearman_vs_tokens``) and with position, and the OLS slope of ``log score``
    on ``log n_genes`` (raw attention ≈ −1 under uniform attention over uncut cells; fold ≈ 0).
    Residuals have no log slope (reported for ``log fold``).

    Parameters
    ----------
    store
        Token store of one model.
    n_genes
        Genes expressed per cell before truncation, in the store's cell order (None: the token count,
        named so in ``length_variable``).
    max_tokens, seed
        Size and seed of the token subsample.
    n_length_bins
        Token-count bins of the position expectation (residual scores).

    Returns
    -------
    DataFrame ``layer, head, score_type, length_variable, spearman_vs_length, loglength_slope,
    spearman_vs_tokens, spearman_vs_position, cell_mean_raw_vs_tokens`` (the last: Spearman over
    cells of the per-cell mean raw attention vs the token count; since ``Σ_j a_j = 1`` the mean is
    ``1/n_tokens`` and this is −1 by construction: a check of the store).
    """
    ix = _Index.build(store, length_bins(store.lengths, n_length_bins))
    cell_n, variable = _cell_lengths(store, n_genes)
    idx = _subsample(len(ix.pos), max_tokens, seed)
    n_c = cell_n[store.cell_of_token[idx]]
    logn = np.log(n_c)
    r_len, r_tok = stats.rankdata(n_c), stats.rankdata(ix.n_tok[idx])  # Spearman = Pearson of ranks
    r_pos = stats.rankdata(ix.pos[idx])
    rows = []
    for layer, head, lf in iter_columns(store):
        sc = _scores_for(lf, ix)
        cell_raw = (
            np.bincount(store.cell_of_token, weights=sc["raw"], minlength=store.n_cells) / store.lengths
        )
        r_cell = _spear(cell_raw, store.lengths)
        for st in SCORE_TYPES:
            v = sc[st][idx]
            logv = np.log(v) if st != "residual" else v
            slope = float(np.polyfit(logn, logv, 1)[0]) if np.ptp(logn) > 0 else float("nan")
            r_v = stats.rankdata(v)
            rows.append({"layer": layer, "head": head, "score_type": st, "length_variable": variable,
                         "spearman_vs_length": _pearson(r_v, r_len), "loglength_slope": slope,
                         "spearman_vs_tokens": _pearson(r_v, r_tok), "spearman_vs_position": _pearson(r_v, r_pos),
                         "cell_mean_raw_vs_tokens": r_cell})  # fmt: skip
    return pd.DataFrame(rows)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _spear(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


_DEPENDENCE = ("length_variable", "spearman_vs_length", "loglength_slope", "spearman_vs_tokens", "spearman_vs_position",
               "cell_mean_raw_vs_tokens")  # fmt: skip


def _agreement_columns(
    s: pd.Series, de_score: pd.Series | None, planted: pd.Series | None, *, k: int, n_top: int
) -> dict[str, object]:
    """Agreement with DE and recovery of planted genes of one gene score (NaN where there is no truth)."""
    row: dict[str, object] = dict.fromkeys(
        ("auroc_planted", "auprc_planted", "spearman_vs_de", "topk_overlap_de", "hypergeom_p"), np.nan
    )
    row["top_genes"] = ",".join(s.sort_values(ascending=False, kind="stable").index[:n_top].astype(str))
    if de_score is not None:
        row["spearman_vs_de"] = spearman(s, de_score)[0]
        ov = topk_overlap(s, de_score.dropna(), k)
        row["topk_overlap_de"], row["hypergeom_p"] = ov["overlap"], ov["pval"]
    if planted is not None:
        pl = planted.astype(bool)
        sv = s.reindex(pl.index)
        sv = sv.fillna(np.nanmin(sv.to_numpy()) - 1 if sv.notna().any() else 0.0)  # unscored genes rank last
        row["auroc_planted"] = auroc(sv.to_numpy(), pl.to_numpy())
        row["auprc_planted"] = auprc(sv.to_numpy(), pl.to_numpy())
    return row


def confounds_table(
    stores: Mapping[str, TokenStore],
    *,
    gene_map: Mapping[int, str] | pd.Series | None = None,
    de_score: pd.Series | None = None,
    planted: pd.Series | None = None,
    k: int = 20,
    n_top: int = 10,
    seed: int = 0,
    n_length_bins: int = 10,
    max_tokens: int = 100_000,
    heads: Sequence[tuple[str, str]] | None = None,
    precomputed: Mapping[str, pd.DataFrame] | None = None,
    n_genes: Mapping[str, np.ndarray | None] | None = None,
) -> pd.DataFrame:
    """Length/position dependence, agreement with DE and planted-gene recovery of each score type.

    One row per model, layer/head and score type (raw, fold, residual).

    Parameters
    ----------
    stores
        Token store per model name.
    gene_map
        token id → gene symbol (so gene scores line up with ``de_score`` / ``planted``).
    de_score
        DE score per gene symbol (e.g. `agreement.de_gene_score`).
    planted
        ``var["planted"]`` (bool, indexed by gene symbol) for simulated data.
    k
        Top-k of the DE overlap.
    n_top
        Number of top genes listed in ``top_genes``.
    seed
        Seed of the token subsample for the token-level correlations.
    n_length_bins
        Length bins of the position expectation.
    max_tokens
        Token subsample size for token-level correlations.
    heads
        Restrict to these ``(layer, head)`` string pairs (default all, plus means).
    precomputed
        `gene_scores` output per model (same ``n_length_bins`` and ``gene_map``), to skip recomputing.
    n_genes
        Per model: genes expressed per cell before truncation, in the store's cell order (the
        confound variable of `length_dependence`; a model left out falls back to the token count,
        named in the ``length_variable`` column).

    Returns
    -------
    DataFrame with `CONFOUND_COLUMNS`.
    """
    rows = []
    for model, store in stores.items():
        gs = (precomputed or {}).get(model)
        if gs is None:
            gs = gene_scores(store, n_length_bins=n_length_bins, gene_map=gene_map)
        dep = length_dependence(store, n_genes=(n_genes or {}).get(model), max_tokens=max_tokens, seed=seed,
                                n_length_bins=n_length_bins)  # fmt: skip
        dep = dep.set_index(["layer", "head", "score_type"])
        for (layer, head), g in gs.groupby(["layer", "head"], sort=False):
            if heads is not None and (layer, head) not in set(heads):
                continue
            g = g.set_index("gene")
            g = g[~g.index.duplicated()]
            for st in SCORE_TYPES:
                row = {"model": model, "layer": layer, "head": head, "score_type": st, "n_genes": len(g[st]),
                       **dep.loc[(layer, head, st)][list(_DEPENDENCE)].to_dict(),
                       "spearman_vs_mean_rank": spearman(g[st], -g["mean_position"])[0]}  # fmt: skip
                rows.append({**row, **_agreement_columns(g[st], de_score, planted, k=k, n_top=n_top)})
    return pd.DataFrame(rows, columns=CONFOUND_COLUMNS)
