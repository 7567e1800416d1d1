"""Gene tables shipped with geneattn and the gene design of `nutlin_sim` built from them.

The tables hold real symbols and Ensembl ids (``data/README.md``); `gene_design` turns them into
responders, expression-matched decoys and references.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import pandas as pd
from scipy import special

from ..errors import InputError

__all__ = ["curated_genes", "background_genes", "symbol_to_ensembl", "gene_design", "hill"]


def _read(name: str) -> pd.DataFrame:
    with resources.files(__package__).joinpath("data", name).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#", dtype={"symbol": str, "ensembl_id": str})


@functools.cache
def _curated() -> pd.DataFrame:
    return _read("curated_genes.csv")


@functools.cache
def _background() -> pd.DataFrame:
    return _read("background_genes.csv")


def curated_genes() -> pd.DataFrame:
    """Hand-curated genes of the nutlin-3a simulation.

    Returns
    -------
    pandas.DataFrame
        Columns ``symbol, ensembl_id, category, direction, lfc_at_10, base, ec50, hill``
        (a fresh copy; see ``datasets/data/README.md`` for their meaning and sources).
    """
    return _curated().copy()


def background_genes() -> pd.DataFrame:
    """Background genes (real symbols and GENCODE v44 Ensembl ids), in their fixed file order.

    Returns
    -------
    pandas.DataFrame
        Columns ``symbol, ensembl_id, in_pbmc68k`` (a fresh copy).
    """
    return _background().copy()


def symbol_to_ensembl() -> dict[str, str]:
    """Symbol -> Ensembl gene id over both shipped tables (about 4,200 genes).

    Returns
    -------
    dict[str, str]
        Mapping from HGNC symbol to version-less Ensembl gene id.
    """
    table = pd.concat([_curated()[["symbol", "ensembl_id"]], _background()[["symbol", "ensembl_id"]]])
    return dict(zip(table["symbol"], table["ensembl_id"], strict=True))


# ------------------------------------------------------------------------------ the gene design
_MIN_CENTRE = 0.01  # UMIs/cell at 4,800 UMIs, so every gene is expressed somewhere in the default corpus
_BASE_JITTER = 0.2  # σ of log base_mean around its matched set's centre (x/÷ ~1.2)
_N_STRATA = 10
_LOW_DOSE, _HIGH_DOSE = 0.1, 10.0  # the study's extreme classes (effect_size)
# a planted gene's program -> the dose-free twin its decoys follow
_DECOY_PROGRAM = {"none": "none", "p53_pulse": "decoy_pulse", "cell_cycle": "decoy_cycle"}
_CURATED_PROGRAM = {"p53_target": "p53_pulse", "cell_cycle": "cell_cycle"}


def hill(dose: np.ndarray | float, ec50: np.ndarray | float, h: np.ndarray | float) -> np.ndarray:
    """Fraction of the maximal response, d^h / (EC50^h + d^h) (0 at dose 0)."""
    d = np.asarray(dose, dtype=float)
    dh = np.power(d, h)
    return dh / (np.power(ec50, h) + dh)


def _curated_rows() -> pd.DataFrame:
    cur = _curated()
    planted = cur["direction"].isin(["up", "down"]).to_numpy()
    ec50, h = cur["ec50"].to_numpy(dtype=float), cur["hill"].to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "symbol": cur["symbol"].to_numpy(),
            "ensembl_id": cur["ensembl_id"].to_numpy(),
            "category": cur["category"].to_numpy(),
            "direction": cur["direction"].to_numpy(),
            "program": cur["category"].map(_CURATED_PROGRAM).fillna("none").to_numpy(),
            "centre": cur["base"].to_numpy(dtype=float),
            # lfc_at_10 is the observed log2FC at token 10; the Hill curve's ceiling is larger by 1/H(10)
            "lfc_max": np.where(planted, cur["lfc_at_10"].to_numpy(dtype=float) / hill(10.0, ec50, h), 0.0),
            "ec50": np.where(planted, ec50, np.nan),
            "hill": np.where(planted, h, np.nan),
        }
    )


def _truncated_lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    """Log-normal draws conditioned on ``>= _MIN_CENTRE`` (inverse CDF: no point mass at the floor)."""
    lo = special.ndtr(np.log(_MIN_CENTRE / median) / sigma)
    return median * np.exp(sigma * special.ndtri(rng.uniform(lo, 1.0, size=n)))


def _responder_rows(
    bg: pd.DataFrame, rng: np.random.Generator, lfc: tuple[float, float], median: float, sigma: float
) -> pd.DataFrame:
    n = len(bg)
    up = rng.random(n) < 0.5
    size = np.exp(rng.uniform(np.log(lfc[0]), np.log(lfc[1]), size=n))  # log-uniform |lfc_max|
    return pd.DataFrame(
        {
            "symbol": bg["symbol"].to_numpy(),
            "ensembl_id": bg["ensembl_id"].to_numpy(),
            "category": "background",
            "direction": np.where(up, "up", "down"),
            "program": "none",
            "centre": _truncated_lognormal(rng, median, sigma, n),
            "lfc_max": np.where(up, size, -size),
            "ec50": np.clip(rng.lognormal(np.log(2.0), 0.7, size=n), 0.2, 30.0),
            "hill": rng.uniform(1.0, 2.0, size=n),
        }
    )


def _decoy_rows(bg: pd.DataFrame, sets: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Decoys dealt round robin over the planted genes (random order): 0 or 1 more than each other."""
    owner = sets.iloc[rng.permutation(len(sets))[np.arange(len(bg)) % len(sets)]] if len(sets) else sets
    return pd.DataFrame(
        {
            "symbol": bg["symbol"].to_numpy(),
            "ensembl_id": bg["ensembl_id"].to_numpy(),
            "category": "background",
            "direction": "none",
            "program": owner["program"].map(_DECOY_PROGRAM).to_numpy(),
            "centre": owner["centre"].to_numpy(),
            "lfc_max": 0.0,
            "ec50": np.nan,
            "hill": np.nan,
            "decoy_of": owner["symbol"].to_numpy(),
            "matched_set": owner["matched_set"].to_numpy(),
        }
    )


def gene_design(
    rng: np.random.Generator,
    *,
    n_background_genes: int,
    responder_fraction: float,
    responder_lfc: tuple[float, float],
    background_median: float,
    background_sigma: float,
) -> pd.DataFrame:
    """The genes of `nutlin_sim`: responders, their expression-matched decoys and the references.

    A *matched set* is one planted gene and its decoys. Its members share a baseline centre (the
    curated ``base`` for curated responders; a log-normal draw for background responders) and draw
    ``base_mean = centre · LogNormal(0, 0.2)`` and ``dispersion`` independently by the same law, and
    the decoys follow the dose-free twin of the planted gene's cell program. The members of a set
    are therefore exchangeable in the vehicle: mean, detection and dispersion have one distribution.
    The curated unplanted genes (references) keep their own baselines and have no decoys.

    Parameters
    ----------
    rng
        Generator of the design (seeded with `nutlin_sim`'s ``gene_seed``).
    n_background_genes
        Background genes used (file order): ``round(responder_fraction · n)`` responders chosen at
        random, the rest decoys.
    responder_fraction, responder_lfc, background_median, background_sigma
        As in `nutlin_sim`.

    Returns
    -------
    pandas.DataFrame
        One row per gene, index ``symbol`` (curated genes first, then background genes in file
        order); the ``var`` columns of `nutlin_sim`.
    """
    bg_all = _background()
    if not 0 <= n_background_genes <= len(bg_all):
        msg = f"n_background_genes must be between 0 and {len(bg_all)}, got {n_background_genes}"
        raise InputError(msg)
    if not 0.0 <= responder_fraction <= 1.0 or not 0.0 < responder_lfc[0] <= responder_lfc[1]:
        msg = f"need 0 <= responder_fraction <= 1 and 0 < responder_lfc[0] <= responder_lfc[1], got {responder_fraction}, {responder_lfc}"
        raise InputError(msg)
    bg = bg_all.iloc[:n_background_genes]
    is_resp = np.zeros(len(bg), dtype=bool)
    is_resp[rng.permutation(len(bg))[: round(responder_fraction * len(bg))]] = True
    cur = _curated_rows()
    resp = _responder_rows(bg[is_resp], rng, responder_lfc, background_median, background_sigma)
    sets = pd.concat([cur[cur["direction"] != "none"], resp], ignore_index=True)
    sets["matched_set"] = np.arange(len(sets))
    sets["decoy_of"] = ""
    decoys = _decoy_rows(bg[~is_resp], sets, rng)
    refs = cur[cur["direction"] == "none"].assign(decoy_of="", matched_set=-1)
    order = {s: i for i, s in enumerate([*cur["symbol"], *bg["symbol"]])}
    genes = pd.concat([sets, refs, decoys], ignore_index=True)
    genes = genes.sort_values("symbol", key=lambda s: s.map(order)).set_index("symbol")
    return _finish(genes, rng)


def _strata(centre: np.ndarray, matched_set: np.ndarray) -> np.ndarray:
    """Equal-count deciles of the matched sets by centre (ties by set id); references by their centre."""
    ids = np.unique(matched_set[matched_set >= 0])
    if not len(ids):
        return np.zeros(len(centre), dtype=np.int64)
    c_set = pd.Series(centre[matched_set >= 0], index=matched_set[matched_set >= 0]).groupby(level=0).first()
    order = np.lexsort((c_set.index.to_numpy(), c_set.to_numpy()))
    s_set = pd.Series(np.arange(len(order)) * _N_STRATA // len(order), index=c_set.index[order])
    upper = c_set.groupby(s_set).max().to_numpy()[:-1]  # highest centre of each stratum but the last
    ref = np.searchsorted(upper, centre, side="left")
    return np.where(matched_set >= 0, s_set.reindex(matched_set).to_numpy(), ref).astype(np.int64)


def _finish(genes: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Per-gene draws (baseline, dispersion), effect size and stratum of a design."""
    base = genes["centre"].to_numpy() * rng.lognormal(0.0, _BASE_JITTER, size=len(genes))
    # NB dispersion: more overdispersed for rare genes (phi in ~[0.05, 2])
    phi = rng.lognormal(np.log(0.25), 0.4, size=len(genes)) * (1.0 + 1.0 / np.sqrt(base + 0.05)) / 2.0
    dh = hill(_HIGH_DOSE, genes["ec50"], genes["hill"]) - hill(_LOW_DOSE, genes["ec50"], genes["hill"])
    out = pd.DataFrame(
        {
            "ensembl_id": genes["ensembl_id"],
            "category": genes["category"],
            "direction": genes["direction"],
            "planted": genes["direction"].isin(["up", "down"]),
            "lfc_max": genes["lfc_max"],
            "effect_size": np.nan_to_num(np.abs(genes["lfc_max"].to_numpy()) * dh.to_numpy()),
            "ec50": genes["ec50"],
            "hill": genes["hill"],
            "base_mean": base,
            "dispersion": np.clip(phi, 0.05, 2.0),
            "program": genes["program"],
            "decoy_of": genes["decoy_of"],
            "matched_set": genes["matched_set"].astype(np.int64),
            "stratum": _strata(genes["centre"].to_numpy(), genes["matched_set"].to_numpy()),
        }
    )
    out.index.name = "symbol"
    return out
