"""Benchmark: tokenization and attention extraction stay in bounded memory as the number of cells grows.

A backed h5ad of N cells x 20,000 genes (~60 nonzero genes per cell, Ensembl ids of a 20,000-gene
vocabulary) is generated chunk by chunk with h5py (never whole in memory), in its own subprocess.
Then, in a fresh subprocess per size (a child inherits its parent's ``ru_maxrss``), the backed file
is tokenized with `geneattn.tokenize.tokenize` and every cell goes through
`geneattn.attention.extract` with a tiny random BERT (1 layer, 2 heads, hidden 16; ``store_tokens=True``
writes the per-token memmap store). Peak RSS of the 200k-cell run over the 20k-cell run should stay ~1.

    python benchmarks/bench_scale.py [--sizes 20000 200000] [--tokens 64] [--workdir /tmp/geneattn-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

N_GENES = 20_000
NNZ_PER_CELL = 60
CHUNK = 10_000


def _ids() -> list[str]:
    return [f"ENSG{i:011d}" for i in range(N_GENES)]


def generate(path: Path, n_cells: int, seed: int = 0) -> None:
    """Write a CSR h5ad of ``n_cells`` chunk by chunk (obs/var through anndata, X through h5py)."""
    import h5py
    import numpy as np
    import pandas as pd
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, N_GENES + 1) ** 0.6  # a few highly expressed genes, a long tail
    p /= p.sum()
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        x = f.create_group("X")
        x.attrs["encoding-type"], x.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        x.attrs["shape"] = (n_cells, N_GENES)
        data = x.create_dataset("data", (0,), dtype="float32", maxshape=(None,), chunks=(1 << 16,))
        indices = x.create_dataset("indices", (0,), dtype="int32", maxshape=(None,), chunks=(1 << 16,))
        indptr = x.create_dataset("indptr", (n_cells + 1,), dtype="int64")
        indptr[0] = 0
        n_counts = np.empty(n_cells, np.float32)
        for start in range(0, n_cells, CHUNK):
            n = min(CHUNK, n_cells - start)
            nnz = rng.integers(NNZ_PER_CELL // 2, NNZ_PER_CELL * 3 // 2, n)
            cols = [np.sort(rng.choice(N_GENES, k, replace=False, p=p)) for k in nnz]
            vals = [rng.integers(1, 20, k).astype(np.float32) for k in nnz]
            lo = data.shape[0]
            data.resize((lo + nnz.sum(),))
            indices.resize((lo + nnz.sum(),))
            data[lo:] = np.concatenate(vals)
            indices[lo:] = np.concatenate(cols)
            indptr[start + 1 : start + n + 1] = lo + np.cumsum(nnz)
            n_counts[start : start + n] = [v.sum() for v in vals]
        obs = pd.DataFrame(
            {"n_counts": n_counts, "label": pd.Categorical(np.array(["a", "b"])[np.arange(n_cells) % 2])},
            index=[f"c{i}" for i in range(n_cells)],
        )
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame({"ensembl_id": _ids()}, index=[f"G{i}" for i in range(N_GENES)]))
        for k in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, k, {})


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(h5ad: Path, work: Path, tokens_per_cell: int, batch_size: int) -> dict:
    """Tokenize + extract in this (fresh) process; peak RSS after each phase."""
    import shutil

    import torch
    from transformers import BertConfig, BertForMaskedLM

    from geneattn import settings
    from geneattn.attention import extract
    from geneattn.models import save_model
    from geneattn.tokenize import GeneVocab, tokenize

    torch.manual_seed(0)
    settings.progress = False
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = _rss_mib()
    vocab = GeneVocab(token_ids={"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(_ids())}},
                      medians={g: 1.0 + (i % 7) / 3 for i, g in enumerate(_ids())})  # fmt: skip
    t = time.perf_counter()
    ds = tokenize(str(h5ad), vocab, out=work / "tokens", obs_keys=["label"], model_input_size=tokens_per_cell)
    n_cells, t_tok, rss_tok = len(ds), time.perf_counter() - t, _rss_mib()
    del ds
    cfg = BertConfig(vocab_size=vocab.size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=tokens_per_cell)  # fmt: skip
    model = save_model(BertForMaskedLM(cfg), work / "model")
    t = time.perf_counter()
    res = extract({"tiny": model}, work / "tokens", vocab, out=work / "attention", batch_size=batch_size,
                  device="cpu", store_tokens=True)  # fmt: skip
    t_att = time.perf_counter() - t
    return {
        "n_cells": n_cells,
        "n_attention_cells": int(res.params["n_cells"]),
        "baseline_rss_mib": round(base, 1),
        "tokenize_s": round(t_tok, 2),
        "tokenize_cells_per_s": round(n_cells / t_tok),
        "peak_rss_after_tokenize_mib": round(rss_tok, 1),
        "attention_s": round(t_att, 2),
        "attention_cells_per_s": round(n_cells / t_att),
        "peak_rss_mib": round(_rss_mib(), 1),
        "token_store_mib": round(
            sum(p.stat().st_size for p in (work / "attention").glob("token_*")) / 2**20, 1
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--tokens", type=int, default=64, help="model input size (tokens per cell)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/geneattn-scale"))
    ap.add_argument("--_generate", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._generate:
        generate(Path(a._generate[0]), int(a._generate[1]))
        return
    if a._measure:
        print(json.dumps(measure(Path(a._measure[0]), Path(a._measure[1]), a.tokens, a.batch_size)))  # noqa: T201
        return
    a.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    results = {}
    for n in a.sizes:
        h5ad = a.workdir / f"cells_{n}.h5ad"
        if not h5ad.is_file():
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--_generate", str(h5ad), str(n)], check=True, env=env)
            print(f"generated {h5ad} ({h5ad.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f}s",  # noqa: T201
                  flush=True)  # fmt: skip
        out = subprocess.run([sys.executable, __file__, "--_measure", str(h5ad), str(a.workdir / f"run_{n}"),
                              "--tokens", str(a.tokens), "--batch-size", str(a.batch_size)],
                             check=True, env=env, capture_output=True, text=True)  # fmt: skip
        results[n] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({"cells": n, **results[n]}), flush=True)  # noqa: T201
    lo, hi = min(results), max(results)
    ratio = results[hi]["peak_rss_mib"] / results[lo]["peak_rss_mib"]
    print(f"peak RSS {hi:,} cells / {lo:,} cells = {ratio:.2f}")  # noqa: T201


if __name__ == "__main__":
    main()
