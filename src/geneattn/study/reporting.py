"""Stages ``figures`` (every figure, PNG + SVG) and ``report`` (``report.html``)."""

from __future__ import annotations

from ..report import FIGURES, build_from_results, make_figures, save_figures
from ._stage import ALL, StageContext, stage


@stage(
    "figures",
    deps=("stats",),
    reads=("highlight", "top_k"),
    outputs=tuple(f"figures/{n}.png" for n in FIGURES),
)
def figures(ctx: StageContext) -> str:
    """Every figure from the tables, saved as PNG + SVG in ``figures/``."""
    figs = make_figures(ctx.results, highlight=ctx.config.highlight, top_k=ctx.config.top_k)
    save_figures(figs, ctx.results.figures)
    return f"{len(figs)} figures: {', '.join(figs)}"


# the report shows the resolved configuration, so it reads every field
@stage("report", deps=("figures",), reads=ALL, outputs=("report.html",))
def report(ctx: StageContext) -> str:
    """``report.html`` (self-contained)."""
    return f"wrote {build_from_results(ctx.results, redraw=False)}"
