"""File layouts of sci-Plex-2 (scPerturb/pertpy and Kaggle h5ad) and their detection.

Each layout names the columns that hold the drug, the dose token, the well, the total counts and the
Ensembl ids. Un-hashed cells (scPerturb ``perturbation == "control"``, Kaggle ``drug == "NAN"``) have
no drug or dose: they are **not** the vehicle (that is dose 0 of each drug) and are always dropped.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from ..errors import InputError

__all__ = ["Layout", "LAYOUTS", "detect_layout", "replicate_from_well", "plate_from_well", "match_value"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a file layout keeps each piece of information (``None``: not present)."""

    name: str
    drug_key: str | None = None
    dose_key: str | None = None
    well_key: str | None = None
    counts_key: str | None = "n_counts"
    ensembl_keys: tuple[str, ...] = ("ensembl_id",)
    unhashed: tuple[str, ...] = ()


_ENSEMBL_KEYS = (
    "ensembl_id",
    "gene_ids",
    "gene_id",
    "ensembl",
    "ensembl_ids",
    "Ensemble Id",
    "Ensembl",
    "feature_id",
)

LAYOUTS: dict[str, Layout] = {
    "canonical": Layout("canonical", ensembl_keys=_ENSEMBL_KEYS, well_key="well"),
    "scperturb": Layout(
        "scperturb",
        drug_key="perturbation",
        dose_key="dose_value",
        well_key="well",
        counts_key="ncounts",
        ensembl_keys=("ensembl_id", *_ENSEMBL_KEYS),
        unhashed=("control",),
    ),
    "kaggle": Layout(
        "kaggle",
        drug_key="drug",
        dose_key="dose",
        well_key=None,
        counts_key="n.umi",
        ensembl_keys=("Ensemble Id", *_ENSEMBL_KEYS),
        unhashed=("NAN", "nan"),
    ),
}


def detect_layout(adata: AnnData) -> str:
    """Guess the file layout from the column names.

    Parameters
    ----------
    adata
        In-memory or backed AnnData.

    Returns
    -------
    str
        ``"kaggle"`` (``drug`` + ``dose`` + ``n.umi`` or ``var["Ensemble Id"]``), ``"scperturb"``
        (``perturbation`` + ``dose_value``) or ``"canonical"``.
    """
    obs = set(adata.obs.columns)
    if {"drug", "dose"} <= obs and ("n.umi" in obs or "Ensemble Id" in adata.var.columns):
        return "kaggle"
    if {"perturbation", "dose_value"} <= obs:
        return "scperturb"
    return "canonical"


_WELL = re.compile(r"^(?P<plate>[A-Za-z])[A-Za-z]?(?P<col>\d{1,2})$")


def _well_part(well: object, part: str) -> str | None:
    m = _WELL.match(str(well).strip()) if isinstance(well, str) else None
    return m.group(part) if m else None


def replicate_from_well(well: object) -> str | None:
    """Replicate of a sci-Plex-2 well from its column: 01/04/07/10 -> rep1, 02/05/08/11 -> rep2, 03/06/09/12 -> rep3.

    Parameters
    ----------
    well
        A well such as ``"AA03"`` (plate A, row A, column 03).

    Returns
    -------
    str or None
        ``"rep1"``, ``"rep2"``, ``"rep3"``, or ``None`` if the well cannot be parsed.
    """
    col = _well_part(well, "col")
    if col is None or not 1 <= int(col) <= 12:
        return None
    return f"rep{(int(col) - 1) % 3 + 1}"


def plate_from_well(well: object) -> str | None:
    """Culture plate of a sci-Plex-2 well: its first letter (``"AA03"`` -> ``"A"``); ``None`` if unparsable."""
    plate = _well_part(well, "plate")
    return plate.upper() if plate else None


def _simplify(s: str) -> str:
    return re.sub(r"[^0-9a-z]", "", s.lower())


def match_value(wanted: str, available: list[str], *, what: str) -> str:
    """Find ``wanted`` among ``available``: exactly, case-insensitively, or as a prefix ('nutlin-3a' -> 'Nutlin').

    Raises
    ------
    InputError
        No or several matches; the message lists close matches and all values.
    """
    if wanted in available:
        return wanted
    w = _simplify(wanted)
    hits = [a for a in available if _simplify(a) == w] or [
        a for a in available if _simplify(a) and (w.startswith(_simplify(a)) or _simplify(a).startswith(w))
    ]
    if len(hits) == 1:
        logger.info("%s %r matched as %r", what, wanted, hits[0])
        return hits[0]
    close = difflib.get_close_matches(wanted, available, n=3, cutoff=0.4)
    hint = f" Did you mean {close}?" if close and len(hits) != 1 else ""
    msg = f"{what} {wanted!r} not found.{hint} Available: {sorted(available)}"
    raise InputError(msg)


def sciplex_obs(
    adata: AnnData, layout: Layout, *, perturbation: str | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Harmonised obs of a sci-Plex file and the mask of cells kept (hashed, of the chosen drug).

    Adds ``perturbation`` (the drug) and ``dose`` (normalised token, e.g. ``'10.0'`` -> ``'10'``) and, when
    a well column exists, ``well``, ``plate`` and ``replicate``.
    """
    from ._groups import normalize_dose

    obs = adata.obs
    missing = [k for k in (layout.drug_key, layout.dose_key) if k and k not in obs]
    if missing:
        msg = f"{layout.name} layout needs obs columns {missing}; found {list(obs.columns)}"
        raise InputError(msg)
    drug = obs[layout.drug_key].astype("object")
    dose = obs[layout.dose_key].astype("object")
    unhashed = (
        drug.isna()
        | dose.isna()
        | drug.astype(str).isin(layout.unhashed)
        | dose.astype(str).isin(("NAN", "nan"))
    )
    if unhashed.any():
        logger.info(
            "dropped %d un-hashed cells (%s in %s): they are not the vehicle; the vehicle is dose 0 of each drug",
            int(unhashed.sum()),
            "/".join(layout.unhashed),
            layout.drug_key,
        )
    keep = ~unhashed.to_numpy()
    drugs = sorted(drug[keep].astype(str).unique())
    if perturbation is not None:
        chosen = match_value(str(perturbation), drugs, what="perturbation")
        keep &= (drug.astype(str) == chosen).to_numpy()
    out = pd.DataFrame(index=obs.index)
    out["perturbation"] = drug.astype(str).where(keep, other=None)
    out["dose"] = [normalize_dose(d) if k else None for d, k in zip(dose, keep, strict=True)]
    if layout.well_key and layout.well_key in obs:
        wells = obs[layout.well_key].astype("object")
        out["well"] = wells.astype(str).where(wells.notna(), other=None)
    return out, keep
