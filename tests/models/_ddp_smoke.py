"""Tiny test data for tests/models, and a distributed smoke run.

``torchrun --nproc_per_node 2 tests/models/_ddp_smoke.py OUT`` pretrains and fine-tunes a tiny
model on generated tokens; test_ddp.py checks that training completes under DDP (gloo on CPU) and
that only rank 0 writes outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

VOCAB_SIZE = 60
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}


def tiny_vocab(size: int = VOCAB_SIZE):
    """A `GeneVocab` with ``<pad>`` = 0, ``<mask>`` = 1 and genes G2 ... G{size-1}."""
    from geneattn.tokenize import GeneVocab

    genes = {f"G{i}": i for i in range(2, size)}
    return GeneVocab(token_ids={"<pad>": 0, "<mask>": 1, **genes}, medians=dict.fromkeys(genes, 1.0))


def tiny_tokens(n_cells: int = 96, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> object:
    """Generated token dataset: 3 classes with class-specific genes, 4 wells per class."""
    import datasets

    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    rows: dict[str, list] = {"input_ids": [], "length": [], "label": [], "cell_id": [], "well": []}
    for i in range(n_cells):
        c = i % 3
        length = int(rng.integers(8, 24))
        weights = np.ones(vocab_size - 2)
        weights[c * 10 : (c + 1) * 10] = 8.0
        ids = rng.choice(vocab_size - 2, size=length, replace=False, p=weights / weights.sum()) + 2
        rows["input_ids"].append(ids.tolist())
        rows["length"].append(length)
        rows["label"].append(labels[c])
        rows["cell_id"].append(f"cell{i}")
        rows["well"].append(f"{labels[c]}-w{i % 4}")
    return datasets.Dataset.from_dict(rows)


def main(argv: list[str] | None = None) -> None:
    """Run the smoke pretrain + finetune into ``argv[0]``."""
    import torch

    from geneattn._settings import settings
    from geneattn.models import FinetuneConfig, PretrainConfig, finetune, pretrain

    torch.set_num_threads(1)
    settings.progress = False
    out = Path((argv or sys.argv[1:])[0])
    ds = tiny_tokens()
    cfg = PretrainConfig(epochs=1, batch_size=8, config_overrides=TINY, eval_cells=0)
    pt = pretrain(ds, tiny_vocab(), out=out / "pt", config=cfg, seed=0)
    finetune(
        ds, model=pt, out=out / "ft", config=FinetuneConfig(epochs=1, batch_size=8, baselines=False), seed=0
    )


if __name__ == "__main__":
    main()
