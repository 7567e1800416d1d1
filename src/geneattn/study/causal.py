"""Stages ``ablation`` (the causal head test) and ``attribution`` (gradient and deletion baselines).

``ablation``: every head of the study's fine-tuned classifier ablated alone, and the heads whose output
norm changed most beyond the permuted-label runs ablated together, through the registered attention
function (never transformers' ``head_mask``, which fused kernels ignore); accuracy and log-likelihood
of the true class on the test cells, with intervals and one-sided tests over test wells, Holm-adjusted
over the single heads, and a random-head control: `N_RANDOM` random sets of as many heads as the top
set (`geneattn.attention.head_ablation`).

``attribution``: rollout, gradient x input and integrated gradients on the same test cells (at least
``attribution_cells`` or the whole test split), in-silico deletion on a stated subset
(`geneattn.stats.attribution.attribute_all`); per-gene scores with their cost per cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._results import Results
from ._stage import StageContext, stage
from .controls import held_out
from .training import finetuned_dir, skipped_by_user_model


def _test_cells(res: Results) -> tuple[object, np.ndarray]:
    """The study's tokens of its test cells, and their wells (cells when there are none)."""
    from ..tokenize import load_tokens

    ds = load_tokens(res.tokens)
    split = held_out(res)
    test = set(split.loc[split["split"] == "test", "cell_id"].astype(str))
    idx = [i for i, c in enumerate(ds["cell_id"]) if str(c) in test]
    sub = ds.select(idx)
    units = sub["well"] if "well" in sub.column_names else sub["cell_id"]
    return sub, np.asarray(units).astype(str)


#: random-head control: this many random sets of as many heads as the top set
N_RANDOM = 5


def most_changed_heads(deltas: pd.DataFrame, k: int) -> list[tuple[int, int]]:
    """The ``k`` heads whose mean output-norm change differs most between real and permuted runs."""
    heads = deltas[deltas["family"] == "heads"]
    if heads.empty or k == 0:
        return []
    means = heads.groupby(["unit", "kind"])["value"].mean().unstack("kind")
    effect = (means.get("real", 0.0) - means.get("permuted", 0.0)).abs().sort_values(ascending=False)
    return [(int(u[1 : u.index("H")]), int(u[u.index("H") + 1 :])) for u in effect.index[:k]]


@stage("ablation", deps=("controls",), reads=("seed", "n_boot", "ablation_top_k", "attention_batch_size", "finetuned"),
       outputs=("tables/head_ablation.parquet",))  # fmt: skip
def ablation(ctx: StageContext) -> str:
    """Head ablation of the fine-tuned classifier on the test cells: ``tables/head_ablation.parquet``."""
    from ..attention import head_ablation
    from ..models import load

    res, cfg = ctx.results, ctx.config
    reason = skipped_by_user_model(res).get("ablation")
    if reason is not None:
        cols = ["ablation", "layer", "head", "n_heads", "n_cells", "n_wells", "d_accuracy", "d_accuracy_high"]
        ctx.write_table("head_ablation", pd.DataFrame(columns=cols), skipped=reason)
        return f"skipped: {reason}"
    model = load(finetuned_dir(cfg, res), task="classifier")
    ds, wells = _test_cells(res)
    combo = most_changed_heads(res.read_table("run_deltas"), cfg.ablation_top_k)
    table = head_ablation(model, ds["input_ids"], np.asarray(ds["label"]).astype(str), wells=wells,
                          combos=[combo] if combo else (), n_random=N_RANDOM if combo else 0,
                          batch_size=cfg.attention_batch_size, seed=cfg.seed, n_boot=max(cfg.n_boot, 200))  # fmt: skip
    ctx.write_table(
        "head_ablation", table, seconds=table.attrs.get("seconds"), combo=[list(h) for h in combo]
    )
    worst = table[table["kind"] == "single"].nsmallest(1, "d_accuracy")
    name = worst["ablation"].iloc[0] if len(worst) else "-"
    return f"{len(table) - 1} ablations on {len(ds)} test cells; largest single-head accuracy drop: {name}"


#: attributions signed towards the target class: a gene's importance is their magnitude
SIGNED = ("grad_input", "integrated_gradients", "deletion_prob")


def _symbols(vocab: object) -> pd.Series:
    """Token id -> gene symbol (the gene id where the vocabulary has no symbol)."""
    ids = list(vocab.id_to_gene)
    return pd.Series([vocab.symbols.get(g, g) for g in ids], index=pd.RangeIndex(len(ids)))


def attribution_table(runs: dict, gene_map: pd.Series, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Per method and gene: the mean score over the cells where the gene was scored, with a CI.

    Signed methods are scored by magnitude; the CI is a bootstrap over cells; the table also gives the
    cells each method used and its cost per cell.
    """
    import dataclasses

    from ..stats import attribution as at

    parts = []
    for method, ts in runs.items():
        scores = dataclasses.replace(ts, values=np.abs(ts.values)) if method in SIGNED else ts
        g = at.gene_bootstrap(scores, gene_map=gene_map, n_boot=n_boot, seed=seed)
        parts.append(g.assign(method=method, cells_used=ts.n_cells, seconds_per_cell=ts.seconds_per_cell))
    return pd.concat(parts, ignore_index=True)


@stage("attribution", deps=("finetune",), reads=("seed", "attribution_cells", "n_boot", "finetuned"),
       outputs=("tables/attribution.parquet",))  # fmt: skip
def attribution(ctx: StageContext) -> str:
    """Attribution baselines on the test cells: ``tables/attribution.parquet`` (per method and gene)."""
    from ..models import load
    from ..stats import attribution as at
    from ..tokenize import load_vocab

    res, cfg = ctx.results, ctx.config
    if cfg.attribution_cells == 0:
        empty = [
            "token_id",
            "gene",
            "n_cells",
            "score_mean",
            "ci_lo",
            "ci_hi",
            "method",
            "cells_used",
            "seconds_per_cell",
        ]
        ctx.write_table("attribution", pd.DataFrame(columns=empty))
        return "skipped (attribution_cells = 0)"
    ds, _ = _test_cells(res)
    vocab = load_vocab(res.tokens)
    model = load(finetuned_dir(cfg, res), task="classifier")
    cells = at.cells_from_tokens(ds, n_cells=min(cfg.attribution_cells, len(ds)), seed=cfg.seed)
    targets = at.targets_for(model, cells, pad_id=int(vocab.pad_id))
    runs = at.attribute_all(
        model, cells, targets, mask_id=int(vocab.mask_id), pad_id=int(vocab.pad_id), seed=cfg.seed
    )
    table = attribution_table(runs, _symbols(vocab), n_boot=cfg.n_boot, seed=cfg.seed)
    ctx.write_table("attribution", table, n_cells=len(cells))
    return f"{', '.join(runs)} on {len(cells)} test cells (deletion on a subset)"
