"""Benchmark: geneattn attention extraction vs a plain SDPA forward vs HF eager ``output_attentions=True``.

V1 configuration (6 layers x 4 heads, hidden 256, intermediate 512, vocab 25,426, random weights), cells of
exactly L tokens. Every measurement runs in its own subprocess (peak RSS = ``ru_maxrss`` of that process);
modes are interleaved within each repeat and the medians are reported with ratios to SDPA.
Goal: geneattn >= 0.7x SDPA throughput at <= 1.5x its peak memory.

    python benchmarks/bench_attention.py [--lengths 512 2048] [--repeats 3] [--profile]
    python benchmarks/bench_attention.py --device cuda [--precision auto|fp32|bf16]

``--device cuda``: more cells per length (`CUDA_CELLS`), the device synchronized around the timed
run, and peak GPU memory (``torch.cuda.max_memory_allocated`` of the timed run) reported with the
RSS; every mode (SDPA and eager too) runs under the same ``--precision`` autocast as `extract`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time

MODES = ("sdpa", "geneattn", "eager")
CELLS = {512: (32, 8), 2048: (8, 4)}  # n cells, batch size
CUDA_CELLS = {512: (512, 64), 2048: (128, 16)}


def _cells(length: int, device: str) -> tuple[int, int]:
    """Number of cells and batch size of a run at ``length`` tokens on ``device``."""
    return (CUDA_CELLS if device == "cuda" else CELLS).get(length, (8, 4))


def _amp(device: str, precision: str):
    """Precision and autocast factory of the forward passes (`geneattn.attention.extract.precision_context`)."""
    if device == "cpu" and precision == "auto":  # float32; the CPU baselines import no geneattn code
        return "fp32", contextlib.nullcontext
    import torch

    from geneattn.attention.extract import precision_context

    return precision_context(precision, torch.device(device))


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _model(attn: str):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=25426, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512,
        hidden_act="relu", max_position_embeddings=2048, attn_implementation=attn,
    )  # fmt: skip
    return BertForMaskedLM(cfg).eval()


def worker(
    mode: str,
    length: int,
    profile: bool = False,
    threads: int = 1,
    device: str = "cpu",
    precision: str = "auto",
) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)

    n_cells, bs = _cells(length, device)
    used, amp = _amp(device, precision)
    rng = np.random.default_rng(0)
    cells = [rng.choice(np.arange(2, 25426), size=length, replace=False) for _ in range(n_cells)]
    model = _model("eager" if mode == "eager" else "sdpa").to(device)
    # every mode reads its cells from the same token Dataset (same imports, same data path)
    from datasets import Dataset

    ds = Dataset.from_dict({"input_ids": [c.tolist() for c in cells], "length": [length] * n_cells})
    warm = ds.select(range(1))
    if mode == "geneattn":
        from geneattn import settings
        from geneattn.attention import extract

        settings.progress = False

        def run(d):
            return extract({"m": model}, d, batch_size=bs, device=device, precision=precision)
    else:

        def run(d):
            with torch.inference_mode(), amp():
                for s in range(0, len(d), bs):
                    ids = torch.tensor(d[s : s + bs]["input_ids"]).to(device)
                    out = model.bert(
                        input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=mode == "eager"
                    )
                    del out

    run(warm)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t, cpu = time.perf_counter(), time.process_time()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with prof(activities=acts) as p:
            run(ds)
            _sync(device)
        sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        print(p.key_averages().table(sort_by=sort, row_limit=25), file=sys.stderr)
    else:
        run(ds)
        _sync(device)
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    res = {
        "mode": mode,
        "length": length,
        "cells_per_s": n_cells / dt,
        "cells_per_cpu_s": n_cells / dcpu,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if device == "cuda":
        res.update(peak_gpu_gb=torch.cuda.max_memory_allocated() / 2**30, precision=used)
    return res


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=list(MODES))
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker (1: stable on a shared machine)"
    )
    p.add_argument(
        "--profile", action="store_true", help="torch.profiler table of one geneattn run per length"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto", help="as extract(precision=...)"
    )
    p.add_argument("--worker", nargs=2, metavar=("MODE", "LENGTH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.exit(2, "bench_attention.py: --device cuda needs a CUDA device; torch sees none\n")
    return a


def _print_rows(res: dict[str, list[dict]], device: str) -> None:
    """One row per mode (medians over repeats) with ratios to the SDPA run of the same call.

    CPU: wall and CPU-time throughput, peak RSS. CUDA: wall throughput, peak GPU memory (and RSS).
    """
    gpu = device == "cuda"
    keys = ("cells_per_s", "peak_gpu_gb" if gpu else "cells_per_cpu_s", "peak_rss_gb")
    med = {m: {k: statistics.median(r[k] for r in v) for k in keys} for m, v in res.items()}
    base = med.get("sdpa")
    for m, d in med.items():
        if gpu:
            cols = f"{d['cells_per_s']:8.1f} cells/s wall,  peak GPU {d['peak_gpu_gb']:6.2f} GB,"
        else:
            cols = f"{d['cells_per_s']:7.2f} cells/s wall, {d['cells_per_cpu_s']:7.2f} cells/CPU-s,"
        ratio = ""
        if base and gpu:
            ratio = (
                f"  speed {d['cells_per_s'] / base['cells_per_s']:.2f}x"
                f"  GPU memory {d['peak_gpu_gb'] / base['peak_gpu_gb']:.2f}x of sdpa"
            )
        elif base:
            ratio = (
                f"  speed {d['cells_per_s'] / base['cells_per_s']:.2f}x (CPU time {d['cells_per_cpu_s'] / base['cells_per_cpu_s']:.2f}x)"
                f"  memory {d['peak_rss_gb'] / base['peak_rss_gb']:.2f}x of sdpa"
            )
        runs = ", ".join(f"{r['cells_per_s']:{'.1f' if gpu else '.2f'}}" for r in res[m])
        print(f"  {m:9s} {cols}  peak RSS {d['peak_rss_gb']:5.2f} GB{ratio}   (wall runs: {runs})")


def main() -> None:
    a = _args()
    dev = ["--threads", str(a.threads), "--device", a.device, "--precision", a.precision]
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.profile, a.threads, a.device, a.precision)))
        return
    for length in a.lengths:
        if a.profile:
            subprocess.run([sys.executable, __file__, "--worker", "geneattn", str(length), "--profile", *dev],
                           check=True)  # fmt: skip
            continue
        res: dict[str, list[dict]] = {m: [] for m in a.modes}
        for _ in range(a.repeats):
            for mode in a.modes:  # interleaved: the shared machine's load hits every mode alike
                cmd = [sys.executable, __file__, "--worker", mode, str(length), *dev]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                res[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        n_cells, bs = _cells(length, a.device)
        where = (f"cuda, {res[a.modes[0]][0]['precision']}" if a.device == "cuda"
                 else f"{a.threads} thread(s)")  # fmt: skip
        print(f"L={length}: {n_cells} cells, batch {bs}, {where}, {a.repeats} repeats (medians)")
        _print_rows(res, a.device)


if __name__ == "__main__":
    main()
