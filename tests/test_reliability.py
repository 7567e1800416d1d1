"""Reliability (issue 22): geneattn writes only into what it owns, checks what later stages need before
its first write, and finishes a study when one method cannot be computed.

Every refused input must give one ``Error:`` line and exit code 2, leave the inputs byte-identical and
write nothing (`_snapshot` of the whole test folder before and after); legitimate inputs must work.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from geneattn._lock import LOCK_FILE, results_lock
from geneattn.cli import app
from geneattn.errors import InputError

runner = CliRunner()


# ------------------------------------------------------------------------------------- helpers
def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by content hash, links by target, folders as such."""
    out = {}
    for here, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            p = Path(here) / name
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = "-> " + str(p.readlink())
            elif p.is_dir():
                out[key] = "dir"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        dirs[:] = [d for d in dirs if not (Path(here) / d).is_symlink()]
    return out


def _refused(args: list[str], root: Path, match: str) -> str:
    """Run the CLI; assert one Error line containing ``match``, exit 2, and nothing changed under ``root``."""
    before = _snapshot(root)
    r = runner.invoke(app, args)
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    assert lines and lines[-1].startswith("Error:") and sum(x.startswith("Error:") for x in lines) == 1, (
        r.output
    )
    assert match in lines[-1], r.output
    assert _snapshot(root) == before
    return lines[-1]


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory) -> Path:
    """A small simulated nutlin study (4 doses x 15 cells, the simulator's genes) as an h5ad file."""
    from geneattn.datasets import nutlin_sim

    p = tmp_path_factory.mktemp("sim") / "sim.h5ad"
    nutlin_sim(seed=0, cells_per_dose=15, n_background_genes=50).write_h5ad(p)
    return p


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


# ------------------------------------------------------------------------ never write over inputs
def test_out_that_holds_the_data_file_is_refused(tmp_path, sim_file):
    """``run --data proj/cells.h5ad --out proj`` once replaced the user's file with the study's."""
    data = _copy(sim_file, tmp_path / "proj" / "cells.h5ad")
    _refused(
        ["run", "--data", str(data), "--out", str(tmp_path / "proj")], tmp_path, "holds the input --data"
    )


def test_a_link_to_an_input_inside_out_is_caught(tmp_path, sim_file):
    data = _copy(sim_file, tmp_path / "proj" / "cells.h5ad")
    (tmp_path / "link.h5ad").symlink_to(data)
    _refused(
        ["run", "--data", str(tmp_path / "link.h5ad"), "--out", str(tmp_path / "proj")],
        tmp_path,
        "holds the input",
    )


def test_out_inside_the_model_directory_is_refused(tmp_path):
    model, dicts = tmp_path / "model", tmp_path / "dicts"
    model.mkdir()
    dicts.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 25426}))
    args = ["run", "--model", str(model), "--dictionaries", str(dicts), "--out", str(model / "res")]
    _refused(args, tmp_path, "lies inside the input --model")


def test_out_holding_a_symlink_is_refused(tmp_path):
    out = tmp_path / "res"
    (out / "tables").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "figures").symlink_to(tmp_path / "elsewhere")
    _refused(["run", "--out", str(out)], tmp_path, "holds a symbolic link")


def test_out_with_files_not_written_by_geneattn_is_refused(tmp_path):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "cells.h5ad").write_text("the user's own file")
    _refused(["run", "--out", str(out)], tmp_path, "no geneattn manifest.json")


def test_another_tools_manifest_is_refused_by_run_and_report(tmp_path):
    out = tmp_path / "other"
    out.mkdir()
    (out / "manifest.json").write_text("[1, 2]")
    _refused(["run", "--out", str(out)], tmp_path, "not a geneattn manifest")
    _refused(["report", str(out)], tmp_path, "not a geneattn")


@pytest.mark.parametrize(
    "config, match", [('top_k = "twenty"\n', "top_k must be int"), ("top_k = [[[\n", "not valid TOML")]
)
def test_damaged_config_toml_in_a_results_folder_is_one_line(tmp_path, config, match):
    out = tmp_path / "res"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"version": 1, "stages": {}}))
    (out / "metrics.json").write_text("{}")
    (out / "config.toml").write_text(config)
    _refused(["report", str(out)], tmp_path, match)


@pytest.mark.parametrize("command", ["tokenize", "pretrain", "finetune", "attention"])
def test_stage_commands_refuse_an_out_over_their_inputs(tmp_path, sim_file, command):
    proj = tmp_path / "proj"
    data = _copy(sim_file, proj / "cells.h5ad")
    tokens, model = proj / "tokens", proj / "model"
    tokens.mkdir()
    model.mkdir()
    args = {
        "tokenize": ["tokenize", str(data), "--out", str(proj)],
        "pretrain": ["pretrain", str(tokens), "--out", str(tokens / "m")],
        "finetune": ["finetune", str(tokens), "--model", str(model), "--out", str(proj)],
        "attention": ["attention", str(tokens), "--model", str(model), "--out", str(model)],
    }[command]
    _refused(args, tmp_path, "the input" if command != "finetune" else "holds the input")


# ------------------------------------------------------------------------------------ the lock
def test_a_symlinked_lock_never_touches_its_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("another member's file")
    out = tmp_path / "res"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(victim)
    with pytest.raises(InputError, match="symbolic link"), results_lock(out):
        pass
    assert victim.read_text() == "another member's file"
    assert (out / LOCK_FILE).is_symlink()  # not deleted either
    _refused(["run", "--out", str(out)], tmp_path, "symbolic link")


def test_a_lock_path_that_is_a_directory_is_one_line(tmp_path):
    out = tmp_path / "res"
    (out / LOCK_FILE).mkdir(parents=True)
    (out / LOCK_FILE / "keep").write_text("x")
    with pytest.raises(InputError, match="is a directory"), results_lock(out):
        pass
    assert (out / LOCK_FILE / "keep").read_text() == "x"


def test_a_fifo_at_the_lock_path_is_refused(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    os.mkfifo(out / LOCK_FILE)
    with pytest.raises(InputError, match="not a regular file"), results_lock(out):
        pass


# ------------------------------------------------------------- checks before the first write (run)
@pytest.mark.parametrize(
    "args, match",
    [
        (["--seed", "4294967296"], "seed must be <= 2147483647"),
        (["--n-seed-runs", "1", "--n-permuted-runs", "1"], "residual degree of freedom"),
    ],
)
def test_values_that_would_fail_later_are_refused_up_front(tmp_path, args, match):
    _refused(["run", "--out", str(tmp_path / "res"), *args], tmp_path, match)


def test_the_smallest_null_with_residual_df_passes_preflight():
    """Null of the case above: 1 real + 2 permuted runs leave one residual df, and 0 permuted skips it."""
    from geneattn.study import StudyConfig
    from geneattn.study.preflight import _check_run_counts

    for seed_runs, permuted in ((1, 2), (2, 1), (1, 0)):
        _check_run_counts(StudyConfig(n_seed_runs=seed_runs, n_permuted_runs=permuted))


def _model_dir(tmp_path: Path, config: object | None, *, as_file: bool = False) -> list[str]:
    model, dicts = tmp_path / "model", tmp_path / "dicts"
    dicts.mkdir()
    if as_file:
        model.write_text("not a model")
    else:
        model.mkdir()
        if config is not None:
            (model / "config.json").write_text(json.dumps(config))
    return ["--model", str(model), "--dictionaries", str(dicts)]


@pytest.mark.parametrize(
    "config, as_file, match",
    [
        (None, True, "is not a directory"),
        (None, False, "has no config.json"),
        ({"hidden_size": 8}, False, "has no vocab_size"),
        ({"vocab_size": "many"}, False, "has no vocab_size"),
        ({"vocab_size": 25426}, False, "no Geneformer token dictionary"),  # dictionaries do not match
    ],
)
def test_model_and_dictionaries_are_checked_before_anything_is_written(tmp_path, config, as_file, match):
    args = _model_dir(tmp_path, config, as_file=as_file)
    _refused(["run", "--out", str(tmp_path / "res"), *args], tmp_path, match)


def _file_with(tmp_path: Path, sim_file: Path, edit) -> Path:
    a = ad.read_h5ad(sim_file)
    a = edit(a)
    p = tmp_path / "in" / "data.h5ad"
    p.parent.mkdir(exist_ok=True)
    a.write_h5ad(p)
    return p


def _foreign_genes(a: ad.AnnData) -> ad.AnnData:
    a.var["ensembl_id"] = [f"ENSMUSG{i:011d}" for i in range(a.n_vars)]
    a.var_names = [f"Mouse{i}" for i in range(a.n_vars)]
    return a


def _one_well_per_class(a: ad.AnnData) -> ad.AnnData:
    a.obs["well"] = ["W" + str(v) for v in a.obs["label"].astype(str)]
    return a


def _one_cell_per_class(a: ad.AnnData) -> ad.AnnData:
    keep = ~a.obs["label"].astype(str).duplicated().to_numpy()
    return a[keep | (a.obs["label"].astype(str) == a.obs["label"].astype(str).iloc[0]).to_numpy()].copy()


@pytest.mark.parametrize(
    "edit, extra, match",
    [
        (_foreign_genes, ["--checkpoint", "mini-nutlin"], "the vocabulary of mini-nutlin covers 0%"),
        (_one_well_per_class, ["--permute-labels"], "--permute-labels needs classes with several"),
        (_one_cell_per_class, ["--min-cells-per-class", "1"], "fewer than 3 cells"),
    ],
)
def test_data_that_later_stages_cannot_use_is_refused_by_the_data_stage(
    tmp_path, sim_file, edit, extra, match
):
    data = _file_with(tmp_path, sim_file, edit)
    args = ["run", "--data", str(data), "--out", str(tmp_path / "res"), "--min-cells-per-class", "1", *extra]
    _refused(args, tmp_path, match)


# ------------------------------------------------------------------------------- learning rates
@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1.0, 0.0])
def test_learning_rates_must_be_finite_and_positive_in_the_library(lr):
    from geneattn.models import FinetuneConfig, PretrainConfig
    from geneattn.models._args import TrainArgs

    for make in (
        lambda: TrainArgs(learning_rate=lr),
        lambda: PretrainConfig(learning_rate=lr),
        lambda: FinetuneConfig(learning_rate=lr),
        lambda: FinetuneConfig(head_learning_rate=lr),
        lambda: FinetuneConfig(embedding_learning_rate=lr),
    ):
        with pytest.raises(InputError, match="finite number > 0"):
            make()


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory, sim_file) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokens"
    r = runner.invoke(app, ["tokenize", str(sim_file), "--out", str(out), "--obs-keys", "label"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("command, lr", [("pretrain", "inf"), ("finetune", "nan")])
def test_cli_learning_rates_must_be_finite(tmp_path, tokens_dir, command, lr):
    model = tmp_path / "model"
    model.mkdir()
    extra = ["--model", str(model)] if command == "finetune" else []
    args = [command, str(tokens_dir), *extra, "--out", str(tmp_path / "out"), "--learning-rate", lr]
    _refused(args, tmp_path, "learning_rate must be a finite number > 0")


# ----------------------------------------------------------------------------- OS errors, one line
def test_symlink_loops_are_one_line(tmp_path, tokens_dir):
    (tmp_path / "a.h5ad").symlink_to(tmp_path / "b.h5ad")
    (tmp_path / "b.h5ad").symlink_to(tmp_path / "a.h5ad")
    _refused(["run", "--data", str(tmp_path / "a.h5ad"), "--out", str(tmp_path / "res")], tmp_path, "a.h5ad")
    (tmp_path / "m1").symlink_to(tmp_path / "m2")
    (tmp_path / "m2").symlink_to(tmp_path / "m1")
    args = ["attention", str(tokens_dir), "--model", str(tmp_path / "m1"), "--out", str(tmp_path / "att")]
    _refused(args, tmp_path, "m1")


def test_a_300_byte_out_name_is_one_line(tmp_path):
    line = _refused(["run", "--out", str(tmp_path / ("r" * 300))], tmp_path, "long")
    assert len(line) < 400


def test_any_os_error_in_a_command_is_one_line(tmp_path, monkeypatch):
    """The CLI's last line of defence: an OSError of any kind (here ELOOP from deep inside) is one line."""
    import errno

    def boom(*a, **k):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(tmp_path / "x"))

    monkeypatch.setattr("geneattn.study.run_study", boom)
    _refused(["run", "--out", str(tmp_path / "res")], tmp_path, "too many levels of symbolic links")


# ------------------------------------------------------------------------- corrupt sparse matrices
def _corrupt(src: Path, dst: Path, kind: str) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        g = f["X"]
        if kind == "index-out-of-range":
            ind = g["indices"][:]
            ind[5] = int(g.attrs["shape"][1]) + 7
            g["indices"][:] = ind
        elif kind == "decreasing-indptr":
            ip = g["indptr"][:]
            ip[3], ip[4] = ip[4], ip[3]
            g["indptr"][:] = ip
        else:  # indptr[-1] != nnz
            ip = g["indptr"][:]
            ip[-1] -= 1
            g["indptr"][:] = ip
    return dst


@pytest.mark.parametrize("kind", ["index-out-of-range", "decreasing-indptr", "indptr-end"])
@pytest.mark.parametrize("command", ["run", "tokenize"])
def test_corrupt_sparse_matrices_are_one_line(tmp_path, sim_file, kind, command):
    data = _corrupt(sim_file, tmp_path / "bad.h5ad", kind)
    args = (
        ["run", "--data", str(data), "--out", str(tmp_path / "res"), "--min-cells-per-class", "5"]
        if command == "run"
        else ["tokenize", str(data), "--out", str(tmp_path / "tok")]
    )
    _refused(args, tmp_path, "is not a valid sparse matrix")


def test_sparse_checks_against_scipy_on_random_structures():
    """`validate_sparse` accepts exactly the structures scipy's full check accepts (a naive reference)."""
    from geneattn.io._sparse import validate_sparse

    rng = np.random.default_rng(0)
    for _ in range(200):
        m = sp.random(6, 5, density=0.4, format=rng.choice(["csr", "csc"]), random_state=rng)
        m.indices, m.indptr = m.indices.copy(), m.indptr.copy()
        if rng.random() < 0.5 and m.nnz:
            m.indices[rng.integers(m.nnz)] = rng.choice([-1, 5, 6, 50])
        if rng.random() < 0.3 and m.nnz:
            i = rng.integers(1, len(m.indptr) - 1)
            m.indptr[i] = m.indptr[-1] + 1
        try:
            m.check_format(full_check=True)
            scipy_ok = True
        except ValueError:
            scipy_ok = False
        try:
            validate_sparse(m)
            ours = True
        except InputError:
            ours = False
        assert ours == scipy_ok


def test_wide_file_with_an_input_vocabulary_tokenizes(tmp_path):
    """3 cells x 100,000 genes: every detected gene maps, so the coverage check must not refuse."""
    n = 100_000
    X = sp.random(3, n, density=0.002, format="csr", random_state=0, dtype=np.float32)
    X.data[:] = 2
    var = pd.DataFrame({"ensembl_id": [f"ENSG{i:011d}" for i in range(n)]}, index=[f"G{i}" for i in range(n)])
    p = tmp_path / "wide.h5ad"
    ad.AnnData(X, obs=pd.DataFrame(index=["c0", "c1", "c2"]), var=var).write_h5ad(p)
    r = runner.invoke(app, ["tokenize", str(p), "--out", str(tmp_path / "tok")])
    assert r.exit_code == 0, r.output
    from geneattn.tokenize import load_tokens

    assert len(load_tokens(tmp_path / "tok")) == 3


# ------------------------------------------------------------------ a method that cannot be computed
def test_a_method_that_cannot_be_computed_is_skipped_with_its_reason():
    from geneattn.study.methods import incremental_by_method

    rng = np.random.default_rng(0)
    genes = pd.Index([f"g{i}" for i in range(200)])
    planted = pd.Series(np.arange(200) < 20, index=genes)
    cov = pd.DataFrame(rng.normal(size=(200, 2)), index=genes, columns=["a", "b"])
    strata = pd.Series(np.arange(200) % 4, index=genes).astype(str)
    good = pd.Series(planted.to_numpy() * 1.0 + rng.normal(size=200), index=genes)
    few = good.iloc[17:40]  # 3 planted genes scored: too few for 5-fold cross-validation
    table, skipped = incremental_by_method(
        {"good": good, "few": few}, planted, cov, strata=strata, n_boot=5, seed=0
    )
    assert list(table["method"]) == ["good"]
    assert set(skipped) == {"incremental:few"} and "n_folds" in skipped["incremental:few"]


# ------------------------------------------------------- the smallest built-in study, several seeds
def _recording_writes(monkeypatch) -> list[Path]:
    """Record the target of every atomic write (files and folders) of geneattn."""
    from geneattn import _atomic

    written: list[Path] = []
    original = _atomic._atomic

    def recording(path, make_tmp, publish):
        written.append(Path(path))
        return original(path, make_tmp, publish)

    monkeypatch.setattr(_atomic, "_atomic", recording)
    return written


@pytest.mark.slow
def test_smallest_study_finishes_over_several_seeds_and_writes_only_inside_out(tmp_path, monkeypatch):
    """12 cells per dose (the size whose seed 3 once died in the incremental value), seeds 3 and 5.

    Each study must end with a report; what could not be computed is listed with its reason in
    ``metrics.json["skipped"]``. Every write must resolve inside ``--out`` (links resolved) and never
    into an input (the shipped checkpoint), and nothing outside ``--out`` may change.
    """
    from geneattn._results import Results
    from geneattn.models import builtin_checkpoint
    from geneattn.study import StudyConfig, run_study

    checkpoint = builtin_checkpoint("mini-nutlin").resolve()
    written = _recording_writes(monkeypatch)
    outside, inputs = _snapshot(tmp_path), _snapshot(checkpoint)
    for seed in (3, 5):
        out = tmp_path / f"res{seed}"
        cfg = StudyConfig(out=str(out), seed=seed, cells_per_dose=12, min_cells_per_class=5, finetune_epochs=1,
                          model_input_size=64, n_boot=10, attribution_cells=4, ablation_top_k=0, top_k=5,
                          n_seed_runs=2, n_permuted_runs=1, device="cpu")  # fmt: skip
        run_study(cfg, progress=False)
        metrics = Results(out).read_metrics()
        assert (out / "report.html").is_file() and metrics["verdict"]
        assert isinstance(metrics["skipped"], dict)
        assert all(isinstance(v, str) and v for v in metrics["skipped"].values())
        for p in written:
            real = p.resolve()
            assert real.is_relative_to(tmp_path.resolve()), p
            assert not real.is_relative_to(checkpoint), p
        outs = [p.resolve() for p in written]
        assert all(any(r.is_relative_to((tmp_path / f"res{s}").resolve()) for s in (3, 5)) for r in outs)
    assert _snapshot(checkpoint) == inputs
    after = {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith(("res3", "res5"))}
    assert after == outside
