"""Control fine-tunes in parallel worker processes (CPU), each pinned to its share of the threads.

A small BERT does not use two CPU threads well (one fine-tune: 1.2x faster with 2 threads than
with 1, measured), so on a CPU the study trains its control runs in parallel spawned processes
(all at once while that oversubscribes the cores at most 2x) of ``max(1, threads // workers)``
threads each: two single-thread fine-tunes at once finish in 0.65x the time of the same two one
after the other with 2 threads. Each run is seeded and its
thread count fixed, so its result does not depend on how runs are scheduled. On Linux a worker
dies with its parent (``PR_SET_PDEATHSIG``): a killed study leaves no orphan writing into ``runs/``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import shutil
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Job:
    """What one control run needs (picklable: it crosses into a worker process)."""

    name: str
    kind: str  # "real" or "permuted"
    tokens: str  # token dataset directory
    split: str  # the study fine-tune's splits.parquet
    model: str  # pretrained model directory
    out: str
    groups: dict[str, list[str]] | None
    config: object  # FinetuneConfig
    seed: int
    label_seed: int  # seed of the permutation between wells (permuted runs)


def _die_with_parent(threads: int) -> None:
    """Worker initializer: a thread budget, quiet progress, and SIGKILL when the parent dies (Linux)."""
    torch.set_num_threads(threads)
    from .. import settings

    settings.progress = False
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def permuted_tokens(
    ds: object, split: pd.DataFrame, seed: int, groups: dict[str, list[str]] | None = None
) -> object:
    """The tokens with labels permuted between wells (between cells without wells), within splits.

    The permutation is restricted (`geneattn.models.permute_labels`, ``balanced``): the permuted
    labels carry no information about the true classes nor their coarse ``groups``.
    """
    from ..models.splits import permute_labels

    units = np.asarray(ds["well"] if "well" in ds.column_names else ds["cell_id"]).astype(str)
    strata = split.set_index("cell_id").loc[np.asarray(ds["cell_id"]).astype(str), "split"].to_numpy()
    to_group = {m: g for g, members in (groups or {}).items() for m in members}
    labels = permute_labels(np.asarray(ds["label"]).astype(str), units, seed=seed, strata=strata,
                            to_group=to_group or None)  # fmt: skip
    return ds.remove_columns("label").add_column("label", labels.tolist())


def train_one(job: Job) -> tuple[str, dict]:
    """Fine-tune one control run (labels permuted between wells for ``kind == "permuted"``)."""
    import pandas as pd

    from ..models import finetune
    from ..tokenize import load_tokens

    ds, split = load_tokens(job.tokens), pd.read_parquet(job.split)
    if job.kind == "permuted":
        ds = permuted_tokens(ds, split, seed=job.label_seed, groups=job.groups)
    result = finetune(ds, model=job.model, out=job.out, label_key="label", groups=job.groups, config=job.config,
                      seed=job.seed, split=split)  # fmt: skip
    shutil.rmtree(Path(job.out) / "checkpoints", ignore_errors=True)
    return job.name, result.metrics


def run_jobs(jobs: list[Job], *, device: str | None) -> dict[str, dict]:
    """Every job's metrics; in parallel processes on a CPU, one after the other on an accelerator."""
    threads = torch.get_num_threads()
    # all at once while that oversubscribes the cores at most 2x: 3 single-thread runs on 2 cores
    # finish sooner than 2 + 1 (the last one alone on one core)
    workers = (len(jobs) if len(jobs) <= 2 * threads else threads) if device in (None, "cpu") else 1
    if workers <= 1:
        return dict(train_one(j) for j in jobs)
    per_worker = max(1, threads // workers)
    logger.info(
        "control runs: %d runs in %d parallel processes of %d thread(s)", len(jobs), workers, per_worker
    )
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_die_with_parent, initargs=(per_worker,)
    ) as pool:
        done = {}
        for name, metrics in pool.map(train_one, jobs):
            logger.info("control run %s: test accuracy %.3f", name, metrics.get("accuracy", float("nan")))
            done[name] = metrics
        return done
