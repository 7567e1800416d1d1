"""Per-class positions, detection and attention ranks of highlighted genes vs pandas references."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from _stats_synth import make_store
from geneattn.attention.store import TokenStore
from geneattn.errors import InputError
from geneattn.stats import per_class as pc


def _design(n_cells=120, seed=0):
    labels = np.array(["0.1", "10"])[np.arange(n_cells) % 2]
    wells = np.array([f"{lab}-w{(i // 2) % 4}" for i, lab in enumerate(labels)])
    store, planted = make_store(n_cells=n_cells, n_genes=60, n_planted=3, seed=seed, n_layers=2, n_heads=2)
    return store, labels, wells, planted


def _tokens_frame(store, labels, wells):
    cell = store.cell_of_token
    return pd.DataFrame({"cell": cell, "tok": store.token_ids, "pos": store.positions, "cls": labels[cell],
                         "well": wells[cell]})  # fmt: skip


def test_position_by_class_vs_pandas():
    store, labels, wells, planted = _design()
    genes = {"A": int(planted[0]), "B": 100, "absent": 9999}
    res = pc.position_by_class(store, labels, wells, genes=genes, n_boot=300, seed=1)
    assert list(res["class"].unique()) == ["0.1", "10"]  # numeric order
    df = _tokens_frame(store, labels, wells)
    for r in res.itertuples():
        t = df[(df.tok == r.token_id) & (df.cls == r._1)]
        n_cls = int((labels == r._1).sum())
        assert r.n_cells == n_cls and r.n_wells == 4 and r.n_expressing == len(t)
        assert r.detection == pytest.approx(len(t) / n_cls)
        if len(t):
            assert r.median_position == pytest.approx(t.pos.median())
            assert r.detection_low <= r.detection <= r.detection_high
            assert r.position_low <= r.position_high
        else:
            assert np.isnan(r.median_position) and r.detection_high == 0
    # plain arrays work as well as a TokenStore
    plain = SimpleNamespace(offsets=store.offsets, token_ids=store.token_ids, logfold=store.logfold)
    pd.testing.assert_frame_equal(
        pc.position_by_class(plain, labels, wells, genes=genes, n_boot=300, seed=1), res
    )


def _well_study(rng, n_wells=6, cells=40, det_mean=0.5, well_sd=0.6, shift=0.0):
    """One class: per-well detection from a logit-normal (wells differ); gene at random positions."""
    p_w = 1 / (1 + np.exp(-(np.log(det_mean / (1 - det_mean)) + shift + rng.normal(0, well_sd, n_wells))))
    toks, offs, labels, wells = [], [0], [], []
    for w in range(n_wells):
        for _ in range(cells):
            n = 30
            ids = rng.permutation(np.arange(1, 31))
            if rng.random() >= p_w[w]:
                ids[ids == 5] = 99  # the gene is absent; another id takes its place
            toks.append(ids)
            offs.append(offs[-1] + n)
            labels.append("c")
            wells.append(f"w{w}")
    tok = np.concatenate(toks)
    return TokenStore(np.zeros((len(tok), 1, 1), np.float32), np.array(offs), tok, np.arange(len(labels))), \
        np.array(labels), np.array(wells)  # fmt: skip


def test_detection_interval_covers_over_independent_studies():
    """Wells as units: the 95% interval covers the population detection in most simulated studies;
    intervals from cells as units would not (they ignore the well-to-well variation)."""
    rng = np.random.default_rng(7)
    # population detection for logit-normal well effects, by Monte Carlo
    true = np.mean(1 / (1 + np.exp(-rng.normal(0, 0.6, 200_000))))
    cover, cover_cells = [], []
    for _ in range(120):
        s, lab, wel = _well_study(rng)
        r = pc.position_by_class(
            s, lab, wel, genes={"g": 5}, n_boot=300, seed=int(rng.integers(1 << 30))
        ).iloc[0]
        cover.append(r.detection_low <= true <= r.detection_high)
        se = np.sqrt(r.detection * (1 - r.detection) / r.n_cells)  # binomial, cells as units
        cover_cells.append(abs(r.detection - true) <= 1.96 * se)
    assert np.mean(cover) >= 0.82  # percentile bootstrap over 6 wells under-covers a little
    assert np.mean(cover_cells) < np.mean(cover) - 0.15


def test_attention_rank_by_class_vs_pandas_and_highlighted_summary():
    store, labels, wells, planted = _design(seed=3)
    rng = np.random.default_rng(0)
    runs = {"pt": store}
    for i, kind in enumerate(["real", "real", "real", "permuted", "permuted"]):
        lf = store.logfold + rng.normal(0, 0.2, store.logfold.shape).astype(np.float32)
        if kind == "real":
            lf[(store.token_ids == planted[0]) & (labels[store.cell_of_token] == "10")] += 1.0
        runs[f"{kind}{i}"] = TokenStore(lf, store.offsets, store.token_ids, store.cell_ids)
    kinds = {"pt": "pretrained", **{r: r.rstrip("0123456789") for r in runs if r != "pt"}}
    genes = {"P": int(planted[0]), "Q": 120}
    att = pc.attention_rank_by_class(runs, labels, genes, head=("1", "mean"), min_cells=10)
    df = _tokens_frame(store, labels, wells)
    for run, st in runs.items():
        df["fold"] = np.exp(st.logfold[:, 1, :].astype(float).mean(axis=1))
        for cls in ("0.1", "10"):
            g = df[df.cls == cls].groupby("tok")["fold"].agg(["mean", "size"])
            ranks = g.loc[g["size"] >= 10, "mean"].rank(ascending=False)
            for name, tid in genes.items():
                row = att[(att.run == run) & (att["class"] == cls) & (att.gene == name)].iloc[0]
                assert row.mean_fold == pytest.approx(g.loc[tid, "mean"])
                assert row["rank"] == pytest.approx(ranks.get(tid, np.nan), nan_ok=True)
                assert row.n_ranked == len(ranks)
    summ = pc.highlighted_by_class(
        runs, kinds, labels, wells=wells, genes=genes, head=("1", "mean"), n_boot=100
    )
    p10 = summ[(summ["class"] == "10") & (summ.gene == "P")].iloc[0]
    real = att[(att["class"] == "10") & (att.gene == "P") & att.run.str.startswith("real")]["rank"]
    assert p10.finetuned_rank_min == real.min() and p10.finetuned_rank_max == real.max()
    assert p10.n_real_runs == 3 and p10.n_permuted_runs == 2
    # the planted gain in class 10 moves the gene up beyond the permuted runs' range; not in class 0.1
    assert p10.finetuned_rank_max < p10.permuted_rank_min and p10.rank_change_max < 0
    p01 = summ[(summ["class"] == "0.1") & (summ.gene == "P")].iloc[0]
    assert p01.finetuned_rank_max >= p01.permuted_rank_min or p01.finetuned_rank_min <= p01.permuted_rank_max


def test_per_class_input_errors():
    store, labels, wells, planted = _design()
    with pytest.raises(InputError, match="entries"):
        pc.position_by_class(store, labels[:5], wells, genes={"A": 100})
    other, _ = make_store(n_cells=120, n_genes=60, seed=9)
    with pytest.raises(InputError, match="other cells"):
        pc.attention_rank_by_class({"a": store, "b": other}, labels, {"A": 100})
    with pytest.raises(InputError, match="pretrained"):
        pc.highlighted_by_class({"a": store}, {"a": "real"}, labels, wells=wells, genes={"A": 100})


def _naive_boot(per_cell_value, cell_well, n_w, counts_rows):
    """Share of the class's cells with the value, in each bootstrap resample of wells (a loop over draws)."""
    out = []
    for counts in counts_rows:
        num = sum(counts[w] * per_cell_value[cell_well == w].sum() for w in range(n_w))
        den = sum(counts[w] * (cell_well == w).sum() for w in range(n_w))
        out.append(num / den)
    return np.quantile(out, [0.025, 0.975])


def _naive_lower_median_boot(pos, tok_well, n_w, counts_rows):
    """Lower median of the positions with each well's tokens repeated ``counts[w]`` times."""
    meds = []
    for counts in counts_rows:
        rep = np.sort(np.concatenate([np.repeat(pos[tok_well == w], int(counts[w])) for w in range(n_w)]))
        meds.append(rep[int(np.ceil(len(rep) / 2)) - 1] if len(rep) else np.nan)
    return np.nanquantile(meds, [0.025, 0.975])


def test_expressed_cut_shares_and_well_interval_vs_naive():
    store, labels, wells, planted = _design(n_cells=160, seed=3)
    genes = {"A": int(planted[0]), "B": 145}  # both cut from some cells' inputs
    rng = np.random.default_rng(9)
    df = _tokens_frame(store, labels, wells)
    # expressed: in the input, or cut (expressed beyond the input) in a random third of the other cells
    expressed = {}
    for g, tid in genes.items():
        in_input = np.zeros(len(labels), bool)
        in_input[df[df.tok == tid].cell.to_numpy()] = True
        expressed[g] = in_input | (rng.random(len(labels)) < 0.33)
    n_boot, seed = 200, 4
    res = pc.position_by_class(
        store, labels, wells, genes=genes, expressed=expressed, n_boot=n_boot, seed=seed
    )
    boot_rng = np.random.default_rng(seed)  # the function draws one multinomial block per (class, gene)
    for cls in ["0.1", "10"]:
        in_cls = labels == cls
        wcode, wnames = pd.factorize(wells[in_cls])
        n_w = len(wnames)
        for g, tid in genes.items():
            r = res[(res["class"] == cls) & (res.gene == g)].iloc[0]
            counts_rows = boot_rng.multinomial(n_w, np.full(n_w, 1 / n_w), size=n_boot)
            cells = np.flatnonzero(in_cls)
            in_input = np.isin(cells, df[(df.tok == tid)].cell.to_numpy())
            expr = expressed[g][cells]
            cut = expr & ~in_input
            assert r.expressed_share == pytest.approx(expr.mean())
            assert r.in_input_share == pytest.approx(in_input.mean()) == r.detection
            assert r.cut_share == pytest.approx(cut.mean()) and cut.sum() > 0
            assert r.cut_share_of_expressing == pytest.approx(cut.sum() / expr.sum())
            np.testing.assert_allclose(
                [r.cut_share_low, r.cut_share_high], _naive_boot(cut, wcode, n_w, counts_rows)
            )
            np.testing.assert_allclose([r.expressed_share_low, r.expressed_share_high],
                                       _naive_boot(expr, wcode, n_w, counts_rows))  # fmt: skip
            t = df[(df.tok == tid) & (df.cls == cls)]
            tok_well = pd.Index(wnames).get_indexer(t.well.to_numpy())
            np.testing.assert_allclose([r.position_low, r.position_high],
                                       _naive_lower_median_boot(t.pos.to_numpy(), tok_well, n_w, counts_rows))  # fmt: skip
            assert r.interval_unit.startswith("well")
    # without `expressed` the shares of expression are absent, the rest unchanged
    plain = pc.position_by_class(store, labels, wells, genes=genes, n_boot=n_boot, seed=seed)
    assert "cut_share" not in plain
    pd.testing.assert_frame_equal(plain, res[plain.columns])
    with pytest.raises(InputError, match="expressed"):
        pc.position_by_class(store, labels, wells, genes=genes, expressed={"A": expressed["A"][:-1]})
