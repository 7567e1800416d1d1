"""The self-contained HTML report (``report.html``) and its figures."""

from __future__ import annotations

from .build import (
    REPORT_METRICS,
    REPORT_TABLES,
    SECTIONS,
    ReportInputMissing,
    build,
    build_from_results,
    check_inputs,
)
from .figures import FIGURES, make_figures, save_figures

__all__ = [
    "build",
    "build_from_results",
    "make_figures",
    "save_figures",
    "FIGURES",
    "check_inputs",
    "REPORT_TABLES",
    "REPORT_METRICS",
    "SECTIONS",
    "ReportInputMissing",
]
