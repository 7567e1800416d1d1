"""Vocabularies: restricted unpickling, Geneformer's dictionaries, JSON, build_vocab medians."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from _tokenize_data import make_adata, make_vocab

from geneattn.errors import InputError
from geneattn.tokenize import GeneVocab, build_vocab, load_pickle


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_crafted_pickle_is_refused_and_not_run(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "token_dictionary.pkl"
    evil.write_bytes(pickle.dumps({"<pad>": 0, "x": _Evil(f"touch {sentinel}")}))
    with pytest.raises(InputError, match=r"refusing to load global '(posix|os|nt)\.system'"):
        load_pickle(evil)
    with pytest.raises(InputError, match="system"):
        GeneVocab.from_geneformer(evil, evil)
    assert not sentinel.exists()
    # other callables too
    (tmp_path / "eval.pkl").write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(InputError, match="builtins.eval"):
        load_pickle(tmp_path / "eval.pkl")


def test_numpy_scalars_and_plain_values_load(tmp_path):
    d = {"<pad>": 0, "G1": np.int16(2), "G2": np.float64(1.5), "s": "x", "l": [1, 2.0]}
    p = tmp_path / "d.pkl"
    p.write_bytes(pickle.dumps(d))
    assert load_pickle(p) == d
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(InputError, match="expected a dict"):
        load_pickle(p)
    p.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable pickle"):
        load_pickle(p)
    with pytest.raises(InputError, match="cannot read"):
        load_pickle(tmp_path / "missing.pkl")


def test_geneformer_dictionaries(v1_vocab, v2_vocab):
    assert v2_vocab.size == 20275 and len(v2_vocab.genes) == 20271
    assert (v2_vocab.pad_id, v2_vocab.mask_id, v2_vocab.cls_id, v2_vocab.eos_id) == (0, 1, 2, 3)
    assert v2_vocab.id_to_gene[4] == "ENSG00000000003"
    assert set(v2_vocab.mapping.values()) <= set(v2_vocab.token_ids)
    assert len(v2_vocab.medians) == 20271  # restricted to the vocabulary's genes
    assert v1_vocab.size == 25426 and v1_vocab.cls_id is None and v1_vocab.eos_id is None
    assert v1_vocab.id_to_gene[2] == "ENSG00000000003"
    assert isinstance(v1_vocab.token_ids["ENSG00000000003"], int)
    v2_vocab.check_model_vocab_size(20275)
    with pytest.raises(InputError, match="25426"):
        v2_vocab.check_model_vocab_size(25426)


def test_json_round_trip_and_fingerprint(tmp_path):
    vocab = make_vocab()
    vocab.symbols = {"ENSG00000000000": "TP53"}
    p = vocab.to_json(tmp_path / "vocab.json")
    back = GeneVocab.from_json(p)
    assert back == vocab
    assert back.fingerprint == vocab.fingerprint
    assert back.medians == vocab.medians  # floats round-trip exactly
    # order-free, symbol-free, but sensitive to content
    shuffled = GeneVocab(
        token_ids=dict(reversed(vocab.token_ids.items())), medians=vocab.medians, mapping=vocab.mapping
    )
    assert shuffled.fingerprint == vocab.fingerprint
    changed = make_vocab()
    changed.medians["ENSG00000000001"] += 1e-12
    assert GeneVocab(changed.token_ids, changed.medians, changed.mapping).fingerprint != vocab.fingerprint
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a geneattn vocabulary"):
        GeneVocab.from_json(tmp_path / "bad.json")


def test_invalid_vocabularies():
    with pytest.raises(InputError, match="no median"):
        GeneVocab({"<pad>": 0, "<mask>": 1, "G": 2}, {})
    with pytest.raises(InputError, match="<pad>"):
        GeneVocab({"<mask>": 1, "G": 2}, {"G": 1.0})
    with pytest.raises(InputError, match="distinct"):
        GeneVocab({"<pad>": 0, "<mask>": 1, "G": 1}, {"G": 1.0})
    with pytest.raises(InputError, match="positive"):
        GeneVocab({"<pad>": 0, "<mask>": 1, "G": 2}, {"G": 0.0})


def test_build_vocab_matches_naive_medians(tmp_path):
    adata = make_adata(40, seed=7, n_unknown=2, n_lower=1)
    X = adata.X.tolil()
    X[:, 5] = 0  # a gene never expressed is left out
    adata.X = X.tocsr()
    vocab = build_vocab(adata)
    ids = [g.upper() for g in adata.var["ensembl_id"]]
    X = adata.X.toarray()
    n = adata.obs["n_counts"].to_numpy()
    expected = {}
    for gid in sorted(set(ids)):
        cols = [j for j, g in enumerate(ids) if g == gid]
        vals = []
        for i in range(X.shape[0]):
            x = sum(float(X[i, j]) for j in cols)
            if x > 0:
                vals.append(x / float(n[i]) * 10_000)
        if vals:
            expected[gid] = float(np.median(vals))
    assert vocab.medians.keys() == expected.keys()
    assert adata.var["ensembl_id"].iloc[5] not in vocab.token_ids
    for g, m in expected.items():
        assert vocab.medians[g] == pytest.approx(m, rel=1e-12)
    assert list(vocab.token_ids)[:4] == ["<pad>", "<mask>", "<cls>", "<eos>"]
    assert list(vocab.token_ids.values()) == list(range(vocab.size))
    assert vocab.genes == sorted(expected)
    assert vocab.symbols[ids[0]] == adata.var_names[0]
    no_special = build_vocab(adata, special_tokens=False)
    assert no_special.cls_id is None and no_special.token_ids[no_special.genes[0]] == 2
    # from a path (backed) gives the same vocabulary
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    assert build_vocab(path).fingerprint == vocab.fingerprint
