"""A small simulated AnnData (two doses, 6 cells per dose) and a 1-epoch fine-tune of the shipped model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_adata():
    """12 cells of nutlin-sim (doses 0.1 and 10, raw counts), built once; tests take a ``.copy()``."""
    import geneattn as ga

    adata = ga.datasets.nutlin_sim(seed=0, cells_per_dose=6)
    return adata[adata.obs["label"].isin(["0.1", "10"])].copy()


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory, small_adata):
    """`geneattn.tl.finetune` of the shipped checkpoint: 1 epoch, no baselines (a few seconds)."""
    import geneattn as ga

    out = tmp_path_factory.mktemp("tl") / "finetuned"
    return ga.tl.finetune(small_adata.copy(), "mini-nutlin", label_key="label", out=out, seed=0, epochs=1,
                          baselines=False, n_boot=10, device="cpu")  # fmt: skip
