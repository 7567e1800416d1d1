"""Plots (scanpy's ``sc.pl`` idiom) of what `geneattn.tl` wrote into an AnnData; each returns a Figure.

Thin over `geneattn.plotting` (which draws tables) and `geneattn.get` (which reads them from ``adata``).
Nothing is saved or shown: call ``fig.savefig(...)``.
"""

from __future__ import annotations

from ._plots import attention_change, gene_attention, top_genes

__all__ = ["top_genes", "gene_attention", "attention_change"]
