"""Data layer: read h5ad files safely and canonicalise them (design.md, "Canonical AnnData").

Adapters for the two real sci-Plex-2 files (scPerturb/pertpy and Kaggle) are detected automatically.
"""

from __future__ import annotations

from ._canonical import canonicalize, load
from ._ensembl import strip_ensembl_version
from ._groups import normalize_dose, parse_groups
from ._layouts import LAYOUTS, detect_layout, plate_from_well, replicate_from_well
from ._read import read_h5ad
from ._validate import count_matrix, validate_canonical, validate_counts, validate_float16
from ._write import write_h5ad, write_table

__all__ = [
    "read_h5ad",
    "canonicalize",
    "load",
    "write_h5ad",
    "write_table",
    "strip_ensembl_version",
    "count_matrix",
    "validate_float16",
    "parse_groups",
    "validate_counts",
    "validate_canonical",
    "detect_layout",
    "normalize_dose",
    "replicate_from_well",
    "plate_from_well",
    "LAYOUTS",
]
