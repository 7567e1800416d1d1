"""Set-level contrasts of the run-level null: one number per run, real-label runs against permuted-label runs.

A *set contrast* is, per training run, the mean change over a set's member units minus the mean change
over its decoys (e.g. the planted p53 targets against their expression-matched decoys); with no
decoys it is the members' mean (MDM2 alone, the ``<cls>`` rank bin, the mean head-norm change).
`set_contrasts` compares the real-label runs with the permuted-label runs, the run as the unit, and
reads each contrast against an **equivalence margin** stated in advance:

* ``"discovery"`` — the two-sided test rejects after Holm across the contrasts of the call;
* ``"no change within the margin"`` — otherwise, when the ``1 - 2 alpha`` interval lies inside
  ``[-margin, margin]`` (two one-sided tests, TOST, each at ``alpha``);
* ``"undetermined"`` — otherwise; ``mde`` then says which effect these runs could have detected.

A discovery is read before equivalence: an effect that is significant but smaller than the margin is
a discovery (the table keeps the interval, so its size is visible).

Example (one call per family, then one table; ``deltas`` is ``tables/run_deltas.parquet``)::

    fam = {f: d[["run", "kind", "unit", "value"]] for f, d in deltas.groupby("family")}
    values = pd.concat([
        set_contrast_values(fam["genes"], programme_sets(var, fam["genes"]["unit"].unique())
                            | {"MDM2": (["MDM2"], [])}),
        set_contrast_values(fam["rank_bins"], {"<cls> rank bin": (["0-0"], [])}),
        set_contrast_values(fam["heads"], {"mean head-norm change": (fam["heads"]["unit"].unique(), [])}),
    ])
    table = set_contrasts(values, margins={"p53 targets": 0.1, ...})
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from .nulls import KINDS, NULL_NAME
from .significance import holm

__all__ = ["set_contrast_values", "set_contrasts", "programme_sets", "DECISIONS", "CONTRAST_COLUMNS"]

DECISIONS = ("discovery", "no change within the margin", "undetermined")
CONTRAST_COLUMNS = ("n_real", "n_permuted", "mean_real", "mean_permuted", "effect", "se", "df", "t", "ci_low",
                    "ci_high", "eq_low", "eq_high", "pval", "pval_adj", "p_equiv", "mde", "margin", "decision")  # fmt: skip
#: programme -> (the ``var`` mask of its planted members); decoys are the genes whose ``decoy_of`` is a member
_PROGRAMMES = {
    "p53 targets": lambda v: v["planted"].astype(bool) & (v["program"] == "p53_pulse"),
    "cell-cycle genes": lambda v: v["planted"].astype(bool) & (v["program"] == "cell_cycle"),
    "background responders": lambda v: v["planted"].astype(bool) & (v["category"] == "background"),
}


def programme_sets(var: pd.DataFrame, units: Sequence[str] | None = None) -> dict[str, tuple[list, list]]:
    """The planted programmes of `geneattn.datasets.nutlin_sim` and their expression-matched decoys.

    Parameters
    ----------
    var
        ``var`` of the simulated cells (index: gene symbols; columns ``planted``, ``program``,
        ``category``, ``decoy_of``).
    units
        Keep only these genes (e.g. the units of the genes family).

    Returns
    -------
    ``{"p53 targets" | "cell-cycle genes" | "background responders": (members, decoys)}``.
    """
    need = {"planted", "program", "category", "decoy_of"}
    if not need <= set(var.columns):
        msg = f"var needs columns {sorted(need)} (a nutlin-sim study), has {list(var.columns)}"
        raise InputError(msg)
    keep = pd.Index(var.index if units is None else units).astype(str)
    out = {}
    for name, mask in _PROGRAMMES.items():
        members = var.index[mask(var).to_numpy()].astype(str)
        decoys = var.index[var["decoy_of"].astype(str).isin(members).to_numpy()].astype(str)
        out[name] = (
            list(members.intersection(keep, sort=False)),
            list(decoys.intersection(keep, sort=False)),
        )
    return out


def set_contrast_values(
    deltas: pd.DataFrame, sets: Mapping[str, tuple[Sequence[str], Sequence[str]]], *, unit: str = "unit"
) -> pd.DataFrame:
    """Per run and set: mean value over the members minus mean value over the decoys.

    Parameters
    ----------
    deltas
        Long table ``run, kind, <unit>, value`` of one family (a ``family`` column, if present, must
        hold one value), as in `geneattn.stats.run_deltas.run_deltas`.
    sets
        ``{name: (members, decoys)}``; units absent from ``deltas`` are ignored; empty ``decoys``: the
        members' mean alone.

    Returns
    -------
    Long table ``contrast, run, kind, value`` (`set_contrasts`' input); ``.attrs["n_units"]`` gives
    ``(n_members, n_decoys)`` used per set.
    """
    if "family" in deltas.columns and deltas["family"].nunique() > 1:
        msg = f"give one family per call, got {sorted(deltas['family'].unique())}"
        raise InputError(msg)
    if deltas.duplicated(["run", unit]).any():
        msg = f"deltas has several rows for one (run, {unit})"
        raise InputError(msg)
    wide = deltas.pivot(index="run", columns=unit, values="value").sort_index()
    cols, y = pd.Index(wide.columns.astype(str)), wide.to_numpy(dtype=float)  # [n_runs, n_units]
    kinds = deltas.drop_duplicates("run").set_index("run")["kind"].astype(str).reindex(wide.index).to_numpy()
    parts, n_units = [], {}
    for name, (members, decoys) in sets.items():
        mem, dec = (np.unique(cols.get_indexer(pd.Index(u).astype(str))) for u in (members, decoys))
        mem, dec = mem[mem >= 0], dec[dec >= 0]
        if not len(mem) or (len(decoys) and not len(dec)):
            msg = f"set {name!r}: {len(mem)} of its members and {len(dec)} of its decoys are in deltas"
            raise InputError(msg)
        with warnings.catch_warnings():  # a run without any member: NaN, dropped by set_contrasts
            warnings.simplefilter("ignore", RuntimeWarning)
            v = np.nanmean(y[:, mem], axis=1) - (np.nanmean(y[:, dec], axis=1) if len(dec) else 0.0)
        parts.append(pd.DataFrame({"contrast": name, "run": wide.index, "kind": kinds, "value": v}))
        n_units[name] = (len(mem), len(dec))
    out = pd.concat(parts, ignore_index=True)
    out.attrs["n_units"] = n_units
    return out


def _two_sample(a: np.ndarray, b: np.ndarray, *, equal_var: bool) -> tuple[float, float, float, float]:
    """``(effect, se, df, sd_pooled_or_nan)`` of mean(a) - mean(b): pooled or Welch."""
    va, vb, na, nb = a.var(ddof=1), b.var(ddof=1), len(a), len(b)
    if equal_var:
        sp2 = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
        return a.mean() - b.mean(), np.sqrt(sp2 * (1 / na + 1 / nb)), na + nb - 2.0, np.sqrt(sp2)
    qa, qb = va / na, vb / nb
    df = (qa + qb) ** 2 / (qa**2 / (na - 1) + qb**2 / (nb - 1)) if qa + qb > 0 else np.nan
    return a.mean() - b.mean(), np.sqrt(qa + qb), df, np.nan


def _contrast_row(
    g: pd.DataFrame, margin: float, alpha: float, n_tests: int, *, equal_var: bool, with_mde: bool
) -> dict:
    from .power import mde  # power imports this module at its top

    v = g["value"].to_numpy(dtype=float)
    is_real = g["kind"].astype(str).to_numpy() == "real"
    a, b = v[is_real & np.isfinite(v)], v[~is_real & np.isfinite(v)]
    row = {"n_real": len(a), "n_permuted": len(b), "mean_real": a.mean() if len(a) else np.nan,
           "mean_permuted": b.mean() if len(b) else np.nan, "margin": margin}  # fmt: skip
    row["effect"] = row["mean_real"] - row["mean_permuted"]
    if min(len(a), len(b)) < 2 or np.ptp(np.r_[a - a.mean(), b - b.mean()]) == 0:
        return row
    eff, se, df, sp = _two_sample(a, b, equal_var=equal_var)
    sds = (sp, sp) if equal_var else (a.std(ddof=1), b.std(ddof=1))
    q1, q2 = stats.t.ppf(1 - alpha / 2, df), stats.t.ppf(1 - alpha, df)
    return row | {
        "se": se, "df": df, "t": eff / se, "ci_low": eff - q1 * se, "ci_high": eff + q1 * se,
        "eq_low": eff - q2 * se, "eq_high": eff + q2 * se, "pval": 2 * stats.t.sf(abs(eff) / se, df),
        # TOST: H0 effect <= -margin or effect >= margin; p = the larger one-sided p
        "p_equiv": max(stats.t.sf((eff + margin) / se, df), stats.t.cdf((eff - margin) / se, df)),
        "mde": mde(*sds, len(a), len(b), alpha=alpha, n_tests=n_tests, df=df) if with_mde else np.nan,
    }  # fmt: skip


def set_contrasts(
    values: pd.DataFrame, *, margins: Mapping[str, float], alpha: float = 0.05, equal_var: bool = True
) -> pd.DataFrame:
    """Each contrast: real-label runs minus permuted-label runs, a two-sample t over runs, and a decision.

    Parameters
    ----------
    values
        Long table ``contrast, run, kind ("real" | "permuted"), value`` (e.g. `set_contrast_values`).
    margins
        Equivalence margin per contrast (> 0, in the contrast's units), stated before the analysis;
        every contrast needs one.
    alpha
        Family-wise level of the discoveries (Holm across the contrasts of the call); each
        equivalence claim is a TOST at ``alpha`` (the ``1 - 2 alpha`` interval inside the margin).
    equal_var
        ``True`` (default): pooled-variance t, ``df = n_real + n_permuted - 2``. Under the null the
        runs of both kinds are exchangeable, so the variances are equal; with equal arms the pooled t
        is also robust to unequal ones, while Welch's df falls towards 1 with 2 runs per arm.
        ``False``: Welch (Satterthwaite df).

    Returns
    -------
    DataFrame indexed by contrast, columns `CONTRAST_COLUMNS`: ``effect`` (mean_real -
    mean_permuted), ``se, df, t``, ``ci_low, ci_high`` (``1 - alpha`` interval), ``eq_low, eq_high``
    (``1 - 2 alpha`` interval), ``pval``, ``pval_adj`` (Holm), ``p_equiv`` (TOST), ``mde`` (the
    effect these runs detect with 80 % power at the Bonferroni level ``alpha / n_contrasts``, their
    SDs taken as true; `geneattn.stats.power.mde`), ``margin``, ``decision`` (one of `DECISIONS`).
    Contrasts with fewer than 2 runs of a kind (or no spread) are ``"undetermined"`` with NaN tests.
    """
    need = {"contrast", "run", "kind", "value"}
    if not need <= set(values.columns):
        msg = f"values needs columns {sorted(need)}, has {list(values.columns)}"
        raise InputError(msg)
    if not set(values["kind"].astype(str)) <= set(KINDS):
        msg = f"kind must be one of {KINDS}, got {sorted(set(values['kind'].astype(str)))}"
        raise InputError(msg)
    names = list(dict.fromkeys(values["contrast"].astype(str)))
    bad = [n for n in names if not (np.isfinite(margins.get(n, np.nan)) and margins.get(n, 0) > 0)]
    if bad or not 0 < alpha < 0.5:
        msg = f"every contrast needs a positive margin stated in advance (missing or invalid: {bad}) and 0 < alpha < 0.5"
        raise InputError(msg)
    return _contrast_table(values, names, margins, alpha, equal_var=equal_var, with_mde=True)


def _contrast_table(
    values: pd.DataFrame,
    names: list[str],
    margins: Mapping[str, float],
    alpha: float,
    *,
    equal_var: bool,
    with_mde: bool,
) -> pd.DataFrame:
    """`set_contrasts` on checked input; ``with_mde=False`` skips the (slow) mde, e.g. in simulations."""
    groups = dict(tuple(values.groupby(values["contrast"].astype(str), sort=False)))
    n = len(names)
    rows = {c: _contrast_row(groups[c], float(margins[c]), alpha, n, equal_var=equal_var, with_mde=with_mde)
            for c in names}  # fmt: skip
    out = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(CONTRAST_COLUMNS))
    out.index.name = "contrast"
    out["pval_adj"] = holm(out["pval"].to_numpy(dtype=float))
    inside = (out["eq_low"] > -out["margin"]) & (out["eq_high"] < out["margin"])
    out["decision"] = np.where(
        out["pval_adj"] < alpha, DECISIONS[0], np.where(inside, DECISIONS[1], DECISIONS[2])
    )
    out.attrs = {"null": NULL_NAME, "unit_of_replication": "training run", "alpha": alpha,
                 "method": ("pooled" if equal_var else "Welch") + " t over runs, Holm; TOST against the margins"}  # fmt: skip
    return out
