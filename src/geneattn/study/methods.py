"""The method comparison of the stats stage: attention vs attribution methods and gene-level baselines."""

from __future__ import annotations

import pandas as pd
import torch

from .._results import OTHER, Results
from ..stats import agreement as ag
from ..stats import attribution as at
from ..stats.confounds import SCORE_TYPES
from .inputs import StudyInputs

__all__ = ["de_score", "gene_baselines", "methods_table"]

#: attribution scores that are signed towards the target class: importance is their magnitude
_SIGNED = ("grad_input", "integrated_gradients", "deletion_prob")


def de_score(de: pd.DataFrame) -> pd.Series:
    """The per-gene DE score (max |z| of the per-cell Wilcoxon one-vs-rest tests)."""
    d = de[de["method"] == "wilcoxon"]
    return ag.de_gene_score(d if not d.empty else de)


def gene_baselines(inp: StudyInputs) -> dict[str, pd.Series]:
    """Trivial gene-level scores: mean rank (higher = nearer the top) and detection rate."""
    model = next(iter(inp.stores))
    g = inp.gene_scores(model)
    g = g[(g["layer"] == "0") & (g["head"] == "0")].drop_duplicates("gene").set_index("gene")
    return {"mean_rank": -g["mean_position"], "detection": g["n_cells"] / inp.stores[model].n_cells}


def _attention_scores(inp: StudyInputs) -> dict[tuple[str, str], pd.Series]:
    g = inp.gene_scores(OTHER)
    g = g[(g["layer"] == "mean") & (g["head"] == "mean")].drop_duplicates("gene").set_index("gene")
    return {("attention", st): g[st] for st in SCORE_TYPES}


def _attention_seconds(res: Results, n_models: int) -> float:
    """Seconds per cell and model of the attention stage (from its params and the manifest)."""
    params = res.read_json(res.attention / "params.json") if (res.attention / "params.json").is_file() else {}
    manifest = res.read_json(res.manifest) if res.manifest.is_file() else {}
    seconds = (manifest.get("stages", {}).get("attention") or {}).get("seconds")
    n = params.get("n_cells")
    return float(seconds) / float(n) / max(1, n_models) if seconds and n else float("nan")


def _attribution_runs(res: Results, inp: StudyInputs, *, seed: int, n_cells: int, ig_steps: int,
                      deletion_cells: int, deletion_top_k: int, batch_size: int) -> list[at.TokenScores]:  # fmt: skip
    """Rollout, gradient x input, integrated gradients and in-silico deletion of the fine-tuned model."""
    from datasets import load_from_disk

    from ..models import load
    from ..tokenize import load_vocab

    torch.manual_seed(seed)
    vocab = load_vocab(res.tokens)
    pad, mask = int(vocab.pad_id), int(vocab.mask_id)
    model = load(res.model(OTHER), task="classifier")
    cells = at.cells_from_tokens(load_from_disk(str(res.tokens)), n_cells=n_cells, seed=seed)
    tg = at.targets_for(model, cells, pad_id=pad, batch_size=batch_size)
    runs = [at.rollout(model, cells, pad_id=pad, batch_size=batch_size),
            at.grad_input(model, cells, tg, pad_id=pad, batch_size=batch_size),
            at.integrated_gradients(model, cells, tg, mask_id=mask, pad_id=pad, n_steps=ig_steps,
                                    batch_size=batch_size)]  # fmt: skip
    labels = None if cells.labels is None else cells.labels[:deletion_cells]
    sub = at.Cells(cells.input_ids[:deletion_cells], cells.cell_ids[:deletion_cells], labels)
    runs += list(at.deletion(model, sub, tg[:deletion_cells], top_k=deletion_top_k, pad_id=pad,
                             batch_size=max(batch_size, 16)))  # fmt: skip
    return runs


def _attribution_scores(runs: list[at.TokenScores], gene_map: pd.Series) -> dict[tuple[str, str], pd.Series]:
    scores = {}
    for ts in runs:
        for resid in (False, True):
            # few cells: fewer length bins, so each (position, bin) of E holds several tokens
            nb = max(1, min(10, ts.n_cells // 8))
            gt = at.gene_table(ts, gene_map=gene_map, residual=resid, n_length_bins=nb)
            s = gt.drop_duplicates("gene").set_index("gene")["score_mean"]
            scores[(ts.method, "residual" if resid else "raw")] = s.abs() if ts.method in _SIGNED else s
    return scores


def methods_table(inp: StudyInputs, de: pd.DataFrame, *, seed: int, n_cells: int, k: int, ig_steps: int = 16,
                  deletion_top_k: int = 20, deletion_cells: int = 8, batch_size: int = 8) -> pd.DataFrame:  # fmt: skip
    """Attention vs simpler gene scores (fine-tuned model): the ``methods`` table.

    Rollout, gradient x input, integrated gradients, in-silico deletion, DE, mean rank, detection; raw
    and position-matched residual where applicable (`geneattn.stats.attribution.METHODS_COLUMNS`).
    """
    res, de_s = inp.results, de_score(de)
    scores: dict[tuple[str, str], pd.Series] = {}
    secs: dict[str, float] = {}
    ncell: dict[str, int] = {}
    if OTHER in inp.stores:
        scores.update(_attention_scores(inp))
        ncell["attention"] = inp.stores[OTHER].n_cells
        secs["attention"] = _attention_seconds(res, len(inp.stores))
    if res.model(OTHER).is_dir() and res.tokens.is_dir() and n_cells > 0:
        runs = _attribution_runs(res, inp, seed=seed, n_cells=n_cells, ig_steps=ig_steps, deletion_cells=deletion_cells,
                                 deletion_top_k=deletion_top_k, batch_size=batch_size)  # fmt: skip
        scores.update(_attribution_scores(runs, inp.gene_map))
        for ts in runs:
            secs[ts.method], ncell[ts.method] = ts.seconds_per_cell, ts.n_cells
    if inp.stores:
        scores.update({(name, "raw"): s for name, s in gene_baselines(inp).items()})
    scores[("de", "raw")] = de_s
    return at.compare_methods(
        scores, de_score=de_s, planted=inp.planted, seconds_per_cell=secs, n_cells=ncell, k=k
    )
