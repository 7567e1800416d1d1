"""The PBMC fine-tuning recipe, measured: test accuracy of variants on the study's own tokens.

Run a PBMC study first (``geneattn run --dataset pbmc68k --out pbmc/``); this script then fine-tunes
its pretrained model (or another ``--model``) with each variant on one or more split seeds and prints
one JSON line per run (accuracy, macro-F1, kept epoch, seconds, and its ratio to the logistic
regression on the same split, measured in the same run). Variants are FinetuneConfig fields
as JSON; the default grid is the one in BENCHMARKS.md ("PBMC").

    python benchmarks/pbmc_recipe.py --results pbmc/ [--model DIR] [--seeds 0 1] [--variant '{"pooling": "mean"}']
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

GRID = (
    {"pooling": "cls", "epochs": 4, "learning_rate": 1e-3, "head_learning_rate": 1e-3},
    {"pooling": "cls", "epochs": 30, "learning_rate": 1e-3, "head_learning_rate": 1e-3},
    {"pooling": "mean", "epochs": 15, "learning_rate": 1e-3, "head_learning_rate": 1e-3},
    {"pooling": "mean", "epochs": 25, "learning_rate": 3e-4, "head_learning_rate": 3e-3},
)


def main(argv: list[str] | None = None) -> None:
    """Fine-tune every variant on every seed and print a JSON line each."""
    from geneattn.models import FinetuneConfig, finetune

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, required=True, help="a PBMC study's results directory")
    p.add_argument("--model", type=Path, help="pretrained model (default: the study's models/pretrained)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variant", action="append", help="FinetuneConfig fields as JSON (repeatable)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    variants = [json.loads(v) for v in a.variant] if a.variant else list(GRID)
    model = a.model or a.results / "models" / "pretrained"
    for variant in variants:
        for seed in a.seeds:
            kw = {"batch_size": 16, "select_by": "macro_f1", **variant}
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                m = finetune(
                    a.results / "tokens", model=model, out=out, config=FinetuneConfig(**kw), seed=seed
                ).metrics
            row = {"variant": variant, "seed": seed, "accuracy": round(m["accuracy"], 3),
                   "macro_f1": round(m["macro_f1"], 3), "best_epoch": m["best_epoch"],
                   "logreg": round(m["baselines"]["logreg"]["accuracy"], 3),
                   "ratio_to_logreg": round(m["accuracy"] / m["baselines"]["logreg"]["accuracy"], 3),
                   "seconds": round(time.perf_counter() - t)}  # fmt: skip
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
