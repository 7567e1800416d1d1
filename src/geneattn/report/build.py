"""Render ``report.html``: one self-contained page (figures inlined as base64 PNG, no network)."""

from __future__ import annotations

import base64
import importlib.metadata as md
import json
import logging
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .._atomic import write_text

__all__ = ["build", "build_from_results"]

logger = logging.getLogger(__name__)

CAPTIONS = {
    "umap": "UMAP of the cells, coloured by class (left) and by the number of genes expressed per cell (right).",
    "confusion": "Confusion matrices of the fine-tuned classifier on the held-out test cells (row-normalised colours, counts written).",
    "change_by_rank": "Percentage change of attention received (fold over uniform), fine-tuned vs pretrained, by rank position, "
    "per layer (rows) and head (columns); bands: cell-bootstrap 95% intervals; dashed: mean rank of the highlighted genes.",
    "top_genes": "Genes with the highest attention (fold over uniform, mean over layers and heads); highlighted genes in red.",
    "de_vs_attention": "Left: expression of the most attended genes across classes (z-scored). Right: DE score vs attention per gene.",
    "confounds": "Left: attention by rank position for cells with few to many genes expressed. Right: correlation of gene "
    "attention with the genes expressed per cell, before (raw) and after (fold, residual) control.",
    "head_norms": "Per-head change of the norm of the head's output (Kobayashi et al. 2020); * = significant after Holm correction.",
    "methods": "Recovery of the true signal by each gene score (AUROC for planted genes on simulated data, else Spearman vs DE).",
}
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


def _img(fig_or_path: Any) -> str:
    if isinstance(fig_or_path, str | Path):
        data = Path(fig_or_path).read_bytes()
    else:
        import io

        buf = io.BytesIO()
        fig_or_path.savefig(buf, format="png", bbox_inches="tight")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("geneattn", *_VERSIONED):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _rows(df: pd.DataFrame | None, columns: list[str], n: int = 30) -> list[dict[str, Any]]:
    if df is None or df.empty:
        return []
    cols = [c for c in columns if c in df.columns]
    return [
        {c: _fmt(v) if not isinstance(v, str) else v for c, v in r.items()}
        for r in df[cols].head(n).to_dict("records")
    ]


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    return env


def build(
    adata: Any,
    figures: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    *,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    manifest: Mapping[str, Any] | None = None,
    title: str = "geneattn report",
) -> Path:
    """Save the figures (when Figures are given) and render ``out_dir/report.html``.

    Parameters
    ----------
    adata
        The study's cells (used for the data summary when ``metrics`` lacks it; may be None).
    figures
        name -> matplotlib Figure (saved to ``out_dir/figures/<name>.{png,svg}``) or path of a PNG.
    tables
        name -> DataFrame (``top_genes``, ``significance``, ``methods``, ``agreement`` are listed).
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
    figs = {k: v for k, v in figures.items() if not isinstance(v, str | Path)}
    paths = {k: Path(v) for k, v in figures.items() if isinstance(v, str | Path)}
    if figs:
        paths.update(save_figures(figs, out / "figures", close=False))
    m = dict(metrics or {})
    if not m.get("data") and adata is not None:
        m["data"] = {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars),
                     "classes": {str(k): int(v) for k, v in adata.obs["label"].value_counts(sort=False).items()}
                     if "label" in adata.obs else {}}  # fmt: skip
    images = {name: {"src": _img(p), "caption": CAPTIONS.get(name, ""), "alt": name.replace("_", " ")}
              for name, p in paths.items() if p.is_file()}  # fmt: skip
    sig = tables.get("significance")
    heads = sig[(sig["test"] == "paired_head")] if sig is not None and "test" in sig else None
    stages = (manifest or {}).get("stages", {})
    ctx = {
        "title": title,
        "m": m,
        "fig": images,
        "top_rows": _rows(tables.get("top_genes"), ["model", "rank", "gene", "fold_mean", "n_cells"], n=40),
        "head_rows": _rows(heads, ["layer", "head", "metric", "n", "pct_change", "pval", "pval_adj"], n=60),
        "method_rows": _rows(
            tables.get("methods"),
            [
                "method",
                "score_type",
                "auroc_planted",
                "spearman_vs_de",
                "topk_overlap_de",
                "seconds_per_cell",
                "n_cells",
            ],
        ),  # fmt: skip
        "config": dict(config or {}),
        "config_json": json.dumps(dict(config or {}), indent=2, default=str),
        "versions": _versions(),
        "stages": [
            {
                "name": k,
                "seconds": v.get("seconds"),
                "status": v.get("status"),
                "summary": v.get("summary", ""),
                "hash": v.get("hash"),
            }
            for k, v in stages.items()
        ],  # fmt: skip
        "total_seconds": sum(float(v.get("seconds") or 0) for v in stages.values()),
    }
    html = _env().get_template("report.html.j2").render(**ctx)
    path = write_text(out / "report.html", html)
    logger.info("report: wrote %s (%d figures)", path, len(images))
    return path


def build_from_results(results_dir: str | Path, *, make_new_figures: bool = True) -> Path:
    """Rebuild ``report.html`` of a results directory (re-drawing the figures when ``make_new_figures``)."""
    import tomllib

    from .figures import FIGURES, make_figures, save_figures

    root = Path(results_dir)
    cfg_path, man_path, met_path = root / "config.toml", root / "manifest.json", root / "metrics.json"
    config = tomllib.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    metrics = json.loads(met_path.read_text()) if met_path.is_file() else {}
    manifest = json.loads(man_path.read_text()) if man_path.is_file() else {}
    if make_new_figures:
        figs = make_figures(
            root, highlight=config.get("highlight", ["MDM2"]), top_k=int(config.get("top_k", 20))
        )
        figures: dict[str, Any] = dict(save_figures(figs, root / "figures"))
    else:
        figures = {
            n: root / "figures" / f"{n}.png" for n in FIGURES if (root / "figures" / f"{n}.png").is_file()
        }
    tables = {p.stem: pd.read_parquet(p) for p in sorted((root / "tables").glob("*.parquet"))
              if p.stem in ("top_genes", "significance", "methods", "agreement")}  # fmt: skip
    return build(None, figures, tables, root, metrics=metrics, config=config, manifest=manifest)
