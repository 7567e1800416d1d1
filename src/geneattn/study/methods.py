"""The method comparison of the stats stage: attention, attribution methods and gene-level baselines.

Every gene score is judged against the simulation's planted genes (AUROC), within expression strata
(stratified AUROC), and by its **incremental value** over the gene-level covariates the field uses —
mean expression, detection rate, variance, HVG dispersion residual — with a nested logistic-regression
likelihood-ratio test and a cross-validated ΔAUROC with a bootstrap CI over genes
(`geneattn.stats.incremental`). Scores that use the labels (DE: the oracle of a simulation whose planted
genes are DE by construction; every fine-tuned model's score) are marked.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .._results import OTHER, REF, Results
from ..errors import InputError, one_line
from ..stats import agreement as ag
from ..stats import attribution as at
from ..stats import baselines as bl
from ..stats import incremental as inc
from ..stats import incremental_sets as isets
from ..stats._flexible import gene_clusters
from ..stats.confounds import SCORE_TYPES
from ..stats.run_deltas import gene_means
from . import task
from .inputs import StudyInputs

__all__ = [
    "de_score",
    "gene_baselines",
    "attention_scores",
    "methods_table",
    "incremental_tables",
    "incremental_by_method",
    "run_increment_table",
    "EFFECT_BINS",
]

#: effect-size bins (|log2 fold change| between the lowest and highest study dose) of the recovery plot
EFFECT_BINS = (0.0, 0.5, 1.0, 2.0, 4.0, 16.0)
#: folds of the cross-validated incremental value (genes, stratified by planted)
N_FOLDS = 5
logger = logging.getLogger(__name__)


def de_score(de: pd.DataFrame) -> pd.Series:
    """The per-gene DE score (max |z| of the per-cell Wilcoxon one-vs-rest tests)."""
    d = de[de["method"] == "wilcoxon"]
    return ag.de_gene_score(d if not d.empty else de)


def gene_baselines(inp: StudyInputs) -> dict[str, pd.Series]:
    """Label-free gene-level scores: mean expression, detection, variance, HVG residual, mean rank.

    ``mean_rank`` is minus the mean position among expressing cells, so that higher = nearer the top
    of the ranking (as every other score: higher = more important).
    """
    cov = inp.covariates
    out = {"mean_expression": cov["mean_count"], "detection": cov["detection"], "variance": cov["variance"],
           "hvg_residual": cov["hvg_residual"]}  # fmt: skip
    if inp.stores:
        g = inp.gene_scores(next(iter(inp.stores)))
        g = g[(g["layer"] == "0") & (g["head"] == "0")].drop_duplicates("gene").set_index("gene")
        out["mean_rank"] = -g["mean_position"]
    return out


def attention_scores(inp: StudyInputs, model: str = OTHER) -> dict[str, pd.Series]:
    """One model's attention gene scores (head means): raw, fold, residual, length-adjusted, norm-weighted."""
    g = inp.gene_scores(model)
    g = g[(g["layer"] == "mean") & (g["head"] == "mean")].drop_duplicates("gene").set_index("gene")
    out = {f"attention_{st}": g[st] for st in SCORE_TYPES}
    out["attention_adjusted"] = inp.adjusted_scores(model)
    abg = inp.tables.get("attention_by_gene")
    if abg is not None and "norm_mean" in abg:
        rows = abg[(abg["model"] == model) & (abg["label"] == "__all__")]
        out["attention_norm"] = rows.groupby("gene", observed=True)["norm_mean"].mean()
    return out


def _attribution_scores(res: Results) -> tuple[dict[str, pd.Series], dict[str, float], dict[str, int]]:
    table = res.read_table("attribution")
    scores, secs, cells = {}, {}, {}
    for method, g in table.groupby("method"):
        scores[str(method)] = g.drop_duplicates("gene").set_index("gene")["score_mean"]
        secs[str(method)], cells[str(method)] = (
            float(g["seconds_per_cell"].iloc[0]),
            int(g["cells_used"].iloc[0]),
        )
    return scores, secs, cells


def all_scores(
    inp: StudyInputs, de: pd.DataFrame
) -> tuple[dict[str, pd.Series], dict[str, float], dict[str, int]]:
    """Every gene score of the comparison, with the seconds per cell and cells used of each method."""
    scores, secs, cells = {}, {}, {}
    if OTHER in inp.stores:
        scores.update(attention_scores(inp))
        n = inp.stores[OTHER].n_cells
        for name in [k for k in scores if k.startswith("attention")]:
            cells[name], secs[name] = n, inp.attention_seconds_per_cell
    a_scores, a_secs, a_cells = _attribution_scores(inp.results)
    scores.update(a_scores)
    secs.update(a_secs)
    cells.update(a_cells)
    scores.update(gene_baselines(inp))
    scores["de"] = de_score(de)
    return scores, secs, cells


def methods_table(inp: StudyInputs, de: pd.DataFrame, *, k: int) -> pd.DataFrame:
    """The ``methods`` table: every gene score against the truth and DE (`METHODS_COLUMNS`).

    Each score is judged over the genes it scores; ``uses_labels`` says which scores use the labels.
    """
    scores, secs, cells = all_scores(inp, de)
    table = at.compare_methods({(m, "raw"): s for m, s in scores.items()}, de_score=de_score(de), planted=inp.planted,
                               seconds_per_cell=secs, n_cells=cells, k=k)  # fmt: skip
    table["uses_labels"] = table["method"].map(lambda m: bl.LABEL_USE.get(m, (pd.NA,))[0]).astype("boolean")
    return table


def _controls(inp: StudyInputs, scores: dict[str, pd.Series], seed: int) -> dict[str, pd.Series]:
    """The scores plus the negative control "covariate plus noise" (log mean + N(0, its SD), seeded)."""
    lm = inp.covariates["log_mean"].astype(float)
    noise = np.random.default_rng([seed, 7]).normal(0.0, float(lm.std()), len(lm))
    return {**scores, "covariate_plus_noise": lm + noise}


def _units(inp: StudyInputs) -> tuple[pd.Series | None, pd.Series | None]:
    """``(clusters, model strata)``: programme blocks / matched sets and the simulator's stratum, when known."""
    var = inp.adata.var
    if "matched_set" not in var:
        return None, None
    strata = var["stratum"] if "stratum" in var else None
    return gene_clusters(var, var.index), strata


def incremental_by_method(
    scores: dict[str, pd.Series],
    planted: pd.Series,
    covariates: pd.DataFrame,
    *,
    strata: pd.Series,
    n_boot: int,
    seed: int,
    clusters: pd.Series | None = None,
    model_strata: pd.Series | None = None,
    n_folds: int = N_FOLDS,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """`geneattn.stats.incremental.incremental_table` of every method, skipping those that cannot be done.

    All methods at once first (they share the null-model fits); when that fails, one at a time: a
    method whose incremental value cannot be computed on these genes (e.g. it scores too few planted
    genes for ``n_folds``-fold cross-validation) is left out and named with its reason.

    Returns
    -------
    (table, skipped)
        `INCREMENTAL_COLUMNS` rows of the methods computed; ``{"incremental:<method>": reason}``.
    """

    def table(s: dict[str, pd.Series]) -> pd.DataFrame:
        return inc.incremental_table(s, planted, covariates, strata=strata, clusters=clusters,
                                     model_strata=model_strata, n_boot=n_boot, seed=seed, n_folds=n_folds)  # fmt: skip

    try:
        return table(scores), {}
    except InputError:
        pass
    rows, skipped = [], {}
    for name, score in scores.items():
        try:
            rows.append(table({name: score}))
        except InputError as e:
            skipped[f"incremental:{name}"] = one_line(e)
            logger.warning("incremental value of %s skipped: %s", name, one_line(e))
    rows = [r for r in rows if not r.empty]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=inc.INCREMENTAL_COLUMNS)
    return out.reindex(columns=inc.INCREMENTAL_COLUMNS), skipped


def incremental_tables(
    inp: StudyInputs, de: pd.DataFrame, *, n_boot: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """``(incremental, recovery, incremental_programmes, skipped)`` over the gene covariates (splines).

    The covariates enter as natural splines (`geneattn.stats._flexible`), plus the simulator's
    stratum; the units are programme blocks and matched sets where the data name them (genes
    otherwise). Negative controls (detection, variance, mean rank, covariate plus noise) are rows.
    Empty tables when the data have no ground truth; ``skipped`` names each method (or the whole
    step) that could not be computed on these data, with the reason.
    """
    empty = pd.DataFrame(columns=inc.INCREMENTAL_COLUMNS), pd.DataFrame(), pd.DataFrame()
    if inp.planted is None:
        return (*empty, {})
    n_planted = int(np.asarray(inp.planted, dtype=bool).sum())
    if min(n_planted, len(inp.planted) - n_planted) < N_FOLDS:
        reason = (f"{n_planted} planted and {len(inp.planted) - n_planted} other genes: too few for "
                  f"{N_FOLDS}-fold cross-validation")  # fmt: skip
        logger.warning("incremental value skipped: %s", reason)
        return (*empty, {"incremental": reason})
    scores, _, _ = all_scores(inp, de)
    scores = _controls(inp, scores, seed)
    cov = inp.covariates[list(bl.FIELD_COVARIATES)]
    clusters, model_strata = _units(inp)
    table, skipped = incremental_by_method(scores, inp.planted, cov, strata=inp.strata, n_boot=n_boot, seed=seed,
                                           clusters=clusters, model_strata=model_strata)  # fmt: skip
    var = inp.adata.var
    recovery, programmes = pd.DataFrame(), pd.DataFrame()
    try:
        if "effect_size" in var:
            recovery = inc.recovery_by_effect_size(scores, inp.planted, var["effect_size"], bins=list(EFFECT_BINS),
                                                   strata=inp.strata)  # fmt: skip
        if {"matched_set", "program", "planted"} <= set(var.columns):
            programmes = isets.programme_table(scores, var, cov)
    except InputError as e:
        skipped["recovery"] = one_line(e)
        logger.warning("recovery by effect size / programme skipped: %s", one_line(e))
    return table, recovery, programmes, skipped


def run_increment_table(inp: StudyInputs, deltas: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per run (held-out cells): the background-responder coefficient; and real minus permuted over runs.

    Returns ``(incremental_runs, contrast)``; empty without simulator programmes or control runs.
    """
    var = inp.adata.var
    if deltas.empty or not {"matched_set", "program", "planted"} <= set(var.columns):
        return pd.DataFrame(), {}
    kinds = {
        REF: "pretrained",
        **deltas.drop_duplicates("run").set_index("run")["kind"].astype(str).to_dict(),
    }
    stores = task.load_run_stores(inp.results, sorted(k for k in kinds if k != REF))
    scores = {r: gene_means(st).rename(inp.gene_map) for r, st in stores.items()}
    cov = inp.covariates[list(bl.FIELD_COVARIATES)]
    runs = isets.run_increments(scores, kinds, var, cov)
    return runs, isets.run_contrast(runs)
