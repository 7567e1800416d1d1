"""The default recipes still learn: pretraining on a small budget, and a short fine-tune of the shipped checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _ddp_smoke import TINY

import datasets
from geneattn.models import PretrainConfig, pretrain
from geneattn.tokenize import GeneVocab

N_BLOCKS, BLOCK = 4, 14


def _block_vocab() -> GeneVocab:
    genes = {f"G{i}": i for i in range(4, 4 + N_BLOCKS * BLOCK)}
    specials = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    return GeneVocab(token_ids={**specials, **genes}, medians=dict.fromkeys(genes, 1.0))


def _block_cells(n: int, *, planted: bool, seed: int = 0) -> datasets.Dataset:
    """Cells of 8-13 genes. Planted: all genes of a cell come from one of 4 blocks (a gene program),
    so the other genes tell which block a masked gene is from. Null: genes drawn from all blocks."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"input_ids": [], "length": []}
    for _ in range(n):
        pool = (
            4 + rng.integers(N_BLOCKS) * BLOCK + np.arange(BLOCK)
            if planted
            else 4 + np.arange(N_BLOCKS * BLOCK)
        )
        genes = rng.permutation(pool)[: rng.integers(8, 14)]
        rows["input_ids"].append([2, *genes.tolist(), 3])
        rows["length"].append(len(genes) + 2)
    return datasets.Dataset.from_dict(rows)


@pytest.mark.parametrize("planted", [True, False])
def test_pretraining_recipe_learns_gene_programs(tmp_path, planted):
    """The recipe's optimiser and masking (`PretrainConfig` defaults), a tiny model, 276 steps: held-out
    masked genes are predicted far better than by gene frequency when genes come in programs, and
    not better when they do not."""
    cfg = PretrainConfig(epochs=12, eval_cells=40, save_steps=0, config_overrides=TINY)
    out = pretrain(_block_cells(400, planted=planted), _block_vocab(), out=tmp_path, config=cfg, seed=0)
    m = json.loads((out / "train_log.json").read_text())["masked_gene"]
    model, uni = m["model"], m["unigram"]
    if planted:
        assert model["loss"] < uni["loss"] - 0.3
        assert model["top10"] > 2 * uni["top10"]
    else:
        assert model["loss"] > uni["loss"] - 0.1
        assert model["top10"] < uni["top10"] + 0.15


def _nutlin_tokens(doses: tuple[str, ...], *, cells_per_dose: int, seed: int, size: int):
    """Simulated nutlin cells of ``doses``, tokenized with the shipped checkpoint's vocabulary."""
    from geneattn.datasets import nutlin_sim
    from geneattn.models import builtin_checkpoint
    from geneattn.tokenize import tokenize

    adata = nutlin_sim(seed=seed, cells_per_dose=cells_per_dose)
    adata = adata[adata.obs["label"].astype(str).isin(doses)].copy()
    vocab = GeneVocab.from_json(builtin_checkpoint() / "vocab.json")
    return tokenize(adata, vocab, model_input_size=size, special_tokens=True, obs_keys=["label", "well"])


def test_short_finetune_of_the_shipped_checkpoint_learns_the_dose(tmp_path):
    """The study's recipe on the shipped checkpoint, 3 epochs on ~600 cells of two doses (low 0.1 vs
    high 10, whole wells held out; 128 tokens): test accuracy far above the majority class. Fails if the checkpoint, the
    tokens or the fine-tuning recipe stop carrying the dose signal."""
    from geneattn.models import FinetuneConfig, builtin_checkpoint, finetune

    ds = _nutlin_tokens(("0.1", "10"), cells_per_dose=300, seed=3, size=128)
    cfg = FinetuneConfig(epochs=3, learning_rate=1e-3, select_by="macro_f1", n_boot=200, device="cpu")
    out = finetune(ds, model=builtin_checkpoint(), out=tmp_path, label_key="label", config=cfg, seed=0)
    m = out.metrics
    majority = m["baselines"]["majority"]["accuracy"]
    assert m["accuracy"] > 0.85 and m["accuracy"] > majority + 0.3, m
    assert m["accuracy_ci"][0] > majority
