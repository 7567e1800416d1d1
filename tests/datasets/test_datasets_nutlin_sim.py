"""The simulated nutlin-3a dose response: contract, ground truth, biology, confound, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kruskal

from geneattn.datasets import DOSES, nutlin_sim
from geneattn.datasets.nutlin_sim import DEFAULT_CELLS_PER_DOSE, _hill
from geneattn.errors import InputError
from geneattn.io import canonicalize, replicate_from_well, validate_canonical


@pytest.fixture(scope="module")
def sim():
    return nutlin_sim(seed=0)


@pytest.fixture(scope="module")
def big():
    """Many cells, planted genes only, no well effect: population means are measured precisely."""
    return nutlin_sim(seed=3, cells_per_dose=2000, n_background_genes=0, well_depth_sd=0.0)


def _mean_by_dose(adata, gene):
    x = adata[:, gene].X.toarray().ravel()
    return {d: x[(adata.obs["label"] == d).to_numpy()].mean() for d in adata.obs["label"].cat.categories}


def test_canonical_contract_and_default_size(sim):
    validate_canonical(sim)
    assert list(sim.obs["label"].cat.categories) == list(DOSES) and DOSES[0] == "0"
    assert sim.obs["label"].value_counts().to_dict() == DEFAULT_CELLS_PER_DOSE
    assert 2000 <= sim.n_obs <= 4000 and 2000 <= sim.n_vars <= 4000
    assert 300 <= sim.obs["n_genes"].median() <= 600
    assert sim.var["ensembl_id"].is_unique and sim.var["ensembl_id"].str.match(r"^ENSG\d{11}$").all()
    assert canonicalize(sim, classes=["0.1", "0.5", "5", "10"]).n_obs == sum(
        DEFAULT_CELLS_PER_DOSE[d] for d in ("0.1", "0.5", "5", "10")
    )


def test_ground_truth_columns(sim):
    var = sim.var
    assert var["planted"].sum() == ((var["direction"] == "up") | (var["direction"] == "down")).sum() == 111
    assert (var.loc[var["direction"] == "up", "lfc_max"] > 0).all()
    assert (var.loc[var["direction"] == "down", "lfc_max"] < 0).all()
    assert (var.loc[~var["planted"], "lfc_max"] == 0).all()
    assert {"MDM2", "CDKN1A", "TP53I3", "FDXR", "LINC01021", "SESN1", "RRM2B"} <= set(
        var.index[var["direction"] == "up"]
    )
    # the observed log2FC at token 10 (5.05 for MDM2) is the Hill curve at 10
    assert var.loc["MDM2", "lfc_max"] * _hill(10.0, 2.0, 1.2) == pytest.approx(5.05)
    assert not var.loc[["NEAT1", "MALAT1"], "planted"].any()


def test_planted_genes_move_in_their_direction_at_dose_10(sim):
    norm = sim.X.multiply(1e4 / sim.obs["n_counts"].to_numpy()[:, None]).tocsc()
    hi = (sim.obs["label"] == "10").to_numpy()
    lo = (sim.obs["label"] == "0").to_numpy()
    mean_hi = np.asarray(norm[hi].mean(axis=0)).ravel()
    mean_lo = np.asarray(norm[lo].mean(axis=0)).ravel()
    lfc = np.log2((mean_hi + 1e-3) / (mean_lo + 1e-3))
    direction = sim.var["direction"].to_numpy()
    assert (lfc[direction == "up"] > 0).all()
    assert (lfc[direction == "down"] < 0).all()
    assert lfc[sim.var_names == "MDM2"][0] > 3
    # expressed unplanted genes (>= ~0.5 UMI per cell) rarely move by 2-fold (depth/composition only)
    expressed = (direction == "none") & (mean_lo > 2.0)
    assert expressed.sum() > 300 and np.mean(np.abs(lfc[expressed]) > 1) < 0.02


def test_population_means_follow_the_planted_hill_curves(big):
    for gene in ("MDM2", "CDKN1A", "TOP2A"):
        means = _mean_by_dose(big, gene)
        lfc_max, ec50, h = big.var.loc[gene, ["lfc_max", "ec50", "hill"]]
        for d in ("1", "5", "10", "100"):
            expected = 2 ** (lfc_max * _hill(float(d), ec50, h))
            assert means[d] / means["0"] == pytest.approx(expected, rel=0.15), (gene, d)
    mdm2 = _mean_by_dose(big, "MDM2")
    assert all(mdm2[a] < mdm2[b] for a, b in zip(DOSES[2:], DOSES[3:], strict=False))  # monotone from 0.5 on


def test_proliferating_fraction_shrinks_with_dose(big):
    frac = big.obs.groupby("label", observed=True)["proliferating"].mean()
    assert 0.3 < frac["0"] < 0.4 and frac["100"] < 0.12
    assert frac["0"] > frac["1"] > frac["5"] > frac["10"] > frac["100"]
    # cell-cycle genes are higher in proliferating cells of the same dose
    vehicle = big[big.obs["label"] == "0"]
    top2a = vehicle[:, "TOP2A"].X.toarray().ravel()
    assert (
        top2a[vehicle.obs["proliferating"].to_numpy()].mean()
        > 4 * top2a[~vehicle.obs["proliferating"].to_numpy()].mean()
    )


def test_mdm2_bimodal_in_vehicle_and_top_ranked_at_high_dose(sim):
    x = sim[:, "MDM2"].X.toarray().ravel()
    vehicle = (sim.obs["label"] == "0").to_numpy()
    assert 0.3 <= np.mean(x[vehicle] > 0) <= 0.5
    dense = sim[(sim.obs["label"] == "10").to_numpy()].X.toarray()
    ranks = (dense > dense[:, [sim.var_names.get_loc("MDM2")]]).sum(axis=1)  # genes above MDM2 per cell
    assert np.median(ranks) <= 20


def test_wells_plates_replicates_and_the_depth_confound(sim):
    obs = sim.obs
    assert (obs.groupby("label", observed=True)["well"].nunique() == 6).all()
    assert set(obs["plate"]) == {"A", "B"} and set(obs["replicate"]) == {"rep1", "rep2", "rep3"}
    assert all(replicate_from_well(w) == r for w, r in zip(obs["well"], obs["replicate"], strict=True))
    vehicle = obs[obs["label"] == "0"]
    groups = [g["n_genes"].to_numpy() for _, g in vehicle.groupby("well", observed=True)]
    assert kruskal(*groups).pvalue < 1e-6  # genes detected differ by well
    flat = nutlin_sim(seed=0, well_depth_sd=0.0).obs
    flat = flat[flat["label"] == "0"]
    assert kruskal(*[g["n_genes"].to_numpy() for _, g in flat.groupby("well", observed=True)]).pvalue > 1e-3


def test_deterministic_per_seed():
    a = nutlin_sim(seed=5, cells_per_dose=20, n_background_genes=100)
    b = nutlin_sim(seed=5, cells_per_dose=20, n_background_genes=100)
    c = nutlin_sim(seed=6, cells_per_dose=20, n_background_genes=100)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs) and a.var.equals(b.var)
    assert (a.X != c.X).nnz > 0
    assert a.uns["nutlin_sim"]["params"]["seed"] == 5


def test_cells_per_dose_options():
    assert nutlin_sim(cells_per_dose=7, n_background_genes=0).n_obs == 56
    sub = nutlin_sim(cells_per_dose={"0": 5, "10": 3}, n_background_genes=0)
    assert list(sub.obs["label"].cat.categories) == ["0", "10"] and sub.n_obs == 8
    with pytest.raises(InputError, match="unknown dose tokens"):
        nutlin_sim(cells_per_dose={"2": 5})
    with pytest.raises(InputError, match="at least one cell"):
        nutlin_sim(cells_per_dose=0)
    with pytest.raises(InputError, match="n_background_genes"):
        nutlin_sim(n_background_genes=10**6)
