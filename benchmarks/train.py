"""Training throughput (cells/s) and peak memory on CPU: the ``mini`` preset vs Geneformer V1.

Each configuration runs in its own subprocess (so peak RSS is its own): random tokens, the same
masked-gene-modelling step `geneattn.models.pretrain` takes (forward, sparse MLM loss, backward,
AdamW), one warm-up step then N timed steps.

    python benchmarks/train.py [--steps 3] [--threads 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/tokenize.py would shadow the standard library's tokenize (imported by torch/inspect)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

CASES = [
    # name, preset, vocab, tokens per cell, batch
    ("mini@512", "mini", 5_000, 512, 16),
    ("mini@2048", "mini", 25_426, 2048, 4),
    ("V1 gf-6L-30M@2048", "gf-6L-30M-i2048", 25_426, 2048, 4),
]


def one(preset: str, vocab: int, length: int, batch: int, steps: int, threads: int) -> dict:
    import torch
    from transformers import BertForMaskedLM

    from geneattn.models import make_config
    from geneattn.models._data import mask_tokens
    from geneattn.models._pretrain import _MaskedLMLoss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = make_config(preset, vocab_size=vocab, max_position_embeddings=max(length, 2048))
    model = BertForMaskedLM(config)
    module = _MaskedLMLoss(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, vocab, (batch, length), generator=gen)
    attn = torch.ones_like(ids)
    inputs, labels = mask_tokens(
        ids,
        attn,
        special_ids=[0, 1],
        mask_id=1,
        vocab_size=vocab,
        probability=0.15,
        replace_prob=0.8,
        random_prob=0.1,
        generator=gen,
    )
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss = module(inputs, attn, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    step = sorted(times[1:])[len(times[1:]) // 2]  # median after warm-up
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "params_M": round(n_params / 1e6, 2),
        "batch": batch,
        "tokens": length,
        "s_per_step": round(step, 3),
        "cells_per_s": round(batch / step, 2),
        "tokens_per_s": round(batch * length / step),
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        preset, vocab, length, batch = args.one
        print(json.dumps(one(preset, int(vocab), int(length), int(batch), args.steps, args.threads)))
        return
    results = {}
    for name, preset, vocab, length, batch in CASES:
        cmd = [
            sys.executable,
            __file__,
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
            "--one",
            preset,
            str(vocab),
            str(length),
            str(batch),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
        print(f"{name:22s} {results[name]}", flush=True)
    v1, mini = results["V1 gf-6L-30M@2048"], results["mini@2048"]
    print(
        f"mini vs V1 at 2048 tokens: {mini['cells_per_s'] / v1['cells_per_s']:.1f}x cells/s, "
        f"{v1['peak_rss_MiB'] / mini['peak_rss_MiB']:.1f}x less peak memory"
    )
    m512 = results["mini@512"]
    print(
        f"mini@512: {m512['cells_per_s']:.1f} cells/s -> one epoch of 3,000 cells ~ {3000 / m512['cells_per_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
