"""Per-run changes against the pretrained model, against naive per-cell loops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _stats_synth import make_store
from geneattn.attention.store import TokenStore
from geneattn.errors import InputError
from geneattn.stats import run_deltas as rd


@pytest.fixture(scope="module")
def pair():
    ref, planted = make_store(n_cells=40, n_genes=30, seed=1)
    rng = np.random.default_rng(2)
    shift = rng.normal(0, 0.3, size=ref.logfold.shape).astype(np.float32)
    run = TokenStore(ref.logfold + shift, ref.offsets, ref.token_ids, ref.cell_ids)
    return ref, run


def test_gene_deltas_equal_a_naive_loop(pair):
    ref, run = pair
    got = rd.gene_deltas(ref, run, min_cells=5, statistic="mean_log_fold")
    for tid in got.index[:10]:
        d = [
            run.logfold[i].astype(float).mean() - ref.logfold[i].astype(float).mean()
            for i in np.flatnonzero(ref.token_ids == tid)
        ]
        assert got[tid] == pytest.approx(np.mean(d), rel=1e-5)
    n = np.bincount(ref.token_ids)
    assert set(got.index) == set(np.flatnonzero(n >= 5))


def test_bin_deltas_equal_a_naive_loop(pair):
    ref, run = pair
    got = rd.bin_deltas(ref, run, edges=(0, 1, 5, 10))
    pos = ref.positions
    for label, (lo, hi) in zip(got.index, [(0, 1), (1, 5), (5, 10), (10, pos.max() + 1)], strict=True):
        sel = (pos >= lo) & (pos < hi)
        want = np.log(np.exp(run.logfold[sel].astype(float).reshape(sel.sum(), -1).mean(1)).mean()
                      / np.exp(ref.logfold[sel].astype(float).reshape(sel.sum(), -1).mean(1)).mean())  # fmt: skip
        assert got[label] == pytest.approx(want, rel=1e-5), label


def test_head_deltas_and_long_table(pair):
    ref, run = pair
    rows = []
    rng = np.random.default_rng(3)
    for m, scale in (("pretrained", 1.0), ("r1", 1.5)):
        for c in ref.cell_ids:
            for la in range(ref.n_layers):
                for h in range(ref.n_heads):
                    rows.append(
                        {
                            "model": m,
                            "cell_id": c,
                            "layer": la,
                            "head": h,
                            "head_out": scale * rng.uniform(1, 2),
                        }
                    )
    ch = pd.DataFrame(rows)
    hd = rd.head_deltas(ch, ref="pretrained", run="r1")
    w = ch.pivot_table(index=["cell_id", "layer", "head"], columns="model", values="head_out")
    assert hd["L0H0"] == pytest.approx(
        np.mean(
            np.log(
                w.xs((0, 0), level=("layer", "head"))["r1"]
                / w.xs((0, 0), level=("layer", "head"))["pretrained"]
            )
        )
    )
    long = rd.run_deltas(ref, {"r1": run}, {"r1": "real"}, cell_head=ch, ref_name="pretrained", min_cells=5)
    assert set(long["family"]) == {"genes", "heads", "rank_bins"} and set(long["kind"]) == {"real"}
    assert len(long[long.family == "heads"]) == ref.n_layers * ref.n_heads


def test_runs_must_share_the_cells(pair):
    ref, run = pair
    other = TokenStore(run.logfold[::-1].copy(), ref.offsets, ref.token_ids[::-1].copy(), ref.cell_ids)
    with pytest.raises(InputError, match="same cells"):
        rd.gene_deltas(ref, other)


def _naive_gene_head(store, tid):
    """``[heads]`` mean over the cells expressing ``tid`` of each head's log fold (a plain loop)."""
    rows = [store.logfold[i].astype(float).ravel() for i in np.flatnonzero(store.token_ids == tid)]
    return np.mean(rows, axis=0)


def test_log_mean_fold_equals_a_naive_loop(pair):
    ref, run = pair
    got = rd.gene_deltas(ref, run, min_cells=5, statistic="log_mean_fold")
    assert set(got.index) == set(rd.gene_deltas(ref, run, min_cells=5, statistic="mean_log_fold").index)
    for tid in got.index[:10]:
        d = [
            np.log(np.mean(np.exp(run.logfold[i].astype(float))))
            - np.log(np.mean(np.exp(ref.logfold[i].astype(float))))
            for i in np.flatnonzero(ref.token_ids == tid)
        ]
        assert got[tid] == pytest.approx(np.mean(d), rel=1e-6)


def test_max_head_and_per_head_equal_a_naive_loop(pair):
    ref, run = pair
    mx = rd.gene_deltas(ref, run, min_cells=5, statistic="max_head")
    per = rd.gene_deltas(ref, run, min_cells=5, statistic="per_head")
    assert len(per) == len(mx) * ref.n_layers * ref.n_heads
    for tid in mx.index[:10]:
        d = _naive_gene_head(run, tid) - _naive_gene_head(ref, tid)
        assert mx[tid] == pytest.approx(d.max(), rel=1e-6)
        assert per[f"{tid}|L0H1"] == pytest.approx(d[1], rel=1e-6)
    assert rd.gene_deltas(ref, run, min_cells=5).equals(mx)  # the default


def test_one_head_turning_to_a_gene(pair):
    """A gene that one head attends to 20x more: the geometric mean divides it by the heads, the max sees it whole."""
    ref, _ = pair
    tid = int(np.bincount(ref.token_ids).argmax())
    lf = ref.logfold.copy()
    lf[ref.token_ids == tid, 0, 0] += np.log(20.0)
    run = TokenStore(lf, ref.offsets, ref.token_ids, ref.cell_ids)
    geo = rd.gene_deltas(ref, run, min_cells=5, statistic="mean_log_fold")[tid]
    ari = rd.gene_deltas(ref, run, min_cells=5, statistic="log_mean_fold")[tid]
    assert geo == pytest.approx(np.log(20.0) / (ref.n_layers * ref.n_heads), rel=1e-5)
    lf0 = ref.logfold[ref.token_ids == tid].astype(float).reshape(-1, ref.n_layers * ref.n_heads)
    want = np.mean(np.log((np.exp(lf0).sum(1) + 19 * np.exp(lf0[:, 0])) / np.exp(lf0).sum(1)))
    assert ari == pytest.approx(want, rel=1e-5)
    assert rd.gene_deltas(ref, run, min_cells=5, statistic="max_head")[tid] == pytest.approx(
        np.log(20.0), rel=1e-5
    )


def test_unknown_statistic_is_refused(pair):
    ref, run = pair
    with pytest.raises(InputError, match="statistic"):
        rd.gene_deltas(ref, run, statistic="median")
