"""What Geneformer's tokenizer outputs *on this machine*, checked against the golden files in ../shared.

Geneformer orders each cell's genes with ``np.argsort(-v)`` (numpy's unstable sort). Genes with equal
normalised values are ordered by the sort kernel numpy dispatches to, which depends on the CPU
(x86-simd-sort's AVX-512 and AVX2 kernels break ties differently). The golden files were written on
one machine; on another CPU Geneformer's own code orders some ties differently.

`expected_tokens` therefore runs Geneformer's algorithm (the naive reference, which calls
``np.argsort`` per cell exactly as ``tokenizer.py`` does) on this machine. Where that reproduces the
golden file, the golden file is the expectation. Where it does not, the test still proves two
things: the reference differs from the golden file only in the order of genes with *equal* values
(same genes, same value sequence), and the expectation is the reference as run here.
"""

from __future__ import annotations

import functools
import pickle

import anndata as ad
import numpy as np
from _tokenize_naive import naive_tokenize
from _tokenize_paths import GOLDEN


def golden(name: str) -> list[np.ndarray]:
    """The golden tokens of ``name`` (e.g. ``"small.v2"``), one int array per passing cell."""
    z = np.load(GOLDEN / f"{name}.input_ids.npz")
    flat, offsets, lengths = z["flat"], z["offsets"], z["lengths"]
    assert np.array_equal(np.diff(offsets), lengths)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(lengths.size)]


def _only_ties_differ(ref: np.ndarray, gold: np.ndarray, values: dict[int, float]) -> bool:
    if len(ref) != len(gold) or sorted(ref.tolist()) != sorted(gold.tolist()):
        return False
    seq = [[values.get(int(t), np.inf) for t in x] for x in (ref, gold)]  # <cls>/<eos> -> inf
    return seq[0] == seq[1]


@functools.cache
def expected_tokens(
    src: str, gold: str, files: tuple, size: int, special: bool
) -> tuple[list[np.ndarray], int]:
    """``(tokens, n_tie_cells)``: Geneformer's tokens on this CPU and how many cells' tie order
    differs from the golden file (0 where this CPU reproduces it)."""
    a = ad.read_h5ad(GOLDEN / f"{src}.h5ad")
    dicts = [pickle.loads(p.read_bytes()) for p in files]  # trusted test fixtures
    ref, values = naive_tokenize(
        a.X,
        a.obs["n_counts"].to_numpy(),
        a.var["ensembl_id"],
        *dicts,
        model_input_size=size,
        special_token=special,
        filter_pass=a.obs["filter_pass"].to_numpy(),
        return_values=True,
    )
    gold_cells = golden(gold)
    assert len(ref) == len(gold_cells)
    differ = [i for i, (r, g) in enumerate(zip(ref, gold_cells, strict=True)) if not np.array_equal(r, g)]
    bad = [i for i in differ if not _only_ties_differ(ref[i], gold_cells[i], values[i])]
    assert not bad, f"cells {bad[:5]} differ from Geneformer's golden tokens beyond the order of ties"
    return ref, len(differ)
