"""`geneattn stats` and `geneattn report` go through the engine: lock, manifest, saved config.

After ``geneattn stats DIR --n-boot 5`` the saved config says 5 and the stats stage is keyed by it, so
``geneattn run --config DIR/config.toml`` keeps it (and redoes only what reads its tables), while a run
with other settings re-runs it. A folder that is no geneattn results directory, a live lock, or an
option that would re-key an upstream stage are refused before anything is written.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from _tiny_study import copy_of, tiny_study
from geneattn._lock import LOCK_FILE, results_lock
from geneattn._results import Results
from geneattn.cli import app
from geneattn.pipeline import hashes
from geneattn.study import load_toml, merge, stages

runner = CliRunner()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory)


def _entries(res: Results) -> dict:
    return json.loads(res.manifest.read_text())["stages"]


def _listing(root) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _error_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), r.output
    return lines[0]


def test_stats_then_run_continues_from_the_saved_config(study, tmp_path):
    res = Results(copy_of(study, tmp_path))
    before = _entries(res)
    r = runner.invoke(app, ["stats", str(res.root), "--n-boot", "5"])
    assert r.exit_code == 0, r.output
    saved = load_toml(res.config)
    assert saved["n_boot"] == 5 and saved["out"] == str(res.root.resolve())
    after = _entries(res)
    keys = hashes(stages(merge(saved, {}).resolved()))
    for name in ("ablation", "attribution", "stats"):  # n_boot re-keys ablation: it ran again too
        assert after[name]["hash"] == keys[name] and after[name]["params"]["n_boot"] == 5, name
        assert after[name]["finished"] != before[name]["finished"], name
    assert after["finetune"] == before["finetune"] and get_n_boot(res, "change_ci") == 5
    # the same settings: the stats stage stays cached; the figures and report read its new tables
    r = runner.invoke(app, ["run", "--config", str(res.config)])
    assert r.exit_code == 0, r.output
    again = _entries(res)
    assert again["stats"] == after["stats"]
    assert again["report"]["finished"] != after["report"]["finished"]
    # other settings: the stats stage runs again
    r = runner.invoke(app, ["run", "--config", str(res.config), "--n-boot", "6"])
    assert r.exit_code == 0, r.output
    last = _entries(res)
    assert last["stats"]["params"]["n_boot"] == 6 and last["stats"]["finished"] != again["stats"]["finished"]
    # `geneattn report`: the figures and the page again, through the engine, nothing upstream
    r = runner.invoke(app, ["report", str(res.root)])
    assert r.exit_code == 0, r.output
    final = _entries(res)
    assert final["report"]["finished"] != last["report"]["finished"] and final["stats"] == last["stats"]


def get_n_boot(res: Results, table: str) -> int:
    return res.read_table(table).attrs["params"]["n_boot"]


def test_foreign_folder_is_refused_untouched(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"files": ["a.csv"], "tool": "other"}))
    (tmp_path / "config.toml").write_text("x = 1\n")
    before = _listing(tmp_path)
    for cmd in ("stats", "report"):
        line = _error_line(
            runner.invoke(app, [cmd, str(tmp_path), "--n-boot", "3"][: 2 if cmd == "report" else 4])
        )
        assert "not a geneattn manifest" in line
    assert _listing(tmp_path) == before
    (tmp_path / "manifest.json").unlink()
    assert "not a geneattn results directory" in _error_line(runner.invoke(app, ["stats", str(tmp_path)]))


def test_stats_under_a_live_lock_is_refused(study):
    res = Results(study)
    before = res.manifest.read_text(), res.config.read_text()
    with results_lock(res.root):
        line = _error_line(runner.invoke(app, ["stats", str(res.root), "--n-boot", "3"]))
    assert "in use" in line
    assert (res.manifest.read_text(), res.config.read_text()) == before
    assert not (res.root / LOCK_FILE).exists()


def test_an_option_that_rekeys_the_upstream_stages_is_refused(study, tmp_path):
    res = Results(copy_of(study, tmp_path))
    before = _listing(res.root)
    line = _error_line(runner.invoke(app, ["stats", str(res.root), "--seed", "3"]))
    assert "data" in line and "geneattn run --config" in line and "--seed 3`" in line
    assert _listing(res.root) == before


def test_cells_h5ad_has_one_writer():
    from geneattn.study import STAGES, StudyConfig

    cfg = StudyConfig(device="cpu")
    writers = [s.name for s in STAGES.values() if "cells.h5ad" in s.output_paths(cfg)]
    assert writers == ["stats"]
    assert "data/qc.h5ad" in STAGES["qc"].output_paths(cfg)
