"""The self-contained HTML report (``report.html``), its figures and the numbers it quotes."""

from __future__ import annotations

from .build import build, build_from_results
from .figures import FIGURES, make_figures, save_figures
from .summary import compute_metrics

__all__ = ["build", "build_from_results", "make_figures", "save_figures", "compute_metrics", "FIGURES"]
