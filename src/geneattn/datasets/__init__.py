"""Built-in datasets: a simulated nutlin-3a dose response scanpy's packaged PBMC 68k subset, and a positive control."""

from __future__ import annotations

from ._genes import background_genes, curated_genes, symbol_to_ensembl
from .nutlin_sim import DOSES, nutlin_sim
from .pbmc import pbmc68k
from .positive_control import switch_control

__all__ = [
    "nutlin_sim",
    "pbmc68k",
    "switch_control",
    "DOSES",
    "curated_genes",
    "background_genes",
    "symbol_to_ensembl",
]
