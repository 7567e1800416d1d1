"""Level and power of the run-level null, from a run-level model fitted to a study's own runs.

Reads ``RESULTS_DIR/tables/run_deltas.parquet`` (and, for the planted programmes of a nutlin-sim study,
the ``var`` of ``RESULTS_DIR/cells.h5ad``), fits `geneattn.stats.power.fit_run_model` per family
(genes with the programme sets' per-run set effects, heads, rank bins), and prints:

1. the fitted model (prior SD and df, drift, set SDs) and the study's own set contrasts
   (`geneattn.stats.contrasts.set_contrasts`, with the margins below);
2. the analytic minimal detectable effect per family (one unit, BH ~ Bonferroni over the family) and
   per contrast (Holm ~ Bonferroni over the contrasts) for K = 2..10 runs per arm;
3. over ``--n-sim`` studies simulated from the model per K: the level (null scenario) of each
   family (P(any BH discovery), per-unit rate) and contrast (P(discovery), P(p < alpha),
   P("no change within the margin")), and the power of the contrasts at the effects of the review
   (background responders vs decoys +0.04, cell-cycle genes vs decoys +0.21, log-fold units).

    python benchmarks/power_sim.py RESULTS_DIR [--n-sim 200] [--ks 2-10] [--family-ks 2,4,6,8,10]
        [--margin NAME=VALUE ...] [--seed 0] [--out CSV]

Time: the simulation took 599 s for an 832-gene tiny study (2 + 2 runs) at the defaults, on 2 cores
shared with other jobs (load ~9); it grows with the number of genes and of K.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from geneattn.stats import contrasts, power

#: equivalence margins (log-fold / log-norm units) unless --margin overrides: the study's pre-stated ones
from geneattn.study.task import MARGINS as _M  # noqa: E402
from geneattn.study.task import family_tables  # noqa: E402

DEFAULT_MARGINS = {"p53 targets": _M["p53 targets vs decoys"], "cell-cycle genes": _M["cell-cycle genes vs decoys"],
                   "background responders": _M["background responders vs decoys"], "MDM2": _M["gene"],
                   "<cls> rank bin": _M["position 0 (<cls>)"], "mean head-norm change": _M["mean head-norm change"]}  # fmt: skip
#: the review's observed effects (statistics-2026-12-07 §2.2)
EFFECTS = {"background responders": 0.04, "cell-cycle genes": 0.21}


def _ks(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def contrast_specs(deltas: pd.DataFrame, results: Path) -> dict[str, tuple[str, list, list]]:
    """``{contrast: (family, members, decoys)}``: the programmes (nutlin-sim), MDM2, the <cls> bin, head norms."""
    units = {f: list(g["unit"].astype(str).unique()) for f, g in deltas.groupby("family")}
    specs: dict[str, tuple[str, list, list]] = {}
    cells = results / "cells.h5ad"
    if cells.exists() and "genes" in units:
        import anndata as ad

        var = ad.read_h5ad(cells, backed="r").var
        if {"planted", "program", "category", "decoy_of"} <= set(var.columns):
            for name, (mem, dec) in contrasts.programme_sets(var, units["genes"]).items():
                if mem and dec:
                    specs[name] = ("genes", mem, dec)
    if "MDM2" in units.get("genes", []):
        specs["MDM2"] = ("genes", ["MDM2"], [])
    cls = [u for u in units.get("rank_bins", []) if u.split("-")[0] == "0"]
    if cls:
        specs["<cls> rank bin"] = ("rank_bins", cls[:1], [])
    if "heads" in units:
        specs["mean head-norm change"] = ("heads", units["heads"], [])
    return specs


def fit_models(deltas: pd.DataFrame, specs: dict, *, single: bool) -> dict[str, power.RunModel]:
    """One run model per family with a per-run set effect (tau) per contrast of the family.

    ``single=True``: single-unit and no-decoy contrasts (MDM2, the <cls> bin, the head mean) get
    their excess variance too, so each simulated contrast varies between runs as the study's did
    (for power). ``False``: only the programmes against decoys (co-regulated genes), so every
    other unit's variance is a draw from the prior the families' moderated t assumes (for level).
    """
    models = {}
    for fam, d in deltas.groupby("family"):
        sets = {n: (m, dd) for n, (f, m, dd) in specs.items() if f == fam and (single or dd)}
        models[str(fam)] = power.fit_run_model(d[["family", "run", "kind", "unit", "value"]], sets=sets)
    return models


def mde_table(models: dict, specs: dict, ks: list[int], alpha: float) -> pd.DataFrame:
    """Analytic MDE per family (one unit) and per contrast, K runs per arm."""
    rows = []
    for k in ks:
        for fam, m in models.items():
            nf = 1 if 2 * k >= 6 and m.normalized else 0
            df_res = 2 * k - 2 - nf
            df = min(m.prior_df + df_res, len(m.units) * df_res)
            sd = np.sqrt(m.prior_var)
            rows.append({"k": k, "test": fam, "what": "family", "sd": sd, "df": df,
                         "mde": power.mde(sd, sd, k, k, alpha=alpha, n_tests=len(m.units), df=df)})  # fmt: skip
        for name, (fam, mem, dec) in specs.items():
            sd = power.contrast_sd(models[fam], mem, dec, name=name)
            rows.append({"k": k, "test": name, "what": "contrast", "sd": sd, "df": 2 * k - 2.0,
                         "mde": power.mde(sd, sd, k, k, alpha=alpha, n_tests=len(specs), df=2 * k - 2)})  # fmt: skip
    return pd.DataFrame(rows)


def observed(deltas: pd.DataFrame, specs: dict, margins: dict, alpha: float) -> pd.DataFrame:
    parts = []
    for fam, d in deltas.groupby("family"):
        sets = {n: (m, dd) for n, (f, m, dd) in specs.items() if f == fam}
        if sets:
            parts.append(contrasts.set_contrast_values(d[["run", "kind", "unit", "value"]], sets))
    return contrasts.set_contrasts(pd.concat(parts, ignore_index=True), margins=margins, alpha=alpha)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--n-sim", type=int, default=200)
    ap.add_argument(
        "--ks", default="2-10", help="runs per arm of the contrasts' level and power, e.g. 2-10 or 2,5"
    )
    ap.add_argument("--family-ks", default="2,4,6,8,10", help="runs per arm of the families' level (slow)")
    ap.add_argument("--margin", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the simulated rates (CSV)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pd.set_option("display.width", 200)
    deltas = pd.read_parquet(a.results / "tables" / "run_deltas.parquet")
    specs = contrast_specs(deltas, a.results)
    margins = {n: DEFAULT_MARGINS.get(n, 0.1) for n in specs} | {
        k: float(v) for k, v in (m.split("=", 1) for m in a.margin)
    }
    models = fit_models(deltas, specs, single=True)
    print(f"# {a.results}: runs {models['genes'].n_runs if 'genes' in models else ''} (real, permuted)")
    for fam, m in models.items():
        print(f"{fam}: {len(m.units)} units, prior SD {np.sqrt(m.prior_var):.3f}, d0 {m.prior_df:.1f}, "
              f"drift SD (a, b) {np.sqrt(np.diag(m.drift_cov)).round(3)}, set SDs "
              f"{ {k: round(v, 3) for k, v in m.set_sd.items()} }")  # fmt: skip
    for fam, t in family_tables(deltas).items():  # the study's own family tests (genes: variance trend)
        print(f"observed {fam}: {t.attrs['n_significant']} of {t.attrs['n_tests']} at BH {a.alpha}, "
              f"MDE {power.family_mde(t):.3f}")  # fmt: skip
    obs = observed(deltas, specs, margins, a.alpha)
    print(
        "\n## The study's own set contrasts\n"
        + obs.drop(columns=["eq_low", "eq_high", "t"]).round(4).to_string()
    )
    mt = mde_table(models, specs, _ks(a.ks), a.alpha)
    print(
        "\n## MDE (80 % power) by runs per arm K\n"
        + mt.pivot(index="test", columns="k", values="mde").round(3).to_string()
    )
    print(f"\n## Analytic power at the review's effects (pooled t, alpha / {len(specs)} contrasts)")
    for n, e in EFFECTS.items():
        if n in specs:
            sd = power.contrast_sd(models["genes"], *specs[n][1:], name=n)
            pw = [
                power.t_power(e, sd * np.sqrt(2 / k), 2 * k - 2, alpha=a.alpha / len(specs))
                for k in _ks(a.ks)
            ]
            print(
                f"{n} +{e:g} (run SD {sd:.3f}): "
                + " ".join(f"K={k}: {p:.2f}" for k, p in zip(_ks(a.ks), pw, strict=True))
            )
    t0 = time.perf_counter()
    lvl = power.simulate_level_and_power(
        fit_models(deltas, specs, single=False),
        ks=_ks(a.family_ks),
        n_sim=a.n_sim,
        alpha=a.alpha,
        seed=a.seed,
    )
    effects = {
        f"{n} +{e:g}": {"genes": dict.fromkeys(specs[n][1], e)} for n, e in EFFECTS.items() if n in specs
    }
    con = power.simulate_level_and_power(models, ks=_ks(a.ks), sets=specs, margins=margins, effects=effects,
                                         n_sim=a.n_sim, alpha=a.alpha, seed=a.seed, families=False)  # fmt: skip
    print(f"\n## Simulated ({a.n_sim} studies per K and scenario, {time.perf_counter() - t0:.0f} s)")
    print("families under the null: P(any BH discovery) [per-unit rate]")
    lvl["cell"] = lvl["p_reject"].map("{:.3f}".format) + " [" + lvl["unit_rate"].map("{:.4f}".format) + "]"
    print(lvl.pivot(index="test", columns="k", values="cell").to_string())
    for scen, g in con.groupby("scenario", sort=False):
        print(
            f"\ncontrasts, scenario {scen}: P(discovery, Holm) / P(p < {a.alpha}) / P(no change within margin)"
        )
        g = g.assign(cell=g["p_reject"].map("{:.2f}".format) + " / " + g["p_raw"].map("{:.2f}".format) + " / "
                     + g["p_equivalent"].map("{:.2f}".format))  # fmt: skip
        print(g.pivot(index="test", columns="k", values="cell").to_string())
    if a.out:
        pd.concat([lvl.drop(columns="cell"), con]).to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
