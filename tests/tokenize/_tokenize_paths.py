"""Locations of Geneformer's dictionaries and golden tokens (``../shared``, read in place)."""

from __future__ import annotations

from pathlib import Path

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()
DICTS = SHARED / "geneformer-dictionaries"
GOLDEN = SHARED / "geneformer-golden"

V2_FILES = (
    DICTS / "v2_gc104M" / "token_dictionary_gc104M.pkl",
    DICTS / "v2_gc104M" / "gene_median_dictionary_gc104M.pkl",
    DICTS / "v2_gc104M" / "ensembl_mapping_dict_gc104M.pkl",
)
V1_FILES = (
    DICTS / "v1_gc30M" / "token_dictionary_gc30M.pkl",
    DICTS / "v1_gc30M" / "gene_median_dictionary_gc30M.pkl",
    DICTS / "v1_gc30M" / "ensembl_mapping_dict_gc30M.pkl",
)
