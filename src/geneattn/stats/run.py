"""`run_stats`: the statistics stage of the study, reading a results directory.

Inputs (results layout, design.md): ``cells.h5ad``, ``tokens/`` (+ ``vocab.json``),
``models/{pretrained,finetuned}/``, ``attention/`` (tables + token store), ``metrics.json``.
Outputs: ``tables/{de,agreement,confounds,significance,methods,change_ci,umap}.parquet`` and the
``"stats"`` entry of ``metrics.json`` (all written atomically). Each step is a separate function
(`step_de`, `step_agreement`, `step_confounds`, `step_significance`, `step_methods`) so that a
pipeline can cache them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import atomic_path, write_json
from .._keys import ENSEMBL_ID, LABEL, PLANTED, REPLICATE, WELL
from ..errors import InputError
from . import agreement as ag
from . import attribution as at
from . import de as de_mod
from . import significance as sg
from .confounds import SCORE_TYPES, TokenStore, confounds_table, gene_scores

__all__ = ["Inputs", "load_inputs", "step_de", "step_umap", "step_agreement", "step_confounds",
           "step_significance", "step_methods", "run_stats", "TABLE_NAMES"]  # fmt: skip

logger = logging.getLogger(__name__)

TABLE_NAMES = ("de", "agreement", "confounds", "significance", "methods", "change_ci", "umap")
REF, OTHER = "pretrained", "finetuned"


@dataclasses.dataclass
class Inputs:
    """What the statistics read from a results directory."""

    results_dir: Path
    adata: Any
    stores: dict[str, TokenStore]
    tables: dict[str, pd.DataFrame]
    gene_map: pd.Series  # token id -> gene symbol (var_names)

    _gene_scores: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict, repr=False)

    def gene_scores(self, model: str) -> pd.DataFrame:
        """`confounds.gene_scores` of one model's token store (cached)."""
        if model not in self._gene_scores:
            self._gene_scores[model] = gene_scores(self.stores[model], gene_map=self.gene_map)
        return self._gene_scores[model]

    @property
    def planted(self) -> pd.Series | None:
        """``var["planted"]`` (simulated data) or None."""
        v = self.adata.var
        return v[PLANTED].astype(bool) if PLANTED in v else None

    def cell_obs(self, store: TokenStore, key: str) -> np.ndarray | None:
        """``obs[key]`` in the order of the token store's cells (None when missing or ids don't match)."""
        obs = self.adata.obs
        ids = pd.Index(np.asarray(store.cell_ids).astype(str))
        if key not in obs or not ids.isin(obs.index.astype(str)).all():
            return None
        col = obs[key].astype(str)
        col.index = obs.index.astype(str)
        return col.reindex(ids).to_numpy()


def _gene_map(adata: Any, abg: pd.DataFrame | None) -> pd.Series:
    if abg is None or abg.empty:
        return pd.Series(dtype=str)
    tok = abg.drop_duplicates("token_id").set_index("token_id")
    names = tok["gene"].astype(str)
    if ENSEMBL_ID in adata.var and "ensembl_id" in tok:
        ens2sym = pd.Series(adata.var_names, index=adata.var[ENSEMBL_ID].astype(str).to_numpy())
        ens2sym = ens2sym[~ens2sym.index.duplicated()]
        names = tok["ensembl_id"].astype(str).map(ens2sym).fillna(names)
    return names


def load_inputs(results_dir: str | Path) -> Inputs:
    """Read ``cells.h5ad``, the attention tables and the token stores of a results directory."""
    import anndata as ad

    root = Path(results_dir)
    if not (root / "cells.h5ad").is_file():
        msg = f"{root} is not a results directory (cells.h5ad missing); run the earlier stages first"
        raise InputError(msg)
    adata = ad.read_h5ad(root / "cells.h5ad")
    att = root / "attention"
    tables = {p.stem: pd.read_parquet(p) for p in sorted(att.glob("*.parquet"))} if att.is_dir() else {}
    stores = {}
    for p in sorted(att.glob("token_logfold_*.npy")) if att.is_dir() else []:
        name = p.name[len("token_logfold_") : -len(".npy")]
        stores[name] = TokenStore.load(att, name)
    return Inputs(root, adata, stores, tables, _gene_map(adata, tables.get("attention_by_gene")))


def step_de(adata: Any, *, groupby: str = LABEL, reference: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Per-cell Wilcoxon one-vs-rest and vs the reference class, plus pseudobulk where wells exist.

    Returns the tidy DE table (`de.DE_COLUMNS` + ``method`` ∈ {wilcoxon, wilcoxon_ref, pseudobulk}).
    ``adata`` gains ``layers["lognorm"]`` and ``uns["de"]``/``uns["de_ref"]``.
    """
    del seed  # deterministic
    de_mod.rank_genes(adata, groupby, key_added="de")
    parts = [de_mod.de_df(adata, "de").assign(method="wilcoxon")]
    classes = sorted(adata.obs[groupby].astype(str).unique(), key=_num_key)
    ref = reference if reference is not None else classes[0]
    de_mod.rank_genes(adata, groupby, reference=ref, key_added="de_ref")
    parts.append(de_mod.de_df(adata, "de_ref").assign(method="wilcoxon_ref"))
    if WELL in adata.obs or REPLICATE in adata.obs:
        try:
            parts.append(
                de_mod.pseudobulk(adata, groupby)
                .drop(columns=["n_units", "n_units_ref"])
                .assign(method="pseudobulk")
            )
        except InputError as e:
            logger.warning("pseudobulk DE skipped: %s", e)
    return pd.concat(parts, ignore_index=True)


def _num_key(s: str) -> tuple[float, str]:
    try:
        return float(s), s
    except ValueError:
        return float("inf"), s


def step_umap(adata: Any, *, seed: int = 0, groupby: str = LABEL) -> pd.DataFrame:
    """UMAP coordinates (``cell_id, umap1, umap2, label``) for the study's Fig. 2."""
    de_mod.umap(adata, seed=seed)
    xy = adata.obsm["X_umap"]
    return pd.DataFrame({"cell_id": adata.obs_names.astype(str), "umap1": xy[:, 0], "umap2": xy[:, 1],
                         "label": adata.obs[groupby].astype(str).to_numpy() if groupby in adata.obs else ""})  # fmt: skip


def _de_score(de: pd.DataFrame) -> pd.Series:
    d = de[de["method"] == "wilcoxon"]
    return ag.de_gene_score(d if not d.empty else de)


def _baselines(inp: Inputs, model: str) -> dict[str, pd.Series]:
    """Trivial gene-level scores: mean rank (higher = nearer the top) and detection rate."""
    store = inp.stores[model]
    g = inp.gene_scores(model)
    g = g[(g["layer"] == "0") & (g["head"] == "0")].drop_duplicates("gene").set_index("gene")
    return {"mean_rank": -g["mean_position"], "detection": g["n_cells"] / store.n_cells}


def step_agreement(
    inp: Inputs, de: pd.DataFrame, *, k: int = 20, markers: tuple[str, ...] = ("MDM2",)
) -> pd.DataFrame:
    """Agreement of attention gene scores with DE, and recovery of planted genes.

    Score types raw, fold, residual per head and head means, plus the baselines (model
    ``"baseline"``: mean_rank, detection, DE). Columns ``model, layer, head, score_type`` +
    `agreement.AGREEMENT_COLUMNS` (``score`` = ``score_type``).
    """
    de_s = _de_score(de)
    out = []
    for model in inp.stores:
        gs = inp.gene_scores(model)
        for (layer, head), g in gs.groupby(["layer", "head"], sort=False):
            g = g.drop_duplicates("gene").set_index("gene")
            t = ag.agreement(
                {st: g[st] for st in SCORE_TYPES}, de_s, planted=inp.planted, k=k, markers=markers
            )
            out.append(t.assign(model=model, layer=layer, head=head, score_type=t["score"]))
    if inp.stores:
        base = _baselines(inp, next(iter(inp.stores)))
        pb = de[de["method"] == "pseudobulk"]
        if not pb.empty:
            base["de_pseudobulk"] = ag.de_gene_score(pb)
        base["de_wilcoxon"] = de_s
        t = ag.agreement(base, de_s, planted=inp.planted, k=k, markers=markers)
        out.append(t.assign(model="baseline", layer="", head="", score_type=t["score"]))
    if not out:
        return pd.DataFrame(columns=["model", "layer", "head", "score_type", *ag.AGREEMENT_COLUMNS])
    df = pd.concat(out, ignore_index=True)
    return df[["model", "layer", "head", "score_type", *ag.AGREEMENT_COLUMNS]]


def step_confounds(inp: Inputs, de: pd.DataFrame, *, k: int = 20, seed: int = 0) -> pd.DataFrame:
    """`confounds.confounds_table` over every model's token store."""
    return confounds_table(
        inp.stores,
        gene_map=inp.gene_map,
        de_score=_de_score(de),
        planted=inp.planted,
        k=k,
        seed=seed,
        precomputed={m: inp.gene_scores(m) for m in inp.stores},
    )


def _layer_heads(store: TokenStore, *, every_head: bool = False) -> list[tuple[str, str]]:
    heads = (
        [(str(la), str(h)) for la in range(store.n_layers) for h in range(store.n_heads)]
        if every_head
        else []
    )
    return heads + [(str(la), "mean") for la in range(store.n_layers)] + [("mean", "mean")]


def step_significance(inp: Inputs, *, seed: int = 0, n_boot: int = 200, min_cells: int = 10, label_key: str = LABEL,
                      paired_heads: str = "layers") -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """Significance tests and bootstrap bands.

    Paired pt-vs-ft per gene (``paired_heads="layers"``: head means per layer + overall; ``"all"``:
    also every head) and per head (``cell_head``),
    between-class residual tests (wells as units where present), a shuffled-label calibration and
    the bootstrap change-by-rank bands. Returns ``(significance, change_ci, calibration)``.
    """
    parts, change, calib = [], pd.DataFrame(), {}
    ref, other = inp.stores.get(REF), inp.stores.get(OTHER)
    if ref is not None and other is not None:
        parts.append(sg.paired_gene_test(ref, other, heads=_layer_heads(ref, every_head=paired_heads == "all"), min_cells=min_cells, seed=seed,
                                         gene_map=inp.gene_map, names=(REF, OTHER)))  # fmt: skip
        change = sg.bootstrap_change_by_rank(ref, other, n_boot=n_boot, seed=seed, names=(REF, OTHER))
    ch = inp.tables.get("cell_head")
    if ch is not None and {REF, OTHER} <= set(ch["model"].astype(str)):
        parts.append(
            sg.paired_head_test(
                ch, ref=REF, other=OTHER, metrics=[m for m in ("head_out", "recv_first") if m in ch]
            )
        )
    tgt_name = OTHER if OTHER in inp.stores else next(iter(inp.stores), None)
    if tgt_name is not None:
        store = inp.stores[tgt_name]
        labels = inp.cell_obs(store, label_key)
        if labels is None and ch is not None and "label" in ch:
            lab = ch.drop_duplicates("cell_id").set_index(
                ch.drop_duplicates("cell_id")["cell_id"].astype(str)
            )["label"]
            labels = lab.reindex(np.asarray(store.cell_ids).astype(str)).astype(str).to_numpy()
        if labels is not None and len(set(labels)) > 1:
            units = inp.cell_obs(store, WELL)
            units = units if units is not None else inp.cell_obs(store, REPLICATE)
            heads = [("mean", "mean")]
            min_units = 6 if units is not None else min_cells
            parts.append(sg.class_test(store, labels, units=units, heads=heads, min_units=min_units,
                                       gene_map=inp.gene_map, model=tgt_name, seed=seed))  # fmt: skip
            calib = sg.null_calibration(
                store, labels, units=units, seed=seed, heads=heads, min_units=min_units
            )
            calib["unit"] = "well/replicate" if units is not None else "cell"
    sig = pd.concat([p for p in parts if not p.empty], ignore_index=True) if parts else pd.DataFrame()
    sig = sig.reindex(columns=sg.SIGNIFICANCE_COLUMNS)
    sig["token_id"] = sig["token_id"].astype("Int64")
    return sig, change, calib


def _tokens(root: Path) -> tuple[Any, int, int]:
    from datasets import load_from_disk

    tok_dir = root / "tokens"
    ds = load_from_disk(str(tok_dir))
    pad, mask = 0, 1
    vj = tok_dir / "vocab.json"
    if vj.is_file():
        try:
            from ..tokenize import load_vocab

            v = load_vocab(tok_dir)
            pad, mask = int(v.pad_id), int(v.mask_id)
        except Exception:  # noqa: BLE001 - fall back to the default ids of geneattn vocabularies
            logger.warning("could not read %s; using <pad>=0, <mask>=1", vj)
    return ds, pad, mask


def _model(path: Path) -> Any:
    try:
        from ..models import load

        return load(path, task="classifier")
    except ImportError:  # pragma: no cover
        from transformers import BertForSequenceClassification

        return BertForSequenceClassification.from_pretrained(path, local_files_only=True).eval()


def step_methods(inp: Inputs, de: pd.DataFrame, *, seed: int = 0, n_cells: int = 16, k: int = 20, ig_steps: int = 16,
                 deletion_top_k: int = 20, deletion_cells: int = 8, batch_size: int = 8) -> pd.DataFrame:  # fmt: skip
    """Attention vs simpler gene scores on the same cells (fine-tuned model).

    Rollout, gradient × input, integrated gradients, in-silico deletion, DE only, mean rank, detection; raw and position-matched
    residual where applicable. Returns the ``methods`` table (`attribution.METHODS_COLUMNS`).
    """
    import torch

    de_s = _de_score(de)
    scores: dict[tuple[str, str], pd.Series] = {}
    secs: dict[str, float] = {}
    ncell: dict[str, int] = {}
    if OTHER in inp.stores:
        g = inp.gene_scores(OTHER)
        g = g[(g["layer"] == "mean") & (g["head"] == "mean")].drop_duplicates("gene").set_index("gene")
        for st in SCORE_TYPES:
            scores[("attention", st)] = g[st]
        ncell["attention"] = inp.stores[OTHER].n_cells
        secs["attention"] = _attention_seconds(inp)
    model_dir = inp.results_dir / "models" / OTHER
    if model_dir.is_dir() and (inp.results_dir / "tokens").is_dir() and n_cells > 0:
        torch.manual_seed(seed)
        ds, pad, mask = _tokens(inp.results_dir)
        model = _model(model_dir)
        cells = at.cells_from_tokens(ds, n_cells=n_cells, seed=seed)
        tg = at.targets_for(model, cells, pad_id=pad, batch_size=batch_size)
        runs = [at.rollout(model, cells, pad_id=pad, batch_size=batch_size),
                at.grad_input(model, cells, tg, pad_id=pad, batch_size=batch_size),
                at.integrated_gradients(model, cells, tg, mask_id=mask, pad_id=pad, n_steps=ig_steps, batch_size=batch_size)]  # fmt: skip
        sub = at.Cells(
            cells.input_ids[:deletion_cells],
            cells.cell_ids[:deletion_cells],
            None if cells.labels is None else cells.labels[:deletion_cells],
        )
        runs += list(
            at.deletion(
                model,
                sub,
                tg[:deletion_cells],
                top_k=deletion_top_k,
                pad_id=pad,
                batch_size=max(batch_size, 16),
            )
        )
        for ts in runs:
            for resid in (False, True):
                # few cells: fewer length bins, so each (position, bin) of E holds several tokens
                nb = max(1, min(10, ts.n_cells // 8))
                gt = at.gene_table(ts, gene_map=inp.gene_map, residual=resid, n_length_bins=nb)
                gt = gt.drop_duplicates("gene").set_index("gene")
                s = gt["score_mean"]
                # attributions are signed towards the target class; importance = magnitude
                s = s.abs() if ts.method in ("grad_input", "integrated_gradients", "deletion_prob") else s
                scores[(ts.method, "residual" if resid else "raw")] = s
            secs[ts.method], ncell[ts.method] = ts.seconds_per_cell, ts.n_cells
    if inp.stores:
        for name, s in _baselines(inp, next(iter(inp.stores))).items():
            scores[(name, "raw")] = s
    scores[("de", "raw")] = de_s
    return at.compare_methods(
        scores, de_score=de_s, planted=inp.planted, seconds_per_cell=secs, n_cells=ncell, k=k
    )


def _attention_seconds(inp: Inputs) -> float:
    p = inp.results_dir / "attention" / "params.json"
    try:
        params = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, json.JSONDecodeError):
        params = {}
    s = next((params[k] for k in ("seconds", "wall_s", "elapsed_s") if params.get(k)), None)
    n = params.get("n_cells")
    if s is None:  # the pipeline's manifest, when it records stage timings
        try:
            man = json.loads((inp.results_dir / "manifest.json").read_text())
            st = man.get("stages", {}).get("attention", {})
            s = next((st[k] for k in ("seconds", "wall_s", "elapsed_s", "duration_s") if st.get(k)), None)
        except (OSError, json.JSONDecodeError, AttributeError):
            s = None
    n_models = max(1, len(inp.stores))
    return float(s) / float(n) / n_models if s and n else float("nan")


def _write_table(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def run_stats(
    results_dir: str | Path,
    *,
    seed: int = 0,
    k: int = 20,
    n_boot: int = 200,
    attribution_cells: int = 16,
    deletion_cells: int = 8,
    deletion_top_k: int = 20,
    ig_steps: int = 16,
    umap: bool = True,
    markers: tuple[str, ...] = ("MDM2",),
    paired_heads: str = "layers",
    annotate: bool = False,
) -> dict[str, pd.DataFrame]:
    """Run every statistics step on a results directory and write its tables and metrics.

    Parameters
    ----------
    results_dir
        Results directory (``cells.h5ad``, ``tokens/``, ``models/``, ``attention/``, ``metrics.json``).
    seed
        Seed of UMAP, token subsamples, bootstrap, permutation and attribution cell subsample.
    k
        Top-k for overlaps with DE.
    n_boot
        Bootstrap resamples of the change-by-rank bands.
    attribution_cells
        Cells for rollout / gradient × input / integrated gradients (0 skips the attribution baselines).
    deletion_cells, deletion_top_k
        In-silico deletion: cells and top-ranked genes per cell.
    ig_steps
        Integrated-gradients steps.
    umap
        Compute the UMAP table.
    markers
        Genes whose rank is reported (MDM2, nutlin-3a's target).
    paired_heads
        Heads of the paired per-gene pt-vs-ft test: ``"layers"`` (head means per layer and overall)
        or ``"all"`` (also each head; slower).
    annotate
        Also write the DE (``uns["de"]``, ``uns["de_ref"]``) and UMAP (``obsm["X_umap"]``,
        ``obsm["X_pca"]``) results into ``cells.h5ad`` (atomically; counts in ``X`` unchanged, the
        derived ``counts``/``lognorm`` layers are not stored).

    Returns
    -------
    dict of the written tables (``TABLE_NAMES``); ``metrics.json`` gains ``"stats"``.
    """
    t0 = time.perf_counter()
    inp = load_inputs(results_dir)
    root = inp.results_dir
    timings: dict[str, float] = {}

    def _timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t, 3)
        logger.info("stats: %s done in %.1fs", name, timings[name])
        return out

    out: dict[str, pd.DataFrame] = {}
    out["de"] = _timed("de", step_de, inp.adata, seed=seed)
    if umap:
        out["umap"] = _timed("umap", step_umap, inp.adata, seed=seed)
    if not inp.stores:
        logger.warning("no attention token store in %s/attention: attention statistics skipped", root)
    out["agreement"] = _timed("agreement", step_agreement, inp, out["de"], k=k, markers=markers)
    out["confounds"] = _timed("confounds", step_confounds, inp, out["de"], k=k, seed=seed)
    sig, change, calib = _timed(
        "significance", step_significance, inp, seed=seed, n_boot=n_boot, paired_heads=paired_heads
    )
    out["significance"], out["change_ci"] = sig, change
    out["methods"] = _timed("methods", step_methods, inp, out["de"], seed=seed, n_cells=attribution_cells, k=k,
                            ig_steps=ig_steps, deletion_top_k=deletion_top_k, deletion_cells=deletion_cells)  # fmt: skip
    for name, df in out.items():
        _write_table(root / "tables" / f"{name}.parquet", df)
    if annotate:
        _annotate(root, inp.adata)
    _update_metrics(root, out, calib, timings, seed=seed, total=time.perf_counter() - t0)
    logger.info("stats: wrote %s", ", ".join(f"tables/{n}.parquet" for n in out))
    return out


def _annotate(root: Path, adata: Any) -> None:
    ann = adata.copy()
    for layer in ("counts", "lognorm"):
        ann.layers.pop(layer, None)
    with atomic_path(root / "cells.h5ad") as tmp:
        ann.write_h5ad(tmp)
    logger.info("stats: annotated %s (uns['de'], uns['de_ref'], obsm['X_umap'])", root / "cells.h5ad")


def _update_metrics(
    root: Path, out: dict[str, pd.DataFrame], calib: dict, timings: dict, *, seed: int, total: float
) -> None:
    path = root / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    st: dict[str, Any] = {
        "seed": seed,
        "timings_s": {**timings, "total": round(total, 3)},
        "null_calibration": calib,
    }
    conf = out["confounds"]
    if not conf.empty:
        top = conf[(conf["layer"] == "mean") & (conf["head"] == "mean")]
        st["recovery"] = {f"{r.model}/{r.score_type}": {"auroc_planted": r.auroc_planted, "auprc_planted": r.auprc_planted,
                                                          "spearman_vs_length": r.spearman_vs_length, "spearman_vs_de": r.spearman_vs_de}
                          for r in top.itertuples()}  # fmt: skip
        st["top_genes"] = {f"{r.model}/{r.score_type}": r.top_genes.split(",") for r in top.itertuples()}
    sig = out["significance"]
    if not sig.empty:
        st["n_significant"] = {t: int((g["pval_adj"] < 0.05).sum()) for t, g in sig.groupby("test")}
    meth = out["methods"]
    if not meth.empty:
        st["methods"] = meth.set_index(meth["method"] + "/" + meth["score_type"])[
            ["auroc_planted", "spearman_vs_de", "seconds_per_cell"]
        ].to_dict("index")
    clean = json.loads(pd.Series([st]).to_json(orient="records"))[0]  # NaN -> null
    metrics["stats"] = clean
    write_json(path, metrics)
