"""Small generated inputs for the tokenizer tests: counts with many ties, aliases, duplicates."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from geneattn.tokenize import GeneVocab


def make_vocab(n_genes=40, *, special=True, seed=0, n_aliases=5):
    """A Geneformer-like vocabulary over ENSG ids with few distinct medians (ties) and aliases."""
    rng = np.random.default_rng(seed)
    genes = [f"ENSG{i:011d}" for i in range(n_genes)]
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if special else [])
    token_ids = {s: i for i, s in enumerate(specials)}
    token_ids.update({g: len(specials) + i for i, g in enumerate(genes)})
    medians = {g: float(rng.choice([0.5, 1.10597, 2.0, 3.7])) for g in genes}
    mapping = {g: g for g in genes}
    for k in range(n_aliases):  # upper-case symbols mapping onto genes
        mapping[f"SYM{k}"] = genes[k]
    mapping["RETIRED1"] = "ENSG99999999999"  # value outside the vocabulary: filtered out
    return GeneVocab(token_ids=token_ids, medians=medians, mapping=mapping)


def make_adata(
    n_cells=30,
    n_genes=40,
    *,
    seed=0,
    density=0.4,
    max_count=4,
    n_unknown=2,
    n_lower=1,
    n_alias=0,
    empty_cells=0,
    dtype=np.float32,
):
    """Cells x (vocab genes + unknown ids + lower-case copies + alias columns), CSR counts."""
    rng = np.random.default_rng(seed)
    ids = [f"ENSG{i:011d}" for i in rng.permutation(n_genes)]
    ids += [f"ENSG5{i:010d}" for i in range(n_unknown)]  # not in any dictionary
    ids += [ids[i].lower() for i in range(n_lower)]  # lower-case copies of present ids
    ids += [f"SYM{k}" for k in range(n_alias)]  # aliases of present genes: collapse path
    dense = (rng.random((n_cells, len(ids))) < density) * rng.integers(1, max_count + 1, (n_cells, len(ids)))
    dense[:empty_cells, :] = 0
    if empty_cells:
        dense[:empty_cells, n_genes : n_genes + n_unknown] = 3  # counts only outside the vocabulary
    X = sp.csr_matrix(dense.astype(dtype))
    n_counts = np.asarray(dense.sum(axis=1)).astype(np.float32)
    n_counts[n_counts == 0] = 1
    obs = pd.DataFrame(
        {
            "n_counts": n_counts,
            "filter_pass": (rng.random(n_cells) < 0.8).astype(np.int64),
            "label": pd.Categorical(rng.choice(["a", "b"], n_cells)),
        },
        index=[f"c{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"ensembl_id": ids}, index=[f"gene{j}" for j in range(len(ids))])
    return ad.AnnData(X=X, obs=obs, var=var)
