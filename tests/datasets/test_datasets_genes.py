"""Shipped gene tables: well-formed, and their Ensembl ids agree with Geneformer's dictionary."""

from __future__ import annotations

import pickle

import pytest

from _shared_data import skip_or_fail
from geneattn.datasets import background_genes, curated_genes, symbol_to_ensembl

# symbols renamed since the sci-Plex-2 annotation: ours -> current HGNC
_RENAMED = {"LINC01021": "PURPL"}


def test_tables_are_well_formed():
    cur, bg = curated_genes(), background_genes()
    both = [*cur["symbol"], *bg["symbol"]]
    assert len(both) == len(set(both))
    ids = [*cur["ensembl_id"], *bg["ensembl_id"]]
    assert len(ids) == len(set(ids)) and all(i.startswith("ENSG") and len(i) == 15 for i in ids)
    assert len(bg) == 4000 and symbol_to_ensembl()["MDM2"] == "ENSG00000135679"
    assert set(cur["direction"]) == {"up", "down", "none"}


@pytest.fixture(scope="module")
def geneformer_names(shared_dir):
    path = shared_dir / "geneformer-dictionaries" / "v2_gc104M" / "gene_name_id_dict_gc104M.pkl"
    if not path.exists():
        skip_or_fail(f"{path} not present")
    with path.open("rb") as fh:
        return pickle.load(fh)  # trusted test data (shared/), never loaded by the library


def test_curated_ids_agree_with_geneformer(geneformer_names):
    cur = curated_genes()
    wrong = {
        s: (e, geneformer_names.get(_RENAMED.get(s, s)))
        for s, e in zip(cur["symbol"], cur["ensembl_id"], strict=True)
        if geneformer_names.get(_RENAMED.get(s, s)) != e
    }
    assert not wrong


def test_background_ids_mostly_agree_with_geneformer(geneformer_names):
    bg = background_genes()
    agree = sum(geneformer_names.get(s) == e for s, e in zip(bg["symbol"], bg["ensembl_id"], strict=True))
    assert agree / len(bg) > 0.99
