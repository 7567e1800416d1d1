"""Each plot function returns Axes/Figure from contract-schema tables and tolerates missing optional columns."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from geneattn import InputError  # noqa: E402
from geneattn import plotting as pl  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_axes_functions(tables):
    rc = dict(matplotlib.rcParams)
    axs = [
        pl.umap(tables["umap"]),
        pl.umap(tables["umap"], color="n_genes"),
        pl.top_genes(tables["top_genes"], k=10, highlight=["MDM2", "G3"]),
        pl.head_change_heatmap(tables["significance"]),
        pl.head_change_heatmap(tables["head_norms"]),
        pl.expression_by_class(tables["expr"]),
        pl.de_vs_attention(tables["de_vs"], highlight=["MDM2"]),
        pl.confusion({"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}),
        pl.confusion(None),
        pl.length_dependence(tables["attention_by_position_length"]),
        pl.confound_summary(tables["confounds"]),
        pl.method_comparison(tables["methods"]),
    ]
    assert all(isinstance(a, Axes) for a in axs)
    assert dict(matplotlib.rcParams) == rc  # styles applied locally only
    ticks = [t.get_text() for t in axs[2].get_yticklabels()]
    assert ticks[0] == "G0" and "G3" in ticks


def test_change_by_rank_grid(tables):
    fig = pl.change_by_rank(tables["change_ci"], marks={"MDM2": 200.0})
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 24  # 6 layers x 4 heads; "mean" rows left out
    fig2 = pl.change_by_rank(tables["head_change"].drop(columns=["ci_low", "ci_high"]))
    assert len(fig2.axes) == 24


def test_draws_into_given_ax(tables):
    fig, ax = plt.subplots()
    assert pl.top_genes(tables["top_genes"], ax=ax) is ax
    assert pl.method_comparison(tables["methods"].drop(columns=["auroc_planted"]), ax=ax) is ax


def test_missing_optional_and_required_columns(tables):
    u = tables["umap"].drop(columns=["n_genes"])
    assert isinstance(pl.umap(u), Axes)
    d = tables["de_vs"].drop(columns=["planted"])
    assert isinstance(pl.de_vs_attention(d), Axes)
    assert isinstance(pl.head_change_heatmap(tables["significance"].drop(columns=["pval_adj"])), Axes)
    assert isinstance(pl.confound_summary(tables["confounds"].drop(columns=["layer", "head", "model"])), Axes)
    assert isinstance(
        pl.method_comparison(pd.DataFrame(columns=["method", "score_type", "auroc_planted"])), Axes
    )
    with pytest.raises(InputError, match="lacks column"):
        pl.umap(u.drop(columns=["umap1"]))


def test_incremental_recovery_and_ablation_plots(tables):
    import matplotlib.pyplot as plt

    from geneattn import plotting as pl

    ax = pl.incremental_value(tables["incremental"])
    assert len(ax.get_yticklabels()) == len(tables["incremental"])
    assert any("(labels)" in t.get_text() for t in ax.get_yticklabels())
    ax = pl.recovery_by_effect_size(tables["recovery"])
    assert len(ax.get_lines()) >= tables["recovery"]["method"].nunique()
    ax = pl.head_ablation(tables["head_ablation"])
    assert ax.images and ax.images[0].get_array().shape == (6, 4)
    empty = pl.recovery_by_effect_size(tables["recovery"].iloc[0:0])
    assert "no ground truth" in empty.texts[0].get_text()
    plt.close("all")
