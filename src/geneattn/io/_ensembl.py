"""Ensembl gene ids: recognising them and removing version suffixes (``ENSG00000141510.12``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

__all__ = ["strip_ensembl_version", "looks_ensembl"]

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}")
_VERSION = re.compile(r"^(ENS[A-Z]*G\d{6,})\.\d+", re.IGNORECASE)


def looks_ensembl(name: str) -> bool:
    """Whether ``name`` starts like an Ensembl gene id (``ENSG…``, ``ENSMUSG…``)."""
    return bool(_ENSEMBL.match(name))


def strip_ensembl_version(ids: Iterable[object]) -> np.ndarray:
    """Remove the version suffix of Ensembl gene ids: ``ENSG00000141510.12`` -> ``ENSG00000141510``.

    Used by both `geneattn.io.canonicalize` and `geneattn.tokenize`, so ``geneattn run`` and
    ``geneattn tokenize`` map the same ids. Text after the version (``ENSG….5_PAR_Y``) is kept.

    Parameters
    ----------
    ids
        Gene ids; values that are not strings (missing ids) are returned unchanged.

    Returns
    -------
    np.ndarray
        Object array of the same length.
    """
    sub = _VERSION.sub
    # most ids have no dot: skip the regular expression for them (tens of thousands per file)
    return np.array(
        [sub(r"\1", i, count=1) if isinstance(i, str) and "." in i else i for i in ids], dtype=object
    )
