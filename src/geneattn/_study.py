"""The study's stages (see `geneattn.pipeline`).

data -> qc -> tokenize -> pretrain -> finetune -> attention -> stats -> figures -> report, each a
short read -> call library -> write.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from ._atomic import atomic_path, write_json, write_text
from .config import StudyConfig, dump_toml
from .errors import InputError
from .pipeline import Context, Stage, check_inputs_exist, read_manifest, run_stages

__all__ = ["run", "stages", "write_table", "OBS_KEYS"]

logger = logging.getLogger(__name__)

OBS_KEYS = ("label", "group", "well", "replicate", "n_genes")
V1_VOCAB, V2_VOCAB = 25_426, 20_275
REF, OTHER = "pretrained", "finetuned"


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Write a DataFrame to Parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _write_h5ad(path: Path, adata: Any) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def _file_sig(p: str | None) -> dict[str, Any] | None:
    if p is None:
        return None
    st = Path(p).stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _model_sig(p: str | None) -> dict[str, Any] | None:
    if p is None:
        return None
    cfg = Path(p) / "config.json"
    return {"path": str(p), "config": json.loads(cfg.read_text()) if cfg.is_file() else None}


def _device(cfg: StudyConfig) -> str | None:
    return None if cfg.device == "auto" else cfg.device


# ------------------------------------------------------------------------------------------ data
def stage_data(ctx: Context) -> str:
    """Load the dataset, select the classes; ``data/study.h5ad`` (+ ``data/corpus.h5ad``, pretraining corpus)."""
    cfg: StudyConfig = ctx.config
    classes, corpus = cfg.classes, None
    if cfg.source == "nutlin-sim":
        from .datasets import nutlin_sim
        from .io import canonicalize

        full = nutlin_sim(seed=cfg.seed, cells_per_dose=cfg.cells_per_dose)
        study = canonicalize(
            full, classes=classes, groups=cfg.groups, min_cells_per_class=cfg.min_cells_per_class
        )
        corpus = full  # pretrain on every dose's cells, as Geneformer is pretrained on a broad corpus
    elif cfg.source == "pbmc68k":
        from .datasets import pbmc68k
        from .io import canonicalize

        full = pbmc68k()
        if classes is None:  # built-in data: keep the cell types with enough cells, say which are dropped
            counts = full.obs["label"].value_counts()
            classes = [str(c) for c in counts.index if counts[c] >= cfg.min_cells_per_class]
            dropped = {str(c): int(counts[c]) for c in counts.index if counts[c] < cfg.min_cells_per_class}
            if dropped:
                logger.info(
                    "pbmc68k: dropped cell types with < %d cells: %s", cfg.min_cells_per_class, dropped
                )
        study = canonicalize(
            full, classes=classes, groups=cfg.groups, min_cells_per_class=cfg.min_cells_per_class
        )
        corpus = full if study.n_obs != full.n_obs else None
    else:
        from .io import load

        kw = {
            "perturbation": cfg.perturbation,
            "label_key": cfg.label_key,
            "min_cells_per_class": cfg.min_cells_per_class,
        }
        study = load(cfg.data, classes=classes, groups=cfg.groups, **kw)
        if classes is not None and cfg.model is None:
            corpus = load(cfg.data, classes=None, groups=None, **{**kw, "min_cells_per_class": 1})
    n_classes = study.obs["label"].nunique()
    if n_classes < 2:
        msg = (
            f"the study needs at least two classes to tell apart, found {n_classes} "
            f"({', '.join(map(str, study.obs['label'].unique()))}) in {cfg.label_key!r}; choose another label column or classes"
        )
        raise InputError(msg)
    _write_h5ad(ctx.path("data/study.h5ad"), study)
    corpus_path = ctx.path("data/corpus.h5ad")
    if corpus is not None and cfg.model is None:
        _write_h5ad(corpus_path, corpus)
    else:
        corpus_path.unlink(missing_ok=True)
    counts = study.obs["label"].value_counts(sort=False)
    return f"{study.n_obs} cells x {study.n_vars} genes; classes " + ", ".join(
        f"{k} ({v})" for k, v in counts.items()
    )


def stage_qc(ctx: Context) -> str:
    """QC, log-normalisation, UMAP and Wilcoxon DE; ``cells.h5ad``, ``tables/{de,umap}.parquet``."""
    import anndata as ad

    from .stats import run as st

    adata = ad.read_h5ad(ctx.path("data/study.h5ad"))
    de = st.step_de(adata, seed=ctx.config.seed)
    umap = st.step_umap(adata, seed=ctx.config.seed)
    umap["n_genes"] = adata.obs["n_genes"].to_numpy()
    write_table(ctx.path("tables/de.parquet"), de)
    write_table(ctx.path("tables/umap.parquet"), umap)
    _write_h5ad(ctx.path("cells.h5ad"), adata)
    n_sig = int((de[de["method"] == "wilcoxon"]["pval_adj"] < 0.05).sum())
    return f"UMAP of {adata.n_obs} cells; {n_sig} significant (gene, class) Wilcoxon tests"


# ------------------------------------------------------------------------------------ tokenize
def _geneformer_vocab(cfg: StudyConfig) -> tuple[Any, bool, int]:
    """Geneformer's dictionaries matching the model's vocabulary size: (vocab, special_tokens, input size)."""
    from .tokenize import GeneVocab

    mcfg = Path(cfg.model) / "config.json"
    if not mcfg.is_file():
        msg = f"{cfg.model} is not a model directory (no config.json)"
        raise InputError(msg)
    n = int(json.loads(mcfg.read_text())["vocab_size"])
    tag = {V1_VOCAB: "gc30M", V2_VOCAB: "gc104M"}.get(n)
    root = Path(cfg.dictionaries)
    tok = (
        sorted(root.rglob(f"token_dictionary_{tag}.pkl"))
        if tag
        else sorted(root.rglob("token_dictionary*.pkl"))
    )
    if not tok:
        msg = f"no Geneformer token dictionary for a model with {n} tokens under {root}"
        raise InputError(msg)
    d = tok[0].parent
    suffix = tok[0].stem.removeprefix("token_dictionary")
    mapping = d / f"ensembl_mapping_dict{suffix}.pkl"
    vocab = GeneVocab.from_geneformer(tok[0], d / f"gene_median_dictionary{suffix}.pkl",
                                      mapping if mapping.is_file() else None)  # fmt: skip
    vocab.check_model_vocab_size(n)
    v2 = tag == "gc104M" or vocab.cls_id is not None
    return (
        vocab,
        v2,
        min(cfg.model_input_size, 4096 if v2 else 2048) if v2 else min(cfg.model_input_size, 2048),
    )


def stage_tokenize(ctx: Context) -> str:
    """Rank-value encode the study cells (``tokens/``) and the pretraining corpus (``corpus_tokens/``)."""
    import anndata as ad

    from .tokenize import build_vocab, tokenize

    cfg: StudyConfig = ctx.config
    study = ctx.path("data/study.h5ad")
    corpus = ctx.path("data/corpus.h5ad")
    corpus = corpus if corpus.is_file() else study
    if cfg.model is not None:
        vocab, special, size = _geneformer_vocab(cfg)
    else:
        vocab, special, size = build_vocab(str(corpus), special_tokens=False), False, cfg.model_input_size
    obs = ad.read_h5ad(study, backed="r")
    keys = [k for k in OBS_KEYS if k in obs.obs.columns]
    obs.file.close()
    ds = tokenize(
        str(study),
        vocab,
        out=ctx.path("tokens"),
        model_input_size=size,
        special_tokens=special,
        obs_keys=keys,
    )
    corpus_dir = ctx.path("corpus_tokens")
    if cfg.model is None:
        tokenize(str(corpus), vocab, out=corpus_dir, model_input_size=size, special_tokens=special)
    elif corpus_dir.exists():
        shutil.rmtree(corpus_dir)
    return f"{len(ds)} cells, vocabulary {vocab.size} tokens, median {int(pd.Series(ds['length']).median())} tokens per cell"


# ------------------------------------------------------------------------------------ models
def pretrained_dir(ctx: Context) -> Path:
    """The pretrained model: the user's Geneformer checkpoint, or ``models/pretrained``."""
    cfg: StudyConfig = ctx.config
    return Path(cfg.model) if cfg.model is not None else ctx.path("models/pretrained")


def stage_pretrain(ctx: Context) -> str:
    """Masked gene modelling on the corpus (``models/pretrained``), or record the user's checkpoint."""
    from .models import PretrainConfig, pretrain

    cfg: StudyConfig = ctx.config
    if cfg.model is not None:
        write_json(ctx.path("models/pretrained.json"), {"path": cfg.model, "source": "user checkpoint"})
        return f"using {cfg.model}"
    from .tokenize import load_vocab

    pc = PretrainConfig(
        preset=cfg.preset, epochs=cfg.pretrain_epochs, batch_size=cfg.batch_size, device=_device(cfg)
    )
    out = pretrain(ctx.path("corpus_tokens"), load_vocab(ctx.path("tokens")), out=ctx.path("models/pretrained"),
                   config=pc, seed=cfg.seed)  # fmt: skip
    shutil.rmtree(Path(out) / "checkpoints", ignore_errors=True)
    write_json(ctx.path("models/pretrained.json"), {"path": str(out), "source": f"pretrained ({cfg.preset})"})
    return f"{cfg.preset} model, {cfg.pretrain_epochs} epoch(s) -> {out}"


def stage_finetune(ctx: Context) -> str:
    """Fine-tune the classifier (``models/finetuned`` with ``metrics.json``, ``splits.parquet``)."""
    from .io import parse_groups
    from .models import FinetuneConfig, finetune

    cfg: StudyConfig = ctx.config
    groups = parse_groups(cfg.groups) if cfg.groups else None
    lr = cfg.finetune_lr if cfg.finetune_lr is not None else (5e-5 if cfg.model is not None else 1e-3)
    # select the epoch by validation macro-F1: a briefly trained small model grows over-confident
    # (validation loss rising) while its validation accuracy still improves
    fc = FinetuneConfig(epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, learning_rate=float(lr),
                        select_by="macro_f1", device=_device(cfg))  # fmt: skip
    res = finetune(ctx.path("tokens"), model=pretrained_dir(ctx), out=ctx.path("models/finetuned"), label_key="label",
                   groups=groups, config=fc, seed=cfg.seed)  # fmt: skip
    shutil.rmtree(ctx.path("models/finetuned/checkpoints"), ignore_errors=True)
    m = res.metrics
    if not ctx.path("models/finetuned/metrics.json").is_file():
        write_json(ctx.path("models/finetuned/metrics.json"), m)
    g = (m.get("groups") or {}).get("accuracy")
    return f"test accuracy {m.get('accuracy', float('nan')):.3f}" + (
        f", groups {g:.3f}" if g is not None else ""
    )


# ------------------------------------------------------------------------------------ attention
def stage_attention(ctx: Context) -> str:
    """Attention statistics of both models (``attention/``), pt-vs-ft change and top genes (``tables/``)."""
    from .attention import compare, extract, top_genes
    from .tokenize import load_vocab

    cfg: StudyConfig = ctx.config
    models = {REF: pretrained_dir(ctx), OTHER: ctx.path("models/finetuned")}
    res = extract(models, ctx.path("tokens"), load_vocab(ctx.path("tokens")), out=ctx.path("attention"),
                  batch_size=cfg.attention_batch_size, label_key="label", device=_device(cfg))  # fmt: skip
    ch = compare(res, reference=REF, other=OTHER, bins=cfg.rank_bin)
    for name, df in ch.items():
        write_table(ctx.path(f"tables/{name}.parquet"), df)
    abg = res.tables["attention_by_gene"]
    top = pd.concat([top_genes(abg, k=100, model=m) for m in (REF, OTHER)], ignore_index=True)
    write_table(ctx.path("tables/top_genes.parquet"), top)
    for name in ("attention_by_gene", "attention_by_position", "head_norms"):
        _link(ctx.path(f"attention/{name}.parquet"), ctx.path(f"tables/{name}.parquet"))
    ft = top[top["model"] == OTHER]["gene"].astype(str).tolist()
    return f"{res.params.get('n_cells', '?')} cells x 2 models; top genes (fine-tuned): {', '.join(ft[:6])}"


def _link(src: Path, dst: Path) -> None:
    """Hard-link (or copy) ``src`` to ``dst`` atomically."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


# ------------------------------------------------------------------------------------ stats
def stage_stats(ctx: Context) -> str:
    """Agreement with DE, confounds, significance, method comparison; ``tables/`` + ``metrics.json``."""
    from .stats import run as st

    cfg: StudyConfig = ctx.config
    inp = st.load_inputs(ctx.out)
    de = pd.read_parquet(ctx.path("tables/de.parquet"))
    markers = tuple(cfg.highlight)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        r = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t, 3)
        return r

    out = {"agreement": timed("agreement", st.step_agreement, inp, de, k=cfg.top_k, markers=markers),
           "confounds": timed("confounds", st.step_confounds, inp, de, k=cfg.top_k, seed=cfg.seed)}  # fmt: skip
    sig, change, calib = timed("significance", st.step_significance, inp, seed=cfg.seed, n_boot=cfg.n_boot)
    out["significance"], out["change_ci"] = sig, change
    out["methods"] = timed(
        "methods", st.step_methods, inp, de, seed=cfg.seed, n_cells=cfg.attribution_cells, k=cfg.top_k
    )
    for name, df in out.items():
        write_table(ctx.path(f"tables/{name}.parquet"), df)
    from .report.summary import compute_metrics

    metrics = compute_metrics(ctx.out, tables={**out, "de": de}, calibration=calib, highlight=cfg.highlight,
                              top_k=cfg.top_k, timings=timings)  # fmt: skip
    write_json(ctx.path("metrics.json"), metrics)
    n_sig = int((sig["pval_adj"] < 0.05).sum()) if "pval_adj" in sig else 0
    return f"{len(sig)} tests, {n_sig} significant (adjusted p < 0.05); methods compared: {out['methods']['method'].nunique() if len(out['methods']) else 0}"


# ------------------------------------------------------------------------------------ figures, report
def stage_figures(ctx: Context) -> str:
    """Every figure from the tables, saved as PNG + SVG in ``figures/``."""
    from .report.figures import make_figures, save_figures

    cfg: StudyConfig = ctx.config
    figs = make_figures(ctx.out, highlight=cfg.highlight, top_k=cfg.top_k)
    save_figures(figs, ctx.path("figures"))
    return f"{len(figs)} figures: {', '.join(figs)}"


def stage_report(ctx: Context) -> str:
    """``report.html`` (self-contained)."""
    from .report import build_from_results

    path = build_from_results(ctx.out, make_new_figures=False)
    return f"wrote {path}"


def stages(cfg: StudyConfig) -> list[Stage]:
    """The study's stages for a resolved config."""
    data_params = {"source": cfg.source, "data": _file_sig(cfg.data), "perturbation": cfg.perturbation,
                   "label_key": cfg.label_key, "classes": cfg.classes, "groups": cfg.groups,
                   "min_cells_per_class": cfg.min_cells_per_class, "seed": cfg.seed,
                   "cells_per_dose": cfg.cells_per_dose, "corpus": cfg.model is None}  # fmt: skip
    model = _model_sig(cfg.model)
    train = {"batch_size": cfg.batch_size, "seed": cfg.seed}
    return [
        Stage("data", stage_data, (), data_params, ["data/study.h5ad"]),
        Stage(
            "qc",
            stage_qc,
            ("data",),
            {"seed": cfg.seed},
            ["cells.h5ad", "tables/de.parquet", "tables/umap.parquet"],
        ),
        Stage(
            "tokenize",
            stage_tokenize,
            ("data",),
            {"model_input_size": cfg.model_input_size, "model": model, "dictionaries": cfg.dictionaries},
            ["tokens/vocab.json"],
        ),  # fmt: skip
        Stage(
            "pretrain",
            stage_pretrain,
            ("tokenize",),
            {**train, "preset": cfg.preset, "epochs": cfg.pretrain_epochs, "model": model},
            ["models/pretrained.json"],
        ),
        Stage(
            "finetune",
            stage_finetune,
            ("tokenize", "pretrain"),
            {**train, "epochs": cfg.finetune_epochs, "groups": cfg.groups},
            ["models/finetuned/config.json", "models/finetuned/metrics.json"],
        ),  # fmt: skip
        Stage(
            "attention",
            stage_attention,
            ("finetune",),
            {"batch_size": cfg.attention_batch_size, "rank_bin": cfg.rank_bin},
            ["attention/params.json", "tables/head_change.parquet", "tables/top_genes.parquet"],
        ),  # fmt: skip
        Stage(
            "stats",
            stage_stats,
            ("qc", "attention"),
            {
                "seed": cfg.seed,
                "top_k": cfg.top_k,
                "n_boot": cfg.n_boot,
                "attribution_cells": cfg.attribution_cells,
                "highlight": cfg.highlight,
            },
            ["metrics.json", "tables/significance.parquet"],
        ),  # fmt: skip
        Stage(
            "figures",
            stage_figures,
            ("stats",),
            {"highlight": cfg.highlight, "top_k": cfg.top_k},
            ["figures/umap.png"],
        ),
        Stage("report", stage_report, ("figures",), {"version": __version__}, ["report.html"]),
    ]


def _check(cfg: StudyConfig) -> None:
    check_inputs_exist(
        {"data file": cfg.data, "model directory": cfg.model, "dictionaries directory": cfg.dictionaries}
    )
    if cfg.data is not None and not str(cfg.data).endswith(".h5ad"):
        msg = f"--data must be an .h5ad file, got {cfg.data}"
        raise InputError(msg)


def run(cfg: StudyConfig, *, force: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Run the study for a resolved config (see `geneattn.pipeline.run_study`)."""
    _check(cfg)
    out = Path(cfg.out)
    created = not out.exists()
    ctx = Context(out, cfg)
    all_stages = stages(cfg)
    t0 = time.perf_counter()
    try:  # the data stage first: bad input is found before anything else is written
        run_stages(all_stages[:1], out, ctx=ctx, force=force, progress=False)
    except InputError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    all_stages = _pin_torch_threads(all_stages)
    header = f"geneattn {__version__} resolved study configuration\nreproduce: geneattn run --config {out / 'config.toml'}"
    write_text(out / "config.toml", dump_toml(cfg.to_dict(), header=header))
    manifest = run_stages(all_stages, out, ctx=ctx, force=[s.name for s in all_stages[1:]] if force else False,
                          progress=progress)  # fmt: skip
    _record_timings(out, manifest, wall=time.perf_counter() - t0)
    return manifest


def _pin_torch_threads(all_stages: list[Stage]) -> list[Stage]:
    """Run every stage with the torch thread count this process started with.

    scanpy's PCA (through threadpoolctl) raises the OpenMP thread count that torch shares, so without
    this a run whose ``qc`` stage ran trains with more threads than a resumed run that skipped it:
    float reductions then differ, and a resumed run no longer reproduces an uninterrupted one.
    """
    import dataclasses

    import torch

    n = torch.get_num_threads()

    def pinned(fn: Any) -> Any:
        def run_pinned(ctx: Context) -> str | None:
            torch.set_num_threads(n)
            try:
                return fn(ctx)
            finally:
                torch.set_num_threads(n)

        return run_pinned

    return [dataclasses.replace(s, run=pinned(s.run)) for s in all_stages]


def _record_timings(out: Path, manifest: dict[str, Any], *, wall: float) -> None:
    """Add the stages' timings (from the manifest) to ``metrics.json``."""
    p = out / "metrics.json"
    if not p.is_file():
        return
    metrics = json.loads(p.read_text())
    st = manifest.get("stages", {})
    metrics["timings"] = {
        "stages_s": {k: v.get("seconds") for k, v in st.items()},
        "last_run_wall_s": round(wall, 2),
    }
    write_json(p, metrics)


def rebuild_report(results_dir: str | Path) -> Path:
    """`geneattn report`: figures + report from an existing results directory."""
    from .report import build_from_results

    root = Path(results_dir)
    if not (root / "manifest.json").is_file() and not (root / "metrics.json").is_file():
        msg = f"{root} is not a geneattn results directory (no manifest.json or metrics.json)"
        raise InputError(msg)
    read_manifest(root)
    return build_from_results(root, make_new_figures=True)
