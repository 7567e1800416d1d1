"""Synthetic tables in the contract schemas (attention, stats, metrics) for plot and report tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

LABELS = ["0.1", "0.5", "5", "10"]


def synthetic_tables(seed: int = 0, labels=LABELS) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(30)] + ["MDM2"]
    n = 120
    t: dict[str, pd.DataFrame] = {}
    t["umap"] = pd.DataFrame({"cell_id": [f"c{i}" for i in range(n)], "umap1": rng.normal(size=n), "umap2": rng.normal(size=n),
                              "label": rng.choice(labels, n), "n_genes": rng.integers(300, 3000, n)})  # fmt: skip
    rows = []
    for model in ("pretrained", "finetuned"):
        for r, g in enumerate(genes):
            rows.append({"model": model, "layer": -1, "head": -1, "rank": r + 1, "token_id": r + 2, "ensembl_id": f"E{r}",
                         "gene": g, "n_cells": 50, "fold_mean": 3.0 - r * 0.05})  # fmt: skip
    t["top_genes"] = pd.DataFrame(rows)
    rows = []
    for layer in range(6):
        for head in (*range(4), "mean"):
            for b in range(0, 500, 25):
                pc = rng.normal(0, 5)
                rows.append({"model_ref": "pretrained", "model_other": "finetuned", "layer": str(layer), "head": str(head),
                             "bin_start": b, "bin_end": b + 24, "n_cells": 100, "ref_mean": 1.0, "other_mean": 1 + pc / 100,
                             "pct_change": pc, "ci_low": pc - 2, "ci_high": pc + 2})  # fmt: skip
    t["change_ci"] = pd.DataFrame(rows)
    t["head_change"] = t["change_ci"].assign(layer=lambda d: pd.to_numeric(d["layer"], errors="coerce"),
                                             head=lambda d: pd.to_numeric(d["head"], errors="coerce"), metric="fold").dropna()  # fmt: skip
    sig = [{"test": "paired_head", "model_ref": "pretrained", "model_other": "finetuned", "layer": str(la), "head": str(h),
            "token_id": None, "gene": None, "metric": "head_out", "n": 100, "effect": 0.1, "pct_change": rng.normal(0, 10),
            "statistic": 1.0, "pval": 0.01, "pval_adj": rng.choice([0.001, 0.5]), "adjust": "holm"}
           for la in range(6) for h in range(4)]  # fmt: skip
    t["significance"] = pd.DataFrame(sig)
    t["head_norms"] = pd.DataFrame([{"model": m, "layer": la, "head": h, "n_cells": 100, "head_out_mean": rng.uniform(1, 2),
                                     "head_out_sd": 0.1, "share_mean": 0.25, "fnorm_mean": 1.0}
                                    for m in ("pretrained", "finetuned") for la in range(6) for h in range(4)])  # fmt: skip
    t["confounds"] = pd.DataFrame([{"model": m, "layer": "mean", "head": "mean", "score_type": s, "n_genes": 31,
                                    "spearman_vs_length": v, "auroc_planted": 0.7, "spearman_vs_de": 0.2, "top_genes": "G1,G2"}
                                   for m in ("pretrained", "finetuned") for s, v in (("raw", -0.8), ("fold", 0.1), ("residual", 0.02))])  # fmt: skip
    t["attention_by_position_length"] = pd.DataFrame([{"model": "finetuned", "layer": 0, "head": 0, "position": p, "length_bin": b,
                                                       "n": 10, "logfold_mean": -p / 300 + b / 10}
                                                      for p in range(0, 400, 10) for b in range(4)])  # fmt: skip
    t["methods"] = pd.DataFrame([{"method": m, "score_type": s, "n_genes": 31, "auroc_planted": rng.uniform(0.4, 1),
                                  "auprc_planted": 0.5, "spearman_vs_de": 0.3, "topk_overlap_de": 5, "hypergeom_p": 0.01,
                                  "seconds_per_cell": 0.01, "n_cells": 32}
                                 for m, s in (("attention", "raw"), ("attention", "residual"), ("grad_input", "raw"), ("de", "raw"))])  # fmt: skip
    t["expr"] = pd.DataFrame(
        [{"gene": g, "label": lab, "mean_expr": rng.uniform(0, 3)} for g in genes[:10] for lab in labels]
    )
    t["de_vs"] = pd.DataFrame({"gene": genes, "de_score": rng.normal(size=len(genes)), "attention": rng.normal(size=len(genes)),
                               "planted": [i < 5 for i in range(len(genes))]})  # fmt: skip
    methods = ["attention_fold", "attention_residual", "detection", "mean_expression", "de", "grad_input"]
    t["incremental"] = pd.DataFrame([{"method": m, "uses_labels": m.startswith(("attention", "de", "grad")), "n_genes": 31,
                                      "auroc": rng.uniform(0.4, 0.9), "stratified_auroc": rng.uniform(0.4, 0.7),
                                      "delta_auroc": d, "delta_lo": d - 0.05, "delta_hi": d + 0.05, "lr_pvalue": 0.3}
                                     for m, d in zip(methods, rng.normal(0, 0.05, len(methods)), strict=True)])  # fmt: skip
    edges = [0.0, 0.5, 1.0, 2.0, 4.0]
    t["recovery"] = pd.DataFrame([{"method": m, "bin": i, "lo": lo, "hi": hi, "n_planted": 10, "auroc": 0.5 + 0.1 * i,
                                   "stratified_auroc": 0.5 + 0.08 * i, "recall": 0.1 * i}
                                  for m in methods for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))])  # fmt: skip
    abl = [
        {
            "ablation": "full",
            "layer": -1,
            "head": -1,
            "n_heads": 0,
            "d_accuracy": 0.0,
            "d_accuracy_low": 0.0,
            "d_accuracy_high": 0.0,
            "d_loglik": 0.0,
            "d_loglik_low": 0.0,
            "d_loglik_high": 0.0,
        }
    ]
    for la in range(6):
        for h in range(4):
            d = rng.normal(-0.01, 0.02)
            abl.append({"ablation": f"L{la}H{h}", "layer": la, "head": h, "n_heads": 1, "d_accuracy": d,
                        "d_accuracy_low": d - 0.02, "d_accuracy_high": d + 0.02, "d_loglik": d, "d_loglik_low": d - 0.02,
                        "d_loglik_high": d + 0.02})  # fmt: skip
    t["head_ablation"] = pd.DataFrame(abl)
    return t


def report_metrics(evil: str) -> dict:
    """A complete ``metrics.json`` for report tests, ``evil`` in user-controlled strings."""
    return {
        "data": {"n_cells": 1234, "n_genes": 987, "classes": {"0.1": 300, evil: 12},
                 "genes_per_cell": {"median": 1500.0, "min": 200.0, "max": 4000.0}},
        "classification": {"accuracy": 0.4321, "macro_f1": 0.4, "n_train": 900, "n_val": 100, "n_test": 110,
                           "n_test_units": 4, "epochs_run": 4, "best_epoch": 3, "pooling": "cls", "split_grouped_by": "well",
                           "accuracy_ci": [0.4, 0.45],
                           "confusion": {"labels": ["0.1", evil], "matrix": [[5, 1], [2, 3]]},
                           "groups": {"accuracy": 0.8771, "accuracy_ci": [0.8, 0.9], "confusion": {"labels": ["low", "high"], "matrix": [[5, 1], [1, 5]]}},
                           "baselines": {n: {"accuracy": a, "accuracy_ci": [a, a], "macro_f1": a, "groups": {"accuracy": a, "accuracy_ci": [a, a]}}
                                         for n, a in (("majority", 0.25), ("logreg", 0.5))}},
        "attention": {"top_genes_finetuned": ["G0", evil, "MDM2"], "highlight_rank_finetuned": {"MDM2": 6},
                      "highlight_rank_pretrained": {"MDM2": 40}, "n_genes_scored": 31, "n_bins_compared": 192, "highlight_mean_position": {"MDM2": 200.0},
                      "largest_change": {"layer": "3", "head": "1", "bin_start": 200, "bin_end": 224, "pct_change": 17.25},
                      "peak_bin_mean_abs_change": {"bin_start": 200, "mean_abs_pct_change": 9.5}},
        "agreement": {"fold": {"spearman_vs_de": 0.123, "topk_overlap_de": 3, "topk_expected": 1.1, "k": 20}},
        "confounds": {"finetuned/raw": {"spearman_vs_length": -0.8, "auroc_planted": 0.6}},
        "significance": {"heads": {"n_heads": 24, "n_significant": 11, "max_abs_pct_change": 30.0}, "calibration": {"fpr": 0.04}},
        "methods": {"metric": "auroc_planted", "values": {"attention/raw": 0.61}, "best": "de/raw", "best_value": 0.99},
        "highlight": ["MDM2"],
        "verdict": {"learned": {"learned": True, "text": "learned"}, "task_change": {"text": "t"},
                    "heads": {"text": "h"}, "truth": {"text": "u"}},
        "pretraining": {}, "runs": {}, "task_attributable": {}, "ensemble": {},
        "input": {"model_input_size_requested": 2048, "model_input_size": 256, "genes_per_input": 254,
                  "n_cells_truncated": 12, "share_cells_truncated": 0.5, "median_genes_expressed": 300,
                  "median_genes_in_input": 254},
        "skipped": {"heads": "no head-ablation table", "preregistered": "no control runs",
                    "highlight_by_class": "no control runs", "run_scores": "no control runs", "power": "no control runs",
                    "incremental_runs": "no control runs", "confound_wells": "no wells",
                    "incremental_programmes": "no planted programmes"},
    }  # fmt: skip
