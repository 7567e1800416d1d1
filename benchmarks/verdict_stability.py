"""Is the verdict's truth line the same for every seed of the stats stage? (issue 20)

Recomputes, on an existing results directory (read only), the incremental-value tables and the
run-level increment for seeds 0..N-1 (the seed moves the cross-validation folds, the cluster
bootstrap and the covariate-plus-noise control) and prints how many distinct truth lines come out.

Usage: ``PYTHONPATH=src python benchmarks/verdict_stability.py RESULTS_DIR [N_SEEDS] [N_BOOT]``.
"""

from __future__ import annotations

import logging
import sys
import time

from geneattn._results import Results
from geneattn.study.inputs import load_inputs
from geneattn.study.methods import incremental_tables, run_increment_table
from geneattn.study.metrics import _incremental
from geneattn.study.verdict import _truth

logger = logging.getLogger("verdict_stability")


def main(root: str, n_seeds: int = 20, n_boot: int = 200) -> int:
    """Print the distinct truth lines over ``n_seeds`` seeds; exit status 1 when there is more than one."""
    res = Results(root)
    inp, de = load_inputs(res), res.read_table("de")
    deltas = res.read_table("run_deltas") if res.has_table("run_deltas") else None
    runs, contrast = run_increment_table(inp, deltas) if deltas is not None else (None, {})
    texts: dict[str, list[int]] = {}
    t0 = time.perf_counter()
    for seed in range(n_seeds):
        table, _, programmes, _ = incremental_tables(inp, de, n_boot=n_boot, seed=seed)
        text = _truth({"incremental": _incremental(table, programmes, runs, contrast)})["text"]
        texts.setdefault(text, []).append(seed)
    print(
        f"{n_seeds} seeds, n_boot {n_boot}, {time.perf_counter() - t0:.1f} s: {len(texts)} distinct truth line(s)"
    )
    for text, seeds in texts.items():
        print(f"seeds {seeds}:\n  {text}")
    return 0 if len(texts) == 1 else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:]
    sys.exit(main(args[0], *(int(a) for a in args[1:3])))
