"""Where the tokenizer reads counts from: layers, float16, X-less files, on-disk layouts, versioned ids.

Every variant is compared with the same cells given the plain way (an in-memory AnnData with CSR
float32 counts in X), whose tokens the golden and naive-reference tests pin to Geneformer's.
"""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from _golden import expected_tokens
from _tokenize_data import make_adata, make_vocab
from _tokenize_paths import V2_FILES
from typer.testing import CliRunner

import geneattn.tokenize._store as store
from geneattn.cli import app
from geneattn.errors import InputError, OutputError
from geneattn.io import canonicalize
from geneattn.tokenize import build_vocab, geneformer_settings, load_tokens, tokenize
from geneattn.tokenize._input import gene_ids

TOKENIZE_SRC = Path(__file__).resolve().parents[2] / "src" / "geneattn" / "tokenize"


def _ids(ds) -> list[list[int]]:
    return [list(x) for x in ds["input_ids"]]


@pytest.fixture
def plain():
    """Counts without lower-case or unknown ids, so every on-disk layout can hold them."""
    return make_adata(24, 30, seed=3, n_unknown=0, n_lower=0)


def _ref(adata, vocab, **kw):
    return _ids(tokenize(adata, vocab, model_input_size=20, special_tokens=True, **kw))


def test_counts_layer_and_raw_give_the_tokens_of_counts_in_x(plain, tmp_path):
    vocab = make_vocab(30)
    ref = _ref(plain, vocab)
    a = plain.copy()
    a.layers["counts"] = plain.X.copy()
    a.raw = plain
    a.X = sp.csr_matrix(np.log1p(plain.X.toarray()))  # normalised values in X
    a.write_h5ad(tmp_path / "a.h5ad")
    for data in (a, tmp_path / "a.h5ad", ad.read_h5ad(tmp_path / "a.h5ad", backed="r")):
        for layer in ("counts", "raw"):
            assert _ref(data, vocab, layer=layer) == ref, (type(data), layer)
        with pytest.raises(
            InputError, match="log-normalised.*--layer counts or --layer raw"
        ):  # null: X is not counts
            _ref(data, vocab)
    with pytest.raises(InputError, match=r"layer 'spliced' not found; available layers: \['counts'\]"):
        _ref(tmp_path / "a.h5ad", vocab, layer="spliced")


@pytest.mark.parametrize("layout", ["dense", "csc", "csr", "backed-csr", "backed-dense"])
def test_every_on_disk_layout_gives_the_same_tokens(plain, tmp_path, layout):
    vocab = make_vocab(30)
    a = plain.copy()
    if "dense" in layout:
        a.X = plain.X.toarray()
    elif layout == "csc":
        a.X = sp.csc_matrix(plain.X)
    a.write_h5ad(tmp_path / "a.h5ad")
    data = (
        ad.read_h5ad(tmp_path / "a.h5ad", backed="r") if layout.startswith("backed") else tmp_path / "a.h5ad"
    )
    assert _ref(data, vocab, chunk_size=7) == _ref(plain, vocab)


@pytest.mark.parametrize("top", [3, 2048])
def test_float16_counts_give_the_tokens_of_float32(plain, tmp_path, top):
    vocab = make_vocab(30)
    dense = plain.X.toarray()
    dense[0, 0] = top
    ref_adata = plain.copy()
    ref_adata.X = sp.csr_matrix(dense)
    half = plain.copy()
    half.X = dense.astype(np.float16)
    half.write_h5ad(tmp_path / "h.h5ad")
    for data in (half, tmp_path / "h.h5ad"):
        assert _ref(data, vocab) == _ref(ref_adata, vocab)


def test_float16_beyond_2048_and_missing_x_are_refused(plain, tmp_path):
    vocab = make_vocab(30)
    half = plain.copy()
    dense = half.X.toarray()
    dense[2, 3] = 4099
    half.X = dense.astype(np.float16)
    half.write_h5ad(tmp_path / "h.h5ad")
    for data in (half, tmp_path / "h.h5ad"):
        with pytest.raises(InputError, match="float16 counts up to 4100"):
            _ref(data, vocab)
    bare = ad.AnnData(obs=plain.obs, var=plain.var, layers={"counts": plain.X})
    bare.write_h5ad(tmp_path / "bare.h5ad")
    for data in (bare, tmp_path / "bare.h5ad", ad.read_h5ad(tmp_path / "bare.h5ad", backed="r")):
        with pytest.raises(InputError, match="no X matrix.*counts"):
            _ref(data, vocab)


def test_versioned_ensembl_ids_give_geneformers_tokens(v2_vocab, golden_dir, tmp_path):
    a = ad.read_h5ad(golden_dir / "small.h5ad")
    a.var["ensembl_id"] = [f"{g}.{i % 17 + 1}" for i, g in enumerate(a.var["ensembl_id"])]
    a.write_h5ad(tmp_path / "versioned.h5ad")
    expected, _ = expected_tokens("small", "small.v2", V2_FILES, 4096, True)
    ds = tokenize(tmp_path / "versioned.h5ad", v2_vocab, model_input_size=4096, special_tokens=True)
    assert all(np.array_equal(np.asarray(g), e) for g, e in zip(ds["input_ids"], expected, strict=True))
    assert ds.num_rows == len(expected)


def test_tokenize_strips_ids_exactly_as_canonicalize(plain):
    ids = ["ENSG00000000001.4", "ENSG00000000002", "ENSG00000000003.12_PAR_Y", "ENSMUSG00000000004.1"]
    ids += [f"ENSG{i:011d}.{i}" for i in range(4, 30)]
    a = plain.copy()
    a.var["ensembl_id"] = ids
    a.obs["label"] = ["a", "b"] * (a.n_obs // 2)
    canon = canonicalize(a, min_cells_per_class=1)
    got, _ = gene_ids(a.var, "ensembl_id")
    assert list(got) == list(canon.var["ensembl_id"])
    assert got[0] == "ENSG00000000001" and got[2] == "ENSG00000000003_PAR_Y"  # planted versions are gone
    unversioned = a.copy()
    unversioned.var["ensembl_id"] = list(got)
    assert build_vocab(a).fingerprint == build_vocab(unversioned).fingerprint


def test_geneformer_settings_decide_the_defaults(v1_vocab, v2_vocab):
    assert geneformer_settings(v1_vocab) == (False, 2048)
    assert geneformer_settings(v2_vocab) == (True, 4096)
    built = build_vocab(make_adata(10))
    assert geneformer_settings(built) == (True, 4096)
    assert geneformer_settings(build_vocab(make_adata(10), special_tokens=False)) == (False, 2048)
    assert geneformer_settings(v2_vocab, special_tokens=False) == (False, 2048)
    assert geneformer_settings(v2_vocab, model_input_size=512) == (True, 512)
    # tokenize's own default comes from the same place: 4096 with special tokens, not 2048
    many = make_adata(3, 3000, density=0.9, n_unknown=0, n_lower=0)
    many.obs["filter_pass"] = 1
    vocab = make_vocab(3000)
    expressed = int(np.diff(many.X.indptr).max())
    assert 2048 < expressed < 4094
    assert max(tokenize(many, vocab, special_tokens=True)["length"]) == expressed + 2
    assert max(tokenize(many, vocab)["length"]) == 2048


def test_cli_layer_counts(plain, tmp_path):
    a = plain.copy()
    a.layers["counts"] = plain.X.copy()
    a.X = sp.csr_matrix(np.log1p(plain.X.toarray()))
    a.write_h5ad(tmp_path / "a.h5ad")
    runner = CliRunner()
    res = runner.invoke(app, ["tokenize", str(tmp_path / "a.h5ad"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--layer counts" in res.stderr
    res = runner.invoke(app, ["tokenize", str(tmp_path / "a.h5ad"), "--out", str(tmp_path / "o"),
                              "--layer", "counts", "--model-input-size", "20"])  # fmt: skip
    assert res.exit_code == 0, res.output
    vocab = build_vocab(plain)
    assert _ids(load_tokens(tmp_path / "o")) == _ref(plain, vocab)


def test_a_full_disk_leaves_the_previous_tokens(plain, tmp_path, monkeypatch):
    vocab = make_vocab(30)
    out = tmp_path / "tokens"
    tokenize(plain, vocab, out=out, model_input_size=20)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "write_json", full)
    with pytest.raises(OutputError, match=f"cannot write {out}: no space left on device"):
        tokenize(plain, vocab, out=out, model_input_size=30)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(OutputError):
        tokenize(plain, vocab, out=tmp_path / "new" / "tokens")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens"]  # no temporary or new folder left


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """Sibling modules ``path`` imports, and private names it takes from them or reads off objects."""
    tree = ast.parse(path.read_text())
    mods, private = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            mods.add(node.module)
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                private.append(f"<object>.{node.attr}")
    return mods, private


def test_tokenize_modules_have_no_import_cycle_or_private_reach_ins():
    graph, reach = {}, {}
    for f in TOKENIZE_SRC.glob("*.py"):
        graph[f.stem], reach[f.stem] = _imports(f)
    assert {"vocab", "dataset", "_genes", "_input"} <= set(graph)
    assert reach == {k: [] for k in graph}

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node])

    for node in graph:
        visit(node, [])


_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
sys.argv = ["geneattn", "-q", "tokenize", *sys.argv[1:]]
from geneattn.cli import main
main()
"""


def test_real_arrow_write_failure_in_a_process(golden_dir, tmp_path):
    """Arrow shards hitting a file size limit (EFBIG, as a full disk): exit 2, one line, no tokens left."""
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    out = tmp_path / "out" / "tokens"
    args = [str(golden_dir / "small.h5ad"), "--out", str(out), "--chunk-size", "50"]
    args += ["--token-dictionary", str(V2_FILES[0]), "--gene-median-dictionary", str(V2_FILES[1])]
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", _LIMITED, *args], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: cannot write {out}"), proc.stderr[-2000:]
    assert "file too large" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
