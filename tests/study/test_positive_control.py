"""The positive control of the run-level null: one gene alone decides a label assigned to wells.

`geneattn.datasets.switch_control` relabels the simulated cells "on"/"off" by well (independently of
dose) and makes one unplanted gene present at a mid rank in every "on" cell and absent from every
"off" cell. Fine-tunes on the real ``switch`` labels (other seeds) must learn it and change attention
to that gene; fine-tunes on labels permuted between wells (balanced: each permuted class takes as
many "on" as "off" wells, within every split) must not. With `N_REAL` + `N_PERMUTED` runs, the
run-level test (`stats.run_deltas` -> `stats.nulls.task_attributable`) finds the gene at FDR 0.05 and
(nearly) nothing else, and a null study (permuted runs against permuted runs) finds nothing.
Driven through the library (`models.finetune`, `attention.extract`) on a small study.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneattn import settings
from geneattn.attention import extract
from geneattn.attention.store import TokenStore
from geneattn.datasets import switch_control
from geneattn.models import FinetuneConfig, builtin_checkpoint, finetune, learned_run, make_splits
from geneattn.stats.nulls import task_attributable
from geneattn.stats.run_deltas import gene_deltas
from geneattn.tokenize import GeneVocab, tokenize

#: real-label and permuted-label runs of the positive-control study (the study's default design)
N_REAL, N_PERMUTED = 4, 4
#: cells per dose (4 doses x 6 wells) and the input size: the smallest study in which every seed learns
CELLS_PER_DOSE, INPUT_SIZE, RANKS = 60, 128, (30, 90)
RECIPE = {"epochs": 3, "head_learning_rate": 1e-2}
DOSES = ("0.1", "0.5", "5", "10")


def balanced_permutation(labels: np.ndarray, wells: np.ndarray, split: np.ndarray, *, seed: int) -> np.ndarray:
    """Labels permuted between wells so that, within each split, every true class's wells go half to each label."""
    rng = np.random.default_rng([seed, 99])
    table = pd.DataFrame({"well": wells, "label": labels, "split": split}).drop_duplicates("well")
    classes = sorted(set(labels))
    new = {}
    for _, g in table.groupby(["split", "label"]):
        start = rng.integers(len(classes))
        for i, w in enumerate(rng.permutation(g["well"].to_numpy())):
            new[w] = classes[(i + start) % len(classes)]
    return np.array([new[w] for w in wells])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    settings.progress = False
    root = tmp_path_factory.mktemp("posctl")
    adata = switch_control(0, cells_per_dose=dict.fromkeys(DOSES, CELLS_PER_DOSE), rank_range=RANKS)
    vocab = GeneVocab.from_json(builtin_checkpoint() / "vocab.json")
    ds = tokenize(adata, vocab, model_input_size=INPUT_SIZE, special_tokens=True, obs_keys=["well", "switch"])
    labels, wells = np.asarray(ds["switch"]).astype(str), np.asarray(ds["well"]).astype(str)
    split, _ = make_splits(labels, wells, test_size=1 / 3, val_size=1 / 6, seed=0)
    table = pd.DataFrame({"cell_id": ds["cell_id"], "split": split})
    cfg = FinetuneConfig(**RECIPE, baselines=False, n_boot=1, device="cpu")
    runs, metrics = {}, {}
    for k in range(N_REAL + N_PERMUTED):
        real = k < N_REAL
        name = f"real{k}" if real else f"permuted{k - N_REAL}"
        d = ds if real else ds.add_column("null", balanced_permutation(labels, wells, split, seed=k).tolist())
        r = finetune(d, model=builtin_checkpoint(), out=root / name, label_key="switch" if real else "null",
                     config=cfg, seed=k + 1, split=table)  # fmt: skip
        runs[name], metrics[name] = ("real" if real else "permuted"), r.metrics
    held = [i for i, s in enumerate(split) if s != "train"]
    models = {"pretrained": builtin_checkpoint(), **{n: root / n for n in runs}}
    extract(models, ds.select(held), vocab, out=root / "att", label_key=None, device="cpu", batch_size=32)
    ref = TokenStore.load(root / "att", "pretrained")
    deltas = pd.concat(
        pd.DataFrame({"run": n, "kind": kind, "unit": g.index.astype(str), "value": g.to_numpy()})
        for n, kind in runs.items()
        for g in [gene_deltas(ref, TokenStore.load(root / "att", n), min_cells=5)]
    )
    gene = adata.uns["positive_control"]["gene"]
    token = str(vocab.token_ids[adata.var.loc[gene, "ensembl_id"]])
    return {"deltas": deltas, "metrics": metrics, "token": token, "runs": runs}


def test_every_real_label_run_learns_the_switch(study):
    for name, kind in study["runs"].items():
        m = study["metrics"][name]
        if kind == "real":
            assert m["accuracy"] >= 0.9, (name, m["accuracy"], m["eval"])
            assert learned_run(m) and not m["flags"]["failed"], name


def test_the_run_level_test_finds_the_switch_gene_and_nearly_nothing_else(study):
    res = task_attributable(study["deltas"], alpha=0.05)
    assert res.loc[study["token"], "significant"], res.loc[study["token"]]
    assert res.loc[study["token"], "effect"] > 0
    others = res.drop(index=study["token"])
    assert others["significant"].sum() <= 1, others[others["significant"]]


def test_a_null_study_of_permuted_runs_finds_nothing(study):
    d = study["deltas"][study["deltas"]["kind"] == "permuted"].copy()
    half = sorted(d["run"].unique())[: N_PERMUTED // 2]
    d["kind"] = np.where(d["run"].isin(half), "real", "permuted")
    res = task_attributable(d, alpha=0.05)
    assert res["significant"].sum() == 0, res[res["significant"]]
