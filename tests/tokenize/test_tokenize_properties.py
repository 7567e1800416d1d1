"""geneattn's tokenizer vs the naive per-cell reference, and properties of rank-value encoding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
from _tokenize_data import make_adata, make_vocab
from _tokenize_naive import naive_tokenize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geneattn.errors import InputError
from geneattn.tokenize import tokenize


def _naive(adata, vocab, *, size, special, collapse=True, n_counts=None, filter_pass=True):
    return naive_tokenize(
        adata.X,
        adata.obs["n_counts"].to_numpy() if n_counts is None else n_counts,
        adata.var["ensembl_id"],
        vocab.token_ids,
        vocab.medians,
        vocab.mapping,
        model_input_size=size,
        special_token=special,
        filter_pass=adata.obs["filter_pass"].to_numpy() if filter_pass else None,
        collapse=collapse,
    )


def _ids(ds):
    return [np.asarray(x) for x in ds["input_ids"]]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_cells=st.integers(1, 25),
    density=st.floats(0.05, 0.9),
    max_count=st.integers(1, 6),
    n_alias=st.integers(0, 2),
    n_lower=st.integers(0, 2),
    special=st.booleans(),
    size=st.integers(3, 45),
    chunk_size=st.integers(1, 9),
)
def test_matches_naive_reference(
    seed, n_cells, density, max_count, n_alias, n_lower, special, size, chunk_size
):
    vocab = make_vocab(special=special, seed=seed)
    adata = make_adata(
        n_cells, seed=seed, density=density, max_count=max_count, n_alias=n_alias, n_lower=n_lower
    )
    expected = _naive(adata, vocab, size=size, special=special)
    if not expected:
        with pytest.raises(InputError, match="no cell left"):
            tokenize(adata, vocab, model_input_size=size, special_tokens=special, chunk_size=chunk_size)
        return
    ds = tokenize(
        adata, vocab, model_input_size=size, special_tokens=special, chunk_size=chunk_size, n_jobs=2
    )
    got = _ids(ds)
    assert _same(got, expected)
    assert adata.uns["tokenize"]["params"]["gene_path"] == ("collapse" if n_alias else "fast")
    # properties: length, special tokens, descending values
    X = adata.X.toarray()
    passing = np.flatnonzero(adata.obs["filter_pass"].to_numpy() == 1)
    max_genes = size - 2 if special else size
    for tokens, cell in zip(got, [c for c in ds["cell_id"]], strict=True):
        assert tokens.size <= size
        if special:
            assert tokens[0] == vocab.cls_id and tokens[-1] == vocab.eos_id
            assert vocab.cls_id not in tokens[1:-1] and vocab.eos_id not in tokens[1:-1]
            tokens = tokens[1:-1]
        assert 1 <= tokens.size <= max_genes
        i = int(cell[1:])
        assert i in passing
        if n_alias == 0 and n_lower == 0:  # one column per gene: check values directly
            genes = vocab.id_to_gene[tokens]
            col = {g: j for j, g in enumerate(adata.var["ensembl_id"])}
            vals = np.array([X[i, col[g]] / vocab.medians[g] for g in genes])
            assert np.all(vals > 0)
            assert np.all(np.diff(vals) <= 1e-9 * vals[:-1])  # non-increasing
            n_expressed = sum(
                1 for j, g in enumerate(adata.var["ensembl_id"]) if g in vocab.medians and X[i, j] > 0
            )
            assert tokens.size == min(n_expressed, max_genes)


def test_deterministic_and_chunk_invariant():
    vocab = make_vocab(seed=3)
    adata = make_adata(60, seed=3, n_alias=2, max_count=2)
    runs = [
        _ids(tokenize(adata, vocab, model_input_size=20, special_tokens=True, chunk_size=c, n_jobs=j))
        for c, j in [(512, 1), (7, 1), (7, 3), (1, 2)]
    ]
    assert all(_same(runs[0], r) for r in runs[1:])
    assert any(len(r) > 1 for r in runs[0])


def test_empty_cells_dropped_with_warning(caplog):
    vocab = make_vocab()
    adata = make_adata(20, seed=1, empty_cells=3)
    adata.obs["filter_pass"] = 1
    with caplog.at_level(logging.WARNING, logger="geneattn"):
        ds = tokenize(adata, vocab, model_input_size=50, special_tokens=True)
    assert "dropped 3 cells" in caplog.text
    assert ds.num_rows == 17
    assert ds["cell_id"] == [f"c{i}" for i in range(3, 20)]
    assert adata.uns["tokenize"]["params"]["n_cells_empty"] == 3
    assert _same(_ids(ds), _naive(adata, vocab, size=50, special=True))


def test_collapse_gene_ids_false_does_not_crash():
    vocab = make_vocab()
    adata = make_adata(15, seed=2, n_lower=0, n_unknown=3)
    ds = tokenize(adata, vocab, model_input_size=30, collapse_gene_ids=False, special_tokens=True)
    assert _same(_ids(ds), _naive(adata, vocab, size=30, special=True, collapse=False))
    adata.var["ensembl_id"] = list(adata.var["ensembl_id"][:-1]) + [adata.var["ensembl_id"].iloc[0]]
    with pytest.raises(InputError, match="more than once"):
        tokenize(adata, vocab, collapse_gene_ids=False)


def test_input_variants_give_same_tokens():
    vocab = make_vocab()
    adata = make_adata(25, seed=4, n_lower=0)
    ref = _ids(tokenize(adata, vocab, model_input_size=30, special_tokens=True))
    for X in (adata.X.toarray(), sp.csc_matrix(adata.X)):
        b = adata.copy()
        b.X = X
        assert _same(_ids(tokenize(b, vocab, model_input_size=30, special_tokens=True)), ref)
    # a stored explicit zero is not an expressed gene
    b = adata.copy()
    b.X = b.X.tocsr()
    b.X.data[0] = 0
    c = b.copy()
    c.X.eliminate_zeros()
    assert _same(
        _ids(tokenize(b, vocab, model_input_size=30, special_tokens=True)),
        _ids(tokenize(c, vocab, model_input_size=30, special_tokens=True)),
    )


def test_missing_n_counts_uses_row_sums(caplog):
    vocab = make_vocab()
    adata = make_adata(20, seed=5, n_unknown=0, n_lower=0)
    row_sums = np.asarray(adata.X.sum(axis=1)).ravel().astype(np.float32)
    b = adata.copy()
    del b.obs["n_counts"]
    with caplog.at_level(logging.WARNING, logger="geneattn"):
        ds = tokenize(b, vocab, model_input_size=30, special_tokens=True)
    assert "row sums" in caplog.text
    assert _same(_ids(ds), _naive(adata, vocab, size=30, special=True, n_counts=row_sums))
    assert b.uns["tokenize"]["params"]["n_counts_source"] == "row_sums"


def test_integer_counts_and_bool_filter():
    vocab = make_vocab()
    adata = make_adata(20, seed=6, dtype=np.int64)
    adata.obs["filter_pass"] = adata.obs["filter_pass"].astype(bool)
    ds = tokenize(adata, vocab, model_input_size=12)
    expected = _naive(adata, vocab, size=12, special=False)
    assert _same(_ids(ds), expected)
    assert ds.num_rows == int(adata.obs["filter_pass"].sum())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_input_size": 0}, "model_input_size"),
        ({"model_input_size": 2, "special_tokens": True}, "model_input_size"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"obs_keys": ["nope"]}, "nope"),
        ({"obs_keys": ["length"]}, "clash"),
        ({"gene_id_key": "symbol"}, "symbol"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InputError, match=match):
        tokenize(make_adata(5), make_vocab(), **kwargs)


def test_bad_inputs(tmp_path):
    vocab = make_vocab()
    adata = make_adata(5)
    adata.var["ensembl_id"] = [f"FOO{i}" for i in range(adata.n_vars)]
    with pytest.raises(InputError, match="no gene id maps"):
        tokenize(adata, vocab)
    adata = make_adata(5)
    adata.obs["n_counts"] = 0.0
    with pytest.raises(InputError, match="n_counts"):
        tokenize(adata, vocab)
    with pytest.raises(InputError, match="<cls>"):
        tokenize(make_adata(5), make_vocab(special=False), special_tokens=True)
    with pytest.raises(InputError, match="not found"):
        tokenize(tmp_path / "missing.h5ad", vocab)
    (tmp_path / "bad.h5ad").write_text("not hdf5")
    with pytest.raises(InputError, match="cannot read"):
        tokenize(tmp_path / "bad.h5ad", vocab)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="output"):
        tokenize(make_adata(5), vocab, out=tmp_path / "afile" / "tokens")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="non-empty"):
        tokenize(make_adata(5), vocab, out=tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "precious"
