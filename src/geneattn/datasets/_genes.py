"""Gene tables shipped with geneattn (real symbols and Ensembl ids; see ``data/README.md``)."""

from __future__ import annotations

import functools
from importlib import resources

import pandas as pd

__all__ = ["curated_genes", "background_genes", "symbol_to_ensembl"]


def _read(name: str) -> pd.DataFrame:
    with resources.files(__package__).joinpath("data", name).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype={"symbol": str, "ensembl_id": str})


@functools.cache
def _curated() -> pd.DataFrame:
    return _read("curated_genes.csv")


@functools.cache
def _background() -> pd.DataFrame:
    return _read("background_genes.csv")


def curated_genes() -> pd.DataFrame:
    """Hand-curated genes of the nutlin-3a simulation.

    Returns
    -------
    pandas.DataFrame
        Columns ``symbol, ensembl_id, category, direction, lfc_at_10, base, ec50, hill``
        (a fresh copy; see ``datasets/data/README.md`` for their meaning and sources).
    """
    return _curated().copy()


def background_genes() -> pd.DataFrame:
    """Background genes (real symbols and GENCODE v44 Ensembl ids), in their fixed file order.

    Returns
    -------
    pandas.DataFrame
        Columns ``symbol, ensembl_id, in_pbmc68k`` (a fresh copy).
    """
    return _background().copy()


def symbol_to_ensembl() -> dict[str, str]:
    """Symbol -> Ensembl gene id over both shipped tables (about 4,200 genes).

    Returns
    -------
    dict[str, str]
        Mapping from HGNC symbol to version-less Ensembl gene id.
    """
    table = pd.concat([_curated()[["symbol", "ensembl_id"]], _background()[["symbol", "ensembl_id"]]])
    return dict(zip(table["symbol"], table["ensembl_id"], strict=True))
