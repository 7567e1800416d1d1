"""The self-contained HTML report (``report.html``) and its figures."""

from __future__ import annotations

from .build import build, build_from_results
from .figures import FIGURES, make_figures, save_figures

__all__ = ["build", "build_from_results", "make_figures", "save_figures", "FIGURES"]
