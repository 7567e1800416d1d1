"""sci-Plex-2 adapters: scPerturb/pertpy and Kaggle layouts, the un-hashed control trap, wells."""

from __future__ import annotations

import numpy as np
import pytest

from geneattn.errors import InputError
from geneattn.io import canonicalize, detect_layout, plate_from_well, replicate_from_well, validate_canonical


def test_detect_layout(scperturb, kaggle):
    assert detect_layout(scperturb) == "scperturb"
    assert detect_layout(kaggle) == "kaggle"
    scperturb.obs = scperturb.obs.drop(columns=["dose_value"])
    assert detect_layout(scperturb) == "canonical"


@pytest.mark.parametrize(
    ("well", "rep", "plate"),
    [
        ("AA01", "rep1", "A"),
        ("AB04", "rep1", "A"),
        ("BC05", "rep2", "B"),
        ("AH11", "rep2", "A"),
        ("BA09", "rep3", "B"),
        ("AD12", "rep3", "A"),
        ("E09", "rep3", "E"),
        ("nonsense", None, None),
    ],
)
def test_replicate_and_plate_from_well(well, rep, plate):
    assert replicate_from_well(well) == rep
    assert plate_from_well(well) == plate


def test_scperturb_selects_nutlin_doses_and_never_the_unhashed_controls(scperturb):
    out = canonicalize(scperturb, perturbation="Nutlin", classes=["0", "0.1", "0.5", "5", "10"])
    validate_canonical(out)
    assert list(out.obs["label"].cat.categories) == ["0", "0.1", "0.5", "5", "10"]
    assert set(out.obs["perturbation"]) == {"Nutlin"}
    # the vehicle is Nutlin dose 0 (2 wells x 6 cells); the 7 un-hashed 'control' cells are not in it
    assert (out.obs["label"] == "0").sum() == 12
    assert not out.obs_names.isin([f"cell{i}" for i in range(120, 127)]).any()
    assert out.n_obs == 60
    # wells -> plate and replicate (col 04 -> rep1, col 08 -> rep2)
    assert set(out.obs["replicate"]) == {"rep1", "rep2"}
    assert (out.obs["plate"].astype(str) == out.obs["well"].astype(str).str[0]).all()
    # the all-zero PAR_Y-like duplicate of G3's id is dropped, ids are unique
    assert "PARGENE" not in out.var_names and out.var["ensembl_id"].is_unique
    # n_counts from the file's 'ncounts' (equal to the row sums here)
    np.testing.assert_allclose(out.obs["n_counts"], np.asarray(out.X.sum(axis=1)).ravel())


def test_scperturb_dose_classes_subset_and_groups(scperturb):
    out = canonicalize(
        scperturb,
        perturbation="Nutlin",
        classes=["0.1", "0.5", "5", "10"],
        groups="low=0.1,0.5;high=5,10",
        min_cells_per_class=5,
    )
    assert list(out.obs["label"].cat.categories) == ["0.1", "0.5", "5", "10"]
    assert (out.obs["label"] != "0").all()
    assert list(out.obs["group"].cat.categories) == ["low", "high"]
    low = out.obs["label"].isin(["0.1", "0.5"])
    assert (out.obs.loc[low, "group"] == "low").all() and (out.obs.loc[~low, "group"] == "high").all()


def test_sciplex_without_perturbation_asks_for_one(scperturb):
    with pytest.raises(InputError, match=r"drugs \['Dex', 'Nutlin'\].*perturbation="):
        canonicalize(scperturb)


def test_perturbation_names_are_matched_leniently_or_rejected_with_suggestions(scperturb):
    out = canonicalize(scperturb, perturbation="nutlin-3a")
    assert set(out.obs["perturbation"]) == {"Nutlin"}
    with pytest.raises(InputError, match="Did you mean.*Nutlin"):
        canonicalize(scperturb, perturbation="Nutln")


def test_drug_as_label_drops_unhashed_controls(scperturb):
    out = canonicalize(scperturb, label_key="perturbation")
    assert list(out.obs["label"].cat.categories) == ["Dex", "Nutlin"]
    assert out.n_obs == 120


def test_kaggle_layout(kaggle):
    out = canonicalize(kaggle, perturbation="Nutlin", classes=["0.1", "0.5", "5", "10"])
    validate_canonical(out)
    # '10.0' in the file becomes '10'; 'NAN' cells and other drugs are gone
    assert list(out.obs["label"].cat.categories) == ["0.1", "0.5", "5", "10"]
    assert out.n_obs == 48 and set(out.obs["perturbation"]) == {"Nutlin"}
    # non-unique symbols made unique, versions stripped from 'Ensemble Id'
    assert out.var_names.is_unique and {"MATR3", "MATR3-1"} <= set(out.var_names)
    assert out.var.loc["MATR3", "ensembl_id"] == "ENSG00000000005"
    assert not out.var["ensembl_id"].str.contains(r"\.").any()
    # n.umi (totals before the file's gene filter) is kept: it covers the counts in X
    np.testing.assert_allclose(out.obs["n_counts"], np.asarray(out.X.sum(axis=1)).ravel() + 100)
    assert (out.obs["n_genes"] == np.diff(out.X.indptr)).all()
    assert "well" not in out.obs  # the Kaggle file has no wells


def test_kaggle_classes_written_like_the_file(kaggle):
    out = canonicalize(kaggle, perturbation="SAHA", classes=["10.0", "0.0"])
    assert list(out.obs["label"].cat.categories) == ["10", "0"]
