"""Re-create the shipped checkpoint ``src/geneattn/models/checkpoints/mini-nutlin`` from scratch.

    python scripts/pretrain_mini.py --out src/geneattn/models/checkpoints/mini-nutlin

Three steps, the last two through the project's own CLI (``geneattn tokenize``, ``geneattn pretrain``):

1. corpus: ``nutlin_sim(seed=CORPUS_SEED)`` with every dose at ``SCALE`` x the default cells per
   dose (the real Nutlin row's proportions), the default gene design (``gene_seed`` 0, the study's
   "organism") and cell seeds other than the study's 0, so no study cell is in the corpus;
2. ``geneattn tokenize``: builds the vocabulary (gene medians, ``<pad>``/``<mask>``/``<cls>``/``<eos>``)
   from the corpus and tokenizes it at the model input size;
3. ``geneattn pretrain``: masked gene modelling with the recipe's settings.

The output directory gets config.json, model.safetensors, vocab.json, train_log.json and a
RECIPE.md written from the run's own train_log.json (commands, corpus, seed, wall time, loss curve,
masked-gene accuracy against the gene-frequency baselines).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("pretrain_mini")

RECIPE = {
    "corpus_seed": 1,
    "scale": 7,
    "model_input_size": 256,
    "epochs": 2,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "seed": 0,
}


def simulate(path: Path, *, corpus_seed: int, scale: float) -> dict:
    """Write the corpus .h5ad; return its recipe (what `nutlin_sim` was called with)."""
    from geneattn.datasets import nutlin_sim
    from geneattn.datasets.nutlin_sim import DEFAULT_CELLS_PER_DOSE

    cells = {d: round(scale * n) for d, n in DEFAULT_CELLS_PER_DOSE.items()}
    adata = nutlin_sim(seed=corpus_seed, cells_per_dose=cells)
    adata.write_h5ad(path)
    return {"function": "geneattn.datasets.nutlin_sim", "seed": corpus_seed, "scale": scale, "cells_per_dose": cells,
            "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars),
            "params": {k: v for k, v in adata.uns["nutlin_sim"]["params"].items() if k != "cells_per_dose"}}  # fmt: skip


def cli(*args: str) -> None:
    """Run one ``geneattn`` command in this process (exit code 0 or raise)."""
    from geneattn.cli import app

    logger.info("geneattn %s", " ".join(args))
    try:
        app(list(args), standalone_mode=False)
    except SystemExit as e:  # typer exits 0 on success
        if e.code:
            raise


def main(argv: list[str] | None = None) -> None:
    """Simulate, tokenize and pretrain; write the checkpoint and its RECIPE.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    for key, value in RECIPE.items():
        ap.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the corpus and tokens here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pretrain-mini-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus = simulate(work / "corpus.h5ad", corpus_seed=args.corpus_seed, scale=args.scale)
    tok = ["tokenize", str(work / "corpus.h5ad"), "--out", str(work / "corpus_tokens"),
           "--model-input-size", str(args.model_input_size), "--special-tokens", "--gene-id-key", "ensembl_id"]  # fmt: skip
    if not (work / "corpus_tokens").exists():
        cli(*tok)
    pre = ["pretrain", str(work / "corpus_tokens"), "--out", str(args.out), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate), "--seed", str(args.seed)]  # fmt: skip
    cli(*pre)
    shutil.rmtree(args.out / "checkpoints", ignore_errors=True)
    log = json.loads((args.out / "train_log.json").read_text())
    recipe = {"model_input_size": args.model_input_size, "corpus": corpus, "commands": [" ".join(["geneattn", *tok]), " ".join(["geneattn", *pre])],
              "script": " ".join(["python scripts/pretrain_mini.py", *(argv or sys.argv[1:])]),
              "wall_seconds_total": round(time.perf_counter() - t0, 1)}  # fmt: skip
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    (args.out / "RECIPE.md").write_text(recipe_markdown(recipe, log))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %s", args.out)


def _curve(log: dict, n: int = 10) -> str:
    hist = log["history"]
    step = max(1, len(hist) // n)
    rows = []
    for i in range(0, len(hist), step):
        window = hist[i : i + step]
        rows.append(
            f"| {window[-1]['step']} | {window[-1]['epoch']} | {sum(h['loss'] for h in window) / len(window):.3f} |"
        )
    return "\n".join(["| step | epoch | training loss (mean over the window) |", "|---|---|---|", *rows])


def recipe_markdown(recipe: dict, log: dict) -> str:
    """RECIPE.md: how the checkpoint was made and what it learned (from train_log.json)."""
    m = log["masked_gene"]
    rows = [("model", m["model"]), ("unigram (gene frequency)", m["unigram"]),
            ("unigram by rank position", m["unigram_by_position"])]  # fmt: skip
    table = "\n".join(
        f"| {name} | {s['loss']:.3f} | {s['top1']:.4f} | {s['top10']:.4f} |" for name, s in rows
    )
    evals = "\n".join(
        f"| {e['epoch']} | {e['step']} | {e['loss']:.3f} | {e['top1']:.4f} | {e['top10']:.4f} |"
        for e in log["eval"]
    )
    c = recipe["corpus"]
    tp = log.get("throughput") or {}
    return f"""# mini-nutlin: how it was made

A `mini` model (6 layers x 4 heads, hidden 64, {log["config"]["preset"]} preset) pretrained by masked gene
modelling on simulated nutlin-3a cells. Re-create it from scratch (same seed, same numbers on the same
CPU and library versions):

    {recipe["script"]}

which runs (the corpus step calls the library: `geneattn simulate` takes one cell count for every dose):

    python -c "from geneattn.datasets import nutlin_sim; nutlin_sim(seed={c["seed"]}, cells_per_dose={c["cells_per_dose"]}).write_h5ad('corpus.h5ad')"
    {recipe["commands"][0]}
    {recipe["commands"][1]}

## Corpus

`{c["function"]}(seed={c["seed"]})`: {c["n_cells"]:,} cells x {c["n_genes"]:,} genes, every dose (0 ... 100)
at {c["scale"]} x the default cells per dose (the real Nutlin row's proportions): {c["cells_per_dose"]}.
Simulator settings: `{json.dumps(c["params"])}`. The default study simulates `seed=0`: no study cell is in
the corpus. The vocabulary (`vocab.json`: gene medians, `<pad>`, `<mask>`, `<cls>`, `<eos>`) was built from
this corpus by `geneattn tokenize`, which then tokenized it ({log["n_tokens"] / log["n_cells"]:.0f} tokens per
cell on average, at most the model input size). Tokenize study data with this vocabulary and
`--special-tokens`; fine-tuning pools `<cls>` (`geneattn_pooling` in config.json).

## Training

Settings: `{json.dumps(log["config"])}`; seed {log["seed"]}; {log["steps"]} steps on {log["n_cells"]:,} cells
({m["n_cells"]} more held out). Wall time {log["seconds_this_run"]:.0f} s for pretraining
({recipe["wall_seconds_total"]:.0f} s in all) on this machine; throughput of the first steps
{tp.get("cells_per_s", "?")} cells/s, {tp.get("tokens_per_s", "?")} tokens/s.

{_curve(log)}

## Masked-gene accuracy on {m["n_cells"]} held-out corpus cells ({m["n_masked"]:,} masked genes)

Every selected gene replaced by `<mask>` (15%, fixed seed); the baselines score the same positions.

| predictor | loss | top-1 | top-10 |
|---|---|---|---|
{table}

Per epoch (held-out):

| epoch | step | loss | top-1 | top-10 |
|---|---|---|---|---|
{evals}
"""


if __name__ == "__main__":
    main()
