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


@pytest.mark.parametrize(
    "args, config, match",
    [
        (["--seed", "-1"], None, "seed must be >= 0"),
        ([], "finetune_lr = nan\n", "finetune_lr must be a finite number"),
        ([], "finetune_lr = -1\n", "finetune_lr must be a finite number"),
        ([], "finetune_lr = inf\n", "finetune_lr must be a finite number"),
        (["--preset", "huge"], None, "unknown preset"),
        (["--top-k", "0"], None, "top_k must be >= 1"),
        (["--highlight", " , "], None, "highlight must name at least one gene"),
        (["--device", "tpu"], None, "device must be one of"),
        (["--attribution-cells", "-2"], None, "attribution_cells must be >= 0"),
        (["--min-cells-per-class", "0"], None, "min_cells_per_class must be >= 1"),
        (["--checkpoint", "huge"], None, "checkpoint must be auto, pretrain or one of"),
        (["--pooling", "max"], None, "pooling must be one of"),
        (["--finetune-head-lr", "-1"], None, "finetune_head_lr must be a finite number"),
        (["--finetune-epochs", "0"], None, "finetune_epochs must be >= 1"),
        (["--checkpoint", "mini-nutlin", "--model", ".", "--dictionaries", "."], None, "exclude each other"),
    ],
)
def test_every_invalid_value_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, args, config, match
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        args = [*args, "--config", "c.toml"]
    r = runner.invoke(app, ["run", "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert lines[-1].startswith("Error:") and match in lines[-1], r.output
    assert not out.exists()


def test_cuda_without_a_gpu_is_refused_up_front(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = runner.invoke(app, ["run", "--out", str(tmp_path / "res"), "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_that_is_a_file_is_refused(tmp_path, where):
    f = tmp_path / "f.txt"
    f.write_text("keep me")
    out = f if where == "file" else f / "res"
    r = runner.invoke(app, ["run", "--out", str(out)])
    assert r.exit_code == 2 and "is a file" in r.output
    assert f.read_text() == "keep me"


def test_second_run_on_the_same_out_exits_2_at_once(tmp_path):
    import time

    from geneattn._lock import results_lock

    out = tmp_path / "res"
    with results_lock(out):  # another run holds the folder
        t0 = time.monotonic()
        r = runner.invoke(app, ["run", "--out", str(out)])
        assert time.monotonic() - t0 < 20
    assert r.exit_code == 2 and "in use by geneattn run" in r.output
    assert {p.name for p in out.iterdir()} <= {".geneattn.lock"}
