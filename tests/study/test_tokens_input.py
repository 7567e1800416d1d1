"""The tokenize stage's record of the input cut: effective size, share of cells cut, config header note."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

from geneattn.study.config import StudyConfig, dump_toml
from geneattn.study.tokens import annotate_input_size, effective_input_size, input_size_note, input_summary


def test_input_summary_vs_naive():
    rng = np.random.default_rng(0)
    n_genes = rng.integers(50, 900, size=500)
    lengths = np.minimum(n_genes, 254) + 2  # <cls> + genes + <eos>, capped at 256
    lengths[:7] -= 5  # a few cells with genes outside the vocabulary: short of the cap, not cut
    got = input_summary(n_genes, lengths, requested=2048, size=256, n_special=2)
    cut = [(ln - 2 == 254) and (g > ln - 2) for g, ln in zip(n_genes, lengths, strict=True)]
    assert got["model_input_size_requested"] == 2048 and got["model_input_size"] == 256
    assert got["genes_per_input"] == 254 and got["n_cells"] == 500
    assert got["n_cells_truncated"] == sum(cut) and got["share_cells_truncated"] == pytest.approx(
        np.mean(cut)
    )
    assert got["median_genes_expressed"] == pytest.approx(np.median(n_genes))
    assert got["median_genes_in_input"] == pytest.approx(np.median(lengths - 2))
    assert got["max_genes_expressed"] == n_genes.max()
    # no special tokens: every token is a gene
    none_cut = input_summary(np.full(3, 10), np.full(3, 10), requested=64, size=64, n_special=0)
    assert none_cut["share_cells_truncated"] == 0 and none_cut["median_genes_in_input"] == 10


def test_effective_size_and_config_note(tmp_path):
    shipped = StudyConfig(out=str(tmp_path / "r")).resolved()  # nutlin-sim on the shipped mini-nutlin
    assert shipped.model_input_size == 2048 and effective_input_size(shipped) == 256
    note = input_size_note(shipped)
    assert "model_input_size = 2048 was requested" in note and "effective model_input_size = 256" in note
    text = annotate_input_size(dump_toml(shipped.to_dict(), header="h" + note), shipped)
    line = next(x for x in text.splitlines() if x.startswith("model_input_size"))
    assert line.startswith("model_input_size = 2048  # requested; effective 256")
    assert tomllib.loads(text)["model_input_size"] == 2048  # the file still reproduces the run
    here = StudyConfig(
        out=str(tmp_path / "r"), checkpoint="pretrain"
    ).resolved()  # pretrained at the size asked
    assert effective_input_size(here) == 2048 and input_size_note(here) == ""
    assert annotate_input_size("model_input_size = 2048\n", here) == "model_input_size = 2048\n"
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    other = StudyConfig(out=str(tmp_path / "r"), model=str(model), dictionaries=str(tmp_path))
    assert effective_input_size(other) == 512
