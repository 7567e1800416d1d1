"""Head ablation through the registered attention function vs an explicit eager reference."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from _attention_helpers import VOCAB_SIZE, tiny_model, tiny_tokens
from transformers import BertConfig, BertForSequenceClassification

from geneattn.attention import interface
from geneattn.attention.ablation import ablating, head_ablation, head_name
from geneattn.errors import InputError
from geneattn.models._data import pad_batch
from geneattn.models._pooling import use_pooling


def _batch(n_cells=7, seed=3):
    return pad_batch(tiny_tokens(n_cells, seed=seed)["input_ids"], 0)


def _eager_zeroed(model, heads, ids, attn):
    """HF eager attention; a forward hook on each self-attention zeroes the ablated heads' context."""
    eager = copy.deepcopy(model).eval()  # own config: switching it must not touch the model's
    eager.set_attn_implementation("eager")
    d = model.config.hidden_size // model.config.num_attention_heads
    hooks = []
    for layer in {la for la, _ in heads}:
        cols = [c for la, h in heads if la == layer for c in range(h * d, (h + 1) * d)]

        def zero(_m, _i, out, cols=cols):
            ctx = out[0].clone()
            ctx[..., cols] = 0.0
            return (ctx, *out[1:])

        hooks.append(eager.bert.encoder.layer[layer].attention.self.register_forward_hook(zero))
    with torch.no_grad():
        out = eager(input_ids=ids, attention_mask=attn).logits
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("classifier", [False, True])
@pytest.mark.parametrize("heads", [[(0, 1)], [(1, 0), (1, 3)], [(0, 2), (1, 1)]])
def test_ablating_equals_eager_reference_and_changes_output(classifier, heads):
    model = tiny_model(0, classifier=classifier)
    ids, attn = _batch()
    valid = attn.bool() if not classifier else torch.ones(len(ids), dtype=torch.bool)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attn).logits
        with ablating(model, heads):
            ablated = model(input_ids=ids, attention_mask=attn).logits
    ref = _eager_zeroed(model, heads, ids, attn)
    torch.testing.assert_close(ablated[valid], ref[valid], atol=2e-5, rtol=1e-4)
    assert (ablated[valid] - full[valid]).abs().max() > 1e-2  # the ablation takes effect
    assert model.config._attn_implementation == "sdpa" and not interface._ZEROED


def test_ablating_no_heads_leaves_output_unchanged():
    model = tiny_model(1, classifier=True)
    ids, attn = _batch(9, seed=4)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=attn).logits
        with ablating(model, []):
            ours = model(input_ids=ids, attention_mask=attn).logits
            assert model.config._attn_implementation == interface.ATTN_NAME
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert model.config._attn_implementation == "sdpa"


def test_ablating_inside_collecting_zeroes_head_statistics():
    model = tiny_model(2)
    ids, attn = _batch()
    got = {}
    with torch.no_grad(), interface.collecting(model, lambda layer, st: got.setdefault(layer, st)):
        with ablating(model, [(1, 2)]):
            model(input_ids=ids, attention_mask=attn)
    assert float(got[1].head_out[:, 2].abs().max()) == 0.0
    assert float(got[1].head_out[:, 1].abs().max()) > 0 and float(got[0].head_out[:, 2].abs().max()) > 0


def _deep_classifier(seed=0, n_layers=3, num_labels=3):
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64, initializer_range=0.3, num_labels=num_labels,
    )  # fmt: skip
    return BertForSequenceClassification(cfg).eval()


def _cells(n_cells=30, seed=0):
    ds = tiny_tokens(n_cells, seed=seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n_cells)
    wells = np.array([f"w{i % 6}" for i in range(n_cells)])
    return ds["input_ids"], labels, wells


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_head_ablation_matches_slow_path_and_naive_bootstrap(pooling):
    """The cached fast path equals a full forward per ablation, for first-token and mean pooling."""
    model = use_pooling(_deep_classifier(), pooling)
    ids, labels, wells = _cells()
    combos = [[(0, 1), (2, 3)], [(1, 0), (1, 2)]]
    res = head_ablation(model, ids, labels, wells=wells, combos=combos, batch_size=8, n_boot=200, seed=3)
    assert res["ablation"].iloc[0] == "full" and len(res) == 1 + 12 + 2
    assert list(res["ablation"].iloc[-2:]) == ["L0H1+L2H3", "L1H0+L1H2"]
    x, attn = pad_batch(ids, 0)
    y = torch.as_tensor(labels)
    per_cell = {}
    for name, hs in (
        [("full", [])]
        + [(head_name([(la, h)]), [(la, h)]) for la in range(3) for h in range(4)]
        + [(head_name(c), c) for c in combos]
    ):
        with torch.no_grad(), ablating(model, hs):
            logp = torch.log_softmax(model(input_ids=x, attention_mask=attn).logits, -1)
        per_cell[name] = ((logp.argmax(-1) == y).numpy().astype(float), logp[torch.arange(len(y)), y].numpy())
    r = res.set_index("ablation")
    for name, (acc, ll) in per_cell.items():
        assert r.loc[name, "accuracy"] == pytest.approx(acc.mean())
        assert r.loc[name, "loglik"] == pytest.approx(ll.mean(), abs=1e-5)
        assert r.loc[name, "d_loglik"] == pytest.approx(ll.mean() - per_cell["full"][1].mean(), abs=1e-5)
    # naive bootstrap over wells: the same multinomial draws, cells repeated explicitly
    codes, uniq = pd.factorize(wells)
    w = np.random.default_rng(3).multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=200)
    ll0, ll1 = per_cell["full"][1], per_cell["L0H1+L2H3"][1]
    boot = []
    for wb in w:
        take = np.concatenate([np.flatnonzero(codes == k).repeat(c) for k, c in enumerate(wb)])
        boot.append(ll1[take].mean() - ll0[take].mean())
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert r.loc["L0H1+L2H3", "d_loglik_low"] == pytest.approx(lo, abs=1e-5)
    assert r.loc["L0H1+L2H3", "d_loglik_high"] == pytest.approx(hi, abs=1e-5)
    assert (r["n_wells"] == 6).all() and (r["n_cells"] == 30).all()


def test_head_ablation_null_head_has_no_effect_planted_head_has():
    """A head whose output projection is zero cannot matter (Δ = 0, CI [0, 0]); an amplified one does."""
    model = _deep_classifier(seed=1)
    with torch.no_grad():
        dense = model.bert.encoder.layer[1].attention.output.dense.weight
        dense[:, 0:8] = 0.0  # head 0 of layer 1 contributes nothing
        dense[:, 16:24] *= 8.0  # head 2 of layer 1 contributes a lot
    ids, labels, wells = _cells(24, seed=2)
    res = head_ablation(model, ids, labels, wells=wells, heads=[(1, 0), (1, 2)], n_boot=100).set_index(
        "ablation"
    )
    null = res.loc["L1H0"]
    assert abs(null["d_loglik"]) < 1e-6 and null["d_accuracy"] == 0
    assert abs(null["d_loglik_low"]) < 1e-6 and abs(null["d_loglik_high"]) < 1e-6
    assert abs(res.loc["L1H2", "d_loglik"]) > 0.05


def test_head_ablation_label_names_and_errors():
    model = _deep_classifier(n_layers=2)
    model.config.label2id = {"0": 0, "0.5": 1, "5": 2}
    ids, labels, wells = _cells(12)
    names = np.array(["0", "0.5", "5"])[labels]
    a = head_ablation(model, ids, names, wells=wells, heads=[(0, 0)], n_boot=20)
    b = head_ablation(model, ids, labels, wells=wells, heads=[(0, 0)], n_boot=20)
    pd.testing.assert_frame_equal(a, b, check_exact=False)
    with pytest.raises(InputError, match="outside"):
        head_ablation(model, ids, labels, wells=wells, heads=[(2, 0)])
    with pytest.raises(InputError, match="not classes"):
        head_ablation(model, ids, np.array(["x"] * 12), wells=wells)
    with pytest.raises(InputError, match="one entry per cell"):
        head_ablation(model, ids, labels[:5], wells=wells)
    with pytest.raises(InputError, match="BertForSequenceClassification"):
        head_ablation(tiny_model(0), ids, labels, wells=wells)


def _naive_holm(p):
    m, order = len(p), np.argsort(p)
    adj, running = np.empty(m), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def test_head_ablation_well_tests_holm_and_random_control_vs_naive():
    from scipy import stats

    model = _deep_classifier(seed=1)
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.output.dense.weight[:, 16:24] *= 8.0
    ids, labels, wells = _cells(36, seed=2)
    combo = [(1, 2), (0, 1), (2, 3)]
    res = head_ablation(model, ids, labels, wells=wells, combos=[combo], n_random=4, n_boot=50, seed=5)
    assert list(res["kind"].value_counts().sort_index()) == [1, 1, 4, 12]  # combo, full, random, single
    rand = res[res["kind"] == "random"]
    assert (rand["n_heads"] == 3).all() and rand["ablation"].str.startswith("random").all()
    again = head_ablation(model, ids, labels, wells=wells, combos=[combo], n_random=4, n_boot=50, seed=5)
    assert again["ablation"].tolist() == res["ablation"].tolist()  # seeded
    assert (res["unit"] == "test well").all()
    # naive: per-well mean change, one-sided one-sample t test; Holm over the 12 single heads
    x, attn = pad_batch(ids, 0)
    with torch.no_grad():
        full = torch.log_softmax(model(input_ids=x, attention_mask=attn).logits, -1)[torch.arange(36), labels]
    singles = res[res["kind"] == "single"]
    p = []
    for la, h in zip(singles["layer"], singles["head"], strict=True):
        with torch.no_grad(), ablating(model, [(la, h)]):
            ll = torch.log_softmax(model(input_ids=x, attention_mask=attn).logits, -1)[
                torch.arange(36), labels
            ]
        d = (ll - full).numpy()
        per_well = [d[wells == w].mean() for w in sorted(set(wells))]
        p.append(stats.ttest_1samp(per_well, 0.0, alternative="less").pvalue)
    np.testing.assert_allclose(singles["p_loglik"], p, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(singles["p_loglik_holm"], _naive_holm(np.array(p)), rtol=1e-3, atol=1e-6)
    assert res.loc[res["kind"] != "single", "p_loglik_holm"].isna().all()
