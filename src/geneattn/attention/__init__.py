"""Attention statistics of Geneformer-style BERT models without materialising attention matrices.

`extract` runs every model over the same tokenized cells once, with a registered attention function
(``geneattn_stats``, interface.py) that returns the layer's real output and, via two fused attention
passes (methods.md §6, Algorithm C), each token's exact attention column sum. Notation: cell c with
``n_c`` valid tokens, A = a head's attention matrix (rows = queries i, columns = keys j), valid queries
only; ``f_h(x_j) = (x_j W_V^h + b_V^h) W_O[:, h-slice]^T`` (no ``b_O``, Kobayashi et al. 2020).
Per token: ``recv = a_j = (1/n_c) sum_i A[i, j]``; ``fold = n_c a_j``; ``logfold = ln(fold)``;
``norm = (1/n_c) sum_i A[i, j] ||f_h(x_j)||``; ``fnorm = ||f_h(x_j)||``; ``first = A[0, j]``;
``head_out = ||ctx_h[i] W_O,h^T||`` (= ``||sum_j A[i, j] f_h(x_j)||``). ``_sd`` = sample SD over tokens (ddof 1).

Tables (`AttentionResult.tables`, Parquet in ``out/``):

``attention_by_gene``
    model, layer, head, token_id, ensembl_id, gene, label (a class or ``"__all__"``), n_cells (cells
    containing the gene; strictly, tokens of the gene -- one per cell in rank-value encoding),
    {recv, fold, logfold, norm}_{mean, sd}, fnorm_mean, first_mean, rank_mean (mean 0-based position
    of the gene). Means over the cells where the gene is present (absent genes: no row, never 0).
    ``"__all__"`` rows pool the class rows exactly (sums of the accumulators).
``attention_by_position``
    model, layer, head, position, label, n_cells (cells long enough to have the position), same
    statistics as by gene (without rank_mean), over the tokens at that position.
``attention_by_position_length``
    model, layer, head, position, length_bin (quantile bin of the dataset's ``length``; edges in
    ``params["length_bin_edges"]``), n (tokens), logfold_mean; classes pooled -- E(rank, length bin).
``head_norms``
    model, layer, head, n_cells, head_out_mean/_sd (over cells of the per-cell mean over valid tokens
    of head_out), share_mean/_sd (per cell ``head_out_h / sum_h' head_out_h'`` within the layer),
    fnorm_mean (over cells of the per-cell mean of fnorm).
``cell_head``
    model, cell_id, label, length, layer, head, head_out (per-cell mean over valid tokens),
    recv_first (attention received by the first token, ``a_0``).

Token store: ``token_logfold_<model>.npy`` float32 ``[n_tokens, n_layers, n_heads]`` (logfold per
token, cells in dataset order) + ``token_index.npz`` (offsets, token_ids, cell_ids).
"""

from __future__ import annotations

from .compare import compare, position_bins, top_genes
from .extract import extract
from .interface import ATTN_NAME, collecting, register
from .reduce import RunningStats
from .result import TABLES, AttentionResult, gene_attention
from .store import TokenStore

__all__ = [
    "extract",
    "AttentionResult",
    "gene_attention",
    "TokenStore",
    "compare",
    "top_genes",
    "position_bins",
    "RunningStats",
    "collecting",
    "register",
    "ATTN_NAME",
    "TABLES",
]
