"""A simulated sci-Plex-2-like nutlin-3a dose response of A549 cells with a planted ground truth.

The numbers come from the project's notes on the real data (``nutlin-response.md`` §2 and
``sciplex2.md``): 8 dose tokens, cells per dose shaped like the real Nutlin row, p53 targets that
rise and cell-cycle genes that fall along Hill curves, a proliferating sub-population that shrinks
with dose, and 6 wells per dose (3 replicates x 2 plates) whose depth differs, which shifts the
number of genes detected per cell (the confound the study suspected).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from ..errors import InputError
from ._genes import background_genes, curated_genes

__all__ = ["nutlin_sim", "DOSES", "DEFAULT_CELLS_PER_DOSE"]

logger = logging.getLogger(__name__)

#: dose tokens of sci-Plex-2 (the authors plot them as µM); "0" is the vehicle (DMSO)
DOSES: tuple[str, ...] = ("0", "0.1", "0.5", "1", "5", "10", "50", "100")

# Nutlin cells per dose after light QC in the real scPerturb file (sciplex2.md §1a). These counts
# already carry the viability loss (395 and 80 cells at tokens 50 and 100). Scaled by 0.4 so the four
# study classes (0.1, 0.5, 5, 10) average ~350 cells and the default study runs in minutes.
_REAL_NUTLIN_CELLS = (976, 833, 768, 874, 811, 1069, 395, 80)
DEFAULT_CELLS_PER_DOSE: dict[str, int] = {
    d: round(0.4 * n) for d, n in zip(DOSES, _REAL_NUTLIN_CELLS, strict=True)
}

_REF_DEPTH = 4800.0  # the curated `base` values are UMIs per cell at this depth
_PLATES = ("A", "B")
_ROWS = "ABCDEFGH"  # one plate row per dose token
_REP_COLUMNS = (4, 5, 6)  # columns 04/05/06 -> rep1/rep2/rep3, as in the authors' well map


def _hill(dose: np.ndarray | float, ec50: np.ndarray | float, h: np.ndarray | float) -> np.ndarray:
    """Fraction of the maximal response, d^h / (EC50^h + d^h) (0 at dose 0)."""
    d = np.asarray(dose, dtype=float)
    dh = np.power(d, h)
    return dh / (np.power(ec50, h) + dh)


def _resolve_cells(cells_per_dose: int | Mapping[str, int] | None) -> dict[str, int]:
    if cells_per_dose is None:
        return dict(DEFAULT_CELLS_PER_DOSE)
    if isinstance(cells_per_dose, Mapping):
        unknown = sorted(set(map(str, cells_per_dose)) - set(DOSES))
        if unknown:
            msg = f"cells_per_dose names unknown dose tokens {unknown}; use tokens from {list(DOSES)}"
            raise InputError(msg)
        counts = {d: int(cells_per_dose.get(d, 0)) for d in DOSES}
    else:
        counts = dict.fromkeys(DOSES, int(cells_per_dose))
    if any(n < 0 for n in counts.values()) or sum(counts.values()) == 0:
        msg = f"cells_per_dose must give a non-negative number of cells per dose and at least one cell, got {cells_per_dose!r}"
        raise InputError(msg)
    return {d: n for d, n in counts.items() if n > 0}


def _gene_table(
    n_background_genes: int, rng: np.random.Generator, background_median: float, background_sigma: float
) -> pd.DataFrame:
    """Curated + background genes with vehicle baselines and Hill parameters (one row per gene)."""
    cur = curated_genes()
    bg_all = background_genes()
    if not 0 <= n_background_genes <= len(bg_all):
        msg = f"n_background_genes must be between 0 and {len(bg_all)}, got {n_background_genes}"
        raise InputError(msg)
    bg = bg_all.iloc[:n_background_genes]
    bg = pd.DataFrame(
        {
            "symbol": bg["symbol"].to_numpy(),
            "ensembl_id": bg["ensembl_id"].to_numpy(),
            "category": "background",
            "direction": "none",
            # heavy-tailed baselines: most genes rare, a few abundant (realistic expression ranks)
            "base": rng.lognormal(np.log(background_median), background_sigma, size=len(bg)),
        }
    )
    genes = pd.concat([cur, bg], ignore_index=True)
    planted = genes["direction"].isin(["up", "down"]).to_numpy()
    ec50 = genes["ec50"].to_numpy(dtype=float)
    hill = genes["hill"].to_numpy(dtype=float)
    lfc10 = genes["lfc_at_10"].to_numpy(dtype=float)
    # lfc_at_10 is the observed log2FC at token 10; the Hill curve's ceiling is larger by 1/H(10)
    lfc_max = np.where(planted, lfc10 / _hill(10.0, ec50, hill), 0.0)
    # curated baselines are rough estimates: jitter them per seed (x/÷ ~1.2) so medians are distinct
    base = genes["base"].to_numpy(dtype=float)
    jitter = np.where(
        genes["category"].to_numpy() == "background", 1.0, rng.lognormal(0.0, 0.2, size=len(genes))
    )
    return pd.DataFrame(
        {
            "ensembl_id": genes["ensembl_id"].to_numpy(),
            "category": genes["category"].to_numpy(),
            "direction": genes["direction"].to_numpy(),
            "planted": planted,
            "lfc_max": lfc_max,
            "ec50": np.where(planted, ec50, np.nan),
            "hill": np.where(planted, hill, np.nan),
            "base_mean": base * jitter,
            # NB dispersion: more overdispersed for rare genes (phi in ~[0.05, 2])
            "dispersion": np.clip(
                rng.lognormal(np.log(0.25), 0.4, size=len(genes))
                * (1.0 + 1.0 / np.sqrt(base * jitter + 0.05))
                / 2.0,
                0.05,
                2.0,
            ),
        },
        index=pd.Index(genes["symbol"].to_numpy(), name="symbol"),
    )


def _cells(
    counts: dict[str, int],
    rng: np.random.Generator,
    *,
    depth_median: float,
    depth_sigma: float,
    depth_min: float,
    well_depth_sd: float,
    proliferating_fraction: float,
    proliferating_fraction_min: float,
    pulse_fraction: float,
) -> pd.DataFrame:
    """Per-cell design: dose, well, plate, replicate, depth, proliferating and p53-pulse states."""
    wells = [(d, p, r) for d in DOSES for p in _PLATES for r in range(3)]
    well_factor = dict(zip(wells, rng.lognormal(0.0, well_depth_sd, size=len(wells)), strict=True))
    rows = []
    for d, n in counts.items():
        dose = float(d)
        idx = rng.integers(0, 6, size=n)  # 6 wells per dose, equal expected sizes
        plate = np.array(_PLATES)[idx // 3]
        rep = idx % 3
        p_prolif = proliferating_fraction - (proliferating_fraction - proliferating_fraction_min) * float(
            _hill(dose, 3.0, 1.5)
        )
        factors = np.array([well_factor[(d, p, r)] for p, r in zip(plate, rep, strict=True)])
        rows.append(
            pd.DataFrame(
                {
                    "label": d,
                    "dose": dose,
                    "well": [
                        f"{p}{_ROWS[DOSES.index(d)]}{_REP_COLUMNS[r]:02d}"
                        for p, r in zip(plate, rep, strict=True)
                    ],
                    "plate": plate,
                    "replicate": [f"rep{r + 1}" for r in rep],
                    "depth": np.maximum(rng.lognormal(np.log(depth_median), depth_sigma, size=n), depth_min)
                    * factors,
                    "proliferating": rng.random(n) < p_prolif,
                    "p53_pulse": rng.random(n) < pulse_fraction,
                    "p_prolif": p_prolif,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _means(
    genes: pd.DataFrame,
    cells: pd.DataFrame,
    *,
    proliferating_fraction: float,
    pulse_fraction: float,
    cycle_ratio: float = 8.0,
    pulse_floor: float = 0.05,
) -> np.ndarray:
    """Expected counts, cells x genes.

    The population mean of gene g at dose d is base_g * depth/4800 * 2^(lfc_max_g * H_g(d)) exactly
    (the planted Hill curve).
    """
    base = genes["base_mean"].to_numpy()
    lfc = genes["lfc_max"].to_numpy()
    dose = cells["dose"].to_numpy()
    # H[c, g]: Hill response of gene g at cell c's dose (0 for unplanted genes, whose lfc is 0)
    H = np.nan_to_num(
        _hill(dose[:, None], genes["ec50"].to_numpy()[None, :], genes["hill"].to_numpy()[None, :])
    )
    mu = (cells["depth"].to_numpy()[:, None] / _REF_DEPTH) * base[None, :] * np.exp2(lfc[None, :] * H)

    # p53 targets: basal p53 pulses switch targets on in a subset of vehicle cells (MDM2 bimodal);
    # the heterogeneity fades as the drug saturates the pathway. Pulse multiplier has mean 1.
    up = (genes["direction"] == "up").to_numpy()
    q = pulse_fraction
    on = (1.0 - pulse_floor * (1.0 - q)) / q
    v_pulse = np.where(cells["p53_pulse"].to_numpy(), on, pulse_floor)[:, None]
    mu[:, up] *= (1.0 - H[:, up]) * v_pulse + H[:, up]

    # cell-cycle genes: high in proliferating cells (hi/lo = cycle_ratio, mean 1 in vehicle). Divide by
    # the expected multiplier at the cell's dose so the population mean still follows its Hill curve:
    # arrest explains part of the fall, direct (p21-DREAM) repression the rest.
    down = (genes["direction"] == "down").to_numpy()
    p0 = proliferating_fraction
    hi = 1.0 / (p0 + (1.0 - p0) / cycle_ratio)
    lo = hi / cycle_ratio
    p_d = cells["p_prolif"].to_numpy()
    r_d = p_d * hi + (1.0 - p_d) * lo
    v_cc = np.where(cells["proliferating"].to_numpy(), hi, lo) / r_d
    mu[:, down] *= v_cc[:, None]
    return mu


def nutlin_sim(
    *,
    seed: int = 0,
    cells_per_dose: int | Mapping[str, int] | None = None,
    n_background_genes: int = 2500,
    depth_median: float = 4800.0,
    depth_sigma: float = 0.55,
    depth_min: float = 1000.0,
    well_depth_sd: float = 0.3,
    proliferating_fraction: float = 0.35,
    proliferating_fraction_min: float = 0.08,
    pulse_fraction: float = 0.4,
    background_median: float = 0.06,
    background_sigma: float = 1.5,
) -> AnnData:
    """Simulate a sci-Plex-2-like nutlin-3a dose response of A549 cells (canonical AnnData).

    **Model.** Cell *c* at dose *d* (token units, ≈µM) draws gene *g* from a negative binomial with
    mean ``depth_c/4800 · base_g · 2^(lfc_max_g · d^h/(EC50^h + d^h)) · v_gc`` where ``v_gc`` (mean 1
    over cells) carries two cell states: (i) a p53 pulse in ``pulse_fraction`` of cells that switches
    the p53 targets on in the vehicle (MDM2 is bimodal, ~40 % nonzero), fading as the drug saturates
    the pathway; (ii) a proliferating sub-population (``proliferating_fraction`` in vehicle, falling
    to ``proliferating_fraction_min`` along a Hill curve, EC50 3) with 8x higher cell-cycle genes.
    Population means follow the planted Hill curve exactly. Depth is log-normal (median
    ``depth_median``, σ ``depth_sigma``, floored at ``depth_min``) times a per-well factor
    (log-normal, σ ``well_depth_sd``), so wells differ in the number of genes detected per cell.

    **Genes.** 51 up-regulated p53 targets (MDM2, CDKN1A, TP53I3, FDXR, LINC01021, SESN1, RRM2B, ...)
    and 60 down-regulated cell-cycle genes (TOP2A, MKI67, CDK1, ...) planted with log2 fold changes,
    baselines and EC50s from the real data or the project's estimates; 115 unplanted curated genes
    (ribosomal, mitochondrial, housekeeping, NEAT1/MALAT1); and ``n_background_genes`` real
    background genes with heavy-tailed log-normal baselines (median ``background_median``, σ
    ``background_sigma`` UMIs/cell at 4,800 UMIs) so that expression ranks look realistic. Real
    symbols and Ensembl ids (GENCODE v44; ``datasets/data/README.md``).

    **Default size**, chosen so a small BERT trains in minutes on 2 CPU cores: 2,322 cells (the real
    Nutlin cells per dose x 0.4: 390, 333, 307, 350, 324, 428, 158, 32 for tokens 0 ... 100;
    ~360 per study class), 2,726 genes, a median of ~450 genes detected and ~2,300 UMIs per cell
    (the counted genes are a subset of the transcriptome), so Geneformer's 2,048-token input never
    truncates a cell. Generation takes under a second.

    Parameters
    ----------
    seed
        Seed of the only random generator used; the same seed gives the same data.
    cells_per_dose
        ``None`` for the realistic default above, an int for that many cells at every dose, or a
        mapping ``{dose token: cells}`` (tokens left out get no cells).
    n_background_genes
        Number of unplanted background genes (0 to 4,000).
    depth_median, depth_sigma, depth_min
        Log-normal full-transcriptome UMIs per cell (``sciplex2.md`` §2) and its floor.
    well_depth_sd
        σ of the per-well log-normal depth factor (the genes-detected confound).
    proliferating_fraction, proliferating_fraction_min
        Proliferating share of vehicle cells and its floor at saturating dose.
    pulse_fraction
        Share of cells with a basal p53 pulse (p53 targets on) in the vehicle.
    background_median, background_sigma
        Log-normal baselines of the background genes.

    Returns
    -------
    AnnData
        Canonical AnnData: ``X`` CSR float32 integer counts; ``obs``: ``label`` (dose token,
        categorical, vehicle ``"0"``), ``dose``, ``perturbation``, ``well`` (e.g. ``"AF05"``: plate A,
        row F, column 05), ``plate``, ``replicate``, ``proliferating``, ``p53_pulse``, ``n_counts``,
        ``n_genes``; ``var`` (index: symbols): ``ensembl_id``, ``planted``, ``lfc_max`` (log2 at
        saturation), ``direction`` ("up"/"down"/"none"), ``category``, ``ec50``, ``hill``,
        ``base_mean``, ``dispersion``; ``uns["nutlin_sim"]["params"]``.
    """
    rng = np.random.default_rng(seed)
    counts = _resolve_cells(cells_per_dose)
    if (
        not 0.0 < pulse_fraction < 1.0
        or not 0.0 <= proliferating_fraction_min <= proliferating_fraction < 1.0
    ):
        msg = "need 0 < pulse_fraction < 1 and 0 <= proliferating_fraction_min <= proliferating_fraction < 1"
        raise InputError(msg)
    genes = _gene_table(n_background_genes, rng, background_median, background_sigma)
    cells = _cells(
        counts,
        rng,
        depth_median=depth_median,
        depth_sigma=depth_sigma,
        depth_min=depth_min,
        well_depth_sd=well_depth_sd,
        proliferating_fraction=proliferating_fraction,
        proliferating_fraction_min=proliferating_fraction_min,
        pulse_fraction=pulse_fraction,
    )
    mu = _means(genes, cells, proliferating_fraction=proliferating_fraction, pulse_fraction=pulse_fraction)
    # negative binomial as a gamma-Poisson mixture: shape 1/phi, mean mu
    shape = 1.0 / genes["dispersion"].to_numpy()[None, :]
    X = rng.poisson(rng.gamma(shape, mu / shape)).astype(np.float32)
    X = sp.csr_matrix(X)

    obs = cells.drop(columns=["depth", "p_prolif"])
    obs.index = pd.Index([f"sim_{i:05d}" for i in range(len(obs))], name="cell_id")
    obs[K.LABEL] = pd.Categorical(obs[K.LABEL], categories=[d for d in DOSES if d in counts])
    obs.insert(2, "perturbation", "Nutlin")
    for col in ("well", "plate", "replicate", "perturbation"):
        obs[col] = obs[col].astype("category")
    obs[K.N_COUNTS] = np.asarray(X.sum(axis=1)).ravel()
    obs[K.N_GENES] = np.diff(X.indptr).astype(np.int64)
    params = {
        "seed": seed,
        "cells_per_dose": counts,
        "n_background_genes": n_background_genes,
        "depth_median": depth_median,
        "depth_sigma": depth_sigma,
        "depth_min": depth_min,
        "well_depth_sd": well_depth_sd,
        "proliferating_fraction": proliferating_fraction,
        "proliferating_fraction_min": proliferating_fraction_min,
        "pulse_fraction": pulse_fraction,
        "background_median": background_median,
        "background_sigma": background_sigma,
    }
    adata = AnnData(X=X, obs=obs, var=genes)
    adata.uns["nutlin_sim"] = {"params": params}
    logger.info("simulated nutlin-3a dose response: %d cells x %d genes (seed %d)", *adata.shape, seed)
    return adata
