"""Figures of the study: each function takes tables (or an ``ax``) and returns Axes or a Figure.

No function saves or shows anything: the pipeline saves (``figure.savefig``). Styles are applied
with `matplotlib.pyplot.rc_context` inside each function, never globally.
"""

from __future__ import annotations

from .ablation import head_ablation
from .change import change_by_rank, head_change_heatmap
from .classification import confusion
from .confounds import confound_summary, length_dependence
from .genes import de_vs_attention, expression_by_class
from .methods import method_comparison
from .recovery import incremental_value, recovery_by_effect_size
from .top_genes import top_genes
from .umap import umap

__all__ = [
    "umap",
    "top_genes",
    "change_by_rank",
    "head_change_heatmap",
    "expression_by_class",
    "de_vs_attention",
    "confusion",
    "length_dependence",
    "confound_summary",
    "method_comparison",
    "incremental_value",
    "recovery_by_effect_size",
    "head_ablation",
]
