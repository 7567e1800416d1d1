"""Bad input through the CLI: one clear ``Error:`` line, exit code 2, no traceback, no outputs, input untouched.

Every case of `CASES` runs in-process (`typer.testing.CliRunner` on `geneattn.cli.app`); one case
also runs as a real subprocess of the console script. Hypothesis fuzzes the h5ad reader and the
tokenizer with arbitrary bytes and arbitrary values.
"""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from geneattn.cli import app
from geneattn.errors import InputError

N_CELLS, N_GENES = 40, 30
IDS = [f"ENSG{i:011d}" for i in range(N_GENES)]


# ------------------------------------------------------------------------------------- inputs
def _adata(X=None, *, labels=None, ids=IDS, names=None, obs_extra=None) -> ad.AnnData:
    rng = np.random.default_rng(0)
    if X is None:
        X = rng.poisson(2.0, (N_CELLS, len(ids))).astype(np.float32)
        X[:, 0] += 1
    n = X.shape[0]
    labels = labels if labels is not None else [("a", "b")[i % 2] for i in range(n)]
    obs = pd.DataFrame(
        {"label": pd.Categorical(labels), **(obs_extra or {})}, index=[f"c{i}" for i in range(n)]
    )
    var = pd.DataFrame({"ensembl_id": list(ids)}, index=names or [f"G{i}" for i in range(len(ids))])
    return ad.AnnData(X=sp.csr_matrix(X) if not np.iscomplexobj(X) else X, obs=obs, var=var)


def _h5ad(tmp: Path, adata: ad.AnnData, name: str = "in.h5ad") -> Path:
    p = tmp / name
    adata.write_h5ad(p)
    return p


def _counts(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], ad.AnnData]:
    rng = np.random.default_rng(1)
    return lambda _: _adata(f(rng.poisson(2.0, (N_CELLS, N_GENES)).astype(np.float32) + 0))


def _dicts(tmp: Path, genes=IDS) -> list[str]:
    """Geneformer-style pickled token and median dictionaries over ``genes``."""
    tok = {"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes)}}
    med = {g: 1.5 for g in genes}
    (tmp / "tok.pkl").write_bytes(pickle.dumps(tok))
    (tmp / "med.pkl").write_bytes(pickle.dumps(med))
    return ["--token-dictionary", str(tmp / "tok.pkl"), "--gene-median-dictionary", str(tmp / "med.pkl")]


def _tokens(tmp: Path) -> Path:
    from geneattn.tokenize import build_vocab, tokenize

    adata = _adata()
    tokenize(adata, build_vocab(adata), out=tmp / "tokens", obs_keys=["label"], model_input_size=64)
    return tmp / "tokens"


def _model(tmp: Path, *, vocab_size: int, positions: int = 64) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    from geneattn.models import save_model

    cfg = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=positions)  # fmt: skip
    return save_model(BertForMaskedLM(cfg), tmp / "model")


def _vocab_size(tokens: Path) -> int:
    from geneattn.tokenize import load_vocab

    return load_vocab(tokens).size


# ------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """``setup(tmp) -> (args, inputs)``; ``expect`` must appear in the error line."""

    id: str
    setup: Callable[[Path], tuple[list[str], list[Path]]]
    expect: str


def _run_data(make: Callable[[Path], ad.AnnData | Path], *extra: str) -> Callable:
    """``geneattn run --data FILE`` (data errors surface in the first stage, before any output)."""

    def setup(tmp: Path):
        made = make(tmp)
        path = made if isinstance(made, Path) else _h5ad(tmp, made)
        return ["run", "--data", str(path), "--out", str(tmp / "out"), *extra], [path]

    return setup


def _tok(make: Callable[[Path], ad.AnnData], genes=IDS, *extra: str) -> Callable:
    """``geneattn tokenize FILE --out DIR`` with pickled dictionaries over ``genes``."""

    def setup(tmp: Path):
        path = _h5ad(tmp, make(tmp))
        return ["tokenize", str(path), "--out", str(tmp / "out"), *_dicts(tmp, genes), *extra], [
            path, tmp / "tok.pkl", tmp / "med.pkl"]  # fmt: skip

    return setup


def _truncated(tmp: Path) -> Path:
    p = _h5ad(tmp, _adata(), "full.h5ad")
    data = p.read_bytes()
    p.unlink()
    (tmp / "in.h5ad").write_bytes(data[: len(data) // 2])
    return tmp / "in.h5ad"


def _write_bytes(data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "in.h5ad").write_bytes(data)
        return tmp / "in.h5ad"

    return make


def _with(f: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], np.ndarray]:
    def g(x: np.ndarray) -> np.ndarray:
        f(x)
        return x

    return g


def _dup_genes(_: Path) -> ad.AnnData:
    ids = list(IDS)
    ids[5] = ids[4]  # two genes with counts share an Ensembl id
    return _adata(ids=ids)


def _model_case(*, vocab_delta: int = 0, positions: int = 64, command: str = "attention") -> Callable:
    def setup(tmp: Path):
        tokens = _tokens(tmp)
        model = _model(tmp, vocab_size=_vocab_size(tokens) + vocab_delta, positions=positions)
        return [command, str(tokens), "--model", str(model), "--out", str(tmp / "out")], [tokens, model]

    return setup


def _corrupt_weights(tmp: Path):
    tokens = _tokens(tmp)
    model = _model(tmp, vocab_size=_vocab_size(tokens))
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return ["attention", str(tokens), "--model", str(model), "--out", str(tmp / "out")], [tokens, model]


def _config(text: str) -> Callable:
    def setup(tmp: Path):
        (tmp / "study.toml").write_text(text)
        return ["run", "--config", str(tmp / "study.toml"), "--out", str(tmp / "out")], [tmp / "study.toml"]

    return setup


CASES = [
    # files
    Case("truncated-h5ad", _run_data(_truncated), "truncated"),
    Case("not-hdf5", _run_data(_write_bytes(b"cell,gene\n1,2\n" * 50)), "not an HDF5/h5ad file"),
    Case("zero-bytes", _run_data(_write_bytes(b"")), "empty (0 bytes)"),
    Case(
        "missing-file",
        lambda tmp: (["run", "--data", str(tmp / "nope.h5ad"), "--out", str(tmp / "out")], []),
        "not found",
    ),  # fmt: skip
    # values
    Case(
        "complex-dtype",
        _run_data(lambda _: _adata(np.ones((N_CELLS, N_GENES), np.complex64))),
        "must be numeric",
    ),
    Case("log-normalised", _run_data(_counts(np.log1p)), "log-normalised"),
    Case("scaled", _run_data(_counts(lambda x: (x - x.mean(0)) / (x.std(0) + 1))), "scaled"),
    Case("negative", _run_data(_counts(_with(lambda x: x.__setitem__((3, 4), -2)))), "negative"),
    Case("nan", _run_data(_counts(_with(lambda x: x.__setitem__((3, 4), np.nan)))), "NaN"),
    Case("inf", _run_data(_counts(_with(lambda x: x.__setitem__((3, 4), np.inf)))), "infinite"),
    Case("empty-matrix", _run_data(lambda _: _adata(np.zeros((N_CELLS, 0), np.float32), ids=[])), "is empty"),
    Case("all-zero-cells", _run_data(_counts(lambda x: x * 0)), "only zeros"),
    # labels and genes
    Case("single-class", _run_data(lambda _: _adata(labels=["a"] * N_CELLS)), "at least two classes"),
    Case(
        "missing-label-column", _run_data(lambda _: _adata(), "--label-key", "condition"), "not found in obs"
    ),
    Case(
        "misspelled-label-column",
        _run_data(lambda _: _adata(), "--label-key", "lable"),
        "Did you mean ['label']",
    ),
    Case("unknown-class", _run_data(lambda _: _adata(), "--classes", "a,z"), "class 'z' not found"),
    Case(
        "too-few-cells-per-class",
        _run_data(lambda _: _adata(labels=["a"] * (N_CELLS - 3) + ["b"] * 3)),
        "fewer than 10 cells",
    ),  # fmt: skip
    Case("duplicate-gene-ids", _run_data(_dup_genes), "duplicated"),
    # tokenizer
    Case(
        "tok-symbols-not-ensembl",
        _tok(lambda _: _adata(ids=[f"SYM{i}" for i in range(N_GENES)])),
        "no gene id maps",
    ),
    Case("tok-vocab-misses-most-genes", _tok(lambda _: _adata(), IDS[:2]), "only 2 of 30 gene ids"),
    Case(
        "tok-zero-count-cells",
        _tok(_counts(_with(lambda x: x.__setitem__(slice(0, 3), 0)))),
        "zero total counts",
    ),
    Case("tok-nan", _tok(_counts(_with(lambda x: x.__setitem__((3, 4), np.nan)))), "NaN"),
    Case("tok-log-normalised", _tok(_counts(np.log1p)), "log-normalised"),
    Case("tok-scaled", _tok(_counts(lambda x: x - x.mean())), "negative"),
    Case("tok-missing-obs-key", _tok(lambda _: _adata(), IDS, "--obs-keys", "dose"), "no column(s) ['dose']"),
    # models
    Case("model-vocab-mismatch-attention", _model_case(vocab_delta=7), "vocabulary"),
    Case(
        "model-vocab-mismatch-finetune", _model_case(vocab_delta=7, command="finetune"), "vocabulary mismatch"
    ),
    Case("max-length-beyond-positions-attention", _model_case(positions=8), "at most 8 tokens"),
    Case(
        "max-length-beyond-positions-finetune",
        _model_case(positions=8, command="finetune"),
        "only 8 positions",
    ),
    Case("corrupt-weights", _corrupt_weights, "cannot read model weights"),
    # config
    Case("config-unknown-key", _config("pretrain_epoch = 1\n"), "unknown key(s) pretrain_epoch"),
    Case("config-wrong-type", _config('pretrain_epochs = "two"\n'), "pretrain_epochs must be int"),
    Case("config-bool-for-int", _config("n_boot = true\n"), "n_boot must be int"),
    Case("config-bad-value", _config('device = "gpu"\n'), "device must be one of"),
    Case("config-not-toml", _config("seed = = 3\n"), "not valid TOML"),
    Case(
        "config-missing",
        lambda tmp: (["run", "--config", str(tmp / "none.toml")], []),
        "config file not found",
    ),
]


def _digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_case_count():
    assert len(CASES) == 36 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_cli(case: Case, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `run` without --out would write ./results
    args, inputs = case.setup(tmp_path)
    before_files = {p for p in tmp_path.rglob("*")}
    before = _digest(inputs)
    res = CliRunner().invoke(app, ["-q", *args])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and res.stderr.rstrip().splitlines()[-1] == errors[0], res.stderr
    assert case.expect in errors[0], errors[0]
    assert "Traceback" not in res.output
    assert _digest(inputs) == before  # input untouched
    assert {p for p in tmp_path.rglob("*")} == before_files  # nothing written (no partial outputs)


def test_subprocess_exit_code_and_no_traceback(tmp_path: Path):
    exe = Path(sys.executable).parent / "geneattn"
    bad = _h5ad(
        tmp_path,
        _adata(np.log1p(np.random.default_rng(0).poisson(2.0, (N_CELLS, N_GENES)).astype(np.float32))),
    )
    before = _digest([bad])
    proc = subprocess.run([str(exe), "-q", "run", "--data", str(bad), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ") and "log-normalised" in proc.stderr
    assert not (tmp_path / "out").exists() and _digest([bad]) == before


# ------------------------------------------------------------------------------------- fuzzing
_FUZZ = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_FUZZ
@given(cut=st.floats(0.0, 1.0), junk=st.binary(max_size=64), flip=st.integers(0, 10**6))
def test_fuzz_reader_corrupt_files(tmp_path_factory, cut, junk, flip):
    """Truncated, padded or bit-flipped h5ad files: readable, or InputError; never another exception."""
    from geneattn.io import load

    tmp = tmp_path_factory.mktemp("fuzz")
    good = _h5ad(tmp, _adata(), "good.h5ad").read_bytes()
    data = bytearray(good[: int(len(good) * cut)] + junk)
    if data:
        data[flip % len(data)] ^= 0xFF
    p = tmp / "bad.h5ad"
    p.write_bytes(bytes(data))
    try:
        load(p, min_cells_per_class=1)
    except InputError:
        pass
    assert p.read_bytes() == bytes(data)


_values = st.one_of(
    st.integers(-3, 50).map(float), st.sampled_from([np.nan, np.inf, -np.inf, 0.5, 1e-9, 2.0 + 1e-2])
)


@_FUZZ
@given(cells=st.lists(st.lists(_values, min_size=N_GENES // 3, max_size=N_GENES // 3), min_size=1, max_size=6),
       with_n_counts=st.booleans())  # fmt: skip
def test_fuzz_tokenizer_values(cells, with_n_counts):
    """Any matrix values: the tokenizer either encodes valid counts or raises InputError."""
    from geneattn.tokenize import GeneVocab, tokenize

    X = np.array(cells, dtype=np.float32)
    genes = IDS[: X.shape[1]]
    obs_extra = {"n_counts": np.nansum(np.where(np.isfinite(X), X, 0), axis=1) + 1} if with_n_counts else None
    adata = _adata(X, ids=genes, labels=["a"] * X.shape[0], obs_extra=obs_extra)
    vocab = GeneVocab(token_ids={"<pad>": 0, "<mask>": 1, **{g: i + 2 for i, g in enumerate(genes)}},
                      medians={g: 1.0 for g in genes})  # fmt: skip
    valid = bool(np.isfinite(X).all() and (X >= 0).all() and (np.abs(X - np.round(X)) <= 1e-3).all())
    try:
        ds = tokenize(adata, vocab, model_input_size=16)
    except InputError:
        assert not valid or not (X > 0).any(axis=1).all()
        return
    assert valid
    assert all(0 < n <= 16 for n in ds["length"])
    assert all(2 <= t < vocab.size for ids in ds["input_ids"] for t in ids)


# ------------------------------------------------------------------------------------- issue #13
def _no_x(_: Path) -> ad.AnnData:
    a = _adata()
    return ad.AnnData(obs=a.obs, var=a.var, layers={"counts": a.X})


def _float16_beyond_exact(_: Path) -> ad.AnnData:
    a = _adata()
    dense = a.X.toarray()
    dense[3, 4] = 3001  # float16 keeps only even integers above 2048
    a.X = dense.astype(np.float16)
    return a


def _lognorm_with_counts_layer(_: Path) -> ad.AnnData:
    a = _adata()
    a.layers["counts"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    return a


RELIABILITY_CASES = [
    Case("no-x", _run_data(_no_x), "no X matrix"),
    Case("tok-no-x", _tok(_no_x), "no X matrix"),
    Case("float16-beyond-2048", _run_data(_float16_beyond_exact), "float16 counts up to 3000"),
    Case("tok-float16-beyond-2048", _tok(_float16_beyond_exact), "float16 counts up to 3000"),
    Case("tok-counts-in-a-layer", _tok(_lognorm_with_counts_layer), "raw counts may be in --layer counts"),
    Case("tok-missing-layer", _tok(lambda _: _adata(), IDS, "--layer", "counts"), "layer 'counts' not found"),
]


@pytest.mark.parametrize("case", RELIABILITY_CASES, ids=[c.id for c in RELIABILITY_CASES])
def test_reliability_cases_cli(case: Case, tmp_path: Path, monkeypatch):
    test_bad_input_cli(case, tmp_path, monkeypatch)


def test_counts_layer_flag_makes_the_hint_true(tmp_path: Path):
    """Null of the case above: with the flag the hint names, the same file tokenizes."""
    args, _ = _tok(_lognorm_with_counts_layer)(tmp_path)
    res = CliRunner().invoke(app, ["-q", *args, "--layer", "counts", "--model-input-size", "16"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "state.json").is_file()


class _FullDisk:
    """A file whose writes fail as on a full disk (the real file is closed, and left empty)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(28, "No space left on device")

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch):
    real_open = Path.open

    def full_open(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return _FullDisk(f) if "w" in mode and self.name.startswith(".tmp-") else f

    monkeypatch.setattr(Path, "open", full_open)
    out = tmp_path / "new" / "sim.h5ad"
    res = CliRunner().invoke(app, ["-q", "simulate", "--out", str(out), "--cells-per-dose", "10"])
    assert res.exit_code == 2, (res.output, res.exception)
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [res.stderr.strip()] and f"cannot write {out}: no space left on device" in errors[0]
    assert list(tmp_path.iterdir()) == []  # no file, no temporary sibling, no folder made for it


_MULTILINE = (
    "cannot read x.h5ad as h5ad (OSError: Unable to synchronously open file (file signature not found)\n"
    "HDF5-DIAG: Error detected in HDF5 (1.14.6) thread 0:\n  #000: H5F.c line 836 in H5Fopen(): unable to open)"
)


def test_multiline_library_error_is_one_line_with_detail_under_verbose(tmp_path: Path, monkeypatch):
    import geneattn.io

    def fail(*args, **kwargs):
        raise InputError(_MULTILINE) from OSError("the chained library error")

    monkeypatch.setattr(geneattn.io, "read_h5ad", fail)
    (tmp_path / "x.h5ad").write_bytes(b"")
    res = CliRunner().invoke(app, ["-q", "inspect", str(tmp_path / "x.h5ad")])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "Error: cannot read x.h5ad as h5ad (OSError: Unable to synchronously open file (file signature not "
        "found) (more with --verbose)"
    ]
    assert "HDF5-DIAG" not in res.output and "chained library error" not in res.output
    res = CliRunner().invoke(app, ["-v", "inspect", str(tmp_path / "x.h5ad")])
    assert res.exit_code == 2 and "Traceback" not in res.stderr.strip().splitlines()[-1]
    assert "HDF5-DIAG" in res.output and "the chained library error" in res.output
    assert res.stderr.strip().splitlines()[-1].startswith("Error: cannot read x.h5ad")
