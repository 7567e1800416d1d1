from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from _stats_synth import tiny_bert
from geneattn.errors import InputError
from geneattn.models._data import pad_batch
from geneattn.stats import attribution as at

VOCAB, MASK, PLANT = 40, 1, 7


def _tiny(seed=0):
    return tiny_bert(
        seed, VOCAB, labels=("neg", "pos"), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def _cells(n=40, seed=0, plant=True):
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for i in range(n):
        length = int(rng.integers(6, 14))
        seq = rng.choice(np.arange(2, VOCAB), size=length, replace=False)
        seq = seq[seq != PLANT]
        pos = plant and i % 2 == 0
        if pos:
            seq = np.insert(seq, int(rng.integers(0, len(seq))), PLANT)
        ids.append(seq.astype(np.int64))
        labels.append("pos" if pos else "neg")
    return at.Cells(ids, np.array([f"c{i}" for i in range(n)]), np.array(labels))


@pytest.fixture(scope="module")
def trained():
    """Tiny BERT trained briefly to detect token PLANT (label 'pos')."""
    model = _tiny(1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(120):  # fresh cells every step: learn the rule, not the examples
        cells = _cells(32, seed=100 + step)
        y = torch.tensor([1 if lab == "pos" else 0 for lab in cells.labels])
        ids, mask = pad_batch(cells.input_ids, 0)
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_rollout_vs_naive_full_matrix():
    model, cells = _tiny(), _cells(5, plant=False)
    res = at.rollout(model, cells, batch_size=2)
    c = cells.input_ids[3]
    model.set_attn_implementation("eager")
    with torch.no_grad():
        att = model(input_ids=torch.tensor(c)[None], output_attentions=True).attentions
    model.set_attn_implementation("sdpa")
    n = len(c)
    j = np.eye(n)
    for a in att:  # J^l = Ã^l J^{l-1}
        a_til = 0.5 * a[0].double().mean(0).numpy() + 0.5 * np.eye(n)
        j = a_til @ j
    naive = n * (np.full(n, 1 / n) @ j)
    got = res.values[res.offsets[3] : res.offsets[4]]
    np.testing.assert_allclose(got, naive, atol=1e-5)
    assert got.sum() == pytest.approx(n)
    assert model.config._attn_implementation == "sdpa"


def test_grad_input_padding_invariant_and_naive():
    model, cells = _tiny(), _cells(6)
    tg = at.targets_for(model, cells)
    assert set(tg) <= {0, 1}
    batched = at.grad_input(model, cells, tg, batch_size=6)
    c = cells.input_ids[2]
    e = model.get_input_embeddings()(torch.tensor(c)[None]).detach().requires_grad_(True)
    y = model(inputs_embeds=e).logits[0, tg[2]]
    y.backward()
    naive = (e * e.grad).sum(-1)[0].detach().numpy()
    np.testing.assert_allclose(batched.values[batched.offsets[2] : batched.offsets[3]], naive, atol=1e-5)


def test_integrated_gradients_completeness():
    model, cells = _tiny(), _cells(4)
    tg = at.targets_for(model, cells)
    res, delta = at.integrated_gradients(
        model, cells, tg, mask_id=MASK, n_steps=32, return_delta=True, batch_size=2
    )
    assert np.all(np.abs(delta) < 0.02)
    assert res.values.shape == (cells.offsets[-1],)


def test_deletion_vs_naive():
    model, cells = _tiny(), _cells(3)
    tg = at.targets_for(model, cells, target="predicted")
    dp, cs = at.deletion(model, cells, tg, top_k=4)
    c = cells.input_ids[1]
    with torch.no_grad():
        p0 = torch.softmax(model(input_ids=torch.tensor(c)[None]).logits, -1)[0, tg[1]]
        p2 = torch.softmax(model(input_ids=torch.tensor(np.delete(c, 2))[None]).logits, -1)[0, tg[1]]
    v = dp.values[dp.offsets[1] : dp.offsets[2]]
    assert v[2] == pytest.approx(float(p0 - p2), abs=1e-5)
    assert np.isnan(v[4:]).all() and np.isfinite(v[:4]).all()
    assert np.all(cs.values[cs.offsets[1] : cs.offsets[1] + 4] >= -1e-6)


def test_planted_token_found_by_baselines(trained):
    cells = _cells(24, seed=5)
    tg = at.targets_for(trained, cells)
    gmap = pd.Series({i: f"g{i}" for i in range(VOCAB)})
    planted = pd.Series([i == PLANT for i in range(2, VOCAB)], index=[f"g{i}" for i in range(2, VOCAB)])
    ig = at.integrated_gradients(trained, cells, tg, mask_id=MASK, n_steps=16)
    gi = at.grad_input(trained, cells, tg)
    dp, _ = at.deletion(trained, cells, tg, top_k=20)
    ro = at.rollout(trained, cells)
    scores, secs = {}, {}
    for ts in (ig, gi, dp, ro):
        for resid in (False, True):
            g = at.gene_table(ts, gene_map=gmap, residual=resid, n_length_bins=2)
            assert list(g.columns) == ["token_id", "gene", "n_cells", "score_mean"]
            # attributions are signed towards the target class: use |score| for "importance"
            scores[(ts.method, "residual" if resid else "raw")] = g.set_index("gene")["score_mean"].abs()
        secs[ts.method] = ts.seconds_per_cell
    t = at.compare_methods(
        scores,
        planted=planted,
        seconds_per_cell=secs,
        n_cells={m: 24 for m in secs},
        de_score=planted.astype(float),
    )
    assert list(t.columns) == at.METHODS_COLUMNS
    r = t.set_index(["method", "score_type"])
    for m in ("integrated_gradients", "deletion_prob", "grad_input", "rollout"):
        assert r.loc[(m, "raw"), "auroc_planted"] == pytest.approx(1.0)
    assert (t.seconds_per_cell > 0).all()


def _naive_ig(model, seq, target, n_steps, mask_id=MASK):
    """One cell, one interpolation point at a time, Gauss–Legendre weights."""
    t, w = np.polynomial.legendre.leggauss(n_steps)
    wemb = model.get_input_embeddings()
    e = wemb(torch.tensor(seq)[None]).detach()
    e0 = wemb(torch.full((1, len(seq)), mask_id)).detach()
    total = torch.zeros_like(e)
    for a, wk in zip((t + 1) / 2, w / 2, strict=True):
        x = (e0 + float(a) * (e - e0)).requires_grad_(True)
        model(inputs_embeds=x).logits[0, target].backward()
        total += wk * x.grad
    return ((e - e0) * total).sum(-1)[0].detach().numpy()


def test_integrated_gradients_batched_steps_equal_a_naive_loop():
    model, cells = _tiny(2), _cells(7, seed=3)
    tg = at.targets_for(model, cells)
    one = at.integrated_gradients(model, cells, tg, mask_id=MASK, n_steps=5, batch_size=1)
    many = at.integrated_gradients(model, cells, tg, mask_id=MASK, n_steps=5, batch_size=64)
    np.testing.assert_allclose(one.values, many.values, atol=1e-5)
    for c in (0, 4):
        got = many.values[many.offsets[c] : many.offsets[c + 1]]
        np.testing.assert_allclose(got, _naive_ig(model, cells.input_ids[c], tg[c], 5), atol=1e-5)
    # Gauss–Legendre converges: 4 points already agree with 32 on this model
    ref = at.integrated_gradients(model, cells, tg, mask_id=MASK, n_steps=32)
    four = at.integrated_gradients(model, cells, tg, mask_id=MASK, n_steps=4)
    assert np.corrcoef(four.values, ref.values)[0, 1] > 0.99


def test_length_sorted_batches_change_nothing():
    model, cells = _tiny(3), _cells(9, seed=4)
    tg = at.targets_for(model, cells)
    for method in (
        lambda b: at.rollout(model, cells, batch_size=b),
        lambda b: at.grad_input(model, cells, tg, batch_size=b),
    ):
        np.testing.assert_allclose(method(1).values, method(4).values, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # restored after the gradient methods


def test_targets_predict_only_where_needed():
    model, cells = _tiny(4), _cells(6, seed=5)
    pred = at.targets_for(model, cells, target="predicted")
    labels = cells.labels.copy()
    labels[1] = "unknown"
    mixed = at.targets_for(model, at.Cells(cells.input_ids, cells.cell_ids, labels))
    l2i = model.config.label2id
    assert mixed[1] == pred[1] and all(mixed[i] == l2i[labels[i]] for i in (0, 2, 3, 4, 5))


def test_random_deletion_positions_and_gene_bootstrap():
    model, cells = _tiny(5), _cells(6, seed=6)
    tg = at.targets_for(model, cells, target="predicted")
    dp, _ = at.deletion(model, cells, tg, top_k=3, positions="random", seed=1)
    again, _ = at.deletion(model, cells, tg, top_k=3, positions="random", seed=1)
    np.testing.assert_array_equal(np.isnan(dp.values), np.isnan(again.values))
    tested = [np.flatnonzero(np.isfinite(dp.values[dp.offsets[c] : dp.offsets[c + 1]])) for c in range(6)]
    assert all(len(t) == 3 for t in tested) and any(t.max() >= 3 for t in tested)  # not only the top 3
    c, p = 2, int(tested[2][1])
    seq = cells.input_ids[c]
    with torch.no_grad():
        p0 = torch.softmax(model(input_ids=torch.tensor(seq)[None]).logits, -1)[0, tg[c]]
        p1 = torch.softmax(model(input_ids=torch.tensor(np.delete(seq, p))[None]).logits, -1)[0, tg[c]]
    assert dp.values[dp.offsets[c] + p] == pytest.approx(float(p0 - p1), abs=1e-5)
    g = at.gene_bootstrap(dp, n_boot=200, seed=0)
    ok = np.isfinite(dp.values)
    assert set(g["token_id"]) == set(dp.token_ids[ok])  # only genes actually tested
    naive = pd.Series(dp.values[ok]).groupby(dp.token_ids[ok]).agg(["mean", "size"])
    np.testing.assert_allclose(g.set_index("token_id").loc[naive.index, "score_mean"], naive["mean"])
    assert (g.set_index("token_id").loc[naive.index, "n_cells"] == naive["size"]).all()
    with pytest.raises(InputError, match="positions"):
        at.deletion(model, cells, tg, positions="middle")


def test_gene_bootstrap_ci_covers_at_the_nominal_rate():
    """Cells are the unit: a gene's per-cell values N(mu, 1); the 95 % CI covers mu ~95 % of the time."""
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(120):
        n_cells = 30
        ids = [np.array([5, 6]) for _ in range(n_cells)]
        vals = np.column_stack([rng.normal(1.0, 1.0, n_cells), np.full(n_cells, np.nan)]).ravel()
        ts = at.TokenScores("x", vals, np.arange(0, 2 * n_cells + 1, 2), np.concatenate(ids), 0.0, n_cells)
        g = at.gene_bootstrap(ts, n_boot=300, seed=int(rng.integers(1 << 30)))
        assert list(g["token_id"]) == [5]  # token 6 never scored
        hits.append(g.loc[0, "ci_lo"] <= 1.0 <= g.loc[0, "ci_hi"])
    assert 0.88 <= np.mean(hits) <= 0.99


def test_attribute_all_same_cells_and_a_stated_deletion_subset():
    model, cells = _tiny(6), _cells(10, seed=7)
    tg = at.targets_for(model, cells)
    runs = at.attribute_all(
        model, cells, tg, mask_id=MASK, ig_steps=3, deletion_cells=4, deletion_top_k=2, batch_size=4
    )
    assert set(runs) == {"rollout", "grad_input", "integrated_gradients", "deletion_prob", "deletion_cosine"}
    for m in ("rollout", "grad_input", "integrated_gradients"):
        assert runs[m].n_cells == 10 and (runs[m].token_ids == cells.token_ids).all()
    assert runs["deletion_prob"].n_cells == 4 and np.isfinite(runs["deletion_prob"].values).sum() == 8
    assert all(ts.seconds_per_cell > 0 for ts in runs.values())
