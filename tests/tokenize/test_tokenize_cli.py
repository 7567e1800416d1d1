"""``geneattn tokenize`` end to end through typer's CliRunner."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from _golden import expected_tokens
from _tokenize_data import make_adata
from _tokenize_paths import V2_FILES
from typer.testing import CliRunner

from geneattn.cli import app
from geneattn.tokenize import build_vocab, load_tokens, load_vocab, tokenize

runner = CliRunner()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_with_geneformer_dictionaries_matches_golden(golden_dir, tmp_path):
    src = golden_dir / "small.h5ad"
    before = _sha(src)
    out = tmp_path / "tokens"
    args = ["tokenize", str(src), "--out", str(out), "--obs-keys", "cell_type,dose", "--chunk-size", "100"]
    args += ["--token-dictionary", str(V2_FILES[0]), "--gene-median-dictionary", str(V2_FILES[1])]
    args += ["--gene-mapping-dictionary", str(V2_FILES[2])]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert _sha(src) == before  # the input is never modified
    ds = load_tokens(out)
    expected, _ = expected_tokens("small", "small.v2", V2_FILES, 4096, True)
    assert np.array_equal(np.concatenate([np.asarray(x) for x in ds["input_ids"]]), np.concatenate(expected))
    assert ds["length"] == [len(e) for e in expected]  # V2 defaults: 4096 with <cls>/<eos>
    assert set(ds.column_names) == {"input_ids", "length", "cell_id", "cell_type", "dose"}
    assert load_vocab(out).size == 20275


def test_cli_builds_vocabulary_without_dictionaries(tmp_path):
    adata = make_adata(30, seed=8)
    src = tmp_path / "in.h5ad"
    adata.write_h5ad(src)
    before = _sha(src)
    out = tmp_path / "tok"
    res = runner.invoke(app, ["tokenize", str(src), "--out", str(out), "--model-input-size", "16"])
    assert res.exit_code == 0, res.output
    assert _sha(src) == before
    vocab = load_vocab(out)
    assert vocab.fingerprint == build_vocab(adata).fingerprint
    ds = load_tokens(out)
    ref = tokenize(adata, vocab, model_input_size=16, special_tokens=True)
    assert ds["input_ids"] == ref["input_ids"]
    assert all(x[0] == vocab.cls_id and len(x) <= 16 for x in ds["input_ids"])
    assert vocab.symbols  # var_names are the symbols
    res = runner.invoke(app, ["tokenize", str(src), "--out", str(tmp_path / "v1"), "--no-special-tokens"])
    assert res.exit_code == 0, res.output
    assert load_vocab(tmp_path / "v1").cls_id is None
    assert max(load_tokens(tmp_path / "v1")["length"]) <= 2048


@pytest.fixture
def small_h5ad(tmp_path):
    src = tmp_path / "in.h5ad"
    make_adata(10, seed=9).write_h5ad(src)
    return src


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--model-input-size", "0"], "model-input-size"),
        (["--gene-id-key", "nope"], "nope"),
        (["--obs-keys", "missing"], "missing"),
        (["--token-dictionary", "x.pkl"], "go together"),
    ],
)
def test_cli_errors_exit_2(small_h5ad, tmp_path, extra, match):
    res = runner.invoke(app, ["tokenize", str(small_h5ad), "--out", str(tmp_path / "o"), *extra])
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert "Traceback" not in res.output


def test_cli_bad_files_exit_2(small_h5ad, tmp_path):
    res = runner.invoke(app, ["tokenize", str(tmp_path / "nope.h5ad"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not found" in res.output
    (tmp_path / "junk.h5ad").write_text("junk")
    res = runner.invoke(app, ["tokenize", str(tmp_path / "junk.h5ad"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "cannot read" in res.output
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["tokenize", str(small_h5ad), "--out", str(tmp_path / "file" / "o")])
    assert res.exit_code == 2 and "output" in res.output
    a = make_adata(5)
    a.var["ensembl_id"] = [f"X{i}" for i in range(a.n_vars)]
    a.write_h5ad(tmp_path / "nomap.h5ad")
    res = runner.invoke(
        app,
        [
            "tokenize",
            str(tmp_path / "nomap.h5ad"),
            "--out",
            str(tmp_path / "o"),
            "--token-dictionary",
            str(V2_FILES[0]),
            "--gene-median-dictionary",
            str(V2_FILES[1]),
        ],
    )
    if V2_FILES[0].is_file():
        assert res.exit_code == 2 and "no gene id maps" in res.output


def test_cli_missing_n_counts_warns_and_works(tmp_path):
    a = make_adata(12, seed=10)
    del a.obs["n_counts"]
    src = tmp_path / "in.h5ad"
    a.write_h5ad(src)
    res = runner.invoke(app, ["tokenize", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert load_tokens(tmp_path / "o").num_rows > 0
