"""Naive per-cell reference of Geneformer's tokenizer, written straight from the spec.

geneformer-tokenizer.md §1.2-§1.7: dense rows, plain loops, no cleverness. Used by the tests
(compared with geneattn and with Geneformer's own output) and by ``benchmarks/bench_tokenize.py``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import scipy.sparse as sp

SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>")


def naive_columns(ids, token_dict, mapping_dict=None, *, collapse=True):
    """List of (gene id, [source columns]) in Geneformer's column order (§1.3)."""
    genes = [k for k in token_dict if k not in SPECIALS]
    if not collapse:
        out = [(g, [j]) for j, g in enumerate(ids) if g in genes]
        assert len({g for g, _ in out}) == len(out), "duplicate ids"
        return out
    if mapping_dict is None:
        mapping_dict = {g: g for g in genes}
    # the mapping keeps only entries whose value is in the vocabulary
    m = {}
    for k, v in mapping_dict.items():
        if v in token_dict:
            m[k] = v
    in_map = [g for g in ids if g is not None and g in m]
    test = len(set(in_map)) == len({m[g] for g in in_map})
    collapsed = []
    for g in ids:
        collapsed.append(m.get(g.upper()) if g is not None else None)
    if test:  # fast path: every mapped column kept, nothing summed
        return [(c, [j]) for j, c in enumerate(collapsed) if c is not None]
    counts = Counter(c for c in collapsed if c is not None)
    out = []
    for j, c in enumerate(collapsed):
        if c is not None and counts[c] == 1:
            out.append((c, [j]))
    for c, k in counts.items():  # duplicated ids summed, at the end, in order of first appearance
        if k > 1:
            out.append((c, [j for j, d in enumerate(collapsed) if d == c]))
    return out


def naive_tokenize(
    X,
    n_counts,
    ids,
    token_dict,
    median_dict,
    mapping_dict=None,
    *,
    model_input_size=2048,
    special_token=False,
    filter_pass=None,
    collapse=True,
    return_values=False,
):
    """Tokens of each passing cell (list of int arrays); empty cells dropped.

    With ``return_values``, also each cell's ``{token id: normalised value}`` (for tie checks).
    """
    columns = naive_columns(list(ids), token_dict, mapping_dict, collapse=collapse)
    tokens = np.array([token_dict[g] for g, _ in columns], dtype=np.int64)
    medians = np.array([median_dict[g] for g, _ in columns], dtype=np.float64)
    singles = [(k, cols[0]) for k, (_, cols) in enumerate(columns) if len(cols) == 1]
    groups = [(k, cols) for k, (_, cols) in enumerate(columns) if len(cols) > 1]
    X = sp.csr_matrix(X)
    n_counts = np.asarray(n_counts)
    cells, values = [], []
    for i in range(X.shape[0]):
        if filter_pass is not None and not filter_pass[i] == 1:
            continue
        row = X[i].toarray()[0]  # dense row of raw counts
        x = np.zeros(len(columns), dtype=row.dtype)
        for k, j in singles:
            x[k] = row[j]
        for k, cols in groups:
            x[k] = row[cols].sum(dtype=row.dtype)
        n = n_counts[i]
        # §1.5: x * (1/n) in n's precision, * 10,000 keeping that dtype, * (1/median) in float64
        v = x * np.divide(1, n)
        v = v * v.dtype.type(10_000)
        v = v * (1.0 / medians)
        expressed = np.nonzero(v)[0]  # column order
        ranked = tokens[expressed][np.argsort(-v[expressed])]
        if ranked.size == 0:
            continue
        if special_token:
            ranked = np.concatenate(
                [[token_dict["<cls>"]], ranked[: model_input_size - 2], [token_dict["<eos>"]]]
            )
        else:
            ranked = ranked[:model_input_size]
        cells.append(ranked)
        values.append(dict(zip(tokens[expressed].tolist(), v[expressed].tolist(), strict=True)))
    return (cells, values) if return_values else cells
