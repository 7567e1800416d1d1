"""Render ``report.html``: one self-contained page (figures inlined as base64 PNG, no network)."""

from __future__ import annotations

import base64
import importlib.metadata as md
import json
import logging
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .. import get
from .._atomic import write_text
from .._results import Results

__all__ = ["build", "build_from_results"]

logger = logging.getLogger(__name__)

CAPTIONS = {
    "umap": "UMAP of the cells, coloured by class (left) and by the number of genes expressed per cell (right).",
    "confusion": "Confusion matrices of the fine-tuned classifier on the held-out test wells (row-normalised colours, counts written).",
    "change_by_rank": "Percentage change of attention received (fold over uniform), fine-tuned vs pretrained, by rank position, per layer "
    "(rows) and head (columns); bands: bootstrap over cells of this one pair of networks (descriptive, not a test of the task); "
    "dashed: where the highlighted genes sit in the lowest and highest class.",
    "top_genes": "Genes with the highest attention (fold over uniform, mean over layers and heads); highlighted genes in red.",
    "de_vs_attention": "Left: expression of the most attended genes across classes (z-scored). Right: DE score vs attention per gene.",
    "confounds": "Left: attention by rank position for cells with few to many genes expressed. Right: correlation of gene "
    "attention with the genes expressed per cell, before (raw) and after (fold, residual) control.",
    "heads": "Left: per-head change of the norm of the head's output (Kobayashi et al. 2020), fine-tuned vs pretrained on the same "
    "cells (descriptive). Right: change of test accuracy when the head is ablated (registered attention function); * = the "
    "interval over test wells lies below 0.",
    "methods": "Left: AUROC of each gene score against the planted genes (over the genes it scores). Right: its incremental value "
    "over gene-level covariates (cross-validated ΔAUROC with a bootstrap CI over genes); '(labels)' marks scores that use the labels.",
    "recovery": "Recovery of planted genes within expression strata, by the size of the planted effect.",
}
HEAD_COLUMNS = ["ablation", "accuracy", "d_accuracy", "d_accuracy_low", "d_accuracy_high", "d_loglik", "d_loglik_low",
                "d_loglik_high", "norm_pct_change", "task_norm_effect", "task_pval_adj"]  # fmt: skip
INCREMENTAL_COLUMNS = ["method", "uses_labels", "n_genes", "auroc", "stratified_auroc", "auroc_covariates", "auroc_full",
                       "delta_auroc", "delta_lo", "delta_hi", "lr_chi2", "lr_pvalue"]  # fmt: skip
PREREG_COLUMNS = [
    "contrast",
    "n_real",
    "n_permuted",
    "mean_real",
    "mean_permuted",
    "effect",
    "ci_low",
    "ci_high",
    "pval_adj",
]
CLASS_COLUMNS = ["gene", "class", "detection", "detection_low", "detection_high", "median_position", "position_low",
                 "position_high", "pretrained_rank", "finetuned_rank_min", "finetuned_rank_max", "permuted_rank_min",
                 "permuted_rank_max"]  # fmt: skip
_VERSIONED = ("numpy", "pandas", "scanpy", "anndata", "torch", "transformers", "datasets", "matplotlib")


def _fmt(x: Any, digits: int = 3) -> str:
    import jinja2

    if isinstance(x, jinja2.Undefined) or x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e15:
            return f"{int(x):,}"
        return f"{x:,.{digits}g}" if abs(x) < 1e3 else f"{x:,.0f}"
    return str(x)


def _pct(x: Any) -> str:
    import jinja2

    return "n/a" if x is None or isinstance(x, jinja2.Undefined) else f"{100 * float(x):.1f}%"


def _ci(x: object) -> str:
    """A ``[low, high]`` proportion interval as percentages."""
    import jinja2

    if x is None or isinstance(x, jinja2.Undefined) or len(x) != 2 or None in x:
        return "n/a"
    return f"{100 * float(x[0]):.1f}&ndash;{100 * float(x[1]):.1f}%"


def _tertile(t: Mapping[str, object]) -> str:
    """One genes-expressed tertile: its range, and model vs baseline accuracy."""
    lo, hi = t.get("n_genes", [None, None])
    accs = ", ".join(
        f"{k} {_pct(v)}" for k, v in t.items() if k not in ("tertile", "n_genes", "n_cells") and v is not None
    )
    return f"{_fmt(lo)}\u2013{_fmt(hi)} genes ({t.get('n_cells')} cells): {accs}"


def _img(path: Path) -> str:
    """A PNG file as a ``data:`` URI (the page needs no other file)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("geneattn", *_VERSIONED):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _rows(df: pd.DataFrame | None, columns: list[str], n: int = 30) -> list[dict[str, object]]:
    if df is None or df.empty:
        return []
    cols = [c for c in columns if c in df.columns]
    return [
        {c: _fmt(v) if not isinstance(v, str) else v for c, v in r.items()}
        for r in df[cols].head(n).to_dict("records")
    ]


def _env() -> Any:
    import jinja2
    import markupsafe

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    env.filters["ci"] = lambda x: markupsafe.Markup(_ci(x))
    env.filters["tertile"] = lambda t: markupsafe.escape(_tertile(t))
    return env


def _context(figures: Mapping[str, Path], tables: Mapping[str, pd.DataFrame], *, metrics: Mapping[str, object],
             config: Mapping[str, object], manifest: Mapping[str, object], title: str) -> dict[str, object]:  # fmt: skip
    """Everything the template reads."""
    images = {name: {"src": _img(p), "caption": CAPTIONS.get(name, ""), "alt": name.replace("_", " ")}
              for name, p in figures.items() if p.is_file()}  # fmt: skip
    stages = manifest.get("stages", {})
    plan = (manifest.get("plan") or {}).get("stages", {})
    method_cols = ["method", "score_type", "auroc_planted", "spearman_vs_de", "topk_overlap_de",
                   "seconds_per_cell", "n_cells"]  # fmt: skip
    return {
        "title": title,
        "m": dict(metrics),
        "fig": images,
        "top_rows": _rows(tables.get("top_genes"), ["model", "rank", "gene", "fold_mean", "n_cells"], n=40),
        "head_rows": _rows(tables.get("heads"), HEAD_COLUMNS, n=60),
        "method_rows": _rows(tables.get("methods"), method_cols),
        "inc_rows": _rows(tables.get("incremental"), INCREMENTAL_COLUMNS, n=40),
        "prereg_rows": _rows(tables.get("preregistered"), PREREG_COLUMNS),
        "class_rows": _rows(tables.get("highlight_by_class"), CLASS_COLUMNS, n=40),
        "plan": manifest.get("plan"),
        "config": dict(config),
        "config_json": json.dumps(dict(config), indent=2, default=str),
        "versions": _versions(),
        "stages": [
            {
                "name": k,
                "seconds": v.get("seconds"),
                "status": v.get("status"),
                "summary": v.get("summary", ""),
                "hash": v.get("hash"),
                "estimate": plan.get(k),
            }
            for k, v in stages.items()
        ],  # fmt: skip
        "total_seconds": sum(float(v.get("seconds") or 0) for v in stages.values()),
    }


def build(
    figures: Mapping[str, Figure | Path],
    tables: Mapping[str, pd.DataFrame],
    out_dir: str | os.PathLike[str],
    *,
    metrics: Mapping[str, object] | None = None,
    config: Mapping[str, object] | None = None,
    manifest: Mapping[str, object] | None = None,
    title: str = "geneattn report",
) -> Path:
    """Save the figures (when Figures are given) and render ``out_dir/report.html``.

    Parameters
    ----------
    figures
        name -> matplotlib Figure (saved to ``out_dir/figures/<name>.{png,svg}``) or path of a PNG.
    tables
        name -> DataFrame (``top_genes``, ``significance``, ``methods`` are listed).
    out_dir
        Where ``report.html`` is written (atomically).
    metrics, config, manifest
        ``metrics.json``, the resolved config and ``manifest.json`` (run details, timings).
    title
        Page title.

    Returns
    -------
    The path of ``report.html``.
    """
    from .figures import save_figures

    out = Path(out_dir)
    figs = {k: v for k, v in figures.items() if isinstance(v, Figure)}
    paths = {k: Path(v) for k, v in figures.items() if not isinstance(v, Figure)}
    if figs:
        paths.update(save_figures(figs, out / "figures", close=False))
    ctx = _context(
        paths, tables, metrics=metrics or {}, config=config or {}, manifest=manifest or {}, title=title
    )
    html = _env().get_template("report.html.j2").render(**ctx)
    path = write_text(out / "report.html", html)
    logger.info("report: wrote %s (%d figures)", path, len(ctx["fig"]))
    return path


def build_from_results(results: Results, *, redraw: bool) -> Path:
    """Render ``report.html`` of a results directory, reading every result through `geneattn.get`.

    ``redraw`` re-draws the figures from the tables first; otherwise the saved PNGs are used.
    """
    import tomllib

    from .figures import FIGURES, make_figures, save_figures

    config = tomllib.loads(results.config.read_text(encoding="utf-8")) if results.config.is_file() else {}
    manifest = results.read_json(results.manifest) if results.manifest.is_file() else {}
    if redraw:
        figs = make_figures(
            results, highlight=config.get("highlight", ["MDM2"]), top_k=int(config.get("top_k", 20))
        )
        figures: dict[str, Figure | Path] = dict(save_figures(figs, results.figures))
    else:
        figures = {n: results.figure(n) for n in FIGURES if results.figure(n).is_file()}
    tables = {
        n: get.table(results, n) for n in ("top_genes", "significance", "methods") if results.has_table(n)
    }
    return build(
        figures, tables, results.root, metrics=results.read_metrics(), config=config, manifest=manifest
    )
