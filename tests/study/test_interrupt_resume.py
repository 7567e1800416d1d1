"""`geneattn run` killed (SIGKILL) inside three stages resumes to the same results as an uninterrupted run.

One uninterrupted run (A) and one run (B) killed while ``pretrain``, ``attention`` and ``stats`` are
``running`` in ``manifest.json`` and then resumed. After every kill each results file is readable
(atomic writes: a killed stage leaves at most ``.tmp-*`` siblings); after the resumed run no
``.tmp-*`` is left and every table and ``metrics.json`` equal run A's exactly (same seed, CPU). The
two runs are separate processes, so this is also the CPU determinism check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

from _tiny_study import TINY  # the same tiny study as the report-contract tests
from geneattn._atomic import TMP_PREFIX

GENEATTN = Path(sys.executable).parent / "geneattn"
KILL_IN = ("pretrain", "attention", "stats")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def _cmd(config: Path, out: Path) -> list[str]:
    return [str(GENEATTN), "-q", "run", "--config", str(config), "--out", str(out)]


def _status(out: Path, stage: str) -> str | None:
    try:
        return json.loads((out / "manifest.json").read_text())["stages"][stage]["status"]
    except (OSError, ValueError, KeyError):  # absent, or (never, being atomic) half-written
        return None


def _kill_while_running(config: Path, out: Path, stage: str, *, delay: float = 0.5) -> None:
    proc = subprocess.Popen(_cmd(config, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while _status(out, stage) != "running":
            assert proc.poll() is None, f"run ended before {stage} ran: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, f"{stage} never started"
            time.sleep(0.02)
        time.sleep(delay)  # well inside the stage (it writes its outputs at its end)
        assert proc.poll() is None, f"run finished before the kill in {stage}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _check_readable(out: Path, *, allow_tmp: bool) -> None:
    """Every results file parses; temporary siblings only where a kill may have left them."""
    tmp = [p for p in out.rglob(TMP_PREFIX + "*")]
    assert allow_tmp or not tmp, f"leftover temporary files: {tmp}"
    for p in out.rglob("*"):
        if not p.is_file() or any(part.startswith(TMP_PREFIX) for part in p.relative_to(out).parts):
            continue
        if p.suffix == ".parquet":
            pd.read_parquet(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".h5ad":
            ad.read_h5ad(p, backed="r").file.close()
        elif p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            load_file(p)


def _is_timing(key: str) -> bool:
    return "seconds" in key or "timing" in key  # wall-clock durations legitimately differ


def _drop_timings(obj):
    if isinstance(obj, dict):
        return {k: _drop_timings(v) for k, v in obj.items() if not _is_timing(k)}
    return obj


def _comparable_metrics(out: Path) -> dict:
    return _drop_timings(json.loads((out / "metrics.json").read_text()))


def _table(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    return df.drop(columns=[c for c in df.columns if _is_timing(c)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from geneattn.datasets import nutlin_sim

    root = tmp_path_factory.mktemp("interrupt")
    data = root / "sim.h5ad"
    nutlin_sim(seed=0, cells_per_dose=15, n_background_genes=200).write_h5ad(data)
    config = root / "tiny.toml"
    config.write_text(TINY.format(data=data))
    a, b = root / "A", root / "B"
    t0 = time.monotonic()
    done = subprocess.run(_cmd(config, a), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    states = []
    for stage in KILL_IN:
        _kill_while_running(
            config, b, stage, delay=0.1 if stage == "pretrain" else 0.5
        )  # a tiny pretrain is quick
        _check_readable(b, allow_tmp=True)
        states.append(
            {k: v["status"] for k, v in json.loads((b / "manifest.json").read_text())["stages"].items()}
        )
    done = subprocess.run(_cmd(config, b), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return a, b, states, time.monotonic() - t0


def test_kills_hit_the_target_stages(runs):
    _, _, states, _ = runs
    for stage, st in zip(KILL_IN, states, strict=True):
        assert st[stage] == "running", (stage, st)  # killed mid-stage: the manifest still says so
    assert states[1]["pretrain"] == "done" and states[2]["attention"] == "done"


def test_resumed_run_is_complete_and_clean(runs):
    _, b, _, _ = runs
    _check_readable(b, allow_tmp=False)
    manifest = json.loads((b / "manifest.json").read_text())
    assert {s["status"] for s in manifest["stages"].values()} == {"done"}
    assert (b / "report.html").is_file() and (b / "figures" / "umap.png").is_file()


def test_resumed_run_equals_uninterrupted(runs):
    a, b, _, seconds = runs
    names = sorted(p.name for p in (a / "tables").glob("*.parquet"))
    assert names == sorted(p.name for p in (b / "tables").glob("*.parquet"))
    assert {"attention_by_gene.parquet", "head_change.parquet", "significance.parquet", "de.parquet"} <= set(
        names
    )
    for name in names:
        pd.testing.assert_frame_equal(
            _table(a / "tables" / name), _table(b / "tables" / name), check_exact=True, obj=name
        )
    ma, mb = _comparable_metrics(a), _comparable_metrics(b)
    assert ma["classification"]["accuracy"] == mb["classification"]["accuracy"]
    assert ma == mb
    hashes = [json.loads((d / "manifest.json").read_text())["stages"] for d in (a, b)]
    # every stage but the report (which shows the whole config, results directory included) has the same key
    same = [{k: v["hash"] for k, v in h.items() if k != "report"} for h in hashes]
    assert same[0] == same[1]
    print(f"interrupt/resume: two runs + 3 kills in {seconds:.0f}s")  # noqa: T201


def test_new_option_value_reruns_exactly_its_stages(runs):
    """A real re-run with another ``--top-k``: the stages that read it re-run, the rest stay cached."""
    a, _, _, _ = runs
    before = json.loads((a / "manifest.json").read_text())["stages"]
    done = subprocess.run([*_cmd(a / "config.toml", a), "--top-k", "5"], env=_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads((a / "manifest.json").read_text())["stages"]
    rerun = {n for n in after if after[n]["hash"] != before[n]["hash"]}
    assert rerun == {"stats", "figures", "report"}
    assert all(after[n]["finished"] == before[n]["finished"] for n in set(after) - rerun)
    assert pd.read_parquet(a / "tables" / "agreement.parquet").attrs["params"]["top_k"] == 5


def test_plan_estimates_the_pretrain_stage_within_2x(runs):
    """The plan (measured steps of the study's own model on its own cells) against the pretrain stage's
    actual time in the uninterrupted run: a ratio within 2x either way."""
    a, _, _, _ = runs
    manifest = json.loads((a / "manifest.json").read_text())
    estimate, actual = manifest["plan"]["stages"]["pretrain"], manifest["stages"]["pretrain"]["seconds"]
    assert 0.5 <= estimate / actual <= 2.0, (estimate, actual)
