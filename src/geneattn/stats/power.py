"""Power of the run-level null: minimal detectable effects and a fitted generative model of the runs.

* `mde` — the smallest difference of run means that a two-sample t-test detects with the given power
  (exact, from the noncentral t), and `family_mde` for a `geneattn.stats.nulls.task_attributable`
  table (its moderated prior variance and df).
* `fit_run_model` / `simulate` — the model the run-level null assumes, fitted to one family of a
  study's ``run_deltas``:
  ``y[r, g] = m_g + a_r + b_r m_g + u[r, s] [g in s] + e[r, g]``, with ``m_g`` the null runs' mean
  change, ``(a_r, b_r)`` a run's affine drift along it (as removed by ``nulls._normalize_runs``; drawn
  from their within-kind covariance), ``e ~ N(0, sigma_g^2)`` with ``sigma_g^2`` drawn from the
  fitted scaled inverse chi-square prior (`geneattn.stats.nulls.squeeze_var`), and optionally a per-run
  shift ``u ~ N(0, tau_s^2)`` of the members of a set (what makes set contrasts vary between runs
  more than independent genes would).
* `simulate_level_and_power` — rejection rates of the families (BH) and of set contrasts (Holm,
  `geneattn.stats.contrasts.set_contrasts`) over many simulated studies, under the null and at given
  effects.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ..errors import InputError
from . import contrasts, nulls

__all__ = ["mde", "t_power", "family_mde", "RunModel", "fit_run_model", "simulate", "contrast_sd",
           "simulate_level_and_power"]  # fmt: skip

logger = logging.getLogger(__name__)


def _power_nc(nc: float, crit: float, df: float) -> float:
    """``P(|T| > crit)`` for ``T`` noncentral t (``df``, ``nc``); normal for ``df = inf``."""
    nc = abs(nc)
    if np.isinf(df):
        return float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc))
    # the far tail (against the effect) is negligible, and scipy's nct returns NaN for some of it
    far = stats.nct.cdf(-crit, df, nc)
    return float(stats.nct.sf(crit, df, nc) + (0.0 if np.isnan(far) else far))


def t_power(effect: float, se: float, df: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided t-test at level ``alpha`` when the true difference is ``effect``.

    ``P(|T| > t_{1-alpha/2, df})`` with ``T`` noncentral t (``df``, ``effect / se``); normal for
    ``df = inf``.
    """
    return _power_nc(effect / se, stats.t.ppf(1 - alpha / 2, df), df)


def mde(
    sd_real: float,
    sd_null: float,
    n_real: int,
    n_null: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    n_tests: int = 1,
    df: float | None = None,
) -> float:
    """Minimal detectable effect of a two-sample comparison of run means.

    The difference ``delta`` at which a two-sided t-test at level ``alpha / n_tests`` rejects with
    probability ``power`` (noncentral t; ``se = sqrt(sd_real^2 / n_real + sd_null^2 / n_null)``).
    With ``n_tests = m`` it approximates BH over a family of ``m`` units of which one carries the
    effect (BH's first step is Bonferroni), or Holm over ``m`` contrasts.

    Parameters
    ----------
    sd_real, sd_null
        Between-run SD of the value in each arm.
    n_real, n_null
        Runs per arm.
    alpha, power, n_tests
        Level, power and the number of tests of the family.
    df
        Degrees of freedom of the test; ``None``: Welch-Satterthwaite from the SDs. Give
        ``n_real + n_null - 2`` for the pooled t, or ``d0 + residual df`` for a moderated t.

    Returns
    -------
    float
        The effect, in the units of the values (``inf`` without df).
    """
    if min(n_real, n_null) < 1 or not (0 < alpha < 1 and alpha / n_tests < power < 1) or n_tests < 1:
        msg = f"need n_real, n_null >= 1, n_tests >= 1 and alpha / n_tests < power < 1; got {n_real}, {n_null}, {n_tests}, {alpha}, {power}"
        raise InputError(msg)
    qa, qb = sd_real**2 / n_real, sd_null**2 / n_null
    se = float(np.sqrt(qa + qb))
    if df is None:
        den = (qa**2 / (n_real - 1) if n_real > 1 else np.inf) + (
            qb**2 / (n_null - 1) if n_null > 1 else np.inf
        )
        df = (qa + qb) ** 2 / den if den > 0 else np.inf
    if se == 0 or not np.isfinite(se):
        return 0.0 if se == 0 else float("inf")
    if not df > 0:
        return float("inf")
    crit = float(stats.t.ppf(1 - alpha / n_tests / 2, df))
    hi = crit + max(float(stats.t.ppf(power, df)), 0.0) + 1.0  # in units of se
    while _power_nc(hi, crit, df) < power:
        hi *= 2
    return se * float(optimize.brentq(lambda nc: _power_nc(nc, crit, df) - power, 0.0, hi, xtol=1e-9))


def family_mde(table: pd.DataFrame, *, power: float = 0.8, alpha: float | None = None) -> float:
    """Minimal detectable effect of one unit of a `geneattn.stats.nulls.task_attributable` family.

    The unit's between-run SD is the prior's ``sqrt(s0^2)`` (``attrs["prior_var"]``), the test's df
    ``d0 + residual df`` (as in the moderated t), and the level the Bonferroni ``alpha / n_tests``
    (BH with one true unit). Without a moderated prior (``moderate=False``), the median ``se`` and
    ``df`` of the table. The effect is in the units of ``effect`` (after run normalisation), for
    the runs of the table.
    """
    a = table.attrs
    nr, nn = int(a.get("n_runs_real", 0)), int(a.get("n_runs_permuted", 0))
    n_tests = int(a.get("n_tests", table["pval"].notna().sum()))
    alpha = float(a.get("alpha", 0.05)) if alpha is None else alpha
    if min(nr, nn) < 1 or n_tests < 1:
        msg = "family_mde needs a task_attributable table (attrs n_runs_real, n_runs_permuted, n_tests)"
        raise InputError(msg)
    s0, d0 = float(a.get("prior_var", np.nan)), float(a.get("prior_df", np.nan))
    if np.isfinite(s0) and not np.isnan(d0):
        df_res = nr + nn - 2 - int(a.get("n_factors", 0))
        sd, df = np.sqrt(s0), min(d0 + df_res, n_tests * df_res)
    else:
        sd = float(np.nanmedian(table["se"])) / np.sqrt(1 / nr + 1 / nn)
        df = float(np.nanmedian(table["df"]))
    return mde(sd, sd, nr, nn, alpha=alpha, power=power, n_tests=n_tests, df=df)


@dataclass(frozen=True)
class RunModel:
    """A fitted run-level model of one family (see the module docstring); `simulate` draws studies from it."""

    units: pd.Index
    mean: np.ndarray  # [n_units] m_g: the null runs' mean change
    prior_var: float  # s0^2 of the residual variances
    prior_df: float  # d0 (moment estimate; inf: no spread beyond chi-square noise)
    unit_var: np.ndarray  # [n_units] posterior residual variances (for analytic SDs)
    drift_cov: np.ndarray  # [2, 2] within-kind covariance of the per-run drift (a_r, b_r)
    set_sd: dict[str, float] = field(default_factory=dict)  # tau_s per set
    set_members: dict[str, np.ndarray] = field(default_factory=dict)  # indices into units per set
    family: str | None = None
    normalized: bool = True  # whether the family is analysed with run normalisation (>= 10 units)
    n_runs: tuple[int, int] = (0, 0)  # (real, permuted) runs the model was fitted on


def _drift(y: np.ndarray, yn: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``[n_runs, 2]`` (a_r, b_r): ``y - yn = a_r + b_r m`` exactly on a run's units (least squares)."""
    out = np.zeros((len(y), 2))
    for r in range(len(y)):
        ok = np.isfinite(y[r]) & np.isfinite(yn[r])
        x = np.column_stack([np.ones(ok.sum()), m[ok]])
        out[r] = np.linalg.lstsq(x, y[r, ok] - yn[r, ok], rcond=None)[0]
    return out


def _within_kind_var(x: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Pooled within-kind covariance of the rows of ``x`` (``[n_runs, p]``), df = n_runs - 2."""
    c = x.astype(float).copy()
    for k in (real, ~real):
        c[k] -= c[k].mean(axis=0)
    return c.T @ c / (len(x) - 2)


def _set_contrast(y: np.ndarray, idx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mem, dec = idx
    return np.nanmean(y[:, mem], axis=1) - (np.nanmean(y[:, dec], axis=1) if len(dec) else 0.0)


def contrast_sd(
    model: RunModel, members: Sequence[str], decoys: Sequence[str] = (), *, name: str | None = None
) -> float:
    """Between-run SD of a set contrast under the model: drift, the units' posterior variances, ``tau``.

    ``name``: a set fitted with the model, whose ``tau`` enters (members and decoys are then those
    of the call).
    """
    mem = np.flatnonzero(model.units.isin(pd.Index(members).astype(str)))
    dec = np.flatnonzero(model.units.isin(pd.Index(decoys).astype(str)))
    if not len(mem):
        msg = "none of the members is a unit of the model"
        raise InputError(msg)
    x = np.array(
        [0.0 if len(dec) else 1.0, model.mean[mem].mean() - (model.mean[dec].mean() if len(dec) else 0)]
    )
    noise = model.unit_var[mem].sum() / len(mem) ** 2 + (
        model.unit_var[dec].sum() / len(dec) ** 2 if len(dec) else 0
    )
    tau = model.set_sd.get(name, 0.0) if name is not None else 0.0
    return float(np.sqrt(max(x @ model.drift_cov @ x, 0.0) + noise + tau**2))


def fit_run_model(
    deltas: pd.DataFrame,
    *,
    sets: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    unit: str = "unit",
) -> RunModel:
    """Fit the run-level model of one family (``run, kind, <unit>, value``; see the module docstring).

    Steps as in `geneattn.stats.nulls.task_attributable`: run normalisation (when the family has
    `nulls.MIN_FACTOR_UNITS` units; else no drift), per-unit least squares on ``[1, real]``, then
    `nulls.squeeze_var` with the moment estimate of ``d0`` (the model's truth, not the test's
    conservative bound). The drift covariance and each set's ``tau^2`` are within-kind moment
    estimates (df = n_runs - 2); ``tau^2`` is the observed variance of the set contrast beyond what
    the drift and the units' posterior variances explain (0 when none is left).
    """
    family = None
    if "family" in deltas.columns:
        if deltas["family"].nunique() > 1:
            msg = f"give one family per call, got {sorted(deltas['family'].unique())}"
            raise InputError(msg)
        family = str(deltas["family"].iloc[0])
    y, real, units = nulls._run_matrix(deltas, unit)
    if real.sum() < 1 or (~real).sum() < 2 or len(real) < 4:
        msg = f"the model needs >= 2 permuted runs, >= 1 real run and >= 4 runs; got {int(real.sum())} + {int((~real).sum())}"
        raise InputError(msg)
    m = nulls._mean_observed(y[~real])
    keep = np.isfinite(m)
    y, m, units = y[:, keep], m[keep], pd.Index(units[keep]).astype(str)
    normalized = len(units) >= nulls.MIN_FACTOR_UNITS
    yn = nulls._normalize_runs(y, ~real) if normalized else y
    cov = _within_kind_var(_drift(y, yn, m), real) if normalized else np.zeros((2, 2))
    _, _, s2, df = nulls._fit_units(yn, np.column_stack([np.ones(len(real)), real.astype(float)]))
    post, d0, s0 = nulls.squeeze_var(s2, np.nan_to_num(df), level=None)
    model = RunModel(units, m, float(s0), float(d0), post, cov, family=family, normalized=normalized,
                     n_runs=(int(real.sum()), int((~real).sum())))  # fmt: skip
    set_sd, set_members = {}, {}
    for name, (members, decoys) in (sets or {}).items():
        idx = (
            np.flatnonzero(units.isin(pd.Index(members).astype(str))),
            np.flatnonzero(units.isin(pd.Index(decoys).astype(str))),
        )
        if not len(idx[0]):
            msg = f"set {name!r} has no member among the units"
            raise InputError(msg)
        obs = float(_within_kind_var(_set_contrast(y, idx)[:, None], real)[0, 0])
        implied = contrast_sd(model, units[idx[0]], units[idx[1]]) ** 2
        set_sd[name], set_members[name] = float(np.sqrt(max(obs - implied, 0.0))), idx[0]
    return dataclasses.replace(model, set_sd=set_sd, set_members=set_members)


def simulate(
    model: RunModel,
    n_real: int,
    n_null: int,
    *,
    effect: Mapping[str, float] | None = None,
    seed: int | np.random.Generator | np.random.SeedSequence = 0,
) -> pd.DataFrame:
    """One simulated study from ``model``: long table ``[family,] run, kind, unit, value``.

    Runs ``real0..`` (kind ``"real"``) then ``permuted0..``; ``effect`` adds ``delta`` to a unit's
    value in every real run (``{unit: delta}``). Every unit is observed in every run.
    """
    rng = np.random.default_rng(seed)
    n, g = n_real + n_null, len(model.units)
    if n_real < 1 or n_null < 1:
        msg = f"need at least one run per arm, got {n_real} + {n_null}"
        raise InputError(msg)
    d0, s0 = model.prior_df, model.prior_var
    sigma2 = np.full(g, s0) if np.isinf(d0) else s0 * d0 / rng.chisquare(d0, g)
    w, v = np.linalg.eigh(model.drift_cov)
    ab = rng.normal(size=(n, 2)) * np.sqrt(np.clip(w, 0, None)) @ v.T  # [n_runs, 2] drift draws
    y = model.mean + ab[:, :1] + ab[:, 1:] * model.mean + rng.normal(size=(n, g)) * np.sqrt(sigma2)
    for name, idx in model.set_members.items():
        y[:, idx] += rng.normal(0.0, model.set_sd[name], size=(n, 1))
    if effect:
        pos = model.units.get_indexer(pd.Index(list(effect)).astype(str))
        if (pos < 0).any():
            msg = f"effect names units not in the model: {[u for u, p in zip(effect, pos, strict=True) if p < 0][:5]}"
            raise InputError(msg)
        y[:n_real, pos] += np.asarray(list(effect.values()), dtype=float)
    runs = [f"real{i}" for i in range(n_real)] + [f"permuted{i}" for i in range(n_null)]
    out = pd.DataFrame({"run": np.repeat(runs, g), "kind": np.repeat(["real"] * n_real + ["permuted"] * n_null, g),
                        "unit": np.tile(model.units.to_numpy(), n), "value": y.ravel()})  # fmt: skip
    if model.family is not None:
        out.insert(0, "family", model.family)
    return out


def _record(acc: dict, key: tuple, **vals: float) -> None:
    acc.setdefault(key, []).append(vals)


def _one_study(models, sims, sets, margins, targets, alpha, *, families: bool) -> list[tuple[str, str, dict]]:
    """``[(test, what, {indicator: value})]`` of one simulated study: each family, then each set contrast."""
    out = []
    for fam, sim in sims.items():
        if not families:
            break
        # a family too small for run normalisation is also too small for the run-to-run factor
        small = not models[fam].normalized
        res = nulls.task_attributable(
            sim[["run", "kind", "unit", "value"]],
            alpha=alpha,
            normalize=not small,
            n_factors=0 if small else None,
        )
        sig = res["significant"].to_numpy()
        tgt = res.index.isin(targets.get(fam, [])) if targets.get(fam) else np.ones(len(res), dtype=bool)
        out.append((fam, "family", {"p_reject": float(sig.any()), "unit_rate": float(sig[tgt].mean()),
                                    "p_raw": float((res["pval"].to_numpy()[tgt] < alpha).mean())}))  # fmt: skip
    if sets:
        by_fam: dict[str, dict] = {}
        for name, (fam, members, decoys) in sets.items():
            by_fam.setdefault(fam, {})[name] = (members, decoys)
        values = pd.concat(
            [contrasts.set_contrast_values(sims[f], s) for f, s in by_fam.items()], ignore_index=True
        )
        names = list(dict.fromkeys(values["contrast"]))
        res = contrasts._contrast_table(values, names, margins, alpha, equal_var=True, with_mde=False)
        for name, r in res.iterrows():
            out.append((str(name), "contrast", {"p_reject": float(r["decision"] == contrasts.DECISIONS[0]),
                        "p_raw": float(r["pval"] < alpha), "p_equivalent": float(r["decision"] == contrasts.DECISIONS[1])}))  # fmt: skip
    return out


def simulate_level_and_power(
    models: Mapping[str, RunModel],
    *,
    ks: Sequence[int] = (4,),
    sets: Mapping[str, tuple[str, Sequence[str], Sequence[str]]] | None = None,
    margins: Mapping[str, float] | None = None,
    effects: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    n_sim: int = 200,
    alpha: float = 0.05,
    families: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Rejection rates of the families and set contrasts over studies simulated from fitted run models.

    Each simulated study has K real + K permuted runs of every family (`simulate`); each family is
    analysed by `geneattn.stats.nulls.task_attributable` itself (BH at ``alpha``; run normalisation
    as the model's ``normalized``, and no run factor without it), and the set contrasts by `contrasts.set_contrast_values` and
    `contrasts.set_contrasts` (pooled t, Holm across all contrasts of the study). The scenarios share
    their random draws (common random numbers), so rates are comparable across effects.

    Parameters
    ----------
    models
        ``{family: RunModel}``.
    ks
        Runs per arm.
    sets
        ``{contrast: (family, members, decoys)}``.
    margins
        Equivalence margin per contrast (default 0.1 each).
    effects
        ``{scenario: {family: {unit: delta}}}``, deltas added in the real runs. The scenario
        ``"null"`` (no effect) is always simulated.
    n_sim
        Simulated studies per K (and scenario).
    alpha
        Level of BH (families) and Holm (contrasts).
    families
        Also analyse the families (the slow part).
    seed
        Seed of the simulation.

    Returns
    -------
    DataFrame with one row per ``k, scenario, test``: ``what`` ("family" | "contrast"), ``n_sim``,
    ``p_reject`` (family: P(any BH discovery); contrast: P("discovery")) and its Monte-Carlo ``se``,
    ``unit_rate`` (family: mean share of the scenario's effect units, or of all units under the null,
    called significant), ``p_raw`` (mean share of those p-values, or the contrast's p, below
    ``alpha``), ``p_equivalent`` (contrast: P("no change within the margin")).
    """
    sets = dict(sets or {})
    margins = dict.fromkeys(sets, 0.1) | dict(margins or {})
    scenarios = {"null": {}} | dict(effects or {})
    needed = [f for f in models if families or any(s[0] == f for s in sets.values())]
    if unknown := sorted({s[0] for s in sets.values()} - set(models)):
        msg = f"sets name families without a model: {unknown}"
        raise InputError(msg)
    acc: dict[tuple, list] = {}
    for k in ks:
        for i in range(n_sim):
            fam_seeds = dict(
                zip(models, np.random.SeedSequence([seed, k, i]).spawn(len(models)), strict=True)
            )
            for scen, eff in scenarios.items():
                sims = {f: simulate(models[f], k, k, effect=eff.get(f), seed=fam_seeds[f]) for f in needed}
                targets = {f: list(e) for f, e in eff.items()}
                for test, what, vals in _one_study(
                    models, sims, sets, margins, targets, alpha, families=families
                ):
                    _record(acc, (k, scen, test, what), **vals)
    rows = []
    for (k, scen, test, what), recs in acc.items():
        r = pd.DataFrame(recs).mean()
        p = float(r["p_reject"])
        rows.append({"k": k, "scenario": scen, "test": test, "what": what, "n_sim": len(recs), "p_reject": p,
                     "se": np.sqrt(p * (1 - p) / len(recs))} | r.drop("p_reject").to_dict())  # fmt: skip
    return pd.DataFrame(rows)
