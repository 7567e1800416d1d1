"""Stage cache keys come from the config fields each stage reads.

Changing any field changes exactly the keys of the stages that declare it (and, through the upstream
hashes, their downstream stages); a stage that reads a field it did not declare fails.
"""

from __future__ import annotations

import dataclasses

import pytest

from geneattn.pipeline import stage_hash
from geneattn.study import STAGES, StudyConfig, stages
from geneattn.study._stage import ALL, ConfigView, UndeclaredRead


def _alternatives(tmp_path) -> dict[str, dict[str, object]]:
    """One valid change per field (``model`` and ``dictionaries`` go together)."""
    data = tmp_path / "x.h5ad"
    data.write_bytes(b"not read")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "d").mkdir()
    alt = {
        "dataset": {"dataset": "pbmc68k"}, "data": {"data": str(data)}, "layer": {"layer": "counts"}, "perturbation": {"perturbation": "Nutlin"},
        "label_key": {"label_key": "dose"}, "classes": {"classes": ["0.1", "10"]}, "groups": {"groups": "a=0.1;b=10"},
        "model": {"model": str(tmp_path / "m"), "dictionaries": str(tmp_path / "d")}, "seed": {"seed": 3},
        "out": {"out": str(tmp_path / "elsewhere")}, "highlight": {"highlight": ["CDKN1A"]}, "preset": {"preset": "gf-6L-30M-i2048"}, "checkpoint": {"checkpoint": "pretrain"},
        "cells_per_dose": {"cells_per_dose": 50}, "min_cells_per_class": {"min_cells_per_class": 5},
        "model_input_size": {"model_input_size": 256}, "pretrain_epochs": {"pretrain_epochs": 2},
        "finetune_epochs": {"finetune_epochs": 9}, "finetune_lr": {"finetune_lr": 5e-4}, "pooling": {"pooling": "mean"}, "finetune_head_lr": {"finetune_head_lr": 2e-3}, "batch_size": {"batch_size": 8},
        "attention_batch_size": {"attention_batch_size": 4}, "device": {"device": "cpu"}, "top_k": {"top_k": 7},
        "rank_bin": {"rank_bin": 50}, "n_boot": {"n_boot": 30}, "attribution_cells": {"attribution_cells": 3}, "n_seed_runs": {"n_seed_runs": 3},
        "n_permuted_runs": {"n_permuted_runs": 1}, "permute_labels": {"permute_labels": True},
        "ablation_top_k": {"ablation_top_k": 1}, "quick": {"quick": True},
        "max_cells_per_class": {"max_cells_per_class": 50}, "finetuned": {"finetuned": str(tmp_path / "m")},
    }  # fmt: skip
    alt["dictionaries"] = alt["model"]
    return alt


def _readers(field: str) -> set[str]:
    return {name for name, spec in STAGES.items() if spec.reads == ALL or field in spec.reads}


def _hashes(cfg: StudyConfig) -> tuple[dict[str, object], dict[str, str]]:
    own, full = {}, {}
    for s in stages(cfg):
        own[s.name] = stage_hash(s.name, s.params, {})
        full[s.name] = stage_hash(s.name, s.params, {d: full[d] for d in s.deps})
    return own, full


def _downstream(names: set[str]) -> set[str]:
    out = set(names)
    while True:
        more = {n for n, spec in STAGES.items() if set(spec.deps) & out} - out
        if not more:
            return out
        out |= more


def test_every_field_has_an_alternative(tmp_path):
    assert set(_alternatives(tmp_path)) == {f.name for f in dataclasses.fields(StudyConfig)}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(StudyConfig)])
def test_changing_a_field_rekeys_exactly_its_readers(tmp_path, field):
    base = StudyConfig(out=str(tmp_path / "res"))
    change = _alternatives(tmp_path)[field]
    other = dataclasses.replace(base, **change)
    (own0, full0), (own1, full1) = _hashes(base), _hashes(other)
    readers = set().union(*(_readers(f) for f in change))
    assert {n for n in own0 if own0[n] != own1[n]} == readers, field
    assert {n for n in full0 if full0[n] != full1[n]} == _downstream(readers), field


def test_finetune_lr_reruns_the_finetune_and_everything_after_it(tmp_path):
    """The review's bug: a new learning rate silently reused the old model."""
    a = StudyConfig(out=str(tmp_path))
    _, h0 = _hashes(a)
    _, h1 = _hashes(dataclasses.replace(a, finetune_lr=5e-4))
    assert {n for n in h0 if h0[n] != h1[n]} == {
        "finetune",
        "controls",
        "attention",
        "ablation",
        "attribution",
        "stats",
        "figures",
        "report",
    }


def test_view_refuses_undeclared_fields():
    cfg = StudyConfig()
    view = ConfigView(cfg, ("seed", "dataset"), "demo")
    assert view.seed == 0
    with pytest.raises(UndeclaredRead, match="'top_k'"):
        _ = view.top_k
    with pytest.raises(UndeclaredRead, match="'data'"):  # a property reads through the view
        _ = view.source
    assert ConfigView(cfg, ("data", "dataset"), "demo").source == "nutlin-sim"
    with pytest.raises(AttributeError):
        view.seed = 1


def test_every_stage_declares_real_fields():
    names = {f.name for f in dataclasses.fields(StudyConfig)}
    for spec in STAGES.values():
        assert spec.reads == ALL or set(spec.reads) <= names, spec.name
