"""`geneattn run` / `geneattn report`: bad input exits 2 with one message and leaves nothing behind."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from geneattn.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args, config, match",
    [
        (["--dataset", "mnist"], None, "unknown dataset"),
        (["--data", "missing.h5ad"], None, "not found"),
        ([], "bogus = 1\n", "unknown key"),
        ([], 'seed = "zero"\n', "seed must be int"),
        (["--model", "nomodel", "--dictionaries", "nodicts"], None, "not found"),
        (["--dataset", "pbmc68k", "--classes", "NotAType"], None, "NotAType"),
    ],
)
def test_bad_input_exit_2_nothing_written(tmp_path, monkeypatch, args, config, match):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        args = [*args, "--config", "c.toml"]
    r = runner.invoke(app, ["run", "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    assert match in r.output
    assert "Traceback" not in r.output
    assert not out.exists()


def test_report_on_non_results_dir(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not a geneattn results directory" in r.output
