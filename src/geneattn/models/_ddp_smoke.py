"""Distributed smoke run: ``torchrun --nproc_per_node 2 -m geneattn.models._ddp_smoke OUT``.

Pretrains and fine-tunes a tiny model on generated tokens; used by the test suite to check that
training completes under DDP (gloo on CPU) and that only rank 0 writes outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def tiny_tokens(n_cells: int = 96, vocab_size: int = 60, seed: int = 0) -> object:
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


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}


def main(argv: list[str] | None = None) -> None:
    """Run the smoke pretrain + finetune into ``argv[0]``."""
    import torch

    from .. import settings
    from ._finetune import FinetuneConfig, finetune
    from ._pretrain import PretrainConfig, pretrain

    torch.set_num_threads(1)
    settings.progress = False
    out = Path((argv or sys.argv[1:])[0])
    ds = tiny_tokens()
    pt = pretrain(
        ds, 60, out=out / "pt", config=PretrainConfig(epochs=1, batch_size=8, config_overrides=TINY), seed=0
    )
    finetune(
        ds, model=pt, out=out / "ft", config=FinetuneConfig(epochs=1, batch_size=8, baselines=False), seed=0
    )


if __name__ == "__main__":
    main()
