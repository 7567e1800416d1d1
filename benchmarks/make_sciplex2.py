"""Write a file shaped like the real scPerturb sci-Plex-2 h5ad, at real scale, for benchmarks.

Layout from ``../shared/docs/sciplex2.md`` §1a: 24,262 cells x 58,347 genes; ``X`` float32 CSR raw UMI
counts; ``var_names`` gene symbols named ``gene_symbol`` (1,701 duplicates made unique with a ``:N``
suffix) with ``var["ensembl_id"]`` (version stripped), ``ncounts``, ``ncells``; ``obs`` with
``ncounts, hash_umis, pval_demultiplexing, qval_demultiplexing, top_to_second_best_ratio, top_oligo,
perturbation, dose_value, well, celltype, cell_line, cancer, disease, tissue_type, organism,
perturbation_type, ngenes, percent_mito, percent_ribo, nperts``. Four drugs (Dex, Nutlin, SAHA, BMS) at
eight dose tokens (string ``dose_value`` '0' ... '100'), 6 wells per drug and dose (plates A/B x
replicate columns), cells per drug and dose as in the real file, plus 529 un-hashed ``control`` cells
(NaN dose and well, ~3x shallower) -- the trap the loader must handle.

Counts (§2): library size log-normal (median 4,800 UMIs, sigma 0.55, floor 1,000) times a per-well
factor; gene means from a heavy-tailed profile over 58,347 genes so that a median cell detects ~2,400
genes. The curated p53 targets of `geneattn.datasets` (MDM2, CDKN1A, ...) keep their real symbols and
Ensembl ids and respond to Nutlin along Hill curves, and cell-cycle genes fall, so a study on this file
has a signal; the other genes get format-valid synthetic Ensembl ids. Written chunk by chunk with
h5py: memory stays ~1 GB.

    python benchmarks/make_sciplex2.py --out /tmp/sciplex2_scale.h5ad [--seed 0] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from anndata.io import write_elem

from geneattn.datasets import curated_genes

N_GENES = 58_347
N_DUPLICATE_SYMBOLS = 1_701
DOSES = ("0", "0.1", "0.5", "1", "5", "10", "50", "100")
# light-QC cells per drug and dose token (sciplex2.md §1a), scaled to the raw file's 23,733 hashed cells
CELLS = {
    "BMS": (959, 902, 703, 506, 435, 292, 137, 126),
    "Dex": (886, 897, 824, 1031, 992, 882, 1115, 1257),
    "Nutlin": (976, 833, 768, 874, 811, 1069, 395, 80),
    "SAHA": (983, 767, 692, 639, 518, 523, 717, 518),
}
N_CONTROL = 529
CHUNK = 256


def _genes(rng: np.random.Generator) -> pd.DataFrame:
    """Symbols, Ensembl ids, baseline share of UMIs and Nutlin response of every gene."""
    cur = curated_genes()
    n_other = N_GENES - len(cur)
    symbols = np.concatenate([cur["symbol"].to_numpy(), [f"GENE{i:05d}" for i in range(n_other)]])
    ens = np.concatenate([cur["ensembl_id"].to_numpy(), [f"ENSG9{i:010d}" for i in range(n_other)]])
    # duplicated symbols as in the real file (made unique below, ':1' style)
    dup = rng.choice(np.arange(len(cur), N_GENES), N_DUPLICATE_SYMBOLS, replace=False)
    symbols[dup] = symbols[rng.choice(np.arange(len(cur), N_GENES), N_DUPLICATE_SYMBOLS)]
    share = np.concatenate([cur["base"].to_numpy(dtype=float) / 4800.0,
                            rng.lognormal(np.log(2.2e-6), 2.3, n_other)])  # fmt: skip
    lfc = np.zeros(N_GENES)
    lfc[: len(cur)] = np.nan_to_num(cur["lfc_at_10"].to_numpy(dtype=float))
    return pd.DataFrame({"symbol": symbols, "ensembl_id": ens, "share": share / share.sum(), "lfc10": lfc})


def _design(rng: np.random.Generator, scale: float) -> pd.DataFrame:
    rows = []
    for d_i, drug in enumerate(CELLS):
        for k, dose in enumerate(DOSES):
            n = round(CELLS[drug][k] * scale)
            idx = rng.integers(0, 6, n)
            wells = [f"{'AB'[i // 3]}{'ABCDEFGH'[k]}{(3 * d_i + i % 3 + 1):02d}" for i in idx]
            rows.append(pd.DataFrame({"perturbation": drug, "dose_value": dose, "well": wells}))
    hashed = pd.concat(rows, ignore_index=True)
    control = pd.DataFrame({"perturbation": ["control"] * round(N_CONTROL * scale), "dose_value": np.nan,
                            "well": np.nan})  # fmt: skip
    return pd.concat([hashed, control], ignore_index=True).sample(
        frac=1.0, random_state=int(rng.integers(1 << 31))
    )


def _counts(genes: pd.DataFrame, design: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator,
            well_factor: dict) -> np.ndarray:  # fmt: skip
    """Dense counts ``[len(rows), N_GENES]`` of a chunk of cells (gamma-Poisson, dispersion 0.3)."""
    sub = design.iloc[rows]
    depth = np.maximum(rng.lognormal(np.log(4800), 0.55, len(sub)), 1000.0)
    depth *= np.array([well_factor.get(w, 1 / 3) for w in sub["well"].astype(str)])  # control: 3x shallower
    dose = pd.to_numeric(sub["dose_value"], errors="coerce").fillna(0).to_numpy()
    nutlin = (sub["perturbation"] == "Nutlin").to_numpy()
    hill = np.where(nutlin, dose / (3.0 + dose), 0.0)  # EC50 3 tokens, Hill coefficient 1
    log2_fc = hill[:, None] * (genes["lfc10"].to_numpy()[None, :] / (10 / 13))
    mu = depth[:, None] * genes["share"].to_numpy()[None, :] * np.exp2(log2_fc)
    return rng.poisson(rng.gamma(1 / 0.3, mu * 0.3)).astype(np.float32)


def _obs(
    design: pd.DataFrame, ncounts: np.ndarray, ngenes: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    n = len(design)
    hashed = design["perturbation"] != "control"
    top = design["perturbation"] + "_" + design["dose_value"].astype(str) + "_" + design["well"].astype(str)
    obs = pd.DataFrame({
        "ncounts": ncounts, "hash_umis": np.where(hashed, rng.integers(30, 500, n), 0).astype(float),
        "pval_demultiplexing": rng.uniform(0, 1e-3, n), "qval_demultiplexing": rng.uniform(0, 1e-2, n),
        "top_to_second_best_ratio": rng.uniform(10, 100, n), "top_oligo": top.where(hashed, np.nan),
        "perturbation": design["perturbation"].to_numpy(), "dose_value": design["dose_value"].to_numpy(),
        "well": design["well"].to_numpy(), "celltype": "alveolar basal epithelial cells", "cell_line": "A549",
        "cancer": True, "disease": "lung adenocarcinoma", "tissue_type": "cell_line", "organism": "human",
        "perturbation_type": "drug", "ngenes": ngenes, "percent_mito": rng.uniform(2, 20, n),
        "percent_ribo": rng.uniform(5, 30, n), "nperts": np.where(hashed, 1, 0),
    }, index=[f"cell{i:06d}" for i in range(n)])  # fmt: skip
    for c in ("perturbation", "dose_value", "well", "top_oligo"):
        obs[c] = obs[c].astype("category")
    return obs


def generate(path: Path, *, seed: int = 0, scale: float = 1.0) -> dict:
    """Write the file; returns its shape, nonzeros and median genes per cell."""
    rng = np.random.default_rng(seed)
    genes, design = _genes(rng), _design(rng, scale)
    wells = design["well"].dropna().unique()
    well_factor = dict(zip(wells, rng.lognormal(0, 0.3, len(wells)), strict=True))
    n = len(design)
    ncounts, ngenes, gene_counts, gene_cells = (
        np.zeros(n),
        np.zeros(n, np.int64),
        np.zeros(N_GENES),
        np.zeros(N_GENES),
    )
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        x = f.create_group("X")
        x.attrs["encoding-type"], x.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        x.attrs["shape"] = (n, N_GENES)
        data = x.create_dataset("data", (0,), dtype="float32", maxshape=(None,), chunks=(1 << 18,))
        indices = x.create_dataset("indices", (0,), dtype="int32", maxshape=(None,), chunks=(1 << 18,))
        indptr = x.create_dataset("indptr", (n + 1,), dtype="int64")
        indptr[0] = 0
        for start in range(0, n, CHUNK):
            rows = np.arange(start, min(n, start + CHUNK))
            dense = _counts(genes, design, rows, rng, well_factor)
            r, c = np.nonzero(dense)
            lo = data.shape[0]
            data.resize((lo + len(r),))
            indices.resize((lo + len(r),))
            data[lo:], indices[lo:] = dense[r, c], c.astype(np.int32)
            indptr[rows + 1] = lo + np.cumsum(np.bincount(r, minlength=len(rows)))
            ncounts[rows], ngenes[rows] = dense.sum(1), (dense > 0).sum(1)
            gene_counts += dense.sum(0)
            gene_cells += (dense > 0).sum(0)
        write_elem(f, "obs", _obs(design, ncounts, ngenes, rng))
        var = pd.DataFrame({"ensembl_id": genes["ensembl_id"].to_numpy(), "ncounts": gene_counts, "ncells": gene_cells},
                           index=pd.Index(_unique(genes["symbol"].to_numpy()), name="gene_symbol"))  # fmt: skip
        write_elem(f, "var", var)
        for k in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, k, {})
        nnz = int(data.shape[0])
    return {"cells": n, "genes": N_GENES, "nnz": nnz, "median_genes_per_cell": float(np.median(ngenes))}


def _unique(symbols: np.ndarray) -> list[str]:
    """Symbols made unique as scPerturb did: repeats get ``:1``, ``:2``, ..."""
    seen: dict[str, int] = {}
    out = []
    for s in symbols:
        k = seen.get(s, 0)
        out.append(s if k == 0 else f"{s}:{k}")
        seen[s] = k + 1
    return out


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the real cell numbers")
    args = ap.parse_args()
    t0 = time.perf_counter()
    info = generate(args.out, seed=args.seed, scale=args.scale)
    info.update(seconds=round(time.perf_counter() - t0, 1), bytes=args.out.stat().st_size)
    print(info)


if __name__ == "__main__":
    main()
