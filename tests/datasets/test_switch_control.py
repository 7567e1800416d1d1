"""The positive-control dataset: a well-level label that one unplanted gene alone decides."""

from __future__ import annotations

import numpy as np
import pytest

from geneattn.datasets import nutlin_sim, switch_control
from geneattn.errors import InputError
from geneattn.models import builtin_checkpoint
from geneattn.tokenize import GeneVocab, tokenize

DOSES = ("0.1", "0.5", "5", "10")


@pytest.fixture(scope="module")
def control():
    return switch_control(seed=0, cells_per_dose=dict.fromkeys(DOSES, 60))


def test_switch_is_balanced_within_every_dose_and_constant_within_wells(control):
    obs = control.obs
    assert (obs.groupby("well", observed=True)["switch"].nunique() == 1).all()
    per_dose = obs.drop_duplicates("well").groupby("label", observed=True)["switch"].value_counts().unstack()
    assert (np.abs(per_dose["on"] - per_dose["off"]) <= 1).all(), per_dose
    assert (
        sorted(obs.loc[obs.switch == "on", "well"].astype(str).unique())
        == control.uns["positive_control"]["on_wells"]
    )


def test_only_the_switch_gene_differs_from_the_simulation(control):
    gene = control.uns["positive_control"]["gene"]
    base = nutlin_sim(seed=0, cells_per_dose=dict.fromkeys(DOSES, 60))
    assert not base.var.loc[gene, "planted"] and base.var.loc[gene, "decoy_of"] != ""
    col = control.var_names.get_loc(gene)
    x = control.X.toarray()
    on = (control.obs["switch"] == "on").to_numpy()
    assert (x[on, col] >= 1).all() and (x[~on, col] == 0).all()
    other = np.ones(control.n_vars, dtype=bool)
    other[col] = False
    assert np.array_equal(x[:, other], base.X.toarray()[:, other])
    assert control.var["planted"].sum() == 1 and control.var.loc[gene, "planted"]
    assert np.array_equal(control.obs["n_counts"].to_numpy(), x.sum(1))


def test_the_switch_gene_lands_mid_input_in_every_on_cell(control):
    """Rank-value encoded with the shipped vocabulary: present, at or before the drawn rank, never cut."""
    vocab = GeneVocab.from_json(builtin_checkpoint() / "vocab.json")
    ds = tokenize(control, vocab, model_input_size=256, special_tokens=True, obs_keys=["switch"])
    token = vocab.token_ids[control.var.loc[control.uns["positive_control"]["gene"], "ensembl_id"]]
    pos = np.array([(list(ids).index(token) if token in ids else -1) for ids in ds["input_ids"]])
    on = np.asarray(ds["switch"]) == "on"
    assert (pos[~on] == -1).all()
    assert (pos[on] >= 1).all() and (pos[on] <= control.uns["positive_control"]["rank_range"][1] + 1).all()
    assert 40 <= np.median(pos[on]) <= 200, np.median(pos[on])


def test_a_planted_gene_is_refused():
    with pytest.raises(InputError, match="unplanted"):
        switch_control(seed=0, cells_per_dose=20, gene="MDM2")
