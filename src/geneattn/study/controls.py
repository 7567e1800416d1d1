"""Stage ``controls``: the training runs of the run-level null.

The study's fine-tune is one real-label run. This stage adds ``n_seed_runs - 1`` more real-label runs
(other seeds) and ``n_permuted_runs`` runs on labels permuted between wells (each well keeps its
cells and takes another well's label, within its split, so every split keeps its class balance).
All use the study's recipe and its train/validation/test split. Then the pretrained model and every
run are extracted together on the held-out cells (validation + test wells), and each run's change
against the pretrained model is tabulated per gene, head and rank bin (`geneattn.stats.run_deltas`):
``tables/run_deltas.parquet``. The runs, not the cells, are the units of the null.
"""

from __future__ import annotations

import logging

import pandas as pd

from .._atomic import write_json
from .._results import OTHER, REF, Results
from ._stage import ConfigView, StageContext, stage
from .training import FINETUNE_READS, device_of, finetune_config, pretrained_dir, skipped_by_user_model

__all__ = ["control_runs", "held_out"]

logger = logging.getLogger(__name__)


def control_runs(cfg: ConfigView) -> dict[str, str]:
    """Run name -> kind (``"real"`` or ``"permuted"``); the study's fine-tune is the first real run."""
    runs = {OTHER: "real"}
    runs.update({f"seed{r}": "real" for r in range(1, cfg.n_seed_runs)})
    runs.update({f"permuted{k}": "permuted" for k in range(1, cfg.n_permuted_runs + 1)})
    return runs


def held_out(res: Results) -> pd.DataFrame:
    """The study fine-tune's split table restricted to validation and test cells."""
    split = pd.read_parquet(res.model(OTHER) / "splits.parquet")
    return split[split["split"].isin(["val", "test"])]


def _train_runs(ctx: StageContext, runs: dict[str, str]) -> dict[str, dict]:
    """Fine-tune every control run (not the study's own); returns their test metrics."""
    from ..io import parse_groups
    from ._workers import Job, run_jobs

    res, cfg = ctx.results, ctx.config
    groups = parse_groups(cfg.groups) if cfg.groups else None
    config = finetune_config(cfg, baselines=False)
    split, model = str(res.model(OTHER) / "splits.parquet"), str(pretrained_dir(cfg, res))
    jobs = [Job(name, kind, str(res.tokens), split, model, str(res.run(name)), groups, config,
                seed=cfg.seed + 1000 * i, label_seed=cfg.seed + 7919 * i)
            for i, (name, kind) in enumerate(runs.items()) if name != OTHER]  # fmt: skip
    logger.info("control runs: %s", ", ".join(f"{j.name} ({j.kind} labels)" for j in jobs))
    return run_jobs(jobs, device=device_of(cfg))


def _extract_held_out(ctx: StageContext, runs: dict[str, str]) -> object:
    """Attention of the pretrained model and every run on the held-out cells (one pass, same batches).

    Over all cells only (no per-class tables): the null reads the token stores, and per-class
    positions come from the stores with the cells' labels; the tables of 6 models x classes x genes
    would dominate memory for a large vocabulary.
    """
    from ..attention import extract
    from ..tokenize import load_tokens, load_vocab

    res, cfg = ctx.results, ctx.config
    ds = load_tokens(res.tokens)
    keep = set(held_out(res)["cell_id"].astype(str))
    idx = [i for i, c in enumerate(ds["cell_id"]) if str(c) in keep]
    models = {
        REF: pretrained_dir(cfg, res),
        **{n: (res.model(OTHER) if n == OTHER else res.run(n)) for n in runs},
    }
    return extract(models, ds.select(idx), load_vocab(res.tokens), out=res.runs_attention,
                   batch_size=cfg.attention_batch_size, label_key=None, device=device_of(cfg))  # fmt: skip


def _score_true_labels(ctx: StageContext, runs: dict[str, str]) -> pd.DataFrame:
    """Every run's accuracy against the TRUE labels of the test cells (`study.ensemble.score_runs`)."""
    from ..io import parse_groups
    from ..tokenize import load_tokens
    from .ensemble import score_runs

    res, cfg = ctx.results, ctx.config
    split = pd.read_parquet(res.model(OTHER) / "splits.parquet")
    test_ids = set(split.loc[split["split"] == "test", "cell_id"].astype(str))
    ds = load_tokens(res.tokens)
    idx = [i for i, c in enumerate(ds["cell_id"]) if str(c) in test_ids]
    test = ds.select(idx).select_columns(["input_ids", "label"]).to_pandas()
    models = {n: (res.model(OTHER) if n == OTHER else res.run(n)) for n in runs}
    groups = parse_groups(cfg.groups) if cfg.groups else None
    return score_runs(models, runs, test, groups=groups, batch_size=cfg.attention_batch_size)


@stage("controls", deps=("finetune",), reads=(*FINETUNE_READS, "n_seed_runs", "n_permuted_runs", "attention_batch_size"),
       outputs=("tables/run_deltas.parquet", "tables/run_scores.parquet", "runs/runs.json"))  # fmt: skip
def controls(ctx: StageContext) -> str:
    """Control fine-tunes and every run's attention change on the held-out cells (``tables/run_deltas``)."""
    from ..attention.store import TokenStore
    from ..stats.run_deltas import run_deltas
    from .inputs import gene_map_of

    res = ctx.results
    runs = control_runs(ctx.config)
    skipped = skipped_by_user_model(res).get("controls") if ctx.config.finetuned is not None else None
    if ctx.config.n_permuted_runs == 0 or skipped:  # no null side: nothing to compare the real runs with
        ctx.write_table("run_deltas", pd.DataFrame(columns=["family", "run", "kind", "unit", "value"]))
        ctx.write_table("run_scores", pd.DataFrame(columns=["run", "kind", "accuracy"]))
        why = skipped or "no permuted-label runs (n_permuted_runs = 0)"
        write_json(res.runs / "runs.json", {"runs": {}, "n_held_out_cells": 0, "skipped": why})
        return f"run-level null skipped: {why}"
    from .ensemble import failed_runs

    metrics = _train_runs(ctx, runs)
    scores = _score_true_labels(ctx, runs)
    ctx.write_table("run_scores", scores)
    result = _extract_held_out(ctx, runs)
    stores = {n: TokenStore.load(res.runs_attention, n) for n in (REF, *runs)}
    gene_map = gene_map_of(res.read_study(), result.tables["attention_by_gene"])
    deltas = run_deltas(stores[REF], {n: stores[n] for n in runs}, runs, cell_head=result.tables["cell_head"],
                        ref_name=REF, gene_map=gene_map)  # fmt: skip
    ctx.write_table("run_deltas", deltas, n_held_out_cells=stores[REF].n_cells)
    metrics[OTHER] = res.read_json(res.model(OTHER) / "metrics.json")
    failed = failed_runs(metrics, runs)
    true = scores.set_index("run").drop(columns="kind")
    summary = {
        n: {"kind": k, "accuracy": metrics[n].get("accuracy"), "failed": n in failed,
            "best_epoch": metrics[n].get("best_epoch"),
            "true_labels": {m: float(v) for m, v in true.loc[n].items() if pd.notna(v)}}
        for n, k in runs.items()
    }  # fmt: skip
    write_json(res.runs / "runs.json", {"runs": summary, "n_held_out_cells": stores[REF].n_cells,
                                        "failed": failed, "accuracy_of": "each run's own (for null runs: permuted) test labels; "
                                        "true_labels: against the true test labels"})  # fmt: skip
    n_real = sum(k == "real" for k in runs.values())
    if failed:
        logger.warning("real-label runs that did not learn (left out of the real arm): %s", ", ".join(failed))
    return (f"{n_real} real-label ({len(failed)} failed) + {len(runs) - n_real} permuted-label runs "
            f"on {stores[REF].n_cells} held-out cells")  # fmt: skip
