"""`geneattn simulate` and `geneattn inspect`."""

from __future__ import annotations

import anndata as ad
from typer.testing import CliRunner

from geneattn.cli import app
from geneattn.io import validate_canonical


def test_simulate_then_inspect(tmp_path):
    out = tmp_path / "sim" / "nutlin.h5ad"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(out),
            "--seed",
            "3",
            "--cells-per-dose",
            "12",
            "--n-background-genes",
            "50",
        ],
    )
    assert res.exit_code == 0, res.output
    adata = ad.read_h5ad(out)
    validate_canonical(adata)
    assert adata.n_obs == 96 and adata.uns["nutlin_sim"]["params"]["seed"] == 3
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]

    res = runner.invoke(app, ["inspect", str(out), "--classes", "0.1,10.0", "--groups", "low=0.1;high=10"])
    assert res.exit_code == 0, res.output
    assert "label 0.1: 12 cells" in res.output and "group high: 12 cells" in res.output

    res = runner.invoke(app, ["inspect", str(out), "--label-key", "lable"])
    assert res.exit_code != 0
    assert "Did you mean ['label'" in (res.output + str(res.exception))
