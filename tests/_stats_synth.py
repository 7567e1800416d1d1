"""Builders of synthetic inputs in the contract schemas (counts AnnData, token stores) for tests/stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from geneattn.attention.store import TokenStore


def make_counts(n_cells=60, n_genes=40, n_markers=5, seed=0, n_wells=6, lfc=2.0):
    """NB counts; two classes 'a','b'; the first `n_markers` genes are up in 'b'; wells nested in class."""
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b"])[np.arange(n_cells) % 2]
    mu = rng.gamma(2.0, 2.0, size=n_genes)
    mus = np.tile(mu, (n_cells, 1))
    mus[labels == "b", :n_markers] *= 2**lfc
    x = rng.negative_binomial(5, 5 / (5 + mus)).astype(np.float32)
    wells = np.array([f"{lab}{(i // 2) % (n_wells // 2)}" for i, lab in enumerate(labels)])
    ad = AnnData(
        X=sp.csr_matrix(x),
        obs=pd.DataFrame(
            {"label": pd.Categorical(labels), "well": wells}, index=[f"c{i}" for i in range(n_cells)]
        ),
        var=pd.DataFrame(
            {
                "ensembl_id": [f"ENSG{i:05d}" for i in range(n_genes)],
                "planted": np.arange(n_genes) < n_markers,
            },
            index=[f"G{i}" for i in range(n_genes)],
        ),
    )
    return ad


def make_store(
    n_cells=120,
    n_genes=60,
    n_planted=6,
    seed=0,
    n_layers=2,
    n_heads=2,
    effect=0.8,
    len_range=(15, 50),
    labels=None,
    class_effect=0.0,
    noise=0.3,
):
    """Token store with a positional curve, a length confound on raw attention, and planted genes.

    Gene g has a typical rank (lower id → higher rank). Planted genes (token ids 100..100+n_planted-1,
    chosen among mid-ranked genes) get +effect log fold. With `labels`, planted genes get
    +class_effect * label_index in residual attention.
    """
    rng = np.random.default_rng(seed)
    genes = np.arange(100, 100 + n_genes)
    planted = genes[n_genes // 3 : n_genes // 3 + n_planted]
    lengths = np.minimum(rng.integers(len_range[0], len_range[1] + 1, size=n_cells), n_genes)
    offsets = np.r_[0, np.cumsum(lengths)]
    toks, lfs = [], []
    for c, n in enumerate(lengths):
        # noisy ranking around a fixed gene order
        key = np.arange(n_genes) + rng.normal(0, 6, size=n_genes)
        cell_genes = genes[np.argsort(key)[:n]]
        pos = np.arange(n)
        base = (
            1.2
            * np.exp(-pos / 6.0)[:, None, None]
            * (1 + np.arange(n_layers * n_heads).reshape(n_layers, n_heads))[None]
        )
        lf = base + rng.normal(0, noise, size=(n, n_layers, n_heads))
        isp = np.isin(cell_genes, planted)
        lf[isp] += effect
        if labels is not None and class_effect:
            lf[isp] += class_effect * float(labels[c])
        toks.append(cell_genes)
        lfs.append(lf)
    store = TokenStore(
        np.concatenate(lfs).astype(np.float32),
        offsets,
        np.concatenate(toks),
        np.array([f"c{i}" for i in range(n_cells)]),
    )
    return store, planted


def tiny_bert(seed, vocab_size, labels=("a", "b"), **overrides):
    """A seeded 2-layer, 32-wide `BertForSequenceClassification` in eval mode; `overrides` go to `BertConfig`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=len(labels),
        label2id={lab: i for i, lab in enumerate(labels)},
        id2label=dict(enumerate(labels)),
        **overrides,
    )
    return BertForSequenceClassification(cfg).eval()
