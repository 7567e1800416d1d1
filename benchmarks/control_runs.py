"""Control runs made cheap: N fine-tunes one after another vs in parallel single-thread processes.

The run-level null needs several fine-tunes (real-label seeds and permuted-label runs). A small BERT
uses two CPU threads poorly, so the study trains its control runs in parallel spawned processes of
one thread each (`geneattn.study._workers.run_jobs`). This script measures that route against the
same runs one after another (all threads to each run), in the same process tree and on the same
data: the default study's cells (`nutlin_sim`, or fewer with ``--cells-per-dose``) tokenized with the
shipped checkpoint's vocabulary, the study's recipe (`study.training`), its split.

    python benchmarks/control_runs.py [--runs 4] [--cells-per-dose 120] [--epochs 2] [--threads 2]

Prints the wall time of each route and the speed-up (sequential / parallel).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def _setup(work: Path, cells_per_dose: int, epochs: int) -> tuple[str, str, str, object, dict]:
    import geneattn as ga
    from geneattn.io import parse_groups
    from geneattn.models import FinetuneConfig, builtin_checkpoint, finetune
    from geneattn.study.config import NUTLIN_CLASSES, NUTLIN_GROUPS

    adata = ga.datasets.nutlin_sim(seed=0, cells_per_dose=cells_per_dose)
    adata = adata[adata.obs["label"].astype(str).isin(NUTLIN_CLASSES)].copy()
    ck = builtin_checkpoint()
    vocab = ga.tokenize.GeneVocab.from_json(ck / "vocab.json")
    tokens = work / "tokens"
    ga.tokenize.tokenize(adata, vocab, out=tokens, model_input_size=256, special_tokens=True,
                         obs_keys=("label", "well", "n_genes"))  # fmt: skip
    groups = parse_groups(NUTLIN_GROUPS)
    config = FinetuneConfig(epochs=epochs, batch_size=16, learning_rate=1e-3, head_learning_rate=1e-3,
                            select_by="macro_f1", baselines=False)  # fmt: skip
    first = finetune(str(tokens), model=ck, out=work / "first", groups=groups, config=config, seed=0)
    return str(tokens), str(first.model_dir / "splits.parquet"), str(ck), config, groups


def _jobs(tokens: str, split: str, model: str, config: object, groups: dict, out: Path, n: int) -> list:
    from geneattn.study._workers import Job

    kinds = ["real" if i % 2 == 0 else "permuted" for i in range(n)]
    return [Job(f"run{i}", kinds[i], tokens, split, model, str(out / f"run{i}"), groups, config,
                seed=1000 * (i + 1), label_seed=7919 * (i + 1)) for i in range(n)]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--cells-per-dose", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from geneattn import settings
    from geneattn.study._workers import run_jobs, train_one

    settings.progress = False
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokens, split, model, config, groups = _setup(work, args.cells_per_dose, args.epochs)
        t = time.perf_counter()
        seq = dict(train_one(j) for j in _jobs(tokens, split, model, config, groups, work / "seq", args.runs))
        t_seq = time.perf_counter() - t
        t = time.perf_counter()
        par = run_jobs(_jobs(tokens, split, model, config, groups, work / "par", args.runs), device="cpu")
        t_par = time.perf_counter() - t
    same = all(abs(seq[k]["accuracy"] - par[k]["accuracy"]) < 1e-9 for k in seq)
    print(
        f"{args.runs} fine-tunes ({args.epochs} epochs, {args.cells_per_dose} cells per dose), {args.threads} threads"
    )
    print(f"one after another ({args.threads} threads each): {t_seq:7.1f} s")
    print(f"parallel single-thread processes:  {t_par:7.1f} s")
    print(f"speed-up: {t_seq / t_par:.2f}x; same test accuracies: {same}")


if __name__ == "__main__":
    main()
