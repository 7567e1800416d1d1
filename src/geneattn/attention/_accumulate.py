"""Per-model accumulators: token statistics of one batch -> grouped running statistics -> tidy tables.

Definitions (c = cell, n_c = its number of valid tokens, j = key token, i = valid query, A = attention):

* ``recv``    a_j = (1/n_c) sum_i A[i, j]                    attention received (mean over valid queries)
* ``fold``    n_c * a_j = sum_i A[i, j]                      fold over uniform attention (uniform -> 1)
* ``logfold`` log(fold), natural log
* ``norm``    (1/n_c) sum_i A[i, j] ||f_h(x_j)||             Kobayashi 2020 norm-weighted attention received
* ``fnorm``   ||f_h(x_j)||                                   transformed-vector norm of token j
* ``first``   A[0, j]                                        attention from the first token (row 0) to j
* ``rank``    position j of the token (0-based; V1: position == expression rank)
* ``head_out`` ||ctx_h[i] W_O,h^T|| per token i              head h's output norm
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .interface import TokenStats
from .reduce import RunningStats

__all__ = ["ModelAccumulator", "TOKEN_STATS", "POSITION_STATS"]

TOKEN_STATS = ("recv", "fold", "logfold", "norm", "fnorm", "first")
POSITION_STATS = TOKEN_STATS
_SD_STATS = ("recv", "fold", "logfold", "norm")


class ModelAccumulator:
    """All running statistics of one model over the cells seen so far (on ``device``).

    Parameters
    ----------
    n_layers, n_heads
        Model shape.
    n_genes
        Size of the compact gene index (token ids present in the data).
    n_classes
        Number of labels (1 when there is no label column).
    max_len
        Longest cell (positions 0 .. max_len-1).
    n_length_bins
        Number of cell-length bins for `attention_by_position_length`.
    device
        Torch device of the running statistics.
    n_cells
        Number of dataset rows. Per-cell values go to preallocated ``[n_cells, n_layers, n_heads]``
        arrays: per-batch arrays kept alive until the end fragmented the heap (RSS grew with cells).
    """

    def __init__(
        self, n_layers: int, n_heads: int, n_genes: int, n_classes: int, max_len: int, n_length_bins: int,
        device: torch.device | str, n_cells: int = 0,
    ) -> None:  # fmt: skip
        self.n_layers, self.n_heads = n_layers, n_heads
        self.n_genes, self.n_classes, self.max_len, self.n_bins = n_genes, n_classes, max_len, n_length_bins
        lh = n_layers * n_heads
        ns = len(TOKEN_STATS)
        self.gene = RunningStats.zeros(n_classes * n_genes, ns * lh, device)
        self.gene_rank = RunningStats.zeros(n_classes * n_genes, 1, device)
        self.position = RunningStats.zeros(n_classes * max_len, ns * lh, device)
        self.position_length = RunningStats.zeros(n_length_bins * max_len, lh, device)
        self.head = RunningStats.zeros(1, 3 * lh, device)  # head_out, share, fnorm (cell means)
        self.cell_head_out = np.zeros((n_cells, n_layers, n_heads), np.float32)
        self.cell_recv_first = np.zeros((n_cells, n_layers, n_heads), np.float32)
        self.cell_seen = np.zeros(n_cells, bool)
        self._seen = [False] * n_layers

    def begin(self, valid: torch.Tensor) -> None:
        """Start a batch with token mask ``valid`` ``[B, L]`` (call before the forward pass)."""
        self._valid = valid
        self._n_c = valid.sum(1).float()  # [B]
        n_tok = int(valid.sum())
        self._tok = torch.empty(n_tok, len(TOKEN_STATS), self.n_layers, self.n_heads, device=valid.device)
        self._cell = torch.empty(valid.shape[0], 3, self.n_layers, self.n_heads, device=valid.device)
        self._seen = [False] * self.n_layers

    def sink(self, layer: int, stats: TokenStats) -> None:
        """Receiver for `interface.collecting`: reduce one layer's ``[B, H, L]`` statistics to the batch buffers."""
        valid, n_c = self._valid, self._n_c[:, None, None]
        logfold = stats.logcol
        fold = logfold.exp()
        recv = fold / n_c
        vals = torch.stack(
            [recv, fold, logfold, recv * stats.fnorm, stats.fnorm, stats.first], -1
        )  # [B, H, L, S]
        self._tok[:, :, layer, :] = vals.permute(0, 2, 3, 1)[valid]  # [N, S, H]
        vq = valid[:, None, :].float()
        self._cell[:, 0, layer] = (stats.head_out * vq).sum(-1) / n_c[..., 0]  # mean over valid tokens
        self._cell[:, 1, layer] = (stats.fnorm * vq).sum(-1) / n_c[..., 0]
        self._cell[:, 2, layer] = recv[:, :, 0]  # a_0: attention received by the first token
        self._seen[layer] = True

    def update(
        self, gene_idx: torch.Tensor, class_idx: torch.Tensor, bin_idx: torch.Tensor, cell_rows: np.ndarray
    ) -> torch.Tensor:
        """Fold the batch started with `begin` whose layer statistics the sink received.

        Parameters
        ----------
        gene_idx
            ``[B, L]`` long compact gene index (anything at padding).
        class_idx, bin_idx
            ``[B]`` long class and length-bin index per cell.
        cell_rows
            ``[B]`` dataset row of each cell.

        Returns
        -------
        ``[N_valid, n_layers, n_heads]`` float32 log fold of the valid tokens (cell-major), for the token store.
        """
        if not all(self._seen):
            msg = "not every layer reported statistics (is the model using geneattn_stats attention?)"
            raise RuntimeError(msg)
        valid = self._valid
        bsz, length = valid.shape
        lh = self.n_layers * self.n_heads
        tok = self._tok.reshape(-1, len(TOKEN_STATS) * lh)
        pos = torch.arange(length, device=valid.device).expand(bsz, length)[valid]
        cls = class_idx[:, None].expand(bsz, length)[valid]
        gene_row = cls * self.n_genes + gene_idx[valid]
        self.gene.update(gene_row, tok)
        self.gene_rank.update(gene_row, pos[:, None].double())
        self.position.update(cls * self.max_len + pos, tok)
        lf = self._tok[:, 2]  # [N, nl, H]
        self.position_length.update(
            bin_idx[:, None].expand(bsz, length)[valid] * self.max_len + pos, lf.reshape(-1, lh)
        )
        head_out = self._cell[:, 0].double()
        share = head_out / head_out.sum(-1, keepdim=True).clamp_min(1e-300)
        per_cell = torch.stack([head_out, share, self._cell[:, 1].double()], 1).reshape(bsz, -1)
        self.head.update(torch.zeros(bsz, dtype=torch.long, device=valid.device), per_cell)
        self.cell_head_out[cell_rows] = self._cell[:, 0].cpu().numpy()
        self.cell_recv_first[cell_rows] = self._cell[:, 2].cpu().numpy()
        self.cell_seen[cell_rows] = True
        self._seen = [False] * self.n_layers
        return lf

    def all_reduce(self) -> None:
        """Combine accumulators across ``torch.distributed`` processes (no-op when not initialised)."""
        for rs in (self.gene, self.gene_rank, self.position, self.position_length, self.head):
            rs.all_reduce()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        rows = np.flatnonzero(self.cell_seen)
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (rows, self.cell_head_out[rows], self.cell_recv_first[rows]))
        for r, head_out, first in parts:
            self.cell_head_out[r], self.cell_recv_first[r], self.cell_seen[r] = head_out, first, True


def _long(
    rs: RunningStats, stats: tuple[str, ...], sd_stats: tuple[str, ...], n_layers: int, n_heads: int,
    keep: np.ndarray,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Expand the kept groups of ``rs`` to long format: one row per (group, layer, head)."""
    lh = n_layers * n_heads
    mean = rs.mean[torch.as_tensor(keep)].cpu().numpy().reshape(len(keep), len(stats), lh)
    sd = rs.sd[torch.as_tensor(keep)].cpu().numpy().reshape(len(keep), len(stats), lh)
    cols: dict[str, np.ndarray] = {
        "layer": np.tile(np.repeat(np.arange(n_layers), n_heads), len(keep)),
        "head": np.tile(np.tile(np.arange(n_heads), n_layers), len(keep)),
    }
    for s_i, name in enumerate(stats):
        cols[f"{name}_mean"] = mean[:, s_i].reshape(-1)
        if name in sd_stats:
            cols[f"{name}_sd"] = sd[:, s_i].reshape(-1)
    return cols


def gene_table(
    acc: ModelAccumulator, model: str, classes: list[str], gene_tokens: np.ndarray, gene_ids: np.ndarray,
    gene_symbols: np.ndarray,
) -> pd.DataFrame:  # fmt: skip
    """``attention_by_gene`` rows of one model: every class, then ``"__all__"`` (classes merged)."""
    parts = []
    blocks = [(c, acc.gene, acc.gene_rank, i) for i, c in enumerate(classes)]
    if classes != ["__all__"]:
        merged = acc.gene.merge_groups(len(classes)), acc.gene_rank.merge_groups(len(classes))
        blocks.append(("__all__", merged[0], merged[1], None))
    lh = acc.n_layers * acc.n_heads
    for label, rs, rank, ci in blocks:
        lo = 0 if ci is None else ci * acc.n_genes
        count = rs.count[lo : lo + acc.n_genes].cpu().numpy()
        keep = np.flatnonzero(count > 0)
        cols = _long(rs, TOKEN_STATS, _SD_STATS, acc.n_layers, acc.n_heads, keep + lo)
        g = np.repeat(keep, lh)
        df = pd.DataFrame(
            {
                "model": model,
                "layer": cols.pop("layer"),
                "head": cols.pop("head"),
                "token_id": gene_tokens[g].astype(np.int64),
                "ensembl_id": gene_ids[g],
                "gene": gene_symbols[g],
                "label": label,
                "n_cells": count[keep].astype(np.int64).repeat(lh),
                **cols,
                "rank_mean": np.repeat(rank.mean[lo + keep, 0].cpu().numpy(), lh),
            }
        )
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def position_table(acc: ModelAccumulator, model: str, classes: list[str]) -> pd.DataFrame:
    """``attention_by_position`` rows of one model (every class, then ``"__all__"``)."""
    parts = []
    blocks = [(c, acc.position, i) for i, c in enumerate(classes)]
    if classes != ["__all__"]:
        blocks.append(("__all__", acc.position.merge_groups(len(classes)), None))
    lh = acc.n_layers * acc.n_heads
    for label, rs, ci in blocks:
        lo = 0 if ci is None else ci * acc.max_len
        count = rs.count[lo : lo + acc.max_len].cpu().numpy()
        keep = np.flatnonzero(count > 0)
        cols = _long(rs, POSITION_STATS, _SD_STATS, acc.n_layers, acc.n_heads, keep + lo)
        parts.append(
            pd.DataFrame(
                {
                    "model": model,
                    "layer": cols.pop("layer"),
                    "head": cols.pop("head"),
                    "position": np.repeat(keep, lh).astype(np.int64),
                    "label": label,
                    "n_cells": count[keep].astype(np.int64).repeat(lh),
                    **cols,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def position_length_table(acc: ModelAccumulator, model: str) -> pd.DataFrame:
    """``attention_by_position_length``: mean log fold by (position, cell-length bin), classes pooled."""
    count = acc.position_length.count.cpu().numpy()
    keep = np.flatnonzero(count > 0)
    lh = acc.n_layers * acc.n_heads
    mean = acc.position_length.mean[torch.as_tensor(keep)].cpu().numpy().reshape(-1)
    return pd.DataFrame(
        {
            "model": model,
            "layer": np.tile(np.repeat(np.arange(acc.n_layers), acc.n_heads), len(keep)),
            "head": np.tile(np.tile(np.arange(acc.n_heads), acc.n_layers), len(keep)),
            "position": np.repeat(keep % acc.max_len, lh).astype(np.int64),
            "length_bin": np.repeat(keep // acc.max_len, lh).astype(np.int64),
            "n": count[keep].astype(np.int64).repeat(lh),
            "logfold_mean": mean,
        }
    )


def head_table(acc: ModelAccumulator, model: str) -> pd.DataFrame:
    """``head_norms``: per (layer, head) summaries over cells of per-cell means over valid tokens."""
    lh = acc.n_layers * acc.n_heads
    mean = acc.head.mean[0].cpu().numpy().reshape(3, lh)
    sd = acc.head.sd[0].cpu().numpy().reshape(3, lh)
    return pd.DataFrame(
        {
            "model": model,
            "layer": np.repeat(np.arange(acc.n_layers), acc.n_heads),
            "head": np.tile(np.arange(acc.n_heads), acc.n_layers),
            "n_cells": int(acc.head.count[0].item()),
            "head_out_mean": mean[0],
            "head_out_sd": sd[0],
            "share_mean": mean[1],
            "share_sd": sd[1],
            "fnorm_mean": mean[2],
        }
    )


def cell_table(
    acc: ModelAccumulator, model: str, cell_ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray,
    models: list[str] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """``cell_head``: one row per (cell, layer, head), cells in dataset order.

    Compact in memory: ``model``, ``cell_id`` and ``label`` are Categorical (categories from every cell,
    so the tables of several models concatenate without losing the dtype), ``length`` int32 and
    ``layer``/``head`` int16. `AttentionResult.save` writes them back as strings and int64.
    """
    rows = np.flatnonzero(acc.cell_seen)
    if not len(rows):
        return pd.DataFrame(
            columns=["model", "cell_id", "label", "length", "layer", "head", "head_out", "recv_first"]
        )
    head_out = acc.cell_head_out[rows].reshape(-1)
    first = acc.cell_recv_first[rows].reshape(-1)
    lh = acc.n_layers * acc.n_heads
    names = list(models) if models else [model]
    return pd.DataFrame(
        {
            "model": pd.Categorical.from_codes(
                np.full(len(rows) * lh, names.index(model), np.int16), categories=names
            ),
            "cell_id": _categorical(cell_ids, rows, lh),
            "label": _categorical(labels, rows, lh),
            "length": np.repeat(lengths[rows], lh).astype(np.int32),
            "layer": np.tile(np.repeat(np.arange(acc.n_layers, dtype=np.int16), acc.n_heads), len(rows)),
            "head": np.tile(np.tile(np.arange(acc.n_heads, dtype=np.int16), acc.n_layers), len(rows)),
            "head_out": head_out,
            "recv_first": first,
        }
    )


def _categorical(values: np.ndarray, rows: np.ndarray, repeat: int) -> pd.Categorical:
    """``values[rows]``, each repeated ``repeat`` times, as a Categorical over the distinct ``values``."""
    uniq, inv = np.unique(np.asarray(values).astype(str), return_inverse=True)
    codes = np.repeat(inv.reshape(-1)[rows].astype(np.int32), repeat)
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniq.astype(object), dtype=object))
