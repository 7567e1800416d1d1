"""Tokenizer throughput and memory: geneattn vs a naive per-cell reference (vs Geneformer's numbers).

Generates 5,000 cells x 20,000 genes (CSR float32, density 0.175, Ensembl ids from the V2
dictionary, ``n_counts`` = row sums, ~95% ``filter_pass``) like the upstream measurement in
geneformer-tokenizer.md §7, then runs each measurement in its own subprocess and reports cells/s
and peak RSS (``resource.getrusage`` maxrss). ``--scaling`` also tokenizes 20k and 200k cells
(backed, sparser) to show that peak memory does not grow with the number of cells.

    python benchmarks/bench_tokenize.py [--cells 5000] [--naive-cells 300] [--scaling] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DICTS = (REPO / ".." / "shared" / "geneformer-dictionaries" / "v2_gc104M").resolve()
V2 = [
    DICTS / "token_dictionary_gc104M.pkl",
    DICTS / "gene_median_dictionary_gc104M.pkl",
    DICTS / "ensembl_mapping_dict_gc104M.pkl",
]
UPSTREAM_CELLS_PER_S = (388, 558)  # geneformer-tokenizer.md §7, same machine class


def make_h5ad(path: Path, n_cells: int, n_genes: int, density: float, seed: int = 0) -> None:
    """Negative-binomial-like counts with gene-specific means; ids from the V2 dictionary.

    Rows are generated and written in blocks, so large files do not need the whole matrix in
    memory.
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from geneattn.tokenize import load_pickle

    rng = np.random.default_rng(seed)
    genes = [g for g in load_pickle(V2[0]) if g.startswith("ENSG")]
    ids = rng.choice(genes, n_genes, replace=False)
    weight = rng.lognormal(0, 1.0, n_genes)
    weight /= weight.sum()
    obs = pd.DataFrame(
        {
            "n_counts": np.zeros(n_cells, dtype=np.float32),
            "filter_pass": (rng.random(n_cells) < 0.95).astype(np.int64),
            "cell_type": pd.Categorical(rng.choice(["A", "B", "C"], n_cells)),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"ensembl_id": ids}, index=[f"g{j}" for j in range(n_genes)])
    blocks = []
    for start in range(0, n_cells, 5000):
        n = min(5000, n_cells - start)
        nnz_per_cell = rng.binomial(n_genes, density, n)
        if density > 0.05:
            indptr = np.concatenate([[0], np.cumsum(nnz_per_cell)])
            indices = np.empty(indptr[-1], dtype=np.int32)
            for i in range(n):  # expressed genes: drawn by weight, without replacement
                cols = rng.choice(n_genes, nnz_per_cell[i], replace=False, p=weight)
                indices[indptr[i] : indptr[i + 1]] = np.sort(cols)
        else:  # sparse files: draw with replacement, drop repeats (vectorised)
            rows = np.repeat(np.arange(n), nnz_per_cell)
            key = np.unique(rows.astype(np.int64) * n_genes + rng.choice(n_genes, rows.size, p=weight))
            indices = (key % n_genes).astype(np.int32)
            indptr = np.concatenate([[0], np.cumsum(np.bincount(key // n_genes, minlength=n))])
        mean = 1 + 4 * weight[indices] * n_genes
        data = (1 + rng.negative_binomial(2, 2 / (2 + mean))).astype(np.float32)
        block = sp.csr_matrix((data, indices, indptr), shape=(n, n_genes))
        obs.iloc[start : start + n, 0] = np.asarray(block.sum(axis=1)).ravel().astype(np.float32)
        blocks.append(block)
    X = sp.vstack(blocks, format="csr")
    del blocks
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(path)


def _vmhwm_mib() -> float:
    """Peak resident set of this process image (VmHWM), a cross-check of ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(kind: str, path: str, out: str, n_cells: int) -> None:
    """Run one measurement (in a subprocess) and print a JSON line."""
    import logging

    from geneattn import settings
    from geneattn.tokenize import GeneVocab, tokenize

    logging.basicConfig(level=logging.WARNING)
    settings.progress = False
    # imports are not part of the timing (as in upstream's figures)
    import anndata  # noqa: F401

    import datasets  # noqa: F401

    vocab = GeneVocab.from_geneformer(*V2)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    if kind == "geneattn":
        t0 = time.perf_counter()
        ds = tokenize(
            path, vocab, out=out, model_input_size=4096, special_tokens=True, obs_keys=["cell_type"]
        )
        seconds, n = time.perf_counter() - t0, ds.num_rows
    else:
        import anndata as ad

        sys.path.insert(0, str(REPO / "tests" / "tokenize"))
        from _tokenize_naive import naive_tokenize

        from geneattn.tokenize import load_pickle

        dicts = [load_pickle(p) for p in V2]
        t0 = time.perf_counter()
        a = ad.read_h5ad(path, backed="r")[:n_cells].to_memory()
        cells = naive_tokenize(
            a.X,
            a.obs["n_counts"].to_numpy(),
            a.var["ensembl_id"],
            *dicts,
            model_input_size=4096,
            special_token=True,
            filter_pass=a.obs["filter_pass"].to_numpy(),
        )
        seconds, n = time.perf_counter() - t0, len(cells)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    rss = cpu1.ru_maxrss / 1024  # KiB -> MiB (Linux)
    hwm = _vmhwm_mib()
    print(
        json.dumps(
            {"kind": kind, "seconds": seconds, "cells": n, "cells_per_s": n / seconds, "rss_mib": rss}
            | {"base_rss_mib": base_rss, "vmhwm_mib": hwm, "cpu_s": cpu, "cells_per_cpu_s": n / cpu}
        )
    )


def generate(path: Path, n_cells: int, n_genes: int, density: float, seed: int) -> None:
    """Generate in a subprocess: a child inherits its parent's peak RSS, so the parent stays small."""
    if path.exists():
        return
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--make", str(path), str(n_cells), str(n_genes), str(density), str(seed)]
    subprocess.run(cmd, check=True)
    print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")


def measure(kind: str, path: Path, out: Path, n_cells: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(path), str(out), str(n_cells)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _compare(args: argparse.Namespace, data: Path, work: Path) -> None:
    runs = [measure("geneattn", data, work / "tokens") for _ in range(args.repeats)]
    best = max(runs, key=lambda r: r["cells_per_s"])
    naive = measure("naive", data, work / "naive", args.naive_cells)
    lo, hi = UPSTREAM_CELLS_PER_S
    print(f"\n{args.cells} cells x {args.genes} genes, density {args.density}, V2 (4096, <cls>/<eos>)")
    print(f"{'':22}{'cells/s':>10}{'seconds':>10}{'cells/CPU-s':>13}{'peak RSS MiB':>14}")
    for name, r in [*(("geneattn", r) for r in runs), ("naive per-cell ref", naive)]:
        row = f"{r['cells_per_s']:>10.0f}{r['seconds']:>10.2f}{r['cells_per_cpu_s']:>13.0f}{r['rss_mib']:>14.0f}"
        print(f"{name:22}{row}")
    print(f"{'Geneformer (§7)':22}{f'{lo}-{hi}':>10}{'':>10}{'':>13}{'~960':>14}")
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"load average during the run: {load} (on {os.cpu_count()} CPUs)")
    print(
        f"geneattn / naive: {best['cells_per_s'] / naive['cells_per_s']:.1f}x; "
        f"geneattn / Geneformer: {best['cells_per_s'] / hi:.0f}-{best['cells_per_s'] / lo:.0f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=5000)
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--density", type=float, default=0.175)
    p.add_argument("--naive-cells", type=int, default=300, help="cells for the (slow) naive reference")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", action="store_true", help="also 20k vs 200k cells (backed memory)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--only-scaling", action="store_true", help="skip the 5,000-cell comparison")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--make", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.make:
        path, n, g, d, seed = args.make
        make_h5ad(Path(path), int(n), int(g), float(d), int(seed))
        return
    if args.child:
        kind, path, out, n = args.child
        _child(kind, path, out, int(n))
        return
    if not all(f.is_file() for f in V2):
        sys.exit(f"Geneformer V2 dictionaries not found in {DICTS}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="geneattn-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"bench_{args.cells}x{args.genes}.h5ad"
    generate(data, args.cells, args.genes, args.density, 0)
    if not args.only_scaling:
        _compare(args, data, work)
    if args.scaling:
        print("\nbacked scaling (20,000 genes, density 0.01):")
        rss = {}
        for n in (20_000, 200_000):
            f = work / f"scale_{n}.h5ad"
            generate(f, n, args.genes, 0.01, 1)
            r = measure("geneattn", f, work / f"tokens_{n}")
            rss[n] = r["rss_mib"]
            print(
                f"  {n:>7} cells: {r['cells_per_s']:>8.0f} cells/s, {r['seconds']:6.1f} s, "
                f"peak RSS {r['rss_mib']:.0f} MiB (after imports + vocabulary: {r['base_rss_mib']:.0f} MiB)"
            )
        print(f"  peak RSS ratio 200k / 20k: {rss[200_000] / rss[20_000]:.2f}")


if __name__ == "__main__":
    main()
