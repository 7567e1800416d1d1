"""The simulated nutlin-3a dose response: contract, ground truth, biology, confound, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2, kruskal

from geneattn.datasets import DOSES, nutlin_sim
from geneattn.datasets._genes import hill
from geneattn.datasets.nutlin_sim import DEFAULT_CELLS_PER_DOSE, _cells, _means
from geneattn.errors import InputError
from geneattn.io import canonicalize, replicate_from_well, validate_canonical

CURATED_PLANTED = 111


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
    assert 2000 <= sim.n_obs <= 4000 and 2000 <= sim.n_vars <= 3000
    assert 350 <= sim.obs["n_genes"].median() <= 550
    assert sim.var["ensembl_id"].is_unique and sim.var["ensembl_id"].str.match(r"^ENSG\d{11}$").all()
    assert canonicalize(sim, classes=["0.1", "0.5", "5", "10"]).n_obs == sum(
        DEFAULT_CELLS_PER_DOSE[d] for d in ("0.1", "0.5", "5", "10")
    )
    # the pretraining corpus (all doses) expresses every gene of the universe
    assert (np.asarray(sim.X.sum(axis=0)).ravel() > 0).all()


def test_ground_truth_columns(sim):
    var = sim.var
    planted = var["planted"].to_numpy()
    assert planted.sum() == var["direction"].isin(["up", "down"]).sum() == CURATED_PLANTED + 250
    assert (var.loc[var["direction"] == "up", "lfc_max"] > 0).all()
    assert (var.loc[var["direction"] == "down", "lfc_max"] < 0).all()
    assert (var.loc[~var["planted"], ["lfc_max", "effect_size"]] == 0).all().all()
    assert {"MDM2", "CDKN1A", "TP53I3", "FDXR", "LINC01021", "SESN1", "RRM2B"} <= set(
        var.index[var["direction"] == "up"]
    )
    # the observed log2FC at token 10 (5.05 for MDM2) is the Hill curve at 10
    assert var.loc["MDM2", "lfc_max"] * hill(10.0, 2.0, 1.2) == pytest.approx(5.05)
    assert not var.loc[["NEAT1", "MALAT1"], "planted"].any()
    p = var[var["planted"]]
    expected = np.abs(p["lfc_max"]) * (hill(10.0, p["ec50"], p["hill"]) - hill(0.1, p["ec50"], p["hill"]))
    np.testing.assert_allclose(p["effect_size"], expected)
    # background responders: both directions, |lfc_max| over the documented range
    resp = p[p["category"] == "background"]
    assert 0.3 < (resp["direction"] == "up").mean() < 0.7
    assert resp["lfc_max"].abs().between(0.5, 4.0).all()
    assert resp["lfc_max"].abs().min() < 0.7 and resp["lfc_max"].abs().max() > 3.3


def test_matched_sets_and_strata(sim):
    var = sim.var
    decoys = var[var["decoy_of"] != ""]
    assert len(decoys) == 2250 and not decoys["planted"].any()
    assert (decoys["category"] == "background").all()
    planted = var[var["planted"]]
    assert set(decoys["decoy_of"]) == set(planted.index)  # every planted gene has decoys
    assert set(decoys.groupby("decoy_of").size()) == {6, 7}  # dealt round robin
    # a decoy shares its planted gene's matched set, stratum and (dose-free twin of the) program
    owner = planted.loc[decoys["decoy_of"]]
    assert (decoys["matched_set"].to_numpy() == owner["matched_set"].to_numpy()).all()
    assert (decoys["stratum"].to_numpy() == owner["stratum"].to_numpy()).all()
    twin = {"none": "none", "p53_pulse": "decoy_pulse", "cell_cycle": "decoy_cycle"}
    assert (decoys["program"].to_numpy() == owner["program"].map(twin).to_numpy()).all()
    refs = var[var["matched_set"] < 0]
    assert len(refs) == 115 and (refs["category"] != "background").all()
    # strata: equal shares of the planted genes, ordered by expression
    per = planted.groupby("stratum").size()
    assert list(per.index) == list(range(10)) and per.max() - per.min() <= 1
    med = var[var["matched_set"] >= 0].groupby("stratum")["base_mean"].median()
    assert med.is_monotonic_increasing


def _vehicle_stats(adata):
    vehicle = adata[(adata.obs["label"] == "0").to_numpy()].X.tocsc()
    return np.asarray(vehicle.mean(axis=0)).ravel(), np.asarray((vehicle > 0).mean(axis=0)).ravel()


@pytest.mark.parametrize("gene_seed", [0, 1, 2])
def test_decoys_match_planted_genes_in_the_vehicle(gene_seed):
    """Two-sample tests of vehicle mean and detection do not reject for decoys, and do reject for the
    old simulator's negatives (curated responders against the rare background genes)."""
    from scipy.stats import ks_2samp, mannwhitneyu

    adata = nutlin_sim(seed=10 + gene_seed, gene_seed=gene_seed, cells_per_dose={"0": 390})
    var = adata.var
    planted = var["planted"].to_numpy()
    decoy = (var["decoy_of"] != "").to_numpy()
    curated = planted & (var["category"] != "background").to_numpy()
    background = decoy & (var["matched_set"] >= CURATED_PLANTED).to_numpy()  # decoys of bg responders
    for x in _vehicle_stats(adata):
        assert mannwhitneyu(x[planted], x[decoy]).pvalue > 0.05
        assert ks_2samp(x[planted], x[decoy]).pvalue > 0.05
        assert mannwhitneyu(x[curated], x[background]).pvalue < 1e-10
        assert ks_2samp(x[curated], x[background]).pvalue < 1e-10
    # the matched parameters themselves
    for col in ("base_mean", "dispersion"):
        assert ks_2samp(var.loc[planted, col], var.loc[decoy, col]).pvalue > 0.05


def test_expression_level_does_not_find_the_planted_genes():
    """Mean count and detection score AUROC 0.40-0.60 on a small study; not so without the decoys."""
    from geneattn.stats.agreement import auroc

    study = nutlin_sim(seed=1, cells_per_dose={"0.1": 120, "0.5": 120, "5": 120, "10": 120})
    x = study.X.tocsc()
    mean, det = np.asarray(x.mean(axis=0)).ravel(), np.asarray((x > 0).mean(axis=0)).ravel()
    y = study.var["planted"].to_numpy()
    assert 0.4 <= auroc(mean, y) <= 0.6 and 0.4 <= auroc(det, y) <= 0.6
    # the same score finds the curated responders among unmatched (background-set) negatives
    keep = (study.var["category"] != "background").to_numpy() & y | (
        (study.var["matched_set"] >= CURATED_PLANTED) & ~study.var["planted"]
    ).to_numpy()
    assert auroc(mean[keep], y[keep]) > 0.9 and auroc(det[keep], y[keep]) > 0.9


def test_planted_genes_move_in_their_direction_at_dose_10(sim):
    norm = sim.X.multiply(1e4 / sim.obs["n_counts"].to_numpy()[:, None]).tocsc()
    hi = (sim.obs["label"] == "10").to_numpy()
    lo = (sim.obs["label"] == "0").to_numpy()
    mean_hi = np.asarray(norm[hi].mean(axis=0)).ravel()
    mean_lo = np.asarray(norm[lo].mean(axis=0)).ravel()
    lfc = np.log2((mean_hi + 1e-3) / (mean_lo + 1e-3))
    var = sim.var
    direction = var["direction"].to_numpy()
    curated = (var["category"] != "background").to_numpy()
    assert (lfc[curated & (direction == "up")] > 0).all()
    assert (lfc[curated & (direction == "down")] < 0).all()
    # expressed background responders with a large effect move too
    strong = ~curated & (var["effect_size"] > 1.5).to_numpy() & (mean_lo > 0.3)
    assert strong.sum() >= 10 and (np.sign(lfc[strong]) == np.sign(var["lfc_max"].to_numpy()[strong])).all()
    assert lfc[sim.var_names == "MDM2"][0] > 3
    # expressed unplanted genes (>= ~0.5 UMI per cell) rarely move by 2-fold (depth/composition only)
    expressed = (direction == "none") & (mean_lo > 2.0)
    assert expressed.sum() > 300 and np.mean(np.abs(lfc[expressed]) > 1) < 0.02


def test_population_means_follow_the_planted_hill_curves(big):
    for gene in ("MDM2", "CDKN1A", "TOP2A"):
        means = _mean_by_dose(big, gene)
        lfc_max, ec50, h = big.var.loc[gene, ["lfc_max", "ec50", "hill"]]
        for d in ("1", "5", "10", "100"):
            expected = 2 ** (lfc_max * hill(float(d), ec50, h))
            assert means[d] / means["0"] == pytest.approx(expected, rel=0.15), (gene, d)
    mdm2 = _mean_by_dose(big, "MDM2")
    assert all(mdm2[a] < mdm2[b] for a, b in zip(DOSES[2:], DOSES[3:], strict=False))  # monotone from 0.5 on


def test_expected_counts_exact_for_background_genes_and_dose_free_for_decoys():
    genes = nutlin_sim(cells_per_dose=1, n_background_genes=400).var
    cells = _cells(dict.fromkeys(DOSES, 3000), np.random.default_rng(0), depth_median=4800.0, depth_sigma=0.5,
                   depth_min=1000.0, well_depth_sd=0.3, proliferating_fraction=0.35,
                   proliferating_fraction_min=0.08, pulse_fraction=0.4)  # fmt: skip
    mu = _means(genes, cells, proliferating_fraction=0.35, pulse_fraction=0.4)
    rel = mu / (cells["depth"].to_numpy()[:, None] / 4800.0) / genes["base_mean"].to_numpy()[None, :]
    resp = ((genes["category"] == "background") & genes["planted"]).to_numpy()
    H = hill(
        cells["dose"].to_numpy()[:, None], genes["ec50"].to_numpy()[resp], genes["hill"].to_numpy()[resp]
    )
    np.testing.assert_allclose(rel[:, resp], np.exp2(genes["lfc_max"].to_numpy()[resp] * H), rtol=1e-12)
    dose = cells["dose"].to_numpy()
    for program in ("none", "decoy_pulse", "decoy_cycle"):
        cols = ((genes["decoy_of"] != "") & (genes["program"] == program)).to_numpy()
        by_dose = [rel[dose == float(d)][:, cols].mean() for d in DOSES]
        np.testing.assert_allclose(by_dose, 1.0, atol=0.06)  # mean 1 at every dose: no dose response


def test_proliferating_fraction_shrinks_with_dose(big):
    frac = big.obs.groupby("label", observed=True)["proliferating"].mean()
    assert 0.3 < frac["0"] < 0.4 and frac["100"] < 0.12
    assert frac["0"] > frac["1"] > frac["5"] > frac["10"] > frac["100"]
    twin = big.obs.groupby("label", observed=True)[["decoy_cycle", "decoy_pulse"]].mean()
    assert twin["decoy_cycle"].between(0.31, 0.39).all() and twin["decoy_pulse"].between(0.36, 0.44).all()
    # cell-cycle genes are higher in proliferating cells of the same dose
    vehicle = big[big.obs["label"] == "0"]
    top2a = vehicle[:, "TOP2A"].X.toarray().ravel()
    assert (
        top2a[vehicle.obs["proliferating"].to_numpy()].mean()
        > 4 * top2a[~vehicle.obs["proliferating"].to_numpy()].mean()
    )


def test_mdm2_bimodal_in_vehicle_and_top_ranked_at_high_dose(sim):
    x = sim[:, "MDM2"].X.toarray().ravel()
    detected = {d: np.mean(x[(sim.obs["label"] == d).to_numpy()] > 0) for d in ("0", "0.1", "10")}
    assert 0.3 <= detected["0"] <= 0.5 and 0.3 <= detected["0.1"] <= 0.5 and detected["10"] >= 0.98
    dense = sim[(sim.obs["label"] == "10").to_numpy()].X.toarray()
    ranks = (dense > dense[:, [sim.var_names.get_loc("MDM2")]]).sum(axis=1)  # genes above MDM2 per cell
    assert np.median(ranks) <= 20


def test_wells_plates_replicates_and_the_depth_confound(sim):
    obs = sim.obs
    assert (obs.groupby("label", observed=True)["well"].nunique() == 6).all()
    assert set(obs["plate"]) == {"A", "B"} and set(obs["replicate"]) == {"rep1", "rep2", "rep3"}
    assert all(replicate_from_well(w) == r for w, r in zip(obs["well"], obs["replicate"], strict=True))
    assert _well_effect_p(obs) < 1e-10  # genes detected differ by well within a dose
    assert _well_effect_p(nutlin_sim(seed=0, well_depth_sd=0.0).obs) > 1e-3


def _well_effect_p(obs):
    """Kruskal-Wallis of n_genes across the wells of each dose, combined over doses (sum of H ~ chi2)."""
    h = [kruskal(*[w["n_genes"] for _, w in g.groupby("well", observed=True)]).statistic
         for _, g in obs.groupby("label", observed=True)]  # fmt: skip
    return chi2.sf(sum(h), 5 * len(h))


def test_deterministic_per_seed_and_gene_seed_fixes_the_design():
    a = nutlin_sim(seed=5, cells_per_dose=20, n_background_genes=100)
    b = nutlin_sim(seed=5, cells_per_dose=20, n_background_genes=100)
    c = nutlin_sim(seed=6, cells_per_dose=20, n_background_genes=100)
    d = nutlin_sim(seed=5, cells_per_dose=20, n_background_genes=100, gene_seed=1)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs) and a.var.equals(b.var)
    assert (a.X != c.X).nnz > 0 and a.var.equals(c.var)  # new cells, same organism
    design = ["label", "well", "proliferating", "p53_pulse", "decoy_cycle", "decoy_pulse"]
    assert not a.var.equals(d.var) and a.obs[design].equals(d.obs[design])  # new organism, same cells
    assert set(a.var.index[a.var["planted"]]) != set(d.var.index[d.var["planted"]])
    assert list(a.var_names) == list(d.var_names)
    params = d.uns["nutlin_sim"]["params"]
    assert params["seed"] == 5 and params["gene_seed"] == 1


def test_cells_per_dose_and_gene_options():
    assert nutlin_sim(cells_per_dose=7, n_background_genes=0).n_obs == 56
    sub = nutlin_sim(cells_per_dose={"0": 5, "10": 3}, n_background_genes=0)
    assert list(sub.obs["label"].cat.categories) == ["0", "10"] and sub.n_obs == 8
    small = nutlin_sim(cells_per_dose=2, n_background_genes=50).var
    assert small["planted"].sum() == CURATED_PLANTED + 5 and (small["decoy_of"] != "").sum() == 45
    none = nutlin_sim(cells_per_dose=2, n_background_genes=40, responder_fraction=0.0).var
    assert (
        none["planted"].sum() == CURATED_PLANTED
        and none.loc[none["decoy_of"] != "", "matched_set"].lt(111).all()
    )
    with pytest.raises(InputError, match="unknown dose tokens"):
        nutlin_sim(cells_per_dose={"2": 5})
    with pytest.raises(InputError, match="at least one cell"):
        nutlin_sim(cells_per_dose=0)
    with pytest.raises(InputError, match="n_background_genes"):
        nutlin_sim(n_background_genes=10**6)
    with pytest.raises(InputError, match="responder_fraction"):
        nutlin_sim(cells_per_dose=1, responder_fraction=1.5)
