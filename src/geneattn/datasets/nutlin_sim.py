"""A simulated sci-Plex-2-like nutlin-3a dose response of A549 cells with a planted ground truth.

The numbers come from the project's notes on the real data (``nutlin-response.md`` §2 and
``sciplex2.md``): 8 dose tokens, cells per dose shaped like the real Nutlin row, p53 targets that
rise and cell-cycle genes that fall along Hill curves, a proliferating sub-population that shrinks
with dose, and 6 wells per dose (3 replicates x 2 plates) whose depth differs, which shifts the
number of genes detected per cell (the confound the study suspected). The gene design (which genes
respond, their expression-matched decoys) is `_genes.gene_design` and depends on ``gene_seed`` only.
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
from ._genes import gene_design, hill

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

_REF_DEPTH = 4800.0  # the `base_mean` values are UMIs per cell at this depth
_PLATES = ("A", "B")
_ROWS = "ABCDEFGH"  # one plate row per dose token
_REP_COLUMNS = (4, 5, 6)  # columns 04/05/06 -> rep1/rep2/rep3, as in the authors' well map
_CYCLE_RATIO = 8.0  # cycling / non-cycling expression of cell-cycle genes (and their decoys)
_PULSE_FLOOR = 0.05  # p53 targets (and their decoys) outside a pulse, relative to the on level


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
    """Per-cell design: dose, well, plate, replicate, depth and the four cell-state indicators."""
    wells = [(d, p, r) for d in DOSES for p in _PLATES for r in range(3)]
    well_factor = dict(zip(wells, rng.lognormal(0.0, well_depth_sd, size=len(wells)), strict=True))
    rows = []
    for d, n in counts.items():
        dose = float(d)
        idx = rng.integers(0, 6, size=n)  # 6 wells per dose, equal expected sizes
        plate = np.array(_PLATES)[idx // 3]
        rep = idx % 3
        p_prolif = proliferating_fraction - (proliferating_fraction - proliferating_fraction_min) * float(
            hill(dose, 3.0, 1.5)
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
                    # dose-free twins of the two programs: they shape the decoys' vehicle distribution
                    "decoy_cycle": rng.random(n) < proliferating_fraction,
                    "decoy_pulse": rng.random(n) < pulse_fraction,
                    "p_prolif": p_prolif,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _means(
    genes: pd.DataFrame, cells: pd.DataFrame, *, proliferating_fraction: float, pulse_fraction: float
) -> np.ndarray:
    """Expected counts, cells x genes.

    The population mean of gene g at dose d is base_g * depth/4800 * 2^(lfc_max_g * H_g(d)) exactly
    (the planted Hill curve); every program multiplier has mean 1 over the cells of a dose.
    """
    base = genes["base_mean"].to_numpy()
    lfc = genes["lfc_max"].to_numpy()
    dose = cells["dose"].to_numpy()
    program = genes["program"].to_numpy()
    # H[c, g]: Hill response of gene g at cell c's dose (0 for unplanted genes, whose lfc is 0)
    H = np.nan_to_num(
        hill(dose[:, None], genes["ec50"].to_numpy()[None, :], genes["hill"].to_numpy()[None, :])
    )
    mu = (cells["depth"].to_numpy()[:, None] / _REF_DEPTH) * base[None, :] * np.exp2(lfc[None, :] * H)

    # p53 targets: basal p53 pulses switch targets on in a subset of vehicle cells (MDM2 bimodal);
    # the heterogeneity fades as the drug saturates the pathway. Pulse multiplier has mean 1.
    q = pulse_fraction
    on = (1.0 - _PULSE_FLOOR * (1.0 - q)) / q
    up = program == "p53_pulse"
    v_pulse = np.where(cells["p53_pulse"].to_numpy(), on, _PULSE_FLOOR)[:, None]
    mu[:, up] *= (1.0 - H[:, up]) * v_pulse + H[:, up]
    mu[:, program == "decoy_pulse"] *= np.where(cells["decoy_pulse"].to_numpy(), on, _PULSE_FLOOR)[:, None]

    # cell-cycle genes: high in proliferating cells (hi/lo = _CYCLE_RATIO, mean 1 in vehicle). Divide
    # by the expected multiplier at the cell's dose so the population mean still follows its Hill
    # curve: arrest explains part of the fall, direct (p21-DREAM) repression the rest.
    p0 = proliferating_fraction
    hi = 1.0 / (p0 + (1.0 - p0) / _CYCLE_RATIO)
    lo = hi / _CYCLE_RATIO
    p_d = cells["p_prolif"].to_numpy()
    v_cc = np.where(cells["proliferating"].to_numpy(), hi, lo) / (p_d * hi + (1.0 - p_d) * lo)
    mu[:, program == "cell_cycle"] *= v_cc[:, None]
    mu[:, program == "decoy_cycle"] *= np.where(cells["decoy_cycle"].to_numpy(), hi, lo)[:, None]
    return mu


def _check_fractions(
    pulse_fraction: float, proliferating_fraction: float, proliferating_fraction_min: float
) -> None:
    if (
        not 0.0 < pulse_fraction < 1.0
        or not 0.0 <= proliferating_fraction_min <= proliferating_fraction < 1.0
    ):
        msg = "need 0 < pulse_fraction < 1 and 0 <= proliferating_fraction_min <= proliferating_fraction < 1"
        raise InputError(msg)


def nutlin_sim(
    *,
    seed: int = 0,
    cells_per_dose: int | Mapping[str, int] | None = None,
    gene_seed: int = 0,
    n_background_genes: int = 2500,
    responder_fraction: float = 0.1,
    responder_lfc: tuple[float, float] = (0.5, 4.0),
    depth_median: float = 4800.0,
    depth_sigma: float = 0.55,
    depth_min: float = 1000.0,
    well_depth_sd: float = 0.3,
    proliferating_fraction: float = 0.35,
    proliferating_fraction_min: float = 0.08,
    pulse_fraction: float = 0.4,
    background_median: float = 0.015,
    background_sigma: float = 1.5,
) -> AnnData:
    """Simulate a sci-Plex-2-like nutlin-3a dose response of A549 cells (canonical AnnData).

    **Model.** Cell *c* at dose *d* (token units, ≈µM) draws gene *g* from a negative binomial with
    mean ``depth_c/4800 · base_g · 2^(lfc_max_g · d^h/(EC50^h + d^h)) · v_gc`` where ``v_gc`` (mean 1
    over the cells of a dose) carries the gene's cell *program*: (i) ``p53_pulse``: a p53 pulse in
    ``pulse_fraction`` of cells switches the p53 targets on in the vehicle (MDM2 is bimodal, ~40 %
    nonzero), fading as the drug saturates the pathway; (ii) ``cell_cycle``: a proliferating
    sub-population (``proliferating_fraction`` in vehicle, falling to ``proliferating_fraction_min``
    along a Hill curve, EC50 3) with 8x higher cell-cycle genes; (iii) ``decoy_pulse`` and
    ``decoy_cycle``: independent copies of the two programs whose cell fractions do not change with
    dose (the decoys of p53 targets and cell-cycle genes). Population means follow the planted Hill
    curve exactly. Depth is log-normal (median ``depth_median``, σ ``depth_sigma``, floored at
    ``depth_min``) times a per-well factor (log-normal, σ ``well_depth_sd``), so wells differ in the
    number of genes detected per cell.

    **Genes** (fixed by ``gene_seed``; see `_genes.gene_design` and ``datasets/data/README.md``).
    Planted responders: the 51 curated p53 targets (up: MDM2, CDKN1A, TP53I3, FDXR, LINC01021, SESN1,
    RRM2B, ...), the 60 curated cell-cycle genes (down: TOP2A, MKI67, CDK1, ...) and
    ``responder_fraction`` of the background genes, chosen at random with random direction,
    ``|lfc_max|`` log-uniform in ``responder_lfc`` and baselines from the background distribution
    (log-normal, median ``background_median``, σ ``background_sigma`` UMIs/cell at 4,800 UMIs, truncated
    below at 0.01). Every other background gene is an **expression-matched decoy** of one planted gene
    (round robin, ``var["decoy_of"]``): it shares the planted gene's baseline centre (each member of a
    matched set draws ``base_mean = centre · LogNormal(0, 0.2)``), its dispersion law and its
    program's dose-free twin, so in the vehicle a planted gene and its decoys are exchangeable: same
    distribution of mean, detection and dispersion. The 115 unplanted curated genes (ribosomal,
    mitochondrial, housekeeping, NEAT1/MALAT1) stay as high-expression references (no decoys). At
    the default study the mean count and the detection rate therefore score AUROC ≈ 0.51 against
    ``planted``; variance and the HVG residual, which see the dose effect as extra variance, score
    0.53-0.54 and DE (the label-using oracle) 0.74: many planted genes are rare.

    **Default size**, chosen so a small BERT trains in minutes on 2 CPU cores: 2,322 cells (the real
    Nutlin cells per dose x 0.4: 390, 333, 307, 350, 324, 428, 158, 32 for tokens 0 ... 100;
    ~360 per study class), 2,726 genes (361 planted: 202 up, 159 down; 2,250 decoys, 6 or 7 per
    planted gene; 115 references), a median of ~490 genes detected per cell (5-95 %: 245-844, at most
    ~1,350). Geneformer's 2,048-token input would hold every cell, but the shipped ``mini-nutlin``
    checkpoint has 256 positions (``<cls>`` + 254 genes + ``<eos>``): in the default study 93 % of
    cells are cut to their top 254 genes, and MDM2, expressed by ~40-60 % of low-dose cells, is in the
    input of only ~2-7 % of them. Lowering ``depth_median`` does not make the cells fit (the
    well-expressed genes stay): at 1,600 UMIs (``depth_min`` 1,000) 59 % of cells are still cut, at
    800 (``depth_min`` 250) 23 %, at 600 (``depth_min`` 200) 13 %. Generation takes a few seconds.

    Parameters
    ----------
    seed
        Seed of the cells (states, depth, counts); the same seed gives the same data.
    cells_per_dose
        ``None`` for the realistic default above, an int for that many cells at every dose, or a
        mapping ``{dose token: cells}`` (tokens left out get no cells).
    gene_seed
        Seed of the gene design (responders, effect sizes, decoys, baselines): the "organism". The
        default 0 keeps it fixed across ``seed``.
    n_background_genes
        Background genes (0 to 4,000): the responders plus the decoys.
    responder_fraction
        Share of the background genes planted as responders.
    responder_lfc
        Range of ``|lfc_max|`` (log2 at saturation) of the background responders.
    depth_median, depth_sigma, depth_min
        Log-normal full-transcriptome UMIs per cell (``sciplex2.md`` §2) and its floor.
    well_depth_sd
        σ of the per-well log-normal depth factor (the genes-detected confound).
    proliferating_fraction, proliferating_fraction_min
        Proliferating share of vehicle cells and its floor at saturating dose.
    pulse_fraction
        Share of cells with a basal p53 pulse (p53 targets on) in the vehicle.
    background_median, background_sigma
        Log-normal baselines of the background matched sets.

    Returns
    -------
    AnnData
        Canonical AnnData: ``X`` CSR float32 integer counts; ``obs``: ``label`` (dose token,
        categorical, vehicle ``"0"``), ``dose``, ``perturbation``, ``well`` (e.g. ``"AF05"``: plate A,
        row F, column 05), ``plate``, ``replicate``, ``proliferating``, ``p53_pulse``,
        ``decoy_cycle``, ``decoy_pulse``, ``n_counts``, ``n_genes``; ``var`` (index: symbols):
        ``ensembl_id``, ``planted``, ``lfc_max`` (log2 at saturation), ``effect_size``
        (``|lfc_max| · (H(10) − H(0.1))``: the population log2 fold change between the study's
        extreme doses), ``direction`` ("up"/"down"/"none"), ``category``, ``program``, ``ec50``,
        ``hill``, ``base_mean``, ``dispersion``, ``decoy_of`` (the planted gene a decoy is matched
        to; ``""`` otherwise), ``matched_set`` (integer id shared by a planted gene and its decoys;
        -1 for the curated references), ``stratum`` (0-9: equal-count deciles of the matched sets by
        baseline centre; a reference gets the decile its baseline falls in); ``uns["nutlin_sim"]["params"]`` (both seeds and every parameter).
    """
    _check_fractions(pulse_fraction, proliferating_fraction, proliferating_fraction_min)
    counts = _resolve_cells(cells_per_dose)
    genes = gene_design(
        np.random.default_rng(gene_seed),
        n_background_genes=n_background_genes,
        responder_fraction=responder_fraction,
        responder_lfc=responder_lfc,
        background_median=background_median,
        background_sigma=background_sigma,
    )
    rng = np.random.default_rng(seed)
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
    X = sp.csr_matrix(rng.poisson(rng.gamma(shape, mu / shape)).astype(np.float32))
    params = {
        "seed": seed,
        "gene_seed": gene_seed,
        "cells_per_dose": counts,
        "n_background_genes": n_background_genes,
        "responder_fraction": responder_fraction,
        "responder_lfc": list(responder_lfc),
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
    adata = AnnData(X=X, obs=_obs(cells, X, counts), var=genes)
    adata.uns["nutlin_sim"] = {"params": params}
    logger.info("simulated nutlin-3a dose response: %d cells x %d genes (seed %d, gene_seed %d)",
                *adata.shape, seed, gene_seed)  # fmt: skip
    return adata


def _obs(cells: pd.DataFrame, X: sp.csr_matrix, counts: dict[str, int]) -> pd.DataFrame:
    obs = cells.drop(columns=["depth", "p_prolif"])
    obs.index = pd.Index([f"sim_{i:05d}" for i in range(len(obs))], name="cell_id")
    obs[K.LABEL] = pd.Categorical(obs[K.LABEL], categories=[d for d in DOSES if d in counts])
    obs.insert(2, "perturbation", "Nutlin")
    for col in ("well", "plate", "replicate", "perturbation"):
        obs[col] = obs[col].astype("category")
    obs[K.N_COUNTS] = np.asarray(X.sum(axis=1)).ravel()
    obs[K.N_GENES] = np.diff(X.indptr).astype(np.int64)
    return obs
