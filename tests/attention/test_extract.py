from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _attention_helpers import reference_tokens, tiny_model, tiny_tokens

from geneattn.attention import AttentionResult, extract
from geneattn.errors import InputError

TOL = 1e-5
STATS = ["recv", "fold", "logfold", "norm"]


@pytest.fixture(scope="module")
def setup():
    model, ds = tiny_model(0), tiny_tokens()
    ref = reference_tokens(model, ds)
    return model, ds, ref


def _gene_ref(ref: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for label, sub in [("__all__", ref), *ref.groupby("label")]:
        g = sub.groupby(["layer", "head", "token_id"])
        agg = g[[*STATS, "fnorm", "first", "position"]].mean().add_suffix("_mean")
        agg = agg.join(g[STATS].std(ddof=1).add_suffix("_sd")).join(g.size().rename("n_cells"))
        frames.append(agg.reset_index().assign(label=label))
    return pd.concat(frames).rename(columns={"position_mean": "rank_mean"})


def _max_err(ours: pd.DataFrame, ref: pd.DataFrame, keys: list[str], cols: list[str]) -> float:
    j = ours.merge(ref, on=keys, suffixes=("", "_ref"), how="outer", indicator=True)
    assert (j["_merge"] == "both").all(), "row sets differ"
    err = 0.0
    for c in cols:
        a, b = j[c].to_numpy(float), j[f"{c}_ref"].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), c
        ok = ~np.isnan(a)
        err = max(err, float(np.max(np.abs(a[ok] - b[ok]), initial=0)))
    return err


@pytest.mark.parametrize("method", ["fused", "blocks"])
def test_tables_match_eager(setup, method):
    model, ds, ref = setup
    res = extract({"pt": model}, ds, batch_size=4, device="cpu", method=method, length_bins=3)
    t = res.tables
    cols = [
        *(f"{s}_mean" for s in STATS),
        *(f"{s}_sd" for s in STATS),
        "fnorm_mean",
        "first_mean",
        "rank_mean",
    ]
    gene_ref = _gene_ref(ref)
    assert (
        _max_err(t["attention_by_gene"], gene_ref, ["label", "layer", "head", "token_id"], [*cols, "n_cells"])
        < TOL
    )

    pos_frames = []
    for label, sub in [("__all__", ref), *ref.groupby("label")]:
        g = sub.groupby(["layer", "head", "position"])
        agg = (
            g[[*STATS, "fnorm", "first"]]
            .mean()
            .add_suffix("_mean")
            .join(g[STATS].std(ddof=1).add_suffix("_sd"))
        )
        pos_frames.append(agg.join(g.size().rename("n_cells")).reset_index().assign(label=label))
    pos_cols = [c for c in cols if c != "rank_mean"] + ["n_cells"]
    assert (
        _max_err(
            t["attention_by_position"],
            pd.concat(pos_frames),
            ["label", "layer", "head", "position"],
            pos_cols,
        )
        < TOL
    )

    # length bins from the dataset's length quantiles
    edges = np.asarray(res.params["length_bin_edges"])
    lb = ref.assign(length_bin=np.searchsorted(edges[1:-1], ref["length"], side="right"))
    g = lb.groupby(["layer", "head", "position", "length_bin"])
    plr = g["logfold"].mean().rename("logfold_mean").to_frame().join(g.size().rename("n")).reset_index()
    assert (
        _max_err(
            t["attention_by_position_length"],
            plr,
            ["layer", "head", "position", "length_bin"],
            ["logfold_mean", "n"],
        )
        < TOL
    )

    # per cell head output norms and head_norms summaries
    cell = (
        ref.groupby(["cell", "layer", "head"])
        .agg(head_out=("head_out", "mean"), fnorm=("fnorm", "mean"))
        .reset_index()
    )
    cell["recv_first"] = ref[ref["position"] == 0].set_index(["cell", "layer", "head"])["recv"].to_numpy()
    cell["cell_id"] = [f"cell{c}" for c in cell["cell"]]
    assert _max_err(t["cell_head"], cell, ["cell_id", "layer", "head"], ["head_out", "recv_first"]) < TOL
    cell["share"] = cell["head_out"] / cell.groupby(["cell", "layer"])["head_out"].transform("sum")
    hn = cell.groupby(["layer", "head"]).agg(
        head_out_mean=("head_out", "mean"), head_out_sd=("head_out", "std"), share_mean=("share", "mean"),
        share_sd=("share", "std"), fnorm_mean=("fnorm", "mean"), n_cells=("cell", "size"),
    ).reset_index()  # fmt: skip
    assert (
        _max_err(
            t["head_norms"],
            hn,
            ["layer", "head"],
            ["head_out_mean", "head_out_sd", "share_mean", "share_sd", "fnorm_mean", "n_cells"],
        )
        < TOL
    )

    # token store: log fold per token, cells in dataset order
    store = res.token_logfold["pt"]
    want = ref.sort_values(["cell", "position", "layer", "head"])["logfold"].to_numpy().reshape(store.shape)
    assert np.max(np.abs(store - want)) < TOL
    np.testing.assert_array_equal(res.token_index["token_ids"], np.concatenate(ds["input_ids"]))


def test_classes_consistent_with_all(setup):
    model, ds, _ = setup
    g = extract({"pt": model}, ds, batch_size=3, device="cpu").tables["attention_by_gene"]
    keys = ["layer", "head", "token_id"]
    cls = g[g["label"] != "__all__"].assign(w=lambda d: d["fold_mean"] * d["n_cells"])
    pooled = cls.groupby(keys)[["w", "n_cells"]].sum()
    allc = g[g["label"] == "__all__"].set_index(keys).loc[pooled.index]
    np.testing.assert_array_equal(allc["n_cells"], pooled["n_cells"])
    np.testing.assert_allclose(allc["fold_mean"], pooled["w"] / pooled["n_cells"], rtol=1e-10)


def test_batching_order_invariant(setup):
    model, ds, _ = setup
    a = extract({"pt": model}, ds, batch_size=2, device="cpu", sort_by_length=False).tables
    b = extract({"pt": model}, ds, batch_size=9, device="cpu").tables
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=False, rtol=1e-4, atol=1e-5)


def test_models_vocab_save_load(setup, vocab, tmp_path):
    model, ds, _ = setup
    ft = tiny_model(1, classifier=True)
    res = extract(
        {"pretrained": model, "finetuned": ft}, ds, vocab, out=tmp_path / "att", batch_size=4, device="cpu"
    )
    g = res.tables["attention_by_gene"]
    assert set(g["model"]) == {"pretrained", "finetuned"}
    row = g[g["token_id"] == 4].iloc[0]
    assert row["ensembl_id"] == "ENSG00004" and row["gene"] == "G4"
    assert g[g["token_id"] == 3].iloc[0]["gene"] == "ENSG00003"  # no symbol -> gene id
    loaded = AttentionResult.load(tmp_path / "att")
    for name, df in res.tables.items():
        pd.testing.assert_frame_equal(df, loaded.tables[name])
    assert loaded.token_logfold["finetuned"].shape == (sum(ds["length"]), 2, 4)
    np.testing.assert_array_equal(loaded.token_logfold["pretrained"], res.token_logfold["pretrained"])
    assert not list((tmp_path / "att").glob(".tmp-*"))
    # the fine-tuned model gets its own numbers; the models keep their attention implementation
    assert not np.allclose(g[g.model == "pretrained"]["fold_mean"], g[g.model == "finetuned"]["fold_mean"])
    assert model.config._attn_implementation != "geneattn_stats"


def test_no_labels_no_store(model):
    ds = tiny_tokens(4).remove_columns(["label", "length"])
    res = extract({"m": model}, ds, batch_size=4, device="cpu", store_tokens=False)
    assert set(res.tables["attention_by_gene"]["label"]) == {"__all__"}
    assert res.token_logfold == {} and res.token_index == {}


def test_model_output_unchanged(model):
    """The registered attention function returns the layer's real output (padding included)."""
    from geneattn.attention import collecting

    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        want = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        with collecting(model, lambda layer, stats: None):
            got = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)


def test_errors(model, tokens):
    with pytest.raises(InputError):
        extract({}, tokens)
    with pytest.raises(InputError):
        extract({"m": model}, tokens, batch_size=0)
    with pytest.raises(InputError):
        extract({"m": model}, "/nonexistent/tokens")
    with pytest.raises(InputError):
        extract({"m": model}, tiny_tokens(2, max_len=30).map(lambda r: {"input_ids": r["input_ids"] * 3}))


def test_vocab_mismatch(model):
    ds = tiny_tokens(3).map(lambda r: {"input_ids": [*r["input_ids"], 45]})
    with pytest.raises(InputError, match="vocabulary size"):
        extract({"m": model}, ds, device="cpu")
