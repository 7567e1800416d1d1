"""Render ``report.html``: one self-contained page (figures inlined as base64 PNG, no network)."""

from __future__ import annotations

import base64
import dataclasses
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
from .._results import MissingResult, Results
from ..stats.wells import WELL_CONFOUND_COLUMNS

__all__ = [
    "build",
    "build_from_results",
    "check_inputs",
    "REPORT_TABLES",
    "REPORT_METRICS",
    "SECTIONS",
    "ReportInputMissing",
]

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
HEAD_COLUMNS = ["ablation", "kind", "accuracy", "d_accuracy", "d_accuracy_low", "d_accuracy_high", "p_accuracy_holm",
                "d_loglik", "d_loglik_low", "d_loglik_high", "p_loglik_holm", "norm_pct_change", "task_norm_effect",
                "task_pval_adj", "unit"]  # fmt: skip
INCREMENTAL_COLUMNS = ["method", "control", "uses_labels", "n_genes", "auroc", "stratified_auroc", "coef_score",
                       "pvalue", "n_clusters", "unit", "delta_auroc", "delta_lo", "delta_hi"]  # fmt: skip
PREREG_COLUMNS = ["contrast", "n_real", "n_permuted", "mean_real", "mean_permuted", "effect", "ci_low", "ci_high",
                  "pval_adj", "margin", "eq_low", "eq_high", "mde", "decision"]  # fmt: skip
RUN_COLUMNS = ["run", "kind", "accuracy", "group_accuracy", "within_low_accuracy", "within_high_accuracy"]
CLASS_COLUMNS = ["gene", "class", "expressed_share", "detection", "detection_low", "detection_high", "cut_share",
                 "cut_share_of_expressing", "median_position", "position_low",
                 "position_high", "pretrained_rank", "finetuned_rank_min", "finetuned_rank_max", "permuted_rank_min",
                 "permuted_rank_max"]  # fmt: skip
_VERSIONED = ("numpy", "pandas", "scanpy", "anndata", "torch", "transformers", "datasets", "matplotlib")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A table the report shows: the columns shown (those the table has) and at most ``n_rows`` rows."""

    columns: tuple[str, ...]
    n_rows: int = 30


@dataclasses.dataclass(frozen=True)
class Section:
    """A section of the page: its anchor, its heading and the tables it shows (names in `REPORT_TABLES`)."""

    id: str
    heading: str
    tables: tuple[str, ...] = ()


#: the report's inputs, declared once: every table the page shows, read through `geneattn.get.table`
REPORT_TABLES: dict[str, TableSpec] = {
    "highlight_by_class": TableSpec(tuple(CLASS_COLUMNS), 40),
    "preregistered": TableSpec(tuple(PREREG_COLUMNS)),
    "run_scores": TableSpec(tuple(RUN_COLUMNS), 40),
    "confound_wells": TableSpec(tuple(c for c in WELL_CONFOUND_COLUMNS if not c.startswith("abs_"))),
    "power": TableSpec(("contrast", "sd", "margin", *(f"power_k{k}" for k in (2, 3, 4, 6, 8, 10, 15, 20)))),
    "heads": TableSpec(tuple(HEAD_COLUMNS), 60),
    "incremental": TableSpec(tuple(INCREMENTAL_COLUMNS), 40),
    "incremental_programmes": TableSpec(
        ("method", "programme", "unit", "n_sets", "n_genes", "placement", "placement_pvalue", "wald_pvalue"),
        60,
    ),
    "incremental_runs": TableSpec(("run", "kind", "n_genes", "placement", "coef_score", "wald_pvalue"), 40),
    "methods": TableSpec(
        (
            "method",
            "score_type",
            "auroc_planted",
            "spearman_vs_de",
            "topk_overlap_de",
            "seconds_per_cell",
            "n_cells",
        )
    ),  # fmt: skip
    "top_genes": TableSpec(("model", "rank", "gene", "fold_mean", "n_cells"), 40),
}
#: the sections of ``metrics.json`` the page reads (each must be present, possibly empty)
REPORT_METRICS = ("verdict", "data", "pretraining", "classification", "runs", "ensemble", "attention", "agreement",
                  "confounds", "task_attributable", "significance", "highlight", "input", "skipped")  # fmt: skip
SECTIONS = (
    Section("verdict", "Verdict"),
    Section("data", "1. Data"),
    Section("model", "2. Model and accuracy", ("run_scores",)),
    Section("moved", "3. Where attention moved"),
    Section("genes", "4. Which genes", ("highlight_by_class",)),
    Section("de", "5. Agreement with differential expression"),
    Section("confound", "6. The confound: genes expressed per cell", ("confound_wells",)),
    Section("task", "7. Is the change about the task?", ("preregistered", "power")),
    Section("heads", "8. Heads: norm change and causal ablation", ("heads",)),
    Section(
        "methods",
        "9. Method comparison and incremental value",
        ("incremental", "incremental_programmes", "incremental_runs", "methods", "top_genes"),
    ),
    Section("run", "10. Run details"),
)
#: the stage that renders the page: it is running while the page is made, so it has no row
SELF_STAGE = "report"


class ReportInputMissing(MissingResult):
    """A table or ``metrics.json`` section that the report declares is absent, and no reason is recorded."""


def check_inputs(
    tables: Mapping[str, pd.DataFrame | None], metrics: Mapping[str, object], skipped: Mapping[str, str]
) -> None:
    """Raise `ReportInputMissing` naming every declared input that is absent without a recorded reason.

    A declared table that is absent (or None) must have a reason in ``skipped`` (``metrics.json["skipped"]``,
    written by the stats stage); a declared ``metrics.json`` section must be present.
    """
    gone = [n for n in REPORT_TABLES if tables.get(n) is None and n not in skipped]
    gone += [f"metrics.json[{k!r}]" for k in REPORT_METRICS if k not in metrics]
    if gone:
        msg = (f"the report's inputs {', '.join(gone)} are missing and metrics.json records no reason; "
               "re-run the stats stage (`geneattn stats DIR`)")  # fmt: skip
        raise ReportInputMissing(msg)


def _defined(x: Any) -> Any:
    """``x``, or `ReportInputMissing` when the page reads a key that its inputs do not hold (a bug)."""
    import jinja2

    if isinstance(x, jinja2.Undefined):
        msg = f"the report reads {x._undefined_name!r}, which its inputs do not hold"
        raise ReportInputMissing(msg)
    return x


def _fmt(x: Any, digits: int = 3) -> str:
    """A number for the page; a null value (not computed, e.g. a NaN) is "n/a"."""
    x = _defined(x)
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
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
    x = _defined(x)
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def _ci(x: object) -> str:
    """A ``[low, high]`` proportion interval as percentages."""
    x = _defined(x)
    if x is None or len(x) != 2 or None in x:
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


def _rows(df: pd.DataFrame, spec: TableSpec) -> list[dict[str, object]]:
    cols = [c for c in spec.columns if c in df.columns]
    return [
        {c: _fmt(v) if not isinstance(v, str) else v for c, v in r.items()}
        for r in df[cols].head(spec.n_rows).to_dict("records")
    ]


def _table_block(df: pd.DataFrame | None, spec: TableSpec, reason: str | None) -> dict[str, object]:
    """What the page shows for one declared table: its rows, or why there are none."""
    if df is None:
        return {"rows": [], "note": f"not computed: {reason}"}
    if df.empty:
        return {"rows": [], "note": f"not computed: {reason}" if reason else "no rows"}
    return {"rows": _rows(df, spec), "note": None}


def _undefined_class() -> type:
    """Missing keys may be tested (``{% if m.x %}``) but never printed: printing one is a bug, raised."""
    import jinja2

    class _Undefined(jinja2.ChainableUndefined):
        def __str__(self) -> str:
            _defined(self)
            return ""  # pragma: no cover - _defined raised

        __html__ = __str__

    return _Undefined


def _env() -> Any:
    import jinja2
    import markupsafe

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=_undefined_class(),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    env.filters["ci"] = lambda x: markupsafe.Markup(_ci(x))
    env.filters["tertile"] = lambda t: markupsafe.escape(_tertile(t))
    return env


def _stage_rows(stages: pd.DataFrame, plan: Mapping[str, object]) -> list[dict[str, object]]:
    """The run-details rows: stages in run order, without the report stage (it is running now)."""
    estimates = plan.get("stages") or {}
    rows = stages[stages["name"] != SELF_STAGE].to_dict("records")
    return [{**r, "estimate": estimates.get(r["name"])} for r in rows]


def _context(figures: Mapping[str, Path], tables: Mapping[str, pd.DataFrame | None], *, metrics: Mapping[str, object],
             config: Mapping[str, object], stages: pd.DataFrame, plan: Mapping[str, object],
             title: str) -> dict[str, object]:  # fmt: skip
    """Everything the template reads."""
    skipped = {str(k): str(v) for k, v in (metrics.get("skipped") or {}).items()}
    check_inputs(tables, metrics, skipped)
    images = {name: {"src": _img(p), "caption": CAPTIONS.get(name, ""), "alt": name.replace("_", " ")}
              for name, p in figures.items() if p.is_file()}  # fmt: skip
    stage_rows = _stage_rows(stages, plan)
    return {
        "title": title,
        "m": dict(metrics),
        "fig": images,
        "sections": SECTIONS,
        "headings": {s.id: s.heading for s in SECTIONS},
        "t": {n: _table_block(tables.get(n), spec, skipped.get(n)) for n, spec in REPORT_TABLES.items()},
        "plan": dict(plan),
        "config": dict(config),
        "config_json": json.dumps(dict(config), indent=2, default=str),
        "versions": _versions(),
        "stages": stage_rows,
        "total_seconds": sum(float(r.get("seconds") or 0) for r in stage_rows),
    }


def build(
    figures: Mapping[str, Figure | Path],
    tables: Mapping[str, pd.DataFrame | None],
    out_dir: str | os.PathLike[str],
    *,
    metrics: Mapping[str, object],
    config: Mapping[str, object] | None = None,
    stages: pd.DataFrame | None = None,
    plan: Mapping[str, object] | None = None,
    title: str = "geneattn report",
) -> Path:
    """Save the figures (when Figures are given) and render ``out_dir/report.html``.

    Parameters
    ----------
    figures
        name -> matplotlib Figure (saved to ``out_dir/figures/<name>.{png,svg}``) or path of a PNG.
    tables
        name -> DataFrame for every table of `REPORT_TABLES`; one that was not computed is absent
        (or None) and ``metrics["skipped"][name]`` says why.
    out_dir
        Where ``report.html`` is written (atomically).
    metrics
        ``metrics.json`` (every section of `REPORT_METRICS`).
    config, stages, plan
        The resolved config, the stages as run (`geneattn.get.stages_df`) and ``plan.json``.
    title
        Page title.

    Returns
    -------
    The path of ``report.html``.

    Raises
    ------
    ReportInputMissing
        A declared table or metrics section is absent and no reason is recorded, or the page reads a
        key that its inputs do not hold.
    """
    from .figures import save_figures

    out = Path(out_dir)
    figs = {k: v for k, v in figures.items() if isinstance(v, Figure)}
    paths = {k: Path(v) for k, v in figures.items() if not isinstance(v, Figure)}
    if figs:
        paths.update(save_figures(figs, out / "figures", close=False))
    if stages is None:
        stages = pd.DataFrame(columns=["name", "status", "seconds", "summary", "hash"])
    ctx = _context(
        paths, tables, metrics=metrics, config=config or {}, stages=stages, plan=plan or {}, title=title
    )
    html = _env().get_template("report.html.j2").render(**ctx)
    path = write_text(out / "report.html", html)
    logger.info("report: wrote %s (%d figures)", path, len(ctx["fig"]))
    return path


def _table_or_none(results: Results, name: str) -> pd.DataFrame | None:
    try:
        return get.table(results, name)
    except MissingResult:
        return None


def build_from_results(results: Results, *, redraw: bool) -> Path:
    """Render ``report.html`` of a results directory, reading every input through `geneattn.get`.

    ``redraw`` re-draws the figures from the tables first; otherwise the saved PNGs are used.
    """
    from .figures import FIGURES, make_figures, save_figures

    config = get.config(results)
    if redraw:
        figs = make_figures(results, highlight=config["highlight"], top_k=int(config["top_k"]))
        figures: dict[str, Figure | Path] = dict(save_figures(figs, results.figures))
    else:
        figures = {n: results.figure(n) for n in FIGURES if results.figure(n).is_file()}
    tables = {n: _table_or_none(results, n) for n in REPORT_TABLES}
    return build(figures, tables, results.root, metrics=get.metrics(results), config=config,
                 stages=get.stages_df(results), plan=get.plan(results))  # fmt: skip
